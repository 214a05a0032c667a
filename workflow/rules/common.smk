# Configuration: validate config/config.yaml and every trial description, and the input
# functions of the rules (named get_*).
from pathlib import Path

from snakemake.utils import validate

from trialflow.errors import TrialflowError
from trialflow.setup import normalise_config, prepare_workflow, stop

normalise_config(config)
validate(config, "../schemas/config.schema.yaml")

try:
    SETUP = prepare_workflow(
        config,
        project=Path(workflow.basedir),
        snakemake_validate=lambda content: validate(
            content, "../schemas/trial.schema.yaml"
        ),
    )
except TrialflowError as exc:
    stop(exc, debug=config["debug"])

RESULTS = SETUP.results
TRIALS_DIR = SETUP.trials_dir
TRIALS = SETUP.names
TRIAL_CONFIGS = SETUP.trials
# Names this run's index stamp: runs of different trials never claim the same output.
RUN_KEY = SETUP.run_key


wildcard_constraints:
    trial="|".join(TRIALS),


def get_trial_config(wildcards) -> str:
    return f"{TRIALS_DIR}/{wildcards.trial}.yaml"


def get_raw_inputs(wildcards) -> dict:
    trial = TRIAL_CONFIGS[wildcards.trial]
    inputs = {
        "trial": get_trial_config(wildcards),
        "subjects": trial.subjects_path,
        "visits": trial.visits_path,
    }
    if trial.adverse_events_path:
        inputs["adverse_events"] = trial.adverse_events_path
    if trial.screening_path:
        inputs["screening"] = trial.screening_path
    return inputs


def get_final_outputs() -> list:
    analysis = ["clean.csv", "queries.csv", "adsl.csv", "adeff.csv", "flow.csv"]
    tables = [
        "effects.csv",
        "lsmeans.csv",
        "anova.csv",
        "effect_sizes.csv",
        "sensitivity.csv",
        "tipping_point.csv",
        "responders.csv",
    ]
    return [
        *[f"{RESULTS}/{t}/analysis/{f}" for t in TRIALS for f in analysis],
        *[f"{RESULTS}/{t}/tables/{f}" for t in TRIALS for f in tables],
        *[f"{RESULTS}/{t}/report.html" for t in TRIALS],
        *[f"{RESULTS}/{t}/report.pdf" for t in TRIALS],
        f"{RESULTS}/logs/index.{RUN_KEY}.done",
    ]
