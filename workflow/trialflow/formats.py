"""Reading SAS, SPSS and Stata data files as text cells, the way cleaning expects them.

A statistical package stores numbers, codes with value labels, missing-value codes and dates
rather than text. They become the text a spreadsheet export of the same data would hold, so
that :mod:`trialflow.clean` treats every format alike:

- a value with a value label reads as the label ("exercise" for arm code 1); the stored
  numbers are kept as well (:attr:`StatTable.codes`), for columns read as numbers (outcomes);
- user-defined missing codes (SPSS) and special missing values (SAS and Stata ``.A`` to
  ``.Z``) read as empty cells, exactly like an empty cell of a CSV file;
- numbers read as their shortest exact decimal text (``6.4``, ``54``; a Stata ``float``
  column at single precision, so it does not show as ``6.400000095367432``);
- dates and times read as ISO 8601 text.

Variable labels are returned for display; row numbers of these files are observation numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyreadstat

from trialflow.errors import DataError

# Extension: (what the file is, the program that writes it, reader, reader options).
_READERS: dict[str, tuple[str, str, Callable[..., Any], dict[str, Any]]] = {
    ".xpt": ("a SAS transport file", "SAS", pyreadstat.read_xport, {}),
    ".sas7bdat": ("a SAS data set", "SAS", pyreadstat.read_sas7bdat, {}),
    # Read user-defined missing codes as values, then blank them from the metadata, so a code
    # is missing whatever its value label says.
    ".sav": ("an SPSS data file", "SPSS", pyreadstat.read_sav, {"user_missing": True}),
    ".zsav": ("an SPSS data file", "SPSS", pyreadstat.read_sav, {"user_missing": True}),
    ".dta": ("a Stata data file", "Stata", pyreadstat.read_dta, {}),
}
STATISTICAL: frozenset[str] = frozenset(_READERS)

# Storage types held at single precision: their numbers are shown as float32 values.
_SINGLE = {"float"}


@dataclass
class StatTable:
    """A SAS, SPSS or Stata file as text.

    Attributes
    ----------
    frame
        Every cell as text ("" for missing), value labels applied.
    labels
        ``{column: variable label}`` for the columns that have one.
    codes
        ``{column: cells as text without value labels}`` for the columns with value labels.
    """

    frame: pd.DataFrame
    labels: dict[str, str]
    codes: dict[str, pd.Series]


def read_statistical(path: Path, name: str) -> StatTable:
    """Read a ``.xpt``, ``.sas7bdat``, ``.sav``, ``.zsav`` or ``.dta`` file (by extension).

    Raises
    ------
    DataError
        The file cannot be read as the format its extension names.
    """
    kind, program, reader, options = _READERS[path.suffix.lower()]
    try:
        data, meta = reader(str(path), **options)
    except Exception as exc:  # pyreadstat raises its own and OS errors for a bad file
        raise DataError(
            f"cannot be read as {kind} ({exc})",
            file=name,
            fix=f"check that the file is {kind} (the extension names the format) and export "
            f"it again from {program}, or export the data as .csv",
        ) from None
    data = _blank_user_missing(data, getattr(meta, "missing_ranges", None) or {})
    types = getattr(meta, "readstat_variable_types", None) or {}
    value_labels = getattr(meta, "variable_value_labels", None) or {}
    frame: dict[str, pd.Series] = {}
    codes: dict[str, pd.Series] = {}
    for column in data.columns:
        text = _column_text(data[column], single=types.get(column) in _SINGLE)
        labels = value_labels.get(column)
        if labels:
            codes[str(column)] = text
            text = _labelled(data[column], labels, text)
        frame[str(column)] = text
    names = list(getattr(meta, "column_names", None) or [])
    column_labels = list(getattr(meta, "column_labels", None) or [])
    labels = {str(c): str(lab) for c, lab in zip(names, column_labels, strict=False) if lab}
    return StatTable(frame=pd.DataFrame(frame, dtype=object), labels=labels, codes=codes)


def _column_text(values: pd.Series, *, single: bool) -> pd.Series:
    """A column's cells as text; a numeric column without the per-cell type checks."""
    if pd.api.types.is_integer_dtype(values):
        cells = [str(x) for x in values.tolist()]
    elif pd.api.types.is_float_dtype(values):
        cells = [number_text(x, single=single) for x in values.to_numpy(dtype="float64").tolist()]
    else:
        cells = [cell_text(x, single=single) for x in values]
    return pd.Series(cells, index=values.index, dtype=object)


def _blank_user_missing(
    data: pd.DataFrame, ranges: dict[str, list[dict[str, Any]]]
) -> pd.DataFrame:
    """The data with SPSS user-defined missing codes (discrete values or ranges) as missing."""
    out = data.copy()
    for column, spans in ranges.items():
        if column not in out.columns:
            continue
        values = out[column]
        numbers = pd.to_numeric(values, errors="coerce")
        missing = pd.Series(False, index=values.index)
        for span in spans:
            lo, hi = span["lo"], span["hi"]
            if isinstance(lo, str):
                missing |= values.astype(object).map(
                    lambda x, lo=lo: str(x).rstrip() == lo.rstrip()
                )
            else:
                missing |= (numbers >= lo) & (numbers <= hi)
        out[column] = values.where(~missing)  # NaN: kept numeric when it was
    return out


def _labelled(values: pd.Series, labels: dict[Any, str], text: pd.Series) -> pd.Series:
    """Cells with a value label replaced by the label; others keep their text."""

    def label(value: Any, fallback: str) -> str:
        if fallback == "":
            return ""
        found = labels.get(value)
        return fallback if found is None else str(found)

    return pd.Series(
        [label(v, t) for v, t in zip(values, text, strict=True)], index=values.index, dtype=object
    )


def cell_text(value: Any, *, single: bool = False) -> str:
    """One value as the text a spreadsheet export would hold.

    Numbers as their shortest exact decimal (``6.4``, ``54``, ``0.00001``); ``single``
    rounds to single precision first, for columns stored as 4-byte floats. Dates and times
    as ISO 8601 (``2024-03-01``, ``2024-03-01 08:30:00``); missing values as "".
    """
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    return number_text(float(value), single=single)


def number_text(number: float, *, single: bool = False) -> str:
    """A number as its shortest exact decimal text ("" for NaN); see :func:`cell_text`."""
    if number != number:  # NaN: a missing number
        return ""
    if single:
        return np.format_float_positional(np.float32(number), trim="-")
    if number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    # repr is the shortest text that reads back as the same double; it is written without
    # an exponent (which a spreadsheet would show) only when that is short.
    text = repr(number)
    return text if "e" not in text else np.format_float_positional(number, trim="-")
