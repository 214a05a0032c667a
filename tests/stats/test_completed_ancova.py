"""Completing only the missing cells gives the analysis of every subject completed.

Multiple imputation changes only the missing cells of the subjects with a missing visit, so it
draws and completes those alone (``MissingCells``, pattern by pattern) and adds the observed
cells' share of the ANCOVA's sums once (``CompletedAncova``). The definition is the full one:
complete every subject (``fill``), fit ``Ancova``. Both are checked here for random parameters
and draws, every strategy, on the reference cases (intermittent missed visits, subjects
without a post-baseline value).
"""

from __future__ import annotations

import numpy as np
import pytest

from trialflow.stats.imputation import Ancova, MissingCells, Refitter, imputation_set
from trialflow.stats.refbased import _completed_changes, _Completion

from .test_jackknife import _prepared, _random_parameters, _strategies
from .test_refbased_reference import CASES

# The same terms summed in another order, and y'y - b'Z'y for the residual sum of squares.
RTOL = 1e-10


def _pattern_normals(data, normals: np.ndarray) -> list[np.ndarray]:
    """The full normals (draws x subjects x visits) at each pattern's missing cells."""
    return [normals[:, rows][:, :, missing] for rows, _, missing in data.patterns]


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_imputing_the_missing_cells_alone_equals_completing_everyone(
    dataset, outcome, model
) -> None:
    ready, choice = _prepared(dataset, outcome, model)
    data = imputation_set(ready)
    strategies = _strategies(data)
    draws, s, k = 5, len(strategies), len(data.visits)
    beta, sigma = _random_parameters(Refitter(ready.problem, choice.fit), draws, seed=3)
    normals = np.random.default_rng(5).standard_normal((draws, *data.y.shape))
    everyone = _completed_changes(data, beta, sigma, strategies, normals)
    # Every completed dataset keeps the complete subjects' own changes.
    complete = np.flatnonzero(~np.isnan(data.y).any(axis=1))
    assert 0 < complete.size < data.n
    observed = data.y - data.offset[:, None]
    np.testing.assert_array_equal(everyone[complete], np.tile(observed[complete], draws * s))

    ancova = Ancova(data.z)
    completion = _Completion.of(data, ancova, strategies)
    zy, yy, values = completion.sums(beta, sigma, _pattern_normals(data, normals))
    split = completion.ancova.fit(zy, yy)  # strategies x draws x visits
    full = [part.reshape(draws, s, k).transpose(1, 0, 2) for part in ancova.fit(everyone)]
    np.testing.assert_allclose(split[0], full[0], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(split[1], full[1], rtol=RTOL)

    # The completed values themselves, read back at each visit for the subjects missing there.
    by_subject = everyone.reshape(data.n, draws, s, k)
    for visit in range(k):
        missing = completion.missing_at(visit)
        np.testing.assert_array_equal(np.sort(missing), np.flatnonzero(np.isnan(data.y[:, visit])))
        for strategy in range(s):
            got = completion.at(values, draws, strategy, visit)
            want = by_subject[missing, :, strategy, visit].T
            np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize(("dataset", "outcome", "model"), CASES)
def test_an_imputation_draws_one_normal_per_missing_cell_pattern_by_pattern(
    dataset, outcome, model
) -> None:
    ready, _ = _prepared(dataset, outcome, model)
    data = imputation_set(ready)
    cells = MissingCells.of(data)
    assert cells.count == int(np.isnan(data.y).sum())
    incomplete = np.flatnonzero(np.isnan(data.y).any(axis=1))
    np.testing.assert_array_equal(np.sort(cells.positions), incomplete)
    np.testing.assert_array_equal(cells.data.y, data.y[cells.positions])
    blocks = cells.split(np.arange(2 * cells.count, dtype=float).reshape(2, -1))
    # Blocks follow one another: the first pattern takes the first values of each draw.
    assert [b.shape[1:] for b in blocks] == cells.shapes
    np.testing.assert_array_equal(np.concatenate([b.reshape(2, -1) for b in blocks], axis=1)[1],
                                  np.arange(cells.count, 2 * cells.count))  # fmt: skip
    for (rows, seen, missing), part in zip(cells.data.patterns, cells.slices, strict=True):
        np.testing.assert_array_equal(rows, np.arange(part.start, part.stop))
        assert np.isnan(cells.data.y[part][:, missing]).all()
        assert not np.isnan(cells.data.y[part][:, seen]).any()


def test_a_subset_must_hold_every_subject_with_a_missing_visit() -> None:
    ready, _ = _prepared(*CASES[0])
    data = imputation_set(ready)
    with pytest.raises(ValueError, match="missing visit"):
        data.subset(np.flatnonzero(np.isnan(data.y).any(axis=1))[1:])
