"""Write the corpus of broken trials under tests/data/bad/<case>/.

Each case is a small trial (12 subjects, 3 visits, 2 outcomes, covariates age and sex) broken
in one way, with ``expected.yaml`` saying what must happen: ``outcome: error`` (the run stops
with a message naming the file, the row and column where there is one, and the fix) or
``outcome: query`` (the run completes, queries.csv holds exactly the listed queries, each
with its file, row, column, value, rule, action and subject, and every randomized subject is
accounted for). Run from the project root:
``python tests/data/bad/make_cases.py``; a test checks that the committed corpus is what this
script writes.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent

BASE_TRIAL: dict[str, Any] = {
    "title": "Corpus trial",
    "data": {"subjects": "subjects.csv", "visits": "visits.csv"},
    "arms": {"control": "control", "treatment": "exercise"},
    "visits": [
        {"label": "baseline", "week": 0},
        {"label": "week6", "week": 6},
        {"label": "week12", "week": 12},
    ],
    "baseline_visit": "baseline",
    "primary_visit": "week12",
    "covariates": ["age", "sex"],
    "outcomes": [
        {"name": "pain", "label": "Pain VAS", "unit": "cm", "range": [0, 10],
         "better": "lower", "domain": "pain", "primary": True},
        {"name": "walk", "column": "6MWD", "label": "6-minute walk", "unit": "m",
         "range": [0, 900], "better": "higher", "domain": "function"},
    ],
}  # fmt: skip


def base_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """12 subjects (6 per arm), every visit attended, values from a fixed seed."""
    rng = np.random.default_rng(20261126)
    ids = [f"S{i:02d}" for i in range(1, 13)]
    arms = ["control", "exercise"] * 6
    subjects = pd.DataFrame(
        {
            "subject_id": ids,
            "arm": arms,
            "age": rng.integers(40, 80, 12).astype(str),
            "sex": rng.choice(["F", "M"], 12),
        }
    )
    rows = []
    for sid, arm in zip(ids, arms, strict=True):
        pain0, walk0 = rng.normal(6, 1.2), rng.normal(400, 60)
        for k, visit in enumerate(["baseline", "week6", "week12"]):
            effect = 0.4 * k if arm == "exercise" else 0.1 * k
            rows.append(
                {
                    "subject_id": sid,
                    "visit": visit,
                    "pain": f"{np.clip(pain0 - effect + rng.normal(0, 0.5), 0, 10):.1f}",
                    "6MWD": f"{walk0 + 12 * k * (arm == 'exercise') + rng.normal(0, 15):.0f}",
                }
            )
    return subjects, pd.DataFrame(rows)


@dataclass
class Case:
    """One broken trial: files to write and the expected outcome."""

    config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(BASE_TRIAL))
    subjects: pd.DataFrame = field(default_factory=lambda: base_tables()[0])
    visits: pd.DataFrame = field(default_factory=lambda: base_tables()[1])
    # Raw file contents that replace the tables: name -> bytes (or None: do not write).
    files: dict[str, bytes | None] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


def _csv(frame: pd.DataFrame, sep: str = ",") -> bytes:
    return frame.to_csv(index=False, sep=sep, lineterminator="\n").encode("utf-8")


CASES: dict[str, Callable[[Case], None]] = {}


def case(name: str) -> Callable[[Callable[[Case], None]], Callable[[Case], None]]:
    def register(func: Callable[[Case], None]) -> Callable[[Case], None]:
        CASES[name] = func
        return func

    return register


def error(c: Case, *message: str, file: str, row: int | None = None,
          column: str | None = None) -> None:  # fmt: skip
    c.expected = {"outcome": "error", "message": list(message), "file": file}
    if row is not None:
        c.expected["row"] = row
    if column is not None:
        c.expected["column"] = column


def query(c: Case, *queries: dict[str, Any]) -> None:
    """The run completes with exactly these queries (none: an empty query log)."""
    c.expected = {"outcome": "query", "queries": [_Flow(x) for x in queries]}


def q(file: str, row: int | None, column: str, value: str, rule: str, action: str,
      subject_id: str = "", *, last_row: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One expected row of queries.csv; with ``last_row``, the same query at every row from
    ``row`` to ``last_row``."""
    rows: dict[str, Any] = {"row": row} if last_row is None else {"row_range": [row, last_row]}
    return {"file": file, **rows, "column": column, "value": value, "rule": rule,
            "action": action, "subject_id": subject_id}  # fmt: skip


class _Flow(dict):
    """A mapping written on one line of expected.yaml (one query, one line)."""


class _Dumper(yaml.SafeDumper):
    """The safe dumper, with :class:`_Flow` mappings on one line (yaml.SafeDumper unchanged)."""


_Dumper.add_representer(
    _Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)
)

# The action of each kind of query (trialflow's words, as queries.csv shows them).
SET_MISSING = "set missing"
OUT_OF_RANGE = "set missing (allowed range 0 to 10)"
NO_COVARIATE = "missing; subject left out of covariate-adjusted models"


# --- files --------------------------------------------------------------------------------
@case("missing_file")
def _(c: Case) -> None:
    c.files["visits.csv"] = None
    error(c, "key data.visits: data file", "visits.csv not found", file="trial.yaml")


@case("empty_file")
def _(c: Case) -> None:
    c.files["visits.csv"] = b""
    error(c, "the file is empty", file="visits.csv")


@case("header_only")
def _(c: Case) -> None:
    c.files["visits.csv"] = b"subject_id,visit,pain,6MWD\n"
    error(c, "header but no data rows", file="visits.csv")


@case("zero_subjects")
def _(c: Case) -> None:
    c.files["subjects.csv"] = b"subject_id,arm,age,sex\n"
    error(c, "header but no data rows", file="subjects.csv")


@case("wrong_delimiter")
def _(c: Case) -> None:
    c.files["visits.csv"] = _csv(c.visits, sep="\t")
    error(c, "tab-separated", file="visits.csv", row=1)


@case("semicolon_decimal_comma")
def _(c: Case) -> None:
    # A spreadsheet in a European locale: ";" between columns, decimal commas.
    c.files["visits.csv"] = _csv(c.visits, sep=";").replace(b".", b",")
    query(c, q("visits.csv", None, "", "", "semicolon_separated",
               "file is ';'-separated with decimal commas (6,4 read as 6.4); read as such (save it "
               "as CSV with commas and decimal points to silence)"))  # fmt: skip


@case("semicolon_mixed_decimals")
def _(c: Case) -> None:
    text = _csv(c.visits, sep=";").split(b"\n")
    text[1:4] = [line.replace(b".", b",") for line in text[1:4]]
    c.files["visits.csv"] = b"\n".join(text)
    error(c, "semicolon-separated", "decimal mark is ambiguous", file="visits.csv")


@case("duplicate_column_names")
def _(c: Case) -> None:
    c.files["visits.csv"] = _csv(c.visits).replace(b"6MWD", b"pain", 1)
    error(c, "column name 'pain' appears 2 times", file="visits.csv", row=1, column="pain")


@case("ragged_row")
def _(c: Case) -> None:
    lines = _csv(c.visits).split(b"\n")
    lines[3] += b",99"
    c.files["visits.csv"] = b"\n".join(lines)
    error(c, "row has 5 cells but the header has 4 columns", file="visits.csv", row=4)


@case("unsupported_extension")
def _(c: Case) -> None:
    c.config["data"]["visits"] = "visits.json"
    c.files["visits.json"] = b"{}"
    error(c, "unsupported file type '.json'", file="visits.json")


@case("utf8_bom")
def _(c: Case) -> None:
    c.files["visits.csv"] = b"\xef\xbb\xbf" + _csv(c.visits)
    query(c)


@case("latin1_encoding")
def _(c: Case) -> None:
    c.subjects["site"] = ["Montr\u00e9al"] * 12
    c.files["subjects.csv"] = c.subjects.to_csv(index=False, lineterminator="\n").encode("latin-1")
    # The row of the first byte that is not UTF-8: every data row has one.
    query(c, q("subjects.csv", 2, "", "", "encoding",
               "file is not UTF-8; read as Latin-1 (re-save it as UTF-8 to silence)"))  # fmt: skip


@case("blank_lines")
def _(c: Case) -> None:
    c.files["visits.csv"] = _csv(c.visits) + b"\n,,,\n\n"
    query(c)


@case("excel_several_sheets")
def _(c: Case) -> None:
    c.config["data"]["subjects"] = "subjects.xlsx"
    c.files["subjects.xlsx"] = b"two-sheets"  # written as a workbook by write_case
    error(c, "the workbook has 2 sheets (Subjects, Notes)", file="subjects.xlsx")


@case("excel_sheet_named")
def _(c: Case) -> None:
    c.config["data"]["subjects"] = "subjects.xlsx"
    c.config["data"]["subjects_sheet"] = "Subjects"
    c.files["subjects.xlsx"] = b"two-sheets"
    query(c)


# --- numbers ------------------------------------------------------------------------------
def _text_case(name: str, text: str, rule: str, action: str) -> None:
    @case(name)
    def _(c: Case) -> None:
        c.visits.loc[4, "pain"] = text  # S02 at week6: row 6 of the file
        query(c, q("visits.csv", 6, "pain", text, rule, action, "S02"))


for _name, _text, _rule, _action in [
    ("text_na", "n/a", "not_a_number", SET_MISSING),
    ("text_missing", "missing", "not_a_number", SET_MISSING),
    ("text_less_than", "<5", "not_a_number", SET_MISSING),
    ("text_nan", "NaN", "not_a_number", SET_MISSING),
    ("text_inf", "inf", "not_a_number", SET_MISSING),
    ("decimal_comma", "5,5", "decimal_comma", "set missing; write decimals with a point (12.5)"),
    ("out_of_range", "12.5", "out_of_range", OUT_OF_RANGE),
    ("negative_value", "-1", "out_of_range", OUT_OF_RANGE),
]:
    _text_case(_name, _text, _rule, _action)


@case("thousands_separator")
def _(c: Case) -> None:
    c.visits.loc[4, "6MWD"] = "1,250"
    query(c, q("visits.csv", 6, "6MWD", "1,250", "thousands_separator",
               "set missing; write numbers without separators", "S02"))  # fmt: skip


@case("missing_value_codes")
def _(c: Case) -> None:
    c.config["data"]["missing_values"] = ["NA", "."]
    c.visits.loc[4, "pain"] = "NA"
    c.visits.loc[7, "6MWD"] = "."
    query(c)


# --- rows and labels ----------------------------------------------------------------------
@case("duplicated_rows")
def _(c: Case) -> None:
    c.visits = pd.concat([c.visits.iloc[:5], c.visits.iloc[[4]], c.visits.iloc[5:]])
    query(c, q("visits.csv", 7, "subject_id", "S02", "exact_duplicate",
               "row dropped (identical to row 6)", "S02"))  # fmt: skip


@case("conflicting_duplicates")
def _(c: Case) -> None:
    dup = c.visits.iloc[[4]].copy()
    dup["pain"] = "1.0"
    c.visits = pd.concat([c.visits.iloc[:5], dup, c.visits.iloc[5:]])
    error(c, "share the same subject and visit but differ", file="visits.csv", row=6)


@case("subject_not_in_subjects")
def _(c: Case) -> None:
    extra = pd.DataFrame([{"subject_id": "S99", "visit": "baseline", "pain": "5", "6MWD": "300"}])
    c.visits = pd.concat([c.visits, extra])
    error(c, "not in the subjects file", "S99", file="visits.csv", row=38, column="subject_id")


@case("leading_zero_ids")
def _(c: Case) -> None:
    c.visits["subject_id"] = c.visits["subject_id"].str.replace("S0", "S", regex=False)
    error(c, "not in the subjects file", file="visits.csv", column="subject_id")


@case("subject_without_arm")
def _(c: Case) -> None:
    c.subjects.loc[3, "arm"] = ""
    error(c, "have no arm", "S04", file="subjects.csv", row=5, column="arm")


@case("unknown_arm")
def _(c: Case) -> None:
    c.subjects.loc[3, "arm"] = "exercize"
    error(c, "unknown arm label", "did you mean 'exercise'", file="subjects.csv", row=5,
          column="arm")  # fmt: skip


@case("arm_case_whitespace")
def _(c: Case) -> None:
    c.subjects.loc[3, "arm"] = " EXERCISE "
    query(
        c,
        q("subjects.csv", 5, "arm", "' EXERCISE '", "label_whitespace",
          "leading/trailing spaces removed", "S04"),
        q("subjects.csv", 5, "arm", "EXERCISE", "label_case", "read as arm 'exercise'", "S04"),
    )  # fmt: skip


@case("unknown_visit")
def _(c: Case) -> None:
    c.visits.loc[1, "visit"] = "week 7"
    error(c, "unknown visit label", "'week 7'", file="visits.csv", row=3, column="visit")


@case("visit_labels_as_numbers")
def _(c: Case) -> None:
    weeks = {"baseline": "0", "week6": "6", "week12": "12"}
    pairs = zip(c.visits["subject_id"], c.visits["visit"], strict=True)
    query(c, *[q("visits.csv", row, "visit", weeks[v], "visit_as_week", f"read as visit '{v}'", s)
               for row, (s, v) in enumerate(pairs, start=2)])  # fmt: skip
    c.visits["visit"] = c.visits["visit"].map(weeks)


@case("more_visits_than_configured")
def _(c: Case) -> None:
    extra = c.visits.loc[c.visits["visit"] == "week12"].copy()
    extra["visit"] = "week24"
    c.visits = pd.concat([c.visits, extra])
    error(c, "unknown visit label", "'week24'", file="visits.csv", column="visit")


@case("no_baseline_some")
def _(c: Case) -> None:
    drop = (c.visits["subject_id"] == "S03") & (c.visits["visit"] == "baseline")
    c.visits = c.visits.loc[~drop]
    query(c, q("subjects.csv", 4, "subject_id", "S03", "no_baseline",
               "no baseline visit: left out of change-from-baseline analyses; counted in the ITT "
               "population", "S03"))  # fmt: skip


@case("no_baseline_anyone")
def _(c: Case) -> None:
    c.visits = c.visits.loc[c.visits["visit"] != "baseline"]
    error(c, "no subject has a baseline visit", file="visits.csv", column="visit")


@case("only_one_arm")
def _(c: Case) -> None:
    c.subjects["arm"] = "exercise"
    error(c, "no randomized subject is in arm 'control'", file="subjects.csv", column="arm")


@case("arm_with_one_subject")
def _(c: Case) -> None:
    c.subjects.loc[c.subjects.index[2:], "arm"] = "exercise"
    c.subjects.loc[0, "arm"] = "control"
    query(c, q("subjects.csv", None, "arm", "", "small_arm",
               "only 1 subject in arm 'control': variances within the arm cannot be estimated; "
               "some analyses will report 'not estimable'"))  # fmt: skip


@case("outcome_entirely_missing")
def _(c: Case) -> None:
    c.visits["6MWD"] = ""
    query(c, q("visits.csv", None, "6MWD", "", "outcome_empty",
               "no value at any visit: not analysed"))  # fmt: skip


@case("outcome_constant")
def _(c: Case) -> None:
    c.visits["6MWD"] = "400"
    query(c, q("visits.csv", None, "6MWD", "", "outcome_constant",
               "every value is 400: models of this outcome are not estimable"))  # fmt: skip


@case("missing_covariate_value")
def _(c: Case) -> None:
    c.subjects.loc[2, "age"] = ""
    query(c, q("subjects.csv", 4, "age", "", "missing_covariate", NO_COVARIATE, "S03"))


@case("covariate_entirely_missing")
def _(c: Case) -> None:
    c.subjects["age"] = ""
    error(c, "covariate 'age' has no value for any subject", file="subjects.csv", column="age")


@case("covariate_constant")
def _(c: Case) -> None:
    c.subjects["sex"] = "F"
    error(c, "covariate 'sex' has the same value", file="subjects.csv", column="sex")


@case("identifiers_present")
def _(c: Case) -> None:
    c.subjects["Name"] = "Jane Doe"
    c.subjects["Date of birth"] = "1950-01-01"
    c.subjects["email"] = "jane@example.org"
    error(c, "look like direct personal data", "drop_columns", file="subjects.csv",
          column="Name")  # fmt: skip


@case("identifiers_dropped")
def _(c: Case) -> None:
    c.subjects["Name"] = "Jane Doe"
    c.config["drop_columns"] = ["Name"]
    query(c)


@case("extremely_long_label")
def _(c: Case) -> None:
    c.config["outcomes"][1]["label"] = "Six-minute walk distance " * 16
    long_id = "S01-" + "x" * 300
    c.subjects.loc[0, "subject_id"] = long_id
    c.visits.loc[c.visits["subject_id"] == "S01", "subject_id"] = long_id
    query(c)


@case("html_in_labels")
def _(c: Case) -> None:
    c.config["title"] = "<script>alert('trial')</script>"
    c.config["outcomes"][0]["label"] = "Pain <b>VAS</b> & <script>x</script>"
    c.config["arms"]["treatment"] = "<i>exercise</i>"
    c.subjects["arm"] = c.subjects["arm"].replace({"exercise": "<i>exercise</i>"})
    query(c)


# --- trial description --------------------------------------------------------------------
@case("config_unknown_key")
def _(c: Case) -> None:
    c.config["primary_vist"] = "week12"
    error(c, "unknown key(s) 'primary_vist'", "did you mean 'primary_visit'", file="trial.yaml")


@case("config_missing_required_key")
def _(c: Case) -> None:
    del c.config["arms"]
    error(c, "'arms' is a required property", file="trial.yaml")


@case("config_range_min_above_max")
def _(c: Case) -> None:
    c.config["outcomes"][0]["range"] = [10, 0]
    error(c, "min 10 is not below max 0", file="trial.yaml")


@case("config_primary_visit_not_among_visits")
def _(c: Case) -> None:
    c.config["primary_visit"] = "week24"
    error(c, "'week24' is not one of the visits", file="trial.yaml")


@case("config_outcome_column_absent")
def _(c: Case) -> None:
    c.config["outcomes"][1]["column"] = "6MWT"
    error(c, "outcome column '6MWT' not found", "did you mean '6MWD'", file="visits.csv", row=1,
          column="6MWT")  # fmt: skip


@case("config_covariate_not_a_column")
def _(c: Case) -> None:
    c.config["covariates"] = ["Age", "sex"]
    error(c, "covariate column 'Age' not found", file="subjects.csv", row=1, column="Age")


@case("config_injection_in_outcome_name")
def _(c: Case) -> None:
    c.config["outcomes"][0]["name"] = "pain + I(__import__('os').system('id'))"
    error(c, "outcomes[0].name", "does not match", file="trial.yaml")


@case("config_injection_in_covariate")
def _(c: Case) -> None:
    c.config["covariates"] = ["age) + __import__('os').system('id') + (sex"]
    error(c, "covariates[0]", file="trial.yaml")


# --- models that cannot be fitted; numbers that are not numbers ----------------------------
@case("covariate_collinear_with_arm")
def _(c: Case) -> None:
    # A covariate that is the arm under another name: no model can separate the two.
    c.subjects["group"] = c.subjects["arm"].map({"control": "A", "exercise": "B"})
    c.config["covariates"] = ["age", "group"]
    query(c)


@case("one_arm_without_follow_up")
def _(c: Case) -> None:
    treated = c.subjects.loc[c.subjects["arm"] == "exercise", "subject_id"]
    c.visits = c.visits.loc[
        ~(c.visits["subject_id"].isin(treated) & (c.visits["visit"] != "baseline"))
    ]
    query(c)


@case("covariate_overflow")
def _(c: Case) -> None:
    c.subjects.loc[3, "age"] = "1e999"
    query(
        c,
        q("subjects.csv", 5, "age", "1e999", "not_finite", "set missing (too large to be a number)",
          "S04"),
        q("subjects.csv", 5, "age", "1e999", "missing_covariate", NO_COVARIATE, "S04"),
    )  # fmt: skip


@case("covariate_with_units")
def _(c: Case) -> None:
    c.subjects["age"] = c.subjects["age"] + " yrs"
    error(c, "covariate 'age' holds numbers with a unit", file="subjects.csv", row=2,
          column="age")  # fmt: skip


@case("config_covariate_reserved_name")
def _(c: Case) -> None:
    c.subjects["baseline"] = c.subjects["age"]
    c.config["covariates"] = ["baseline", "sex"]
    error(c, "'baseline' is the name of a column of the analysis datasets", file="trial.yaml")


@case("excel_error_and_formula_cells")
def _(c: Case) -> None:
    c.config["data"]["subjects"] = "subjects.xlsx"
    c.files["subjects.xlsx"] = b"formula-cells"  # written by write_case
    query(
        c,
        *[q("subjects.xlsx", row, "age", value, rule, action, sid)
          for row, value, sid in [(3, "#DIV/0!", "S02"), (5, "=C2*2", "S04")]
          for rule, action in [("not_a_number", SET_MISSING), ("missing_covariate", NO_COVARIATE)]],
    )  # fmt: skip


@case("utf16_tab_text")
def _(c: Case) -> None:
    # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated.
    c.config["data"]["visits"] = "visits.txt"
    c.files["visits.txt"] = _csv(c.visits, sep="\t").decode("utf-8").encode("utf-16")
    query(c)


@case("multiline_quoted_cells")
def _(c: Case) -> None:
    # A quoted note spanning three lines in row 2: queries name spreadsheet rows (records),
    # not lines of the file.
    c.visits["note"] = ""
    c.visits.loc[0, "note"] = "first line\nsecond line\nthird line"
    c.visits.loc[6, "pain"] = "12.5"
    query(c, q("visits.csv", 8, "pain", "12.5", "out_of_range", OUT_OF_RANGE, "S03"))


@case("many_exact_duplicates")
def _(c: Case) -> None:
    # Thousands of identical rows, as a repeated export produces: dropped in linear time.
    c.visits = pd.concat([c.visits, *[c.visits.iloc[[4]]] * 3000], ignore_index=True)
    query(c, q("visits.csv", 38, "subject_id", "S02", "exact_duplicate",
               "row dropped (identical to row 6)", "S02", last_row=3037))  # fmt: skip


@case("formula_text_in_cells")
def _(c: Case) -> None:
    c.visits.loc[4, "pain"] = '=HYPERLINK("http://example.org","x")'
    c.visits.loc[5, "6MWD"] = "@SUM(1+1)"
    query(
        c,
        q("visits.csv", 6, "pain", '=HYPERLINK("http://example.org","x")', "not_a_number",
          SET_MISSING, "S02"),
        q("visits.csv", 7, "6MWD", "@SUM(1+1)", "not_a_number", SET_MISSING, "S02"),
    )  # fmt: skip


# --- harms ---------------------------------------------------------------------------------
_AE_HEADER = "subject_id,term,severity,serious,related,week\n"


@case("adverse_events_problems")
def _(c: Case) -> None:
    c.config["data"]["adverse_events"] = "adverse_events.csv"
    c.files["adverse_events.csv"] = (
        _AE_HEADER
        + "S01,Fall,mild,no,yes,3\n"
        + "S02,,moderate,no,no,5\n"  # no term
        + "S03,Foot ulcer,severe,perhaps,no,4\n"  # serious is neither yes nor no
        + "S04,Fall,mild,no,no,-2\n"  # negative week
        + "S05,Fall,mild,yes,no,week 7\n"  # week is not a number
    ).encode()
    week = "set missing (the week of onset is a number of weeks from randomisation, >= 0)"
    query(
        c,
        q("adverse_events.csv", 3, "term", "", "missing_term", "kept as 'term not recorded'",
          "S02"),
        q("adverse_events.csv", 4, "serious", "perhaps", "not_yes_no",
          "set missing (write yes or no)", "S03"),
        q("adverse_events.csv", 5, "week", "-2", "bad_week", week, "S04"),
        q("adverse_events.csv", 6, "week", "week 7", "bad_week", week, "S05"),
    )  # fmt: skip


@case("adverse_events_unknown_subject")
def _(c: Case) -> None:
    c.config["data"]["adverse_events"] = "adverse_events.csv"
    c.files["adverse_events.csv"] = (
        _AE_HEADER + "S01,Fall,mild,no,yes,3\nS77,Fall,,no,no,2\n"
    ).encode()
    error(c, "subject 'S77' of the adverse-events file is not in the subjects file",
          file="adverse_events.csv", row=3, column="subject_id")  # fmt: skip


@case("screening_log_problems")
def _(c: Case) -> None:
    # S12 was randomized but is missing from the log; one excluded person has no reason.
    c.config["data"]["screening"] = "screening.csv"
    ids = [f"S{i:02d}" for i in range(1, 12)]
    lines = [f"{sid}," for sid in ids] + [",Declined", ",Not eligible", ",", "SCR-99,Not eligible"]
    c.files["screening.csv"] = ("subject_id,reason\n" + "\n".join(lines) + "\n").encode()
    error(c, "subject 'SCR-99' of the screening log is not in the subjects file",
          file="screening.csv", row=16, column="subject_id")  # fmt: skip


@case("screening_log_incomplete")
def _(c: Case) -> None:
    c.config["data"]["screening"] = "screening.csv"
    lines = [f"S{i:02d}," for i in range(1, 12)] + [",Declined", ",Not eligible"]
    c.files["screening.csv"] = ("subject_id,reason\n" + "\n".join(lines) + "\n").encode()
    query(c, q("screening.csv", None, "subject_id", "", "not_in_screening_log",
               "1 randomized subject(s) not in the log, counted as assessed (S12)"))  # fmt: skip


def _yaml_case(name: str, text: bytes, message: str, row: int) -> None:
    @case(name)
    def _(c: Case) -> None:
        c.files["trial.yaml"] = text
        error(c, message, file="trial.yaml", row=row)


_TRIAL_TEXT = yaml.safe_dump(BASE_TRIAL, sort_keys=False)
_yaml_case(
    "config_yaml_alias_bomb",
    (
        "lol: &a [x, x, x, x, x, x, x, x, x]\nlol2: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        "lol3: [*b, *b, *b, *b, *b, *b, *b, *b]\n" + _TRIAL_TEXT
    ).encode(),
    "aliases are not allowed",
    2,
)
_yaml_case(
    "config_yaml_deep_nesting",
    ("x: " + "[" * 5000 + "]" * 5000 + "\n" + _TRIAL_TEXT).encode(),
    "nested more than",
    1,
)
_yaml_case(
    "config_yaml_not_utf8",
    _TRIAL_TEXT.replace("Corpus trial", "Essai caf\u00e9").encode("latin-1"),
    "is not UTF-8 text",
    1,
)
_yaml_case(
    "config_yaml_duplicate_key",
    (_TRIAL_TEXT + "title: Another title\n").encode(),
    "has the key 'title' twice",
    len(_TRIAL_TEXT.splitlines()) + 1,
)


def write_case(name: str, folder: Path) -> None:
    """Build one case and write its files and expected.yaml to ``folder``."""
    c = Case()
    CASES[name](c)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files: dict[str, bytes | None] = {
        "subjects.csv": _csv(c.subjects),
        "visits.csv": _csv(c.visits),
        **c.files,
    }
    for file_name, content in sorted(files.items()):
        if content is None:
            continue
        if content == b"two-sheets":
            _write_workbook(folder / file_name, c.subjects)
            continue
        if content == b"formula-cells":
            _write_formula_workbook(folder / file_name, c.subjects)
            continue
        (folder / file_name).write_bytes(content)
    if "trial.yaml" not in c.files:
        (folder / "trial.yaml").write_text(
            yaml.safe_dump(c.config, sort_keys=False), encoding="utf-8"
        )
    (folder / "expected.yaml").write_text(
        yaml.dump({"case": name, **c.expected}, Dumper=_Dumper, sort_keys=False, width=200),
        encoding="utf-8",
    )


def _write_workbook(path: Path, subjects: pd.DataFrame) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Subjects"
    sheet.append(list(subjects.columns))
    for row in subjects.itertuples(index=False):
        sheet.append(list(row))
    notes = book.create_sheet("Notes")
    notes.append(["exported by the trial database"])
    # Fixed document properties so the workbook is the same bytes every time.
    import datetime as dt

    stamp = dt.datetime(2026, 1, 1)
    book.properties.created = stamp
    book.properties.modified = stamp
    book.save(path)


def _write_formula_workbook(path: Path, subjects: pd.DataFrame) -> None:
    """One sheet; subject 2's age is an error value (#DIV/0!), subject 4's a formula saved
    without its result (as some exporters write them)."""
    import datetime as dt

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(subjects.columns))
    for row in subjects.itertuples(index=False):
        sheet.append(list(row))
    sheet["C3"] = "#DIV/0!"
    sheet["C3"].data_type = "e"
    sheet["C5"] = "=C2*2"
    stamp = dt.datetime(2026, 1, 1)
    book.properties.created = stamp
    book.properties.modified = stamp
    book.save(path)


def main() -> None:
    for name in CASES:
        write_case(name, HERE / name)
    print(f"{len(CASES)} cases written to {HERE}")


if __name__ == "__main__":
    main()
