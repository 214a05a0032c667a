"""Tests of Hedges' g against the formula evaluated in R, and of the Holm adjustment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from trialflow.errors import ModelError
from trialflow.stats.effect_size import HEDGES_COLUMNS, hedges_g, holm

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "hedges.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None))


@pytest.mark.parametrize(("dataset", "outcome"), _cases())
def test_hedges_g_matches_r(dataset: str, outcome: str) -> None:
    meta = INDEX.set_index("dataset").loc[dataset]
    data = _read_data(dataset)
    rows = data.loc[(data["outcome"] == outcome) & (data["visit"] != meta["baseline_visit"])]
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    table = hedges_g(
        rows,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        reference_arm=meta["control"],
        visit_order=order,
    )
    assert list(table.columns) == list(HEDGES_COLUMNS)
    # Reference: tests/reference/make_references.R, Hedges' g by formula (pooled SD,
    # J = 1 - 3/(4(n1+n2)-9), se^2 = (n1+n2)/(n1 n2) + g^2/(2(n1+n2)), normal CI).
    ref = pd.read_csv(OUTPUT / "hedges.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    assert table["visit"].tolist() == ref["visit"].tolist()
    for col in ("g", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(table[col], ref[col], rtol=1e-8)
    np.testing.assert_array_equal(table["n_treatment"], ref["n_treatment"])
    np.testing.assert_array_equal(table["n_control"], ref["n_control"])


def test_baseline_rows_with_empty_change_are_skipped() -> None:
    data = _read_data("sim_catcov")
    table = hedges_g(
        data,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        reference_arm="usual care",
    )
    assert table["visit"].tolist() == ["week6", "week12"]


def test_one_arm_only_is_an_error() -> None:
    data = _read_data("sim_catcov")
    with pytest.raises(ModelError, match="only one arm"):
        hedges_g(
            data.loc[data["arm"] == "exercise"],
            response="change",
            subject="subject_id",
            visit="visit",
            arm="arm",
            reference_arm="usual care",
        )


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.04])
    expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12)


def test_holm_keeps_missing_values_missing() -> None:
    p = np.array([0.02, np.nan, 0.01, 0.2])
    adjusted = holm(p)
    assert np.isnan(adjusted[1])
    expected = multipletests(p[~np.isnan(p)], method="holm")[1]
    np.testing.assert_allclose(adjusted[~np.isnan(p)], expected, rtol=1e-12)
    assert np.all(np.isnan(holm([np.nan, np.nan])))
    assert holm([]).shape == (0,)


def test_holm_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ModelError, match="between 0 and 1"):
        holm([0.2, 1.5])
