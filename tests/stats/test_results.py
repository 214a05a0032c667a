"""The shared result helpers of :mod:`trialflow.stats.results`."""

from __future__ import annotations

import numpy as np

from trialflow.stats.results import gradient_size


def test_gradient_size_keeps_two_significant_digits_of_the_largest_component() -> None:
    assert gradient_size(np.array([1.2345e-8, -3.4567e-7])) == 3.5e-7
    assert gradient_size(np.array([0.0])) == 0.0


def test_gradient_size_hides_last_bit_noise() -> None:
    """The model records are the same whichever worker fitted the model (README, "Safety and
    reproducibility"): gradients differing in their last bits give the same record."""
    gradient = np.array([1.1942198194841497e-08, -2.0e-9])
    noisy = gradient * (1 + 4 * np.finfo(float).eps)
    assert gradient_size(noisy) == gradient_size(gradient) == 1.2e-8
