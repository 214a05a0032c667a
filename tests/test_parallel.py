"""Outcomes analysed in worker processes give the same tables as one process.

A large trial's models and sensitivity jobs get one thread per outcome; the promise is that
the number of workers never changes a number (each outcome's random streams are its own).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.parallel import map_outcomes
from trialflow.sensitivity import analyse_sensitivity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weightbearing() -> tuple[pd.DataFrame, pd.DataFrame, object]:
    trial = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    # Few imputations keep the test short; the streams per imputation are the same.
    trial = dataclasses.replace(trial, sensitivity={**trial.sensitivity, "imputations": 12})
    out = derive(read_and_clean(trial, root=ROOT), trial)
    return out.adeff, out.adsl, trial


def test_map_outcomes_keeps_the_order_of_the_items() -> None:
    assert map_outcomes(abs, [-3, 1, -2, 5], workers=2) == [3, 1, 2, 5]
    assert map_outcomes(abs, [-3], workers=4) == [3]


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
        assert map_outcomes(_blas_threads, [0, 1], workers=2) == [1, 1]
