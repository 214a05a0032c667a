"""Snakemake adapter: the index page of every trial with results, and cross-trial plots."""

from pathlib import Path
from typing import Any

from trialflow.index import update_index
from trialflow.io import write_text
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    # The stamp is <results>/logs/index.<run>.done: the results folder is two levels up.
    results = Path(smk.output.stamp).parent.parent
    # From the configuration, not params: a rule with params makes Snakemake import pandas
    # on every invocation, an up-to-date rerun included (~0.7 s).
    listed = update_index(results=results, trials_dir=Path(smk.config["trials_dir"]))
    logger.info("index lists %d trial(s): %s", len(listed), ", ".join(listed))
    write_text("\n".join(listed) + "\n", smk.output.stamp)


run_script(snakemake, main)
