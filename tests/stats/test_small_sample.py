"""Kenward-Roger, between-within and residual df, and Type III tests, against R.

Reference program: tests/reference/make_kr_references.R (KR from first principles on nlme::gls
fits, in SAS's covariance parameters; outputs tests/reference/output/kr_contrasts.csv and
kr_type3.csv). The LMM's Kenward-Roger is compared with R pbkrtest through
tests/reference/make_subgroup_references.R (lmm_kr_effects.csv, lmm_kr_lsmeans.csv).

Tolerances (relative): estimates and standard errors 1e-5; df 1e-4 (the reference df come from
analytic derivatives at a Newton-polished optimum); F 1e-4. The reference also holds variants
that are not offered (``kenward_roger_expected``, ``kenward_roger_mmrm``): they are not tested.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from trialflow import ModelResult
from trialflow.stats.lmm import fit_lmm
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import fit_mmrm

REF = Path(__file__).resolve().parents[1] / "reference"
OUT = REF / "output"
METHODS = ("satterthwaite", "kenward_roger", "kenward_roger_linear", "between_within", "residual")
CONTRASTS = pd.read_csv(OUT / "kr_contrasts.csv")
TYPE3 = pd.read_csv(OUT / "kr_type3.csv")
DATASETS = pd.read_csv(REF / "data" / "datasets.csv").set_index("dataset")
FEV_MODELS = {
    "fev_un": ("us", "none"),
    "fev_by_visit": ("us", "by_visit"),
    "fev_toep": ("toep", "none"),
    "fev_ar1": ("ar1", "none"),
}


def _fev_rows() -> pd.DataFrame:
    subjects = pd.read_csv(REF / "data" / "fev" / "subjects.csv")
    visits = pd.read_csv(REF / "data" / "fev" / "visits.csv")
    base = visits.loc[visits["visit"] == "baseline", ["subject_id", "FEV1"]]
    rows = visits.loc[visits["visit"] != "baseline"].merge(subjects, on="subject_id")
    return rows.merge(base.rename(columns={"FEV1": "baseline"}), on="subject_id")


@cache
def _fit(dataset: str, outcome: str, model: str, method: str) -> ModelResult:
    if dataset == "fev":
        covariance, baseline = FEV_MODELS[model]
        return fit_mmrm(
            _fev_rows(),
            response="FEV1",
            subject="subject_id",
            visit="visit",
            arm="arm",
            baseline="baseline" if baseline != "none" else None,
            covariates=["RACE", "SEX"],
            covariance=covariance,
            fallback=(),
            reference_arm="PBO",
            visit_order=["VIS1", "VIS2", "VIS3", "VIS4"],
            df_method=method,
            mean=MeanSpec(response="value", baseline=baseline),  # type: ignore[arg-type]
        )
    spec = DATASETS.loc[dataset]
    data = pd.read_csv(REF / "data" / f"{dataset}.csv")
    rows = data.loc[(data["outcome"] == outcome) & (data["visit"] != spec["baseline_visit"])]
    return fit_mmrm(
        rows,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=str(spec["covariates"]).split(";"),
        reference_arm=spec["control"],
        week="week",
        df_method=method,
        mean=MeanSpec(baseline="by_visit" if model == "by_visit" else "main"),
    )


CASES = sorted(
    CONTRASTS.loc[CONTRASTS["df_method"].isin(METHODS), ["dataset", "outcome", "model"]]
    .drop_duplicates()
    .itertuples(index=False, name=None)
)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_contrasts_match_r(dataset: str, outcome: str, model: str, method: str) -> None:
    ref = CONTRASTS.loc[
        (CONTRASTS["dataset"] == dataset)
        & (CONTRASTS["outcome"] == outcome)
        & (CONTRASTS["model"] == model)
        & (CONTRASTS["df_method"] == method)
    ]
    fit = _fit(dataset, outcome, model, method)
    effects = fit.effects.assign(kind="effect", arm=fit.effects["contrast"])
    lsmeans = fit.lsmeans.assign(kind="lsmean")
    ours = pd.concat([effects, lsmeans])[["kind", "visit", "arm", "estimate", "std_error", "df"]]
    both = ref.merge(ours.astype({"visit": str}), on=["kind", "visit", "arm"], suffixes=("_r", ""))
    assert len(both) == len(ref) == len(ours)
    assert_allclose(both["estimate"], both["estimate_r"], rtol=1e-5)
    assert_allclose(both["std_error"], both["std_error_r"], rtol=1e-5)
    assert_allclose(both["df"], both["df_r"], rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_type3_matches_r(dataset: str, outcome: str, model: str, method: str) -> None:
    ref = TYPE3.loc[
        (TYPE3["dataset"] == dataset)
        & (TYPE3["outcome"] == outcome)
        & (TYPE3["model"] == model)
        & (TYPE3["df_method"] == method)
    ]
    ours = _fit(dataset, outcome, model, method).type3
    assert ours is not None
    both = ref.merge(ours, on="effect", suffixes=("_r", ""))
    assert sorted(both["effect"]) == sorted(ref["effect"]) == sorted(ours["effect"])
    assert (both["num_df"] == both["num_df_r"]).all()
    assert_allclose(both["F"], both["F_r"], rtol=1e-4)
    assert_allclose(both["den_df"], both["den_df_r"], rtol=1e-4)


def test_one_df_type3_is_the_squared_t_of_the_contrast() -> None:
    fit = _fit("fev", "FEV1", "fev_un", "kenward_roger")
    assert fit.type3 is not None
    sex = fit.type3.set_index("effect").loc["SEX"]
    assert sex["num_df"] == 1
    # The SEX coefficient is its own 1-df contrast (two levels).
    info = fit.info["coefficients"]
    assert any(name.startswith("SEX") for name in info)


LMM_EFFECTS = pd.read_csv(OUT / "lmm_kr_effects.csv")
LMM_LSMEANS = pd.read_csv(OUT / "lmm_kr_lsmeans.csv")


LMM_CASES = sorted(
    LMM_EFFECTS[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None)
)


@cache
def _lmm(dataset: str, outcome: str, method: str, random_slope: bool = False) -> ModelResult:
    if dataset == "weightbearing":
        control, covs = "nonweightbearing", ["Age (years)", "Sex"]
    else:
        spec = DATASETS.loc[dataset]
        control, covs = spec["control"], str(spec["covariates"]).split(";")
    data = pd.read_csv(REF / "data" / f"{dataset}.csv")
    return fit_lmm(
        data.loc[data["outcome"] == outcome],
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        covariates=covs,
        reference_arm=control,
        visit_order=None,
        baseline_visit="baseline",
        week="week",
        df_method=method,  # type: ignore[arg-type]
        random_slope=random_slope,
    )


SLOPE = pd.read_csv(OUT / "lmm_kr_slope_effects.csv")


@pytest.mark.parametrize(("dataset", "outcome"), LMM_CASES)
def test_lmm_kenward_roger_with_a_random_slope_matches_pbkrtest(dataset: str, outcome: str) -> None:
    # tests/reference/make_subgroup_references.R, part A: (1 + I(week / 12) | subject_id),
    # pbkrtest::vcovAdj and Lb_ddf. Random-slope REML surfaces are flat, and lme4's optimum
    # differs from ours by up to ~2e-5 in the SE (weightbearing HbA1c): the LMM's usual 1e-4.
    fit = _lmm(dataset, outcome, "kenward_roger", random_slope=True)
    want = SLOPE.loc[(SLOPE["dataset"] == dataset) & (SLOPE["outcome"] == outcome)]
    both = want.merge(fit.effects, on="visit", suffixes=("_r", ""))
    assert len(both) == len(want) == len(fit.effects)
    assert_allclose(both["estimate"], both["estimate_r"], rtol=1e-4, atol=1e-8)
    assert_allclose(both["std_error"], both["std_error_r"], rtol=1e-4)
    assert_allclose(both["df"], both["df_r"], rtol=1e-3)


@pytest.mark.parametrize(("dataset", "outcome"), LMM_CASES)
def test_lmm_kenward_roger_matches_pbkrtest(dataset: str, outcome: str) -> None:
    # tests/reference/make_subgroup_references.R, part A: pbkrtest::vcovAdj and emmeans with
    # lmer.df = "kenward-roger" on the lmerTest fit of make_references.R.
    fit = _lmm(dataset, outcome, "kenward_roger")
    for ours, ref, keys in (
        (fit.effects, LMM_EFFECTS, ["visit"]),
        (fit.lsmeans, LMM_LSMEANS, ["visit", "arm"]),
    ):
        want = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
        both = want.merge(ours, on=keys, suffixes=("_r", ""))
        assert len(both) == len(want) == len(ours)
        # lme4's optimum (bobyqa to 1e-12) and ours agree to ~1e-8.
        assert_allclose(both["estimate"], both["estimate_r"], rtol=1e-6)
        assert_allclose(both["std_error"], both["std_error_r"], rtol=1e-6)
        assert_allclose(both["df"], both["df_r"], rtol=1e-5)
    assert fit.info["df_method"] == "kenward_roger"


@pytest.mark.parametrize(("dataset", "outcome"), LMM_CASES)
@pytest.mark.parametrize(
    ("method", "file", "df_rtol"),
    # lmerTest's Satterthwaite F tests use its own numerical Hessian (in the standard deviation
    # parametrisation) and its own basis for the hypothesis rows: den df agree to ~1e-3 only.
    [("kenward_roger", "lmm_kr_type3.csv", 1e-5), ("satterthwaite", "lmm_sat_type3.csv", 1e-2)],
)
def test_lmm_type3_matches_lmertest(
    dataset: str, outcome: str, method: str, file: str, df_rtol: float
) -> None:
    # tests/reference/make_subgroup_references.R: anova(m, type = 3, ddf = ...) of lmerTest.
    ref = pd.read_csv(OUT / file)
    want = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    ours = _lmm(dataset, outcome, method).type3
    assert ours is not None
    both = want.merge(ours, on="effect", suffixes=("_r", ""))
    assert sorted(both["effect"]) == sorted(want["effect"]) == sorted(ours["effect"])
    assert (both["num_df"] == both["num_df_r"]).all()
    assert_allclose(both["F"], both["F_r"], rtol=1e-4)
    assert_allclose(both["den_df"], both["den_df_r"], rtol=df_rtol)


def test_kenward_roger_inflates_the_standard_errors() -> None:
    plain = _fit("fev", "FEV1", "fev_un", "satterthwaite")
    kr = _fit("fev", "FEV1", "fev_un", "kenward_roger")
    ratio = kr.effects["std_error"].to_numpy() / plain.effects["std_error"].to_numpy()
    assert np.all(ratio > 1.0)
    # For one contrast the KR df equal the Satterthwaite df (observed information, as SAS).
    assert_allclose(kr.effects["df"], plain.effects["df"], rtol=1e-8)


def _balanced(n_per_arm: int = 12, k: int = 3, seed: int = 5) -> pd.DataFrame:
    """Complete, balanced data: every subject observed at every visit, no covariates."""
    rng = np.random.default_rng(seed)
    cov = 0.5 ** np.abs(np.subtract.outer(np.arange(k), np.arange(k))) * 4.0
    rows = []
    for arm, shift in (("control", 0.0), ("active", 0.8)):
        values = rng.multivariate_normal(np.arange(k) * 0.5 + shift, cov, size=n_per_arm)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                rows.append({"subject": f"{arm}{i}", "arm": arm, "visit": f"v{j + 1}", "y": value})
    return pd.DataFrame(rows)


def test_kenward_roger_is_exact_on_complete_balanced_data() -> None:
    # With complete balanced data, an unstructured covariance and the saturated arm * visit
    # mean, Kenward & Roger (1997) reproduce the exact small-sample tests: the treatment
    # difference at a visit is a two-sample t test (no SE inflation, df = n - 2), and the
    # arm-by-visit test is the two-sample Hotelling T^2 test of the k - 1 differences between
    # visits, F = T^2 (n - q - 1) / ((n - 2) q) on (q, n - 1 - q) df, q = k - 1.
    data = _balanced()
    fit = fit_mmrm(data, response="y", subject="subject", visit="visit", arm="arm",
                   baseline=None, reference_arm="control", visit_order=["v1", "v2", "v3"],
                   df_method="kenward_roger")  # fmt: skip
    wide = data.pivot(index="subject", columns="visit", values="y")
    arm = data.drop_duplicates("subject").set_index("subject").loc[wide.index, "arm"]
    a, b = wide[arm == "active"].to_numpy(), wide[arm == "control"].to_numpy()
    n = len(a) + len(b)
    pooled = ((len(a) - 1) * np.cov(a.T) + (len(b) - 1) * np.cov(b.T)) / (n - 2)
    diff = a.mean(axis=0) - b.mean(axis=0)
    se = np.sqrt(np.diag(pooled) * (1 / len(a) + 1 / len(b)))
    assert_allclose(fit.effects["estimate"], diff, rtol=1e-8)
    assert_allclose(fit.effects["std_error"], se, rtol=1e-6)
    assert_allclose(fit.effects["df"], n - 2, rtol=1e-6)
    contrast = np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])  # changes between visits
    d = contrast @ diff
    s = contrast @ pooled @ contrast.T * (1 / len(a) + 1 / len(b))
    q = 2
    t2 = float(d @ np.linalg.solve(s, d))
    assert fit.type3 is not None
    row = fit.type3.set_index("effect").loc["arm:visit"]
    assert row["num_df"] == q
    assert row["F"] == pytest.approx(t2 * (n - q - 1) / ((n - 2) * q), rel=1e-6)
    assert row["den_df"] == pytest.approx(n - 1 - q, rel=1e-6)
