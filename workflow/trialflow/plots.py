"""Which figures a trial gets, and where they are written.

:mod:`trialflow.figures` draws (pure functions returning Figures); this module decides the set
of figures of a trial, names the files and saves them, so that the workflow, the report and
the tests agree on one list.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from trialflow.config import TrialConfig


def figure_stems(trial: TrialConfig) -> list[str]:
    """File stems (without extension) of every figure of a trial."""
    stems = ["consort", "forest", "forest_all_analyses", "missingness"]
    for o in trial.outcomes:
        stems += [f"{o.name}_{kind}" for kind in ("trajectory", "spaghetti", "change")]
        stems.append(f"{o.name}_diagnostics")
    return stems


def write_trial_figures(
    *,
    trial: TrialConfig,
    adeff: pd.DataFrame,
    flow: pd.DataFrame,
    effects: pd.DataFrame,
    lsmeans: pd.DataFrame,
    residuals: Mapping[str, pd.DataFrame],
    folder: Path,
) -> list[Path]:
    """Draw and save every figure of a trial as PNG (150 dpi) and SVG under ``folder``.

    An outcome without MMRM residuals (model not fitted) gets a diagnostics figure that says so.
    """
    from trialflow import figures as fg

    folder.mkdir(parents=True, exist_ok=True)
    empty = pd.DataFrame(
        columns=["subject_id", "visit", "observed", "fitted", "residual", "normalized_residual"]
    )
    drawings = {
        "consort": lambda: fg.consort_figure(flow, trial, fg.analysed_counts(lsmeans, trial)),
        "forest": lambda: fg.forest_figure(effects, trial),
        "forest_all_analyses": lambda: fg.forest_figure(
            effects, trial, analyses=("mmrm", "lmm", "ancova")
        ),
        "missingness": lambda: fg.missingness_figure(flow, trial),
    }
    for o in trial.outcomes:
        name = o.name
        drawings[f"{name}_trajectory"] = lambda n=name: fg.trajectory_figure(
            lsmeans, adeff, trial, n
        )
        drawings[f"{name}_spaghetti"] = lambda n=name: fg.spaghetti_figure(adeff, trial, n)
        drawings[f"{name}_change"] = lambda n=name: fg.change_figure(adeff, trial, n)
        drawings[f"{name}_diagnostics"] = lambda n=name: fg.diagnostics_figure(
            residuals.get(n, empty), trial, n
        )
    written: list[Path] = []
    for stem in figure_stems(trial):
        written += fg.save_figure(drawings[stem](), folder / stem)
    return written
