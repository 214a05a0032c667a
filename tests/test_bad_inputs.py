"""The corpus of broken trials (tests/data/bad/<case>/): every bad input gets a clear answer.

Each case runs through the stages that own its rules (load the trial description, clean,
derive, the analysis plan). ``outcome: error`` cases must stop with a TrialflowError naming the
file (and the row and column where there is one) and saying what to do; ``outcome: query``
cases must complete with exactly the expected queries in the query log (file, row, column,
value, rule, action and subject of each, as many times as expected, nothing else), every
randomized subject in ADSL and the CONSORT counts, every raw visit row either analysed or
queried, and an analysis row for every outcome, model and visit. A few cases also run through
the Snakemake command line, which must show the message and no Python traceback.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive
from trialflow.errors import TrialflowError
from trialflow.io import read_table

from .conftest import ROOT

CORPUS = ROOT / "tests" / "data" / "bad"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.yaml").is_file())


def _expected(case: str) -> dict:
    return yaml.safe_load((CORPUS / case / "expected.yaml").read_text(encoding="utf-8"))


def test_corpus_is_large_and_covers_both_outcomes() -> None:
    outcomes = [_expected(c)["outcome"] for c in CASES]
    assert len(CASES) >= 40
    assert outcomes.count("error") >= 20 and outcomes.count("query") >= 15


def _run(case: str):
    folder = CORPUS / case
    trial = load_trial(folder / "trial.yaml")
    clean = read_and_clean(trial, root=folder)
    derived = derive(clean, trial)
    return trial, clean, derived, analyse_trial(derived.adeff, derived.adsl, trial)


Query = tuple[str, int | None, str, str, str, str, str]


def _expected_queries(expected: dict) -> Counter[Query]:
    """The queries an expected.yaml lists; a ``row_range`` stands for one query a row."""
    out: Counter[Query] = Counter()
    for query in expected["queries"]:
        first, last = query.get("row_range", [query.get("row")] * 2)
        for row in [None] if first is None else range(first, last + 1):
            out[(query["file"], row, query["column"], query["value"], query["rule"],
                 query["action"], query["subject_id"])] += 1  # fmt: skip
    return out


def _logged_queries(queries: pd.DataFrame) -> Counter[Query]:
    def text(x: Any) -> str:  # a query read from a file has no subject: empty, as in the CSV
        return "" if pd.isna(x) else str(x)

    return Counter(
        (text(r.file), None if pd.isna(r.row) else int(r.row), text(r.column), text(r.value),
         text(r.rule), text(r.action), text(r.subject_id))
        for r in queries.itertuples(index=False)
    )  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: str) -> None:
    """README, "Safety": bad input "either stops with one message naming the file, row, column
    and the fix, or completes with the problem in queries.csv and every randomized participant
    in adsl.csv and flow.csv"; "Cleaning rules": the rule and action of each problem, the row
    in the spreadsheet convention (the header is row 1)."""
    expected = _expected(case)
    if expected["outcome"] == "error":
        with pytest.raises(TrialflowError) as info:
            _run(case)
        err = info.value
        text = str(err)
        for fragment in expected["message"]:
            assert fragment in text, text
        assert err.file is not None and Path(err.file).name == expected["file"], text
        if "row" in expected:
            assert err.row == expected["row"], text
        if "column" in expected:
            assert err.column == expected["column"], text
        assert err.fix, f"no fix offered: {text}"
        assert len(text) < 2000
        return

    trial, clean, derived, analysis = _run(case)
    # Exactly the expected queries, each as often as expected: none missing, none extra.
    got, want = _logged_queries(clean.queries), _expected_queries(expected)
    missing, extra = want - got, got - want
    assert not missing and not extra, f"missing {list(missing)[:5]}, unexpected {list(extra)[:5]}"
    rules = set(clean.queries["rule"])
    folder = CORPUS / case
    # Every randomized subject is accounted for.
    subjects = read_table(folder / trial.subjects_path, sheet=trial.subjects_sheet).frame
    n_randomized = subjects[trial.subject_id_column].str.strip().nunique()
    assert len(derived.adsl) == n_randomized
    flow = derived.flow
    total = flow.loc[(flow["stage"] == "randomized") & (flow["arm"] == "total"), "n"].item()
    assert total == n_randomized
    # Every raw visit row is analysed or queried with a reason.
    visits = read_table(folder / trial.visits_path, sheet=trial.visits_sheet).frame
    kept = set(clean.visits["source_row"])
    dropped = set(clean.queries.loc[clean.queries["rule"] == "exact_duplicate", "row"])
    assert kept | dropped == set(range(2, len(visits) + 2))
    # The analysis plan produced a row for every outcome, model and visit.
    eff = analysis.effects
    assert len(eff) == len(trial.outcomes) * 3 * len(trial.post_baseline_visits)
    unfitted = eff.loc[eff["estimate"].isna()]
    assert unfitted["note"].fillna("").str.len().gt(0).all()
    if "outcome_empty" in rules or "outcome_constant" in rules:
        assert unfitted["outcome"].eq("walk").any()


def test_corpus_matches_its_generator(tmp_path: Path) -> None:
    """The committed cases are what tests/data/bad/make_cases.py writes."""
    sys.path.insert(0, str(CORPUS))
    try:
        import make_cases
    finally:
        sys.path.remove(str(CORPUS))
    assert sorted(make_cases.CASES) == CASES
    for case in CASES:
        make_cases.write_case(case, tmp_path / case)
        for path in sorted((tmp_path / case).iterdir()):
            committed = CORPUS / case / path.name
            if path.suffix == ".xlsx":  # zip entries carry write times: compare the cells
                for sheet in pd.ExcelFile(path).sheet_names:
                    assert pd.read_excel(path, sheet).equals(pd.read_excel(committed, sheet))
            else:
                assert filecmp.cmp(path, committed, shallow=False), committed


CLI_CASES = ["missing_file", "unknown_arm", "conflicting_duplicates", "config_unknown_key"]


def _project_with_case(tmp_path: Path, case: str) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    for folder in ("workflow", "config", "profiles"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    raw = work / "data" / "raw" / case
    shutil.copytree(CORPUS / case, raw)
    config = yaml.safe_load((raw / "trial.yaml").read_text(encoding="utf-8"))
    data = config.get("data", {})
    for key in ("subjects", "visits"):
        if key in data:
            data[key] = f"data/raw/{case}/{data[key]}"
    (work / "config" / "trials" / f"{case}.yaml").write_text(yaml.safe_dump(config))
    return work


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.workflow
@pytest.mark.parametrize("case", CLI_CASES)
def test_command_line_shows_the_message_not_a_traceback(tmp_path: Path, case: str) -> None:
    work = _project_with_case(tmp_path, case)
    run = _snakemake(work, "--config", f"trials={case}")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "trialflow error" in output
    assert _expected(case)["message"][0] in output
    assert "What to do" in output
    assert "Traceback" not in output


@pytest.mark.workflow
def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    work = _project_with_case(tmp_path, "unknown_arm")
    run = _snakemake(work, "--config", "trials=unknown_arm", "debug=true")
    assert run.returncode != 0
    assert "Traceback" in run.stdout + run.stderr


@pytest.mark.workflow
def test_paths_outside_the_data_roots_are_refused(tmp_path: Path) -> None:
    work = _project_with_case(tmp_path, "utf8_bom")
    path = work / "config" / "trials" / "utf8_bom.yaml"
    config = yaml.safe_load(path.read_text())
    config["data"]["visits"] = "../../etc/passwd.csv"
    path.write_text(yaml.safe_dump(config))
    run = _snakemake(work, "--config", "trials=utf8_bom", "-n")
    assert run.returncode != 0
    assert "key data.visits: data file '../../etc/passwd.csv' is outside the allowed folders" in (
        run.stdout + run.stderr
    )
    outside = _snakemake(work, "--config", "trials=utf8_bom", "results_dir=/tmp/elsewhere", "-n")
    assert outside.returncode != 0
    assert "key results_dir" in outside.stdout + outside.stderr


# Inputs that must complete end to end (every step, report and PDF included) with queries and
# "not fitted" rows, never a traceback.
CLI_COMPLETE = ["outcome_entirely_missing", "covariate_collinear_with_arm"]


@pytest.mark.workflow
@pytest.mark.parametrize("case", CLI_COMPLETE)
def test_command_line_completes_for_data_that_no_model_can_use(tmp_path: Path, case: str) -> None:
    work = _project_with_case(tmp_path, case)
    run = _snakemake(work, "all", "pdf", "--config", f"trials={case}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    report = (work / "results" / case / "report.html").read_text(encoding="utf-8")
    assert "not fitted" in report
    assert (work / "results" / case / "report.pdf").stat().st_size > 10_000
