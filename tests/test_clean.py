"""One test per cleaning rule: each feeds the tiny trial one bad input."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from trialflow.clean import QUERY_COLUMNS, read_and_clean
from trialflow.errors import ConfigError, DataError

from .conftest import TinyTrial


def _clean(tiny: TinyTrial):
    return read_and_clean(tiny.load())


def _error(tiny: TinyTrial, *fragments: str) -> DataError:
    with pytest.raises(DataError) as info:
        _clean(tiny)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    assert "What to do" in text
    return info.value


def _query(result, rule: str) -> pd.DataFrame:
    q = result.queries
    return q.loc[q["rule"] == rule]


def _visit_row(tiny: TinyTrial, subject: str, visit: str) -> int:
    """Spreadsheet row of a subject's visit in visits.csv (header is row 1)."""
    for i, row in enumerate(tiny.visits):
        if row["subject_id"] == subject and row["visit"] == visit:
            return i + 2
    raise KeyError((subject, visit))


def test_clean_trial_is_clean(tiny: TinyTrial) -> None:
    result = _clean(tiny)
    assert list(result.queries.columns) == list(QUERY_COLUMNS)
    assert result.queries.empty
    assert result.subjects["subject_id"].tolist() == ["S01", "S02", "S03", "S04"]
    assert len(result.visits) == len(tiny.visits)
    assert result.covariate_types == {"age": "numeric", "sex": "categorical"}
    assert list(result.visits.columns[:5]) == ["subject_id", "arm", "visit", "visit_index", "week"]
    walk = result.visits.set_index(["subject_id", "visit"])["walk"]
    assert walk["S02", "week12"] == 400.0
    assert math.isnan(walk["S04", "week12"])  # empty cell: missing, no query


def test_labels_trimmed_with_query(tiny: TinyTrial) -> None:
    tiny.visits[1]["visit"] = "  week6 "
    tiny.subjects[0]["arm"] = "control "
    result = _clean(tiny)
    q = _query(result, "label_whitespace")
    assert set(q["column"]) == {"visit", "arm"}
    assert (result.visits["visit"] == "week6").sum() == 4


def test_arm_label_case_mapped_with_query(tiny: TinyTrial) -> None:
    tiny.subjects[1]["arm"] = "EXERCISE"
    result = _clean(tiny)
    q = _query(result, "label_case")
    assert q[["row", "column", "value"]].values.tolist() == [[3, "arm", "EXERCISE"]]
    assert result.subjects.loc[1, "arm"] == "exercise"


def test_unknown_arm_is_an_error_with_closest_label(tiny: TinyTrial) -> None:
    tiny.subjects[1]["arm"] = "exercize"
    err = _error(tiny, "unknown arm label", "'exercize'", "did you mean 'exercise'")
    assert err.row == 3 and err.column == "arm" and err.file.endswith("subjects.csv")


def test_unknown_visit_is_an_error_with_closest_label(tiny: TinyTrial) -> None:
    tiny.visits[2]["visit"] = "week 13"
    err = _error(tiny, "unknown visit label", "'week 13'", "did you mean")
    assert err.row == 4 and err.column == "visit"


def test_visit_given_as_week_number(tiny: TinyTrial) -> None:
    tiny.visits[1]["visit"] = "6"
    result = _clean(tiny)
    q = _query(result, "visit_as_week")
    assert q["action"].tolist() == ["read as visit 'week6'"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("n/a", "not_a_number"),
        ("missing", "not_a_number"),
        ("<5", "not_a_number"),
        ("NaN", "not_a_number"),
        ("inf", "not_a_number"),
        ("5,5", "decimal_comma"),
        ("1,250", "thousands_separator"),
    ],
)
def test_text_in_numeric_cell_becomes_a_query(tiny: TinyTrial, text: str, rule: str) -> None:
    column = "pain" if rule != "thousands_separator" else "6MWD"
    tiny.visits[4][column] = text
    result = _clean(tiny)
    q = _query(result, rule)
    assert q[["row", "column", "value", "subject_id"]].values.tolist() == [[6, column, text, "S02"]]
    name = "pain" if column == "pain" else "walk"
    value = result.visits.set_index(["subject_id", "visit"]).loc[("S02", "week6"), name]
    assert math.isnan(value)


def test_configured_missing_codes_are_missing_without_query(tiny: TinyTrial) -> None:
    tiny.config["data"]["missing_values"] = ["NA", "."]
    tiny.visits[4]["pain"] = "NA"
    tiny.visits[5]["pain"] = "."
    result = _clean(tiny)
    assert result.queries.empty
    assert result.visits["pain"].isna().sum() == 2


@pytest.mark.parametrize("value", ["10.5", "-1"])
def test_out_of_range_set_missing_with_query(tiny: TinyTrial, value: str) -> None:
    tiny.visits[0]["pain"] = value
    result = _clean(tiny)
    q = _query(result, "out_of_range")
    assert q[["row", "column", "value"]].values.tolist() == [[2, "pain", value]]
    assert "0 to 10" in q["action"].iloc[0]
    assert math.isnan(result.visits.loc[0, "pain"])


def test_range_is_inclusive(tiny: TinyTrial) -> None:
    tiny.visits[0]["pain"] = "10"
    tiny.visits[1]["pain"] = "0"
    assert _clean(tiny).queries.empty


def test_exact_duplicate_row_dropped_with_query(tiny: TinyTrial) -> None:
    tiny.visits.insert(2, dict(tiny.visits[1]))
    result = _clean(tiny)
    q = _query(result, "exact_duplicate")
    assert q["row"].tolist() == [4]
    assert "identical to row 3" in q["action"].iloc[0]
    assert len(result.visits) == len(tiny.visits) - 1


def test_exact_duplicate_subject_row_dropped_with_query(tiny: TinyTrial) -> None:
    tiny.subjects.append(dict(tiny.subjects[0]))
    result = _clean(tiny)
    assert _query(result, "exact_duplicate")["row"].tolist() == [6]
    assert len(result.subjects) == 4


def test_duplicate_with_whitespace_difference_is_exact(tiny: TinyTrial) -> None:
    dup = dict(tiny.visits[1])
    dup["visit"] = " week6"
    tiny.visits.insert(2, dup)
    result = _clean(tiny)
    assert _query(result, "exact_duplicate")["row"].tolist() == [4]
    # the dropped row's whitespace query is not double counted
    assert _query(result, "label_whitespace").empty


def test_conflicting_duplicates_are_an_error(tiny: TinyTrial) -> None:
    dup = dict(tiny.visits[1])
    dup["pain"] = "1.0"
    tiny.visits.insert(2, dup)
    err = _error(tiny, "same subject and visit but differ", "S01, week6", "rows 3, 4")
    assert err.row == 3


def test_conflicting_subject_rows_are_an_error(tiny: TinyTrial) -> None:
    tiny.subjects.append({"subject_id": "S01", "arm": "exercise", "age": "61", "sex": "F"})
    _error(tiny, "same subject identifier but differ", "rows 2, 6")


def test_subject_in_visits_not_in_subjects(tiny: TinyTrial) -> None:
    tiny.visits.append({"subject_id": "S99", "visit": "baseline", "pain": "5", "6MWD": "300"})
    err = _error(tiny, "not in the subjects file", "S99")
    assert err.row == len(tiny.visits) + 1


def test_subject_without_arm(tiny: TinyTrial) -> None:
    tiny.subjects[2]["arm"] = "  "
    err = _error(tiny, "have no arm", "S03")
    assert err.row == 4 and err.column == "arm"


def test_subject_without_identifier(tiny: TinyTrial) -> None:
    tiny.subjects[2]["subject_id"] = ""
    _error(tiny, "no subject identifier", "rows 4")


def test_visits_arm_column_must_agree(tiny: TinyTrial) -> None:
    for row in tiny.visits:
        row["arm"] = "control" if row["subject_id"] in ("S01", "S03") else "exercise"
    assert _clean(tiny).queries.empty
    tiny.visits[0]["arm"] = "exercise"
    _error(tiny, "subject S01 is in arm 'control'")


@pytest.mark.parametrize(
    "column",
    ["Name", "date of birth", "E-mail", "Phone", "Address", "DOB", "E-mail address",
     "Phone No.", "Mobile number", "DOB (dd/mm/yyyy)", "Patient initials", "Address line 1",
     "NHS no", "Patient name"],
)  # fmt: skip
def test_personal_data_refused(tiny: TinyTrial, column: str) -> None:
    for row in tiny.subjects:
        row[column] = "x"
    err = _error(tiny, "direct personal data", repr(column), "drop_columns")
    assert err.column == column


def test_personal_data_dropped_when_listed(tiny: TinyTrial) -> None:
    for row in tiny.subjects:
        row["Name"] = "Jane Doe"
    tiny.config["drop_columns"] = ["Name"]
    result = _clean(tiny)
    assert "Name" not in result.subjects.columns
    assert result.queries.empty


def test_visit_name_column_is_not_personal_data(tiny: TinyTrial) -> None:
    for row in tiny.visits:
        row["Visit Name"] = row.pop("visit")
    tiny.config["columns"] = {"visit": "Visit Name"}
    assert len(_clean(tiny).visits) == len(tiny.visits)


def test_missing_outcome_column_names_closest(tiny: TinyTrial) -> None:
    tiny.config["outcomes"][1]["column"] = "6MWT"
    err = _error(tiny, "outcome column '6MWT' not found", "did you mean '6MWD'")
    assert err.row == 1


def test_missing_covariate_column(tiny: TinyTrial) -> None:
    tiny.config["covariates"] = ["Age"]
    _error(tiny, "covariate column 'Age' not found", "did you mean 'age'")


def test_missing_covariate_value_is_a_query(tiny: TinyTrial) -> None:
    tiny.subjects[1]["age"] = ""
    tiny.subjects[2]["sex"] = ""
    result = _clean(tiny)
    q = _query(result, "missing_covariate")
    assert q[["row", "column"]].values.tolist() == [[3, "age"], [4, "sex"]]
    assert math.isnan(result.subjects.loc[1, "age"])


def test_text_in_numeric_covariate(tiny: TinyTrial) -> None:
    tiny.subjects[1]["age"] = "fifty"
    tiny.config["covariates"] = [{"name": "age", "type": "numeric"}, "sex"]
    result = _clean(tiny)
    assert _query(result, "not_a_number")["value"].tolist() == ["fifty"]
    assert _query(result, "missing_covariate")["row"].tolist() == [3]


def test_mostly_numeric_covariate_stays_numeric_with_a_query(tiny: TinyTrial) -> None:
    tiny.subjects[1]["age"] = "unknown"
    result = _clean(tiny)
    assert result.covariate_types["age"] == "numeric"
    assert _query(result, "not_a_number")["value"].tolist() == ["unknown"]
    assert math.isnan(result.subjects.loc[1, "age"])


def test_mostly_text_covariate_is_categorical(tiny: TinyTrial) -> None:
    for row, site in zip(tiny.subjects, ["A", "B", "3", "A"], strict=True):
        row["site"] = site
    tiny.config["covariates"] = ["age", "site"]
    assert _clean(tiny).covariate_types["site"] == "categorical"


def test_category_spellings_are_merged_with_a_query(tiny: TinyTrial) -> None:
    for row, sex in zip(tiny.subjects, ["F", "f", "M", " F "], strict=True):
        row["sex"] = sex
    result = _clean(tiny)
    assert result.subjects["sex"].tolist() == ["F", "F", "M", "F"]
    q = _query(result, "label_case")
    assert q[["row", "value"]].values.tolist() == [[3, "f"]]


def test_few_whole_numbers_get_a_note(tiny: TinyTrial) -> None:
    tiny.subjects.append({"subject_id": "S05", "arm": "control", "age": "3", "sex": "F"})
    tiny.subjects.append({"subject_id": "S06", "arm": "exercise", "age": "3", "sex": "M"})
    for row, site in zip(tiny.subjects, ["1", "2", "3", "1", "2", "3"], strict=True):
        row["site"] = site
    tiny.config["covariates"] = ["site", "sex"]
    q = _query(_clean(tiny), "numeric_few_values")
    assert "declare {name: site, type: categorical}" in q["action"].iloc[0]


def test_non_ascii_digits_are_a_query_not_a_silent_nan(tiny: TinyTrial) -> None:
    tiny.visits[4]["pain"] = "\uff16.\uff10"  # full-width 6.0
    q = _query(_clean(tiny), "not_a_number")
    assert q["row"].tolist() == [6]


def test_row_numbers_count_blank_lines(tiny: TinyTrial) -> None:
    tiny.visits[4]["pain"] = "n/a"
    path = tiny.folder / "visits.csv"
    tiny.write()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], "", ",,,", *lines[2:]]) + "\n")
    tiny.skip_write.add("visits")
    result = _clean(tiny)
    assert _query(result, "not_a_number")["row"].tolist() == [8]  # file line of that cell
    assert sorted(result.visits["source_row"])[:3] == [2, 5, 6]


def test_custom_column_names(tiny: TinyTrial) -> None:
    for rows in (tiny.subjects, tiny.visits):
        for row in rows:
            row["Patient ID"] = row.pop("subject_id")
    for row in tiny.subjects:
        row["Group"] = row.pop("arm")
    tiny.config["columns"] = {"subject_id": "Patient ID", "arm": "Group"}
    result = _clean(tiny)
    assert result.subjects["arm"].tolist() == ["control", "exercise", "control", "exercise"]


def test_missing_data_file_names_the_config(tiny: TinyTrial) -> None:
    tiny.config["data"]["visits"] = "nowhere.csv"
    tiny.skip_write.add("visits")
    with pytest.raises(ConfigError, match=r"nowhere\.csv not found") as info:
        _clean(tiny)
    assert "tiny.yaml" in str(info.value)


def test_every_raw_row_is_kept_or_queried(tiny: TinyTrial) -> None:
    tiny.visits.insert(2, dict(tiny.visits[1]))
    tiny.visits[6]["pain"] = "n/a"
    result = _clean(tiny)
    kept = set(result.visits["source_row"])
    dropped = set(_query(result, "exact_duplicate")["row"])
    assert kept | dropped == set(range(2, len(tiny.visits) + 2))
    assert not kept & dropped
