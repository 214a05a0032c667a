"""Snakemake adapter: the index page of every trial with results, and cross-trial plots."""

from pathlib import Path
from typing import Any

from trialflow.index import write_index_stamp
from trialflow.runner import run_script


def main(smk: Any) -> None:
    # From the configuration, not params: a rule with params makes Snakemake import pandas
    # on every invocation, an up-to-date rerun included (~0.7 s).
    write_index_stamp(Path(smk.output.stamp), Path(smk.config["trials_dir"]))


run_script(snakemake, main)
