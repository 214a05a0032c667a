"""The screening log (CONSORT enrolment): who was assessed for eligibility, and why not randomized.

The trial description may name a screening log (``data.screening``): one row per person
screened, with the subject identifier (the subjects file's column) filled for those randomized
and ``reason`` saying why the others were not. An identifier that is not in the subjects file
stops the run with file, row and column; a randomized subject missing from the log is a data
query (they were evidently assessed, and are counted so); an exclusion without a reason is
counted as "reason not recorded".
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from trialflow.config import TrialConfig
from trialflow.errors import DataError
from trialflow.io import RawTable

__all__ = ["SCREENING_COLUMNS", "clean_screening"]

SCREENING_COLUMNS: tuple[str, ...] = ("subject_id", "reason", "source_row")
NO_REASON = "reason not recorded"


def clean_screening(
    trial: TrialConfig,
    table: RawTable,
    randomized: pd.Series,
    file_query: Callable[[str, str, str, str], None],
) -> pd.DataFrame:
    """The cleaned log (columns :data:`SCREENING_COLUMNS`); ``subject_id`` is empty for the
    people not randomized. Randomized subjects missing from the log get one file-level query.

    Raises
    ------
    DataError
        The subject or reason column is missing, or an identifier is not a randomized subject.
    """
    sid_col, reason_col = table.required_columns(
        [trial.subject_id_column, "reason"],
        "the screening log",
        f"one row per person screened: {trial.subject_id_column!r} (filled for those "
        "randomized) and 'reason' (why the others were not)",
    )
    ids = table.frame[sid_col].str.strip()
    unknown = ids.index[(ids != "") & ~ids.isin(set(randomized))]
    if len(unknown):
        raise DataError(
            f"subject {ids.loc[unknown[0]]!r} of the screening log is not in the subjects file",
            file=table.path,
            row=table.row_number(int(unknown[0])),
            row_kind=table.row_kind,
            column=sid_col,
            fix="correct the identifier, or leave it empty for a person not randomized",
        )
    missing = sorted(set(randomized) - set(ids))
    if missing:
        file_query(
            table.path,
            sid_col,
            "not_in_screening_log",
            f"{len(missing)} randomized subject(s) not in the log, counted as assessed "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})",
        )
    reason = table.frame[reason_col].str.strip()
    reason = reason.where((reason != "") | (ids != ""), NO_REASON).where(ids == "", "")
    return pd.DataFrame(
        {
            "subject_id": ids,
            "reason": reason,
            "source_row": [table.row_number(int(i)) for i in table.frame.index],
        },
        columns=list(SCREENING_COLUMNS),
    ).reset_index(drop=True)
