"""End to end: the Snakemake workflow on copies of the project in a temporary folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from numpy.testing import assert_allclose

from .conftest import BASE_SUBJECTS, BASE_TRIAL, BASE_VISITS, ROOT

pytestmark = pytest.mark.workflow
OUTPUTS = ("clean.csv", "queries.csv", "adsl.csv", "adeff.csv", "flow.csv")


def _project(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    for folder in ("workflow", "config", "data/raw"):
        shutil.copytree(
            ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return work


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A fixed SOURCE_DATE_EPOCH makes the report's one time stamp reproducible.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764115200", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory) -> Path:
    work = _project(tmp_path_factory.mktemp("bundled"))
    # The default target and the PDF reports (not part of the default run).
    run = _snakemake(work, "all", "pdf", "--config", "trials=exercise_education,weightbearing")
    assert run.returncode == 0, run.stderr[-3000:]
    return work


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_bundled_trials_produce_the_analysis_datasets(bundled_run: Path, trial: str) -> None:
    folder = bundled_run / "results" / trial / "analysis"
    for name in OUTPUTS:
        assert (folder / name).stat().st_size > 0, name
    subjects = pd.read_csv(bundled_run / "data" / "raw" / trial / "subjects.csv")
    adsl = pd.read_csv(folder / "adsl.csv")
    flow = pd.read_csv(folder / "flow.csv", keep_default_na=False)
    assert len(adsl) == len(subjects)
    randomized = flow.loc[(flow["stage"] == "randomized") & (flow["arm"] == "total"), "n"]
    assert randomized.item() == len(subjects)
    queries = pd.read_csv(folder / "queries.csv")
    assert len(queries) >= 4  # the planted data-entry problems are all reported
    assert (bundled_run / "results" / trial / "logs" / "analyse.log").exists()


# R's numbers for the bundled trials under the default plan, as tests/test_analysis.py compares
# the library with them: (file, filter, {column: relative tolerance}). Programs:
# tests/reference/make_mmrm_references.R (nlme::gls + emmeans, unstructured) and
# tests/reference/make_references.R (lmerTest::lmer, lm); tolerances as in the README.
R_TABLES = {
    ("effects", "mmrm"): ("mmrm_effects.csv", {"covariance": "us"},
                          {"estimate": 1e-4, "std_error": 1e-4, "df": 1e-2}),
    ("effects", "lmm"): ("lmm_effects.csv", {}, {"estimate": 1e-4, "std_error": 1e-4, "df": 1e-2}),
    ("effects", "ancova"): ("ancova_effects.csv", {},
                            {"estimate": 1e-8, "std_error": 1e-8, "p_value": 1e-8, "n": 0}),
    ("lsmeans", "mmrm"): ("mmrm_lsmeans.csv", {"covariance": "us"},
                          {"estimate": 1e-4, "std_error": 1e-4}),
    ("lsmeans", "lmm"): ("lmm_lsmeans.csv", {}, {"estimate": 1e-4, "std_error": 1e-4}),
    ("lsmeans", "ancova"): ("ancova_lsmeans.csv", {}, {"estimate": 1e-8, "std_error": 1e-8}),
}  # fmt: skip


def _r_reference(name: str, trial: str, where: dict[str, str]) -> pd.DataFrame:
    ref = pd.read_csv(ROOT / "tests" / "reference" / "output" / name, keep_default_na=False)
    ref = ref.loc[ref["dataset"] == trial]
    for column, value in where.items():
        ref = ref.loc[ref[column] == value]
    return ref


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_bundled_trials_produce_the_model_tables(bundled_run: Path, trial: str) -> None:
    """README, What you get: effects.csv and lsmeans.csv hold every outcome, analysis (mmrm,
    lmm, ancova) and post-baseline visit (LS means: every visit of the LMM) in the stated
    columns; the workflow's files hold R's numbers on the same data (README, Validation); ``n``
    and ``n_analysed`` are the participants observed at the visit and in the model, counted
    again from the workflow's own adeff.csv and adsl.csv and equal to R's model sizes."""
    from trialflow.config import load_trial
    from trialflow.derive import read_analysis_datasets

    from .counting import expected_n, expected_n_analysed, observed_rows

    config = load_trial(bundled_run / "config" / "trials" / f"{trial}.yaml")
    results = bundled_run / "results" / trial
    effects = pd.read_csv(results / "tables" / "effects.csv")
    assert list(effects.columns[:11]) == [
        "outcome", "analysis", "contrast", "visit", "estimate", "std_error", "df",
        "ci_lower", "ci_upper", "p_value", "n",
    ]  # fmt: skip
    post = [v.label for v in config.post_baseline_visits]
    analyses = ("mmrm", "lmm", "ancova")
    plan = [(o.name, a, v) for o in config.outcomes for a in analyses for v in post]
    assert list(zip(effects["outcome"], effects["analysis"], effects["visit"], strict=True)) == plan
    lsmeans = pd.read_csv(results / "tables" / "lsmeans.csv")
    assert list(lsmeans.columns) == [
        "outcome", "analysis", "visit", "arm", "estimate", "std_error", "df",
        "ci_lower", "ci_upper", "n", "response", "df_method",
    ]  # fmt: skip
    tables = {"effects": effects, "lsmeans": lsmeans}
    for (table, analysis), (name, where, tolerances) in R_TABLES.items():
        ours = tables[table].loc[tables[table]["analysis"] == analysis]
        keys = ["outcome", "visit"] + (["arm"] if table == "lsmeans" else [])
        ref = _r_reference(name, trial, where)
        merged = ours.merge(ref, on=keys, suffixes=("", "_r"), validate="one_to_one")
        assert len(merged) == len(ours) == len(ref), (table, analysis)
        for column, rtol in tolerances.items():
            assert_allclose(merged[column], merged[f"{column}_r"], rtol=rtol, err_msg=column)
    adsl, adeff = read_analysis_datasets(
        adsl=str(results / "analysis" / "adsl.csv"),
        adeff=str(results / "analysis" / "adeff.csv"),
        meta=str(results / "analysis" / "covariates.json"),
    )
    rows = observed_rows(adeff, adsl, config)
    for r in effects.itertuples():
        assert r.n == expected_n(rows, r.analysis, r.outcome, r.visit)
        assert r.n_analysed == expected_n_analysed(rows, r.analysis, r.outcome, r.visit)
    # R's model sizes: nobs of lm per visit (above), the subjects of the gls and lmer fits.
    for analysis, name, where in (("mmrm", "mmrm_fit.csv", {"covariance": "us"}),
                                  ("lmm", "lmm_fit.csv", {})):  # fmt: skip
        sizes = _r_reference(name, trial, where).set_index("outcome")["n_subjects"]
        ours = effects.loc[effects["analysis"] == analysis].groupby("outcome")["n_analysed"]
        assert ours.unique().map(list).to_dict() == {o: [n] for o, n in sizes.items()}
    type3 = pd.read_csv(results / "tables" / "type3.csv")
    assert list(type3.columns) == [
        "outcome", "analysis", "effect", "num_df", "den_df", "F", "p_value", "df_method",
    ]  # fmt: skip
    covariates = [c.name for c in config.covariates]
    terms = {
        "mmrm": ["baseline", *covariates, "arm", "visit", "arm:visit"],
        "lmm": [*covariates, "arm", "visit", "arm:visit"],
    }
    for (outcome, analysis), rows_t3 in type3.groupby(["outcome", "analysis"], sort=False):
        assert list(rows_t3["effect"]) == terms[analysis], (outcome, analysis)
    assert set(type3["outcome"]) == {o.name for o in config.outcomes}
    subgroups = pd.read_csv(results / "tables" / "subgroups.csv", dtype={"level": str})
    if trial == "weightbearing":  # the only bundled trial that states subgroups
        assert set(subgroups["outcome"]) == set(effects["outcome"])
        assert subgroups["estimate"].notna().all()
    else:
        assert subgroups.empty
    anova = pd.read_csv(results / "tables" / "anova.csv")
    assert list(anova.columns[:7]) == [
        "outcome", "source", "F", "df1", "df2", "p_value", "partial_eta_sq",
    ]  # fmt: skip
    for outcome in effects["outcome"].unique():
        record = json.loads((results / "models" / f"{outcome}.json").read_text())
        assert record["mmrm"]["info"]["formula"].startswith("change ~ baseline")
        assert record["mmrm"]["covariance"] is not None
        mmrm = effects.loc[(effects["outcome"] == outcome) & (effects["analysis"] == "mmrm")]
        assert (mmrm["n_analysed"] == record["mmrm"]["info"]["n_subjects"]).all()


def test_rerun_from_scratch_one_job_per_step_is_byte_identical(
    bundled_run: Path, tmp_path: Path
) -> None:
    # The bundled trials are small, so each ran as one job (rule analyse). Rerun from scratch
    # with one job per step: every table, figure and report is the same byte for byte.
    again = _project(tmp_path)
    run = _snakemake(
        again, "--config", "trials=exercise_education,weightbearing", "job_granularity=per_step"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = [
        p
        for p in sorted((bundled_run / "results").rglob("*"))
        if p.suffix in {".csv", ".json", ".html", ".png", ".svg", ".xpt", ".docx"}
        and "logs" not in p.parts
    ]
    assert len(outputs) >= 2 * 50
    assert {p.suffix for p in outputs} >= {".xpt", ".docx"}
    assert (bundled_run / "results" / "weightbearing" / "logs" / "analyse.log").exists()
    assert not (bundled_run / "results" / "weightbearing" / "logs" / "models.log").exists()
    assert (again / "results" / "weightbearing" / "logs" / "models.log").exists()
    for path in outputs:
        twin = again / path.relative_to(bundled_run)
        assert path.read_bytes() == twin.read_bytes(), path


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(f'<section id="{start}">') : html.index(f'<section id="{end}">')]


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_report_numbers_come_from_the_effects_table(bundled_run: Path, trial: str) -> None:
    from trialflow.config import load_trial
    from trialflow.tables import fmt_ci, fmt_p

    config = load_trial(bundled_run / "config" / "trials" / f"{trial}.yaml")
    html = (bundled_run / "results" / trial / "report.html").read_text(encoding="utf-8")
    effects = pd.read_csv(bundled_run / "results" / trial / "tables" / "effects.csv")
    primary = _section(html, "primary", "secondary")
    for outcome in config.primary_outcomes:
        row = effects.loc[
            (effects["outcome"] == outcome.name)
            & (effects["analysis"] == "mmrm")
            & (effects["visit"] == config.primary_visit)
        ].iloc[0]
        d = outcome.decimals
        assert fmt_ci(row["estimate"], row["ci_lower"], row["ci_upper"], d) in primary
        assert f'<td class="num">{fmt_p(row["p_value"])}</td>' in primary
        sentence = f"95% CI {row['ci_lower']:.{d}f} to {row['ci_upper']:.{d}f}"
        assert sentence in primary


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_report_is_self_contained(bundled_run: Path, trial: str) -> None:
    html = (bundled_run / "results" / trial / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', html)
    # consort, forest, missingness + 4 per outcome + per primary outcome a subgroup forest
    # (weightbearing has subgroups) and the sensitivity forest and tipping-point figures
    subgroups = {"exercise_education": 0, "weightbearing": 2}[trial]
    sensitivity = 2 * {"exercise_education": 1, "weightbearing": 2}[trial]
    assert len(sources) == 3 + 4 * 4 + subgroups + sensitivity
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # Two-panel figures span the page; the others share a row of the grid.
    from trialflow.config import load_trial

    config = load_trial(bundled_run / "config" / "trials" / f"{trial}.yaml")
    for o in config.outcomes:
        for kind, wide in (
            ("spaghetti", True),
            ("diagnostics", True),
            ("trajectory", False),
            ("change", False),
        ):
            tag = re.search(rf'<figure id="fig-{o.name}_{kind}"( class="wide")?>', html)
            assert tag is not None and bool(tag.group(1)) == wide, (o.name, kind)
    assert ".grid2 > figure.wide { grid-column: 1 / -1; }" in html
    assert not re.search(r'(href|src)="(https?:)?//', html)
    assert "is not available" not in html
    sections = re.findall(r'<section id="([a-z0-9]+)">', html)
    assert sections == [
        "summary", "consort", "table1", "primary", "secondary", "harms", "figures",
        "supportive", "sensitivity", "quality", "diagnostics", "methods", "checklist",
        "reproducibility",
    ]  # fmt: skip
    assert "Generated: 2025-11-26 00:00:00 UTC" in html  # SOURCE_DATE_EPOCH honoured


def test_index_links_every_report(bundled_run: Path) -> None:
    html = (bundled_run / "results" / "index.html").read_text(encoding="utf-8")
    assert 'href="exercise_education/report.html"' in html
    assert 'href="weightbearing/report.html"' in html
    assert "HbA1c" in html and "data:image/png;base64," in html  # shared outcome plotted


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Chromium missing")
@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_report_renders_in_headless_chromium(bundled_run: Path, tmp_path: Path, trial: str) -> None:
    """Every image decodes and the page logs nothing to the console.

    A copy of the report gets a probe script (the report itself allows no script) that writes
    the number of images and of broken images into the title, read back with --dump-dom.
    """
    assert CHROMIUM is not None, "CI must install Chromium (.ci/run)"
    html = (bundled_run / "results" / trial / "report.html").read_text(encoding="utf-8")
    html = html.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; "
                        "script-src 'unsafe-inline'")  # fmt: skip
    probe = (
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.title='PROBE:'+i.length+':'+i.filter(x=>!(x.complete&&x.naturalWidth>0))"
        ".length;});</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    titles = re.findall(r"<title>PROBE:(\d+):(\d+)</title>", run.stdout)
    assert titles, run.stderr[-2000:]
    images, broken = map(int, titles[0])
    assert images == html.count("<img ") and broken == 0
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []


# The files each trial declares for Snakemake's report (report() in workflow/rules/common.smk:
# the sensitivity table, the figures' PNGs, the HTML report, Table 1 and the outcome tables).
REPORT_FILES = ("report.html", "tables/table1.html", "tables/primary_outcome.csv",
                "tables/secondary_outcomes.csv", "tables/sensitivity.csv")  # fmt: skip


def test_snakemake_report_archive(bundled_run: Path) -> None:
    """README: "Snakemake's own report archive: snakemake --cores 2 --report
    results/report.zip". The archive holds every file the trials declare for it, each once and
    byte for byte as in results/, and nothing else besides its own page."""
    import hashlib

    run = _snakemake(bundled_run, "--report", "report.zip")
    assert run.returncode == 0, run.stderr[-3000:]
    results = bundled_run / "results"
    declared = [
        path
        for trial in ("exercise_education", "weightbearing")
        for path in [
            *(results / trial / name for name in REPORT_FILES),
            *sorted((results / trial / "figures").glob("*.png")),
        ]
    ]
    assert sum(p.name == "consort.png" for p in declared) == 2  # both trials' figures
    by_content = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in declared}
    assert len(by_content) == len(declared)  # no two declared files are the same bytes
    found: list[Path] = []
    with zipfile.ZipFile(bundled_run / "report.zip") as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        page = z.read("report/report.html").decode()
        for name in names:
            if name == "report/report.html":
                continue
            assert name.startswith("report/data/raw/"), name
            match = by_content.get(hashlib.sha256(z.read(name)).hexdigest())
            assert match is not None, f"{name} is no declared result file"
            assert Path(name).name == match.name
            found.append(match)
    assert sorted(found) == sorted(declared)
    # The introduction names the trials in words (no Python list), and every caption renders.
    assert "analysed the trial(s) exercise_education, weightbearing:" in page
    assert "[&#39;" not in page and "['" not in page.split("analysed the trial(s)")[1][:200]
    assert "{{" not in page.split("analysed the trial(s)")[1][:2000]


def _new_trial(work: Path, name: str) -> None:
    """A trial the project has never seen: XLSX, other column names, one TSV."""
    raw = work / "data" / "raw" / name
    raw.mkdir(parents=True)
    subjects = pd.DataFrame(BASE_SUBJECTS).rename(
        columns={"subject_id": "Patient ID", "arm": "Group", "age": "Age (years)"}
    )
    subjects.to_excel(raw / "subjects.xlsx", index=False)
    visits = pd.DataFrame(BASE_VISITS).rename(
        columns={"subject_id": "Patient ID", "visit": "Visit Name"}
    )
    visits.to_csv(raw / "visits.tsv", sep="\t", index=False)
    config = dict(BASE_TRIAL)
    config["data"] = {
        "subjects": f"data/raw/{name}/subjects.xlsx",
        "visits": f"data/raw/{name}/visits.tsv",
    }
    config["columns"] = {"subject_id": "Patient ID", "arm": "Group", "visit": "Visit Name"}
    config["covariates"] = ["Age (years)", "sex"]
    config["title"] = "A <script>alert('x')</script> trial & co"
    (work / "config" / "trials" / f"{name}.yaml").write_text(yaml.safe_dump(config))


def test_new_trial_runs_without_code_changes(tmp_path: Path) -> None:
    work = _project(tmp_path)
    _new_trial(work, "my_trial")
    run = _snakemake(work, "--config", "trials=my_trial")
    assert run.returncode == 0, run.stderr[-3000:]
    adsl = pd.read_csv(work / "results" / "my_trial" / "analysis" / "adsl.csv")
    assert adsl["subject_id"].tolist() == ["S01", "S02", "S03", "S04"]
    assert "Age (years)" in adsl.columns
    assert not (work / "results" / "exercise_education").exists()
    html = (work / "results" / "my_trial" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "A &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; trial &amp; co" in html


def test_bad_input_stops_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    work = _project(tmp_path)
    _new_trial(work, "bad_trial")
    visits = work / "data" / "raw" / "bad_trial" / "visits.tsv"
    visits.write_text(visits.read_text().replace("week6", "week 7", 1))
    run = _snakemake(work, "--config", "trials=bad_trial")
    assert run.returncode != 0
    assert "unknown visit label(s): 'week 7'" in run.stderr
    assert "data/raw/bad_trial/visits.tsv, row 3, column 'Visit Name'" in run.stderr
    assert "What to do" in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_config_stops_with_a_message(tmp_path: Path) -> None:
    work = _project(tmp_path)
    _new_trial(work, "bad_config")
    path = work / "config" / "trials" / "bad_config.yaml"
    config = yaml.safe_load(path.read_text())
    config["primary_visit"] = "week24"
    path.write_text(yaml.safe_dump(config))
    run = _snakemake(work, "--config", "trials=bad_config")
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "'week24' is not one of the visits" in output
    assert "config/trials/bad_config.yaml" in output


def test_unknown_trial_name(tmp_path: Path) -> None:
    work = _project(tmp_path)
    run = _snakemake(work, "--config", "trials=nope")
    assert run.returncode != 0
    assert "config/trials/nope.yaml" in run.stdout + run.stderr


SENSITIVITY_STRATEGIES = ("mar", "jump_to_reference", "copy_reference",
                          "copy_increments_from_reference")  # fmt: skip


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_sensitivity_tables_cover_every_strategy_method_and_visit(
    bundled_run: Path, trial: str
) -> None:
    from trialflow.config import load_trial
    from trialflow.sensitivity import RESPONDER_COLUMNS, SENSITIVITY_COLUMNS, TIPPING_COLUMNS

    config = load_trial(bundled_run / "config" / "trials" / f"{trial}.yaml")
    tables = bundled_run / "results" / trial / "tables"
    sens = pd.read_csv(tables / "sensitivity.csv")
    assert tuple(sens.columns) == SENSITIVITY_COLUMNS
    visits = [v.label for v in config.post_baseline_visits]
    imputed = sens.loc[sens["method"].isin(["multiple_imputation", "conditional_mean"])]
    expected = {
        (o.name, s, m, v)
        for o in config.outcomes
        for s in SENSITIVITY_STRATEGIES
        for m in ("multiple_imputation", "conditional_mean")
        for v in visits
    }
    keys = set(zip(imputed["outcome"], imputed["strategy"], imputed["method"], imputed["visit"],
                   strict=True))  # fmt: skip
    assert keys == expected and len(imputed) == len(expected)
    assert imputed["estimate"].notna().all() and (imputed["std_error"] > 0).all()
    assert (imputed.loc[imputed["method"] == "multiple_imputation", "imputations"] == 500).all()
    assert (imputed["ci_lower"] < imputed["estimate"]).all()
    completers = sens.loc[sens["strategy"] == "completers"]
    assert set(completers["method"]) == {"mmrm", "ancova"}
    assert len(completers) == 2 * len(visits) * len(config.outcomes)
    tipping = pd.read_csv(tables / "tipping_point.csv")
    assert tuple(tipping.columns) == TIPPING_COLUMNS
    assert set(zip(tipping["outcome"], tipping["method"], strict=True)) == {
        (o.name, m) for o in config.outcomes for m in ("multiple_imputation", "conditional_mean")
    }
    responders = pd.read_csv(tables / "responders.csv")
    assert tuple(responders.columns) == RESPONDER_COLUMNS
    configured = config.sensitivity["responders"]
    assert len(responders) == 2 * sum(len(rules) for rules in configured.values())
    html = (bundled_run / "results" / trial / "report.html").read_text(encoding="utf-8")
    assert "Estimand and sensitivity analyses" in html and "Tipping point for" in html


def test_sensitivity_tables_are_identical_with_one_core(bundled_run: Path) -> None:
    # Every random stream is derived from the seed, the outcome and the imputation number, so
    # a rerun on one core (other job order, other scheduling) writes the same bytes.
    names = ("sensitivity.csv", "tipping_point.csv", "responders.csv")
    tables = bundled_run / "results" / "exercise_education" / "tables"
    before = {n: (tables / n).read_bytes() for n in names}
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/exercise_education/tables/sensitivity.csv",
         "--cores", "1", "--config", "trials=exercise_education", "--forcerun", "analyse"],
        cwd=bundled_run, capture_output=True, text=True, check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1764115200", "MPLBACKEND": "Agg"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert {n: (tables / n).read_bytes() for n in names} == before


def test_index_lists_every_trial_and_runs_of_different_trials_do_not_block(
    bundled_run: Path,
) -> None:
    # Two runs of one trial each, at the same time: their outputs never overlap (the index
    # stamp is per run), and the page they rewrite under a lock lists both trials.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764115200", "MPLBACKEND": "Agg"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--cores",
                "1",
                "--config",
                f"trials={t}",
                "--forcerun",
                "index",
            ],
            cwd=bundled_run,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for t in ("exercise_education", "weightbearing")
    ]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        assert "LockException" not in err
    html = (bundled_run / "results" / "index.html").read_text(encoding="utf-8")
    for trial in ("exercise_education", "weightbearing"):
        assert f'href="{trial}/report.html"' in html


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_pdf_report_pages_render_and_nothing_is_cut(
    bundled_run: Path, trial: str, tmp_path: Path
) -> None:
    from PIL import Image

    pdf = bundled_run / "results" / trial / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    assert shutil.which("pdftoppm") and shutil.which("pdftotext"), "poppler-utils is needed"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")],
                   check=True)  # fmt: skip
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 12
    for page in pages:
        image = Image.open(page).convert("L")
        width, height = image.size
        assert image.getextrema()[0] < 128, f"{page.name} is blank"
        # The right margin (last 4% of the width) stays white: no table or figure runs off.
        margin = image.crop((int(0.96 * width), 0, width, height))
        assert margin.getextrema()[0] > 200, f"{page.name}: something runs into the margin"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    for heading in ("Trial summary", "Participant flow", "Estimand and sensitivity analyses",
                    "Data quality", "Reproducibility"):  # fmt: skip
        assert heading in text


@pytest.mark.parametrize(
    ("trial", "codes"),
    [("weightbearing", ["nonweightbearing", "week12", "week6"]),
     ("exercise_education", ["week26", "week18"])],
)  # fmt: skip
def test_readers_see_display_labels_not_codes(bundled_run: Path, trial: str, codes) -> None:
    html = (bundled_run / "results" / trial / "report.html").read_text(encoding="utf-8")
    body = html[html.index("<main>") : html.index('<section id="reproducibility">')]
    # The query log lists raw cells as they were; the appendix echoes the trial description.
    body = body[: body.index('<section id="quality">')] + body[body.index(
        '<section id="diagnostics">'):]  # fmt: skip
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", body))
    for code in codes:
        assert code not in text, code
    config = yaml.safe_load((bundled_run / "config" / "trials" / f"{trial}.yaml").read_text())
    for arm in (config["arms"]["control"], config["arms"]["treatment"]):
        assert f"<td>{arm}</td>" not in body, arm  # no table cell shows an arm's code
    assert "<td>F</td>" not in body and "<td>Female</td>" in body  # covariate levels too
    assert "Week 12" in text or "Week 26" in text
    csv = (bundled_run / "results" / trial / "tables" / "effects.csv").read_text()
    assert codes[1] in csv  # CSV outputs keep the data's labels


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_word_tables_show_the_report_tables_cell_for_cell(bundled_run: Path, trial: str) -> None:
    import docx

    from trialflow.config import load_trial
    from trialflow.docx_tables import header_rows, journal_tables
    from trialflow.io import neutralise_formulas
    from trialflow.report import display_inputs, load_report_inputs, write_report_tables

    results = bundled_run / "results" / trial
    inputs = load_report_inputs(
        trial=load_trial(bundled_run / "config" / "trials" / f"{trial}.yaml"),
        analysis_dir=results / "analysis",
        tables_dir=results / "tables",
        models_dir=results / "models",
        figures_dir=results / "figures",
        input_files=[],
    )
    shown = display_inputs(inputs)
    expected = journal_tables(shown, write_report_tables(shown))
    document = docx.Document(str(results / "tables" / "tables.docx"))
    # Both bundled trials have secondary outcomes and ran the sensitivity analyses.
    assert len(document.tables) == len(expected) == (5 if trial == "weightbearing" else 4)
    titles = [p.text for p in document.paragraphs if p.text.startswith("Table ")]
    assert titles == [f"Table {i}. {t.title}" for i, t in enumerate(expected, start=1)]
    paragraphs = {p.text for p in document.paragraphs}
    for table, want in zip(document.tables, expected, strict=True):
        cells = [[c.text for c in row.cells] for row in table.rows]
        body = want.frame.fillna("").astype(str).to_numpy().tolist()
        assert cells == [*header_rows(list(want.frame.columns)), *body], want.title
        assert want.note in paragraphs
    # The outcome tables' cells are the CSV tables' cells (only the headers show display labels;
    # the CSV guards a leading minus from spreadsheets).
    for name, index in (("primary_outcome", 1), ("secondary_outcomes", 2)):
        csv = pd.read_csv(results / "tables" / f"{name}.csv", dtype=str, keep_default_na=False)
        cells = [[c.text for c in r.cells] for r in document.tables[index].rows[2:]]
        shown = neutralise_formulas(pd.DataFrame(cells, columns=csv.columns))
        assert shown.to_numpy().tolist() == csv.to_numpy().tolist()
    html = (results / "report.html").read_text(encoding="utf-8")
    assert expected[1].note in html  # the model note is the report's


@pytest.mark.parametrize("trial", ["exercise_education", "weightbearing"])
def test_adam_datasets_are_written_for_every_trial(bundled_run: Path, trial: str) -> None:
    import pyreadstat

    results = bundled_run / "results" / trial
    adsl = pd.read_csv(results / "analysis" / "adsl.csv", dtype={"subject_id": str})
    xpt, meta = pyreadstat.read_xport(str(results / "adam" / "adsl.xpt"))
    assert meta.table_name == "ADSL" and len(xpt) == len(adsl)
    assert list(xpt["USUBJID"]) == [f"{trial}-{s}" for s in adsl["subject_id"]]
    adeff, _ = pyreadstat.read_xport(str(results / "adam" / "adeff.xpt"))
    assert len(adeff) == len(pd.read_csv(results / "analysis" / "adeff.csv"))
    define = pd.read_csv(results / "adam" / "define.csv")
    assert set(define["dataset"]) == {"ADSL", "ADEFF"}
