"""Exploratory subgroup analyses of the MMRM: the treatment effect within each level of a factor.

For one subgroup variable S the primary MMRM is refitted with S, S-by-visit and the
arm-by-S-by-visit interaction added (``... + arm * S * visit``), so that the treatment effect at
every visit has its own value in every level of S. The table gives the effect at the primary
visit in each level (95% CI and n) and the treatment-by-subgroup interaction test at that visit:
an F test that the effect is the same in every level, written as "effect in level j minus
effect in the first level" for j = 2..k, with the trial's df method. A level where some arm has
no observation at some visit cannot be estimated: it is left out of the model and reported as
"not estimable" with the reason; the run never stops for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trialflow.errors import ModelError
from trialflow.stats.design import ARM, VISIT, text_labels
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import (
    MmrmInference,
    PreparedMmrm,
    fit_prepared,
    intervals,
    prepare_mmrm,
)

__all__ = ["SUBGROUP_COLUMNS", "cut_labels", "fit_subgroup"]

SUBGROUP_COLUMNS: tuple[str, ...] = (
    "subgroup",
    "level",
    "visit",
    "n",
    "estimate",
    "std_error",
    "df",
    "ci_lower",
    "ci_upper",
    "p_value",
    "interaction_F",
    "interaction_num_df",
    "interaction_den_df",
    "interaction_p",
    "df_method",
    "note",
)


def cut_labels(values: pd.Series, cuts: Sequence[float]) -> tuple[pd.Series, list[str]]:
    """Group a numeric variable at cut points: ``<c1``, ``c1 to <c2``, ..., ``>=ck``.

    A value equal to a cut point goes to the upper group; a missing value stays missing.
    """
    edges = sorted(float(c) for c in cuts)
    names = [f"<{edges[0]:g}"]
    names += [f"{a:g} to <{b:g}" for a, b in itertools.pairwise(edges)]
    names.append(f">={edges[-1]:g}")
    numbers = pd.to_numeric(values, errors="coerce")
    codes = np.searchsorted(np.asarray(edges), numbers.to_numpy(dtype=float), side="right")
    labels = pd.Series([names[c] for c in codes], index=values.index, dtype=object)
    return labels.where(numbers.notna(), None), names


def _empty_cells(data: pd.DataFrame, column: str, arms: Sequence[str]) -> dict[str, str]:
    """Levels with an arm x visit cell without observations, and why they are not estimable."""
    why: dict[str, str] = {}
    visits = list(data[VISIT].cat.categories)
    for level, rows in data.groupby(column, sort=True):
        seen = set(zip(rows[ARM], rows[VISIT].astype(str), strict=True))
        for v in visits:
            missing = [a for a in arms if (a, v) not in seen]
            if missing:
                why[str(level)] = f"no participant of arm {missing[0]!r} observed at {v}"
                break
    return why


def _rows(
    ready: PreparedMmrm, inference: MmrmInference, primary: str, alpha: float
) -> list[dict[str, object]]:
    mean = ready.mean
    assert mean.subgroup is not None  # set by prepare_mmrm
    levels = list(mean.subgroup.levels)
    effects = np.array([mean.effect_row(primary, level) for level in levels])
    est, se, df = inference.contrasts(effects, "arm:subgroup:visit")
    lower, upper, p_value = intervals(est, se, df, alpha)
    test = inference.test(effects[1:] - effects[0], "arm:subgroup:visit")
    frame = ready.obs.frame
    at_visit = frame.loc[frame[VISIT].astype(str) == primary]
    counts = at_visit.groupby(mean.subgroup.column).size()
    return [
        {
            "level": level,
            "visit": primary,
            "n": int(counts.get(level, 0)),
            "estimate": est[i],
            "std_error": se[i],
            "df": df[i],
            "ci_lower": lower[i],
            "ci_upper": upper[i],
            "p_value": p_value[i],
            "interaction_F": test.f_value,
            "interaction_num_df": test.num_df,
            "interaction_den_df": test.den_df,
            "interaction_p": test.p_value,
            "note": "",
        }
        for i, level in enumerate(levels)
    ]


def fit_subgroup(
    data: pd.DataFrame,
    *,
    name: str,
    column: str,
    levels: Sequence[str],
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str | None,
    covariates: Sequence[str],
    reference_arm: str,
    visit_order: Sequence[str],
    primary_visit: str,
    covariance: str = "us",
    fallback: Sequence[str] = ("toep", "ar1", "cs"),
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    mean: MeanSpec | None = None,
    week: str | None = None,
) -> pd.DataFrame:
    """Treatment effect at the primary visit in each level of a subgroup, and the interaction.

    Parameters
    ----------
    data
        Post-baseline rows of one outcome, with the subgroup label of every row in ``column``.
    name
        The subgroup's name in the table.
    column
        Column of the level labels (text; missing labels exclude the subject with a warning).
    levels
        Levels in display order; the first is the reference of the interaction contrasts.
    covariates
        Adjustment covariates other than the subgroup variable itself.
    Other parameters
        As :func:`~trialflow.stats.mmrm.fit_mmrm`.

    Returns
    -------
    pandas.DataFrame
        One row per level, columns :data:`SUBGROUP_COLUMNS`. Levels that cannot be estimated,
        or every level when the model cannot be fitted, have NaN numbers and the reason in
        ``note``.
    """
    spec = mean if mean is not None else MeanSpec(baseline="main" if baseline else "none")
    frame = data.assign(**{column: text_labels(data[column])})
    post = frame.loc[frame[response].notna() & frame[column].notna()]
    probe = post.rename(columns={arm: ARM}).assign(
        **{VISIT: pd.Categorical(post[visit].astype(str), categories=list(visit_order))}
    )
    skipped = _empty_cells(
        probe,
        column,
        [str(reference_arm), *sorted({str(a) for a in post[arm]} - {str(reference_arm)})],
    )
    keep = [lv for lv in levels if lv not in skipped and lv in set(post[column])]
    absent = {lv: "no participant in this level" for lv in levels if lv not in set(post[column])}
    skipped.update(absent)
    rows: list[dict[str, object]] = []
    try:
        if len(keep) < 2:
            raise ModelError("fewer than two levels can be estimated")
        ready = prepare_mmrm(
            frame.loc[frame[column].isin(keep)],
            response=response,
            subject=subject,
            visit=visit,
            arm=arm,
            baseline=baseline,
            covariates=covariates,
            reference_arm=reference_arm,
            visit_order=visit_order,
            week=week,
            spec=spec,
            subgroup=(name, column, keep),
        )
        _, inference = fit_prepared(ready, covariance, fallback, df_method)
        rows = _rows(ready, inference, primary_visit, alpha)
    except ModelError as exc:
        skipped.update({lv: exc.message for lv in keep})
    for level, reason in skipped.items():
        rows.append({"level": level, "visit": primary_visit, "note": f"not estimable: {reason}"})
    order = {lv: i for i, lv in enumerate(levels)}
    table = pd.DataFrame(rows).assign(subgroup=name, df_method=df_method)
    table = table.sort_values("level", key=lambda s: s.map(order), kind="stable")
    return table.reindex(columns=list(SUBGROUP_COLUMNS)).reset_index(drop=True)
