"""Reference-based imputation: strategies, conditional mean with jackknife, multiple imputation.

Agreement with the first-principles R program is in test_refbased_reference.py; here are the
properties that hold by construction (MAR conditional-mean imputation equals the MMRM when the
imputation model is fully visit-interacted), the relations between the methods, the strategy
definitions on hand-made profiles, reproducibility and the leave-one-out column dropping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trialflow.errors import ModelError
from trialflow.stats.imputation import (
    STRATEGIES,
    Ancova,
    ImputationSet,
    Refitter,
    conditional_solves,
    fill,
    imputation_set,
    strategy_means,
)
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import PreparedMmrm, fit_prepared, prepare_mmrm
from trialflow.stats.refbased import Jackknife, conditional_mean, multiple_imputation

DATA = Path(__file__).resolve().parent.parent / "reference" / "data"
REFERENCE_BASED = ("jump_to_reference", "copy_reference", "copy_increments_from_reference")


def _prepared(
    name: str, outcome: str, spec: MeanSpec | None = None
) -> tuple[PreparedMmrm, ImputationSet, Refitter]:
    index = pd.read_csv(DATA / "datasets.csv").set_index("dataset")
    raw = pd.read_csv(DATA / f"{name}.csv")
    post = raw.loc[(raw["outcome"] == outcome) & (raw["visit"] != index.at[name, "baseline_visit"])]
    covariates = str(index.at[name, "covariates"]).split(";")
    ready = prepare_mmrm(
        post,
        response="change",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        covariates=covariates,
        reference_arm=index.at[name, "control"],
        visit_order=None,
        week="week",
        spec=spec or MeanSpec(),
    )
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    return ready, imputation_set(ready), Refitter(ready.problem, choice.fit)


@pytest.fixture(scope="module")
def dropout() -> tuple[PreparedMmrm, ImputationSet, Refitter]:
    return _prepared("sim_dropout", "pain")


@pytest.fixture(scope="module")
def dropout_jackknife(dropout: tuple[PreparedMmrm, ImputationSet, Refitter]) -> Jackknife:
    _, data, refitter = dropout
    return conditional_mean(data, refitter, STRATEGIES[:4])


def test_imputation_set_keeps_every_subject_with_baseline(
    dropout: tuple[PreparedMmrm, ImputationSet, Refitter],
) -> None:
    ready, data, _ = dropout
    # Subjects without any observed post-baseline change are imputed too, not dropped.
    assert data.n == ready.prepared.frame["_subject"].nunique()
    never = data.observed_code < 0
    assert int(never.sum()) == data.n - ready.obs.n_subjects
    assert np.all(np.isnan(data.y[never])) and np.all(data.last[never] == -1)
    assert not np.any(np.all(np.isnan(data.y[~never]), axis=1))


def test_mar_conditional_mean_equals_the_fully_interacted_mmrm() -> None:
    # With baseline and every covariate by visit, the imputation model and the per-visit
    # ANCOVA are compatible, and conditional-mean imputation under MAR reproduces the MMRM's
    # LS-mean difference exactly (Wolbers et al. 2022, section 3).
    spec = MeanSpec(baseline="by_visit", covariates_by_visit=("age", "Site", "sex"))
    ready, data, refitter = _prepared("sim_catcov", "function", spec)
    _, inference = fit_prepared(ready, "us", (), "satterthwaite")
    rows = np.array([ready.mean.effect_row(v) for v in ready.obs.visits])
    mmrm, _, _ = inference.contrasts(rows)
    changes = fill(
        data,
        np.stack([data.x_own @ refitter.beta]),
        conditional_solves(data, refitter.sigma, draws=False),
    )[0]
    cmi = Ancova(data.z).slope(changes)
    assert np.allclose(cmi, mmrm, rtol=0, atol=1e-8)


def test_with_a_common_baseline_slope_the_two_differ_by_design(
    dropout: tuple[PreparedMmrm, ImputationSet, Refitter], dropout_jackknife: Jackknife
) -> None:
    ready, _, _ = dropout
    _, inference = fit_prepared(ready, "us", (), "satterthwaite")
    rows = np.array([ready.mean.effect_row(v) for v in ready.obs.visits])
    mmrm, _, _ = inference.contrasts(rows)
    gap = np.abs(dropout_jackknife.estimate[0] - mmrm)
    assert gap.max() > 1e-3


def test_reference_based_strategies_move_towards_the_null(dropout_jackknife: Jackknife) -> None:
    # In sim_dropout the active arm is better (negative pain change); dropouts imputed like the
    # placebo arm pull the effect at the last visit towards 0.
    mar = dropout_jackknife.summary("mar")[0][-1]
    assert mar < 0
    for strategy in REFERENCE_BASED:
        est = dropout_jackknife.summary(strategy)[0][-1]
        assert mar < est < 0, strategy


def test_delta_adjustment_is_the_same_as_adding_delta_to_the_imputed_values(
    dropout: tuple[PreparedMmrm, ImputationSet, Refitter], dropout_jackknife: Jackknife
) -> None:
    _, data, refitter = dropout
    solves = conditional_solves(data, refitter.sigma, draws=False)
    means = np.stack(
        [strategy_means(data, data.x_own @ refitter.beta, data.x_ref @ refitter.beta, "mar")]
    )
    changes = fill(data, means, solves)[0]
    delta = 1.7
    shifted = changes + delta * (data.after & data.treated[:, None])
    direct = Ancova(data.z).slope(shifted)
    linear, _ = dropout_jackknife.summary("mar", delta)
    assert np.allclose(direct, linear, rtol=0, atol=1e-10)


def _toy() -> ImputationSet:
    """Three visits; subject 0 treated and dropped after visit 1, subject 1 never observed."""
    y = np.array([[1.0, 2.0, np.nan], [np.nan, np.nan, np.nan], [0.0, np.nan, 1.0]])
    last = np.array([1, -1, 2])
    observed = ~np.isnan(y)
    return ImputationSet(
        subjects=("a", "b", "c"),
        treated=np.array([True, True, False]),
        y=y,
        last=last,
        after=np.arange(3)[None, :] > last[:, None],
        x_own=np.zeros((3, 3, 1)),
        x_ref=np.zeros((3, 3, 1)),
        offset=np.zeros(3),
        z=np.zeros((3, 2)),
        observed_code=np.array([0, -1, 1]),
        visits=["v1", "v2", "v3"],
        patterns=tuple(
            (np.array([i]), np.flatnonzero(observed[i]), np.flatnonzero(~observed[i]))
            for i in range(3)
        ),
    )


def test_strategy_profiles_follow_the_rbmi_definitions() -> None:
    data = _toy()
    own = np.array([[10.0, 20.0, 30.0], [11.0, 21.0, 31.0], [12.0, 22.0, 32.0]])
    ref = np.array([[1.0, 5.0, 6.0], [2.0, 4.0, 8.0], [12.0, 22.0, 32.0]])
    assert np.array_equal(strategy_means(data, own, ref, "mar"), own)
    j2r = strategy_means(data, own, ref, "jump_to_reference")
    assert np.array_equal(j2r[0], [10.0, 20.0, 6.0])  # reference after the last visit only
    assert np.array_equal(j2r[1], ref[1])  # nothing observed: reference throughout
    assert np.array_equal(j2r[2], own[2])  # completer: own arm (MAR for the missed visit)
    cr = strategy_means(data, own, ref, "copy_reference")
    assert np.array_equal(cr[0], ref[0]) and np.array_equal(cr[2], own[2])
    cir = strategy_means(data, own, ref, "copy_increments_from_reference")
    assert np.array_equal(cir[0], [10.0, 20.0, 20.0 + (6.0 - 5.0)])
    assert np.array_equal(cir[1], ref[1])
    with pytest.raises(ModelError, match="no"):
        strategy_means(data, own, ref, "last_mean_carried_forward")


def test_last_mean_carried_forward_carries_the_own_mean() -> None:
    data = _toy()
    keep = np.array([0, 2])
    sub = ImputationSet(
        subjects=("a", "c"), treated=data.treated[keep], y=data.y[keep], last=data.last[keep],
        after=data.after[keep], x_own=data.x_own[keep], x_ref=data.x_ref[keep],
        offset=data.offset[keep], z=data.z[keep], observed_code=np.array([0, 1]),
        visits=data.visits, patterns=(),
    )  # fmt: skip
    own = np.array([[10.0, 20.0, 30.0], [12.0, 22.0, 32.0]])
    out = strategy_means(sub, own, own - 5, "last_mean_carried_forward")
    assert np.array_equal(out, [[10.0, 20.0, 20.0], [12.0, 22.0, 32.0]])


def test_multiple_imputation_agrees_with_conditional_mean_under_mar(
    dropout: tuple[PreparedMmrm, ImputationSet, Refitter], dropout_jackknife: Jackknife
) -> None:
    # With many imputations the MI point estimate approaches the conditional-mean one; the
    # Monte Carlo error of the MI mean of m estimates is sqrt(B / m).
    _, data, refitter = dropout
    m = 2000
    mi = multiple_imputation(data, refitter, ["mar", "jump_to_reference"], imputations=m,
                             seed=20261201, key=7)  # fmt: skip
    last = len(data.visits) - 1
    assert mi.pooled("mar", last).estimate < mi.pooled("jump_to_reference", last).estimate < 0
    for strategy in ("mar", "jump_to_reference"):
        cmi = dropout_jackknife.summary(strategy)[0]
        for t in range(len(data.visits)):
            pooled = mi.pooled(strategy, t)
            mc_se = np.sqrt(pooled.between / m)
            assert abs(pooled.estimate - cmi[t]) < 3 * mc_se, (strategy, t)


def test_multiple_imputation_is_reproducible_and_each_imputation_has_its_own_stream(
    dropout: tuple[PreparedMmrm, ImputationSet, Refitter],
) -> None:
    _, data, refitter = dropout
    first = multiple_imputation(data, refitter, ["mar"], imputations=12, seed=5, key=3)
    again = multiple_imputation(data, refitter, ["mar"], imputations=12, seed=5, key=3)
    fewer = multiple_imputation(data, refitter, ["mar"], imputations=6, seed=5, key=3)
    other = multiple_imputation(data, refitter, ["mar"], imputations=6, seed=6, key=3)
    assert np.array_equal(first.estimate, again.estimate)
    # Imputation j does not depend on how many there are (or on who computes it).
    assert np.array_equal(first.estimate[:6], fewer.estimate)
    assert not np.array_equal(fewer.estimate, other.estimate)


def test_a_covariate_level_lost_in_a_leave_one_out_sample_is_dropped_not_fatal() -> None:
    index = pd.read_csv(DATA / "datasets.csv").set_index("dataset")
    raw = pd.read_csv(DATA / "sim_catcov.csv")
    post = raw.loc[(raw["visit"] != "baseline")].copy()
    # Give one subject a site of its own: without that subject, no row has the site.
    lone = sorted(post["subject_id"].unique())[3]
    post.loc[post["subject_id"] == lone, "Site"] = "Z"
    ready = prepare_mmrm(
        post, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=["age", "Site", "sex"],
        reference_arm=index.at["sim_catcov", "control"], visit_order=None, week="week",
        spec=MeanSpec(),
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    data = imputation_set(ready)
    jk = conditional_mean(data, Refitter(ready.problem, choice.fit), ["mar", "jump_to_reference"])
    assert jk.dropped_column_fits == 1
    assert np.all(np.isfinite(jk.loo))


def test_bootstrap_samples_keep_each_arms_size() -> None:
    """README, "Estimand and missing-data sensitivity analyses": the MMRM's parameters are drawn
    by refitting it "to a bootstrap sample of subjects stratified by arm": every sample has as
    many control and as many treated subjects as the trial (3 and 5 here)."""
    from types import SimpleNamespace

    from trialflow.stats.refbased import _bootstrap_counts

    treated = np.array([False, True, True, False, True, True, False, True])
    data = SimpleNamespace(n=8, treated=treated, observed_code=np.arange(8))
    rng = np.random.default_rng(1)
    for _ in range(200):
        weights = _bootstrap_counts(rng, data, 8)  # type: ignore[arg-type]
        assert weights[~treated].sum() == 3 and weights[treated].sum() == 5


def test_jackknife_standard_error_at_a_delta_is_that_of_the_shifted_replicates(
    dropout_jackknife: Jackknife,
) -> None:
    """The summary takes the replicates' spread at ``delta`` from three sums built once; the
    definition is the spread of ``loo + delta * loo_slope`` itself."""
    jk = dropout_jackknife
    n = jk.n
    for strategy in jk.strategies:
        s = jk.strategies.index(strategy)
        for delta in (0.0, 0.5, -3.0, 12.5):
            reps = jk.loo[:, s] + delta * jk.loo_slope
            want = np.sqrt((n - 1) / n * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))
            est, se = jk.summary(strategy, delta)
            np.testing.assert_allclose(se, want, rtol=1e-10)
            np.testing.assert_array_equal(est, jk.estimate[s] + delta * jk.slope)


def test_multiple_imputation_of_complete_data_imputes_nothing() -> None:
    """Without a missing value every completed dataset is the observed data: each imputation's
    estimate is the ANCOVA of the observed changes (only the bootstrap draws differ)."""
    from trialflow.stats.imputation import Ancova

    from .test_jackknife import _grid
    from .test_refbased_reference import CASES

    dataset, outcome, _ = CASES[0]
    grid, info = _grid(dataset, outcome)
    full = grid.groupby("subject_id")["change"].transform(lambda v: v.notna().all())
    grid = grid.loc[full.astype(bool)]
    ready = prepare_mmrm(
        grid, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=str(info["covariates"]).split(";"),
        reference_arm=info["control"], visit_order=None, week="week", spec=MeanSpec(),
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", (), "satterthwaite")
    data = imputation_set(ready)
    assert not np.isnan(data.y).any()
    mi = multiple_imputation(
        data, Refitter(ready.problem, choice.fit), ["mar", "jump_to_reference"],
        imputations=4, seed=1, key=1, primary=len(data.visits) - 1,
    )  # fmt: skip
    est, var = Ancova(data.z).fit(data.y - data.offset[:, None])
    for m in range(4):
        for s in range(2):
            np.testing.assert_allclose(mi.estimate[m, s], est, rtol=1e-10)
            np.testing.assert_allclose(mi.variance[m, s], var, rtol=1e-10)
    assert mi.primary_changes is not None and mi.primary_changes.imputed.shape == (4, 0)
