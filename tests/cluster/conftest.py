"""Shared by the cluster tests: project copies, Snakemake runs and the jobs a run announces."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import ROOT

PROJECT = ("Snakefile", "workflow", "config", "data/raw", "profiles")
# A node in one of these states takes jobs (a trailing * would mean it does not answer).
READY = {"idle", "mixed", "allocated"}
REQUIRE = "TRIALFLOW_REQUIRE_SLURM"


@dataclass
class Job:
    """One job as Snakemake announces it: rule, wildcards, threads and resources."""

    rule: str
    wildcards: str = ""
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)


def project_copy(folder: Path) -> Path:
    """The workflow, its configuration, the bundled raw data and the profiles, in `folder`."""
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy(source, folder / name)
    return folder


def snakemake(work: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # A fixed SOURCE_DATE_EPOCH makes the report's one time stamp reproducible.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764115200", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=timeout,
    )


# Rules that only name targets (Snakefile: localrules); they are never submitted.
TARGET_RULES = frozenset({"all", "pdf", "power"})


def announced_jobs(log: str) -> list[Job]:
    """The jobs of a Snakemake log (dry run or real) that go to the cluster: the target rules
    (all, pdf, power: local rules with nothing to run) are left out."""
    jobs: list[Job] = []
    for line in log.splitlines():
        if start := re.fullmatch(r"(?:local)?rule (\w+):", line):
            jobs.append(Job(start[1]))
        elif jobs and (item := re.fullmatch(r" {4}(wildcards|threads|resources): (.*)", line)):
            key, value = item.groups()
            if key == "wildcards":
                jobs[-1].wildcards = value
            elif key == "threads":
                jobs[-1].threads = int(value)
            else:
                jobs[-1].resources = dict(pair.split("=", 1) for pair in value.split(", "))
    return [job for job in jobs if job.rule not in TARGET_RULES]


def node_state() -> str:
    """The state of the cluster's first node, or why there is none."""
    try:
        answer = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer ({exc})"
    states = answer.stdout.split()
    return states[0] if answer.returncode == 0 and states else answer.stderr.strip()


def _skip_or_fail(message: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message} ({REQUIRE}=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_plugin() -> None:
    """Snakemake's SLURM executor plugin, which the profile names (the `cluster` extra)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _skip_or_fail(
            "the SLURM executor plugin is not installed; install it with: "
            "pip install -e '.[cluster]'"
        )


@pytest.fixture(scope="session")
def slurm_node(slurm_plugin: None) -> None:
    """A SLURM node that takes jobs; without one the test is skipped (fails under REQUIRE)."""
    state = node_state()
    if state in READY:
        return
    message = (
        f"no SLURM node takes jobs ({state or 'no node'}); "
        "start one with: bash tests/cluster/start-slurm.sh"
    )
    _skip_or_fail(message)
