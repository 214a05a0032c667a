"""Tests of the complete-case mixed ANOVA against R's afex::aov_ez."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest

from trialflow.errors import ModelError
from trialflow.stats.anova import ANOVA_COLUMNS, mixed_anova

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str, int]]:
    ref = pd.read_csv(OUTPUT / "anova.csv", keep_default_na=False)
    keys = ref[["dataset", "outcome", "ss_type"]].drop_duplicates()
    return [(d, o, int(t)) for d, o, t in keys.itertuples(index=False, name=None)]


def _rows(dataset: str, outcome: str) -> tuple[pd.DataFrame, list[str]]:
    data = _read_data(dataset)
    rows = data.loc[data["outcome"] == outcome]
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    return rows, order


@pytest.mark.parametrize(("dataset", "outcome", "ss_type"), _cases())
def test_mixed_anova_matches_afex(dataset: str, outcome: str, ss_type: int) -> None:
    rows, order = _rows(dataset, outcome)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        table = mixed_anova(
            rows,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            visit_order=order,
            ss_type=ss_type,  # type: ignore[arg-type]
        )
    assert leaked == []  # pingouin's pandas deprecation warnings are captured, not shown
    assert list(table.columns) == list(ANOVA_COLUMNS)

    # Reference: tests/reference/make_references.R, afex::aov_ez(id = "subject_id",
    # dv = "value", between = "arm", within = "visit", type = ss_type, complete cases,
    # anova_table = list(correction = "none", es = "pes")); p_value_gg from correction = "GG".
    ref = pd.read_csv(OUTPUT / "anova.csv", keep_default_na=False, na_values=[""])
    ref = ref.loc[
        (ref["dataset"] == dataset) & (ref["outcome"] == outcome) & (ref["ss_type"] == ss_type)
    ]
    merged = table.merge(ref, on="source", suffixes=("", "_r"))
    assert merged["source"].tolist() == ["arm", "visit", "arm:visit"]
    for col in ("F", "p_value", "partial_eta_sq"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=1e-6)
    np.testing.assert_array_equal(merged["df1"], merged["df1_r"])
    np.testing.assert_array_equal(merged["df2"], merged["df2_r"])
    within = merged["source"] != "arm"
    np.testing.assert_allclose(
        merged.loc[within, "p_value_gg"], merged.loc[within, "p_value_gg_r"], rtol=1e-6
    )
    assert (merged["n_subjects"] == merged["n_subjects_r"]).all()
    n_all = rows["subject_id"].nunique()
    excluded = n_all - int(merged["n_subjects"].iloc[0])
    assert f"{excluded} of {n_all} subjects excluded" in table["rule"].iloc[0]


def test_types_agree_with_equal_arm_sizes() -> None:
    """Type II and III differ only through unequal arm sizes among complete cases."""
    rows, order = _rows("sim_catcov", "function")
    complete = rows.groupby("subject_id")["value"].apply(lambda s: s.notna().sum() == 3)
    ids = complete.index[complete.to_numpy()]
    arms = rows.drop_duplicates("subject_id").set_index("subject_id").loc[ids, "arm"]
    n = int(arms.value_counts().min())
    keep = [*arms.index[arms == "exercise"][:n], *arms.index[arms == "usual care"][:n]]
    balanced = rows.loc[rows["subject_id"].isin(keep)]
    args = {"response": "value", "subject": "subject_id", "visit": "visit", "arm": "arm"}
    t2 = mixed_anova(balanced, visit_order=order, ss_type=2, **args)
    t3 = mixed_anova(balanced, visit_order=order, ss_type=3, **args)
    np.testing.assert_allclose(t2["F"], t3["F"], rtol=1e-10)
    np.testing.assert_allclose(t2["p_value_gg"], t3["p_value_gg"], rtol=1e-10)


def test_too_few_complete_cases_is_an_error() -> None:
    rows, order = _rows("sim_dropout", "pain")
    rows = rows.loc[~((rows["arm"] == "active") & (rows["visit"] == "week12"))]
    with pytest.raises(ModelError, match="at least 2 per arm"):
        mixed_anova(
            rows,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            visit_order=order,
        )


def test_missing_column_is_an_error() -> None:
    rows, _ = _rows("sim_dropout", "pain")
    with pytest.raises(ModelError) as info:
        mixed_anova(rows, response="score", subject="subject_id", visit="visit", arm="arm")
    assert info.value.column == "score"


def test_library_deprecations_are_not_model_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    rows, order = _rows("sim_catcov", "function")
    args = {"response": "value", "subject": "subject_id", "visit": "visit", "arm": "arm"}
    real = pg.mixed_anova
    pandas_file = str(Path(pd.__file__).parent / "core" / "frame.py")
    pingouin_file = str(Path(pg.__file__).parent / "parametric.py")

    def noisy(*a: object, **k: object) -> pd.DataFrame:
        # What pingouin triggers in pandas, plus one warning that is about the data.
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.warn_explicit(
                f"{category.__name__}: the inplace keyword is deprecated", category, pandas_file, 1
            )
        warnings.warn_explicit("epsilon could not be computed", UserWarning, pingouin_file, 1)
        return real(*a, **k)

    monkeypatch.setattr(pg, "mixed_anova", noisy)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        table = mixed_anova(rows, visit_order=order, **args)  # type: ignore[arg-type]
    assert leaked == []
    assert table.attrs["warnings"] == ["epsilon could not be computed"]

    monkeypatch.setattr(pg, "mixed_anova", real)
    table = mixed_anova(rows, visit_order=order, **args)  # type: ignore[arg-type]
    assert not any("deprecated" in w for w in table.attrs["warnings"])


def test_constant_response_is_a_clear_error() -> None:
    rows, order = _rows("sim_catcov", "function")
    flat = rows.assign(value=rows["value"].where(rows["value"].isna(), 4.0))
    with pytest.raises(ModelError, match=r"no variability in value; the ANOVA is not defined"):
        mixed_anova(
            flat,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            visit_order=order,
        )
