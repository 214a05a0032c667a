"""Imputation after dropout from the primary MMRM: the subjects, the strategies, the draws.

Reference-based imputation (Carpenter, Roger & Kenward 2013) completes each subject's missing
visits from a multivariate normal distribution built from the MMRM: the subject's own arm's
mean profile, the reference (control) arm's mean profile for the same subject (same baseline
and covariates), and the MMRM's covariance across visits. A strategy says which mean applies
after the subject's last observed visit; missed visits followed by observed data are imputed
under missing at random (MAR). The strategies are the ones R ``rbmi`` defines:

``mar``
    the subject's own arm throughout.
``jump_to_reference`` (J2R)
    own arm up to the last observed visit, the reference arm's mean after it.
``copy_reference`` (CR)
    the reference arm's mean profile at every visit, before and after discontinuation, for
    subjects who discontinued (rbmi's ``strategy_CR``).
``copy_increments_from_reference`` (CIR)
    after the last observed visit the subject's own mean there plus the reference arm's
    increments from that visit.
``last_mean_carried_forward`` (LMCF)
    the subject's own mean at the last observed visit, carried forward.

For control-arm subjects the reference-based strategies equal MAR (their reference profile is
their own); LMCF applies to both arms. Every quantity here is built once per outcome
(:class:`ImputationSet`) and shared by conditional-mean imputation, multiple imputation, the
delta adjustment and the responder analysis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd
from scipy import linalg

from trialflow.errors import ModelError
from trialflow.parallel import chunks, fork_map
from trialflow.stats.batchfit import SampleSet, chunk_size, refit_samples
from trialflow.stats.covariance import CovarianceStructure
from trialflow.stats.design import (
    ARM,
    BASELINE,
    RESPONSE,
    SUBJECT,
    VISIT,
    covariate_block,
    visit_patterns,
)
from trialflow.stats.mmrm import PreparedMmrm, _Fit, _fit_structure, _objective, _RemlProblem

__all__ = [
    "STRATEGIES",
    "Ancova",
    "ImputationSet",
    "MissingCells",
    "Refitter",
    "conditional_solves",
    "fill",
    "imputation_set",
    "missing_values",
    "strategy_means",
]

STRATEGIES: tuple[str, ...] = (
    "mar",
    "jump_to_reference",
    "copy_reference",
    "copy_increments_from_reference",
    "last_mean_carried_forward",
)
# Chord (fixed-Hessian Newton) iterations of a refit before falling back to a full fit, and the
# Newton decrement g' H^-1 g (deviance units) at which a refit has converged.
_MAX_CHORD = 60
TIGHT = 1e-11


@dataclass(frozen=True)
class ImputationSet:
    """Every analysed subject's visits as matrices, built once per outcome.

    Attributes
    ----------
    subjects
        Subjects of the analysis set (randomized, with baseline and covariates), sorted.
    treated
        True for subjects of the treatment arm.
    y
        Response (subjects x visits), NaN where missing.
    last
        Position of each subject's last observed visit (-1: none observed).
    after
        Visits after the last observed one (where a strategy applies).
    x_own, x_ref
        Design rows (subjects x visits x coefficients) in the subject's own arm and in the
        reference arm.
    offset
        Subtracted from the response to give the change from baseline (the baseline when the
        MMRM models the value, else 0).
    z
        ANCOVA design: intercept, treatment, baseline and covariates (one row per subject).
    observed_code
        Each subject's code among the MMRM's subjects (-1: no observed visit).
    visits
        Post-baseline visits in order.
    """

    subjects: tuple[str, ...]
    treated: np.ndarray
    y: np.ndarray
    last: np.ndarray
    after: np.ndarray
    x_own: np.ndarray
    x_ref: np.ndarray
    offset: np.ndarray
    z: np.ndarray
    observed_code: np.ndarray
    visits: list[str]
    patterns: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]

    @property
    def n(self) -> int:
        return len(self.subjects)

    @property
    def dropped(self) -> np.ndarray:
        """Subjects not observed at the last visit."""
        return self.last < self.y.shape[1] - 1

    def subset(self, rows: np.ndarray) -> ImputationSet:
        """The subjects at positions ``rows`` (every subject of a missingness pattern among
        them), with their patterns renumbered."""
        position = np.full(self.n, -1)
        position[rows] = np.arange(rows.size)
        patterns = tuple((position[r], seen, missing) for r, seen, missing in self.patterns)
        if any((r < 0).any() for r, _, _ in patterns):
            raise ValueError("a subject with a missing visit is not among the rows")
        return replace(
            self,
            subjects=tuple(self.subjects[i] for i in rows),
            treated=self.treated[rows],
            y=self.y[rows],
            last=self.last[rows],
            after=self.after[rows],
            x_own=self.x_own[rows],
            x_ref=self.x_ref[rows],
            offset=self.offset[rows],
            z=self.z[rows],
            observed_code=self.observed_code[rows],
            patterns=patterns,
        )


def _subject_frame(ready: PreparedMmrm) -> tuple[pd.DataFrame, list[str]]:
    """One row per analysed subject (covariates are subject-level) and the visits modelled."""
    visits = list(ready.obs.visits)
    frame = ready.prepared.frame
    frame = frame.loc[frame[VISIT].astype(str).isin(visits)]
    first = frame.drop(columns=[VISIT, RESPONSE]).groupby(SUBJECT, sort=True).first()
    return first, visits


def imputation_set(ready: PreparedMmrm) -> ImputationSet:
    """The analysis set of a prepared MMRM as matrices for imputation."""
    subjects, visits = _subject_frame(ready)
    n, k = len(subjects), len(visits)
    frame = ready.prepared.frame
    row = subjects.index.get_indexer(pd.Index(frame[SUBJECT]))
    col = pd.Categorical(frame[VISIT].astype(str), categories=visits).codes
    keep = col >= 0
    y = np.full((n, k), np.nan)
    y[row[keep], col[keep]] = frame[RESPONSE].to_numpy(dtype=float)[keep]
    observed = ~np.isnan(y)
    positions = np.where(observed, np.arange(k)[None, :], -1)
    last = positions.max(axis=1)
    grid = subjects.loc[subjects.index.repeat(k)].reset_index()
    grid[VISIT] = np.tile(np.asarray(visits, dtype=object), n)
    mean = ready.mean
    x_own = mean.design(grid).reshape(n, k, -1)
    x_ref = mean.design(grid, arm=ready.obs.arms[0]).reshape(n, k, -1)
    has_baseline = mean.spec.baseline != "none"
    base = subjects[BASELINE].to_numpy(dtype=float) if has_baseline else np.zeros(n)
    offset = base if mean.spec.response == "value" else np.zeros(n)
    treated = (subjects[ARM].astype(str) != ready.obs.arms[0]).to_numpy()
    covs = covariate_block(subjects, ready.prepared.covariates).matrix
    z = np.column_stack(
        [np.ones(n), treated.astype(float), *([base] if has_baseline else []), covs]
    )
    code = {s: i for i, s in enumerate(ready.obs.subjects)}
    observed_code = np.array([code.get(str(s), -1) for s in subjects.index], dtype=np.int64)
    return ImputationSet(
        subjects=tuple(str(s) for s in subjects.index),
        treated=treated,
        y=y,
        last=last,
        after=np.arange(k)[None, :] > last[:, None],
        x_own=x_own,
        x_ref=x_ref,
        offset=offset,
        z=z,
        observed_code=observed_code,
        visits=visits,
        patterns=_missing_patterns(observed),
    )


def _missing_patterns(
    observed: np.ndarray,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """(subjects, observed visits, missing visits) of every pattern with a missing visit."""
    patterns, which = visit_patterns(observed)
    out = []
    for j, mask in enumerate(patterns):
        if mask.all():
            continue
        out.append((np.flatnonzero(which == j), np.flatnonzero(mask), np.flatnonzero(~mask)))
    return tuple(out)


def strategy_means(
    data: ImputationSet, mu_own: np.ndarray, mu_ref: np.ndarray, strategy: str
) -> np.ndarray:
    """Each subject's mean profile (... x subjects x visits) under ``strategy``.

    ``mu_own`` and ``mu_ref`` may carry leading axes (e.g. one per imputation).

    Raises
    ------
    ModelError
        Last mean carried forward with a dropout who has no observed post-baseline visit.
    """
    if strategy == "mar":
        return mu_own
    after = data.after
    rows = np.arange(data.n)
    anchor = np.maximum(data.last, 0)
    none = data.last < 0
    if strategy == "jump_to_reference":
        return np.where(after, mu_ref, mu_own)
    if strategy == "copy_reference":
        return np.where(data.dropped[:, None], mu_ref, mu_own)
    if strategy == "copy_increments_from_reference":
        at_anchor = (mu_own[..., rows, anchor] - mu_ref[..., rows, anchor])[..., None]
        out = np.where(after, at_anchor + mu_ref, mu_own)
        out[..., none, :] = mu_ref[..., none, :]
        return out
    if strategy == "last_mean_carried_forward":
        if none.any():
            raise ModelError(
                f"last mean carried forward needs an observed post-baseline visit, and "
                f"{int(none.sum())} subject(s) have none",
                fix="use jump_to_reference or copy_reference for such dropouts",
            )
        return np.where(after, mu_own[..., rows, anchor][..., None], mu_own)
    raise ModelError(f"unknown strategy {strategy!r}", fix=f"use one of {', '.join(STRATEGIES)}")


@dataclass(frozen=True)
class _Solve:
    """One missingness pattern's conditional distribution: gain and Cholesky factor.

    ``gain`` and ``chol`` carry the leading axes of the covariance matrices they came from.
    """

    rows: np.ndarray
    seen: np.ndarray
    missing: np.ndarray
    gain: np.ndarray  # Sigma_MO Sigma_OO^-1
    chol: np.ndarray | None  # of Sigma_MM - gain Sigma_OM, when draws are wanted


def conditional_solves(data: ImputationSet, sigma: np.ndarray, draws: bool) -> list[_Solve]:
    """The conditional distribution of the missing visits given the observed ones, per pattern.

    ``sigma`` is one covariance matrix (k x k) or a stack of them (... x k x k).
    """
    out = []
    lead = sigma.shape[:-2]
    for rows, seen, missing in data.patterns:
        s_mo = sigma[..., missing[:, None], seen[None, :]]
        s_oo = sigma[..., seen[:, None], seen[None, :]]
        gain = (
            np.swapaxes(np.linalg.solve(s_oo, np.swapaxes(s_mo, -1, -2)), -1, -2)
            if seen.size
            else np.zeros((*lead, missing.size, 0))
        )
        chol = None
        if draws:
            cond = sigma[..., missing[:, None], missing[None, :]] - gain @ np.swapaxes(s_mo, -1, -2)
            chol = np.linalg.cholesky(0.5 * (cond + np.swapaxes(cond, -1, -2)))
        out.append(_Solve(rows, seen, missing, gain, chol))
    return out


def missing_values(
    mu: np.ndarray, observed: np.ndarray, solve: _Solve, normals: np.ndarray | None = None
) -> np.ndarray:
    """One pattern's missing values (... x its subjects x missing visits) under the mean
    profiles ``mu`` (... x its subjects x visits): the conditional mean given ``observed``
    (its subjects x observed visits), plus a draw when ``normals`` (... x its subjects x
    missing visits) are given."""
    gain = np.swapaxes(solve.gain, -1, -2)
    values = mu[..., solve.missing] + (observed - mu[..., solve.seen]) @ gain
    if normals is not None and solve.chol is not None:
        values += normals @ np.swapaxes(solve.chol, -1, -2)
    return values


def fill(
    data: ImputationSet,
    means: np.ndarray,
    solves: list[_Solve],
    normals: np.ndarray | None = None,
) -> np.ndarray:
    """Completed responses under each mean profile in ``means`` (... x subjects x visits).

    Missing values get their conditional mean, plus a draw when ``normals`` (... x subjects x
    visits, shared by every profile) are given. The leading axes of ``means`` end with those of
    the solves' covariance matrices (e.g. profiles x imputations).
    """
    y = np.broadcast_to(data.y, means.shape).copy()
    for s in solves:
        cells = (s.rows[:, None], s.missing[None, :])
        y[(..., *cells)] = missing_values(
            means[..., s.rows, :],
            data.y[np.ix_(s.rows, s.seen)],
            s,
            None if normals is None else normals[(..., *cells)],
        )
    return y


@dataclass(frozen=True)
class MissingCells:
    """The subjects with a missing visit, sorted by missingness pattern, and their missing cells.

    Multiple imputation draws and completes these cells only: the other subjects' values are
    the same in every completed dataset. Each pattern's subjects are one slice of ``data``, and
    an imputation's normals are one vector of ``count`` values, pattern after pattern.
    """

    data: ImputationSet
    positions: np.ndarray  # each subject's position in the whole analysis set
    slices: tuple[slice, ...]  # each pattern's subjects in ``data``, as in data.patterns

    @classmethod
    def of(cls, data: ImputationSet) -> MissingCells:
        order = np.concatenate([rows for rows, _, _ in data.patterns] or [np.zeros(0, int)])
        part = data.subset(order)
        slices = tuple(slice(int(r[0]), int(r[-1]) + 1) for r, _, _ in part.patterns)
        return cls(part, order, slices)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(subjects, missing visits) of each pattern."""
        return [(rows.size, missing.size) for rows, _, missing in self.data.patterns]

    @property
    def count(self) -> int:
        return sum(n * k for n, k in self.shapes)

    def split(self, normals: np.ndarray) -> list[np.ndarray]:
        """Draws (... x count) as one block per pattern (... x subjects x missing visits)."""
        if not self.shapes:
            return []  # complete data: nothing to draw
        ends = np.cumsum([n * k for n, k in self.shapes])
        lead = normals.shape[:-1]
        return [
            part.reshape(*lead, *shape)
            for part, shape in zip(np.split(normals, ends[:-1], axis=-1), self.shapes, strict=True)
        ]


class Ancova:
    """OLS of many responses on one design; the treatment coefficient and its variance.

    The analysis model of a completed dataset: at each visit, change from baseline on
    treatment, baseline and covariates (as R ``rbmi::ancova``). All-zero columns (a covariate
    level absent from a leave-one-out sample) are dropped.
    """

    def __init__(self, z: np.ndarray) -> None:
        keep = np.flatnonzero(np.any(z != 0, axis=0))
        self.z = z[:, keep]
        self.arm = int(np.flatnonzero(keep == 1)[0])
        self.gram_inv = linalg.inv(self.z.T @ self.z)
        self.df = float(self.z.shape[0] - self.z.shape[1])

    def fit(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Treatment coefficient and its variance for each column of ``y``."""
        coef = self.gram_inv @ (self.z.T @ y)
        resid = y - self.z @ coef
        s2 = np.einsum("ij,ij->j", resid, resid) / self.df
        return coef[self.arm], s2 * self.gram_inv[self.arm, self.arm]

    def slope(self, y: np.ndarray) -> np.ndarray:
        """Treatment coefficient only (for responses where no variance is needed)."""
        return (self.gram_inv[self.arm] @ self.z.T) @ y


class CompletedAncova:
    """:class:`Ancova` of completed datasets that differ only in their imputed cells.

    The observed cells are the same in every completed dataset, so their share of the
    cross-products (Z'y and y'y, per visit) is taken once; each dataset then adds only its
    imputed cells' share. The residual sum of squares is y'y - b'Z'y (the normal equations).
    """

    def __init__(self, ancova: Ancova, changes: np.ndarray) -> None:
        """``changes``: subjects x visits, NaN where missing (rows as ``ancova.z``)."""
        observed = np.nan_to_num(changes, nan=0.0)
        self.ancova = ancova
        self.zy = (ancova.z.T @ observed).T  # visits x columns of Z
        self.yy = np.einsum("ij,ij->j", observed, observed)

    def fit(self, zy: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Treatment coefficient and its variance per visit of each dataset, from its imputed
        cells' Z'y (... x visits x columns of Z) and y'y (... x visits)."""
        a = self.ancova
        zy = self.zy + zy
        coef = zy @ a.gram_inv  # the inverse Gram matrix is symmetric
        rss = np.maximum(self.yy + yy - np.einsum("...j,...j->...", coef, zy), 0.0)
        return coef[..., a.arm], rss / a.df * a.gram_inv[a.arm, a.arm]


class Refitter:
    """The primary MMRM refitted to a resampled set of subjects, from its own optimum.

    Leave-one-out and bootstrap samples move the optimum little, so a refit takes Newton steps
    with the full-data Hessian (the chord method) from the full-data optimum; only when that
    does not converge does it fall back to a full fit started there.
    """

    def __init__(self, problem: _RemlProblem, fit: _Fit) -> None:
        self.problem = problem
        self.structure: CovarianceStructure = fit.structure
        self.theta = fit.theta
        self.hessian_inv = np.linalg.inv(fit.hessian)
        self.beta = fit.evaluation.beta
        self.sigma = fit.structure.sigma(fit.theta)
        self.dropped_column_fits = 0

    def fit(
        self, weights: np.ndarray, tolerance: float = TIGHT
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Coefficients (0 for a column the sample cannot estimate) and covariance, or None.

        ``tolerance`` is the Newton decrement (deviance units) at which the refit stops.
        """
        params, dropped = self._refit(weights, tolerance)
        self.dropped_column_fits += dropped
        return params

    def _refit(
        self, weights: np.ndarray, tolerance: float
    ) -> tuple[tuple[np.ndarray, np.ndarray] | None, bool]:
        """:meth:`fit`'s result, and whether the sample lost a column (counted by the caller,
        which may be a worker process whose own count would be lost)."""
        problem, keep = self.problem.reweighted(weights)
        dropped = keep.size < self.beta.size
        theta = self._chord(problem, tolerance)
        if theta is None:
            fit = _fit_structure(problem, self.structure, start=self.theta)
            if not fit.converged:
                return None, dropped
            theta = fit.theta
        sigma = self.structure.sigma(theta)
        ev = problem.evaluate(sigma, gradient=False)
        if ev is None:
            return None, dropped
        beta = np.zeros(self.beta.size)
        beta[keep] = ev.beta
        return (beta, sigma), dropped

    def fit_many(
        self,
        samples: Callable[[np.ndarray], SampleSet],
        weights: Callable[[int], np.ndarray],
        n: int,
        tolerance: float = TIGHT,
        workers: int = 1,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refits of ``n`` samples: coefficients, covariance matrices, and which converged.

        ``samples(rows)`` builds the cross-products of samples ``rows`` (refitted together,
        chunk by chunk); ``weights(i)`` gives sample ``i``'s subject weights for the one-at-a-
        time refit of a sample the batch could not finish (a dropped column, no convergence).
        The chunks, cut the same way for any number of workers, run on up to ``workers``
        processes.
        """
        cut = chunks(n, chunk_size(self.problem))
        done = fork_map(partial(self._fit_chunk, samples, weights, tolerance), cut, workers)
        k = self.sigma.shape[0]
        betas, sigmas = np.zeros((n, self.beta.size)), np.zeros((n, k, k))
        ok = np.ones(n, dtype=bool)
        for rows, (beta, sigma, fitted, dropped) in zip(cut, done, strict=True):
            betas[rows], sigmas[rows], ok[rows] = beta, sigma, fitted
            self.dropped_column_fits += dropped
        return betas, sigmas, ok

    def _fit_chunk(
        self,
        samples: Callable[[np.ndarray], SampleSet],
        weights: Callable[[int], np.ndarray],
        tolerance: float,
        rows: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One chunk of :meth:`fit_many`: its samples refitted together, then one at a time
        those the batch could not finish; a sample that fails has zeros and is not ok."""
        beta, sigma, ok = refit_samples(
            self.problem, self.structure, self.theta, self.hessian_inv, samples(rows), tolerance
        )
        beta[~ok], sigma[~ok] = 0.0, 0.0
        dropped = 0
        for j in np.flatnonzero(~ok):
            params, lost = self._refit(weights(int(rows[j])), tolerance)
            dropped += lost
            if params is not None:
                (beta[j], sigma[j]), ok[j] = params, True
        return beta, sigma, ok, dropped

    def _chord(self, problem: _RemlProblem, tolerance: float) -> np.ndarray | None:
        """Quasi-Newton steps from the full-data optimum, starting from its inverse Hessian.

        The inverse Hessian is updated by BFGS after each step, so the iteration converges
        superlinearly although the sample's Hessian differs from the full data's.
        """
        theta = self.theta.copy()
        inverse = self.hessian_inv.copy()
        value, grad = _objective(theta, problem, self.structure, 1.0)
        for _ in range(_MAX_CHORD):
            if not math.isfinite(value):
                return None
            step = -inverse @ grad
            if float(-grad @ step) < tolerance:
                return theta
            t = 1.0
            while t > 1e-3:
                new_value, new_grad = _objective(theta + t * step, problem, self.structure, 1.0)
                if new_value <= value:
                    break
                t *= 0.5
            else:
                return None
            moved, change = t * step, new_grad - grad
            curvature = float(moved @ change)
            if curvature > 1e-12 * float(np.linalg.norm(moved) * np.linalg.norm(change)):
                rho = 1.0 / curvature
                left = np.eye(theta.size) - rho * np.outer(moved, change)
                inverse = left @ inverse @ left.T + rho * np.outer(moved, moved)
            theta, value, grad = theta + moved, new_value, new_grad
        return None
