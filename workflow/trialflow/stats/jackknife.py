"""Leave-one-subject-out re-analysis of conditional-mean imputation, in time linear in n.

The jackknife of conditional-mean imputation (rbmi's ``method_condmean(type = "jackknife")``)
needs, for every subject i, the ANCOVA treatment coefficient of the data without subject i,
completed under the MMRM refitted without subject i. Done literally, each of the n replicates
completes and re-analyses all n subjects: n^2 work, which at 10,000 subjects is most of the
sensitivity analyses' time. This module gives the same numbers (to rounding) from sums that are
built once:

* A completed value is affine in the replicate's parameters: under a strategy, a subject's mean
  profile is its strategy design (own- and reference-arm rows, :func:`strategy_means` applied to
  the coefficient axis) times beta, and a missing value is that mean plus the pattern's gain
  Sigma_MO Sigma_OO^-1 times the observed values' deviations from it.
* The ANCOVA needs only Z'c (design times completed changes). Summed over the subjects of one
  missingness pattern, Z'c is a fixed array (sum of z_j times design_j, sum of z_j times the
  observed values) contracted with the replicate's beta and gain; the replicate then removes
  its own subject's term z_i c_i.
* The treatment row of (Z'Z - z_i z_i')^-1 follows from (Z'Z)^-1 by Sherman-Morrison.

A replicate whose left-out subject is the only one with a non-zero covariate column (the
ANCOVA then drops that column) is re-analysed literally by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trialflow.stats.imputation import Ancova, ImputationSet, conditional_solves, strategy_means

__all__ = ["leave_one_out_effects", "lonely_subjects"]

# Replicates handled at once (memory: replicates x strategies x ANCOVA columns x visits).
_CHUNK = 20_000


def _strategy_designs(data: ImputationSet, strategies: Sequence[str]) -> np.ndarray:
    """Each strategy's mean profile as a linear map of beta: strategies x p x subjects x visits.

    Every strategy's mean is a per-visit choice or sum of own- and reference-arm means, so
    applying it to the design columns gives the design of the strategy's mean.
    """
    own = np.moveaxis(data.x_own, 2, 0)
    ref = np.moveaxis(data.x_ref, 2, 0)
    return np.stack(
        [np.broadcast_to(strategy_means(data, own, ref, s), own.shape) for s in strategies]
    )


def _own_changes(
    data: ImputationSet, designs: np.ndarray, beta: np.ndarray, gains: list[np.ndarray]
) -> np.ndarray:
    """Each subject's completed change under its own replicate's parameters (S x n x visits)."""
    means = np.einsum("spnk,np->snk", designs, beta)
    completed = np.broadcast_to(data.y, means.shape).copy()
    for (rows, seen, missing), gain in zip(data.patterns, gains, strict=True):
        mu = means[:, rows]
        deviation = data.y[np.ix_(rows, seen)][None] - mu[..., seen]
        values = mu[..., missing] + np.einsum("rmo,sro->srm", gain[rows], deviation)
        completed[:, rows[:, None], missing[None, :]] = values
    return completed - data.offset[None, :, None]


def _totals(
    data: ImputationSet,
    z: np.ndarray,
    designs: np.ndarray,
    beta: np.ndarray,
    gains: list[np.ndarray],
) -> np.ndarray:
    """Z'c over all subjects, completed under each replicate's parameters (R x S x q x visits).

    ``beta`` and ``gains`` hold the replicates' coefficients and pattern gains (leading axis R).
    """
    observed = np.nan_to_num(data.y - data.offset[:, None], nan=0.0)
    base = z.T @ observed
    out = np.broadcast_to(base, (beta.shape[0], designs.shape[0], *base.shape)).copy()
    for (rows, seen, missing), gain in zip(data.patterns, gains, strict=True):
        zr = z[rows]
        summed = np.einsum("rq,sprk->sqkp", zr, designs[:, :, rows, :])
        mean = np.einsum("sqkp,cp->csqk", summed, beta)
        seen_sum = zr.T @ data.y[np.ix_(rows, seen)]
        values = (
            mean[..., missing]
            + np.einsum("qo,cmo->cqm", seen_sum, gain)[:, None]
            - np.einsum("csqo,cmo->csqm", mean[..., seen], gain)
            - (zr.T @ data.offset[rows])[None, None, :, None]
        )
        out[..., missing] += values
    return out


def _treatment_rows(ancova: Ancova) -> tuple[np.ndarray, np.ndarray]:
    """Row of (Z'Z - z_i z_i')^-1 for the treatment coefficient, per subject i, and leverages."""
    z, inv, arm = ancova.z, ancova.gram_inv, ancova.arm
    u = z @ inv
    leverage = np.einsum("nq,nq->n", u, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = inv[arm][None, :] + (u[:, arm] / (1.0 - leverage))[:, None] * u
    return rows, leverage


def lonely_subjects(ancova: Ancova) -> np.ndarray:
    """Subjects whose removal leaves an ANCOVA column all zero (the only one at a level)."""
    nonzero = ancova.z != 0
    single = nonzero.sum(axis=0) == 1
    return np.flatnonzero((nonzero & single[None, :]).any(axis=1))


def leave_one_out_effects(
    data: ImputationSet,
    beta: np.ndarray,
    sigma: np.ndarray,
    strategies: Sequence[str],
    delta_indicator: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Treatment effect of each leave-one-subject-out replicate, and its slope in delta.

    ``beta`` (n x p) and ``sigma`` (n x visits x visits) are the MMRM refitted without each
    subject; ``delta_indicator`` (n x visits) marks the values delta is added to. Returns the
    effects (n x strategies x visits), the slopes (n x visits) and the :func:`lonely_subjects`,
    whose replicates come out as NaN (the caller re-analyses them literally).
    """
    ancova = Ancova(data.z)
    z = ancova.z
    designs = _strategy_designs(data, strategies)
    gains = [s.gain for s in conditional_solves(data, sigma, draws=False)]
    own = _own_changes(data, designs, beta, gains)
    rows, _ = _treatment_rows(ancova)
    n, k = data.n, len(data.visits)
    effects = np.empty((n, len(strategies), k))
    for first in range(0, n, _CHUNK):
        c = np.arange(first, min(n, first + _CHUNK))
        totals = _totals(data, z, designs, beta[c], [g[c] for g in gains])
        totals -= np.einsum("cq,sck->csqk", z[c], own[:, c])
        effects[c] = np.einsum("cq,csqk->csk", rows[c], totals)
    delta_totals = z.T @ delta_indicator
    slopes = rows @ delta_totals - np.einsum("nq,nq->n", rows, z)[:, None] * delta_indicator
    lonely = lonely_subjects(ancova)
    effects[lonely], slopes[lonely] = np.nan, np.nan
    return effects, slopes, lonely
