"""Conditional-mean imputation with jackknife, and responder analyses, against R.

The references come from tests/reference/make_sensitivity_references.R, a program written from
first principles (nlme::gls, the conditional normal distribution, lm per visit, the
leave-one-subject-out jackknife; glm for the odds ratio and a hand computation of the risk
difference and Altman's NNT interval). Outputs: tests/reference/output/sensitivity_cmi.csv and
tests/reference/output/responders.csv.

Tolerances (absolute): 1e-6 for estimates; 1e-4 for jackknife standard errors, whose R
leave-one-out refits are converged to ~1e-6 relative (make_sensitivity_references.R, header:
"Their covariance parameters are off by ~2e-6 relative"). Responders: 1e-12 (relative) for the
counts, risk difference and NNT, which are closed forms; 1e-7 (relative) for the odds ratio, its
interval and p-value, because R's glm takes the covariance from the weights of its last IRLS
iteration but one (epsilon = 1e-14 on the deviance leaves that iterate ~1e-7 from the optimum),
while trialflow evaluates the information at the optimum.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trialflow.analysis import mean_spec, outcome_plan
from trialflow.config import load_trial
from trialflow.errors import ModelError
from trialflow.sensitivity import Settings, outcome_sensitivity
from trialflow.stats.imputation import STRATEGIES, Refitter, imputation_set
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import fit_prepared, prepare_mmrm
from trialflow.stats.refbased import conditional_mean

ROOT = Path(__file__).resolve().parent.parent.parent
REFERENCE = ROOT / "tests" / "reference"
CMI = pd.read_csv(REFERENCE / "output" / "sensitivity_cmi.csv").fillna({"note": ""})
RESPONDERS = pd.read_csv(REFERENCE / "output" / "responders.csv")
ESTIMATE_TOL = 1e-6
SE_TOL = 1e-4

CASES = sorted(set(zip(CMI["dataset"], CMI["outcome"], CMI["model"], strict=True)))


def _grid(dataset: str, outcome: str) -> tuple[pd.DataFrame, pd.Series]:
    """Post-baseline rows of every subject with a row of the outcome (absent visits as NaN)."""
    index = pd.read_csv(REFERENCE / "data" / "datasets.csv").set_index("dataset")
    raw = pd.read_csv(REFERENCE / "data" / f"{dataset}.csv")
    raw = raw.loc[raw["outcome"] == outcome]
    base_visit = index.at[dataset, "baseline_visit"]
    covariates = str(index.at[dataset, "covariates"]).split(";")
    subjects = raw.groupby("subject_id")[["arm", *covariates]].first()
    base = raw.loc[raw["visit"] == base_visit].set_index("subject_id")["value"]
    visits = raw.loc[raw["visit"] != base_visit, ["visit", "week"]].drop_duplicates("visit")
    grid = subjects.reset_index().merge(visits, how="cross")
    grid["baseline"] = grid["subject_id"].map(base)
    post = raw.loc[raw["visit"] != base_visit, ["subject_id", "visit", "change"]]
    grid = grid.merge(post, on=["subject_id", "visit"], how="left")
    return grid, index.loc[dataset]


def cmi_table(dataset: str, outcome: str, model: str) -> pd.DataFrame:
    """trialflow's conditional-mean estimates and jackknife SEs for the reference's rows."""
    grid, info = _grid(dataset, outcome)
    spec = MeanSpec(baseline="by_visit" if model == "by_visit" else "main")
    ready = prepare_mmrm(
        grid, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=str(info["covariates"]).split(";"),
        reference_arm=info["control"], visit_order=None, week="week", spec=spec,
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    data = imputation_set(ready)
    usable = [
        s for s in STRATEGIES if s != "last_mean_carried_forward" or not (data.last < 0).any()
    ]
    jk = conditional_mean(data, Refitter(ready.problem, choice.fit), usable)
    expected = CMI.loc[
        (CMI["dataset"] == dataset) & (CMI["outcome"] == outcome) & (CMI["model"] == model)
    ]
    rows = []
    for row in expected.to_dict("records"):
        est = se = np.nan
        if row["strategy"] in usable:
            e, s = jk.summary(row["strategy"], float(row["delta"]))
            t = data.visits.index(row["visit"])
            est, se = e[t], s[t]
        rows.append({**row, "estimate_ours": est, "std_error_ours": se, "n_ours": data.n})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_conditional_mean_jackknife_matches_r(dataset: str, outcome: str, model: str) -> None:
    table = cmi_table(dataset, outcome, model)
    assert (table["n_ours"] == table["n"]).all()
    missing = table["estimate_ours"].isna()
    # Not applicable in both: LMCF when a dropout has no observed visit.
    assert (table.loc[missing, "note"] == "not applicable").all()
    assert table.loc[missing, "estimate"].isna().all()
    done = table.loc[~missing]
    assert len(done) >= 12
    assert (done["estimate_ours"] - done["estimate"]).abs().max() < ESTIMATE_TOL
    assert (done["std_error_ours"] - done["std_error"]).abs().max() < SE_TOL


def test_last_mean_carried_forward_is_refused_when_a_dropout_has_no_observed_visit() -> None:
    grid, info = _grid("sim_dropout", "pain")
    ready = prepare_mmrm(
        grid, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=["age"], reference_arm=info["control"],
        visit_order=None, week="week", spec=MeanSpec(),
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    data = imputation_set(ready)
    with pytest.raises(ModelError, match="last mean carried forward"):
        conditional_mean(data, Refitter(ready.problem, choice.fit), ["last_mean_carried_forward"])


RESPONDER_CASES = {
    # dataset: (trial description, outcome, {R rule name: responder rule})
    "exercise_education": (
        "exercise_education", "pain_vas",
        {"percent30": {"percent": 30}, "percent50": {"percent": 50}, "change2": {"change": 2}},
    ),
    "weightbearing": ("weightbearing", "six_minute_walk", {"change30": {"change": 30}}),
}  # fmt: skip


@pytest.mark.parametrize("dataset", sorted(RESPONDER_CASES))
def test_nonresponder_imputation_matches_r(dataset: str) -> None:
    name, outcome, rules = RESPONDER_CASES[dataset]
    trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml")
    trial = replace(
        trial,
        outcomes=(trial.outcome(outcome),),
        sensitivity={"methods": [], "strategies": [], "completers": False,
                     "responders": {outcome: list(rules.values())}},
    )  # fmt: skip
    raw = pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", dtype={"subject_id": str})
    covariates = [c.name for c in trial.covariates]
    adsl = raw.groupby("subject_id")[["arm", *covariates]].first().reset_index()
    rows = raw.loc[raw["outcome"] == outcome]
    plan = outcome_plan(rows, trial, mean_spec(trial.options))
    _, _, table, _ = outcome_sensitivity(plan, trial.outcomes[0], Settings.of(trial), adsl)
    expected = RESPONDERS.loc[RESPONDERS["dataset"] == dataset]
    assert len(table) == len(expected)
    for (_, want), (_, got) in zip(expected.iterrows(), table.iterrows(), strict=True):
        assert got["method"] == "nonresponder_imputation"
        for column in ("n_treatment", "n_control", "responders_treatment", "responders_control"):
            assert got[column] == want[column], column
        for column, tol in (
            ("risk_difference", 1e-12), ("rd_ci_lower", 1e-12), ("rd_ci_upper", 1e-12),
            ("nnt", 1e-12), ("nnt_ci_lower", 1e-12), ("nnt_ci_upper", 1e-12),
            ("odds_ratio", 1e-7), ("or_ci_lower", 1e-7), ("or_ci_upper", 1e-7),
            ("or_p_value", 1e-7),
        ):  # fmt: skip
            assert abs(got[column] - want[column]) <= tol * max(1.0, abs(want[column])), column
