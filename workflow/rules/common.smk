# Configuration: validate config/config.yaml and every trial description, and the input
# functions of the rules (named get_*).
from pathlib import Path

import sys

from snakemake.utils import validate

from trialflow.clean import data_file
from trialflow.config import (
    TRIAL_SCHEMA,
    load_yaml,
    parse_trial,
    trial_names,
    validate_schema,
)
from trialflow.errors import TrialflowError
from trialflow.paths import confine

# Command-line values arrive as text (--config debug=true): read yes/no words as booleans.
for _key in ("debug", "allow_outside_paths"):
    if isinstance(config.get(_key), str):
        config[_key] = config[_key].strip().lower() in ("true", "yes", "1", "on")

validate(config, "../schemas/config.schema.yaml")

PROJECT = Path(workflow.basedir)
RESULTS = config["results_dir"]
TRIALS_DIR = config["trials_dir"]
TRIALS = trial_names(config["trials"])


def _load_trials() -> dict:
    trials = {}
    for name in TRIALS:
        path = f"{TRIALS_DIR}/{name}.yaml"
        try:
            content = load_yaml(path)
            # The same schema twice: first for a message naming the key and the fix, then
            # through Snakemake, which also fills in the defaults.
            validate_schema(content, TRIAL_SCHEMA, source=path)
            validate(content, "../schemas/trial.schema.yaml")
            trial = parse_trial(content, name=name, source=path)
            for key in ("subjects", "visits"):
                if not config["allow_outside_paths"]:
                    confine(
                        content["data"][key],
                        roots=config["data_roots"],
                        project=PROJECT,
                        what="data file",
                        source=path,
                        key=f"data.{key}",
                    )
                data_file(trial, key, PROJECT)
            trials[name] = trial
        except TrialflowError as exc:
            if config.get("debug"):
                raise
            # A message for the user, not a traceback.
            sys.stderr.write(f"\ntrialflow error in the configuration:\n{exc}\n\n")
            sys.exit(1)
    return trials


def _check_results_dir() -> None:
    if config["allow_outside_paths"]:
        return
    try:
        confine(
            RESULTS,
            roots=["."],
            project=PROJECT,
            what="results folder",
            source="config/config.yaml",
            key="results_dir",
            fix="choose a folder inside the project (the default is results), or set "
            "allow_outside_paths: true",
        )
    except TrialflowError as exc:
        sys.stderr.write(f"\ntrialflow error in the configuration:\n{exc}\n\n")
        sys.exit(1)


_check_results_dir()
TRIAL_CONFIGS = _load_trials()


wildcard_constraints:
    trial="|".join(TRIALS),


def get_trial_config(wildcards) -> str:
    return f"{TRIALS_DIR}/{wildcards.trial}.yaml"


def get_raw_inputs(wildcards) -> dict:
    trial = TRIAL_CONFIGS[wildcards.trial]
    return {
        "trial": get_trial_config(wildcards),
        "subjects": trial.subjects_path,
        "visits": trial.visits_path,
    }


def get_final_outputs() -> list:
    analysis = ["clean.csv", "queries.csv", "adsl.csv", "adeff.csv", "flow.csv"]
    tables = ["effects.csv", "lsmeans.csv", "anova.csv", "effect_sizes.csv"]
    return [
        *[f"{RESULTS}/{t}/analysis/{f}" for t in TRIALS for f in analysis],
        *[f"{RESULTS}/{t}/tables/{f}" for t in TRIALS for f in tables],
        *[f"{RESULTS}/{t}/report.html" for t in TRIALS],
        f"{RESULTS}/index.html",
    ]
