"""Accounting invariants on random tables (hypothesis), and interruption of the workflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trialflow.clean import CleanResult, clean_trial
from trialflow.config import TrialConfig
from trialflow.derive import Derived, derive
from trialflow.errors import DataError
from trialflow.io import RawTable

from .conftest import ROOT, TinyTrial

# The tiny trial's outcomes (tests/conftest.py): name -> (column in visits.csv, range).
OUTCOMES = {"pain": ("pain", 0.0, 10.0), "walk": ("6MWD", 0.0, 900.0)}
VISITS = ("baseline", "week6", "week12")
# Spellings the cleaning maps to the configured label (with a label_whitespace, label_case or
# visit_as_week query); the configured spelling first, so that it is the one shrunk to.
VISIT_SPELLINGS = {
    "baseline": ["baseline", " baseline", "BASELINE", "0"],
    "week6": ["week6", " week6", "Week6", "6"],
    "week12": ["week12", "week12 ", "WEEK12", "12"],
}
ARM_SPELLINGS = {"control": ["control", "CONTROL", " control"],
                 "exercise": ["exercise", " Exercise", "EXERCISE "]}  # fmt: skip
# Text in a numeric cell: the rule of its query.
NOT_NUMBERS = {"n/a": "not_a_number", "NaN": "not_a_number", "<5": "not_a_number",
               "inf": "not_a_number", "abc": "not_a_number", "12,5": "decimal_comma",
               "1,250": "thousands_separator"}  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """A raw outcome cell and what the cleaning must make of it."""

    text: str
    value: float | None  # the number the analysis sees; None: missing
    rule: str | None = None  # the query it raises; None: no query


@st.composite
def cells(draw: st.DrawFn, lo: float, hi: float) -> Cell:
    """Mostly plain numbers; now and then one outside the range, text, or an empty cell."""
    kind = draw(st.sampled_from(["number"] * 7 + ["outside", "text", "empty"]))
    if kind == "empty":
        return Cell("", None)
    if kind == "text":
        text = draw(st.sampled_from(sorted(NOT_NUMBERS)))
        return Cell(text, None, NOT_NUMBERS[text])
    if kind == "number":
        x = draw(st.floats(lo, hi, allow_nan=False))
        cell = Cell(f"{x:.1f}", float(f"{x:.1f}"))
    else:  # at least 1 outside, so that one decimal never rounds it back in
        x = draw(st.one_of(st.floats(lo - 50, lo - 1), st.floats(hi + 1, hi + 50)))
        cell = Cell(f"{x:.1f}", None, "out_of_range")
    pad = draw(st.sampled_from(["", " "]))  # spaces around a number are trimmed
    return Cell(pad + cell.text + pad, cell.value, cell.rule)


@dataclass(frozen=True)
class Row:
    """A raw visit row: whose and which visit it is, as written, and its outcome cells."""

    subject: str
    visit: str
    subject_text: str
    visit_text: str
    cells: dict[str, Cell]


@dataclass
class RawTrial:
    """Random raw tables and, from the way they were drawn, what the cleaning must make of
    them."""

    subjects: pd.DataFrame
    visits: pd.DataFrame
    arm: dict[str, str]  # subject -> configured arm
    rows: list[Row]  # the visits file's rows, in order

    def repeated(self) -> set[int]:
        """File rows (header = row 1) that repeat an earlier row of the same subject and visit."""
        seen: set[tuple[str, str]] = set()
        out = set()
        for number, row in enumerate(self.rows, start=2):
            if (row.subject, row.visit) in seen:
                out.add(number)
            seen.add((row.subject, row.visit))
        return out

    def tables(self) -> tuple[RawTable, RawTable]:
        return (RawTable(frame=self.subjects.astype(object), path="subjects.csv"),
                RawTable(frame=self.visits.astype(object), path="visits.csv"))  # fmt: skip


def _sometimes(draw: st.DrawFn, usual: str, others: list[str]) -> str:
    """``usual`` in about half the draws, else one of ``others``."""
    return draw(st.sampled_from([usual] * len(others) + others))


def _spell(draw: st.DrawFn, subject: str, visit: str, cells: dict[str, Cell]) -> Row:
    subject_text = _sometimes(draw, subject, [f" {subject}"])
    return Row(subject, visit, subject_text, draw(st.sampled_from(VISIT_SPELLINGS[visit])), cells)


@st.composite
def raw_trials(draw: st.DrawFn) -> RawTrial:
    """A trial whose problems the cleaning resolves with a query, so that the run completes:
    both arms, two values of each covariate, a baseline for most subjects; messy otherwise
    (labels in other case or spacing, visits as week numbers, numbers outside the range, text
    and empty cells, exact duplicate rows, missing covariates, subjects who withdraw early,
    never attend or miss their baseline)."""
    n = draw(st.integers(2, 12))
    # Subjects 0 and 1 carry what a two-arm comparison needs: one of each arm, two different
    # ages and sexes, and (subject 0) a baseline value. The files list them in a drawn order.
    others = st.lists(st.sampled_from(["control", "exercise"]), min_size=n - 2, max_size=n - 2)
    arms = ["control", "exercise", *draw(others)]
    young = draw(st.integers(30, 89))
    ages = [str(young), str(draw(st.integers(young + 1, 90)))]
    ages += [_sometimes(draw, str(draw(st.integers(30, 90))), ["", "n/a"]) for _ in range(n - 2)]
    sexes = ["F", "M", *[_sometimes(draw, draw(st.sampled_from("FM")), ["f", " M", ""])
                         for _ in range(n - 2)]]  # fmt: skip
    ids = [f"P{i}" for i in range(n)]
    order = draw(st.permutations(range(n)))
    subjects = pd.DataFrame(
        {
            "subject_id": [ids[i] for i in order],
            "arm": [draw(st.sampled_from(ARM_SPELLINGS[arms[i]])) for i in order],
            "age": [ages[i] for i in order],
            "sex": [sexes[i] for i in order],
        }
    )
    if draw(st.booleans()):  # a subject listed twice, identically
        at = draw(st.integers(0, n - 1))
        subjects = pd.concat([subjects.iloc[: at + 1], subjects.iloc[at:]], ignore_index=True)

    rows: list[Row] = []
    for i in range(n):
        # Index of the last visit attended (-1: none), and an intermittent missed visit.
        last = 2 if i == 0 else draw(st.sampled_from([2, 2, 2, 2, 1, 0, -1]))
        missed = None if i == 0 else draw(st.sampled_from([None] * 5 + [0, 1]))
        for k, visit in enumerate(VISITS[: last + 1]):
            if k == missed:
                continue
            got = {name: draw(cells(lo, hi)) for name, (_, lo, hi) in OUTCOMES.items()}
            if i == 0 and k == 0:
                got["pain"] = Cell("5.0", 5.0)
            rows.append(_spell(draw, ids[i], visit, got))
    rows = list(draw(st.permutations(rows)))
    for _ in range(draw(st.integers(0, 3))):
        # A repeated row, anywhere in the file; identical once labels are trimmed and mapped.
        again = rows[draw(st.integers(0, len(rows) - 1))]
        rows.insert(draw(st.integers(0, len(rows))), _spell(draw, again.subject, again.visit,
                                                          again.cells))  # fmt: skip
    return _raw_trial(subjects, dict(zip(ids, arms, strict=True)), rows)


def _raw_trial(subjects: pd.DataFrame, arm: dict[str, str], rows: list[Row]) -> RawTrial:
    visits = pd.DataFrame(
        [[r.subject_text, r.visit_text, *(r.cells[o].text for o in OUTCOMES)] for r in rows],
        columns=["subject_id", "visit", *(column for column, _, _ in OUTCOMES.values())],
    )
    return RawTrial(subjects=subjects, visits=visits, arm=arm, rows=rows)


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> TrialConfig:
    return TinyTrial(tmp_path_factory.mktemp("tiny")).load()


def _note_mess(raw: RawTrial) -> None:
    """Label the example with the kinds of mess it holds (pytest --hypothesis-show-statistics)."""
    cells = [c for r in raw.rows for c in r.cells.values()]
    attended = {(r.subject, r.visit) for r in raw.rows}
    for kind, present in [
        ("repeated row", bool(raw.repeated())),
        ("subject listed twice", raw.subjects["subject_id"].duplicated().any()),
        ("value set missing", any(c.rule for c in cells)),
        ("empty cell", any(c.text == "" for c in cells)),
        ("visit label respelled", any(r.visit_text != r.visit for r in raw.rows)),
        ("withdrawn subject", any((s, "week12") not in attended for s in raw.arm)),
        ("subject without baseline visit", any((s, "baseline") not in attended for s in raw.arm)),
        ("missing covariate", raw.subjects[["age", "sex"]].isin(["", "n/a"]).any(axis=None)),
    ]:
        if present:
            event(kind)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_trials())
def test_every_subject_and_row_is_accounted_for(trial: TrialConfig, raw: RawTrial) -> None:
    """README, "Safety": bad input never ends in a silent loss; the run "completes with the
    problem in queries.csv and every randomized participant in adsl.csv and flow.csv" (for the
    problems the cleaning-rules table resolves with a query). Every subject is in ADSL and the
    CONSORT counts in the allocated arm; every visit row is analysed or dropped as an exact
    duplicate; every cell reaches the analysis as written or is set missing with its query."""
    _note_mess(raw)
    clean = clean_trial(trial, *raw.tables())
    derived = derive(clean, trial)
    event("accounted")  # the share of examples that reach the checks
    _check_subjects(raw, derived)
    _check_rows(raw, clean)
    _check_values(raw, clean, derived)


def _check_subjects(raw: RawTrial, derived: Derived) -> None:
    adsl, flow = derived.adsl, derived.flow
    assert sorted(adsl["subject_id"]) == sorted(raw.arm)
    assert dict(zip(adsl["subject_id"], adsl["arm"], strict=True)) == raw.arm
    randomized = flow.loc[flow["stage"] == "randomized"].set_index("arm")["n"].to_dict()
    arms = pd.Series(raw.arm).value_counts()
    assert randomized == {"control": arms.get("control", 0), "exercise": arms.get("exercise", 0),
                          "total": len(raw.arm)}  # fmt: skip


def _check_rows(raw: RawTrial, clean: CleanResult) -> None:
    q = clean.queries
    dropped = q.loc[(q["file"] == "visits.csv") & (q["rule"] == "exact_duplicate"), "row"]
    assert sorted(dropped) == sorted(raw.repeated())
    kept = clean.visits.set_index("source_row")
    assert set(kept.index) == set(range(2, len(raw.rows) + 2)) - raw.repeated()
    for number, row in kept.iterrows():
        assert (row["subject_id"], row["visit"]) == (raw.rows[number - 2].subject,
                                                     raw.rows[number - 2].visit)  # fmt: skip


def _check_values(raw: RawTrial, clean: CleanResult, derived: Derived) -> None:
    """Values and flags against the cells as drawn; outcome queries exactly those expected."""
    kept = clean.visits.set_index("source_row")
    expected_queries = set()
    value: dict[tuple[str, str, str], float | None] = {}
    for number in kept.index:
        row = raw.rows[number - 2]
        for name, (column, _, _) in OUTCOMES.items():
            cell = row.cells[name]
            got = kept.loc[number, name]
            assert np.isnan(got) if cell.value is None else got == cell.value, (cell, got)
            if cell.rule:
                expected_queries.add((number, column, cell.text.strip(), cell.rule))
            value[(row.subject, name, row.visit)] = cell.value
    q = clean.queries
    outcome_cells = q.loc[(q["file"] == "visits.csv") & q["column"].isin(["pain", "6MWD"])
                          & q["row"].notna()]  # fmt: skip
    got_queries = set(outcome_cells[["row", "column", "value", "rule"]].itertuples(index=False))
    assert got_queries == expected_queries
    # The analysis dataset: every subject x outcome x visit, with the value as cleaned.
    adeff = derived.adeff
    assert len(adeff) == len(raw.arm) * len(OUTCOMES) * len(VISITS)
    for r in adeff.itertuples(index=False):
        want = value.get((r.subject_id, r.outcome, r.visit))
        assert np.isnan(r.value) if want is None else r.value == want, r
    attended = {(s, v) for s, _, v in [k for k, x in value.items() if x is not None]}
    adsl = derived.adsl.set_index("subject_id")
    for sid in raw.arm:
        assert adsl.loc[sid, "has_baseline"] == ("Y" if (sid, "baseline") in attended else "N")
        assert adsl.loc[sid, "completed"] == ("Y" if (sid, "week12") in attended else "N")
        assert adsl.loc[sid, "n_visits"] == sum((sid, v) in attended for v in VISITS)
    no_baseline = q.loc[q["rule"] == "no_baseline", "subject_id"]
    assert sorted(no_baseline) == sorted(s for s in raw.arm if (s, "baseline") not in attended)


@dataclass(frozen=True)
class Stop:
    """The DataError a broken trial must stop with."""

    message: str  # a part of the message that names the cause
    file: str
    column: str
    row: int | None = None  # None: the problem is not in one row


def _first_row(frame: pd.DataFrame, column: str, value: str) -> int:
    return int(np.flatnonzero(frame[column].to_numpy() == value)[0]) + 2


def _one_arm(draw: st.DrawFn, raw: RawTrial) -> Stop:
    kept, gone = draw(st.permutations(["control", "exercise"]))
    spelling = {s: draw(st.sampled_from(ARM_SPELLINGS[kept])) for s in raw.arm}
    raw.subjects["arm"] = raw.subjects["subject_id"].map(spelling)
    return Stop(f"no randomized subject is in arm '{gone}'", "subjects.csv", "arm")


def _unknown_arm(draw: st.DrawFn, raw: RawTrial) -> Stop:
    sid = draw(st.sampled_from(sorted(raw.arm)))
    label = draw(st.sampled_from(["exercize", "ctrl"]))
    raw.subjects.loc[raw.subjects["subject_id"] == sid, "arm"] = label
    row = _first_row(raw.subjects, "subject_id", sid)
    return Stop(f"unknown arm label(s): '{label}'", "subjects.csv", "arm", row)


def _no_arm(draw: st.DrawFn, raw: RawTrial) -> Stop:
    sid = draw(st.sampled_from(sorted(raw.arm)))
    raw.subjects.loc[raw.subjects["subject_id"] == sid, "arm"] = draw(st.sampled_from(["", "  "]))
    row = _first_row(raw.subjects, "subject_id", sid)
    return Stop(f"1 subject(s) have no arm: {sid}", "subjects.csv", "arm", row)


def _same_sex(draw: st.DrawFn, raw: RawTrial) -> Stop:
    level = draw(st.sampled_from(["F", "M"]))
    spelling = {s: draw(st.sampled_from([level, level.lower(), f" {level}", ""])) for s in raw.arm}
    spelling["P0"] = level  # one value at least (with none, the stop would be another one)
    raw.subjects["sex"] = raw.subjects["subject_id"].map(spelling)
    return Stop("covariate 'sex' has the same value", "subjects.csv", "sex")


def _no_age(draw: st.DrawFn, raw: RawTrial) -> Stop:
    raw.subjects["age"] = ""
    return Stop("covariate 'age' has no value for any subject", "subjects.csv", "age")


def _unknown_visit(draw: st.DrawFn, raw: RawTrial) -> Stop:
    at = draw(st.integers(0, len(raw.rows) - 1))
    label = draw(st.sampled_from(["week 7", "visit9", "7"]))
    raw.visits.loc[at, "visit"] = label
    return Stop(f"unknown visit label(s): '{label}'", "visits.csv", "visit", at + 2)


def _stray_subject(draw: st.DrawFn, raw: RawTrial) -> Stop:
    at = draw(st.integers(0, len(raw.rows)))
    stray = pd.DataFrame([["Q1", "baseline", "5.0", "300"]], columns=raw.visits.columns)
    raw.visits = pd.concat([raw.visits.iloc[:at], stray, raw.visits.iloc[at:]], ignore_index=True)
    return Stop("1 subject(s) have visits but are not in the subjects file subjects.csv: Q1",
                "visits.csv", "subject_id", at + 2)  # fmt: skip


def _conflict(draw: st.DrawFn, raw: RawTrial) -> Stop:
    original = raw.rows[draw(st.integers(0, len(raw.rows) - 1))]
    other = "6.0" if original.cells["pain"].text.strip() == "5.0" else "5.0"
    changed = Row(original.subject, original.visit, original.subject_text, original.visit_text,
                  {**original.cells, "pain": Cell(other, float(other))})  # fmt: skip
    rows = list(raw.rows)
    rows.insert(draw(st.integers(0, len(rows))), changed)
    raw.visits = _raw_trial(raw.subjects, raw.arm, rows).visits
    first = min(n for n, r in enumerate(rows, start=2) if (r.subject, r.visit) ==
                (original.subject, original.visit))  # fmt: skip
    return Stop("2 rows share the same subject and visit but differ", "visits.csv", "subject_id",
                first)  # fmt: skip


def _no_baseline(draw: st.DrawFn, raw: RawTrial) -> Stop:
    at_baseline = [r.visit == "baseline" for r in raw.rows]
    if draw(st.booleans()) and not all(at_baseline):
        raw.visits = raw.visits.loc[[not b for b in at_baseline]].reset_index(drop=True)
    else:  # the rows are there, with no value
        raw.visits.loc[at_baseline, ["pain", "6MWD"]] = draw(st.sampled_from(["", "n/a"]))
    return Stop("no subject has a baseline visit", "visits.csv", "visit")


# The stops of the cleaning-rules table in the README, each planted in an otherwise good trial.
BREAKS = {
    "one arm": _one_arm,
    "unknown arm": _unknown_arm,
    "no arm": _no_arm,
    "covariate with one value": _same_sex,
    "covariate with no value": _no_age,
    "unknown visit": _unknown_visit,
    "subject not in the subjects file": _stray_subject,
    "conflicting rows": _conflict,
    "no baseline": _no_baseline,
}


@st.composite
def broken_trials(draw: st.DrawFn, cause: str) -> tuple[RawTrial, Stop]:
    raw = draw(raw_trials())
    return raw, BREAKS[cause](draw, raw)


@pytest.mark.parametrize("cause", list(BREAKS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_stop_names_its_cause(trial: TrialConfig, cause: str, data: st.DataObject) -> None:
    """README, "Cleaning rules": an unknown arm or visit label, the same subject and visit twice
    with different values, a subject in the visits file only, a subject without an arm, a
    covariate with no value or one value, an arm with no subject, no subject with a baseline
    visit: each is a **stop**, and "a stop prints one message naming the file, the row, the
    column and what to do". Each cause is planted in a trial that completes without it."""
    raw, stop = data.draw(broken_trials(cause))
    with pytest.raises(DataError) as info:
        derive(clean_trial(trial, *raw.tables()), trial)
    err = info.value
    assert stop.message in err.message, err
    assert (err.file, err.column, err.row) == (stop.file, stop.column, stop.row), err
    assert err.fix


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", work)
    for folder in ("workflow", "config", "profiles", "data/raw/weightbearing"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return work


def _snakemake(work: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764115200", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--config", "trials=weightbearing",
         *args],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def _outputs(work: Path) -> dict[str, bytes]:
    results = work / "results"
    return {
        str(p.relative_to(results)): p.read_bytes()
        for p in sorted(results.rglob("*"))
        # Temporary ".part" files of a killed write are never under a final name.
        # Logs and the benchmark records (timings) differ from run to run by nature.
        if p.is_file()
        and not {"logs", "benchmarks"} & set(p.parts)
        and not p.name.endswith(".part")
    }


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    reference = _project(tmp_path_factory.mktemp("reference"))
    assert _snakemake(reference).wait(timeout=600) == 0
    return reference


@pytest.mark.workflow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_completes_identically(
    reference_run: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C, or a hard kill (then ``snakemake --unlock``, as the README says), during the
    model stage; the rerun completes with outputs identical to an uninterrupted run."""
    work = _project(tmp_path / "b")
    run = _snakemake(work)
    # The bundled trial runs as one job; its log names each step as it ends.
    log = work / "results" / "weightbearing" / "logs" / "analyse.log"
    deadline = time.monotonic() + 300

    def models_started() -> bool:
        return log.exists() and "step derive took" in log.read_text(encoding="utf-8")

    while not models_started() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert models_started(), "the model stage never started"
    os.killpg(run.pid, sig)
    run.wait(timeout=120)
    if sig == signal.SIGKILL:  # no clean-up happened: the directory lock stays
        unlock = _snakemake(work, "--unlock")
        assert unlock.wait(timeout=120) == 0
    tables = work / "results" / "weightbearing" / "tables"
    # No partial file under a final name: any table present is complete and readable.
    for path in tables.glob("*.csv") if tables.exists() else []:
        assert len(pd.read_csv(path)) > 0

    rerun = _snakemake(work)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert _outputs(work) == _outputs(reference_run)
