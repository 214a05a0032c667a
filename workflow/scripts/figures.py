"""Snakemake adapter: draw every figure of one trial."""

from trialflow.runner import run_step

run_step(snakemake, "figures")
