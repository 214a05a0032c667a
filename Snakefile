# trialflow: analysis of two-arm longitudinal randomized trials.
# Wiring only; logic lives in workflow/trialflow, rules in workflow/rules.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/clean.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/power.smk"


# Target rules have nothing to run: on a cluster they are never submitted as jobs.
localrules:
    all,
    pdf,
    power,


rule all:
    default_target: True
    input:
        get_final_outputs(),
