"""The MMRM's covariance fallbacks: which structures are tried, in which order, and the record.

README, "The analysis plan", covariance of the MMRM: "If the requested structure does not
converge ..., the structures in `analysis.fallback` (default Toeplitz, then AR(1), then
compound symmetry, the order trial SAPs commonly pre-specify) are tried in turn; the structure
used and the reason are written to `models/<outcome>.json`, the `note` column and the log."

The data are built so that structures fail for a known reason: a visit that repeats another
visit exactly puts a correlation of +-1 on the boundary of every structure that has to fit it.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trialflow import analysis
from trialflow.errors import ModelError
from trialflow.stats.mmrm import fit_mmrm
from trialflow.stats.results import ModelResult
from trialflow.stats.subgroups import fit_subgroup

from ..conftest import TinyTrial
from .test_mmrm import VISITS, _fit

DEFAULT_ORDER = ("toep", "ar1", "cs")


def _trial(values: np.ndarray) -> pd.DataFrame:
    """One row per subject and visit from a subjects x 3 array of changes; two equal arms."""
    n = values.shape[0]
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "subject": np.repeat(np.arange(n), 3),
            "arm": np.repeat(np.where(np.arange(n) < n // 2, "control", "active"), 3),
            "visit": np.tile(VISITS, n),
            "baseline": np.repeat(rng.normal(10.0, 2.0, n), 3),
            "change": values.ravel(),
        }
    )


def _lag2_equal(n: int = 40) -> pd.DataFrame:
    """Week 12 repeats week 4 exactly, week 8 is independent of both.

    The correlation of weeks 4 and 12 is 1: the unstructured and the Toeplitz fits (whose
    lag-2 correlation is that correlation) are on the boundary. AR(1) must fit lag 1 and lag 2
    with one rho, and the near-zero lag-1 correlation keeps it inside.
    """
    rng = np.random.default_rng(0)
    y1, y2 = rng.normal(size=n), rng.normal(size=n)
    return _trial(np.column_stack([y1, y2, y1]))


def _alternating(n: int = 40) -> pd.DataFrame:
    """Week 8 is minus week 4 and week 12 repeats week 4: correlations -1, +1 at lags 1, 2.

    Unstructured, Toeplitz and AR(1) (rho = -1) are all on the boundary; compound symmetry
    averages the correlations to about -1/3, inside its bound of -1/2.
    """
    y1 = np.random.default_rng(0).normal(size=n)
    return _trial(np.column_stack([y1, -y1, y1]))


def test_the_default_fallback_order_is_toeplitz_then_ar1_then_cs(tiny: TinyTrial) -> None:
    """README promise: `analysis.fallback` defaults to Toeplitz, then AR(1), then CS.

    The default lives in the trial schema (filled when a trial description is loaded), in
    TrialConfig.options (for a TrialConfig built without it) and in the engine's signatures.
    """
    trial = tiny.load()
    assert trial.options["fallback"] == DEFAULT_ORDER
    assert dataclasses.replace(trial, analysis={}).options["fallback"] == DEFAULT_ORDER
    for function in (fit_mmrm, fit_subgroup):
        assert inspect.signature(function).parameters["fallback"].default == DEFAULT_ORDER


def test_toeplitz_failing_too_falls_back_to_ar1() -> None:
    """README promise: the fallbacks are "tried in turn"; the structure used and the reason
    are recorded.

    Unstructured and Toeplitz both fail, so the default order stops at AR(1): compound
    symmetry, which would also converge here, is never tried.
    """
    result = _fit(_lag2_equal())
    info = result.info
    assert info["covariance_requested"] == "us"
    assert info["covariance_tried"] == ["us", "toep", "ar1"]
    assert info["covariance_used"] == "ar1"
    reasons = info["fallback_reason"].split(" | ")
    assert [r.split(":")[0] for r in reasons] == [
        "unstructured (us) did not converge",
        "Toeplitz (toep) did not converge",
    ]
    notes = [w for w in result.warnings if w.startswith("covariance 'us' did not converge")]
    assert notes == [
        f"covariance 'us' did not converge; used 'ar1' instead ({info['fallback_reason']})"
    ]
    assert "first-order autoregressive residual covariance" in info["description"]


def test_every_default_fallback_is_tried_before_giving_up() -> None:
    """README promise: the default fallbacks are tried in turn, Toeplitz, AR(1), then CS.

    Only compound symmetry converges on these data: it is reached after the three others, in
    the default order; without it, the fit fails naming every structure tried.
    """
    data = _alternating()
    info = _fit(data).info
    assert info["covariance_tried"] == ["us", "toep", "ar1", "cs"]
    assert info["covariance_used"] == "cs"
    assert [r.split(" did not")[0] for r in info["fallback_reason"].split(" | ")] == [
        "unstructured (us)",
        "Toeplitz (toep)",
        "first-order autoregressive (ar1)",
    ]
    with pytest.raises(ModelError, match=r"structure tried \(us, toep, ar1\)\. unstructured"):
        _fit(data, fallback=("toep", "ar1"))


@pytest.mark.parametrize(
    ("fallback", "tried"),
    [
        (("cs", "ar1"), ["us", "cs"]),  # the trial's own order, not the default one
        (("us", "ar1", "cs"), ["us", "ar1"]),  # the requested structure is not tried twice
    ],
)
def test_the_trial_order_of_fallbacks_is_followed(
    fallback: tuple[str, ...], tried: list[str]
) -> None:
    """README promise: "the structures in `analysis.fallback` ... are tried in turn"."""
    info = _fit(_lag2_equal(), fallback=fallback).info
    assert info["covariance_tried"] == tried
    assert info["covariance_used"] == tried[-1]


@pytest.mark.parametrize(("section", "expected"), [(None, DEFAULT_ORDER), (["cs"], ("cs",))])
def test_the_analysis_passes_the_trial_fallbacks_to_the_mmrm(
    tiny: TinyTrial,
    monkeypatch: pytest.MonkeyPatch,
    section: list[str] | None,
    expected: tuple[str, ...],
) -> None:
    """README promise: the MMRM of every outcome uses the trial's `analysis.fallback`."""
    if section is not None:
        tiny.config["analysis"] = {"fallback": section}
    trial = tiny.load()
    seen: dict[str, Any] = {}

    def record(data: pd.DataFrame, **kwargs: Any) -> ModelResult:
        seen.update(kwargs)
        return ModelResult("mmrm", pd.DataFrame(), pd.DataFrame())

    monkeypatch.setattr(analysis, "fit_mmrm", record)
    options = trial.options
    plan = analysis.OutcomePlan(
        trial, options, analysis.mean_spec(options), pd.DataFrame(), pd.DataFrame()
    )
    analysis.MODELS["mmrm"](plan)
    assert tuple(seen["fallback"]) == expected
