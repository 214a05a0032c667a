"""The HTML report of a trial, and the index of all trials.

The report is one self-contained HTML file (CSS inline, figures embedded as base64 PNG, no
network request; a Content-Security-Policy forbids any) rendered from the Jinja2 templates in
``trialflow/templates`` with autoescaping, so every label from a configuration or a data file is
escaped. Numbers are read from the result tables and formatted, never retyped; the methods
paragraph and the results sentences are written from the same tables. The only time-dependent
text is the "Generated" stamp in the reproducibility appendix, which honours
``SOURCE_DATE_EPOCH`` for byte-identical rebuilds.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from trialflow import __version__
from trialflow.config import Outcome, TrialConfig
from trialflow.consort import checklist
from trialflow.harms import adverse_event_table
from trialflow.plan import (
    DF_WORDS,
    lmm_df_method,
    mmrm_formula,
    plan_sentences,
    structure_name,
    supportive_note,
)
from trialflow.plots import full_width
from trialflow.tables import (
    ci_label,
    fmt_ci,
    fmt_number,
    fmt_p,
    mmrm_included,
    outcome_table,
    table1,
    visit_completion,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "statsmodels",
    "pingouin",
    "matplotlib",
    "seaborn",
    "snakemake",
    "jinja2",
    "openpyxl",
    "pyreadstat",
    "python-docx",
    "threadpoolctl",
    "weasyprint",
)
LOCK_FILE = "requirements.lock"
ARM_COLORS = ("#0072B2", "#E69F00")
# Queries of one rule listed in the report; the rest are counted and left to queries.csv.
QUERIES_PER_RULE = 20

CSS = """
:root { --ink: #1b1f24; --muted: #5b6570; --rule: #d8dde3; --band: #f4f6f8; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; display: flex; }
nav.toc { position: sticky; top: 0; align-self: flex-start; width: 230px; min-width: 230px;
          height: 100vh; overflow-y: auto; padding: 1.2em 1em; background: var(--band);
          border-right: 1px solid var(--rule); font-size: 14px; }
nav.toc ol { padding-left: 1.2em; } nav.toc a { color: var(--ink); text-decoration: none; }
nav.toc a:hover { color: var(--accent); }
main { max-width: 1100px; padding: 1.5em 2.5em 4em; flex: 1; min-width: 0; }
h1 { font-size: 1.7em; margin: 0.2em 0; } h2 { border-bottom: 2px solid var(--rule);
     padding-bottom: 0.2em; margin-top: 2.2em; } h3 { margin-top: 1.5em; }
.lead { font-size: 1.05em; color: var(--muted); } .meta, .note, .stamp { color: var(--muted); }
table.data { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 13.5px;
             font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 0.3em 0.7em; border-bottom: 1px solid var(--rule);
                               text-align: left; vertical-align: top; }
table.data thead th { background: var(--band); border-bottom: 2px solid #b9c1ca; }
table.data thead th.group { text-align: center; border-bottom: 1px solid #b9c1ca; }
table.data td.num { text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
p.model { font-size: 13.5px; color: var(--muted); border-left: 3px solid var(--rule);
          padding-left: 0.8em; }
p.result { background: #eef5fb; border-left: 3px solid var(--accent); padding: 0.5em 0.8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto;
         border: 1px solid var(--rule); } figcaption { font-size: 13px; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em; }
.grid2 > figure.wide { grid-column: 1 / -1; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px;
          margin-right: 0.4em; vertical-align: -0.1em; }
.missing { color: #a33; font-style: italic; }
pre { background: var(--band); padding: 0.8em; overflow-x: auto; font-size: 12.5px; }
code.hash { font-size: 12px; word-break: break-all; }
details summary { cursor: pointer; color: var(--accent); }
@page { size: A4; margin: 14mm 12mm 16mm; }
@page { @bottom-center { content: counter(page) " / " counter(pages); font-size: 9px;
                         color: #5b6570; } }
@media print {
  body { display: block; font-size: 10.5px; }
  nav.toc { display: none; }
  main { max-width: none; padding: 0; }
  h2 { break-before: page; margin-top: 0; } section:first-of-type h2 { break-before: auto; }
  h2, h3 { break-after: avoid; }
  .scroll, pre { overflow: visible; }
  pre { white-space: pre-wrap; word-break: break-all; }
  table.data { font-size: 8.5px; width: 100%; table-layout: fixed; }
  table.data th, table.data td { padding: 0.15em 0.35em; word-break: break-word; }
  table.data td.num { white-space: normal; }
  table.data thead { display: table-header-group; }
  tr, figure, p.result { break-inside: avoid; }
  p.model, p.result, figcaption { font-size: 9.5px; }
  .grid2 { display: block; }
  figure img { width: 100%; max-width: 100%; }
  details > * { display: block; }
  details summary { color: var(--ink); font-weight: bold; }
}
"""


@dataclass
class ReportInputs:
    """Everything the report reads, already loaded."""

    trial: TrialConfig
    adsl: pd.DataFrame
    adeff: pd.DataFrame
    flow: pd.DataFrame
    queries: pd.DataFrame
    effects: pd.DataFrame
    lsmeans: pd.DataFrame
    anova: pd.DataFrame
    effect_sizes: pd.DataFrame
    models: Mapping[str, Mapping[str, Any]]
    covariate_types: Mapping[str, str]
    figures: Mapping[str, Path]
    input_files: Sequence[Path]
    residuals: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    type3: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    tipping: pd.DataFrame = field(default_factory=pd.DataFrame)
    responders: pd.DataFrame = field(default_factory=pd.DataFrame)
    sensitivity_summary: Mapping[str, Any] = field(default_factory=dict)
    adverse_events: pd.DataFrame | None = None  # None: the trial names no adverse-events file


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_commit(root: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def generated_stamp() -> str:
    """UTC time of generation, or ``SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _installed(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def lock_status(root: Path) -> str:
    """Whether the installed packages have the exact versions of the project's lock file."""
    lock = root / LOCK_FILE
    if not lock.is_file():
        return f"no {LOCK_FILE} in the project folder"
    pinned = dict(
        line.split("==", 1)
        for line in lock.read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )
    installed = {n: _installed(n) for n in pinned}
    # Extras not installed (tests, cluster) are counted, not reported as differences.
    absent = sum(v == "not installed" for v in installed.values())
    differ = [
        f"{n} {installed[n]} (pinned {v})"
        for n, v in pinned.items()
        if installed[n] not in (v, "not installed")
    ]
    head = f"{LOCK_FILE} (SHA-256 {sha256(lock)[:16]}): {len(pinned) - absent} of {len(pinned)} "
    head += "pinned packages installed"
    if not differ:
        return head + ", all at their pinned versions"
    return head + f"; {len(differ)} at other versions: " + "; ".join(differ)


def blas() -> str:
    """The BLAS libraries numpy and scipy call: name, version, threading layer.

    Both are loaded first, so the text does not depend on which modules the job happened to
    import before (the report is the same from a one-job and a per-step run).
    """
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    found = sorted(
        {
            f"{i.get('internal_api')} {i.get('version') or ''} "
            f"({i.get('threading_layer', '')} threading, {i.get('architecture', '')})"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        }
    )
    return "; ".join(found) or "not detected"


def provenance(trial: TrialConfig, input_files: Sequence[Path], root: Path) -> dict[str, Any]:
    """Versions, input checksums and the configuration as run."""
    source = Path(trial.source)
    seed = dict(trial.sensitivity).get("seed", 20261201)
    return {
        "trialflow_version": __version__,
        "git_commit": _git_commit(root),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()}, "
        f"{platform.libc_ver()[0] or 'libc'} {platform.libc_ver()[1]})",
        "blas": blas(),
        "lock": lock_status(root),
        "packages": {name: _installed(name) for name in PACKAGES},
        "seeds": f"sensitivity analyses: {seed} (sensitivity: seed; every imputation's stream "
        "derives from it, the outcome and the imputation's number); plot jitter and the "
        "subject sample of large spaghetti plots use fixed seeds in trialflow.figures",
        "inputs": [
            {"path": str(p), "bytes": Path(p).stat().st_size, "sha256": sha256(Path(p))}
            for p in input_files
        ],
        "config_text": source.read_text(encoding="utf-8") if source.is_file() else "",
        "generated": generated_stamp(),
    }


_NUMERIC_TEXT = re.compile(r"^[-<]?\d[\d.]*(\s|$)")


def _header(columns: Sequence[Any]) -> str:
    """One header row, or two when columns are named '<group>: <label>' (e.g. per arm)."""
    names = [str(c) for c in columns]
    if not any(": " in n for n in names):
        return "<tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    top: list[tuple[str, int, str]] = []  # (group, span, label of an ungrouped column)
    bottom: list[str] = []
    for n in names:
        group, _, label = n.partition(": ") if ": " in n else ("", "", n)
        if group and top and top[-1][0] == group:
            top[-1] = (group, top[-1][1] + 1, "")
        else:
            top.append((group, 1, "" if group else label))
        if group:
            bottom.append(f"<th>{html.escape(label)}</th>")
    first = "".join(
        f'<th colspan="{span}" class="group">{html.escape(group)}</th>'
        if group
        else f'<th rowspan="2">{html.escape(label)}</th>'
        for group, span, label in top
    )
    return f"<tr>{first}</tr><tr>{''.join(bottom)}</tr>"


def html_table(frame: pd.DataFrame | None) -> Markup:
    """An escaped HTML table; numbers right-aligned; missing values shown empty."""
    if frame is None or frame.empty:
        return Markup('<p class="missing">No rows.</p>')
    head = _header(list(frame.columns))
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("<td></td>")
            elif (
                isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, bool)
            ) or _NUMERIC_TEXT.match(str(value)):
                cells.append(f'<td class="num">{html.escape(str(value))}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(
        f'<div class="scroll"><table class="data"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figure_macro(figures: Mapping[str, Path]) -> Any:
    def figure(stem: str, caption: str) -> Markup:
        path = figures.get(stem)
        cap = html.escape(caption)
        if path is None or not Path(path).is_file():
            return Markup(f'<p class="missing">Figure {html.escape(stem)} is not available.</p>')
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        wide = ' class="wide"' if full_width(stem) else ""
        return Markup(
            f'<figure id="fig-{html.escape(stem)}"{wide}><img src="data:image/png;base64,{data}" '
            f'alt="{cap}"><figcaption>{cap}</figcaption></figure>'
        )

    return figure


def _amount(value: float, outcome: Outcome, *, difference: bool = False) -> str:
    text = fmt_number(value, outcome.decimals)
    if outcome.unit == "%":
        return f"{text} percentage points" if difference else f"{text}%"
    return f"{text} {outcome.unit}"


def result_sentence(
    outcome: Outcome, trial: TrialConfig, effects: pd.DataFrame, lsmeans: pd.DataFrame
) -> str:
    """One manuscript sentence on the MMRM treatment effect at the primary visit."""
    visit = trial.visit(trial.primary_visit)
    e = effects.loc[
        (effects["outcome"] == outcome.name)
        & (effects["analysis"] == "mmrm")
        & (effects["visit"] == visit.label)
    ]
    if e.empty or not np.isfinite(e["estimate"].iloc[0]):
        return (
            f"At the {visit.label} visit, the treatment effect on {outcome.label} could not be "
            "estimated "
            "(see model diagnostics)."
        )
    r = e.iloc[0]
    ls = lsmeans.loc[
        (lsmeans["outcome"] == outcome.name)
        & (lsmeans["analysis"] == "mmrm")
        & (lsmeans["visit"] == visit.label)
    ].set_index("arm")["estimate"]
    est, lo, hi = float(r["estimate"]), float(r["ci_lower"]), float(r["ci_upper"])
    ci = ci_label(trial.options["alpha"])
    holm = str(r.get("multiplicity", "")).startswith("Holm") and np.isfinite(r["p_adjusted"])
    # The verdict follows the test the table reports: the Holm-adjusted p where there is one.
    if holm and float(r["p_adjusted"]) >= trial.options["alpha"]:
        verdict = "not statistically significant after the Holm adjustment (no difference claimed)"
    elif lo > 0 or hi < 0:
        good = (est > 0) == (outcome.better == "higher")
        verdict = f"favouring the {trial.treatment if good else trial.control} arm"
    else:
        verdict = f"the {ci} includes zero (no clear difference)"
    p_text = f"p = {fmt_p(float(r['p_value']))}".replace("p = <", "p < ")
    if holm:
        adj = fmt_p(float(r["p_adjusted"]))
        p_text += f"; Holm-adjusted p {'< ' + adj[1:] if adj.startswith('<') else '= ' + adj}"
    n_text = f"n = {int(r['n'])}"
    if "n_analysed" in r and np.isfinite(r["n_analysed"]):
        n_text = f"n = {int(r['n_analysed'])} analysed, {int(r['n'])} observed at {visit.label}"
    what = (
        "mean change from baseline in"
        if trial.options["response"] == "change"
        else "least-squares mean of"
    )
    return (
        f"At the {visit.label} visit (week {visit.week:g}), the {what} "
        f"{outcome.label} was {_amount(ls.get(trial.control, np.nan), outcome)} in the "
        f"{trial.control} arm and {_amount(ls.get(trial.treatment, np.nan), outcome)} in the "
        f"{trial.treatment} arm; the difference ({trial.treatment} minus {trial.control}) was "
        f"{_amount(est, outcome, difference=True)} ({ci} {fmt_number(lo, outcome.decimals)} to "
        f"{fmt_number(hi, outcome.decimals)}; {p_text}; {n_text}), {verdict} "
        f"({outcome.better} is better)."
    )


def _article(words: str) -> str:
    return ("an " if words[:1].lower() in "aeiou" else "a ") + words


def _words_list(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _adjust_words(trial: TrialConfig) -> str:
    """What the MMRM adjusts for, in words."""
    covs = ", ".join(c.name for c in trial.covariates)
    if trial.options["baseline"] == "none":
        return covs or "no covariate"
    return "the baseline value" + (f" and {covs}" if covs else "")


def _fallback_sentences(trial: TrialConfig, infos: Mapping[str, Mapping[str, Any]]) -> str:
    """The pre-specified fallback order and whether any outcome needed it."""
    requested = trial.options["covariance"]
    used = [
        f"{o.label} ({structure_name(infos[o.name].get('covariance_used'))} structure)"
        for o in trial.outcomes
        if infos[o.name].get("covariance_used") not in (None, requested)
    ]
    order = [c for c in trial.options["fallback"] if c != requested]
    plan = (
        f"Had it failed to converge, {_words_list([structure_name(c) for c in order])} structures "
        "were to be tried in that order"
        if order
        else "No fallback structure was pre-specified"
    )
    result = (
        "No outcome needed a fallback."
        if not used
        else f"The fallback structure was used for {_words_list(used)}."
    )
    return f"{plan}. {result}"


def _itt_paragraph(inputs: ReportInputs, infos: Mapping[str, Mapping[str, Any]]) -> str:
    trial = inputs.trial
    n = {arm: int((inputs.adsl["arm"] == arm).sum()) for arm in trial.arms}
    analysed = [
        f"{o.label}: {infos[o.name]['n_subjects']} of {len(inputs.adsl)}"
        for o in trial.outcomes
        if infos[o.name]
    ]
    return (
        f"All analyses followed the intention-to-treat principle: the {len(inputs.adsl)} "
        f"randomized participants were analysed in the arm to which they were allocated "
        f"({trial.control}: {n[trial.control]}; {trial.treatment}: {n[trial.treatment]}); each "
        "model used every participant with the data it needs (participants in the primary "
        f"model: {'; '.join(analysed) or 'none'})."
    )


def _primary_paragraph(trial: TrialConfig, infos: Mapping[str, Mapping[str, Any]]) -> str:
    opts = trial.options
    level = f"{100 * (1 - opts['alpha']):g}%"
    post = ", ".join(v.label for v in trial.post_baseline_visits)
    not_fitted = [o.label for o in trial.outcomes if not infos[o.name]]
    return (
        f"The primary analysis of each outcome was a mixed model for repeated measures (MMRM) "
        f"at each post-baseline visit ({post}), {mmrm_formula(trial)}: fixed effects for "
        f"{_adjust_words(trial)}, arm, visit and the arm-by-visit interaction, and "
        f"{_article(structure_name(opts['covariance']))} "
        "covariance matrix for the residuals across visits within participant, estimated by "
        "restricted maximum likelihood (REML). "
        + " ".join(plan_sentences(trial))
        + " The model uses every observed visit of every participant with the data it needs "
        "and is valid when data are missing at random. Treatment effects are differences in "
        f"least-squares means between arms at each visit, with {level} confidence intervals "
        "and two-sided p-values from t distributions; Type III F tests of every term use the "
        f"same degrees-of-freedom method. {_fallback_sentences(trial, infos)}"
        + (
            f" No model could be fitted for {_words_list(not_fitted)} (see the diagnostics)."
            if not_fitted
            else ""
        )
    )


def _supportive_paragraph(trial: TrialConfig) -> str:
    opts = trial.options
    lmm_effects = (
        "a random intercept and a random slope on time (weeks / 12) per participant"
        if opts["random_slope"]
        else "a random intercept per participant"
    )
    adjust = _adjust_words(trial) if opts["baseline"] != "none" else "the covariates"
    subgroups = ", ".join(g["name"] for g in opts["subgroups"])
    return (
        "Supportive analyses were a linear mixed model of the outcome at all visits including "
        f"baseline with {lmm_effects} (treatment effect = arm-by-visit "
        f"interaction; {DF_WORDS[lmm_df_method(opts)].split(' (')[0]}), an analysis of "
        f"covariance of the {'change' if opts['response'] == 'change' else 'value'} at each "
        f"visit adjusted for {adjust}, the repeated-measures (mixed) analysis of variance used "
        "in the published trials, restricted to participants with complete data, and Hedges' g "
        "of the change from baseline."
        + (
            f" Exploratory subgroup analyses ({subgroups}) added the subgroup, its interaction "
            "with visit and the arm-by-subgroup-by-visit interaction to the primary MMRM; they "
            "report the treatment effect at the primary visit in each subgroup level and an F "
            "test of the treatment-by-subgroup interaction at that visit, without adjustment "
            "for multiplicity."
            if subgroups
            else ""
        )
    )


def _multiplicity_paragraph(trial: TrialConfig) -> str:
    primary = trial.primary_outcomes
    secondary = [o.label for o in trial.outcomes if not o.primary]
    if len(primary) == 1:
        text = f"The primary outcome was tested without adjustment at {trial.primary_visit}"
    elif trial.options["primary_adjustment"] == "holm":
        text = (
            f"The {len(primary)} co-primary outcomes were Holm-adjusted among themselves at "
            f"{trial.primary_visit}"
        )
    else:
        text = (
            f"The {len(primary)} co-primary outcomes were each tested without adjustment at "
            f"{trial.primary_visit}"
        )
    holm = (
        f"p-values of the {len(secondary)} secondary outcomes at that visit were adjusted "
        "among themselves by the Holm method; "
        if secondary
        else ""
    )
    return f"{text}; {holm}results at other visits are exploratory."


def methods_paragraphs(inputs: ReportInputs, prov: Mapping[str, Any]) -> list[str]:
    """The statistical-methods text, written from the options as run and the model records."""
    trial = inputs.trial
    infos = {
        o.name: inputs.models.get(o.name, {}).get("mmrm", {}).get("info", {})
        for o in trial.outcomes
    }
    pk = prov["packages"]
    return [
        _itt_paragraph(inputs, infos),
        _primary_paragraph(trial, infos),
        _supportive_paragraph(trial),
        _multiplicity_paragraph(trial),
        f"Analyses used trialflow {prov['trialflow_version']} (Python "
        f"{prov['python'].split(' ')[0]}; statsmodels {pk['statsmodels']}, pingouin "
        f"{pk['pingouin']}, scipy {pk['scipy']}); the MMRM, LMM, ANCOVA and ANOVA implementations "
        "are validated against R (nlme with emmeans, lmerTest, pbkrtest, lm and afex) and "
        "against published SAS PROC MIXED listings.",
    ]


def _withdrawal_reasons(inputs: ReportInputs) -> pd.DataFrame | None:
    """Withdrawals by reason (rows) and arm (columns), when the trial records reasons."""
    flow = inputs.flow
    if "reason" not in flow:
        return None
    rows = flow.loc[flow["stage"] == "withdrawal_reason"]
    if rows.empty:
        return None
    table = rows.pivot_table(index="reason", columns="arm", values="n", aggfunc="sum", fill_value=0)
    arms = [*inputs.trial.arms, "total"]
    table = table.reindex(columns=arms, fill_value=0).sort_values("total", ascending=False)
    return table.reset_index().rename(columns={"reason": "reason for withdrawal"})


def _numbers_analysed(inputs: ReportInputs) -> pd.DataFrame:
    trial = inputs.trial
    arm_of = inputs.adsl.set_index("subject_id")["arm"]
    rows = []
    for o in trial.primary_outcomes:
        included = mmrm_included(inputs.residuals.get(o.name), arm_of, trial.arms)
        ls = inputs.lsmeans.loc[
            (inputs.lsmeans["outcome"] == o.name)
            & (inputs.lsmeans["analysis"] == "mmrm")
            & (inputs.lsmeans["visit"] == trial.primary_visit)
        ].set_index("arm")
        for arm in trial.arms:
            rows.append(
                {
                    "outcome": o.label,
                    "arm": arm,
                    "randomized": int((inputs.adsl["arm"] == arm).sum()),
                    "with baseline": int(
                        ((inputs.adsl["arm"] == arm) & (inputs.adsl["has_baseline"] == "Y")).sum()
                    ),
                    "in the MMRM (any post-baseline value)": included[arm],
                    f"observed at {trial.primary_visit}": int(ls["n"].get(arm, 0))
                    if len(ls)
                    else 0,
                }
            )
    return pd.DataFrame(rows)


def _count(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def _supportive(inputs: ReportInputs) -> pd.DataFrame:
    labels = {o.name: o for o in inputs.trial.outcomes}
    ci = ci_label(inputs.trial.options["alpha"])
    rows = []
    for r in inputs.effects.to_dict("records"):
        o = labels[str(r["outcome"])]
        rows.append(
            {
                "outcome": o.label,
                "analysis": r["analysis"],
                "visit": r["visit"],
                f"difference ({ci})": fmt_ci(
                    r["estimate"], r["ci_lower"], r["ci_upper"], o.decimals
                ),
                "df": fmt_number(r["df"], 1),
                "p": fmt_p(r["p_value"]),
                # The number in the model, and (labelled) the number observed at the visit.
                "n analysed": _count(r.get("n_analysed")),
                "n observed at visit": _count(r["n"]),
                "note": "" if pd.isna(r["note"]) else str(r["note"]),
            }
        )
    return pd.DataFrame(rows)


def _type3_table(inputs: ReportInputs) -> pd.DataFrame:
    """Type III tests of the MMRM's and LMM's fixed effects, per outcome (SAS "Type 3 Tests")."""
    t = inputs.type3
    if t.empty:
        return pd.DataFrame()
    labels = {o.name: o.label for o in inputs.trial.outcomes}
    return pd.DataFrame(
        {
            "outcome": t["outcome"].map(labels),
            "analysis": t["analysis"],
            "effect": t["effect"],
            "num df": t["num_df"].map(lambda x: str(int(x))),
            "den df": t["den_df"].map(lambda x: fmt_number(x, 1)),
            "F": t["F"].map(lambda x: fmt_number(x, 2)),
            "p": t["p_value"].map(fmt_p),
        }
    )


def _subgroup_table(inputs: ReportInputs) -> pd.DataFrame:
    """Treatment effect at the primary visit by subgroup level, with the interaction test."""
    s = inputs.subgroups
    if s.empty:
        return pd.DataFrame()
    outcomes = {o.name: o for o in inputs.trial.outcomes}
    ci = ci_label(inputs.trial.options["alpha"])
    rows = []
    for r in s.to_dict("records"):
        o = outcomes[str(r["outcome"])]
        estimable = not pd.isna(r["estimate"])
        rows.append(
            {
                "outcome": o.label,
                "subgroup": r["subgroup"],
                "level": "" if pd.isna(r["level"]) else r["level"],
                "n": "" if pd.isna(r["n"]) else str(int(r["n"])),
                f"difference ({ci})": fmt_ci(r["estimate"], r["ci_lower"], r["ci_upper"],
                                             o.decimals) if estimable else str(r["note"]),
                "interaction": (
                    f"F({int(r['interaction_num_df'])}, {fmt_number(r['interaction_den_df'], 1)})"
                    f" = {fmt_number(r['interaction_F'], 2)}, {fmt_p(r['interaction_p'])}"
                    if not pd.isna(r["interaction_F"])
                    else ""
                ),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _anova_table(inputs: ReportInputs) -> pd.DataFrame:
    a = inputs.anova
    labels = {o.name: o.label for o in inputs.trial.outcomes}
    out = pd.DataFrame(
        {
            "outcome": a["outcome"].map(labels),
            "source": a["source"],
            "F": a["F"].map(lambda x: fmt_number(x, 2)),
            "df": [
                f"{fmt_number(d1, 0)}, {fmt_number(d2, 0)}"
                for d1, d2 in zip(a["df1"], a["df2"], strict=True)
            ],
            "p": a["p_value"].map(fmt_p),
            "partial eta squared": a["partial_eta_sq"].map(lambda x: fmt_number(x, 3)),
        }
    )
    if "p_value_gg" in a:
        out["p (Greenhouse-Geisser)"] = a["p_value_gg"].map(fmt_p)
    if "n_subjects" in a:
        out["complete cases"] = a["n_subjects"].map(lambda x: "" if pd.isna(x) else str(int(x)))
    return out


def _effect_sizes(inputs: ReportInputs) -> pd.DataFrame:
    g = inputs.effect_sizes
    ci = ci_label(inputs.trial.options["alpha"])
    labels = {o.name: o.label for o in inputs.trial.outcomes}
    if "g" not in g:
        return pd.DataFrame()
    # An outcome whose g could not be computed has a note row with no numbers: say so.
    notes = g["note"] if "note" in g else pd.Series("", index=g.index)
    return pd.DataFrame(
        {
            "outcome": g["outcome"].map(labels),
            "visit": g["visit"].fillna("") if "visit" in g else "",
            f"Hedges' g ({ci})": [
                fmt_ci(a, b, c, 2) if pd.notna(a) else f"not computed: {note}"
                for a, b, c, note in zip(
                    g["g"], g["ci_lower"], g["ci_upper"], notes.fillna(""), strict=True
                )
            ],
            f"n ({inputs.trial.treatment} / {inputs.trial.control})": [
                f"{_count(t)} / {_count(c)}" if pd.notna(t) and pd.notna(c) else ""
                for t, c in zip(g["n_treatment"], g["n_control"], strict=True)
            ],
        }
    )


def _diagnostics(inputs: ReportInputs) -> tuple[pd.DataFrame, list[str]]:
    rows, warnings = [], []
    for o in inputs.trial.outcomes:
        rec = inputs.models.get(o.name, {})
        for analysis in ("mmrm", "lmm", "ancova"):
            fit = rec.get(analysis, {})
            info = fit.get("info", {})
            if not fit.get("fitted", False):
                rows.append(
                    {"outcome": o.label, "analysis": analysis, "converged": "no",
                     "note": f"not fitted: {fit.get('reason', 'unknown')}"}
                )  # fmt: skip
                continue
            cov = ""
            if analysis == "mmrm":
                cov = str(info.get("covariance_used", ""))
                if info.get("fallback_reason"):
                    cov += f" (requested {info.get('covariance_requested')})"
            loglik = info.get("loglik")
            rows.append(
                {
                    "outcome": o.label,
                    "analysis": analysis,
                    "converged": "yes" if fit.get("converged") else "no",
                    "covariance": cov,
                    "REML log-likelihood": fmt_number(loglik, 3)
                    if isinstance(loglik, (int, float))
                    else "",
                    "subjects": str(info.get("n_subjects", "")),
                    "observations": str(info.get("n_observations", "")),
                    "optimizer": str(info.get("optimizer", "")),
                    "note": str(info.get("fallback_reason") or ""),
                }
            )
            warnings += [f"{o.label}, {analysis}: {w}" for w in fit.get("warnings", [])]
        anova = rec.get("mixed_anova", {})
        warnings += [f"{o.label}, mixed ANOVA: {w}" for w in anova.get("warnings", [])]
    return pd.DataFrame(rows).fillna(""), warnings


def report_tables(inputs: ReportInputs) -> dict[str, pd.DataFrame]:
    """The publication tables: table1, primary, secondary (may be empty), completion."""
    trial = inputs.trial
    secondary = tuple(o for o in trial.outcomes if not o.primary)

    def as_table(outcomes: tuple[Outcome, ...]) -> pd.DataFrame:
        if not outcomes:
            return pd.DataFrame()
        t = outcome_table(
            inputs.effects,
            inputs.lsmeans,
            inputs.adeff,
            trial,
            outcomes,
            alpha=trial.options["alpha"],
            response=trial.options["response"],
        )
        return t.drop(columns=["better"])

    primary = as_table(trial.primary_outcomes)
    if (primary["p (Holm)"] == "").all():  # a single primary outcome is not adjusted
        primary = primary.drop(columns=["p (Holm)"])
    return {
        "table1": table1(inputs.adsl, inputs.adeff, trial, inputs.covariate_types),
        "primary": primary,
        "secondary": as_table(secondary),
        "completion": visit_completion(inputs.flow, trial),
        "adverse_events": adverse_event_table(inputs.adverse_events, inputs.adsl, trial)
        if inputs.adverse_events is not None
        else pd.DataFrame(columns=["category", "event"]),
    }


def write_report_tables(inputs: ReportInputs) -> dict[str, Any]:
    """The publication tables, plus Table 1 as a standalone HTML page."""
    tables: dict[str, Any] = dict(report_tables(inputs))
    title = html.escape(f"Table 1. Baseline characteristics - {inputs.trial.title}")
    tables["table1_html"] = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS.replace('display: flex;', '')}</style></head><body><main><h1>{title}</h1>"
        f'{html_table(tables["table1"])}<p class="note">Mean (SD) for continuous, n (%) for '
        "categorical characteristics (median [IQR] for skewed ones); SMD = standardized mean "
        "difference.</p></main></body>"
        "</html>\n"
    )
    return tables


def model_note(inputs: ReportInputs) -> str:
    """The model written under the outcome tables: MMRM, covariance, df method, estimand."""
    trial = inputs.trial
    opts = trial.options
    ci = ci_label(opts["alpha"])
    used = sorted(
        {
            str(rec.get("mmrm", {}).get("info", {}).get("covariance_used"))
            for rec in inputs.models.values()
            if rec.get("mmrm", {}).get("fitted")
        }
    )
    structure = " / ".join(structure_name(u) for u in used) or structure_name(opts["covariance"])
    return (
        f"Model: MMRM of {mmrm_formula(trial)}; {structure} residual "
        "covariance across visits within participant (see the diagnostics for each outcome); "
        f"REML; {DF_WORDS[opts['df']]}; intention to treat. "
        + (
            f"Change ({ci}) is the least-squares mean change from baseline"
            if opts["response"] == "change"
            else f"LS mean ({ci}) is the least-squares mean of the outcome"
        )
        + ", using every participant in the model; n and "
        f"the baseline mean (SD) are of those observed at {trial.primary_visit}. Difference is "
        f"{trial.treatment} minus {trial.control}."
    )


def table_notes(inputs: ReportInputs) -> dict[str, str]:
    """The notes the report writes with its publication tables (the Word tables reuse them):
    table1, primary, secondary, harms and the two parts of the sensitivity table's note."""
    trial = inputs.trial
    model = model_note(inputs)
    multiplicity = (
        "p (Holm): Holm-adjusted across the secondary outcomes at "
        f"{trial.primary_visit} (an outcome that could not be estimated counts as p = 1)."
    )
    return {
        "table1": "Mean (SD) for continuous characteristics (median [IQR] where skewed: "
        "|skewness| > 1), n (%) for categorical ones; SMD = standardized mean difference "
        f"({trial.treatment} vs {trial.control}). No p-values, as CONSORT advises for "
        "randomized comparisons.",
        "primary": model,
        "secondary": f"{model} {multiplicity}",
        "harms": "Participants with at least one adverse event, a serious one and a related "
        "one, and each event term, by arm; percentages are of the participants randomized "
        "to the arm",
        "sensitivity_rows": f"Every row is {trial.treatment} minus {trial.control} at "
        f"{trial.primary_visit}",
        "sensitivity_methods": "Multiple imputation: Rubin's rules (t intervals on "
        "Barnard-Rubin df). Conditional mean imputation: jackknife standard errors, normal "
        "intervals. Completers and per protocol: the primary MMRM and the ANCOVA refitted to "
        "those participants only.",
    }


def render_report(
    inputs: ReportInputs,
    *,
    root: Path | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """Render the trial's report as one self-contained HTML document."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    trial = inputs.trial
    prov = provenance(trial, inputs.input_files, root or Path.cwd())
    primary = trial.primary_outcomes
    secondary = tuple(o for o in trial.outcomes if not o.primary)
    tables = tables if tables is not None else report_tables(inputs)
    primary_table = tables["primary"]
    secondary_table = tables["secondary"] if secondary else None
    queries = inputs.queries
    query_counts = (
        queries.groupby("rule").size().rename("queries").reset_index()
        if len(queries)
        else pd.DataFrame()
    )
    # A huge query log stays in queries.csv; the report shows the first rows of each rule.
    shown_queries = (
        queries.groupby("rule", sort=False).head(QUERIES_PER_RULE) if len(queries) else queries
    )
    diagnostics, model_warnings = _diagnostics(inputs)
    ci = ci_label(trial.options["alpha"])
    sections = [
        ("summary", "Trial summary"),
        ("consort", "Participant flow"),
        ("table1", "Baseline characteristics"),
        ("primary", "Primary outcome"),
        ("secondary", "Secondary outcomes"),
        ("harms", "Harms"),
        ("figures", "Figures"),
        ("supportive", "Supportive analyses"),
        ("sensitivity", "Estimand and sensitivity analyses"),
        ("quality", "Data quality"),
        ("diagnostics", "Model diagnostics"),
        ("methods", "Methods and results text"),
        ("checklist", "CONSORT 2025 checklist"),
        ("reproducibility", "Reproducibility"),
    ]
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    template = env.get_template("report.html.j2")
    return template.render(
        trial=trial,
        css=Markup(CSS),
        sections=sections,
        colors=dict(zip(trial.arms, ARM_COLORS, strict=True)),
        counts={"randomized": {a: int((inputs.adsl["arm"] == a).sum()) for a in trial.arms}},
        figure=_figure_macro(inputs.figures),
        table=html_table,
        visit_completion=tables["completion"],
        withdrawal_reasons=_withdrawal_reasons(inputs),
        numbers_analysed=_numbers_analysed(inputs),
        table1=tables["table1"],
        primary_table=primary_table,
        secondary_table=secondary_table,
        notes=table_notes(inputs),
        ci=ci,
        primary_sentences=[
            result_sentence(o, trial, inputs.effects, inputs.lsmeans) for o in primary
        ],
        secondary_sentences=[
            result_sentence(o, trial, inputs.effects, inputs.lsmeans) for o in secondary
        ],
        supportive=_supportive(inputs),
        supportive_note=supportive_note(trial),
        type3_table=_type3_table(inputs),
        subgroup_table=_subgroup_table(inputs),
        anova_table=_anova_table(inputs),
        anova_note="Arm (between participants) by visit (within participants), baseline "
        "included, on complete cases only: participants with the outcome observed at every "
        "visit (the number per outcome is in the table); type III sums of squares; the "
        "Greenhouse-Geisser p corrects the within-participant terms for non-sphericity.",
        effect_sizes=_effect_sizes(inputs),
        **_sensitivity_context(inputs),
        consort_checklist=checklist(trial, harms=inputs.adverse_events is not None),
        harms_named=inputs.adverse_events is not None,
        harms_table=tables["adverse_events"],
        queries_total=len(queries),
        query_counts=query_counts,
        queries=shown_queries,
        queries_shown=len(shown_queries),
        queries_per_rule=QUERIES_PER_RULE,
        diagnostics=diagnostics,
        model_warnings=model_warnings,
        methods=methods_paragraphs(inputs, prov),
        provenance=prov,
    )


def display_inputs(inputs: ReportInputs) -> ReportInputs:
    """The report's inputs with display labels for arms, visits and covariate levels."""
    from dataclasses import replace

    from trialflow.labels import display_frame, display_trial

    trial = inputs.trial

    def shown(frame: pd.DataFrame) -> pd.DataFrame:
        out = display_frame(frame, trial)
        assert out is not None
        return out

    return replace(
        inputs,
        trial=display_trial(trial),
        adsl=shown(inputs.adsl),
        adeff=shown(inputs.adeff),
        flow=shown(inputs.flow),
        effects=shown(inputs.effects),
        lsmeans=shown(inputs.lsmeans),
        effect_sizes=shown(inputs.effect_sizes),
        subgroups=shown(inputs.subgroups),
        sensitivity=shown(inputs.sensitivity),
        tipping=shown(inputs.tipping),
        responders=shown(inputs.responders),
        residuals={k: shown(v) for k, v in inputs.residuals.items()},
        adverse_events=display_frame(inputs.adverse_events, trial),
    )


def _sensitivity_context(inputs: ReportInputs) -> dict[str, Any]:
    """What the "Estimand and sensitivity analyses" section shows."""
    from trialflow import sensitivity_report as sr

    trial = inputs.trial
    run = not inputs.sensitivity.empty
    return {
        "estimand_table": sr.estimand_table(trial),
        "sensitivity_run": run,
        "sensitivity_table": sr.sensitivity_table(trial, inputs.effects, inputs.sensitivity)
        if run
        else None,
        "sensitivity_sentences": sr.sensitivity_sentences(
            trial, inputs.effects, inputs.sensitivity, inputs.tipping
        )
        if run
        else [],
        "sensitivity_methods": sr.sensitivity_methods(trial, inputs.sensitivity_summary),
        "responder_table": sr.responder_table(trial, inputs.responders),
    }


def _optional_csv(path: Path) -> pd.DataFrame:
    from trialflow.io import read_result_csv

    if not path.is_file():
        return pd.DataFrame()
    return read_result_csv(path, dtype={"note": str, "visit": str, "responder": str})


def load_report_inputs(
    *,
    trial: TrialConfig,
    analysis_dir: Path,
    tables_dir: Path,
    models_dir: Path,
    figures_dir: Path,
    input_files: Sequence[Path],
) -> ReportInputs:
    """Read everything the report needs from a trial's result folders."""
    import json

    from trialflow.derive import read_analysis_datasets
    from trialflow.io import read_result_csv

    meta = analysis_dir / "covariates.json"
    adsl, adeff = read_analysis_datasets(
        adsl=str(analysis_dir / "adsl.csv"), adeff=str(analysis_dir / "adeff.csv"), meta=str(meta)
    )
    return ReportInputs(
        trial=trial,
        adsl=adsl,
        adeff=adeff,
        flow=read_result_csv(analysis_dir / "flow.csv", dtype={"visit": str}).fillna({"visit": ""}),
        queries=pd.read_csv(analysis_dir / "queries.csv", dtype=str, keep_default_na=False),
        effects=read_result_csv(tables_dir / "effects.csv", dtype={"note": str}),
        lsmeans=read_result_csv(tables_dir / "lsmeans.csv"),
        anova=read_result_csv(tables_dir / "anova.csv"),
        effect_sizes=read_result_csv(tables_dir / "effect_sizes.csv"),
        type3=read_result_csv(tables_dir / "type3.csv"),
        subgroups=read_result_csv(
            tables_dir / "subgroups.csv", dtype={"level": str, "note": str, "subgroup": str}
        ),
        models={
            p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(models_dir.glob("*.json"))
        },
        covariate_types=json.loads(meta.read_text(encoding="utf-8"))["covariate_types"],
        figures={p.stem: p for p in sorted(figures_dir.glob("*.png"))},
        input_files=list(input_files),
        residuals={
            p.name.removesuffix(".residuals.csv"): read_result_csv(p, dtype={"subject_id": str})
            for p in sorted(models_dir.glob("*.residuals.csv"))
        },
        sensitivity=_optional_csv(tables_dir / "sensitivity.csv"),
        tipping=_optional_csv(tables_dir / "tipping_point.csv"),
        responders=_optional_csv(tables_dir / "responders.csv"),
        adverse_events=read_result_csv(
            analysis_dir / "adverse_events.csv",
            dtype={"subject_id": str, "arm": str, "term": str, "severity": str},
        ).astype({"serious": "boolean", "related": "boolean"})
        if trial.adverse_events_path and (analysis_dir / "adverse_events.csv").is_file()
        else None,
        sensitivity_summary=json.loads(summary.read_text(encoding="utf-8"))
        if (summary := tables_dir.parent / "sensitivity" / "summary.json").is_file()
        else {},
    )


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>trialflow results</title><style>{{ css }}</style></head>
<body><main>
<h1>trialflow results</h1>
<p class="lead">{{ trials|length }} trial{{ "s" if trials|length != 1 }} analysed.</p>
<table class="data"><thead><tr><th>trial</th><th>title</th><th>randomized</th>
<th>primary outcome (MMRM at primary visit)</th><th>report</th></tr></thead><tbody>
{% for t in trials %}<tr><td><code>{{ t.name }}</code></td><td>{{ t.title }}</td>
<td class="num">{{ t.randomized }}</td><td>{% for s in t.primary %}<p>{{ s }}</p>{% endfor %}</td>
<td><a href="{{ t.link }}">report</a></td></tr>
{% endfor %}</tbody></table>
<h2>Outcomes shared by several trials</h2>
{% if shared %}{% for item in shared %}
<h3>{{ item.label }} ({{ item.unit }})</h3>{{ figure(item.stem, item.caption) }}
{% endfor %}{% else %}<p>No outcome is shared by two or more trials.</p>{% endif %}
<p class="stamp">Generated: {{ generated }}</p>
</main></body></html>
"""


@dataclass
class IndexEntry:
    """One trial on the index page."""

    name: str
    title: str
    randomized: int
    primary: list[str]
    link: str


def shared_outcomes(trials: Sequence[TrialConfig]) -> dict[str, list[TrialConfig]]:
    """Outcome names measured by two or more trials (same name), in first-seen order."""
    seen: dict[str, list[TrialConfig]] = {}
    for t in trials:
        for o in t.outcomes:
            seen.setdefault(o.name, []).append(t)
    return {name: ts for name, ts in seen.items() if len(ts) > 1}


def render_index(
    entries: Sequence[IndexEntry],
    shared: Sequence[Mapping[str, str]],
    figures: Mapping[str, Path],
) -> str:
    """The page linking every trial's report, with the cross-trial figures embedded."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    return env.from_string(INDEX_TEMPLATE).render(
        css=Markup(CSS.replace("display: flex;", "")),
        csp=CSP,
        trials=entries,
        shared=shared,
        figure=_figure_macro(figures),
        generated=generated_stamp(),
    )


def write_index(
    *,
    trials: Mapping[str, TrialConfig],
    effects: Mapping[str, pd.DataFrame],
    lsmeans: Mapping[str, pd.DataFrame],
    randomized: Mapping[str, int],
    reports: Mapping[str, Path],
    index_path: Path,
    figures_dir: Path,
) -> None:
    """Write ``index.html`` and the cross-trial forest plots of shared outcomes.

    An outcome shared under the same name but with different units is listed with a note and
    no plot: scales are never mixed.
    """
    from trialflow import figures as fg
    from trialflow.errors import TrialflowError
    from trialflow.io import write_text

    figures_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, trial in trials.items():
        entries.append(
            IndexEntry(
                name=name,
                title=trial.title,
                randomized=randomized[name],
                primary=[
                    result_sentence(o, trial, effects[name], lsmeans[name])
                    for o in trial.primary_outcomes
                ],
                link=os.path.relpath(reports[name], index_path.parent),
            )
        )
    shared, figures = [], {}
    for outcome, members in shared_outcomes(list(trials.values())).items():
        first = members[0].outcome(outcome)
        stem = f"cross_trial_{outcome}"
        try:
            fig = fg.cross_trial_forest(
                {t.name: effects[t.name] for t in members}, {t.name: t for t in members}, outcome
            )
        except TrialflowError as exc:
            shared.append(
                {"label": first.label, "unit": first.unit, "stem": stem, "caption": exc.message}
            )
            continue
        paths = fg.save_figure(fig, figures_dir / stem)
        figures[stem] = next(p for p in paths if p.suffix == ".png")
        shared.append(
            {
                "label": first.label,
                "unit": first.unit,
                "stem": stem,
                "caption": f"MMRM treatment effect on {first.label} at each trial's primary "
                "visit, with its confidence interval.",
            }
        )
    write_text(render_index(entries, shared, figures), index_path)
