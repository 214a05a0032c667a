"""ModelResult.to_dict: the JSON record of a fit, serialised and read back.

README, "Using the library without Snakemake": ``record = fit.to_dict()  # everything,
JSON-ready``; the records are written to ``models/<outcome>.json``. The record must pass
``json.dumps`` as strict JSON (NaN and inf become null) and read back to the same values.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from pandas.testing import assert_frame_equal

from trialflow.stats.results import EFFECT_COLUMNS, ModelResult, gradient_size

from .test_mmrm import VISITS, _fit, simulate_trial


def _round_trip(result: ModelResult) -> dict[str, Any]:
    return json.loads(json.dumps(result.to_dict(), allow_nan=False))


def _frame(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(record["data"], columns=record["columns"], index=record["index"])


def test_numpy_values_nan_and_inf_become_json_types() -> None:
    """README promise: to_dict() is "JSON-ready": numpy scalars and arrays become JSON
    numbers and lists, NaN and inf become null, keys become text."""
    effects = pd.DataFrame(
        {
            "contrast": ["b - a", "b - a"],
            "visit": ["w4", "w8"],
            "estimate": [1.5, -0.5],
            "std_error": [0.25, 0.5],
            "df": [np.inf, 20.0],
            "ci_lower": [np.nan, -1.5],
            "ci_upper": [2.0, 0.5],
            "p_value": [np.nan, 0.32],
            "n": np.array([12, 10], dtype=np.int64),
        },
        columns=list(EFFECT_COLUMNS),
    )
    result = ModelResult(
        "mmrm",
        effects,
        pd.DataFrame(),
        covariance=pd.DataFrame([[4.0, 2.0], [2.0, 5.0]], index=VISITS[:2], columns=VISITS[:2]),
        converged=False,
        warnings=("a warning", "another"),
        info={
            "flag": np.bool_(True),
            "count": np.int64(3),
            "values": np.array([1.0, np.nan]),
            "pair": (1, 2),
            np.int64(5): "a numpy key",
            "nested": {"half": np.float32(0.5), "inf": -np.inf},
        },
    )
    assert _round_trip(result) == {
        "analysis": "mmrm",
        "converged": False,
        "warnings": ["a warning", "another"],
        "info": {
            "flag": True,
            "count": 3,
            "values": [1.0, None],
            "pair": [1, 2],
            "5": "a numpy key",
            "nested": {"half": 0.5, "inf": None},
        },
        "covariance": {
            "columns": ["week4", "week8"],
            "index": ["week4", "week8"],
            "data": [[4.0, 2.0], [2.0, 5.0]],
        },
        "effects": {
            "columns": list(EFFECT_COLUMNS),
            "index": ["0", "1"],
            "data": [
                ["b - a", "w4", 1.5, 0.25, None, None, 2.0, None, 12],
                ["b - a", "w8", -0.5, 0.5, 20.0, -1.5, 0.5, 0.32, 10],
            ],
        },
        "lsmeans": {"columns": [], "index": [], "data": []},
        "type3": None,
    }


def test_an_mmrm_record_reads_back_to_the_fit() -> None:
    """README promise: the record holds "everything" of the fit, JSON-ready: every table and
    the info read back from JSON equal the fit's own, to the last bit."""
    data = simulate_trial(np.random.default_rng(2), np.array([0.5, 1.0, 1.5]), n_per_arm=20)
    result = _fit(data)
    record = _round_trip(result)
    assert record["analysis"] == "mmrm" and record["converged"] is True
    assert record["warnings"] == list(result.warnings)
    for name in ("effects", "lsmeans", "type3"):
        table = getattr(result, name)
        assert table is not None
        got = _frame(record[name])
        assert list(got.columns) == list(table.columns)
        assert_frame_equal(got.reset_index(drop=True), table.reset_index(drop=True))
    assert result.covariance is not None
    assert_frame_equal(_frame(record["covariance"]), result.covariance)
    info = record["info"]
    assert set(info) == set(result.info)
    assert info["loglik"] == result.info["loglik"]
    assert info["coefficients"] == result.info["coefficients"]
    assert info["covariance_parameters"] == result.info["covariance_parameters"]
    assert info["covariance_tried"] == ["us"] and info["fallback_reason"] is None
    assert info["visits"] == VISITS and info["n_subjects"] == result.info["n_subjects"]


def test_gradient_size_keeps_two_significant_digits_of_the_largest_component() -> None:
    assert gradient_size(np.array([1.2345e-8, -3.4567e-7])) == 3.5e-7
    assert gradient_size(np.array([0.0])) == 0.0


def test_gradient_size_hides_last_bit_noise() -> None:
    """The model records are the same whichever worker fitted the model (README, "Safety and
    reproducibility"): gradients differing in their last bits give the same record."""
    gradient = np.array([1.1942198194841497e-08, -2.0e-9])
    noisy = gradient * (1 + 4 * np.finfo(float).eps)
    assert gradient_size(noisy) == gradient_size(gradient) == 1.2e-8
