"""Word tables: every cell as in the display table, the three-line style, a grouped header,
fixed document properties and the same bytes on every run."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docx
import pandas as pd
import pytest
from docx.oxml.ns import qn

from trialflow.docx_tables import JournalTable, header_rows, write_docx_tables

OUTCOMES = pd.DataFrame(
    {
        "outcome": ["Pain (cm)", "Walk (m)"],
        "Control: n": ["40", "39"],
        "Control: change (95% CI)": ["-1.2 (-1.8 to -0.6)", "10.0 (2.1 to 17.9)"],
        "Exercise: n": ["41", "41"],
        "Exercise: change (95% CI)": ["-2.0 (-2.6 to -1.4)", "31.5 (23.7 to 39.3)"],
        "difference (95% CI)": ["-0.8 (-1.6 to 0.0)", "21.5 (10.4 to 32.6)"],
        "p": ["0.048", "<0.001"],
    }
)
PLAIN = pd.DataFrame({"characteristic": ["Age, mean (SD)", "Sex: female, n (%)"],
                      "Control": ["61.2 (8.0)", "20 (50.0)"], "SMD": ["0.05", ""]})  # fmt: skip


def _write(path: Path) -> None:
    write_docx_tables(
        [
            JournalTable("Baseline characteristics", PLAIN, "Mean (SD); n (%)."),
            JournalTable("Primary outcomes", OUTCOMES, "Model: MMRM of change."),
        ],
        path,
        title="Tables - Tiny trial",
    )


@pytest.fixture
def written(tmp_path: Path) -> Path:
    path = tmp_path / "tables.docx"
    _write(path)
    return path


def _texts(table: Any) -> list[list[str]]:
    return [[cell.text for cell in row.cells] for row in table.rows]


def test_every_cell_equals_the_display_table(written: Path) -> None:
    document = docx.Document(str(written))
    plain, outcomes = document.tables
    assert _texts(plain) == [list(PLAIN.columns), *PLAIN.to_numpy().tolist()]
    header = header_rows(list(OUTCOMES.columns))
    assert header == [
        ["outcome", "Control", "Control", "Exercise", "Exercise", "difference (95% CI)", "p"],
        ["outcome", "n", "change (95% CI)", "n", "change (95% CI)", "difference (95% CI)", "p"],
    ]
    # Merged cells read back with the merged text in every grid position.
    assert _texts(outcomes) == [*header, *OUTCOMES.to_numpy().tolist()]
    titles = [p.text for p in document.paragraphs if p.text.startswith("Table")]
    assert titles == ["Table 1. Baseline characteristics", "Table 2. Primary outcomes"]
    notes = [p.text for p in document.paragraphs]
    assert "Mean (SD); n (%)." in notes and "Model: MMRM of change." in notes


def _borders(element: Any, tag: str) -> dict[str, str]:
    found = element.find(qn(f"w:{tag}"))
    return {} if found is None else {b.tag.split("}")[1]: b.get(qn("w:val")) for b in found}


def test_three_line_style(written: Path) -> None:
    for table, header in zip(docx.Document(str(written)).tables, (1, 2), strict=True):
        assert _borders(table._tbl.tblPr, "tblBorders") == {
            "top": "single", "left": "nil", "bottom": "single", "right": "nil",
            "insideH": "nil", "insideV": "nil",
        }  # fmt: skip
        for i, row in enumerate(table.rows):
            for tc in row._tr.tc_lst:
                expected = {"bottom": "single"} if i == header - 1 else {}
                assert _borders(tc.get_or_add_tcPr(), "tcBorders") == expected, (i, tc.xml)
        # The header repeats on every page; the body rows do not.
        repeated = [row._tr.trPr is not None and row._tr.trPr.find(qn("w:tblHeader")) is not None
                    for row in table.rows]  # fmt: skip
        assert repeated == [i < header for i in range(len(table.rows))]


def test_same_bytes_on_every_run_and_fixed_properties(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    written, again = tmp_path / "tables.docx", tmp_path / "again.docx"
    _write(written)
    _write(again)
    assert written.read_bytes() == again.read_bytes()
    with zipfile.ZipFile(io.BytesIO(written.read_bytes())) as archive:
        # Unset SOURCE_DATE_EPOCH: 1970, which a zip member cannot carry, so 1980-01-01.
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    props = docx.Document(str(written)).core_properties
    assert props.created == props.modified == datetime(1970, 1, 1, tzinfo=UTC)
    assert props.title == "Tables - Tiny trial"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764115200")  # 2025-11-26 00:00:00 UTC
    stamped = tmp_path / "stamped.docx"
    _write(stamped)
    with zipfile.ZipFile(stamped) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2025, 11, 26, 0, 0, 0)}
    assert docx.Document(str(stamped)).core_properties.created.year == 2025
