"""Batched REML refits agree with the one-at-a-time refit of each sample.

The batch is a speed device only: every bootstrap and leave-one-out sample must get the
coefficients and covariance matrix that :meth:`Refitter.fit` gives it alone (both iterate to a
Newton decrement of 1e-11, so they agree far inside 1e-6 relative).
"""

from __future__ import annotations

import numpy as np
import pytest

from trialflow.stats.batchfit import bootstrap_samples, evaluate, leave_one_out_samples
from trialflow.stats.imputation import Refitter
from trialflow.stats.refbased import _bootstrap_counts, _stream

from .test_refbased import _prepared


@pytest.fixture(scope="module")
def refitter() -> Refitter:
    return _prepared("sim_dropout", "pain")[2]


def _alone(refitter: Refitter, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    params = refitter.fit(weights)
    assert params is not None
    return params


def test_batched_deviance_and_gradient_equal_the_reweighted_problem(refitter: Refitter) -> None:
    problem = refitter.problem
    rng = np.random.default_rng(3)
    weights = rng.integers(0, 3, size=(4, problem.n_subjects)).astype(float)
    sigma = np.stack([refitter.sigma * (1 + 0.1 * j) for j in range(4)])
    batch = evaluate(problem, bootstrap_samples(problem, weights), sigma, gradient=True)
    assert batch.sigma_gradient is not None
    for j in range(4):
        alone, _ = problem.reweighted(weights[j])
        ev = alone.evaluate(sigma[j], gradient=True)
        assert ev is not None and ev.sigma_gradient is not None
        assert batch.deviance[j] == pytest.approx(ev.deviance, rel=1e-12)
        assert np.allclose(batch.beta[j], ev.beta, rtol=1e-10, atol=1e-12)
        assert np.allclose(batch.sigma_gradient[j], ev.sigma_gradient, rtol=1e-8, atol=1e-10)


def test_bootstrap_refits_in_a_batch_equal_refits_one_at_a_time(refitter: Refitter) -> None:
    from .test_refbased import _prepared as prepared

    _, data, _ = prepared("sim_dropout", "pain")
    n_fitted = refitter.problem.n_subjects
    weights = np.stack([_bootstrap_counts(_stream(11, 5, m, 0), data, n_fitted) for m in range(12)])
    betas, sigmas, ok = refitter.fit_many(
        lambda rows: bootstrap_samples(refitter.problem, weights[rows]),
        lambda i: weights[i],
        len(weights),
    )
    assert ok.all()
    for m in range(len(weights)):
        beta, sigma = _alone(refitter, weights[m])
        assert np.allclose(betas[m], beta, rtol=1e-7, atol=1e-9)
        assert np.allclose(sigmas[m], sigma, rtol=1e-7, atol=1e-9)
        # A resampled fit differs from the full data's: the batch did not return the start.
        assert not np.allclose(sigma, refitter.sigma, rtol=1e-4)


def test_leave_one_out_samples_subtract_exactly_one_subject(refitter: Refitter) -> None:
    problem = refitter.problem
    codes = np.array([0, 7, problem.n_subjects - 1])
    loo = leave_one_out_samples(problem, codes)
    weights = np.ones((codes.size, problem.n_subjects))
    weights[np.arange(codes.size), codes] = 0.0
    direct = bootstrap_samples(problem, weights)
    for a, b in zip(loo.cross, direct.cross, strict=True):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-9)
    assert np.array_equal(loo.n_subjects, direct.n_subjects)
    assert np.allclose(loo.n_subjects.sum(axis=1), problem.n_subjects - 1)
    betas, sigmas, ok = refitter.fit_many(
        lambda rows: leave_one_out_samples(problem, codes[rows]),
        lambda i: weights[i],
        codes.size,
    )
    assert ok.all()
    for i in range(codes.size):
        beta, sigma = _alone(refitter, weights[i])
        assert np.allclose(betas[i], beta, rtol=1e-7, atol=1e-9)
        assert np.allclose(sigmas[i], sigma, rtol=1e-7, atol=1e-9)
