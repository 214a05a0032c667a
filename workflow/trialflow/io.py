"""Reading raw trial exports and writing outputs, byte for byte reproducibly.

Raw files are read with every cell as text so that parsing (numbers, labels, missing codes)
happens in one place, :mod:`trialflow.clean`, where each problem becomes a data query.
Row numbers follow the spreadsheet convention: the header is row 1, the first data row is 2;
in SAS, SPSS and Stata files they are observation numbers (the first record is 1).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trialflow.errors import DataError
from trialflow.formats import STATISTICAL, read_statistical

DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".tab": "\t"}
EXCEL = {".xlsx", ".xlsm"}
FIRST_DATA_ROW = 2


@dataclass
class RawTable:
    """A raw input file as text cells.

    Attributes
    ----------
    frame
        Every cell as a string ("" for empty), columns as in the file's header.
    path
        The file as named in the trial description.
    notes
        Data queries raised while reading (encoding fallback and the like), as dicts with the
        keys of :data:`trialflow.clean.QUERY_COLUMNS`.
    labels
        Variable labels of a SAS, SPSS or Stata file, ``{column: label}``, for display.
    codes
        For columns with value labels, the stored codes as text (``frame`` holds the labels);
        :meth:`number_text` reads numbers from them.
    row_kind
        What :meth:`row_number` counts and messages call it: ``"row"`` (spreadsheet row,
        header = 1) or ``"observation"`` (SAS, SPSS and Stata files, first record = 1).
    """

    frame: pd.DataFrame
    path: str
    notes: list[dict[str, Any]] = field(default_factory=list)
    # Row number in the file (header = 1) of each data row; blank lines are skipped when
    # reading, so positions and file rows differ after one.
    lines: list[int] | None = None
    # For a table reshaped from a wide file (trialflow.wide): per column, the file's column
    # each row's cell came from, so that queries name the cell a user can find.
    origins: dict[str, list[str]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    codes: dict[str, pd.Series] = field(default_factory=dict)
    row_kind: str = "row"
    # For a table assembled from cells of several rows (a REDCap export, trialflow.redcap):
    # per column, the row number of each row's cell.
    cell_lines: dict[str, list[int]] | None = None
    # For a table assembled from several files (trialflow.sdtm): per column, the file and row
    # each row's cell came from, so that queries name that file's row.
    sources: dict[str, list[tuple[str, int]]] | None = None

    @property
    def header_row(self) -> int | None:
        """Row number of the header (1), or None when the file has no header row."""
        return 1 if self.row_kind == "row" else None

    def number_text(self, column: str) -> pd.Series:
        """The column's cells as text for reading numbers: stored codes, not value labels."""
        return self.codes.get(column, self.frame[column])

    def column_named(self, name: str) -> str | None:
        """The file's column called ``name`` in any case (and spacing around it), or None."""
        for column in self.frame.columns:
            if str(column).strip().lower() == name.strip().lower():
                return str(column)
        return None

    def required_columns(self, names: list[str], what: str, fix: str) -> list[str]:
        """The file's columns called ``names`` (any case); a DataError naming the first absent.

        ``what`` names the file in the message ("the screening log").
        """
        found = [self.column_named(name) for name in names]
        for name, column in zip(names, found, strict=True):
            if column is None:
                raise DataError(
                    f"{what} has no {name!r} column", file=self.path, row=self.header_row, fix=fix
                )
        return [str(c) for c in found]

    def row_number(self, position: int) -> int:
        """Row number (spreadsheet row or observation, see ``row_kind``) of the data row at
        0-based ``position``."""
        if self.lines is not None:
            return self.lines[position]
        return position + FIRST_DATA_ROW

    def row_numbers(self, positions: Sequence[int] | np.ndarray | pd.Index) -> np.ndarray:
        """Row numbers of the data rows at 0-based ``positions`` (see :meth:`row_number`)."""
        at = np.asarray(positions, dtype=np.int64)
        if self.lines is not None:
            return np.asarray(self.lines, dtype=np.int64)[at]
        return at + FIRST_DATA_ROW

    def cell_row(self, column: str, position: int) -> int:
        """Row number of the cell of ``column`` in the data row at ``position``."""
        if self.cell_lines is not None and column in self.cell_lines:
            return self.cell_lines[column][position]
        return self.row_number(position)

    def cell_source(self, column: str, position: int) -> tuple[str, int]:
        """The file and row number holding the cell of ``column`` in the data row at
        ``position`` (this table's file and row unless it was assembled from several)."""
        if self.sources is not None and column in self.sources:
            return self.sources[column][position]
        return self.path, self.cell_row(column, position)

    def file_column(self, column: str, position: int) -> str:
        """The file's column holding the cell of ``column`` in the data row at ``position``."""
        if self.origins is None or column not in self.origins:
            return column
        return self.origins[column][position]


def _utf16(raw: bytes) -> str | None:
    """The codec of a UTF-16 file (Excel's "Unicode Text" export), or None."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    head = raw[:4000]
    # Without a byte-order mark: ASCII text in UTF-16 has a NUL in every other byte.
    if len(head) >= 4 and head[1::2].count(0) > 0.4 * len(head) / 2:
        return "utf-16-le"
    if len(head) >= 4 and head[0::2].count(0) > 0.4 * len(head) / 2:
        return "utf-16-be"
    return None


def _decode(raw: bytes, path: str, notes: list[dict[str, Any]]) -> str:
    codec = _utf16(raw)
    if codec is not None:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            raise DataError(
                f"the file looks like UTF-16 ({codec}) but cannot be decoded as such",
                file=path,
                fix="save it again as CSV UTF-8 (comma-delimited)",
            ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        notes.append(
            {
                "file": path,
                "row": line,
                "column": "",
                "value": "",
                "rule": "encoding",
                "action": "file is not UTF-8; read as Latin-1 (re-save it as UTF-8 to silence)",
            }
        )
        return raw.decode("latin-1")


def _check_header(header: list[str], path: str) -> None:
    if not header or all(not h.strip() for h in header):
        raise DataError("the header row is empty", file=path, row=1, fix="add column names")
    stripped = [h.strip() for h in header]
    for i, h in enumerate(stripped):
        if not h:
            raise DataError(
                f"column {i + 1} has no name", file=path, row=1, fix="name every column"
            )
        if stripped.count(h) > 1:
            raise DataError(
                f"column name {h!r} appears {stripped.count(h)} times",
                file=path,
                row=1,
                column=h,
                fix="give every column a unique name",
            )


def read_table(path: str | Path, *, sheet: str | None = None) -> RawTable:
    """Read a data file (chosen by extension) with every cell as text.

    CSV, TSV and text files, Excel workbooks (.xlsx, .xlsm), and SAS (.xpt, .sas7bdat),
    SPSS (.sav, .zsav) and Stata (.dta) files (see :mod:`trialflow.formats`).

    Raises
    ------
    DataError
        Missing or empty file, no data rows, unknown extension, wrong delimiter or decimal
        mark, duplicated column names, an ambiguous workbook or an unreadable file.
    """
    p = Path(path)
    name = str(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise DataError(
            "file not found", file=name, fix="check the path under data: in the trial description"
        )
    if suffix not in DELIMITERS and suffix not in EXCEL and suffix not in STATISTICAL:
        raise DataError(
            f"unsupported file type {suffix or '(none)'!r}",
            file=name,
            fix="export the data as .csv, .tsv, .xlsx, .sav, .dta or .xpt",
        )
    notes: list[dict[str, Any]] = []
    if suffix in STATISTICAL:
        return _read_statistical(p, name)
    if suffix in EXCEL:
        frame, data_lines = _read_excel(p, name, sheet)
    else:
        frame, data_lines = _read_delimited(p, name, DELIMITERS[suffix], notes)
    _require_rows(frame, name)
    frame = frame.astype(object).where(frame.notna(), "")
    # A CSV's cells are text already; a workbook's may be numbers or dates.
    if suffix in EXCEL:
        frame = frame.map(lambda x: x if isinstance(x, str) else str(x))
    return RawTable(frame=frame.reset_index(drop=True), path=name, notes=notes, lines=data_lines)


def _require_rows(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise DataError(
            "the file has a header but no data rows", file=name, fix="export the data rows too"
        )


def _read_statistical(p: Path, name: str) -> RawTable:
    """A SAS, SPSS or Stata file; its rows are numbered as observations (first = 1)."""
    table = read_statistical(p, name)
    _check_header([str(c) for c in table.frame.columns], name)
    if table.frame.empty:
        raise DataError(
            "the file has variables but no observations", file=name, fix="export the data again"
        )
    n = len(table.frame)
    return RawTable(
        frame=table.frame.reset_index(drop=True),
        path=name,
        lines=list(range(1, n + 1)),
        labels=table.labels,
        codes={c: s.reset_index(drop=True) for c, s in table.codes.items()},
        row_kind="observation",
    )


def _records(text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """The non-blank records of delimited text and their row numbers (header = 1)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, lines = [], []
    # A record is one spreadsheet row, even when a quoted cell spans several lines.
    for number, record in enumerate(reader, start=1):
        # Not blank: some cell holds more than white space (joined, the test runs in C).
        if "".join(record).strip():
            rows.append(record)
            lines.append(number)
    return rows, lines


def on_distinct(values: pd.Series, func: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``func`` applied to each distinct cell once and spread back to the rows.

    A raw column repeats few values (labels at every visit, scores on a scale), and pandas'
    text methods handle text cell by cell in Python: on a large trial that was most of the
    time of reading and cleaning.
    """
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    done = func(pd.Series(distinct, dtype=object)).to_numpy()
    return pd.Series(done[codes], index=values.index, name=values.name)


def _plain_table(text: str, delimiter: str) -> tuple[pd.DataFrame, list[int]] | None:
    """The data rows and their row numbers of delimited text read by pandas' C parser, as
    :func:`_records` would read them; None for text that needs the csv module's reading.

    The C parser reads a large trial's file several times faster than a Python loop over its
    records. It is used where both readers are known to agree: a header of several named
    columns on the first line, no row longer than it, line ends ``\\n`` or ``\\r\\n``, no NUL
    character, and every line holding a quote a whole record that the csv module reads to
    the same cells.
    """
    first = text.split("\n", 1)[0]
    if "\x00" in text or text.count("\r") != text.count("\r\n") or delimiter not in first:
        return None
    try:
        cells = pd.read_csv(
            io.StringIO(text), sep=delimiter, header=None, dtype=object, na_filter=False,
            skip_blank_lines=False, engine="c",
        )  # fmt: skip
    except (pd.errors.ParserError, ValueError):
        return None
    if '"' in text and not _quoted_lines_agree(text, cells, delimiter):
        return None
    filled = np.zeros(len(cells), dtype=bool)
    for _, column in cells.items():
        filled |= on_distinct(column, lambda t: t.str.strip() != "").to_numpy(dtype=bool)
    keep = np.flatnonzero(filled)
    names = [str(h).strip() for h in cells.iloc[0]]
    if not len(keep) or keep[0] != 0 or not all(names) or len(set(names)) != len(names):
        return None  # the csv module's reading names the problem
    body = cells.iloc[keep[1:]].reset_index(drop=True)
    body.columns = names
    return body, (keep[1:] + 1).tolist()


def _quoted_lines_agree(text: str, cells: pd.DataFrame, delimiter: str) -> bool:
    """Every line of ``text`` is one row of ``cells``, and each line holding a quote is a
    whole record of the csv module with the same cells (padded to the header's width)."""
    lines = text.split("\n")
    if len(cells) != len(lines) - text.endswith("\n"):
        return False
    width = cells.shape[1]
    for i, line in enumerate(lines):
        if '"' not in line:
            continue
        # A record the csv module continues on the next line would swallow the sentinel.
        sentinel = io.StringIO(line.removesuffix("\r") + "\n\x01", newline="")
        records = list(csv.reader(sentinel, delimiter=delimiter))
        if len(records) != 2 or records[1] != ["\x01"] or len(records[0]) > width:
            return False
        if records[0] + [""] * (width - len(records[0])) != cells.iloc[i].tolist():
            return False
    return True


def _read_delimited(
    p: Path, name: str, delimiter: str, notes: list[dict[str, Any]]
) -> tuple[pd.DataFrame, list[int]]:
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError("the file is empty", file=name, fix="export the data again")
    text = _decode(raw, name, notes)
    plain = _plain_table(text, delimiter)
    if plain is not None:
        return plain
    rows, lines = _records(text, delimiter)
    header = rows[0] if rows else []
    if delimiter == "," and len(header) == 1 and ";" in header[0]:
        # A spreadsheet set to a European locale saves "CSV" with ";" and decimal commas.
        rows, lines = _records(text, ";")
        rows = _european_numbers(rows, name, notes)
        header = rows[0]
    elif len(header) == 1:
        _refuse_other_delimiter(header[0], delimiter, name)
    _check_header(header, name)
    width = len(header)
    for i, r in enumerate(rows[1:]):
        if len(r) > width and any(c.strip() for c in r[width:]):
            raise DataError(
                f"row has {len(r)} cells but the header has {width} columns",
                file=name,
                row=lines[i + 1],
                fix="quote cells that contain the delimiter, or remove the extra cells",
            )
    body = [r if len(r) == width else (r + [""] * width)[:width] for r in rows[1:]]
    return pd.DataFrame(body, columns=[h.strip() for h in header], dtype=object), lines[1:]


def _refuse_other_delimiter(header: str, delimiter: str, name: str) -> None:
    """A single-column header holding another delimiter: the file was saved differently."""
    for other, label in ((";", "semicolon"), ("\t", "tab"), (",", "comma"), ("|", "bar")):
        if other != delimiter and other in header:
            raise DataError(
                f"the header has a single column but contains {label}s: the file looks "
                f"{label}-separated, not {'tab' if delimiter == chr(9) else 'comma'}"
                "-separated",
                file=name,
                row=1,
                fix=f"save it as {'.tsv' if other == chr(9) else '.csv'} with "
                f"{'tabs' if other == chr(9) else 'commas'} between columns",
            )


_COMMA_DECIMAL = re.compile(r"[+-]?[0-9]+,([0-9]+)")
_POINT_DECIMAL = re.compile(r"[+-]?[0-9]*\.([0-9]+)")
SEMICOLON_FIX = (
    "save it again as CSV with commas between columns and decimal points (6.4), e.g. "
    "with the spreadsheet's language set to English, or as .xlsx"
)


def _european_numbers(
    rows: list[list[str]], name: str, notes: list[dict[str, Any]]
) -> list[list[str]]:
    """Rows of a ";"-separated file with decimal commas in number cells as points.

    Only cells that are a number written with a decimal comma change ("6,4" becomes "6.4");
    text stays as it is. A file whose decimal mark cannot be told (both marks, or only
    three-digit groups such as "1,500") stops with a DataError.
    """
    cells = [c.strip() for r in rows[1:] for c in r]
    commas = [m.group(1) for c in cells if (m := _COMMA_DECIMAL.fullmatch(c))]
    points = [m.group(1) for c in cells if (m := _POINT_DECIMAL.fullmatch(c))]
    marks = commas or points
    found = ""
    if commas and points:
        found = "it holds both decimal commas (6,4) and decimal points (6.4)"
    elif marks and all(len(d) == 3 for d in marks):
        example = next(
            c for c in cells if _COMMA_DECIMAL.fullmatch(c) or _POINT_DECIMAL.fullmatch(c)
        )
        found = f"every number with a mark, such as {example!r}, may be a decimal or thousands"
    if found:
        raise DataError(
            f"the file is semicolon-separated but its decimal mark is ambiguous: {found}",
            file=name,
            fix=SEMICOLON_FIX,
        )
    mark = "decimal commas (6,4 read as 6.4)" if commas else "decimal points"
    if not marks:
        mark = "whole numbers only"
    notes.append(
        {
            "file": name,
            "row": None,
            "column": "",
            "value": "",
            "rule": "semicolon_separated",
            "action": f"file is ';'-separated with {mark}; read as such (save it as CSV with "
            "commas and decimal points to silence)",
        }
    )
    if not commas:
        return rows
    return [rows[0], *([_point(c) for c in r] for r in rows[1:])]


def _point(cell: str) -> str:
    """A number cell with a decimal comma written with a point; any other cell unchanged."""
    return cell.strip().replace(",", ".") if _COMMA_DECIMAL.fullmatch(cell.strip()) else cell


def _chosen_sheet(sheets: list[str], sheet: str | None, name: str) -> str:
    """The sheet to read: the one named, or the only one."""
    if sheet is None:
        if len(sheets) > 1:
            raise DataError(
                f"the workbook has {len(sheets)} sheets ({', '.join(sheets)})",
                file=name,
                fix="name the one to read with data.subjects_sheet / data.visits_sheet",
            )
        return sheets[0]
    if sheet not in sheets:
        raise DataError(
            f"sheet {sheet!r} not found (sheets: {', '.join(sheets)})",
            file=name,
            fix="correct data.subjects_sheet / data.visits_sheet",
        )
    return sheet


def _read_excel(p: Path, name: str, sheet: str | None) -> tuple[pd.DataFrame, list[int]]:
    try:
        book = pd.ExcelFile(p, engine="openpyxl")
    except Exception as exc:  # openpyxl raises several unrelated types for a bad workbook
        raise DataError(
            f"cannot be read as an Excel workbook ({exc})",
            file=name,
            fix="open it in a spreadsheet program and save it again as .xlsx",
        ) from None
    with book:  # closed on every path, the errors below included
        sheet = _chosen_sheet([str(s) for s in book.sheet_names], sheet, name)
        frame = pd.read_excel(book, sheet_name=sheet, dtype=object, header=None)
    for (row, col), text in _unreadable_cells(p, sheet).items():
        if row in frame.index and col in frame.columns:
            frame.loc[row, col] = text
    frame = frame.dropna(how="all")  # the index keeps each row's place in the sheet
    if frame.empty:
        raise DataError(f"sheet {sheet!r} is empty", file=name, fix="export the data again")
    header = ["" if pd.isna(h) else str(h) for h in frame.iloc[0].tolist()]
    _check_header(header, name)

    def cell(x: Any) -> str:
        if x is None or (isinstance(x, float) and pd.isna(x)):
            return ""
        if isinstance(x, float) and x.is_integer():
            return str(int(x))
        return str(x)

    body = frame.iloc[1:].map(cell)
    body.columns = [h.strip() for h in header]
    return body, [int(i) + 1 for i in frame.index[1:]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _unreadable_cells(path: Path, sheet: str) -> dict[tuple[int, int], str]:
    """Cells a spreadsheet shows but a reader gets as empty: error values (``#DIV/0!``) and
    formulas saved without their result. Each is returned as its text, (0-based row, column),
    so that cleaning queries it as it would the same text in a CSV file."""
    from openpyxl import load_workbook

    found: dict[tuple[int, int], str] = {}
    formulas: list[tuple[int, int]] = []
    book = load_workbook(path, read_only=True)
    try:
        for r, row in enumerate(book[sheet].iter_rows()):
            for c, cell in enumerate(row):
                kind = getattr(cell, "data_type", None)
                if kind == "e":
                    found[(r, c)] = str(cell.value)
                elif kind == "f":
                    found[(r, c)] = str(cell.value)
                    formulas.append((r, c))
    finally:
        book.close()
    if formulas:
        cached = load_workbook(path, read_only=True, data_only=True)
        try:
            rows = list(cached[sheet].iter_rows(values_only=True))
        finally:
            cached.close()
        for r, c in formulas:
            value = rows[r][c] if r < len(rows) and c < len(rows[r]) else None
            if value is not None:
                del found[(r, c)]  # the saved result is what the reader already has
    return found


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces it only when the block succeeds.

    An interrupted write never leaves a partial file under the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file readable by its owner only; give it the mode any new file
        # gets (the umask), so that colleagues sharing the results can read them.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(text: str, path: str | Path) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table reproducibly and atomically: no index, '\\n' line ends, shortest
    round-trip floats."""
    text = csv_text(frame)
    with atomic_path(path) as tmp:
        if text is None:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)


# Cells the csv module quotes (QUOTE_MINIMAL with '\n' line ends).
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _csv_cell(text: str) -> str:
    """A cell as the csv module writes it."""
    if not _NEEDS_QUOTES.search(text):
        return text
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([text])
    return buffer.getvalue()[:-1]


def _distinct_cells(column: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes (-1: missing) and the text of each distinct value, as ``DataFrame.to_csv``
    writes them (shortest round-trip floats, missing as empty), or None for a column type
    it is not known to write that way."""
    kind = column.dtype
    values = column.to_numpy()
    if kind == np.float64:
        # By bit pattern: -0.0 and 0.0 are written differently.
        codes, bits = pd.factorize(values.view(np.int64))
        codes[np.isnan(values)] = -1
        return codes, np.array([repr(x) for x in bits.view(np.float64).tolist()], dtype=object)
    if kind in (np.int64, np.bool_):
        codes, numbers = pd.factorize(values)
        return codes, np.array([str(x) for x in numbers.tolist()], dtype=object)
    if kind == np.dtype(object) or isinstance(kind, pd.StringDtype | pd.CategoricalDtype):
        codes, distinct = pd.factorize(column)
        texts = np.asarray(distinct, dtype=object).tolist()
        if not all(isinstance(t, str) for t in texts):
            return None
        return codes, np.array([_csv_cell(t) for t in texts], dtype=object)
    return None


def csv_text(frame: pd.DataFrame) -> str | None:
    """The text ``frame.to_csv(index=False, lineterminator="\\n")`` writes, built from each
    column's distinct values (most cells of a trial's tables repeat: arms, visits, recorded
    values); None where that is not known to give the same text, and pandas writes it."""
    names = list(frame.columns)
    # One column: the csv module quotes an empty cell alone on its row.
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        return None
    cells = []
    for name in names:
        coded = _distinct_cells(frame[name])
        if coded is None:
            return None
        codes, texts = coded
        cells.append(np.append(texts, "")[codes].tolist())
    lines = [",".join(_csv_cell(n) for n in names), *map(",".join, zip(*cells, strict=True))]
    return "\n".join(lines) + "\n"


# A spreadsheet evaluates a cell that starts with one of these as a formula (OWASP "CSV
# injection"); a tab or carriage return can hide the start.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as a formula, prefixed with an apostrophe.

    Numbers are never changed (``-1.5`` stays a number), nor is text that is a plain number;
    only text such as ``=HYPERLINK(...)``, ``+cmd|...`` or ``@SUM(...)`` gets the apostrophe,
    which makes a spreadsheet show it as text.
    """
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        text = values.astype("string")
        risky = text.str.startswith(FORMULA_STARTS).fillna(False)
        risky &= ~text.str.fullmatch(_PLAIN_NUMBER.pattern).fillna(False)
        if risky.any():
            out[column] = values.astype(object).where(~risky, "'" + text.astype(object))
    return out


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table meant to be opened in a spreadsheet (queries, publication tables):
    as :func:`write_csv`, with formula-like text neutralised (:func:`neutralise_formulas`)."""
    write_csv(neutralise_formulas(frame), path)


# Text columns of the analysis datasets are read as Python strings (object dtype). pandas 3's
# default string type without pyarrow compares, maps and looks up cell by cell in Python,
# which is most of the time of cleaning and model preparation at 100,000 subjects.
TEXT = object


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_csv` (identifiers kept as text)."""
    return read_result_csv(path, dtype={"subject_id": TEXT, "arm": TEXT, "visit": TEXT})


def read_result_csv(path: str | Path, dtype: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a result table: only empty cells are missing (a label "NA" stays text)."""
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON reproducibly (sorted keys, fixed indentation, trailing newline)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    write_text(text + "\n", path)
