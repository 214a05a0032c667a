"""Which figures a trial gets, and where they are written.

:mod:`trialflow.figures` draws (pure functions returning Figures); this module decides the set
of figures of a trial, names the files and saves them, so that the workflow, the report and
the tests agree on one list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from trialflow.config import TrialConfig
from trialflow.parallel import fork_map
from trialflow.tables import exclusion_reasons, mmrm_included

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# Figures of two panels side by side, unreadable at half width: the report gives them the
# full width of the page instead of a column of its grid.
FULL_WIDTH_KINDS = ("spaghetti", "diagnostics")


def full_width(stem: str) -> bool:
    """Whether the figure of file stem ``stem`` (``<outcome>_<kind>``) spans the report's width."""
    return stem.rsplit("_", 1)[-1] in FULL_WIDTH_KINDS


def figure_stems(trial: TrialConfig) -> list[str]:
    """File stems (without extension) of every figure of a trial."""
    stems = ["consort", "forest", "forest_all_analyses", "missingness"]
    if trial.options["subgroups"]:
        stems += [f"{o.name}_subgroups" for o in trial.primary_outcomes]
    if trial.sensitivity.get("methods"):
        for o in trial.primary_outcomes:
            stems += [f"{o.name}_sensitivity", f"{o.name}_tipping"]
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
    subgroups: pd.DataFrame | None = None,
    sensitivity: pd.DataFrame | None = None,
    tipping: pd.DataFrame | None = None,
    workers: int = 1,
) -> list[Path]:
    """Draw and save every figure of a trial as PNG (150 dpi) and SVG under ``folder``, on up
    to ``workers`` processes.

    An outcome without MMRM residuals (model not fitted) gets a diagnostics figure that says so.
    """
    from trialflow import figures as fg
    from trialflow import sensitivity_figures as sf

    folder.mkdir(parents=True, exist_ok=True)
    empty = pd.DataFrame(
        columns=["subject_id", "visit", "observed", "fitted", "residual", "normalized_residual"]
    )
    arm_of = adeff.drop_duplicates("subject_id").set_index("subject_id")["arm"]
    primary = trial.primary_outcomes[0].name
    # CONSORT "analysed": participants in the primary MMRM of the first primary outcome.
    included = mmrm_included(residuals.get(primary), arm_of, trial.arms)
    drawings: dict[str, Callable[[], Figure]] = {
        "consort": partial(
            fg.consort_figure,
            flow,
            trial,
            included,
            exclusion_reasons(
                adeff, primary, residuals.get(primary), trial.arms, trial.baseline_visit
            ),
        ),
        "forest": partial(fg.forest_figure, effects, trial),
        "forest_all_analyses": partial(
            fg.forest_figure, effects, trial, analyses=("mmrm", "lmm", "ancova")
        ),
        "missingness": partial(fg.missingness_figure, flow, trial),
    }
    for o in trial.primary_outcomes:
        if subgroups is not None:
            drawings[f"{o.name}_subgroups"] = partial(
                fg.subgroup_forest_figure, subgroups, trial, o.name
            )
    for o in trial.primary_outcomes:
        if sensitivity is not None and tipping is not None:
            drawings[f"{o.name}_sensitivity"] = partial(
                sf.sensitivity_forest_figure, effects, sensitivity, trial, o.name
            )
            drawings[f"{o.name}_tipping"] = partial(sf.tipping_figure, tipping, trial, o.name)
    for o in trial.outcomes:
        name = o.name
        drawings[f"{name}_trajectory"] = partial(fg.trajectory_figure, lsmeans, adeff, trial, name)
        drawings[f"{name}_spaghetti"] = partial(fg.spaghetti_figure, adeff, trial, name)
        drawings[f"{name}_change"] = partial(fg.change_figure, adeff, trial, name)
        # Residuals coloured by arm, as every other figure colours the arms.
        fitted = residuals.get(name, empty)
        drawings[f"{name}_diagnostics"] = partial(
            fg.diagnostics_figure,
            fitted.assign(arm=fitted["subject_id"].astype(str).map(arm_of)),
            trial,
            name,
        )

    def draw(stem: str) -> list[Path]:
        return fg.save_figure(drawings[stem](), folder / stem)

    # Each figure is drawn and saved on its own (one in memory per process), so the files do
    # not depend on the number of workers.
    return [path for paths in fork_map(draw, figure_stems(trial), workers) for path in paths]
