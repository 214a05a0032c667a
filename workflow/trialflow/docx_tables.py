"""The publication tables as one Word file for a journal submission (``tables/tables.docx``).

Journals ask for tables as editable Word tables, each on its own page after the manuscript
text, numbered in order of citation, with its title above and its notes below. One file holds
them all, in that form: Table 1 (baseline characteristics), the primary and secondary outcome
tables, the sensitivity analyses at the primary visit (when they were run) and the adverse
events (when the trial names an adverse-events file). The cells are the report's display tables
as they are (same rounding, same display labels); each note is the text the HTML report writes
with that table.

The style is the journals' three-line table: a rule above the header, one under it and one
under the last row; no vertical rules and no other horizontal ones. A column named
``<group>: <label>`` (e.g. per arm) gets a spanning group heading, as in the HTML report.

The file is the same bytes on every run: the document properties' dates and the zip members'
time stamps are :func:`trialflow.stamps.build_time`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from docx.document import Document as DocumentType
    from docx.table import Table

    from trialflow.report import ReportInputs

__all__ = ["JournalTable", "journal_tables", "write_docx_tables"]

FONT = "Times New Roman"
FONT_PT = 9
NOTE_PT = 8
RULE = {"val": "single", "sz": "8", "space": "0", "color": "000000"}  # a 1 pt rule
ZIP_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)  # the earliest time a zip member can carry


@dataclass(frozen=True)
class JournalTable:
    """A table for the journal: its title, its cells (text) and the note under it."""

    title: str
    frame: pd.DataFrame
    note: str


def journal_tables(inputs: ReportInputs, tables: Mapping[str, pd.DataFrame]) -> list[JournalTable]:
    """The journal tables, in order, from the report's display inputs and tables."""
    from trialflow.report import table_notes
    from trialflow.sensitivity_report import sensitivity_table

    trial = inputs.trial
    notes = table_notes(inputs)
    primary = "Primary outcomes" if len(tables["primary"]) > 1 else "Primary outcome"
    out = [
        JournalTable("Baseline characteristics", tables["table1"], notes["table1"]),
        JournalTable(primary, tables["primary"], notes["primary"]),
    ]
    if not tables["secondary"].empty:
        out.append(JournalTable("Secondary outcomes", tables["secondary"], notes["secondary"]))
    if not inputs.sensitivity.empty:
        frame = sensitivity_table(trial, inputs.effects, inputs.sensitivity)
        title = f"The treatment effect at {trial.primary_visit} under each assumption"
        note = f"{notes['sensitivity_rows']}. {notes['sensitivity_methods']}"
        out.append(JournalTable(title, frame, note))
    if inputs.adverse_events is not None:
        title = "Harms (adverse events)"
        out.append(JournalTable(title, tables["adverse_events"], f"{notes['harms']}."))
    return out


def header_rows(columns: Sequence[Any]) -> list[list[str]]:
    """The header as rows of cell texts: one row, or two when some columns are named
    ``<group>: <label>`` (the group in the first row over its columns, repeated per column; an
    ungrouped column's name in both rows, merged when drawn)."""
    names = [str(c) for c in columns]
    if not any(": " in n for n in names):
        return [names]
    split = [n.partition(": ") if ": " in n else (n, "", n) for n in names]
    return [[g for g, _, _ in split], [label for _, _, label in split]]


def _cell_text(value: Any) -> str:
    """A cell as the HTML report shows it: missing values empty."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def _set_borders(element: Any, tag: str, sides: Mapping[str, Mapping[str, str] | None]) -> None:
    """Set the borders of a table (``w:tblBorders``) or a cell (``w:tcBorders``): a rule, or
    none (``nil``)."""
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    borders = element.find(qn(f"w:{tag}"))
    if borders is None:
        borders = OxmlElement(f"w:{tag}")
        element.append(borders)
    for side, rule in sides.items():
        edge = OxmlElement(f"w:{side}")
        for key, value in (rule or {"val": "nil"}).items():
            edge.set(qn(f"w:{key}"), value)
        borders.append(edge)


def _three_lines(table: Table, header: int) -> None:
    """Rules above and below the table and under the header row(s); nothing else."""
    sides = ("top", "left", "bottom", "right", "insideH", "insideV")
    rules = {s: RULE if s in ("top", "bottom") else None for s in sides}
    _set_borders(table._tbl.tblPr, "tblBorders", rules)
    # The row's own cells, the continuations of vertically merged ones included.
    for tc in table.rows[header - 1]._tr.tc_lst:
        _set_borders(tc.get_or_add_tcPr(), "tcBorders", {"bottom": RULE})


def _put(cell: Any, text: str, *, bold: bool = False, centred: bool = True) -> None:
    """Write a cell's text (bold in the header; centred but in the first column)."""
    from docx.enum.text import WD_ALIGN_PARAGRAPH

    paragraph = cell.paragraphs[0]
    run = paragraph.add_run(text)
    run.bold = bold or None
    if centred:
        paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER


def _write_header(table: Table, rows: list[list[str]]) -> None:
    """The header row(s): a group heading merged over its columns, an ungrouped column's name
    merged over both rows; repeated at the top of every page the table runs over."""
    from docx.oxml import OxmlElement

    for row in table.rows[: len(rows)]:
        row._tr.get_or_add_trPr().append(OxmlElement("w:tblHeader"))
    top, bottom = rows[0], rows[-1]
    j = 0
    while j < len(top):
        if len(rows) == 1 or top[j] == bottom[j]:
            cell = table.cell(0, j) if len(rows) == 1 else table.cell(0, j).merge(table.cell(1, j))
            _put(cell, top[j], bold=True, centred=j > 0)
            j += 1
            continue
        end = j
        while end + 1 < len(top) and top[end + 1] == top[j] != bottom[end + 1]:
            end += 1
        _put(table.cell(0, j).merge(table.cell(0, end)), top[j], bold=True)
        for k in range(j, end + 1):
            _put(table.cell(1, k), bottom[k], bold=True)
        j = end + 1


def _add_table(document: DocumentType, number: int, table: JournalTable) -> None:
    """Title paragraph, three-line table and note of one journal table."""
    from docx.shared import Pt

    title = document.add_paragraph()
    title.add_run(f"Table {number}. ").bold = True
    title.add_run(table.title)
    header = header_rows(list(table.frame.columns))
    body = [[_cell_text(v) for v in row] for row in table.frame.itertuples(index=False)]
    grid = document.add_table(rows=len(header) + len(body), cols=len(header[0]))
    _write_header(grid, header)
    # Row by row: Table.cell(i, j) walks the whole grid on every call.
    for row, texts in zip(grid.rows[len(header) :], body, strict=True):
        for j, (cell, text) in enumerate(zip(row.cells, texts, strict=True)):
            _put(cell, text, centred=j > 0)
    _three_lines(grid, len(header))
    note = document.add_paragraph()
    note.add_run(table.note).font.size = Pt(NOTE_PT)


def tables_document(tables: Sequence[JournalTable], title: str) -> DocumentType:
    """A landscape A4 document, one table per page, with fixed document properties."""
    from docx import Document
    from docx.enum.section import WD_ORIENT
    from docx.shared import Cm, Pt

    from trialflow.stamps import build_time

    document = Document()
    style = document.styles["Normal"]
    style.font.name = FONT
    style.font.size = Pt(FONT_PT)
    section = document.sections[0]
    section.orientation = WD_ORIENT.LANDSCAPE
    section.page_width, section.page_height = Cm(29.7), Cm(21.0)
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(section, side, Cm(2.0))
    for number, table in enumerate(tables, start=1):
        if number > 1:
            document.add_page_break()
        _add_table(document, number, table)
    props = document.core_properties
    when = build_time().replace(tzinfo=None)
    props.title, props.author, props.last_modified_by = title, "trialflow", "trialflow"
    props.created = props.modified = props.last_printed = when
    props.revision = 1
    return document


def fixed_zip(data: bytes) -> bytes:
    """The zip archive with every member's time stamp and attributes fixed (same order)."""
    from trialflow.stamps import build_time

    when = max(build_time(), ZIP_EPOCH).timetuple()[:6]
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for member in source.infolist():
            info = zipfile.ZipInfo(member.filename, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            target.writestr(info, source.read(member))
    return out.getvalue()


def write_docx_tables(tables: Sequence[JournalTable], path: str | Path, *, title: str) -> None:
    """Write the journal tables to one Word file, the same bytes on every run."""
    from trialflow.io import atomic_path

    buffer = io.BytesIO()
    tables_document(tables, title).save(buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(fixed_zip(buffer.getvalue()))
