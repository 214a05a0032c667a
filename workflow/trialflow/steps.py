"""The workflow's steps, each from named input files to named output files.

A step reads what earlier steps wrote and writes its own files; it takes one mapping of file
names (the rule's inputs and outputs together). The Snakemake rules run a step per job for a
large trial, or every step of a small trial in one job (:func:`run_all`): each job start costs
an interpreter and the imports, which for a small trial cost more than the work. Either way
every step reads the files of the step before, so the outputs are the same byte for byte.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from trialflow.config import TrialConfig
from trialflow.parallel import fork_map

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STEPS", "run_all"]

Paths = Mapping[str, str]
logger = logging.getLogger("trialflow")


def clean(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Read the raw exports through the trial description; log every data problem."""
    from trialflow.clean import read_and_clean, write_clean

    result = read_and_clean(trial)
    logger.info(
        "%s: %d subjects, %d visit rows, %d data queries",
        trial.name, len(result.subjects), len(result.visits), len(result.queries),
    )  # fmt: skip
    write_clean(
        result,
        visits=paths["clean"],
        subjects=paths["clean_subjects"],
        queries=paths["queries"],
        meta=paths["meta"],
        adverse_events=paths["adverse_events_data"],
        screening=paths["screening_data"],
    )


def derive(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Build ADSL, ADEFF and the CONSORT flow counts, and their ADaM exchange versions."""
    from trialflow.adam import adam_writes
    from trialflow.clean import load_clean
    from trialflow.derive import derive as build
    from trialflow.io import write_csv

    cleaned = load_clean(
        visits=paths["clean"],
        subjects=paths["clean_subjects"],
        queries=paths["queries"],
        meta=paths["meta"],
        screening=paths["screening_data"],
    )
    out = build(cleaned, trial)
    logger.info("%s: ADSL %d rows, ADEFF %d rows", trial.name, len(out.adsl), len(out.adeff))
    writes: list[Callable[[], None]] = [
        partial(write_csv, out.adeff, paths["adeff"]),
        partial(write_csv, out.adsl, paths["adsl"]),
        partial(write_csv, out.flow, paths["flow"]),
        *adam_writes(out.adsl, out.adeff, trial, paths),
    ]
    # Every file on its own: side by side on the job's threads, the same bytes either way.
    fork_map(_call, writes, workers)


def _call(write: Callable[[], None]) -> None:
    write()


def models(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Fit the analysis plan to every outcome (on up to ``workers`` processes) and write its
    tables and model records."""
    from trialflow.analysis import analyse_trial
    from trialflow.derive import read_analysis_datasets
    from trialflow.io import write_csv, write_json, write_table

    adsl, adeff = read_analysis_datasets(
        adsl=paths["adsl"], adeff=paths["adeff"], meta=paths["meta"]
    )
    result = analyse_trial(adeff, adsl, trial, workers=workers)
    for name in ("effects", "lsmeans", "anova", "effect_sizes", "type3", "subgroups"):
        write_table(getattr(result, name), paths[name])
    folder = Path(paths["models"])
    folder.mkdir(parents=True, exist_ok=True)
    for outcome, record in result.models.items():
        write_json(record, folder / f"{outcome}.json")
        for analysis in ("mmrm", "lmm", "ancova"):
            for warning in record.get(analysis, {}).get("warnings", []):
                logger.warning("%s %s: %s", outcome, analysis, warning)
    for outcome, residuals in result.residuals.items():
        write_csv(residuals, folder / f"{outcome}.residuals.csv")
    logger.info("%s: %d effect rows", trial.name, len(result.effects))


def sensitivity(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Missing-data sensitivity analyses: strategies, tipping point, responders."""
    from trialflow.derive import read_analysis_datasets
    from trialflow.io import write_json, write_table
    from trialflow.sensitivity import analyse_sensitivity

    adsl, adeff = read_analysis_datasets(
        adsl=paths["adsl"], adeff=paths["adeff"], meta=paths["meta"]
    )
    result = analyse_sensitivity(adeff, adsl, trial, workers=workers)
    write_table(result.table, paths["sensitivity"])
    write_table(result.tipping, paths["tipping"])
    write_table(result.responders, paths["responders"])
    write_json(result.records, paths["sensitivity_summary"])
    for outcome, record in result.records.items():
        for what, why in record.get("reasons", {}).items():
            logger.warning("%s %s: %s", outcome, what, why)
    logger.info("%s: %d sensitivity rows", trial.name, len(result.table))


def figures(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Draw every figure of the trial (PNG and SVG), with display labels for arms and visits."""
    from trialflow.derive import read_analysis_datasets
    from trialflow.io import read_result_csv
    from trialflow.labels import display_trial
    from trialflow.plots import write_trial_figures

    def table(name: str, **dtype: type) -> pd.DataFrame:
        return _shown(read_result_csv(paths[name], dtype=dtype or None), trial)

    _, adeff = read_analysis_datasets(adsl=paths["adsl"], adeff=paths["adeff"], meta=paths["meta"])
    residuals = {
        p.name.removesuffix(".residuals.csv"): _shown(
            read_result_csv(p, dtype={"subject_id": str}), trial
        )
        for p in sorted(Path(paths["models"]).glob("*.residuals.csv"))
    }
    flow = read_result_csv(paths["flow"], dtype={"visit": str}).fillna({"visit": ""})
    written = write_trial_figures(
        trial=display_trial(trial),
        adeff=_shown(adeff, trial),
        flow=_shown(flow, trial),
        effects=table("effects", note=str),
        lsmeans=table("lsmeans"),
        residuals=residuals,
        folder=Path(paths["figures"]),
        subgroups=table("subgroups", level=str, note=str, subgroup=str),
        sensitivity=table("sensitivity", note=str, visit=str),
        tipping=table("tipping", note=str, visit=str),
        workers=workers,
    )
    logger.info("%s: %d figure files", trial.name, len(written))


def _shown(frame: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    """A table with the display labels of arms and visits (figures are read by people)."""
    from trialflow.labels import display_frame

    out = display_frame(frame, trial)
    assert out is not None
    return out


def report(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Publication tables (CSV, HTML, Word) and the self-contained HTML report."""
    from trialflow.docx_tables import journal_tables, write_docx_tables
    from trialflow.io import write_table, write_text
    from trialflow.report import (
        display_inputs,
        load_report_inputs,
        render_report,
        write_report_tables,
    )

    inputs = load_report_inputs(
        trial=trial,
        analysis_dir=Path(paths["adsl"]).parent,
        tables_dir=Path(paths["effects"]).parent,
        models_dir=Path(paths["models"]),
        figures_dir=Path(paths["figures"]),
        input_files=[Path(paths[k]) for k in ("trial", "raw_subjects", "raw_visits")]
        # The other findings domains of an SDTM trial (the first is raw_visits).
        + [Path(p) for k, p in paths.items() if k.startswith("raw_findings_")],
    )
    # CSV tables keep the data's labels; what people read shows the display labels.
    tables = write_report_tables(inputs)
    shown = display_inputs(inputs)
    readable = write_report_tables(shown)
    for name in ("table1", "primary", "secondary", "completion"):
        write_table(tables[name], paths[name])
    write_table(tables["adverse_events"], paths["adverse_events_table"])
    write_text(readable["table1_html"], paths["table1_html"])
    title = f"Tables - {shown.trial.title}"
    write_docx_tables(journal_tables(shown, readable), paths["tables_docx"], title=title)
    write_text(render_report(shown, tables=readable), paths["report"])
    logger.info("%s: report written to %s", trial.name, paths["report"])


def report_pdf(paths: Paths, trial: TrialConfig | None = None) -> None:
    """The report as a PDF."""
    from trialflow.pdf import write_pdf

    write_pdf(Path(paths["html"]).read_text(encoding="utf-8"), paths["pdf"])
    logger.info("PDF written to %s", paths["pdf"])


# Every step takes (paths, trial, workers); derive (its file writes), models, sensitivity and
# figures use the workers.
STEPS: dict[str, Callable[[Paths, TrialConfig, int], None]] = {
    "clean": clean,
    "derive": derive,
    "models": models,
    "sensitivity": sensitivity,
    "figures": figures,
    "report": report,
}


def run_all(paths: Paths, trial: TrialConfig, workers: int = 1) -> None:
    """Every step of a trial in order, in this one process (and its workers)."""
    for name, step in STEPS.items():
        start = time.perf_counter()
        step(paths, trial, workers)
        logger.info("step %s took %.2f s", name, time.perf_counter() - start)
