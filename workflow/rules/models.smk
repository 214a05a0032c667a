rule models:
    """Fit the analysis plan (MMRM, LMM, ANCOVA, mixed ANOVA, effect sizes) to every outcome."""
    input:
        **inputs_from("clean", "derive"),
        trial=get_trial_config,
    output:
        **outputs_of("models"),
    log:
        f"{RESULTS}/{{trial}}/logs/models.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/models.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: get_outcome_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/models.py"


rule sensitivity:
    """Missing-data sensitivity analyses: imputation strategies, tipping point, responders."""
    input:
        **inputs_from("clean", "derive"),
        trial=get_trial_config,
    output:
        **outputs_of("sensitivity"),
    log:
        f"{RESULTS}/{{trial}}/logs/sensitivity.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/sensitivity.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: get_outcome_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/sensitivity.py"
