"""Snakemake adapter: run the analysis plan on one trial and write its tables."""

from trialflow.runner import run_step

run_step(snakemake, "models")
