"""Tests of trialflow.stats.covariance: valid matrices, exact Jacobians, starting values."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from trialflow.errors import ModelError
from trialflow.stats.covariance import (
    STRUCTURES,
    CovarianceStructure,
    _acf_to_pacf,
    _pacf_to_acf,
    make_structure,
    nearest_positive_definite,
)

CODES = sorted(STRUCTURES)
# Unequally spaced weeks, for the spatial structures.
WEEKS = [0.0, 4.0, 12.0, 18.0, 26.0, 39.0, 52.0, 60.0]
VISITS = ("v1", "v2", "v3", "v4")


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_sigma_is_positive_definite_and_jacobian_exact(code: str, k: int) -> None:
    rng = np.random.default_rng(k)
    structure = make_structure(code, k, WEEKS[:k])
    for _ in range(5):
        theta = rng.normal(scale=0.8, size=structure.n_params)
        sigma = structure.sigma(theta)
        assert sigma.shape == (k, k)
        assert_allclose(sigma, sigma.T)
        assert np.linalg.eigvalsh(sigma).min() > 0
        jac = structure.jacobian(theta)
        step = 1e-6
        for j in range(theta.size):
            e = np.zeros(theta.size)
            e[j] = step
            numeric = (structure.sigma(theta + e) - structure.sigma(theta - e)) / (2 * step)
            assert_allclose(jac[j], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_unstructured_analytic_jacobian_matches_complex_step(k: int) -> None:
    structure = make_structure("us", k)
    theta = np.random.default_rng(0).normal(size=structure.n_params)
    assert_allclose(
        structure.jacobian(theta), CovarianceStructure.jacobian(structure, theta), atol=1e-12
    )


def _true_matrix(code: str, k: int) -> np.ndarray:
    heterogeneous = ("us", "csh", "ar1h", "sp_powh")
    sd = np.linspace(1.0, 2.0, k) if code in heterogeneous else np.full(k, 1.5)
    weeks = np.asarray(WEEKS[:k])
    distance = np.abs(np.subtract.outer(weeks, weeks))
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    corr = {
        "us": 0.3 + 0.4 / (1.0 + lag) + 0.05 * np.add.outer(np.arange(k), np.arange(k)) / k,
        "cs": np.where(lag == 0, 1.0, 0.4),
        "sp_pow": 0.97**distance,
        "sp_powh": 0.97**distance,
        "csh": np.where(lag == 0, 1.0, 0.4),
        "ar1": 0.6**lag,
        "ar1h": (-0.5) ** lag,
        "toep": np.array([1.0, 0.5, 0.1, -0.2])[lag],
    }[code]
    np.fill_diagonal(corr, 1.0)
    return corr * np.outer(sd, sd)


@pytest.mark.parametrize("code", CODES)
def test_start_recovers_a_matrix_of_the_structure(code: str) -> None:
    k = 4
    target = _true_matrix(code, k)
    structure = make_structure(code, k, WEEKS[:k])
    assert_allclose(structure.sigma(structure.start(target)), target, rtol=1e-8)


def test_parameters_are_interpretable() -> None:
    structure = make_structure("ar1h", 4)
    theta = structure.start(_true_matrix("ar1h", 4))
    params = structure.parameters(theta, VISITS)
    assert_allclose(params["rho"], -0.5)
    assert_allclose(params["variance[v4]"], 4.0)
    toep = make_structure("toep", 4)
    params = toep.parameters(toep.start(_true_matrix("toep", 4)), VISITS)
    assert_allclose(params["correlation[lag 3]"], -0.2)
    us = make_structure("us", 4)
    params = us.parameters(us.start(_true_matrix("us", 4)), VISITS)
    assert set(params) >= {"variance[v1]", "correlation[v1,v4]"}


def test_partial_autocorrelation_round_trip() -> None:
    rng = np.random.default_rng(1)
    for p in (1, 2, 5):
        pacf = rng.uniform(-0.9, 0.9, p)
        acf = _pacf_to_acf(pacf)
        assert_allclose(_acf_to_pacf(acf), pacf, atol=1e-12)
        toeplitz = np.array(
            [[1.0, *acf][abs(i - j)] for i in range(p + 1) for j in range(p + 1)]
        ).reshape(p + 1, p + 1)
        assert np.linalg.eigvalsh(toeplitz).min() > 0


def test_nearest_positive_definite_floors_eigenvalues() -> None:
    """The symmetric matrix nearest in Frobenius norm with eigenvalues >= floor * largest.

    Higham (1988), "Computing a nearest symmetric positive semidefinite matrix", Linear
    Algebra Appl. 103:103-118, Theorem 2.1: the nearest positive semidefinite matrix to a
    symmetric A = V diag(l) V' is V diag(max(l, 0)) V'; with a floor c the same argument gives
    V diag(max(l, c)) V'. For the tridiagonal Toeplitz matrix below the eigenpairs are known by
    hand: 1 - b sqrt(2) with u = (1, -sqrt(2), 1) / 2, 1 with (1, 0, -1) / sqrt(2), and
    1 + b sqrt(2) with (1, sqrt(2), 1) / 2 (b = 0.99), so only the first eigenvalue moves:
    the answer is S + (c - (1 - b sqrt(2))) u u'.
    """
    b = 0.99
    s = np.array([[1.0, b, 0.0], [b, 1.0, b], [0.0, b, 1.0]])
    u = np.array([1.0, -np.sqrt(2.0), 1.0]) / 2.0
    low, top = 1.0 - b * np.sqrt(2.0), 1.0 + b * np.sqrt(2.0)
    assert low < 0
    for floor in (1e-3, 0.0, 0.1):
        expected = s + (floor * top - low) * np.outer(u, u)
        fixed = nearest_positive_definite(s, floor=floor)
        assert_allclose(fixed, expected, rtol=0, atol=1e-12)
        assert_allclose(np.linalg.eigvalsh(fixed), [floor * top, 1.0, top], rtol=0, atol=1e-12)
    # Only the symmetric part counts (the nearest symmetric matrix to A is (A + A') / 2).
    skew = np.array([[0.0, 0.3, -0.2], [-0.3, 0.0, 0.1], [0.2, -0.1, 0.0]])
    assert_allclose(nearest_positive_definite(s + skew), nearest_positive_definite(s), atol=1e-12)
    # A matrix that already satisfies the floor is its own nearest matrix.
    good = s + 0.5 * np.eye(3)
    assert_allclose(nearest_positive_definite(good), good, rtol=0, atol=1e-12)


def test_unknown_structure() -> None:
    with pytest.raises(ModelError, match="unknown covariance structure"):
        make_structure("vc", 3)
    assert make_structure("TOEP", 3).code == "toep"
