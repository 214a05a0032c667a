rule figures:
    """Draw every figure of a trial (PNG and SVG)."""
    input:
        **inputs_from("clean", "derive", "models", "sensitivity"),
        trial=get_trial_config,
    output:
        **outputs_of("figures"),
    log:
        f"{RESULTS}/{{trial}}/logs/figures.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/figures.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: get_trial_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/figures.py"


rule report:
    """Write the publication tables and the self-contained HTML report of a trial."""
    input:
        unpack(get_raw_inputs),
        **inputs_from("clean", "derive", "models", "sensitivity", "figures"),
    output:
        **outputs_of("report"),
    log:
        f"{RESULTS}/{{trial}}/logs/report.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/report.tsv"
    wildcard_constraints:
        trial=PER_STEP,
    conda:
        "../envs/trialflow.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/report.py"


rule analyse:
    """Every step of a small trial in one job: clean, derive, models, sensitivity, figures
    and report (the outputs are those of the per-step rules, byte for byte)."""
    input:
        unpack(get_raw_inputs),
    output:
        **outputs_of("clean", "derive", "models", "sensitivity", "figures", "report"),
    log:
        f"{RESULTS}/{{trial}}/logs/analyse.log",
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/analyse.tsv"
    wildcard_constraints:
        trial=ONE_JOB,
    conda:
        "../envs/trialflow.yaml"
    threads: get_trial_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/analyse.py"


rule report_pdf:
    """The report as a PDF (print stylesheet; rendered offline), in a job of its own.

    Not part of the default run (it takes seconds per trial): ask for it with the target
    rule pdf, or name the file."""
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
    benchmark:
        f"{RESULTS}/{{trial}}/benchmarks/report_pdf.tsv"
    conda:
        "../envs/trialflow.yaml"
    threads: 1
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
    script:
        "../scripts/report_pdf.py"


rule pdf:
    """Target: the PDF report of every trial of the run."""
    default_target: False
    input:
        expand(f"{RESULTS}/{{trial}}/report.pdf", trial=TRIALS),


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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/index.py"
