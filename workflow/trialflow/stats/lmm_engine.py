"""REML engine of the linear mixed model: the criterion, its exact derivatives and its optimum.

A subject's responses have the marginal covariance ``V_i = Z_i G Z_i' + sigma^2 I``: a random
intercept (``Z_i`` a column of ones: compound symmetry with a common covariance ``G >= 0``), or
a correlated random intercept and slope (``G`` 2 x 2, positive semi-definite). The REML
deviance (-2 REML log-likelihood, on lme4's scale), its exact gradient and Hessian, and the
derivatives of the covariance of the fixed effects are computed in closed form with numpy.

Subjects are stacked in batches of equal size. When the subjects of a batch share one
random-effects block (always so for a random intercept, and for a random slope on scheduled
weeks with the same visits observed), every sum over the batch of a quadratic form follows from
the second moments of its rows, computed once: each evaluation then costs a few small matrix
operations per batch, whatever the number of subjects.

The optimum is found in lme4's parameters: ``G = sigma^2 L L'`` with ``L`` lower triangular
and its diagonal ``theta`` bounded below by zero (so a zero variance, or a correlation of +-1,
is reached exactly), and ``log sigma^2``. L-BFGS-B gets close; Newton steps on the exact
gradient and Hessian then finish the optimum to full precision, and the Hessian in these
parameters is what lmerTest's Satterthwaite degrees of freedom use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

__all__ = [
    "Blocks",
    "Lme4Parameters",
    "RemlFit",
    "RemlState",
    "fit_reml",
    "pack",
    "reml_derivatives",
    "reml_gradient",
    "reml_state",
    "unpack",
]

# lme4's isSingular(): a diagonal element of theta below this is a boundary (singular) fit.
SINGULAR_TOLERANCE = 1e-4
# Newton steps stop when the Newton decrement g' H^-1 g (deviance units) falls below the first;
# the optimum counts as converged when it is below the second with a positive-definite Hessian.
_DECREMENT_STOP = 1e-12
_DECREMENT_CONVERGED = 1e-6
_MAX_NEWTON_STEPS = 50


@dataclass(frozen=True)
class _Batch:
    """Subjects with the same number of observations ``m``, stacked along the first axis.

    When the subjects also share one random-effects block, ``z`` is that single (m, q) block:
    their marginal covariance V is then one (m, m) matrix, and every sum over the batch of a
    quadratic form ``[X_i y_i]' A [X_i y_i]`` follows from the second moments of the rows,
    computed once, in O(m^2 p^2) work whatever the number of subjects.
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
        patterns, which = _distinct_rows(zb.reshape(len(rows), -1))
        if len(patterns) == 1 or 8 * len(patterns) <= len(rows):
            for j, pattern in enumerate(patterns):
                sel = rows[which == j]
                batches.append(_Batch.build(xy[sel], pattern.reshape(m, -1)))
        else:
            batches.append(_Batch.build(xy[rows], zb))
    return batches


def _distinct_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``a`` in lexicographic order, and the index of each row among them.

    What ``np.unique(a, axis=0, return_inverse=True)`` returns, by one lexsort of the columns
    (several times faster on many rows).
    """
    order = np.lexsort(a.T[::-1])
    ordered = a[order]
    starts = np.r_[True, np.any(ordered[1:] != ordered[:-1], axis=1)]
    which = np.empty(len(a), dtype=np.int64)
    which[order] = np.cumsum(starts) - 1
    return ordered[starts], which


class Blocks:
    """Per-subject responses and design blocks, held as batches of equal-sized subjects.

    Stacking subjects turns every per-subject matrix operation of the REML computations into
    one vectorised numpy call per batch, so the Python-level work grows with the number of
    batches rather than the number of subjects. The response is stored minus its OLS fit:
    the REML criterion and the GLS residuals are unchanged by subtracting any ``X b`` (the
    fixed effects absorb it), and centring keeps quadratic forms in the residuals, formed
    from sums over subjects, free of cancellation when the response is far from zero.
    """

    def __init__(self, batches: list[_Batch], offset: np.ndarray) -> None:
        self.batches = batches
        self.offset = offset

    @classmethod
    def from_rows(cls, y: np.ndarray, x: np.ndarray, z: np.ndarray, groups: np.ndarray) -> Blocks:
        """Build the blocks from row arrays whose rows are sorted by the ``groups`` labels."""
        bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
        # Any X b centres the response; normal equations are precise enough for that and
        # cost a fraction of a least-squares solve on all rows.
        offset = np.linalg.lstsq(x.T @ x, x.T @ y, rcond=None)[0]
        xy = np.column_stack([x, y - x @ offset])
        return cls(_stack_by_size(xy, z, np.diff(bounds)), offset)

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
class RemlState:
    """REML quantities at one value of the variance parameters."""

    deviance: float
    beta: np.ndarray
    phi: np.ndarray
    w: list[np.ndarray]  # V^-1 per batch: (m, m) if shared, else (k, m, m)
    resid: np.ndarray  # c with GLS residuals r_i = [X_i y_i] c (centred response)


# Gradient and Hessian of the deviance, and d Phi / d parameter, in one parametrisation.
_Derivatives = tuple[np.ndarray, np.ndarray, np.ndarray]


def _n_vparams(q: int) -> int:
    return q * (q + 1) // 2 + 1


def unpack(psi: np.ndarray, q: int) -> tuple[np.ndarray, float]:
    """Variance parameters psi (lower triangle of G, then sigma^2) -> (G, sigma^2)."""
    g = np.zeros((q, q))
    rows, cols = np.tril_indices(q)
    g[rows, cols] = psi[:-1]
    g[cols, rows] = psi[:-1]
    return g, float(psi[-1])


def pack(g: np.ndarray, sigma2: float) -> np.ndarray:
    """(G, sigma^2) -> psi, the inverse of :func:`unpack`."""
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


def reml_state(blocks: Blocks, psi: np.ndarray) -> RemlState:
    """REML deviance (-2 log-likelihood on lme4's scale), GLS estimates and helpers.

    Raises numpy's LinAlgError where V or X' V^-1 X is not positive definite.
    """
    g, sigma2 = unpack(psi, blocks.n_random)
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
    return RemlState(deviance=deviance, beta=beta + blocks.offset, phi=phi, w=ws, resid=resid)


def reml_gradient(blocks: Blocks, state: RemlState) -> np.ndarray:
    """Exact gradient of the REML deviance in psi, d(dev)/dpsi_k = tr(P V_k) - y'P V_k P y.

    The same expansion as in :func:`reml_derivatives`, without the Hessian terms.
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


def reml_derivatives(blocks: Blocks, state: RemlState) -> _Derivatives:
    """Exact gradient and Hessian of the REML deviance in psi, and dPhi/dpsi_k = Phi S_k Phi.

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
    s = np.zeros((m, p, p))  # S_k = sum U' V_k U
    ua = np.zeros((m, p))  # sum U' V_k e
    tr_wv = np.zeros(m)
    quad_v = np.zeros(m)  # e' V_k e
    tr_wvwv = np.zeros((m, m))
    mid = np.zeros((m, m, p, p))  # sum U' V_k W V_l U
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
                mid[k, ell] += qkl[:p, :p]
                a_w_a[k, ell] += float(c @ qkl @ c)
    grad = tr_wv - np.einsum("ab,kab->k", phi, s) - quad_v
    hess = np.zeros((m, m))
    for k in range(m):
        for ell in range(k, m):
            tr_pvpv = (
                tr_wvwv[k, ell]
                - 2.0 * float(np.trace(phi @ mid[k, ell]))
                + float(np.trace(phi @ s[k] @ phi @ s[ell]))
            )
            apa = a_w_a[k, ell] - float(ua[k] @ phi @ ua[ell])
            hess[k, ell] = hess[ell, k] = -tr_pvpv + 2.0 * apa
    return grad, hess, phi @ s @ phi


@dataclass(frozen=True)
class Lme4Parameters:
    """lme4's parameters ``t = (theta, log sigma^2)`` of the variance parameters psi.

    ``G = sigma^2 L L'`` with ``theta`` the lower triangle of ``L`` (lme4's order for q <= 2)
    and its diagonal bounded below by zero. psi is a quadratic form in theta times sigma^2,
    so its first and second derivatives in t are exact and cheap.
    """

    q: int

    @property
    def n_theta(self) -> int:
        return self.q * (self.q + 1) // 2

    def _unit(self, j: int) -> np.ndarray:
        """The lower-triangular matrix with a one at the position of theta_j."""
        rows, cols = np.tril_indices(self.q)
        e = np.zeros((self.q, self.q))
        e[rows[j], cols[j]] = 1.0
        return e

    def lower(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros((self.q, self.q))
        out[np.tril_indices(self.q)] = t[:-1]
        return out

    def diagonal(self, t: np.ndarray) -> np.ndarray:
        return np.diag(self.lower(t))

    def bounds(self) -> list[tuple[float | None, float | None]]:
        rows, cols = np.tril_indices(self.q)
        theta = [(0.0, None) if a == b else (None, None) for a, b in zip(rows, cols, strict=True)]
        return [*theta, (None, None)]

    def psi(self, t: np.ndarray) -> np.ndarray:
        lower, sigma2 = self.lower(t), math.exp(t[-1])
        return pack(sigma2 * lower @ lower.T, sigma2)

    def from_psi(self, psi: np.ndarray) -> np.ndarray:
        """t of a psi with a positive-definite G (a tiny ridge keeps the Cholesky defined)."""
        g, sigma2 = unpack(psi, self.q)
        sigma2 = max(sigma2, 1e-12)
        lower = np.linalg.cholesky(g / sigma2 + 1e-10 * np.eye(self.q))
        return np.concatenate([lower[np.tril_indices(self.q)], [math.log(sigma2)]])

    def canonical(self, t: np.ndarray) -> np.ndarray:
        """The same G with a non-negative diagonal of L (negating a column of L keeps L L')."""
        lower = self.lower(t)
        lower = lower * np.where(np.diag(lower) < 0, -1.0, 1.0)[None, :]
        return np.concatenate([lower[np.tril_indices(self.q)], t[-1:]])

    def jacobian(self, t: np.ndarray) -> np.ndarray:
        """d psi / d t, shape (n_psi, n_t)."""
        lower, sigma2 = self.lower(t), math.exp(t[-1])
        columns = [
            pack(sigma2 * (e @ lower.T + lower @ e.T), 0.0)
            for e in map(self._unit, range(self.n_theta))
        ]
        columns.append(self.psi(t))  # psi is sigma^2 times a function of theta
        return np.column_stack(columns)

    def curvature(self, t: np.ndarray) -> np.ndarray:
        """d2 psi / dt dt, shape (n_psi, n_t, n_t)."""
        sigma2 = math.exp(t[-1])
        n = self.n_theta
        jac = self.jacobian(t)
        out = np.zeros((n + 1, n + 1, n + 1))
        units = [self._unit(j) for j in range(n)]
        for i in range(n):
            for j in range(n):
                out[:, i, j] = pack(sigma2 * (units[i] @ units[j].T + units[j] @ units[i].T), 0.0)
            out[:, i, n] = out[:, n, i] = jac[:, i]
        out[:, n, n] = jac[:, n]
        return out

    def derivatives(self, t: np.ndarray, in_psi: _Derivatives) -> _Derivatives:
        """Gradient, Hessian and d Phi / dt from their values in psi, by the chain rule."""
        grad, hess, dphi = in_psi
        jac = self.jacobian(t)
        hess_t = jac.T @ hess @ jac + np.einsum("k,kab->ab", grad, self.curvature(t))
        return jac.T @ grad, hess_t, np.einsum("kab,kj->jab", dphi, jac)


def start_psi(blocks: Blocks) -> np.ndarray:
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
    return pack(g, sigma2)


@dataclass
class _Point:
    """The deviance and its derivatives in lme4's parameters at one t."""

    t: np.ndarray
    state: RemlState
    derivatives: _Derivatives

    @classmethod
    def at(cls, blocks: Blocks, params: Lme4Parameters, t: np.ndarray) -> _Point:
        state = reml_state(blocks, params.psi(t))
        return cls(t, state, params.derivatives(t, reml_derivatives(blocks, state)))

    def newton_step(self) -> tuple[np.ndarray, float] | None:
        """The Newton step and decrement g' H^-1 g; None if the Hessian is not positive definite."""
        grad, hess, _ = self.derivatives
        try:
            chol = np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            return None
        half = np.linalg.solve(chol, grad)
        return np.linalg.solve(chol.T, half), float(half @ half)


@dataclass
class RemlFit:
    """The REML optimum and how it was reached; derivatives are in lme4's parameters t."""

    t: np.ndarray
    psi: np.ndarray
    state: RemlState
    gradient: np.ndarray
    hessian: np.ndarray
    jacobian: np.ndarray  # d Phi / d t, (n_t, p, p)
    converged: bool  # a stationary point with a positive-definite Hessian
    singular: bool  # lme4's isSingular(): a diagonal element of theta at (or near) zero
    iterations: int  # L-BFGS-B iterations and Newton steps
    steps: list[dict[str, object]]


def _lbfgs(
    blocks: Blocks, params: Lme4Parameters, t0: np.ndarray
) -> tuple[np.ndarray, optimize.OptimizeResult]:
    """Minimise the REML deviance over t by L-BFGS-B with the exact gradient."""

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            state = reml_state(blocks, params.psi(t))
        except np.linalg.LinAlgError:
            return float("inf"), np.zeros_like(t)
        return state.deviance, params.jacobian(t).T @ reml_gradient(blocks, state)

    res = optimize.minimize(objective, t0, jac=True, method="L-BFGS-B", bounds=params.bounds())
    return np.asarray(res.x, dtype=float), res


def _line_search(
    blocks: Blocks, params: Lme4Parameters, point: _Point, step: np.ndarray
) -> _Point | None:
    """The first of t - step, t - step / 2, ... that does not increase the deviance."""
    # The deviance is a sum over all observations: allow for its rounding error.
    slack = 1e-13 * max(1.0, abs(point.state.deviance))
    scale = 1.0
    while scale > 1e-4:
        t = params.canonical(point.t - scale * step)
        try:
            candidate = _Point.at(blocks, params, t)
        except np.linalg.LinAlgError:
            candidate = None
        if candidate is not None and candidate.state.deviance <= point.state.deviance + slack:
            return candidate
        scale /= 2.0
    return None


def _newton(blocks: Blocks, params: Lme4Parameters, t: np.ndarray) -> tuple[_Point, bool, int]:
    """Newton steps on the exact gradient and Hessian in t from a nearby optimum.

    A diagonal element of theta at zero stays there: the deviance is even in it, so its
    gradient and its cross-derivatives vanish. Returns the last point, whether it is a
    converged minimum, and the number of steps taken.
    """
    point = _Point.at(blocks, params, params.canonical(t))
    steps = 0
    newton = point.newton_step()
    while newton is not None and newton[1] > _DECREMENT_STOP and steps < _MAX_NEWTON_STEPS:
        nxt = _line_search(blocks, params, point, newton[0])
        if nxt is None:
            break
        point, steps = nxt, steps + 1
        newton = point.newton_step()
    converged = newton is not None and newton[1] < _DECREMENT_CONVERGED
    return point, converged, steps


def fit_reml(blocks: Blocks) -> RemlFit:
    """The REML optimum: L-BFGS-B in lme4's parameters from moment estimates, then Newton.

    Raises numpy's LinAlgError when the criterion cannot be evaluated at the starting values.
    """
    params = Lme4Parameters(blocks.n_random)
    start = params.from_psi(start_psi(blocks))
    # The optimizer reads a failed evaluation as +inf; at the start that is an error instead.
    reml_state(blocks, params.psi(start))
    t, lbfgs = _lbfgs(blocks, params, start)
    point, converged, newton_steps = _newton(blocks, params, t)
    steps: list[dict[str, object]] = [
        {"step": "L-BFGS-B", "iterations": int(lbfgs.nit), "converged": bool(lbfgs.success)},
        {"step": "Newton", "iterations": newton_steps, "converged": converged},
    ]
    grad, hess, jac = point.derivatives
    return RemlFit(
        t=point.t,
        psi=params.psi(point.t),
        state=point.state,
        gradient=grad,
        hessian=hess,
        jacobian=jac,
        converged=converged,
        singular=bool(np.any(params.diagonal(point.t) < SINGULAR_TOLERANCE)),
        iterations=int(lbfgs.nit) + newton_steps,
        steps=steps,
    )
