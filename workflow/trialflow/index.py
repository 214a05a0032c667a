"""The index of all trials with results: one page, rebuilt safely while other runs go on.

Every trial folder under the results folder that holds a report is listed, whichever run made
it, so ``snakemake --config trials=x`` adds x without dropping the others. The page and the
cross-trial plots are rewritten under an exclusive file lock, so two runs of different trials
(two Snakemake processes) can finish at the same time without clobbering each other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from trialflow.config import TrialConfig, load_trial
from trialflow.errors import TrialflowError
from trialflow.io import read_result_csv
from trialflow.labels import display_frame, display_trial

__all__ = ["trials_with_results", "update_index"]
logger = logging.getLogger(__name__)
_NEEDED = ("report.html", "tables/effects.csv", "tables/lsmeans.csv", "analysis/flow.csv")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _effects(folder: Path) -> pd.DataFrame:
    return read_result_csv(folder / "tables" / "effects.csv", dtype={"note": str})


def _shown(frame: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    out = display_frame(frame, trial)
    assert out is not None
    return out


def trials_with_results(results: Path) -> list[str]:
    """Names of the trial folders under ``results`` with a report and its tables."""
    if not results.is_dir():
        return []
    return sorted(
        d.name for d in results.iterdir() if d.is_dir() and all((d / f).is_file() for f in _NEEDED)
    )


def update_index(*, results: Path, trials_dir: Path) -> list[str]:
    """Rewrite ``results/index.html`` and ``results/cross_trial/`` for every trial with results.

    A trial whose description is no longer in ``trials_dir`` is left out with a warning.
    """
    from trialflow.report import write_index

    with _locked(results / ".index.lock"):
        trials = {}
        for name in trials_with_results(results):
            path = trials_dir / f"{name}.yaml"
            try:
                trials[name] = load_trial(path, name=name)
            except TrialflowError as exc:
                logger.warning("index: %s left out (%s)", name, exc.message)
        folder = {n: results / n for n in trials}
        randomized = {}
        for name in trials:
            flow = read_result_csv(folder[name] / "analysis" / "flow.csv")
            total = flow.loc[(flow["stage"] == "randomized") & (flow["arm"] == "total"), "n"]
            randomized[name] = int(total.iloc[0])
        figures = results / "cross_trial"
        for stale in figures.glob("cross_trial_*") if figures.is_dir() else []:
            stale.unlink()
        write_index(
            trials={n: display_trial(t) for n, t in trials.items()},
            effects={n: _shown(_effects(folder[n]), trials[n]) for n in trials},
            lsmeans={
                n: _shown(read_result_csv(folder[n] / "tables" / "lsmeans.csv"), trials[n])
                for n in trials
            },
            randomized=randomized,
            reports={n: folder[n] / "report.html" for n in trials},
            index_path=results / "index.html",
            figures_dir=figures,
        )
    return list(trials)
