"""The simulator: bundled data regenerate byte for byte; dropout mechanisms behave."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from trialflow.config import load_yaml
from trialflow.simulate import simulate, write_trial

from .conftest import ROOT


@pytest.mark.parametrize("name", ["exercise_education", "weightbearing"])
def test_bundled_data_regenerate_byte_for_byte(tmp_path, name: str) -> None:
    scenario = load_yaml(ROOT / "config" / "scenarios" / f"{name}.yaml")
    for path in write_trial(simulate(scenario), tmp_path):
        committed = ROOT / "data" / "raw" / name / path.name
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs"


def test_bundled_sizes_match_the_published_trials() -> None:
    ee = simulate(load_yaml(ROOT / "config" / "scenarios" / "exercise_education.yaml"))
    assert ee.subjects["arm"].str.strip().str.lower().value_counts().to_dict() == {
        "exercise": 28,
        "education": 26,
    }
    wb = simulate(load_yaml(ROOT / "config" / "scenarios" / "weightbearing.yaml"))
    assert wb.subjects["Group"].str.strip().value_counts().to_dict() == {
        "weightbearing": 15,
        "nonweightbearing": 14,
    }


def _big_scenario(mechanism: str) -> dict:
    scenario = load_yaml(ROOT / "config" / "scenarios" / "exercise_education.yaml")
    scenario = copy.deepcopy(scenario)
    scenario["n"] = {"education": 3000, "exercise": 3000}
    scenario["dropout"]["mechanism"] = mechanism
    scenario["dropout"]["rate"] = {"education": 0.2, "exercise": 0.4}
    scenario["anomalies"] = {}
    scenario["sporadic_missing"] = 0.0
    return scenario


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR", "MNAR"])
def test_dropout_rates_by_arm(mechanism: str) -> None:
    trial = simulate(_big_scenario(mechanism))
    completed = trial.visits.loc[trial.visits["visit"] == "week26", "subject_id"]
    arm = trial.subjects.set_index("subject_id")["arm"]
    rate = 1 - completed.map(arm).value_counts() / arm.value_counts()
    tolerance = 0.03 if mechanism == "MCAR" else 0.12  # informative dropout shifts the rate
    assert rate["education"] == pytest.approx(0.2, abs=tolerance)
    assert rate["exercise"] == pytest.approx(0.4, abs=tolerance)


def test_mar_dropout_depends_on_observed_pain() -> None:
    trial = simulate(_big_scenario("MAR"))
    v = trial.visits
    base = v.loc[v["visit"] == "baseline"].set_index("subject_id")["Pain VAS"].astype(float)
    completed = set(v.loc[v["visit"] == "week26", "subject_id"])
    done = base.index.isin(completed)
    assert base[~done].mean() > base[done].mean() + 0.3


def test_same_seed_same_data_other_seed_other_data() -> None:
    scenario = load_yaml(ROOT / "config" / "scenarios" / "weightbearing.yaml")
    a, b = simulate(scenario), simulate(scenario)
    assert a.visits.equals(b.visits)
    scenario["seed"] += 1
    c = simulate(scenario)
    assert not np.array_equal(a.visits["6MWD"].to_numpy(), c.visits["6MWD"].to_numpy())
