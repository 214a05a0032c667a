"""The SLURM profile, by dry run (no cluster needed): what each job would ask SLURM for."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Job, announced_jobs, project_copy, snakemake

# The profile's defaults for rules without their own (profiles/slurm/config.yaml,
# default-resources; README "Running on a cluster").
DEFAULT_MEM_MB = "2000"
DEFAULT_RUNTIME = "60"


def _dry_run(work: Path, *args: str) -> dict[tuple[str, str], Job]:
    # One job per step, so that every rule a large trial uses is checked.
    run = snakemake(
        work, "--dry-run", "--config", "trials=weightbearing", "job_granularity=per_step", *args
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {(job.rule, job.wildcards): job for job in announced_jobs(run.stdout + run.stderr)}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory, slurm_plugin: None) -> tuple[dict, dict]:
    work = project_copy(tmp_path_factory.mktemp("profile"))
    # Without the profile a job shows only what its rule states itself.
    own = _dry_run(work, "--cores", "2")
    # A dry run caps threads at --cores (1 unless given), a cluster run does not: with ample
    # cores the dry run shows each job's threads as the cluster run has them. Two threads for
    # the models put a job with several threads among those checked.
    slurm = _dry_run(
        work, "--profile", "profiles/slurm", "--cores", "64", "--set-threads", "models=2"
    )
    return own, slurm


def test_every_job_goes_to_slurm(dry_runs) -> None:
    own, slurm = dry_runs
    assert set(slurm) == set(own)
    assert {rule for rule, _ in slurm} >= {
        "clean",
        "derive",
        "models",
        "sensitivity",
        "figures",
        "report",
        "index",
    }


def test_slurm_gets_one_cpu_per_thread(dry_runs) -> None:
    _, slurm = dry_runs
    assert slurm["models", "trial=weightbearing"].threads == 2
    for key, job in slurm.items():
        assert job.resources.get("cpus_per_task") == str(job.threads), key


def test_memory_and_time_are_the_rules_own_or_the_profile_defaults(dry_runs) -> None:
    own, slurm = dry_runs
    for key, job in slurm.items():
        stated = own[key].resources
        assert job.resources["mem_mb"] == stated.get("mem_mb", DEFAULT_MEM_MB), key
        assert job.resources["runtime"] == stated.get("runtime", DEFAULT_RUNTIME), key
