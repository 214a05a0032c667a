"""A covariance fallback of the MMRM is never silent: files, log, tables and methods text.

README, Analysis plan: if the requested structure does not converge, the structures of
``analysis.fallback`` are tried in turn; "the structure used and the reason are written to
``models/<outcome>.json``, the ``note`` column and the log. Never silent." The report's methods
text states the pre-specified order and which outcome needed a fallback, with the structure
used. The bundled pain trial runs through the models step as the workflow runs it, once as it
is (no fallback) and once with one outcome's last visit a copy of the visit before, for every
participant: a correlation of 1, on the boundary, so the unstructured covariance cannot
converge for that outcome only (as in tests/stats/test_mmrm.py, fallback test).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from trialflow import steps
from trialflow.clean import read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.derive import derive
from trialflow.io import write_csv, write_json
from trialflow.report import (
    ReportInputs,
    _diagnostics,
    load_report_inputs,
    methods_paragraphs,
    model_note,
    provenance,
)

from .conftest import ROOT

FAILING = "knee_strength"  # the outcome whose last visit copies the one before


def _copy_visit(adeff: pd.DataFrame, outcome: str, source: str, target: str) -> pd.DataFrame:
    """The outcome's values (and changes) at ``target`` replaced by those at ``source``."""
    out = adeff.copy()
    rows = out["outcome"] == outcome
    before = out.loc[rows & (out["visit"] == source)].set_index("subject_id")
    at = rows & (out["visit"] == target)
    for column in ("value", "change", "pct_change", "anl01fl"):
        out.loc[at, column] = out.loc[at, "subject_id"].map(before[column]).to_numpy()
    return out


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _models_step(
    folder: Path, trial: TrialConfig, change: Callable[[pd.DataFrame], pd.DataFrame] | None
) -> dict[str, Any]:
    """The models step on the trial's analysis datasets, and the report's inputs from its files;
    with its warnings as logged."""
    clean = read_and_clean(trial, root=ROOT)
    d = derive(clean, trial)
    analysis, tables = folder / "analysis", folder / "tables"
    write_csv(d.adsl, analysis / "adsl.csv")
    write_csv(d.adeff if change is None else change(d.adeff), analysis / "adeff.csv")
    write_csv(d.flow, analysis / "flow.csv")
    write_csv(clean.queries, analysis / "queries.csv")
    write_json({"covariate_types": clean.covariate_types}, analysis / "covariates.json")
    names = ("effects", "lsmeans", "anova", "effect_sizes", "type3", "subgroups")
    paths = {name: str(tables / f"{name}.csv") for name in names}
    paths.update(
        adsl=str(analysis / "adsl.csv"),
        adeff=str(analysis / "adeff.csv"),
        meta=str(analysis / "covariates.json"),
        models=str(folder / "models"),
    )
    handler = _Records()
    logger = logging.getLogger("trialflow")
    logger.addHandler(handler)
    try:
        steps.models(paths, trial)
    finally:
        logger.removeHandler(handler)
    inputs = load_report_inputs(
        trial=trial,
        analysis_dir=analysis,
        tables_dir=tables,
        models_dir=folder / "models",
        figures_dir=folder / "figures",
        input_files=[],
    )
    return {"inputs": inputs, "log": handler.messages, "folder": folder}


def _methods(inputs: ReportInputs) -> str:
    return " ".join(methods_paragraphs(inputs, provenance(inputs.trial, [], ROOT)))


@pytest.fixture(scope="module")
def trial() -> TrialConfig:
    return load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")


@pytest.fixture(scope="module")
def as_is(trial, tmp_path_factory) -> dict[str, Any]:
    return _models_step(tmp_path_factory.mktemp("as_is"), trial, None)


@pytest.fixture(scope="module")
def fallback(trial, tmp_path_factory) -> dict[str, Any]:
    last, before = trial.visits[-1].label, trial.visits[-2].label
    return _models_step(
        tmp_path_factory.mktemp("fallback"),
        trial,
        lambda adeff: _copy_visit(adeff, FAILING, before, last),
    )


ORDER = (
    "Had it failed to converge, Toeplitz, first-order autoregressive and compound-symmetry "
    "structures were to be tried in that order."
)


def test_methods_text_says_no_fallback_was_needed_when_none_was(as_is) -> None:
    """README, covariance of the MMRM: the default fallback order (Toeplitz, AR(1), CS) is
    stated, and with every outcome on the requested structure the text says none was needed."""
    inputs = as_is["inputs"]
    used = {o: r["mmrm"]["info"]["covariance_used"] for o, r in inputs.models.items()}
    assert set(used.values()) == {"us"}
    text = _methods(inputs)
    assert f"{ORDER} No outcome needed a fallback." in text
    assert "The fallback structure was used" not in text
    assert not any("did not converge" in m for m in as_is["log"])


def test_methods_text_names_the_outcome_and_structure_of_a_fallback(fallback) -> None:
    """README: a fallback is "never silent"; the methods text names the outcome that needed it
    and the structure used, and only that outcome."""
    inputs = fallback["inputs"]
    label = inputs.trial.outcome(FAILING).label
    text = _methods(inputs)
    assert f"{ORDER} The fallback structure was used for {label} (Toeplitz structure)." in text
    assert "No outcome needed a fallback" not in text
    # The model note under the outcome tables names both structures in use.
    assert "Toeplitz / unstructured residual covariance" in model_note(inputs)


def test_fallback_is_written_to_the_record_the_note_column_and_the_log(fallback) -> None:
    """README: "the structure used and the reason are written to models/<outcome>.json, the
    note column and the log. Never silent." The other outcomes keep the unstructured
    covariance and say nothing of a fallback; the diagnostics table shows what was requested."""
    inputs, folder = fallback["inputs"], fallback["folder"]
    record = json.loads((folder / "models" / f"{FAILING}.json").read_text(encoding="utf-8"))
    info = record["mmrm"]["info"]
    assert (info["covariance_requested"], info["covariance_used"]) == ("us", "toep")
    assert info["covariance_tried"] == ["us", "toep"]
    assert info["fallback_reason"].startswith("unstructured (us) did not converge: ")
    effects = pd.read_csv(folder / "tables" / "effects.csv", dtype={"note": str})
    mmrm = effects.loc[effects["analysis"] == "mmrm"]
    said = mmrm["note"].fillna("").str.contains("covariance 'us' did not converge; used 'toep'")
    assert said.groupby(mmrm["outcome"]).all().to_dict() == {
        o.name: o.name == FAILING for o in inputs.trial.outcomes
    }
    logged = [m for m in fallback["log"] if "did not converge; used 'toep'" in m]
    assert logged and all(m.startswith(f"{FAILING} mmrm: ") for m in logged)
    diagnostics, _ = _diagnostics(inputs)
    mmrm_rows = diagnostics.loc[diagnostics["analysis"] == "mmrm"].set_index("outcome")
    assert mmrm_rows.at[inputs.trial.outcome(FAILING).label, "covariance"] == (
        "toep (requested us)"
    )
    others = mmrm_rows.drop(index=inputs.trial.outcome(FAILING).label)
    assert (others["covariance"] == "us").all()
