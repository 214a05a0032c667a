"""Snakemake adapter: simulate and analyse one shard of a power scenario's replicates."""

from typing import Any

from trialflow.io import write_csv
from trialflow.power import load_power_scenario, run_shard
from trialflow.runner import logger, run_script


def main(smk: Any) -> None:
    scenario = load_power_scenario(smk.input.scenario, name=smk.wildcards.scenario)
    shard = int(smk.wildcards.shard)
    results = run_shard(scenario, shard)
    write_csv(results, smk.output.replicates)
    failed = int(results["estimate"].isna().sum())
    logger.info(
        "%s shard %d of %d: %d replicate fits, %d not fitted",
        scenario.name,
        shard,
        scenario.shards,
        len(results),
        failed,
    )


run_script(snakemake, main)
