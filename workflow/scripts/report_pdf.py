"""Snakemake adapter: the PDF of one trial's report."""

from pathlib import Path
from typing import Any

from trialflow.pdf import write_pdf
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    write_pdf(Path(smk.input.html).read_text(encoding="utf-8"), smk.output.pdf)
    logger.info("PDF written to %s", smk.output.pdf)


run_script(snakemake, main)
