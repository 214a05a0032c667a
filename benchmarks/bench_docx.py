"""Benchmark: filling the Word tables row by row, against python-docx's ``Table.cell(i, j)``.

Usage: python benchmarks/bench_docx.py [rows ...]

Builds one journal table of ``rows`` body rows and 10 columns (default 20, 50 and 100 rows, the
size of a trial's primary, secondary and sensitivity tables) and times
:func:`trialflow.docx_tables.tables_document` as it is (each body row's cells taken once) and
with the body filled through ``Table.cell(i, j)``, which rebuilds the list of the whole grid's
cells on every call: the baseline. Prints the best of three runs of each, in the same process,
and the ratio baseline / current.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from unittest import mock

import pandas as pd

from trialflow import docx_tables
from trialflow.docx_tables import JournalTable, tables_document

COLUMNS = 10


def _table(rows: int) -> JournalTable:
    frame = pd.DataFrame(
        {
            f"Column {j}": [f"{i * j / 7:.2f} (0.{i % 10})" for i in range(rows)]
            for j in range(COLUMNS)
        }
    )
    return JournalTable(title="Benchmark", frame=frame, note="Note.")


def _by_cell(document: Any, number: int, table: JournalTable) -> None:
    """The baseline: ``_add_table`` with the body filled through ``Table.cell(i, j)``."""
    document.add_paragraph().add_run(f"Table {number}. {table.title}")
    header = docx_tables.header_rows(list(table.frame.columns))
    body = [[docx_tables._cell_text(v) for v in row] for row in table.frame.itertuples(index=False)]
    grid = document.add_table(rows=len(header) + len(body), cols=len(header[0]))
    docx_tables._write_header(grid, header)
    for i, texts in enumerate(body, start=len(header)):
        for j, text in enumerate(texts):
            docx_tables._put(grid.cell(i, j), text, centred=j > 0)
    docx_tables._three_lines(grid, len(header))
    document.add_paragraph().add_run(table.note)


def _best(run: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [20, 50, 100]
    print(f"{'rows':>6} {'baseline s':>11} {'current s':>10} {'ratio':>7}")
    for rows in sizes:
        tables = [_table(rows)]
        build = partial(tables_document, tables, "Benchmark")
        current = _best(build)
        with mock.patch.object(docx_tables, "_add_table", _by_cell):
            baseline = _best(build)
        print(f"{rows:>6} {baseline:>11.3f} {current:>10.3f} {baseline / current:>6.1f}x")


if __name__ == "__main__":
    main()
