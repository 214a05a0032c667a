"""Per-visit ANCOVA of change from baseline.

At every post-baseline visit an ordinary least-squares model
``change ~ baseline + covariates + arm`` is fitted to the subjects observed at baseline and at
that visit. The treatment effect is the arm coefficient with ``n - p`` residual degrees of
freedom; LS means per arm are evaluated at the mean baseline and covariates of that visit's
subjects (factor levels weighted equally), as R's ``emmeans`` does. Visits are analysed
independently, so a subject missing one visit still contributes to the others, and a visit that
cannot be fitted (too few subjects, one arm only, a constant response, a singular design) is
reported as not fitted without taking the other visits with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.design import (
    ARM,
    BASELINE,
    RESPONSE,
    SUBJECT,
    VISIT,
    PreparedData,
    check_full_rank,
    covariate_block,
    prepare_long,
    r_name,
)
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult


@dataclass(frozen=True)
class _VisitFit:
    """Effect and LS-mean rows of one visit, with the numbers kept for ``info``."""

    effect: dict[str, object]
    lsmeans: list[dict[str, object]]
    n: int
    residual_variance: float
    loglik: float


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int, float]:
    """Coefficients, their covariance, residual variance, residual df and ML log-likelihood."""
    q, r = np.linalg.qr(x)
    beta = np.linalg.solve(r, q.T @ y)
    resid = y - x @ beta
    n, p = x.shape
    df = n - p
    rss = float(resid @ resid)
    sigma2 = rss / df
    r_inv = np.linalg.inv(r)
    vcov = sigma2 * (r_inv @ r_inv.T)
    # Same value as R's logLik() of an lm fit (maximum likelihood, variance rss / n).
    loglik = -0.5 * n * (math.log(2.0 * math.pi * rss / n) + 1.0)
    return beta, vcov, sigma2, df, loglik


def _fit_visit(
    rows: pd.DataFrame,
    v: str,
    prep: PreparedData,
    *,
    response: str,
    baseline: str | None,
    alpha: float,
    weights: str,
) -> _VisitFit:
    """OLS ANCOVA on the rows of one visit.

    Parameters
    ----------
    rows
        Prepared rows of visit ``v`` with an observed response and baseline.
    v
        Visit label, used in the messages and the output rows.
    prep
        The prepared data (arms, covariates, contrast label).
    response, baseline
        The caller's column names, used in the messages and coefficient labels.
    alpha
        Two-sided significance level of the confidence intervals.

    Returns
    -------
    _VisitFit
        The effect row, the two LS-mean rows, residual variance and log-likelihood.

    Raises
    ------
    ModelError
        When the visit cannot be fitted; the message says why and names the visit.
    """
    if rows.empty:
        raise ModelError(f"no subject with an observed {response} and baseline at {v}")
    n_arm = rows.groupby(ARM)[SUBJECT].nunique()
    missing = [a for a in (prep.control, prep.treatment) if int(n_arm.get(a, 0)) == 0]
    if missing:
        raise ModelError(
            f"{response} at {v} is observed in arm {_other(prep, missing[0])!r} only; "
            "the arms cannot be compared"
        )
    y = rows[RESPONSE].to_numpy(dtype=float)
    # A constant response leaves nothing to explain: the residual variance is zero and every
    # standard error would be 0 / 0.
    if np.ptp(y) == 0:
        raise ModelError(f"no variability in {response} at {v}")
    cov = covariate_block(rows, prep.covariates, weights)
    trt = (rows[ARM].to_numpy() == prep.treatment).astype(float)
    if baseline is not None:
        base = rows[BASELINE].to_numpy(dtype=float)
        x = np.column_stack([np.ones(len(rows)), base, cov.matrix, trt])
        labels = ["(Intercept)", baseline, *cov.labels, f"arm{prep.treatment}"]
        head = np.array([1.0, base.mean()])
    else:
        x = np.column_stack([np.ones(len(rows)), cov.matrix, trt])
        labels = ["(Intercept)", *cov.labels, f"arm{prep.treatment}"]
        head = np.array([1.0])
    what = f"ANCOVA at {v}"
    check_full_rank(x, labels, what)
    if x.shape[0] == x.shape[1]:
        raise ModelError(
            f"{what}: no residual degrees of freedom ({x.shape[0]} subjects for "
            f"{x.shape[1]} coefficients)"
        )
    try:
        beta, vcov, sigma2, df, loglik = _ols(x, y)
    except np.linalg.LinAlgError as exc:
        # check_full_rank should have caught a singular design; this is the numerical backstop.
        raise ModelError(f"{what}: the design matrix is numerically singular ({exc})") from None
    tss = float(((y - y.mean()) ** 2).sum())
    # An exact fit (residual sum of squares at rounding level) has no error variance to
    # estimate, so standard errors and p-values would be meaningless.
    if not sigma2 * df > 1e-12 * tss:
        raise ModelError(f"{what}: the model fits {response} exactly; no residual variability")
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    est = float(beta[-1])
    se = math.sqrt(float(vcov[-1, -1]))
    effect: dict[str, object] = {
        "contrast": prep.contrast,
        "visit": v,
        "estimate": est,
        "std_error": se,
        "df": float(df),
        "ci_lower": est - crit * se,
        "ci_upper": est + crit * se,
        "p_value": float(2 * stats.t.sf(abs(est / se), df)),
        "n": len(rows),
    }
    grid = np.concatenate([head, cov.grid])
    ls_rows: list[dict[str, object]] = []
    for a in (prep.control, prep.treatment):
        ell = np.concatenate([grid, [1.0 if a == prep.treatment else 0.0]])
        m = float(ell @ beta)
        s = math.sqrt(float(ell @ vcov @ ell))
        ls_rows.append(
            {
                "visit": v,
                "arm": a,
                "estimate": m,
                "std_error": s,
                "df": float(df),
                "ci_lower": m - crit * s,
                "ci_upper": m + crit * s,
                "n": int(n_arm.get(a, 0)),
            }
        )
    return _VisitFit(
        effect=effect, lsmeans=ls_rows, n=len(rows), residual_variance=sigma2, loglik=loglik
    )


def _other(prep: PreparedData, arm: str) -> str:
    """The arm of the two that is not ``arm``."""
    return prep.treatment if arm == prep.control else prep.control


def _not_fitted_rows(
    rows: pd.DataFrame, v: str, prep: PreparedData
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Effect and LS-mean rows of a visit that could not be fitted: NaN numbers, observed n."""
    n_arm = rows.groupby(ARM)[SUBJECT].nunique()
    blank = dict.fromkeys(("estimate", "std_error", "df", "ci_lower", "ci_upper"), math.nan)
    effect: dict[str, object] = {
        "contrast": prep.contrast,
        "visit": v,
        **blank,
        "p_value": math.nan,
        "n": len(rows),
    }
    ls_rows: list[dict[str, object]] = [
        {"visit": v, "arm": a, **blank, "n": int(n_arm.get(a, 0))}
        for a in (prep.control, prep.treatment)
    ]
    return effect, ls_rows


def fit_ancova(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str | None,
    covariates: Sequence[str] = (),
    reference_arm: str,
    visit_order: Sequence[str] | None = None,
    alpha: float = 0.05,
    lsmeans_weights: str = "equal",
) -> ModelResult:
    """Fit ``response ~ baseline + covariates + arm`` by OLS separately at each visit.

    Parameters
    ----------
    data
        Long data of one outcome, post-baseline rows (one per subject x visit).
    response
        Column name of the change from baseline (or any response to adjust for baseline).
    subject, visit, arm
        Column names of the subject identifier, visit label and arm.
    baseline
        Column name of the subject's baseline value, or None for no baseline term.
    covariates
        Covariate column names (numeric, or categorical coded with treatment contrasts,
        first sorted level as reference; levels absent at a visit are dropped there).
    reference_arm
        Label of the control arm.
    visit_order
        Visit labels in order; None takes the categories of an ordered categorical visit
        column, else sorted numeric visits, else the order of first appearance.
    alpha
        Two-sided significance level of the confidence intervals.
    lsmeans_weights
        ``"equal"`` or ``"proportional"`` weights of factor levels in LS means.

    Returns
    -------
    ModelResult
        ``analysis="ancova"``; one effect row per visit (every visit of ``visit_order``)
        with residual degrees of freedom, LS means per visit and arm, ``covariance=None``,
        and ``info`` with the per-visit residual variance and log-likelihood (ML, as R's
        ``logLik`` of an ``lm``). A visit that cannot be fitted (no subjects, one arm only,
        no variability in the response, a rank-deficient design or no residual degrees of
        freedom) keeps its rows with NaN numbers and ``n`` = subjects observed there; the
        reason is listed in ``warnings`` (prefixed with the visit label) and in
        ``info["not_fitted"]`` as ``{visit: reason}``.

    Raises
    ------
    ModelError
        On invalid input, or when no visit can be fitted (the message gives each visit's
        reason).
    """
    prep = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        reference_arm=reference_arm,
        covariates=covariates,
        baseline=baseline,
        visit_order=visit_order,
    )
    notes = list(prep.warnings)
    observed = prep.frame[RESPONSE].notna()
    if baseline is not None:
        observed &= prep.frame[BASELINE].notna()
    used = prep.frame.loc[observed]
    # prepare_long drops requested visits without any row; they still get a (NaN) row here,
    # so that the table always has one row per visit of the analysis plan.
    visits = [str(v) for v in visit_order] if visit_order is not None else list(prep.visits)
    labels = used[VISIT].astype(str)
    effect_rows: list[dict[str, object]] = []
    ls_rows: list[dict[str, object]] = []
    per_visit: dict[str, _VisitFit] = {}
    not_fitted: dict[str, str] = {}
    for v in visits:
        rows = used.loc[(labels == v).to_numpy()]
        try:
            fit = _fit_visit(
                rows,
                v,
                prep,
                response=response,
                baseline=baseline,
                alpha=alpha,
                weights=lsmeans_weights,
            )
        except ModelError as exc:
            not_fitted[v] = exc.message
            notes.append(f"{v}: not fitted: {exc.message}")
            effect, ls = _not_fitted_rows(rows, v, prep)
            effect_rows.append(effect)
            ls_rows.extend(ls)
            continue
        per_visit[v] = fit
        effect_rows.append(fit.effect)
        ls_rows.extend(fit.lsmeans)
    if not per_visit:
        reasons = "; ".join(f"{v}: {why}" for v, why in not_fitted.items())
        raise ModelError(
            f"the ANCOVA could not be fitted at any visit ({reasons})",
            column=response,
            fix="check the response, baseline and covariate columns at each visit",
        )
    cov_terms = "".join(f" + {r_name(c)}" for c in covariates)
    info = {
        "formula": f"{r_name(response)} ~ "
        + (f"{r_name(baseline)}" if baseline is not None else "1")
        + f"{cov_terms} + {r_name(arm)}",
        "description": (
            "ANCOVA fitted by ordinary least squares separately at each visit on subjects "
            "observed at baseline and at that visit; the treatment effect is the arm "
            "coefficient with residual degrees of freedom."
        ),
        "n_subjects": int(used.loc[labels.isin(list(per_visit)).to_numpy(), SUBJECT].nunique()),
        "n_observations": sum(f.n for f in per_visit.values()),
        "loglik": {v: f.loglik for v, f in per_visit.items()},
        "optimizer": "QR least squares",
        "iterations": 0,
        "df_method": "residual",
        "residual_variance": {v: f.residual_variance for v, f in per_visit.items()},
        "not_fitted": not_fitted,
    }
    return ModelResult(
        analysis="ancova",
        effects=pd.DataFrame(effect_rows, columns=list(EFFECT_COLUMNS)),
        lsmeans=pd.DataFrame(ls_rows, columns=list(LSMEAN_COLUMNS)),
        covariance=None,
        converged=True,
        warnings=tuple(notes),
        info=info,
    )
