"""Linear mixed model with a random intercept (optionally a random slope) per subject.

The model is ``response ~ covariates + arm * visit + (1 | subject)`` fitted by REML to every
visit including baseline, so the arm-by-visit interaction at a visit is the difference between
arms in mean change from baseline. statsmodels' ``MixedLM`` is the fitting engine of record: its
optimum, convergence flag and warnings are what is reported. The REML criterion, its exact
gradient and Hessian, and the covariance of the fixed effects as a function of the variance
parameters are also computed in closed form with numpy, vectorised over subjects. They serve
three purposes: their optimum is MixedLM's starting point, so that on large trials MixedLM (whose
every likelihood evaluation loops over subjects in Python) only has to confirm convergence; a
few Newton steps polish MixedLM's optimum to the precision R's ``lme4`` reaches; and they give
Satterthwaite degrees of freedom for every contrast exactly as ``lmerTest`` defines them
(``df = 2 (l' Phi l)^2 / (g' A g)``, ``A`` = twice the inverse Hessian of the REML deviance).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams, MixedLMResults

from trialflow.errors import ModelError
from trialflow.stats.design import (
    ARM,
    RESPONSE,
    SUBJECT,
    VISIT,
    WEEK,
    ObservedRows,
    PreparedData,
    check_full_rank,
    observed_rows,
    prepare_long,
    r_name,
)
from trialflow.stats.inference import (
    Ingredients,
    TestResult,
    contrast_df,
    f_test,
    kr_adjusted,
    type3_table,
)
from trialflow.stats.meanmodel import MeanModel, MeanSpec, build_mean_model
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult

# Weeks are divided by this before entering the random slope: raw weeks make the slope
# variance tiny relative to the intercept variance and the optimizer fails to converge.
SLOPE_TIME_SCALE = 12.0

# MixedLM's own default sequence of optimizers, spelled out so the one that finished is known
# from the number of "Retrying MixedLM optimization with ..." warnings.
MIXEDLM_METHODS: tuple[str, ...] = ("bfgs", "lbfgs", "cg")
_RETRY = "Retrying MixedLM optimization with"


@dataclass(frozen=True)
class _Batch:
    """Subjects with the same number of observations ``m``, stacked along the first axis.

    When the subjects also share one random-effects block (always so for a random intercept,
    and for a random slope on scheduled weeks with the same visits observed), ``z`` is that
    single (m, q) block: their marginal covariance V is then one (m, m) matrix, and every sum
    over the batch of a quadratic form ``[X_i y_i]' A [X_i y_i]`` follows from the second
    moments of the rows, computed once, in O(m^2 p^2) work whatever the number of subjects.
    """

    xy: np.ndarray  # (k, m, p + 1) fixed-effects rows with the response appended
    z: np.ndarray  # (m, q) shared or (k, m, q) per-subject random-effects rows
    moments: np.ndarray | None  # (m * m, (p + 1)^2) for a shared batch, else None

    @classmethod
    def build(cls, xy: np.ndarray, z: np.ndarray) -> _Batch:
        """A batch with its row moments precomputed when ``z`` is one shared (m, q) block."""
        if z.ndim == 3:
            return cls(xy=xy, z=z, moments=None)
        k, m, n = xy.shape
        flat = xy.reshape(k, m * n)
        # (a, p), (b, r) -> (a, b), (p, r): sum_i xy_i[a, p] xy_i[b, r]
        moments = (flat.T @ flat).reshape(m, n, m, n).transpose(0, 2, 1, 3).reshape(m * m, -1)
        return cls(xy=xy, z=z, moments=moments)

    @property
    def n_subjects(self) -> int:
        return int(self.xy.shape[0])

    @property
    def shared(self) -> bool:
        return self.moments is not None

    def quad(self, a: np.ndarray) -> np.ndarray:
        """Sum over subjects of [X_i y_i]' A_i [X_i y_i]; ``a`` (m, m) shared or (k, m, m)."""
        n = self.xy.shape[2]
        if self.moments is not None and a.ndim == 2:
            return (a.reshape(-1) @ self.moments).reshape(n, n)
        return _cross(self.xy, a @ self.xy)


def _stack_by_size(xy: np.ndarray, z: np.ndarray, sizes: np.ndarray) -> list[_Batch]:
    """Split row arrays of consecutive subjects into batches of equal-sized subjects.

    Subjects of one size are further split by their random-effects block when the distinct
    blocks are few (a shared block saves per-subject work, but every extra batch costs a
    round of numpy calls).
    """
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    batches = []
    for m in np.unique(sizes):
        rows = starts[sizes == m][:, None] + np.arange(m)
        zb = z[rows]
        patterns, which = np.unique(zb.reshape(len(rows), -1), axis=0, return_inverse=True)
        if len(patterns) == 1 or 8 * len(patterns) <= len(rows):
            for j, pattern in enumerate(patterns):
                sel = rows[which.ravel() == j]
                batches.append(_Batch.build(xy[sel], pattern.reshape(m, -1)))
        else:
            batches.append(_Batch.build(xy[rows], zb))
    return batches


class _Blocks:
    """Per-subject responses and design blocks, held as batches of equal-sized subjects.

    Stacking subjects turns every per-subject matrix operation of the REML computations into
    one vectorised numpy call per batch, so the Python-level work grows with the number of
    batches rather than the number of subjects. The response is stored minus its OLS fit:
    the REML criterion and the GLS residuals are unchanged by subtracting any ``X b`` (the
    fixed effects absorb it), and centring keeps quadratic forms in the residuals, formed
    from sums over subjects, free of cancellation when the response is far from zero.

    Parameters
    ----------
    y, x, z
        Response vector, fixed-effects block and random-effects block of each subject.
    """

    def __init__(
        self, y: Sequence[np.ndarray], x: Sequence[np.ndarray], z: Sequence[np.ndarray]
    ) -> None:
        sizes = np.array([len(v) for v in y], dtype=int)
        self._setup(np.concatenate(y), np.concatenate(x), np.concatenate(z), sizes)

    @classmethod
    def from_rows(cls, y: np.ndarray, x: np.ndarray, z: np.ndarray, groups: np.ndarray) -> _Blocks:
        """Build the blocks from row arrays whose rows are sorted by the ``groups`` labels."""
        bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
        blocks = cls.__new__(cls)
        blocks._setup(y, x, z, np.diff(bounds))
        return blocks

    def _setup(self, y: np.ndarray, x: np.ndarray, z: np.ndarray, sizes: np.ndarray) -> None:
        self.offset = np.linalg.lstsq(x, y, rcond=None)[0]
        xy = np.column_stack([x, y - x @ self.offset])
        self.batches = _stack_by_size(xy, z, sizes)

    @property
    def n_obs(self) -> int:
        return int(sum(b.xy.shape[0] * b.xy.shape[1] for b in self.batches))

    @property
    def n_fixed(self) -> int:
        return int(self.batches[0].xy.shape[2] - 1)

    @property
    def n_random(self) -> int:
        return int(self.batches[0].z.shape[-1])


@dataclass
class _RemlState:
    """REML quantities at one value of the variance parameters."""

    deviance: float
    beta: np.ndarray
    phi: np.ndarray
    w: list[np.ndarray]  # V^-1 per batch: (m, m) if shared, else (k, m, m)
    resid: np.ndarray  # c with GLS residuals r_i = [X_i y_i] c (centred response)


_Derivatives = tuple[np.ndarray, np.ndarray, list[np.ndarray]]


def _n_vparams(q: int) -> int:
    return q * (q + 1) // 2 + 1


def _unpack(psi: np.ndarray, q: int) -> tuple[np.ndarray, float]:
    """Variance parameters -> (random-effects covariance G, residual variance)."""
    g = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    g[rows, cols] = psi[:-1]
    g[cols, rows] = psi[:-1]
    return g, float(psi[-1])


def _pack(g: np.ndarray, sigma2: float) -> np.ndarray:
    rows, cols = np.tril_indices(g.shape[0])
    return np.concatenate([g[rows, cols], [sigma2]])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum over subjects of A_i' B_i for stacked (k, m, r) and (k, m, s) arrays."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def _trace_sum(a: np.ndarray, b: np.ndarray, n_subjects: int) -> float:
    """Sum over the subjects of a batch of tr(A_i B_i); each of a, b shared or stacked."""
    total = float(np.sum(a * np.swapaxes(b, -1, -2)))
    return n_subjects * total if a.ndim == 2 and b.ndim == 2 else total


def _dv_blocks(z: np.ndarray) -> list[np.ndarray]:
    """Derivatives of V = Z G Z' + s2 I with respect to each variance parameter.

    ``z`` is one (m, q) block or a (k, m, q) stack; each derivative is then one (m, m) matrix
    or a (k, m, m) stack, except the last (for s2), the (m, m) identity either way.
    """
    m, q = z.shape[-2:]
    out = []
    for a, b in zip(*np.tril_indices(q), strict=True):
        outer = z[..., :, a, None] * z[..., None, :, b]
        out.append(outer if a == b else outer + np.swapaxes(outer, -1, -2))
    out.append(np.eye(m))
    return out


def _reml_state(blocks: _Blocks, psi: np.ndarray) -> _RemlState:
    """REML deviance (-2 log-likelihood on lme4's scale), GLS estimates and helpers."""
    g, sigma2 = _unpack(psi, blocks.n_random)
    p = blocks.n_fixed
    total = np.zeros((p + 1, p + 1))  # [X y]' V^-1 [X y] summed over subjects
    logdet_v = 0.0
    ws: list[np.ndarray] = []
    for b in blocks.batches:
        v = b.z @ g @ np.swapaxes(b.z, -1, -2) + sigma2 * np.eye(b.xy.shape[1])
        chol = np.linalg.cholesky(v)
        logdet = 2.0 * float(np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum())
        logdet_v += b.n_subjects * logdet if b.shared else logdet
        w = np.linalg.inv(v)
        ws.append(w)
        total += b.quad(w)
    xtwx = total[:p, :p]
    chol_x = np.linalg.cholesky(xtwx)
    phi = np.linalg.inv(xtwx)
    beta = phi @ total[:p, p]
    resid = np.append(-beta, 1.0)
    deviance = (
        logdet_v
        + 2.0 * float(np.log(np.diag(chol_x)).sum())
        + float(resid @ total @ resid)
        + (blocks.n_obs - p) * math.log(2.0 * math.pi)
    )
    return _RemlState(deviance=deviance, beta=beta + blocks.offset, phi=phi, w=ws, resid=resid)


def _reml_gradient(blocks: _Blocks, state: _RemlState) -> np.ndarray:
    """Exact gradient of the REML deviance, d(dev)/dpsi_k = tr(P V_k) - y'P V_k P y.

    The same expansion as in :func:`_reml_derivatives`, without the Hessian terms.
    """
    p = blocks.n_fixed
    c = state.resid
    grad = np.zeros(_n_vparams(blocks.n_random))
    for b, w in zip(blocks.batches, state.w, strict=True):
        for k, d in enumerate(_dv_blocks(b.z)):
            qk = b.quad(w @ d @ w)
            grad[k] += (
                _trace_sum(w, d, b.n_subjects)
                - float(np.sum(state.phi * qk[:p, :p]))
                - float(c @ qk @ c)
            )
    return grad


def _reml_derivatives(blocks: _Blocks, state: _RemlState) -> _Derivatives:
    """Exact gradient and Hessian of the REML deviance, and dPhi/dpsi_k = Phi S_k Phi.

    With P = V^-1 - V^-1 X Phi X' V^-1 and V_k = dV/dpsi_k (V is linear in psi):
    d(dev)/dpsi_k = tr(P V_k) - y'P V_k P y and
    d2(dev)/dpsi_k dpsi_l = -tr(P V_k P V_l) + 2 y'P V_k P V_l P y.
    Traces are expanded block by block so no N x N matrix is ever formed: with W = V^-1,
    U = W X and e = W r, every term is a sum over subjects of [X y]' A [X y] for
    A = W V_k W or W V_k W V_l W, or a trace of W V_k (W V_l).
    """
    m = _n_vparams(blocks.n_random)
    p = blocks.n_fixed
    phi = state.phi
    c = state.resid
    s = [np.zeros((p, p)) for _ in range(m)]  # S_k = sum U' V_k U
    ua = [np.zeros(p) for _ in range(m)]  # sum U' V_k e
    tr_wv = np.zeros(m)
    quad_v = np.zeros(m)  # e' V_k e
    tr_wvwv = np.zeros((m, m))
    mid = [[np.zeros((p, p)) for _ in range(m)] for _ in range(m)]  # sum U' V_k W V_l U
    a_w_a = np.zeros((m, m))  # sum (V_k e)' W (V_l e)
    for b, w in zip(blocks.batches, state.w, strict=True):
        dv = _dv_blocks(b.z)
        dw = [d @ w for d in dv]
        wdw = [w @ dwk for dwk in dw]
        for k in range(m):
            qk = b.quad(wdw[k])
            s[k] += qk[:p, :p]
            ua[k] += qk[:p] @ c
            tr_wv[k] += _trace_sum(w, dv[k], b.n_subjects)
            quad_v[k] += float(c @ qk @ c)
            for ell in range(k, m):
                qkl = b.quad(wdw[k] @ dw[ell])
                tr_wvwv[k, ell] += _trace_sum(dw[k], dw[ell], b.n_subjects)
                mid[k][ell] += qkl[:p, :p]
                a_w_a[k, ell] += float(c @ qkl @ c)
    grad = np.array([tr_wv[k] - float(np.sum(phi * s[k])) - quad_v[k] for k in range(m)])
    hess = np.zeros((m, m))
    for k in range(m):
        for ell in range(k, m):
            tr_pvpv = (
                tr_wvwv[k, ell]
                - 2.0 * float(np.trace(phi @ mid[k][ell]))
                + float(np.trace(phi @ s[k] @ phi @ s[ell]))
            )
            apa = a_w_a[k, ell] - float(ua[k] @ phi @ ua[ell])
            hess[k, ell] = hess[ell, k] = -tr_pvpv + 2.0 * apa
    jac = [phi @ sk @ phi for sk in s]
    return grad, hess, jac


def _admissible(psi: np.ndarray, q: int) -> bool:
    g, sigma2 = _unpack(psi, q)
    if sigma2 <= 0:
        return False
    try:
        np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        return False
    return True


def _interior(psi: np.ndarray, q: int) -> bool:
    """Whether every random-effects variance direction is clearly away from zero."""
    g, sigma2 = _unpack(psi, q)
    return bool(np.all(np.linalg.eigvalsh(g) > 1e-6 * sigma2))


def _polish(
    blocks: _Blocks, psi: np.ndarray, max_iter: int = 25
) -> tuple[np.ndarray, int, _RemlState, _Derivatives]:
    """Newton steps on the REML deviance from a nearby optimum.

    Returns psi, the number of steps taken, and the REML state and derivatives at psi (so the
    caller need not recompute them). No step is taken when the gradient is already negligible.
    """
    q = blocks.n_random
    state = _reml_state(blocks, psi)
    derivs = _reml_derivatives(blocks, state)
    steps = 0
    for _ in range(max_iter):
        grad, hess, _ = derivs
        if float(np.max(np.abs(grad))) < 1e-10:
            break
        try:
            np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            break  # not at a strict interior minimum: keep the optimizer's answer
        step = np.linalg.solve(hess, grad)
        if float(np.max(np.abs(step) / np.maximum(np.abs(psi), 1e-12))) < 1e-12:
            break
        scale = 1.0
        accepted = False
        while scale > 1e-4:
            cand = psi - scale * step
            if _admissible(cand, q):
                new_state = _reml_state(blocks, cand)
                if new_state.deviance <= state.deviance + 1e-10:
                    psi, state, accepted = cand, new_state, True
                    break
            scale /= 2.0
        if not accepted:
            break
        steps += 1
        derivs = _reml_derivatives(blocks, state)
    return psi, steps, state, derivs


def _start_psi(blocks: _Blocks) -> np.ndarray:
    """Moment-based starting values: OLS residuals split into between- and within-subject parts.

    Only a starting point for the optimizer, so crude is fine; every variance is kept clearly
    positive so the search starts inside the parameter space.
    """
    resid = [b.xy[:, :, -1] for b in blocks.batches]  # the stored response is the OLS residual
    total = float(np.mean(np.concatenate([r.ravel() for r in resid]) ** 2))
    within = sum(float(np.sum((r - r.mean(axis=1, keepdims=True)) ** 2)) for r in resid)
    within_df = sum(r.size - r.shape[0] for r in resid)
    sigma2 = within / within_df if within_df > 0 else 0.5 * total
    sigma2 = max(sigma2, 1e-3 * total, 1e-12)
    # A subject's mean residual has variance G11 + s2 / m.
    means = np.concatenate([r.mean(axis=1) for r in resid])
    sizes = np.concatenate([np.full(r.shape[0], r.shape[1]) for r in resid])
    between = max(float(np.var(means)) - sigma2 * float(np.mean(1.0 / sizes)), 0.1 * sigma2)
    g = np.diag([between] + [0.1 * sigma2] * (blocks.n_random - 1))
    return _pack(g, sigma2)


def _direct_optimum(blocks: _Blocks) -> tuple[np.ndarray, bool, int, int]:
    """REML optimum of the closed-form criterion from moment-based starting values.

    L-BFGS-B gets close (and reaches a boundary optimum exactly); Newton steps then finish an
    interior optimum to full precision. Returns psi, whether L-BFGS-B reported success, and
    the numbers of L-BFGS-B iterations and Newton steps.
    """
    psi, ok, iterations = _optimize_reml(blocks, _start_psi(blocks))
    newton = 0
    if _interior(psi, blocks.n_random):
        psi, newton, _, _ = _polish(blocks, psi)
    return psi, ok, iterations, newton


def _optimize_reml(blocks: _Blocks, psi0: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """Minimise the closed-form REML deviance directly with its exact gradient.

    Parameterised like lme4: G = s2 L L' with a lower-triangular L whose diagonal is bounded
    below by zero, so a boundary optimum (a zero variance) is reachable exactly, and the
    log residual variance. Returns psi, whether L-BFGS-B reported success, and its iterations.
    """
    q = blocks.n_random
    rows, cols = np.tril_indices(q)
    g0, s0 = _unpack(psi0, q)
    s0 = max(s0, 1e-8)
    try:
        l0 = np.linalg.cholesky(g0 / s0 + 1e-10 * np.eye(q))
    except np.linalg.LinAlgError:
        l0 = np.eye(q)
    start = np.concatenate([l0[rows, cols], [math.log(s0)]])

    def to_psi(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lower = np.zeros((q, q))
        lower[rows, cols] = t[:-1]
        return _pack(math.exp(t[-1]) * (lower @ lower.T), math.exp(t[-1])), lower

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        psi, lower = to_psi(t)
        try:
            state = _reml_state(blocks, psi)
        except np.linalg.LinAlgError:
            return float("inf"), np.zeros_like(t)
        grad = _reml_gradient(blocks, state)
        # Chain rule from psi = (G entries, s2) to (L entries, log s2) with G = s2 L L':
        # d = symmetric dDev/dG, so dDev/dL = 2 s2 d L and dDev/dlog s2 = s2 dDev/ds2 + tr(d G).
        d, _ = _unpack(np.concatenate([grad[:-1], [0.0]]), q)
        d = 0.5 * (d + np.diag(np.diag(d)))
        sigma2 = float(psi[-1])
        g, _ = _unpack(psi, q)
        d_lower = 2.0 * sigma2 * (d @ lower)
        d_log_s2 = sigma2 * float(grad[-1]) + float(np.sum(d * g))
        return state.deviance, np.concatenate([d_lower[rows, cols], [d_log_s2]])

    bounds = [(0.0, None) if a == b else (None, None) for a, b in zip(rows, cols, strict=True)]
    bounds.append((None, None))
    res = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    return to_psi(res.x)[0], bool(res.success), int(res.nit)


def _mixedlm_step(
    fit: MixedLMResults, messages: Sequence[str], from_optimum: bool
) -> dict[str, object]:
    """What MixedLM's optimizer did, as recorded in its results and warnings."""
    retvals = fit.hist[-1] if fit.hist else {}
    # bfgs and cg report no iteration count, but keep every iterate (start included).
    iterations = retvals.get("iterations", len(retvals.get("allvecs", [None])) - 1)
    retries = sum(m.startswith(_RETRY) for m in messages)
    return {
        "step": "statsmodels MixedLM (REML)",
        "start": "closed-form REML optimum" if from_optimum else "statsmodels default",
        "method": MIXEDLM_METHODS[min(retries, len(MIXEDLM_METHODS) - 1)],
        "iterations": int(iterations),
        "function_evaluations": int(retvals.get("fcalls", -1)),
        "converged": bool(fit.converged),
    }


def fit_lmm(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    covariates: Sequence[str] = (),
    reference_arm: str,
    visit_order: Sequence[str] | None,
    baseline_visit: str,
    random_slope: bool = False,
    week: str | None = None,
    alpha: float = 0.05,
    df_method: Literal["satterthwaite", "kenward_roger", "asymptotic"] = "satterthwaite",
    lsmeans_weights: str = "equal",
    covariates_by_visit: Sequence[str] = (),
) -> ModelResult:
    """Fit a random-intercept linear mixed model to all visits including baseline.

    The model is ``response ~ covariates + arm * visit + (1 | subject)`` (with
    ``random_slope=True``: ``+ (1 + week/12 | subject)``, correlated intercept and slope),
    estimated by REML on every observed response. The treatment effect at a post-baseline
    visit is the ``arm:visit`` interaction coefficient, i.e. the difference between arms in
    mean change from ``baseline_visit`` to that visit.

    Parameters
    ----------
    data
        Long data of one outcome, one row per subject x visit; missing responses may be empty
        cells or absent rows.
    response, subject, visit, arm
        Column names of the raw response value, subject identifier, visit label and arm.
    covariates
        Baseline covariate column names (numeric, or categorical coded with treatment
        contrasts, first sorted level as reference).
    reference_arm
        Label of the control arm.
    visit_order
        Visit labels in order, including ``baseline_visit``; None takes the categories of an
        ordered categorical visit column, else orders by ``week`` if given, else sorts numeric
        visits, else keeps the order of first appearance.
    baseline_visit
        Label of the baseline visit (reference level of ``visit``).
    random_slope
        Add a random slope on ``week / 12`` (requires ``week``).
    week
        Column name of the numeric study week.
    alpha
        Two-sided significance level of the confidence intervals.
    df_method
        ``"satterthwaite"`` (default; t-based tests and intervals with lmerTest's
        Satterthwaite degrees of freedom), ``"kenward_roger"`` (adjusted covariance and df as
        R pbkrtest) or ``"asymptotic"`` (Wald z, ``df = inf``).
    lsmeans_weights
        ``"equal"`` or ``"proportional"`` weights of factor levels in LS means.
    covariates_by_visit
        Covariates that also interact with visit.

    Returns
    -------
    ModelResult
        ``analysis="lmm"``; effects per post-baseline visit, LS means per visit and arm
        (numeric covariates at their mean over the rows used, factor levels weighted
        equally), implied covariance of the responses across visits, and ``info`` with the
        variance components and REML log-likelihood on lme4's scale.

    Raises
    ------
    ModelError
        On invalid input, a baseline visit not among the visits, a missing ``week`` with
        ``random_slope=True``, or a rank-deficient design.
    """
    if df_method not in ("satterthwaite", "kenward_roger", "asymptotic"):
        raise ModelError(
            f"unknown df_method {df_method!r}",
            fix="use 'satterthwaite', 'kenward_roger' or 'asymptotic'",
        )
    if random_slope and week is None:
        raise ModelError(
            "a random slope needs the study week", fix="pass week=<name of the week column>"
        )
    prep, obs, notes = _prepare(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        reference_arm=reference_arm,
        covariates=covariates,
        week=week,
        visit_order=visit_order,
        baseline_visit=baseline_visit,
        random_slope=random_slope,
    )
    spec = MeanSpec(
        response="value",
        baseline="none",
        covariates_by_visit=tuple(covariates_by_visit),
        lsmeans_weights=lsmeans_weights,  # type: ignore[arg-type]
    )
    spec.check(list(covariates), len(obs.visits) - 1)
    names = {"arm": arm, "visit": visit, "response": response}
    mean = build_mean_model(obs, spec, covariates=prep.covariates, names=names)
    check_full_rank(mean.x, mean.names, "linear mixed model")
    frame = obs.frame
    z_visit = z_visit_matrix(frame, obs.visits, random_slope)
    z_rows = None
    if random_slope:
        z_rows = np.column_stack(
            [np.ones(len(frame)), frame[WEEK].to_numpy(dtype=float) / SLOPE_TIME_SCALE]
        )
    reml = _fit_reml(mean.x, frame, z_rows, notes)
    inference = _LmmInference.build(reml, mean, obs, z_visit, df_method, notes)
    effects, lsmeans = _lmm_tables(mean, obs, prep, reml, inference, baseline_visit, alpha)
    g_hat, sigma2 = _unpack(reml.psi, z_visit.shape[1])
    implied = z_visit @ g_hat @ z_visit.T + sigma2 * np.eye(len(obs.visits))
    info = _lmm_info(
        reml,
        mean,
        frame,
        inference.method,
        {"response": response, "subject": subject, "arm": arm, "visit": visit, "week": week},
        random_slope=random_slope,
        covariates=covariates,
        baseline_visit=baseline_visit,
    )
    return ModelResult(
        analysis="lmm",
        effects=effects,
        lsmeans=lsmeans,
        covariance=pd.DataFrame(implied, index=obs.visits, columns=obs.visits),
        converged=reml.converged,
        warnings=tuple(dict.fromkeys(notes)),
        info=info,
        type3=inference.type3(mean),
    )


def _prepare(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    reference_arm: str,
    covariates: Sequence[str],
    week: str | None,
    visit_order: Sequence[str] | None,
    baseline_visit: str,
    random_slope: bool,
) -> tuple[PreparedData, ObservedRows, list[str]]:
    """Validated rows of the LMM: every visit including baseline, with an observed response."""
    prep = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        reference_arm=reference_arm,
        covariates=covariates,
        week=week,
        visit_order=visit_order,
    )
    notes = list(prep.warnings)
    if baseline_visit not in prep.visits:
        raise ModelError(
            f"baseline visit {baseline_visit!r} is not among the visits {prep.visits}",
            column=visit,
            fix="set baseline_visit to the label of the baseline visit",
        )
    obs = observed_rows(prep)
    if obs.dropped_visits:
        if baseline_visit in obs.dropped_visits:
            raise ModelError(
                "no response is observed at the baseline visit",
                column=response,
                fix="check the baseline rows of the response column",
            )
        notes.append(f"visit(s) {obs.dropped_visits} have no observed response and were left out")
    if len(obs.visits) < 2:
        raise ModelError(
            "responses are observed at fewer than two visits",
            column=response,
            fix="pass the rows of the baseline and at least one post-baseline visit",
        )
    if random_slope and obs.frame[WEEK].isna().any():
        raise ModelError(
            f"{int(obs.frame[WEEK].isna().sum())} row(s) with a response have no week",
            column=week,
            fix="fill in the week of every visit",
        )
    return prep, obs, notes


@dataclass
class _RemlFit:
    """The REML optimum of the LMM and how it was reached."""

    psi: np.ndarray
    state: _RemlState
    gradient: np.ndarray
    hessian: np.ndarray
    jacobian: list[np.ndarray]
    converged: bool
    optimizer: str
    polish_steps: int
    steps: list[dict[str, object]]
    y: np.ndarray


def _fit_reml(
    x: np.ndarray, frame: pd.DataFrame, z_rows: np.ndarray | None, notes: list[str]
) -> _RemlFit:
    """REML optimum: closed form, confirmed by statsmodels MixedLM, polished by Newton steps."""
    y = frame[RESPONSE].to_numpy(dtype=float)
    z = z_rows if z_rows is not None else np.ones((len(frame), 1))
    q = z.shape[1]
    groups = frame[SUBJECT].to_numpy()
    blocks = _Blocks.from_rows(y, x, z, groups)
    # Each MixedLM likelihood evaluation loops over subjects in Python, whereas the closed-form
    # REML criterion is vectorised over subjects: find the optimum with the latter and start
    # MixedLM there, so that MixedLM only has to confirm convergence. Its verdict and warnings
    # are still the ones reported. A boundary optimum is not handed over: MixedLM's
    # square-root parameterisation has a zero gradient there and would stop at once, so it
    # searches from its own default start, as it would on its own.
    psi_direct, direct_ok, direct_iterations, direct_newton = _direct_optimum(blocks)
    fit, steps, start_used = _mixedlm(y, x, z, groups, psi_direct, notes)
    steps.insert(
        0,
        {
            "step": "closed-form REML minimisation",
            "method": "L-BFGS-B, then Newton",
            "iterations": direct_iterations,
            "newton_steps": direct_newton,
            "converged": direct_ok,
        },
    )
    psi = _pack(np.asarray(fit.cov_re, dtype=float), float(fit.scale))
    optimizer = (
        "statsmodels MixedLM (REML, started at the closed-form REML optimum)"
        if start_used
        else "statsmodels MixedLM (REML)"
    )
    optimizer_ok = bool(fit.converged)
    if not optimizer_ok:
        psi, optimizer_ok, optimizer = _rescue(blocks, psi, psi_direct, direct_ok, steps, notes)
    interior = _interior(psi, q)
    polish_steps = 0
    if interior:
        psi, polish_steps, state, (grad, hess, jac) = _polish(blocks, psi)
    else:
        state = _reml_state(blocks, psi)
        grad, hess, jac = _reml_derivatives(blocks, state)
        notes.append(
            "the random-effects variance is estimated at (or near) zero: the optimum is on the "
            "boundary of the parameter space"
        )
    steps.append({"step": "Newton polish", "newton_steps": polish_steps, "skipped": not interior})
    return _RemlFit(
        psi=psi,
        state=state,
        gradient=grad,
        hessian=hess,
        jacobian=list(jac),
        converged=optimizer_ok and interior,
        optimizer=optimizer,
        polish_steps=polish_steps,
        steps=steps,
        y=y,
    )


def _mixedlm(
    y: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    groups: np.ndarray,
    psi_direct: np.ndarray,
    notes: list[str],
) -> tuple[MixedLMResults, list[dict[str, object]], bool]:
    """statsmodels MixedLM, started at the closed-form optimum when it is interior."""
    q = z.shape[1]
    start: MixedLMParams | None = None
    if _interior(psi_direct, q):
        g0, s0 = _unpack(psi_direct, q)
        start = MixedLMParams(x.shape[1], q, 0)
        start.cov_re = g0 / s0  # MixedLM profiles out the residual variance
        start.vcomp = np.zeros(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLM(y, x, groups=groups, exog_re=z)
        try:
            fit = model.fit(
                reml=True, start_params=start, method=list(MIXEDLM_METHODS), full_output=True
            )
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ModelError(
                f"the linear mixed model could not be fitted: {exc}",
                fix="check for visits or arms with very few observations",
            ) from exc
    messages = [str(w.message) for w in caught]
    notes.extend(messages)
    return fit, [_mixedlm_step(fit, messages, from_optimum=start is not None)], start is not None


def _rescue(
    blocks: _Blocks,
    psi: np.ndarray,
    psi_direct: np.ndarray,
    direct_ok: bool,
    steps: list[dict[str, object]],
    notes: list[str],
) -> tuple[np.ndarray, bool, str]:
    """After a MixedLM failure (typically a variance at zero), minimise REML directly."""
    optimizer = "statsmodels MixedLM (REML)"
    candidate, ok, iterations = _optimize_reml(blocks, psi)
    if _reml_state(blocks, psi_direct).deviance < _reml_state(blocks, candidate).deviance:
        candidate, ok = psi_direct, direct_ok
    used = _reml_state(blocks, candidate).deviance < _reml_state(blocks, psi).deviance
    steps.append(
        {
            "step": "direct REML minimisation after MixedLM failed",
            "method": "L-BFGS-B",
            "iterations": iterations,
            "converged": ok,
            "used": used,
        }
    )
    if not used:
        return psi, False, optimizer
    notes.append("the REML optimum was found by direct minimisation of the REML criterion")
    return candidate, ok, "statsmodels MixedLM failed; direct REML minimisation (L-BFGS-B)"


@dataclass
class _LmmInference:
    """Covariance of the fixed effects used for SEs, and the df of each contrast."""

    method: str
    covariance: np.ndarray
    ingredients: Ingredients

    @classmethod
    def build(
        cls,
        reml: _RemlFit,
        mean: MeanModel,
        obs: ObservedRows,
        z_visit: np.ndarray,
        df_method: str,
        notes: list[str],
    ) -> _LmmInference:
        method = df_method
        if df_method == "kenward_roger":
            kr = _kenward_roger(obs.frame, mean.x, reml.y, obs.visits, z_visit, reml.psi)
            if kr is not None:
                return cls(method=method, covariance=kr_adjusted(kr, linear=True), ingredients=kr)
            method = "satterthwaite"
            notes.append(
                "Kenward-Roger is unavailable for this LMM (weeks differ within a visit); "
                "Satterthwaite degrees of freedom are used instead"
            )
        vcov_psi = None
        if method == "satterthwaite":
            try:
                np.linalg.cholesky(reml.hessian)
                vcov_psi = 2.0 * np.linalg.inv(reml.hessian)
            except np.linalg.LinAlgError:
                method = "residual"
                notes.append(
                    "Satterthwaite degrees of freedom are unavailable (the REML Hessian is not "
                    "positive definite); residual degrees of freedom n - p are used instead"
                )
        ingredients = _satterthwaite_ingredients(reml, vcov_psi)
        return cls(method=method, covariance=reml.state.phi, ingredients=ingredients)

    def type3(self, mean: MeanModel) -> pd.DataFrame | None:
        """Type III F tests of every term (None with Wald z tests, which have no F)."""
        if self.method == "asymptotic":
            return None

        def test(contrast: np.ndarray, _: str) -> TestResult:
            return f_test(self.ingredients, contrast, self.method, self.covariance)

        return type3_table(mean.type3(), test)

    def df(self, contrasts: np.ndarray) -> np.ndarray:
        """Denominator df of each contrast row."""
        if self.method == "asymptotic":
            return np.full(len(contrasts), np.inf)
        return contrast_df(self.ingredients, contrasts, self.method)


def _satterthwaite_ingredients(reml: _RemlFit, vcov_psi: np.ndarray | None) -> Ingredients:
    """Satterthwaite's ingredients in the variance parameters psi (G elements, sigma^2).

    d Phi / d psi_i = -Phi P_i Phi gives P_i from the Jacobian the LMM already has; W is the
    inverse observed information (lmerTest's), NaN when it is unavailable.
    """
    state = reml.state
    inverse = np.linalg.inv(state.phi)
    big_p = np.array([-inverse @ j @ inverse for j in reml.jacobian])
    r, p = big_p.shape[0], state.phi.shape[0]
    w = vcov_psi if vcov_psi is not None else np.full((r, r), np.nan)
    return Ingredients(
        beta=state.beta,
        phi=state.phi,
        p=big_p,
        q=np.zeros((r, r, p, p)),
        r=np.zeros((r, r, p, p)),
        w_observed=w,
        w_kr=w,
        residual_df=float(len(reml.y) - p),
    )


def _lmm_tables(
    mean: MeanModel,
    obs: ObservedRows,
    prep: PreparedData,
    reml: _RemlFit,
    inference: _LmmInference,
    baseline_visit: str,
    alpha: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effects (arm-by-visit interaction contrasts) and LS means of the LMM."""
    frame, beta = obs.frame, reml.state.beta
    post = [v for v in obs.visits if v != baseline_visit]
    eff_l = np.array([mean.effect_row(v) - mean.effect_row(baseline_visit) for v in post])
    effects = _table(eff_l, beta, inference.covariance, inference.df(eff_l), alpha)
    effects.insert(0, "visit", post)
    effects.insert(0, "contrast", prep.contrast)
    per_visit = frame.groupby(VISIT, observed=True)[SUBJECT].nunique()
    effects["n"] = [int(per_visit[v]) for v in post]
    keys = [(v, a) for v in obs.visits for a in (prep.control, prep.treatment)]
    ls_l = np.array([mean.grid_row(a, v) for v, a in keys])
    lsmeans = _table(ls_l, beta, inference.covariance, inference.df(ls_l), alpha)
    lsmeans.insert(0, "arm", [a for _, a in keys])
    lsmeans.insert(0, "visit", [v for v, _ in keys])
    observed = frame.groupby([VISIT, ARM], observed=True)[SUBJECT].nunique()
    lsmeans["n"] = [int(observed.get((v, a), 0)) for v, a in keys]
    return (
        effects.loc[:, list(EFFECT_COLUMNS)].reset_index(drop=True),
        lsmeans.loc[:, list(LSMEAN_COLUMNS)].reset_index(drop=True),
    )


_LMM_DF_WORDS = {
    "satterthwaite": "Satterthwaite degrees of freedom.",
    "kenward_roger": "the Kenward-Roger adjusted covariance and degrees of freedom (as R "
    "pbkrtest).",
    "asymptotic": "Wald z tests.",
    "residual": "residual degrees of freedom.",
}


def _lmm_info(
    reml: _RemlFit,
    mean: MeanModel,
    frame: pd.DataFrame,
    method: str,
    names: dict[str, str | None],
    *,
    random_slope: bool,
    covariates: Sequence[str],
    baseline_visit: str,
) -> dict[str, object]:
    """The model record: formula, words, variance components, optimizer path."""
    q = 2 if random_slope else 1
    g_hat, sigma2 = _unpack(reml.psi, q)
    subject = r_name(str(names["subject"]))
    re_term = (
        f"(1 + {r_name(str(names['week']))}/12 | {subject})" if random_slope else f"(1 | {subject})"
    )
    effects = (
        "correlated random intercept and slope on week/12" if random_slope else ("random intercept")
    )
    components = {"subject_intercept": float(g_hat[0, 0]), "residual": sigma2}
    if random_slope:
        components["subject_slope"] = float(g_hat[1, 1])
        components["intercept_slope_cov"] = float(g_hat[1, 0])
    return {
        "formula": f"{mean.formula} + {re_term}",
        "description": (
            f"Linear mixed model fitted by REML to all visits including baseline, with a "
            f"{effects} per subject; the treatment effect at a visit is the arm-by-visit "
            "interaction (difference between arms in mean change from baseline), with "
            + _LMM_DF_WORDS[method]
        ),
        "mean_model": {
            "covariates_by_visit": list(mean.spec.covariates_by_visit),
            "lsmeans_weights": mean.spec.lsmeans_weights,
            "not_applicable": "response and baseline (the LMM models the value at every "
            "visit, baseline included)",
        },
        "n_subjects": int(frame[SUBJECT].nunique()),
        "n_observations": len(frame),
        "loglik": -0.5 * reml.state.deviance,
        "optimizer": f"{reml.optimizer} + {reml.polish_steps} Newton step(s) on the exact REML "
        "gradient",
        "iterations": reml.polish_steps,
        "optimizer_steps": reml.steps,
        "df_method": method,
        "random_slope": random_slope,
        "variance_components": components,
        "reml_gradient_max_abs": float(np.max(np.abs(reml.gradient))),
        "coefficients": dict(zip(mean.names, map(float, reml.state.beta), strict=True)),
        "reference_grid": mean.reference_grid,
        "baseline_visit": baseline_visit,
        "visits": list(mean.visits),
        "covariates": list(covariates),
    }


def z_visit_matrix(frame: pd.DataFrame, visits: list[str], random_slope: bool) -> np.ndarray:
    """Random-effects design per visit: intercept (and week / 12 for a random slope)."""
    if not random_slope:
        return np.ones((len(visits), 1))
    week_of_visit = frame.groupby(VISIT, observed=True)[WEEK].median().reindex(visits)
    return np.column_stack([np.ones(len(visits)), week_of_visit.to_numpy() / SLOPE_TIME_SCALE])


def _kenward_roger(
    frame: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    visits: list[str],
    z_visit: np.ndarray,
    psi: np.ndarray,
) -> Ingredients | None:
    """Kenward-Roger ingredients of the LMM as R pbkrtest computes them.

    The LMM's marginal covariance over visits is Z G Z' + sigma^2 I, linear in the elements of
    G and sigma^2 (pbkrtest's parameters), so the MMRM's pattern machinery gives P_i and Q_ij;
    W is the inverse expected information, as in pbkrtest. None if the random-effects design
    is not a function of the visit (weeks differ within a visit).
    """
    if z_visit.shape[1] > 1:
        spread = frame.groupby(VISIT, observed=True)[WEEK].agg(lambda w: float(np.ptp(w)))
        if float(spread.max()) > 0:
            return None
    from trialflow.stats.mmrm import _RemlProblem

    q = z_visit.shape[1]
    g, sigma2 = _unpack(psi, q)
    rows, cols = np.tril_indices(q)
    basis = []
    for a, b in zip(rows, cols, strict=True):
        outer = np.outer(z_visit[:, a], z_visit[:, b])
        basis.append(outer + outer.T if a != b else outer)
    basis.append(np.eye(len(visits)))
    d_sigma = np.array(basis)
    sigma = z_visit @ g @ z_visit.T + sigma2 * np.eye(len(visits))
    subjects, subject_code = np.unique(frame[SUBJECT].to_numpy(), return_inverse=True)
    visit_code = frame[VISIT].cat.codes.to_numpy(dtype=np.int64)
    problem = _RemlProblem(x, y, subject_code, visit_code, len(subjects), len(visits))
    evaluation = problem.evaluate(sigma, gradient=False)
    if evaluation is None:
        return None
    r = d_sigma.shape[0]
    big_p, big_q, big_r, expected = problem.information_derivatives(
        evaluation, d_sigma, np.zeros((r, r, len(visits), len(visits)))
    )
    w_expected = np.linalg.inv(expected)
    return Ingredients(
        beta=evaluation.beta,
        phi=evaluation.a_inv,
        p=big_p,
        q=big_q,
        r=big_r,
        w_observed=w_expected,
        w_kr=w_expected,
        residual_df=float(len(y) - x.shape[1]),
    )


def _table(
    contrasts: np.ndarray, beta: np.ndarray, phi: np.ndarray, df: np.ndarray, alpha: float
) -> pd.DataFrame:
    """Estimate, SE, df, CI and two-sided p for each row of ``contrasts``."""
    est = contrasts @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", contrasts, phi, contrasts))
    crit = np.where(np.isinf(df), stats.norm.ppf(1 - alpha / 2), stats.t.ppf(1 - alpha / 2, df))
    tval = est / se
    pval = np.where(np.isinf(df), 2 * stats.norm.sf(np.abs(tval)), 2 * stats.t.sf(np.abs(tval), df))
    return pd.DataFrame(
        {
            "estimate": est,
            "std_error": se,
            "df": df,
            "ci_lower": est - crit * se,
            "ci_upper": est + crit * se,
            "p_value": pval,
        }
    )
