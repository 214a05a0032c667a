"""Unit checks of the LMM's REML engine: exact derivatives, lme4's parameters, batching.

The agreement of whole fits with lme4/lmerTest and pbkrtest is tested in test_lmm.py and
test_small_sample.py; here the pieces are checked against central differences of the REML
deviance itself, so no reference numbers are involved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from trialflow.stats import lmm_engine as engine

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
PSI = np.array([1.5, -0.2, 0.6, 1.1])  # G11, G21, G22, sigma2 (not an optimum)


def _slope_blocks(jitter: float = 0.0, slope: bool = True) -> engine.Blocks:
    """sim_dropout pain with a random slope; ``jitter`` moves each subject's weeks apart."""
    rows = pd.read_csv(
        REFERENCE / "data" / "sim_dropout.csv", keep_default_na=False, na_values=[""]
    )
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
    z = np.column_stack([np.ones(len(rows)), weeks / 12.0])[:, : 2 if slope else 1]
    return engine.Blocks.from_rows(
        rows["value"].to_numpy(float), x, z, rows["subject_id"].to_numpy()
    )


def _central(f: Callable[[np.ndarray], np.ndarray], at: np.ndarray, h: float) -> np.ndarray:
    """Central differences of ``f`` at ``at`` along every coordinate, stacked on axis 0."""
    eye = np.eye(len(at))
    return np.array([(f(at + h * e) - f(at - h * e)) / (2 * h) for e in eye])


def test_exact_reml_derivatives_match_finite_differences() -> None:
    """The analytic gradient/Hessian behind Satterthwaite df agree with central differences."""
    blocks = _slope_blocks()

    def dev(p: np.ndarray) -> np.ndarray:
        return np.array(engine.reml_state(blocks, p).deviance)

    def grad(p: np.ndarray) -> np.ndarray:
        return engine.reml_gradient(blocks, engine.reml_state(blocks, p))

    state = engine.reml_state(blocks, PSI)
    g, hess, jac = engine.reml_derivatives(blocks, state)
    np.testing.assert_allclose(g, _central(dev, PSI, 1e-4), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, _central(grad, PSI, 1e-5), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(engine.reml_gradient(blocks, state), g, rtol=1e-12)
    num_jac = _central(lambda p: engine.reml_state(blocks, p).phi, PSI, 1e-4)
    np.testing.assert_allclose(jac, num_jac, rtol=1e-6, atol=1e-10 * np.abs(state.phi).max())


def test_derivatives_in_lme4_parameters_match_finite_differences() -> None:
    """Gradient, Hessian and d Phi / dt in t = (theta, log sigma^2), by the chain rule."""
    blocks = _slope_blocks()
    params = engine.Lme4Parameters(2)
    t = np.array([1.1, -0.3, 0.7, 0.2])

    def dev(u: np.ndarray) -> np.ndarray:
        return np.array(engine.reml_state(blocks, params.psi(u)).deviance)

    def grad(u: np.ndarray) -> np.ndarray:
        state = engine.reml_state(blocks, params.psi(u))
        return params.jacobian(u).T @ engine.reml_gradient(blocks, state)

    state = engine.reml_state(blocks, params.psi(t))
    g, hess, jac = params.derivatives(t, engine.reml_derivatives(blocks, state))
    np.testing.assert_allclose(g, _central(dev, t, 1e-5), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, _central(grad, t, 1e-5), rtol=1e-6, atol=1e-6)
    num_jac = _central(lambda u: engine.reml_state(blocks, params.psi(u)).phi, t, 1e-5)
    np.testing.assert_allclose(jac, num_jac, rtol=1e-6, atol=1e-10 * np.abs(state.phi).max())
    # psi's own second derivatives, against differences of its Jacobian.
    np.testing.assert_allclose(
        params.curvature(t), np.moveaxis(_central(params.jacobian, t, 1e-6), 0, -1), atol=1e-8
    )


def test_a_zero_diagonal_theta_decouples_from_the_other_parameters() -> None:
    """The deviance is even in a diagonal theta: at zero its gradient and cross-derivatives
    vanish, so Newton steps keep a boundary optimum on the boundary and lmerTest's df lose
    that direction only."""
    blocks = _slope_blocks()
    params = engine.Lme4Parameters(2)
    t = np.array([1.1, -0.3, 0.0, 0.2])
    state = engine.reml_state(blocks, params.psi(t))
    g, hess, jac = params.derivatives(t, engine.reml_derivatives(blocks, state))
    assert g[2] == 0.0
    assert np.all(hess[2, [0, 1, 3]] == 0.0) and hess[2, 2] != 0.0
    assert np.all(jac[2] == 0.0)
    step = np.array([0.0, 0.0, 0.3, 0.0])
    below = engine.reml_state(blocks, params.psi(t - step))
    above = engine.reml_state(blocks, params.psi(t + step))
    np.testing.assert_allclose(below.deviance, above.deviance, rtol=1e-14)


def test_canonical_parameters_give_the_same_covariance() -> None:
    params = engine.Lme4Parameters(2)
    t = np.array([-0.8, 0.4, -0.5, 0.1])
    canonical = params.canonical(t)
    assert np.all(params.diagonal(canonical) >= 0)
    np.testing.assert_allclose(params.psi(canonical), params.psi(t), rtol=1e-14)
    np.testing.assert_allclose(params.psi(params.from_psi(PSI)), PSI, rtol=1e-8)


def test_fit_reaches_a_stationary_minimum() -> None:
    for slope in (False, True):
        fit = engine.fit_reml(_slope_blocks(slope=slope))
        assert fit.converged and not fit.singular
        assert np.max(np.abs(fit.gradient)) < 1e-6
        assert np.all(np.linalg.eigvalsh(fit.hessian) > 0)
        assert [s["step"] for s in fit.steps] == ["L-BFGS-B", "Newton"]


def test_distinct_rows_match_numpy_unique() -> None:
    rng = np.random.default_rng(0)
    for a in (
        rng.integers(0, 3, (500, 4)).astype(float),
        np.ones((20, 3)),
        rng.normal(size=(9, 2)),
    ):
        expected, inverse = np.unique(a, axis=0, return_inverse=True)
        rows, which = engine._distinct_rows(a)
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(which, inverse.ravel())


def test_per_subject_random_effects_blocks_match_shared_ones() -> None:
    """Subjects whose weeks differ cannot share V; that path gives the same REML quantities."""
    mixed = _slope_blocks()  # shared V wherever the observed visits agree
    assert any(b.shared for b in mixed.batches)
    stacked = engine.Blocks(
        [
            engine._Batch.build(b.xy, np.broadcast_to(b.z, (b.n_subjects, *b.z.shape)).copy())
            if b.shared
            else b
            for b in mixed.batches
        ],
        mixed.offset,
    )
    assert not any(b.shared for b in stacked.batches)
    one = engine.reml_state(mixed, PSI)
    two = engine.reml_state(stacked, PSI)
    np.testing.assert_allclose(two.deviance, one.deviance, rtol=1e-12)
    np.testing.assert_allclose(two.beta, one.beta, rtol=1e-10)
    for a, b in zip(
        engine.reml_derivatives(stacked, two), engine.reml_derivatives(mixed, one), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())
    np.testing.assert_allclose(engine.reml_gradient(stacked, two), engine.reml_gradient(mixed, one))

    # Jittered weeks really take the per-subject path; check it against central differences.
    jittered = _slope_blocks(jitter=0.5)
    assert not any(b.shared for b in jittered.batches if b.n_subjects > 1)
    g, hess, _ = engine.reml_derivatives(jittered, engine.reml_state(jittered, PSI))

    def dev(p: np.ndarray) -> np.ndarray:
        return np.array(engine.reml_state(jittered, p).deviance)

    def grad(p: np.ndarray) -> np.ndarray:
        return engine.reml_gradient(jittered, engine.reml_state(jittered, p))

    np.testing.assert_allclose(g, _central(dev, PSI, 1e-4), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(hess, _central(grad, PSI, 1e-5), rtol=1e-6, atol=1e-6)
    fit = engine.fit_reml(jittered)
    assert fit.converged and np.max(np.abs(fit.gradient)) < 1e-6
