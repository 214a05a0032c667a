"""Responder analyses: risk difference, baseline-adjusted odds ratio and number needed to treat.

A responder improves by at least a threshold from baseline (an absolute change in the
outcome's unit, or a percentage of the baseline value) in the outcome's better direction. The
risk difference has a Wald interval; the odds ratio comes from logistic regression of
responder status on arm and baseline (Wald interval, as R ``confint.default`` on a ``glm``);
the number needed to treat is 1 / risk difference with the interval of Altman (BMJ 1998;
317:1309): the reciprocals of the risk difference's limits, which, when that interval spans
zero, run from the number needed to treat for benefit (NNTB) through infinity to the number
needed to treat for harm (NNTH).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["Nnt", "logistic", "nnt", "responder", "risk_difference"]


def responder(
    change: np.ndarray, baseline: np.ndarray, kind: str, threshold: float, lower_is_better: bool
) -> np.ndarray:
    """1.0 for responders, 0.0 for others, NaN where the change is missing.

    ``kind`` is ``"change"`` (improvement >= threshold, in the outcome's unit) or ``"percent"``
    (improvement >= threshold % of baseline; a baseline at or below 0 cannot improve by a
    percentage and counts as non-response).
    """
    improvement = -change if lower_is_better else change
    if kind == "percent":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(baseline > 0, 100.0 * improvement / baseline, -np.inf)
        hit = ratio >= threshold - 1e-9
    else:
        hit = improvement >= threshold - 1e-9
    return np.where(np.isnan(change), np.nan, hit.astype(float))


def risk_difference(
    r_t: float, n_t: int, r_c: float, n_c: int
) -> tuple[float, float, float, float]:
    """Proportions, risk difference (treatment - control) and its Wald variance."""
    p_t, p_c = r_t / n_t, r_c / n_c
    variance = p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c
    return p_t, p_c, p_t - p_c, variance


def logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Maximum-likelihood logistic regression by Newton's method (as R ``glm``).

    Returns coefficients and their covariance (inverse information), or None when the fit
    does not converge or the data are separated (a coefficient runs off to infinity).
    """
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = special.expit(x @ beta)
        info = x.T @ (x * (p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(beta)) > 25:
            return None
        if np.max(np.abs(step)) < 1e-11:
            p = special.expit(x @ beta)
            info = x.T @ (x * (p * (1 - p))[:, None])
            return beta, np.linalg.inv(info)
    return None


@dataclass(frozen=True)
class Nnt:
    """Number needed to treat and its interval (Altman 1998), in numbers and in words."""

    value: float
    lower: float
    upper: float
    text: str


def _words(x: float) -> str:
    if not math.isfinite(x):
        return "infinity"
    kind = "NNTB" if x > 0 else "NNTH"
    return f"{kind} {abs(x):.1f}"


def nnt(rd: float, lower: float, upper: float) -> Nnt:
    """NNT = 1 / risk difference (positive: benefit) with Altman's interval."""

    def inverse(v: float) -> float:
        return math.inf if v == 0 else 1.0 / v

    value, nnt_lo, nnt_hi = inverse(rd), inverse(upper), inverse(lower)
    if lower > 0 or upper < 0:
        ends = sorted((nnt_lo, nnt_hi), key=abs)
        text = f"{_words(value)} ({_words(ends[0])} to {_words(ends[1])})"
    else:
        # The interval of the risk difference includes 0: the NNT's interval is in two parts.
        text = f"{_words(value)} ({_words(nnt_lo)} to infinity to {_words(nnt_hi)})"
    return Nnt(value, nnt_lo, nnt_hi, text)
