"""Per-visit ANCOVA of change from baseline.

At every post-baseline visit an ordinary least-squares model
``change ~ baseline + covariates + arm`` is fitted to the subjects observed at baseline and at
that visit. The treatment effect is the arm coefficient with ``n - p`` residual degrees of
freedom; LS means per arm are evaluated at the mean baseline and covariates of that visit's
subjects (factor levels weighted equally), as R's ``emmeans`` does. Visits are analysed
independently, so a subject missing one visit still contributes to the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    check_full_rank,
    covariate_block,
    prepare_long,
    r_name,
)
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult


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


def fit_ancova(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    baseline: str,
    covariates: Sequence[str] = (),
    reference_arm: str,
    visit_order: Sequence[str] | None = None,
    alpha: float = 0.05,
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
        Column name of the subject's baseline value.
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

    Returns
    -------
    ModelResult
        ``analysis="ancova"``; one effect row per visit with residual degrees of freedom,
        LS means per visit and arm, ``covariance=None``, and ``info`` with the per-visit
        residual variance and log-likelihood (ML, as R's ``logLik`` of an ``lm``).

    Raises
    ------
    ModelError
        On invalid input or when the design at a visit is rank deficient or has no residual
        degrees of freedom.
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
    used = prep.frame.loc[prep.frame[RESPONSE].notna() & prep.frame[BASELINE].notna()]
    effect_rows: list[dict[str, object]] = []
    ls_rows: list[dict[str, object]] = []
    per_visit: dict[str, dict[str, float]] = {}
    for v in prep.visits:
        rows = used.loc[used[VISIT] == v]
        if rows.empty:
            notes.append(f"visit {v!r} has no subject with an observed response; not analysed")
            continue
        n_arm = rows.groupby(ARM)[SUBJECT].nunique()
        if any(int(n_arm.get(a, 0)) == 0 for a in (prep.control, prep.treatment)):
            notes.append(f"visit {v!r} has observed responses in one arm only; not analysed")
            continue
        cov = covariate_block(rows, prep.covariates)
        trt = (rows[ARM].to_numpy() == prep.treatment).astype(float)
        base = rows[BASELINE].to_numpy(dtype=float)
        x = np.column_stack([np.ones(len(rows)), base, cov.matrix, trt])
        labels = ["(Intercept)", baseline, *cov.labels, f"arm{prep.treatment}"]
        what = f"ANCOVA at visit {v!r}"
        check_full_rank(x, labels, what)
        if x.shape[0] == x.shape[1]:
            raise ModelError(
                f"{what}: no residual degrees of freedom ({x.shape[0]} subjects for "
                f"{x.shape[1]} coefficients)",
                fix="use fewer covariates",
            )
        y = rows[RESPONSE].to_numpy(dtype=float)
        beta, vcov, sigma2, df, loglik = _ols(x, y)
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        est = float(beta[-1])
        se = math.sqrt(float(vcov[-1, -1]))
        effect_rows.append(
            {
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
        )
        grid = np.concatenate([[1.0, base.mean()], cov.grid])
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
        per_visit[v] = {"residual_variance": sigma2, "loglik": loglik, "n": float(len(rows))}
    if not effect_rows:
        raise ModelError(
            "no visit has observed responses in both arms",
            column=response,
            fix="check the response and baseline columns",
        )
    cov_terms = "".join(f" + {r_name(c)}" for c in covariates)
    info = {
        "formula": f"{r_name(response)} ~ {r_name(baseline)}{cov_terms} + {r_name(arm)}",
        "description": (
            "ANCOVA fitted by ordinary least squares separately at each visit on subjects "
            "observed at baseline and at that visit; the treatment effect is the arm "
            "coefficient with residual degrees of freedom."
        ),
        "n_subjects": int(used.loc[used[VISIT].isin(per_visit), SUBJECT].nunique()),
        "n_observations": int(sum(int(d["n"]) for d in per_visit.values())),
        "loglik": {v: d["loglik"] for v, d in per_visit.items()},
        "optimizer": "QR least squares",
        "iterations": 0,
        "df_method": "residual",
        "residual_variance": {v: d["residual_variance"] for v, d in per_visit.items()},
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
