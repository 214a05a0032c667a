"""Snakemake adapter: publication tables and the HTML report of one trial."""

from pathlib import Path
from typing import Any

from trialflow.config import load_trial
from trialflow.io import write_table, write_text
from trialflow.report import (
    display_inputs,
    load_report_inputs,
    render_report,
    write_report_tables,
)
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    inputs = load_report_inputs(
        trial=trial,
        analysis_dir=Path(smk.input.adsl).parent,
        tables_dir=Path(smk.input.effects).parent,
        models_dir=Path(smk.input.models),
        figures_dir=Path(smk.input.figures),
        input_files=[Path(smk.input.trial), Path(smk.input.subjects), Path(smk.input.visits)],
    )
    # CSV tables keep the data's labels; what people read shows the display labels.
    tables = write_report_tables(inputs)
    shown = display_inputs(inputs)
    readable = write_report_tables(shown)
    write_table(tables["table1"], smk.output.table1)
    write_text(readable["table1_html"], smk.output.table1_html)
    write_table(tables["primary"], smk.output.primary)
    write_table(tables["secondary"], smk.output.secondary)
    write_table(tables["completion"], smk.output.completion)
    write_table(tables["adverse_events"], smk.output.adverse_events)
    html = render_report(shown, tables=readable)
    write_text(html, smk.output.report)
    logger.info("%s: report written to %s", trial.name, smk.output.report)


run_script(snakemake, main)
