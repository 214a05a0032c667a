"""CDISC SDTM input (trialflow.sdtm): DM and findings domains read as subjects and visits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat
import pytest
import yaml

from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.errors import ConfigError, DataError

from .conftest import BASE_TRIAL, ROOT

TWIN = ROOT / "config/trials/exercise_education_sdtm.yaml"
CSV = ROOT / "config/trials/exercise_education.yaml"

DM = [
    {"USUBJID": "S01", "ARMCD": "CTRL", "ARM": "control", "AGE": "61", "SEX": "F"},
    {"USUBJID": "S02", "ARMCD": "EXER", "ARM": "exercise", "AGE": "55", "SEX": "M"},
    {"USUBJID": "S09", "ARMCD": "SCRNFAIL", "ARM": "Screen Failure", "AGE": "80", "SEX": "M"},
    {"USUBJID": "S03", "ARMCD": "CTRL", "ARM": "control", "AGE": "70", "SEX": "M"},
    {"USUBJID": "S04", "ARMCD": "EXER", "ARM": "exercise", "AGE": "48", "SEX": "F"},
    {"USUBJID": "S10", "ARMCD": "", "ARM": "", "AGE": "52", "SEX": "F"},
]
# Two questionnaire tests at every visit: 2 per subject and visit, the shape that stopped a
# visits file with "rows share the same subject and visit".
QS = [
    {"USUBJID": s, "QSTESTCD": code, "QSSTRESC": value, "QSSTRESN": value, "VISITNUM": num,
     "VISIT": visit}
    for s, base in (("S01", 6.0), ("S02", 7.0), ("S03", 5.0), ("S04", 6.5))
    for num, visit in ((1, "BASELINE"), (2, "WEEK 6"), (3, "WEEK 12"))
    for code, value in (("PAIN", f"{base - num / 10:.1f}"), ("SIXMW", f"{300 + 10 * num}"))
]  # fmt: skip


def _write(tmp_path: Path, dm: list[dict[str, Any]], qs: list[dict[str, Any]],
           data: dict[str, Any] | None = None, suffix: str = ".csv") -> Path:  # fmt: skip
    """A tiny SDTM trial (conftest's tiny trial as DM and QS) and its description."""
    for name, rows in (("dm", dm), ("qs", qs)):
        frame = pd.DataFrame(rows)
        if suffix == ".xpt":
            pyreadstat.write_xport(frame, str(tmp_path / f"{name}.xpt"), table_name=name.upper())
        else:
            frame.to_csv(tmp_path / f"{name}{suffix}", index=False, lineterminator="\n")
    config = copy.deepcopy(BASE_TRIAL)
    config["data"] = {
        "format": "sdtm",
        "dm": str(tmp_path / f"dm{suffix}"),
        "findings": [str(tmp_path / f"qs{suffix}")],
        "tests": {"pain": {"domain": "QS", "testcd": "PAIN"},
                  "walk": {"domain": "QS", "testcd": "SIXMW"}},
        "visit_labels": {"BASELINE": "baseline", "WEEK 6": "week6", "WEEK 12": "week12"},
        **(data or {}),
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _queries(result: Any, rule: str) -> pd.DataFrame:
    return result.queries.loc[result.queries["rule"] == rule].reset_index(drop=True)


@pytest.fixture(scope="module")
def twins() -> tuple[Any, Any]:
    """The bundled trial read from its SDTM domains and from its CSV files."""
    return read_and_clean(load_trial(TWIN), ROOT), read_and_clean(load_trial(CSV), ROOT)


def test_sdtm_twin_cleans_to_the_same_data_as_the_csv_files(twins: tuple[Any, Any]) -> None:
    sdtm, csv = twins
    pd.testing.assert_frame_equal(sdtm.visits.drop(columns="source_row"),
                                  csv.visits.drop(columns="source_row"))  # fmt: skip
    # SDTM keeps withdrawal reasons in DS, which is not read.
    expected = csv.subjects.drop(columns=["source_row", "withdrawal_reason"])
    pd.testing.assert_frame_equal(sdtm.subjects.drop(columns="source_row"), expected)
    assert sdtm.covariate_types == csv.covariate_types


def test_sdtm_twin_counts_screen_failures_at_enrolment(twins: tuple[Any, Any]) -> None:
    screening = twins[0].screening
    # tests/data/sdtm/make_sdtm.py NOT_RANDOMIZED: EE901, EE902 SCRNFAIL; EE903 NOTASSGN.
    assert len(screening) == 54 + 3
    excluded = screening.loc[screening["subject_id"] == ""]
    assert excluded["reason"].tolist() == ["screen failure", "screen failure", "not assigned"]
    assert excluded["source_row"].tolist() == [5, 23, 44]  # their rows of dm.csv


def test_queries_name_the_domain_file_row_and_variable(twins: tuple[Any, Any]) -> None:
    sdtm = twins[0]
    lb = "data/raw/exercise_education_sdtm/lb.csv"
    out = _queries(sdtm, "out_of_range").iloc[0]
    assert (out["file"], out["row"], out["column"], out["value"]) == (lb, 32, "LBSTRESN", "71")
    lines = (ROOT / lb).read_text(encoding="utf-8").splitlines()
    assert lines[31].startswith("EXEDU,LB,EE009,") and ",71,71,71," in lines[31]
    text = _queries(sdtm, "not_a_number").iloc[0]
    assert (text["row"], text["column"], text["value"]) == (10, "QSSTRESC", "n/a")
    assert _queries(sdtm, "stresc_used")["column"].tolist() == ["QSSTRESC", "VSSTRESC"]


def test_unmapped_test_codes_and_unscheduled_visits_are_queried(twins: tuple[Any, Any]) -> None:
    sdtm = twins[0]
    unmapped = _queries(sdtm, "unmapped_test_code")
    assert unmapped[["column", "value"]].values.tolist() == [["QSTESTCD", "PAINSLP"]]
    assert unmapped["action"][0].startswith("228 row(s) left out")  # one per visits.csv row
    unscheduled = _queries(sdtm, "unscheduled_visit")
    assert unscheduled[["column", "value"]].values.tolist() == [["VISIT", "UNSCHEDULED 2.1"]]
    never = _queries(sdtm, "not_randomized")
    assert never["value"].tolist() == ["EE901, EE902, EE903"]  # their screening QS rows


def test_two_test_codes_in_one_domain_give_one_row_per_subject_and_visit(tmp_path: Path) -> None:
    result = read_and_clean(load_trial(_write(tmp_path, DM, QS)))
    visits = result.visits
    assert len(visits) == 12
    first = visits.iloc[0]
    assert (first["subject_id"], first["visit"], first["pain"], first["walk"]) == (
        "S01", "baseline", 5.9, 310.0)  # fmt: skip
    assert result.subjects["subject_id"].tolist() == ["S01", "S02", "S03", "S04"]
    assert result.subjects["arm"].tolist() == ["control", "exercise", "control", "exercise"]
    reasons = result.screening.set_index("source_row")["reason"]
    assert reasons[4] == "screen failure" and reasons[7] == "not assigned"


def test_sas_transport_queries_name_the_observation(tmp_path: Path) -> None:
    qs = copy.deepcopy(QS)
    qs[2]["QSSTRESN"] = "12.5"  # S01 week 6 pain, observation 3: out of range 0-10
    result = read_and_clean(load_trial(_write(tmp_path, DM, qs, suffix=".xpt")))
    out = _queries(result, "out_of_range")
    assert out[["file", "row", "column"]].values.tolist() == [
        [str(tmp_path / "qs.xpt"), 3, "QSSTRESN"]]  # fmt: skip


def test_two_different_findings_of_a_subject_visit_and_test_stop_naming_both(
    tmp_path: Path,
) -> None:
    qs = [*QS, {**QS[0], "QSSTRESN": "9.9", "QSSTRESC": "9.9"}]
    with pytest.raises(DataError) as err:
        read_and_clean(load_trial(_write(tmp_path, DM, qs)))
    message = str(err.value)
    assert "'5.9'" in message and "'9.9'" in message
    assert "qs.csv row 2" in message and "row 26" in message and "QSSTRESN" in message


def test_repeated_identical_finding_is_dropped_with_a_query(tmp_path: Path) -> None:
    result = read_and_clean(load_trial(_write(tmp_path, DM, [*QS, QS[0]])))
    dup = _queries(result, "exact_duplicate")
    assert dup[["row", "column"]].values.tolist() == [[26, "QSSTRESN"]]
    assert dup["action"][0].endswith("qs.csv row 2)")
    assert len(result.visits) == 12


def test_findings_of_a_subject_not_in_dm_stop(tmp_path: Path) -> None:
    qs = [*QS, {**QS[0], "USUBJID": "S77"}]
    with pytest.raises(DataError, match="not in DM: S77") as err:
        read_and_clean(load_trial(_write(tmp_path, DM, qs)))
    assert err.value.row == 26


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tests": {"pain": {"domain": "QS", "testcd": "PAIN"}}},
         "key data.tests: no test for outcome(s) 'walk'"),
        ({"tests": {"pain": {"domain": "QS", "testcd": "PAIN"}, "walk": {"domain": "QS",
          "testcd": "SIXMW"}, "pian": {"domain": "QS", "testcd": "X"}}},
         "key data.tests.pian: 'pian' is not an outcome (did you mean 'pain'?)"),
        ({"tests": {"pain": {"domain": "QS", "testcd": "PAIN"}, "walk": {"domain": "qs",
          "testcd": "pain"}}}, "key data.tests.walk: 'walk' and 'pain' are both read from QS"),
        ({"visit_labels": {"WEEK 6": "week_6"}}, "key data.visit_labels.WEEK 6: 'week_6'"),
        ({"subjects": "subjects.csv"}, "key data.subjects: is not read with format: sdtm"),
        ({"screening": "log.csv"}, "key data.screening: is not read with format: sdtm"),
        ({"tests": {"pain": {"domain": "QSX", "testcd": "PAIN"}}}, "key data.tests.pain.domain"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_trial(_write(tmp_path, DM, QS, data))
    assert message in str(err.value)


def test_sdtm_keys_without_the_sdtm_format_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, DM, QS)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["data"] = {"subjects": "s.csv", "visits": "v.csv", "dm": "dm.csv"}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"key data\.dm: is an SDTM key"):
        load_trial(path)
    config["data"] = {"format": "sdtm", "dm": "dm.csv", "tests": {}}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="'findings' is a required property"):
        load_trial(path)


@pytest.mark.workflow
def test_workflow_gives_the_sdtm_twin_the_effects_of_the_csv_files(tmp_path: Path) -> None:
    from .test_workflow import _project, _snakemake

    work = _project(tmp_path)
    names = ("exercise_education", "exercise_education_sdtm")
    targets = [f"results/{n}/{f}" for n in names for f in ("tables/effects.csv",
                                                          "analysis/flow.csv")]  # fmt: skip
    run = _snakemake(work, *targets, "--config", f"trials={','.join(names)}",
                     "job_granularity=per_step")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    effects = [(work / f"results/{n}/tables/effects.csv").read_bytes() for n in names]
    assert effects[0] == effects[1]
    flow = pd.read_csv(work / "results/exercise_education_sdtm/analysis/flow.csv",
                       dtype=str, keep_default_na=False)  # fmt: skip
    counts = {(r.stage, r.reason): int(r.n) for r in flow.itertuples() if r.arm == "total"}
    # 54 randomized plus make_sdtm.py's NOT_RANDOMIZED: two screen failures, one not assigned.
    assert counts[("assessed", "")] == 57
    assert counts[("excluded", "")] == 3
    assert counts[("exclusion_reason", "screen failure")] == 2
    assert counts[("exclusion_reason", "not assigned")] == 1


def test_visitnum_is_read_when_there_is_no_visit_variable(tmp_path: Path) -> None:
    qs = [{k: v for k, v in row.items() if k != "VISIT"} for row in QS]
    labels = {"visit_labels": {1: "baseline", 2.0: "week6", 3: "week12"}}
    result = read_and_clean(load_trial(_write(tmp_path, DM, qs, labels)))
    assert result.visits["visit"].tolist()[:3] == ["baseline", "week6", "week12"]
    assert len(result.visits) == 12
