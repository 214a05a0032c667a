"""Snakemake adapter: run the analysis plan on one trial and write its tables."""

from pathlib import Path
from typing import Any

from trialflow.analysis import analyse_trial
from trialflow.config import load_trial
from trialflow.derive import read_analysis_datasets
from trialflow.io import write_csv, write_json, write_table
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    adsl, adeff = read_analysis_datasets(
        adsl=smk.input.adsl, adeff=smk.input.adeff, meta=smk.input.meta
    )
    result = analyse_trial(adeff, adsl, trial)
    write_table(result.effects, smk.output.effects)
    write_table(result.lsmeans, smk.output.lsmeans)
    write_table(result.anova, smk.output.anova)
    write_table(result.effect_sizes, smk.output.effect_sizes)
    write_table(result.type3, smk.output.type3)
    write_table(result.subgroups, smk.output.subgroups)
    folder = Path(smk.output.models)
    folder.mkdir(parents=True, exist_ok=True)
    for outcome, record in result.models.items():
        write_json(record, folder / f"{outcome}.json")
    for outcome, residuals in result.residuals.items():
        write_csv(residuals, folder / f"{outcome}.residuals.csv")
    for record in result.models.values():
        for analysis in ("mmrm", "lmm", "ancova"):
            fit = record.get(analysis, {})
            for warning in fit.get("warnings", []):
                logger.warning("%s %s: %s", record["outcome"], analysis, warning)
    logger.info("%s: %d effect rows", trial.name, len(result.effects))


run_script(snakemake, main)
