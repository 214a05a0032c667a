"""Linear mixed model with a random intercept (optionally a random slope) per subject.

The model is ``response ~ covariates + arm * visit + (1 | subject)`` fitted by REML to every
visit including baseline, so the arm-by-visit interaction at a visit is the difference between
arms in mean change from baseline. It is fitted by trialflow's own REML engine
(:mod:`trialflow.stats.lmm_engine`) in lme4's parameters, vectorised over subjects, and its
exact Hessian gives Satterthwaite degrees of freedom for every contrast exactly as ``lmerTest``
defines them (``df = 2 (l' Phi l)^2 / (g' A g)``, ``A`` = twice the inverse Hessian of the REML
deviance in lme4's parameters); Kenward-Roger follows R ``pbkrtest``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.design import (
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
from trialflow.stats.lmm_engine import Blocks, RemlFit, fit_reml, unpack
from trialflow.stats.meanmodel import MeanModel, MeanSpec, build_mean_model
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS, ModelResult, gradient_size

# The random slope is on week / 12, as R's ``I(week / 12)`` in the reference programs: on raw
# weeks the slope variance is tiny next to the intercept variance, a badly scaled problem.
SLOPE_TIME_SCALE = 12.0


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
    z_rows = np.ones((len(frame), 1))
    if random_slope:
        z_rows = np.column_stack([z_rows, frame[WEEK].to_numpy(dtype=float) / SLOPE_TIME_SCALE])
    reml = _fit_reml(mean.x, obs, z_rows, notes)
    inference = _LmmInference.build(reml, mean, obs, z_visit, df_method, notes)
    effects, lsmeans = _lmm_tables(mean, obs, prep, reml, inference, baseline_visit, alpha)
    g_hat, sigma2 = unpack(reml.psi, z_visit.shape[1])
    implied = z_visit @ g_hat @ z_visit.T + sigma2 * np.eye(len(obs.visits))
    info = _lmm_info(
        reml,
        mean,
        obs,
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
        converged=reml.converged and not reml.singular,
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


def _fit_reml(x: np.ndarray, obs: ObservedRows, z: np.ndarray, notes: list[str]) -> RemlFit:
    """The REML optimum, with a note when it is on the boundary or not converged."""
    blocks = Blocks.from_rows(obs.y, x, z, obs.subject_code)
    try:
        reml = fit_reml(blocks)
    except np.linalg.LinAlgError as exc:
        raise ModelError(
            f"the linear mixed model could not be fitted: {exc}",
            fix="check for visits or arms with very few observations",
        ) from exc
    if reml.singular:
        notes.append(
            "the random-effects covariance is singular (a variance at zero, or a correlation "
            "of +-1 between intercept and slope): the optimum is on the boundary of the "
            "parameter space (lme4 reports a boundary (singular) fit), so the fit is not "
            "reported as converged to an interior optimum"
        )
    if not reml.converged:
        notes.append(
            f"the REML optimisation stopped after {reml.iterations} iterations without reaching "
            "a minimum (the Newton decrement did not vanish, or the Hessian is not positive "
            "definite)"
        )
    return reml


@dataclass
class _LmmInference:
    """Covariance of the fixed effects used for SEs, and the df of each contrast."""

    method: str
    covariance: np.ndarray
    ingredients: Ingredients

    @classmethod
    def build(
        cls,
        reml: RemlFit,
        mean: MeanModel,
        obs: ObservedRows,
        z_visit: np.ndarray,
        df_method: str,
        notes: list[str],
    ) -> _LmmInference:
        method = df_method
        if df_method == "kenward_roger":
            kr = _kenward_roger(obs, mean.x, z_visit, reml.psi)
            if kr is not None:
                return cls(method=method, covariance=kr_adjusted(kr, linear=True), ingredients=kr)
            method = "satterthwaite"
            notes.append(
                "Kenward-Roger is unavailable for this LMM (weeks differ within a visit); "
                "Satterthwaite degrees of freedom are used instead"
            )
        vcov_t = None
        if method == "satterthwaite":
            try:
                np.linalg.cholesky(reml.hessian)
                vcov_t = 2.0 * np.linalg.inv(reml.hessian)
            except np.linalg.LinAlgError:
                method = "residual"
                notes.append(
                    "Satterthwaite degrees of freedom are unavailable (the REML Hessian is not "
                    "positive definite); residual degrees of freedom n - p are used instead"
                )
        ingredients = _satterthwaite_ingredients(reml, vcov_t, obs.n_observations)
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


def _satterthwaite_ingredients(reml: RemlFit, vcov_t: np.ndarray | None, n_obs: int) -> Ingredients:
    """Satterthwaite's ingredients in lme4's parameters t (theta, log sigma^2), as lmerTest.

    d Phi / d t_i = -Phi P_i Phi gives P_i from the Jacobian the engine already has; W is the
    inverse observed information in t, NaN when it is unavailable. At an interior optimum the
    df do not depend on the parametrisation; at a boundary (theta_j = 0) the direction of
    theta_j drops out, as it does in lmerTest.
    """
    state = reml.state
    inverse = np.linalg.inv(state.phi)
    big_p = -inverse @ reml.jacobian @ inverse
    r, p = big_p.shape[0], state.phi.shape[0]
    w = vcov_t if vcov_t is not None else np.full((r, r), np.nan)
    return Ingredients(
        beta=state.beta,
        phi=state.phi,
        p=big_p,
        q=np.zeros((r, r, p, p)),
        r=np.zeros((r, r, p, p)),
        w_observed=w,
        w_kr=w,
        residual_df=float(n_obs - p),
    )


def _lmm_tables(
    mean: MeanModel,
    obs: ObservedRows,
    prep: PreparedData,
    reml: RemlFit,
    inference: _LmmInference,
    baseline_visit: str,
    alpha: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Effects (arm-by-visit interaction contrasts) and LS means of the LMM."""
    beta = reml.state.beta
    counts = obs.counts()  # subjects per arm and visit (one row per subject and visit)
    column = {v: j for j, v in enumerate(obs.visits)}
    post = [v for v in obs.visits if v != baseline_visit]
    eff_l = np.array([mean.effect_row(v) - mean.effect_row(baseline_visit) for v in post])
    effects = _table(eff_l, beta, inference.covariance, inference.df(eff_l), alpha)
    effects.insert(0, "visit", post)
    effects.insert(0, "contrast", prep.contrast)
    effects["n"] = [int(counts[:, column[v]].sum()) for v in post]
    keys = [(v, a) for v in obs.visits for a in (prep.control, prep.treatment)]
    ls_l = np.array([mean.grid_row(a, v) for v, a in keys])
    lsmeans = _table(ls_l, beta, inference.covariance, inference.df(ls_l), alpha)
    lsmeans.insert(0, "arm", [a for _, a in keys])
    lsmeans.insert(0, "visit", [v for v, _ in keys])
    row = {a: i for i, a in enumerate(obs.arms)}
    lsmeans["n"] = [int(counts[row[a], column[v]]) for v, a in keys]
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
    reml: RemlFit,
    mean: MeanModel,
    obs: ObservedRows,
    method: str,
    names: dict[str, str | None],
    *,
    random_slope: bool,
    covariates: Sequence[str],
    baseline_visit: str,
) -> dict[str, object]:
    """The model record: formula, words, variance components, optimizer path."""
    q = 2 if random_slope else 1
    g_hat, sigma2 = unpack(reml.psi, q)
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
        "n_subjects": obs.n_subjects,
        "n_observations": obs.n_observations,
        "loglik": -0.5 * reml.state.deviance,
        "optimizer": "trialflow REML: L-BFGS-B in lme4's parameters (theta >= 0, log sigma^2), "
        "then Newton steps on the exact REML gradient and Hessian",
        "iterations": reml.iterations,
        "optimizer_steps": reml.steps,
        "singular": reml.singular,
        "df_method": method,
        "random_slope": random_slope,
        "variance_components": components,
        "reml_gradient_max_abs": gradient_size(reml.gradient),
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
    obs: ObservedRows, x: np.ndarray, z_visit: np.ndarray, psi: np.ndarray
) -> Ingredients | None:
    """Kenward-Roger ingredients of the LMM as R pbkrtest computes them.

    The LMM's marginal covariance over visits is Z G Z' + sigma^2 I, linear in the elements of
    G and sigma^2 (pbkrtest's parameters), so the MMRM's pattern machinery gives P_i and Q_ij;
    W is the inverse expected information, as in pbkrtest. None if the random-effects design
    is not a function of the visit (weeks differ within a visit).
    """
    if z_visit.shape[1] > 1:
        spread = obs.frame.groupby(VISIT, observed=True)[WEEK].agg(lambda w: float(np.ptp(w)))
        if float(spread.max()) > 0:
            return None
    from trialflow.stats.mmrm import _RemlProblem

    q, k = z_visit.shape[1], len(obs.visits)
    g, sigma2 = unpack(psi, q)
    rows, cols = np.tril_indices(q)
    basis = []
    for a, b in zip(rows, cols, strict=True):
        outer = np.outer(z_visit[:, a], z_visit[:, b])
        basis.append(outer + outer.T if a != b else outer)
    basis.append(np.eye(k))
    d_sigma = np.array(basis)
    sigma = z_visit @ g @ z_visit.T + sigma2 * np.eye(k)
    problem = _RemlProblem(x, obs.y, obs.subject_code, obs.visit_code, obs.n_subjects, k)
    evaluation = problem.evaluate(sigma, gradient=False)
    if evaluation is None:
        return None
    r = d_sigma.shape[0]
    big_p, big_q, big_r, expected = problem.information_derivatives(
        evaluation, d_sigma, np.zeros((r, r, k, k))
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
        residual_df=float(obs.n_observations - x.shape[1]),
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
