"""ADSL, ADEFF and the CONSORT flow: shapes, definitions and reconciliation."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from trialflow.clean import read_and_clean
from trialflow.derive import ADEFF_COLUMNS, FLOW_COLUMNS, check_reconciliation, derive
from trialflow.errors import TrialflowError

from .conftest import TinyTrial


@pytest.fixture
def derived(tiny: TinyTrial):
    # S05 is randomized but never attended; S03 withdrew after week6.
    tiny.subjects.append({"subject_id": "S05", "arm": "control", "age": "50", "sex": "F"})
    tiny.visits[0]["pain"] = "0"  # baseline 0: pct_change undefined
    trial = tiny.load()
    clean = read_and_clean(trial)
    return trial, clean, derive(clean, trial)


def test_adsl_one_row_per_randomized_subject(derived) -> None:
    _, _, d = derived
    adsl = d.adsl.set_index("subject_id")
    assert list(adsl.index) == ["S01", "S02", "S03", "S04", "S05"]
    assert (adsl["itt"] == "Y").all()
    assert adsl.loc["S05", "has_baseline"] == "N"
    assert adsl.loc["S05", "n_visits"] == 0
    assert pd.isna(adsl.loc["S05", "last_visit"])
    assert adsl.loc["S03", "last_visit"] == "week6"
    assert adsl.loc["S03", "last_week"] == 6.0
    assert adsl.loc["S03", "completed"] == "N" and adsl.loc["S03", "withdrawn"] == "Y"
    assert adsl.loc["S01", "completed"] == "Y"
    assert adsl.loc["S02", "age"] == 55.0 and adsl.loc["S02", "sex"] == "M"


def test_adeff_is_the_full_grid(derived) -> None:
    trial, _, d = derived
    assert tuple(d.adeff.columns) == ADEFF_COLUMNS
    assert len(d.adeff) == 5 * len(trial.outcomes) * len(trial.visits)
    assert set(d.adeff["subject_id"]) == set(d.adsl["subject_id"])


@pytest.mark.parametrize(
    "edit",
    [
        lambda v: pd.concat([v, v.iloc[[0]]], ignore_index=True),  # one subject's visit twice
        lambda v: v.assign(visit=v["visit"].where(v.index != 0, "week99")),  # not scheduled
        lambda v: v.assign(subject_id=v["subject_id"].where(v.index != 0, "S99")),  # unknown
    ],
)
def test_cleaned_visits_outside_the_grid_stop_the_derivation(derived, edit) -> None:
    """ADEFF places each cleaned row in the subject-by-visit grid; a cleaned file edited by
    hand so that a row has no place, or two rows one place, stops with a message."""
    trial, clean, _ = derived
    with pytest.raises(TrialflowError, match="rerun the clean step"):
        derive(replace(clean, visits=edit(clean.visits)), trial)


def test_adeff_change_and_flags(derived) -> None:
    _, _, d = derived
    e = d.adeff.set_index(["outcome", "subject_id", "visit"])
    row = e.loc[("pain", "S02", "week12")]
    assert row["baseline"] == 7.0 and row["value"] == 5.0
    assert row["change"] == pytest.approx(-2.0)
    assert row["pct_change"] == pytest.approx(-200 / 7)
    assert row["anl01fl"] == "Y" and row["ablfl"] == ""
    base = e.loc[("pain", "S02", "baseline")]
    assert base["ablfl"] == "Y" and math.isnan(base["change"]) and base["anl01fl"] == ""
    # missed visit: row present, value missing, not analysed
    missed = e.loc[("pain", "S03", "week12")]
    assert math.isnan(missed["value"]) and missed["anl01fl"] == ""
    # baseline 0: change defined, percent change not
    zero = e.loc[("pain", "S01", "week6")]
    assert zero["change"] == pytest.approx(5.9) and math.isnan(zero["pct_change"])
    # empty cell at week12 for S04's walk
    assert math.isnan(e.loc[("walk", "S04", "week12"), "change"])


def test_flow_counts(derived) -> None:
    _, _, d = derived
    assert tuple(d.flow.columns) == FLOW_COLUMNS
    f = d.flow.set_index(["stage", "visit", "arm"])["n"]
    assert f["randomized", "", "control"] == 3 and f["randomized", "", "total"] == 5
    assert f["with_baseline", "", "control"] == 2
    assert f["attended", "week12", "total"] == 3
    assert f["completed", "", "total"] == 3 and f["withdrawn", "", "total"] == 2
    assert f["withdrawn_after", "week6", "control"] == 1
    assert f["never_attended", "", "control"] == 1


def test_reconciliation_detects_a_lost_subject(derived) -> None:
    _, clean, d = derived
    with pytest.raises(TrialflowError, match="do not reconcile"):
        check_reconciliation(d.flow, d.adsl.iloc[1:], d.adeff, clean)
    broken = d.flow.copy()
    broken.loc[(broken["stage"] == "completed") & (broken["arm"] == "control"), "n"] += 1
    with pytest.raises(TrialflowError, match="completed \\+ withdrawn"):
        check_reconciliation(broken, d.adsl, d.adeff, clean)
    # README, "Safety and reproducibility": every randomized participant is in flow.csv, so
    # the arms' randomized counts add up to the total.
    broken = d.flow.copy()
    broken.loc[(broken["stage"] == "randomized") & (broken["arm"] == "total"), "n"] += 1
    with pytest.raises(TrialflowError, match="randomized: arms do not add up"):
        check_reconciliation(broken, d.adsl, d.adeff, clean)


def test_withdrawal_reasons_are_counted(tiny: TinyTrial) -> None:
    reasons = {"S01": "", "S02": "", "S03": "moved away", "S04": " moved  away "}
    for row in tiny.subjects:
        row["Reason"] = reasons[row["subject_id"]]
    tiny.config["columns"] = {"withdrawal_reason": "Reason"}
    trial = tiny.load()
    d = derive(read_and_clean(trial), trial)
    adsl = d.adsl.set_index("subject_id")
    assert adsl.loc["S03", "withdrawal_reason"] == "moved away"
    assert adsl.loc["S01", "withdrawal_reason"] == ""  # completed: no reason
    f = d.flow.loc[d.flow["stage"] == "withdrawal_reason"]
    assert f[["arm", "n", "reason"]].values.tolist() == [
        ["control", 1, "moved away"],
        ["total", 1, "moved away"],
    ]


def test_withdrawal_without_reason_is_marked(tiny: TinyTrial) -> None:
    for row in tiny.subjects:
        row["Reason"] = ""
    tiny.config["columns"] = {"withdrawal_reason": "Reason"}
    trial = tiny.load()
    d = derive(read_and_clean(trial), trial)
    assert d.adsl.set_index("subject_id").loc["S03", "withdrawal_reason"] == "reason not recorded"


def test_screening_log_gives_the_consort_enrolment_stage() -> None:
    from trialflow.clean import read_and_clean
    from trialflow.config import load_trial
    from trialflow.derive import derive

    from .conftest import ROOT

    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    flow = derive(read_and_clean(trial, root=ROOT), trial).flow
    total = flow.loc[flow["arm"] == "total"].set_index("stage")["n"]
    # data/raw/weightbearing/screening.csv: 29 randomized and 40 excluded (24 + 9 + 5 + 2).
    assert total["assessed"] == 69 and total["excluded"] == 40 and total["randomized"] == 29
    reasons = flow.loc[flow["stage"] == "exclusion_reason"].set_index("reason")["n"].to_dict()
    assert reasons == {"Declined to participate": 9, "Did not meet inclusion criteria": 24,
                       "Unable to attend sessions": 5, "reason not recorded": 2}  # fmt: skip
