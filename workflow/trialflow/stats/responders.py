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
import pandas as pd
from scipy import special

__all__ = ["Covariates", "Nnt", "logistic", "logistic_many", "nnt", "responder", "risk_difference"]


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
    beta, cov, ok = logistic_many(x, y[None])
    return (beta[0], cov[0]) if ok[0] else None


@dataclass(frozen=True)
class Covariates:
    """Subjects grouped by identical design rows (arm and a recorded baseline repeat often).

    The binomial likelihood of each group's successes out of its size is the Bernoulli
    likelihood of its subjects, so a logistic fit on the groups has the same optimum and
    information as the fit on the subjects, at the cost of the groups.
    """

    x: np.ndarray  # groups x p: each distinct design row once
    size: np.ndarray  # subjects per group
    group: np.ndarray  # each subject's group
    order: np.ndarray  # subjects sorted by group
    starts: np.ndarray  # where each group begins in ``order``

    @classmethod
    def of(cls, x: np.ndarray) -> Covariates:
        # Each column's codes in sorted order, combined column by column: the groups come in
        # the rows' lexicographic order without sorting the rows themselves.
        code = np.zeros(x.shape[0], dtype=np.int64)
        for column in x.T:
            codes, values = pd.factorize(column, sort=True)
            if (codes < 0).any():
                raise ValueError("a missing value in the responder model's design")
            code = pd.factorize(code * len(values) + codes, sort=True)[0]
        size = np.bincount(code)
        order = np.argsort(code, kind="stable")
        starts = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        return cls(x[order[starts]], size.astype(float), code, order, starts)

    def successes(self, y: np.ndarray, subjects: np.ndarray | None = None) -> np.ndarray:
        """Each group's sum of ``y`` (fits x subjects -> fits x groups); with ``subjects``
        (positions), the columns of ``y`` are those subjects only."""
        if subjects is None:
            return np.add.reduceat(y[:, self.order], self.starts, axis=1)
        group = self.group[subjects]
        order = np.argsort(group, kind="stable")
        present, starts = np.unique(group[order], return_index=True)
        out = np.zeros((y.shape[0], self.size.size))
        if present.size:
            out[:, present] = np.add.reduceat(y[:, order], starts, axis=1)
        return out


def _outer_rows(x: np.ndarray) -> np.ndarray:
    """Each row's outer product, flattened (n x p*p): built once per design."""
    return (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)


def _information(
    x: np.ndarray, size: np.ndarray, outer: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Information of every fit (fits x p x p) and the fitted success counts (fits x rows)."""
    p = special.expit(beta @ x.T)
    # One matrix product for every fit: weights (fits x rows) times each row's outer product.
    info = (size * p * (1 - p)) @ outer
    return info.reshape(-1, x.shape[1], x.shape[1]), size * p


def _solve_each(info: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton steps of every fit; a singular information matrix marks its fit as failed."""
    try:
        return np.linalg.solve(info, score[..., None])[..., 0], np.ones(len(info), dtype=bool)
    except np.linalg.LinAlgError:
        step, ok = np.zeros_like(score), np.ones(len(info), dtype=bool)
        for i in range(len(info)):
            try:
                step[i] = np.linalg.solve(info[i], score[i])
            except np.linalg.LinAlgError:
                ok[i] = False
        return step, ok


def logistic_many(
    x: np.ndarray, y: np.ndarray, size: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`logistic` of each row of ``y`` (fits x rows) on one design, side by side.

    With ``size``, a row of ``x`` is a group of that many subjects and ``y`` counts its
    successes (binomial); without, each row is one subject. Returns coefficients (fits x p),
    covariances (fits x p x p) and which fits converged; each fit takes the Newton steps it
    would take alone and stops when its own step is below 1e-11.
    """
    size = np.ones(x.shape[0]) if size is None else size
    return _newton(x, y, size, _outer_rows(x))


def _newton(
    x: np.ndarray, y: np.ndarray, size: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m, p = y.shape[0], x.shape[1]
    beta = np.zeros((m, p))
    if m > 1:
        # Completed datasets differ little: from the first fit's optimum the others need a
        # few Newton steps instead of a full run from zero (the optimum is the same).
        first, _, first_ok = _newton(x, y[:1], size, outer)
        if first_ok[0]:
            beta[:] = first[0]
    running, ok = np.ones(m, dtype=bool), np.zeros(m, dtype=bool)
    for _ in range(100):
        rows = np.flatnonzero(running)
        if not rows.size:
            break
        info, fitted = _information(x, size, outer, beta[rows])
        step, solved = _solve_each(info, (y[rows] - fitted) @ x)
        beta[rows] += step
        off = ~solved | (np.max(np.abs(beta[rows]), axis=1) > 25)
        done = ~off & (np.max(np.abs(step), axis=1) < 1e-11)
        running[rows[off | done]] = False
        ok[rows[done]] = True
    cov = np.full((m, p, p), np.nan)
    if ok.any():
        cov[ok] = np.linalg.inv(_information(x, size, outer, beta[ok])[0])
    return beta, cov, ok


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
