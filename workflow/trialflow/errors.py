"""The one exception hierarchy of trialflow.

Every error a user can cause derives from :class:`TrialflowError`; its message says
what is wrong and what to do. Location details (file, row or observation, column) are
attributes so that callers can render them consistently.
"""

from __future__ import annotations


class TrialflowError(Exception):
    """Base class of every error raised on purpose by trialflow."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
        row_kind: str = "row",
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.column = column
        self.fix = fix
        # "row" of a spreadsheet or text file, "observation" of a SAS, SPSS or Stata file.
        self.row_kind = row_kind
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.row is not None:
            where.append(f"{self.row_kind} {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = self.message
        if where:
            text = f"{', '.join(where)}: {text}"
        if self.fix:
            text = f"{text}\n  What to do: {self.fix}"
        return text


class ConfigError(TrialflowError):
    """The trial description (YAML) is invalid or inconsistent with the data."""


class DataError(TrialflowError):
    """An input data file cannot be used as it is."""


class ModelError(TrialflowError):
    """A statistical model cannot be specified or fitted with the data given."""
