"""Table 1's standardized mean differences with unequal arms, against a cited hand computation.

Promise (README, "What you get": Table 1 "standardized mean differences"; tables.py: "as R
tableone"). R tableone (``ExtractSmd``, ``svyCreateTableOne`` docs) takes the definitions of
Yang & Dalton (2012), "A unified approach to measuring the effect size between two groups
using SAS", SAS Global Forum paper 335-2012:

- continuous: ``(mean_T - mean_C) / sqrt((s_T^2 + s_C^2) / 2)``, the two variances averaged
  with equal weight whatever the arm sizes (Yang & Dalton eq. 1; Austin 2009, Stat Med
  28:3083);
- categorical with k levels: ``sqrt((T - C)' S^-1 (T - C))`` with T, C the proportions of
  levels 2..k and ``S = (S_T + S_C) / 2``, ``S_x[l, l] = p_l (1 - p_l)``,
  ``S_x[l, m] = -p_l p_m`` (Yang & Dalton eq. 3), again unweighted by arm size.

tableone reports the absolute value; trialflow keeps the sign of treatment - control for a
continuous characteristic (a categorical SMD is a distance, never negative). R tableone is not
packaged for Debian, so the numbers below are worked by hand. With equal arms an n-weighted
pooled SD gives the same answer; every case here has 4 control and 8 treatment participants,
where it does not.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trialflow.clean import read_and_clean
from trialflow.derive import derive
from trialflow.tables import smd_categorical, smd_continuous, table1

from .conftest import TinyTrial

# Control: 62, 64, 64, 66 -> mean 64, variance (4 + 0 + 0 + 4) / 3 = 8/3.
CONTROL_AGE = [62, 64, 64, 66]
# Treatment: 61..69 without 65 -> mean 65, variance (16+9+4+1+1+4+9+16) / 7 = 60/7.
TREATMENT_AGE = [61, 62, 63, 64, 66, 67, 68, 69]
# tableone: 1 / sqrt((8/3 + 60/7) / 2) = 1 / sqrt(118/21) = 0.42186...
AGE_SMD = 1 / math.sqrt(118 / 21)
# An n-weighted pooled SD would give 1 / sqrt((3 * 8/3 + 7 * 60/7) / 10) = 1 / sqrt(6.8) = 0.383.

# Sites A, B, C. Control 2, 1, 1 of 4; treatment 1, 3, 4 of 8.
CONTROL_SITE = ["A", "A", "B", "C"]
TREATMENT_SITE = ["A", "B", "B", "B", "C", "C", "C", "C"]
# Levels B, C: C = (1/4, 1/4), T = (3/8, 1/2), T - C = (1/8)(1, 2).
# S_C = (1/64) [[12, -4], [-4, 12]], S_T = (1/64) [[15, -12], [-12, 16]],
# S = (1/128) [[27, -16], [-16, 28]], det(128 S) = 27 * 28 - 16^2 = 500,
# S^-1 = (128/500) [[28, 16], [16, 27]],
# (T - C)' S^-1 (T - C) = (1/64)(128/500)(28 + 2*2*16 + 4*27) = (2/500) * 200 = 0.8.
SITE_SMD = math.sqrt(0.8)
# Weighting S_C and S_T by arm size (4 and 8) would give sqrt(0.9135) = 0.956.


def test_continuous_smd_averages_the_variances_unweighted() -> None:
    control, treatment = pd.Series(CONTROL_AGE, dtype=float), pd.Series(TREATMENT_AGE, dtype=float)
    assert smd_continuous(control, treatment) == pytest.approx(AGE_SMD, rel=1e-12)
    # Signed: treatment - control.
    assert smd_continuous(treatment, control) == pytest.approx(-AGE_SMD, rel=1e-12)


def test_binary_smd_with_unequal_arms() -> None:
    # Control 1 M of 4 (p = 1/4), treatment 5 M of 8 (p = 5/8):
    # (5/8 - 1/4) / sqrt((3/16 + 15/64) / 2) = (3/8) / sqrt(27/128) = sqrt(2/3).
    control = pd.Series(["F", "F", "F", "M"])
    treatment = pd.Series(["F", "F", "F", "M", "M", "M", "M", "M"])
    assert smd_categorical(control, treatment) == pytest.approx(math.sqrt(2 / 3), rel=1e-12)


def test_multilevel_smd_with_unequal_arms() -> None:
    value = smd_categorical(pd.Series(CONTROL_SITE), pd.Series(TREATMENT_SITE))
    assert value == pytest.approx(SITE_SMD, rel=1e-12)


def test_table1_prints_the_tableone_smd_with_unequal_arms(tiny: TinyTrial) -> None:
    ages = {"control": iter(CONTROL_AGE), "exercise": iter(TREATMENT_AGE)}
    sites = {"control": iter(CONTROL_SITE), "exercise": iter(TREATMENT_SITE)}
    arms = ["control"] * 4 + ["exercise"] * 8
    tiny.subjects = [
        {"subject_id": f"S{i + 1:02d}", "arm": arm, "age": str(next(ages[arm])),
         "site": next(sites[arm])}
        for i, arm in enumerate(arms)
    ]  # fmt: skip
    tiny.visits = [
        {"subject_id": s["subject_id"], "visit": "baseline", "pain": "5.0", "6MWD": "400"}
        for s in tiny.subjects
    ]
    tiny.config["covariates"] = ["age", "site"]
    trial = tiny.load()
    clean = read_and_clean(trial)
    d = derive(clean, trial)
    t = table1(d.adsl, d.adeff, trial, clean.covariate_types)
    assert "control (n = 4)" in t.columns and "exercise (n = 8)" in t.columns
    age = t.loc[t["characteristic"] == "age"]
    assert age["SMD"].tolist() == [f"{AGE_SMD:.2f}"] == ["0.42"]
    site = t.loc[t["characteristic"] == "site"]
    assert site["level"].tolist() == ["A", "B", "C"]
    assert site["SMD"].tolist() == [f"{SITE_SMD:.2f}", "", ""] == ["0.89", "", ""]
