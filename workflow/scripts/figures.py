"""Snakemake adapter: draw every figure of one trial."""

from pathlib import Path
from typing import Any

import pandas as pd

from trialflow.config import load_trial
from trialflow.derive import read_analysis_datasets
from trialflow.io import read_result_csv
from trialflow.labels import display_frame, display_trial
from trialflow.plots import write_trial_figures
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    _, adeff = read_analysis_datasets(
        adsl=smk.input.adsl, adeff=smk.input.adeff, meta=smk.input.meta
    )
    models = Path(smk.input.models)
    # Figures are read by people: display labels for arms and visits (the data keep theirs).
    residuals = {
        p.name.removesuffix(".residuals.csv"): shown(
            read_result_csv(p, dtype={"subject_id": str}), trial
        )
        for p in sorted(models.glob("*.residuals.csv"))
    }
    flow = read_result_csv(smk.input.flow, dtype={"visit": str}).fillna({"visit": ""})
    written = write_trial_figures(
        trial=display_trial(trial),
        adeff=shown(adeff, trial),
        flow=shown(flow, trial),
        effects=shown(read_result_csv(smk.input.effects, dtype={"note": str}), trial),
        lsmeans=shown(read_result_csv(smk.input.lsmeans), trial),
        residuals=residuals,
        folder=Path(smk.output.figures),
        subgroups=shown(
            read_result_csv(
                smk.input.subgroups, dtype={"level": str, "note": str, "subgroup": str}
            ),
            trial,
        ),
        sensitivity=shown(
            read_result_csv(smk.input.sensitivity, dtype={"note": str, "visit": str}), trial
        ),
        tipping=shown(read_result_csv(smk.input.tipping, dtype={"note": str, "visit": str}), trial),
    )
    logger.info("%s: %d figure files", trial.name, len(written))


def shown(frame: pd.DataFrame, trial: Any) -> pd.DataFrame:
    out = display_frame(frame, trial)
    assert out is not None
    return out


run_script(snakemake, main)
