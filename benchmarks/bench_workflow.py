"""Benchmark: the whole workflow from the command line, cold and up to date.

Usage:
    python benchmarks/bench_workflow.py                 # the bundled trials
    python benchmarks/bench_workflow.py 1000 10000 100000    # also scaled trials of n subjects

Each run happens in a fresh copy of the project (as a fresh clone), with ``--cores 2``. The
table gives wall seconds, the peak memory of the largest job, and ratios against baselines
measured in the same invocation:

* ``snakemake floor``: Snakemake alone, building and checking an up-to-date one-rule
  workflow (what any rerun costs at least);
* ``one job per step``: the same cold run with ``job_granularity=per_step``, the layout where
  every step pays its own interpreter start and imports.

A scaled trial is the exercise_education scenario with n subjects, reduced to its primary
outcome and four visits (as the published trials), sensitivity analyses included. The largest
one is run once more with ``job_granularity=per_step``, its ratio to the default layout
printed (the default runs it in one job up to a 16 MB raw visit file). A second table gives
each step's seconds per size (stage scaling) and the ratio between sizes.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("Snakefile", "config", "data", "profiles", "workflow")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def _project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            ignored = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, folder / name, ignore=ignored)
        else:
            shutil.copy2(source, folder / name)
    return folder


def _run(work: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and the peak resident memory (MB) of the largest process of the run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", *args],
        cwd=work, env=ENV, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def _floor(tmp: Path) -> float:
    work = tmp / "floor"
    work.mkdir()
    (work / "done.txt").write_text("x\n")
    (work / "Snakefile").write_text('rule all:\n    input:\n        "done.txt",\n')
    return _run(work)[0]


def _scaled(n: int, tmp: Path, name: str = "") -> Path:
    """A project whose only trial is the scaled exercise_education trial."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scaled_trial import scaled_trial

    work = _project(tmp / f"n{n}{name}")
    folder = work / "data" / "raw" / "scaled"
    description = yaml.safe_load(scaled_trial(n, folder, visits=4).read_text(encoding="utf-8"))
    description["data"] = {"subjects": "data/raw/scaled/subjects.csv",
                           "visits": "data/raw/scaled/visits.csv"}  # fmt: skip
    (work / "config" / "trials" / "scaled.yaml").write_text(yaml.safe_dump(description))
    return work


def _print(label: str, seconds: float, peak: float, ratio: str) -> None:
    # Printed as measured, so that a long scaled run leaves the rows before it.
    print(f"{label:<44}{seconds:9.2f}{peak:9.0f}  {ratio}", flush=True)


STEPS = ("clean", "derive", "models", "sensitivity", "figures", "report")


def _stages(work: Path) -> dict[str, float]:
    """Seconds of each step of the scaled trial: from the one-job log, else from the per-step
    jobs' benchmark records (wall seconds of the job, interpreter start included)."""
    results = work / "results" / "scaled"
    log = results / "logs" / "analyse.log"
    if log.is_file():
        found = re.findall(r"step (\w+) took ([\d.]+) s", log.read_text(encoding="utf-8"))
        return {step: float(seconds) for step, seconds in found}
    out = {}
    for step in STEPS:
        record = results / "benchmarks" / f"{step}.tsv"
        if record.is_file():
            out[step] = float(record.read_text().splitlines()[1].split("\t")[0])
    return out


def _print_stages(stages: dict[int, dict[str, float]]) -> None:
    """Seconds per step and subjects, with the ratio of each size to the one before."""
    sizes = sorted(stages)
    print(f"\n{'step (seconds)':<16}" + "".join(f"{n:>12,}" for n in sizes) + "  ratios")
    for step in STEPS:
        values = [stages[n].get(step, float("nan")) for n in sizes]
        ratios = " ".join(f"{b / a:.1f}x" for a, b in itertools.pairwise(values))
        print(f"{step:<16}" + "".join(f"{v:12.2f}" for v in values) + f"  {ratios}")


def main(sizes: list[int]) -> None:
    print(f"{'run':<44}{'seconds':>9}{'peak MB':>9}  ratio", flush=True)
    stages: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        floor = _floor(tmp)
        _print("snakemake floor (up to date)", floor, 0.0, "1.00 (baseline)")
        split, split_mem = _run(_project(tmp / "split"), "--config", "job_granularity=per_step")
        _print("bundled cold, one job per step", split, split_mem, "1.00 (baseline)")
        work = _project(tmp / "bundled")
        cold, mem = _run(work)
        _print("bundled cold (default)", cold, mem, f"{cold / split:.2f} x per-step")
        rerun, _ = _run(work)
        _print("bundled up-to-date rerun", rerun, 0.0, f"{rerun / floor:.2f} x floor")
        walls = {}
        for n in sizes:
            scaled = _scaled(n, tmp)
            walls[n], peak = _run(scaled, "--config", "trials=scaled")
            _print(f"{n:,} subjects, 1 outcome, 4 visits, cold", walls[n], peak,
                   f"{walls[n] / cold:.2f} x bundled")  # fmt: skip
            stages[n] = _stages(scaled)
        if sizes:
            # The largest trial again, one job per step: what job_granularity: auto weighs.
            n = max(sizes)
            config = ("--config", "trials=scaled", "job_granularity=per_step")
            wall, peak = _run(_scaled(n, tmp, "split"), *config)
            _print(f"{n:,} subjects, one job per step", wall, peak,
                   f"{wall / walls[n]:.2f} x default")  # fmt: skip
    if stages:
        _print_stages(stages)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
