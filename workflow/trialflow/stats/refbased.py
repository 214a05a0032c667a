"""Treatment effects under imputation strategies: conditional mean with jackknife, and MI.

Two inference methods complete the data of an :class:`~trialflow.stats.imputation.ImputationSet`
and analyse every completed dataset with the ANCOVA of change at each visit:

* :func:`conditional_mean`: each missing value is replaced by its conditional mean given the
  subject's observed values, under the MMRM's estimates (Wolbers et al. 2022, R
  ``rbmi::method_condmean(type = "jackknife")``). The standard error is the jackknife's: the
  MMRM is refitted without each subject in turn (from the full-data optimum), the data
  re-imputed and re-analysed (:mod:`trialflow.stats.jackknife`, in time linear in the number
  of subjects). Deterministic; intervals are normal-based.
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
from functools import cached_property

import numpy as np
from scipy import stats

from trialflow.errors import ModelError
from trialflow.parallel import chunks, fork_imap
from trialflow.stats.batchfit import bootstrap_samples, leave_one_out_samples
from trialflow.stats.imputation import (
    Ancova,
    CompletedAncova,
    ImputationSet,
    MissingCells,
    Refitter,
    conditional_solves,
    fill,
    missing_values,
    strategy_means,
)
from trialflow.stats.jackknife import leave_one_out_effects
from trialflow.stats.pooling import Pooled, rubin

__all__ = [
    "Jackknife",
    "MultipleImputation",
    "VisitChanges",
    "conditional_mean",
    "multiple_imputation",
]

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
    """Completed change from baseline under each strategy, for each parameter draw.

    ``beta`` (draws x p) and ``sigma`` (draws x k x k) are the MMRM's parameters, ``normals``
    (draws x subjects x visits) the draws' standard normals (None: conditional means). The
    result is subjects x (draw, strategy, visit), flattened in that order.
    """
    k = len(data.visits)
    mu_own = np.einsum("nkp,mp->mnk", data.x_own, beta)
    mu_ref = np.einsum("nkp,mp->mnk", data.x_ref, beta)
    solves = conditional_solves(data, sigma, draws=normals is not None)
    means = np.stack([strategy_means(data, mu_own, mu_ref, s) for s in strategies])
    completed = fill(data, means, solves, normals) - data.offset[None, None, :, None]
    # (strategy, draw, subject, visit) -> subject x (draw, strategy, visit)
    return completed.transpose(2, 1, 0, 3).reshape(data.n, beta.shape[0] * len(strategies) * k)


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

    @cached_property
    def _spread(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centred sums of squares of the replicates (strategies x visits), of their products
        with the slopes' (strategies x visits) and of the slopes' (visits)."""
        a = self.loo - self.loo.mean(axis=0)
        b = self.loo_slope - self.loo_slope.mean(axis=0)
        return np.einsum("isk,isk->sk", a, a), np.einsum("isk,ik->sk", a, b), (b * b).sum(axis=0)

    def summary(self, strategy: str, delta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Estimate and jackknife standard error per visit, at ``delta``.

        A replicate at ``delta`` is ``loo + delta * loo_slope``, so its centred sum of squares
        is a quadratic in delta: a tipping-point grid costs no pass over the replicates.
        """
        s = self.strategies.index(strategy)
        est = self.estimate[s] + delta * self.slope
        aa, ab, bb = self._spread
        squares = np.maximum(aa[s] + 2 * delta * ab[s] + delta**2 * bb, 0.0)
        n = self.n
        return est, np.sqrt((n - 1) / n * squares)


def _cmi(
    data: ImputationSet,
    params: tuple[np.ndarray, np.ndarray],
    strategies: Sequence[str],
    keep: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    changes = _completed_changes(data, params[0][None], params[1][None], strategies, None)
    y = np.concatenate([changes, _delta_indicator(data)], axis=1)[keep]
    coef = Ancova(data.z[keep]).slope(y)
    k = len(data.visits)
    return coef[: len(strategies) * k].reshape(len(strategies), k), coef[len(strategies) * k :]


def _leave_one_out_refits(
    data: ImputationSet, refitter: Refitter, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The MMRM refitted without each subject in turn (a subject with no observed visit
    leaves the fit unchanged), the samples refitted together, chunk by chunk on up to
    ``workers`` processes."""
    n_fitted = refitter.problem.n_subjects
    codes = data.observed_code[data.observed_code >= 0]

    def weights(i: int) -> np.ndarray:
        w = np.ones(n_fitted)
        w[codes[i]] = 0.0
        return w

    betas, sigmas, ok = refitter.fit_many(
        lambda rows: leave_one_out_samples(refitter.problem, codes[rows]),
        weights,
        codes.size,
        workers=workers,
    )
    if not ok.all():
        left_out = data.subjects[int(np.flatnonzero(data.observed_code >= 0)[~ok][0])]
        raise ModelError(
            f"the MMRM refitted without subject {left_out} did not converge, so "
            "the jackknife standard error cannot be computed",
            fix="use multiple_imputation, or a simpler covariance structure",
        )
    beta = np.tile(refitter.beta, (data.n, 1))
    sigma = np.tile(refitter.sigma, (data.n, 1, 1))
    seen = data.observed_code >= 0
    beta[seen], sigma[seen] = betas, sigmas
    return beta, sigma


def conditional_mean(
    data: ImputationSet, refitter: Refitter, strategies: Sequence[str], *, workers: int = 1
) -> Jackknife:
    """Conditional-mean imputation under each strategy, with jackknife replicates (the
    leave-one-out refits on up to ``workers`` processes).

    Raises
    ------
    ModelError
        A leave-one-out refit of the MMRM did not converge (the subject is named).
    """
    n = data.n
    full = (refitter.beta, refitter.sigma)
    estimate, slope = _cmi(data, full, strategies, np.ones(n, dtype=bool))
    beta, sigma = _leave_one_out_refits(data, refitter, workers)
    delta = _delta_indicator(data)
    loo, loo_slope, lonely = leave_one_out_effects(data, beta, sigma, strategies, delta)
    # Without its only subject at some covariate level, the ANCOVA loses that column.
    for i in lonely:
        keep = np.arange(n) != i
        loo[i], loo_slope[i] = _cmi(data, (beta[i], sigma[i]), strategies, keep)
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
class VisitChanges:
    """The completed change at one visit in every imputation.

    ``observed`` is every subject's observed change (NaN where imputed); ``imputed`` holds
    each imputation's values (imputations x subjects) of the subjects at positions ``missing``.
    """

    observed: np.ndarray
    missing: np.ndarray
    imputed: np.ndarray


@dataclass(frozen=True)
class MultipleImputation:
    """Per-imputation ANCOVA estimates and variances (imputations x strategies x visits).

    ``primary_changes`` holds the completed change at ``primary`` under MAR, for responder
    analyses by MI.
    """

    strategies: tuple[str, ...]
    visits: list[str]
    estimate: np.ndarray
    variance: np.ndarray
    slope: np.ndarray
    df_complete: float
    failures: int
    primary_changes: VisitChanges | None

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


# An imputation's two random streams: its bootstrap samples and its missing values' normals.
# Separate streams let a worker process draw the samples of its chunk of imputations.
_SAMPLES, _NORMALS = 0, 1


def _stream(seed: int, key: int, m: int, purpose: int) -> np.random.Generator:
    """Imputation ``m``'s stream for ``purpose`` (``_SAMPLES`` or ``_NORMALS``)."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(key, m, purpose))
    return np.random.default_rng(sequence)


def _bootstrap_counts(rng: np.random.Generator, data: ImputationSet, n_fitted: int) -> np.ndarray:
    """Subject weights of a bootstrap sample, stratified by arm, for the MMRM's subjects."""
    counts = np.zeros(data.n)
    for arm in (np.flatnonzero(~data.treated), np.flatnonzero(data.treated)):
        counts += np.bincount(arm[rng.integers(0, arm.size, arm.size)], minlength=data.n)
    weights = np.zeros(n_fitted)
    seen = data.observed_code >= 0
    weights[data.observed_code[seen]] = counts[seen]
    return weights


def _bootstrap_draws(
    data: ImputationSet,
    refitter: Refitter,
    seed: tuple[int, int],
    imputations: int,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One bootstrap refit of the MMRM per imputation: coefficients, covariances, failures.

    ``seed`` is the trial's seed and the outcome's key. Every imputation's first sample is
    drawn and refitted in batches (on up to ``workers`` processes). A sample whose refit fails
    is replaced by the next sample of the imputation's stream, as many times as needed, so
    each imputation's draws depend only on its own stream.

    Raises
    ------
    ModelError
        Too many bootstrap samples whose MMRM refit did not converge.
    """
    n_fitted = refitter.problem.n_subjects

    def first(m: int) -> np.ndarray:
        return _bootstrap_counts(_stream(*seed, m, _SAMPLES), data, n_fitted)

    betas, sigmas, ok = refitter.fit_many(
        lambda rows: bootstrap_samples(refitter.problem, np.stack([first(m) for m in rows])),
        first,
        imputations,
        _BOOTSTRAP_TOLERANCE,
        workers,
    )
    failures = 0
    for m in np.flatnonzero(~ok):
        rng = _stream(*seed, int(m), _SAMPLES)
        _bootstrap_counts(rng, data, n_fitted)  # the sample that failed
        params = None
        while params is None:
            failures += 1
            if failures > max(10, _MAX_FAILURE_RATE * imputations):
                raise ModelError(
                    f"the MMRM did not converge on {failures} bootstrap samples",
                    fix="use conditional_mean, or a simpler covariance structure",
                )
            params = refitter.fit(_bootstrap_counts(rng, data, n_fitted), _BOOTSTRAP_TOLERANCE)
        betas[m], sigmas[m] = params
    return betas, sigmas, failures


@dataclass(frozen=True)
class _Completion:
    """What every chunk of imputations shares: the missing cells, the incomplete subjects'
    ANCOVA rows, and the ANCOVA's sums over the observed cells."""

    cells: MissingCells
    z: np.ndarray  # the ANCOVA's rows of ``cells.data``'s subjects
    ancova: CompletedAncova
    strategies: tuple[str, ...]
    observed: np.ndarray  # every subject's observed changes (NaN where missing)

    @classmethod
    def of(cls, data: ImputationSet, ancova: Ancova, strategies: Sequence[str]) -> _Completion:
        cells = MissingCells.of(data)
        observed = data.y - data.offset[:, None]
        return cls(
            cells, ancova.z[cells.positions], CompletedAncova(ancova, observed),
            tuple(strategies), observed,
        )  # fmt: skip

    def sums(
        self, beta: np.ndarray, sigma: np.ndarray, normals: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The imputed cells' Z'y (strategies x draws x visits x columns of Z) and y'y
        (strategies x draws x visits) under each parameter draw (``beta``: draws x p,
        ``sigma``: draws x k x k), and each pattern's completed changes (strategies x draws x
        subjects x missing visits)."""
        part = self.cells.data
        mu_own = np.einsum("nkp,mp->mnk", part.x_own, beta)
        mu_ref = np.einsum("nkp,mp->mnk", part.x_ref, beta)
        means = np.stack([strategy_means(part, mu_own, mu_ref, s) for s in self.strategies])
        shape = (len(self.strategies), beta.shape[0], len(part.visits))
        zy, yy = np.zeros((*shape, self.z.shape[1])), np.zeros(shape)
        solves = conditional_solves(part, sigma, draws=True)
        values = []
        for solve, rows, draws in zip(solves, self.cells.slices, normals, strict=True):
            v = missing_values(means[:, :, rows], part.y[rows][:, solve.seen], solve, draws)
            v -= part.offset[rows, None]
            zy[:, :, solve.missing] += np.swapaxes(self.z[rows].T @ v, -1, -2)
            yy[:, :, solve.missing] += np.einsum("smnj,smnj->smj", v, v)
            values.append(v)
        return zy, yy, values

    def missing_at(self, visit: int) -> np.ndarray:
        """Positions of the subjects imputed at ``visit``, pattern after pattern."""
        patterns = zip(self.cells.data.patterns, self.cells.slices, strict=True)
        parts = [self.cells.positions[r] for (_, _, missing), r in patterns if visit in missing]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def at(self, values: list[np.ndarray], draws: int, strategy: int, visit: int) -> np.ndarray:
        """The completed changes at ``visit`` under ``strategy`` of the subjects imputed there
        (draws x subjects, in :meth:`missing_at` order), from :meth:`sums`' completed
        changes."""
        parts = [
            v[strategy, :, :, int(np.flatnonzero(missing == visit)[0])]
            for (_, _, missing), v in zip(self.cells.data.patterns, values, strict=True)
            if visit in missing
        ]
        return np.concatenate(parts, axis=1) if parts else np.zeros((draws, 0))


# Values of completed data held at once (strategies x imputations x subjects x visits).
_CHUNK_VALUES = 2_000_000


def multiple_imputation(
    data: ImputationSet,
    refitter: Refitter,
    strategies: Sequence[str],
    *,
    imputations: int,
    seed: int,
    key: int,
    primary: int | None = None,
    workers: int = 1,
) -> MultipleImputation:
    """Multiple imputation under each strategy from bootstrap draws of the MMRM.

    ``seed`` (the trial's) and ``key`` (the outcome's) fix every random stream. Imputations are
    completed and analysed in chunks, on up to ``workers`` processes; each uses only its own
    stream, and the chunks are cut the same way for any number of workers, so the result does
    not depend on either.

    Raises
    ------
    ModelError
        Too many bootstrap samples whose MMRM refit did not converge.
    """
    ancova = Ancova(data.z)
    betas, sigmas, failures = _bootstrap_draws(data, refitter, (seed, key), imputations, workers)
    completion = _Completion.of(data, ancova, strategies)
    cells = completion.cells
    # The completed change under MAR at the primary visit (for responders).
    mar = strategies.index("mar") if "mar" in strategies and primary is not None else None

    def chunk(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        # Each imputation's normals for its missing cells, from its own stream.
        draws = [_stream(seed, key, m, _NORMALS).standard_normal(cells.count) for m in rows]
        normals = cells.split(np.stack(draws))
        zy, yy, values = completion.sums(betas[rows], sigmas[rows], normals)
        est, var = completion.ancova.fit(zy, yy)
        at = None
        if mar is not None and primary is not None:
            at = completion.at(values, rows.size, mar, primary)
        return est.transpose(1, 0, 2), var.transpose(1, 0, 2), at

    s, k = len(strategies), len(data.visits)
    cut = chunks(imputations, max(1, _CHUNK_VALUES // (s * max(cells.data.n, 1) * k)))
    estimate, variance = np.empty((imputations, s, k)), np.empty((imputations, s, k))
    primary_changes = None
    if mar is not None and primary is not None:
        missing = completion.missing_at(primary)
        observed = completion.observed[:, primary]
        primary_changes = VisitChanges(observed, missing, np.empty((imputations, missing.size)))
    for rows, (est, var, at) in zip(cut, fork_imap(chunk, cut, workers), strict=True):
        estimate[rows], variance[rows] = est, var
        if primary_changes is not None:
            primary_changes.imputed[rows] = at
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
