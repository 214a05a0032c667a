"""Linear mixed model with a random intercept (optionally a random slope) per subject.

The model is ``response ~ covariates + arm * visit + (1 | subject)`` fitted by REML to every
visit including baseline, so the arm-by-visit interaction at a visit is the difference between
arms in mean change from baseline. statsmodels' ``MixedLM`` finds the REML optimum; the REML
criterion, its exact gradient and Hessian, and the covariance of the fixed effects as a function
of the variance parameters are then computed in closed form with numpy. They serve two purposes:
a few Newton steps polish the optimum to the precision R's ``lme4`` reaches, and they give
Satterthwaite degrees of freedom for every contrast exactly as ``lmerTest`` defines them
(``df = 2 (l' Phi l)^2 / (g' A g)``, ``A`` = twice the inverse Hessian of the REML deviance).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.regression.mixed_linear_model import MixedLM

from trialflow.errors import ModelError
from trialflow.stats.design import (
    ARM,
    RESPONSE,
    SUBJECT,
    VISIT,
    WEEK,
    PreparedData,
    check_full_rank,
    covariate_block,
    observed_rows,
    prepare_long,
    r_name,
)
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult

# Weeks are divided by this before entering the random slope: raw weeks make the slope
# variance tiny relative to the intercept variance and the optimizer fails to converge.
SLOPE_TIME_SCALE = 12.0


@dataclass
class _Blocks:
    """Per-subject response vectors and design blocks."""

    y: list[np.ndarray]
    x: list[np.ndarray]
    z: list[np.ndarray]

    @property
    def n_obs(self) -> int:
        return int(sum(len(v) for v in self.y))

    @property
    def n_fixed(self) -> int:
        return int(self.x[0].shape[1])


@dataclass
class _RemlState:
    """REML quantities at one value of the variance parameters."""

    deviance: float
    beta: np.ndarray
    phi: np.ndarray
    w: list[np.ndarray]
    e: list[np.ndarray]
    u: list[np.ndarray]


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


def _dv_blocks(z: np.ndarray, q: int) -> list[np.ndarray]:
    """Derivatives of one subject's V = Z G Z' + s2 I with respect to each variance parameter."""
    out = []
    for a, b in zip(*np.tril_indices(q), strict=True):
        out.append(np.outer(z[:, a], z[:, b]) + (np.outer(z[:, b], z[:, a]) if a != b else 0.0))
    out.append(np.eye(z.shape[0]))
    return out


def _reml_state(blocks: _Blocks, psi: np.ndarray) -> _RemlState:
    """REML deviance (-2 log-likelihood on lme4's scale), GLS estimates and helpers."""
    q = blocks.z[0].shape[1]
    g, sigma2 = _unpack(psi, q)
    p = blocks.n_fixed
    xtwx = np.zeros((p, p))
    xtwy = np.zeros(p)
    logdet_v = 0.0
    ws: list[np.ndarray] = []
    for y, x, z in zip(blocks.y, blocks.x, blocks.z, strict=True):
        v = z @ g @ z.T + sigma2 * np.eye(len(y))
        chol = np.linalg.cholesky(v)
        logdet_v += 2.0 * float(np.log(np.diag(chol)).sum())
        w = np.linalg.inv(v)
        ws.append(w)
        wx = w @ x
        xtwx += x.T @ wx
        xtwy += wx.T @ y
    chol_x = np.linalg.cholesky(xtwx)
    phi = np.linalg.inv(xtwx)
    beta = phi @ xtwy
    es: list[np.ndarray] = []
    us: list[np.ndarray] = []
    quad = 0.0
    for y, x, w in zip(blocks.y, blocks.x, ws, strict=True):
        r = y - x @ beta
        e = w @ r
        quad += float(r @ e)
        es.append(e)
        us.append(w @ x)
    deviance = (
        logdet_v
        + 2.0 * float(np.log(np.diag(chol_x)).sum())
        + quad
        + (blocks.n_obs - p) * math.log(2.0 * math.pi)
    )
    return _RemlState(deviance=deviance, beta=beta, phi=phi, w=ws, e=es, u=us)


def _reml_derivatives(
    blocks: _Blocks, state: _RemlState
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Exact gradient and Hessian of the REML deviance, and dPhi/dpsi_k = Phi S_k Phi.

    With P = V^-1 - V^-1 X Phi X' V^-1 and V_k = dV/dpsi_k (V is linear in psi):
    d(dev)/dpsi_k = tr(P V_k) - y'P V_k P y and
    d2(dev)/dpsi_k dpsi_l = -tr(P V_k P V_l) + 2 y'P V_k P V_l P y.
    Traces are expanded block by block so no N x N matrix is ever formed.
    """
    q = blocks.z[0].shape[1]
    m = _n_vparams(q)
    p = blocks.n_fixed
    phi = state.phi
    s = [np.zeros((p, p)) for _ in range(m)]  # S_k = sum U' V_k U
    ua = [np.zeros(p) for _ in range(m)]  # sum U' V_k e
    tr_wv = np.zeros(m)
    quad_v = np.zeros(m)  # e' V_k e
    tr_wvwv = np.zeros((m, m))
    mid = [[np.zeros((p, p)) for _ in range(m)] for _ in range(m)]  # sum U' V_k W V_l U
    a_w_a = np.zeros((m, m))  # sum (V_k e)' W (V_l e)
    for z, w, e, u in zip(blocks.z, state.w, state.e, state.u, strict=True):
        dv = _dv_blocks(z, q)
        wv = [w @ d for d in dv]
        a = [d @ e for d in dv]
        vu = [d @ u for d in dv]
        for k in range(m):
            s[k] += u.T @ vu[k]
            ua[k] += u.T @ a[k]
            tr_wv[k] += float(np.trace(wv[k]))
            quad_v[k] += float(e @ a[k])
            for ell in range(k, m):
                tr_wvwv[k, ell] += float(np.sum(wv[k] * wv[ell].T))
                mid[k][ell] += vu[k].T @ w @ vu[ell]
                a_w_a[k, ell] += float(a[k] @ w @ a[ell])
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


def _polish(blocks: _Blocks, psi: np.ndarray, max_iter: int = 25) -> tuple[np.ndarray, int, float]:
    """Newton steps on the REML deviance from a nearby optimum; returns psi, steps, |grad|."""
    q = blocks.z[0].shape[1]
    state = _reml_state(blocks, psi)
    grad, hess, _ = _reml_derivatives(blocks, state)
    steps = 0
    for _ in range(max_iter):
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
        grad, hess, _ = _reml_derivatives(blocks, state)
        if float(np.max(np.abs(grad))) < 1e-10:
            break
    return psi, steps, float(np.max(np.abs(grad)))


def _optimize_reml(blocks: _Blocks, psi0: np.ndarray) -> tuple[np.ndarray, bool]:
    """Minimise the closed-form REML deviance directly (fallback when MixedLM fails).

    Parameterised like lme4: G = L L' with a lower-triangular L whose diagonal is bounded
    below by zero, so a boundary optimum (a zero variance) is reachable exactly.
    """
    q = blocks.z[0].shape[1]
    rows, cols = np.tril_indices(q)
    g0, s0 = _unpack(psi0, q)
    try:
        l0 = np.linalg.cholesky(g0 + 1e-10 * np.eye(q))
    except np.linalg.LinAlgError:
        l0 = np.eye(q) * math.sqrt(max(s0, 1e-8))
    start = np.concatenate([l0[rows, cols], [math.log(max(s0, 1e-8))]])

    def to_psi(t: np.ndarray) -> np.ndarray:
        lower = np.zeros((q, q))
        lower[rows, cols] = t[:-1]
        return _pack(lower @ lower.T, math.exp(t[-1]))

    def objective(t: np.ndarray) -> float:
        try:
            return _reml_state(blocks, to_psi(t)).deviance
        except np.linalg.LinAlgError:
            return float("inf")

    bounds = [(0.0, None) if a == b else (None, None) for a, b in zip(rows, cols, strict=True)]
    bounds.append((None, None))
    res = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    return to_psi(res.x), bool(res.success)


def _satterthwaite(
    contrasts: np.ndarray, phi: np.ndarray, jac: Sequence[np.ndarray], vcov_psi: np.ndarray
) -> np.ndarray:
    """Satterthwaite df of each row of ``contrasts`` (lmerTest's definition)."""
    out = np.empty(len(contrasts))
    for i, ell in enumerate(contrasts):
        var = float(ell @ phi @ ell)
        g = np.array([float(ell @ jk @ ell) for jk in jac])
        denom = float(g @ vcov_psi @ g)
        out[i] = 2.0 * var**2 / denom if denom > 0 else np.inf
    return out


def _design(
    prep: PreparedData, frame: pd.DataFrame, visits: list[str], baseline_visit: str
) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, int], dict[str, int], int]:
    """Fixed-effects matrix in R's column order for ``covariates + arm * visit``."""
    cov = covariate_block(frame, prep.covariates)
    n = len(frame)
    trt = (frame[ARM].to_numpy() == prep.treatment).astype(float)
    post = [v for v in visits if v != baseline_visit]
    visit_col = frame[VISIT].astype(str).to_numpy()
    vis = np.column_stack([(visit_col == v).astype(float) for v in post])
    x = np.column_stack([np.ones(n), cov.matrix, trt, vis, vis * trt[:, None]])
    labels = (
        ["(Intercept)", *cov.labels, f"arm{prep.treatment}"]
        + [f"visit{v}" for v in post]
        + [f"arm{prep.treatment}:visit{v}" for v in post]
    )
    n_cov = len(cov.labels)
    arm_col = 1 + n_cov
    visit_cols = {v: arm_col + 1 + j for j, v in enumerate(post)}
    inter_cols = {v: arm_col + 1 + len(post) + j for j, v in enumerate(post)}
    grid = np.concatenate([[1.0], cov.grid])
    return x, labels, grid, visit_cols, inter_cols, arm_col


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
    df_method: Literal["satterthwaite", "asymptotic"] = "satterthwaite",
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
        Satterthwaite degrees of freedom) or ``"asymptotic"`` (Wald z, ``df = inf``).

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
    if df_method not in ("satterthwaite", "asymptotic"):
        raise ModelError(
            f"unknown df_method {df_method!r}", fix="use 'satterthwaite' or 'asymptotic'"
        )
    if random_slope and week is None:
        raise ModelError(
            "a random slope needs the study week", fix="pass week=<name of the week column>"
        )
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
    visits = obs.visits
    if obs.dropped_visits:
        if baseline_visit in obs.dropped_visits:
            raise ModelError(
                "no response is observed at the baseline visit",
                column=response,
                fix="check the baseline rows of the response column",
            )
        notes.append(f"visit(s) {obs.dropped_visits} have no observed response and were left out")
    if len(visits) < 2:
        raise ModelError(
            "responses are observed at fewer than two visits",
            column=response,
            fix="pass the rows of the baseline and at least one post-baseline visit",
        )
    frame = obs.frame
    if random_slope and frame[WEEK].isna().any():
        raise ModelError(
            f"{int(frame[WEEK].isna().sum())} row(s) with a response have no week",
            column=week,
            fix="fill in the week of every visit",
        )

    x, labels, grid, visit_cols, inter_cols, arm_col = _design(prep, frame, visits, baseline_visit)
    check_full_rank(x, labels, "linear mixed model")
    y = frame[RESPONSE].to_numpy(dtype=float)
    if random_slope:
        z = np.column_stack([np.ones(len(frame)), frame[WEEK].to_numpy() / SLOPE_TIME_SCALE])
    else:
        z = np.ones((len(frame), 1))
    q = z.shape[1]
    groups = frame[SUBJECT].to_numpy()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLM(y, x, groups=groups, exog_re=z)
        try:
            fit = model.fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ModelError(
                f"the linear mixed model could not be fitted: {exc}",
                fix="check for visits or arms with very few observations",
            ) from exc
    notes.extend(str(w.message) for w in caught)

    # Closed-form REML on the same data, started from statsmodels' optimum.
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    blocks = _Blocks(y=[y[s] for s in slices], x=[x[s] for s in slices], z=[z[s] for s in slices])
    psi = _pack(np.asarray(fit.cov_re, dtype=float), float(fit.scale))
    optimizer = "statsmodels MixedLM (REML)"
    optimizer_ok = bool(fit.converged)
    if not optimizer_ok:
        # Typically a variance at zero, which MixedLM approaches but does not reach.
        candidate, optimizer_ok = _optimize_reml(blocks, psi)
        if _reml_state(blocks, candidate).deviance < _reml_state(blocks, psi).deviance:
            psi = candidate
            optimizer = "statsmodels MixedLM failed; direct REML minimisation (L-BFGS-B)"
            notes.append("the REML optimum was found by direct minimisation of the REML criterion")
    g_hat, sigma2 = _unpack(psi, q)
    interior = bool(np.all(np.linalg.eigvalsh(g_hat) > 1e-6 * sigma2))
    polish_steps = 0
    if interior:
        psi, polish_steps, _ = _polish(blocks, psi)
        g_hat, sigma2 = _unpack(psi, q)
    state = _reml_state(blocks, psi)
    grad, hess, jac = _reml_derivatives(blocks, state)
    converged = optimizer_ok and interior
    if not interior:
        notes.append(
            "the random-effects variance is estimated at (or near) zero: the optimum is on the "
            "boundary of the parameter space"
        )

    vcov_psi: np.ndarray | None = None
    effective_df_method: str = df_method
    if df_method == "satterthwaite":
        try:
            np.linalg.cholesky(hess)
            vcov_psi = 2.0 * np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            effective_df_method = "residual"
            notes.append(
                "Satterthwaite degrees of freedom are unavailable (the REML Hessian is not "
                "positive definite); residual degrees of freedom n - p are used instead"
            )

    def dfs(contrasts: np.ndarray) -> np.ndarray:
        if effective_df_method == "asymptotic":
            return np.full(len(contrasts), np.inf)
        if effective_df_method == "residual":
            return np.full(len(contrasts), float(len(y) - x.shape[1]))
        if vcov_psi is None:  # unreachable: Satterthwaite always has vcov_psi
            return np.full(len(contrasts), np.nan)
        return _satterthwaite(contrasts, state.phi, jac, vcov_psi)

    p = x.shape[1]
    post = [v for v in visits if v != baseline_visit]
    observed = frame.groupby([VISIT, ARM], observed=True)[SUBJECT].nunique()

    eff_l = np.zeros((len(post), p))
    for i, v in enumerate(post):
        eff_l[i, inter_cols[v]] = 1.0
    effects = _table(eff_l, state.beta, state.phi, dfs(eff_l), alpha)
    effects.insert(0, "visit", post)
    effects.insert(0, "contrast", prep.contrast)
    per_visit = frame.groupby(VISIT, observed=True)[SUBJECT].nunique()
    effects["n"] = [int(per_visit[v]) for v in post]

    ls_rows: list[np.ndarray] = []
    ls_keys: list[tuple[str, str]] = []
    n_grid = len(grid)
    for v in visits:
        for a in (prep.control, prep.treatment):
            ell = np.zeros(p)
            ell[:n_grid] = grid
            is_trt = 1.0 if a == prep.treatment else 0.0
            ell[arm_col] = is_trt
            if v != baseline_visit:
                ell[visit_cols[v]] = 1.0
                ell[inter_cols[v]] = is_trt
            ls_rows.append(ell)
            ls_keys.append((v, a))
    ls_l = np.vstack(ls_rows)
    lsmeans = _table(ls_l, state.beta, state.phi, dfs(ls_l), alpha)
    lsmeans.insert(0, "arm", [a for _, a in ls_keys])
    lsmeans.insert(0, "visit", [v for v, _ in ls_keys])
    lsmeans["n"] = [int(observed.get((v, a), 0)) for v, a in ls_keys]
    lsmeans = lsmeans.drop(columns="p_value")

    if random_slope:
        week_of_visit = frame.groupby(VISIT, observed=True)[WEEK].median().reindex(visits)
        z_visit = np.column_stack(
            [np.ones(len(visits)), week_of_visit.to_numpy() / SLOPE_TIME_SCALE]
        )
    else:
        z_visit = np.ones((len(visits), 1))
    implied = z_visit @ g_hat @ z_visit.T + sigma2 * np.eye(len(visits))
    covariance = pd.DataFrame(implied, index=visits, columns=visits)

    cov_terms = " + ".join(r_name(c) for c in covariates)
    re_term = (
        f"(1 + {r_name(week)}/12 | {r_name(subject)})"
        if random_slope and week
        else (f"(1 | {r_name(subject)})")
    )
    rhs = f"{cov_terms + ' + ' if cov_terms else ''}{r_name(arm)} * {r_name(visit)} + {re_term}"
    variance_components = {"subject_intercept": float(g_hat[0, 0]), "residual": sigma2}
    if random_slope:
        variance_components["subject_slope"] = float(g_hat[1, 1])
        variance_components["intercept_slope_cov"] = float(g_hat[1, 0])
    info = {
        "formula": f"{r_name(response)} ~ {rhs}",
        "description": (
            "Linear mixed model fitted by REML to all visits including baseline, with a "
            + (
                "correlated random intercept and slope on week/12"
                if random_slope
                else "random intercept"
            )
            + " per subject; the treatment effect at a visit is the arm-by-visit interaction "
            "(difference between arms in mean change from baseline), with "
            + {
                "satterthwaite": "Satterthwaite degrees of freedom.",
                "asymptotic": "Wald z tests.",
                "residual": "residual degrees of freedom.",
            }[effective_df_method]
        ),
        "n_subjects": int(frame[SUBJECT].nunique()),
        "n_observations": len(frame),
        "loglik": -0.5 * state.deviance,
        "optimizer": f"{optimizer} + {polish_steps} Newton step(s) on the exact REML gradient",
        "iterations": polish_steps,
        "df_method": effective_df_method,
        "random_slope": random_slope,
        "variance_components": variance_components,
        "reml_gradient_max_abs": float(np.max(np.abs(grad))),
        "coefficients": dict(zip(labels, map(float, state.beta), strict=True)),
        "baseline_visit": baseline_visit,
        "visits": visits,
    }
    return ModelResult(
        analysis="lmm",
        effects=effects.loc[:, list(EFFECT_COLUMNS)].reset_index(drop=True),
        lsmeans=lsmeans.loc[:, list(LSMEAN_COLUMNS)].reset_index(drop=True),
        covariance=covariance,
        converged=converged,
        warnings=tuple(dict.fromkeys(notes)),
        info=info,
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
