"""Snakemake adapter: draw every figure of one trial."""

from pathlib import Path
from typing import Any

from trialflow.config import load_trial
from trialflow.derive import read_analysis_datasets
from trialflow.io import read_result_csv
from trialflow.plots import write_trial_figures
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    _, adeff = read_analysis_datasets(
        adsl=smk.input.adsl, adeff=smk.input.adeff, meta=smk.input.meta
    )
    models = Path(smk.input.models)
    residuals = {
        p.name.removesuffix(".residuals.csv"): read_result_csv(p, dtype={"subject_id": str})
        for p in sorted(models.glob("*.residuals.csv"))
    }
    written = write_trial_figures(
        trial=trial,
        adeff=adeff,
        flow=read_result_csv(smk.input.flow, dtype={"visit": str}).fillna({"visit": ""}),
        effects=read_result_csv(smk.input.effects, dtype={"note": str}),
        lsmeans=read_result_csv(smk.input.lsmeans),
        residuals=residuals,
        folder=Path(smk.output.figures),
        subgroups=read_result_csv(
            smk.input.subgroups, dtype={"level": str, "note": str, "subgroup": str}
        ),
        sensitivity=read_result_csv(smk.input.sensitivity, dtype={"note": str, "visit": str}),
        tipping=read_result_csv(smk.input.tipping, dtype={"note": str, "visit": str}),
    )
    logger.info("%s: %d figure files", trial.name, len(written))


run_script(snakemake, main)
