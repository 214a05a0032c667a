"""Reading the workflow's configuration: the trials to run, each checked before any job starts.

``workflow/rules/common.smk`` calls :func:`prepare_workflow` once; everything that can be
wrong in ``config/config.yaml`` or a trial description (schema, consistency, a data file
missing or outside the allowed folders, an output folder outside the project) is reported
here, as one message, before Snakemake builds its graph of jobs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from trialflow.config import TRIAL_SCHEMA, TrialConfig, load_yaml, parse_trial, trial_names
from trialflow.config import validate_schema as validate_trial_schema
from trialflow.errors import TrialflowError
from trialflow.paths import confine, data_file, raw_files

BOOLEAN_KEYS = ("debug", "allow_outside_paths")


# A trial whose raw visit file is at most this large (about 250,000 subjects with 4 visits)
# runs every step in one job (auto). The job's threads share each step's work, so one job is
# faster than one per step (100,000 subjects: one per step takes 1.4 times as long in
# benchmarks/bench_workflow.py); above this, a rerun that redoes only the step that changed
# saves more.
ONE_JOB_LIMIT_BYTES = 16_000_000
# Memory of a step: a base plus a multiple of the raw visit file's size (measured peaks of
# the scaled benchmark trials stay below it).
_BASE_MEM_MB = 1000
_MEM_PER_MB = 40


@dataclass(frozen=True)
class WorkflowSetup:
    """The validated trials of a run, where their outputs go, and how they run as jobs."""

    names: list[str]
    trials: dict[str, TrialConfig]
    results: str
    trials_dir: str
    # Trials whose steps run in one job, and trials that run one job per step.
    one_job: list[str]
    per_step: list[str]
    raw_bytes: dict[str, int]

    def mem_mb(self, trial: str) -> int:
        """Memory to request for a job of ``trial`` (MB)."""
        return _BASE_MEM_MB + _MEM_PER_MB * self.raw_bytes[trial] // 1_000_000

    def trial_threads(self, cores: int) -> int:
        """Threads of a trial's jobs: the run's cores shared among its trials, so that a run of
        one trial gives its jobs every core and a run of several runs them side by side."""
        return max(1, cores // max(1, len(self.names)))

    def outcome_threads(self, trial: str, cores: int) -> int:
        """Threads of a trial's models and sensitivity jobs: one per outcome (their outcomes
        run side by side), or the trial's share of the cores if more (each outcome's refits
        and imputations share the rest)."""
        return max(len(self.trials[trial].outcomes), self.trial_threads(cores))

    def runtime(self, trial: str) -> int:
        """Wall time to request for a job of ``trial`` (minutes)."""
        return 10 + self.raw_bytes[trial] // 1_000_000

    @property
    def run_key(self) -> str:
        """A file-name-safe key of this run's set of trials."""
        key = "+".join(sorted(self.names))
        if len(key) <= 80:
            return key
        import hashlib

        return hashlib.sha256(key.encode()).hexdigest()[:16]


def normalise_config(config: dict[str, Any]) -> None:
    """Command-line values arrive as text (``--config debug=true``): read yes/no as booleans."""
    for key in BOOLEAN_KEYS:
        if isinstance(config.get(key), str):
            config[key] = config[key].strip().lower() in ("true", "yes", "1", "on")


def prepare_workflow(
    config: Mapping[str, Any],
    *,
    project: Path,
) -> WorkflowSetup:
    """Check every trial of the run and return them.

    Each trial description is validated against workflow/schemas/trial.schema.yaml (filling
    in the defaults) by :func:`trialflow.config.validate_schema`, whose message names the key
    and suggests the closest known one.
    """
    results = str(config["results_dir"])
    if not config["allow_outside_paths"]:
        confine(
            results,
            roots=["."],
            project=project,
            what="results folder",
            source="config/config.yaml",
            key="results_dir",
            fix="choose a folder inside the project (the default is results), or set "
            "allow_outside_paths: true",
        )
    names = trial_names(config["trials"])
    trials_dir = str(config["trials_dir"])
    trials = {}
    for name in names:
        path = f"{trials_dir}/{name}.yaml"
        content = load_yaml(project / path)
        filled = validate_trial_schema(content, TRIAL_SCHEMA, source=path)
        trial = parse_trial(filled, name=name, source=path)
        for key, configured in raw_files(trial).items():
            if not config["allow_outside_paths"]:
                confine(
                    configured,
                    roots=config["data_roots"],
                    project=project,
                    what="data file",
                    source=path,
                    key=f"data.{key}",
                )
            data_file(trial, key, project)
        trials[name] = trial
    check_writable(project / results, names)
    sizes = {n: data_file(trials[n], "visits", project).stat().st_size for n in names}
    granularity = str(config.get("job_granularity", "auto"))
    one_job = [
        n
        for n in names
        if granularity == "per_trial" or (granularity == "auto" and sizes[n] <= ONE_JOB_LIMIT_BYTES)
    ]
    return WorkflowSetup(
        names=names,
        trials=trials,
        results=results,
        trials_dir=trials_dir,
        one_job=one_job,
        per_step=[n for n in names if n not in one_job],
        raw_bytes=sizes,
    )


def check_writable(results: Path, names: list[str]) -> None:
    """Stop before any job if an existing results folder of the run cannot be written."""
    folders = [results, *(results / name for name in names)]
    for folder in folders:
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise TrialflowError(
                f"the results folder {folder} is read-only for you, so its outputs cannot be "
                "written",
                file="config/config.yaml",
                fix=f"make it writable (chmod -R u+w {folder}), or set results_dir to another "
                "folder: snakemake --cores 2 --config results_dir=<folder>",
            )


def stop(exc: TrialflowError, *, debug: bool) -> NoReturn:
    """End the run with the message only (``debug`` re-raises for the traceback)."""
    if debug:
        raise exc
    sys.stderr.write(f"\ntrialflow error in the configuration:\n{exc}\n\n")
    sys.exit(1)
