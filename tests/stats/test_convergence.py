"""The MMRM's convergence checks, each one alone.

README, "The analysis plan", covariance of the MMRM: a structure that "does not converge
(optimizer failure, a gradient that is not small, or a Hessian that is not positive definite)"
is replaced by the next fallback. Each check must decide on its own: a point that only one
check rejects is rejected, so disabling any one check is noticed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trialflow.errors import ModelError
from trialflow.stats.covariance import make_structure
from trialflow.stats.mmrm import (
    _GRADIENT_TOLERANCE,
    MeanSpec,
    _convergence_problems,
    _fit_structure,
    prepare_mmrm,
)

from .test_mmrm import VISITS, _fit

TRUE_COV = np.array([[4.0, 2.4, 2.0], [2.4, 5.0, 3.2], [2.0, 3.2, 6.0]])


def test_an_interior_optimum_passes_every_check() -> None:
    gradient = np.array([1e-7, -2e-7])
    hessian = np.array([[40.0, 5.0], [5.0, 30.0]])
    assert _convergence_problems(None, gradient, hessian) == []


def test_only_the_gradient_check_catches_a_steep_point() -> None:
    """README promise: "a gradient that is not small" means non-convergence on its own.

    A large trial's -2 REML is sharply curved (Hessian eigenvalues ~1e5), so a point 2e-8
    away from the optimum along one parameter has gradient 2e-3, above the tolerance of 1e-3,
    while its Hessian is positive definite and its Newton decrement g' H^-1 g = 4e-11 is far
    below the decrement tolerance: only the gradient check rejects it.
    """
    hessian = np.diag([1e5, 2e5])
    gradient = hessian @ np.array([2e-8, 0.0])
    assert gradient[0] > _GRADIENT_TOLERANCE
    assert gradient @ np.linalg.solve(hessian, gradient) < 1e-9
    problems = _convergence_problems(None, gradient, hessian)
    assert problems == ["gradient not small (max |gradient| 0.002)"]


@pytest.mark.parametrize(
    "hessian",
    [
        np.array([[2.0, 0.0], [0.0, -1e-3]]),  # a saddle
        np.array([[2.0, 0.0], [0.0, 0.0]]),  # flat: a parameter the likelihood ignores
    ],
    ids=["saddle", "flat"],
)
def test_only_the_hessian_check_catches_a_saddle_or_flat_point(hessian: np.ndarray) -> None:
    """README promise: "a Hessian that is not positive definite" means non-convergence.

    The gradient is tiny (a stationary point, which the gradient check accepts) and the
    optimizer reported success, yet the point is not a maximum of the likelihood.
    """
    gradient = np.array([1e-7, 1e-7])
    problems = _convergence_problems(None, gradient, hessian)
    assert len(problems) == 1
    assert problems[0].startswith("Hessian of the REML log-likelihood not positive definite")


def test_only_the_optimizer_check_catches_an_optimizer_failure() -> None:
    """README promise: an "optimizer failure" means non-convergence, even at a good point."""
    gradient = np.array([1e-7, -2e-7])
    hessian = np.array([[40.0, 5.0], [5.0, 30.0]])
    message = "L-BFGS-B: ABNORMAL_TERMINATION_IN_LNSRCH"
    assert _convergence_problems(message, gradient, hessian) == [message]


def test_a_small_gradient_far_from_the_optimum_is_caught_by_the_newton_decrement() -> None:
    """A gradient under the tolerance on a nearly flat likelihood: the optimum is still far.

    Curvature 1e-2, gradient 5e-4: the Newton step is 0.05 and the decrement 2.5e-5.
    """
    gradient = np.array([5e-4, 0.0])
    hessian = np.diag([1e-2, 1e-2])
    problems = _convergence_problems(None, gradient, hessian)
    assert problems == ["not at a stationary point (Newton decrement 2.5e-05)"]


def _never_together(seed: int = 0, n: int = 60) -> pd.DataFrame:
    """Three visits; odd subjects are seen at weeks 4 and 8, even ones at weeks 8 and 12.

    No subject is seen at both week 4 and week 12, so their covariance (and the Toeplitz lag-2
    correlation, which only that pair carries) does not enter the likelihood at all.
    """
    rng = np.random.default_rng(seed)
    y = rng.multivariate_normal(np.zeros(3), TRUE_COV, size=n)
    seen = np.ones((n, 3), dtype=bool)
    seen[np.arange(n) % 2 == 0, 2] = False
    seen[np.arange(n) % 2 == 1, 0] = False
    i, j = np.nonzero(seen)
    arm = np.where((np.arange(n) // 2) % 2 == 0, "control", "active")
    baseline = rng.normal(10.0, 2.0, n)
    return pd.DataFrame(
        {
            "subject": i,
            "arm": arm[i],
            "visit": np.asarray(VISITS)[j],
            "baseline": baseline[i],
            "change": y[i, j],
        }
    )


def test_an_unidentified_correlation_is_caught_by_the_hessian_check_alone() -> None:
    """README promise: a Hessian that is not positive definite means non-convergence.

    The Toeplitz lag-2 correlation is not identified by these data: the optimizer succeeds
    and the gradient is tiny, but the likelihood is flat along that parameter. Only the
    Hessian check rejects the fit, and the MMRM falls back to AR(1).
    """
    data = _never_together()
    ready = prepare_mmrm(
        data,
        response="change",
        subject="subject",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=(),
        reference_arm="control",
        visit_order=VISITS,
        week=None,
        spec=MeanSpec(baseline="main"),
    )
    fit = _fit_structure(ready.problem, make_structure("toep", 3))
    assert np.max(np.abs(fit.gradient)) < 1e-2 * _GRADIENT_TOLERANCE
    assert not fit.converged
    assert fit.reason.startswith("Hessian of the REML log-likelihood not positive definite")
    assert ";" not in fit.reason  # no other check fired

    with pytest.raises(ModelError, match=r"Toeplitz \(toep\) did not converge: Hessian"):
        _fit(data, covariance="toep", fallback=())
    result = _fit(data, covariance="toep", fallback=("ar1",))
    assert result.info["covariance_tried"] == ["toep", "ar1"]
    assert result.info["covariance_used"] == "ar1"
