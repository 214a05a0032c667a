"""Snakemake adapter: read and clean one trial's raw files."""

from typing import Any

from trialflow.clean import read_and_clean, write_clean
from trialflow.config import load_trial
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    result = read_and_clean(trial)
    logger.info(
        "%s: %d subjects, %d visit rows, %d data queries",
        trial.name,
        len(result.subjects),
        len(result.visits),
        len(result.queries),
    )
    write_clean(
        result,
        visits=smk.output.clean,
        subjects=smk.output.subjects,
        queries=smk.output.queries,
        meta=smk.output.meta,
        adverse_events=smk.output.adverse_events,
        screening=smk.output.screening,
    )


run_script(snakemake, main)
