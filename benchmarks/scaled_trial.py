"""A bundled trial scaled to n subjects, for the benchmarks (simulated, written to a folder)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from trialflow.config import load_yaml
from trialflow.simulate import simulate, write_trial

ROOT = Path(__file__).resolve().parent.parent


def _reduce(scenario: dict[str, Any], config: dict[str, Any], visits: int) -> None:
    """Keep the primary outcome and the first ``visits`` visits, in scenario and description."""
    config["outcomes"] = [o for o in config["outcomes"] if o.get("primary")][:1]
    config["visits"] = config["visits"][:visits]
    config["primary_visit"] = config["visits"][-1]["label"]
    kept = {o["name"] for o in config["outcomes"]}
    outcomes = [o for o in scenario["outcomes"] if o["name"] in kept]
    for outcome in outcomes:
        outcome["sd"] = outcome["sd"][:visits]
        outcome["change"] = {arm: c[:visits] for arm, c in outcome["change"].items()}
    scenario["outcomes"] = outcomes
    scenario["visits"] = scenario["visits"][:visits]
    # Planted data-entry problems in the dropped outcome columns have nowhere to go.
    columns = {o["column"] for o in outcomes} | {"visit"}
    planted = scenario.get("anomalies", {}).get("visits", [])
    scenario.setdefault("anomalies", {})["visits"] = [
        a for a in planted if a.get("column", "visit") in columns
    ]


def scaled_trial(
    n: int, folder: Path, name: str = "exercise_education", *, visits: int | None = None
) -> Path:
    """Simulate the scenario of a bundled trial with ``n`` subjects (split evenly between the
    arms) into ``folder`` and return the path of a trial description that reads it.

    With ``visits``, the trial keeps only its primary outcome and its first ``visits`` visits.
    """
    scenario = copy.deepcopy(load_yaml(ROOT / "config" / "scenarios" / f"{name}.yaml"))
    config = yaml.safe_load((ROOT / "config" / "trials" / f"{name}.yaml").read_text())
    if visits is not None:
        _reduce(scenario, config, visits)
    control, treatment = scenario["arms"]["control"], scenario["arms"]["treatment"]
    scenario["n"] = {control: n // 2, treatment: n - n // 2}
    write_trial(simulate(scenario), folder)
    config["data"] = {
        "subjects": str(folder / "subjects.csv"),
        "visits": str(folder / "visits.csv"),
    }
    path = folder / "trial.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
