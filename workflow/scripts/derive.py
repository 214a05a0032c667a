"""Snakemake adapter: build ADSL, ADEFF and the CONSORT flow counts."""

from trialflow.runner import run_step

run_step(snakemake, "derive")
