"""Benchmark: cleaning a visits file full of exact duplicate rows (a repeated export).

Usage: python benchmarks/bench_duplicates.py [n_duplicates ...]

Writes the broken-input corpus trial with n copies of one visit row appended, cleans it, and
prints seconds per size with the ratio to the smallest size in the same run. Linear cleaning
keeps seconds per duplicate about constant as n grows.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "data" / "bad"))

import make_cases

from trialflow.clean import read_and_clean
from trialflow.config import load_trial


def _seconds(n: int, folder: Path) -> float:
    def broken(c: make_cases.Case) -> None:
        c.visits = pd.concat([c.visits, *[c.visits.iloc[[4]]] * n], ignore_index=True)
        make_cases.query(c, "exact_duplicate")

    make_cases.CASES["_bench"] = broken
    make_cases.write_case("_bench", folder)
    trial = load_trial(folder / "trial.yaml")
    t0 = time.perf_counter()
    result = read_and_clean(trial, root=folder)
    seconds = time.perf_counter() - t0
    assert int((result.queries["rule"] == "exact_duplicate").sum()) == n
    return seconds


def main(sizes: list[int]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows.append((n, _seconds(n, Path(tmp) / str(n))))
    base_s = rows[0][1]
    print(f"{'duplicates':>10}  {'seconds':>8}  {'x smallest':>10}  {'us per row':>10}")
    for n, s in rows:
        print(f"{n:>10}  {s:8.2f}  {s / base_s:10.1f}  {1e6 * s / n:10.1f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [2_000, 20_000, 200_000])
