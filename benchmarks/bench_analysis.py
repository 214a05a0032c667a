"""Benchmark: the whole analysis plan (every model, every outcome) on a large trial.

Usage: python benchmarks/bench_analysis.py [n_subjects ...]

Simulates the exercise_education scenario with n subjects (4 outcomes, 5 visits, MAR
dropout), runs clean, derive and :func:`trialflow.analysis.analyse_trial`, and prints seconds
per model and in total, with the ratio to the bundled 54-subject trial timed in the same process.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from scaled_trial import ROOT, scaled_trial

import trialflow.analysis as analysis
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive

MODELS = ("fit_mmrm", "fit_lmm", "fit_ancova", "mixed_anova", "hedges_g")


def _timed(trial_path: Path) -> dict[str, float]:
    """Seconds per model function (summed over outcomes) and in total."""
    spent: dict[str, float] = defaultdict(float)
    originals = {name: getattr(analysis, name) for name in MODELS}

    def wrap(name: str):  # noqa: ANN202
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0

        return timed

    for name in MODELS:
        setattr(analysis, name, wrap(name))
    try:
        trial = load_trial(trial_path)
        t0 = time.perf_counter()
        d = derive(read_and_clean(trial, root=ROOT), trial)
        spent["clean+derive"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        analysis.analyse_trial(d.adeff, d.adsl, trial)
        spent["analysis total"] = time.perf_counter() - t0
    finally:
        for name, fn in originals.items():
            setattr(analysis, name, fn)
    return dict(spent)


def main(sizes: list[int]) -> None:
    _timed(ROOT / "config" / "trials" / "exercise_education.yaml")  # warm the imports
    base = _timed(ROOT / "config" / "trials" / "exercise_education.yaml")
    columns = {54: base}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = scaled_trial(n, Path(tmp) / f"n{n}")
            columns[n] = _timed(path)
    rows = ["clean+derive", *MODELS, "analysis total"]
    header = f"{'step':<16}" + "".join(f"{f'n={n} s':>12}{'x base':>8}" for n in columns)
    print(header)
    for row in rows:
        cells = "".join(
            f"{columns[n].get(row, 0):12.3f}{columns[n].get(row, 0) / base[row]:8.1f}"
            for n in columns
        )
        print(f"{row:<16}{cells}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000])
