"""Tests of the linear mixed model against lmerTest and statsmodels MixedLM, plus unit checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM

from trialflow.errors import ModelError
from trialflow.stats.lmm import fit_lmm
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "lmm_fit.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].itertuples(index=False, name=None))


def _fit(dataset: str, outcome: str, **kwargs: object):
    meta = INDEX.set_index("dataset").loc[dataset]
    data = _read_data(dataset)
    rows = data.loc[data["outcome"] == outcome]
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    covariates = [c for c in meta["covariates"].split(";") if c]
    args: dict[str, object] = {
        "response": "value",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "covariates": covariates,
        "reference_arm": meta["control"],
        "visit_order": order,
        "baseline_visit": meta["baseline_visit"],
    }
    args.update(kwargs)
    return fit_lmm(rows, **args)  # type: ignore[arg-type]


def test_references_cover_every_dataset_and_outcome() -> None:
    expected = {
        (dataset, str(outcome))
        for dataset in INDEX["dataset"]
        for outcome in _read_data(dataset)["outcome"].unique()
    }
    assert expected == set(_cases())
    slope = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    assert expected == set(slope[["dataset", "outcome"]].itertuples(index=False, name=None))


@pytest.mark.parametrize(("dataset", "outcome"), _cases())
def test_lmm_matches_lmertest(dataset: str, outcome: str) -> None:
    result = _fit(dataset, outcome)
    meta = INDEX.set_index("dataset").loc[dataset]
    assert list(result.effects.columns) == list(EFFECT_COLUMNS)
    assert list(result.lsmeans.columns) == list(LSMEAN_COLUMNS)
    assert result.converged
    assert result.info["df_method"] == "satterthwaite"
    assert (result.effects["contrast"] == f"{meta['treatment']} - {meta['control']}").all()

    # Reference: tests/reference/make_references.R, lmerTest::lmer(value ~ covariates +
    # arm * visit + (1 | subject_id), REML = TRUE), summary() with Satterthwaite df.
    ref = pd.read_csv(OUTPUT / "lmm_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    np.testing.assert_allclose(eff["estimate"], ref["estimate"], rtol=1e-4)
    np.testing.assert_allclose(eff["std_error"], ref["std_error"], rtol=1e-4)
    np.testing.assert_allclose(eff["df"], ref["df"], rtol=1e-2)
    np.testing.assert_allclose(eff["p_value"], ref["p_value"], rtol=1e-2)

    # Reference: same program, emmeans(m, ~ arm | visit) with lmer.df = "satterthwaite".
    ref_ls = pd.read_csv(OUTPUT / "lmm_lsmeans.csv", keep_default_na=False)
    ref_ls = ref_ls.loc[(ref_ls["dataset"] == dataset) & (ref_ls["outcome"] == outcome)]
    merged = result.lsmeans.merge(ref_ls, on=["visit", "arm"], suffixes=("", "_r"))
    assert len(merged) == len(result.lsmeans) == len(ref_ls)
    for col in ("estimate", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=1e-4)
    np.testing.assert_allclose(merged["df"], merged["df_r"], rtol=1e-2)

    # Reference: same program, VarCorr() and logLik(REML = TRUE) of the lmer fit.
    fit = pd.read_csv(OUTPUT / "lmm_fit.csv", keep_default_na=False)
    fit = fit.loc[(fit["dataset"] == dataset) & (fit["outcome"] == outcome)].iloc[0]
    vc = result.info["variance_components"]
    np.testing.assert_allclose(vc["subject_intercept"], fit["var_subject"], rtol=1e-4)
    np.testing.assert_allclose(vc["residual"], fit["var_residual"], rtol=1e-4)
    np.testing.assert_allclose(result.info["loglik"], fit["reml_loglik"], rtol=1e-6)
    assert result.info["n_observations"] == fit["n_obs"]
    assert result.info["n_subjects"] == fit["n_subjects"]


def test_absent_rows_and_empty_values_give_the_same_fit() -> None:
    data = _read_data("sim_dropout")
    rows = data.loc[data["outcome"] == "pain"]
    order = ["baseline", "week4", "week8", "week12"]
    args = {
        "response": "value",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "covariates": ["age"],
        "reference_arm": "placebo",
        "visit_order": order,
        "baseline_visit": "baseline",
    }
    with_nan = fit_lmm(rows, **args)  # type: ignore[arg-type]
    without = fit_lmm(rows.loc[rows["value"].notna()], **args)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(with_nan.effects, without.effects)


def test_covariate_names_with_spaces_are_labels_only() -> None:
    data = _read_data("sim_catcov")
    renamed = data.rename(columns={"age": "Age (years)", "Site": "study site"})
    ref = _fit("sim_catcov", "function")
    result = fit_lmm(
        renamed,
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        covariates=["Age (years)", "study site", "sex"],
        reference_arm="usual care",
        visit_order=None,
        baseline_visit="baseline",
        week="week",
    )
    np.testing.assert_allclose(result.effects["estimate"], ref.effects["estimate"], rtol=1e-10)
    assert "`Age (years)`" in result.info["formula"]
    # Coefficient names as R prints them (backticks around non-syntactic names), as the MMRM.
    assert "`study siteB`" in result.info["coefficients"]


def _slope_cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None))


@pytest.mark.parametrize(("dataset", "outcome"), _slope_cases())
def test_random_slope_matches_lmertest(dataset: str, outcome: str) -> None:
    result = _fit(dataset, outcome, random_slope=True, week="week")
    # Reference: tests/reference/make_references.R, lmerTest::lmer(value ~ covariates +
    # arm * visit + (1 + I(week / 12) | subject_id), REML = TRUE), Satterthwaite df; the
    # singular fits (correlation -1) are lme4's isSingular() and must be found as such.
    ref = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    singular = str(ref["singular"].iloc[0]).upper() == "TRUE"
    assert result.info["singular"] is singular
    assert result.converged is not singular
    assert any("boundary" in w for w in result.warnings) is singular
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    np.testing.assert_allclose(eff["estimate"], ref["estimate"], rtol=1e-4)
    np.testing.assert_allclose(eff["std_error"], ref["std_error"], rtol=1e-4)
    np.testing.assert_allclose(eff["df"], ref["df"], rtol=1e-2)
    vc = result.info["variance_components"]
    first = ref.iloc[0]
    np.testing.assert_allclose(vc["subject_intercept"], first["var_intercept"], rtol=1e-4)
    np.testing.assert_allclose(vc["subject_slope"], first["var_slope"], rtol=1e-4)
    np.testing.assert_allclose(vc["intercept_slope_cov"], first["cov_intercept_slope"], rtol=1e-4)
    np.testing.assert_allclose(vc["residual"], first["var_residual"], rtol=1e-4)
    np.testing.assert_allclose(result.info["loglik"], first["reml_loglik"], rtol=1e-6)


def test_random_slope_fits_and_reports_slope_variance() -> None:
    result = _fit("sim_dropout", "grip", random_slope=True, week="week")
    assert result.info["random_slope"] is True
    assert "subject_slope" in result.info["variance_components"]
    assert np.all(np.isfinite(result.effects["df"]))
    assert "week/12" in result.info["formula"]
    assert result.covariance is not None and result.covariance.shape == (4, 4)


def test_random_slope_requires_week() -> None:
    with pytest.raises(ModelError, match="week"):
        _fit("sim_dropout", "grip", random_slope=True)


def test_boundary_fit_matches_lme4_and_is_flagged() -> None:
    """Within-subject centred responses put the subject variance at zero (theta on its bound).

    The fit reaches the bound exactly, is reported as a boundary (singular) fit and not as
    converged, and nothing escapes as a Python warning. With a zero subject variance the model
    is OLS and lmerTest's Satterthwaite df are n - p.
    """
    frame = pd.read_csv(REFERENCE / "data" / "lmm_boundary.csv")
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = fit_lmm(
            frame,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            reference_arm="ctl",
            visit_order=["v0", "v1", "v2"],
            baseline_visit="v0",
        )
    assert leaked == []
    assert not result.converged
    assert result.info["singular"] is True
    assert any("boundary" in w for w in result.warnings)
    assert result.info["df_method"] == "satterthwaite"
    # Reference: tests/reference/make_lmm_boundary_references.R (lmerTest::lmer, tight bobyqa;
    # isSingular() TRUE, theta 0), output tests/reference/output/lmm_boundary.csv.
    ref = pd.read_csv(OUTPUT / "lmm_boundary.csv")
    assert bool(ref["singular"].all()) and float(ref["theta"].max()) == 0.0
    eff = result.effects
    np.testing.assert_allclose(eff["estimate"], ref["estimate"], rtol=1e-8)
    np.testing.assert_allclose(eff["std_error"], ref["std_error"], rtol=1e-8)
    np.testing.assert_allclose(eff["df"], ref["df"], rtol=1e-8)
    vc = result.info["variance_components"]
    assert vc["subject_intercept"] == 0.0
    np.testing.assert_allclose(vc["residual"], ref["var_residual"].iloc[0], rtol=1e-8)
    np.testing.assert_allclose(result.info["loglik"], ref["reml_loglik"].iloc[0], rtol=1e-10)


def test_missing_covariate_excludes_subject_with_warning() -> None:
    data = _read_data("sim_dropout")
    rows = data.loc[data["outcome"] == "pain"].copy()
    rows.loc[rows["subject_id"] == "D001", "age"] = np.nan
    result = fit_lmm(
        rows,
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        covariates=["age"],
        reference_arm="placebo",
        visit_order=["baseline", "week4", "week8", "week12"],
        baseline_visit="baseline",
    )
    assert any("1 subject(s) excluded" in w and "'age'" in w for w in result.warnings)
    assert result.info["n_subjects"] == 79


def test_unknown_baseline_visit_is_an_error() -> None:
    with pytest.raises(ModelError, match="baseline visit"):
        _fit("sim_dropout", "pain", baseline_visit="screening")


def _mixedlm(dataset: str, outcome: str, slope: bool) -> tuple[object, np.ndarray]:
    """statsmodels MixedLM from its own default start, on the design trialflow builds."""
    result = _fit(dataset, outcome, **({"random_slope": True, "week": "week"} if slope else {}))
    rows = _read_data(dataset)
    rows = rows.loc[(rows["outcome"] == outcome) & rows["value"].notna()]
    rows = rows.sort_values(["subject_id", "visit_index"])
    post = rows["visit_index"].to_numpy()[:, None] == np.array([2, 3, 4])
    active = (rows["arm"] == "active").to_numpy(float)
    x = np.column_stack(
        [np.ones(len(rows)), rows["age"], active, post, post * active[:, None]]
    ).astype(float)
    z = np.column_stack([np.ones(len(rows)), rows["week"].to_numpy(float) / 12.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a MixedLM convergence warning fails the test
        fit = MixedLM(
            rows["value"].to_numpy(float), x, groups=rows["subject_id"], exog_re=z[:, : 1 + slope]
        ).fit(reml=True)
    return result, fit


@pytest.mark.parametrize(("slope", "rtol"), [(False, 1e-4), (True, 1e-3)])
def test_engine_agrees_with_statsmodels_mixedlm(slope: bool, rtol: float) -> None:
    """The own engine against MixedLM fitted independently (its default start and optimizer).

    MixedLM stops at its own (looser) tolerance, so agreement is to 1e-4 (1e-3 with a random
    slope), and the own optimum's REML log-likelihood is never below MixedLM's. (MixedLM's
    standard errors come from its joint observed information, not lme4's (X' V^-1 X)^-1, so
    they are not compared; lme4's are, in the lmerTest tests.)
    """
    result, fit = _mixedlm("sim_dropout", "pain", slope)
    assert fit.converged
    assert list(result.info["coefficients"])[:3] == ["(Intercept)", "age", "armactive"]
    ours = np.array(list(result.info["coefficients"].values()))
    np.testing.assert_allclose(ours, fit.fe_params, rtol=rtol, atol=rtol * np.abs(ours).max())
    vc = result.info["variance_components"]
    np.testing.assert_allclose(vc["residual"], fit.scale, rtol=rtol)
    np.testing.assert_allclose(vc["subject_intercept"], fit.cov_re[0, 0], rtol=rtol)
    if slope:
        np.testing.assert_allclose(vc["subject_slope"], fit.cov_re[1, 1], rtol=rtol)
        np.testing.assert_allclose(vc["intercept_slope_cov"], fit.cov_re[1, 0], rtol=rtol)
    assert result.info["loglik"] >= fit.llf - 1e-9
    np.testing.assert_allclose(result.info["loglik"], fit.llf, rtol=1e-8)
