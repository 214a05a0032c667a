"""SAS transport rows encoded by numpy (trialflow.xport) against pyreadstat's own writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from trialflow.adam import AdamDataset, Variable, write_xpt
from trialflow.xport import ibm_doubles, widest_row, with_observations

LABELS = {"TXT": "text", "NUM": "number", "INT": None, "EMPTY": "empty"}


def _frame(seed: int) -> pd.DataFrame:
    """Numbers over 24 orders of magnitude, both signs, zeros, halves, thirds and missing
    values; text of several lengths with trailing blanks, and an all-empty text column."""
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, 1.0, -1.0, 0.5, 1 / 3, 1e-70, 123456789.123, np.nan, 2.0**-260, 7.0]
    spread = rng.normal(0, 1, 600) * 10.0 ** rng.integers(-12, 12, 600)
    values = np.concatenate([spread, special, rng.integers(-1000, 1000, 300).astype(float)])
    rng.shuffle(values)
    words = ["", "a", "abc ", "EE-0001", "x" * 30]
    return pd.DataFrame(
        {
            "TXT": pd.Series(rng.choice(words, size=len(values)), dtype=object),
            "NUM": values,
            "INT": pd.Series(rng.integers(0, 5, len(values)), dtype="int64"),
            "EMPTY": pd.Series([""] * len(values), dtype=object),
        }
    )


def _pyreadstat_bytes(frame: pd.DataFrame, path: Path) -> bytes:
    pyreadstat.write_xport(
        frame, str(path), file_label="a label", column_labels=LABELS, table_name="T",
        file_format_version=5,
    )  # fmt: skip
    return path.read_bytes()


def _without_stamps(data: bytes) -> bytes:
    """The file with its four header time stamps blanked (written a second apart or not)."""
    out = bytearray(data)
    member = data.find(b"HEADER RECORD*******DSCRPTR HEADER RECORD")
    for at in (80 + 64, 160, member + 80 + 64, member + 160):
        out[at : at + 16] = b" " * 16
    return bytes(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_encoded_as_pyreadstat_writes_them(tmp_path: Path, seed: int) -> None:
    """Headers from one widest row plus numpy-encoded rows are pyreadstat's whole-frame
    file byte for byte (IBM doubles, the missing value '.', blank-padded text and records)."""
    frame = _frame(seed)
    full = _pyreadstat_bytes(frame, tmp_path / "full.xpt")
    head = _pyreadstat_bytes(widest_row(frame), tmp_path / "head.xpt")
    mine = with_observations(head, frame)
    assert mine is not None and len(mine) % 80 == 0
    assert _without_stamps(mine) == _without_stamps(full)


def test_ibm_doubles_by_hand() -> None:
    """1 is 16^1 x 1/16; -118.625 is -(16^2 x 0.46337890625) (IBM's own example); 0 is all
    zero bytes; NaN is SAS's '.'; infinity and 1e-300 cannot be written."""
    coded = ibm_doubles(np.array([1.0, -118.625, 0.0, np.nan]))
    assert coded is not None
    assert coded[0].tobytes() == bytes([0x41, 0x10, 0, 0, 0, 0, 0, 0])
    assert coded[1].tobytes() == bytes([0xC2, 0x76, 0xA0, 0, 0, 0, 0, 0])
    assert coded[2].tobytes() == bytes(8)
    assert coded[3].tobytes() == b"." + bytes(7)
    assert ibm_doubles(np.array([np.inf])) is None
    assert ibm_doubles(np.array([1e-300])) is None


def test_a_number_beyond_ibm_range_is_written_by_pyreadstat(tmp_path: Path) -> None:
    """The fallback: a dataset holding 1e-300 is still written, as pyreadstat writes it."""
    frame = pd.DataFrame({"X": [1.0, 1e-300]})
    dataset = AdamDataset("T", "a label", frame, (Variable("X", "x", "Derived"),))
    write_xpt(dataset, tmp_path / "t.xpt")
    read, _ = pyreadstat.read_xport(str(tmp_path / "t.xpt"))
    assert read["X"].iloc[0] == 1.0 and len(read) == 2
