"""Tests of trialflow.stats.mmrm: agreement with R, special cases, input handling, calibration.

The R numbers come from tests/reference/make_mmrm_references.R (nlme::gls + emmeans, with the
Satterthwaite df recomputed from a precise numDeriv Hessian) and are read from
tests/reference/output/mmrm_*.csv, so R is not needed at test time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose

from trialflow.errors import ModelError
from trialflow.stats.mmrm import fit_mmrm
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
DATA = REFERENCE / "data"
OUTPUT = REFERENCE / "output"


def _reference_cases() -> list[tuple[str, str, str]]:
    path = OUTPUT / "mmrm_fit.csv"
    if not path.exists():
        return []
    fits = pd.read_csv(path)
    return [
        (str(r.dataset), str(r.outcome), str(r.covariance))
        for r in fits[["dataset", "outcome", "covariance"]].itertuples(index=False)
    ]


CASES = _reference_cases()


def _select(frame: pd.DataFrame, dataset: str, outcome: str, covariance: str) -> pd.DataFrame:
    keep = (
        (frame["dataset"] == dataset)
        & (frame["outcome"] == outcome)
        & (frame["covariance"] == covariance)
    )
    return frame[keep]


def _fit_reference_case(dataset: str, outcome: str, covariance: str):
    """Fit the model the R program fitted, on the same rows."""
    index = pd.read_csv(DATA / "datasets.csv", dtype=str, keep_default_na=False)
    entry = index[index["dataset"] == dataset].iloc[0]
    raw = pd.read_csv(DATA / f"{dataset}.csv")
    covariates = [c for c in entry["covariates"].split(";") if c]
    rows = raw[(raw["outcome"] == outcome) & (raw["visit"] != entry["baseline_visit"])]
    visit_order = list(rows.sort_values("visit_index")["visit"].drop_duplicates())
    # Rows with a missing change are passed on purpose: the engine must drop them itself.
    return fit_mmrm(
        rows,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=covariates,
        covariance=covariance,
        reference_arm=entry["control"],
        visit_order=visit_order,
        fallback=(),
    )


@pytest.fixture(scope="module")
def reference_tables() -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_csv(OUTPUT / f"mmrm_{name}.csv")
        for name in ("effects", "lsmeans", "covariance", "fit")
    }


def test_reference_outputs_exist() -> None:
    # Produced by: Rscript tests/reference/make_mmrm_references.R
    assert CASES, "run Rscript tests/reference/make_mmrm_references.R to make the references"


def test_references_cover_every_dataset_outcome_and_structure() -> None:
    # The R program skips a fit that gls cannot do (printing "gls failed"); a dataset missing
    # here would silently drop out of test_matches_r_gls_emmeans.
    index = pd.read_csv(DATA / "datasets.csv", dtype=str, keep_default_na=False)
    expected = {
        (dataset, str(outcome), covariance)
        for dataset in index["dataset"]
        for outcome in pd.read_csv(DATA / f"{dataset}.csv")["outcome"].unique()
        for covariance in ("us", "cs", "csh", "ar1", "ar1h", "toep")
    }
    assert expected == set(CASES)


@pytest.mark.parametrize(("dataset", "outcome", "covariance"), CASES)
def test_matches_r_gls_emmeans(
    reference_tables: dict[str, pd.DataFrame], dataset: str, outcome: str, covariance: str
) -> None:
    result = _fit_reference_case(dataset, outcome, covariance)
    assert result.converged
    assert result.info["covariance_used"] == covariance

    # Fit statistics: nlme::gls REML logLik (tests/reference/make_mmrm_references.R).
    fit = _select(reference_tables["fit"], dataset, outcome, covariance).iloc[0]
    assert result.info["n_observations"] == fit["n_obs"]
    assert result.info["n_subjects"] == fit["n_subjects"]
    assert result.info["n_covariance_parameters"] == fit["n_params"]
    assert_allclose(result.info["loglik"], fit["loglik"], rtol=0, atol=1e-6)

    # Treatment - control per visit: emmeans contrasts of the gls fit; df from the precise
    # numDeriv Satterthwaite computation (tests/reference/make_mmrm_references.R).
    ref = _select(reference_tables["effects"], dataset, outcome, covariance)
    got = result.effects.merge(ref, on="visit", suffixes=("", "_r"), validate="1:1")
    assert len(got) == len(ref) == len(result.effects)
    assert (got["contrast"] == got["contrast_r"]).all()
    assert_allclose(got["estimate"], got["estimate_r"], rtol=1e-4)
    assert_allclose(got["std_error"], got["std_error_r"], rtol=1e-4)
    assert_allclose(got["df"], got["df_r"], rtol=1e-2)
    assert_allclose(got["ci_lower"], got["ci_lower_r"], rtol=1e-4, atol=1e-6)
    assert_allclose(got["ci_upper"], got["ci_upper_r"], rtol=1e-4, atol=1e-6)
    assert_allclose(got["p_value"], got["p_value_r"], rtol=1e-3, atol=1e-8)
    # emmeans' own df (from nlme's coarser apVar Hessian) agree only loosely.
    assert_allclose(got["df"], got["df_emmeans"], rtol=0.1)

    # Least-squares means: emmeans(fit, ~ arm | visit) reference grid.
    ref = _select(reference_tables["lsmeans"], dataset, outcome, covariance)
    got = result.lsmeans.merge(ref, on=["visit", "arm"], suffixes=("", "_r"), validate="1:1")
    assert len(got) == len(ref) == len(result.lsmeans)
    assert_allclose(got["estimate"], got["estimate_r"], rtol=1e-4)
    assert_allclose(got["std_error"], got["std_error_r"], rtol=1e-4)
    assert_allclose(got["df"], got["df_r"], rtol=1e-2)
    assert_allclose(got["ci_lower"], got["ci_lower_r"], rtol=1e-4, atol=1e-6)
    assert_allclose(got["ci_upper"], got["ci_upper_r"], rtol=1e-4, atol=1e-6)

    # Residual covariance matrix: sigma^2 * varIdent weights * correlation of the gls fit.
    ref = _select(reference_tables["covariance"], dataset, outcome, covariance)
    pairs = zip(ref["row_visit"], ref["col_visit"], strict=True)
    got = np.array([result.covariance.loc[r, c] for r, c in pairs])
    assert_allclose(got, ref["value"].to_numpy(), rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# Simulated data


VISITS = ["week4", "week8", "week12"]
TRUE_COV = np.array([[4.0, 2.4, 2.0], [2.4, 5.0, 3.2], [2.0, 3.2, 6.0]])


def simulate_trial(
    rng: np.random.Generator,
    effect: np.ndarray,
    n_per_arm: int = 30,
    dropout: bool = True,
) -> pd.DataFrame:
    """Two arms, three post-baseline visits, UN covariance, MAR dropout driven by the last
    observed (standardised) response; about 20% of subjects miss the last visit."""
    n = 2 * n_per_arm
    treated = np.repeat([0, 1], n_per_arm)
    baseline = rng.normal(50.0, 5.0, n)
    mean = (
        np.array([-1.0, -1.5, -2.0])[None, :]
        + np.outer(treated, effect)
        + 0.2 * (baseline[:, None] - 50.0)
    )
    y = mean + rng.multivariate_normal(np.zeros(3), TRUE_COV, size=n)
    observed = np.ones((n, 3), dtype=bool)
    if dropout:
        for j in (1, 2):
            hazard = 1.0 / (1.0 + np.exp(-(-2.6 + 0.5 * (y[:, j - 1] - mean[:, j - 1]))))
            observed[:, j] = observed[:, j - 1] & (rng.uniform(size=n) >= hazard)
    i, j = np.nonzero(observed)
    return pd.DataFrame(
        {
            "subject": [f"S{k:03d}" for k in i],
            "arm": np.where(treated[i] == 1, "active", "control"),
            "visit": np.asarray(VISITS)[j],
            "baseline": baseline[i],
            "change": y[i, j],
        }
    )


def _fit(data: pd.DataFrame, **kwargs):
    args = {
        "response": "change",
        "subject": "subject",
        "visit": "visit",
        "arm": "arm",
        "baseline": "baseline",
        "reference_arm": "control",
        "visit_order": VISITS,
    }
    args.update(kwargs)
    return fit_mmrm(data, **args)


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    data = simulate_trial(rng, np.array([0.5, 1.0, 1.5]), n_per_arm=40)
    data["age"] = rng.normal(60.0, 8.0, len(data)).round(0)
    subjects = data["subject"].unique()
    site = dict(zip(subjects, rng.choice(["North", "South", "East"], len(subjects)), strict=True))
    data["Study site"] = data["subject"].map(site)
    return data


@pytest.mark.parametrize("covariance", ["us", "cs", "csh", "ar1", "ar1h", "toep"])
def test_single_visit_equals_ancova(covariance: str) -> None:
    rng = np.random.default_rng(3)
    data = simulate_trial(rng, np.array([1.0, 1.0, 1.0]), n_per_arm=25, dropout=False)
    one = data[data["visit"] == "week8"].copy()
    one["sex"] = rng.choice(["F", "M"], len(one))
    one["age"] = rng.normal(50.0, 10.0, len(one))
    result = _fit(one, covariates=["age", "sex"], covariance=covariance, visit_order=None)

    # Twin: lm(change ~ baseline + age + sex + arm) by statsmodels OLS.
    x = np.column_stack(
        [
            np.ones(len(one)),
            one["baseline"],
            one["age"],
            (one["sex"] == "M").astype(float),
            (one["arm"] == "active").astype(float),
        ]
    )
    ols = sm.OLS(one["change"].to_numpy(), x).fit()
    effect = result.effects.iloc[0]
    assert_allclose(effect["estimate"], ols.params[-1], rtol=1e-8)
    assert_allclose(effect["std_error"], ols.bse[-1], rtol=1e-6)
    assert_allclose(effect["df"], len(one) - x.shape[1], rtol=1e-6)
    assert_allclose(effect["p_value"], ols.pvalues[-1], rtol=1e-5)
    assert_allclose(result.covariance.iloc[0, 0], ols.scale, rtol=1e-6)


def test_result_shape_and_info(trial: pd.DataFrame) -> None:
    result = _fit(trial, covariates=["age", "Study site"])
    assert tuple(result.effects.columns) == EFFECT_COLUMNS
    assert tuple(result.lsmeans.columns) == LSMEAN_COLUMNS
    assert list(result.effects["visit"]) == VISITS
    assert set(result.effects["contrast"]) == {"active - control"}
    assert list(result.lsmeans["arm"]) == ["control", "active"] * 3
    assert list(result.covariance.index) == VISITS
    assert result.converged
    info = result.info
    assert info["formula"] == ("change ~ baseline + age + `Study site` + arm + visit + arm:visit")
    assert info["covariance_requested"] == info["covariance_used"] == "us"
    assert info["fallback_reason"] is None
    assert info["n_subjects"] == trial["subject"].nunique()
    assert info["n_observations"] == len(trial)
    assert info["df_method"] == "satterthwaite"
    assert info["gradient_norm"] < 1e-3
    params = info["covariance_parameters"]
    assert_allclose(params["variance[week4]"], result.covariance.loc["week4", "week4"])
    assert -1 < params["correlation[week4,week12]"] < 1
    counts = trial.groupby(["visit", "arm"]).size()
    for row in result.lsmeans.itertuples():
        assert row.n == counts[(row.visit, row.arm)]
    # Effects are differences of lsmeans.
    ls = result.lsmeans.set_index(["visit", "arm"])["estimate"]
    for row in result.effects.itertuples():
        assert_allclose(row.estimate, ls[(row.visit, "active")] - ls[(row.visit, "control")])
    # to_dict() read back from JSON: tests/stats/test_results.py.


def test_missing_rows_as_nan_or_absent_agree(trial: pd.DataFrame) -> None:
    absent = _fit(trial)
    subjects = trial["subject"].unique()
    full = pd.MultiIndex.from_product([subjects, VISITS], names=["subject", "visit"])
    per_subject = trial.drop_duplicates("subject").set_index("subject")[["arm", "baseline"]]
    padded = (trial.set_index(["subject", "visit"])[["change"]].reindex(full).reset_index()).join(
        per_subject, on="subject"
    )
    assert padded["change"].isna().any()
    shuffled = padded.sample(frac=1.0, random_state=1)
    nan_rows = _fit(shuffled)
    assert_allclose(nan_rows.effects["estimate"], absent.effects["estimate"], rtol=1e-9)
    assert_allclose(nan_rows.effects["df"], absent.effects["df"], rtol=1e-6)
    assert nan_rows.info["n_observations"] == absent.info["n_observations"]


def test_subjects_with_missing_covariate_excluded_with_warning(trial: pd.DataFrame) -> None:
    data = trial.copy()
    drop = data["subject"].unique()[:3]
    data.loc[data["subject"] == drop[0], "baseline"] = np.nan
    data.loc[data["subject"].isin(drop[1:]), "age"] = np.nan
    result = _fit(data, covariates=["age"])
    assert result.info["n_subjects"] == trial["subject"].nunique() - 3
    assert result.info["n_excluded_subjects"] == 3
    assert any("3 subject(s)" in w for w in result.warnings)
    reduced = _fit(trial[~trial["subject"].isin(drop)], covariates=["age"])
    assert_allclose(result.effects["estimate"], reduced.effects["estimate"], rtol=1e-10)


def test_visit_order_from_first_appearance_and_labels_as_text(trial: pd.DataFrame) -> None:
    data = trial.copy()
    data["arm"] = np.where(data["arm"] == "active", 1, 0)
    result = _fit(data, reference_arm=0, visit_order=None)
    assert list(result.effects["contrast"]) == ["1 - 0"] * 3
    base = _fit(trial)
    assert_allclose(result.effects["estimate"], base.effects["estimate"], rtol=1e-10)


def test_fallback_is_recorded_when_unstructured_fails() -> None:
    rng = np.random.default_rng(5)
    n = 40
    y1 = rng.normal(size=n)
    y2 = y1 + 0.5 * rng.normal(size=n)
    # Visits 2 and 3 identical: the unstructured correlation is 1, on the boundary.
    values = np.column_stack([y1, y2, y2])
    data = pd.DataFrame(
        {
            "subject": np.repeat(np.arange(n), 3),
            "arm": np.repeat(np.where(np.arange(n) < n // 2, "control", "active"), 3),
            "visit": np.tile(VISITS, n),
            "baseline": np.repeat(rng.normal(10.0, 2.0, n), 3),
            "change": values.ravel(),
        }
    )
    result = _fit(data)
    assert result.info["covariance_requested"] == "us"
    # The first default fallback converges: Toeplitz, and nothing after it is tried (the
    # order and the cases where Toeplitz fails too: tests/stats/test_fallback.py).
    assert result.info["covariance_tried"] == ["us", "toep"]
    assert result.info["covariance_used"] == "toep"
    assert result.info["fallback_reason"].startswith("unstructured (us) did not converge: ")
    assert any("did not converge" in w for w in result.warnings)
    with pytest.raises(ModelError, match="did not converge"):
        _fit(data, fallback=())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"response": "nope"}, "response column"),
        ({"reference_arm": "placebo"}, "reference arm"),
        ({"covariance": "banana"}, "unknown covariance"),
        ({"fallback": ("us", "spam")}, "unknown fallback"),
        ({"df_method": "kenward-rogers"}, "not supported"),
        ({"visit_order": ["week4", "week8"]}, "not in visit_order"),
        ({"covariates": ["missing col"]}, "covariate column"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_invalid_input_raises_model_error(trial: pd.DataFrame, change: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        _fit(trial, **change)


def test_structural_data_problems_raise(trial: pd.DataFrame) -> None:
    with pytest.raises(ModelError, match="only one arm"):
        _fit(trial[trial["arm"] == "control"])
    with pytest.raises(ModelError, match="more than one row"):
        _fit(pd.concat([trial, trial.iloc[:1]]))
    moved = trial.copy()
    moved.loc[moved.index[0], "arm"] = "active" if moved["arm"].iloc[0] == "control" else "control"
    with pytest.raises(ModelError, match="more than one arm"):
        _fit(moved)
    gap = trial[~((trial["arm"] == "active") & (trial["visit"] == "week8"))]
    with pytest.raises(ModelError, match="no observed response at visit 'week8'"):
        _fit(gap)
    constant = trial.assign(age=1.0)
    with pytest.raises(ModelError, match="not estimable"):
        _fit(constant, covariates=["age"])


# ---------------------------------------------------------------------------------------------
# Calibration (seeded simulation)


@pytest.mark.slow
def test_calibration_type_i_error_coverage_and_bias() -> None:
    rng = np.random.default_rng(20240611)
    n_null = 1000
    rejections = 0
    covered = 0
    n_intervals = 0
    dropped = 0.0
    for _ in range(n_null):
        data = simulate_trial(rng, np.zeros(3))
        dropped += 1.0 - (data["visit"] == "week12").sum() / data["subject"].nunique()
        effects = _fit(data).effects
        rejections += int(effects["p_value"].iloc[-1] < 0.05)
        covered += int(((effects["ci_lower"] < 0) & (effects["ci_upper"] > 0)).sum())
        n_intervals += len(effects)
    type_i = rejections / n_null
    coverage = covered / n_intervals
    assert 0.15 < dropped / n_null < 0.25, f"dropout {dropped / n_null:.3f} (scenario: ~20%)"
    assert 0.035 <= type_i <= 0.065, f"type I error {type_i:.4f} at the last visit"
    assert 0.935 <= coverage <= 0.965, f"95% CI coverage {coverage:.4f} over all visits"

    true_effect = np.array([2.0, 4.0, 6.0])
    estimates = np.array(
        [_fit(simulate_trial(rng, true_effect)).effects["estimate"] for _ in range(300)]
    )
    assert_allclose(estimates.mean(axis=0)[-1], true_effect[-1], rtol=0.02)


US_CASES = [(d, o) for d, o, c in CASES if c == "us"]


@pytest.mark.parametrize(("dataset", "outcome"), US_CASES)
def test_residuals_match_r(dataset: str, outcome: str) -> None:
    """Fitted values and residuals (raw and normalized) equal nlme's for the unstructured fit.

    Reference: tests/reference/make_mmrm_references.R -> output/mmrm_residuals.csv
    (fitted(), residuals(type = "response"), residuals(type = "normalized") of the gls fit).
    """
    ref = pd.read_csv(OUTPUT / "mmrm_residuals.csv", dtype={"subject_id": str})
    ref = ref[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    result = _fit_reference_case(dataset, outcome, "us")
    assert result.residuals is not None
    got = result.residuals.astype({"subject_id": str}).merge(
        ref, on=["subject_id", "visit"], suffixes=("", "_r"), validate="1:1"
    )
    assert len(got) == len(ref) == len(result.residuals) == result.info["n_observations"]
    scale = float(np.abs(ref["fitted"]).max())
    # Fitted values inherit the 1e-4 tolerance of the coefficients; absolute in the units of
    # the outcome, because residuals near zero make a relative tolerance meaningless.
    assert_allclose(got["fitted"], got["fitted_r"], rtol=0, atol=1e-6 * scale)
    assert_allclose(got["residual"], got["residual_r"], rtol=0, atol=1e-6 * scale)
    # Normalized residuals are unit-free; they also depend on the covariance estimate (1e-3).
    assert_allclose(got["normalized_residual"], got["normalized_residual_r"], rtol=0, atol=1e-4)
    assert_allclose(got["residual"], got["observed"] - got["fitted"], rtol=0, atol=1e-12)


def test_a_covariate_that_duplicates_the_arm_is_not_estimable() -> None:
    """README, "Safety and reproducibility" (bad input: "a covariate that duplicates the arm"):
    the MMRM says which column is redundant instead of failing inside the optimizer."""
    data = simulate_trial(np.random.default_rng(5), np.zeros(3))
    data["arm_copy"] = (data["arm"] == "active").astype(float)
    with pytest.raises(ModelError, match=r"not estimable: column .*arm.* is a linear combination"):
        _fit(data, covariates=["arm_copy"])


def test_a_warning_about_another_object_is_not_a_model_warning(monkeypatch) -> None:
    """A model's warnings are about the model: a ResourceWarning (the garbage collector
    reporting a file left open elsewhere) raised during the fit is not recorded, so the model
    records are the same whichever process, and whatever ran before, fitted them."""
    import warnings

    from trialflow.stats import mmrm

    fit_structure = mmrm._fit_structure

    def noisy(*args, **kwargs):
        warnings.warn(
            "unclosed file <_io.BufferedReader name='a.xlsx'>", ResourceWarning, stacklevel=2
        )
        warnings.warn("a warning about the fit", RuntimeWarning, stacklevel=2)
        return fit_structure(*args, **kwargs)

    monkeypatch.setattr(mmrm, "_fit_structure", noisy)
    result = _fit(simulate_trial(np.random.default_rng(3), np.zeros(3)))
    assert list(result.warnings) == ["a warning about the fit"]
