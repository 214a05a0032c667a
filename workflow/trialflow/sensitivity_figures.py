"""Figures of the sensitivity analyses: a forest plot of every assumption, and the tipping point.

Pure functions returning matplotlib Figures, drawn in the style of :mod:`trialflow.figures`
(same palette, fonts and "favours" shading; the tipping-point lines with seaborn, their bands
from the table's CIs); :mod:`trialflow.plots` saves them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from trialflow.config import Outcome, TrialConfig
from trialflow.figure_layout import Panels, arrange, legend_below
from trialflow.figures import (
    CONTROL_COLOR,
    TEXT_GREY,
    TREATMENT_COLOR,
    ForestLayout,
    _estimate_text,
    _new_figure,
    _num,
    _outcome,
    _plain,
    _styled,
    _wrap,
    difference_unit,
    line_forest,
)
from trialflow.sensitivity_plan import METHOD_WORDS, STRATEGY_WORDS
from trialflow.tables import ci_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = ["sensitivity_forest_figure", "tipping_figure"]

# Colour and dash pattern of each inference method in the tipping-point figure ("" is solid).
_TIPPING_STYLES: dict[str, tuple[str, Any]] = {
    "multiple_imputation": (TREATMENT_COLOR, ""),
    "conditional_mean": (CONTROL_COLOR, (4, 2)),
}

Line = tuple[str, dict[str, float], str]
_KEYS = ("estimate", "ci_lower", "ci_upper", "n")


def _values(row: Any) -> dict[str, float]:
    return {k: _num(row.get(k)) for k in _KEYS}


def _line(label: str, row: Any, decimals: int) -> Line:
    v = _values(row)
    if math.isfinite(v["estimate"]):
        text = _estimate_text(v["estimate"], v["ci_lower"], v["ci_upper"], v["n"], decimals)
    else:
        text = _wrap(_plain(row.get("note") or "not estimable"), 42)
    return label, v, text


def forest_lines(
    effects: pd.DataFrame, sensitivity: pd.DataFrame, trial: TrialConfig, outcome: str
) -> list[Line]:
    """Headings (empty values) and estimate lines of the sensitivity forest plot."""
    decimals = _outcome(trial, outcome).decimals
    visit = trial.primary_visit
    lines: list[Line] = [("Primary analysis", {}, "")]
    primary = effects.loc[
        (effects["outcome"] == outcome)
        & (effects["analysis"] == "mmrm")
        & (effects["visit"] == visit)
    ]
    if len(primary):
        row = primary.iloc[0].to_dict()
        row["n"] = row.get("n_analysed", row["n"])  # the number in the model
        lines.append(_line("   MMRM, missing at random", row, decimals))
    rows = sensitivity.loc[(sensitivity["outcome"] == outcome) & (sensitivity["visit"] == visit)]
    for method, group in rows.groupby("method", sort=False):
        reps = group["imputations"].dropna()
        label = METHOD_WORDS.get(str(method), str(method))
        if method == "multiple_imputation" and len(reps):
            label += f" ({int(reps.iloc[0])} imputations)"
        elif method == "conditional_mean":
            label += " (jackknife)"
        populations = set(group["strategy"]) & {"completers", "per_protocol"}
        if populations:
            label = f"{label} of other populations"
        lines.append((label[0].upper() + label[1:], {}, ""))
        for r in group.to_dict("records"):
            words = STRATEGY_WORDS.get(str(r["strategy"]), str(r["strategy"]))
            lines.append(_line(f"   {words}", r, decimals))
    return lines


@_styled
def sensitivity_forest_figure(
    effects: pd.DataFrame, sensitivity: pd.DataFrame, trial: TrialConfig, outcome: str
) -> Figure:
    """The treatment effect at the primary visit under every assumption about dropouts.

    One line per analysis: the primary MMRM, then each inference method under each imputation
    strategy, then the completers and per-protocol refits, with "estimate (CI), n" on the right
    and the side favouring the treatment shaded.
    """
    o = _outcome(trial, outcome)
    return line_forest(
        trial,
        o,
        f"{_plain(o.label)}: sensitivity to missing data",
        forest_lines(effects, sensitivity, trial, outcome),
        # The primary MMRM (line 1, after its heading) is drawn as a blue diamond.
        layout=ForestLayout(
            pitch=0.28, axes=(0.36, 0.32), text_x=0.70, bounds=("ci_lower", "ci_upper"),
            highlight=1,
        ),
    )  # fmt: skip


@_styled
def tipping_figure(tipping: pd.DataFrame, trial: TrialConfig, outcome: str) -> Figure:
    """Estimate and CI at the primary visit against delta, with the tipping delta marked.

    Delta is added, in the direction of harm, to the treatment arm's values imputed after
    dropout; one line (and CI band) per inference method.
    """
    import seaborn as sns

    o = _outcome(trial, outcome)
    rows = tipping.loc[tipping["outcome"] == outcome]
    rows = rows.assign(method=rows["method"].astype(str))
    fig = _new_figure(7.2, 5.0)
    ax = fig.add_subplot()
    ci = ci_label(trial.options["alpha"])
    # Axes labelled before seaborn draws, so that it leaves the labels and the ticks alone.
    way = "higher" if o.better == "lower" else "lower"
    ax.set_xlabel(
        f"Delta: {difference_unit(o)} added to {_plain(trial.treatment)} values imputed "
        f"after dropout ({way} = worse)"
    )
    ax.set_ylabel(f"Difference at {_plain(trial.primary_visit)} ({difference_unit(o)})")
    ax.set_title(
        f"{_plain(o.label)}: tipping-point analysis", loc="left", fontsize=11, weight="bold"
    )
    methods = list(dict.fromkeys(rows["method"]))
    styles = {m: _TIPPING_STYLES.get(m, ("black", "")) for m in methods}
    if rows.empty:
        ax.text(0.5, 0.5, "no tipping-point analysis", ha="center", va="center",
                transform=ax.transAxes, color=TEXT_GREY)  # fmt: skip
    else:
        sns.lineplot(
            rows,
            x="delta",
            y="estimate",
            hue="method",
            style="method",
            hue_order=methods,
            style_order=methods,
            palette={m: c for m, (c, _) in styles.items()},
            dashes={m: d for m, (_, d) in styles.items()},
            estimator=None,
            errorbar=None,
            lw=1.8,
            legend=False,
            ax=ax,
        )
    marked = [
        _mark_method(ax, group, styles[str(method)], o, ci)
        for method, group in rows.groupby("method", sort=False)
    ]
    handles = [handle for handle, _ in marked]
    notes = [note for _, note in marked if note]
    ax.axhline(0, color="black", lw=0.9)
    legend_rows = legend_below(fig, handles, ncols=1) if handles else 0
    if notes:
        ax.text(0.99, 0.02, "\n".join(_wrap(n, 70) for n in notes), transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7.5, color=TEXT_GREY)  # fmt: skip
    arrange(fig, [ax], Panels(legend_rows=legend_rows))
    return fig


def _mark_method(
    ax: Axes, group: pd.DataFrame, style: tuple[str, Any], o: Outcome, ci: str
) -> tuple[Line2D, str]:
    """One method's CI band (from the table) and tipping delta; its legend entry and, when it
    has no tipping point, why."""
    from matplotlib.lines import Line2D

    color, dashes = style
    method = str(group["method"].iloc[0])
    name = METHOD_WORDS.get(method, method)
    tip = _num(group["tipping_delta"].iloc[0])
    why = group["note"].iloc[0]
    label = f"{name} ({ci})"
    if math.isfinite(tip) and tip > 0:
        ax.axvline(tip, color=color, ls=":", lw=1.2)
        label += f"; tipping point {tip:.{o.decimals}f} {difference_unit(o)}"
    # The band is the CI of the table, not one estimated by seaborn.
    ax.fill_between(
        group["delta"].to_numpy(dtype=float),
        group["ci_lower"],
        group["ci_upper"],
        color=color,
        alpha=0.15,
        lw=0,
    )
    handle = Line2D([], [], color=color, ls=(0, dashes) if dashes else "-", lw=1.8, label=label)
    note = f"{name}: no tipping point ({why})" if isinstance(why, str) and why else ""
    return handle, note
