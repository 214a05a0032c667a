"""Snakemake adapter: every step of one (small) trial in one job."""

from trialflow.runner import run_step

run_step(snakemake, "all")
