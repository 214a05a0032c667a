"""Reading raw files: formats, encodings and malformed files."""

from __future__ import annotations

import gc
import os
import random
import stat
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trialflow.errors import DataError
from trialflow.io import neutralise_formulas, read_table, write_csv, write_json, write_table


def test_csv_cells_are_text(write_text) -> None:
    table = read_table(write_text("a.csv", "id,x\n001,1.50\n002,\n"))
    assert table.frame["id"].tolist() == ["001", "002"]
    assert table.frame["x"].tolist() == ["1.50", ""]
    assert table.row_number(0) == 2


def test_tsv_by_extension(write_text) -> None:
    table = read_table(write_text("a.tsv", "id\tx\n1\t2\n"))
    assert list(table.frame.columns) == ["id", "x"]


def test_utf8_bom_is_removed(write_text) -> None:
    table = read_table(write_text("a.csv", "\ufeffid,x\n1,2\n"))
    assert list(table.frame.columns) == ["id", "x"]
    assert table.notes == []


def test_latin1_is_read_with_a_query(write_text) -> None:
    table = read_table(write_text("a.csv", "id,site\n1,Montr\xe9al\n".encode("latin-1")))
    assert table.frame.loc[0, "site"] == "Montréal"
    assert [n["rule"] for n in table.notes] == ["encoding"]
    assert table.notes[0]["row"] == 2


def test_xlsx(tmp_path) -> None:
    path = tmp_path / "a.xlsx"
    pd.DataFrame({"id": ["S1", "S2"], "x": [1.0, 2.5]}).to_excel(path, index=False)
    table = read_table(path)
    assert table.frame["x"].tolist() == ["1", "2.5"]


def test_xlsx_with_several_sheets_needs_a_name(tmp_path) -> None:
    path = tmp_path / "a.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"id": [1]}).to_excel(writer, sheet_name="Subjects", index=False)
        pd.DataFrame({"id": [2]}).to_excel(writer, sheet_name="Visits", index=False)
    with pytest.raises(DataError, match="2 sheets") as info:
        read_table(path)
    assert "visits_sheet" in str(info.value)
    assert read_table(path, sheet="Visits").frame["id"].tolist() == ["2"]
    with pytest.raises(DataError, match="sheet 'Nope' not found"):
        read_table(path, sheet="Nope")


def test_a_refused_workbook_is_closed(tmp_path) -> None:
    """A workbook refused for its sheets is closed at once; left open, the garbage collector
    reports it later, in whatever code runs then (it once landed in a model's warnings)."""
    path = tmp_path / "a.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"id": [1]}).to_excel(writer, sheet_name="Subjects", index=False)
        pd.DataFrame({"id": [2]}).to_excel(writer, sheet_name="Visits", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for sheet in (None, "Nope"):
            with pytest.raises(DataError):
                read_table(path, sheet=sheet)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "", "the file is empty"),
        ("a.csv", "id,x\n", "header but no data rows"),
        ("a.tsv", "id;x\n1;2\n", "semicolon-separated"),
        ("a.csv", "id;x\n1,5;2.5\n", "decimal mark is ambiguous"),
        ("a.csv", "id,id\n1,2\n", "appears 2 times"),
        ("a.csv", "id,\n1,2\n", "column 2 has no name"),
        ("a.csv", "id,x\n1,2,3\n", "row has 3 cells"),
        ("a.json", "{}", "unsupported file type"),
    ],
)
def test_malformed_files(write_text, name, content, message) -> None:
    path = write_text(name, content)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert str(path) in str(info.value)
    assert "What to do" in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "none.csv")


def test_write_csv_is_byte_stable(tmp_path) -> None:
    frame = pd.DataFrame({"a": [0.1 + 0.2, float("nan")], "b": ["x", "y"]})
    write_csv(frame, tmp_path / "1.csv")
    write_csv(frame, tmp_path / "2.csv")
    data = (tmp_path / "1.csv").read_bytes()
    assert data == (tmp_path / "2.csv").read_bytes()
    assert data == b"a,b\n0.30000000000000004,x\n,y\n"


def test_write_json_sorted_and_nan_refused(tmp_path) -> None:
    write_json({"b": 1, "a": [1.5]}, tmp_path / "x.json")
    assert (tmp_path / "x.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        write_json({"a": float("nan")}, tmp_path / "y.json")


def test_spreadsheet_tables_neutralise_formula_text_and_keep_numbers(tmp_path) -> None:
    frame = pd.DataFrame(
        {
            "value": ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)",
                      "-1.5", "\tx", "plain", None, "\r=1+1"],
            "estimate": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        }
    )  # fmt: skip
    out = neutralise_formulas(frame)
    assert out["value"].tolist()[:7] == [
        "'=HYPERLINK(\"http://x\")", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(1)", "-1.5", "'\tx",
        "plain",
    ]  # fmt: skip
    assert pd.isna(out["value"].iloc[7])
    assert out["value"].iloc[8] == "'\r=1+1"  # a carriage return starts a formula too (OWASP)
    assert out["estimate"].equals(frame["estimate"])  # numbers are never touched
    write_table(frame, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text()
    assert "\n\"'=HYPERLINK" in text and "\n-1.5,5.0" in text


def test_written_files_honour_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "shared.csv")
        os.umask(0o077)
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "private.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600


def test_utf16_text_is_read(write_text) -> None:
    content = "subject_id\tarm\nS1\tcontrol\nS2\texercise\n"
    for codec in ("utf-16", "utf-16-le"):
        path = write_text(f"subjects_{codec}.txt", content.encode(codec))
        table = read_table(path)
        assert table.frame["arm"].tolist() == ["control", "exercise"]


def test_row_numbers_are_spreadsheet_rows_with_multiline_cells(write_text) -> None:
    path = write_text("notes.csv", 'id,note\nA,"one\ntwo\nthree"\nB,x\n')
    table = read_table(path)
    assert [table.row_number(i) for i in range(2)] == [2, 3]


def test_analysis_datasets_keep_formula_like_text_as_read(tmp_path) -> None:
    """README, "Safety and reproducibility": "the analysis datasets under analysis/ keep every
    value exactly as read" -- only tables meant for a spreadsheet are neutralised."""
    frame = pd.DataFrame({"note": ["=1+1", "-2+3", "@SUM(1)"], "value": [1.0, -2.0, 3.0]})
    write_csv(frame, tmp_path / "adeff.csv")
    back = pd.read_csv(tmp_path / "adeff.csv", dtype={"note": str})
    assert back["note"].tolist() == ["=1+1", "-2+3", "@SUM(1)"]


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    """README, "Safety and reproducibility": "Files are written to a temporary name and renamed
    when complete, so a partial file never looks finished" -- a write that fails halfway leaves
    neither the file nor its temporary name, and an earlier complete file untouched."""
    target = tmp_path / "tables" / "effects.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()

    def interrupted(self, path, **kwargs) -> None:
        Path(path).write_text("a\n1\n2")  # half a table, then the job is stopped
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_csv(pd.DataFrame({"a": [1, 2, 3]}), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["effects.csv"]
    with pytest.raises(KeyboardInterrupt):
        write_csv(pd.DataFrame({"a": [1, 2, 3]}), tmp_path / "new.csv")
    assert not (tmp_path / "new.csv").exists()


def _csv_module_table(text: str, delimiter: str) -> tuple[pd.DataFrame, list[int]]:
    """The rows as the csv module reads them (the reading of quoted or irregular files)."""
    from trialflow.io import _records

    rows, numbers = _records(text, delimiter)
    width = len(rows[0])
    body = [(r + [""] * width)[:width] for r in rows[1:]]
    return pd.DataFrame(body, columns=[h.strip() for h in rows[0]], dtype=object), numbers[1:]


def _random_text(rng: random.Random, delimiter: str) -> str:
    """Delimited text: blank and white-space lines, short, long and empty rows, quoted cells
    (with delimiters, quotes and line ends inside), stray quotes, CRLF and lone CR line ends."""
    pieces = ["a", "1", "2.5", " ", "", " x ", "é", "\t", ";", ",", "#", "NA", "-", "'q'"]
    pieces += ['"', '""', '"a,b"', '"p""q"', '"x\ny"', '"u;v"', 'r"s', "\r"]
    width = rng.randint(1, 4)
    lines = [delimiter.join(rng.choice([f"c{i}", f"c{i}", "", " c", "c0"]) for i in range(width))]
    if rng.random() < 0.1:
        lines.insert(0, "")
    for _ in range(rng.randint(0, 8)):
        cells = rng.choice([width, width, width, width - 1, width + 1, 0])
        lines.append(
            delimiter.join("".join(rng.choices(pieces, k=rng.randint(0, 2))) for _ in range(cells))
        )
    end = rng.choice(["\n", "\n", "\r\n"])
    return end.join(lines) + rng.choice(["", end, end + end])


def test_plain_files_read_by_the_c_parser_as_by_the_csv_module() -> None:
    """Reading is exact whatever the path: where pandas' C parser reads a file, its rows,
    cells and row numbers are those of the csv module's reading, and it declines the files
    it could read differently (cells spanning lines, lone CR, short headers, extra cells,
    blank first line)."""
    from trialflow.io import _plain_table

    rng = random.Random(11)
    taken, kinds = 0, Counter[str]()
    for _ in range(2000):
        delimiter = rng.choice([",", "\t", ";"])
        text = _random_text(rng, delimiter)
        fast = _plain_table(text, delimiter)
        if fast is None:
            continue
        taken += 1
        kinds.update(k for k in ('"', "\r\n") if k in text)
        frame, numbers = fast
        expected, expected_numbers = _csv_module_table(text, delimiter)
        assert numbers == expected_numbers, text
        pd.testing.assert_frame_equal(frame, expected)
    # The comparison ran on many files, quoted and CRLF ones too, not only on declined ones.
    assert taken > 80 and kinds['"'] > 20 and kinds["\r\n"] > 20
    assert _plain_table('id,arm\n1,"a\nb"\n', ",") is None
    assert _plain_table("id,arm\r1,a\r", ",") is None
    quoted, _ = _plain_table('id,arm\r\n1,"a,""b"""\r\n', ",") or (None, None)
    assert quoted is not None and quoted.to_dict("list") == {"id": ["1"], "arm": ['a,"b"']}
    assert _plain_table("\nid,arm\n1,a\n", ",") is None
    assert _plain_table("id,arm\n1,a,b\n", ",") is None
    assert _plain_table("id,id\n1,a\n", ",") is None
    frame, numbers = _plain_table("id,arm\n\n1 , a\n2\n", ",") or (None, None)
    assert numbers == [3, 4] and frame is not None
    assert frame.to_dict("list") == {"id": ["1 ", "2"], "arm": [" a", ""]}


def _random_column(rng: np.random.Generator, n: int) -> pd.Series:
    """A column of one of the types trialflow's tables hold, with the awkward values."""
    kind = rng.choice(["float", "int", "bool", "object", "string", "category", "mixed"])
    if kind == "float":
        pool = np.array([0.0, -0.0, 0.1 + 0.2, 1e-5, 1e-4, 123456789.125, 1e16, 1e15, -2.5,
                         5e-324, 1e308, np.inf, -np.inf, np.nan, 7.8, 1 / 3])  # fmt: skip
        values = np.where(rng.uniform(size=n) < 0.5, rng.choice(pool, n), rng.normal(0, 1e3, n))
        with np.errstate(over="ignore"):  # 1e308 scaled up is inf, which is written too
            return pd.Series(values * rng.choice([1.0, 1e-9, 1e12]))
    if kind == "int":
        return pd.Series(rng.integers(-(2**62), 2**62, n) // rng.choice([1, 10**15]))
    if kind == "bool":
        return pd.Series(rng.uniform(size=n) < 0.5)
    words = np.array(["a", "b, c", 'say "hi"', "two\nlines", "cr\rhere", "", " pad ", "é", "nan",
                      "=SUM(A1)", "NA", "1.50"], dtype=object)  # fmt: skip
    text = rng.choice(words, n).astype(object)
    text[rng.uniform(size=n) < 0.2] = None
    if kind == "string":
        return pd.Series(text, dtype="string")
    if kind == "category":
        return pd.Series(text).astype("category")
    if kind == "mixed" and n:
        text[0] = 1.5  # not all text: pandas writes it
    return pd.Series(text, dtype=object)


def test_csv_text_is_what_pandas_writes() -> None:
    """write_csv builds the text from each column's distinct values; it must be the text of
    ``DataFrame.to_csv`` byte for byte, or decline (None) so that pandas writes it."""
    from trialflow.io import csv_text

    rng = np.random.default_rng(8)
    built = 0
    for _ in range(400):
        n = int(rng.integers(0, 30))
        names = [str(rng.choice(["x", "y,z", 'q"', "id", "arm", "value"])) + str(i)
                 for i in range(int(rng.integers(1, 6)))]  # fmt: skip
        frame = pd.DataFrame({name: _random_column(rng, n) for name in names})
        text = csv_text(frame)
        if text is not None:
            built += 1
            assert text == frame.to_csv(index=False, lineterminator="\n"), frame
    assert built > 150
    assert csv_text(pd.DataFrame({"only": ["", "a"]})) is None
    assert csv_text(pd.DataFrame([[1, 2]], columns=["a", "a"])) is None
