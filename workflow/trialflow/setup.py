"""Reading the workflow's configuration: the trials to run, each checked before any job starts.

``workflow/rules/common.smk`` calls :func:`prepare_workflow` once; everything that can be
wrong in ``config/config.yaml`` or a trial description (schema, consistency, a data file
missing or outside the allowed folders, an output folder outside the project) is reported
here, as one message, before Snakemake builds its graph of jobs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from trialflow.clean import data_file
from trialflow.config import TRIAL_SCHEMA, TrialConfig, load_yaml, parse_trial, trial_names
from trialflow.config import validate_schema as validate_trial_schema
from trialflow.errors import TrialflowError
from trialflow.paths import confine

BOOLEAN_KEYS = ("debug", "allow_outside_paths")


@dataclass(frozen=True)
class WorkflowSetup:
    """The validated trials of a run and where their outputs go."""

    names: list[str]
    trials: dict[str, TrialConfig]
    results: str
    trials_dir: str

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
    snakemake_validate: Callable[[dict[str, Any]], None],
) -> WorkflowSetup:
    """Check every trial of the run and return them.

    ``snakemake_validate`` validates a trial description with ``snakemake.utils.validate``
    (which also fills in the defaults); our own validator runs first for a message that names
    the key and suggests the closest known one.
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
        validate_trial_schema(content, TRIAL_SCHEMA, source=path)
        snakemake_validate(content)
        trial = parse_trial(content, name=name, source=path)
        keys = ["subjects", "visits"]
        keys += ["adverse_events"] if trial.adverse_events_path else []
        keys += ["screening"] if trial.screening_path else []
        for key in keys:
            if not config["allow_outside_paths"]:
                confine(
                    content["data"][key],
                    roots=config["data_roots"],
                    project=project,
                    what="data file",
                    source=path,
                    key=f"data.{key}",
                )
            data_file(trial, key, project)
        trials[name] = trial
    check_writable(project / results, names)
    return WorkflowSetup(names=names, trials=trials, results=results, trials_dir=trials_dir)


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
