"""The analysis plan on whole trials: output contract, multiplicity, failure isolation, and
agreement of the workflow's tables with the R references for the bundled trials."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests

from trialflow import analysis as analysis_module
from trialflow.analysis import (
    ANOVA_TABLE_COLUMNS,
    EFFECT_TABLE_COLUMNS,
    LSMEAN_TABLE_COLUMNS,
    analyse_trial,
)
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive

from .conftest import ROOT

REFERENCE = ROOT / "tests" / "reference" / "output"


def replace_options(trial, **options):
    """The trial with some of its analysis options changed."""
    return dataclasses.replace(trial, analysis={**trial.analysis, **options})


@pytest.fixture(scope="module", params=["exercise_education", "weightbearing"])
def bundled(request):
    trial = load_trial(ROOT / "config" / "trials" / f"{request.param}.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    return trial, d, analyse_trial(d.adeff, d.adsl, trial)


def test_effects_contract(bundled) -> None:
    trial, _, result = bundled
    eff = result.effects
    assert tuple(eff.columns[: len(EFFECT_TABLE_COLUMNS)]) == EFFECT_TABLE_COLUMNS
    post = [v.label for v in trial.post_baseline_visits]
    expected_rows = [
        (o.name, a, v) for o in trial.outcomes for a in ("mmrm", "lmm", "ancova") for v in post
    ]
    assert list(eff[["outcome", "analysis", "visit"]].itertuples(index=False, name=None)) == (
        expected_rows
    )
    assert (eff["contrast"] == f"{trial.treatment} - {trial.control}").all()
    assert eff["converged"].all()
    assert eff[["estimate", "std_error", "df", "p_value"]].notna().all().all()
    assert (eff["ci_lower"] < eff["estimate"]).all() and (eff["estimate"] < eff["ci_upper"]).all()
    assert (eff.loc[eff["analysis"] == "ancova", "df_method"] == "residual").all()
    assert (eff.loc[eff["analysis"] != "ancova", "df_method"] == "satterthwaite").all()


def test_n_counts_subjects_observed_at_the_visit(bundled) -> None:
    _, d, result = bundled
    e = d.adeff
    analysed = e.loc[e["anl01fl"] == "Y"]
    expected = analysed.groupby(["outcome", "visit"])["subject_id"].nunique()
    ancova = result.effects.loc[result.effects["analysis"] == "ancova"]
    for row in ancova.itertuples():
        assert row.n == expected[row.outcome, row.visit]


def test_other_tables_contract(bundled) -> None:
    trial, _, result = bundled
    assert tuple(result.lsmeans.columns) == LSMEAN_TABLE_COLUMNS
    assert set(result.lsmeans["arm"]) == set(trial.arms)
    assert tuple(result.anova.columns[: len(ANOVA_TABLE_COLUMNS)]) == ANOVA_TABLE_COLUMNS
    assert result.anova.groupby("outcome")["source"].apply(list).map(tuple).unique().tolist() == [
        ("arm", "visit", "arm:visit")
    ]
    assert set(result.models) == {o.name for o in trial.outcomes}
    record = result.models[trial.outcomes[0].name]
    assert record["mmrm"]["info"]["covariance_used"] == "us"
    assert record["mmrm"]["converged"] is True


def test_holm_within_primary_and_secondary_families_at_primary_visit(bundled) -> None:
    trial, _, result = bundled
    eff = result.effects
    primary = {o.name for o in trial.primary_outcomes}
    for analysis in ("mmrm", "lmm", "ancova"):
        rows = eff.loc[(eff["analysis"] == analysis) & (eff["visit"] == trial.primary_visit)]
        prim = rows.loc[rows["outcome"].isin(primary)]
        if len(prim) == 1:  # exercise_education: one primary outcome, unadjusted
            np.testing.assert_array_equal(prim["p_adjusted"], prim["p_value"])
        else:  # weightbearing: two co-primary outcomes, Holm among themselves
            expected = multipletests(prim["p_value"], method="holm")[1]
            np.testing.assert_allclose(prim["p_adjusted"], expected, rtol=1e-12)
            assert prim["multiplicity"].str.startswith("Holm across 2 primary").all()
        sec = rows.loc[~rows["outcome"].isin(primary)]
        expected = multipletests(sec["p_value"], method="holm")[1]
        np.testing.assert_allclose(sec["p_adjusted"], expected, rtol=1e-12)
    other = eff.loc[eff["visit"] != trial.primary_visit]
    assert other["p_adjusted"].isna().all()


def test_mmrm_tables_match_r_reference(bundled) -> None:
    """The workflow's MMRM (unstructured) equals nlme::gls + emmeans on the same data.

    Reference: tests/reference/make_mmrm_references.R -> output/mmrm_effects.csv.
    Tolerances as in tests/stats/test_mmrm.py: estimate and SE 1e-4, df 1e-2.
    """
    trial, _, result = bundled
    ref = pd.read_csv(REFERENCE / "mmrm_effects.csv")
    ref = ref.loc[(ref["dataset"] == trial.name) & (ref["covariance"] == "us")]
    ours = result.effects.loc[result.effects["analysis"] == "mmrm"]
    merged = ours.merge(ref, on=["outcome", "visit"], suffixes=("", "_r"), validate="one_to_one")
    assert len(merged) == len(ours)
    np.testing.assert_allclose(merged["estimate"], merged["estimate_r"], rtol=1e-4)
    np.testing.assert_allclose(merged["std_error"], merged["std_error_r"], rtol=1e-4)
    np.testing.assert_allclose(merged["df"], merged["df_r"], rtol=1e-2)


def test_ancova_tables_match_r_reference(bundled) -> None:
    """Reference: tests/reference/make_references.R -> output/ancova_effects.csv (lm)."""
    trial, _, result = bundled
    ref = pd.read_csv(REFERENCE / "ancova_effects.csv")
    ref = ref.loc[ref["dataset"] == trial.name]
    ours = result.effects.loc[result.effects["analysis"] == "ancova"]
    merged = ours.merge(ref, on=["outcome", "visit"], suffixes=("", "_r"), validate="one_to_one")
    assert len(merged) == len(ours)
    for column in ("estimate", "std_error", "p_value"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_r"], rtol=1e-8)


def test_failed_secondary_stays_in_the_holm_family() -> None:
    from trialflow.analysis import add_multiplicity

    trial = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    effects = pd.DataFrame(
        {
            "outcome": ["pain_vas", "knee_strength", "hba1c", "vo2"],
            "analysis": "mmrm",
            "visit": "week26",
            "p_value": [0.10, 0.01, np.nan, 0.04],
        }
    )
    out = add_multiplicity(effects, trial).set_index("outcome")
    # Holm over m = 3 with the failed outcome counted as p = 1: 0.01*3, 0.04*2, (1).
    assert out.loc["knee_strength", "p_adjusted"] == pytest.approx(0.03)
    assert out.loc["vo2", "p_adjusted"] == pytest.approx(0.08)
    assert np.isnan(out.loc["hba1c", "p_adjusted"])
    assert "Holm across 3 secondary outcomes" in out.loc["vo2", "multiplicity"]
    assert "1 not estimable, counted as p = 1" in out.loc["vo2", "multiplicity"]
    assert out.loc["pain_vas", "p_adjusted"] == 0.10


def test_constant_outcome_is_not_fitted_with_a_clear_reason() -> None:
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    adeff = d.adeff.copy()
    rows = adeff["outcome"] == "hba1c"
    adeff.loc[rows & adeff["value"].notna(), "value"] = 7.0
    adeff.loc[rows, "baseline"] = adeff.loc[rows, "baseline"].where(
        adeff.loc[rows, "baseline"].isna(), 7.0
    )
    adeff.loc[rows, "change"] = adeff.loc[rows, "change"].where(adeff.loc[rows, "change"].isna(), 0)
    result = analyse_trial(adeff, d.adsl, trial)
    notes = result.effects.loc[result.effects["outcome"] == "hba1c", "note"]
    assert notes.str.contains("no variability: every value of HbA1c is 7").all()
    assert "unexpected" not in " ".join(notes)


def test_a_failing_outcome_does_not_stop_the_others() -> None:
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    adeff = d.adeff.copy()
    adeff.loc[adeff["outcome"] == "hba1c", ["value", "change"]] = np.nan
    result = analyse_trial(adeff, d.adsl, trial)
    eff = result.effects
    failed = eff.loc[eff["outcome"] == "hba1c"]
    assert len(failed) == 3 * len(trial.post_baseline_visits)
    assert failed["estimate"].isna().all() and not failed["converged"].any()
    assert failed["note"].str.startswith("not fitted: ").all()
    others = eff.loc[eff["outcome"] != "hba1c"]
    assert others["estimate"].notna().all()
    assert result.models["hba1c"]["mmrm"]["fitted"] is False


@pytest.mark.parametrize("table", ["effects", "lsmeans"])
def test_default_options_keep_the_bundled_numbers(bundled, table: str) -> None:
    # tests/reference/output/bundled_default_<table>.csv: written by
    # tests/reference/make_bundled_regression.py at commit c6aa0da (before the analysis-plan
    # options). Same data and default options must give the same numbers, to the precision of
    # the REML optimum: the fit stops at a Newton decrement of 1e-12 (mmrm.py), which leaves
    # the covariance parameters ~1e-7 from the exact optimum, so a change of arithmetic order
    # (batched pattern evaluation) moves MMRM estimates by up to ~2e-8 relative.
    trial, _, result = bundled
    pinned = pd.read_csv(REFERENCE / f"bundled_default_{table}.csv")
    pinned = pinned.loc[pinned["trial"] == trial.name].drop(columns="trial")
    keys = ["outcome", "analysis", "visit"] + (["arm"] if table == "lsmeans" else [])
    ours = getattr(result, table).merge(pinned, on=keys, suffixes=("", "_pinned"))
    assert len(ours) == len(pinned) == len(getattr(result, table))
    for column in ("estimate", "std_error"):
        assert_allclose(ours[column], ours[f"{column}_pinned"], rtol=1e-7, equal_nan=True)
    assert_allclose(ours["df"], ours["df_pinned"], rtol=1e-6, equal_nan=True)
    assert (ours["n"].fillna(-1) == ours["n_pinned"].fillna(-1)).all()


@pytest.fixture(scope="module")
def sap():
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education_sap.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    return trial, d, analyse_trial(d.adeff, d.adsl, trial)


def test_a_trial_states_its_own_analysis_plan(sap) -> None:
    # config/trials/exercise_education_sap.yaml: baseline by visit, age by visit, Kenward-Roger,
    # spatial power, proportional weights, a subgroup.
    trial, _, result = sap
    eff = result.effects
    assert set(eff.loc[eff["analysis"] == "mmrm", "df_method"]) == {"kenward_roger"}
    assert set(eff.loc[eff["analysis"] == "lmm", "df_method"]) == {"kenward_roger"}
    assert set(eff.loc[eff["analysis"] == "ancova", "df_method"]) == {"residual"}
    record = result.models["pain_vas"]["mmrm"]["info"]
    assert record["covariance_used"] == "sp_pow"
    assert record["formula"] == (
        "change ~ baseline + age + sex + arm + visit + baseline:visit + age:visit + arm:visit"
    )
    assert record["mean_model"]["baseline"] == "by_visit"
    assert "Kenward-Roger" in record["description"]
    lmm = result.models["pain_vas"]["lmm"]["info"]
    assert "age:visit" in lmm["formula"] and lmm["mean_model"]["lsmeans_weights"] == "proportional"
    t3 = result.type3
    assert list(t3.columns) == ["outcome", "analysis", "effect", "num_df", "den_df", "F",
                                "p_value", "df_method"]  # fmt: skip
    assert set(t3["analysis"]) == {"mmrm", "lmm"}
    pain = t3.loc[(t3["outcome"] == "pain_vas") & (t3["analysis"] == "mmrm")]
    assert list(pain["effect"]) == ["baseline", "age", "sex", "arm", "visit", "baseline:visit",
                                    "age:visit", "arm:visit"]  # fmt: skip
    assert (pain.set_index("effect").loc[["visit", "arm:visit"], "num_df"] == 3).all()
    lmm = t3.loc[(t3["outcome"] == "pain_vas") & (t3["analysis"] == "lmm")]
    assert list(lmm["effect"]) == ["age", "sex", "arm", "visit", "age:visit", "arm:visit"]
    assert set(lmm["df_method"]) == {"kenward_roger"}
    sub = result.subgroups
    assert set(sub["outcome"]) == {o.name for o in trial.outcomes}
    assert set(sub["subgroup"]) == {"sex", "age"}
    assert set(sub["level"]) == {"F", "M", "<65", ">=65"}
    assert (sub["visit"] == trial.primary_visit).all()
    assert sub["estimate"].notna().all()


def test_default_plan_writes_type3_for_every_outcome_and_the_stated_subgroups(bundled) -> None:
    trial, _, result = bundled
    assert set(result.type3["outcome"]) == {o.name for o in trial.outcomes}
    assert set(result.type3["df_method"]) == {"satterthwaite"}
    grouped = result.subgroups
    names = {g["name"] for g in trial.options["subgroups"]}
    assert set(grouped["subgroup"]) == names


@pytest.mark.parametrize(
    ("group", "why"),
    [
        ({"name": "sex", "cut": [1]}, "sex is not numeric; cut points apply"),
        ({"name": "age", "cut": []}, "age is numeric with"),
    ],
)
def test_a_subgroup_that_cannot_be_analysed_is_a_row_with_the_reason(group, why) -> None:
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    plan = dataclasses.replace(trial, analysis={"subgroups": [group]})
    result = analyse_trial(d.adeff, d.adsl, plan)
    rows = result.subgroups
    assert len(rows) == len(trial.outcomes)
    assert rows["note"].str.startswith(f"not analysed: {why}").all()
    assert rows["estimate"].isna().all()
    # The other analyses are untouched.
    assert result.effects["estimate"].notna().any()


def test_an_unexpected_failure_of_one_model_does_not_stop_the_others(monkeypatch) -> None:
    """README, "The analysis plan": a model that cannot be fitted "becomes rows with
    converged = False and the reason in note; the other outcomes and models still run" -- for
    any exception, not only the data limitations a ModelError names."""
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    fit_lmm = analysis_module.MODELS["lmm"]

    def broken(plan):
        if plan.data["outcome"].iloc[0] == "hba1c":
            raise KeyError("a column the model expected")
        return fit_lmm(plan)

    monkeypatch.setitem(analysis_module.MODELS, "lmm", broken)
    eff = analyse_trial(d.adeff, d.adsl, trial).effects
    failed = eff.loc[(eff["outcome"] == "hba1c") & (eff["analysis"] == "lmm")]
    assert len(failed) == len(trial.post_baseline_visits)
    assert failed["estimate"].isna().all() and not failed["converged"].any()
    assert failed["note"].str.contains("unexpected error \\(KeyError").all()
    others = eff.loc[~((eff["outcome"] == "hba1c") & (eff["analysis"] == "lmm"))]
    assert others["estimate"].notna().all()


def test_the_ancova_follows_the_trials_response(bundled) -> None:
    """README, "The analysis plan": "the ANCOVA follows the same response, baseline and
    covariates at each visit". With the baseline in the model, the arm effect is the same for
    change and value, but every LS mean of the value is the LS mean of the change plus the mean
    baseline of the rows the ANCOVA used at that visit (change = value - baseline)."""
    trial, d, result = bundled
    on_value = replace_options(trial, response="value")
    value = analyse_trial(d.adeff, d.adsl, on_value)
    keys = ["outcome", "visit", "arm"]
    ls_change = result.lsmeans.loc[result.lsmeans["analysis"] == "ancova"].set_index(keys)
    ls_value = value.lsmeans.loc[value.lsmeans["analysis"] == "ancova"].set_index(keys)
    used = d.adeff.loc[d.adeff["anl01fl"] == "Y"]
    mean_baseline = used.groupby(["outcome", "visit"])["baseline"].mean()
    shift = [mean_baseline[o, v] for o, v, _ in ls_change.index]
    assert_allclose(
        ls_value.loc[ls_change.index, "estimate"], ls_change["estimate"] + shift, rtol=1e-9
    )
    eff = ["outcome", "visit"]
    e_change = result.effects.loc[result.effects["analysis"] == "ancova"].set_index(eff)
    e_value = value.effects.loc[value.effects["analysis"] == "ancova"].set_index(eff)
    assert_allclose(e_value.loc[e_change.index, "estimate"], e_change["estimate"], rtol=1e-9)


def test_every_table_carries_the_df_method(sap) -> None:
    """README, "The analysis plan": "Every table carries df_method" -- the LS means too."""
    _, _, result = sap
    ls = result.lsmeans
    assert set(ls.loc[ls["analysis"] == "mmrm", "df_method"]) == {"kenward_roger"}
    assert set(ls.loc[ls["analysis"] == "lmm", "df_method"]) == {"kenward_roger"}
    assert set(ls.loc[ls["analysis"] == "ancova", "df_method"]) == {"residual"}
