"""Wide visits files: one row per subject, one column per outcome and visit.

A trial description with ``data.layout: wide`` names the visit columns of its visits file with
a pattern (``data.wide_columns``, e.g. ``"{outcome}_{visit}"``), where ``{outcome}`` is an
outcome's column as the description maps it and ``{visit}`` a visit label. :func:`to_long`
reshapes such a file into the long table cleaning expects (identifier, visit label, one column
per outcome) before any cleaning, so that cleaning, queries and CONSORT counts are those of the
same data in a long file. Every long row keeps the spreadsheet row of its subject in the wide
file, and every outcome cell the wide column it came from, so that queries name a cell the user
can find.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import NoReturn

import pandas as pd

from trialflow.config import TrialConfig, did_you_mean
from trialflow.errors import DataError
from trialflow.io import RawTable

OUTCOME, VISIT = "{outcome}", "{visit}"
_PLACEHOLDER = re.compile(r"\{outcome\}|\{visit\}")
# How close (difflib ratio) a part of a column name must be to an outcome column or a visit
# label for the column to look like a misnamed visit column ("week13" for "week12").
_CLOSE = 0.75
_SHOWN = 8  # expected names shown in a message

Pair = tuple[str, str]  # (outcome column, visit label)


def _key(name: str) -> str:
    """Column names compare in any case and spacing, as :meth:`RawTable.column_named` does."""
    return " ".join(str(name).lower().split())


def wide_name(pattern: str, column: str, label: str) -> str:
    """The wide column of outcome ``column`` at visit ``label`` under ``pattern``."""
    return _PLACEHOLDER.sub(lambda m: column if m.group() == OUTCOME else label, pattern)


def expected_names(trial: TrialConfig) -> dict[str, list[Pair]]:
    """Every wide column the trial can have (as :func:`_key`) and the pairs it reads as."""
    names: dict[str, list[Pair]] = {}
    for o in trial.outcomes:
        for v in trial.visits:
            name = _key(wide_name(trial.wide_columns, o.column, v.label))
            names.setdefault(name, []).append((o.column, v.label))
    return names


def _splits(pattern: str, name: str) -> list[Pair]:
    """Every way ``name`` reads as ``pattern`` with any text in place of the placeholders."""
    prefix, middle, suffix = _PLACEHOLDER.split(_key(pattern))
    outcome_first = pattern.index(OUTCOME) < pattern.index(VISIT)
    key = _key(name)
    if not (key.startswith(prefix) and key.endswith(suffix)):
        return []
    core = key[len(prefix) : len(key) - len(suffix)]
    found: list[Pair] = []
    for i in range(1, len(core)):
        rest = core[i:]
        if rest.startswith(middle) and len(rest) > len(middle):
            first, second = core[:i], rest[len(middle) :]
            found.append((first, second) if outcome_first else (second, first))
    return found


def _holds(column: str, names: Sequence[str]) -> bool:
    """Whether the words of ``column`` contain one of ``names`` ("HbA1c week 6": "HbA1c")."""
    words = f" {' '.join(re.findall(r'[a-z0-9]+', column.lower()))} "
    return any(f" {' '.join(re.findall(r'[a-z0-9]+', n.lower()))} " in words for n in names)


def _close(text: str, known: Sequence[str]) -> bool:
    return bool(difflib.get_close_matches(text, [_key(k) for k in known], n=1, cutoff=_CLOSE))


def looks_like_visit_column(trial: TrialConfig, column: str) -> bool:
    """Whether a column that matches no outcome and visit looks meant to (a misspelling).

    It does when its words contain an outcome column or a visit label ("HbA1c week 6" for
    "HbA1c_week6"), or when it reads as the pattern with an outcome part or a visit part close
    to a known one ("Pian VAS_wk12").
    """
    columns = [o.column for o in trial.outcomes]
    labels = list(trial.visit_labels)
    if _holds(column, [*columns, *labels]):
        return True
    return any(
        _close(outcome, columns) or _close(visit, labels)
        for outcome, visit in _splits(trial.wide_columns, column)
    )


def _all_names(trial: TrialConfig) -> list[str]:
    """The wide columns of every outcome at every visit, as the pattern spells them."""
    return [
        wide_name(trial.wide_columns, o.column, v.label)
        for o in trial.outcomes
        for v in trial.visits
    ]


def _expected_text(trial: TrialConfig) -> str:
    names = _all_names(trial)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(map(repr, names[:_SHOWN])) + more


def match_columns(trial: TrialConfig, table: RawTable) -> dict[str, Pair]:
    """The wide file's visit columns, each with the (outcome column, visit label) it holds.

    Raises
    ------
    DataError
        A column that reads two ways, two columns that read as the same outcome and visit, a
        column that looks like a misnamed visit column, or an outcome with no column at all.
    """
    expected = expected_names(trial)
    ignored = {_key(c) for c in (trial.subject_id_column, *trial.drop_columns)}
    matched: dict[str, Pair] = {}
    ambiguous, unmatched = [], []
    for column in map(str, table.frame.columns):
        if _key(column) in ignored:
            continue
        readings = expected.get(_key(column), [])
        if len(readings) > 1:
            ambiguous.append(
                f"{column!r} reads as "
                + " and as ".join(f"outcome {o!r} at visit {v!r}" for o, v in readings)
            )
        elif readings:
            matched[column] = readings[0]
        elif looks_like_visit_column(trial, column):
            unmatched.append(column)
    if ambiguous:
        _fail(
            table,
            trial,
            f"ambiguous column name(s): {'; '.join(ambiguous)}",
            "rename the outcome columns or visit labels so that each column reads one way",
        )
    if unmatched:
        names = _all_names(trial)
        hints = "; ".join(f"{c!r} ({did_you_mean(c, names)})" for c in unmatched[:_SHOWN])
        if len(unmatched) > _SHOWN:
            hints += f"; and {len(unmatched) - _SHOWN} more"
        _fail(
            table,
            trial,
            f"column(s) that match no outcome and visit: {hints}",
            "rename them, or list them under drop_columns: to ignore them",
        )
    _check_complete(table, trial, matched)
    return matched


def _fail(table: RawTable, trial: TrialConfig, problem: str, fix: str) -> NoReturn:
    raise DataError(
        f"{problem}. The wide visits file's columns are named {trial.wide_columns!r} "
        f"(data.wide_columns): expected {_expected_text(trial)}",
        file=table.path,
        row=1,
        fix=f"{fix} (outcome columns: {', '.join(repr(o.column) for o in trial.outcomes)}; "
        f"visit labels: {', '.join(map(repr, trial.visit_labels))})",
    )


def _check_complete(table: RawTable, trial: TrialConfig, matched: dict[str, Pair]) -> None:
    """Each outcome and visit is read from one column at most; each outcome has a column."""
    seen: dict[Pair, str] = {}
    for column, pair in matched.items():
        if pair in seen:
            _fail(
                table,
                trial,
                f"columns {seen[pair]!r} and {column!r} both hold outcome "
                f"{pair[0]!r} at visit {pair[1]!r}",
                "keep one of them",
            )
        seen[pair] = column
    absent = [o.column for o in trial.outcomes if o.column not in {p[0] for p in seen}]
    if absent:
        _fail(
            table,
            trial,
            f"no column of outcome(s) {', '.join(map(repr, absent))}",
            "name the columns as data.wide_columns says, or correct the outcome's column:",
        )


def to_long(trial: TrialConfig, table: RawTable) -> RawTable:
    """A wide visits file as the long table cleaning reads, one row per subject and visit.

    The long table has the wide file's other columns (identifier, arm, ...), the visit column
    and one column per outcome. A visit whose outcome cells are all empty is no row, as in a
    long file without that visit. Rows are in file order, then visit order; each keeps its
    subject's row of the wide file, each outcome cell the wide column it came from.
    """
    visit_col = trial.visit_column
    if table.column_named(visit_col) is not None:
        raise DataError(
            f"the wide visits file has a {visit_col!r} column; in a wide file the visit is in "
            "the column names",
            file=table.path,
            row=1,
            column=str(table.column_named(visit_col)),
            fix="remove that column, or set data.layout: long if the file has one row per "
            "subject and visit",
        )
    matched = match_columns(trial, table)
    column_of = {pair: column for column, pair in matched.items()}
    carried = [c for c in table.frame.columns if c not in matched]
    outcomes = [o.column for o in trial.outcomes]
    parts = []
    labels = trial.visit_labels
    for label in labels:
        part = table.frame[carried].copy()
        part[visit_col] = label
        for o in outcomes:
            column = column_of.get((o, label))
            part[o] = table.frame[column] if column is not None else ""
        parts.append(part)
    # Sorting the wide positions keeps, within a subject's row, the visits in their order.
    both = pd.concat(parts).sort_index(kind="stable")
    both = both.loc[both[outcomes].apply(lambda x: x.str.strip() != "").any(axis=1)]
    # A cell of an outcome without a column at a visit is empty, hence never queried.
    origins = {
        o: both[visit_col]
        .map({v: column_of.get((o, v), wide_name(trial.wide_columns, o, v)) for v in labels})
        .tolist()
        for o in outcomes
    }
    return RawTable(
        frame=both.reset_index(drop=True),
        path=table.path,
        notes=table.notes,
        lines=[table.row_number(int(p)) for p in both.index],
        origins=origins,
        labels=table.labels,
        row_kind=table.row_kind,
    )


def wide_hint(trial: TrialConfig, columns: Sequence[str]) -> str | None:
    """For a long-layout visits file without a visit column: the fix if it looks wide.

    It looks wide when some column names hold a visit label (``pain_week12``).
    """
    wide = [str(c) for c in columns if _holds(str(c), trial.visit_labels)]
    if not wide:
        return None
    return (
        f"columns such as {', '.join(map(repr, wide[:3]))} look like one column per outcome "
        "and visit (a wide file): declare it under data: with layout: wide and wide_columns: "
        '"{outcome}_{visit}" (the pattern of your column names; see config/README.md)'
    )
