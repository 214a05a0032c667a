"""Work shared among worker processes gives the same tables and figures as one process.

A job's threads are forked workers: outcomes side by side, or one outcome's chunks of refits,
imputations and responder fits, or a trial's figures. The promise is that the number of
workers never changes a byte (each imputation's random stream is its own, and the chunks are
cut the same way for any number of workers).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trialflow.parallel
import trialflow.stats.refbased
from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.parallel import chunks, fork_map, split_workers
from trialflow.sensitivity import analyse_sensitivity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weightbearing() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    # Few imputations keep the test short; the streams per imputation are the same.
    trial = dataclasses.replace(trial, sensitivity={**trial.sensitivity, "imputations": 12})
    out = derive(read_and_clean(trial, root=ROOT), trial)
    return out.adeff, out.adsl, trial


def test_fork_map_keeps_the_order_of_the_items() -> None:
    assert fork_map(abs, [-3, 1, -2, 5], workers=2) == [3, 1, 2, 5]
    assert fork_map(abs, [-3], workers=4) == [3]


def test_models_on_two_workers_equal_one_process(weightbearing) -> None:
    adeff, adsl, trial = weightbearing
    one = analyse_trial(adeff, adsl, trial, workers=1)
    two = analyse_trial(adeff, adsl, trial, workers=2)
    for name in ("effects", "lsmeans", "anova", "effect_sizes", "type3", "subgroups"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name), check_exact=True)
    assert one.models == two.models
    assert len(one.effects["outcome"].unique()) == len(trial.outcomes)


def test_sensitivity_on_two_workers_equals_one_process(weightbearing) -> None:
    adeff, adsl, trial = weightbearing
    one = analyse_sensitivity(adeff, adsl, trial, workers=1)
    two = analyse_sensitivity(adeff, adsl, trial, workers=2)
    for name in ("table", "tipping", "responders"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name), check_exact=True)
    assert (one.table["method"] == "multiple_imputation").any()


def test_one_outcome_shares_its_refits_imputations_and_responders_among_workers(
    weightbearing, monkeypatch
) -> None:
    """README, "Threads": a trial of one outcome gives each chunk of its bootstrap and
    jackknife refits, imputations and responder fits to the workers, and no number changes."""
    adeff, adsl, trial = weightbearing
    walk = [o for o in trial.outcomes if o.name == "six_minute_walk"]
    sensitivity = {**trial.sensitivity, "imputations": 40}
    trial = dataclasses.replace(trial, outcomes=walk, sensitivity=sensitivity)
    adeff = adeff.loc[adeff["outcome"] == "six_minute_walk"]
    one = analyse_sensitivity(adeff, adsl, trial, workers=1)
    shared: list[str] = []
    real = trialflow.parallel.fork_imap

    def spy(func, items, workers=1):
        if workers > 1 and len(items) > 1:
            shared.append(getattr(func, "__name__", None) or func.func.__name__)
        return real(func, items, workers)

    # Shared even though this trial is small (29 subjects).
    monkeypatch.setattr(trialflow.parallel, "PARALLEL_SUBJECTS", 0)
    monkeypatch.setattr(trialflow.parallel, "fork_imap", spy)
    monkeypatch.setattr(trialflow.stats.refbased, "fork_imap", spy)
    two = analyse_sensitivity(adeff, adsl, trial, workers=2)
    for name in ("table", "tipping", "responders"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name), check_exact=True)
    assert one.records == two.records
    # Jackknife and bootstrap refits, imputation chunks, responder fits (one rule).
    assert sorted(shared) == ["_fit_chunk", "_fit_chunk", "chunk", "summaries"]
    assert (one.responders["method"] == "multiple_imputation").any()


def test_chunks_are_cut_by_the_work_alone() -> None:
    """At most ``most`` items a chunk, at least 8 chunks while each keeps 16 items."""
    assert [len(c) for c in chunks(500, 10_000)] == [63] * 7 + [59]
    assert [len(c) for c in chunks(500, 40)] == [40] * 12 + [20]
    assert [len(c) for c in chunks(40, 10_000)] == [16, 16, 8]
    assert [len(c) for c in chunks(5, 10_000)] == [5]
    assert np.array_equal(np.concatenate(chunks(1000, 37)), np.arange(1000))


def test_a_trial_with_fewer_outcomes_than_workers_gives_them_to_each_outcome() -> None:
    assert split_workers(2, 1, 10_000) == (1, 2)
    assert split_workers(2, 4, 10_000) == (2, 1)
    assert split_workers(8, 3, 10_000) == (3, 2)
    assert split_workers(1, 1, 10_000) == (1, 1)
    # A small trial's outcome is not worth starting workers for.
    assert split_workers(2, 1, 1_000) == (1, 1)


def _blas_threads(_: object) -> int:
    from threadpoolctl import threadpool_info

    return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


def test_each_worker_uses_one_blas_thread() -> None:
    """README, "Speed: jobs, threads and resources": numerical libraries never start more
    threads than the job was given -- each worker process is one of the job's threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2):
        if _blas_threads(None) < 2:
            pytest.skip("this BLAS cannot run two threads here")
        assert fork_map(_blas_threads, [0, 1], workers=2) == [1, 1]


def test_a_run_shares_its_cores_among_its_trials() -> None:
    """README, "Threads": the bundled run gives each trial one core, a run of one trial gives
    its jobs every core; the models and sensitivity jobs keep a thread per outcome."""
    import yaml

    from trialflow.setup import normalise_config, prepare_workflow

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    normalise_config(config)
    both = prepare_workflow(config, project=ROOT)
    assert both.trial_threads(2) == 1 and both.trial_threads(8) == 4
    assert both.outcome_threads("weightbearing", 2) == len(both.trials["weightbearing"].outcomes)
    one = prepare_workflow({**config, "trials": ["exercise_education"]}, project=ROOT)
    assert one.trial_threads(2) == 2 and one.trial_threads(1) == 1
    outcomes = len(one.trials["exercise_education"].outcomes)
    assert one.outcome_threads("exercise_education", 16) == max(outcomes, 16)


def test_a_trial_runs_in_one_job_up_to_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """README, "Jobs": a trial whose raw visit file is at most 16 MB runs every step in one job;
    ``job_granularity`` overrides the choice."""
    import yaml

    from trialflow import setup
    from trialflow.setup import normalise_config, prepare_workflow

    assert setup.ONE_JOB_LIMIT_BYTES == 16_000_000
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    normalise_config(config)
    both = prepare_workflow(config, project=ROOT)
    assert both.one_job == both.names and both.per_step == []
    small, large = sorted(both.names, key=both.raw_bytes.__getitem__)
    monkeypatch.setattr(setup, "ONE_JOB_LIMIT_BYTES", both.raw_bytes[small])
    split = prepare_workflow(config, project=ROOT)
    assert split.one_job == [small] and split.per_step == [large]
    forced = prepare_workflow({**config, "job_granularity": "per_trial"}, project=ROOT)
    assert forced.one_job == both.names
    steps = prepare_workflow({**config, "job_granularity": "per_step"}, project=ROOT)
    assert steps.per_step == both.names and steps.one_job == []
