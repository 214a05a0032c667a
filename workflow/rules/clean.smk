rule clean:
    """Read the raw exports through the trial description; log every data problem."""
    input:
        unpack(get_raw_inputs),
    output:
        **outputs_of("clean"),
    log:
        f"{RESULTS}/{{trial}}/logs/clean.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/clean.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/clean.py"


rule derive:
    """Build the analysis datasets (ADSL, ADEFF) and the CONSORT flow counts."""
    input:
        **inputs_from("clean"),
        trial=get_trial_config,
    output:
        **outputs_of("derive"),
    log:
        f"{RESULTS}/{{trial}}/logs/derive.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/derive.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: get_trial_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/derive.py"
