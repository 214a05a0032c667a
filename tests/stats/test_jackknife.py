"""The linear-time jackknife re-analysis equals re-analysing each replicate literally.

The literal way (trialflow.stats.refbased._cmi per replicate: complete every subject under the
replicate's parameters, drop the left-out subject, fit the ANCOVA) is the definition; the R
references of test_refbased_reference.py check that definition against R. Here every
replicate gets its own random parameters, not only leave-one-out refits, so the algebra is
checked for any parameters and not only for ones close to the full fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from trialflow.stats.imputation import STRATEGIES, Ancova, Refitter, imputation_set
from trialflow.stats.jackknife import leave_one_out_effects, lonely_subjects
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import fit_prepared, prepare_mmrm
from trialflow.stats.refbased import _cmi, _delta_indicator, conditional_mean

from .test_refbased_reference import CASES, _grid

# Both ways sum the same terms in another order: agreement to rounding.
RTOL = 1e-9


def _prepared(dataset: str, outcome: str, model: str, lonely: bool = False):
    grid, info = _grid(dataset, outcome)
    covariates = str(info["covariates"]).split(";")
    if lonely:
        # One subject alone at a level of a categorical covariate.
        first = grid["subject_id"] == grid["subject_id"].iloc[0]
        grid["site"] = np.where(first, "lonely", np.where(grid.index % 2 == 0, "a", "b"))
        covariates = [*covariates, "site"]
    spec = MeanSpec(baseline="by_visit" if model == "by_visit" else "main")
    ready = prepare_mmrm(
        grid, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=covariates, reference_arm=info["control"],
        visit_order=None, week="week", spec=spec,
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    return ready, choice


def _random_parameters(refitter: Refitter, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-replicate coefficients and covariance matrices scattered around the fit."""
    rng = np.random.default_rng(seed)
    beta = refitter.beta[None] + 0.3 * rng.standard_normal((n, refitter.beta.size))
    k = refitter.sigma.shape[0]
    noise = 0.2 * rng.standard_normal((n, k, k))
    sigma = refitter.sigma[None] + noise @ np.swapaxes(noise, 1, 2)
    return beta, sigma


def _literal(data, beta, sigma, strategies) -> tuple[np.ndarray, np.ndarray]:
    effects = np.empty((data.n, len(strategies), len(data.visits)))
    slopes = np.empty((data.n, len(data.visits)))
    for i in range(data.n):
        keep = np.arange(data.n) != i
        effects[i], slopes[i] = _cmi(data, (beta[i], sigma[i]), strategies, keep)
    return effects, slopes


def _strategies(data) -> list[str]:
    return [s for s in STRATEGIES if s != "last_mean_carried_forward" or not (data.last < 0).any()]


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_equals_literal_reanalysis_for_any_parameters(dataset, outcome, model) -> None:
    ready, choice = _prepared(dataset, outcome, model)
    data = imputation_set(ready)
    strategies = _strategies(data)
    beta, sigma = _random_parameters(Refitter(ready.problem, choice.fit), data.n, seed=7)
    fast = leave_one_out_effects(data, beta, sigma, strategies, _delta_indicator(data))
    literal = _literal(data, beta, sigma, strategies)
    # The cases include intermittent missed visits and subjects without a post-baseline value.
    assert len(data.patterns) >= 2
    np.testing.assert_allclose(fast[0], literal[0], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(fast[1], literal[1], rtol=RTOL, atol=RTOL)


def test_a_subject_alone_at_a_covariate_level_is_reanalysed_literally() -> None:
    ready, choice = _prepared("sim_dropout", "pain", "main", lonely=True)
    data = imputation_set(ready)
    strategies = _strategies(data)
    lonely = lonely_subjects(Ancova(data.z))
    assert lonely.tolist() == [0]
    refitter = Refitter(ready.problem, choice.fit)
    beta, sigma = _random_parameters(refitter, data.n, seed=11)
    fast = leave_one_out_effects(data, beta, sigma, strategies, _delta_indicator(data))
    assert np.isnan(fast[0][0]).all() and np.isfinite(fast[0][1:]).all()
    # conditional_mean fills that replicate literally; every replicate equals the definition.
    jk = conditional_mean(data, refitter, strategies)
    from trialflow.stats.refbased import _leave_one_out_refits

    literal = _literal(data, *_leave_one_out_refits(data, refitter), strategies)
    np.testing.assert_allclose(jk.loo, literal[0], rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(jk.loo_slope, literal[1], rtol=RTOL, atol=RTOL)
