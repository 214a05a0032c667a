"""Report building blocks: escaping, sentences and methods text written from the tables."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from trialflow.config import load_trial
from trialflow.report import generated_stamp, html_table, result_sentence, shared_outcomes

from .conftest import ROOT


@pytest.fixture(scope="module")
def walk_trial():
    return load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")


def _tables(estimate: float, lo: float, hi: float, p: float, adjusted: float = float("nan")):
    effects = pd.DataFrame(
        {
            "outcome": ["six_minute_walk", "hba1c"],
            "analysis": ["mmrm", "mmrm"],
            "visit": ["week12", "week12"],
            "estimate": [estimate, -estimate / 100],
            "ci_lower": [lo, -hi / 100],
            "ci_upper": [hi, -lo / 100],
            "p_value": [p, p],
            "p_adjusted": [p, adjusted],
            "multiplicity": ["primary outcome: unadjusted", "Holm across 2 secondary outcomes"],
            "n": [27, 27],
        }
    )
    lsmeans = pd.DataFrame(
        {
            "outcome": ["six_minute_walk"] * 2 + ["hba1c"] * 2,
            "analysis": ["mmrm"] * 4,
            "visit": ["week12"] * 4,
            "arm": ["nonweightbearing", "weightbearing"] * 2,
            "estimate": [16.0, 45.0, -0.4, -0.1],
        }
    )
    return effects, lsmeans


def test_result_sentence_reads_the_tables(walk_trial) -> None:
    effects, lsmeans = _tables(29.0, 6.0, 51.0, 0.012)
    text = result_sentence(walk_trial.outcome("six_minute_walk"), walk_trial, effects, lsmeans)
    assert text.startswith(
        "At the week12 visit (week 12), the mean change from baseline in 6-minute walk"
    )
    assert "16.0 m in the nonweightbearing arm and 45.0 m in the weightbearing arm" in text
    assert "29.0 m (95% CI 6.0 to 51.0; p = 0.012; n = 27)" in text
    assert "favouring the weightbearing arm (higher is better)" in text


def test_result_sentence_direction_for_lower_is_better(walk_trial) -> None:
    effects, lsmeans = _tables(29.0, 6.0, 51.0, 0.0004, adjusted=0.0008)
    text = result_sentence(walk_trial.outcome("hba1c"), walk_trial, effects, lsmeans)
    # HbA1c difference -0.29 (CI -0.51 to -0.06) with lower better favours the treatment
    assert "-0.29 percentage points" in text
    assert "p < 0.001; Holm-adjusted p < 0.001" in text
    assert "favouring the weightbearing arm (lower is better)" in text


def test_result_sentence_interval_including_zero(walk_trial) -> None:
    effects, lsmeans = _tables(10.0, -5.0, 25.0, 0.2)
    text = result_sentence(walk_trial.outcome("six_minute_walk"), walk_trial, effects, lsmeans)
    assert "the 95% CI includes zero (no clear difference)" in text


def test_html_table_escapes_every_cell() -> None:
    frame = pd.DataFrame({"<b>col</b>": ["<script>x</script>", "a & b"], "n": [1, 2]})
    out = str(html_table(frame))
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;x&lt;/script&gt;" in out and "a &amp; b" in out
    assert '<td class="num">1</td>' in out


def test_grouped_header_for_arm_columns() -> None:
    frame = pd.DataFrame({"outcome": ["x"], "A: n": ["1"], "A: mean": ["2"], "B: n": ["3"]})
    out = str(html_table(frame))
    assert '<th colspan="2" class="group">A</th>' in out
    assert '<th rowspan="2">outcome</th>' in out


def test_generated_stamp_honours_source_date_epoch(monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert generated_stamp() == "1970-01-01 00:00:00 UTC"


def test_shared_outcomes(walk_trial) -> None:
    other = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    shared = shared_outcomes([walk_trial, other])
    assert list(shared) == ["hba1c"]


def test_result_sentence_for_a_model_that_was_not_fitted(walk_trial) -> None:
    effects, lsmeans = _tables(float("nan"), float("nan"), float("nan"), float("nan"))
    text = result_sentence(walk_trial.outcome("six_minute_walk"), walk_trial, effects, lsmeans)
    assert "could not be estimated (see model diagnostics)" in text


def test_methods_text_states_the_plan_and_unequal_spacing() -> None:
    from trialflow.plan import mmrm_formula, plan_sentences, supportive_note

    trial = load_trial(ROOT / "config" / "trials" / "exercise_education_sap.yaml")
    text = " ".join(plan_sentences(trial))
    assert "separate slope at each visit" in text
    assert "age also interacted with visit" in text
    assert "by their observed frequency" in text
    assert "Kenward-Roger degrees of freedom and adjusted standard errors" in text
    # sp_pow uses the weeks: no warning about positional lags.
    assert "not equally spaced" not in text
    assert mmrm_formula(trial).endswith("baseline:visit + age:visit + arm:visit")
    assert "age:visit" in supportive_note(trial)
    default = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    # Weeks 6, 12, 18, 26 are unequally spaced, and the default fallbacks include Toeplitz and
    # AR(1), which count lags in visit positions.
    spaced = " ".join(plan_sentences(default))
    assert "not equally spaced" in spaced and "sp_pow" in spaced
    assert "one common slope" in spaced and "Satterthwaite" in spaced


def test_verdict_follows_the_holm_adjusted_p(walk_trial) -> None:
    # HbA1c is secondary: CI excluding zero but Holm-adjusted p = 0.084 must not "favour".
    effects, lsmeans = _tables(29.0, 2.0, 56.0, 0.03, adjusted=0.084)
    hba1c = walk_trial.outcome("hba1c")
    text = result_sentence(hba1c, walk_trial, effects, lsmeans)
    assert "Holm-adjusted p = 0.084" in text
    assert "favouring" not in text
    assert "not statistically significant after the Holm adjustment" in text
    effects, lsmeans = _tables(29.0, 2.0, 56.0, 0.003, adjusted=0.006)
    assert "favouring" in result_sentence(hba1c, walk_trial, effects, lsmeans)


def test_n_in_sentences_is_the_number_in_the_model(walk_trial) -> None:
    effects, lsmeans = _tables(29.0, 2.0, 56.0, 0.03)
    effects["n_analysed"] = [29, 29]
    text = result_sentence(walk_trial.outcome("six_minute_walk"), walk_trial, effects, lsmeans)
    assert "n = 29 analysed, 27 observed at week12" in text


def test_consort_checklist_marks_what_the_data_cannot_supply(walk_trial) -> None:
    from trialflow.consort import checklist

    table = checklist(walk_trial).set_index("item")["where in this report"]
    assert table["Trial registration (registry and number)"].startswith(
        "given in the trial description: ClinicalTrials.gov NCT00763087"
    )
    assert table["Where the protocol can be accessed"] == (
        "missing: add protocol: to the trial description"
    )
    assert table["Participant flow (diagram) with numbers randomised, receiving treatment and "
                 "analysed"].startswith("Section 2. Participant flow")  # fmt: skip
    assert table["Randomisation: sequence, concealment, implementation"].startswith("not supplied")


def test_adverse_event_table_counts_participants_and_events(walk_trial) -> None:
    from trialflow.harms import adverse_event_table

    adsl = pd.DataFrame({"subject_id": list("abcd"), "arm": ["nonweightbearing"] * 2
                         + ["weightbearing"] * 2})  # fmt: skip
    events = pd.DataFrame(
        {
            "subject_id": ["a", "c", "c", "d"],
            "arm": ["nonweightbearing", "weightbearing", "weightbearing", "weightbearing"],
            "term": ["Fall", "Fall", "Fall", "Foot ulcer"],
            "serious": pd.array([False, True, False, pd.NA], dtype="boolean"),
            "related": pd.array([True, False, False, False], dtype="boolean"),
        }
    )
    table = adverse_event_table(events, adsl, walk_trial).set_index("event")
    assert table.at["Any adverse event", "weightbearing: participants"] == "2 (100%)"
    assert table.at["Any adverse event", "weightbearing: events"] == 3
    assert table.at["Serious adverse event", "weightbearing: participants"] == "1 (50%)"
    assert table.at["Related adverse event", "nonweightbearing: participants"] == "1 (50%)"
    assert table.at["Fall", "total: participants"] == 2 and table.at["Fall", "total: events"] == 3
    assert list(table.index[3:]) == ["Fall", "Foot ulcer"]  # commonest term first


def test_display_labels_replace_codes_for_readers(walk_trial) -> None:
    from trialflow.labels import display_frame, display_trial

    shown = display_trial(walk_trial)
    assert shown.arms == ("Non-weight-bearing", "Weight-bearing")
    assert shown.primary_visit == "Week 12" and shown.baseline_visit == "Baseline"
    frame = pd.DataFrame(
        {"arm": ["nonweightbearing", "weightbearing", "total"], "visit": ["week12", "week6", ""],
         "Sex": ["F", "M", None], "weightbearing: events": [1, 2, 3],
         "subgroup": ["Sex"] * 3, "level": ["F", "M", "F"]}
    )  # fmt: skip
    out = display_frame(frame, walk_trial)
    assert out is not None
    assert out["arm"].tolist() == ["Non-weight-bearing", "Weight-bearing", "total"]
    assert out["visit"].tolist() == ["Week 12", "Week 6", ""]
    assert out["Sex"].tolist()[:2] == ["Female", "Male"] and out["level"].tolist()[0] == "Female"
    assert "Weight-bearing: events" in out.columns
    assert frame["arm"].iloc[0] == "nonweightbearing"  # the data keep their labels


def test_reproducibility_appendix_checks_the_installed_versions_against_the_lock(
    tmp_path: Path,
) -> None:
    from importlib.metadata import version

    from trialflow.report import lock_status

    (tmp_path / "requirements.lock").write_text(
        f"# header\nnumpy=={version('numpy')}\npandas==0.0.1\nno-such-package-here==1.0\n",
        encoding="utf-8",
    )
    text = lock_status(tmp_path)
    assert "2 of 3 pinned packages installed" in text
    assert f"1 at other versions: pandas {version('pandas')} (pinned 0.0.1)" in text
    assert "numpy" not in text
    (tmp_path / "requirements.lock").write_text(f"numpy=={version('numpy')}\n", encoding="utf-8")
    assert lock_status(tmp_path).endswith(
        "1 of 1 pinned packages installed, all at their pinned versions"
    )
    assert lock_status(tmp_path / "nowhere") == "no requirements.lock in the project folder"


def test_reproducibility_appendix_names_the_blas_numpy_uses() -> None:
    import numpy as np
    from threadpoolctl import threadpool_info

    from trialflow.report import blas

    np.ones(2) @ np.ones(2)
    apis = {i["internal_api"] for i in threadpool_info() if i.get("user_api") == "blas"}
    text = blas()
    assert apis and all(api in text for api in apis)


def test_the_report_may_load_nothing_from_the_network() -> None:
    """README, "Safety and reproducibility": reports "load nothing from the network (their
    Content-Security-Policy forbids it)": every fetch is refused but inline images (data:) and
    the inline style sheet."""
    template = ROOT / "workflow" / "trialflow" / "templates" / "report.html.j2"
    text = template.read_text(encoding="utf-8")
    found = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    assert len(found) == 1
    policy = dict(d.strip().split(" ", 1) for d in found[0].split(";"))
    assert policy == {"default-src": "'none'", "img-src": "data:", "style-src": "'unsafe-inline'"}
