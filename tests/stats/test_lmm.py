"""Tests of the random-intercept linear mixed model against lmerTest, plus unit checks."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM

from trialflow.errors import ModelError
from trialflow.stats import lmm as lmm_module
from trialflow.stats.lmm import fit_lmm
from trialflow.stats.results import EFFECT_COLUMNS, LSMEAN_COLUMNS

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
OUTPUT = REFERENCE / "output"


def _read_data(dataset: str) -> pd.DataFrame:
    # Only empty cells are missing, as in the R program (na.strings = "").
    return pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False, na_values=[""])


def _cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "lmm_fit.csv", keep_default_na=False)
    return list(ref[["dataset", "outcome"]].itertuples(index=False, name=None))


def _fit(dataset: str, outcome: str, **kwargs: object):
    meta = INDEX.set_index("dataset").loc[dataset]
    data = _read_data(dataset)
    rows = data.loc[data["outcome"] == outcome]
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    covariates = [c for c in meta["covariates"].split(";") if c]
    args: dict[str, object] = {
        "response": "value",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "covariates": covariates,
        "reference_arm": meta["control"],
        "visit_order": order,
        "baseline_visit": meta["baseline_visit"],
    }
    args.update(kwargs)
    return fit_lmm(rows, **args)  # type: ignore[arg-type]


def test_references_cover_every_dataset_and_outcome() -> None:
    expected = {
        (dataset, str(outcome))
        for dataset in INDEX["dataset"]
        for outcome in _read_data(dataset)["outcome"].unique()
    }
    assert expected == set(_cases())
    slope = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    assert expected == set(slope[["dataset", "outcome"]].itertuples(index=False, name=None))


@pytest.mark.parametrize(("dataset", "outcome"), _cases())
def test_lmm_matches_lmertest(dataset: str, outcome: str) -> None:
    result = _fit(dataset, outcome)
    meta = INDEX.set_index("dataset").loc[dataset]
    assert list(result.effects.columns) == list(EFFECT_COLUMNS)
    assert list(result.lsmeans.columns) == list(LSMEAN_COLUMNS)
    assert result.converged
    assert result.info["df_method"] == "satterthwaite"
    assert (result.effects["contrast"] == f"{meta['treatment']} - {meta['control']}").all()

    # Reference: tests/reference/make_references.R, lmerTest::lmer(value ~ covariates +
    # arm * visit + (1 | subject_id), REML = TRUE), summary() with Satterthwaite df.
    ref = pd.read_csv(OUTPUT / "lmm_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    np.testing.assert_allclose(eff["estimate"], ref["estimate"], rtol=1e-4)
    np.testing.assert_allclose(eff["std_error"], ref["std_error"], rtol=1e-4)
    np.testing.assert_allclose(eff["df"], ref["df"], rtol=1e-2)
    np.testing.assert_allclose(eff["p_value"], ref["p_value"], rtol=1e-2)

    # Reference: same program, emmeans(m, ~ arm | visit) with lmer.df = "satterthwaite".
    ref_ls = pd.read_csv(OUTPUT / "lmm_lsmeans.csv", keep_default_na=False)
    ref_ls = ref_ls.loc[(ref_ls["dataset"] == dataset) & (ref_ls["outcome"] == outcome)]
    merged = result.lsmeans.merge(ref_ls, on=["visit", "arm"], suffixes=("", "_r"))
    assert len(merged) == len(result.lsmeans) == len(ref_ls)
    for col in ("estimate", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_r"], rtol=1e-4)
    np.testing.assert_allclose(merged["df"], merged["df_r"], rtol=1e-2)

    # Reference: same program, VarCorr() and logLik(REML = TRUE) of the lmer fit.
    fit = pd.read_csv(OUTPUT / "lmm_fit.csv", keep_default_na=False)
    fit = fit.loc[(fit["dataset"] == dataset) & (fit["outcome"] == outcome)].iloc[0]
    vc = result.info["variance_components"]
    np.testing.assert_allclose(vc["subject_intercept"], fit["var_subject"], rtol=1e-4)
    np.testing.assert_allclose(vc["residual"], fit["var_residual"], rtol=1e-4)
    np.testing.assert_allclose(result.info["loglik"], fit["reml_loglik"], rtol=1e-6)
    assert result.info["n_observations"] == fit["n_obs"]
    assert result.info["n_subjects"] == fit["n_subjects"]


def test_exact_reml_derivatives_match_finite_differences() -> None:
    """The analytic gradient/Hessian behind Satterthwaite df agree with central differences."""
    data = _read_data("sim_dropout")
    rows = data.loc[(data["outcome"] == "pain") & data["value"].notna()]
    rows = rows.sort_values(["subject_id", "visit_index"])
    x = np.column_stack(
        [
            np.ones(len(rows)),
            rows["age"].to_numpy(),
            (rows["arm"] == "active").to_numpy(float),
            *[(rows["visit_index"] == k).to_numpy(float) for k in (2, 3, 4)],
        ]
    )
    y = rows["value"].to_numpy(float)
    z = np.column_stack([np.ones(len(rows)), rows["week"].to_numpy() / 12.0])
    ids = rows["subject_id"].to_numpy()
    cut = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    sl = [slice(a, b) for a, b in itertools.pairwise(cut)]
    blocks = lmm_module._Blocks(y=[y[s] for s in sl], x=[x[s] for s in sl], z=[z[s] for s in sl])
    psi = np.array([1.5, -0.2, 0.6, 1.1])  # G11, G21, G22, sigma2 (not an optimum)

    def dev(p: np.ndarray) -> float:
        return lmm_module._reml_state(blocks, p).deviance

    grad, hess, jac = lmm_module._reml_derivatives(blocks, lmm_module._reml_state(blocks, psi))
    h = 1e-4
    eye = np.eye(len(psi))
    num_grad = np.array([(dev(psi + h * e) - dev(psi - h * e)) / (2 * h) for e in eye])
    num_hess = np.array(
        [
            [
                (
                    dev(psi + h * a + h * b)
                    - dev(psi + h * a - h * b)
                    - dev(psi - h * a + h * b)
                    + dev(psi - h * a - h * b)
                )
                / (4 * h * h)
                for b in eye
            ]
            for a in eye
        ]
    )
    np.testing.assert_allclose(grad, num_grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, num_hess, rtol=1e-4, atol=1e-4)
    phi = lmm_module._reml_state(blocks, psi).phi
    for k, e in enumerate(eye):
        num_jac = (
            lmm_module._reml_state(blocks, psi + h * e).phi
            - lmm_module._reml_state(blocks, psi - h * e).phi
        ) / (2 * h)
        np.testing.assert_allclose(jac[k], num_jac, rtol=1e-6, atol=1e-10 * np.abs(phi).max())


def test_absent_rows_and_empty_values_give_the_same_fit() -> None:
    data = _read_data("sim_dropout")
    rows = data.loc[data["outcome"] == "pain"]
    order = ["baseline", "week4", "week8", "week12"]
    args = {
        "response": "value",
        "subject": "subject_id",
        "visit": "visit",
        "arm": "arm",
        "covariates": ["age"],
        "reference_arm": "placebo",
        "visit_order": order,
        "baseline_visit": "baseline",
    }
    with_nan = fit_lmm(rows, **args)  # type: ignore[arg-type]
    without = fit_lmm(rows.loc[rows["value"].notna()], **args)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(with_nan.effects, without.effects)


def test_covariate_names_with_spaces_are_labels_only() -> None:
    data = _read_data("sim_catcov")
    renamed = data.rename(columns={"age": "Age (years)", "Site": "study site"})
    ref = _fit("sim_catcov", "function")
    result = fit_lmm(
        renamed,
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        covariates=["Age (years)", "study site", "sex"],
        reference_arm="usual care",
        visit_order=None,
        baseline_visit="baseline",
        week="week",
    )
    np.testing.assert_allclose(result.effects["estimate"], ref.effects["estimate"], rtol=1e-10)
    assert "`Age (years)`" in result.info["formula"]
    # Coefficient names as R prints them (backticks around non-syntactic names), as the MMRM.
    assert "`study siteB`" in result.info["coefficients"]


def _slope_cases() -> list[tuple[str, str]]:
    ref = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    ref = ref.loc[ref["singular"].astype(str).str.upper() == "FALSE"]
    return list(ref[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None))


@pytest.mark.parametrize(("dataset", "outcome"), _slope_cases())
def test_random_slope_matches_lmertest(dataset: str, outcome: str) -> None:
    result = _fit(dataset, outcome, random_slope=True, week="week")
    assert result.converged
    # Reference: tests/reference/make_references.R, lmerTest::lmer(value ~ covariates +
    # arm * visit + (1 + I(week / 12) | subject_id), REML = TRUE), Satterthwaite df.
    ref = pd.read_csv(OUTPUT / "lmm_slope_effects.csv", keep_default_na=False)
    ref = ref.loc[(ref["dataset"] == dataset) & (ref["outcome"] == outcome)]
    eff = result.effects
    assert eff["visit"].tolist() == ref["visit"].tolist()
    np.testing.assert_allclose(eff["estimate"], ref["estimate"], rtol=1e-4)
    np.testing.assert_allclose(eff["std_error"], ref["std_error"], rtol=1e-4)
    np.testing.assert_allclose(eff["df"], ref["df"], rtol=1e-2)
    vc = result.info["variance_components"]
    first = ref.iloc[0]
    np.testing.assert_allclose(vc["subject_intercept"], first["var_intercept"], rtol=1e-4)
    np.testing.assert_allclose(vc["subject_slope"], first["var_slope"], rtol=1e-4)
    np.testing.assert_allclose(vc["intercept_slope_cov"], first["cov_intercept_slope"], rtol=1e-4)
    np.testing.assert_allclose(vc["residual"], first["var_residual"], rtol=1e-4)
    np.testing.assert_allclose(result.info["loglik"], first["reml_loglik"], rtol=1e-6)


def test_random_slope_fits_and_reports_slope_variance() -> None:
    result = _fit("sim_dropout", "grip", random_slope=True, week="week")
    assert result.info["random_slope"] is True
    assert "subject_slope" in result.info["variance_components"]
    assert np.all(np.isfinite(result.effects["df"]))
    assert "week/12" in result.info["formula"]
    assert result.covariance is not None and result.covariance.shape == (4, 4)


def test_random_slope_requires_week() -> None:
    with pytest.raises(ModelError, match="week"):
        _fit("sim_dropout", "grip", random_slope=True)


def test_boundary_fit_is_flagged_and_warnings_do_not_escape() -> None:
    """Within-subject centred responses put the subject variance at zero.

    statsmodels fails to converge there; its ConvergenceWarnings are captured in
    ``.warnings`` (nothing reaches the caller), the REML criterion is minimised directly
    and the fit is flagged as a boundary (non-interior) optimum. lme4 gives a singular fit
    with the same fixed effects and residual variance 0.45958 on these data.
    """
    rng = np.random.default_rng(1)
    n = 30
    values = rng.normal(size=(n, 3))
    values -= values.mean(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "subject_id": np.repeat(np.arange(n), 3),
            "arm": np.repeat(np.where(np.arange(n) % 2 == 0, "ctl", "trt"), 3),
            "visit": np.tile(["v0", "v1", "v2"], n),
            "value": values.ravel(),
        }
    )
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = fit_lmm(
            frame,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            reference_arm="ctl",
            visit_order=["v0", "v1", "v2"],
            baseline_visit="v0",
        )
    assert leaked == []
    assert not result.converged
    assert any("converge" in w for w in result.warnings)
    assert any("boundary" in w for w in result.warnings)
    assert result.info["variance_components"]["subject_intercept"] < 1e-8
    # With a zero subject variance the model is OLS: lmer reports df = n - p = 84.
    np.testing.assert_allclose(result.effects["df"], 84.0)
    np.testing.assert_allclose(result.effects["estimate"], [0.159068858, -0.188053224], rtol=1e-6)


def test_missing_covariate_excludes_subject_with_warning() -> None:
    data = _read_data("sim_dropout")
    rows = data.loc[data["outcome"] == "pain"].copy()
    rows.loc[rows["subject_id"] == "D001", "age"] = np.nan
    result = fit_lmm(
        rows,
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        covariates=["age"],
        reference_arm="placebo",
        visit_order=["baseline", "week4", "week8", "week12"],
        baseline_visit="baseline",
    )
    assert any("1 subject(s) excluded" in w and "'age'" in w for w in result.warnings)
    assert result.info["n_subjects"] == 79


def test_unknown_baseline_visit_is_an_error() -> None:
    with pytest.raises(ModelError, match="baseline visit"):
        _fit("sim_dropout", "pain", baseline_visit="screening")


def _slope_blocks(jitter: float) -> lmm_module._Blocks:
    """sim_dropout pain with a random slope; ``jitter`` moves each subject's weeks apart."""
    rows = _read_data("sim_dropout")
    rows = rows.loc[(rows["outcome"] == "pain") & rows["value"].notna()]
    rows = rows.sort_values(["subject_id", "visit_index"])
    x = np.column_stack(
        [
            np.ones(len(rows)),
            rows["age"].to_numpy(),
            (rows["arm"] == "active").to_numpy(float),
            *[(rows["visit_index"] == k).to_numpy(float) for k in (2, 3, 4)],
        ]
    )
    weeks = rows["week"].to_numpy(float)
    weeks = weeks + jitter * np.random.default_rng(3).uniform(-1, 1, len(rows)) * (weeks > 0)
    z = np.column_stack([np.ones(len(rows)), weeks / 12.0])
    return lmm_module._Blocks.from_rows(
        rows["value"].to_numpy(float), x, z, rows["subject_id"].to_numpy()
    )


def test_per_subject_random_effects_blocks_match_shared_ones() -> None:
    """Subjects whose weeks differ cannot share V; that path gives the same REML quantities."""
    mixed = _slope_blocks(jitter=0.0)  # shared V wherever the observed visits agree
    assert any(b.shared for b in mixed.batches)
    stacked = _slope_blocks(jitter=0.0)
    stacked.batches = [
        lmm_module._Batch.build(b.xy, np.broadcast_to(b.z, (b.n_subjects, *b.z.shape)).copy())
        if b.shared
        else b
        for b in mixed.batches
    ]
    assert not any(b.shared for b in stacked.batches)
    psi = np.array([1.5, -0.2, 0.6, 1.1])
    one = lmm_module._reml_state(mixed, psi)
    two = lmm_module._reml_state(stacked, psi)
    np.testing.assert_allclose(two.deviance, one.deviance, rtol=1e-12)
    np.testing.assert_allclose(two.beta, one.beta, rtol=1e-10)
    grad1, hess1, jac1 = lmm_module._reml_derivatives(mixed, one)
    grad2, hess2, jac2 = lmm_module._reml_derivatives(stacked, two)
    np.testing.assert_allclose(grad2, grad1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hess2, hess1, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(jac2), np.array(jac1), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(lmm_module._reml_gradient(stacked, two), grad1, rtol=1e-9)

    # Jittered weeks really take the per-subject path; check it against central differences.
    jittered = _slope_blocks(jitter=0.5)
    assert not any(b.shared for b in jittered.batches if b.n_subjects > 1)
    state = lmm_module._reml_state(jittered, psi)
    grad, hess, _ = lmm_module._reml_derivatives(jittered, state)
    h = 1e-4
    eye = np.eye(len(psi))

    def dev(p: np.ndarray) -> float:
        return lmm_module._reml_state(jittered, p).deviance

    num_grad = np.array([(dev(psi + h * e) - dev(psi - h * e)) / (2 * h) for e in eye])
    num_hess = np.array(
        [
            (
                lmm_module._reml_gradient(jittered, lmm_module._reml_state(jittered, psi + h * e))
                - lmm_module._reml_gradient(jittered, lmm_module._reml_state(jittered, psi - h * e))
            )
            / (2 * h)
            for e in eye
        ]
    )
    np.testing.assert_allclose(grad, num_grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, num_hess, rtol=1e-5, atol=1e-5)


def _spy_on_mixedlm(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every MixedLM.fit call (start, result, warnings), passing its warnings on."""
    calls: list[dict[str, Any]] = []
    original = MixedLM.fit

    def spy(self: MixedLM, *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fit = original(self, *args, **kwargs)
        calls.append(
            {
                "start": kwargs.get("start_params"),
                "fit": fit,
                "messages": [str(w.message) for w in seen],
            }
        )
        for w in seen:
            warnings.warn(w.message, stacklevel=2)
        return fit

    monkeypatch.setattr(MixedLM, "fit", spy)
    return calls


def test_statsmodels_confirms_the_closed_form_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """MixedLM starts at the closed-form REML optimum and its answer is the one reported."""
    calls = _spy_on_mixedlm(monkeypatch)
    result = _fit("sim_dropout", "pain")
    assert len(calls) == 1
    fit = calls[0]["fit"]
    assert calls[0]["start"] is not None
    assert fit.converged and result.converged
    steps = result.info["optimizer_steps"]
    assert steps[1]["start"] == "closed-form REML optimum"
    assert steps[1]["method"] == "bfgs" and steps[1]["iterations"] == 0
    assert steps[1]["converged"] is True
    vc = result.info["variance_components"]
    np.testing.assert_allclose(vc["subject_intercept"], fit.cov_re[0, 0], rtol=1e-6)
    np.testing.assert_allclose(vc["residual"], fit.scale, rtol=1e-6)
    np.testing.assert_allclose(result.effects["estimate"], fit.fe_params[-3:], rtol=1e-6)
    assert result.warnings == tuple(calls[0]["messages"])


def test_statsmodels_flag_and_warnings_are_reported_at_a_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a zero subject variance MixedLM searches from its own start, fails, and says so."""
    calls = _spy_on_mixedlm(monkeypatch)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 3))
    values -= values.mean(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "subject_id": np.repeat(np.arange(30), 3),
            "arm": np.repeat(np.where(np.arange(30) % 2 == 0, "ctl", "trt"), 3),
            "visit": np.tile(["v0", "v1", "v2"], 30),
            "value": values.ravel(),
        }
    )
    result = fit_lmm(
        frame,
        response="value",
        subject="subject_id",
        visit="visit",
        arm="arm",
        reference_arm="ctl",
        visit_order=["v0", "v1", "v2"],
        baseline_visit="v0",
    )
    assert len(calls) == 1
    assert calls[0]["start"] is None
    assert not calls[0]["fit"].converged
    messages = calls[0]["messages"]
    assert any("converge" in m for m in messages)
    unique = tuple(dict.fromkeys(messages))
    assert result.warnings[: len(unique)] == unique
    assert not result.converged
    steps = result.info["optimizer_steps"]
    assert steps[1]["start"] == "statsmodels default"
    assert steps[1]["converged"] is False
    assert steps[2]["step"] == "direct REML minimisation after MixedLM failed"
    assert steps[-1] == {"step": "Newton polish", "newton_steps": 0, "skipped": True}
