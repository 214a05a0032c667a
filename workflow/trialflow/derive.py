"""Analysis datasets in the CDISC ADaM spirit: ADSL, ADEFF and the CONSORT flow counts.

``adsl`` has one row per randomized subject (the ITT population is everyone randomized,
analysed in the allocated arm); ``adeff`` is the long basic data structure used by every model,
one row per subject x outcome x scheduled visit (missing visits are rows with an empty value,
so every randomized subject appears for every outcome); ``flow`` holds the counts of the CONSORT
diagram. :func:`derive` checks that the three reconcile and raises if they do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trialflow.clean import CleanResult, grid_places
from trialflow.config import TrialConfig
from trialflow.errors import DataError, TrialflowError
from trialflow.io import TEXT

ADEFF_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "arm",
    "outcome",
    "visit",
    "visit_index",
    "week",
    "value",
    "baseline",
    "change",
    "pct_change",
    "ablfl",
    "anl01fl",
)
FLOW_COLUMNS: tuple[str, ...] = ("stage", "visit", "arm", "n", "reason")
NO_REASON = "reason not recorded"


@dataclass
class Derived:
    """Output of :func:`derive`: ``adsl``, ``adeff`` and ``flow`` tables."""

    adsl: pd.DataFrame
    adeff: pd.DataFrame
    flow: pd.DataFrame


def _attended(visits: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    """Visit rows with at least one outcome value (a row of empty cells is not a visit)."""
    outcome_names = [o.name for o in trial.outcomes]
    return visits.loc[visits[outcome_names].notna().any(axis=1)]


def build_adsl(clean: CleanResult, trial: TrialConfig) -> pd.DataFrame:
    """One row per randomized subject.

    Returns
    -------
    DataFrame
        subject_id, arm, the covariates, itt ("Y" for everyone randomized), has_baseline
        (Y/N: the baseline visit was attended), n_visits (visits attended), last_visit and
        last_week (last visit attended; empty if none), completed (Y/N: the final scheduled
        visit was attended), withdrawn (Y/N: not completed).
    """
    subjects = clean.subjects
    attended = _attended(clean.visits, trial)
    last = attended.sort_values("visit_index").groupby("subject_id").tail(1).set_index("subject_id")
    ids = subjects["subject_id"]
    # Lookups by index (hash tables), not by Python sets: linear at any trial size.
    has_base = ids.isin(attended.loc[attended["visit"] == trial.baseline_visit, "subject_id"])
    completed = ids.isin(attended.loc[attended["visit"] == trial.final_visit, "subject_id"])
    adsl = subjects[["subject_id", "arm", *[c.name for c in trial.covariates]]].copy()
    adsl["itt"] = "Y"
    adsl["has_baseline"] = np.where(has_base, "Y", "N")
    seen = attended.groupby("subject_id").size()
    adsl["n_visits"] = seen.reindex(ids).fillna(0).astype("int64").to_numpy()
    adsl["last_visit"] = last["visit"].reindex(ids).to_numpy()
    adsl["last_week"] = last["week"].reindex(ids).astype("float64").to_numpy()
    adsl["completed"] = np.where(completed, "Y", "N")
    adsl["withdrawn"] = np.where(completed, "N", "Y")
    rule = trial.sensitivity.get("per_protocol")
    if rule:
        adsl["per_protocol"] = per_protocol_flags(subjects, rule, trial)
    if "withdrawal_reason" in subjects:
        given = subjects["withdrawal_reason"].fillna("").astype(str).to_numpy()
        adsl["withdrawal_reason"] = np.where(
            adsl["withdrawn"] == "Y", np.where(given == "", NO_REASON, given), ""
        )
    return adsl.reset_index(drop=True)


def per_protocol_flags(subjects: pd.DataFrame, rule: dict[str, Any], trial: TrialConfig) -> Any:
    """Y/N per subject: in the per-protocol population by the trial's rule (a missing value: N)."""
    column = rule["column"]
    if column not in subjects:
        raise DataError(
            f"the per-protocol column {column!r} is not in the subjects file",
            file=trial.subjects_path,
            column=column,
            fix="correct sensitivity.per_protocol.column in the trial description",
        )
    # Compared as text, case-insensitively: YAML true and a CSV's TRUE or yes are all text here.
    values = subjects[column].astype("string").str.strip().str.lower()
    listed = {str(v).strip().lower() for v in rule.get("include", rule.get("exclude", []))}
    chosen = values.isin(listed).fillna(False).to_numpy(dtype=bool)
    keep = chosen if "include" in rule else ~chosen & values.notna().to_numpy()
    return np.where(keep, "Y", "N")


def _grid_rows(clean: CleanResult, trial: TrialConfig) -> np.ndarray:
    """Each cleaned visit row's row in the subject-by-visit grid of :func:`build_adeff`:
    its subject's block of visits (subjects file order), then its visit's place in it."""
    visits = clean.visits
    subject_at, visit_at = grid_places(
        clean.subjects["subject_id"], visits["subject_id"], visits["visit"], trial
    )
    at = subject_at * len(trial.visits) + visit_at
    if len(at) and ((subject_at < 0).any() or (visit_at < 0).any() or np.bincount(at).max() > 1):
        raise DataError(
            "the cleaned visits hold a subject missing from the cleaned subjects, a visit the "
            "trial does not schedule, or one subject's visit twice",
            column="subject_id",
            fix="rerun the clean step on the raw files (the cleaned files were changed)",
        )
    return at


def build_adeff(clean: CleanResult, trial: TrialConfig) -> pd.DataFrame:
    """Long efficacy dataset: every subject x outcome x scheduled visit.

    Returns
    -------
    DataFrame
        Columns :data:`ADEFF_COLUMNS`. ``value`` is empty where the visit was missed or the
        cell missing; ``baseline`` is the subject's value at the baseline visit (empty if
        missing); ``change = value - baseline`` and ``pct_change = 100 * change / baseline``
        are empty at the baseline visit, when either is missing, and (pct_change) when the
        baseline is 0. ``ablfl`` = "Y" on the baseline record; ``anl01fl`` = "Y" on
        post-baseline records with both value and baseline present (the records the change
        models use).
    """
    subjects = clean.subjects[["subject_id", "arm"]]
    n_sub, n_vis = len(subjects), len(trial.visits)
    grid = pd.DataFrame(
        {
            "subject_id": np.repeat(subjects["subject_id"].to_numpy(), n_vis),
            "arm": np.repeat(subjects["arm"].to_numpy(), n_vis),
            "visit": np.tile([v.label for v in trial.visits], n_sub),
            "visit_index": np.tile([v.index for v in trial.visits], n_sub),
            "week": np.tile([v.week for v in trial.visits], n_sub).astype("float64"),
        }
    )
    at = _grid_rows(clean, trial)
    base_index = trial.visit(trial.baseline_visit).index
    parts = []
    for o in trial.outcomes:
        part = grid.copy()
        part.insert(2, "outcome", o.name)
        # Every scheduled visit of every subject; empty where no cleaned row holds the visit.
        values = np.full(len(grid), np.nan)
        values[at] = clean.visits[o.name].to_numpy(dtype="float64")
        part["value"] = values
        is_base = (part["visit_index"] == base_index).to_numpy()
        # The grid holds each subject's visits in a block of n_vis rows (a left merge keeps
        # that order): the baseline is the block's baseline row, repeated over the block.
        blocks = part["value"].to_numpy(dtype="float64").reshape(n_sub, n_vis)
        part["baseline"] = np.repeat(blocks[:, is_base[:n_vis]].ravel(), n_vis)
        post = part["visit_index"] > base_index
        change = (part["value"] - part["baseline"]).where(post)
        part["change"] = change
        with np.errstate(divide="ignore", invalid="ignore"):
            pct = 100.0 * change / part["baseline"]
        part["pct_change"] = pct.where(part["baseline"] != 0)
        part["ablfl"] = np.where(is_base, "Y", "")
        part["anl01fl"] = np.where(change.notna(), "Y", "")
        parts.append(part)
    adeff = pd.concat(parts, ignore_index=True)
    return adeff.loc[:, list(ADEFF_COLUMNS)]


def build_flow(adsl: pd.DataFrame, clean: CleanResult, trial: TrialConfig) -> pd.DataFrame:
    """CONSORT counts by arm and in total.

    Returns
    -------
    DataFrame
        Columns :data:`FLOW_COLUMNS`. Stages: randomized, with_baseline, attended (one row per
        visit), completed, withdrawn, withdrawn_after (one row per visit: last visit attended
        before withdrawing), never_attended, withdrawal_reason (one row per reason, in
        ``reason``, when the trial records reasons), itt (analysed as randomized).
    """
    attended = _attended(clean.visits, trial)
    # Attendance by arm and visit in one pass: each attended row gets its subject's arm.
    arm_of = adsl.set_index("subject_id")["arm"]
    at = pd.DataFrame({"visit": attended["visit"].to_numpy(),
                       "arm": arm_of.reindex(attended["subject_id"]).to_numpy()})  # fmt: skip
    at = at.loc[at["arm"].notna()]  # only randomized subjects are counted
    by_arm = at.groupby(["arm", "visit"]).size()
    by_visit = at.groupby("visit").size()
    rows: list[tuple[str, str, str, int, str]] = []
    for arm in [*trial.arms, "total"]:
        sub = adsl if arm == "total" else adsl.loc[adsl["arm"] == arm]
        rows.append(("randomized", "", arm, len(sub), ""))
        rows.append(("with_baseline", "", arm, int((sub["has_baseline"] == "Y").sum()), ""))
        for v in trial.visits:
            n = by_visit.get(v.label, 0) if arm == "total" else by_arm.get((arm, v.label), 0)
            rows.append(("attended", v.label, arm, int(n), ""))
        rows.append(("completed", "", arm, int((sub["completed"] == "Y").sum()), ""))
        rows.append(("withdrawn", "", arm, int((sub["withdrawn"] == "Y").sum()), ""))
        gone = sub.loc[sub["withdrawn"] == "Y"]
        for v in trial.visits[:-1]:
            rows.append(
                ("withdrawn_after", v.label, arm, int((gone["last_visit"] == v.label).sum()), "")
            )
        rows.append(("never_attended", "", arm, int(gone["last_visit"].isna().sum()), ""))
        if "withdrawal_reason" in gone:
            reasons = gone["withdrawal_reason"].value_counts(sort=False).sort_index()
            rows += [("withdrawal_reason", "", arm, int(k), str(r)) for r, k in reasons.items()]
        rows.append(("itt", "", arm, int((sub["itt"] == "Y").sum()), ""))
    if clean.screening is not None:
        rows = _enrolment(clean.screening, len(adsl)) + rows
    return pd.DataFrame(rows, columns=list(FLOW_COLUMNS))


def _enrolment(log: pd.DataFrame, randomized: int) -> list[tuple[str, str, str, int, str]]:
    """CONSORT enrolment: assessed = excluded + randomized; exclusions by reason."""
    excluded = log.loc[log["subject_id"].fillna("") == "", "reason"]
    reasons = excluded.value_counts().sort_index()
    rows = [
        ("assessed", "", "total", len(excluded) + randomized, ""),
        ("excluded", "", "total", len(excluded), ""),
    ]
    return rows + [("exclusion_reason", "", "total", int(k), str(r)) for r, k in reasons.items()]


def check_reconciliation(
    flow: pd.DataFrame, adsl: pd.DataFrame, adeff: pd.DataFrame, clean: CleanResult
) -> None:
    """Raise if the flow counts, ADSL and ADEFF disagree about who was randomized."""

    def count(stage: str, arm: str, visit: str = "") -> int:
        sel = (flow["stage"] == stage) & (flow["arm"] == arm) & (flow["visit"] == visit)
        return int(flow.loc[sel, "n"].sum())

    problems = []
    if len(adsl) != adsl["subject_id"].nunique() or len(adsl) != len(clean.subjects):
        problems.append("ADSL does not have exactly one row per randomized subject")
    if (
        not pd.Index(pd.unique(adeff["subject_id"]))
        .sort_values()
        .equals(pd.Index(adsl["subject_id"]).sort_values())
    ):
        problems.append("ADEFF and ADSL hold different subjects")
    arms = [a for a in flow["arm"].unique() if a != "total"]
    for stage in ("randomized", "completed", "withdrawn", "itt", "with_baseline"):
        if sum(count(stage, a) for a in arms) != count(stage, "total"):
            problems.append(f"{stage}: arms do not add up to the total")
    for arm in [*arms, "total"]:
        if count("completed", arm) + count("withdrawn", arm) != count("randomized", arm):
            problems.append(f"{arm}: completed + withdrawn != randomized")
        lost = flow.loc[(flow["stage"] == "withdrawn_after") & (flow["arm"] == arm), "n"].sum()
        reasons = flow.loc[(flow["stage"] == "withdrawal_reason") & (flow["arm"] == arm), "n"]
        if len(reasons) and reasons.sum() != count("withdrawn", arm):
            problems.append(f"{arm}: withdrawal reasons do not add up")
        if lost + count("never_attended", arm) != count("withdrawn", arm):
            problems.append(f"{arm}: withdrawals by visit do not add up")
    reasons = flow.loc[flow["stage"] == "exclusion_reason", "n"]
    if (flow["stage"] == "assessed").any() and (
        count("assessed", "total") != count("excluded", "total") + count("randomized", "total")
        or reasons.sum() != count("excluded", "total")
    ):
        problems.append("enrolment: assessed != excluded + randomized")
    if count("randomized", "total") != len(adsl):
        problems.append("randomized total differs from ADSL")
    if problems:
        raise TrialflowError(
            "the derived datasets do not reconcile: " + "; ".join(problems),
            fix="this is a bug in trialflow; please report it with the trial description",
        )


def derive(clean: CleanResult, trial: TrialConfig) -> Derived:
    """Build ADSL, ADEFF and the CONSORT flow, and check that they reconcile."""
    adsl = build_adsl(clean, trial)
    adeff = build_adeff(clean, trial)
    flow = build_flow(adsl, clean, trial)
    check_reconciliation(flow, adsl, adeff, clean)
    return Derived(adsl=adsl, adeff=adeff, flow=flow)


def read_analysis_datasets(
    *, adsl: str, adeff: str, meta: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``adsl.csv`` and ``adeff.csv`` with categorical covariates kept as text."""
    types: dict[str, str] = json.loads(Path(meta).read_text(encoding="utf-8"))["covariate_types"]
    text_columns = {c: TEXT for c, kind in types.items() if kind == "categorical"}
    adsl_frame = pd.read_csv(
        adsl,
        dtype={"subject_id": TEXT, "arm": TEXT, "last_visit": TEXT, **text_columns},
        keep_default_na=False,
        na_values=[""],
    )
    adeff_frame = pd.read_csv(
        adeff,
        dtype={c: TEXT for c in ("subject_id", "arm", "outcome", "visit", "ablfl", "anl01fl")},
        keep_default_na=False,
        na_values=[""],
    )
    return adsl_frame, adeff_frame
