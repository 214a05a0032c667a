"""Unit checks of the shared input preparation (trialflow.stats.design)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trialflow.stats.design import text_labels

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
