"""Display labels: what readers see for arms, visits and covariate levels.

The data and every CSV output keep the labels of the raw files (``nonweightbearing``,
``week26``, ``F``). The report, its figures and the index show the trial description's display
labels instead: ``arms.labels``, each visit's ``name`` (default "Baseline" or "Week <n>") and a
categorical covariate's ``levels``. The renaming happens once, at the entrance of the
reader-facing steps: :func:`display_trial` renames the description and :func:`display_frame`
the tables, so every sentence, table and figure built from them agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pandas as pd

from trialflow.config import TrialConfig

__all__ = ["arm_name", "display_frame", "display_trial", "visit_name"]


def arm_name(trial: TrialConfig, arm: str) -> str:
    """The display label of an arm (its data label when none is given)."""
    return str(trial.arm_labels.get(arm, arm))


def visit_name(trial: TrialConfig, label: str) -> str:
    """The display name of a visit (its data label when it is not a visit of the trial)."""
    for v in trial.visits:
        if v.label == label:
            return v.name or v.label
    return label


def display_trial(trial: TrialConfig) -> TrialConfig:
    """The trial description with display labels in place of the data's labels."""
    names = {v.label: visit_name(trial, v.label) for v in trial.visits}
    return replace(
        trial,
        control=arm_name(trial, trial.control),
        treatment=arm_name(trial, trial.treatment),
        visits=tuple(replace(v, label=names[v.label]) for v in trial.visits),
        baseline_visit=names[trial.baseline_visit],
        primary_visit=names[trial.primary_visit],
        arm_labels={},
    )


def _level_maps(trial: TrialConfig) -> dict[str, Mapping[str, str]]:
    return {c.name: c.levels for c in trial.covariates if c.levels}


def _rename(value: object, mapping: Mapping[str, str]) -> object:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return value
    return mapping.get(str(value), value)


def display_frame(frame: pd.DataFrame | None, trial: TrialConfig) -> pd.DataFrame | None:
    """A copy of a result table with display labels in its arm, visit and covariate columns.

    Also renames the columns of tables laid out by arm (``"<arm>: participants"``).
    """
    if frame is None:
        return None
    out = frame.copy()
    arms = {a: arm_name(trial, a) for a in trial.arms}
    visits = {v.label: visit_name(trial, v.label) for v in trial.visits}
    maps: list[tuple[str, Mapping[str, str]]] = [
        ("arm", arms), ("visit", visits), ("last_visit", visits),
        *_level_maps(trial).items(),
    ]  # fmt: skip
    for column, mapping in maps:
        if column in out:
            out[column] = out[column].map(lambda x, m=mapping: _rename(x, m))
    levels = _level_maps(trial)
    if "subgroup" in out and "level" in out:
        # A subgroup's levels are its covariate's levels.
        out["level"] = pd.Series(
            [
                _rename(level, levels.get(str(group), {}))
                for group, level in zip(out["subgroup"], out["level"], strict=True)
            ],
            index=out.index,
            dtype=object,
        )
    renamed = {}
    for column in out.columns:
        head, sep, tail = str(column).partition(": ")
        if sep and head in arms:
            renamed[column] = f"{arms[head]}: {tail}"
    return out.rename(columns=renamed)
