"""Snakemake adapter: the power curve (PNG, SVG) and the power page of a scenario."""

from pathlib import Path
from typing import Any

from trialflow.figures import save_figure
from trialflow.io import read_result_csv, write_text
from trialflow.power import load_power_scenario
from trialflow.power_report import power_figure, power_page
from trialflow.runner import run_script


def main(smk: Any) -> None:
    scenario = load_power_scenario(smk.input.scenario, name=smk.wildcards.scenario)
    table = read_result_csv(smk.input.power)
    replicates = read_result_csv(smk.input.replicates, dtype={"note": str, "covariance": str})
    png, _ = save_figure(power_figure(table, scenario), Path(smk.output.png).with_suffix(""))
    write_text(power_page(table, replicates, scenario, png), smk.output.html)


run_script(snakemake, main)
