"""The workflow on a SLURM cluster through profiles/slurm gives the same bytes as a local run.

Needs a cluster that answers `sinfo`: `bash tests/cluster/start-slurm.sh` starts a single-node
one on this machine; run with `pytest -m slurm tests/cluster`.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .conftest import announced_jobs, project_copy, snakemake

pytestmark = pytest.mark.slurm

# The test cluster has no accounting database: squeue, which keeps finished jobs for the
# cluster's MinJobAge, reports job states instead of sacct. The first status check after 5 s
# instead of 40 s keeps the run short.
CLUSTER_OPTIONS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "5",
)


@dataclass(frozen=True)
class Case:
    """One workflow run: its targets and --config, and the outputs compared byte for byte."""

    name: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]  # globs from the project folder
    min_outputs: int = 10
    # A power scenario written into both project copies first: (shipped scenario, changes).
    power: tuple[str, dict[str, object]] | None = None


CASES = [
    Case(
        "trial",
        ("--config", "trials=weightbearing"),
        ("results/weightbearing/tables/*.csv", "results/weightbearing/analysis/*.csv"),
    ),
    # The power planner in shards (one SLURM job per shard), on a small version of the
    # weight-bearing trial's scenario: 40 replicates per cell keep the run short.
    Case(
        "power",
        ("power", "--config", "power=slurm_check"),
        ("results/power/slurm_check/*.csv", "results/power/slurm_check/shards/*.csv"),
        min_outputs=4,
        power=(
            "weightbearing",
            {"n_per_arm": [12, 24], "effects": [29], "replicates": 40, "shards": 2},
        ),
    ),
]


@dataclass(frozen=True)
class Runs:
    case: Case
    local: Path
    cluster: Path
    cluster_log: str


@pytest.fixture(scope="module", params=CASES, ids=[case.name for case in CASES])
def runs(request, tmp_path_factory, slurm_node) -> Runs:
    case: Case = request.param
    local = project_copy(tmp_path_factory.mktemp(f"{case.name}-local"))
    cluster = project_copy(tmp_path_factory.mktemp(f"{case.name}-slurm"))
    if case.power is not None:
        shipped, changes = case.power
        for work in (local, cluster):
            folder = work / "config" / "power"
            scenario = yaml.safe_load((folder / f"{shipped}.yaml").read_text(encoding="utf-8"))
            (folder / "slurm_check.yaml").write_text(yaml.safe_dump({**scenario, **changes}))
    run = snakemake(local, "--cores", "2", *case.args)
    assert run.returncode == 0, run.stderr[-3000:]
    run = snakemake(
        cluster, "--profile", "profiles/slurm", *case.args, *CLUSTER_OPTIONS, timeout=3600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return Runs(case, local, cluster, run.stderr)


def _outputs(runs: Runs, folder: Path) -> list[Path]:
    found = {path for pattern in runs.case.outputs for path in folder.glob(pattern)}
    return sorted(path.relative_to(folder) for path in found)


def test_cluster_run_matches_local_run(runs: Runs) -> None:
    outputs = _outputs(runs, runs.local)
    assert len(outputs) >= runs.case.min_outputs
    assert _outputs(runs, runs.cluster) == outputs
    for path in outputs:
        assert (runs.cluster / path).read_bytes() == (runs.local / path).read_bytes(), path


def _megabytes(memory: str) -> int:
    """squeue's memory (2000M, 4G) in MB."""
    match = re.fullmatch(r"(\d+)([MGT])", memory)
    assert match, memory
    return int(match[1]) * {"M": 1, "G": 1024, "T": 1024**2}[match[2]]


def _minutes(limit: str) -> int:
    """squeue's time limit ([days-][hours:]minutes:seconds) in minutes."""
    days, _, clock = limit.rpartition("-")
    hours, minutes, _seconds = ([0, 0] + [int(part) for part in clock.split(":")])[-3:]
    return (int(days or 0) * 24 + hours) * 60 + minutes


def test_slurm_allocates_what_each_job_asks_for(runs: Runs) -> None:
    run_id = re.search(r"SLURM run ID: (\S+)", runs.cluster_log)
    assert run_id, runs.cluster_log[-3000:]
    queue = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--name={run_id[1]}", "--format=%k|%C|%m|%l"],
        capture_output=True,
        text=True,
        check=True,
    )
    allocated = set()
    for line in queue.stdout.splitlines():
        comment, cpus, memory, limit = line.split("|")
        rule = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
        assert rule, comment
        allocated.add((rule[1], int(cpus), _megabytes(memory), _minutes(limit)))
    asked = {
        (job.rule, job.threads, int(job.resources["mem_mb"]), int(job.resources["runtime"]))
        for job in announced_jobs(runs.cluster_log)
    }
    assert allocated == asked
