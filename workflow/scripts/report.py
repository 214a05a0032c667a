"""Snakemake adapter: publication tables and the HTML report of one trial."""

from trialflow.runner import run_step

run_step(snakemake, "report")
