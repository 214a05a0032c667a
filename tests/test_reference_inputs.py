"""The bundled trials' R input is built without trialflow, and trialflow's analysis rows match it.

Promise (README, "Validation against R and SAS"): the R references of the two bundled trials
are fitted to rows built from the raw files by ``tests/reference/bundled_inputs.py``, which
applies the README's cleaning rules and derives baseline and change with pandas alone. These
tests pin that the committed R input is exactly that build, that the build does not use
trialflow, and that the rows trialflow's models receive (cleaning -> ADSL/ADEFF ->
``outcome_data``) are the same rows with the same values, so a cleaning or derivation bug
cannot hide behind references made from trialflow's own output.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from trialflow.analysis import outcome_data
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference"
TRIALS = ("exercise_education", "weightbearing")


def _load_builder() -> ModuleType:
    # tests/reference holds scripts, not a package: load the builder from its file.
    spec = importlib.util.spec_from_file_location("bundled_inputs", REFERENCE / "bundled_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BUILDER = _load_builder()


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def _trialflow_rows(name: str) -> pd.DataFrame:
    """The rows trialflow's models fit, in the layout of the R input."""
    trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml", name=name)
    derived = derive(read_and_clean(trial, root=ROOT), trial)
    parts = [outcome_data(derived.adeff, derived.adsl, trial, o) for o in trial.outcomes]
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.loc[frame["value"].notna()].copy()  # the R input has no row for a missed visit
    frame["visit_index"] = frame["visit_index"] + 1  # ADEFF counts visits from 0, the R input 1
    return frame[[*BUILDER.COLUMNS, *(c.name for c in trial.covariates)]]


def _in_order(frame: pd.DataFrame) -> pd.DataFrame:
    outcomes = {o: k for k, o in enumerate(dict.fromkeys(frame["outcome"]))}
    key = frame.assign(_o=frame["outcome"].map(outcomes))
    key = key.sort_values(["_o", "subject_id", "visit_index"], kind="stable")
    return key.drop(columns="_o").reset_index(drop=True)


def test_builder_and_dataset_script_do_not_import_trialflow() -> None:
    for script in ("bundled_inputs.py", "make_datasets.py"):
        imported = _imported_modules(REFERENCE / script)
        assert "trialflow" not in imported, script
    assert _imported_modules(REFERENCE / "bundled_inputs.py") <= {
        "__future__", "re", "dataclasses", "pathlib", "numpy", "pandas",
    }  # fmt: skip


@pytest.mark.parametrize("name", TRIALS)
def test_committed_r_input_is_the_independent_build(name: str) -> None:
    # tests/reference/data/<trial>.csv is read by every R program (reference_common.R
    # read_dataset); make_datasets.py writes it from bundled_inputs.bundled_dataset.
    text = io.StringIO()
    BUILDER.bundled_dataset(name).to_csv(text, index=False, lineterminator="\n")
    committed = (REFERENCE / "data" / f"{name}.csv").read_text(encoding="utf-8")
    assert text.getvalue() == committed


@pytest.mark.parametrize("name", TRIALS)
def test_committed_index_entry_is_the_independent_build(name: str) -> None:
    index = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
    entry = index.set_index("dataset").loc[name].to_dict()
    assert {"dataset": name, **entry} == BUILDER.index_entry(name)


@pytest.mark.parametrize("name", TRIALS)
def test_trialflow_analysis_rows_equal_the_independent_build(name: str) -> None:
    expected = _in_order(BUILDER.bundled_dataset(name))
    actual = _in_order(_trialflow_rows(name))
    # Same rows, same values to the last bit (change is value - baseline in both), so every
    # R reference fitted to the independent build applies to what trialflow analyses.
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_exact=True)


def test_independent_build_applies_the_cleaning_rules() -> None:
    # The raw cells each rule acts on (data/raw/exercise_education/visits.csv, rows as in
    # queries.csv: header = row 1), checked on the independent build itself.
    data = BUILDER.bundled_dataset("exercise_education")

    def cell(subject: str, visit: str, outcome: str) -> pd.Series:
        at = (data["subject_id"] == subject) & (data["visit"] == visit)
        return data.loc[at & (data["outcome"] == outcome), "value"]

    assert cell("EE001", "week26", "pain_vas").empty  # row 6 "n/a": not a number
    assert cell("EE006", "week6", "knee_strength").empty  # row 18 "112,5": decimal comma
    assert cell("EE009", "week26", "hba1c").empty  # row 31 "71": outside 4-15
    assert cell("EE004", "baseline", "pain_vas").tolist() == [7.2]  # row 11 " baseline "
    assert len(cell("EE012", "week6", "vo2")) == 1  # rows 42-43: exact duplicate
    assert set(data.loc[data["subject_id"] == "EE003", "arm"]) == {"education"}  # EDUCATION
