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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg, optimize, stats

from trialflow.errors import ModelError
from trialflow.stats.covariance import (
    STRUCTURES,
    CovarianceStructure,
    make_structure,
    nearest_positive_definite,
)
from trialflow.stats.design import (
    BASELINE,
    ObservedRows,
    PreparedData,
    covariate_block,
    observed_rows,
    prepare_long,
    r_name,
    redundant_columns,
)
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult

__all__ = ["fit_mmrm"]

_LOG_2PI = math.log(2.0 * math.pi)
_DF_METHODS = ("satterthwaite",)
# Convergence: largest |gradient| of -2 REML log-likelihood with respect to the (log-scale /
# atanh-scale) covariance parameters, and the Newton decrement g' H^-1 g (log-likelihood units).
_GRADIENT_TOLERANCE = 1e-3
_DECREMENT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Pattern:
    """Subjects sharing one set of observed visits, with their summed cross-products."""

    visits: np.ndarray  # positions of the observed visits
    index: tuple[np.ndarray, ...]  # np.ix_(visits, visits)
    n_subjects: int
    # cross[a * m + b, j * q + l] = sum over subjects of z[a, j] * z[b, l], z = [X, y].
    cross: np.ndarray


@dataclass
class _Evaluation:
    """-2 REML log-likelihood and what its gradient and the inference need."""

    deviance: float
    beta: np.ndarray
    a_inv: np.ndarray
    weights: list[np.ndarray]
    sigma_gradient: np.ndarray | None = None


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
        patterns, pattern_of_subject = np.unique(observed, axis=0, return_inverse=True)
        pattern_of_subject = np.asarray(pattern_of_subject).ravel()
        order = np.lexsort((visit_code, subject_code, pattern_of_subject[subject_code]))
        z = np.column_stack([x, y])[order]
        q = z.shape[1]
        self.q = q
        per_pattern = np.bincount(pattern_of_subject, minlength=len(patterns))
        self.patterns: list[_Pattern] = []
        start = 0
        for mask, n_p in zip(patterns, per_pattern, strict=True):
            idx = np.flatnonzero(mask)
            m = idx.size
            block = z[start : start + n_p * m].reshape(n_p, m * q)
            start += n_p * m
            gram = (block.T @ block).reshape(m, q, m, q).transpose(0, 2, 1, 3)
            self.patterns.append(
                _Pattern(
                    visits=idx,
                    index=np.ix_(idx, idx),
                    n_subjects=int(n_p),
                    cross=gram.reshape(m * m, q * q),
                )
            )

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
        weights: list[np.ndarray] = []
        total = np.zeros(self.q * self.q)
        for pat in self.patterns:
            sub = sigma[pat.index]
            try:
                chol = np.linalg.cholesky(sub)
            except np.linalg.LinAlgError:
                return None
            diag = np.diag(chol)
            if not np.all(diag > 0):
                return None
            chol_inv = np.linalg.inv(chol)
            w = chol_inv.T @ chol_inv
            weights.append(w)
            logdet += pat.n_subjects * 2.0 * float(np.sum(np.log(diag)))
            total += w.ravel() @ pat.cross
        cross = total.reshape(self.q, self.q)
        a = cross[:p, :p]
        try:
            a_chol = linalg.cho_factor(a, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return None
        a_diag = np.diag(a_chol[0])
        if not np.all(a_diag > 0):
            return None
        beta = linalg.cho_solve(a_chol, cross[:p, p], check_finite=False)
        a_inv = linalg.cho_solve(a_chol, np.eye(p), check_finite=False)
        rss = float(cross[p, p] - cross[:p, p] @ beta)
        deviance = (self.n_obs - p) * _LOG_2PI + logdet + 2.0 * float(np.sum(np.log(a_diag))) + rss
        out = _Evaluation(deviance=deviance, beta=beta, a_inv=a_inv, weights=weights)
        if gradient:
            # d/dW_p of log|A| + r'Wr is sum over subjects of x A^-1 x' + r r'; then the chain
            # rule through W = Sigma^-1 gives n W - W (G + R) W per pattern.
            k_mat = np.zeros((self.q, self.q))
            k_mat[:p, :p] = a_inv
            u = np.concatenate([-beta, [1.0]])
            k_mat += np.outer(u, u)
            k_flat = k_mat.ravel()
            h = np.zeros((self.n_visits, self.n_visits))
            for pat, w in zip(self.patterns, weights, strict=True):
                m = pat.visits.size
                gr = (pat.cross @ k_flat).reshape(m, m)
                h[pat.index] += pat.n_subjects * w - w @ gr @ w
            out.sigma_gradient = h
        return out

    def quadratic_form_gradients(
        self, evaluation: _Evaluation, contrasts: np.ndarray
    ) -> np.ndarray:
        """d (l' Phi l) / d sigma for every contrast row l, shape (n_contrasts, k, k).

        Phi = (X' V^-1 X)^-1; d(l' Phi l) = sum over patterns of <d Sigma_p, W_p S_p W_p> with
        S_p[a, b] = sum over subjects of (x_a' Phi l)(x_b' Phi l).
        """
        p = self.n_coef
        k = self.n_visits
        v = evaluation.a_inv @ contrasts.T  # p x n_contrasts
        n_c = v.shape[1]
        vv = np.einsum("jc,lc->jlc", v, v)
        full = np.zeros((self.q, self.q, n_c))
        full[:p, :p, :] = vv
        vv_flat = full.reshape(self.q * self.q, n_c)
        out = np.zeros((n_c, k, k))
        for pat, w in zip(self.patterns, evaluation.weights, strict=True):
            m = pat.visits.size
            s = (pat.cross @ vv_flat).reshape(m, m, n_c)
            wsw = np.einsum("ab,bcn,cd->nad", w, s, w)
            out[:, pat.visits[:, None], pat.visits[None, :]] += wsw
        return out


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


def _fit_structure(problem: _RemlProblem, structure: CovarianceStructure) -> _Fit:
    """REML fit of one covariance structure: L-BFGS-B, then Newton steps to polish."""
    start_cov = problem.moment_covariance(problem.ols())
    theta = structure.start(start_cov)
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
    problems: list[str] = []
    if not (result.success or newton_converged):
        problems.append(f"L-BFGS-B: {result.message}")
    eig = np.linalg.eigvalsh(hessian)
    hessian_pd = bool(np.all(np.isfinite(eig)) and eig.min() > 1e-8 * max(eig.max(), 1e-300))
    if not hessian_pd:
        problems.append(
            "Hessian of the REML log-likelihood not positive definite "
            f"(smallest eigenvalue {eig.min():.3g}): a variance or correlation is on the boundary"
        )
    grad_max = float(np.max(np.abs(grad)))
    if grad_max > _GRADIENT_TOLERANCE:
        problems.append(f"gradient not small (max |gradient| {grad_max:.3g})")
    elif hessian_pd:
        decrement = float(grad @ np.linalg.solve(hessian, grad))
        if decrement > _DECREMENT_TOLERANCE:
            problems.append(f"not at a stationary point (Newton decrement {decrement:.3g})")
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


def _failed(structure: CovarianceStructure, theta: np.ndarray, iterations: int, why: str) -> _Fit:
    n = theta.size
    empty = _Evaluation(deviance=math.inf, beta=np.empty(0), a_inv=np.empty((0, 0)), weights=[])
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


def _mean_design(
    prepared: PreparedData, obs: ObservedRows
) -> tuple[np.ndarray, list[str], np.ndarray, int]:
    """Design matrix, column names, covariate reference grid, and index of the first arm column.

    Column order as R's ``model.matrix(~ baseline + covariates + arm * visit)``.

    Raises
    ------
    ModelError
        A categorical covariate has a single level among the rows used.
    """
    cov = covariate_block(obs.frame, prepared.covariates)
    if cov.single_level:
        name, level = next(iter(cov.single_level.items()))
        raise ModelError(
            f"categorical covariate has a single level ({level!r}) among the rows used",
            column=name,
            fix="drop the covariate from the model",
        )
    base = obs.frame[BASELINE].to_numpy(dtype=float)
    n = obs.n_observations
    n_arms = len(obs.arms)
    n_visits = len(obs.visits)
    arm_d = (obs.arm_code[:, None] == np.arange(1, n_arms)[None, :]).astype(float)
    visit_d = (obs.visit_code[:, None] == np.arange(1, n_visits)[None, :]).astype(float)
    # R orders interaction columns with the first factor varying fastest.
    inter = (visit_d[:, :, None] * arm_d[:, None, :]).reshape(n, -1)
    x = np.column_stack([np.ones(n), base, cov.matrix, arm_d, visit_d, inter])
    arm_name, visit_name = prepared.names["arm"], prepared.names["visit"]
    arm_cols = [r_name(f"{arm_name}{a}") for a in obs.arms[1:]]
    visit_cols = [r_name(f"{visit_name}{v}") for v in obs.visits[1:]]
    names = ["(Intercept)", r_name(prepared.names["baseline"])]
    names += [r_name(label) for label in cov.labels]
    names += [*arm_cols, *visit_cols]
    names += [f"{a}:{v}" for v in visit_cols for a in arm_cols]
    grid = np.concatenate([[float(np.mean(base))], cov.grid])
    return x, names, grid, 2 + cov.matrix.shape[1]


def _grid_row(grid: np.ndarray, arm: int, visit: int, n_arms: int, n_visits: int) -> np.ndarray:
    arm_d = np.zeros(n_arms - 1)
    if arm > 0:
        arm_d[arm - 1] = 1.0
    visit_d = np.zeros(n_visits - 1)
    if visit > 0:
        visit_d[visit - 1] = 1.0
    inter = np.outer(visit_d, arm_d).ravel()
    return np.concatenate([[1.0], grid, arm_d, visit_d, inter])


def _check_estimable(
    prepared: PreparedData, obs: ObservedRows, x: np.ndarray, names: list[str]
) -> None:
    counts = obs.counts()
    for a, v in zip(*np.nonzero(counts == 0), strict=True):
        raise ModelError(
            f"arm {obs.arms[a]!r} has no observed response at visit "
            f"{obs.visits[v]!r}, so its mean at that visit cannot be estimated",
            column=prepared.names["visit"],
            fix="drop that visit from visit_order (and the data) or check the data",
        )
    if obs.n_observations <= x.shape[1]:
        raise ModelError(
            f"{obs.n_observations} observations for {x.shape[1]} mean parameters",
            fix="use fewer covariates or more data",
        )
    redundant = redundant_columns(x)
    if redundant:
        raise ModelError(
            f"the mean model is not estimable: column {names[redundant[0]]!r} is a linear "
            "combination of the columns before it (constant or duplicated covariate?)",
            fix="remove the redundant covariate",
        )


def _satterthwaite(
    problem: _RemlProblem, fit: _Fit, contrasts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimates, standard errors and Satterthwaite df of contrast rows."""
    ev = fit.evaluation
    estimate = contrasts @ ev.beta
    variance = np.einsum("cj,jl,cl->c", contrasts, ev.a_inv, contrasts)
    d_sigma = problem.quadratic_form_gradients(ev, contrasts)
    jac = fit.structure.jacobian(fit.theta)
    g = d_sigma.reshape(d_sigma.shape[0], -1) @ jac.reshape(jac.shape[0], -1).T
    # Covariance of theta-hat: inverse observed information of the REML log-likelihood, i.e.
    # 2 H^-1 with H the Hessian of -2 REML.
    cov_theta = 2.0 * np.linalg.inv(fit.hessian)
    var_of_variance = np.einsum("cj,jl,cl->c", g, cov_theta, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(var_of_variance > 0, 2.0 * variance**2 / var_of_variance, np.inf)
    return estimate, np.sqrt(variance), df


def _intervals(
    estimate: np.ndarray, se: np.ndarray, df: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tcrit = stats.t.ppf(1.0 - alpha / 2.0, df)
    p_value = 2.0 * stats.t.sf(np.abs(estimate / se), df)
    return estimate - tcrit * se, estimate + tcrit * se, p_value


def fit_mmrm(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str,
    covariates: Sequence[str] = (),
    covariance: str = "us",
    reference_arm: object,
    visit_order: Sequence[object] | None = None,
    fallback: Sequence[str] = ("toep", "ar1", "cs"),
    df_method: str = "satterthwaite",
    alpha: float = 0.05,
) -> ModelResult:
    """Fit a mixed model for repeated measures (MMRM) by REML.

    Mean model ``response ~ baseline + covariates + arm + visit + arm:visit`` (categorical
    covariates dummy-coded against their first sorted level, arm coded against
    ``reference_arm``), with a residual covariance across visits within subject. Every observed
    visit of every subject is used; subjects missing the baseline or a covariate are excluded
    with a warning.

    Parameters
    ----------
    data
        Long table with the post-baseline rows of one outcome (one row per subject x visit).
        Missing responses may be NaN rows or absent rows.
    response
        Column of the response (usually change from baseline).
    subject, visit, arm
        Columns of the subject identifier, visit label and arm label.
    baseline
        Column of the subject's baseline value (a covariate of the mean model).
    covariates
        Additional covariate columns (numeric or categorical).
    covariance
        Residual covariance across visits: ``"us"`` (unstructured), ``"cs"`` (compound
        symmetry), ``"csh"`` (heterogeneous CS), ``"ar1"``, ``"ar1h"`` (heterogeneous AR(1)) or
        ``"toep"`` (Toeplitz). AR(1) and Toeplitz lags count visit positions in visit order.
    reference_arm
        Label of the control arm; effects are each other arm minus this one.
    visit_order
        Visit labels in order; None takes the categories of an ordered categorical visit
        column, else sorted numeric visits, else the order of first appearance.
    fallback
        Structures tried in turn when ``covariance`` does not converge. Every fallback is
        reported in ``warnings`` and ``info["fallback_reason"]``.
    df_method
        ``"satterthwaite"``: the default of R ``mmrm`` and what ``emmeans`` uses for an
        ``nlme::gls`` fit, so results match R. (Kenward-Roger, the usual SAS choice, adds a
        small-sample inflation of the covariance of the estimates and is not implemented.)
    alpha
        Two-sided level: confidence intervals have coverage ``1 - alpha``.

    Returns
    -------
    ModelResult
        ``effects`` (arm minus reference at each visit), ``lsmeans`` (per visit and arm on the
        ``emmeans`` reference grid: numeric covariates and baseline at their mean over the rows
        used, factor levels weighted equally), ``covariance`` (visits x visits), and ``info``
        with the formula, REML log-likelihood on R ``nlme``'s scale (equal to
        ``logLik(gls_fit)``), covariance parameters, optimizer details and fallback record.

    Raises
    ------
    ModelError
        Invalid input, a non-estimable mean model, or no covariance structure converged.
    """
    if not (isinstance(alpha, float | int) and 0.0 < float(alpha) < 1.0):
        raise ModelError(f"alpha must be between 0 and 1, got {alpha!r}", fix="e.g. alpha=0.05")
    method = str(df_method).lower().replace("_", "-")
    if method not in _DF_METHODS:
        raise ModelError(
            f"df_method {df_method!r} is not supported",
            fix="use df_method='satterthwaite'",
        )
    requested = str(covariance).lower()
    if requested not in STRUCTURES:
        raise ModelError(
            f"unknown covariance structure {covariance!r}",
            fix=f"use one of {', '.join(STRUCTURES)}",
        )
    if isinstance(fallback, str):
        fallback = (fallback,)
    for code in fallback:
        if str(code).lower() not in STRUCTURES:
            raise ModelError(
                f"unknown fallback covariance structure {code!r}",
                fix=f"use codes from {', '.join(STRUCTURES)}",
            )
    prepared = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        covariates=covariates,
        reference_arm=reference_arm,
        visit_order=visit_order,
        baseline=baseline,
        multi_arm=True,
    )
    notes = list(prepared.warnings)
    obs = observed_rows(prepared)
    if obs.dropped_visits:
        notes.append(f"visit(s) with no observed response ignored: {', '.join(obs.dropped_visits)}")
    x, names, grid, _ = _mean_design(prepared, obs)
    _check_estimable(prepared, obs, x, names)
    n_visits = len(obs.visits)
    problem = _RemlProblem(x, obs.y, obs.subject_code, obs.visit_code, obs.n_subjects, n_visits)

    tried: list[str] = []
    order = [requested] + [str(c).lower() for c in fallback if str(c).lower() != requested]
    fit: _Fit | None = None
    reasons: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for code in order:
            structure = make_structure(code, n_visits)
            tried.append(code)
            candidate = _fit_structure(problem, structure)
            if candidate.converged:
                fit = candidate
                break
            reasons.append(f"{structure.label} ({code}) did not converge: {candidate.reason}")
    notes.extend(str(w.message) for w in caught)
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

    n_arms = len(obs.arms)
    rows = [
        (v, a, _grid_row(grid, a, v, n_arms, n_visits))
        for v in range(n_visits)
        for a in range(n_arms)
    ]
    ls_matrix = np.array([r[2] for r in rows])
    ls_est, ls_se, ls_df = _satterthwaite(problem, fit, ls_matrix)
    ls_lo, ls_hi, _ = _intervals(ls_est, ls_se, ls_df, alpha)
    counts = obs.counts()
    lsmeans = pd.DataFrame(
        {
            "visit": [obs.visits[v] for v, _, _ in rows],
            "arm": [obs.arms[a] for _, a, _ in rows],
            "estimate": ls_est,
            "std_error": ls_se,
            "df": ls_df,
            "ci_lower": ls_lo,
            "ci_upper": ls_hi,
            "n": [int(counts[a, v]) for v, a, _ in rows],
        },
        columns=list(LSMEAN_COLUMNS),
    )

    eff_rows = [(v, a) for v in range(n_visits) for a in range(1, n_arms)]
    eff_matrix = np.array(
        [
            _grid_row(grid, a, v, n_arms, n_visits) - _grid_row(grid, 0, v, n_arms, n_visits)
            for v, a in eff_rows
        ]
    )
    est, se, df = _satterthwaite(problem, fit, eff_matrix)
    lo, hi, pval = _intervals(est, se, df, alpha)
    effects = pd.DataFrame(
        {
            "contrast": [f"{obs.arms[a]} - {obs.arms[0]}" for _, a in eff_rows],
            "visit": [obs.visits[v] for v, _ in eff_rows],
            "estimate": est,
            "std_error": se,
            "df": df,
            "ci_lower": lo,
            "ci_upper": hi,
            "p_value": pval,
            "n": [int(counts[a, v] + counts[0, v]) for v, a in eff_rows],
        },
        columns=list(EFFECT_COLUMNS),
    )

    sigma = fit.structure.sigma(fit.theta)
    cov_frame = pd.DataFrame(sigma, index=list(obs.visits), columns=list(obs.visits))
    cov_names = [c.name for c in prepared.covariates]
    terms = [r_name(baseline), *[r_name(c) for c in cov_names]]
    arm_t, visit_t = r_name(arm), r_name(visit)
    formula = f"{r_name(response)} ~ {' + '.join(terms)} + {arm_t} + {visit_t} + {arm_t}:{visit_t}"
    adjust = ", ".join([baseline, *cov_names])
    description = (
        f"MMRM of {response} with fixed effects of {arm}, {visit} and their interaction, "
        f"adjusted for {adjust}, and a {fit.structure.label} residual covariance across "
        f"{visit} within {subject}, fitted by REML with Satterthwaite degrees of freedom."
    )
    info: dict[str, Any] = {
        "formula": formula,
        "covariance_formula": f"{fit.structure.code}({visit_t} | {r_name(subject)})",
        "description": description,
        "n_subjects": obs.n_subjects,
        "n_observations": obs.n_observations,
        "n_excluded_subjects": prepared.n_excluded_subjects,
        "loglik": -0.5 * fit.evaluation.deviance,
        "method": "REML",
        "optimizer": "L-BFGS-B then Newton (scipy)",
        "iterations": fit.iterations,
        "gradient_norm": float(np.max(np.abs(fit.gradient))),
        "covariance_requested": requested,
        "covariance_used": fit.structure.code,
        "fallback_reason": fallback_reason,
        "covariance_tried": tried,
        "covariance_parameters": fit.structure.parameters(fit.theta, tuple(obs.visits)),
        "n_covariance_parameters": fit.structure.n_params,
        "df_method": method,
        "alpha": float(alpha),
        "coefficients": dict(zip(names, fit.evaluation.beta.tolist(), strict=True)),
        "reference_grid": dict(zip(names[1 : 1 + grid.size], grid.tolist(), strict=True)),
        "visits": list(obs.visits),
        "arms": list(obs.arms),
    }
    return ModelResult(
        analysis="mmrm",
        effects=effects,
        lsmeans=lsmeans,
        covariance=cov_frame,
        converged=True,
        warnings=tuple(notes),
        info=info,
        residuals=_residuals(obs, x @ fit.evaluation.beta, sigma, subject, visit),
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
    patterns, which = np.unique(seen, axis=0, return_inverse=True)
    which = np.asarray(which).ravel()
    for k, mask in enumerate(patterns):
        idx = np.flatnonzero(mask)
        rows = np.flatnonzero(which == k)
        chol = np.linalg.cholesky(sigma[np.ix_(idx, idx)])
        block = wide[np.ix_(rows, idx)]
        # Solve L z = r for every subject of the pattern at once: z = r L^-T.
        normalized[np.ix_(rows, idx)] = np.linalg.solve(chol, block.T).T
    return pd.DataFrame(
        {
            subject: [obs.subjects[i] for i in obs.subject_code],
            visit: [obs.visits[j] for j in obs.visit_code],
            "observed": obs.y,
            "fitted": fitted,
            "residual": raw,
            "normalized_residual": normalized[obs.subject_code, obs.visit_code],
        }
    )
