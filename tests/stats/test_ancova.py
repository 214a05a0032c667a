"""Tests of the per-visit ANCOVA against R's lm/emmeans, plus input validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from trialflow.errors import ModelError
from trialflow.stats.ancova import fit_ancova
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "ancova_effects.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None))


def _post_baseline(dataset: str, outcome: str) -> tuple[pd.DataFrame, pd.Series]:
    meta = INDEX.set_index("dataset").loc[dataset]
    data = _read_data(dataset)
    rows = data.loc[(data["outcome"] == outcome) & (data["visit"] != meta["baseline_visit"])]
    return rows, meta


@pytest.mark.parametrize(("dataset", "outcome"), _cases())
def test_ancova_matches_r_lm(dataset: str, outcome: str) -> None:
    rows, meta = _post_baseline(dataset, outcome)
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    result = fit_ancova(
        rows,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=[c for c in meta["covariates"].split(";") if c],
        reference_arm=meta["control"],
        visit_order=order,
    )
    assert list(result.effects.columns) == list(EFFECT_COLUMNS)
    assert list(result.lsmeans.columns) == list(LSMEAN_COLUMNS)

    # Reference: tests/reference/make_references.R, lm(change ~ baseline + covariates + arm)
    # per post-baseline visit; summary(), confint(), df.residual().
    ref = pd.read_csv(OUTPUT / "ancova_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    for col in ("estimate", "std_error", "ci_lower", "ci_upper", "p_value"):
        np.testing.assert_allclose(eff[col], ref[col], rtol=1e-8)
    np.testing.assert_array_equal(eff["df"], ref["df"])
    np.testing.assert_array_equal(eff["n"], ref["n"])

    # Reference: same program, emmeans(fit, ~ arm).
    ref_ls = pd.read_csv(OUTPUT / "ancova_lsmeans.csv", keep_default_na=False)
    ref_ls = ref_ls.loc[(ref_ls["dataset"] == dataset) & (ref_ls["outcome"] == outcome)]
    merged = result.lsmeans.merge(ref_ls, on=["visit", "arm"], suffixes=("", "_r"))
    assert len(merged) == len(result.lsmeans) == len(ref_ls)
    for col in ("estimate", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=1e-8)


def _args(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "response": "change",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "baseline": "baseline",
        "covariates": ["age", "Site", "sex"],
        "reference_arm": "usual care",
    }
    args.update(overrides)
    return args


def test_missing_column_names_the_column() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError) as info:
        fit_ancova(rows.drop(columns="Site"), **_args())  # type: ignore[arg-type]
    assert info.value.column == "Site"
    assert "What to do" in str(info.value)


def test_one_arm_only_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="only one arm"):
        fit_ancova(rows.loc[rows["arm"] == "exercise"], **_args())  # type: ignore[arg-type]


def test_unknown_reference_arm_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="reference arm"):
        fit_ancova(rows, **_args(reference_arm="placebo"))  # type: ignore[arg-type]


def test_three_arms_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.copy()
    rows.loc[rows["subject_id"] == "C001", "arm"] = "other"
    with pytest.raises(ModelError, match="exactly two"):
        fit_ancova(rows, **_args())  # type: ignore[arg-type]


def test_duplicate_visit_rows_are_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="more than one row"):
        fit_ancova(pd.concat([rows, rows.iloc[:1]]), **_args())  # type: ignore[arg-type]


def test_text_in_response_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.astype({"change": object})
    rows.iloc[0, rows.columns.get_loc("change")] = "n/a"
    with pytest.raises(ModelError, match="non-numeric"):
        fit_ancova(rows, **_args())  # type: ignore[arg-type]


def test_missing_baseline_excludes_subject_with_warning() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.copy()
    rows.loc[rows["subject_id"] == "C001", "baseline"] = np.nan
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = fit_ancova(rows, **_args())  # type: ignore[arg-type]
    assert leaked == []
    assert any("1 subject(s) excluded" in w and "baseline" in w for w in result.warnings)


def test_constant_covariate_gives_rank_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.assign(constant=1.0)
    with pytest.raises(ModelError, match=r"rank deficient.*constant"):
        fit_ancova(rows, **_args(covariates=["age", "constant"]))  # type: ignore[arg-type]


def test_visit_in_one_arm_only_is_not_fitted_but_others_are() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    full = fit_ancova(rows, **_args(visit_order=["week6", "week12"]))  # type: ignore[arg-type]
    control_week6 = (rows["arm"] == "usual care") & (rows["visit"] == "week6")
    partial = rows.assign(change=rows["change"].mask(control_week6))
    result = fit_ancova(partial, **_args(visit_order=["week6", "week12"]))  # type: ignore[arg-type]

    eff = result.effects.set_index("visit")
    assert eff.index.tolist() == ["week6", "week12"]
    numbers = ["estimate", "std_error", "df", "ci_lower", "ci_upper", "p_value"]
    assert eff.loc["week6", numbers].isna().all()
    observed = partial.loc[(partial["visit"] == "week6") & partial["change"].notna()]
    assert eff.loc["week6", "n"] == observed["subject_id"].nunique()
    reason = result.info["not_fitted"]["week6"]
    assert "'exercise' only" in reason
    assert list(result.info["not_fitted"]) == ["week6"]
    assert any(w.startswith("week6") and reason in w for w in result.warnings)
    ls = result.lsmeans.set_index(["visit", "arm"])
    assert ls.loc["week6", ["estimate", "std_error", "ci_lower", "ci_upper"]].isna().all().all()
    assert ls.loc[("week6", "usual care"), "n"] == 0
    assert set(result.info["loglik"]) == {"week12"}

    # The fitted visit is untouched: the same numbers as an independent OLS fit of that visit.
    week12 = partial.loc[(partial["visit"] == "week12") & partial["change"].notna()]
    ols = smf.ols(
        "change ~ baseline + age + C(Site) + C(sex) + C(arm, Treatment('usual care'))",
        data=week12,
    ).fit()
    term = "C(arm, Treatment('usual care'))[T.exercise]"
    row = eff.loc["week12"]
    assert row["estimate"] == pytest.approx(ols.params[term], rel=1e-10)
    assert row["std_error"] == pytest.approx(ols.bse[term], rel=1e-10)
    assert row["p_value"] == pytest.approx(ols.pvalues[term], rel=1e-8)
    assert row["df"] == ols.df_resid and row["n"] == ols.nobs
    lo, hi = ols.conf_int().loc[term]
    assert (row["ci_lower"], row["ci_upper"]) == pytest.approx((lo, hi), rel=1e-10)
    pd.testing.assert_frame_equal(
        result.lsmeans.loc[result.lsmeans["visit"] == "week12"].reset_index(drop=True),
        full.lsmeans.loc[full.lsmeans["visit"] == "week12"].reset_index(drop=True),
    )


def test_constant_change_at_a_visit_is_a_reason_not_a_crash() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    flat = rows.assign(change=rows["change"].mask(rows["visit"] == "week6", 1.5))
    result = fit_ancova(flat, **_args(visit_order=["week6", "week12"]))  # type: ignore[arg-type]
    assert result.info["not_fitted"] == {"week6": "no variability in change at week6"}
    assert result.effects["estimate"].notna().tolist() == [False, True]


def test_no_visit_fitted_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    flat = rows.assign(change=2.0)
    with pytest.raises(ModelError, match="no variability in change at week6") as info:
        fit_ancova(flat, **_args(visit_order=["week6", "week12"]))  # type: ignore[arg-type]
    assert "no variability in change at week12" in str(info.value)

    control = rows["arm"] == "usual care"
    split = rows.assign(
        change=rows["change"]
        .mask(control & (rows["visit"] == "week6"))
        .mask(~control & (rows["visit"] == "week12"))
    )
    with pytest.raises(ModelError, match="could not be fitted at any visit"):
        fit_ancova(split, **_args(visit_order=["week6", "week12"]))  # type: ignore[arg-type]


def _fit_options(rows: pd.DataFrame, meta: pd.Series, **kwargs: object):
    args: dict[str, object] = {
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "covariates": meta["covariates"].split(";"),
        "reference_arm": meta["control"],
    }
    args.update(kwargs)
    return fit_ancova(rows, **args)  # type: ignore[arg-type]


def test_value_response_gives_the_change_effects_and_shifted_lsmeans() -> None:
    # With baseline as a covariate, value = change + baseline: same arm effect, LS means shifted
    # by the mean baseline of the rows at that visit.
    rows, meta = _post_baseline("sim_catcov", "function")
    change = _fit_options(rows, meta, response="change", baseline="baseline")
    value = _fit_options(rows, meta, response="value", baseline="baseline")
    np.testing.assert_allclose(value.effects["estimate"], change.effects["estimate"], rtol=1e-10)
    np.testing.assert_allclose(value.effects["std_error"], change.effects["std_error"], rtol=1e-10)
    shift = rows.dropna(subset=["change"]).groupby("visit")["baseline"].mean()
    expected = change.lsmeans["estimate"] + change.lsmeans["visit"].map(shift).to_numpy()
    np.testing.assert_allclose(value.lsmeans["estimate"], expected, rtol=1e-10)


def test_no_baseline_and_proportional_weights_match_statsmodels_ols() -> None:
    rows, meta = _post_baseline("sim_catcov", "function")
    fit = _fit_options(rows, meta, response="value", baseline=None, lsmeans_weights="proportional")
    assert "baseline" not in fit.info["formula"]
    at = rows.loc[(rows["visit"] == "week12") & rows["value"].notna()].copy()
    ols = smf.ols("value ~ age + C(Site) + C(sex) + C(arm, Treatment('usual care'))", at).fit()
    effect = fit.effects.set_index("visit").loc["week12"]
    arm_term = "C(arm, Treatment('usual care'))[T.exercise]"
    assert effect["estimate"] == pytest.approx(ols.params[arm_term], rel=1e-10)
    assert effect["std_error"] == pytest.approx(ols.bse[arm_term], rel=1e-10)
    # Proportional weights: the LS mean is the average prediction over the rows with the arm
    # set (additive model, so factor levels enter with their observed shares).
    for arm in ("usual care", "exercise"):
        predicted = ols.predict(at.assign(arm=arm)).mean()
        ls = fit.lsmeans.set_index(["visit", "arm"]).loc[("week12", arm), "estimate"]
        assert ls == pytest.approx(predicted, rel=1e-10)
