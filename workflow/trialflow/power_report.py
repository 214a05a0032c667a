"""The power curve and the power page of a scenario, written from ``power.csv``.

:func:`power_figure` draws power against the sample size per arm, one line per effect with its
95% Monte Carlo interval, the type I error at effect 0, and reference lines at 80% and 90%
power, in the style and colour-blind-safe palette of :mod:`trialflow.figures`.
:func:`power_page` is one self-contained HTML page (CSS inline, figure embedded): the sample
sizes that reach 80% and 90% power, the power table, how it was computed and the scenario
itself. Nothing on the page changes between runs, so reruns give the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from markupsafe import Markup

from trialflow.figures import NEUTRAL_COLOR, TEXT_GREY, _new_figure, _plain, _styled, _wrap
from trialflow.power import PowerScenario, sample_size_for
from trialflow.report import CSP, CSS, TEMPLATES, _figure_macro, html_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["power_figure", "power_page", "sample_size_table"]

# Okabe-Ito colours and marker shapes: effects stay distinct in colour and in greyscale.
EFFECT_STYLES: tuple[tuple[str, str], ...] = (
    ("#0072B2", "o"),
    ("#E69F00", "s"),
    ("#009E73", "D"),
    ("#CC79A7", "^"),
    ("#D55E00", "v"),
    ("#56B4E9", "P"),
    ("#000000", "X"),
)
TARGETS: tuple[float, ...] = (0.8, 0.9)
FIGURE_STEM = "power_curve"


def _label(scenario: PowerScenario) -> str:
    return str(scenario.outcome.get("label", scenario.model.outcome))


def effect_text(effect: float, scenario: PowerScenario) -> str:
    """An effect with its unit, e.g. ``29 m``."""
    unit = str(scenario.outcome.get("unit", ""))
    return f"{effect:g} {unit}".strip()


def _mc_interval(rows: pd.DataFrame) -> list[Any]:
    """Bar lengths below and above each point: 1.96 MCSE, kept within 0-100%."""
    half = 1.96 * 100.0 * rows["power_mcse"].to_numpy()
    power = 100.0 * rows["power"].to_numpy()
    return [np.minimum(half, power), np.minimum(half, 100.0 - power)]


def _reference_lines(ax: Axes, alpha: float) -> None:
    """Dotted lines at 80% and 90% power and a thin one at the significance level, labelled
    at the right edge."""
    for level, text, style in (
        *((100.0 * t, f"{100 * t:.0f}%", ":") for t in TARGETS),
        (100.0 * alpha, f"\u03b1 {100 * alpha:g}%", "-"),
    ):
        ax.axhline(level, color=TEXT_GREY, linestyle=style, linewidth=0.8)
        ax.annotate(
            text,
            xy=(1.0, level),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=TEXT_GREY,
        )


@_styled
def power_figure(table: pd.DataFrame, scenario: PowerScenario) -> Figure:
    """Power (%) against participants per arm: one line per effect, type I error, 80%/90%."""
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(6.4, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    handles: list[Any] = []
    for i, effect in enumerate(scenario.effects):
        color, marker = EFFECT_STYLES[i % len(EFFECT_STYLES)]
        rows = table.loc[table["effect"] == effect].sort_values("n_per_arm")
        handles.append(
            ax.errorbar(
                rows["n_per_arm"],
                100.0 * rows["power"],
                yerr=_mc_interval(rows),
                color=color,
                marker=marker,
                markersize=5,
                linewidth=1.5,
                capsize=2,
                label=_plain(f"effect {effect_text(effect, scenario)}"),
            )
        )
    null = table.drop_duplicates("n_per_arm").sort_values("n_per_arm")
    handles += ax.plot(
        null["n_per_arm"],
        100.0 * null["type1_error"],
        color=NEUTRAL_COLOR,
        linestyle="--",
        marker=".",
        label="type I error (effect 0)",
    )
    _reference_lines(ax, scenario.plan.alpha)
    ax.set_ylim(0, 100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Sample size per arm (participants randomized)")
    ax.set_ylabel(f"Power (%), two-sided \u03b1 = {scenario.plan.alpha:g}")
    title = f"{_label(scenario)} at {scenario.visit}: power of the primary MMRM"
    ax.set_title(_wrap(_plain(title), 70))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
        ncol=2,
        title=_plain(f"{scenario.replicates} simulated trials per point"),
    )
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    return fig


def sample_size_table(table: pd.DataFrame, scenario: PowerScenario) -> pd.DataFrame:
    """For each effect, the smallest candidate sample size per arm reaching 80% and 90% power."""
    largest = max(scenario.n_per_arm)
    rows = []
    for effect in scenario.effects:
        row: dict[str, Any] = {"effect": effect_text(effect, scenario)}
        for target in TARGETS:
            n = sample_size_for(table, effect, target)
            row[f"n per arm for {100 * target:.0f}% power"] = (
                str(n) if n is not None else f"more than {largest}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for column in ("power", "power_mcse", "type1_error", "coverage"):
        out[column] = [f"{100 * v:.1f}%" if math.isfinite(v) else "" for v in out[column]]
    out["mean_estimate"] = [f"{v:.4g}" for v in out["mean_estimate"]]
    out["effect"] = [f"{v:g}" for v in out["effect"]]
    return out


def power_page(
    table: pd.DataFrame, replicates: pd.DataFrame, scenario: PowerScenario, figure: Path
) -> str:
    """The scenario's power page as one self-contained HTML document."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    failed = replicates.loc[replicates["estimate"].isna()]
    fallback = replicates.loc[
        replicates["estimate"].notna() & (replicates["covariance"] != scenario.plan.covariance)
    ]
    echo = yaml.safe_dump(dict(scenario.content), sort_keys=False, allow_unicode=True)
    return env.get_template("power.html.j2").render(
        css=Markup(CSS.replace("display: flex;", "")),
        csp=CSP,
        scenario=scenario,
        label=_label(scenario),
        unit=str(scenario.outcome.get("unit", "")),
        sizes=html_table(sample_size_table(table, scenario)),
        table=html_table(_shown(table)),
        figure=_figure_macro({FIGURE_STEM: figure}),
        failed=len(failed),
        failure_notes=sorted(set(failed["note"].astype(str))),
        fallback=len(fallback),
        total=len(replicates),
        echo=echo,
    )
