"""Benchmark: writing the ADaM exchange datasets, against writing the analysis datasets.

Usage: python benchmarks/bench_adam.py [n_subjects ...]

Simulates the exercise_education scenario with n subjects (4 outcomes, 5 visits), derives ADSL
and ADEFF, and prints seconds to write ``analysis/adsl.csv`` and ``adeff.csv`` (what the derive
step wrote before the exchange datasets: the baseline) and to write ``adam/`` (CSV, XPT and
define.csv), with the ratio of the two, measured in the same process.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from scaled_trial import ROOT, scaled_trial

from trialflow.adam import write_adam
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.io import write_csv

ADAM = ("adsl.csv", "adsl.xpt", "adeff.csv", "adeff.xpt", "define.csv")


def _time(trial_path: Path, out: Path) -> tuple[int, float, float]:
    """ADEFF rows, seconds to write the analysis datasets, seconds to write the ADaM ones."""
    trial = load_trial(trial_path)
    d = derive(read_and_clean(trial, root=ROOT), trial)
    t0 = time.perf_counter()
    write_csv(d.adsl, out / "adsl.csv")
    write_csv(d.adeff, out / "adeff.csv")
    t1 = time.perf_counter()
    paths = {f"adam_{f.replace('.csv', '').replace('.', '_')}": str(out / "adam" / f) for f in ADAM}
    write_adam(d.adsl, d.adeff, trial, paths)
    return len(d.adeff), t1 - t0, time.perf_counter() - t1


def main(sizes: list[int]) -> None:
    print(f"{'subjects':>9} {'rows':>9} {'analysis s':>11} {'adam s':>8} {'adam / analysis':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = scaled_trial(n, Path(tmp) / f"n{n}")
            rows, base, adam = _time(path, Path(tmp) / f"out{n}")
            print(f"{n:>9} {rows:>9} {base:11.2f} {adam:8.2f} {adam / base:16.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000])
