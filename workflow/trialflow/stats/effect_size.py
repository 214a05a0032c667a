"""Standardised effect sizes and multiplicity adjustment.

:func:`hedges_g` gives Hedges' g of the change from baseline at each post-baseline visit
(treatment minus control, pooled standard deviation, small-sample correction) with a
large-sample normal confidence interval. :func:`holm` adjusts a family of p-values with Holm's
step-down procedure, leaving missing p-values missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.design import ARM, RESPONSE, VISIT, prepare_long

HEDGES_COLUMNS: tuple[str, ...] = (
    "contrast",
    "visit",
    "g",
    "std_error",
    "ci_lower",
    "ci_upper",
    "mean_treatment",
    "mean_control",
    "sd_pooled",
    "n_treatment",
    "n_control",
)


def hedges_g(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    reference_arm: str,
    visit_order: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Hedges' g of the response (change from baseline) at each visit, treatment - control.

    ``g = J (mean_t - mean_c) / s_pooled`` with
    ``s_pooled = sqrt(((n_t - 1) s_t^2 + (n_c - 1) s_c^2) / (n_t + n_c - 2))`` and the
    small-sample correction ``J = 1 - 3 / (4 (n_t + n_c) - 9)``. The confidence interval is
    ``g +- z_{1 - alpha/2} * se`` with the large-sample variance
    ``se^2 = (n_t + n_c) / (n_t n_c) + g^2 / (2 (n_t + n_c))`` (Hedges & Olkin, 1985).

    Parameters
    ----------
    data
        Long data of one outcome, post-baseline rows; rows with a missing response are
        ignored.
    response, subject, visit, arm
        Column names of the change from baseline, subject identifier, visit label and arm.
    reference_arm
        Label of the control arm.
    visit_order
        Visit labels in order; None takes the categories of an ordered categorical visit
        column, else sorted numeric visits, else the order of first appearance.
    alpha
        Two-sided significance level of the confidence interval.

    Returns
    -------
    pandas.DataFrame
        One row per visit with columns :data:`HEDGES_COLUMNS`. A visit with fewer than two
        subjects in an arm (or no variability) gets NaN for g and its interval.

    Raises
    ------
    ModelError
        On invalid input (see :func:`trialflow.stats.design.prepare_long`).
    """
    prep = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        reference_arm=reference_arm,
        visit_order=visit_order,
    )
    frame = prep.frame.loc[prep.frame[RESPONSE].notna()]
    z = float(stats.norm.ppf(1 - alpha / 2))
    rows: list[dict[str, object]] = []
    for v in prep.visits:
        at = frame.loc[frame[VISIT] == v]
        y_t = at.loc[at[ARM] == prep.treatment, RESPONSE].to_numpy(dtype=float)
        y_c = at.loc[at[ARM] == prep.control, RESPONSE].to_numpy(dtype=float)
        if len(y_t) + len(y_c) == 0:
            continue  # e.g. the baseline visit, where change is undefined
        n_t, n_c = len(y_t), len(y_c)
        g = se = sd = math.nan
        if n_t >= 2 and n_c >= 2:
            sd = math.sqrt(
                ((n_t - 1) * y_t.var(ddof=1) + (n_c - 1) * y_c.var(ddof=1)) / (n_t + n_c - 2)
            )
            if sd > 0:
                j = 1.0 - 3.0 / (4.0 * (n_t + n_c) - 9.0)
                g = j * (y_t.mean() - y_c.mean()) / sd
                se = math.sqrt((n_t + n_c) / (n_t * n_c) + g**2 / (2.0 * (n_t + n_c)))
        rows.append(
            {
                "contrast": prep.contrast,
                "visit": v,
                "g": g,
                "std_error": se,
                "ci_lower": g - z * se,
                "ci_upper": g + z * se,
                "mean_treatment": float(y_t.mean()) if n_t else math.nan,
                "mean_control": float(y_c.mean()) if n_c else math.nan,
                "sd_pooled": sd,
                "n_treatment": n_t,
                "n_control": n_c,
            }
        )
    return pd.DataFrame(rows, columns=list(HEDGES_COLUMNS))


def holm(p_values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """Holm step-down adjusted p-values; missing (NaN) p-values stay missing.

    The family is the non-missing p-values: sorted ascending as p_(1) <= ... <= p_(m),
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.

    Parameters
    ----------
    p_values
        Unadjusted p-values in [0, 1], any order; NaN allowed.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values in the input order (float array of the same length).

    Raises
    ------
    ModelError
        If a p-value lies outside [0, 1] or the input is not one-dimensional.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ModelError(
            f"expected a one-dimensional list of p-values, got shape {p.shape}",
            fix="pass the p-values of one family as a flat list",
        )
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ModelError(
            "p-values must lie between 0 and 1", fix="check the values passed to holm()"
        )
    out = np.full(p.shape, np.nan)
    vals = p[ok]
    m = vals.size
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * vals[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    out[ok] = adjusted
    return out
