"""Figures: labelled axes with units, one colour per arm, reproducible files, forest direction,
unit checks across trials, and figures that still render when an outcome has no data."""

from __future__ import annotations

import copy
import dataclasses
import sys
from statistics import NormalDist

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.cbook import boxplot_stats, is_math_text
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from PIL import Image

from trialflow import figures
from trialflow.analysis import analyse_trial, outcome_data
from trialflow.clean import read_and_clean
from trialflow.config import load_trial, load_yaml
from trialflow.derive import derive
from trialflow.errors import TrialflowError
from trialflow.plots import figure_stems, write_trial_figures
from trialflow.sensitivity_figures import tipping_figure
from trialflow.simulate import simulate, write_trial
from trialflow.stats.mmrm import fit_mmrm
from trialflow.tables import mmrm_included

from .conftest import ROOT, TinyTrial

BLUE, ORANGE = "#0072b2", "#e69f00"


@pytest.fixture(scope="module", params=["exercise_education", "weightbearing"])
def bundled(request):
    trial = load_trial(ROOT / "config" / "trials" / f"{request.param}.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    return trial, d, analyse_trial(d.adeff, d.adsl, trial)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """The exercise/education trial simulated with 1500 subjects per arm, cleaned and derived."""
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education.yaml")
    scenario = copy.deepcopy(load_yaml(ROOT / "config" / "scenarios" / "exercise_education.yaml"))
    scenario["n"] = {trial.control: 1500, trial.treatment: 1500}
    root = tmp_path_factory.mktemp("large")
    write_trial(simulate(scenario), root / "data" / "raw" / "exercise_education")
    return trial, derive(read_and_clean(trial, root=root), trial)


def _residuals(trial, d, outcome):
    """MMRM residuals of one outcome, as the workflow writes them, with the arm added."""
    options = trial.options
    data = outcome_data(d.adeff, d.adsl, trial, trial.outcome(outcome))
    post = [v.label for v in trial.post_baseline_visits]
    fit = fit_mmrm(
        data.loc[data["visit"].isin(post)],
        response="change",
        baseline="baseline",
        covariates=[c.name for c in trial.covariates],
        covariance=options["covariance"],
        fallback=options["fallback"],
        reference_arm=trial.control,
        visit_order=post,
        subject="subject_id",
        visit="visit",
        arm="arm",
    )
    return fit.residuals.merge(d.adsl[["subject_id", "arm"]], on="subject_id")


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def _plot_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.axison]


def _labels(fig: Figure) -> str:
    return " | ".join(f"{ax.get_xlabel()} / {ax.get_ylabel()}" for ax in fig.axes)


def test_arm_colors_are_okabe_ito(bundled) -> None:
    trial, _, _ = bundled
    colors = figures.arm_colors(trial)
    assert {k: to_hex(v) for k, v in colors.items()} == {
        trial.control: BLUE,
        trial.treatment: ORANGE,
    }


def test_every_figure_has_labelled_axes_with_units(bundled) -> None:
    trial, d, result = bundled
    primary = trial.primary_outcomes[0]
    unit = primary.unit
    built = {
        "trajectory": figures.trajectory_figure(result.lsmeans, d.adeff, trial, primary.name),
        "spaghetti": figures.spaghetti_figure(d.adeff, trial, primary.name),
        "change": figures.change_figure(d.adeff, trial, primary.name),
        "diagnostics": figures.diagnostics_figure(
            _residuals(trial, d, primary.name), trial, primary.name
        ),
        "missingness": figures.missingness_figure(d.flow, trial),
        "forest": figures.forest_figure(result.effects, trial),
    }
    for name, fig in built.items():
        assert isinstance(fig, Figure), name
        for ax in _plot_axes(fig):
            assert ax.get_xlabel(), (name, ax.get_title())
            if name != "forest":
                assert ax.get_ylabel(), (name, ax.get_title())
    trajectory = _plot_axes(built["trajectory"])[0]
    ylabel = trajectory.get_ylabel().replace("\n", " ")
    assert ylabel == f"Change from baseline in {primary.label} ({unit})"
    assert "weeks" in trajectory.get_xlabel()
    assert all(f"({unit})" in ax.get_ylabel() for ax in _plot_axes(built["spaghetti"]))
    assert f"({unit})" in _plot_axes(built["change"])[0].get_ylabel()
    _, rvf = _plot_axes(built["diagnostics"])
    assert f"({unit})" in rvf.get_xlabel() and f"({unit})" in rvf.get_ylabel()
    assert "%" in _plot_axes(built["missingness"])[0].get_ylabel()
    forest_units = sorted(ax.get_xlabel() for ax in _plot_axes(built["forest"]))
    # A difference of an outcome in % is in percentage points.
    assert forest_units == sorted(
        f"Difference ({figures.difference_unit(o)})" for o in trial.outcomes
    )
    # Error bars come from the model table: the treatment arm's CI at the primary visit.
    ls = result.lsmeans
    row = ls.loc[
        (ls["outcome"] == primary.name)
        & (ls["analysis"] == "mmrm")
        & (ls["arm"] == trial.treatment)
        & (ls["visit"] == trial.primary_visit)
    ].iloc[0]
    segments = np.concatenate(
        [c.get_segments() for c in trajectory.collections if hasattr(c, "get_segments")]
    )
    assert any(
        np.isclose(s[:, 1].min(), row["ci_lower"]) and np.isclose(s[:, 1].max(), row["ci_upper"])
        for s in segments
    )


def test_arm_colours_are_the_same_in_every_figure(bundled) -> None:
    trial, d, result = bundled
    outcome = trial.outcomes[0].name
    colors = {arm: to_hex(c) for arm, c in figures.arm_colors(trial).items()}

    spaghetti = figures.spaghetti_figure(d.adeff, trial, outcome)
    for ax, arm in zip(_plot_axes(spaghetti), trial.arms, strict=True):
        line_colors = {to_hex(line.get_color()) for line in ax.get_lines()} - {"#000000"}
        assert line_colors == {colors[arm]}

    bars = figures.missingness_figure(d.flow, trial)
    for patch in _plot_axes(bars)[0].patches:
        assert to_hex(patch.get_facecolor()) in colors.values()
    legend = bars.legends[0]
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        arm = text.get_text().split(" (")[0]
        assert to_hex(handle.get_facecolor()) == colors[arm]

    change = figures.change_figure(d.adeff, trial, outcome)
    (points,) = [c for c in _plot_axes(change)[0].collections if len(c.get_offsets())]
    # One seaborn scatter for both arms: each point in its arm's colour (arm i sits at x = i).
    arm_at = np.rint(points.get_offsets()[:, 0]).astype(int)
    faces = [to_hex(c) for c in points.get_facecolors()]
    assert set(arm_at) == {0, 1}
    assert faces == [colors[trial.arms[i]] for i in arm_at]

    trajectory = figures.trajectory_figure(result.lsmeans, d.adeff, trial, outcome)
    handles = trajectory.legends[0].legend_handles
    assert [to_hex(h.get_color()) for h in handles[:2]] == [colors[a] for a in trial.arms]


def test_consort_shows_flow_counts(bundled) -> None:
    trial, d, result = bundled
    primary = trial.primary_outcomes[0].name
    arm_of = d.adsl.set_index("subject_id")["arm"]
    analysed = mmrm_included(result.residuals[primary], arm_of, trial.arms)
    # Everyone in the MMRM: participants with a baseline and any post-baseline value.
    rows = d.adeff.loc[(d.adeff["outcome"] == primary) & (d.adeff["anl01fl"] == "Y")]
    assert sum(analysed.values()) == rows["subject_id"].nunique()
    fig = figures.consort_figure(d.flow, trial, analysed)
    text = "\n".join(_texts(fig)).replace("\n", " ")
    flow = d.flow

    def n(stage, arm, visit=""):
        sel = (flow["stage"] == stage) & (flow["arm"] == arm) & (flow["visit"] == visit)
        return int(flow.loc[sel, "n"].iloc[0])

    assert f"Randomized (n = {n('randomized', 'total')})" in text
    for arm in trial.arms:
        assert f"Allocated to {arm} (n = {n('randomized', arm)})" in text
        assert f"(n = {analysed[arm]} of {n('randomized', arm)} randomized)" in text
        assert f"(n = {n('completed', arm)})" in text
    lost = [v.label for v in trial.visits[:-1]]
    assert sum(f"Withdrew after {v}" in t for t in _texts(fig) for v in lost) == 2 * len(lost)


def test_save_figure_is_byte_identical(bundled, tmp_path) -> None:
    trial, d, _ = bundled
    outcome = trial.primary_outcomes[0].name
    written = []
    for run in ("a", "b"):
        fig = figures.change_figure(d.adeff, trial, outcome)
        size = tuple(round(150 * inches) for inches in fig.get_size_inches())
        paths = figures.save_figure(fig, tmp_path / run / "change")
        assert [p.suffix for p in paths] == [".png", ".svg"]
        assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
        written.append([p.read_bytes() for p in paths])
    assert written[0] == written[1]
    png, svg = written[0]
    assert b"Software" not in png and b"matplotlib" not in png.lower()
    assert b"<dc:date>" not in svg and matplotlib.__version__.encode() not in svg
    with Image.open(tmp_path / "a" / "change.png") as image:
        # PNG stores pixels per metre, so 150 dpi reads back as 150.01.
        assert np.allclose(image.info["dpi"], 150, atol=0.05)
        assert image.size == size


def test_forest_shades_the_side_favouring_treatment(bundled) -> None:
    trial, _, result = bundled
    fig = figures.forest_figure(result.effects, trial, analyses=("mmrm", "lmm", "ancova"))
    axes = _plot_axes(fig)
    assert len(axes) == len(trial.outcomes)
    for o in trial.outcomes:
        ax = next(a for a in axes if a.get_label() == o.name)
        shade = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(shade) == 1
        x0, x1 = sorted((shade[0].get_x(), shade[0].get_x() + shade[0].get_width()))
        lo, hi = ax.get_xlim()
        if o.better == "higher":
            assert (x0, x1) == pytest.approx((0.0, hi))
            assert any(t.get_text() == f"favours {trial.treatment} \u2192" for t in ax.texts)
        else:
            assert (x0, x1) == pytest.approx((lo, 0.0))
            assert any(t.get_text() == f"\u2190 favours {trial.treatment}" for t in ax.texts)
        assert lo < 0 < hi
    # One estimate text per analysis and outcome, with the table's numbers.
    estimates = [t for t in _texts(fig) if t.startswith("MMRM: ")]
    assert len(estimates) == len(trial.outcomes)
    assert len(fig.legends) == 1


def test_cross_trial_forest_and_mixed_units() -> None:
    trials, effects = {}, {}
    for name in ("exercise_education", "weightbearing"):
        trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml")
        trials[name] = trial
        effects[name] = pd.DataFrame(
            {
                "outcome": ["hba1c"],
                "analysis": ["mmrm"],
                "visit": [trial.primary_visit],
                "estimate": [0.2],
                "ci_lower": [-0.1],
                "ci_upper": [0.5],
                "n": [30],
            }
        )
    fig = figures.cross_trial_forest(effects, trials, "hba1c")
    (ax,) = _plot_axes(fig)
    assert "(%)" in ax.get_xlabel()
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == list(trials)
    assert _texts(fig).count("0.20 (\u22120.10 to 0.50), n = 30") == 2

    wb = trials["weightbearing"]
    mmol = tuple(
        dataclasses.replace(o, unit="mmol/mol") if o.name == "hba1c" else o for o in wb.outcomes
    )
    mixed = {**trials, "weightbearing": dataclasses.replace(wb, outcomes=mmol)}
    with pytest.raises(TrialflowError, match="different units"):
        figures.cross_trial_forest(effects, mixed, "hba1c")
    with pytest.raises(TrialflowError, match="none of the trials"):
        figures.cross_trial_forest(effects, trials, "pain_vas_typo")


def test_outcome_without_data_still_renders(bundled, tmp_path) -> None:
    trial, d, result = bundled
    name = trial.outcomes[-1].name
    adeff = d.adeff.copy()
    gone = adeff["outcome"] == name
    adeff.loc[gone, ["value", "baseline", "change", "pct_change"]] = np.nan
    adeff.loc[gone, "anl01fl"] = ""
    effects = result.effects.copy()
    effects.loc[effects["outcome"] == name, ["estimate", "ci_lower", "ci_upper", "n"]] = np.nan
    lsmeans = result.lsmeans.loc[result.lsmeans["outcome"] != name]
    empty_residuals = pd.DataFrame(
        columns=["subject_id", "visit", "observed", "fitted", "residual", "normalized_residual"]
    )
    built = [
        figures.trajectory_figure(lsmeans, adeff, trial, name),
        figures.spaghetti_figure(adeff, trial, name),
        figures.change_figure(adeff, trial, name),
        figures.diagnostics_figure(empty_residuals, trial, name),
    ]
    for i, fig in enumerate(built):
        assert any(t.startswith("no data") for t in _texts(fig)), i
        assert all(ax.get_xlabel() and ax.get_ylabel() for ax in _plot_axes(fig))
        figures.save_figure(fig, tmp_path / f"fig{i}")
    forest = figures.forest_figure(effects, trial)
    assert "not estimable" in _texts(forest)
    figures.save_figure(forest, tmp_path / "forest")
    assert len(list(tmp_path.glob("*.png"))) == len(built) + 1


def test_user_text_is_never_mathtext(bundled) -> None:
    trial, d, result = bundled
    first = trial.outcomes[0]
    renamed = dataclasses.replace(first, label="Cost $ per visit ($)", unit="$/wk")
    odd = dataclasses.replace(
        trial, title="Price $x$ trial", outcomes=(renamed, *trial.outcomes[1:])
    )
    fig = figures.trajectory_figure(result.lsmeans, d.adeff, odd, first.name)
    texts = _texts(fig)
    assert not any(is_math_text(t) for t in texts)
    flat = " ".join(texts).replace("\n", " ")
    assert "Cost \\$ per visit (\\$) (\\$/wk)" in flat
    fig.canvas.draw()


def test_figures_leave_global_matplotlib_state_alone(bundled) -> None:
    trial, d, _ = bundled
    keys = ("font.family", "font.size", "svg.hashsalt", "text.usetex", "axes.spines.top")
    before = {k: matplotlib.rcParams[k] for k in keys}
    fig = figures.missingness_figure(d.adeff, trial)
    fig.canvas.draw()
    assert {k: matplotlib.rcParams[k] for k in keys} == before
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"
    # Not registered with pyplot: nothing to close and no figure leaks between callers.
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or fig not in map(pyplot.figure, pyplot.get_fignums())


def _trajectories(ax) -> list[np.ndarray]:
    return [
        seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()
    ]


def test_large_trial_draws_a_sample_of_trajectories(large, bundled) -> None:
    trial, d = large
    outcome = trial.primary_outcomes[0].name
    fig = figures.spaghetti_figure(d.adeff, trial, outcome)
    rows = d.adeff.loc[d.adeff["outcome"] == outcome].dropna(subset=["value"])
    for ax, arm in zip(_plot_axes(fig), trial.arms, strict=True):
        arm_rows = rows.loc[rows["arm"] == arm]
        n = arm_rows["subject_id"].nunique()
        assert n == 1500
        assert len(_trajectories(ax)) == figures.MAX_TRAJECTORIES_PER_ARM
        assert f"(n = {n}; " in ax.get_title(loc="left")
        shown = figures.MAX_TRAJECTORIES_PER_ARM
        assert f"{shown} of {n} subjects shown" in ax.get_title(loc="left")
        # The thick mean line still averages every subject, not the sample.
        mean = max(ax.get_lines(), key=lambda line: line.get_linewidth())
        expected = arm_rows.groupby("week")["value"].mean()
        assert np.allclose(mean.get_xdata(), expected.index)
        assert np.allclose(mean.get_ydata(), expected.to_numpy())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "one subject (random sample)" in legend
    assert "observed mean (all subjects)" in legend

    small_trial, small, _ = bundled
    name = small_trial.primary_outcomes[0].name
    full = figures.spaghetti_figure(small.adeff, small_trial, name)
    assert not any("shown" in t for t in _texts(full))
    small_rows = small.adeff.loc[small.adeff["outcome"] == name].dropna(subset=["value"])
    for ax, arm in zip(_plot_axes(full), small_trial.arms, strict=True):
        n = small_rows.loc[small_rows["arm"] == arm, "subject_id"].nunique()
        assert len(_trajectories(ax)) == n
    capped = figures.spaghetti_figure(small.adeff, small_trial, name, max_subjects=5)
    for ax in _plot_axes(capped):
        assert len(_trajectories(ax)) == 5
        assert "lines: 5 of " in ax.get_title(loc="left")


def test_trajectory_sample_is_deterministic(large, tmp_path) -> None:
    trial, d = large
    outcome = trial.primary_outcomes[0].name

    def sample(adeff, **kwargs):
        fig = figures.spaghetti_figure(adeff, trial, outcome, **kwargs)
        return [np.concatenate(_trajectories(ax)) for ax in _plot_axes(fig)]

    first = sample(d.adeff)
    # The same subjects whatever the row order of ADEFF, and a different sample per seed.
    shuffled = d.adeff.sample(frac=1.0, random_state=7)
    for a, b in zip(first, sample(shuffled), strict=True):
        assert np.array_equal(a, b)
    other = sample(d.adeff, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    written = []
    for run in ("a", "b"):
        fig = figures.spaghetti_figure(d.adeff, trial, outcome)
        written.append([p.read_bytes() for p in figures.save_figure(fig, tmp_path / run / "s")])
    assert written[0] == written[1]


def test_change_figure_caps_points_but_boxes_use_everyone(large) -> None:
    trial, d = large
    outcome = trial.primary_outcomes[0].name
    fig = figures.change_figure(d.adeff, trial, outcome)
    (ax,) = _plot_axes(fig)
    rows = d.adeff.loc[
        (d.adeff["outcome"] == outcome) & (d.adeff["visit"] == trial.primary_visit)
    ].dropna(subset=["change"])
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    arm_at = np.rint(points.get_offsets()[:, 0]).astype(int)
    medians = [line for line in ax.get_lines() if line.get_color() == "black"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    for i, (arm, median, label) in enumerate(zip(trial.arms, medians, labels, strict=True)):
        values = rows.loc[rows["arm"] == arm, "change"].to_numpy(dtype=float)
        shown = points.get_offsets()[arm_at == i, 1]
        assert len(values) > figures.MAX_POINTS_PER_ARM
        assert len(shown) == figures.MAX_POINTS_PER_ARM
        assert f"(n = {len(values)}; {len(shown)} shown as points)" in label
        assert np.allclose(median.get_ydata(), np.median(values))
        # The box hides its fliers, so every value beyond the whiskers must be a point.
        fliers = boxplot_stats(values)[0]["fliers"]
        assert len(fliers) and set(fliers) <= set(shown)
    assert "random sample" in ax.get_xlabel()
    again = figures.change_figure(d.adeff, trial, outcome)
    (redrawn,) = [c for c in _plot_axes(again)[0].collections if isinstance(c, PathCollection)]
    assert np.array_equal(points.get_offsets(), redrawn.get_offsets())


@pytest.mark.parametrize("n", [300, 4000])
def test_dense_residual_clouds_are_rasterized(bundled, tmp_path, n: int) -> None:
    trial, _, _ = bundled
    outcome = trial.primary_outcomes[0].name
    rng = np.random.default_rng(3)
    residual = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i // 2:04d}" for i in range(n)],
            "visit": trial.primary_visit,
            "fitted": rng.normal(size=n),
            "residual": residual,
            "normalized_residual": residual,
            "arm": np.resize(trial.arms, n),
        }
    )
    fig = figures.diagnostics_figure(frame, trial, outcome)
    clouds = [c for ax in _plot_axes(fig) for c in ax.collections if len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in clouds] == [n, n]
    dense = n > figures.DENSE_POINTS
    assert all(c.get_rasterized() == dense for c in clouds)
    _, svg = figures.save_figure(fig, tmp_path / "diagnostics")
    assert (b"<image" in svg.read_bytes()) == dense


def test_a_large_residual_cloud_draws_every_outlier_and_a_sample(bundled) -> None:
    """Above MAX_RESIDUAL_POINTS residuals, each panel draws every residual beyond 3 SD and a
    seeded sample of the others, the QQ plot at the quantiles of all of them, and says so."""
    trial, _, _ = bundled
    outcome = trial.primary_outcomes[0].name
    n = figures.MAX_RESIDUAL_POINTS + 5_000
    rng = np.random.default_rng(4)
    residual = rng.standard_t(4, size=n)
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i:06d}" for i in range(n)],
            "visit": trial.primary_visit,
            "fitted": rng.normal(size=n),
            "residual": 2.0 * residual,
            "normalized_residual": residual,
            "arm": np.resize(trial.arms, n),
        }
    )
    fig = figures.diagnostics_figure(frame, trial, outcome)
    qq, rvf = _plot_axes(fig)
    outliers = np.sort(residual[np.abs(residual) > 3])
    assert len(outliers) > 100
    for ax, scale in ((qq, 1.0), (rvf, 2.0)):
        offsets = np.vstack([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        assert len(offsets) == figures.MAX_RESIDUAL_POINTS
        # (Halving the raw residuals is exact in floating point.)
        assert set(outliers) <= set(offsets[:, 1] / scale)
        assert any(f"20,000 of {n:,} drawn" in t.get_text() for t in ax.texts)
    # The QQ plot's theoretical quantiles are those of all n residuals (Blom positions).
    qq_points = np.vstack([c.get_offsets() for c in qq.collections if len(c.get_offsets())])
    largest = qq_points[np.argmax(qq_points[:, 1])]
    assert largest[1] == residual.max()
    assert largest[0] == pytest.approx(NormalDist().inv_cdf((n - 0.5) / n))
    again = _plot_axes(figures.diagnostics_figure(frame, trial, outcome))[1]
    assert np.array_equal(rvf.collections[0].get_offsets(), again.collections[0].get_offsets())


def test_withdrawals_follow_attendance_not_one_outcome(tiny: TinyTrial) -> None:
    # S03 (control) attended week6 with only the walk measured there, then withdrew; S06
    # (control) had only the walk measured and withdrew after week6; S05 never attended.
    for row in tiny.visits:
        if row["subject_id"] == "S03" and row["visit"] == "week6":
            row["pain"] = ""
    tiny.subjects += [
        {"subject_id": "S05", "arm": "control", "age": "50", "sex": "F"},
        {"subject_id": "S06", "arm": "control", "age": "66", "sex": "M"},
    ]
    tiny.visits += [
        {"subject_id": "S06", "visit": "baseline", "pain": "", "6MWD": "390"},
        {"subject_id": "S06", "visit": "week6", "pain": "", "6MWD": "395"},
    ]
    trial = tiny.load()
    d = derive(read_and_clean(trial), trial)
    flow, adsl = d.flow, d.adsl
    for outcome in ("pain", "walk"):
        fig = figures.spaghetti_figure(d.adeff, trial, outcome)
        for ax, arm in zip(_plot_axes(fig), trial.arms, strict=True):
            sel = (flow["stage"] == "withdrawn") & (flow["arm"] == arm)
            withdrawn = int(flow.loc[sel, "n"].iloc[0])
            assert withdrawn == int(((adsl["arm"] == arm) & (adsl["withdrawn"] == "Y")).sum())
            assert f"; {withdrawn} withdrew)" in ax.get_title(loc="left"), (outcome, arm)
    assert (
        int(flow.loc[(flow["stage"] == "withdrawn") & (flow["arm"] == "control"), "n"].iloc[0]) == 3
    )

    # The x sits on S03's last pain value up to week6 (baseline, 5.5), and S06, who has no
    # pain value, and S05 get none.
    fig = figures.spaghetti_figure(d.adeff, trial, "pain")
    control = _plot_axes(fig)[0]
    crosses = [line for line in control.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert list(crosses[0].get_xdata()) == [0.0]
    assert list(crosses[0].get_ydata()) == [5.5]
    walk = _plot_axes(figures.spaghetti_figure(d.adeff, trial, "walk"))[0]
    (walk_crosses,) = [line for line in walk.get_lines() if line.get_marker() == "x"]
    assert sorted(zip(walk_crosses.get_xdata(), walk_crosses.get_ydata(), strict=True)) == [
        (6.0, 395.0),
        (6.0, 455.0),
    ]


def test_subgroup_forest_draws_every_level_and_says_why_one_is_missing() -> None:
    trial = load_trial(ROOT / "config" / "trials" / "exercise_education_sap.yaml")
    d = derive(read_and_clean(trial, root=ROOT), trial)
    result = analyse_trial(d.adeff, d.adsl, trial)
    outcome = trial.primary_outcomes[0]
    table = result.subgroups.copy()
    level = table.index[table["outcome"] == outcome.name][0]
    table.loc[level, ["estimate", "ci_lower", "ci_upper"]] = np.nan
    table.loc[level, "note"] = "not estimable: no participant of arm 'x' observed at week12"
    fig = figures.subgroup_forest_figure(table, trial, outcome.name)
    texts = " | ".join(_texts(fig))
    rows = table.loc[table["outcome"] == outcome.name]
    for name in rows["subgroup"].unique():
        assert f"{name}   (interaction p = " in texts
    assert "not estimable: no participant of arm" in texts
    drawn = [r for r in rows.to_dict("records") if np.isfinite(r["estimate"])]
    estimable = [t for t in _texts(fig) if ", n = " in t]
    assert len(estimable) == len(drawn)
    assert f"Difference ({outcome.unit})" in _labels(fig)


def test_value_response_trajectory_has_no_zero_anchor(bundled) -> None:
    trial, d, _ = bundled
    plan = dataclasses.replace(trial, analysis={"response": "value", "baseline": "main"})
    result = analyse_trial(d.adeff, d.adsl, plan)
    outcome = plan.primary_outcomes[0].name
    fig = figures.trajectory_figure(result.lsmeans, d.adeff, plan, outcome)
    ax = _plot_axes(fig)[0]
    assert "LS mean by visit" in ax.get_title(loc="left")
    assert not ax.get_ylabel().startswith("Change from baseline")
    first_week = min(v.week for v in plan.post_baseline_visits)
    # LS means are the solid lines with markers; the open symbols without line are the observed
    # means, which include the baseline visit.
    arms = [
        line
        for line in ax.get_lines()
        if line.get_marker() not in (None, "None", "") and line.get_linestyle() == "-"
    ]
    assert len(arms) == 2
    segments = np.concatenate([c.get_segments() for c in ax.collections])
    for xs in [line.get_xdata() for line in arms] + [s[:, 0] for s in segments]:
        # LS means and their CIs start at the first post-baseline visit
        assert np.asarray(xs, dtype=float).min() >= first_week - 1.0


def _png_chunks(data: bytes) -> list[bytes]:
    """Chunk types of a PNG file, in order."""
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at + 4 : at + 8])
        at += 12 + length
    return chunks


def test_every_figure_file_is_byte_identical_on_rerun_and_on_two_workers(bundled, tmp_path) -> None:
    """README, "Threads": the figures are the same byte for byte whatever the cores."""
    trial, d, result = bundled
    # Every figure but the sensitivity ones (their analyses are tested in test_sensitivity).
    plan = dataclasses.replace(trial, sensitivity={})
    runs = []
    for run, workers in (("a", 1), ("b", 2)):
        written = write_trial_figures(
            trial=plan,
            adeff=d.adeff,
            flow=d.flow,
            effects=result.effects,
            lsmeans=result.lsmeans,
            residuals=result.residuals,
            folder=tmp_path / run,
            subgroups=result.subgroups,
            workers=workers,
        )
        runs.append({p.name: p.read_bytes() for p in written})
    assert runs[0] == runs[1]
    assert sorted(runs[0]) == sorted(f"{s}.{e}" for s in figure_stems(plan) for e in ("png", "svg"))
    for name, data in runs[0].items():
        if name.endswith(".png"):
            # No text chunk (software, date): only the image, its size and its resolution.
            assert set(_png_chunks(data)) == {b"IHDR", b"pHYs", b"IDAT", b"IEND"}, name
            with Image.open(tmp_path / "a" / name) as image:
                assert image.mode == "RGB" and np.allclose(image.info["dpi"], 150, atol=0.05)
        else:
            # Text as text (svg.fonttype "none"), not glyph outlines; no date, no version.
            assert b"<text " in data and b'id="DejaVuSans-' not in data, name
            assert b"<dc:date>" not in data and matplotlib.__version__.encode() not in data


def _seaborn_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Record every call of the seaborn plotting functions (and still draw)."""
    import seaborn

    calls: list[tuple[str, dict]] = []

    def spy(name: str):
        real = getattr(seaborn, name)

        def call(*args, **kwargs):
            calls.append((name, kwargs))
            return real(*args, **kwargs)

        return call

    for name in ("lineplot", "scatterplot", "boxplot", "barplot"):
        monkeypatch.setattr(seaborn, name, spy(name))
    return calls


def test_statistical_graphics_are_drawn_by_seaborn_without_its_intervals(
    bundled, monkeypatch
) -> None:
    trial, d, result = bundled
    name = trial.primary_outcomes[0].name
    calls = _seaborn_calls(monkeypatch)
    drawers = {
        "trajectory": lambda: figures.trajectory_figure(result.lsmeans, d.adeff, trial, name),
        "spaghetti": lambda: figures.spaghetti_figure(d.adeff, trial, name),
        "change": lambda: figures.change_figure(d.adeff, trial, name),
        "missingness": lambda: figures.missingness_figure(d.flow, trial),
        "diagnostics": lambda: figures.diagnostics_figure(_residuals(trial, d, name), trial, name),
    }
    expected = {
        "trajectory": ["lineplot"],
        "spaghetti": ["lineplot", "lineplot"],
        "change": ["boxplot", "scatterplot"],
        "missingness": ["barplot"],
        "diagnostics": ["scatterplot", "scatterplot"],
    }
    for kind, draw in drawers.items():
        calls.clear()
        draw()
        assert [c for c, _ in calls] == expected[kind], kind
        # Where seaborn aggregates it estimates no interval: CIs come from the model tables.
        for func, kwargs in calls:
            if func in ("lineplot", "barplot"):
                assert "errorbar" in kwargs and kwargs["errorbar"] is None, (kind, func)


def test_trajectory_draws_every_ls_mean_and_ci_of_the_table(bundled) -> None:
    trial, d, result = bundled
    colors = {arm: to_hex(c) for arm, c in figures.arm_colors(trial).items()}
    weeks = {v.label: v.week for v in trial.visits}
    for o in trial.outcomes:
        ax = _plot_axes(figures.trajectory_figure(result.lsmeans, d.adeff, trial, o.name))[0]
        table = result.lsmeans.loc[
            (result.lsmeans["outcome"] == o.name) & (result.lsmeans["analysis"] == "mmrm")
        ]
        lines = {
            to_hex(line.get_color()): line for line in ax.get_lines() if line.get_linestyle() == "-"
        }
        segments = [s for c in ax.collections for s in c.get_segments()]
        for arm in trial.arms:
            rows = table.loc[table["arm"] == arm].sort_values("visit", key=lambda v: v.map(weeks))
            # The seaborn line of the arm: 0 at baseline, then the table's LS means.
            line = lines[colors[arm]]
            assert np.allclose(line.get_ydata(), [0.0, *rows["estimate"]])
            xs = np.asarray(line.get_xdata(), dtype=float)
            assert np.allclose(np.round(xs), [0.0, *rows["visit"].map(weeks)], atol=1.0)
            # Each CI bar spans the table's ci_lower to ci_upper, at the line's x.
            for x, lo, hi in zip(xs[1:], rows["ci_lower"], rows["ci_upper"], strict=True):
                assert any(
                    np.allclose(s[:, 0], x) and np.allclose(sorted(s[:, 1]), [lo, hi])
                    for s in segments
                ), (o.name, arm, x)


def test_missingness_bars_are_the_attendance_of_the_flow_table(bundled) -> None:
    trial, d, _ = bundled
    ax = _plot_axes(figures.missingness_figure(d.flow, trial))[0]
    flow = d.flow
    for container, arm in zip(ax.containers, trial.arms, strict=True):
        n = int(flow.loc[(flow["stage"] == "randomized") & (flow["arm"] == arm), "n"].iloc[0])
        sel = (flow["stage"] == "attended") & (flow["arm"] == arm)
        attended = flow.loc[sel].set_index("visit")["n"]
        expected = [100 * attended[v.label] / n for v in trial.visits]
        assert np.allclose([bar.get_height() for bar in container], expected)


def test_tipping_lines_and_bands_are_those_of_the_table(bundled) -> None:
    trial, _, _ = bundled
    o = trial.primary_outcomes[0]
    delta = np.linspace(0.0, 2.0, 5)
    tipping = pd.DataFrame(
        {
            "outcome": o.name,
            "method": np.repeat(["multiple_imputation", "conditional_mean"], 5),
            "delta": np.tile(delta, 2),
            "estimate": np.r_[1.0 - delta, 0.8 - delta],
            "ci_lower": np.r_[0.5 - delta, 0.2 - delta],
            "ci_upper": np.r_[1.5 - delta, 1.4 - delta],
            "tipping_delta": np.repeat([0.5, np.nan], 5),
            "note": np.repeat(["", "not significant without delta adjustment"], 5),
        }
    )
    ax = _plot_axes(tipping_figure(tipping, trial, o.name))[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 5]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    for method, line, band in zip(
        ("multiple_imputation", "conditional_mean"), lines, bands, strict=True
    ):
        rows = tipping.loc[tipping["method"] == method]
        assert np.allclose(line.get_ydata(), rows["estimate"])
        outline = band.get_paths()[0].vertices
        assert np.isclose(outline[:, 1].min(), rows["ci_lower"].min())
        assert np.isclose(outline[:, 1].max(), rows["ci_upper"].max())
    texts = " ".join(_texts(ax.figure))
    assert "tipping point 0." in texts and "no tipping point" in texts


def test_png_files_decode_to_the_rendered_pixels() -> None:
    """``png_bytes`` writes unfiltered rows itself; Pillow must read back every pixel and the
    resolution."""
    import io

    from trialflow.figure_layout import png_bytes

    rng = np.random.default_rng(3)
    for height, width in ((1, 1), (7, 13), (120, 90)):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgb[: height // 2] = 255  # a white band, as in a figure's margins
        with Image.open(io.BytesIO(png_bytes(rgb, 150))) as image:
            assert image.mode == "RGB" and image.size == (width, height)
            assert np.allclose(image.info["dpi"], 150, atol=0.05)
            np.testing.assert_array_equal(np.asarray(image), rgb)
