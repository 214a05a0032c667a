"""Snakemake adapter: run the missing-data sensitivity analyses of one trial."""

from typing import Any

from trialflow.config import load_trial
from trialflow.derive import read_analysis_datasets
from trialflow.io import write_json, write_table
from trialflow.runner import logger, run_script
from trialflow.sensitivity import analyse_sensitivity


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    adsl, adeff = read_analysis_datasets(
        adsl=smk.input.adsl, adeff=smk.input.adeff, meta=smk.input.meta
    )
    result = analyse_sensitivity(adeff, adsl, trial)
    write_table(result.table, smk.output.sensitivity)
    write_table(result.tipping, smk.output.tipping)
    write_table(result.responders, smk.output.responders)
    write_json(result.records, smk.output.summary)
    for outcome, record in result.records.items():
        for what, why in record.get("reasons", {}).items():
            logger.warning("%s %s: %s", outcome, what, why)
    logger.info("%s: %d sensitivity rows", trial.name, len(result.table))


run_script(snakemake, main)
