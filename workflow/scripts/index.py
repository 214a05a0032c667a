"""Snakemake adapter: the index page of every trial with results, and cross-trial plots."""

from pathlib import Path
from typing import Any

from trialflow.index import update_index
from trialflow.io import write_text
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    listed = update_index(results=Path(smk.params.results), trials_dir=Path(smk.params.trials_dir))
    logger.info("index lists %d trial(s): %s", len(listed), ", ".join(listed))
    write_text("\n".join(listed) + "\n", smk.output.stamp)


run_script(snakemake, main)
