"""Benchmark: the missing-data sensitivity analyses against the primary MMRM fit.

Usage: python benchmarks/bench_sensitivity.py [--no-r] [n_small] [n_large]

Simulates the exercise_education scenario (5 visits, MAR dropout) with n_small (default 200)
and n_large (default 10,000) subjects and times, on the primary outcome:

* the primary MMRM fit (prepare and fit): the baseline of every ratio;
* conditional mean imputation, jump to reference, with the jackknife (n_small);
* multiple imputation, jump to reference, 500 imputations (n_small), and the four default
  strategies together;
* multiple imputation, jump to reference, 100 imputations (n_large).

With R installed (and without --no-r), the same conditional-mean jackknife is timed in R
(nlme::gls refits, benchmarks/bench_sensitivity.R) on the same data, in the same run.
Set OPENBLAS_NUM_THREADS=1 for stable timings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from scaled_trial import ROOT, scaled_trial

from trialflow.analysis import mean_spec, outcome_data, outcome_plan
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.stats.imputation import Refitter, imputation_set
from trialflow.stats.mmrm import fit_prepared, prepare_mmrm
from trialflow.stats.refbased import conditional_mean, multiple_imputation

DEFAULT = ["mar", "jump_to_reference", "copy_reference", "copy_increments_from_reference"]


def _post(n: int, folder: Path) -> tuple[pd.DataFrame, Any]:
    trial = load_trial(scaled_trial(n, folder))
    d = derive(read_and_clean(trial, root=ROOT), trial)
    outcome = trial.primary_outcomes[0]
    rows = outcome_data(d.adeff, d.adsl, trial, outcome)
    plan = outcome_plan(rows, trial, mean_spec(trial.options))
    return plan.post, trial


def _fit(post: pd.DataFrame, trial: Any) -> tuple[Any, Any]:
    ready = prepare_mmrm(
        post, response="change", subject="subject_id", visit="visit", arm="arm",
        baseline="baseline", covariates=[c.name for c in trial.covariates],
        reference_arm=trial.control, visit_order=None, week="week",
        spec=mean_spec(trial.options),
    )  # fmt: skip
    choice, _ = fit_prepared(ready, "us", ("toep", "ar1", "cs"), "satterthwaite")
    return ready, choice


def _time(func: Callable[[], Any], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def _r_jackknife(post: pd.DataFrame, folder: Path) -> float | None:
    if shutil.which("Rscript") is None:
        return None
    path = folder / "post.csv"
    post.to_csv(path, index=False)
    program = Path(__file__).with_name("bench_sensitivity.R")
    out = subprocess.run(
        ["Rscript", str(program), str(path)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _small(n: int, folder: Path, use_r: bool) -> list[tuple[str, float, float]]:
    post, trial = _post(n, folder)
    base = _time(partial(_fit, post, trial), repeat=3)
    ready, choice = _fit(post, trial)
    data = imputation_set(ready)
    rows = [(f"primary MMRM fit, {n} subjects (baseline)", base, base)]
    cmi = _time(
        lambda: conditional_mean(data, Refitter(ready.problem, choice.fit), ["jump_to_reference"])
    )
    rows.append((f"conditional mean J2R + jackknife, {n} subjects", cmi, base))
    for strategies, label in ((["jump_to_reference"], "J2R"), (DEFAULT, "4 strategies")):
        mi = _time(
            partial(
                multiple_imputation, data, Refitter(ready.problem, choice.fit), strategies,
                imputations=500, seed=1, key=1,
            )
        )  # fmt: skip
        rows.append((f"MI {label}, 500 imputations, {n} subjects", mi, base))
    r_time = _r_jackknife(post, folder) if use_r else None
    if r_time is not None:
        rows.append((f"R: gls conditional mean J2R + jackknife, {n} subjects", r_time, base))
    return rows


def _large(n: int, folder: Path) -> list[tuple[str, float, float]]:
    post, trial = _post(n, folder)
    base = _time(partial(_fit, post, trial), repeat=3)
    ready, choice = _fit(post, trial)
    data = imputation_set(ready)
    mi = _time(
        partial(
            multiple_imputation, data, Refitter(ready.problem, choice.fit),
            ["jump_to_reference"], imputations=100, seed=1, key=1,
        )
    )  # fmt: skip
    return [
        (f"primary MMRM fit, {n} subjects (baseline)", base, base),
        (f"MI J2R, 100 imputations, {n} subjects", mi, base),
    ]


def main(argv: list[str]) -> None:
    use_r = "--no-r" not in argv
    sizes = [int(a) for a in argv if not a.startswith("--")]
    n_small, n_large = (sizes + [200, 10_000][len(sizes) :])[:2]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "small").mkdir()
        (Path(tmp) / "large").mkdir()
        rows = _small(n_small, Path(tmp) / "small", use_r) + _large(n_large, Path(tmp) / "large")
    width = max(len(r[0]) for r in rows)
    print(f"{'computation':<{width}}  {'seconds':>9}  {'x MMRM fit':>10}")
    for label, seconds, base in rows:
        print(f"{label:<{width}}  {seconds:9.3f}  {seconds / base:10.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
