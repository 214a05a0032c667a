rule clean:
    """Read the raw exports through the trial description; log every data problem."""
    input:
        unpack(get_raw_inputs),
    output:
        clean=f"{RESULTS}/{{trial}}/analysis/clean.csv",
        subjects=f"{RESULTS}/{{trial}}/analysis/clean_subjects.csv",
        queries=f"{RESULTS}/{{trial}}/analysis/queries.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
        adverse_events=f"{RESULTS}/{{trial}}/analysis/adverse_events.csv",
        screening=f"{RESULTS}/{{trial}}/analysis/screening.csv",
    log:
        f"{RESULTS}/{{trial}}/logs/clean.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/clean.py"
