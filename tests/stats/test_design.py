"""Unit checks of the shared input preparation (trialflow.stats.design)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trialflow.stats.design import (
    ARM,
    SUBJECT,
    VISIT,
    observed_rows,
    prepare_long,
    sorted_categorical,
    text_labels,
)

CASES = [
    (pd.Series(["b", None, "a", "b"]), ["b", None, "a", "b"]),
    (pd.Series(["b", None], dtype="string"), ["b", None]),
    (pd.Series(["x", np.nan, "y"], dtype=object), ["x", None, "y"]),
    (pd.Series([3, 1, 3]), ["3", "1", "3"]),
    (pd.Series(pd.array([1, None], dtype="Int64")), ["1", None]),
    (pd.Series([True, False]), ["True", "False"]),
    (pd.Series(pd.array([True, None], dtype="boolean")), ["True", None]),
    # pandas counts these as one distinct value; their labels differ.
    (pd.Series([1, 1.0, True, "1", None], dtype=object), ["1", "1.0", "True", "1", None]),
    (pd.Series([0.0, -0.0, 2.5, np.nan]), ["0.0", "-0.0", "2.5", None]),
    (pd.Series(pd.Categorical(["v2", None, "v1"])), ["v2", None, "v1"]),
]


@pytest.mark.parametrize(("values", "expected"), CASES)
def test_text_labels_are_str_of_each_value_and_keep_missing(
    values: pd.Series, expected: list[str | None]
) -> None:
    values.index = pd.Index(range(10, 10 + len(values)))
    labels = text_labels(values.rename("col"))
    assert labels.name == "col" and list(labels.index) == list(values.index)
    assert [None if pd.isna(v) else v for v in labels] == expected
    assert all(isinstance(v, str) for v in labels.dropna())


def test_observed_rows_codes_name_the_rows_in_subject_and_visit_order() -> None:
    rows = pd.DataFrame(
        {
            "s": [10, 9, 10, 9, 100, 100, 9],
            "a": ["x", "y", "x", "y", "y", "y", "y"],
            "v": ["w1", "w1", "w2", "w2", "w1", "w2", "w0"],
            "r": [1.0, 2.0, np.nan, np.nan, 3.0, np.nan, 4.0],
        }
    )
    prepared = prepare_long(
        rows, response="r", subject="s", visit="v", arm="a", reference_arm="y",
        visit_order=["w0", "w1", "w2"],
    )  # fmt: skip
    obs = observed_rows(prepared)
    assert obs.visits == ["w0", "w1"] and obs.dropped_visits == ["w2"]
    assert obs.subjects == ("10", "100", "9")  # sorted as text
    frame = obs.frame
    assert list(frame.index) == [0, 1, 2, 3]
    assert list(frame[VISIT].cat.categories) == ["w0", "w1"]
    assert [(s, str(v)) for s, v in zip(frame[SUBJECT], frame[VISIT], strict=True)] == [
        ("10", "w1"),
        ("100", "w1"),
        ("9", "w0"),
        ("9", "w1"),
    ]
    np.testing.assert_array_equal(obs.y, [1.0, 3.0, 4.0, 2.0])
    np.testing.assert_array_equal(obs.subject_code, [0, 1, 2, 2])
    np.testing.assert_array_equal(obs.visit_code, [1, 1, 0, 1])
    np.testing.assert_array_equal(obs.arm_code, [1, 0, 0, 0])
    assert obs.subject_code.dtype == obs.visit_code.dtype == obs.arm_code.dtype == np.int64


def test_sorted_categorical_codes_rows_as_their_labels_sort() -> None:
    """The codes equal pandas' own sorted factorization (Python's string order, accents and
    case included); a missing label keeps code -1."""
    rng = np.random.default_rng(3)
    pool = np.array(["EE-010", "EE-9", "ee-001", "Étude", "b", "B", "a b", "ab", ""], dtype=object)
    labels = pd.Series(rng.choice(pool, size=400), dtype=object)
    labels[rng.random(400) < 0.1] = None
    coded = sorted_categorical(labels)
    codes, names = pd.factorize(labels, sort=True)
    np.testing.assert_array_equal(coded.codes, codes)
    assert list(coded.categories) == list(names) == sorted(set(labels.dropna()))


def test_prepared_frame_is_the_same_from_text_or_coded_labels() -> None:
    """Labels already coded as a categorical (numbers, in their own order) prepare the same
    rows as the same labels as plain values: subjects sorted as text, arms as text."""
    rows = pd.DataFrame(
        {
            "s": [10, 9, 10, 9, 100, 100, 2],
            "a": [1, 2, 1, 2, 2, 2, 1],
            "v": ["w1", "w1", "w2", "w2", "w1", "w2", "w1"],
            "r": [1.0, 2.0, 5.0, np.nan, 3.0, 6.0, 4.0],
        }
    )
    coded = rows.assign(s=pd.Categorical(rows["s"]), a=pd.Categorical(rows["a"]))
    assert list(coded["s"].cat.categories) == [2, 9, 10, 100]
    kwargs = {"response": "r", "subject": "s", "visit": "v", "arm": "a", "reference_arm": 1}
    plain, from_codes = prepare_long(rows, **kwargs), prepare_long(coded, **kwargs)
    pd.testing.assert_frame_equal(plain.frame, from_codes.frame)
    assert list(plain.frame[SUBJECT]) == ["10", "10", "100", "100", "2", "9", "9"]
    assert list(plain.frame[SUBJECT].cat.categories) == ["10", "100", "2", "9"]
    assert list(plain.frame[ARM].cat.categories) == ["1", "2"] and plain.arms == ("1", "2")
