"""The power planner: scenario validation, seed stability over shards, the power table, the
lean replicate path against the full MMRM, and agreement with the closed-form ANCOVA power."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from trialflow.errors import ConfigError
from trialflow.io import write_csv
from trialflow.power import (
    POWER_COLUMNS,
    PowerScenario,
    gather,
    load_power_scenario,
    parse_power_scenario,
    power_table,
    run_shard,
    sample_size_for,
    scenario_path,
)
from trialflow.power_sim import build_design, fit_replicate, simulate_replicate
from trialflow.stats.mmrm import fit_mmrm

from .conftest import ROOT

TINY: dict[str, Any] = {
    "seed": 11,
    "arms": {"control": "ctl", "treatment": "trt"},
    "visits": [
        {"label": "baseline", "week": 0},
        {"label": "w4", "week": 4},
        {"label": "w8", "week": 8},
    ],
    "outcomes": [
        {
            "name": "score",
            "unit": "points",
            "decimals": 1,
            "baseline_mean": 50,
            "sd": [10, 10, 10],
            "correlation": {"structure": "exchangeable", "rho": 0.6},
            "change": {"ctl": [0, 1, 2], "trt": [0, 3, 6]},
        }
    ],
    "dropout": {"mechanism": "MAR", "rate": {"ctl": 0.25, "trt": 0.25}, "strength": 0.5},
    "sporadic_missing": 0.05,
    "n_per_arm": [6, 9],
    "effects": [4, 8],
    "replicates": 5,
    "shards": 1,
}


def _scenario(tmp_path: Path, content: dict[str, Any], name: str = "tiny") -> PowerScenario:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return load_power_scenario(path)


def _power_csv(scenario: PowerScenario, path: Path) -> bytes:
    shards = [run_shard(scenario, i) for i in range(scenario.shards)]
    write_csv(power_table(gather(shards, scenario), scenario), path)
    return path.read_bytes()


def _broken(change: Any) -> dict[str, Any]:
    content = copy.deepcopy(TINY)
    change(content)
    return content


BAD: list[tuple[str, Any, str]] = [
    ("n_per_arm too small", lambda c: c.update(n_per_arm=[2, 9]), "n_per_arm[0]"),
    ("no replicates", lambda c: c.update(replicates=0), "key replicates"),
    ("more shards", lambda c: c.update(shards=6), "key shards"),
    ("simulator's n", lambda c: c.update(n={"ctl": 5, "trt": 5}), "replace n with n_per_arm"),
    ("same effect twice", lambda c: c.update(effects=[4, 4]), "key effects"),
    ("unknown outcome", lambda c: c.update(analysis={"outcome": "scor"}), "analysis.outcome"),
    ("baseline visit", lambda c: c.update(analysis={"visit": "baseline"}), "analysis.visit"),
    ("df method", lambda c: c.update(analysis={"df": "between_within"}), "analysis.df"),
    ("sd per visit", lambda c: c["outcomes"][0].update(sd=[10, 10]), "outcomes[0].sd"),
    ("arm change", lambda c: c["outcomes"][0]["change"].pop("trt"), "outcomes[0].change.trt"),
    ("dropout rate", lambda c: c["dropout"]["rate"].pop("ctl"), "dropout.rate"),
    ("dropout driver", lambda c: c["dropout"].update(driver="pain"), "dropout.driver"),
    (
        "correlation",
        lambda c: c["outcomes"][0].update(
            correlation={"structure": "matrix", "matrix": [[1, 0.9, 0], [0.9, 1, 0.9], [0, 0.9, 1]]}
        ),
        "outcomes[0].correlation.matrix",
    ),
    (
        "slope per visit with one visit",
        lambda c: c.update(
            visits=c["visits"][:2],
            outcomes=[
                {**c["outcomes"][0], "sd": [10, 10], "change": {"ctl": [0, 1], "trt": [0, 2]}}
            ],
            analysis={"baseline": "by_visit"},
        ),
        "analysis.baseline",
    ),
    ("weeks out of order", lambda c: c["visits"][2].update(week=2), "visits[2]"),
]


@pytest.mark.parametrize(("case", "change", "key"), BAD, ids=[b[0] for b in BAD])
def test_bad_scenarios_name_the_key_and_the_fix(tmp_path, case: str, change: Any, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _scenario(tmp_path, _broken(change))
    text = str(caught.value)
    assert key in text, text
    assert "tiny.yaml" in text and "What to do:" in text


def test_unknown_scenario_names_the_closest_and_lists_the_others(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        scenario_path(ROOT, "weightbearng")
    text = str(caught.value)
    assert "did you mean 'weightbearing'" in text
    assert "exercise_education, weightbearing" in text
    with pytest.raises(ConfigError, match="not allowed"):
        scenario_path(ROOT, "../trials/weightbearing")


@pytest.mark.parametrize("name", ["exercise_education", "weightbearing"])
def test_published_trial_scenarios_are_valid(name: str) -> None:
    scenario = load_power_scenario(scenario_path(ROOT, name))
    assert scenario.model.outcome == scenario.content["analysis"]["outcome"]
    assert scenario.visit == scenario.model.labels[-1]
    assert scenario.replicates >= 1000


def test_same_seed_gives_identical_csv_with_one_or_three_shards(tmp_path) -> None:
    small = {**TINY, "n_per_arm": [6], "effects": [8], "replicates": 4}
    one = _scenario(tmp_path, small, "one")
    three = _scenario(tmp_path, {**small, "shards": 3}, "three")
    assert [three.shard_replicates(i) for i in range(3)] == [range(0, 1), range(1, 2), range(2, 4)]
    assert _power_csv(one, tmp_path / "one.csv") == _power_csv(three, tmp_path / "three.csv")
    # Another seed gives other trials.
    other = _scenario(tmp_path, {**small, "seed": 12}, "other")
    assert _power_csv(other, tmp_path / "other.csv") != (tmp_path / "one.csv").read_bytes()


def test_power_table_has_the_documented_columns_and_sums(tmp_path) -> None:
    scenario = _scenario(tmp_path, TINY)
    replicates = gather([run_shard(scenario, 0)], scenario)
    table = power_table(replicates, scenario)
    assert tuple(table.columns) == POWER_COLUMNS
    assert list(zip(table["n_per_arm"], table["effect"], strict=True)) == [
        (6, 4.0), (6, 8.0), (9, 4.0), (9, 8.0)
    ]  # fmt: skip
    assert (table["replicates"] == 5).all()
    for row in table.itertuples():
        cell = replicates.loc[(replicates["n_per_arm"] == row.n_per_arm)]
        here = cell.loc[cell["effect"] == row.effect]
        null = cell.loc[cell["effect"] == 0.0]
        assert row.power == (here["p_value"] < 0.05).mean()
        assert row.type1_error == (null["p_value"] < 0.05).mean()
        assert row.power_mcse == pytest.approx(math.sqrt(row.power * (1 - row.power) / 5))
        inside = (here["ci_lower"] <= row.effect) & (row.effect <= here["ci_upper"])
        assert row.coverage == inside.mean()
        assert row.mean_estimate == pytest.approx(here["estimate"].mean())
    # Common random numbers: the same trials with a larger effect, so the same dropout here.
    four, eight = (replicates.loc[replicates["effect"] == e] for e in (4.0, 8.0))
    assert np.allclose(eight["estimate"].to_numpy() - four["estimate"].to_numpy(), 4.0, atol=2.0)


def test_effect_sets_the_treatment_difference_at_the_primary_visit(tmp_path) -> None:
    scenario = _scenario(tmp_path, {**TINY, "analysis": {"visit": "w4"}})
    entry = scenario.model.with_effect(5.0)[0]
    gap = np.subtract(entry["change"]["trt"], entry["change"]["ctl"])
    # The scenario's difference (0, 2, 4) keeps its shape and is 5 at the primary visit w4.
    assert gap.tolist() == [0.0, 5.0, 10.0]


def test_lean_replicate_fit_equals_the_full_mmrm(tmp_path) -> None:
    scenario = _scenario(tmp_path, {**TINY, "sporadic_missing": 0.1})
    model, plan, n = scenario.model, scenario.plan, 15
    design = build_design(model, plan, n)
    values, observed = simulate_replicate(model, n, 4.0, model.generator(n, 3))
    lean = fit_replicate(design, plan, values, observed)
    subject, visit = np.nonzero(observed)
    data = pd.DataFrame(
        {
            "id": [f"P{i}" for i in subject],
            "arm": np.where(subject < n, "ctl", "trt"),
            "visit": np.array(["w4", "w8"])[visit],
            "baseline": values[subject, 0],
            "change": values[subject, visit + 1] - values[subject, 0],
        }
    )
    full = fit_mmrm(
        data,
        response="change",
        subject="id",
        visit="visit",
        arm="arm",
        baseline="baseline",
        reference_arm="ctl",
        visit_order=["w4", "w8"],
    )
    row = full.effects.loc[full.effects["visit"] == "w8"].iloc[0]
    assert lean.estimate == pytest.approx(row["estimate"], rel=1e-6)
    assert lean.std_error == pytest.approx(row["std_error"], rel=1e-5)
    assert lean.df == pytest.approx(row["df"], rel=1e-4)
    assert lean.p_value == pytest.approx(row["p_value"], rel=1e-4)


# tests/reference/make_power_references.R:37 computes the closed-form ANCOVA power with pt()
# (noncentral t, df = 2n - 3); its output is tests/reference/output/power_closed_form.csv.
REFERENCE = ROOT / "tests" / "reference" / "output" / "power_closed_form.csv"


@pytest.mark.slow
def test_power_without_dropout_matches_the_closed_form_ancova_power(tmp_path) -> None:
    reference = pd.read_csv(REFERENCE, keep_default_na=False).set_index("case")
    case = reference.loc["effect"]
    n, effect, rho = int(case["n_per_arm"]), float(case["effect"]), float(case["rho"])
    sd0, sd1 = float(case["sd_baseline"]), float(case["sd_final"])
    # The same closed form in Python agrees with R.
    df = 2 * n - 3
    ncp = effect / (sd1 * math.sqrt(1 - rho**2) * math.sqrt(2 / n))
    crit = stats.t.ppf(0.975, df)
    closed = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
    assert closed == pytest.approx(float(case["power"]), abs=1e-10)
    content = {
        "seed": 20240517,
        "arms": {"control": "ctl", "treatment": "trt"},
        "visits": [{"label": "baseline", "week": 0}, {"label": "final", "week": 12}],
        "outcomes": [
            {
                "name": "y",
                "baseline_mean": 30,
                "sd": [sd0, sd1],
                "correlation": {"structure": "exchangeable", "rho": rho},
                "change": {"ctl": [0, 0], "trt": [0, effect]},
            }
        ],
        "n_per_arm": [n],
        "effects": [effect],
        "replicates": 400,
    }
    scenario = _scenario(tmp_path, content)
    table = power_table(run_shard(scenario, 0), scenario)
    row = table.iloc[0]
    mcse = math.sqrt(closed * (1 - closed) / 400)
    assert abs(row["power"] - closed) < 3 * mcse, (row["power"], closed)
    null = float(reference.loc["null", "power"])
    assert abs(row["type1_error"] - null) < 3 * math.sqrt(null * (1 - null) / 400)
    assert abs(row["coverage"] - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 400)


def test_sample_size_for_a_target_is_the_first_size_that_stays_above_it() -> None:
    table = pd.DataFrame(
        {
            "n_per_arm": [10, 20, 30, 40],
            "effect": [1.0] * 4,
            "power": [0.5, 0.81, 0.79, 0.92],
        }
    )
    assert sample_size_for(table, 1.0, 0.8) == 40
    assert sample_size_for(table, 1.0, 0.5) == 10
    assert sample_size_for(table, 1.0, 0.95) is None


def test_parse_refuses_a_scenario_with_the_same_arm_twice() -> None:
    content = copy.deepcopy(TINY)
    content["arms"] = {"control": "a", "treatment": "a"}
    with pytest.raises(ConfigError, match="key arms"):
        parse_power_scenario(content, name="x", source="x.yaml")


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
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


@pytest.mark.workflow
def test_power_target_writes_the_table_curve_and_page(tmp_path) -> None:
    work = _project(tmp_path)
    small = {**TINY, "n_per_arm": [6], "effects": [8], "replicates": 4, "shards": 2}
    (work / "config" / "power" / "tiny.yaml").write_text(yaml.safe_dump(small))
    run = _snakemake(work, "--cores", "2", "power", "--config", "power=tiny")
    assert run.returncode == 0, run.stderr[-3000:]
    out = work / "results" / "power" / "tiny"
    # Two shards in Snakemake jobs give the bytes of one shard in this process.
    expected = _power_csv(_scenario(tmp_path, {**small, "shards": 1}), tmp_path / "one.csv")
    assert (out / "power.csv").read_bytes() == expected
    page = (out / "power.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "<table" in page
    assert "n per arm for 80% power" in page and "replicates: 4" in page  # the scenario echoed
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    svg = (out / "power_curve.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert (out / "power_curve.png").stat().st_size > 0
    # The default target does not include the power rules.
    dry = _snakemake(work, "-n", "--cores", "2", "--config", "power=tiny")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "power_shard" not in dry.stdout


@pytest.mark.workflow
def test_power_target_without_a_scenario_says_how_to_name_one(tmp_path) -> None:
    work = _project(tmp_path)
    run = _snakemake(work, "--cores", "1", "power")
    assert run.returncode != 0
    assert "the power target needs a power scenario" in run.stderr
    assert "--config power=<name>" in run.stderr
    assert "exercise_education, weightbearing" in run.stderr
