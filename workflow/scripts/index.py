"""Snakemake adapter: the index page of all trials with cross-trial forest plots."""

from pathlib import Path
from typing import Any

from trialflow.config import load_trial
from trialflow.io import read_result_csv
from trialflow.report import write_index
from trialflow.runner import run_script


def main(smk: Any) -> None:
    names = list(smk.params.trials)
    trials = {n: load_trial(p, name=n) for n, p in zip(names, smk.input.trials, strict=True)}
    effects = {
        n: read_result_csv(p, dtype={"note": str})
        for n, p in zip(names, smk.input.effects, strict=True)
    }
    lsmeans = {n: read_result_csv(p) for n, p in zip(names, smk.input.lsmeans, strict=True)}
    randomized = {}
    for n, p in zip(names, smk.input.flows, strict=True):
        flow = read_result_csv(p)
        total = flow.loc[(flow["stage"] == "randomized") & (flow["arm"] == "total"), "n"]
        randomized[n] = int(total.iloc[0])
    index = Path(smk.output.index)
    write_index(
        trials=trials,
        effects=effects,
        lsmeans=lsmeans,
        randomized=randomized,
        reports={n: Path(p) for n, p in zip(names, smk.input.reports, strict=True)},
        index_path=index,
        figures_dir=Path(smk.output.figures),
    )


run_script(snakemake, main)
