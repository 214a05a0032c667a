"""Benchmark of the power planner's replicates against the naive path through the workflow.

The trial: 200 participants (100 per arm), a baseline and three follow-up visits, one outcome,
MAR dropout of 20% per arm, analysed by the primary MMRM (unstructured covariance,
Satterthwaite df). Three ways of running replicates are timed in the same run:

- naive: per replicate, the simulator writes the trial's CSV files, which are read and cleaned,
  derived into ADSL/ADEFF, and the primary MMRM is fitted as the workflow's analysis does
  (a handful of replicates);
- lean, one process: :func:`trialflow.power_sim.run_replicates` (arrays, mean model built once);
- lean, two processes: the replicates split into two shards run side by side, as
  ``snakemake --cores 2 power`` runs them.

Prints wall and CPU seconds, replicates per second (wall) and its ratio to the naive path, and
CPU seconds per replicate; on a machine shared with other work the wall time of the
two-process run exceeds its CPU time / 2, which is what two idle cores would take.

Run from the package root:
``OPENBLAS_NUM_THREADS=1 PYTHONPATH=workflow python benchmarks/bench_power.py [--replicates 1000]``
"""

from __future__ import annotations

import argparse
import copy
import itertools
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from trialflow.analysis import MODELS, mean_spec, outcome_data, outcome_plan
from trialflow.clean import read_and_clean
from trialflow.config import SCHEMA_DIR, load_trial, validate_schema
from trialflow.derive import derive
from trialflow.power import PowerScenario, parse_power_scenario
from trialflow.power_sim import run_replicates
from trialflow.simulate import simulate, write_trial

N_PER_ARM = 100
EFFECT = 3.0
SCENARIO: dict[str, Any] = {
    "seed": 20250101,
    "arms": {"control": "control", "treatment": "active"},
    "visits": [{"label": f"week{w}", "week": w} for w in (0, 4, 8, 12)],
    "outcomes": [
        {
            "name": "score",
            "column": "score",
            "decimals": 1,
            "baseline_mean": 50.0,
            "sd": [10.0, 10.5, 11.0, 11.5],
            "correlation": {"structure": "ar1", "rho": 0.7},
            "change": {"control": [0, 1, 2, 3], "active": [0, 2, 4, 6]},
        }
    ],
    "dropout": {"mechanism": "MAR", "rate": {"control": 0.2, "active": 0.2}, "strength": 0.5},
    "n_per_arm": [N_PER_ARM],
    "effects": [EFFECT],
    "replicates": 1000,
}
TRIAL: dict[str, Any] = {
    "title": "Benchmark trial",
    "data": {"subjects": "subjects.csv", "visits": "visits.csv"},
    "arms": {"control": "control", "treatment": "active"},
    "visits": SCENARIO["visits"],
    "baseline_visit": "week0",
    "primary_visit": "week12",
    "outcomes": [
        {
            "name": "score",
            "label": "Score",
            "unit": "points",
            "range": [-100, 200],
            "better": "higher",
            "primary": True,
        }
    ],
}


def _scenario() -> PowerScenario:
    content = validate_schema(SCENARIO, SCHEMA_DIR / "power.schema.yaml", source="benchmark")
    return parse_power_scenario(content, name="benchmark", source="benchmark")


def naive_replicate(scenario: PowerScenario, replicate: int, folder: Path) -> float:
    """One replicate through files, cleaning, derivation and the workflow's primary MMRM."""
    sim = copy.deepcopy(SCENARIO)
    sim["seed"] = SCENARIO["seed"] + replicate
    sim["n"] = {"control": N_PER_ARM, "active": N_PER_ARM}
    sim["outcomes"] = [dict(o) for o in scenario.model.with_effect(EFFECT)]
    write_trial(simulate(sim), folder)
    (folder / "trial.yaml").write_text(yaml.safe_dump(TRIAL), encoding="utf-8")
    trial = load_trial(folder / "trial.yaml")
    derived = derive(read_and_clean(trial, root=folder), trial)
    outcome = trial.outcomes[0]
    data = outcome_data(derived.adeff, derived.adsl, trial, outcome)
    result = MODELS["mmrm"](outcome_plan(data, trial, mean_spec(trial.options)))
    return float(result.effects["estimate"].iloc[-1])


def _cpu() -> float:
    """CPU seconds of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_naive(scenario: PowerScenario, replicates: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``replicates`` naive replicates."""
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), _cpu()
        for r in range(replicates):
            naive_replicate(scenario, r, Path(tmp) / f"r{r}")
        return time.perf_counter() - start, _cpu() - cpu


def _lean(replicates: range) -> int:
    scenario = _scenario()
    return len(run_replicates(scenario.model, scenario.plan, [(N_PER_ARM, EFFECT)], replicates))


def time_lean(replicates: int, processes: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``replicates`` lean replicates split into ``processes`` shards."""
    bounds = [i * replicates // processes for i in range(processes + 1)]
    shards = [range(a, b) for a, b in itertools.pairwise(bounds)]
    start, cpu = time.perf_counter(), _cpu()
    if processes == 1:
        _lean(shards[0])
    else:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            list(pool.map(_lean, shards))
    return time.perf_counter() - start, _cpu() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicates", type=int, default=1000, help="lean replicates (2 cores)")
    parser.add_argument("--single", type=int, default=100, help="lean replicates (1 process)")
    parser.add_argument("--naive", type=int, default=5, help="naive replicates")
    args = parser.parse_args(argv)
    scenario = _scenario()
    rows = [
        ("naive: files + clean + derive + MMRM", args.naive, *time_naive(scenario, args.naive)),
        ("lean, 1 process", args.single, *time_lean(args.single, 1)),
        ("lean, 2 processes (2 shards)", args.replicates, *time_lean(args.replicates, 2)),
    ]
    base = rows[0][1] / rows[0][2]
    print(
        f"{'path':<38} {'replicates':>10} {'wall s':>8} {'CPU s':>8} {'replicates/s':>13} "
        f"{'ratio':>6} {'CPU s/replicate':>16}"
    )
    for name, count, wall, cpu in rows:
        rate = count / wall
        print(
            f"{name:<38} {count:>10} {wall:>8.2f} {cpu:>8.2f} {rate:>13.2f} "
            f"{rate / base:>6.1f} {cpu / count:>16.4f}"
        )
    per = rows[2][3] / rows[2][1]
    print(
        f"\n{args.replicates} replicates on 2 otherwise idle cores: about "
        f"{args.replicates * per / 2:.0f} s (CPU time / 2); measured wall time {rows[2][2]:.0f} s."
    )


if __name__ == "__main__":
    main()
