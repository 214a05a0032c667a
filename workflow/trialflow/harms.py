"""Harms (CONSORT): the adverse-events file, cleaned like the others, and its table by arm.

The trial description may name an adverse-events file (``data.adverse_events``): one row per
event with the subject identifier (the subjects file's column), ``term``, and optionally
``severity``, ``serious`` and ``related`` (yes/no) and ``week`` (of onset). Cleaning follows the
rules of the other files: a subject not in the subjects file stops the run with file, row and
column; a missing term, a week that is not a number or is negative, and a yes/no cell that is
neither become data queries. The table counts, per arm, the participants with at least one
event, with a serious and with a related event, and each term (participants and events); the
denominator is everyone randomized to the arm.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from trialflow.config import TrialConfig
from trialflow.errors import DataError
from trialflow.io import RawTable

__all__ = ["AE_COLUMNS", "adverse_event_table", "clean_adverse_events"]

AE_COLUMNS: tuple[str, ...] = (
    "subject_id", "arm", "term", "severity", "serious", "related", "week", "source_row",
)  # fmt: skip
NO_TERM = "term not recorded"
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}

Logger = Callable[[RawTable, list[int], str, list[str], str, str, list[str]], None]


def _yes_no(table: RawTable, column: str | None, ids: pd.Series, log: Logger) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=table.frame.index, dtype="boolean")
    text = table.frame[column].str.strip().str.lower()
    bad = text.index[(text != "") & ~text.isin(_YES | _NO)]
    log(table, list(bad), column, list(table.frame[column].loc[bad]), "not_yes_no",
        "set missing (write yes or no)", list(ids.loc[bad]))  # fmt: skip
    out = pd.Series(pd.NA, index=text.index, dtype="boolean")
    out[text.isin(_YES)] = True
    out[text.isin(_NO)] = False
    return out


def _week(table: RawTable, column: str | None, ids: pd.Series, log: Logger) -> pd.Series:
    if column is None:
        return pd.Series(np.nan, index=table.frame.index)
    text = table.frame[column].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = text.index[(text != "") & (values.isna() | (values < 0) | ~np.isfinite(values))]
    log(table, list(bad), column, list(text.loc[bad]), "bad_week",
        "set missing (the week of onset is a number of weeks from randomisation, >= 0)",
        list(ids.loc[bad]))  # fmt: skip
    return values.where(~values.index.isin(bad))


def clean_adverse_events(
    trial: TrialConfig, table: RawTable, arm_of: pd.Series, log: Logger
) -> pd.DataFrame:
    """The cleaned events (columns :data:`AE_COLUMNS`); problems go to ``log``.

    Raises
    ------
    DataError
        The subject or term column is missing, or a subject is not in the subjects file.
    """
    sid_col, term_col = table.required_columns(
        [trial.subject_id_column, "term"],
        "the adverse-events file",
        f"name the columns {trial.subject_id_column!r} and 'term' (and optionally severity, "
        "serious, related, week)",
    )
    ids = table.frame[sid_col].str.strip()
    unknown = ids.index[~ids.isin(arm_of.index)]
    if len(unknown):
        raise DataError(
            f"subject {ids.loc[unknown[0]]!r} of the adverse-events file is not in the subjects "
            f"file ({len(unknown)} row(s))",
            file=table.path,
            row=table.row_number(int(unknown[0])),
            row_kind=table.row_kind,
            column=sid_col,
            fix="correct the identifier, or add the subject to the subjects file",
        )
    term = table.frame[term_col].str.strip()
    empty = term.index[term == ""]
    log(table, list(empty), term_col, [""] * len(empty), "missing_term",
        f"kept as '{NO_TERM}'", list(ids.loc[empty]))  # fmt: skip
    severity_col = table.column_named("severity")
    return pd.DataFrame(
        {
            "subject_id": ids,
            "arm": ids.map(arm_of),
            "term": term.where(term != "", NO_TERM),
            "severity": table.frame[severity_col].str.strip() if severity_col else "",
            "serious": _yes_no(table, table.column_named("serious"), ids, log),
            "related": _yes_no(table, table.column_named("related"), ids, log),
            "week": _week(table, table.column_named("week"), ids, log),
            "source_row": [table.row_number(int(i)) for i in table.frame.index],
        },
        columns=list(AE_COLUMNS),
    ).reset_index(drop=True)


def _count(events: pd.DataFrame, arm: str, randomized: int) -> tuple[str, int]:
    rows = events.loc[events["arm"] == arm]
    people = rows["subject_id"].nunique()
    share = f" ({100 * people / randomized:.0f}%)" if randomized else ""
    return f"{people}{share}", len(rows)


def adverse_event_table(
    events: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig
) -> pd.DataFrame:
    """Participants with events (n, % of randomized) and events, by arm and in total."""
    randomized = {arm: int((adsl["arm"] == arm).sum()) for arm in trial.arms}
    groups: list[tuple[str, str, pd.DataFrame]] = [
        ("any", "Any adverse event", events),
        ("serious", "Serious adverse event", events.loc[events["serious"].fillna(False)]),
        ("related", "Related adverse event", events.loc[events["related"].fillna(False)]),
    ]
    totals = events.groupby("term")["subject_id"].nunique().sort_values(ascending=False)
    groups += [("term", str(t), events.loc[events["term"] == t]) for t in totals.index]
    rows = []
    for category, label, part in groups:
        row: dict[str, object] = {"category": category, "event": label}
        for arm in trial.arms:
            people, count = _count(part, arm, randomized[arm])
            row[f"{arm}: participants"] = people
            row[f"{arm}: events"] = count
        row["total: participants"] = int(part["subject_id"].nunique())
        row["total: events"] = len(part)
        rows.append(row)
    return pd.DataFrame(rows)
