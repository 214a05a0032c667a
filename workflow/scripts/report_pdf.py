"""Snakemake adapter: the PDF of one trial's report."""

from trialflow.runner import run_step

run_step(snakemake, "report_pdf")
