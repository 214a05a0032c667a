"""Snakemake adapter: combine the shards of a power scenario into its power table."""

from typing import Any

from trialflow.io import read_result_csv, write_csv
from trialflow.power import gather, load_power_scenario, power_table
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    scenario = load_power_scenario(smk.input.scenario, name=smk.wildcards.scenario)
    shards = [read_result_csv(path, dtype={"note": str}) for path in smk.input.shards]
    replicates = gather(shards, scenario)
    write_csv(replicates, smk.output.replicates)
    write_csv(power_table(replicates, scenario), smk.output.power)
    logger.info("%s: %d replicate fits gathered", scenario.name, len(replicates))


run_script(snakemake, main)
