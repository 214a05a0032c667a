"""Publication tables: formatting rules, standardized differences, table shapes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trialflow.clean import read_and_clean
from trialflow.derive import derive
from trialflow.tables import (
    fmt_ci,
    fmt_number,
    fmt_p,
    smd_categorical,
    smd_continuous,
    table1,
    visit_completion,
)

from .conftest import TinyTrial


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [(1.25, 1, "1.2"), (-0.04, 1, "0.0"), (12.0, 0, "12"), (math.nan, 2, ""), (-3.456, 2, "-3.46")],
)
def test_fmt_number(value, decimals, text) -> None:
    assert fmt_number(value, decimals) == text


def test_fmt_p_and_ci() -> None:
    assert fmt_p(0.0004) == "<0.001"
    assert fmt_p(0.04999) == "0.050"
    assert fmt_p(math.nan) == ""
    assert fmt_ci(25.66, 0.96, 50.36, 1) == "25.7 (1.0 to 50.4)"
    assert fmt_ci(-1.0, -2.0, math.nan, 1) == "not estimable"


def test_smd_continuous_by_hand() -> None:
    a, b = pd.Series([1.0, 2.0, 3.0]), pd.Series([2.0, 4.0, 6.0])
    # means 2 and 4; variances 1 and 4; pooled sqrt(2.5)
    assert smd_continuous(a, b) == pytest.approx(2 / math.sqrt(2.5), rel=1e-12)
    assert math.isnan(smd_continuous(pd.Series([1.0]), b))


def test_smd_categorical_binary_equals_the_closed_form() -> None:
    a = pd.Series(["F"] * 6 + ["M"] * 4)
    b = pd.Series(["F"] * 3 + ["M"] * 7)
    p1, p2 = 0.4, 0.7  # proportion of M (the level after the reference)
    expected = abs(p2 - p1) / math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 2)
    assert smd_categorical(a, b) == pytest.approx(expected, rel=1e-12)


def test_smd_categorical_three_levels_is_symmetric_and_positive() -> None:
    a = pd.Series(list("AABBBCCCCC"))
    b = pd.Series(list("AAAAABBCCC"))
    value = smd_categorical(a, b)
    assert value > 0
    assert value == pytest.approx(smd_categorical(b, a), rel=1e-12)
    # identical distributions: no difference
    assert smd_categorical(a, a.copy()) == pytest.approx(0.0, abs=1e-12)


def test_table1_rows_and_columns(tiny: TinyTrial) -> None:
    tiny.subjects[1]["age"] = ""
    trial = tiny.load()
    clean = read_and_clean(trial)
    d = derive(clean, trial)
    t = table1(d.adsl, d.adeff, trial, clean.covariate_types)
    assert list(t.columns) == [
        "characteristic", "level", "statistic",
        "control (n = 2)", "exercise (n = 2)", "Overall (n = 4)", "SMD",
    ]  # fmt: skip
    age = t.loc[(t["characteristic"] == "age") & (t["level"] == "")].iloc[0]
    assert age["control (n = 2)"] == "65.5 (6.4)"  # 61 and 70
    assert age["exercise (n = 2)"] == "48.0 (-)"  # one value left, SD undefined
    missing = t.loc[(t["characteristic"] == "age") & (t["level"] == "missing")].iloc[0]
    assert missing["exercise (n = 2)"] == "1" and missing["Overall (n = 4)"] == "1"
    sex = t.loc[t["characteristic"] == "sex"]
    assert sex["level"].tolist() == ["F", "M"]
    assert sex["Overall (n = 4)"].tolist() == ["2 (50.0)", "2 (50.0)"]
    pain = t.loc[t["characteristic"] == "Pain VAS at baseline (cm)"].iloc[0]
    mean, sd = np.mean([6.1, 5.5]), np.std([6.1, 5.5], ddof=1)
    assert pain["control (n = 2)"] == f"{mean:.1f} ({sd:.1f})"


def test_visit_completion(tiny: TinyTrial) -> None:
    trial = tiny.load()
    d = derive(read_and_clean(trial), trial)
    t = visit_completion(d.flow, trial)
    assert t["visit"].tolist() == ["baseline", "week6", "week12"]
    assert t.loc[2, "control (n = 2)"] == "1 (50.0)"
    assert t.loc[2, "total (n = 4)"] == "3 (75.0)"


def test_skewed_characteristic_is_summarised_by_median_and_iqr() -> None:
    from trialflow.tables import _continuous_cell, is_skewed

    skewed = pd.Series([1.0] * 9 + [2.0, 3.0, 50.0])
    assert is_skewed(skewed)
    assert not is_skewed(pd.Series(np.arange(12, dtype=float)))
    assert not is_skewed(pd.Series([1.0, 2.0, 50.0]))  # too few values to judge
    q1, q2, q3 = np.percentile(skewed, [25, 50, 75])
    assert _continuous_cell(skewed, 1, median=True) == f"{q2:.1f} [{q1:.1f}, {q3:.1f}]"
