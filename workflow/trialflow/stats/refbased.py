"""Treatment effects under imputation strategies: conditional mean with jackknife, and MI.

Two inference methods complete the data of an :class:`~trialflow.stats.imputation.ImputationSet`
and analyse every completed dataset with the ANCOVA of change at each visit:

* :func:`conditional_mean`: each missing value is replaced by its conditional mean given the
  subject's observed values, under the MMRM's estimates (Wolbers et al. 2022, R
  ``rbmi::method_condmean(type = "jackknife")``). The standard error is the jackknife's: the
  MMRM is refitted without each subject in turn (from the full-data optimum), the data
  re-imputed and re-analysed. Deterministic; intervals are normal-based.
* :func:`multiple_imputation`: the MMRM's parameters are drawn by refitting it to a bootstrap
  sample of subjects, stratified by arm ("approximate Bayesian", rbmi's
  ``method_approxbayes``), and the missing values are drawn from their conditional distribution
  under those parameters. The estimates are pooled by Rubin's rules with Barnard-Rubin df.
  Every imputation has its own random stream, derived from the seed, the outcome and the
  imputation's number, so results do not depend on the order or number of processes.

Both keep what the delta adjustment needs: adding ``delta`` to every imputed value of the
treatment arm after discontinuation shifts each completed dataset's estimate by ``delta``
times the ANCOVA coefficient of the indicator of those values, so a whole grid of deltas costs
nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.imputation import (
    Ancova,
    ImputationSet,
    Refitter,
    conditional_solves,
    fill,
    strategy_means,
)
from trialflow.stats.pooling import Pooled, rubin

__all__ = ["Jackknife", "MultipleImputation", "conditional_mean", "multiple_imputation"]

# A bootstrap sample whose MMRM refit fails is replaced by another; this many failures per
# imputation requested stop the analysis.
_MAX_FAILURE_RATE = 0.5
# Newton decrement (deviance units) at which a bootstrap refit stops: its parameters are then
# within ~1e-4 standard errors of the sample's optimum, far inside the spread of the draws.
_BOOTSTRAP_TOLERANCE = 1e-8


def _completed_changes(
    data: ImputationSet,
    beta: np.ndarray,
    sigma: np.ndarray,
    strategies: Sequence[str],
    normals: np.ndarray | None,
) -> np.ndarray:
    """Completed change from baseline under each strategy, side by side (subjects x S*visits)."""
    mu_own = data.x_own @ beta
    mu_ref = data.x_ref @ beta
    solves = conditional_solves(data, sigma, draws=normals is not None)
    means = np.stack([strategy_means(data, mu_own, mu_ref, s) for s in strategies])
    completed = fill(data, means, solves, normals) - data.offset[None, :, None]
    # Strategies side by side: subjects x (strategy, visit).
    return np.concatenate(list(completed), axis=1)


def _delta_indicator(data: ImputationSet) -> np.ndarray:
    """1 where a treatment-arm value is imputed after discontinuation (delta is added there)."""
    return (data.after & data.treated[:, None]).astype(float)


@dataclass(frozen=True)
class Jackknife:
    """Conditional-mean estimates and their leave-one-subject-out replicates.

    ``estimate`` and ``slope`` are (strategies x visits) and (visits); ``loo`` and
    ``loo_slope`` add a leading subject axis. ``slope`` is the change of the estimate per unit
    of delta (treatment arm, after discontinuation).
    """

    strategies: tuple[str, ...]
    visits: list[str]
    estimate: np.ndarray
    loo: np.ndarray
    slope: np.ndarray
    loo_slope: np.ndarray
    dropped_column_fits: int

    @property
    def n(self) -> int:
        return int(self.loo.shape[0])

    def summary(self, strategy: str, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Estimate and jackknife standard error per visit, at ``delta``."""
        s = self.strategies.index(strategy)
        est = self.estimate[s] + delta * self.slope
        reps = self.loo[:, s] + delta * self.loo_slope
        n = self.n
        se = np.sqrt((n - 1) / n * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))
        return est, se


def _cmi(
    data: ImputationSet,
    params: tuple[np.ndarray, np.ndarray],
    strategies: Sequence[str],
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    changes = _completed_changes(data, params[0], params[1], strategies, None)
    y = np.concatenate([changes, _delta_indicator(data)], axis=1)[keep]
    coef = Ancova(data.z[keep]).slope(y)
    k = len(data.visits)
    return coef[: len(strategies) * k].reshape(len(strategies), k), coef[len(strategies) * k :]


def conditional_mean(
    data: ImputationSet, refitter: Refitter, strategies: Sequence[str]
) -> Jackknife:
    """Conditional-mean imputation under each strategy, with jackknife replicates.

    Raises
    ------
    ModelError
        A leave-one-out refit of the MMRM did not converge (the subject is named).
    """
    n = data.n
    full = (refitter.beta, refitter.sigma)
    estimate, slope = _cmi(data, full, strategies, np.ones(n, dtype=bool))
    loo = np.empty((n, len(strategies), len(data.visits)))
    loo_slope = np.empty((n, len(data.visits)))
    n_fitted = refitter.problem.n_subjects
    for i in range(n):
        params: tuple[np.ndarray, np.ndarray] | None = full
        code = data.observed_code[i]
        if code >= 0:
            weights = np.ones(n_fitted)
            weights[code] = 0.0
            params = refitter.fit(weights)
        if params is None:
            raise ModelError(
                f"the MMRM refitted without subject {data.subjects[i]} did not converge, so "
                "the jackknife standard error cannot be computed",
                fix="use multiple_imputation, or a simpler covariance structure",
            )
        keep = np.arange(n) != i
        loo[i], loo_slope[i] = _cmi(data, params, strategies, keep)
    return Jackknife(
        strategies=tuple(strategies),
        visits=list(data.visits),
        estimate=estimate,
        loo=loo,
        slope=slope,
        loo_slope=loo_slope,
        dropped_column_fits=refitter.dropped_column_fits,
    )


def normal_interval(
    estimate: np.ndarray, se: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal-based interval and two-sided p-value (jackknife inference, as rbmi)."""
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * stats.norm.sf(np.abs(estimate / se))
    return estimate - z * se, estimate + z * se, p


@dataclass(frozen=True)
class MultipleImputation:
    """Per-imputation ANCOVA estimates and variances (imputations x strategies x visits).

    ``primary_changes`` holds the completed change at ``primary`` under MAR for every
    imputation (imputations x subjects), for responder analyses by MI.
    """

    strategies: tuple[str, ...]
    visits: list[str]
    estimate: np.ndarray
    variance: np.ndarray
    slope: np.ndarray
    df_complete: float
    failures: int
    primary_changes: np.ndarray | None

    @property
    def m(self) -> int:
        return int(self.estimate.shape[0])

    def pooled(self, strategy: str, visit: int, delta: float = 0.0) -> Pooled:
        """Rubin's rules for one strategy and visit, at ``delta``."""
        s = self.strategies.index(strategy)
        return rubin(
            self.estimate[:, s, visit] + delta * self.slope[visit],
            self.variance[:, s, visit],
            df_complete=self.df_complete,
        )


def _stream(seed: int, key: int, m: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(key, m)))


def _bootstrap_fit(
    rng: np.random.Generator, data: ImputationSet, refitter: Refitter
) -> tuple[np.ndarray, np.ndarray] | None:
    """MMRM refitted to a bootstrap sample of subjects, stratified by arm (None: no fit)."""
    counts = np.zeros(data.n)
    for arm in (np.flatnonzero(~data.treated), np.flatnonzero(data.treated)):
        counts += np.bincount(arm[rng.integers(0, arm.size, arm.size)], minlength=data.n)
    weights = np.zeros(refitter.problem.n_subjects)
    seen = data.observed_code >= 0
    weights[data.observed_code[seen]] = counts[seen]
    return refitter.fit(weights, _BOOTSTRAP_TOLERANCE)


def multiple_imputation(
    data: ImputationSet,
    refitter: Refitter,
    strategies: Sequence[str],
    *,
    imputations: int,
    seed: int,
    key: int,
    primary: int | None = None,
) -> MultipleImputation:
    """Multiple imputation under each strategy from bootstrap draws of the MMRM.

    ``seed`` (the trial's) and ``key`` (the outcome's) fix every random stream.

    Raises
    ------
    ModelError
        Too many bootstrap samples whose MMRM refit did not converge.
    """
    ancova = Ancova(data.z)
    s, k = len(strategies), len(data.visits)
    estimate = np.empty((imputations, s, k))
    variance = np.empty((imputations, s, k))
    mar = "mar" in strategies and primary is not None
    primary_changes = np.empty((imputations, data.n)) if mar else None
    failures = 0
    for m in range(imputations):
        rng = _stream(seed, key, m)
        params = _bootstrap_fit(rng, data, refitter)
        while params is None:
            failures += 1
            if failures > max(10, _MAX_FAILURE_RATE * imputations):
                raise ModelError(
                    f"the MMRM did not converge on {failures} bootstrap samples",
                    fix="use conditional_mean, or a simpler covariance structure",
                )
            params = _bootstrap_fit(rng, data, refitter)
        normals = rng.standard_normal(data.y.shape)
        changes = _completed_changes(data, params[0], params[1], strategies, normals)
        est, var = ancova.fit(changes)
        estimate[m], variance[m] = est.reshape(s, k), var.reshape(s, k)
        if primary_changes is not None and primary is not None:
            primary_changes[m] = changes[:, strategies.index("mar") * k + primary]
    return MultipleImputation(
        strategies=tuple(strategies),
        visits=list(data.visits),
        estimate=estimate,
        variance=variance,
        slope=ancova.slope(_delta_indicator(data)),
        df_complete=ancova.df,
        failures=failures,
        primary_changes=primary_changes,
    )
