"""The plan's mean-model options and the spatial power covariance, against R.

Reference program: tests/reference/make_plan_references.R (nlme::gls, unstructured covariance
unless the model says otherwise, REML at a Newton-polished optimum; emmeans LS means and
treatment - control contrasts; precise Satterthwaite df). Outputs plan_effects.csv,
plan_lsmeans.csv, plan_fit.csv and plan_spatial.csv in tests/reference/output/. Each model id
there maps to trial-description options below.

Tolerances (relative): estimate and SE 1e-5 (the issue allows 1e-4), df 1e-3 (1e-2 allowed),
REML log-likelihood 1e-8, spatial correlation and variances 1e-4.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from numpy.testing import assert_allclose

from trialflow import ModelResult
from trialflow.errors import ModelError
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import fit_mmrm

REF = Path(__file__).resolve().parents[1] / "reference"
OUT = REF / "output"
EFFECTS = pd.read_csv(OUT / "plan_effects.csv")
LSMEANS = pd.read_csv(OUT / "plan_lsmeans.csv")
FITS = pd.read_csv(OUT / "plan_fit.csv")
SPATIAL = pd.read_csv(OUT / "plan_spatial.csv")
DATASETS = pd.read_csv(REF / "data" / "datasets.csv").set_index("dataset")
EXTRA = {"exercise_education": ("education", "age;sex", "baseline")}
FIRST = {"sim_dropout": "age", "sim_catcov": "Site"}

# model id -> (response, baseline, covariates by visit?, weights, covariance)
MODELS: dict[str, tuple[str, str, bool, str, str]] = {
    "by_visit": ("change", "by_visit", False, "equal", "us"),
    "none": ("change", "none", False, "equal", "us"),
    "value": ("value", "main", False, "equal", "us"),
    "value_by_visit": ("value", "by_visit", False, "equal", "us"),
    "value_none": ("value", "none", False, "equal", "us"),
    "cov_by_visit": ("change", "main", True, "equal", "us"),
    "proportional": ("change", "main", False, "proportional", "us"),
    "proportional_cov_by_visit": ("change", "main", True, "proportional", "us"),
    "sp_pow": ("change", "main", False, "equal", "sp_pow"),
    "sp_powh": ("change", "main", False, "equal", "sp_powh"),
    "fev_un": ("value", "none", False, "equal", "us"),
    "fev_by_visit": ("value", "by_visit", False, "equal", "us"),
}


def _fev() -> pd.DataFrame:
    subjects = pd.read_csv(REF / "data" / "fev" / "subjects.csv")
    visits = pd.read_csv(REF / "data" / "fev" / "visits.csv")
    base = visits.loc[visits["visit"] == "baseline", ["subject_id", "FEV1"]]
    rows = visits.loc[visits["visit"] != "baseline"].merge(subjects, on="subject_id")
    rows = rows.merge(base.rename(columns={"FEV1": "baseline"}), on="subject_id")
    return rows.rename(columns={"FEV1": "value"})


def _arguments(dataset: str, outcome: str) -> dict[str, Any]:
    if dataset == "fev":
        return {
            "data": _fev(),
            "covariates": ["RACE", "SEX"],
            "reference_arm": "PBO",
            "visit_order": ["VIS1", "VIS2", "VIS3", "VIS4"],
        }
    control, covs, base = (
        EXTRA[dataset]
        if dataset in EXTRA
        else tuple(DATASETS.loc[dataset, ["control", "covariates", "baseline_visit"]])
    )
    data = pd.read_csv(REF / "data" / f"{dataset}.csv")
    rows = data.loc[(data["outcome"] == outcome) & (data["visit"] != base)]
    return {"data": rows, "covariates": str(covs).split(";"), "reference_arm": control}


@cache
def _fit(dataset: str, outcome: str, model: str) -> ModelResult:
    response, baseline, by_visit, weights, covariance = MODELS[model]
    spec = MeanSpec(
        response=response,  # type: ignore[arg-type]
        baseline=baseline,  # type: ignore[arg-type]
        covariates_by_visit=(FIRST[dataset],) if by_visit else (),
        lsmeans_weights=weights,  # type: ignore[arg-type]
    )
    return fit_mmrm(
        response=response,
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline=None if baseline == "none" else "baseline",
        covariance=covariance,
        fallback=(),
        week=None if dataset == "fev" else "week",
        mean=spec,
        **_arguments(dataset, outcome),
    )


CASES = sorted(FITS[["dataset", "outcome", "model"]].itertuples(index=False, name=None))
SPATIAL_CASES = sorted(
    SPATIAL[["dataset", "outcome", "model"]].drop_duplicates().itertuples(index=False, name=None)
)


def _select(frame: pd.DataFrame, dataset: str, outcome: str, model: str) -> pd.DataFrame:
    keep = (frame["dataset"] == dataset) & (frame["outcome"] == outcome)
    return frame.loc[keep & (frame["model"] == model)]


def _parameter(name: str) -> str:
    """Our name of an R parameter: rho -> rho_per_week, variance_<visit> -> variance[<visit>]."""
    if name == "rho":
        return "rho_per_week"
    return f"variance[{name.removeprefix('variance_')}]" if name.startswith("variance_") else name


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_effects_and_lsmeans_match_r(dataset: str, outcome: str, model: str) -> None:
    fit = _fit(dataset, outcome, model)
    tables = ((fit.effects, EFFECTS, ["visit"]), (fit.lsmeans, LSMEANS, ["visit", "arm"]))
    for ours, ref, keys in tables:
        want = _select(ref, dataset, outcome, model)
        both = want.merge(ours, on=keys, suffixes=("_r", ""))
        assert len(both) == len(want) == len(ours), (model, len(want), len(ours))
        assert_allclose(both["estimate"], both["estimate_r"], rtol=1e-5, atol=1e-8)
        assert_allclose(both["std_error"], both["std_error_r"], rtol=1e-5)
        assert_allclose(both["df"], both["df_r"], rtol=1e-3)
    row = _select(FITS, dataset, outcome, model)
    assert fit.info["n_observations"] == int(row["n_obs"].iloc[0])
    assert fit.info["loglik"] == pytest.approx(float(row["loglik"].iloc[0]), rel=1e-8)


@pytest.mark.parametrize(("dataset", "outcome", "model"), SPATIAL_CASES)
def test_spatial_power_parameters_match_r(dataset: str, outcome: str, model: str) -> None:
    # corCAR1(form = ~ week | subject_id) is rho^|week_i - week_j| (SAS SP(POW)(week)).
    params = _fit(dataset, outcome, model).info["covariance_parameters"]
    want = _select(SPATIAL, dataset, outcome, model)
    for name, value in zip(want["parameter"], want["value"], strict=True):
        assert params[_parameter(name)] == pytest.approx(value, rel=1e-4), name


def test_value_and_change_give_the_same_effects_with_baseline_adjustment() -> None:
    # With baseline as a covariate, value = change + baseline shifts every LS mean by the mean
    # baseline and leaves every treatment effect unchanged.
    change = _fit("sim_dropout", "pain", "by_visit")
    value = _fit("sim_dropout", "pain", "value_by_visit")
    assert_allclose(value.effects["estimate"], change.effects["estimate"], rtol=1e-8)
    assert_allclose(value.effects["std_error"], change.effects["std_error"], rtol=1e-8)


def test_records_state_the_mean_model_in_formula_and_words() -> None:
    fit = _fit("sim_catcov", "function", "proportional_cov_by_visit")
    assert fit.info["formula"] == (
        "change ~ baseline + age + Site + sex + arm + visit + Site:visit + arm:visit"
    )
    words = fit.info["mean_model"]["words"]
    assert "Site also interact with visit" in words
    assert "observed frequency" in words
    assert fit.info["mean_model"]["lsmeans_weights"] == "proportional"
    assert "baseline-by-visit" in _fit("sim_dropout", "pain", "by_visit").info["description"]


def test_unequal_spacing_with_a_positional_structure_is_said() -> None:
    args = _arguments("exercise_education", "pain_vas")
    fit = fit_mmrm(response="change", subject="subject_id", visit="visit", arm="arm",
                   baseline="baseline", covariance="ar1", week="week", **args)  # fmt: skip
    assert any("not equally spaced" in w and "sp_pow" in w for w in fit.warnings)
    assert fit.info["visits_equally_spaced"] is False
    spaced = _arguments("sim_dropout", "pain")
    fit = fit_mmrm(response="change", subject="subject_id", visit="visit", arm="arm",
                   baseline="baseline", covariance="ar1", week="week", **spaced)  # fmt: skip
    assert not any("not equally spaced" in w for w in fit.warnings)
    assert fit.info["visits_equally_spaced"] is True


def test_bad_combinations_stop_with_the_key_and_the_fix() -> None:
    with pytest.raises(ModelError, match="covariates_by_visit names 'height'"):
        fit_mmrm(response="change", subject="subject_id", visit="visit", arm="arm",
                 baseline="baseline", mean=MeanSpec(covariates_by_visit=("height",)),
                 **_arguments("sim_dropout", "pain"))  # fmt: skip
    with pytest.raises(ModelError, match="needs at least two post-baseline visits"):
        args = _arguments("sim_dropout", "pain")
        args["data"] = args["data"].loc[args["data"]["visit"] == "week12"]
        fit_mmrm(response="value", subject="subject_id", visit="visit", arm="arm",
                 baseline="baseline", mean=MeanSpec(response="value", baseline="by_visit"),
                 **args)  # fmt: skip
    with pytest.raises(ModelError, match="no baseline column"):
        fit_mmrm(response="change", subject="subject_id", visit="visit", arm="arm",
                 baseline=None, mean=MeanSpec(baseline="main"),
                 **_arguments("sim_dropout", "pain"))  # fmt: skip
    with pytest.raises(ModelError, match="lsmeans_weights 'observed'"):
        MeanSpec(lsmeans_weights="observed")  # type: ignore[arg-type]
