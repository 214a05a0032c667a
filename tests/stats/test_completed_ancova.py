"""Completing only the incomplete subjects gives the analysis of every subject completed.

Multiple imputation changes only the subjects with a missing visit, so it imputes those alone
(``ImputationSet.subset``) and adds the complete subjects' share of the ANCOVA's sums once
(``CompletedAncova``). The definition is the full one: complete every subject, fit
``Ancova``. Both are checked here for random parameters and draws, every strategy, on the
reference cases (intermittent missed visits, subjects without a post-baseline value).
"""

from __future__ import annotations

import numpy as np
import pytest

from trialflow.stats.imputation import Ancova, CompletedAncova, Refitter, imputation_set
from trialflow.stats.refbased import _completed_changes

from .test_jackknife import _prepared, _random_parameters, _strategies
from .test_refbased_reference import CASES

# The same terms summed in another order, and y'y - b'Z'y for the residual sum of squares.
RTOL = 1e-10


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_imputing_the_incomplete_subjects_alone_equals_completing_everyone(
    dataset, outcome, model
) -> None:
    ready, choice = _prepared(dataset, outcome, model)
    data = imputation_set(ready)
    strategies = _strategies(data)
    draws = 5
    beta, sigma = _random_parameters(Refitter(ready.problem, choice.fit), draws, seed=3)
    normals = np.random.default_rng(5).standard_normal((draws, *data.y.shape))
    everyone = _completed_changes(data, beta, sigma, strategies, normals)

    incomplete = data.incomplete
    assert 0 < incomplete.size < data.n
    part = data.subset(incomplete)
    imputed = _completed_changes(part, beta, sigma, strategies, normals[:, incomplete])
    np.testing.assert_array_equal(imputed, everyone[incomplete])
    complete = np.setdiff1d(np.arange(data.n), incomplete)
    observed = data.y - data.offset[:, None]
    # Every completed dataset keeps the complete subjects' own changes.
    k = len(data.visits)
    np.testing.assert_array_equal(
        everyone[complete], np.tile(observed[complete], draws * len(strategies))
    )
    assert everyone.shape[1] == draws * len(strategies) * k

    ancova = Ancova(data.z)
    full = ancova.fit(everyone)
    split = CompletedAncova(ancova, observed, incomplete).fit(imputed)
    np.testing.assert_allclose(split[0], full[0], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(split[1], full[1], rtol=RTOL)


def test_a_subset_must_hold_every_subject_with_a_missing_visit() -> None:
    ready, _ = _prepared(*CASES[0])
    data = imputation_set(ready)
    with pytest.raises(ValueError, match="missing visit"):
        data.subset(data.incomplete[1:])
