"""Mixed model for repeated measures (MMRM) fitted by REML with numpy and scipy.

The MMRM is the primary longitudinal analysis of a randomized trial: change from baseline at
each post-baseline visit is modelled by ``baseline + covariates + arm + visit + arm:visit``
with a residual covariance across visits within subject, and every observed visit of every
subject is used (valid under missing-at-random dropout). This module fits it by restricted
maximum likelihood (REML) in a way that scales to large trials: subjects are grouped by their
pattern of observed visits and, for each pattern, the cross-products of the design and response
are accumulated once, so each likelihood and gradient evaluation costs a few small matrix
operations per pattern, independent of the number of subjects. The REML gradient is analytic;
the Hessian is a Richardson-extrapolated central difference of that gradient. Treatment
effects and least-squares means use Satterthwaite degrees of freedom, as R ``emmeans`` does for
an ``nlme::gls`` fit and as R ``mmrm`` does by default.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from trialflow.errors import ModelError
from trialflow.stats.covariance import (
    POSITIONAL,
    STRUCTURES,
    CovarianceStructure,
    equally_spaced,
    make_structure,
    nearest_positive_definite,
)
from trialflow.stats.design import (
    VISIT,
    WEEK,
    ObservedRows,
    PreparedData,
    observed_rows,
    prepare_long,
    r_name,
    redundant_columns,
    visit_patterns,
)
from trialflow.stats.inference import (
    DF_LABELS,
    DF_METHODS,
    Ingredients,
    TestResult,
    contrast_df,
    f_test,
    kr_adjusted,
    type3_table,
)
from trialflow.stats.meanmodel import MeanModel, MeanSpec, Subgroup, build_mean_model
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult, gradient_size

__all__ = ["MeanSpec", "fit_mmrm", "fit_prepared", "intervals", "prepare_mmrm"]

_LOG_2PI = math.log(2.0 * math.pi)
# Convergence: largest |gradient| of -2 REML log-likelihood with respect to the (log-scale /
# atanh-scale) covariance parameters, and the Newton decrement g' H^-1 g (log-likelihood units).
_GRADIENT_TOLERANCE = 1e-3
_DECREMENT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Pattern:
    """Subjects sharing one set of observed visits, with their summed cross-products."""

    visits: np.ndarray  # positions of the observed visits
    index: tuple[np.ndarray, ...]  # np.ix_(visits, visits)
    n_subjects: float  # a count, or a total weight for a resampled problem
    # cross[a * m + b, j * q + l] = sum over subjects of z[a, j] * z[b, l], z = [X, y].
    cross: np.ndarray
    subjects: np.ndarray  # subject codes, in the order of the rows of ``block``
    block: np.ndarray  # one row per subject: its z, visit by visit (m * q values)


# Largest padded cross-product array (patterns x visits^2 x (coefficients + 1)^2 values) kept
# for one-batch evaluation; beyond it patterns are batched by size without padding.
_PADDED_LIMIT = 4_000_000


@dataclass(frozen=True)
class _Batch:
    """Patterns stacked for batched linear algebra, each as an m x m block of the visits.

    ``sigma[rows, cols] * mask + fill`` is each pattern's covariance block: for a padded batch
    (m = all visits) the unobserved visits are masked out and get an identity block.
    """

    patterns: np.ndarray  # positions in _RemlProblem.patterns
    seen: list[np.ndarray]  # per pattern, positions of its observed visits within the block
    rows: np.ndarray  # (g, m, 1) visit positions
    cols: np.ndarray  # (g, 1, m)
    mask: np.ndarray  # (g, m, m) 1 where both visits are observed
    fill: np.ndarray  # (g, m, m) identity on unobserved visits
    cross: np.ndarray  # (g, m * m, q * q)
    n_subjects: np.ndarray  # (g,)
    padded: bool


def _size_batch(patterns: list[_Pattern], where: np.ndarray) -> _Batch:
    visits = np.stack([patterns[j].visits for j in where])
    g, m = visits.shape
    return _Batch(
        patterns=where,
        seen=[np.arange(m)] * g,
        rows=visits[:, :, None],
        cols=visits[:, None, :],
        mask=np.ones((g, m, m)),
        fill=np.zeros((g, m, m)),
        cross=np.stack([patterns[j].cross for j in where]),
        n_subjects=np.array([patterns[j].n_subjects for j in where]),
        padded=False,
    )


def _padded_batch(patterns: list[_Pattern], where: np.ndarray, k: int, q: int) -> _Batch:
    g = where.size
    observed = np.zeros((g, k))
    cross = np.zeros((g, k * k, q * q))
    for j, pos in enumerate(where):
        idx = patterns[pos].visits
        observed[j, idx] = 1.0
        cross[j, (idx[:, None] * k + idx[None, :]).ravel()] = patterns[pos].cross
    mask = observed[:, :, None] * observed[:, None, :]
    visits = np.arange(k)
    return _Batch(
        patterns=where,
        seen=[patterns[pos].visits for pos in where],
        rows=np.broadcast_to(visits[None, :, None], (g, k, 1)),
        cols=np.broadcast_to(visits[None, None, :], (g, 1, k)),
        mask=mask,
        fill=np.eye(k)[None] * (1.0 - observed)[:, None, :],
        cross=cross,
        n_subjects=np.array([patterns[pos].n_subjects for pos in where]),
        padded=True,
    )


def _gram(block: np.ndarray, m: int, q: int) -> np.ndarray:
    """Summed cross-products of a pattern's rows, laid out as ``_Pattern.cross``."""
    gram = (block.T @ block).reshape(m, q, m, q).transpose(0, 2, 1, 3)
    return gram.reshape(m * m, q * q)


@dataclass
class _Evaluation:
    """-2 REML log-likelihood and what its gradient and the inference need."""

    deviance: float
    beta: np.ndarray
    a_inv: np.ndarray
    stacked: list[np.ndarray]  # Sigma_p^-1 of the patterns, batch by batch (padded)
    batches: list[_Batch]
    sigma_gradient: np.ndarray | None = None

    @property
    def weights(self) -> list[np.ndarray]:
        """Sigma_p^-1 of every pattern (its observed visits only), in pattern order."""
        n = sum(b.patterns.size for b in self.batches)
        out: list[np.ndarray] = [np.empty(0)] * n
        for batch, w in zip(self.batches, self.stacked, strict=True):
            for j, where in enumerate(batch.patterns):
                seen = batch.seen[j]
                out[where] = w[j][np.ix_(seen, seen)]
        return out


class _RemlProblem:
    """REML for a linear model with one covariance matrix across visits within subject."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        subject_code: np.ndarray,
        visit_code: np.ndarray,
        n_subjects: int,
        n_visits: int,
    ) -> None:
        self.n_obs, self.n_coef = x.shape
        self.n_visits = n_visits
        observed = np.zeros((n_subjects, n_visits), dtype=bool)
        observed[subject_code, visit_code] = True
        patterns, pattern_of_subject = visit_patterns(observed)
        order = np.lexsort((visit_code, subject_code, pattern_of_subject[subject_code]))
        z = np.column_stack([x, y])[order]
        q = z.shape[1]
        self.q = q
        per_pattern = np.bincount(pattern_of_subject, minlength=len(patterns))
        self.n_subjects = n_subjects
        self.patterns: list[_Pattern] = []
        start = 0
        for k, (mask, n_p) in enumerate(zip(patterns, per_pattern, strict=True)):
            idx = np.flatnonzero(mask)
            m = idx.size
            block = z[start : start + n_p * m].reshape(n_p, m * q)
            start += n_p * m
            self.patterns.append(
                _Pattern(
                    visits=idx,
                    index=np.ix_(idx, idx),
                    n_subjects=float(n_p),
                    cross=_gram(block, m, q),
                    subjects=np.flatnonzero(pattern_of_subject == k),
                    block=block,
                )
            )

    def reweighted(self, weights: np.ndarray) -> tuple[_RemlProblem, np.ndarray]:
        """The same REML problem with subject ``s`` counted ``weights[s]`` times.

        A bootstrap sample is integer weights, a leave-one-out sample a zero weight. Columns of
        the design left without any nonzero value are dropped (their coefficient is not
        estimable from the sample and counts as 0); the kept column positions are returned.
        """
        q = self.q
        patterns: list[tuple[_Pattern, np.ndarray, float]] = []
        diag = np.zeros(q)
        for pat in self.patterns:
            w = weights[pat.subjects]
            total = float(w.sum())
            if total <= 0:
                continue
            m = pat.visits.size
            cross = _gram(pat.block * np.sqrt(w)[:, None], m, q)
            diag += cross[:: m + 1].sum(axis=0)[:: q + 1]
            patterns.append((pat, cross, total))
        keep = np.flatnonzero(diag[:-1] > 0)
        cols = np.append(keep, q - 1)
        new = object.__new__(_RemlProblem)
        new.n_visits, new.n_coef, new.q = self.n_visits, keep.size, cols.size
        new.n_subjects = self.n_subjects
        new.patterns = []
        n_obs = 0.0
        for pat, cross, total in patterns:
            m = pat.visits.size
            cross = cross.reshape(m * m, q, q)[:, cols[:, None], cols[None, :]]
            new.patterns.append(replace(pat, n_subjects=total, cross=cross.reshape(m * m, -1)))
            n_obs += total * m
        new.n_obs = round(n_obs)
        return new, keep

    def _weighted_cross(self, weights: list[np.ndarray]) -> np.ndarray:
        total = np.zeros(self.q * self.q)
        for pat, w in zip(self.patterns, weights, strict=True):
            total += w.ravel() @ pat.cross
        return total.reshape(self.q, self.q)

    def moment_covariance(self, beta: np.ndarray) -> np.ndarray:
        """Pairwise-complete moment estimate of the covariance of residuals y - X beta."""
        k = self.n_visits
        u = np.concatenate([-beta, [1.0]])
        uu = np.outer(u, u).ravel()
        total = np.zeros((k, k))
        count = np.zeros((k, k))
        for pat in self.patterns:
            m = pat.visits.size
            ix = np.ix_(pat.visits, pat.visits)
            total[ix] += (pat.cross @ uu).reshape(m, m)
            count[ix] += pat.n_subjects
        scale = self.n_obs / max(self.n_obs - self.n_coef, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(count > 0, total / np.maximum(count, 1), 0.0) * scale
        diag = np.diag(s).copy()
        diag[diag <= 0] = max(float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0, 1e-8)
        np.fill_diagonal(s, diag)
        return nearest_positive_definite(s)

    def ols(self) -> np.ndarray:
        """Ordinary least-squares coefficients."""
        cross = self._weighted_cross([np.eye(p.visits.size) for p in self.patterns])
        p = self.n_coef
        return np.linalg.solve(cross[:p, :p], cross[:p, p])

    def evaluate(self, sigma: np.ndarray, gradient: bool) -> _Evaluation | None:
        """-2 REML log-likelihood at a covariance matrix; None if not positive definite.

        The scale is R nlme's: (N - p) log(2 pi) + sum log|Sigma_i| + log|X'V^-1 X| + r'V^-1 r,
        with no log|X'X| term, so that -1/2 of it equals ``logLik(gls_fit)``.

        With ``gradient``, also the derivative with respect to every element of ``sigma``
        (a symmetric k x k matrix H such that d(-2 REML) = sum(H * d sigma)).
        """
        p = self.n_coef
        logdet = 0.0
        total = np.zeros(self.q * self.q)
        stacked: list[np.ndarray] = []
        batches = self._batches()
        for batch in batches:
            # Patterns are factored together; padded visits carry an identity block, which
            # leaves the log-determinant and the observed block of the inverse unchanged.
            try:
                chol = np.linalg.cholesky(sigma[batch.rows, batch.cols] * batch.mask + batch.fill)
            except np.linalg.LinAlgError:
                return None
            diag = np.diagonal(chol, axis1=1, axis2=2)
            if not np.all(diag > 0):
                return None
            chol_inv = np.linalg.inv(chol)
            w = (np.swapaxes(chol_inv, 1, 2) @ chol_inv) * batch.mask
            stacked.append(w)
            logdet += 2.0 * float(batch.n_subjects @ np.log(diag).sum(axis=1))
            total += np.einsum("gi,gij->j", w.reshape(w.shape[0], -1), batch.cross)
        cross = total.reshape(self.q, self.q)
        try:
            a_chol = np.linalg.cholesky(cross[:p, :p])
        except np.linalg.LinAlgError:
            return None
        a_diag = np.diag(a_chol)
        if not np.all(a_diag > 0):
            return None
        a_chol_inv = np.linalg.inv(a_chol)
        a_inv = a_chol_inv.T @ a_chol_inv
        beta = a_inv @ cross[:p, p]
        rss = float(cross[p, p] - cross[:p, p] @ beta)
        deviance = (self.n_obs - p) * _LOG_2PI + logdet + 2.0 * float(np.sum(np.log(a_diag))) + rss
        out = _Evaluation(deviance, beta, a_inv, stacked, batches)
        if gradient:
            # d/dW_p of log|A| + r'Wr is sum over subjects of x A^-1 x' + r r'; then the chain
            # rule through W = Sigma^-1 gives n W - W (G + R) W per pattern.
            k_mat = np.zeros((self.q, self.q))
            k_mat[:p, :p] = a_inv
            u = np.concatenate([-beta, [1.0]])
            k_mat += np.outer(u, u)
            k_flat = k_mat.ravel()
            h = np.zeros((self.n_visits, self.n_visits))
            for batch, w in zip(batches, stacked, strict=True):
                gr = (batch.cross @ k_flat).reshape(w.shape)
                contrib = batch.n_subjects[:, None, None] * w - w @ gr @ w
                if batch.padded:
                    h += contrib.sum(axis=0)
                else:
                    np.add.at(h, (batch.rows, batch.cols), contrib)
            out.sigma_gradient = h
        return out

    def _batches(self) -> list[_Batch]:
        """The patterns in batches for batched linear algebra (built once, on first use).

        One batch with every pattern padded to all visits when that is small enough (one set
        of array operations per evaluation, whatever the number of patterns); otherwise one
        batch per number of observed visits.
        """
        batches: list[_Batch] | None = getattr(self, "_batch_list", None)
        if batches is None:
            k, q = self.n_visits, self.q
            if len(self.patterns) * k * k * q * q <= _PADDED_LIMIT:
                batches = [_padded_batch(self.patterns, np.arange(len(self.patterns)), k, q)]
            else:
                sizes = np.array([pat.visits.size for pat in self.patterns])
                batches = [
                    _size_batch(self.patterns, np.flatnonzero(sizes == m)) for m in np.unique(sizes)
                ]
            self._batch_list = batches
        return batches

    def information_derivatives(
        self,
        evaluation: _Evaluation,
        d_sigma: np.ndarray,
        d2_sigma: np.ndarray,
        *,
        second_order: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Kenward-Roger's P_i, Q_ij, R_ij and the expected REML information.

        ``d_sigma`` (r, k, k) and ``d2_sigma`` (r, r, k, k) are the derivatives of the visit
        covariance in the covariance parameters. Sums over subjects come from each pattern's
        cross-products: sum_s X_s' M X_s = (M.ravel() @ cross)[:p, :p] for any m x m matrix M.
        Without ``second_order`` only P_i is computed (all Satterthwaite needs); Q, R and the
        expected information are then zeros.
        """
        p, q = self.n_coef, self.q
        r = d_sigma.shape[0]
        big_p = np.zeros((r, p, p))
        big_q = np.zeros((r, r, p, p))
        big_r = np.zeros((r, r, p, p))
        trace = np.zeros((r, r))
        for pat, w in zip(self.patterns, evaluation.weights, strict=True):
            m = pat.visits.size
            ds = d_sigma[:, pat.visits[:, None], pat.visits[None, :]]
            wd = np.einsum("ab,ibc->iac", w, ds)  # W V_i
            wdw = np.einsum("iab,bc->iac", wd, w)  # W V_i W
            big_p -= (wdw.reshape(r, m * m) @ pat.cross).reshape(r, q, q)[:, :p, :p]
            if not second_order:
                continue
            chain = np.einsum("iab,jbc->ijac", wd, wdw)  # W V_i W V_j W
            big_q += (chain.reshape(r * r, m * m) @ pat.cross).reshape(r, r, q, q)[..., :p, :p]
            trace += pat.n_subjects * np.einsum("iab,jba->ij", wd, wd)
            if np.any(d2_sigma):
                d2 = d2_sigma[:, :, pat.visits[:, None], pat.visits[None, :]]
                wd2w = np.einsum("ab,ijbc,cd->ijad", w, d2, w)
                big_r += (wd2w.reshape(r * r, m * m) @ pat.cross).reshape(r, r, q, q)[..., :p, :p]
        phi = evaluation.a_inv
        # Expected REML information: 1/2 tr(P V_i P V_j) with P the REML projection.
        expected = 0.5 * (
            trace
            - 2.0 * np.einsum("ab,ijba->ij", phi, big_q)
            + np.einsum("ab,ibc,cd,jda->ij", phi, big_p, phi, big_p)
        )
        return big_p, 0.5 * (big_q + big_q.transpose(1, 0, 3, 2)), big_r, expected


@dataclass
class _Fit:
    structure: CovarianceStructure
    theta: np.ndarray
    evaluation: _Evaluation
    hessian: np.ndarray
    gradient: np.ndarray
    iterations: int
    converged: bool
    reason: str


def _objective(
    theta: np.ndarray, problem: _RemlProblem, structure: CovarianceStructure, scale: float
) -> tuple[float, np.ndarray]:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sigma = structure.sigma(theta)
        if not np.all(np.isfinite(sigma)):
            return math.inf, np.zeros_like(theta)
        ev = problem.evaluate(sigma, gradient=True)
    if ev is None or not math.isfinite(ev.deviance) or ev.sigma_gradient is None:
        return math.inf, np.zeros_like(theta)
    jac = structure.jacobian(theta)
    grad = jac.reshape(theta.size, -1) @ ev.sigma_gradient.ravel()
    return ev.deviance / scale, grad / scale


def _gradient(
    problem: _RemlProblem, structure: CovarianceStructure, theta: np.ndarray
) -> np.ndarray:
    value, grad = _objective(theta, problem, structure, 1.0)
    if not math.isfinite(value):
        raise FloatingPointError("covariance matrix not positive definite")
    return grad


def _hessian(
    problem: _RemlProblem, structure: CovarianceStructure, theta: np.ndarray
) -> np.ndarray:
    """Hessian of -2 REML by central differences of the analytic gradient.

    The step (1e-4 on log / atanh scales) keeps the truncation error near 1e-8 relative while
    the rounding error of an analytic gradient stays far below it.
    """
    n = theta.size
    hess = np.empty((n, n))
    for j in range(n):
        step = 1e-4 * max(1.0, abs(float(theta[j])))
        e = np.zeros(n)
        e[j] = step
        plus = _gradient(problem, structure, theta + e)
        minus = _gradient(problem, structure, theta - e)
        hess[:, j] = (plus - minus) / (2.0 * step)
    return 0.5 * (hess + hess.T)


def _fit_structure(
    problem: _RemlProblem, structure: CovarianceStructure, start: np.ndarray | None = None
) -> _Fit:
    """REML fit of one covariance structure: L-BFGS-B, then Newton steps to polish.

    ``start`` is a starting point on the optimizer's scale (default: the moment estimate of the
    covariance of the OLS residuals).
    """
    if start is None:
        theta = structure.start(problem.moment_covariance(problem.ols()))
    else:
        theta = np.array(start, dtype=float)
    scale = float(problem.n_obs)
    result = optimize.minimize(
        _objective,
        theta,
        args=(problem, structure, scale),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20},
    )
    theta = np.asarray(result.x, dtype=float)
    iterations = int(result.nit)
    # Newton steps on the analytic gradient and its finite-difference Hessian: quadratic
    # convergence to the optimum, which L-BFGS-B alone reaches only to a few digits.
    hessian_at: np.ndarray | None = None
    hessian = np.full((theta.size, theta.size), np.nan)
    newton_converged = False
    for _ in range(20):
        try:
            value, grad = _objective(theta, problem, structure, 1.0)
            hessian = _hessian(problem, structure, theta)
            hessian_at = theta.copy()
        except FloatingPointError:
            return _failed(structure, theta, iterations, "covariance became singular")
        eig = np.linalg.eigvalsh(hessian)
        if not np.all(np.isfinite(eig)) or eig.min() <= 1e-10 * max(eig.max(), 1e-300):
            break
        step = -np.linalg.solve(hessian, grad)
        decrement = float(-grad @ step)
        if decrement < 1e-12:
            newton_converged = True
            break
        t = 1.0
        improved = False
        for _ in range(30):
            trial = theta + t * step
            new_value, _ = _objective(trial, problem, structure, 1.0)
            if new_value <= value + 1e-12 * abs(value):
                theta, improved = trial, True
                break
            t *= 0.5
        iterations += 1
        if not improved:
            break
    value, grad = _objective(theta, problem, structure, 1.0)
    if not math.isfinite(value):
        return _failed(structure, theta, iterations, "no positive-definite optimum found")
    with np.errstate(over="ignore", invalid="ignore"):
        ev = problem.evaluate(structure.sigma(theta), gradient=False)
    if ev is None:
        return _failed(structure, theta, iterations, "no positive-definite optimum found")
    if hessian_at is None or not np.array_equal(hessian_at, theta):
        try:
            hessian = _hessian(problem, structure, theta)
        except FloatingPointError:
            return _failed(structure, theta, iterations, "covariance on the boundary")
    optimizer = None if result.success or newton_converged else f"L-BFGS-B: {result.message}"
    problems = _convergence_problems(optimizer, grad, hessian)
    return _Fit(
        structure=structure,
        theta=theta,
        evaluation=ev,
        hessian=hessian,
        gradient=grad,
        iterations=iterations,
        converged=not problems,
        reason="; ".join(problems),
    )


def _convergence_problems(
    optimizer: str | None, gradient: np.ndarray, hessian: np.ndarray
) -> list[str]:
    """Why a REML fit is not at an interior optimum (empty when it is).

    ``optimizer`` is the optimizer's failure message (None when it succeeded); ``gradient``
    and ``hessian`` are those of -2 REML at the final point. Each check stands alone: an
    optimizer failure, a gradient that is not small, a Hessian that is not positive definite
    (a boundary or a parameter the data do not identify); at a positive-definite Hessian with
    a small gradient, a Newton decrement that is not small.
    """
    problems = [] if optimizer is None else [optimizer]
    eig = np.linalg.eigvalsh(hessian)
    hessian_pd = bool(np.all(np.isfinite(eig)) and eig.min() > 1e-8 * max(eig.max(), 1e-300))
    if not hessian_pd:
        problems.append(
            "Hessian of the REML log-likelihood not positive definite "
            f"(smallest eigenvalue {eig.min():.3g}): a variance or correlation is on the "
            "boundary, or not identified by the data"
        )
    grad_max = float(np.max(np.abs(gradient)))
    if grad_max > _GRADIENT_TOLERANCE:
        problems.append(f"gradient not small (max |gradient| {grad_max:.3g})")
    elif hessian_pd:
        decrement = float(gradient @ np.linalg.solve(hessian, gradient))
        if decrement > _DECREMENT_TOLERANCE:
            problems.append(f"not at a stationary point (Newton decrement {decrement:.3g})")
    return problems


def _failed(structure: CovarianceStructure, theta: np.ndarray, iterations: int, why: str) -> _Fit:
    n = theta.size
    empty = _Evaluation(math.inf, np.empty(0), np.empty((0, 0)), [], [])
    return _Fit(
        structure=structure,
        theta=theta,
        evaluation=empty,
        hessian=np.full((n, n), np.nan),
        gradient=np.full(n, np.nan),
        iterations=iterations,
        converged=False,
        reason=why,
    )


def _check_estimable(obs: ObservedRows, mean: MeanModel, visit: str) -> None:
    counts = obs.counts()
    for a, v in zip(*np.nonzero(counts == 0), strict=True):
        raise ModelError(
            f"arm {obs.arms[a]!r} has no observed response at visit "
            f"{obs.visits[v]!r}, so its mean at that visit cannot be estimated",
            column=visit,
            fix="drop that visit from visit_order (and the data) or check the data",
        )
    if obs.n_observations <= mean.n_coef:
        raise ModelError(
            f"{obs.n_observations} observations for {mean.n_coef} mean parameters",
            fix="use fewer covariates or more data",
        )
    redundant = redundant_columns(mean.x)
    if redundant:
        raise ModelError(
            f"the mean model is not estimable: column {mean.names[redundant[0]]!r} is a linear "
            "combination of the columns before it (constant or duplicated covariate?)",
            fix="remove the redundant covariate",
        )


def intervals(
    estimate: np.ndarray, se: np.ndarray, df: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tcrit = stats.t.ppf(1.0 - alpha / 2.0, df)
    p_value = 2.0 * stats.t.sf(np.abs(estimate / se), df)
    return estimate - tcrit * se, estimate + tcrit * se, p_value


def _between_within(obs: ObservedRows, mean: MeanModel, structure: str) -> dict[str, float]:
    """Between-within df of each term (SAS ``DDFM=BW``).

    A term is between-subject if its columns are constant within every subject; it gets the
    between df, subjects minus the rank of the columns constant within subjects (intercept
    included). A within-subject term gets the within df, observations minus the rank of the
    design together with subject indicators (the rank its subject-by-visit interaction adds).
    With an unstructured R-side covariance SAS gives every term the between df, and so does
    this.
    """
    x = mean.x
    # Rows are sorted by subject, so a subject's first row is where its code first appears.
    first = np.searchsorted(obs.subject_code, np.arange(obs.n_subjects))
    constant = np.all(np.isclose(x, x[first[obs.subject_code]]), axis=0)
    df_between = float(obs.n_subjects - np.linalg.matrix_rank(x[:, constant]))
    # rank([X, S]) = subjects + rank(X after removing subject means).
    counts = np.bincount(obs.subject_code).astype(float)
    # Per column, summed in row order as np.add.at would (same bits), but vectorised.
    sums = np.column_stack(
        [np.bincount(obs.subject_code, weights=col, minlength=obs.n_subjects) for col in x.T]
    )
    centred = x - (sums / counts[:, None])[obs.subject_code]
    df_within = float(
        obs.n_observations - obs.n_subjects - np.linalg.matrix_rank(centred, tol=1e-8)
    )
    out: dict[str, float] = {}
    for term in mean.terms:
        between = structure == "us" or bool(constant[term.columns].all())
        out[term.name] = df_between if between else df_within
    return out


@dataclass
class MmrmInference:
    """Estimates, standard errors, df and F tests of one MMRM fit under one df method."""

    ingredients: Ingredients
    method: str
    covariance: np.ndarray  # Phi, or Kenward-Roger's Phi_A
    term_df: dict[str, float]  # between-within df of each term

    @classmethod
    def build(
        cls, problem: _RemlProblem, fit: _Fit, obs: ObservedRows, mean: MeanModel, method: str
    ) -> MmrmInference:
        kr = method in ("kenward_roger", "kenward_roger_linear")
        ing = _ingredients(problem, fit, kenward_roger=kr)
        bw = _between_within(obs, mean, fit.structure.code)
        adjusted = kr_adjusted(ing, linear=method == "kenward_roger_linear") if kr else ing.phi
        return cls(ingredients=ing, method=method, covariance=adjusted, term_df=bw)

    def contrasts(
        self, rows: np.ndarray, term: str = "arm:visit"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate, standard error and df of each contrast row.

        ``term`` is the effect the contrasts belong to (between-within df are that term's, as
        SAS LSMEANS gives LS means of ``arm*visit`` the df of ``arm*visit``).
        """
        estimate = rows @ self.ingredients.beta
        variance = np.einsum("ca,ab,cb->c", rows, self.covariance, rows)
        df = contrast_df(self.ingredients, rows, self.method, self._bw(term))
        return estimate, np.sqrt(variance), df

    def test(self, contrast: np.ndarray, term: str) -> TestResult:
        """F test of ``contrast @ beta = 0`` for the effect ``term``."""
        return f_test(self.ingredients, contrast, self.method, self.covariance, self._bw(term))

    def _bw(self, term: str) -> float:
        return self.term_df.get(term, self.ingredients.residual_df)


def _ingredients(problem: _RemlProblem, fit: _Fit, *, kenward_roger: bool) -> Ingredients:
    """Everything the df methods need, in the covariance parameters SAS reports."""
    structure = fit.structure
    phi_natural = structure.natural(fit.theta)
    d_sigma, d2_sigma = structure.natural_derivatives(phi_natural, second_order=kenward_roger)
    big_p, big_q, big_r, _ = problem.information_derivatives(
        fit.evaluation, d_sigma, d2_sigma, second_order=kenward_roger
    )
    to_natural = structure.natural_jacobian(fit.theta)
    # Observed information is the Hessian of -2 REML / 2; at the optimum it maps to the
    # natural parameters through the Jacobian of the reparametrisation. SAS (DDFM=SATTERTH and
    # DDFM=KR) and R mmrm use it for both Satterthwaite and Kenward-Roger.
    cov_theta = 2.0 * np.linalg.inv(fit.hessian)
    w_observed = to_natural @ cov_theta @ to_natural.T
    return Ingredients(
        beta=fit.evaluation.beta,
        phi=fit.evaluation.a_inv,
        p=big_p,
        q=big_q,
        r=big_r,
        w_observed=w_observed,
        w_kr=w_observed,
        residual_df=float(problem.n_obs - problem.n_coef),
    )


def _check_options(covariance: str, fallback: Sequence[str], df_method: str, alpha: float) -> None:
    if not (isinstance(alpha, float | int) and 0.0 < float(alpha) < 1.0):
        raise ModelError(f"alpha must be between 0 and 1, got {alpha!r}", fix="e.g. alpha=0.05")
    if df_method not in DF_METHODS:
        raise ModelError(
            f"df_method {df_method!r} is not supported",
            fix=f"use one of {', '.join(DF_METHODS)}",
        )
    for code, what in ((covariance, ""), *((c, "fallback ") for c in fallback)):
        if str(code).lower() not in STRUCTURES:
            raise ModelError(
                f"unknown {what}covariance structure {code!r}",
                fix=f"use one of {', '.join(STRUCTURES)}",
            )


def _visit_weeks(obs: ObservedRows) -> list[float] | None:
    """Week of each visit (the median over its rows), or None without a week column."""
    if WEEK not in obs.frame:
        return None
    weeks = obs.frame.groupby(VISIT, observed=True)[WEEK].median().reindex(obs.visits)
    return None if weeks.isna().any() else [float(w) for w in weeks]


@dataclass
class CovarianceChoice:
    """The converged covariance fit and how it was reached."""

    fit: _Fit
    requested: str
    tried: list[str]
    fallback_reason: str | None
    notes: list[str]
    weeks: list[float] | None  # week of each visit, when known


def fit_covariance(
    problem: _RemlProblem,
    requested: str,
    fallback: Sequence[str],
    weeks: list[float] | None,
) -> CovarianceChoice:
    """REML fit of the requested structure, then of each fallback in turn until one converges.

    Raises
    ------
    ModelError
        If no structure converged; the message lists each structure and why.
    """
    order = [requested] + [str(c).lower() for c in fallback if str(c).lower() != requested]
    tried: list[str] = []
    reasons: list[str] = []
    fit: _Fit | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for code in order:
            structure = make_structure(code, problem.n_visits, weeks)
            tried.append(code)
            candidate = _fit_structure(problem, structure)
            if candidate.converged:
                fit = candidate
                break
            reasons.append(f"{structure.label} ({code}) did not converge: {candidate.reason}")
    # A ResourceWarning is the garbage collector reporting some other object (a file left open
    # elsewhere) that happened to be collected during the fit: it says nothing about the model.
    notes = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
    if fit is None:
        raise ModelError(
            "the MMRM did not converge with any covariance structure tried ("
            + ", ".join(tried)
            + "). "
            + " | ".join(reasons),
            fix="check for visits with very few observations or a degenerate outcome; "
            "try a simpler covariance structure",
        )
    fallback_reason = None
    if fit.structure.code != requested:
        fallback_reason = " | ".join(reasons)
        notes.append(
            f"covariance {requested!r} did not converge; used {fit.structure.code!r} instead "
            f"({fallback_reason})"
        )
    positional = [c for c in dict.fromkeys([requested, fit.structure.code]) if c in POSITIONAL]
    if positional and not equally_spaced(weeks):
        names = " and ".join(make_structure(c, 1).label for c in positional)
        notes.append(
            f"the {names} covariance counts lags in visit positions, but the visits are not "
            f"equally spaced in time (weeks {', '.join(f'{w:g}' for w in weeks or [])}); "
            "sp_pow (spatial power in weeks) is the structure for unequal spacing"
        )
    return CovarianceChoice(fit, requested, tried, fallback_reason, notes, weeks)


def fit_prepared(
    ready: PreparedMmrm, covariance: str, fallback: Sequence[str], df_method: str
) -> tuple[CovarianceChoice, MmrmInference]:
    """Fit the covariance (with its fallbacks) of a prepared MMRM and set up its inference."""
    choice = fit_covariance(ready.problem, covariance, fallback, _visit_weeks(ready.obs))
    inference = MmrmInference.build(ready.problem, choice.fit, ready.obs, ready.mean, df_method)
    return choice, inference


@dataclass
class PreparedMmrm:
    """Validated rows, their mean model and the REML problem: built once, fitted once."""

    prepared: PreparedData
    obs: ObservedRows
    mean: MeanModel
    problem: _RemlProblem
    notes: list[str]


def prepare_mmrm(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str | None,
    covariates: Sequence[str],
    reference_arm: object,
    visit_order: Sequence[object] | None,
    week: str | None,
    spec: MeanSpec,
    subgroup: tuple[str, str, Sequence[str]] | None = None,
) -> PreparedMmrm:
    """Validate the rows and build the mean model and REML problem of an MMRM.

    ``subgroup`` is (display name, column, levels) of a categorical subgroup factor.
    """
    extra = [subgroup[1]] if subgroup is not None else []
    prepared = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        covariates=[*covariates, *extra],
        reference_arm=reference_arm,
        visit_order=visit_order,
        baseline=baseline if spec.baseline != "none" else None,
        week=week,
        multi_arm=subgroup is None,
    )
    notes = list(prepared.warnings)
    obs = observed_rows(prepared)
    if obs.dropped_visits:
        notes.append(f"visit(s) with no observed response ignored: {', '.join(obs.dropped_visits)}")
    spec.check(list(covariates), len(obs.visits))
    adjust = prepared.covariates[: len(covariates)]
    group = None
    if subgroup is not None:
        column = prepared.covariates[-1].column
        present = set(obs.frame[column])
        group = Subgroup(subgroup[0], column, tuple(lv for lv in subgroup[2] if lv in present))
    names = {"arm": arm, "visit": visit, "response": response, "baseline": baseline or ""}
    mean = build_mean_model(obs, spec, covariates=adjust, names=names, subgroup=group)
    _check_estimable(obs, mean, visit)
    problem = _RemlProblem(
        mean.x, obs.y, obs.subject_code, obs.visit_code, obs.n_subjects, len(obs.visits)
    )
    return PreparedMmrm(prepared, obs, mean, problem, notes)


def fit_mmrm(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str | None,
    covariates: Sequence[str] = (),
    covariance: str = "us",
    reference_arm: object,
    visit_order: Sequence[object] | None = None,
    fallback: Sequence[str] = ("toep", "ar1", "cs"),
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
    mean: MeanSpec | None = None,
    week: str | None = None,
) -> ModelResult:
    """Fit a mixed model for repeated measures (MMRM) by REML.

    Default mean model ``response ~ baseline + covariates + arm + visit + arm:visit``
    (categorical covariates dummy-coded against their first sorted level, arm coded against
    ``reference_arm``), with a residual covariance across visits within subject. ``mean``
    states another plan: baseline by visit (SAS ``basval*visit``) or left out, covariates by
    visit, LS-mean weights. Every observed visit of every subject is used; subjects missing the
    baseline or a covariate are excluded with a warning.

    Parameters
    ----------
    data
        Long table with the post-baseline rows of one outcome (one row per subject x visit).
        Missing responses may be NaN rows or absent rows.
    response
        Column of the response (change from baseline, or the value).
    subject, visit, arm
        Columns of the subject identifier, visit label and arm label.
    baseline
        Column of the subject's baseline value (a covariate of the mean model), or None for
        a model without baseline (then ``mean.baseline`` must be ``"none"``).
    covariates
        Additional covariate columns (numeric or categorical).
    covariance
        Residual covariance across visits: ``"us"`` (unstructured), ``"cs"`` (compound
        symmetry), ``"csh"`` (heterogeneous CS), ``"ar1"``, ``"ar1h"`` (heterogeneous AR(1)),
        ``"toep"`` (Toeplitz), ``"sp_pow"`` or ``"sp_powh"`` (spatial power in weeks, one
        variance or one per visit; needs ``week``). AR(1) and Toeplitz lags count visit
        positions in visit order.
    reference_arm
        Label of the control arm; effects are each other arm minus this one.
    visit_order
        Visit labels in order; None takes the categories of an ordered categorical visit
        column, else sorted numeric visits, else the order of first appearance.
    fallback
        Structures tried in turn when ``covariance`` does not converge. Every fallback is
        reported in ``warnings`` and ``info["fallback_reason"]``.
    df_method
        ``"satterthwaite"`` (R ``mmrm`` default, SAS ``DDFM=SATTERTH``), ``"kenward_roger"``
        (SAS ``DDFM=KR``: adjusted covariance of the estimates and KR df),
        ``"kenward_roger_linear"`` (SAS ``DDFM=KR(LINEAR)``), ``"between_within"`` (SAS
        ``DDFM=BW``, as R ``mmrm``) or ``"residual"`` (SAS ``DDFM=RESIDUAL``).
    alpha
        Two-sided level: confidence intervals have coverage ``1 - alpha``.
    mean
        The mean model's plan (:class:`~trialflow.stats.meanmodel.MeanSpec`); None is the
        default model (baseline main effect if ``baseline`` is given, equal weights).
    week
        Column of the study week (orders visits; distances of the spatial structures).

    Returns
    -------
    ModelResult
        ``effects`` (arm minus reference at each visit), ``lsmeans`` (per visit and arm on the
        reference grid: numeric covariates and baseline at their mean over the rows used, factor
        levels weighted as ``mean.lsmeans_weights`` says), ``covariance`` (visits x visits),
        ``type3`` (Type III F tests of every term) and ``info`` with the formula, REML
        log-likelihood on R ``nlme``'s scale (equal to ``logLik(gls_fit)``), covariance
        parameters, optimizer details and fallback record.

    Raises
    ------
    ModelError
        Invalid input, a non-estimable mean model, or no covariance structure converged.
    """
    spec = mean if mean is not None else MeanSpec(baseline="main" if baseline else "none")
    if spec.baseline != "none" and baseline is None:
        raise ModelError(
            f"the mean model adjusts for baseline ({spec.baseline}) but no baseline column "
            "was given",
            fix="pass baseline=<column>, or use a mean model with baseline 'none'",
        )
    method = str(df_method).lower().replace("-", "_")
    requested = str(covariance).lower()
    fallback = (fallback,) if isinstance(fallback, str) else tuple(fallback)
    _check_options(requested, fallback, method, alpha)
    ready = prepare_mmrm(
        data,
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
    )
    choice, inference = fit_prepared(ready, requested, fallback, method)
    return _result(ready, choice, inference, alpha, {"subject": subject, "visit": visit})


def _lsmeans_table(ready: PreparedMmrm, inference: MmrmInference, alpha: float) -> pd.DataFrame:
    obs, mean = ready.obs, ready.mean
    keys = [(v, a) for v in range(len(obs.visits)) for a in range(len(obs.arms))]
    rows = np.array([mean.grid_row(obs.arms[a], obs.visits[v]) for v, a in keys])
    est, se, df = inference.contrasts(rows)
    lo, hi, _ = intervals(est, se, df, alpha)
    counts = obs.counts()
    return pd.DataFrame(
        {
            "visit": [obs.visits[v] for v, _ in keys],
            "arm": [obs.arms[a] for _, a in keys],
            "estimate": est,
            "std_error": se,
            "df": df,
            "ci_lower": lo,
            "ci_upper": hi,
            "n": [int(counts[a, v]) for v, a in keys],
        },
        columns=list(LSMEAN_COLUMNS),
    )


def _effects_table(ready: PreparedMmrm, inference: MmrmInference, alpha: float) -> pd.DataFrame:
    obs, mean = ready.obs, ready.mean
    keys = [(v, a) for v in range(len(obs.visits)) for a in range(1, len(obs.arms))]
    rows = np.array(
        [
            mean.grid_row(obs.arms[a], obs.visits[v]) - mean.grid_row(obs.arms[0], obs.visits[v])
            for v, a in keys
        ]
    )
    est, se, df = inference.contrasts(rows)
    lo, hi, pval = intervals(est, se, df, alpha)
    counts = obs.counts()
    return pd.DataFrame(
        {
            "contrast": [f"{obs.arms[a]} - {obs.arms[0]}" for _, a in keys],
            "visit": [obs.visits[v] for v, _ in keys],
            "estimate": est,
            "std_error": se,
            "df": df,
            "ci_lower": lo,
            "ci_upper": hi,
            "p_value": pval,
            "n": [int(counts[a, v] + counts[0, v]) for v, a in keys],
        },
        columns=list(EFFECT_COLUMNS),
    )


def _describe(ready: PreparedMmrm, fit: _Fit, method: str, subject: str) -> str:
    response = ready.prepared.names["response"]
    return (
        f"MMRM of {ready.mean.describe(response)}, with a {fit.structure.label} residual "
        f"covariance across visits within {subject}, fitted by REML with {DF_LABELS[method]} "
        "degrees of freedom"
        + (
            " and the Kenward-Roger adjusted covariance of the estimates."
            if "kenward" in method
            else "."
        )
    )


def _result(
    ready: PreparedMmrm,
    choice: CovarianceChoice,
    inference: MmrmInference,
    alpha: float,
    names: dict[str, str],
) -> ModelResult:
    obs, mean, fit = ready.obs, ready.mean, choice.fit
    sigma = fit.structure.sigma(fit.theta)
    visit_t, subject_t = r_name(names["visit"]), r_name(names["subject"])
    info: dict[str, Any] = {
        "formula": mean.formula,
        "covariance_formula": f"{fit.structure.code}({visit_t} | {subject_t})",
        "description": _describe(ready, fit, inference.method, names["subject"]),
        "mean_model": {
            "response": mean.spec.response,
            "baseline": mean.spec.baseline,
            "covariates_by_visit": list(mean.spec.covariates_by_visit),
            "lsmeans_weights": mean.spec.lsmeans_weights,
            "words": mean.spec.words(),
        },
        "n_subjects": obs.n_subjects,
        "n_observations": obs.n_observations,
        "n_excluded_subjects": ready.prepared.n_excluded_subjects,
        "loglik": -0.5 * fit.evaluation.deviance,
        "method": "REML",
        "optimizer": "L-BFGS-B then Newton (scipy)",
        "iterations": fit.iterations,
        "gradient_norm": gradient_size(fit.gradient),
        "covariance_requested": choice.requested,
        "covariance_used": fit.structure.code,
        "fallback_reason": choice.fallback_reason,
        "covariance_tried": choice.tried,
        "covariance_parameters": fit.structure.parameters(fit.theta, tuple(obs.visits)),
        "n_covariance_parameters": fit.structure.n_params,
        "df_method": inference.method,
        "alpha": float(alpha),
        "coefficients": dict(zip(mean.names, fit.evaluation.beta.tolist(), strict=True)),
        "reference_grid": mean.reference_grid,
        "visits": list(obs.visits),
        "visit_weeks": choice.weeks,
        "visits_equally_spaced": equally_spaced(choice.weeks),
        "arms": list(obs.arms),
    }
    return ModelResult(
        analysis="mmrm",
        effects=_effects_table(ready, inference, alpha),
        lsmeans=_lsmeans_table(ready, inference, alpha),
        covariance=pd.DataFrame(sigma, index=list(obs.visits), columns=list(obs.visits)),
        converged=True,
        warnings=tuple([*ready.notes, *choice.notes]),
        info=info,
        residuals=_residuals(
            obs, mean.x @ fit.evaluation.beta, sigma, names["subject"], names["visit"]
        ),
        type3=type3_table(mean.type3(), inference.test),
    )


def _residuals(
    obs: ObservedRows, fitted: np.ndarray, sigma: np.ndarray, subject: str, visit: str
) -> pd.DataFrame:
    """Raw and normalized residuals per observation (normalized: whitened within subject)."""
    raw = obs.y - fitted
    wide = np.full((len(obs.subjects), len(obs.visits)), np.nan)
    wide[obs.subject_code, obs.visit_code] = raw
    seen = ~np.isnan(wide)
    normalized = np.full_like(wide, np.nan)
    patterns, which = visit_patterns(seen)
    for k, mask in enumerate(patterns):
        idx = np.flatnonzero(mask)
        rows = np.flatnonzero(which == k)
        chol = np.linalg.cholesky(sigma[np.ix_(idx, idx)])
        block = wide[np.ix_(rows, idx)]
        # Solve L z = r for every subject of the pattern at once: z = r L^-T.
        normalized[np.ix_(rows, idx)] = np.linalg.solve(chol, block.T).T
    return pd.DataFrame(
        {
            subject: np.asarray(obs.subjects, dtype=object)[obs.subject_code],
            visit: np.asarray(obs.visits, dtype=object)[obs.visit_code],
            "observed": obs.y,
            "fitted": fitted,
            "residual": raw,
            "normalized_residual": normalized[obs.subject_code, obs.visit_code],
        }
    )
