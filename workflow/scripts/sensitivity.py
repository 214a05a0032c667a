"""Snakemake adapter: run the missing-data sensitivity analyses of one trial."""

from trialflow.runner import run_step

run_step(snakemake, "sensitivity")
