"""A bundled trial scaled to n subjects, for the benchmarks (simulated, written to a folder)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from trialflow.config import load_yaml
from trialflow.simulate import simulate, write_trial

ROOT = Path(__file__).resolve().parent.parent


def scaled_trial(n: int, folder: Path, name: str = "exercise_education") -> Path:
    """Simulate the scenario of a bundled trial with ``n`` subjects (split evenly between the
    arms) into ``folder`` and return the path of a trial description that reads it."""
    scenario = copy.deepcopy(load_yaml(ROOT / "config" / "scenarios" / f"{name}.yaml"))
    control, treatment = scenario["arms"]["control"], scenario["arms"]["treatment"]
    scenario["n"] = {control: n // 2, treatment: n - n // 2}
    write_trial(simulate(scenario), folder)
    config = yaml.safe_load((ROOT / "config" / "trials" / f"{name}.yaml").read_text())
    config["data"] = {
        "subjects": str(folder / "subjects.csv"),
        "visits": str(folder / "visits.csv"),
    }
    path = folder / "trial.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
