"""The sensitivity tables of a trial: contract, strategies that cannot apply, populations.

Numbers are checked against R in tests/stats/test_refbased_reference.py; here the bundled
exercise-versus-education trial runs through :func:`analyse_sensitivity` with a few imputations
to check what each row says.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from trialflow.analysis import analyse_trial, mean_spec, outcome_data, outcome_plan
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive, per_protocol_flags
from trialflow.errors import DataError
from trialflow.sensitivity import (
    SENSITIVITY_COLUMNS,
    _fit_primary,
    analyse_sensitivity,
    default_deltas,
    tipping_delta,
)
from trialflow.stats.responders import nnt, responder

from .conftest import ROOT


@pytest.fixture(scope="module")
def bundled():
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    return trial, d.adeff, d.adsl


def _quick(trial, **sensitivity):
    settings = {
        **trial.sensitivity,
        "imputations": 20,
        "methods": ["multiple_imputation", "conditional_mean"],
        **sensitivity,
    }
    return replace(trial, outcomes=trial.outcomes[:1], sensitivity=settings)


def test_a_strategy_that_cannot_apply_gets_rows_with_the_reason(bundled) -> None:
    trial, adeff, adsl = bundled
    quick = _quick(trial, strategies=["mar", "last_mean_carried_forward"])
    result = analyse_sensitivity(adeff, adsl, quick)
    table = result.table
    assert tuple(table.columns) == SENSITIVITY_COLUMNS
    lmcf = table.loc[table["strategy"] == "last_mean_carried_forward"]
    # Four subjects dropped out before any post-baseline visit: LMCF has no mean to carry.
    assert len(lmcf) == 2 * 4 and lmcf["estimate"].isna().all()
    assert lmcf["note"].str.startswith("not run: last mean carried forward").all()
    mar = table.loc[table["strategy"] == "mar"]
    assert len(mar) == 2 * 4 and mar["estimate"].notna().all()


def test_without_dropout_every_strategy_equals_mar(bundled) -> None:
    trial, adeff, adsl = bundled
    pain = adeff.loc[adeff["outcome"] == "pain_vas"]
    keep = set(pain.loc[(pain["visit"] == trial.final_visit) & pain["value"].notna(), "subject_id"])
    result = analyse_sensitivity(
        adeff.loc[adeff["subject_id"].isin(keep)],
        adsl.loc[adsl["subject_id"].isin(keep)],
        _quick(trial),
    )
    table = result.table.loc[result.table["method"] == "conditional_mean"]
    by_strategy = table.pivot(index="visit", columns="strategy", values="estimate")
    for strategy in ("jump_to_reference", "copy_reference", "copy_increments_from_reference"):
        assert np.allclose(by_strategy[strategy], by_strategy["mar"], rtol=0, atol=1e-12)
    assert table["note"].str.contains("no subject dropped out").all()


def test_per_protocol_and_completers_refit_on_their_subjects(bundled) -> None:
    trial, adeff, adsl = bundled
    adsl = adsl.copy()
    adsl["per_protocol"] = np.where(np.arange(len(adsl)) % 5 == 0, "N", "Y")
    quick = _quick(trial, methods=[], strategies=[], per_protocol={"column": "x", "include": [1]})
    table = analyse_sensitivity(adeff, adsl, quick).table
    pp = table.loc[table["strategy"] == "per_protocol"]
    assert set(pp["method"]) == {"mmrm", "ancova"}
    members = set(adsl.loc[adsl["per_protocol"] == "Y", "subject_id"])
    assert pp["note"].str.startswith(f"{len(members)} subjects").all()
    completers = table.loc[table["strategy"] == "completers"]
    at = adeff.loc[(adeff["outcome"] == "pain_vas") & (adeff["visit"] == trial.primary_visit)]
    n_complete = int(at["value"].notna().sum())
    assert completers["note"].str.startswith(f"{n_complete} subjects").all()
    ancova = completers.loc[completers["method"] == "ancova"].set_index("visit")
    assert ancova.at[trial.primary_visit, "n"] == n_complete


def test_per_protocol_flags_follow_the_rule(tiny) -> None:
    trial = tiny.load()
    subjects = pd.DataFrame({"subject_id": ["a", "b", "c", "d"], "adh": ["Yes", "no", None, "YES"]})
    include = per_protocol_flags(subjects, {"column": "adh", "include": ["yes"]}, trial)
    assert list(include) == ["Y", "N", "N", "Y"]
    exclude = per_protocol_flags(subjects, {"column": "adh", "exclude": ["no"]}, trial)
    assert list(exclude) == ["Y", "N", "N", "Y"]  # a missing value is never per protocol
    with pytest.raises(DataError, match="per-protocol column 'adherence'"):
        per_protocol_flags(subjects, {"column": "adherence", "include": ["yes"]}, trial)


def test_tipping_delta_is_where_the_p_value_reaches_alpha() -> None:
    # Estimate -1 - 0.4 delta * harm(+1) direction: -1 + 0.4 delta; SE 0.3, normal reference.
    def at(shift: float) -> tuple[float, float, float]:
        return -1.0 + 0.4 * shift, 0.3, float("inf")

    tip, why = tipping_delta(at, harm=1.0, alpha=0.05)
    assert why == ""
    expected = (1.0 - stats.norm.ppf(0.975) * 0.3) / 0.4
    assert abs(tip - expected) < 1e-8
    # Not significant at 0: no tipping needed; favouring control: none.
    assert tipping_delta(lambda s: (-0.1 + s, 0.3, 30.0), 1.0, 0.05) == (
        0.0, "not significant without delta adjustment",
    )  # fmt: skip
    tip, why = tipping_delta(lambda s: (1.0 + 0.4 * s, 0.3, 30.0), 1.0, 0.05)
    assert np.isnan(tip) and "favours the control arm" in why


def test_default_delta_grid_spans_half_the_outcome_range(bundled) -> None:
    trial, _, _ = bundled
    grid = default_deltas(trial.outcome("pain_vas"), 21)
    assert grid[0] == 0 and grid[-1] == 5.0 and len(grid) == 21


def test_responder_definitions_and_nnt_interval() -> None:
    change = np.array([-3.0, -1.0, np.nan, 0.5])
    baseline = np.array([6.0, 2.0, 5.0, 0.0])
    assert np.array_equal(
        responder(change, baseline, "percent", 50, lower_is_better=True),
        [1.0, 1.0, np.nan, 0.0],
        equal_nan=True,
    )
    assert np.array_equal(
        responder(change, baseline, "change", 2, lower_is_better=True),
        [1.0, 0.0, np.nan, 0.0],
        equal_nan=True,
    )
    # Altman (BMJ 1998): RD 0.1 (-0.05 to 0.25) gives NNTB 10 (NNTB 4 to infinity to NNTH 20).
    number = nnt(0.1, -0.05, 0.25)
    assert number.value == pytest.approx(10) and number.lower == pytest.approx(4)
    assert number.upper == pytest.approx(-20)
    assert number.text == "NNTB 10.0 (NNTB 4.0 to infinity to NNTH 20.0)"
    assert nnt(0.2, 0.05, 0.35).text == "NNTB 5.0 (NNTB 2.9 to NNTB 20.0)"


def test_a_reference_arm_without_data_at_a_visit_is_reported_not_fatal(bundled) -> None:
    trial, adeff, adsl = bundled
    gone = (adeff["outcome"] == "pain_vas") & (adeff["arm"] == trial.control)
    gone &= adeff["visit"] == "week18"
    broken = adeff.copy()
    broken.loc[gone, ["value", "change", "pct_change"]] = np.nan
    quick = replace(_quick(trial), outcomes=trial.outcomes[:2])
    result = analyse_sensitivity(broken, adsl, quick)
    table = result.table
    pain = table.loc[
        (table["outcome"] == "pain_vas")
        & table["method"].isin(["multiple_imputation", "conditional_mean"])
    ]
    assert pain["estimate"].isna().all()
    assert pain["note"].str.contains("not run: primary MMRM: arm 'education' has no observed").all()
    other = table.loc[table["outcome"] == "knee_strength", "estimate"]
    assert other.notna().all()
    assert result.records["pain_vas"]["reason"].startswith("arm 'education'")


@pytest.mark.parametrize("covariance", ["us", "cs", "toep"])
def test_the_imputation_model_is_the_trials_primary_mmrm(bundled, covariance: str) -> None:
    """README, "Estimand and missing-data sensitivity analyses": "The imputation model is the
    primary MMRM (the trial's mean model and covariance)": the covariance the trial states is
    the one the imputations are drawn from, with the primary MMRM's optimum."""
    trial, adeff, adsl = bundled
    trial = replace(trial, analysis={**trial.analysis, "covariance": covariance})
    outcome = trial.outcomes[0]
    plan = outcome_plan(outcome_data(adeff, adsl, trial, outcome), trial, mean_spec(trial.options))
    imputation = _fit_primary(plan, outcome).choice.fit
    assert imputation.structure.code == covariance
    primary = analyse_trial(adeff, adsl, replace(trial, outcomes=(outcome,)))
    info = primary.models[outcome.name]["mmrm"]["info"]
    assert info["covariance_used"] == covariance
    assert_allclose(imputation.evaluation.deviance, -2 * info["loglik"], rtol=1e-10)


@pytest.mark.parametrize(("better", "sign"), [("lower", 1.0), ("higher", -1.0)])
def test_the_delta_worsens_the_treatment_arm_in_the_outcomes_direction_of_harm(
    bundled, better: str, sign: float
) -> None:
    """README, "Estimand and missing-data sensitivity analyses": the delta is added "in the
    outcome's unit and the direction of harm" -- up where lower is better, down where higher
    is better, so the treatment effect moves towards harm as the delta grows."""
    trial, adeff, adsl = bundled
    pain = replace(trial.outcomes[0], better=better)
    quick = replace(
        _quick(trial, methods=["conditional_mean"], strategies=["mar"]), outcomes=(pain,)
    )
    tipping = analyse_sensitivity(adeff, adsl, quick).tipping
    at_primary = tipping.loc[tipping["visit"] == trial.primary_visit].sort_values("delta")
    assert len(at_primary) > 2 and at_primary["delta"].iloc[-1] > 0
    steps = np.diff(at_primary["estimate"].to_numpy()) * sign
    assert (steps > 0).all()


def test_each_outcome_draws_its_own_imputations(bundled) -> None:
    """README, "Estimand and missing-data sensitivity analyses": "Every imputation has its own
    random stream derived from seed, the outcome and its number": two outcomes with the same
    data get different multiple imputations (and the same deterministic conditional mean)."""
    trial, adeff, adsl = bundled
    pain = trial.outcomes[0]
    twin = replace(pain, name="pain_twin", primary=False)
    rows = adeff.loc[adeff["outcome"] == pain.name]
    both = pd.concat([rows, rows.assign(outcome=twin.name)], ignore_index=True)
    quick = replace(_quick(trial, strategies=["mar"], imputations=5), outcomes=(pain, twin))
    table = analyse_sensitivity(both, adsl, quick).table
    at = table.loc[table["visit"] == trial.primary_visit].set_index(["method", "outcome"])
    mi = at.loc["multiple_imputation", "estimate"]
    cm = at.loc["conditional_mean", "estimate"]
    assert mi[pain.name] != mi[twin.name]
    assert cm[pain.name] == cm[twin.name]
