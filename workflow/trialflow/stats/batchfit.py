"""Many REML refits of one MMRM at once, for the resampling of the sensitivity analyses.

The bootstrap of multiple imputation and the jackknife of conditional-mean imputation refit
the primary MMRM to hundreds or thousands of resampled sets of subjects. A sample only
reweights the subjects, so each sample's REML problem is the full problem's patterns with
reweighted cross-products. Here every sample of a chunk is one slice of stacked arrays: the
covariance matrices, their Cholesky factors, the GLS cross-products and the gradient are
computed for all samples by the same array operations, and each sample takes the same
quasi-Newton steps as :meth:`trialflow.stats.imputation.Refitter.fit` would take alone (from
the full-data optimum, with the full-data inverse Hessian updated by BFGS).

Samples that leave a design column without data, or whose steps do not converge, are returned
as not done; the caller refits them one at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trialflow.stats.covariance import CovarianceStructure
from trialflow.stats.mmrm import _RemlProblem

__all__ = ["SampleSet", "bootstrap_samples", "leave_one_out_samples", "refit_samples"]

_LOG_2PI = math.log(2.0 * math.pi)
# Values held per chunk of samples (cross-products of every pattern); bounds the memory.
_CHUNK_VALUES = 4_000_000
# Quasi-Newton iterations before a sample is left to the one-at-a-time refit.
_MAX_STEPS = 60


@dataclass(frozen=True)
class SampleSet:
    """Reweighted cross-products of a chunk of samples, pattern by pattern.

    ``cross[j]`` is (samples, m * m, q * q) in the layout of ``_Pattern.cross``;
    ``n_subjects`` is (samples, patterns) total weights; ``estimable`` is False for a sample
    that leaves a design column without data.
    """

    cross: list[np.ndarray]
    n_subjects: np.ndarray
    estimable: np.ndarray

    def __len__(self) -> int:
        return int(self.n_subjects.shape[0])

    def subset(self, rows: np.ndarray) -> SampleSet:
        return SampleSet([c[rows] for c in self.cross], self.n_subjects[rows], self.estimable[rows])


def _layout(outer: np.ndarray, m: int, q: int) -> np.ndarray:
    """(samples, m*q, m*q) cross-products in the (samples, m*m, q*q) layout of the patterns."""
    b = outer.shape[0]
    return outer.reshape(b, m, q, m, q).transpose(0, 1, 3, 2, 4).reshape(b, m * m, q * q)


def _estimable(problem: _RemlProblem, cross: list[np.ndarray]) -> np.ndarray:
    """False for samples where some design column has no nonzero value."""
    diag = np.zeros((cross[0].shape[0], problem.q))
    for pat, c in zip(problem.patterns, cross, strict=True):
        m = pat.visits.size
        diag += c[:, :: m + 1].sum(axis=1)[:, :: problem.q + 1]
    return np.all(diag[:, :-1] > 0, axis=1)


def bootstrap_samples(problem: _RemlProblem, weights: np.ndarray) -> SampleSet:
    """Samples given by subject weights (samples x subjects), e.g. bootstrap counts."""
    cross, totals = [], []
    for pat in problem.patterns:
        m = pat.visits.size
        w = weights[:, pat.subjects]
        d = pat.block.shape[1]
        # A sample's cross-product is its weighted sum of the subjects' outer products: one
        # matrix product (samples x subjects) @ (subjects x pairs) for all samples, over slices
        # of subjects so that the outer products stay small. The products are symmetric, so
        # only the pairs on and above the diagonal are summed.
        upper = np.triu_indices(d)
        sums = np.zeros((w.shape[0], upper[0].size))
        step = max(1, _CHUNK_VALUES // max(upper[0].size, 1))
        for first in range(0, pat.block.shape[0], step):
            rows = pat.block[first : first + step]
            sums += w[:, first : first + step] @ (rows[:, upper[0]] * rows[:, upper[1]])
        outer = np.empty((w.shape[0], d, d))
        outer[:, upper[0], upper[1]] = sums
        outer[:, upper[1], upper[0]] = sums
        cross.append(_layout(outer, m, problem.q))
        totals.append(w.sum(axis=1))
    return SampleSet(cross, np.column_stack(totals), _estimable(problem, cross))


def leave_one_out_samples(problem: _RemlProblem, codes: np.ndarray) -> SampleSet:
    """One sample per subject code in ``codes``: every subject but that one.

    Each sample's cross-products are the full data's minus the left-out subject's, so the cost
    grows with the number of samples, not with samples times subjects.
    """
    b = codes.size
    cross, totals = [], []
    for pat in problem.patterns:
        m = pat.visits.size
        full = np.broadcast_to(pat.cross, (b, *pat.cross.shape)).copy()
        n = np.full(b, pat.n_subjects)
        rows = np.flatnonzero(np.isin(codes, pat.subjects))
        if rows.size:
            where = np.searchsorted(pat.subjects, codes[rows])
            left = pat.block[where]
            full[rows] -= _layout(left[:, :, None] * left[:, None, :], m, problem.q)
            n[rows] -= 1.0
        cross.append(full)
        totals.append(n)
    return SampleSet(cross, np.column_stack(totals), _estimable(problem, cross))


def chunk_size(problem: _RemlProblem) -> int:
    """Samples per chunk so that a chunk's cross-products stay within the memory bound."""
    per_sample = sum(pat.cross.size for pat in problem.patterns)
    return max(1, _CHUNK_VALUES // max(per_sample, 1))


def _cholesky(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched Cholesky factors and which matrices were positive definite (others: identity)."""
    try:
        chol = np.linalg.cholesky(a)
        ok = np.all(np.diagonal(chol, axis1=1, axis2=2) > 0, axis=1)
        return chol, ok
    except np.linalg.LinAlgError:
        eye = np.eye(a.shape[-1])
        out, ok = np.empty_like(a), np.ones(a.shape[0], dtype=bool)
        for i, mat in enumerate(a):
            try:
                out[i] = np.linalg.cholesky(mat)
            except np.linalg.LinAlgError:
                out[i], ok[i] = eye, False
        return out, ok


@dataclass
class _Evaluated:
    deviance: np.ndarray  # (samples,), inf where not positive definite
    beta: np.ndarray  # (samples, p)
    sigma_gradient: np.ndarray | None  # (samples, k, k)


def evaluate(
    problem: _RemlProblem, samples: SampleSet, sigma: np.ndarray, gradient: bool
) -> _Evaluated:
    """-2 REML log-likelihood of every sample at its own covariance matrix (as ``evaluate``)."""
    b, p, q = len(samples), problem.n_coef, problem.q
    ok = np.all(np.isfinite(sigma.reshape(b, -1)), axis=1)
    sigma = np.where(ok[:, None, None], sigma, np.eye(problem.n_visits)[None])
    logdet = np.zeros(b)
    total = np.zeros((b, q * q))
    weights = []
    for j, pat in enumerate(problem.patterns):
        m = pat.visits.size
        chol, good = _cholesky(sigma[:, pat.visits[:, None], pat.visits[None, :]])
        ok &= good
        chol_inv = np.linalg.inv(chol)
        w = np.swapaxes(chol_inv, 1, 2) @ chol_inv
        weights.append(w)
        log_diag = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        logdet += 2.0 * samples.n_subjects[:, j] * log_diag
        total += np.einsum("bx,bxy->by", w.reshape(b, m * m), samples.cross[j])
    cross = total.reshape(b, q, q)
    a_chol, good = _cholesky(cross[:, :p, :p])
    ok &= good
    a_chol_inv = np.linalg.inv(a_chol)
    a_inv = np.swapaxes(a_chol_inv, 1, 2) @ a_chol_inv
    beta = np.einsum("bij,bj->bi", a_inv, cross[:, :p, p])
    rss = cross[:, p, p] - np.einsum("bi,bi->b", cross[:, :p, p], beta)
    n_obs = samples.n_subjects @ np.array([pat.visits.size for pat in problem.patterns], float)
    a_logdet = 2.0 * np.log(np.diagonal(a_chol, axis1=1, axis2=2)).sum(axis=1)
    deviance = (n_obs - p) * _LOG_2PI + logdet + a_logdet + rss
    deviance = np.where(ok & np.isfinite(deviance), deviance, np.inf)
    out = _Evaluated(deviance, beta, None)
    if gradient:
        out.sigma_gradient = _sigma_gradient(problem, samples, weights, a_inv, beta)
    return out


def _sigma_gradient(
    problem: _RemlProblem,
    samples: SampleSet,
    weights: list[np.ndarray],
    a_inv: np.ndarray,
    beta: np.ndarray,
) -> np.ndarray:
    """d(-2 REML)/d Sigma of every sample: n W - W (G + R) W summed over the patterns."""
    b, p, q, k = len(samples), problem.n_coef, problem.q, problem.n_visits
    u = np.concatenate([-beta, np.ones((b, 1))], axis=1)
    k_mat = u[:, :, None] * u[:, None, :]
    k_mat[:, :p, :p] += a_inv
    k_flat = k_mat.reshape(b, q * q)
    h = np.zeros((b, k, k))
    for j, (pat, w) in enumerate(zip(problem.patterns, weights, strict=True)):
        m = pat.visits.size
        gr = np.einsum("bxy,by->bx", samples.cross[j], k_flat).reshape(b, m, m)
        contrib = samples.n_subjects[:, j, None, None] * w - w @ gr @ w
        h[:, pat.visits[:, None], pat.visits[None, :]] += contrib
    return h


def _objective(
    problem: _RemlProblem,
    structure: CovarianceStructure,
    samples: SampleSet,
    theta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Deviance and its gradient in theta for every sample (inf where not positive definite)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sigma = structure.sigma_many(theta)
        ev = evaluate(problem, samples, sigma, gradient=True)
    assert ev.sigma_gradient is not None
    jac = structure.jacobian_many(theta)
    grad = np.einsum("brkl,bkl->br", jac, ev.sigma_gradient)
    bad = ~np.isfinite(ev.deviance)
    grad[bad] = 0.0
    return ev.deviance, grad


def refit_samples(
    problem: _RemlProblem,
    structure: CovarianceStructure,
    start: np.ndarray,
    hessian_inv: np.ndarray,
    samples: SampleSet,
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients, covariance matrices and a done flag of every sample's refit.

    Not done: a sample that leaves a design column without data, or whose quasi-Newton steps
    did not converge (the caller refits those one at a time).
    """
    theta, done = _quasi_newton(problem, structure, start, hessian_inv, samples, tolerance)
    sigma = structure.sigma_many(theta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ev = evaluate(problem, samples, sigma, gradient=False)
    done &= np.isfinite(ev.deviance)
    return ev.beta, sigma, done


def _quasi_newton(
    problem: _RemlProblem,
    structure: CovarianceStructure,
    start: np.ndarray,
    hessian_inv: np.ndarray,
    samples: SampleSet,
    tolerance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's BFGS iteration from ``start``, with backtracking (as Refitter's)."""
    b = len(samples)
    theta = np.tile(start, (b, 1))
    inverse = np.tile(hessian_inv, (b, 1, 1))
    running = samples.estimable.copy()
    done = np.zeros(b, dtype=bool)
    value, grad = _objective(problem, structure, samples.subset(running), theta[running])
    values, grads = np.full(b, np.inf), np.zeros_like(theta)
    values[running], grads[running] = value, grad
    for _ in range(_MAX_STEPS):
        running &= np.isfinite(values)
        step = -np.einsum("bij,bj->bi", inverse, grads)
        finished = running & (np.einsum("bi,bi->b", -grads, step) < tolerance)
        done |= finished
        running &= ~finished
        if not running.any():
            break
        rows = np.flatnonzero(running)
        moved, new_values, new_grads, ok = _line_search(
            problem, structure, samples, theta[rows], step[rows], values[rows], rows
        )
        running[rows[~ok]] = False
        rows, moved = rows[ok], moved[ok]
        change = new_grads[ok] - grads[rows]
        inverse[rows] = _bfgs(inverse[rows], moved, change)
        theta[rows] += moved
        values[rows], grads[rows] = new_values[ok], new_grads[ok]
    return theta, done


def _line_search(
    problem: _RemlProblem,
    structure: CovarianceStructure,
    samples: SampleSet,
    theta: np.ndarray,
    step: np.ndarray,
    value: np.ndarray,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Halve each sample's step until the deviance does not increase (at most to 1e-3)."""
    n = rows.size
    t = np.ones(n)
    new_value, new_grad = np.full(n, np.inf), np.zeros_like(theta)
    pending = np.ones(n, dtype=bool)
    while True:
        pending &= t > 1e-3
        if not pending.any():
            break
        idx = np.flatnonzero(pending)
        v, g = _objective(
            problem,
            structure,
            samples.subset(rows[idx]),
            theta[idx] + t[idx, None] * step[idx],
        )
        accepted = v <= value[idx]
        new_value[idx[accepted]], new_grad[idx[accepted]] = v[accepted], g[accepted]
        pending[idx[accepted]] = False
        t[idx[~accepted]] *= 0.5
    ok = np.isfinite(new_value) & (new_value <= value)
    return t[:, None] * step, new_value, new_grad, ok


def _bfgs(inverse: np.ndarray, moved: np.ndarray, change: np.ndarray) -> np.ndarray:
    """BFGS updates of inverse Hessians (skipped where the curvature is not positive)."""
    curvature = np.einsum("bi,bi->b", moved, change)
    scale = np.linalg.norm(moved, axis=1) * np.linalg.norm(change, axis=1)
    update = curvature > 1e-12 * scale
    if not update.any():
        return inverse
    out = inverse.copy()
    s, y = moved[update], change[update]
    rho = 1.0 / curvature[update]
    left = np.eye(s.shape[1])[None] - rho[:, None, None] * s[:, :, None] * y[:, None, :]
    out[update] = (
        left @ inverse[update] @ np.swapaxes(left, 1, 2)
        + rho[:, None, None] * s[:, :, None] * s[:, None, :]
    )
    return out
