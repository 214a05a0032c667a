"""The responder model fitted on covariate groups equals the fit on the subjects.

``Covariates`` groups subjects with the same design row (arm, baseline) and the logistic
regression is fitted to each group's responders out of its size. The binomial likelihood of
the groups is the Bernoulli likelihood of the subjects, so coefficients and covariance agree
to rounding; the subject-level fit is itself checked against R ``glm`` in
test_refbased_reference.py (non-responder imputation).
"""

from __future__ import annotations

import numpy as np
import pytest

from trialflow.stats.responders import Covariates, logistic_many

# Sums over a group in another order than over its subjects.
RTOL = 1e-9


def _design(rng: np.random.Generator, n: int, decimals: int | None) -> np.ndarray:
    baseline = rng.uniform(3, 9, n)
    if decimals is not None:
        baseline = np.round(baseline, decimals)
    return np.column_stack([np.ones(n), rng.integers(0, 2, n), baseline])


def _flags(rng: np.random.Generator, x: np.ndarray, fits: int) -> np.ndarray:
    p = 1 / (1 + np.exp(-(-2.0 + 0.8 * x[:, 1] + 0.25 * x[:, 2])))
    return (rng.uniform(size=(fits, x.shape[0])) < p).astype(float)


@pytest.mark.parametrize("decimals", [0, 1, None])
def test_a_grouped_fit_equals_the_subject_level_fit(decimals: int | None) -> None:
    rng = np.random.default_rng(11)
    x = _design(rng, 600, decimals)
    y = _flags(rng, x, 7)
    groups = Covariates.of(x)
    if decimals == 0:
        assert groups.x.shape[0] <= 14  # 2 arms x baselines 3..9
    if decimals is None:
        assert groups.x.shape[0] == 600
    np.testing.assert_array_equal(groups.size.sum(), 600)
    np.testing.assert_array_equal(groups.successes(y).sum(axis=1), y.sum(axis=1))

    beta, cov, ok = logistic_many(x, y)
    g_beta, g_cov, g_ok = logistic_many(groups.x, groups.successes(y), groups.size)
    assert ok.all() and g_ok.all()
    np.testing.assert_allclose(g_beta, beta, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(g_cov, cov, rtol=RTOL, atol=1e-14)


def test_each_group_holds_the_subjects_of_its_design_row() -> None:
    rng = np.random.default_rng(2)
    x = _design(rng, 200, 0)
    groups = Covariates.of(x)
    # The distinct rows, in lexicographic order.
    np.testing.assert_array_equal(groups.x, np.unique(x, axis=0))
    marker = np.arange(200, dtype=float)[None]
    sums = groups.successes(marker)[0]
    for row, size, total in zip(groups.x, groups.size, sums, strict=True):
        members = np.flatnonzero((x == row).all(axis=1))
        assert members.size == size
        assert marker[0, members].sum() == total


def test_separated_data_fail_grouped_as_they_fail_ungrouped() -> None:
    rng = np.random.default_rng(4)
    x = _design(rng, 100, 0)
    y = x[:, 1][None].copy()  # responders are exactly the treated arm
    groups = Covariates.of(x)
    assert not logistic_many(x, y)[2][0]
    assert not logistic_many(groups.x, groups.successes(y), groups.size)[2][0]


def test_a_missing_design_value_is_refused() -> None:
    x = np.array([[1.0, 0.0, 5.0], [1.0, 1.0, np.nan]])
    with pytest.raises(ValueError, match="missing value"):
        Covariates.of(x)
