"""Snakemake adapter: build ADSL, ADEFF and the CONSORT flow counts."""

from typing import Any

from trialflow.clean import load_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.io import write_csv
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    trial = load_trial(smk.input.trial, name=smk.wildcards.trial)
    clean = load_clean(
        visits=smk.input.clean,
        subjects=smk.input.subjects,
        queries=smk.input.queries,
        meta=smk.input.meta,
        screening=smk.input.screening,
    )
    out = derive(clean, trial)
    logger.info("%s: ADSL %d rows, ADEFF %d rows", trial.name, len(out.adsl), len(out.adeff))
    write_csv(out.adsl, smk.output.adsl)
    write_csv(out.adeff, smk.output.adeff)
    write_csv(out.flow, smk.output.flow)


run_script(snakemake, main)
