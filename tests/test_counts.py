"""The numbers of participants the tables and the report print, counted again independently.

README, What you get: ``tables/effects.csv`` has ``n`` (participants observed at the visit) and
``n_analysed`` (participants in the model) for every analysis (``mmrm``, ``lmm``, ``ancova``)
and visit; ``lsmeans.csv``, ``subgroups.csv``, ``effect_sizes.csv`` and ``sensitivity.csv``
carry their own ``n``; the report prints them in its sentences and tables ("n in every table
and sentence", its CONSORT checklist says). The bundled trial is changed so that the
definitions differ: one participant per arm lacks a covariate (out of every adjusted model,
still in Hedges' g) and one lacks the baseline of one outcome (out of the change models, in the
LMM). The expected counts come from :mod:`tests.counting`, which reads only observed values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.report import (
    _numbers_analysed,
    _supportive,
    display_inputs,
    html_table,
    render_report,
    result_sentence,
)
from trialflow.sensitivity import analyse_sensitivity

from .conftest import ROOT
from .counting import count, expected_n, expected_n_analysed, observed_rows, report_inputs

NO_BASELINE_OUTCOME = "six_minute_walk"


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    # The number of imputations and tipping deltas does not change any n.
    trial = dataclasses.replace(
        trial,
        sensitivity={**trial.sensitivity, "imputations": 5, "tipping_point": {"points": 2}},
    )
    clean = read_and_clean(trial, root=ROOT)
    subjects, visits = clean.subjects.copy(), clean.visits.copy()
    for arm in trial.arms:  # the first participant of each arm loses the age
        subjects.loc[subjects.index[subjects["arm"] == arm][0], "Age (years)"] = np.nan
    no_baseline = subjects.loc[subjects["arm"] == trial.treatment, "subject_id"].iloc[1]
    at = (visits["subject_id"] == no_baseline) & (visits["visit"] == trial.baseline_visit)
    visits.loc[at, NO_BASELINE_OUTCOME] = np.nan
    clean = dataclasses.replace(clean, subjects=subjects, visits=visits)
    d = derive(clean, trial)
    result = analyse_trial(d.adeff, d.adsl, trial)
    inputs = report_inputs(trial, clean, d, result)
    return {
        "trial": trial,
        "d": d,
        "result": result,
        "rows": observed_rows(d.adeff, d.adsl, trial),
        "inputs": inputs,
        "no_baseline": no_baseline,
    }


def test_the_changed_trial_separates_the_definitions(run) -> None:
    """Guards the fixture itself: without these differences the tests below prove less."""
    rows, trial = run["rows"], run["trial"]
    both = rows.loc[rows["outcome"] == NO_BASELINE_OUTCOME]
    post = both["visit"] != trial.baseline_visit
    assert (both.loc[post, "value_ok"] & ~both.loc[post, "change_ok"]).any()
    assert (rows["value"].notna() & ~rows["value_ok"]).sum() > 0  # covariate exclusions
    # Both arms are observed at every visit, so one arm's count is never both arms' count.
    per_arm = count(rows, "change_ok", ["outcome", "visit", "arm"])
    assert (per_arm > 0).all() and len(per_arm) == 2 * len(trial.outcomes) * 2


def test_effects_n_counts_both_arms_observed_at_the_visit(run) -> None:
    """README: effects.csv ``n`` = participants observed at the visit, for every analysis
    (MMRM, LMM, ANCOVA) and visit; lsmeans.csv ``n`` = the same per arm."""
    rows, result = run["rows"], run["result"]
    effects = result.effects
    assert effects["n"].notna().all()
    for r in effects.itertuples():
        assert r.n == expected_n(rows, r.analysis, r.outcome, r.visit), (r.analysis, r.visit)
    flag = {"mmrm": "change_ok", "ancova": "change_ok", "lmm": "value_ok"}
    for r in result.lsmeans.itertuples():
        per_arm = count(rows, flag[r.analysis], ["outcome", "visit", "arm"])
        assert r.n == per_arm.get((r.outcome, r.visit, r.arm), 0), (r.analysis, r.visit, r.arm)


def test_effects_n_analysed_counts_the_participants_in_each_model(run) -> None:
    """README: effects.csv ``n_analysed`` = participants in the model; models/<outcome>.json
    gives the same number of subjects."""
    rows, result = run["rows"], run["result"]
    for r in result.effects.itertuples():
        expected = expected_n_analysed(rows, r.analysis, r.outcome, r.visit)
        assert r.n_analysed == expected, (r.outcome, r.analysis, r.visit)
    for outcome, record in result.models.items():
        for analysis in ("mmrm", "lmm"):
            info = record[analysis]["info"]
            assert info["n_subjects"] == expected_n_analysed(rows, analysis, outcome, ""), (
                outcome,
                analysis,
            )


def test_subgroup_and_effect_size_n(run) -> None:
    """README: subgroups.csv gives the n of each level at the primary visit (the MMRM's rows);
    effect_sizes.csv gives n per arm of the participants with a change (Hedges' g uses no
    covariate, so a participant without one still counts)."""
    rows, result, trial = run["rows"], run["result"], run["trial"]
    sex = run["d"].adsl.set_index("subject_id")["Sex"]
    at = rows.loc[rows["change_ok"] & (rows["visit"] == trial.primary_visit)]
    levels = at.assign(level=at["subject_id"].map(sex)).groupby(["outcome", "level"])
    per_level = levels["subject_id"].nunique()
    subgroups = result.subgroups
    assert len(subgroups) == 2 * len(trial.outcomes)
    for r in subgroups.itertuples():
        assert r.n == per_level[r.outcome, r.level], (r.outcome, r.level)
    # Hedges' g: a change observed (the value and the baseline value), covariates not needed.
    base = rows.loc[rows["visit"] == trial.baseline_visit].set_index(["outcome", "subject_id"])
    keys = pd.MultiIndex.from_frame(rows[["outcome", "subject_id"]])
    has_change = (
        rows["value"].notna()
        & base["value"].reindex(keys).notna().to_numpy()
        & (rows["visit"] != trial.baseline_visit)
    )
    per_arm = rows.loc[has_change].groupby(["outcome", "visit", "arm"])["subject_id"].nunique()
    g = result.effect_sizes
    assert len(g) == len(trial.outcomes) * len(trial.post_baseline_visits)
    for r in g.itertuples():
        assert r.n_treatment == per_arm[r.outcome, r.visit, trial.treatment]
        assert r.n_control == per_arm[r.outcome, r.visit, trial.control]


def test_sensitivity_n(run) -> None:
    """README: sensitivity.csv ``n`` per row. The imputation methods analyse every participant
    of the MMRM's analysis set, observed after baseline or not (baseline and covariates
    complete); completers and per protocol refit the MMRM and ANCOVA, whose ``n`` is the
    participants of that population observed at the visit."""
    rows, trial, d = run["rows"], run["trial"], run["d"]
    sens = analyse_sensitivity(d.adeff, d.adsl, trial).table
    base = rows.loc[(rows["visit"] == trial.baseline_visit) & rows["value_ok"]]
    analysis_set = base.groupby("outcome")["subject_id"].nunique()
    imputed = sens.loc[sens["method"].isin(["multiple_imputation", "conditional_mean"])]
    assert len(imputed) > 0 and imputed["estimate"].notna().all()
    for r in imputed.itertuples():
        assert r.n == analysis_set[r.outcome], (r.outcome, r.strategy, r.method)
    at_primary = rows.loc[(rows["visit"] == trial.primary_visit) & rows["value"].notna()]
    completers = set(zip(at_primary["outcome"], at_primary["subject_id"], strict=True))
    protocol = set(d.adsl.loc[d.adsl["per_protocol"] == "Y", "subject_id"])
    populations = {
        "completers": [(o, s) in completers for o, s in zip(rows["outcome"], rows["subject_id"],
                                                              strict=True)],
        "per_protocol": rows["subject_id"].isin(protocol).to_numpy(),
    }  # fmt: skip
    refits = sens.loc[sens["strategy"].isin(list(populations))]
    assert set(refits["strategy"]) == set(populations) and refits["estimate"].notna().all()
    for r in refits.itertuples():
        members = rows.loc[np.asarray(populations[r.strategy])]
        assert r.n == expected_n(members, r.method, r.outcome, r.visit), (r.strategy, r.method)


def test_report_prints_the_n_of_the_tables(run) -> None:
    """README: the report's results sentences and tables give n ("n in every table and
    sentence"): the sentence gives participants in the MMRM and observed at the visit, the
    supportive table both for every analysis, "Numbers analysed" both per arm."""
    rows, trial, inputs = run["rows"], run["trial"], run["inputs"]
    effects, lsmeans = inputs.effects, inputs.lsmeans
    shown = display_inputs(inputs)
    html = render_report(shown, root=ROOT)
    visit = trial.primary_visit
    for o in trial.outcomes:
        n = expected_n(rows, "mmrm", o.name, visit)
        analysed = expected_n_analysed(rows, "mmrm", o.name, visit)
        words = f"n = {analysed} analysed, {n} observed at {visit})"
        assert words in result_sentence(o, trial, effects, lsmeans), o.name
        assert f"n = {analysed} analysed, {n} observed at {shown.trial.primary_visit})" in html
    table = _supportive(inputs)
    assert len(table) == len(effects)
    for r, e in zip(table.to_dict("records"), effects.itertuples(), strict=True):
        assert r["n analysed"] == str(expected_n_analysed(rows, e.analysis, e.outcome, e.visit))
        assert r["n observed at visit"] == str(expected_n(rows, e.analysis, e.outcome, e.visit))
    assert str(html_table(_supportive(shown))) in html
    numbers = _numbers_analysed(inputs)
    change = rows.loc[rows["change_ok"]]
    in_model = change.groupby(["outcome", "arm"])["subject_id"].nunique()
    at_visit = change.loc[change["visit"] == visit].groupby(["outcome", "arm"])["subject_id"]
    labels = {o.label: o.name for o in trial.outcomes}
    assert len(numbers) == 2 * len(trial.primary_outcomes)
    for r in numbers.to_dict("records"):
        key = (labels[r["outcome"]], r["arm"])
        assert r["in the MMRM (any post-baseline value)"] == in_model[key], key
        assert r[f"observed at {visit}"] == at_visit.nunique()[key], key
    assert str(html_table(_numbers_analysed(shown))) in html
