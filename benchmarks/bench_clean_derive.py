"""Benchmark: cleaning and deriving a large trial, against the bundled trial as baseline.

Usage: python benchmarks/bench_clean_derive.py [n_subjects ...]

Prints one row per size: median seconds of read+clean and of derive over 3 repetitions, and
the ratio to the bundled exercise_education trial measured in the same process.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from scaled_trial import ROOT, scaled_trial

from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive


def _time(trial_path: Path, repeats: int = 3) -> tuple[float, float]:
    trial = load_trial(trial_path)
    cleans, derives = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clean = read_and_clean(trial, root=ROOT)
        t1 = time.perf_counter()
        derive(clean, trial)
        t2 = time.perf_counter()
        cleans.append(t1 - t0)
        derives.append(t2 - t1)
    return statistics.median(cleans), statistics.median(derives)


def main(sizes: list[int]) -> None:
    base_clean, base_derive = _time(ROOT / "config" / "trials" / "exercise_education.yaml")
    print(f"{'subjects':>9} {'clean s':>9} {'derive s':>9} {'clean x':>8} {'derive x':>9}")
    print(f"{54:>9} {base_clean:9.3f} {base_derive:9.3f} {1:8.1f} {1:9.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = scaled_trial(n, Path(tmp) / f"n{n}")
            c, d = _time(path)
            print(f"{n:>9} {c:9.3f} {d:9.3f} {c / base_clean:8.1f} {d / base_derive:9.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000])
