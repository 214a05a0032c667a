"""Trial description validation (schema + consistency checks)."""

from __future__ import annotations

import dataclasses

import pytest

from trialflow.config import load_trial, trial_names
from trialflow.errors import ConfigError
from trialflow.estimand import DROPOUT_EVENT, estimand

from .conftest import ROOT, TinyTrial


@pytest.mark.parametrize("name", ["exercise_education", "weightbearing"])
def test_bundled_trials_load(name: str) -> None:
    trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml")
    assert trial.name == name
    assert trial.primary_visit in trial.visit_labels
    assert trial.primary_outcomes
    assert trial.post_baseline_visits[0].index == 1


def test_defaults_filled(tiny: TinyTrial) -> None:
    trial = tiny.load()
    assert (trial.subject_id_column, trial.arm_column, trial.visit_column) == (
        "subject_id",
        "arm",
        "visit",
    )
    assert trial.outcome("walk").column == "6MWD"
    assert trial.outcome("pain").column == "pain"
    assert trial.outcome("walk").domain == "function"
    assert trial.arms == ("control", "exercise")


def test_issue_example_keys_accepted(tiny: TinyTrial) -> None:
    tiny.config["columns"] = {"subject_id": "Patient ID", "arm": "Group", "visit": "Visit Name"}
    tiny.config["covariates"] = ["Age (years)", {"name": "Sex", "type": "categorical"}]
    trial = tiny.load()
    assert trial.subject_id_column == "Patient ID"
    assert [c.name for c in trial.covariates] == ["Age (years)", "Sex"]
    assert trial.covariates[1].type == "categorical"


def _expect_error(tiny: TinyTrial, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        tiny.load()
    text = str(info.value)
    assert "tiny.yaml" in text
    for fragment in fragments:
        assert fragment in text, text
    return info.value


def test_unknown_key_suggests_the_right_one(tiny: TinyTrial) -> None:
    tiny.config["primary_vist"] = "week12"
    _expect_error(tiny, "primary_vist", "did you mean 'primary_visit'")


def test_missing_required_key(tiny: TinyTrial) -> None:
    del tiny.config["arms"]
    _expect_error(tiny, "'arms' is a required property")


def test_range_min_above_max(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][0]["range"] = [10, 0]
    _expect_error(tiny, "outcomes[0].range", "min 10 is not below max 0")


def test_primary_visit_not_among_visits(tiny: TinyTrial) -> None:
    tiny.config["primary_visit"] = "week24"
    _expect_error(tiny, "primary_visit", "'week24' is not one of the visits")


def test_primary_visit_must_follow_baseline(tiny: TinyTrial) -> None:
    tiny.config["primary_visit"] = "baseline"
    _expect_error(tiny, "must come after the baseline visit")


def test_visits_in_time_order(tiny: TinyTrial) -> None:
    tiny.config["visits"][2]["week"] = 3
    _expect_error(tiny, "visits[2]", "increasing weeks")


def test_duplicate_visit_label(tiny: TinyTrial) -> None:
    tiny.config["visits"][2]["label"] = "week6"
    _expect_error(tiny, "listed twice")


def test_same_arm_labels(tiny: TinyTrial) -> None:
    tiny.config["arms"]["treatment"] = "control"
    _expect_error(tiny, "same label")


def test_no_primary_outcome(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][0]["primary"] = False
    _expect_error(tiny, "primary: true")


def test_outcome_name_must_be_identifier(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][0]["name"] = "pain; import os"
    _expect_error(tiny, "outcomes[0].name", "does not match")


@pytest.mark.parametrize("name", ["week", "arm", "change", "baseline", "Visit"])
def test_reserved_outcome_names_are_refused(tiny: TinyTrial, name: str) -> None:
    tiny.config["outcomes"][0]["name"] = name
    _expect_error(tiny, "is the name of a column of the analysis datasets")


def test_duplicate_outcome_column(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][1]["column"] = "pain"
    _expect_error(tiny, "outcome column 'pain' is used twice")


def test_arm_cannot_be_a_covariate(tiny: TinyTrial) -> None:
    tiny.config["covariates"] = ["arm"]
    _expect_error(tiny, "subject or arm column")


def test_invalid_yaml_names_the_line(tiny: TinyTrial) -> None:
    path = tiny.write()
    path.write_text("title: [unclosed\nother: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"row \d+: not valid YAML"):
        load_trial(path)


def test_missing_trial_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="trial description not found"):
        load_trial(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (" a , b ,a", ["a", "b"]),
        (["x", "y"], ["x", "y"]),
    ],
)
def test_trial_names(value, expected) -> None:
    assert trial_names(value) == expected


@pytest.mark.parametrize("value", ["../escape", "a/b", "x,../y", ".hidden"])
def test_trial_names_cannot_leave_the_trials_folder(value) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        trial_names(value)


def test_trial_names_empty() -> None:
    with pytest.raises(ConfigError, match="no trial to run"):
        trial_names(" , ")


@pytest.mark.parametrize(
    ("analysis", "key", "fix"),
    [
        (
            {"covariates_by_visit": ["height"]},
            "analysis.covariates_by_visit",
            "add it to covariates",
        ),
        ({"subgroups": ["site"]}, "analysis.subgroups[0]", "list the subgroup variable"),
        ({"subgroups": [{"name": "height", "cut": [160]}]}, "analysis.subgroups[0]", "covariates"),
    ],
)
def test_analysis_options_name_known_covariates(
    tiny: TinyTrial, analysis: dict, key: str, fix: str
) -> None:
    tiny.config["analysis"] = analysis
    error = _expect_error(tiny, key, fix)
    assert "age, sex" in str(error)


@pytest.mark.parametrize("analysis", [{"baseline": "by_visit"}, {"covariates_by_visit": ["age"]}])
def test_visit_interactions_need_two_post_baseline_visits(tiny: TinyTrial, analysis: dict) -> None:
    tiny.config["visits"] = [{"label": "baseline", "week": 0}, {"label": "week12", "week": 12}]
    tiny.config["analysis"] = {"response": "value", **analysis}
    _expect_error(tiny, "at least two post-baseline visits", "use baseline: main")


def test_analysis_plan_options_have_defaults_and_are_kept(tiny: TinyTrial) -> None:
    defaults = tiny.load().options
    assert (defaults["response"], defaults["baseline"], defaults["df"]) == (
        "change",
        "main",
        "satterthwaite",
    )
    assert defaults["covariates_by_visit"] == () and defaults["subgroups"] == ()
    assert defaults["lsmeans_weights"] == "equal"
    tiny.config["analysis"] = {
        "response": "value",
        "baseline": "by_visit",
        "covariates_by_visit": ["age"],
        "lsmeans_weights": "proportional",
        "df": "kenward_roger_linear",
        "covariance": "sp_pow",
        "subgroups": ["sex", {"name": "age", "cut": [60]}],
    }
    opts = tiny.load().options
    assert opts["subgroups"] == ({"name": "sex", "cut": []}, {"name": "age", "cut": [60]})
    assert opts["df"] == "kenward_roger_linear" and opts["covariance"] == "sp_pow"


@pytest.mark.parametrize(
    ("analysis", "key"),
    [
        ({"df": "kr"}, "analysis.df"),
        ({"baseline": "visit"}, "analysis.baseline"),
        ({"lsmeans_weights": "om"}, "analysis.lsmeans_weights"),
    ],
)
def test_unknown_option_values_are_refused_by_the_schema(
    tiny: TinyTrial, analysis: dict, key: str
) -> None:
    tiny.config["analysis"] = analysis
    _expect_error(tiny, key)


@pytest.mark.parametrize("group", [{"name": "age"}, {"name": "age", "cut": "65"}, {"cut": [1]}])
def test_a_malformed_subgroup_shows_both_forms(tiny: TinyTrial, group: dict) -> None:
    tiny.config["analysis"] = {"subgroups": [group]}
    _expect_error(tiny, "analysis.subgroups[0]", "{name: age, cut: [65]}")


@pytest.mark.parametrize(
    ("block", "key", "fix"),
    [
        ({"sensitivity": {"responders": {"pian": [{"change": 2}]}}},
         "sensitivity.responders.pian", "outcome"),
        ({"sensitivity": {"tipping_point": {"deltas": {"walking": [1, 2]}}}},
         "sensitivity.tipping_point.deltas.walking", "outcome"),
        ({"sensitivity": {"per_protocol": {"column": "adherent"}}},
         "sensitivity.per_protocol", "include"),
        ({"sensitivity": {"per_protocol": {"column": "a", "include": [1], "exclude": [0]}}},
         "sensitivity.per_protocol", "exclude"),
        ({"estimand": {"variable": {"visit": "baseline"}}}, "estimand.variable.visit",
         "post-baseline"),
        ({"estimand": {"variable": {"outcome": "walking"}}}, "estimand.variable.outcome",
         "outcome"),
    ],
)  # fmt: skip
def test_sensitivity_and_estimand_keys_are_checked(
    tiny: TinyTrial, block: dict, key: str, fix: str
) -> None:
    tiny.config.update(block)
    _expect_error(tiny, key, fix)


@pytest.mark.parametrize(
    "block",
    [
        {"strategies": ["mar", "jump_to_refernce"]},
        {"methods": ["bootstrap"]},
        {"imputations": 1},
        {"responders": {"pain": [{"percent": 30, "change": 2}]}},
        {"responders": {"pain": [{"ratio": 2}]}},
    ],
)
def test_sensitivity_values_are_validated_by_the_schema(tiny: TinyTrial, block: dict) -> None:
    tiny.config["sensitivity"] = block
    with pytest.raises(ConfigError, match="sensitivity"):
        tiny.load()


def test_sensitivity_defaults() -> None:
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    s = trial.sensitivity
    assert s["strategies"] == ["mar", "jump_to_reference", "copy_reference",
                               "copy_increments_from_reference"]  # fmt: skip
    assert s["methods"] == ["multiple_imputation", "conditional_mean"]
    assert s["imputations"] == 500 and s["seed"] == 20261201
    assert s["tipping_point"] == {"strategy": "mar", "points": 21}


def test_the_default_estimand_handles_dropout_hypothetically() -> None:
    """README, "Estimand and missing-data sensitivity analyses": without an ``estimand:``
    block the primary estimand treats dropout by the hypothetical strategy (what the MMRM
    estimates under MAR)."""
    trial = dataclasses.replace(
        load_trial(ROOT / "config" / "trials" / "weightbearing.yaml"), estimand={}
    )
    events = estimand(trial).events
    assert [(e.event, e.strategy) for e in events] == [(DROPOUT_EVENT, "hypothetical")]
