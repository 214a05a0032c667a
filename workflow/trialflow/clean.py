"""Cleaning: raw exports in, one tidy visits table, one subjects table and a query log out.

Nothing is lost silently. A problem in a cell that the analysis can live with (text in a
numeric cell, a value outside the outcome's range, an exact duplicate row, a label written
with other case or spacing) becomes a row of the query log, with the file, the spreadsheet row,
the column, the value, the rule and the action taken. A problem that would change the meaning
of the data (an unknown arm or visit, conflicting duplicates, a subject with visits but no
randomization record, columns of direct personal data) stops the run with a
:class:`~trialflow.errors.DataError` naming file, rows, column and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trialflow.config import TrialConfig, did_you_mean
from trialflow.errors import DataError
from trialflow.harms import AE_COLUMNS
from trialflow.io import (
    TEXT,
    RawTable,
    on_distinct,
    read_csv,
    read_table,
    write_csv,
    write_json,
    write_table,
)
from trialflow.paths import data_file
from trialflow.screening import SCREENING_COLUMNS
from trialflow.wide import to_long, wide_hint

QUERY_COLUMNS: tuple[str, ...] = ("file", "row", "column", "value", "rule", "action", "subject_id")

# ASCII digits only: other Unicode digits (full-width ones, say) are text, hence a query.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:[,' ][0-9]{3})+(?:\.[0-9]+)?")

# Column names (normalised: lower case, non-alphanumerics as "_") that hold direct personal
# data. Matching is on the whole name so that e.g. "Visit Name" is not mistaken for a name.
PERSONAL_DATA_NAMES: frozenset[str] = frozenset(
    {
        "name", "full_name", "fullname", "first_name", "firstname", "last_name", "lastname",
        "surname", "given_name", "family_name", "forename", "patient_name", "subject_name",
        "participant_name", "initials", "dob", "date_of_birth", "birth_date", "birthdate",
        "birthday", "email", "e_mail", "email_address", "mail", "phone", "telephone",
        "phone_number", "telephone_number", "mobile", "mobile_phone", "cell_phone", "tel",
        "address", "street", "street_address", "home_address", "postcode", "post_code",
        "postal_code", "zip", "zip_code", "zipcode", "ssn", "social_security_number",
        "nhs_number", "mrn", "medical_record_number", "national_id", "passport",
    }
)  # fmt: skip


@dataclass
class CleanResult:
    """Output of :func:`clean_trial`.

    Attributes
    ----------
    visits
        One row per subject and visit: subject_id, arm, visit, visit_index, week, one column per
        outcome (named by the outcome's ``name``, float, NaN when missing), source_row.
    subjects
        One row per randomized subject: subject_id, arm, source_row, withdrawal_reason (when the
        trial description names that column) and the covariates (columns named as in the file).
    queries
        One row per data problem, columns :data:`QUERY_COLUMNS`.
    covariate_types
        ``{covariate: "numeric" | "categorical"}``.
    """

    visits: pd.DataFrame
    subjects: pd.DataFrame
    queries: pd.DataFrame
    covariate_types: dict[str, str]
    adverse_events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=AE_COLUMNS))
    screening: pd.DataFrame | None = None  # None: the trial names no screening log


class _Log:
    """Collects data queries."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        table: RawTable,
        positions: Iterable[int],
        column: str,
        values: Iterable[Any],
        rule: str,
        action: str,
        subject_ids: Iterable[Any],
    ) -> None:
        for pos, value, sid in zip(positions, values, subject_ids, strict=True):
            file, row = table.cell_source(column, int(pos))
            self.rows.append(
                {
                    "file": file,
                    "row": row,
                    "column": table.file_column(column, int(pos)),
                    "value": "" if value is None else str(value),
                    "rule": rule,
                    "action": action,
                    "subject_id": "" if sid is None else str(sid),
                }
            )

    def add_file_level(self, path: str, column: str, rule: str, action: str) -> None:
        """A query about a whole column or file (no single row)."""
        self.rows.append(
            {
                "file": path,
                "row": None,
                "column": column,
                "value": "",
                "rule": rule,
                "action": action,
                "subject_id": "",
            }
        )

    def frame(self) -> pd.DataFrame:
        out = pd.DataFrame(self.rows, columns=list(QUERY_COLUMNS))
        # A cell of a wide visits file stands for several long rows (its subject's identifier,
        # say): the same query of it is one query.
        out = out.drop_duplicates(ignore_index=True)
        return out.astype({"row": "Int64"}) if len(out) else out


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _rows_text(table: RawTable, positions: Sequence[int], limit: int = 10) -> str:
    """ "rows 3, 5" (or "observations 2, 4"), at most ``limit`` numbers; each row once (the
    rows of a wide visits file repeat, one per visit)."""
    rows = list(dict.fromkeys(table.row_number(int(p)) for p in positions))
    nums = [str(r) for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{table.row_kind}s " + ", ".join(nums) + more


# Words that make a column name personal data wherever they stand in it ("Phone No.",
# "E-mail address", "DOB (dd/mm/yyyy)"), and words that do so only next to "name".
_PERSONAL_TOKENS = frozenset(
    {
        "email", "mail", "phone", "telephone", "mobile", "cellphone", "tel", "dob", "birthdate",
        "birthday", "address", "street", "postcode", "postal", "zip", "zipcode", "ssn", "nhs",
        "mrn", "passport", "surname", "forename", "firstname", "lastname", "fullname",
        "initials",
    }
)  # fmt: skip
_NAME_QUALIFIERS = frozenset(
    {"first", "last", "full", "given", "family", "patient", "subject", "participant", "middle"}
)


def looks_personal(column: str) -> bool:
    """Whether a column name suggests direct personal data (names, birth dates, contact)."""
    norm = _norm(column)
    if norm in PERSONAL_DATA_NAMES:
        return True
    tokens = set(norm.replace("e_mail", "email").split("_"))
    if tokens & _PERSONAL_TOKENS:
        return True
    if {"date", "birth"} <= tokens or {"social", "security"} <= tokens:
        return True
    return "name" in tokens and bool(tokens & _NAME_QUALIFIERS)


def check_personal_data(table: RawTable, trial: TrialConfig, protected: Sequence[str]) -> None:
    """Refuse columns that look like direct personal data unless listed in ``drop_columns``."""
    flagged = [
        c
        for c in table.frame.columns
        if looks_personal(c) and c not in trial.drop_columns and c not in protected
    ]
    if flagged:
        raise DataError(
            f"column(s) {', '.join(map(repr, flagged))} look like direct personal data "
            "(names, dates of birth, e-mail, phone, address)",
            file=table.path,
            column=flagged[0],
            fix="remove them from the export, or list them under drop_columns: in "
            f"{trial.source} to have them dropped on reading",
        )


def _require_columns(
    table: RawTable, columns: Sequence[str], what: str, trial: TrialConfig
) -> None:
    present = list(table.frame.columns)
    for col in columns:
        if col not in present:
            raise DataError(
                f"{what} column {col!r} not found ({did_you_mean(col, present)})",
                file=table.path,
                row=table.header_row,
                column=col,
                fix=f"rename the column in the file or correct {trial.source}",
            )


def _require_visit_column(table: RawTable, trial: TrialConfig) -> None:
    """The visit column, or for a file that looks wide, a fix saying how to declare it."""
    if trial.visit_column not in table.frame.columns:
        hint = wide_hint(trial, list(table.frame.columns))
        if hint is not None:
            raise DataError(
                f"visit column {trial.visit_column!r} not found",
                file=table.path,
                row=1,
                column=trial.visit_column,
                fix=hint,
            )
    _require_columns(table, [trial.visit_column], "visit", trial)


def _strip(values: pd.Series) -> pd.Series:
    """The cells without leading and trailing white space."""
    return on_distinct(values, lambda text: text.str.strip())


def _matches(values: pd.Series, pattern: re.Pattern[str]) -> pd.Series:
    """Whether each cell matches ``pattern`` whole."""
    return on_distinct(values, lambda text: text.str.fullmatch(pattern.pattern)).astype(bool)


def _trim(table: RawTable, column: str, log: _Log, ids: pd.Series) -> pd.Series:
    raw = table.frame[column]
    trimmed = _strip(raw)
    changed = raw.index[raw != trimmed]
    log.add(
        table,
        changed,
        column,
        raw.loc[changed].map(repr),
        "label_whitespace",
        "leading/trailing spaces removed",
        ids.loc[changed],
    )
    return trimmed


def _require_nonempty(table: RawTable, values: pd.Series, column: str, what: str, fix: str) -> None:
    empty = list(values.index[values == ""])
    if len(empty):
        raise DataError(
            f"{len(empty)} row(s) have no {what} ({_rows_text(table, empty)})",
            file=table.path,
            row=table.row_number(int(empty[0])),
            row_kind=table.row_kind,
            column=column,
            fix=fix,
        )


def _match_labels(
    table: RawTable,
    values: pd.Series,
    column: str,
    known: Sequence[str],
    what: str,
    log: _Log,
    ids: pd.Series,
    weeks: dict[float, str] | None = None,
) -> pd.Series:
    """Map labels to the configured ones: exact, then case/space-insensitive (with a query).

    ``values`` and ``ids`` are indexed by the 0-based position of the row in the file.
    """
    out = values.copy()
    known_set = set(known)
    by_norm = {" ".join(k.lower().split()): k for k in known}
    unknown: dict[str, list[int]] = {}
    for label in pd.unique(values[~values.isin(known_set)]):
        positions = list(values.index[values == label])
        target = by_norm.get(" ".join(str(label).lower().split()))
        rule = "label_case"
        if target is None and weeks is not None and _NUMBER.fullmatch(str(label)):
            target = weeks.get(float(label))
            rule = "visit_as_week"
        if target is None:
            unknown[str(label)] = list(positions)
            continue
        out.loc[positions] = target
        log.add(
            table,
            positions,
            column,
            values.loc[positions],
            rule,
            f"read as {what} {target!r}",
            ids.loc[positions],
        )
    if unknown:
        parts = [
            f"{short(label)!r} ({_rows_text(table, pos, 5)}; {did_you_mean(label, known)})"
            for label, pos in list(unknown.items())[:10]
        ]
        if len(unknown) > 10:
            parts.append(f"and {len(unknown) - 10} more")
        first = next(iter(unknown.values()))[0]
        raise DataError(
            f"unknown {what} label(s): {'; '.join(parts)}. Known {what}s: "
            + ", ".join(map(repr, known)),
            file=table.path,
            row=table.row_number(first),
            row_kind=table.row_kind,
            column=column,
            fix=f"correct the labels in the file, or the {what}s in the trial description",
        )
    return out


def parse_numbers(
    table: RawTable,
    column: str,
    log: _Log,
    ids: pd.Series,
    *,
    missing_values: Sequence[str] = (),
    value_range: tuple[float, float] | None = None,
) -> pd.Series:
    """Parse a column strictly as numbers; anything else is a query and a missing value.

    Empty cells and the configured missing-value codes are missing without a query.
    Values outside ``value_range`` (inclusive) are set missing with a query.
    """
    text = _strip(table.number_text(column))
    empty = (text == "") | text.isin(set(missing_values))
    is_number = _matches(text, _NUMBER)
    bad = text.index[~empty & ~is_number]
    for pos in bad:
        value = text.loc[pos]
        if _DECIMAL_COMMA.fullmatch(value) and not _THOUSANDS.fullmatch(value):
            rule, action = "decimal_comma", "set missing; write decimals with a point (12.5)"
        elif _THOUSANDS.fullmatch(value):
            rule, action = "thousands_separator", "set missing; write numbers without separators"
        else:
            rule, action = "not_a_number", "set missing"
        log.add(table, [pos], column, [value], rule, action, [ids.loc[pos]])
    values = on_distinct(
        text.where(is_number & ~empty), lambda t: pd.to_numeric(t, errors="coerce")
    ).astype("float64")
    # A number written with a huge exponent (1e999) overflows to infinity: not a usable value.
    huge = values.index[np.isinf(values.to_numpy())]
    log.add(table, huge, column, text.loc[huge], "not_finite",
            "set missing (too large to be a number)", ids.loc[huge])  # fmt: skip
    values.loc[huge] = np.nan
    if value_range is not None:
        lo, hi = value_range
        out = values.index[(values < lo) | (values > hi)]
        log.add(
            table,
            out,
            column,
            text.loc[out],
            "out_of_range",
            f"set missing (allowed range {lo:g} to {hi:g})",
            ids.loc[out],
        )
        values.loc[out] = np.nan
    return values


def _drop_exact_duplicates(
    table: RawTable, frame: pd.DataFrame, key_column: str, log: _Log, ids: pd.Series
) -> pd.DataFrame:
    """Drop rows identical to an earlier row, each with a query naming the row it repeats.

    Linear in the number of rows: rows are grouped by their content once.
    """
    dup = frame.duplicated(keep="first")
    if dup.any():
        group = frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup()
        first = (
            pd.Series(frame.index, index=frame.index).groupby(group.to_numpy()).transform("first")
        )
        for pos in frame.index[dup]:
            kept = f"{table.row_kind} {table.row_number(int(first.loc[pos]))}"
            log.add(table, [pos], key_column, [ids.loc[pos]], "exact_duplicate",
                    f"row dropped (identical to {kept})", [ids.loc[pos]])  # fmt: skip
    return frame.loc[~dup]


def _raise_conflicts(table: RawTable, frame: pd.DataFrame, keys: list[str], what: str) -> None:
    conflict = frame.duplicated(subset=keys, keep=False).to_numpy()
    if conflict.any():
        positions = frame.index[conflict]
        first = frame.loc[positions[0], keys].tolist()
        raise DataError(
            f"{conflict.sum()} rows share the same {what} but differ in other cells "
            f"(first: {', '.join(map(str, first))}; {_rows_text(table, list(positions))})",
            file=table.path,
            row=table.row_number(int(positions[0])),
            row_kind=table.row_kind,
            column=keys[0],
            fix="keep one row per " + what + " (correct or remove the others)",
        )


# A number followed by a unit: "62 yrs", "1.75 m", "80kg", "12 %".
_NUMBER_WITH_UNIT = re.compile(
    r"[-+]?(\d+(\.\d*)?|\.\d+)\s*[A-Za-z%\u00b5\u00b0/][A-Za-z%/.\u00b2]*"
)


def _refuse_units(table: RawTable, column: str, text: pd.Series, declared: str | None) -> None:
    """Stop when most cells of a covariate are numbers written with a unit.

    Read as text they would make one factor level per distinct number; read as numbers every
    cell would be a query. Either way the analysis would be wrong without a word.
    """
    values = _strip(text)
    values = values[values != ""]
    with_unit = _matches(values, _NUMBER_WITH_UNIT)
    if declared == "categorical" or not len(values) or with_unit.mean() < 0.5:
        return
    first = values.index[with_unit.to_numpy()][0]
    raise DataError(
        f"covariate {column!r} holds numbers with a unit (e.g. {values.loc[first]!r} in "
        f"{int(with_unit.sum())} of {len(values)} cells)",
        file=table.path,
        row=table.row_number(int(first)),
        row_kind=table.row_kind,
        column=column,
        fix="write the numbers alone (put the unit in the column name, e.g. 'Age (years)'), "
        f"or declare {{name: {column}, type: categorical}} if the text is a category",
    )


def _covariate_type(declared: str | None, text: pd.Series, missing: Sequence[str]) -> str:
    if declared is not None:
        return declared
    values = _strip(text)
    values = values[(values != "") & ~values.isin(set(missing))]
    # Mostly numbers: a numeric column with a few bad cells (each becomes a query), not a
    # factor with one level per distinct number.
    if len(values) and _matches(values, _NUMBER).mean() >= 0.5:
        return "numeric"
    return "categorical"


def clean_trial(trial: TrialConfig, subjects: RawTable, visits: RawTable) -> CleanResult:
    """Clean one trial's raw subjects and visits tables.

    Parameters
    ----------
    trial
        The validated trial description.
    subjects, visits
        Raw tables from :func:`trialflow.io.read_table`.

    Returns
    -------
    CleanResult
        Clean tables and the query log. Subjects appear in the order of the subjects file,
        visits in subject order then visit order.

    Raises
    ------
    DataError
        For problems that cannot be resolved by a query (see the module docstring).
    """
    log = _Log()
    for table in (subjects, visits):
        log.rows.extend(table.notes)
    sid_col, arm_col, visit_col = trial.subject_id_column, trial.arm_column, trial.visit_column
    protected = [sid_col, arm_col, *[c.name for c in trial.covariates]]
    check_personal_data(subjects, trial, protected)
    check_personal_data(visits, trial, [sid_col, visit_col, *[o.column for o in trial.outcomes]])
    _require_columns(subjects, [sid_col], "subject identifier", trial)
    _require_columns(subjects, [arm_col], "arm", trial)
    _require_columns(subjects, [c.name for c in trial.covariates], "covariate", trial)
    if trial.withdrawal_reason_column:
        _require_columns(subjects, [trial.withdrawal_reason_column], "withdrawal reason", trial)
    per_protocol = (trial.sensitivity.get("per_protocol") or {}).get("column")
    if per_protocol:
        _require_columns(subjects, [per_protocol], "per-protocol", trial)
    _require_columns(visits, [sid_col], "subject identifier", trial)
    _require_visit_column(visits, trial)
    _require_columns(visits, [o.column for o in trial.outcomes], "outcome", trial)
    for table in (subjects, visits):
        dropped = [c for c in trial.drop_columns if c in table.frame.columns]
        table.frame = table.frame.drop(columns=dropped)

    # -- subjects ---------------------------------------------------------------------------
    # Series stay indexed by the row's 0-based position in the file, so every query and
    # error can name the file row even after rows are dropped.
    s_ids = _trim(subjects, sid_col, log, _strip(subjects.frame[sid_col]))
    _require_nonempty(
        subjects, s_ids, sid_col, "subject identifier", "give every subject an identifier"
    )
    arm_text = _trim(subjects, arm_col, log, s_ids)
    s_frame = subjects.frame.copy()
    s_frame[sid_col] = s_ids
    s_frame[arm_col] = arm_text
    s_frame = _drop_exact_duplicates(subjects, s_frame, sid_col, log, s_ids)
    _raise_conflicts(subjects, s_frame, [sid_col], "subject identifier")
    kept = s_frame.index
    no_arm = list(kept[arm_text.loc[kept] == ""])
    if no_arm:
        raise DataError(
            f"{len(no_arm)} subject(s) have no arm: "
            + ", ".join(map(str, s_ids.loc[no_arm].tolist()[:10])),
            file=subjects.path,
            row=subjects.row_number(int(no_arm[0])),
            row_kind=subjects.row_kind,
            column=arm_col,
            fix="every randomized subject needs the arm they were allocated to",
        )
    arms = _match_labels(
        subjects, arm_text.loc[kept], arm_col, trial.arms, "arm", log, s_ids.loc[kept]
    )
    subjects_out = pd.DataFrame(
        {
            "subject_id": s_ids.loc[kept].to_numpy(),
            "arm": arms.to_numpy(),
            "source_row": subjects.row_numbers(kept),
        }
    )
    if trial.withdrawal_reason_column:
        reasons = subjects.frame[trial.withdrawal_reason_column].loc[kept].str.strip()
        subjects_out["withdrawal_reason"] = reasons.map(lambda x: " ".join(x.split())).to_numpy()
    if per_protocol and per_protocol not in subjects_out:
        # Carried as read; derive turns it into the per_protocol flag of ADSL.
        subjects_out[per_protocol] = subjects.frame[per_protocol].loc[kept].str.strip().to_numpy()
    covariate_types: dict[str, str] = {}
    for cov in trial.covariates:
        _refuse_units(subjects, cov.name, subjects.frame[cov.name].loc[kept], cov.type)
        kind = _covariate_type(cov.type, subjects.frame[cov.name].loc[kept], trial.missing_values)
        covariate_types[cov.name] = kind
        if kind == "numeric":
            values = parse_numbers(
                subjects, cov.name, log, s_ids, missing_values=trial.missing_values
            ).loc[kept]
            subjects_out[cov.name] = values.to_numpy()
            missing = values.isna()
            _note_few_values(values, subjects.path, cov.name, log, declared=cov.type is not None)
        else:
            text = subjects.frame[cov.name].loc[kept].str.strip()
            missing = (text == "") | text.isin(set(trial.missing_values))
            text = _merge_spellings(subjects, text.where(~missing, ""), cov.name, log, s_ids)
            subjects_out[cov.name] = text.where(~missing, None).to_numpy()
        positions = kept[missing.to_numpy()]
        log.add(
            subjects,
            positions,
            cov.name,
            subjects.frame[cov.name].loc[positions],
            "missing_covariate",
            "missing; subject left out of covariate-adjusted models",
            s_ids.loc[positions],
        )
    _drop_queries_of_dropped_rows(log, subjects, kept)
    _check_arms(subjects_out, subjects.path, arm_col, trial, log)
    _check_covariates(subjects_out, subjects.path, trial)

    # -- visits -----------------------------------------------------------------------------
    v_ids = _trim(visits, sid_col, log, _strip(visits.frame[sid_col]))
    _require_nonempty(
        visits, v_ids, sid_col, "subject identifier", "give every row a subject identifier"
    )
    visit_text = _trim(visits, visit_col, log, v_ids)
    _require_nonempty(visits, visit_text, visit_col, "visit label", "give every row a visit label")
    weeks = {v.week: v.label for v in trial.visits}
    visit_labels = _match_labels(
        visits, visit_text, visit_col, trial.visit_labels, "visit", log, v_ids, weeks
    )
    known_ids = set(subjects_out["subject_id"])
    stray = list(v_ids.index[~v_ids.isin(known_ids)])
    if stray:
        missing_ids = list(dict.fromkeys(v_ids.loc[stray].tolist()))
        raise DataError(
            f"{len(missing_ids)} subject(s) have visits but are not in the subjects file "
            f"{subjects.path}: {', '.join(short(i, 40) for i in missing_ids[:10])}"
            + (" ..." if len(missing_ids) > 10 else ""),
            file=visits.path,
            row=visits.row_number(int(stray[0])),
            row_kind=visits.row_kind,
            column=sid_col,
            fix="add them to the subjects file with their arm, or correct the identifiers",
        )
    if arm_col in visits.frame.columns and arm_col != visit_col:
        _check_visit_arms(visits, arm_col, v_ids, subjects_out, trial)

    v_frame = visits.frame.copy()
    v_frame[sid_col] = v_ids
    v_frame[visit_col] = visit_labels
    for o in trial.outcomes:
        v_frame[o.column] = _strip(v_frame[o.column])
    v_frame = _drop_exact_duplicates(visits, v_frame, sid_col, log, v_ids)
    _raise_conflicts(visits, v_frame, [sid_col, visit_col], "subject and visit")
    kept_v = v_frame.index

    subject_at, visit_at = grid_places(
        subjects_out["subject_id"], v_ids.loc[kept_v], visit_labels.loc[kept_v], trial
    )
    out = pd.DataFrame(
        {
            "subject_id": v_ids.loc[kept_v].to_numpy(),
            "arm": subjects_out["arm"].to_numpy()[subject_at],
            "visit": visit_labels.loc[kept_v].to_numpy(),
        }
    )
    out["visit_index"] = np.array([v.index for v in trial.visits], dtype=np.int64)[visit_at]
    out["week"] = np.array([v.week for v in trial.visits], dtype=np.float64)[visit_at]
    for o in trial.outcomes:
        values = parse_numbers(
            visits,
            o.column,
            log,
            v_ids,
            missing_values=trial.missing_values,
            value_range=(o.range_min, o.range_max),
        )
        out[o.name] = values.loc[kept_v].to_numpy()
    out["source_row"] = visits.row_numbers(kept_v)
    _drop_queries_of_dropped_rows(log, visits, kept_v)
    # Subject order of the subjects file, then visit order (a stable sort).
    out = out.take(np.lexsort((out["visit_index"].to_numpy(), subject_at))).reset_index(drop=True)
    _check_outcomes(out, visits.path, trial, log)
    _check_baselines(out, subjects_out, subjects, visits.path, visit_col, trial, log)
    queries = log.frame()
    if len(queries):
        queries = queries.sort_values(
            ["file", "row", "column"], kind="stable", na_position="first"
        ).reset_index(drop=True)
    return CleanResult(
        visits=out, subjects=subjects_out, queries=queries, covariate_types=covariate_types
    )


def grid_places(
    subject_order: pd.Series, ids: pd.Series, visits: pd.Series, trial: TrialConfig
) -> tuple[np.ndarray, np.ndarray]:
    """For visit rows with subject ``ids`` at ``visits``: each row's subject as its position in
    ``subject_order`` (the subjects file's order) and its visit as its place among the trial's
    visits; -1 where there is none."""
    subject_at = pd.Index(subject_order).get_indexer(pd.Index(ids))
    visit_at = pd.Index([v.label for v in trial.visits]).get_indexer(pd.Index(visits))
    return subject_at, visit_at


def short(label: object, limit: int = 60) -> str:
    """A label shortened for messages (a pasted paragraph must not flood the terminal)."""
    text = str(label)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_arms(
    subjects: pd.DataFrame, path: str, arm_col: str, trial: TrialConfig, log: _Log
) -> None:
    counts = subjects["arm"].value_counts()
    for arm in trial.arms:
        n = int(counts.get(arm, 0))
        if n == 0:
            sizes = ", ".join(f"{short(a)!r}: {int(counts.get(a, 0))}" for a in trial.arms)
            raise DataError(
                f"no randomized subject is in arm {short(arm)!r}; a two-arm comparison needs "
                f"both arms ({sizes})",
                file=path,
                column=arm_col,
                fix="check the arm labels in the file and under arms: in the trial description",
            )
        if n == 1:
            log.add_file_level(
                path,
                arm_col,
                "small_arm",
                f"only 1 subject in arm {short(arm)!r}: variances within the arm cannot be "
                "estimated; some analyses will report 'not estimable'",
            )


def _merge_spellings(
    table: RawTable, text: pd.Series, column: str, log: _Log, ids: pd.Series
) -> pd.Series:
    """Levels that differ only in case or spacing ("F", "f ") become the commonest spelling."""
    present = text[text != ""]
    if present.empty:
        return text
    counts = present.value_counts()
    # Each distinct spelling once: its key, then the commonest spelling of each key.
    key_of = {x: " ".join(x.lower().split()) for x in counts.index}
    canonical: dict[str, str] = {}
    for spelling in sorted(counts.index, key=lambda x: (-counts[x], x)):
        canonical.setdefault(key_of[spelling], spelling)
    target = on_distinct(present, lambda x: x.map(lambda v: canonical[key_of[v]]))
    changed = target.index[target != present]
    for label in pd.unique(present.loc[changed]):
        positions = list(changed[present.loc[changed] == label])
        log.add(
            table,
            positions,
            column,
            present.loc[positions],
            "label_case",
            f"read as level {target.loc[positions[0]]!r}",
            ids.loc[positions],
        )
    out = text.copy()
    out.loc[target.index] = target
    return out


def _note_few_values(
    values: pd.Series, path: str, column: str, log: _Log, *, declared: bool
) -> None:
    """A detected-numeric covariate with a handful of repeated whole numbers may be codes."""
    present = values.dropna()
    distinct = present.unique()
    whole = len(distinct) and all(float(v).is_integer() for v in distinct)
    repeated = len(present) >= 2 * len(distinct)  # each value seen twice on average
    if not declared and whole and repeated and 2 < len(distinct) <= 5:
        log.add_file_level(
            path,
            column,
            "numeric_few_values",
            f"only {len(distinct)} distinct whole numbers: analysed as a number (a linear term); "
            f"if these are codes, declare {{name: {column}, type: categorical}}",
        )


def _check_covariates(subjects: pd.DataFrame, path: str, trial: TrialConfig) -> None:
    for cov in trial.covariates:
        values = subjects[cov.name].dropna()
        if values.empty:
            raise DataError(
                f"covariate {short(cov.name)!r} has no value for any subject",
                file=path,
                column=cov.name,
                fix="fill it in, or remove it from covariates: in the trial description",
            )
        if values.nunique() == 1:
            raise DataError(
                f"covariate {short(cov.name)!r} has the same value ({short(values.iloc[0])!r}) "
                "for every subject, so it cannot be adjusted for",
                file=path,
                column=cov.name,
                fix="remove it from covariates: in the trial description",
            )


def _check_outcomes(visits: pd.DataFrame, path: str, trial: TrialConfig, log: _Log) -> None:
    for o in trial.outcomes:
        values = visits[o.name].dropna()
        if values.empty:
            log.add_file_level(
                path, o.column, "outcome_empty", "no value at any visit: not analysed"
            )
        elif values.nunique() == 1:
            log.add_file_level(
                path,
                o.column,
                "outcome_constant",
                f"every value is {values.iloc[0]:g}: models of this outcome are not estimable",
            )


def _check_baselines(
    visits: pd.DataFrame,
    subjects: pd.DataFrame,
    table: RawTable,
    visits_path: str,
    visit_col: str,
    trial: TrialConfig,
    log: _Log,
) -> None:
    names = [o.name for o in trial.outcomes]
    at_base = visits.loc[
        (visits["visit"] == trial.baseline_visit) & visits[names].notna().any(axis=1), "subject_id"
    ]
    if at_base.empty:
        raise DataError(
            f"no subject has a baseline visit ({trial.baseline_visit!r} with any outcome value)",
            file=visits_path,
            column=visit_col,
            fix="check baseline_visit in the trial description against the visit labels in the "
            "file",
        )
    missing = subjects.loc[~subjects["subject_id"].isin(set(at_base))]
    for sid, row in zip(missing["subject_id"], missing["source_row"], strict=True):
        log.rows.append(
            {
                "file": table.path,
                "row": int(row),
                "column": trial.subject_id_column,
                "value": str(sid),
                "rule": "no_baseline",
                "action": "no baseline visit: left out of change-from-baseline analyses; counted "
                "in the ITT population",
                "subject_id": str(sid),
            }
        )


def _drop_queries_of_dropped_rows(log: _Log, table: RawTable, kept: pd.Index) -> None:
    """A dropped duplicate row keeps only its drop query, so nothing is counted twice."""
    # Rows of the file that are not rows of this table (a REDCap export's rows read for the
    # subjects table only, say) keep their queries.
    gone = np.ones(len(table.frame), dtype=bool)
    gone[np.asarray(kept, dtype=np.int64)] = False
    dropped = set(table.row_numbers(np.flatnonzero(gone)).tolist())
    # A row of the file may hold cells of several table rows (a REDCap export): not dropped.
    dropped -= set(table.row_numbers(kept).tolist())
    log.rows = [
        r
        for r in log.rows
        if r["file"] != table.path
        or r["rule"] in ("exact_duplicate", "encoding")
        or r["row"] is None  # about a whole column, not a row
        or r["row"] not in dropped
    ]


def _check_visit_arms(
    visits: RawTable, arm_col: str, ids: pd.Series, subjects: pd.DataFrame, trial: TrialConfig
) -> None:
    arm_of = dict(zip(subjects["subject_id"], subjects["arm"], strict=True))
    given = _strip(visits.frame[arm_col])
    expected = ids.map(arm_of)
    norm = {" ".join(a.lower().split()): a for a in trial.arms}
    given_norm = given.map(lambda x: norm.get(" ".join(str(x).lower().split()), x))
    bad = list(given.index[(given != "") & (given_norm != expected)])
    if bad:
        pos = int(bad[0])
        raise DataError(
            f"subject {ids.loc[pos]} is in arm {expected.loc[pos]!r} in the subjects file but "
            f"{given.loc[pos]!r} here ({len(bad)} row(s) disagree)",
            file=visits.path,
            row=visits.row_number(pos),
            row_kind=visits.row_kind,
            column=arm_col,
            fix="the subjects file is authoritative for the allocated arm; correct one of them",
        )


def read_and_clean(trial: TrialConfig, root: str | Path = ".") -> CleanResult:
    """Read the trial's raw files (paths relative to ``root``) and clean them."""
    if trial.sdtm is not None:
        from trialflow.sdtm import clean_sdtm

        return _with_extra_files(clean_sdtm(trial, root), trial, root)
    if trial.data_format == "redcap":
        from trialflow.redcap import read_redcap

        result = clean_trial(trial, *read_redcap(trial, root))
    else:
        result = clean_trial(trial, *_read_tables(trial, root))
    return _with_extra_files(result, trial, root)


def _read_tables(trial: TrialConfig, root: str | Path) -> tuple[RawTable, RawTable]:
    """The subjects and visits files of the trial, a wide visits file reshaped to long."""
    tables = {}
    for key, configured, sheet in (
        ("subjects", trial.subjects_path, trial.subjects_sheet),
        ("visits", trial.visits_path, trial.visits_sheet),
    ):
        table = read_table(data_file(trial, key, root), sheet=sheet)
        # Messages and queries name the file as the trial description does.
        table.path = configured
        for note in table.notes:
            note["file"] = configured
        tables[key] = table
    if trial.visits_layout == "wide":
        tables["visits"] = to_long(trial, tables["visits"])
    return tables["subjects"], tables["visits"]


def _with_extra_files(result: CleanResult, trial: TrialConfig, root: str | Path) -> CleanResult:
    """The cleaning result with the trial's adverse events and screening log, if it has them."""
    if trial.adverse_events_path:
        result = _with_adverse_events(result, trial, data_file(trial, "adverse_events", root))
    if trial.screening_path:
        result = _with_screening(result, trial, data_file(trial, "screening", root))
    return result


def _extra_table(path: Path, configured: str) -> tuple[RawTable, _Log]:
    """An optional file of the trial (screening log, adverse events), read, with the queries
    raised while reading it in a log of its own."""
    table = read_table(path)
    table.path = configured
    log = _Log()
    for note in table.notes:
        log.rows.append({**note, "file": configured, "subject_id": ""})
    return table, log


def _with_screening(result: CleanResult, trial: TrialConfig, path: Path) -> CleanResult:
    """The cleaning result with the screening log cleaned and its queries added."""
    from trialflow.screening import clean_screening

    table, log = _extra_table(path, str(trial.screening_path))
    log_rows = clean_screening(trial, table, result.subjects["subject_id"], log.add_file_level)
    queries = pd.concat([result.queries, log.frame()], ignore_index=True)
    return replace(result, queries=queries, screening=log_rows)


def _with_adverse_events(result: CleanResult, trial: TrialConfig, path: Path) -> CleanResult:
    """The cleaning result with the adverse-events file cleaned and its queries added."""
    from trialflow.harms import clean_adverse_events

    table, log = _extra_table(path, str(trial.adverse_events_path))
    arm_of = result.subjects.set_index("subject_id")["arm"]
    events = clean_adverse_events(trial, table, arm_of, log.add)
    queries = pd.concat([result.queries, log.frame()], ignore_index=True)
    return replace(result, queries=queries, adverse_events=events)


def write_clean(
    result: CleanResult,
    *,
    visits: str,
    subjects: str,
    queries: str,
    meta: str,
    adverse_events: str | None = None,
    screening: str | None = None,
) -> None:
    """Write the cleaning outputs (see :func:`load_clean` for the reverse)."""
    if adverse_events is not None:
        write_csv(result.adverse_events, adverse_events)
    if screening is not None:
        log = result.screening
        write_csv(log if log is not None else pd.DataFrame(columns=SCREENING_COLUMNS), screening)
    write_csv(result.visits, visits)
    write_csv(result.subjects, subjects)
    write_table(result.queries, queries)
    write_json({"covariate_types": result.covariate_types}, meta)


def load_clean(
    *, visits: str, subjects: str, queries: str, meta: str, screening: str | None = None
) -> CleanResult:
    """Read the files written by :func:`write_clean` back into a :class:`CleanResult`."""
    covariate_types: dict[str, str] = json.loads(Path(meta).read_text(encoding="utf-8"))[
        "covariate_types"
    ]
    categorical = {c: TEXT for c, kind in covariate_types.items() if kind == "categorical"}
    subj = pd.read_csv(
        subjects,
        dtype={"subject_id": TEXT, "arm": TEXT, **categorical},
        keep_default_na=False,
        na_values=[""],
    )
    log = None
    if screening is not None:
        log = pd.read_csv(screening, dtype=str, keep_default_na=False)
        log = None if log.empty else log
    return CleanResult(
        visits=read_csv(visits),
        subjects=subj,
        queries=pd.read_csv(queries, dtype=str, keep_default_na=False),
        covariate_types=covariate_types,
        screening=log,
    )
