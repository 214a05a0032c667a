"""Wide visits files (data.layout: wide): cleaned exactly as the same data in a long file, with
queries naming the wide file's cells."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from trialflow.clean import CleanResult, read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.errors import ConfigError, DataError

from .conftest import ROOT, TinyTrial
from .test_workflow import _project, _snakemake

TRIAL = ROOT / "config" / "trials" / "exercise_education.yaml"
LONG = ROOT / "data" / "raw" / "exercise_education" / "visits.csv"
DEFAULT = "{outcome}_{visit}"


def _long_rows() -> pd.DataFrame:
    """The bundled long visits file as text, with each row's spreadsheet row (header = 1)."""
    frame = pd.read_csv(LONG, dtype=str, keep_default_na=False)
    frame.insert(0, "row", range(2, len(frame) + 2))
    frame["visit"] = frame["visit"].str.strip()
    return frame


def _pivot(trial: TrialConfig, pattern: str) -> pd.DataFrame:
    """The bundled visits as a wide file: one row per subject (in order of first appearance),
    a subject-level Site column, and an empty cell for every visit not in the long file."""
    long = _long_rows().drop(columns="row").drop_duplicates()
    ids = list(dict.fromkeys(long["subject_id"]))
    cells = long.set_index(["subject_id", "visit"])
    wide = pd.DataFrame({"subject_id": ids, "Site": [f"site {i % 3}" for i in range(len(ids))]})
    for o in trial.outcomes:
        for label in trial.visit_labels:
            name = pattern.replace("{outcome}", o.column).replace("{visit}", label)
            wide[name] = [cells[o.column].get((sid, label), "") for sid in ids]
    return wide


def _wide_trial(folder: Path, pattern: str, change: dict[str, Any] | None = None) -> TrialConfig:
    """The bundled trial reading its visits from a wide file written to ``folder`` (the
    subjects file stays the bundled one: paths are relative to the project folder)."""
    long_trial = load_trial(TRIAL)
    wide = _pivot(long_trial, pattern)
    for old, new in (change or {}).items():
        wide = wide.rename(columns={old: new})
    wide.to_csv(folder / "wide.csv", index=False, lineterminator="\n")
    content = yaml.safe_load(TRIAL.read_text(encoding="utf-8"))
    content["data"] = {
        "subjects": "data/raw/exercise_education/subjects.csv",
        "visits": str(folder / "wide.csv"),
        "layout": "wide",
        "wide_columns": pattern,
    }
    path = folder / "exercise_wide.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return load_trial(path)


def _as_tuples(queries: pd.DataFrame) -> list[tuple[Any, ...]]:
    rows = queries.astype(object).where(queries.notna(), None)
    return sorted(map(tuple, rows.itertuples(index=False)), key=repr)


@pytest.fixture(scope="module")
def long_result() -> CleanResult:
    return read_and_clean(load_trial(TRIAL), ROOT)


@pytest.mark.parametrize("pattern", [DEFAULT, "{visit} - {outcome} (raw)"])
def test_wide_file_cleans_to_the_long_file_result(
    tmp_path: Path, long_result: CleanResult, pattern: str
) -> None:
    trial = _wide_trial(tmp_path, pattern)
    wide = read_and_clean(trial, ROOT)
    pd.testing.assert_frame_equal(wide.subjects, long_result.subjects)
    pd.testing.assert_frame_equal(
        wide.visits.drop(columns="source_row"), long_result.visits.drop(columns="source_row")
    )
    # Each visit row comes from its subject's row of the wide file.
    wide_row = {
        sid: i + 2 for i, sid in enumerate(pd.read_csv(tmp_path / "wide.csv")["subject_id"])
    }
    assert wide.visits["source_row"].tolist() == wide.visits["subject_id"].map(wide_row).tolist()

    # The same queries, a visits file's pointing to the wide cell; a wide file cannot have
    # the long file's stray spaces around a visit label nor its duplicated row.
    long_rows = _long_rows().set_index("row")
    expected = long_result.queries.copy()
    layout_only = (expected["rule"] == "exact_duplicate") | (expected["column"] == "visit")
    expected = expected.loc[~layout_only]
    in_visits = expected["file"] == "data/raw/exercise_education/visits.csv"
    for i in expected.index[in_visits]:
        sid, label = long_rows.loc[int(expected.at[i, "row"]), ["subject_id", "visit"]]
        column = pattern.replace("{outcome}", expected.at[i, "column"]).replace("{visit}", label)
        expected.loc[i, ["file", "row", "column"]] = [trial.visits_path, wide_row[sid], column]
    assert _as_tuples(wide.queries) == _as_tuples(expected)
    assert in_visits.sum() == 3  # the planted n/a, 112,5 and 71 of visits.csv


def test_planted_bad_values_name_the_wide_row_and_column(tmp_path: Path) -> None:
    trial = _wide_trial(tmp_path, DEFAULT)
    queries = read_and_clean(trial, ROOT).queries.set_index("value")
    wide = pd.read_csv(tmp_path / "wide.csv", dtype=str, keep_default_na=False)
    # data/raw/exercise_education/visits.csv:6 is EE001 at week26 (the 1st subject, wide row
    # 2) with Pain VAS "n/a"; visits.csv:18 is EE006 at week6 (6th subject, wide row 7) with
    # knee torque "112,5".
    for value, rule, row, column in (
        ("n/a", "not_a_number", 2, "Pain VAS_week26"),
        ("112,5", "decimal_comma", 7, "Knee extension torque_week6"),
    ):
        query = queries.loc[value]
        assert (query["file"], query["row"], query["column"], query["rule"]) == (
            str(tmp_path / "wide.csv"),
            row,
            column,
            rule,
        )
        assert wide.at[row - 2, column] == value  # the user finds the cell there


def test_column_that_reads_two_ways_is_refused(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][1]["column"] = "pain_late"
    tiny.config["visits"] = [
        {"label": "baseline", "week": 0},
        {"label": "week12", "week": 12},
        {"label": "late_week12", "week": 14},
    ]
    tiny.config["data"]["layout"] = "wide"
    header = "subject_id,pain_baseline,pain_late_baseline,pain_week12,pain_late_week12\n"
    (tiny.folder / "visits.csv").write_text(header + "S01,5,300,4,320\n", encoding="utf-8")
    tiny.skip_write.add("visits")
    with pytest.raises(DataError) as err:
        read_and_clean(tiny.load())
    message = err.value.render()
    assert (
        "ambiguous column name(s): 'pain_late_week12' reads as outcome 'pain' at visit "
        "'late_week12' and as outcome 'pain_late' at visit 'week12'" in message
    )
    assert "'pain_baseline', 'pain_week12'" in message  # the expected names
    assert "visits.csv" in message


def test_misnamed_visit_column_is_refused_and_named(tmp_path: Path) -> None:
    trial = _wide_trial(
        tmp_path,
        DEFAULT,
        {
            "Pain VAS_week12": "Pain VAS_wk12",
            "HbA1c_week6": "hba1c week 6",
            "Treadmill VO2_week26": "Treadmil VO2_wk26",  # close to an outcome's column
        },
    )
    with pytest.raises(DataError) as err:
        read_and_clean(trial, ROOT)
    message = err.value.render()
    assert (
        "column(s) that match no outcome and visit: 'Pain VAS_wk12' (did you mean "
        "'Pain VAS_week12'?); 'hba1c week 6' (did you mean 'HbA1c_week6'?); "
        "'Treadmil VO2_wk26'" in message
    )
    assert "'Pain VAS_baseline', 'Pain VAS_week6'" in message
    assert "drop_columns" in message
    assert "Site" not in message  # a subject-level column is no visit column


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"layout": "wide", "wide_columns": "{outcome}_v"}, "must contain {visit} exactly once"),
        ({"layout": "wide", "wide_columns": "{visit}"}, "must contain {outcome} exactly once"),
        ({"layout": "wide", "wide_columns": "{outcome}_{visit}_{visit}"}, "{visit} exactly once"),
        ({"wide_columns": "{outcome}_{visit}"}, "is given but data.layout is long"),
    ],
)
def test_bad_wide_columns_pattern_is_a_config_error(
    tiny: TinyTrial, data: dict[str, str], problem: str
) -> None:
    tiny.config["data"].update(data)
    with pytest.raises(ConfigError) as err:
        tiny.load()
    assert "key data.wide_columns" in str(err.value)
    assert problem in str(err.value)


def _tiny_wide(tiny: TinyTrial, rows: list[str]) -> None:
    header = "subject_id,pain_baseline,pain_week6,pain_week12,6MWD_baseline,6MWD_week6\n"
    (tiny.folder / "visits.csv").write_text(header + "".join(rows), encoding="utf-8")
    tiny.skip_write.add("visits")


def test_long_layout_with_a_wide_file_says_how_to_declare_it(tiny: TinyTrial) -> None:
    _tiny_wide(tiny, ["S01,6,5,4,400,410\n"])
    with pytest.raises(DataError) as err:
        read_and_clean(tiny.load())
    assert "visit column 'visit' not found" in err.value.render()
    assert "layout: wide" in str(err.value.fix)


def test_wide_file_keeps_the_long_file_rules(tiny: TinyTrial) -> None:
    tiny.config["data"]["layout"] = "wide"
    # S03 is repeated exactly; S04 has no visit at week12 and an empty week6 walk.
    rows = ["S01,6,5,4,400,410\n", "S02,7,6,5,350,380\n", "S03,5.5,5.6,,450,455\n",
            "S03,5.5,5.6,,450,455\n", "S04,6.8,x,,300,\n"]  # fmt: skip
    _tiny_wide(tiny, rows)
    result = read_and_clean(tiny.load())
    queries = result.queries[result.queries["file"].str.endswith("visits.csv")]
    # One query per cell, though the row stands for a row per visit of the long table.
    assert queries[["row", "column", "value", "rule"]].values.tolist() == [
        [5, "subject_id", "S03", "exact_duplicate"],
        [6, "pain_week6", "x", "not_a_number"],
    ]
    s04 = result.visits[result.visits["subject_id"] == "S04"]
    assert s04["visit"].tolist() == ["baseline", "week6"]  # no week12 cell: no week12 visit
    assert s04["walk"].isna().tolist() == [False, True]
    assert s04["source_row"].tolist() == [6, 6]


def test_personal_data_in_a_wide_file_is_refused(tiny: TinyTrial) -> None:
    tiny.config["data"]["layout"] = "wide"
    header = "subject_id,Email,pain_baseline,6MWD_baseline\n"
    (tiny.folder / "visits.csv").write_text(header + "S01,a@b.c,6,400\n", encoding="utf-8")
    tiny.skip_write.add("visits")
    with pytest.raises(DataError, match="'Email' look like direct personal data"):
        read_and_clean(tiny.load())


def test_one_wide_file_holds_subjects_and_visits(tmp_path: Path, long_result: CleanResult) -> None:
    trial = _wide_trial(tmp_path, DEFAULT)
    subjects = pd.read_csv(ROOT / trial.subjects_path, dtype=str, keep_default_na=False)
    wide = pd.read_csv(tmp_path / "wide.csv", dtype=str, keep_default_na=False)
    both = subjects.merge(wide, on="subject_id", how="left").fillna("")
    both.to_csv(tmp_path / "both.csv", index=False, lineterminator="\n")
    one_file = replace(trial, subjects_path=str(tmp_path / "both.csv"),
                       visits_path=str(tmp_path / "both.csv"))  # fmt: skip
    result = read_and_clean(one_file, ROOT)
    for table in ("subjects", "visits"):
        pd.testing.assert_frame_equal(
            getattr(result, table).drop(columns="source_row"),
            getattr(long_result, table).drop(columns="source_row"),
        )
    # The subjects file's query (row 4: "EDUCATION") and the visits' name the one file.
    assert set(result.queries["file"]) == {str(tmp_path / "both.csv")}
    assert len(result.queries) == 4


@pytest.mark.workflow
def test_workflow_on_a_wide_file_gives_the_long_file_effects(tmp_path: Path) -> None:
    work = _project(tmp_path)
    folder = work / "data" / "raw" / "exercise_wide"
    folder.mkdir()
    trial = _wide_trial(folder, DEFAULT)
    (work / "config" / "trials" / "exercise_wide.yaml").write_text(
        Path(trial.source)
        .read_text(encoding="utf-8")
        .replace(str(folder), "data/raw/exercise_wide"),
        encoding="utf-8",
    )
    targets = [f"results/{t}/tables/effects.csv" for t in ("exercise_education", "exercise_wide")]
    run = _snakemake(work, *targets, "--config", "trials=exercise_education,exercise_wide",
                     "job_granularity=per_step")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    long_effects, wide_effects = ((work / t).read_bytes() for t in targets)
    assert long_effects.count(b"\n") > 10  # estimates of every outcome, not an empty table
    assert wide_effects == long_effects
