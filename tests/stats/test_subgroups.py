"""Subgroup analyses of the MMRM against R.

Reference program: tests/reference/make_subgroup_references.R, part B (nlme::gls with
``change ~ baseline + other covariates + arm * S * visit``, unstructured covariance, REML at a
Newton-polished optimum, precise Satterthwaite df); outputs subgroup_effects.csv and
subgroup_interaction.csv. For a numeric subgroup cut at 65 the continuous covariate stays in
the model beside the groups "<65" and ">=65".

Tolerances (relative): estimate and SE 1e-5, df 1e-4, interaction F 1e-5 and its df 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from numpy.testing import assert_allclose

from trialflow.stats.subgroups import SUBGROUP_COLUMNS, cut_labels, fit_subgroup

REF = Path(__file__).resolve().parents[1] / "reference"
EFFECTS = pd.read_csv(REF / "output" / "subgroup_effects.csv", dtype={"level": str})
TESTS = pd.read_csv(REF / "output" / "subgroup_interaction.csv")
SETTINGS = {
    "sim_dropout": ("placebo", ["age"], ["week4", "week8", "week12"]),
    "sim_catcov": ("usual care", ["age", "Site", "sex"], ["week6", "week12"]),
    "exercise_education": ("education", ["age", "sex"], ["week6", "week12", "week18", "week26"]),
}


def _subgroup(dataset: str, outcome: str, subgroup: str) -> pd.DataFrame:
    control, covariates, visits = SETTINGS[dataset]
    data = pd.read_csv(REF / "data" / f"{dataset}.csv")
    rows = data.loc[(data["outcome"] == outcome) & data["visit"].isin(visits)]
    if subgroup == "age_group":
        labels, levels = cut_labels(rows["age"], [65])
        others = covariates
    else:
        labels = rows[subgroup].astype(str)
        levels = sorted(labels.unique())
        others = [c for c in covariates if c != subgroup]
    return fit_subgroup(
        rows.assign(_group=labels),
        name=subgroup,
        column="_group",
        levels=levels,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=others,
        reference_arm=control,
        visit_order=visits,
        primary_visit=visits[-1],
    )


CASES = sorted(
    TESTS[["dataset", "outcome", "subgroup"]].drop_duplicates().itertuples(index=False, name=None)
)


@pytest.mark.parametrize(("dataset", "outcome", "subgroup"), CASES)
def test_subgroup_effects_and_interaction_match_r(
    dataset: str, outcome: str, subgroup: str
) -> None:
    ours = _subgroup(dataset, outcome, subgroup)
    assert list(ours.columns) == list(SUBGROUP_COLUMNS)
    primary = SETTINGS[dataset][2][-1]
    want = EFFECTS.loc[
        (EFFECTS["dataset"] == dataset)
        & (EFFECTS["outcome"] == outcome)
        & (EFFECTS["subgroup"] == subgroup)
        & (EFFECTS["visit"] == primary)
    ]
    both = want.merge(ours, on=["level", "visit"], suffixes=("_r", ""))
    assert len(both) == len(want) == len(ours)
    assert_allclose(both["estimate"], both["estimate_r"], rtol=1e-5)
    assert_allclose(both["std_error"], both["std_error_r"], rtol=1e-5)
    assert_allclose(both["df"], both["df_r"], rtol=1e-4)
    assert_allclose(both["ci_lower"], both["ci_lower_r"], rtol=1e-5, atol=1e-6)
    assert (both["n"] == both["n_r"]).all()
    test = TESTS.loc[
        (TESTS["dataset"] == dataset)
        & (TESTS["outcome"] == outcome)
        & (TESTS["subgroup"] == subgroup)
        & (TESTS["test"] == "primary_visit")
    ].iloc[0]
    assert (ours["interaction_num_df"] == test["num_df"]).all()
    assert_allclose(ours["interaction_F"], test["F"], rtol=1e-5)
    assert_allclose(ours["interaction_den_df"], test["den_df"], rtol=1e-4)


def test_a_level_without_an_arm_is_not_estimable_and_the_rest_still_fit() -> None:
    control, _covariates, visits = SETTINGS["sim_catcov"]
    data = pd.read_csv(REF / "data" / "sim_catcov.csv")
    rows = data.loc[(data["outcome"] == "function") & data["visit"].isin(visits)]
    # Site C loses its control participants: its effect cannot be estimated.
    rows = rows.loc[~((rows["Site"] == "C") & (rows["arm"] == control))]
    table = fit_subgroup(
        rows.assign(_group=rows["Site"]),
        name="Site",
        column="_group",
        levels=["A", "B", "C"],
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=["age", "sex"],
        reference_arm=control,
        visit_order=visits,
        primary_visit="week12",
    )
    by_level = table.set_index("level")
    assert by_level.loc["C", "note"].startswith("not estimable: no participant of arm")
    assert pd.isna(by_level.loc["C", "estimate"])
    assert by_level.loc[["A", "B"], "estimate"].notna().all()
    assert (by_level.loc[["A", "B"], "interaction_num_df"] == 1).all()


def test_fewer_than_two_estimable_levels_never_stops() -> None:
    control, _covariates, visits = SETTINGS["sim_catcov"]
    data = pd.read_csv(REF / "data" / "sim_catcov.csv")
    rows = data.loc[(data["outcome"] == "function") & data["visit"].isin(visits)]
    rows = rows.loc[rows["sex"] == "F"]
    table = fit_subgroup(
        rows.assign(_group=rows["sex"]),
        name="sex",
        column="_group",
        levels=["F", "M"],
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=["age", "Site"],
        reference_arm=control,
        visit_order=visits,
        primary_visit="week12",
    )
    assert table["estimate"].isna().all()
    assert (
        table.set_index("level").loc["M", "note"] == "not estimable: no participant in this level"
    )
    assert table.set_index("level").loc["F", "note"].startswith("not estimable: fewer than two")


def test_cut_labels_put_a_value_on_the_cut_in_the_upper_group() -> None:
    labels, levels = cut_labels(pd.Series([64.9, 65.0, None, 80.0]), [65])
    assert levels == ["<65", ">=65"]
    assert labels.tolist() == ["<65", ">=65", None, ">=65"]
    labels, levels = cut_labels(pd.Series([10, 55, 70]), [65, 50])
    assert levels == ["<50", "50 to <65", ">=65"]
    assert labels.tolist() == ["<50", "50 to <65", ">=65"]
