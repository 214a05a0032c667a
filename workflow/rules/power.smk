# Power and sample size by simulation: snakemake --cores 2 power --config power=<name>
# simulates the scenario config/power/<name>.yaml in shards, gathers them into power.csv and
# draws the power curve and page. Without a scenario, the power target says how to name one.
from pathlib import Path

from trialflow.errors import TrialflowError
from trialflow.setup import stop

PROJECT = Path(workflow.basedir)


if config.get("power"):
    from trialflow.power import load_power_scenario, scenario_path

    try:
        POWER = load_power_scenario(
            scenario_path(PROJECT, config["power"]), name=config["power"]
        )
    except TrialflowError as exc:
        stop(exc, debug=config["debug"])
    POWER_OUT = f"{RESULTS}/power/{{scenario}}"

    wildcard_constraints:
        scenario=POWER.name,
        shard=r"\d+",

    rule power_shard:
        """Simulate one shard of the replicates of every cell and fit the primary MMRM."""
        input:
            scenario=f"config/power/{{scenario}}.yaml",
        output:
            replicates=f"{POWER_OUT}/shards/shard{{shard}}.csv",
        log:
            f"{POWER_OUT}/logs/shard{{shard}}.log",
        conda:
            "../envs/trialflow.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=POWER.runtime_minutes(),
        script:
            "../scripts/power_shard.py"

    rule power_gather:
        """Combine the shards: every replicate, and the power table."""
        input:
            scenario=f"config/power/{{scenario}}.yaml",
            shards=expand(
                f"{RESULTS}/power/{{{{scenario}}}}/shards/shard{{shard}}.csv",
                shard=range(POWER.shards),
            ),
        output:
            power=f"{POWER_OUT}/power.csv",
            replicates=f"{POWER_OUT}/replicates.csv",
        log:
            f"{POWER_OUT}/logs/gather.log",
        conda:
            "../envs/trialflow.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        script:
            "../scripts/power_gather.py"

    rule power_report:
        """The power curve (PNG and SVG) and the self-contained power page."""
        input:
            scenario=f"config/power/{{scenario}}.yaml",
            power=f"{POWER_OUT}/power.csv",
            replicates=f"{POWER_OUT}/replicates.csv",
        output:
            png=f"{POWER_OUT}/power_curve.png",
            svg=f"{POWER_OUT}/power_curve.svg",
            html=f"{POWER_OUT}/power.html",
        log:
            f"{POWER_OUT}/logs/report.log",
        conda:
            "../envs/trialflow.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        script:
            "../scripts/power_report.py"

    rule power:
        """Target: the power table, curve and page of the scenario named by --config power."""
        input:
            expand(
                f"{RESULTS}/power/{POWER.name}/{{name}}",
                name=["power.csv", "power_curve.png", "power_curve.svg", "power.html"],
            ),

else:

    rule power:
        """Without --config power=<name>: stops before any job, saying how to name a scenario
        and which exist."""
        input:
            get_missing_scenario,
