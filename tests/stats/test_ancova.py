"""Tests of the per-visit ANCOVA against R's lm/emmeans, plus input validation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trialflow.errors import ModelError
from trialflow.stats.ancova import fit_ancova
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "ancova_effects.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None))


def _post_baseline(dataset: str, outcome: str) -> tuple[pd.DataFrame, pd.Series]:
    meta = INDEX.set_index("dataset").loc[dataset]
    data = _read_data(dataset)
    rows = data.loc[(data["outcome"] == outcome) & (data["visit"] != meta["baseline_visit"])]
    return rows, meta


@pytest.mark.parametrize(("dataset", "outcome"), _cases())
def test_ancova_matches_r_lm(dataset: str, outcome: str) -> None:
    rows, meta = _post_baseline(dataset, outcome)
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    result = fit_ancova(
        rows,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=[c for c in meta["covariates"].split(";") if c],
        reference_arm=meta["control"],
        visit_order=order,
    )
    assert list(result.effects.columns) == list(EFFECT_COLUMNS)
    assert list(result.lsmeans.columns) == list(LSMEAN_COLUMNS)

    # Reference: tests/reference/make_references.R, lm(change ~ baseline + covariates + arm)
    # per post-baseline visit; summary(), confint(), df.residual().
    ref = pd.read_csv(OUTPUT / "ancova_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    for col in ("estimate", "std_error", "ci_lower", "ci_upper", "p_value"):
        np.testing.assert_allclose(eff[col], ref[col], rtol=1e-8)
    np.testing.assert_array_equal(eff["df"], ref["df"])
    np.testing.assert_array_equal(eff["n"], ref["n"])

    # Reference: same program, emmeans(fit, ~ arm).
    ref_ls = pd.read_csv(OUTPUT / "ancova_lsmeans.csv", keep_default_na=False)
    ref_ls = ref_ls.loc[(ref_ls["dataset"] == dataset) & (ref_ls["outcome"] == outcome)]
    merged = result.lsmeans.merge(ref_ls, on=["visit", "arm"], suffixes=("", "_r"))
    assert len(merged) == len(result.lsmeans) == len(ref_ls)
    for col in ("estimate", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=1e-8)


def _args(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "response": "change",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "baseline": "baseline",
        "covariates": ["age", "Site", "sex"],
        "reference_arm": "usual care",
    }
    args.update(overrides)
    return args


def test_missing_column_names_the_column() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError) as info:
        fit_ancova(rows.drop(columns="Site"), **_args())  # type: ignore[arg-type]
    assert info.value.column == "Site"
    assert "What to do" in str(info.value)


def test_one_arm_only_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="only one arm"):
        fit_ancova(rows.loc[rows["arm"] == "exercise"], **_args())  # type: ignore[arg-type]


def test_unknown_reference_arm_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="reference arm"):
        fit_ancova(rows, **_args(reference_arm="placebo"))  # type: ignore[arg-type]


def test_three_arms_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.copy()
    rows.loc[rows["subject_id"] == "C001", "arm"] = "other"
    with pytest.raises(ModelError, match="exactly two"):
        fit_ancova(rows, **_args())  # type: ignore[arg-type]


def test_duplicate_visit_rows_are_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    with pytest.raises(ModelError, match="more than one row"):
        fit_ancova(pd.concat([rows, rows.iloc[:1]]), **_args())  # type: ignore[arg-type]


def test_text_in_response_is_an_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.astype({"change": object})
    rows.iloc[0, rows.columns.get_loc("change")] = "n/a"
    with pytest.raises(ModelError, match="non-numeric"):
        fit_ancova(rows, **_args())  # type: ignore[arg-type]


def test_missing_baseline_excludes_subject_with_warning() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.copy()
    rows.loc[rows["subject_id"] == "C001", "baseline"] = np.nan
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = fit_ancova(rows, **_args())  # type: ignore[arg-type]
    assert leaked == []
    assert any("1 subject(s) excluded" in w and "baseline" in w for w in result.warnings)


def test_constant_covariate_gives_rank_error() -> None:
    rows, _ = _post_baseline("sim_catcov", "function")
    rows = rows.assign(constant=1.0)
    with pytest.raises(ModelError, match=r"rank deficient.*constant"):
        fit_ancova(rows, **_args(covariates=["age", "constant"]))  # type: ignore[arg-type]
