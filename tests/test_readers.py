"""SAS, SPSS and Stata files and European CSV read as their CSV twins.

Each bundled trial converted to another format must clean to the same data as the CSV it came
from: value labels read as the category text, user-defined and special missing codes as empty
cells, queries at observation numbers (first record = 1) instead of spreadsheet rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml

from trialflow.clean import CleanResult, read_and_clean
from trialflow.config import load_trial
from trialflow.errors import DataError
from trialflow.formats import cell_text
from trialflow.io import read_table

from .conftest import ROOT
from .test_workflow import _project, _snakemake

TRIAL = "exercise_education"
WRITERS: dict[str, Callable[..., None]] = {
    ".sav": pyreadstat.write_sav,
    ".dta": pyreadstat.write_dta,
    ".xpt": pyreadstat.write_xport,
}
QUERY_KEY = ["column", "rule", "action", "subject_id"]


def _name(column: str) -> str:
    """A column name every package accepts ("Pain VAS" -> "Pain_VAS")."""
    return re.sub(r"\W+", "_", column).strip("_")


def _raw(trial: str, key: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "data/raw" / trial / f"{key}.csv", dtype=str, keep_default_na=False)


def _typed(raw: pd.DataFrame) -> pd.DataFrame:
    """Columns whose every cell is a number (or empty) as numbers; the others as text, so
    that the planted problems ("n/a", "112,5") stay what they are."""
    out = {}
    for column in raw.columns:
        text = raw[column]
        numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
        numeric = ((text == "") | numbers.notna()).all()
        out[_name(column)] = numbers if numeric else text
    return pd.DataFrame(out)


def _write(frame: pd.DataFrame, raw: pd.DataFrame, path: Path, **options: Any) -> None:
    """``frame`` in the format of ``path``'s extension, the original names as variable labels;
    text labels of a column named in ``options['coded']`` as numeric codes with value labels."""
    coded = options.pop("coded", None)
    if coded and path.suffix != ".xpt":  # SAS transport files hold no value labels
        codes = {label: i + 1 for i, label in enumerate(sorted(frame[coded].unique()))}
        frame = frame.assign(**{coded: frame[coded].map(codes)})
        options["variable_value_labels"] = {coded: {v: k for k, v in codes.items()}}
    labels = dict(zip(frame.columns, raw.columns, strict=True))
    WRITERS[path.suffix](frame, str(path), column_labels=labels, **options)


def _trial_yaml(folder: Path, suffix: str, data: str = "") -> Path:
    """The bundled trial's description, pointing to the converted files."""
    spec = yaml.safe_load((ROOT / f"config/trials/{TRIAL}.yaml").read_text(encoding="utf-8"))
    spec["data"] = {key: f"{data}{key}{suffix}" for key in ("subjects", "visits")}
    spec["columns"] = {"withdrawal_reason": "Withdrawal_reason"}
    spec["outcomes"] = [{**o, "column": _name(o["column"])} for o in spec["outcomes"]]
    path = folder / f"trial{suffix}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _convert(folder: Path, suffix: str, edit: Callable[[str, pd.DataFrame], dict] | None = None):
    """The bundled trial in ``folder`` as ``subjects<suffix>`` and ``visits<suffix>``."""
    for key in ("subjects", "visits"):
        raw = _raw(TRIAL, key)
        frame = _typed(raw)
        options: dict[str, Any] = {"coded": "arm"} if key == "subjects" else {}
        if edit is not None:
            options.update(edit(key, frame))
        _write(frame, raw, folder / f"{key}{suffix}", **options)
    return load_trial(_trial_yaml(folder, suffix))


def _csv_twin() -> CleanResult:
    return read_and_clean(load_trial(ROOT / f"config/trials/{TRIAL}.yaml"), root=ROOT)


def _assert_same_clean(got: CleanResult, want: CleanResult, row_shift: int) -> None:
    """Same tables; source rows and query rows moved by ``row_shift``; queries alike."""
    for table in ("visits", "subjects"):
        a, b = getattr(got, table), getattr(want, table)
        pd.testing.assert_frame_equal(a.drop(columns="source_row"), b.drop(columns="source_row"))
        assert (a["source_row"] == b["source_row"] + row_shift).all()
    assert got.covariate_types == want.covariate_types
    names = {c: _name(c) for c in want.queries["column"]}
    expected = want.queries.assign(column=want.queries["column"].map(names))
    expected["action"] = expected["action"].str.replace(r"to row (\d+)", lambda m: (
        f"to observation {int(m.group(1)) + row_shift}"), regex=True)  # fmt: skip
    pd.testing.assert_frame_equal(got.queries[QUERY_KEY], expected[QUERY_KEY])
    assert (got.queries["row"] == want.queries["row"] + row_shift).all()


@pytest.mark.parametrize("suffix", [".sav", ".dta", ".xpt"])
def test_converted_trial_cleans_as_its_csv_twin(tmp_path: Path, suffix: str) -> None:
    got = read_and_clean(_convert(tmp_path, suffix), root=tmp_path)
    # Observation numbers: the CSV's data rows start at spreadsheet row 2, observations at 1.
    _assert_same_clean(got, _csv_twin(), row_shift=-1)
    arm_case = got.queries.loc[got.queries["rule"] == "label_case"]
    assert arm_case["row"].tolist() == [3]  # EE003, the third record of subjects.csv


@pytest.mark.parametrize("suffix", [".sav", ".dta", ".xpt"])
def test_variable_and_value_labels_are_read(tmp_path: Path, suffix: str) -> None:
    _convert(tmp_path, suffix)
    visits = read_table(tmp_path / f"visits{suffix}")
    assert visits.labels["Pain_VAS"] == "Pain VAS"
    assert visits.labels["Knee_extension_torque"] == "Knee extension torque"
    assert visits.row_kind == "observation" and visits.row_number(0) == 1
    subjects = read_table(tmp_path / f"subjects{suffix}")
    assert subjects.frame["arm"].tolist() == _raw(TRIAL, "subjects")["arm"].tolist()
    if suffix != ".xpt":
        # The stored codes stay available for reading numbers.
        assert set(subjects.number_text("arm")) == {"1", "2", "3"}
    # Numbers as written in the CSV, without float noise (7.0 and 7 are the same number).
    raw = _raw(TRIAL, "visits")
    assert visits.frame["HbA1c"].tolist() == [x.removesuffix(".0") for x in raw["HbA1c"]]
    assert visits.frame["Treadmill_VO2"].iloc[0] == raw["Treadmill VO2"].iloc[0] == "21.9"


def test_user_missing_and_special_missing_read_as_empty_cells(tmp_path: Path) -> None:
    """An SPSS user-missing code (999 declared missing) and a Stata special missing (.a) give
    what an empty cell gives: the same covariate-missing query and the same clean data."""
    empty = tmp_path / "empty"
    empty.mkdir()
    want = read_and_clean(_convert(empty, ".sav", _edit_to(np.nan)), root=empty)
    assert "EE005" in set(
        want.queries.loc[want.queries["rule"] == "missing_covariate", "subject_id"]
    )

    spss = tmp_path / "spss"
    spss.mkdir()
    trial = _convert(spss, ".sav", _edit_to(999, missing_ranges={"age": [999]}))
    _assert_same_clean(read_and_clean(trial, root=spss), want, row_shift=0)

    stata = tmp_path / "stata"
    stata.mkdir()
    trial = _convert(stata, ".dta", _edit_to("a", missing_user_values={"age": ["a"]}))
    assert read_table(stata / "subjects.dta").frame["age"].iloc[4] == ""
    _assert_same_clean(read_and_clean(trial, root=stata), want, row_shift=0)


def _edit_to(value: Any, **options: Any) -> Callable[[str, pd.DataFrame], dict]:
    """An edit of :func:`_convert`: EE005's age set to ``value`` (with writer options)."""

    def edit(key: str, frame: pd.DataFrame) -> dict:
        if key != "subjects":
            return {}
        if isinstance(value, str):
            frame["age"] = frame["age"].astype(object)
        frame.loc[frame["subject_id"] == "EE005", "age"] = value
        return options

    return edit


def test_errors_name_the_observation(tmp_path: Path) -> None:
    trial = _convert(tmp_path, ".sav")
    raw = _raw(TRIAL, "subjects")
    frame = _typed(raw)
    frame.loc[6, "arm"] = "yoga"
    _write(frame, raw, tmp_path / "subjects.sav", coded="arm")
    with pytest.raises(DataError) as info:
        read_and_clean(trial, root=tmp_path)
    assert info.value.row == 7 and info.value.row_kind == "observation"
    assert "observation 7, column 'arm'" in str(info.value)
    assert "'yoga' (observations 7;" in str(info.value)


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [
        (".sav", "an SPSS data file"),
        (".dta", "a Stata data file"),
        (".xpt", "a SAS transport file"),
    ],
)
def test_unreadable_file_is_a_data_error(tmp_path: Path, suffix: str, kind: str) -> None:
    path = tmp_path / f"visits{suffix}"
    path.write_bytes(b"subject_id,visit\nS01,baseline\n")  # a CSV file renamed
    with pytest.raises(DataError, match=f"cannot be read as {kind}") as info:
        read_table(path)
    assert info.value.file == str(path) and "export" in (info.value.fix or "")


def test_file_without_observations_is_a_data_error(tmp_path: Path) -> None:
    pyreadstat.write_dta(pd.DataFrame({"age": pd.Series([], dtype=float)}), tmp_path / "a.dta")
    with pytest.raises(DataError, match="no observations"):
        read_table(tmp_path / "a.dta")


def test_cell_text_has_no_float_noise() -> None:
    assert cell_text(6.4) == "6.4"
    assert cell_text(54.0) == "54"
    assert cell_text(np.int64(54)) == "54"
    assert cell_text(0.00001) == "0.00001"
    assert cell_text(float(np.float32(6.4)), single=True) == "6.4"
    assert cell_text(float("nan")) == ""
    assert cell_text(dt.date(2024, 3, 1)) == "2024-03-01"
    assert cell_text(dt.datetime(2024, 3, 1, 8, 30)) == "2024-03-01 08:30:00"


def test_dates_and_single_precision_read_as_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"day": [dt.date(2024, 3, 1), dt.date(2024, 12, 31)], "x": [6.4, 54.0]})
    pyreadstat.write_sav(frame, str(tmp_path / "a.sav"))
    table = read_table(tmp_path / "a.sav")
    assert table.frame["day"].tolist() == ["2024-03-01", "2024-12-31"]
    assert table.frame["x"].tolist() == ["6.4", "54"]


def test_stata_float_column_reads_at_single_precision(tmp_path: Path) -> None:
    """A Stata ``float`` column holds 6.4 as 6.400000095367432; it reads as "6.4"."""
    frame = pd.DataFrame({"x": np.array([6.4, 54.0, 0.1], dtype=np.float32)})
    frame.to_stata(tmp_path / "a.dta", write_index=False)  # pandas writes float32 as float
    assert read_table(tmp_path / "a.dta").frame["x"].tolist() == ["6.4", "54", "0.1"]


def test_spss_missing_ranges_and_string_codes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 95.0, 99.0, 5.0], "s": ["a", "NA", "b", "NA"]})
    ranges = {"x": [{"lo": 90, "hi": 99}], "s": ["NA"]}
    pyreadstat.write_sav(frame, str(tmp_path / "a.sav"), missing_ranges=ranges)
    table = read_table(tmp_path / "a.sav")
    assert table.frame["x"].tolist() == ["1", "", "", "5"]
    assert table.frame["s"].tolist() == ["a", "", "b", ""]


# -- European CSV -------------------------------------------------------------------------
_POINT = re.compile(r"[+-]?[0-9]+\.[0-9]+")
_COMMA_GROUPS = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")


def _european(text: str) -> str:
    """A CSV as a spreadsheet in a French locale saves it: ";" between columns, decimal
    commas, a space between thousands."""

    def cell(value: str) -> str:
        if _POINT.fullmatch(value):
            return value.replace(".", ",")
        if _COMMA_GROUPS.fullmatch(value):
            return value.replace(",", " ")
        return value

    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    for record in csv.reader(io.StringIO(text, newline="")):
        writer.writerow([cell(v) for v in record])
    return out.getvalue()


def _bundled_copy(tmp_path: Path, trial: str) -> Path:
    folder = tmp_path / "data/raw" / trial
    shutil.copytree(ROOT / "data/raw" / trial, folder)
    shutil.copytree(ROOT / "config/trials", tmp_path / "config/trials")
    return tmp_path / f"config/trials/{trial}.yaml"


def test_european_csv_reads_as_the_original(tmp_path: Path) -> None:
    config = _bundled_copy(tmp_path, "weightbearing")
    visits = tmp_path / "data/raw/weightbearing/visits.csv"
    original = visits.read_text(encoding="utf-8")
    visits.write_text(_european(original), encoding="utf-8")
    assert "7,4" in visits.read_text(encoding="utf-8")  # WB001 baseline HbA1c
    got = read_and_clean(load_trial(config), root=tmp_path)
    want = read_and_clean(load_trial(ROOT / "config/trials/weightbearing.yaml"), root=ROOT)
    for table in ("visits", "subjects"):
        pd.testing.assert_frame_equal(getattr(got, table), getattr(want, table))
    note = got.queries["rule"] == "semicolon_separated"
    assert note.sum() == 1
    assert "decimal commas" in got.queries.loc[note, "action"].item()
    assert got.queries.loc[note, "file"].item() == "data/raw/weightbearing/visits.csv"
    keys = ["file", "row", "column", "rule", "action", "subject_id"]
    pd.testing.assert_frame_equal(
        got.queries.loc[~note, keys].reset_index(drop=True), want.queries[keys]
    )


def test_semicolon_csv_with_mixed_decimal_marks_stops(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("id;visit;pain\nS01;baseline;6,4\nS02;baseline;6.5\n", encoding="utf-8")
    with pytest.raises(DataError, match="semicolon-separated but its decimal mark") as info:
        read_table(path)
    assert "decimal points" in (info.value.fix or "")


def test_semicolon_csv_leaves_text_alone(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("id;note;pain\nS01;a, b;6,4\nS02;x,1;12\n", encoding="utf-8")
    table = read_table(path)
    assert table.frame["note"].tolist() == ["a, b", "x,1"]
    assert table.frame["pain"].tolist() == ["6.4", "12"]
    assert [n["rule"] for n in table.notes] == ["semicolon_separated"]


# -- end to end ---------------------------------------------------------------------------
@pytest.mark.workflow
def test_sas_spss_and_stata_trials_give_the_effects_of_their_csv_twin(tmp_path: Path) -> None:
    # One workflow run for the three formats: each twin is its own trial.
    work = _project(tmp_path)
    twins = {".sav": "ee_spss", ".dta": "ee_stata", ".xpt": "ee_sas"}
    for suffix, name in twins.items():
        folder = work / "data/raw" / name
        folder.mkdir()
        _convert(folder, suffix)
        shutil.copy(
            _trial_yaml(folder, suffix, data=f"data/raw/{name}/"),
            work / f"config/trials/{name}.yaml",
        )
    names = [TRIAL, *twins.values()]
    targets = [f"results/{t}/tables/effects.csv" for t in names]
    run = _snakemake(
        work, *targets, "--config", f"trials={','.join(names)}", "job_granularity=per_step"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    twin = (work / f"results/{TRIAL}/tables/effects.csv").read_bytes()
    assert twin.count(b"\n") > 10  # estimates of every outcome, not an empty table
    for name in twins.values():
        assert (work / f"results/{name}/tables/effects.csv").read_bytes() == twin, name
