rule models:
    """Fit the analysis plan (MMRM, LMM, ANCOVA, mixed ANOVA, effect sizes) to every outcome."""
    input:
        trial=get_trial_config,
        adsl=f"{RESULTS}/{{trial}}/analysis/adsl.csv",
        adeff=f"{RESULTS}/{{trial}}/analysis/adeff.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
    output:
        effects=f"{RESULTS}/{{trial}}/tables/effects.csv",
        lsmeans=f"{RESULTS}/{{trial}}/tables/lsmeans.csv",
        anova=f"{RESULTS}/{{trial}}/tables/anova.csv",
        effect_sizes=f"{RESULTS}/{{trial}}/tables/effect_sizes.csv",
        type3=f"{RESULTS}/{{trial}}/tables/type3.csv",
        subgroups=f"{RESULTS}/{{trial}}/tables/subgroups.csv",
        models=directory(f"{RESULTS}/{{trial}}/models"),
    log:
        f"{RESULTS}/{{trial}}/logs/models.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/models.py"


rule sensitivity:
    """Missing-data sensitivity analyses: imputation strategies, tipping point, responders."""
    input:
        trial=get_trial_config,
        adsl=f"{RESULTS}/{{trial}}/analysis/adsl.csv",
        adeff=f"{RESULTS}/{{trial}}/analysis/adeff.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
    output:
        sensitivity=report(
            f"{RESULTS}/{{trial}}/tables/sensitivity.csv",
            caption="../report/sensitivity.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        tipping=f"{RESULTS}/{{trial}}/tables/tipping_point.csv",
        responders=f"{RESULTS}/{{trial}}/tables/responders.csv",
        summary=f"{RESULTS}/{{trial}}/sensitivity/summary.json",
    log:
        f"{RESULTS}/{{trial}}/logs/sensitivity.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/sensitivity.py"
