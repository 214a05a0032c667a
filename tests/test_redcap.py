"""REDCap exports (data.format: redcap): the bundled weightbearing trial exported as REDCap
does cleans to the same data as its CSV twin, with queries naming the export's cells."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from trialflow.clean import CleanResult, read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.errors import ConfigError, DataError
from trialflow.redcap import CHOICES, parse_choices, read_redcap

from .conftest import ROOT
from .test_workflow import _project, _snakemake

TRIAL = ROOT / "config" / "trials" / "weightbearing_redcap.yaml"
TWIN = ROOT / "config" / "trials" / "weightbearing.yaml"
EXPORT = ROOT / "data" / "raw" / "weightbearing_redcap" / "export.csv"
DICTIONARY = ROOT / "data" / "raw" / "weightbearing_redcap" / "dictionary.csv"


def _export() -> pd.DataFrame:
    return pd.read_csv(EXPORT, dtype=str, keep_default_na=False)


def _trial(
    folder: Path,
    export: pd.DataFrame | None = None,
    dictionary: pd.DataFrame | None = None,
    data: dict[str, Any] | None = None,
) -> TrialConfig:
    """The REDCap trial reading a changed export or dictionary written to ``folder``."""
    content = yaml.safe_load(TRIAL.read_text(encoding="utf-8"))
    if export is not None:
        export.to_csv(folder / "export.csv", index=False, lineterminator="\n")
        content["data"]["records"] = str(folder / "export.csv")
    if dictionary is not None:
        dictionary.to_csv(folder / "dictionary.csv", index=False, lineterminator="\n")
        content["data"]["dictionary"] = str(folder / "dictionary.csv")
    content["data"].update(data or {})
    path = folder / "trial.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return load_trial(path)


def _row_of(record: str, event: str) -> int:
    """The spreadsheet row (header = 1) of a record's event in the bundled export."""
    frame = _export()
    where = frame.index[(frame["record_id"] == record) & (frame["redcap_event_name"] == event)]
    return int(where[0]) + 2


@pytest.fixture(scope="module")
def redcap() -> CleanResult:
    return read_and_clean(load_trial(TRIAL), ROOT)


@pytest.fixture(scope="module")
def twin() -> CleanResult:
    return read_and_clean(load_trial(TWIN), ROOT)


def test_generated_example_is_the_committed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_redcap", ROOT / "tests" / "data" / "redcap" / "make_redcap.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(ROOT)
    assert module.export() == EXPORT.read_text(encoding="utf-8")
    assert module.dictionary() == DICTIONARY.read_text(encoding="utf-8")


def test_export_cleans_to_the_csv_twin(redcap: CleanResult, twin: CleanResult) -> None:
    pd.testing.assert_frame_equal(
        redcap.visits.drop(columns="source_row"), twin.visits.drop(columns="source_row")
    )
    expected = twin.subjects.drop(columns="source_row").rename(
        columns={"Protocol deviation": "protocol_deviation", "Age (years)": "age", "Sex": "sex"}
    )
    expected["sex"] = expected["sex"].map({"F": "Female", "M": "Male"})
    got = redcap.subjects.drop(columns="source_row")
    pd.testing.assert_frame_equal(got, expected[list(got.columns)])
    assert redcap.covariate_types == {"age": "numeric", "sex": "categorical"}


def test_events_are_visits_and_rows_are_the_exports(redcap: CleanResult) -> None:
    first = redcap.visits[redcap.visits["subject_id"] == "WB001"]
    assert first["visit"].tolist() == ["baseline", "week6", "week12"]
    events = ["baseline_arm_1", "week_6_arm_1", "week_12_arm_1"]
    assert first["source_row"].tolist() == [_row_of("WB001", e) for e in events]
    # A subject's row is the row of its randomisation (the arm's field).
    assert redcap.subjects["source_row"].iloc[0] == _row_of("WB001", "baseline_arm_1")


def test_queries_name_the_export_row_and_field(redcap: CleanResult) -> None:
    queries = redcap.queries.set_index("rule")
    assert queries.loc["not_a_number", "row"] == _row_of("WB004", "week_6_arm_1")
    assert queries.loc["not_a_number", "column"] == "daily_steps"
    assert queries.loc["thousands_separator", "column"] == "daily_steps"
    assert queries.loc["thousands_separator", "file"] == "data/raw/weightbearing_redcap/export.csv"


def test_unmapped_event_is_one_query_and_its_fields_are_read(redcap: CleanResult) -> None:
    unmapped = redcap.queries[redcap.queries["rule"] == "unmapped_event"]
    assert unmapped["value"].tolist() == ["study_end_arm_1"]
    assert unmapped["column"].tolist() == ["redcap_event_name"]
    # The protocol deviation is only recorded at the study-end event.
    subjects = redcap.subjects.set_index("subject_id")
    assert subjects.loc["WB006", "protocol_deviation"] == "major"
    assert subjects.loc["WB010", "protocol_deviation"] == "minor"


def test_choice_codes_become_labels(redcap: CleanResult) -> None:
    export = _export()
    baseline = export[export["redcap_event_name"] == "baseline_arm_1"].set_index("record_id")
    codes = {"1": "nonweightbearing", "2": "weightbearing"}
    arms = redcap.subjects.set_index("subject_id")["arm"]
    assert arms.to_dict() == baseline["rand_group"].map(codes).to_dict()
    assert set(redcap.subjects["sex"]) == {"Female", "Male"}


def test_choices_parse_as_redcap_writes_them() -> None:
    got = parse_choices("1, Exercise | 2, Education, leaflet|3,x", file="d", row=2, name="g")
    assert got == {"1": "Exercise", "2": "Education, leaflet", "3": "x"}
    with pytest.raises(DataError, match="'Exercise' of field 'g'"):
        parse_choices("Exercise | 2, Education", file="d", row=2, name="g")


def test_unknown_code_stops_with_the_row(tmp_path: Path) -> None:
    export = _export()
    export.loc[0, "sex"] = "3"
    with pytest.raises(DataError) as err:
        read_redcap(_trial(tmp_path, export=export), ROOT)
    assert "code '3' of field 'sex'" in err.value.message
    assert err.value.row == 2 and err.value.column == "sex"


def test_form_status_columns_are_ignored(tmp_path: Path, redcap: CleanResult) -> None:
    export = _export()
    status = [c for c in export.columns if c.endswith("_complete")]
    assert status
    export[status] = "0"
    result = read_and_clean(_trial(tmp_path, export=export.drop(columns=status[0])), ROOT)
    pd.testing.assert_frame_equal(result.visits, redcap.visits)
    pd.testing.assert_frame_equal(result.subjects, redcap.subjects)


def test_repeating_instrument_is_refused_with_row_and_instrument(tmp_path: Path) -> None:
    export = _export()
    repeat = export.iloc[[0]].assign(
        redcap_repeat_instrument="adverse_events", redcap_repeat_instance="1"
    )
    export = pd.concat([export.iloc[:4], repeat, export.iloc[4:]], ignore_index=True)
    with pytest.raises(DataError) as err:
        read_redcap(_trial(tmp_path, export=export), ROOT)
    assert err.value.row == 6  # header, four rows, then the repeated form
    assert "'adverse_events'" in err.value.message and "WB001" in err.value.message
    assert err.value.fix is not None and "without the repeating instrument" in err.value.fix


def test_field_missing_from_dictionary_stops(tmp_path: Path) -> None:
    dictionary = pd.read_csv(DICTIONARY, dtype=str, keep_default_na=False)
    dictionary = dictionary[dictionary["Variable / Field Name"] != "hba1c"]
    with pytest.raises(DataError) as err:
        read_redcap(_trial(tmp_path, dictionary=dictionary), ROOT)
    assert "field 'hba1c' is not in the data dictionary" in err.value.message
    assert err.value.file == str(tmp_path / "dictionary.csv")


def test_field_missing_from_export_stops(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no column of field 'age'") as err:
        read_redcap(_trial(tmp_path, export=_export().drop(columns="age")), ROOT)
    assert err.value.row == 1


def test_unmapped_event_with_outcomes_stops(tmp_path: Path) -> None:
    events = {"baseline_arm_1": "baseline", "week_12_arm_1": "week12"}
    with pytest.raises(DataError) as err:
        read_redcap(_trial(tmp_path, data={"events": events}), ROOT)
    assert "event 'week_6_arm_1' holds outcome field 'six_minute_walk'" in err.value.message
    assert err.value.row == _row_of("WB001", "week_6_arm_1")


def test_subject_fields_come_from_any_event_and_queries_name_their_row(tmp_path: Path) -> None:
    export = _export()
    base, week6, end = (
        _row_of("WB001", e) - 2 for e in ("baseline_arm_1", "week_6_arm_1", "study_end_arm_1")
    )
    export.loc[end, "rand_group"] = export.loc[base, "rand_group"]
    export.loc[week6, "age"] = "sixty-nine"
    export.loc[base, ["rand_group", "age"]] = ""
    result = read_and_clean(_trial(tmp_path, export=export), ROOT)
    assert result.subjects["arm"].iloc[0] == "weightbearing"
    assert result.subjects["source_row"].iloc[0] == end + 2  # the row of the arm
    age = result.queries[result.queries["rule"] == "not_a_number"].set_index("subject_id")
    assert (age.loc["WB001", "row"], age.loc["WB001", "column"]) == (week6 + 2, "age")
    missing = result.queries[result.queries["rule"] == "missing_covariate"]
    assert missing[["row", "column"]].values.tolist() == [[week6 + 2, "age"]]


def test_events_of_redcap_arms_can_be_one_visit(tmp_path: Path, redcap: CleanResult) -> None:
    export = _export()
    second = export["record_id"] == "WB002"
    export.loc[second, "redcap_event_name"] = export.loc[second, "redcap_event_name"].str.replace(
        "_arm_1", "_arm_2"
    )
    events = {"baseline_arm_1": "baseline", "week_6_arm_1": "week6", "week_12_arm_1": "week12"}
    events |= {k.replace("_arm_1", "_arm_2"): v for k, v in events.items()}
    result = read_and_clean(_trial(tmp_path, export=export, data={"events": events}), ROOT)
    pd.testing.assert_frame_equal(result.visits, redcap.visits)
    unmapped = result.queries[result.queries["rule"] == "unmapped_event"]["value"]
    assert unmapped.tolist() == ["study_end_arm_1, study_end_arm_2"]


def test_subject_field_with_two_values_stops(tmp_path: Path) -> None:
    export = _export()
    export.loc[1, "sex"] = "2"  # WB001's week-6 row says male, its baseline female
    with pytest.raises(DataError, match="record 'WB001' has two values of field 'sex'") as err:
        read_redcap(_trial(tmp_path, export=export), ROOT)
    assert err.value.row == 3


def test_export_without_events_stops(tmp_path: Path) -> None:
    export = _export().drop(columns="redcap_event_name")
    with pytest.raises(DataError, match="no 'redcap_event_name' column"):
        read_redcap(_trial(tmp_path, export=export), ROOT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"events": {"baseline_arm_1": "week13"}}, "data.events.baseline_arm_1: 'week13'"),
        ({"subjects": "s.csv"}, "key data.subjects: is given with format: redcap"),
        ({"randomisation": {"column": "x"}}, "key data.randomisation"),
        (
            {"format": "tables", "subjects": "s.csv", "visits": "v.csv"},
            "key data.records: is a key of REDCap exports",
        ),
    ],
)
def test_redcap_keys_are_checked(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _trial(tmp_path, data=data)


def test_redcap_keys_are_required(tmp_path: Path) -> None:
    content = yaml.safe_load(TRIAL.read_text(encoding="utf-8"))
    del content["data"]["dictionary"]
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    with pytest.raises(ConfigError, match="'dictionary' is a required property"):
        load_trial(path)


@pytest.mark.workflow
def test_workflow_gives_the_csv_twins_effects(tmp_path: Path) -> None:
    work = _project(tmp_path)
    targets = [f"results/{t}/tables/effects.csv" for t in ("weightbearing", "weightbearing_redcap")]
    config = ["--config", "trials=weightbearing,weightbearing_redcap", "job_granularity=per_step"]
    run = _snakemake(work, *targets, *config)
    assert run.returncode == 0, run.stderr[-3000:]
    twin, redcap = ((work / t).read_bytes() for t in targets)
    assert redcap == twin
    # The dictionary is an input of the trial's cleaning: changing it cleans the trial again.
    dictionary = work / "data" / "raw" / "weightbearing_redcap" / "dictionary.csv"
    dictionary.write_text(dictionary.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    again = _snakemake(work, *targets, "--dry-run", *config)
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:    .*\n)*?    wildcards: trial=(\S+)", again.stdout)
    assert set(jobs) == {(r, "weightbearing_redcap") for r in ("clean", "derive", "models")}


def _dictionary_with(field: str, **change: str) -> pd.DataFrame:
    dictionary = pd.read_csv(DICTIONARY, dtype=str, keep_default_na=False)
    where = dictionary["Variable / Field Name"] == field
    for column, value in change.items():
        dictionary.loc[where, column] = value
    return dictionary


def test_yes_no_fields_read_as_yes_and_no(tmp_path: Path) -> None:
    export = _export()
    export["sex"] = export["sex"].map({"1": "1", "2": "0", "": ""})
    dictionary = _dictionary_with("sex", **{"Field Type": "yesno", CHOICES: ""})
    subjects, _ = read_redcap(_trial(tmp_path, export=export, dictionary=dictionary), ROOT)
    assert set(subjects.frame["sex"]) == {"Yes", "No"}


def test_checkbox_field_is_refused(tmp_path: Path) -> None:
    dictionary = _dictionary_with("sex", **{"Field Type": "checkbox"})
    with pytest.raises(DataError, match="field 'sex' is a checkbox"):
        read_redcap(_trial(tmp_path, dictionary=dictionary), ROOT)
