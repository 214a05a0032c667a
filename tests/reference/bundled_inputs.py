"""The bundled trials' R input, built from the raw files without trialflow.

The R reference programs fit the two bundled trials from ``tests/reference/data/<trial>.csv``
(long format: one row per subject, outcome and visit with an observed value). This module
builds those rows straight from ``data/raw/<trial>/`` with pandas alone: the trial
descriptions (``config/trials/<trial>.yaml``) are transcribed into :data:`TRIALS`, and the
cleaning rules of the README ("Cleaning rules") and the derivation of baseline and change are
written here a second time. So the R references check trialflow's reading, cleaning and
derivation as well as its models, and ``tests/test_reference_inputs.py`` compares these rows
with trialflow's analysis datasets.

Only the rules that can change a value of these two trials are written out (labels, numbers,
ranges, duplicates); any situation the README answers with a stop raises ``ValueError`` here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]

# A number as the README accepts it: optional sign, digits with a decimal point, optional
# exponent. Decimal commas, thousands separators, "n/a", "inf" and "NaN" do not match.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Outcome:
    """One outcome of a trial description: its name, raw column and allowed range."""

    name: str
    column: str
    low: float
    high: float


@dataclass(frozen=True)
class Trial:
    """The parts of a trial description that decide the rows the models see."""

    name: str
    subject_id: str
    arm: str
    visit: str
    control: str
    treatment: str
    visits: tuple[tuple[str, int], ...]  # (label, week) in time order; the first is baseline
    numeric_covariates: tuple[str, ...]
    categorical_covariates: tuple[str, ...]
    covariates: tuple[str, ...]  # in the order of the trial description
    outcomes: tuple[Outcome, ...]


# Transcribed from config/trials/exercise_education.yaml and config/trials/weightbearing.yaml
# (columns not named there have the defaults subject_id, arm, visit).
TRIALS: dict[str, Trial] = {
    "exercise_education": Trial(
        name="exercise_education",
        subject_id="subject_id",
        arm="arm",
        visit="visit",
        control="education",
        treatment="exercise",
        visits=(("baseline", 0), ("week6", 6), ("week12", 12), ("week18", 18), ("week26", 26)),
        numeric_covariates=("age",),
        categorical_covariates=("sex",),
        covariates=("age", "sex"),
        outcomes=(
            Outcome("pain_vas", "Pain VAS", 0, 10),
            Outcome("knee_strength", "Knee extension torque", 0, 400),
            Outcome("hba1c", "HbA1c", 4, 15),
            Outcome("vo2", "Treadmill VO2", 5, 70),
        ),
    ),
    "weightbearing": Trial(
        name="weightbearing",
        subject_id="Patient ID",
        arm="Group",
        visit="Visit Name",
        control="nonweightbearing",
        treatment="weightbearing",
        visits=(("baseline", 0), ("week6", 6), ("week12", 12)),
        numeric_covariates=("Age (years)",),
        categorical_covariates=("Sex",),
        covariates=("Age (years)", "Sex"),
        outcomes=(
            Outcome("six_minute_walk", "6MWD", 0, 900),
            Outcome("daily_steps", "Steps per day", 0, 40000),
            Outcome("hba1c", "HbA1c", 4, 15),
            Outcome("ankle_strength", "Ankle DF torque", 0, 80),
        ),
    ),
}

COLUMNS = ["subject_id", "arm", "visit", "visit_index", "week", "outcome", "value", "baseline",
           "change"]  # fmt: skip


def read_raw(path: Path) -> pd.DataFrame:
    """Every cell as text, empty cells as empty strings (UTF-8, else Latin-1)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="latin-1")


def to_label(cell: str, known: dict[str, int]) -> str:
    """A label as configured: spaces trimmed, case and inner spacing forgiven, week numbers.

    ``known`` maps each configured label to its week (arms: any number, never used).
    """
    text = cell.strip()
    if text in known:
        return text
    folded = {" ".join(k.split()).casefold(): k for k in known}
    key = " ".join(text.split()).casefold()
    if key in folded:
        return folded[key]
    by_week = {str(week): label for label, week in known.items() if week >= 0}
    if text in by_week:
        return by_week[text]
    raise ValueError(f"unknown label {cell!r}; known: {sorted(known)}")


def to_number(cell: str) -> float:
    """A numeric cell: a plain number, else missing (text, decimal comma, separators)."""
    text = cell.strip()
    return float(text) if NUMBER.fullmatch(text) else np.nan


def clean_subjects(trial: Trial, raw: pd.DataFrame) -> pd.DataFrame:
    """One row per randomized subject: identifier, arm and the covariates."""
    arms = {trial.control: -1, trial.treatment: -1}
    out = pd.DataFrame({"subject_id": raw[trial.subject_id].str.strip()})
    if (out["subject_id"] == "").any() or out["subject_id"].duplicated().any():
        raise ValueError(f"{trial.name}: empty or repeated subject identifier")
    if (raw[trial.arm].str.strip() == "").any():
        raise ValueError(f"{trial.name}: a subject without an arm")
    out["arm"] = [to_label(a, arms) for a in raw[trial.arm]]
    for cov in trial.numeric_covariates:
        out[cov] = [to_number(c) for c in raw[cov]]
    for cov in trial.categorical_covariates:
        out[cov] = raw[cov].str.strip().replace("", np.nan)
    if (out.groupby("arm").size().reindex(list(arms), fill_value=0) == 0).any():
        raise ValueError(f"{trial.name}: an arm without subjects")
    return out


def clean_visits(trial: Trial, raw: pd.DataFrame, subjects: pd.Series) -> pd.DataFrame:
    """One row per subject and attended visit, outcomes as numbers within their range."""
    weeks = dict(trial.visits)
    out = pd.DataFrame({"subject_id": raw[trial.subject_id].str.strip()})
    out["visit"] = [to_label(v, weeks) for v in raw[trial.visit]]
    for outcome in trial.outcomes:
        values = pd.Series([to_number(c) for c in raw[outcome.column]], index=raw.index)
        inside = values.between(outcome.low, outcome.high)
        out[outcome.name] = values.where(inside)
    unknown = set(out["subject_id"]) - set(subjects)
    if unknown:
        raise ValueError(f"{trial.name}: subjects not in the subjects file: {sorted(unknown)}")
    # Identical rows are one visit entered twice; identical as read, before any cell is set
    # missing, so a row is only dropped when the raw file repeats it.
    key = raw.apply(lambda col: col.str.strip())
    out = out.loc[~key.duplicated()]
    if out.duplicated(["subject_id", "visit"]).any():
        raise ValueError(f"{trial.name}: a subject and visit twice with different values")
    return out


def long_rows(trial: Trial, subjects: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """Observed values with baseline, change and covariates, outcome by outcome."""
    index = {label: k + 1 for k, (label, _) in enumerate(trial.visits)}
    weeks = dict(trial.visits)
    baseline_label = trial.visits[0][0]
    parts = []
    for outcome in trial.outcomes:
        obs = visits[["subject_id", "visit", outcome.name]].rename(columns={outcome.name: "value"})
        base = obs.loc[obs["visit"] == baseline_label].set_index("subject_id")["value"]
        obs = obs.loc[obs["value"].notna()].copy()
        obs["outcome"] = outcome.name
        obs["visit_index"] = obs["visit"].map(index)
        obs["week"] = obs["visit"].map(weeks).astype(float)
        obs["baseline"] = obs["subject_id"].map(base)
        change = obs["value"] - obs["baseline"]
        obs["change"] = change.where(obs["visit"] != baseline_label)
        obs = obs.merge(subjects, on="subject_id", how="left", validate="many_to_one")
        parts.append(obs.sort_values(["subject_id", "visit_index"], kind="stable"))
    return pd.concat(parts, ignore_index=True)[[*COLUMNS, *trial.covariates]]


def bundled_dataset(name: str, root: Path = ROOT) -> pd.DataFrame:
    """The R input of one bundled trial, from its raw files."""
    trial = TRIALS[name]
    raw = root / "data" / "raw" / name
    subjects = clean_subjects(trial, read_raw(raw / "subjects.csv"))
    visits = clean_visits(trial, read_raw(raw / "visits.csv"), subjects["subject_id"])
    return long_rows(trial, subjects, visits)


def index_entry(name: str) -> dict[str, str]:
    """The trial's row of tests/reference/data/datasets.csv."""
    trial = TRIALS[name]
    return {
        "dataset": name,
        "control": trial.control,
        "treatment": trial.treatment,
        "baseline_visit": trial.visits[0][0],
        "covariates": ";".join(trial.covariates),
    }
