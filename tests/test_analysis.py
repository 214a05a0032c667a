"""The analysis plan on whole trials: output contract, multiplicity, failure isolation, and
agreement of the workflow's tables with the R references for the bundled trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

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


def test_holm_across_secondary_outcomes_at_primary_visit(bundled) -> None:
    trial, _, result = bundled
    eff = result.effects
    primary = {o.name for o in trial.primary_outcomes}
    for analysis in ("mmrm", "lmm", "ancova"):
        rows = eff.loc[(eff["analysis"] == analysis) & (eff["visit"] == trial.primary_visit)]
        prim = rows.loc[rows["outcome"].isin(primary)]
        np.testing.assert_array_equal(prim["p_adjusted"], prim["p_value"])
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
