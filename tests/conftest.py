"""Shared fixtures: a tiny valid trial that each test breaks in one way."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from threadpoolctl import threadpool_limits

from trialflow.config import TrialConfig, load_trial

ROOT = Path(__file__).resolve().parent.parent
# One BLAS thread, as every process of the workflow runs: the models make many small matrix
# calls, on which idle BLAS threads spin.
threadpool_limits(limits=1)

BASE_TRIAL: dict[str, Any] = {
    "title": "Tiny test trial",
    "data": {"subjects": "subjects.csv", "visits": "visits.csv"},
    "arms": {"control": "control", "treatment": "exercise"},
    "visits": [
        {"label": "baseline", "week": 0},
        {"label": "week6", "week": 6},
        {"label": "week12", "week": 12},
    ],
    "baseline_visit": "baseline",
    "primary_visit": "week12",
    "covariates": ["age", "sex"],
    "outcomes": [
        {
            "name": "pain",
            "label": "Pain VAS",
            "unit": "cm",
            "range": [0, 10],
            "better": "lower",
            "domain": "pain",
            "primary": True,
        },
        {
            "name": "walk",
            "column": "6MWD",
            "label": "6-minute walk",
            "unit": "m",
            "range": [0, 900],
            "better": "higher",
            "domain": "function",
        },
    ],
}

BASE_SUBJECTS = [
    {"subject_id": "S01", "arm": "control", "age": "61", "sex": "F"},
    {"subject_id": "S02", "arm": "exercise", "age": "55", "sex": "M"},
    {"subject_id": "S03", "arm": "control", "age": "70", "sex": "M"},
    {"subject_id": "S04", "arm": "exercise", "age": "48", "sex": "F"},
]
BASE_VISITS = [
    {"subject_id": s, "visit": v, "pain": p, "6MWD": w}
    for s, rows in {
        "S01": [("baseline", "6.1", "400"), ("week6", "5.9", "410"), ("week12", "5.5", "420")],
        "S02": [("baseline", "7.0", "350"), ("week6", "6.0", "380"), ("week12", "5.0", "400")],
        "S03": [("baseline", "5.5", "450"), ("week6", "5.6", "455")],
        "S04": [("baseline", "6.8", "300"), ("week6", "6.0", "330"), ("week12", "4.9", "")],
    }.items()
    for v, p, w in rows
]


class TinyTrial:
    """Writes the tiny trial to a folder, with optional changes, and loads it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config: dict[str, Any] = copy.deepcopy(BASE_TRIAL)
        self.subjects: list[dict[str, str]] = copy.deepcopy(BASE_SUBJECTS)
        self.visits: list[dict[str, str]] = copy.deepcopy(BASE_VISITS)
        # Files the test provides itself (or wants absent): not written from the rows.
        self.skip_write: set[str] = set()

    def write(self) -> Path:
        cfg = copy.deepcopy(self.config)
        for key in ("subjects", "visits"):
            cfg["data"][key] = str(self.folder / cfg["data"][key])
        for name, rows in (("subjects", self.subjects), ("visits", self.visits)):
            target = Path(cfg["data"][name])
            if name not in self.skip_write:
                pd.DataFrame(rows).to_csv(target, index=False, lineterminator="\n")
        path = self.folder / "tiny.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        return path

    def load(self) -> TrialConfig:
        return load_trial(self.write())


@pytest.fixture
def tiny(tmp_path: Path) -> TinyTrial:
    return TinyTrial(tmp_path)


@pytest.fixture
def write_text(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write
