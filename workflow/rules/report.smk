rule figures:
    """Draw every figure of a trial (PNG and SVG)."""
    input:
        trial=get_trial_config,
        adsl=f"{RESULTS}/{{trial}}/analysis/adsl.csv",
        adeff=f"{RESULTS}/{{trial}}/analysis/adeff.csv",
        flow=f"{RESULTS}/{{trial}}/analysis/flow.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
        effects=f"{RESULTS}/{{trial}}/tables/effects.csv",
        lsmeans=f"{RESULTS}/{{trial}}/tables/lsmeans.csv",
        subgroups=f"{RESULTS}/{{trial}}/tables/subgroups.csv",
        sensitivity=f"{RESULTS}/{{trial}}/tables/sensitivity.csv",
        tipping=f"{RESULTS}/{{trial}}/tables/tipping_point.csv",
        responders=f"{RESULTS}/{{trial}}/tables/responders.csv",
        sensitivity_summary=f"{RESULTS}/{{trial}}/sensitivity/summary.json",
        models=f"{RESULTS}/{{trial}}/models",
    output:
        figures=report(
            directory(f"{RESULTS}/{{trial}}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="{trial}",
            subcategory="Figures",
        ),
    log:
        f"{RESULTS}/{{trial}}/logs/figures.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/figures.py"


rule report:
    """Write the publication tables and the self-contained HTML report of a trial."""
    input:
        unpack(get_raw_inputs),
        adsl=f"{RESULTS}/{{trial}}/analysis/adsl.csv",
        adeff=f"{RESULTS}/{{trial}}/analysis/adeff.csv",
        flow=f"{RESULTS}/{{trial}}/analysis/flow.csv",
        queries=f"{RESULTS}/{{trial}}/analysis/queries.csv",
        adverse_events_data=f"{RESULTS}/{{trial}}/analysis/adverse_events.csv",
        meta=f"{RESULTS}/{{trial}}/analysis/covariates.json",
        effects=f"{RESULTS}/{{trial}}/tables/effects.csv",
        lsmeans=f"{RESULTS}/{{trial}}/tables/lsmeans.csv",
        anova=f"{RESULTS}/{{trial}}/tables/anova.csv",
        effect_sizes=f"{RESULTS}/{{trial}}/tables/effect_sizes.csv",
        type3=f"{RESULTS}/{{trial}}/tables/type3.csv",
        subgroups=f"{RESULTS}/{{trial}}/tables/subgroups.csv",
        sensitivity=f"{RESULTS}/{{trial}}/tables/sensitivity.csv",
        tipping=f"{RESULTS}/{{trial}}/tables/tipping_point.csv",
        responders=f"{RESULTS}/{{trial}}/tables/responders.csv",
        sensitivity_summary=f"{RESULTS}/{{trial}}/sensitivity/summary.json",
        models=f"{RESULTS}/{{trial}}/models",
        figures=f"{RESULTS}/{{trial}}/figures",
    output:
        report=report(
            f"{RESULTS}/{{trial}}/report.html",
            caption="../report/trial_report.rst",
            category="{trial}",
            subcategory="Report",
        ),
        table1=f"{RESULTS}/{{trial}}/tables/table1.csv",
        table1_html=report(
            f"{RESULTS}/{{trial}}/tables/table1.html",
            caption="../report/table1.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        primary=report(
            f"{RESULTS}/{{trial}}/tables/primary_outcome.csv",
            caption="../report/outcomes.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        secondary=report(
            f"{RESULTS}/{{trial}}/tables/secondary_outcomes.csv",
            caption="../report/outcomes.rst",
            category="{trial}",
            subcategory="Tables",
        ),
        completion=f"{RESULTS}/{{trial}}/tables/visit_completion.csv",
        adverse_events=f"{RESULTS}/{{trial}}/tables/adverse_events.csv",
    log:
        f"{RESULTS}/{{trial}}/logs/report.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/report.py"


rule report_pdf:
    """The report as a PDF (print stylesheet; rendered offline), in a job of its own."""
    input:
        html=f"{RESULTS}/{{trial}}/report.html",
    output:
        pdf=report(
            f"{RESULTS}/{{trial}}/report.pdf",
            caption="../report/trial_report.rst",
            category="{trial}",
            subcategory="Report",
        ),
    log:
        f"{RESULTS}/{{trial}}/logs/report_pdf.log",
    conda:
        "../envs/trialflow.yaml"
    script:
        "../scripts/report_pdf.py"


rule index:
    """Link every trial with results, and plot outcomes that several trials share.

    The page lists every trial under the results folder, not only this run's; it is rewritten
    under a file lock, so runs of different trials can go on at the same time.
    """
    input:
        reports=expand(f"{RESULTS}/{{trial}}/report.html", trial=TRIALS),
    output:
        stamp=f"{RESULTS}/logs/index.{RUN_KEY}.done",
    log:
        f"{RESULTS}/logs/index.{RUN_KEY}.log",
    conda:
        "../envs/trialflow.yaml"
    params:
        trials_dir=TRIALS_DIR,
    script:
        "../scripts/index.py"
