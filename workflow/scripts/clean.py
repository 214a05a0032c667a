"""Snakemake adapter: read and clean one trial's raw files."""

from trialflow.runner import run_step

run_step(snakemake, "clean")
