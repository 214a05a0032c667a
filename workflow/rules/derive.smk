rule derive:
    """Build the analysis datasets (ADSL, ADEFF) and the CONSORT flow counts."""
    input:
        trial=get_trial_config,
        clean=f"{RESULTS}/{{trial}}/analysis/clean.csv",
        subjects=f"{RESULTS}/{{trial}}/analysis/clean_subjects.csv",
        queries=f"{RESULTS}/{{trial}}/analysis/queries.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
        screening=f"{RESULTS}/{{trial}}/analysis/screening.csv",
    output:
        adsl=f"{RESULTS}/{{trial}}/analysis/adsl.csv",
        adeff=f"{RESULTS}/{{trial}}/analysis/adeff.csv",
        flow=f"{RESULTS}/{{trial}}/analysis/flow.csv",
    log:
        f"{RESULTS}/{{trial}}/logs/derive.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/derive.py"
