# Configuration: validate config/config.yaml and every trial description, and the input
# functions of the rules (named get_*). Only light modules are imported here: this runs on
# every invocation, including an up-to-date rerun.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from trialflow.errors import TrialflowError
from trialflow.setup import normalise_config, prepare_workflow, stop

normalise_config(config)
validate(config, "../schemas/config.schema.yaml")

try:
    SETUP = prepare_workflow(config, project=Path(workflow.basedir))
except TrialflowError as exc:
    stop(exc, debug=config["debug"])

RESULTS = SETUP.results
TRIALS_DIR = SETUP.trials_dir
TRIALS = SETUP.names
TRIAL_CONFIGS = SETUP.trials
# Names this run's index stamp: runs of different trials never claim the same output.
RUN_KEY = SETUP.run_key


def _alternatives(names: list) -> str:
    # A pattern matching exactly these trial names (none: a name no trial can have).
    return "|".join(names) if names else "(?!)"


# A small trial runs all its steps in one job (rule analyse); a large one a job per step.
ONE_JOB = _alternatives(SETUP.one_job)
PER_STEP = _alternatives(SETUP.per_step)


wildcard_constraints:
    trial="|".join(TRIALS),


def get_trial_config(wildcards) -> str:
    return f"{TRIALS_DIR}/{wildcards.trial}.yaml"


def get_raw_inputs(wildcards) -> dict:
    trial = TRIAL_CONFIGS[wildcards.trial]
    inputs = {
        "trial": get_trial_config(wildcards),
        "raw_subjects": trial.subjects_path,
        "raw_visits": trial.visits_path,
    }
    if trial.adverse_events_path:
        inputs["raw_adverse_events"] = trial.adverse_events_path
    if trial.screening_path:
        inputs["raw_screening"] = trial.screening_path
    if trial.dictionary_path:
        inputs["raw_dictionary"] = trial.dictionary_path
    for i, path in enumerate(trial.sdtm.findings[1:] if trial.sdtm else (), start=1):
        inputs[f"raw_findings_{i}"] = path
    return inputs


def get_mem_mb(wildcards) -> int:
    return SETUP.mem_mb(wildcards.trial)


def _run_cores() -> int:
    # The run's --cores (Snakemake lowers a rule's threads to it). A cluster run has none, and
    # each job asks the cluster for the CPUs of its own threads; inside that job, Snakemake
    # computes the threads again and must find what the job asked for (--cpus-per-task).
    job_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if job_cpus:
        return int(job_cpus)
    try:
        return int(workflow.cores)
    except WorkflowError:
        return 1


def get_trial_threads(wildcards) -> int:
    return SETUP.trial_threads(_run_cores())


def get_outcome_threads(wildcards) -> int:
    return SETUP.outcome_threads(wildcards.trial, _run_cores())


def get_runtime(wildcards) -> int:
    return SETUP.runtime(wildcards.trial)


def get_missing_scenario(wildcards):
    # The power target without --config power=<name>: stop, naming the scenarios there are.
    # Imported here: the planner's modules are heavy, and only the power target needs them.
    from trialflow.power import available_scenarios, missing_scenario

    scenarios = available_scenarios(Path(workflow.basedir))
    return stop(missing_scenario(scenarios), debug=config["debug"])


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
        f"{RESULTS}/logs/index.{RUN_KEY}.done",
    ]


# Every file a trial's steps write, by step (the rules of both granularities share them).
T = f"{RESULTS}/{{trial}}"
OUTPUTS = {
    "clean": dict(
        clean=f"{T}/analysis/clean.csv",
        clean_subjects=f"{T}/analysis/clean_subjects.csv",
        queries=f"{T}/analysis/queries.csv",
        meta=f"{T}/analysis/covariates.json",
        adverse_events_data=f"{T}/analysis/adverse_events.csv",
        screening_data=f"{T}/analysis/screening.csv",
    ),
    "derive": dict(
        adsl=f"{T}/analysis/adsl.csv",
        adeff=f"{T}/analysis/adeff.csv",
        flow=f"{T}/analysis/flow.csv",
        adam_adsl=f"{T}/adam/adsl.csv",
        adam_adsl_xpt=f"{T}/adam/adsl.xpt",
        adam_adeff=f"{T}/adam/adeff.csv",
        adam_adeff_xpt=f"{T}/adam/adeff.xpt",
        adam_define=f"{T}/adam/define.csv",
    ),
    "models": dict(
        effects=f"{T}/tables/effects.csv",
        lsmeans=f"{T}/tables/lsmeans.csv",
        anova=f"{T}/tables/anova.csv",
        effect_sizes=f"{T}/tables/effect_sizes.csv",
        type3=f"{T}/tables/type3.csv",
        subgroups=f"{T}/tables/subgroups.csv",
        models=directory(f"{T}/models"),
    ),
    "sensitivity": dict(
        sensitivity=report(
            f"{T}/tables/sensitivity.csv",
            caption="../report/sensitivity.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        tipping=f"{T}/tables/tipping_point.csv",
        responders=f"{T}/tables/responders.csv",
        sensitivity_summary=f"{T}/sensitivity/summary.json",
    ),
    "figures": dict(
        figures=report(
            directory(f"{T}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="{trial}",
            subcategory="Figures",
        )
    ),
    "report": {
        "report": report(
            f"{T}/report.html",
            caption="../report/trial_report.rst",
            category="{trial}",
            subcategory="Report",
        ),
        "table1": f"{T}/tables/table1.csv",
        "table1_html": report(
            f"{T}/tables/table1.html",
            caption="../report/table1.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        "primary": report(
            f"{T}/tables/primary_outcome.csv",
            caption="../report/outcomes.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        "secondary": report(
            f"{T}/tables/secondary_outcomes.csv",
            caption="../report/outcomes.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        "completion": f"{T}/tables/visit_completion.csv",
        "adverse_events_table": f"{T}/tables/adverse_events.csv",
        "tables_docx": f"{T}/tables/tables.docx",
    },
}


def outputs_of(*steps: str) -> dict:
    return {name: path for step in steps for name, path in OUTPUTS[step].items()}


def inputs_from(*steps: str) -> dict:
    # Files of earlier steps read by a step (directories are plain paths as inputs).
    return {name: str(path) for step in steps for name, path in OUTPUTS[step].items()}
