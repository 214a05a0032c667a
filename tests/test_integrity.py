"""Accounting invariants on random tables (hypothesis), and interruption of the workflow."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialflow.clean import clean_trial
from trialflow.derive import derive
from trialflow.errors import TrialflowError
from trialflow.io import RawTable

from .conftest import ROOT, TinyTrial

CELLS = st.one_of(
    st.floats(min_value=-5, max_value=950, allow_nan=False).map(lambda x: f"{x:.1f}"),
    st.sampled_from(["", "n/a", "NaN", "<5", "12,5", "1,250", "inf", " 7 ", "abc"]),
)
VISITS = st.sampled_from(["baseline", "week6", "week12", " week6", "WEEK12", "6"])
ARMS = st.sampled_from(["control", "exercise", " Exercise", "CONTROL"])


@st.composite
def raw_trials(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = draw(st.integers(min_value=1, max_value=12))
    ids = [f"P{i}" for i in range(n)]
    subjects = pd.DataFrame(
        {
            "subject_id": ids,
            "arm": draw(st.lists(ARMS, min_size=n, max_size=n)),
            "age": draw(st.lists(st.integers(30, 90).map(str), min_size=n, max_size=n)),
            "sex": draw(st.lists(st.sampled_from(["F", "M"]), min_size=n, max_size=n)),
        }
    )
    rows = draw(
        st.lists(
            st.tuples(st.sampled_from(ids), VISITS, CELLS, CELLS), min_size=1, max_size=3 * n + 4
        )
    )
    visits = pd.DataFrame(rows, columns=["subject_id", "visit", "pain", "6MWD"])
    if draw(st.booleans()) and len(visits):  # an exact duplicate row now and then
        visits = pd.concat([visits, visits.iloc[[0]]], ignore_index=True)
    return subjects, visits


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    return TinyTrial(tmp_path_factory.mktemp("tiny")).load()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_trials())
def test_every_subject_and_row_is_accounted_for(trial, raw) -> None:
    subjects, visits = raw
    tables = [RawTable(frame=f.astype(object), path=p) for f, p in
              ((subjects, "subjects.csv"), (visits, "visits.csv"))]  # fmt: skip
    try:
        clean = clean_trial(trial, *tables)
        d = derive(clean, trial)
    except TrialflowError as exc:
        # A stop is allowed, but only with a message naming the file and the fix.
        assert exc.file in ("subjects.csv", "visits.csv") and exc.fix
        return
    assert len(d.adsl) == subjects["subject_id"].nunique()
    randomized = d.flow.loc[(d.flow["stage"] == "randomized") & (d.flow["arm"] == "total"), "n"]
    assert randomized.item() == len(d.adsl)
    kept = set(clean.visits["source_row"])
    q = clean.queries
    dropped = set(q.loc[(q["file"] == "visits.csv") & (q["rule"] == "exact_duplicate"), "row"])
    assert kept.isdisjoint(dropped)
    assert kept | dropped == set(range(2, len(visits) + 2))
    # A number outside the range never reaches the analysis data.
    assert clean.visits["pain"].dropna().between(0, 10).all()
    assert clean.visits["walk"].dropna().between(0, 900).all()


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
