"""Figures of a trial's analysis, drawn from the analysis datasets and the model tables.

Every plotting function takes DataFrames of the output contract (``flow``, ``adeff``,
``effects``, ``lsmeans``, MMRM residuals) and the :class:`~trialflow.config.TrialConfig`, and
returns a :class:`matplotlib.figure.Figure` without writing anything; :func:`save_figure` is
the only function touching files and writes byte-reproducible PNG and SVG. The statistical
graphics (trajectories, individual trajectories, change distributions, visit completion,
residual diagnostics, tipping point) are drawn with seaborn, with ``errorbar=None`` wherever
seaborn aggregates: every confidence interval is read from the model tables (lsmeans,
effects) and drawn from them, never bootstrapped or re-estimated. The CONSORT diagram, the
forest plots and annotations are plain matplotlib. Figures are built on their own Agg canvas
under a local style context, so no global pyplot or backend state is touched, and are laid
out once by :mod:`trialflow.figure_layout` (no constrained layout). In large trials,
individual trajectories and points are drawn for a seeded sample of subjects per arm (the
figure says so) and dense scatters are rasterized in the SVG; means, boxes and counts always
use every subject. Each arm keeps one colour-blind-safe colour in every figure
(:func:`arm_colors`), every axis names its unit from the trial description, and labels coming
from the configuration or the data are rendered as plain text. An outcome without data or
estimates still gets a figure that says so.
"""

from __future__ import annotations

import functools
import math
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from trialflow.config import Outcome, TrialConfig, did_you_mean
from trialflow.errors import ConfigError, TrialflowError
from trialflow.figure_layout import Panels, arrange, legend_below, text_width, write_png_svg
from trialflow.tables import ci_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

# Okabe-Ito colours: distinguishable under the common colour-vision deficiencies.
CONTROL_COLOR = "#0072B2"
TREATMENT_COLOR = "#E69F00"
NEUTRAL_COLOR = "#666666"
TEXT_GREY = "#444444"

ANALYSIS_LABELS: dict[str, str] = {"mmrm": "MMRM", "lmm": "LMM", "ancova": "ANCOVA"}
# Analyses are told apart by marker shape as well as colour (black and two Okabe-Ito hues
# that are not used for the arms), so they stay distinct in greyscale.
ANALYSIS_STYLES: dict[str, tuple[str, str]] = {
    "mmrm": ("o", "#000000"),
    "lmm": ("s", "#009E73"),
    "ancova": ("D", "#CC79A7"),
}
DOMAIN_ORDER: tuple[str, ...] = ("pain", "strength", "function", "glucose", "fitness", "other")
DOMAIN_TITLES: dict[str, str] = {
    "pain": "Pain",
    "strength": "Strength",
    "function": "Physical function",
    "glucose": "Glucose control",
    "fitness": "Fitness",
    "other": "Other outcomes",
}
PNG_DPI = 150
SVG_HASHSALT = "trialflow"

# In large trials thousands of overlapping lines or points hide the pattern they should show
# and make the files slow to write and heavy to open, so an arm with more subjects than these
# caps has its individual data drawn for a random sample of subjects only, while means, boxes
# and counts still use every subject. The sample is drawn from SAMPLE_SEED (or the figure's
# ``seed``) and the arm's position over the sorted subject ids, so reruns and reordered input
# draw the same subjects. Arms within the caps (every bundled trial) are drawn in full.
MAX_TRAJECTORIES_PER_ARM = 150
MAX_POINTS_PER_ARM = 300
SAMPLE_SEED = 20240101
# Above this many points a scatter is drawn with small translucent markers and embedded in the
# SVG as one bitmap layer: tens of thousands of vector markers add nothing visible but megabytes.
DENSE_POINTS = 2000
# Most residuals drawn per diagnostics panel: beyond this (tens of thousands of subjects) the
# markers cover each other and only cost drawing time. Every residual beyond +-3 SD is drawn,
# and a seeded random sample of the others (the QQ plot's quantiles come from all of them).
MAX_RESIDUAL_POINTS = 20_000
OUTLYING_RESIDUAL = 3.0

# Applied only while a figure is built or saved (rc_context), so a user's matplotlib settings
# are neither changed nor able to change our output. DejaVu Sans ships with matplotlib, which
# keeps rendering identical across machines; usetex is off and mathtext parsing stays on only
# so that escaped dollar signs in user labels render as dollars.
_STYLE: dict[str, Any] = {
    # "sans-serif" after it: the SVG names a generic fallback for viewers without DejaVu Sans.
    "font.family": ["DejaVu Sans", "sans-serif"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.formatter.useoffset": False,
    "axes.formatter.use_mathtext": False,
    "axes.unicode_minus": True,
    "text.usetex": False,
    "text.parse_math": True,
    # Titles stay at the top of their axes: matplotlib then never measures the axes under a
    # title to move it (trialflow.figure_layout leaves room for the titles).
    "axes.titley": 1.0,
    # Text as text in the SVG (DejaVu Sans, or a sans-serif where it is missing): a fraction of
    # the time and size of glyph outlines, and still searchable.
    "svg.fonttype": "none",
    "svg.hashsalt": SVG_HASHSALT,
    "figure.dpi": PNG_DPI,
    "savefig.dpi": PNG_DPI,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    # The stubs type rc_context's argument as a dict of literal keys; _STYLE is checked at runtime.
    style: Any = _STYLE
    with matplotlib.rc_context(style):
        yield


def _styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a figure builder inside the local style context."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _style():
            return func(*args, **kwargs)

    return wrapper


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas at the PNG resolution, not registered with pyplot (no
    global backend state), laid out by hand (:func:`trialflow.figure_layout.arrange`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- colours and text


def arm_colors(trial: TrialConfig) -> dict[str, str]:
    """The colour of each arm, used identically in every figure.

    Parameters
    ----------
    trial
        The trial description.

    Returns
    -------
    dict
        ``{control label: "#0072B2" (blue), treatment label: "#E69F00" (orange)}``
        (Okabe-Ito palette). Totals and pooled data use :data:`NEUTRAL_COLOR`.
    """
    return {trial.control: CONTROL_COLOR, trial.treatment: TREATMENT_COLOR}


def _plain(text: object) -> str:
    """User text as literal text: escape ``$`` so that matplotlib never starts mathtext."""
    return str(text).replace("$", r"\$")


def _num(value: Any) -> float:
    """A table cell as float (empty, None or text that is not a number become NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: float, decimals: int) -> str:
    """A number with the outcome's decimals and a typographic minus; NaN as "NA"."""
    if not math.isfinite(value):
        return "NA"
    text = f"{value:.{decimals}f}"
    # -0.00 after rounding reads as a sign that is not there.
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", "\u2212")


def _estimate_text(est: float, lo: float, hi: float, n: float, decimals: int) -> str:
    n_text = str(int(n)) if math.isfinite(n) else "NA"
    return f"{_fmt(est, decimals)} ({_fmt(lo, decimals)} to {_fmt(hi, decimals)}), n = {n_text}"


def difference_unit(outcome: Outcome) -> str:
    """Unit of a difference: percentage points for an outcome in %, else the outcome's unit."""
    return "percentage points" if outcome.unit.strip() == "%" else _plain(outcome.unit)


def _outcome(trial: TrialConfig, name: str) -> Outcome:
    try:
        return trial.outcome(name)
    except KeyError:
        names = [o.name for o in trial.outcomes]
        raise ConfigError(
            f"outcome {name!r} is not in trial {trial.name!r} ({did_you_mean(name, names)})",
            file=trial.source,
            fix="use an outcome name from the trial description",
        ) from None


def _with_unit(text: str, outcome: Outcome) -> str:
    return f"{_plain(text)} ({_plain(outcome.unit)})"


def _change_label(text: str, outcome: Outcome) -> str:
    """Axis label of a change (a difference): an outcome in % changes in percentage points."""
    return f"{_plain(text)} ({difference_unit(outcome)})"


def _wrap(text: str, width: int = 48) -> str:
    """Break a long axis label over lines so that it never runs past the axis."""
    return textwrap.fill(text, width=width, break_long_words=False)


def _better_note(outcome: Outcome) -> str:
    return "\u2193 lower is better" if outcome.better == "lower" else "\u2191 higher is better"


def _no_data(ax: Axes, message: str = "no data", *, hide_ticks: str = "") -> None:
    """Say why a panel is empty; ``hide_ticks`` ("x", "y", "xy") drops meaningless scales."""
    if "x" in hide_ticks:
        ax.set_xticks([])
    if "y" in hide_ticks:
        ax.set_yticks([])
    ax.text(
        0.5,
        0.5,
        message,
        transform=ax.transAxes,
        ha="center",
        va="center",
        color=TEXT_GREY,
        fontsize=10,
        style="italic",
    )


def _rows(frame: pd.DataFrame, **equal: str) -> pd.DataFrame:
    """Rows of ``frame`` whose columns equal the given values (none if a column is absent)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in equal.items():
        if column not in frame.columns:
            return frame.iloc[0:0]
        mask &= frame[column].astype(str) == value
    return frame.loc[mask]


def _outcome_rows(adeff: pd.DataFrame, outcome: Outcome) -> pd.DataFrame:
    rows = _rows(adeff, outcome=outcome.name).copy()
    for column in ("value", "change", "week"):
        if column in rows.columns:
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    return rows


def _week_ticks(ax: Axes, trial: TrialConfig) -> None:
    weeks = [v.week for v in trial.visits]
    ax.set_xticks(weeks, [f"{w:g}" for w in weeks])
    span = max(weeks) - min(weeks) or 1.0
    ax.set_xlim(min(weeks) - 0.06 * span, max(weeks) + 0.06 * span)
    ax.set_xlabel("Time since randomization (weeks)")


def _dodge(trial: TrialConfig) -> dict[str, float]:
    """Horizontal offset per arm so that the two arms' error bars do not overlap."""
    weeks = [v.week for v in trial.visits]
    step = 0.015 * ((max(weeks) - min(weeks)) or 1.0)
    return {trial.control: -step, trial.treatment: step}


def _sample_positions(n: int, size: int, seed: int, stream: int) -> np.ndarray:
    """Sorted positions of a seeded random sample of ``size`` out of ``n`` items.

    Parameters
    ----------
    n
        Number of items to sample from.
    size
        Largest number of items to keep.
    seed
        Seed of the sample.
    stream
        Second seed component (the arm's position), so that each arm gets its own sample and
        one arm's sample never depends on the other arm's size.

    Returns
    -------
    numpy.ndarray
        ``0 .. n - 1`` when ``n <= size``, else ``size`` distinct positions in increasing
        order.
    """
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n, size=size, replace=False))


def _attended_subjects(adeff: pd.DataFrame, visit: str) -> set[str]:
    """Subjects with at least one outcome value at ``visit`` (the ADSL meaning of attended)."""
    rows = _rows(adeff, visit=visit)
    if "value" not in rows.columns:
        return set()
    values = pd.to_numeric(rows["value"], errors="coerce")
    return set(rows.loc[values.notna(), "subject_id"].astype(str))


def _last_attended(adeff: pd.DataFrame, trial: TrialConfig) -> pd.Series:
    """Position in ``trial.visits`` of each subject's last attended visit.

    Parameters
    ----------
    adeff
        The ADEFF dataset, all outcomes: a visit is attended when any outcome has a value
        there, as in ADSL and the flow counts, so one outcome's rows alone would miss visits
        where only other outcomes were measured.
    trial
        The trial description.

    Returns
    -------
    pandas.Series
        Visit position (0 = first scheduled visit) indexed by subject id as text; subjects
        who attended no visit are absent.
    """
    if not {"subject_id", "visit", "value"} <= set(adeff.columns):
        return pd.Series(dtype=float)
    position = {v.label: float(i) for i, v in enumerate(trial.visits)}
    at = adeff["visit"].astype(str).map(position)
    seen = pd.to_numeric(adeff["value"], errors="coerce").notna() & at.notna()
    return at[seen].groupby(adeff.loc[seen, "subject_id"].astype(str)).max()


# --------------------------------------------------------------------------- CONSORT


def _flow_count(flow: pd.DataFrame, stage: str, arm: str, visit: str = "") -> int:
    visits = flow["visit"].fillna("").astype(str)
    sel = (flow["stage"].astype(str) == stage) & (flow["arm"].astype(str) == arm)
    sel &= visits == visit
    return int(pd.to_numeric(flow.loc[sel, "n"], errors="coerce").fillna(0).sum())


def _box(
    ax: Axes,
    cx: float,
    cy: float,
    width: float,
    height: float,
    text: str,
    *,
    edge: str,
    face: str | tuple[float, float, float],
    weight: str = "normal",
    dashed: bool = False,
) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (cx - width / 2, cy - height / 2),
            width,
            height,
            boxstyle="round,pad=0,rounding_size=0.06",
            facecolor=face,
            edgecolor=edge,
            linewidth=1.2,
            linestyle="--" if dashed else "-",
        )
    )
    # About 15 characters per inch at 9 pt keeps long arm or visit labels inside the box.
    wrapped = "\n".join(
        textwrap.fill(line, width=max(12, int(width * 15))) for line in text.split("\n")
    )
    ax.text(cx, cy, wrapped, ha="center", va="center", fontsize=9, weight=weight)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "-|>",
            "color": TEXT_GREY,
            "lw": 1.0,
            "shrinkA": 0,
            "shrinkB": 0,
            "mutation_scale": 10,
        },
    )


def _tint(color: str, amount: float = 0.15) -> tuple[float, float, float]:
    """``color`` mixed with white: a light box fill that keeps black text readable."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (1 - amount * (1 - r), 1 - amount * (1 - g), 1 - amount * (1 - b))


MAX_REASON_LINES = 4


def _withdrawal_reasons(flow: pd.DataFrame, arm: str) -> list[tuple[str, int]]:
    """(reason, n) of an arm's withdrawals, commonest first, when the trial records reasons."""
    if "reason" not in flow:
        return []
    rows = flow.loc[(flow["stage"] == "withdrawal_reason") & (flow["arm"] == arm)]
    pairs = [(str(r), int(k)) for r, k in zip(rows["reason"], rows["n"], strict=True) if k > 0]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def _enrolment_boxes(
    ax: Axes,
    flow: pd.DataFrame,
    exclusions: pd.DataFrame,
    cx: float,
    top: float,
    randomized_y: float,
    box_h: float,
) -> None:
    """CONSORT enrolment: assessed for eligibility, excluded with reasons, then randomized."""
    _box(ax, cx, top, 3.0, box_h,
         f"Assessed for eligibility (n = {_flow_count(flow, 'assessed', 'total')})",
         edge=TEXT_GREY, face="#F2F2F2", weight="bold")  # fmt: skip
    _arrow(ax, (cx, top - box_h / 2), (cx, randomized_y + box_h / 2))
    reasons = [(str(r), int(k)) for r, k in zip(exclusions["reason"], exclusions["n"], strict=True)]
    lines = [f"Excluded (n = {_flow_count(flow, 'excluded', 'total')})", *_reason_lines(reasons)]
    mid = (top - box_h / 2 + randomized_y + box_h / 2) / 2
    side_x, side_w = cx + 3.35, 3.2
    _arrow(ax, (cx, mid), (side_x - side_w / 2, mid))
    _box(ax, side_x, mid, side_w, 0.2 + 0.16 * len(lines), "\n".join(lines),
         edge=NEUTRAL_COLOR, face="white", dashed=True)  # fmt: skip


def _reason_lines(reasons: Sequence[tuple[str, int]]) -> list[str]:
    """One line per reason; beyond the box's room, the rest summed on one line by name."""
    if len(reasons) <= MAX_REASON_LINES:
        return [f"{_plain(r)} (n = {k})" for r, k in reasons]
    shown, rest = reasons[: MAX_REASON_LINES - 1], reasons[MAX_REASON_LINES - 1 :]
    lines = [f"{_plain(r)} (n = {k})" for r, k in shown]
    lines.append(f"{len(rest)} further reasons (n = {sum(k for _, k in rest)})")
    return lines


@_styled
def consort_figure(
    flow: pd.DataFrame,
    trial: TrialConfig,
    analysed: Mapping[str, int],
    excluded: Mapping[str, Sequence[tuple[str, int]]] | None = None,
) -> Figure:
    """CONSORT flow diagram from the flow counts.

    Parameters
    ----------
    flow
        The CONSORT counts (``flow.csv``; columns stage, visit, arm, n).
    trial
        The trial description.
    analysed
        Subjects per arm in the primary analysis (see :func:`trialflow.tables.mmrm_included`).

    Returns
    -------
    Figure
        A top "Randomized" box, then one column per arm (control left, treatment right):
        allocated, baseline attended, attended at each post-baseline visit, completed (final
        visit attended), analysed; side boxes give the withdrawals after each visit and, when
        the trial records them, the reasons for withdrawal.
    """
    colors = arm_colors(trial)
    base = trial.visit(trial.baseline_visit)
    post = list(trial.post_baseline_visits)
    # Main boxes per arm: allocation, baseline, each post-baseline visit, analysis.
    n_main = 3 + len(post)
    pitch, box_h, side_h = 1.0, 0.56, 0.42
    width = 10.5
    # Room below for the lines of exclusion reasons the analysed boxes may carry.
    reason_lines = max((sum(1 for _, k in r if k) for r in (excluded or {}).values()), default=0)
    below = 0.16 * (reason_lines + 1) if reason_lines else 0.0
    exclusions = _rows(flow, stage="exclusion_reason")
    enrol = 0.0
    if (flow["stage"] == "assessed").any():
        enrol = 1.2 + 0.16 * max(len(exclusions) - 2, 0)
    height = 1.0 + 1.35 + pitch * (n_main - 1) + 0.9 + enrol
    fig = _new_figure(width, height + below)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(-below, height)
    ax.axis("off")

    ax.text(
        width / 2,
        height - 0.3,
        _plain(trial.title),
        ha="center",
        va="center",
        fontsize=11,
        weight="bold",
    )
    total = _flow_count(flow, "randomized", "total")
    top_y = height - 0.95 - enrol
    if enrol:
        _enrolment_boxes(ax, flow, exclusions, width / 2, height - 0.95, top_y, box_h)
    _box(
        ax,
        width / 2,
        top_y,
        3.0,
        box_h,
        f"Randomized (n = {total})",
        edge=TEXT_GREY,
        face="#F2F2F2",
        weight="bold",
    )
    first_y = top_y - 1.35
    split_y = (top_y - box_h / 2 + first_y + box_h / 2) / 2
    main_w, side_w = 2.9, 1.9
    centres = {trial.control: 3.55, trial.treatment: 6.95}
    sides = {trial.control: 0.15 + side_w / 2, trial.treatment: width - 0.15 - side_w / 2}
    ax.plot([width / 2, width / 2], [top_y - box_h / 2, split_y], color=TEXT_GREY, lw=1.0)
    ax.plot(
        [centres[trial.control], centres[trial.treatment]],
        [split_y, split_y],
        color=TEXT_GREY,
        lw=1.0,
    )

    for arm in trial.arms:
        cx, sx = centres[arm], sides[arm]
        randomized = _flow_count(flow, "randomized", arm)
        boxes: list[tuple[str, str | None]] = [
            (f"Allocated to {_plain(arm)}\n(n = {randomized})", None),
            (
                f"Attended {_plain(base.label)} (week {base.week:g})\n"
                f"(n = {_flow_count(flow, 'with_baseline', arm)})",
                base.label,
            ),
        ]
        for v in post:
            if v.label == trial.final_visit:
                text = (
                    f"Completed: attended {_plain(v.label)} (week {v.week:g})\n"
                    f"(n = {_flow_count(flow, 'completed', arm)})"
                )
            else:
                text = (
                    f"Attended {_plain(v.label)} (week {v.week:g})\n"
                    f"(n = {_flow_count(flow, 'attended', arm, v.label)})"
                )
            boxes.append((text, v.label))
        not_in = [(why, k) for why, k in (excluded or {}).get(arm, []) if k]
        boxes.append(
            (
                f"Analysed in the primary analysis\n"
                f"(n = {int(analysed.get(arm, 0))} of {randomized} randomized)"
                + (
                    f"\nExcluded from analysis (n = {sum(k for _, k in not_in)}):\n"
                    + "\n".join(f"{why} (n = {k})" for why, k in not_in)
                    if not_in
                    else ""
                ),
                None,
            )
        )
        _arrow(ax, (cx, split_y), (cx, first_y + box_h / 2))
        for i, (text, visit) in enumerate(boxes):
            y = first_y - i * pitch
            last = i == len(boxes) - 1
            # The analysed box grows downwards with its lines of exclusion reasons.
            extra = 0.16 * max(text.count("\n") - 1, 0) if last else 0.0
            _box(
                ax,
                cx,
                y - extra / 2,
                main_w,
                box_h + extra,
                text,
                edge=colors[arm],
                face=_tint(colors[arm]),
                weight="bold" if i == 0 or last else "normal",
            )
            if last:
                continue
            _arrow(ax, (cx, y - box_h / 2), (cx, y - pitch + box_h / 2))
            # Withdrawals branch off between a visit and the next one.
            if i == 0:
                lost = _flow_count(flow, "never_attended", arm)
                label = "Never attended a visit"
            elif visit is not None and visit != trial.final_visit:
                lost = _flow_count(flow, "withdrawn_after", arm, visit)
                label = f"Withdrew after {_plain(visit)}"
            else:
                continue
            if i == 0 and lost == 0:
                continue
            mid = y - pitch / 2
            inner = sx + side_w / 2 if sx < cx else sx - side_w / 2
            _arrow(ax, (cx, mid), (inner, mid))
            _box(
                ax,
                sx,
                mid,
                side_w,
                side_h,
                f"{label}\n(n = {lost})",
                edge=NEUTRAL_COLOR,
                face="white",
                dashed=True,
            )
        reasons = _withdrawal_reasons(flow, arm)
        if reasons:
            lines = _reason_lines(reasons)
            y = first_y - (len(boxes) - 1) * pitch
            _box(
                ax,
                sx,
                y,
                side_w,
                0.2 + 0.16 * (len(lines) + 1),
                "\n".join(["Reasons for withdrawal:", *lines]),
                edge=NEUTRAL_COLOR,
                face="white",
                dashed=True,
            )
    ax.text(
        0.15,
        0.35 - below,
        "Withdrew after a visit: that visit was the last one attended. Attended counts include "
        "subjects who returned after a missed visit.",
        ha="left",
        va="center",
        fontsize=8,
        color=TEXT_GREY,
    )
    return fig


# --------------------------------------------------------------------------- trajectories


def _titles(ax: Axes, left: str, right: str = "") -> None:
    ax.set_title(left, loc="left", fontsize=10)
    if right:
        ax.set_title(right, loc="right", fontsize=9, color=TEXT_GREY, style="italic")


def _ls_mean_points(lsmeans: pd.DataFrame, trial: TrialConfig, outcome: Outcome) -> pd.DataFrame:
    """MMRM LS means with their CI per arm and post-baseline visit, from the table.

    Columns ``arm, week, x`` (the week dodged per arm), ``estimate, ci_lower, ci_upper``, in
    the order of the arms then the weeks; with change as the response each arm starts at 0 on
    the baseline visit (change is 0 there by definition). An arm without any estimate has no
    rows.
    """
    model = _rows(lsmeans, outcome=outcome.name, analysis="mmrm")
    weeks = {v.label: v.week for v in trial.post_baseline_visits}
    values = {
        c: pd.to_numeric(model[c], errors="coerce") for c in ("estimate", "ci_lower", "ci_upper")
    }
    table = pd.DataFrame(
        {"arm": model["arm"].astype(str), "week": model["visit"].astype(str).map(weeks), **values}
    )
    table = table.loc[table["arm"].isin(trial.arms)].dropna(subset=["week", "estimate"])
    table = table.drop_duplicates(["arm", "week"])
    if trial.options["response"] == "change" and len(table):
        arms = [a for a in trial.arms if (table["arm"] == a).any()]
        base = trial.visit(trial.baseline_visit).week
        anchors = pd.DataFrame(
            {"arm": arms, "week": base, "estimate": 0.0, "ci_lower": 0.0, "ci_upper": 0.0}
        )
        table = pd.concat([anchors, table], ignore_index=True)
    order = table["arm"].map({a: i for i, a in enumerate(trial.arms)})
    table = table.assign(_order=order).sort_values(["_order", "week"], kind="stable")
    table["x"] = table["week"] + table["arm"].map(_dodge(trial))
    return table[["arm", "week", "x", "estimate", "ci_lower", "ci_upper"]].reset_index(drop=True)


def _observed_means(
    adeff: pd.DataFrame, trial: TrialConfig, outcome: Outcome, column: str
) -> pd.DataFrame:
    """Mean observed ``column`` per arm and visit (``arm, x, mean``), with ``x`` the visit's week
    moved just outside the arm's LS means so that neither hides the other."""
    weeks = {v.label: v.week for v in trial.visits}
    rows = _outcome_rows(adeff, outcome)
    if rows.empty or column not in rows:
        return pd.DataFrame(columns=["arm", "x", "mean"])
    rows = rows.assign(arm=rows["arm"].astype(str), week=rows["visit"].astype(str).map(weeks))
    rows = rows.loc[rows["arm"].isin(trial.arms)].dropna(subset=[column, "week"])
    means = rows.groupby(["arm", "week"], sort=True)[column].mean().rename("mean").reset_index()
    return means.assign(x=means["week"] + 2.6 * means["arm"].map(_dodge(trial)))


@_styled
def trajectory_figure(
    lsmeans: pd.DataFrame, adeff: pd.DataFrame, trial: TrialConfig, outcome: str
) -> Figure:
    """MMRM LS-mean change from baseline by arm over time.

    Parameters
    ----------
    lsmeans
        The LS-means table; rows with analysis ``"mmrm"`` are drawn with their CI from the
        table (``ci_lower``, ``ci_upper``).
    adeff
        The ADEFF dataset; the observed mean change per arm and visit (mean of the subjects
        observed there, no interval) is drawn as faint open symbols.
    trial
        The trial description.
    outcome
        Outcome name.

    Returns
    -------
    Figure
        One axis: weeks on x (0 = baseline, change 0 by definition), change from baseline in
        the outcome's unit on y, arms dodged slightly in x.
    """
    out = _outcome(trial, outcome)
    # With the value as the MMRM's response there is no anchor at 0 on the baseline visit.
    change = trial.options["response"] == "change"
    fig = _new_figure(7.0, 4.8)
    fig.suptitle(_wrap(_plain(trial.title), 95), fontsize=10, color=TEXT_GREY)
    ax = fig.add_subplot()
    # Axes labelled before seaborn draws, so that it leaves the labels and the ticks alone.
    _week_ticks(ax, trial)
    if change:
        ax.set_ylabel(_wrap(_change_label(f"Change from baseline in {out.label}", out)))
        _titles(ax, f"{_plain(out.label)}: MMRM LS-mean change from baseline", _better_note(out))
    else:
        ax.set_ylabel(_wrap(_with_unit(out.label, out)))
        _titles(ax, f"{_plain(out.label)}: MMRM LS mean by visit", _better_note(out))
    ax.axhline(0, color=NEUTRAL_COLOR, lw=0.8, ls=":")
    points = _ls_mean_points(lsmeans, trial, out)
    if len(points):
        _draw_ls_means(ax, points, trial)
    else:
        _no_data(ax, "no data: MMRM not estimable for this outcome", hide_ticks="y")
    # Observed means (every subject seen at the visit) as faint open symbols, without interval.
    observed = _observed_means(adeff, trial, out, "change" if change else "value")
    for arm, group in observed.groupby("arm", sort=False):
        ax.plot(
            group["x"],
            group["mean"],
            ls="none",
            marker=_ARM_MARKERS[trial.arms.index(str(arm))],
            markersize=5.5,
            mfc="none",
            mec=arm_colors(trial)[str(arm)],
            mew=1.0,
            alpha=0.55,
            zorder=2,
        )
    legend_rows = legend_below(fig, _trajectory_handles(trial, change), ncols=3)
    arrange(fig, [ax], Panels(legend_rows=legend_rows))
    return fig


# Marker of the control and the treatment arm in the trajectory figure.
_ARM_MARKERS = ("o", "s")


def _draw_ls_means(ax: Axes, points: pd.DataFrame, trial: TrialConfig) -> None:
    """The LS means of the table joined per arm (seaborn, which estimates nothing here: no
    estimator, no interval), and each one's CI from the table as an error bar."""
    import seaborn as sns

    colors = arm_colors(trial)
    sns.lineplot(
        points,
        x="x",
        y="estimate",
        hue="arm",
        style="arm",
        hue_order=trial.arms,
        style_order=trial.arms,
        palette=colors,
        markers=dict(zip(trial.arms, _ARM_MARKERS, strict=True)),
        dashes=False,
        estimator=None,
        errorbar=None,
        sort=False,
        lw=1.8,
        markersize=7,
        zorder=4,
        legend=False,
        ax=ax,
    )
    for arm, group in points.groupby("arm", sort=False):
        e = group["estimate"].to_numpy(dtype=float)
        low, high = group["ci_lower"].to_numpy(dtype=float), group["ci_upper"].to_numpy(dtype=float)
        ax.errorbar(
            group["x"],
            e,
            yerr=np.vstack([e - low, high - e]),
            fmt="none",
            ecolor=colors[str(arm)],
            elinewidth=1.8,
            capsize=3,
            zorder=3,
        )


def _trajectory_handles(trial: TrialConfig, change: bool) -> list[Line2D]:
    """Legend entries of the trajectory figure: each arm's LS mean, then the observed means."""
    from matplotlib.lines import Line2D

    colors, ci = arm_colors(trial), ci_label(trial.options["alpha"])
    handles = [
        Line2D(
            [], [], color=colors[arm], marker=marker, lw=1.8, label=f"{_plain(arm)}: LS mean ({ci})"
        )
        for arm, marker in zip(trial.arms, _ARM_MARKERS, strict=True)
    ]
    observed = "observed mean change" if change else "observed mean"
    handles.append(
        Line2D(
            [],
            [],
            color=NEUTRAL_COLOR,
            marker="o",
            markerfacecolor="none",
            lw=0,
            alpha=0.7,
            label=observed,
        )
    )
    return handles


@_styled
def spaghetti_figure(
    adeff: pd.DataFrame,
    trial: TrialConfig,
    outcome: str,
    *,
    max_subjects: int = MAX_TRAJECTORIES_PER_ARM,
    seed: int = SAMPLE_SEED,
) -> Figure:
    """Individual trajectories of the observed value, one panel per arm.

    Parameters
    ----------
    adeff
        The ADEFF dataset.
    trial
        The trial description.
    outcome
        Outcome name.
    max_subjects
        Most subjects per arm drawn as individual lines; an arm with more subjects shows a
        random sample of this size, and its panel says so.
    seed
        Seed of that sample (with the arm's position), so reruns draw the same subjects.

    Returns
    -------
    Figure
        Two panels sharing the y scale (value in the outcome's unit) over weeks: one thin
        line per subject, the observed mean per visit as a thick line, and an ``x`` on the
        last observation of subjects who withdrew. A subject withdrew when their last
        attended visit (any outcome measured, as in ADSL) is before the final scheduled
        visit; the ``x`` is their last value of this outcome at or before that visit (none if
        they have no such value). The per-arm withdrawal counts are those of ``flow.csv``
        (subjects who never attended included). The means, n and withdrawal counts use
        every subject, also when only a sample of lines is drawn.
    """
    from matplotlib.lines import Line2D

    out = _outcome(trial, outcome)
    rows = _outcome_rows(adeff, out)
    fig = _new_figure(10.0, 4.6)
    fig.suptitle(
        _wrap(f"{_plain(out.label)}: individual trajectories ({_plain(trial.title)})", 130),
        fontsize=10,
    )
    axes = fig.subplots(1, 2, sharey=True)
    gone = _withdrawn_by_arm(adeff, trial)
    any_data = sampled = False
    for pos, (ax, arm) in enumerate(zip(axes, trial.arms, strict=True)):
        arm_rows = rows.loc[rows["arm"].astype(str) == arm].dropna(subset=["value"])
        # Axes labelled before seaborn draws, so that it leaves the labels and the ticks alone.
        _week_ticks(ax, trial)
        ax.set_ylabel(_wrap(_with_unit(out.label, out)))
        ax.yaxis.set_tick_params(labelleft=True)
        n, shown = _spaghetti_panel(ax, arm_rows, trial, arm, gone[arm], max_subjects, seed, pos)
        any_data = any_data or n > 0
        title = f"{_plain(arm)} (n = {n}; {len(gone[arm])} withdrew)"
        if shown < n:
            sampled = True
            title += f"\nlines: {shown} of {n} subjects shown (random sample)"
        ax.set_title(title, loc="left", fontsize=10)
    if not any_data:
        axes[0].set_ylim(out.range_min, out.range_max)
    handles = [
        Line2D(
            [],
            [],
            color=NEUTRAL_COLOR,
            alpha=0.6,
            lw=0.8,
            label="one subject (random sample)" if sampled else "one subject",
        ),
        Line2D(
            [],
            [],
            color=NEUTRAL_COLOR,
            lw=2.6,
            label="observed mean (all subjects)" if sampled else "observed mean",
        ),
        Line2D(
            [], [], color="black", marker="x", lw=0, mew=1.4, label="last visit before withdrawal"
        ),
    ]
    legend_rows = legend_below(fig, handles, ncols=3)
    arrange(fig, list(axes), Panels(legend_rows=legend_rows, gap=0.35))
    return fig


def _withdrawn_by_arm(adeff: pd.DataFrame, trial: TrialConfig) -> dict[str, pd.Series]:
    """Per arm, the position of the last attended visit of each subject who withdrew.

    Withdrawal is decided on attendance (any outcome), as in ADSL and flow.csv, so the counts
    match the CONSORT diagram; subjects who never attended count as withdrawn there too (at
    position -1). The arm's subjects come from every ADEFF row, not only one outcome's.
    """
    final = float([v.label for v in trial.visits].index(trial.final_visit))
    last_attended = _last_attended(adeff, trial)
    out = {}
    for arm in trial.arms:
        arm_ids = adeff.loc[adeff["arm"].astype(str) == arm, "subject_id"].astype(str).unique()
        last = last_attended.reindex(arm_ids).fillna(-1.0)
        out[arm] = last.loc[last < final]
    return out


def _spaghetti_panel(
    ax: Axes,
    arm_rows: pd.DataFrame,
    trial: TrialConfig,
    arm: str,
    gone: pd.Series,
    max_subjects: int,
    seed: int,
    pos: int,
) -> tuple[int, int]:
    """One arm's individual trajectories (a seeded sample), its observed mean (seaborn, every
    subject) and an x on the last value before withdrawal; returns (subjects, lines drawn)."""
    import seaborn as sns
    from matplotlib import patheffects

    color = arm_colors(trial)[arm]
    ids = arm_rows["subject_id"].astype(str)
    subjects = np.array(sorted(ids.unique()), dtype=object)
    shown = subjects[_sample_positions(len(subjects), max_subjects, seed, pos)]
    # One row per visit, ordered by subject then week, so each subject is one contiguous run.
    drawn = (
        arm_rows.assign(_id=ids).loc[ids.isin(shown)].sort_values(["_id", "week"], kind="stable")
    )
    if len(drawn):
        _individual_lines(ax, drawn, color)
    # The x sits on the last value of this outcome up to the last attended visit; a withdrawn
    # subject who never had this outcome measured gets no marker.
    position = {v.label: float(i) for i, v in enumerate(trial.visits)}
    at = drawn["visit"].astype(str).map(position).to_numpy(dtype=float)
    limit = drawn["_id"].map(gone).to_numpy(dtype=float)
    last = drawn.loc[at <= limit].drop_duplicates("_id", keep="last")
    if len(last):
        ax.plot(
            last["week"],
            last["value"],
            ls="none",
            marker="x",
            color="black",
            markersize=6,
            mew=1.4,
            zorder=4,
        )
    if len(subjects):
        sns.lineplot(
            arm_rows,
            x="week",
            y="value",
            estimator="mean",
            errorbar=None,
            color=color,
            lw=2.6,
            zorder=5,
            legend=False,
            ax=ax,
            path_effects=[patheffects.withStroke(linewidth=4.2, foreground="white")],
        )
    else:
        _no_data(ax)
    return len(subjects), len(shown)


def _individual_lines(ax: Axes, drawn: pd.DataFrame, color: str) -> None:
    """One line per subject (``drawn``: rows ordered by subject ``_id`` then week) and a dot on
    each visit, as one collection and one marker artist: the picture of a line per subject
    without one artist per subject (seaborn's ``units=`` draws one each)."""
    from matplotlib.collections import LineCollection

    weeks = drawn["week"].to_numpy(dtype=float)
    values = drawn["value"].to_numpy(dtype=float)
    starts = np.flatnonzero(drawn["_id"].ne(drawn["_id"].shift()).to_numpy())[1:]
    segments = [
        np.column_stack(pair)
        for pair in zip(np.split(weeks, starts), np.split(values, starts), strict=True)
    ]
    ax.add_collection(LineCollection(segments, colors=color, alpha=0.4, linewidths=0.8, zorder=2))
    ax.plot(weeks, values, ls="none", color=color, alpha=0.4, marker="o", markersize=2)


def _change_points(values: np.ndarray, max_points: int, seed: int, stream: int) -> np.ndarray:
    """Positions of the changes drawn as points: all of them, or a sample of ``max_points``.

    The box plot hides its fliers because the points show them, so a sample keeps every value
    beyond the whiskers (up to ``max_points``) and fills up with a seeded random sample of the
    others.
    """
    from matplotlib.cbook import boxplot_stats

    if len(values) <= max_points:
        return np.arange(len(values))
    stats = boxplot_stats(values)[0]
    return _outer_and_sample(
        (values < stats["whislo"]) | (values > stats["whishi"]), max_points, seed, stream
    )


def _outer_and_sample(beyond: np.ndarray, most: int, seed: int, stream: int) -> np.ndarray:
    """Sorted positions of at most ``most`` items: every item flagged ``beyond`` (a seeded
    sample of them if they alone are too many), filled up with a seeded sample of the others."""
    if len(beyond) <= most:
        return np.arange(len(beyond))
    outer, inner = np.flatnonzero(beyond), np.flatnonzero(~beyond)
    if len(outer) >= most:
        return outer[_sample_positions(len(outer), most, seed, stream)]
    keep = inner[_sample_positions(len(inner), most - len(outer), seed, stream)]
    return np.sort(np.concatenate([outer, keep]))


@_styled
def change_figure(
    adeff: pd.DataFrame,
    trial: TrialConfig,
    outcome: str,
    *,
    seed: int = SAMPLE_SEED,
    max_points: int = MAX_POINTS_PER_ARM,
) -> Figure:
    """Distribution of the observed change at the primary visit by arm.

    Parameters
    ----------
    adeff
        The ADEFF dataset.
    trial
        The trial description.
    outcome
        Outcome name.
    seed
        Seed of the horizontal jitter of the points and of the sample of points in large
        arms (fixed, so the figure is reproducible).
    max_points
        Most points per arm; an arm with more subjects shows every value beyond the whiskers
        plus a random sample of the others, and its tick label says how many are shown.

    Returns
    -------
    Figure
        Box plot per arm (median, quartiles, whiskers at 1.5 IQR; from every subject) with
        each subject's change as a jittered point; tick labels give n per arm.
    """
    out = _outcome(trial, outcome)
    rows = _rows(_outcome_rows(adeff, out), visit=trial.primary_visit).dropna(subset=["change"])
    rows = rows.assign(arm=rows["arm"].astype(str)).loc[lambda r: r["arm"].isin(trial.arms)]
    fig = _new_figure(5.6, 4.8)
    fig.suptitle(_wrap(_plain(trial.title), 80), fontsize=9, color=TEXT_GREY)
    ax = fig.add_subplot()
    ax.axhline(0, color=NEUTRAL_COLOR, lw=0.8, ls=":")
    points, labels = _change_sample(rows, trial, seed, max_points)
    # Axes labelled before seaborn draws, so that it leaves the labels alone.
    ax.set_xlabel(
        _wrap(
            "Arm (boxes: all subjects; points: a random sample and every value beyond the "
            "whiskers)",
            70,
        )
        if len(points) < len(rows)
        else "Arm"
    )
    ax.set_ylabel(
        _wrap(_change_label(f"Change from baseline to {trial.primary_visit} in {out.label}", out))
    )
    if len(rows):
        _draw_changes(ax, rows, points, trial)
    else:
        _no_data(
            ax, f"no data: no change observed at {_plain(trial.primary_visit)}", hide_ticks="y"
        )
    ax.set_xticks(range(len(trial.arms)), labels)
    ax.set_xlim(-0.6, len(trial.arms) - 0.4)
    _titles(ax, f"{_plain(out.label)}: observed change", _better_note(out))
    arrange(fig, [ax])
    return fig


def _draw_changes(ax: Axes, rows: pd.DataFrame, points: pd.DataFrame, trial: TrialConfig) -> None:
    """seaborn box plots of every subject's change (no fliers: the points show them) in tints of
    the arms' colours, and the jittered points (``points``) in the arms' colours."""
    import seaborn as sns

    colors = arm_colors(trial)
    with warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib's deprecated ``vert`` to bxp (same drawing); matplotlib
        # 3.10 announces the deprecation, 3.11 makes it.
        warnings.filterwarnings("ignore", message="vert: bool (was|will be) deprecated")
        sns.boxplot(
            rows,
            x="arm",
            y="change",
            hue="arm",
            order=trial.arms,
            hue_order=trial.arms,
            palette={a: _tint(c, 0.35) for a, c in colors.items()},
            saturation=1,
            width=0.5,
            showfliers=False,
            linecolor=TEXT_GREY,
            medianprops={"color": "black", "lw": 1.6},
            legend=False,
            ax=ax,
        )
    # seaborn draws one line colour for every box; each box's edge takes its arm's colour.
    boxed = [a for a in trial.arms if (rows["arm"] == a).any()]
    for patch, arm in zip(ax.patches, boxed, strict=True):
        patch.set_edgecolor(colors[arm])
    sns.scatterplot(
        points,
        x="x",
        y="change",
        hue="arm",
        hue_order=trial.arms,
        palette=colors,
        s=18,
        edgecolor="black",
        linewidth=0.4,
        alpha=0.85,
        zorder=3,
        legend=False,
        ax=ax,
    )


def _change_sample(
    rows: pd.DataFrame, trial: TrialConfig, seed: int, max_points: int
) -> tuple[pd.DataFrame, list[str]]:
    """The changes drawn as jittered points (``arm, x, change``) and each arm's tick label.

    The jitter is drawn per arm for every value, even when empty or sampled, so the jitter of
    one arm never depends on the other; an arm over ``max_points`` shows a sample
    (:func:`_change_points`) and its label says so.
    """
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for pos, arm in enumerate(trial.arms):
        values = rows.loc[rows["arm"] == arm, "change"].to_numpy(dtype=float)
        jitter = rng.uniform(-0.13, 0.13, size=len(values))
        shown = _change_points(values, max_points, seed, pos)
        label = f"{_plain(arm)}\n(n = {len(values)})"
        if len(shown) < len(values):
            label = f"{_plain(arm)}\n(n = {len(values)}; {len(shown)} shown as points)"
        labels.append(label)
        frames.append(pd.DataFrame({"arm": arm, "x": pos + jitter[shown], "change": values[shown]}))
    return pd.concat(frames, ignore_index=True), labels


# --------------------------------------------------------------------------- forest plots


def _effect_row(effects: pd.DataFrame, outcome: str, analysis: str, visit: str) -> dict[str, float]:
    rows = _rows(effects, outcome=outcome, analysis=analysis, visit=visit)
    keys = ("estimate", "ci_lower", "ci_upper", "n")
    if rows.empty:
        return dict.fromkeys(keys, math.nan)
    first = rows.iloc[0]
    out = {k: _num(first.get(k)) for k in keys}
    # "n =" next to an estimate is the number in the model, not the number seen at the visit.
    analysed = _num(first.get("n_analysed"))
    if math.isfinite(analysed):
        out["n"] = analysed
    return out


def _effect_limits(values: Sequence[float]) -> tuple[float, float]:
    """x limits that hold every CI and 0, with a margin."""
    finite = [v for v in values if math.isfinite(v)] + [0.0]
    lo, hi = min(finite), max(finite)
    span = hi - lo
    if span == 0:
        span = abs(hi) or 1.0
    return lo - 0.12 * span, hi + 0.12 * span


def _shade_favoured(
    ax: Axes, better: str, lower: float, upper: float, treatment: str, control: str
) -> None:
    """Shade the side of 0 where treatment minus control favours the treatment, label both."""
    if better == "higher":
        ax.axvspan(0, upper, color=TREATMENT_COLOR, alpha=0.13, lw=0, zorder=0)
        left, right = f"\u2190 favours {_plain(control)}", f"favours {_plain(treatment)} \u2192"
    else:
        ax.axvspan(lower, 0, color=TREATMENT_COLOR, alpha=0.13, lw=0, zorder=0)
        left, right = f"\u2190 favours {_plain(treatment)}", f"favours {_plain(control)} \u2192"
    for x, text, ha in ((0.0, left, "left"), (1.0, right, "right")):
        ax.annotate(
            text,
            xy=(x, 0),
            xycoords="axes fraction",
            xytext=(0, -27),
            textcoords="offset points",
            ha=ha,
            va="top",
            fontsize=7.5,
            color=TEXT_GREY,
        )


def _draw_estimates(
    ax: Axes,
    values: Sequence[dict[str, float]],
    styles: Sequence[tuple[str, str]],
    ys: Sequence[float],
) -> None:
    for v, (marker, color), y in zip(values, styles, ys, strict=True):
        if not math.isfinite(v["estimate"]):
            continue
        ax.plot([v["ci_lower"], v["ci_upper"]], [y, y], color=color, lw=1.6, zorder=3)
        ax.plot(v["estimate"], y, marker=marker, color=color, markersize=6.5, lw=0, zorder=4)


def _subgroup_lines(
    rows: pd.DataFrame, outcome: Outcome
) -> list[tuple[str, dict[str, float], str]]:
    """(label, estimate row, text) per line: a heading per subgroup, then one line per level."""
    lines: list[tuple[str, dict[str, float], str]] = []
    for name, group in rows.groupby("subgroup", sort=False):
        first = group.iloc[0]
        p = _num(first.get("interaction_p"))
        heading = f"{_plain(name)}" + (
            f"   (interaction p = {p:.3f})"
            if math.isfinite(p)
            else "   (interaction: not estimable)"
        )
        lines.append((heading, {}, ""))
        for r in group.to_dict("records"):
            v = {k: _num(r.get(k)) for k in ("estimate", "ci_lower", "ci_upper", "n")}
            text = (
                _estimate_text(
                    v["estimate"], v["ci_lower"], v["ci_upper"], v["n"], outcome.decimals
                )
                if math.isfinite(v["estimate"])
                else _wrap(_plain(r.get("note") or "not estimable"), 42)
            )
            level = "" if pd.isna(r["level"]) else _plain(r["level"])
            lines.append((f"   {level}", v, text))
    return lines


@_styled
def subgroup_forest_figure(subgroups: pd.DataFrame, trial: TrialConfig, outcome: str) -> Figure:
    """Treatment effect at the primary visit in each subgroup level of one outcome.

    Parameters
    ----------
    subgroups
        The subgroups table (columns of :data:`trialflow.analysis.SUBGROUP_TABLE_COLUMNS`).
    trial
        The trial description.
    outcome
        Name of the outcome to draw.

    Returns
    -------
    Figure
        One line per subgroup level (estimate and CI in the outcome's unit), grouped under a
        heading per subgroup with its interaction p-value; the side favouring the treatment is
        shaded and "estimate (CI), n" is written to the right. Levels that cannot be estimated
        say why.
    """
    o = _outcome(trial, outcome)
    lines = _subgroup_lines(_rows(subgroups, outcome=outcome), o)
    return line_forest(
        trial,
        o,
        f"{_plain(o.label)}: subgroup analyses (exploratory)",
        lines,
        layout=ForestLayout(pitch=0.3, axes=(0.3, 0.36), text_x=0.685),
    )


@dataclass(frozen=True)
class ForestLayout:
    """Geometry of a one-line-per-estimate forest plot (see :func:`line_forest`).

    ``pitch`` is the height of a line (inches), ``axes`` the left edge and width of the plot
    (figure fraction), ``text_x`` where "estimate (CI), n" starts; ``bounds`` the values that
    set the x range; ``highlight`` a line drawn as a blue diamond (the primary analysis).
    """

    pitch: float
    axes: tuple[float, float]
    text_x: float
    bounds: tuple[str, ...] = ("ci_lower", "ci_upper", "estimate")
    highlight: int | None = None


def line_forest(
    trial: TrialConfig,
    o: Outcome,
    title: str,
    lines: Sequence[tuple[str, dict[str, float], str]],
    *,
    layout: ForestLayout,
) -> Figure:
    """A forest plot with one row per line: headings (lines without values) in bold, estimates
    with their CI, the side favouring the treatment shaded and "estimate (CI), n" on the right.
    """
    height = 1.9 + layout.pitch * max(len(lines), 1)
    fig = _new_figure(10.5, height)
    left, wide = layout.axes
    ax = fig.add_axes((left, 0.85 / height, wide, 1 - 1.95 / height))
    ci = ci_label(trial.options["alpha"])
    fig.text(0.015, 1 - 0.25 / height, title, ha="left", va="center", fontsize=11,
             weight="bold")  # fmt: skip
    fig.text(
        0.015,
        1 - 0.52 / height,
        f"Treatment effect at {_plain(trial.primary_visit)}: {_plain(trial.treatment)} "
        f"\u2212 {_plain(trial.control)}, {ci}; {o.better} {_plain(o.label)} is better",
        ha="left",
        va="center",
        fontsize=9,
        color=TEXT_GREY,
    )
    fig.text(layout.text_x, 1 - 0.85 / height, f"Difference ({ci}), n", ha="left",
             va="center", weight="bold")  # fmt: skip
    values = [v for _, v, _ in lines if v]
    lower, upper = _effect_limits([v[c] for v in values for c in layout.bounds])
    ax.set_xlim(lower, upper)
    ax.set_ylim(-len(lines) + 0.4, 0.6)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.axvline(0, color="black", lw=0.9, zorder=2)
    _shade_favoured(ax, o.better, lower, upper, trial.treatment, trial.control)
    ax.set_xlabel(f"Difference ({difference_unit(o)})", fontsize=8.5)
    _forest_lines(fig, ax, lines, layout)
    return fig


def _forest_lines(
    fig: Figure,
    ax: Axes,
    lines: Sequence[tuple[str, dict[str, float], str]],
    layout: ForestLayout,
) -> None:
    from matplotlib.transforms import blended_transform_factory

    tf = blended_transform_factory(fig.transFigure, ax.transData)
    for i, (label, v, text) in enumerate(lines):
        y = -float(i)
        ax.text(0.015, y, label, transform=tf, ha="left", va="center", fontsize=9,
                weight="normal" if v else "bold")  # fmt: skip
        if not v:
            continue
        if math.isfinite(v["estimate"]):
            style = ("D", CONTROL_COLOR) if i == layout.highlight else ("s", "black")
            _draw_estimates(ax, [v], [style], [y])
        ax.text(layout.text_x, y, text, transform=tf, ha="left", va="center", fontsize=9,
                color="black" if math.isfinite(v["estimate"]) else TEXT_GREY)  # fmt: skip


@_styled
def forest_figure(
    effects: pd.DataFrame, trial: TrialConfig, analyses: Sequence[str] = ("mmrm",)
) -> Figure:
    """Treatment effect at the primary visit for every outcome, grouped by domain.

    Parameters
    ----------
    effects
        The effects table (columns of :data:`trialflow.analysis.EFFECT_TABLE_COLUMNS`).
    trial
        The trial description.
    analyses
        Analyses to draw per outcome, stacked top to bottom (``"mmrm"``, ``"lmm"``,
        ``"ancova"``); a legend is added when there is more than one.

    Returns
    -------
    Figure
        One small axis per outcome with its own x scale in the outcome's unit, a line at 0,
        the side favouring the treatment shaded, and "estimate (95% CI), n" to the right.
        Outcomes without an estimate say "not estimable".
    """
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    analyses = tuple(analyses)
    unknown = [a for a in analyses if a not in ANALYSIS_STYLES]
    if not analyses or unknown:
        raise TrialflowError(
            f"unknown analysis {unknown[0] if unknown else '(none)'!r} for the forest plot",
            fix="use some of " + ", ".join(repr(a) for a in ANALYSIS_STYLES),
        )
    styles = [ANALYSIS_STYLES[a] for a in analyses]
    if len(analyses) == 1:
        styles = [("o", "black")]
    k = len(analyses)
    order = {d: i for i, d in enumerate(DOMAIN_ORDER)}
    outcomes = sorted(trial.outcomes, key=lambda o: order.get(o.domain, len(order)))
    groups: list[tuple[str, list[Outcome]]] = []
    for o in outcomes:
        if not groups or groups[-1][0] != o.domain:
            groups.append((o.domain, []))
        groups[-1][1].append(o)

    # Sizes in inches: each outcome row is a plot area plus room for ticks, unit label and the
    # "favours" labels under it.
    width, top, bottom = 10.5, 1.15 if k > 1 else 0.95, 0.15
    heading_h, plot_h, under_h = 0.38, 0.32 + 0.2 * (k - 1), 0.7
    height = (
        top + bottom + heading_h * len(groups) + (plot_h + under_h) * len(trial.outcomes) + 0.05
    )
    fig = _new_figure(width, height)
    left_x, plot_x0, plot_x1, text_x = 0.015, 0.28, 0.66, 0.685
    fig.text(
        left_x,
        1 - 0.22 / height,
        _plain(trial.title),
        ha="left",
        va="center",
        fontsize=11,
        weight="bold",
    )
    fig.text(
        left_x,
        1 - 0.5 / height,
        f"Treatment effect at {_plain(trial.primary_visit)}: {_plain(trial.treatment)} "
        f"\u2212 {_plain(trial.control)} in "
        f"{'change from baseline' if trial.options['response'] == 'change' else 'LS mean'}, "
        f"{ci_label(trial.options['alpha'])} "
        f"(shaded: favours {_plain(trial.treatment)})",
        ha="left",
        va="center",
        fontsize=9,
        color=TEXT_GREY,
    )
    header_y = 1 - (top - 0.12) / height
    fig.text(left_x, header_y, "Outcome (unit)", ha="left", va="bottom", weight="bold")
    fig.text(
        text_x,
        header_y,
        f"Estimate ({ci_label(trial.options['alpha'])}), n",
        ha="left",
        va="bottom",
        weight="bold",
    )
    if k > 1:
        handles = [
            Line2D([], [], marker=m, color=c, lw=1.6, label=ANALYSIS_LABELS[a])
            for a, (m, c) in zip(analyses, styles, strict=True)
        ]
        fig.legend(
            handles=handles,
            loc="center",
            bbox_to_anchor=((plot_x0 + plot_x1) / 2, 1 - 0.8 / height),
            ncols=k,
        )

    y = height - top
    ys = [-float(i) for i in range(k)]
    for domain, members in groups:
        y -= heading_h
        fig.text(
            left_x,
            (y + 0.08) / height,
            DOMAIN_TITLES.get(domain, _plain(domain.capitalize())),
            ha="left",
            va="bottom",
            fontsize=10,
            weight="bold",
            color=TEXT_GREY,
        )
        fig.add_artist(
            Line2D(
                [left_x, 0.985],
                [(y + 0.05) / height] * 2,
                transform=fig.transFigure,
                color="#BBBBBB",
                lw=0.8,
            )
        )
        for o in members:
            y -= plot_h
            ax = fig.add_axes((plot_x0, y / height, plot_x1 - plot_x0, plot_h / height))
            ax.set_label(o.name)
            y -= under_h
            values = [_effect_row(effects, o.name, a, trial.primary_visit) for a in analyses]
            bounds = [v[c] for v in values for c in ("ci_lower", "ci_upper", "estimate")]
            estimable = any(math.isfinite(v["estimate"]) for v in values)
            lower, upper = _effect_limits(bounds) if estimable else (-1.0, 1.0)
            ax.set_xlim(lower, upper)
            ax.set_ylim(-(k - 1) - 0.6, 0.6)
            ax.set_yticks([])
            ax.spines["left"].set_visible(False)
            ax.axvline(0, color="black", lw=0.9, zorder=2)
            _shade_favoured(ax, o.better, lower, upper, trial.treatment, trial.control)
            ax.xaxis.set_major_locator(_max_n_locator())
            ax.set_xlabel(f"Difference ({difference_unit(o)})", fontsize=8, labelpad=2)
            if estimable:
                _draw_estimates(ax, values, styles, ys)
            else:
                ax.set_xticks([0.0])
                _no_data(ax, "not estimable")
            name = _plain(o.label) + ("  [primary]" if o.primary else "")
            label_tf = blended_transform_factory(fig.transFigure, ax.transAxes)
            ax.text(
                left_x + 0.01,
                0.5,
                f"{name}\n({_plain(o.unit)}; {o.better} is better)",
                transform=label_tf,
                ha="left",
                va="center",
                fontsize=9,
                linespacing=1.4,
            )
            text_tf = blended_transform_factory(fig.transFigure, ax.transData)
            for v, a, y_a in zip(values, analyses, ys, strict=True):
                prefix = f"{ANALYSIS_LABELS[a]}: " if k > 1 else ""
                body = (
                    _estimate_text(v["estimate"], v["ci_lower"], v["ci_upper"], v["n"], o.decimals)
                    if math.isfinite(v["estimate"])
                    else "not estimable"
                )
                ax.text(
                    text_x,
                    y_a,
                    prefix + body,
                    transform=text_tf,
                    ha="left",
                    va="center",
                    fontsize=9,
                    color="black" if math.isfinite(v["estimate"]) else TEXT_GREY,
                )
    return fig


def _max_n_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10])


@_styled
def cross_trial_forest(
    effects_by_trial: Mapping[str, pd.DataFrame],
    trials: Mapping[str, TrialConfig],
    outcome_name: str,
    *,
    analysis: str = "mmrm",
) -> Figure:
    """One outcome's treatment effect at each trial's primary visit, one row per trial.

    Parameters
    ----------
    effects_by_trial
        Effects table per trial name.
    trials
        Trial description per trial name (every key of ``effects_by_trial`` must be present).
    outcome_name
        Outcome name, shared by the trials to compare; trials without it are left out.
    analysis
        Which analysis to draw (default the primary MMRM).

    Returns
    -------
    Figure
        A forest plot on one x scale in the outcome's common unit, with the side favouring
        the treatment shaded.

    Raises
    ------
    TrialflowError
        If no trial has the outcome, a trial description is missing, or the trials give the
        outcome different units or directions of benefit (scales are never mixed).
    """
    missing = [name for name in effects_by_trial if name not in trials]
    if missing:
        raise TrialflowError(
            f"no trial description for {missing[0]!r}",
            fix="pass a TrialConfig for every trial in effects_by_trial",
        )
    members = [
        (name, trials[name])
        for name in effects_by_trial
        if outcome_name in {o.name for o in trials[name].outcomes}
    ]
    if not members:
        raise TrialflowError(
            f"outcome {outcome_name!r} is in none of the trials {', '.join(effects_by_trial)}",
            fix="choose an outcome that the trials share",
        )
    outs = [(name, t, t.outcome(outcome_name)) for name, t in members]
    for attr, what in (("unit", "units"), ("better", "directions of benefit")):
        values = {getattr(o, attr) for _, _, o in outs}
        if len(values) > 1:
            listing = ", ".join(f"{n}: {getattr(o, attr)!r}" for n, _, o in outs)
            raise TrialflowError(
                f"outcome {outcome_name!r} has different {what} across trials ({listing}); "
                "its estimates cannot share one scale",
                fix="convert the data to one unit in every trial description, or plot the "
                "trials separately",
            )
    first = outs[0][2]
    decimals = max(o.decimals for _, _, o in outs)
    rows = [
        _effect_row(effects_by_trial[name], outcome_name, analysis, t.primary_visit)
        for name, t, _ in outs
    ]
    n = len(outs)
    fig = _new_figure(10.0, 1.9 + 0.62 * n)
    ax = fig.add_subplot()
    fig.suptitle(
        f"{_plain(first.label)}: treatment effect by trial "
        f"({ANALYSIS_LABELS.get(analysis, _plain(analysis))}, "
        f"{'; '.join(sorted({ci_label(t.options['alpha']) for _, t, _ in outs}))})",
        fontsize=11,
    )
    ys = [-float(i) for i in range(n)]
    bounds = [v[c] for v in rows for c in ("ci_lower", "ci_upper", "estimate")]
    estimable = any(math.isfinite(v["estimate"]) for v in rows)
    lower, upper = _effect_limits(bounds) if estimable else (-1.0, 1.0)
    ax.set_xlim(lower, upper)
    ax.set_ylim(-n + 0.4, 0.6)
    ax.axvline(0, color="black", lw=0.9, zorder=2)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    _shade_favoured(ax, first.better, lower, upper, "treatment", "control")
    ax.set_title(
        f"shaded: favours the treatment arm; {_better_note(first)}",
        loc="right",
        fontsize=8.5,
        color=TEXT_GREY,
    )
    _draw_estimates(ax, rows, [("o", "black")] * n, ys)
    ax.set_yticks(
        ys,
        [
            f"{_plain(name)}\n{_plain(t.treatment)} \u2212 {_plain(t.control)}, "
            f"{_plain(t.primary_visit)}"
            for name, t, _ in outs
        ],
    )
    texts = [
        _estimate_text(v["estimate"], v["ci_lower"], v["ci_upper"], v["n"], decimals)
        if math.isfinite(v["estimate"])
        else "not estimable"
        for v in rows
    ]
    for v, y, text in zip(rows, ys, texts, strict=True):
        ax.annotate(
            text,
            xy=(1.0, y),
            xycoords=ax.get_yaxis_transform(),
            xytext=(9, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=9,
            color="black" if math.isfinite(v["estimate"]) else TEXT_GREY,
        )
    if not estimable:
        _no_data(ax, "not estimable in any trial")
    ax.set_xlabel(f"Treatment \u2212 control in change from baseline ({_plain(first.unit)})")
    ax.set_ylabel("Trial")
    # Room right of the axes for "estimate (CI), n" and under it for the "favours" labels.
    right = max(text_width(fig, t, 9) for t in texts) + 0.3
    arrange(fig, [ax], Panels(right=right, bottom=0.12))
    return fig


# --------------------------------------------------------------------------- completeness


def _attendance_from(data: pd.DataFrame, trial: TrialConfig) -> dict[str, dict[str, int]]:
    """Randomized and attended counts per arm from a flow table or from ADEFF."""
    counts: dict[str, dict[str, int]] = {}
    if "stage" in data.columns:
        for arm in trial.arms:
            counts[arm] = {"randomized": _flow_count(data, "randomized", arm)}
            for v in trial.visits:
                counts[arm][v.label] = _flow_count(data, "attended", arm, v.label)
        return counts
    if not {"subject_id", "arm", "visit", "value"} <= set(data.columns):
        raise TrialflowError(
            "missingness needs the flow table or ADEFF (columns subject_id, arm, visit, value)",
            fix="pass flow.csv or adeff.csv",
        )
    for arm in trial.arms:
        arm_rows = data.loc[data["arm"].astype(str) == arm]
        counts[arm] = {"randomized": int(arm_rows["subject_id"].nunique())}
        for v in trial.visits:
            attended = _attended_subjects(arm_rows, v.label)
            counts[arm][v.label] = len(attended)
    return counts


def _attendance_bars(counts: Mapping[str, Mapping[str, int]], trial: TrialConfig) -> pd.DataFrame:
    """One row per arm and visit: ``visit, arm, attended, randomized``, ``percent`` of the
    randomized (0 for an arm without subjects) and the bar's ``label`` (percentage and n/N)."""
    bars = pd.DataFrame(
        [
            (v.label, arm, counts[arm][v.label], counts[arm]["randomized"])
            for arm in trial.arms
            for v in trial.visits
        ],
        columns=["visit", "arm", "attended", "randomized"],
    )
    randomized = bars["randomized"].where(bars["randomized"] > 0)
    bars["percent"] = (100.0 * bars["attended"] / randomized).fillna(0.0)
    bars["label"] = [
        f"{p:.0f}%\n{a}/{n}"
        for p, a, n in zip(bars["percent"], bars["attended"], bars["randomized"], strict=True)
    ]
    return bars


@_styled
def missingness_figure(data: pd.DataFrame, trial: TrialConfig) -> Figure:
    """Visit completion by arm: percentage of randomized subjects attending each visit.

    Parameters
    ----------
    data
        The flow table (``flow.csv``) or ADEFF (a visit is attended when any outcome has a
        value).
    trial
        The trial description.

    Returns
    -------
    Figure
        Grouped bars per visit (one per arm) with the percentage and n/N on each bar.
    """
    import seaborn as sns
    from matplotlib.container import BarContainer
    from matplotlib.patches import Patch

    counts = _attendance_from(data, trial)
    colors = arm_colors(trial)
    fig = _new_figure(max(6.0, 1.5 + 1.3 * len(trial.visits)), 4.6)
    fig.suptitle(_wrap(_plain(trial.title), 90), fontsize=9, color=TEXT_GREY)
    ax = fig.add_subplot()
    bars = _attendance_bars(counts, trial)
    # Axes labelled before seaborn draws, so that it leaves the labels alone.
    ax.set_xlabel("Scheduled visit")
    ax.set_ylabel("Subjects attending (% of randomized)")
    sns.barplot(
        bars,
        x="visit",
        y="percent",
        hue="arm",
        order=[v.label for v in trial.visits],
        hue_order=trial.arms,
        palette=colors,
        saturation=1,
        width=0.76,
        gap=0.05,
        errorbar=None,
        legend=False,
        ax=ax,
    )
    # The percentage and n/N on each bar (seaborn draws one container of bars per arm).
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    for container, arm in zip(containers, trial.arms, strict=True):
        ax.bar_label(
            container,
            bars.loc[bars["arm"] == arm, "label"].tolist(),
            padding=2,
            fontsize=7,
            linespacing=1.1,
        )
    if not (bars["randomized"] > 0).any():
        _no_data(ax, "no randomized subjects")
    ax.set_xticks(
        range(len(trial.visits)), [f"{_plain(v.label)}\n(week {v.week:g})" for v in trial.visits]
    )
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    _titles(ax, "Visit completion by arm")
    handles = [
        Patch(
            color=colors[arm], label=f"{_plain(arm)} (n = {counts[arm]['randomized']} randomized)"
        )
        for arm in trial.arms
    ]
    legend_rows = legend_below(fig, handles, ncols=2)
    arrange(fig, [ax], Panels(legend_rows=legend_rows))
    return fig


# --------------------------------------------------------------------------- diagnostics


def _cloud_style(n: int) -> dict[str, Any]:
    """Marker size, transparency and rasterization of a scatter of ``n`` points.

    Up to :data:`DENSE_POINTS` points are vector markers. A denser cloud gets small, more
    transparent markers, so that where points pile up still shows, and is rasterized in the SVG.
    """
    if n <= DENSE_POINTS:
        return {"s": 14, "alpha": 0.75}
    return {"s": 3, "alpha": 0.3, "rasterized": True}


@_styled
def diagnostics_figure(residuals: pd.DataFrame, trial: TrialConfig, outcome: str) -> Figure:
    """MMRM residual diagnostics: normal QQ plot and residuals against fitted values.

    Parameters
    ----------
    residuals
        MMRM residuals of one outcome (columns subject_id, visit, observed, fitted, residual,
        normalized_residual; an ``arm`` column, if present, colours the points).
    trial
        The trial description.
    outcome
        Outcome name.

    Returns
    -------
    Figure
        Left: normalized residuals against standard normal quantiles with the identity line
        (normalized residuals are N(0, 1) under the model). Right: raw residuals against
        fitted change, both in the outcome's unit, with a line at 0. A panel of more than
        :data:`DENSE_POINTS` points uses small translucent markers, rasterized in the SVG; one
        of more than :data:`MAX_RESIDUAL_POINTS` draws every residual beyond 3 SD and a seeded
        random sample of the others (the QQ plot's quantiles from all of them), and says so.
    """
    from matplotlib.lines import Line2D

    out = _outcome(trial, outcome)
    frame = residuals.copy()
    for column in ("fitted", "residual", "normalized_residual"):
        frame[column] = (
            pd.to_numeric(frame[column], errors="coerce") if column in frame else math.nan
        )
    colors = arm_colors(trial)
    fig = _new_figure(10.0, 4.6)
    fig.suptitle(
        _wrap(f"{_plain(out.label)}: MMRM residual diagnostics ({_plain(trial.title)})", 130),
        fontsize=10,
    )
    qq, rvf = fig.subplots(1, 2)
    # Axes labelled before seaborn draws, so that it leaves the labels and the ticks alone.
    qq.set_xlabel("Standard normal quantile (SD)")
    qq.set_ylabel("Normalized residual (SD units)")
    qq.set_title("Normal QQ plot of normalized residuals", loc="left", fontsize=10)
    rvf.set_xlabel(_wrap(_change_label(f"Fitted change in {out.label}", out), 70))
    rvf.set_ylabel(f"Residual ({_plain(out.unit)})")
    rvf.set_title("Residuals vs fitted", loc="left", fontsize=10)
    n = _draw_qq(qq, frame, trial)
    _draw_residuals_vs_fitted(rvf, frame, trial)
    legend_rows = 0
    if "arm" in frame.columns and n > 0:
        handles = [
            Line2D([], [], marker="o", lw=0, color=colors[arm], label=_plain(arm))
            for arm in trial.arms
        ]
        legend_rows = legend_below(fig, handles, ncols=2)
    arrange(fig, [qq, rvf], Panels(legend_rows=legend_rows))
    return fig


_NO_RESIDUALS = "no data: no MMRM residuals (model not fitted)"


def _draw_qq(ax: Axes, frame: pd.DataFrame, trial: TrialConfig) -> int:
    """The QQ panel's points and identity line; the number of normalized residuals."""
    norm = frame.dropna(subset=["normalized_residual"]).sort_values("normalized_residual")
    n = len(norm)
    if not n:
        _no_data(ax, _NO_RESIDUALS, hide_ticks="xy")
        return 0
    # Blom plotting positions (as R's qqnorm for n > 10) among all n residuals.
    a = 0.375 if n <= 10 else 0.5
    shown = _residuals_shown(norm["normalized_residual"].to_numpy(dtype=float), seed=1)
    probs = (shown + 1 - a) / (n + 1 - 2 * a)
    norm = norm.iloc[shown].assign(theoretical=[NormalDist().inv_cdf(float(p)) for p in probs])
    _residual_cloud(ax, norm, "theoretical", "normalized_residual", trial)
    ax.axline((0, 0), slope=1, color="black", lw=0.9, ls="--")
    _shown_note(ax, len(shown), n)
    return n


def _draw_residuals_vs_fitted(ax: Axes, frame: pd.DataFrame, trial: TrialConfig) -> None:
    """The residuals-against-fitted panel's points and zero line."""
    raw = frame.dropna(subset=["fitted", "residual"])
    if not len(raw):
        _no_data(ax, _NO_RESIDUALS, hide_ticks="xy")
        return
    shown = _residuals_shown(raw["normalized_residual"].to_numpy(dtype=float), seed=2)
    _residual_cloud(ax, raw.iloc[shown], "fitted", "residual", trial)
    ax.axhline(0, color="black", lw=0.9, ls="--")
    _shown_note(ax, len(shown), len(raw))


def _residuals_shown(normalized: np.ndarray, seed: int) -> np.ndarray:
    """Positions of the residuals drawn: all, or every one beyond +-3 SD (normalized) and a
    seeded random sample of the others, :data:`MAX_RESIDUAL_POINTS` in all."""
    outlying = np.abs(np.nan_to_num(normalized)) > OUTLYING_RESIDUAL
    return _outer_and_sample(outlying, MAX_RESIDUAL_POINTS, SAMPLE_SEED, seed)


def _shown_note(ax: Axes, shown: int, n: int) -> None:
    """Say in the panel how many residuals are drawn, when not all of them."""
    if shown < n:
        ax.text(
            0.01, 0.99,
            f"{shown:,} of {n:,} drawn: every |normalized| > {OUTLYING_RESIDUAL:g}\n"
            "and a random sample of the others",
            transform=ax.transAxes, ha="left", va="top", fontsize=7, color=TEXT_GREY,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.5},
        )  # fmt: skip


def _residual_cloud(ax: Axes, frame: pd.DataFrame, x: str, y: str, trial: TrialConfig) -> None:
    """A seaborn scatter of residuals, coloured by arm when the frame has one (else grey)."""
    import seaborn as sns

    colour: dict[str, Any] = (
        {"hue": frame["arm"].astype(str), "hue_order": trial.arms, "palette": arm_colors(trial)}
        if "arm" in frame.columns
        else {"color": NEUTRAL_COLOR}
    )
    sns.scatterplot(
        frame, x=x, y=y, edgecolor="none", legend=False, ax=ax, **colour, **_cloud_style(len(frame))
    )


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, path_stem: str | Path) -> list[Path]:
    """Write a figure as PNG (150 dpi) and SVG, byte-identical on every run, and close it.

    Parameters
    ----------
    fig
        The figure.
    path_stem
        Output path without extension; ``.png`` and ``.svg`` are appended and missing
        folders created.

    Returns
    -------
    list of Path
        The PNG and SVG paths.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    with _style():
        # No software version or date in the files: reruns and upgrades give the same bytes.
        write_png_svg(fig, png, svg, PNG_DPI)
    # Figures built here are not registered with pyplot; one made through pyplot is.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    return [png, svg]
