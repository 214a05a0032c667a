"""Publication tables: Table 1, primary and secondary outcome tables, visit completion.

Every number is taken from the analysis datasets and the model tables, formatted with the
outcome's configured decimals; nothing is recomputed from scratch that the models already
estimated. Tables are DataFrames of text, ready to write as CSV or render as HTML.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from trialflow.config import Outcome, TrialConfig

TABLE1_COLUMNS: tuple[str, ...] = ("characteristic", "level", "statistic")


def fmt_number(value: float, decimals: int) -> str:
    """A number with fixed decimals; empty for missing; no negative zero."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt_p(p: float) -> str:
    """p-value as journals print it: '<0.001', else three decimals."""
    if p is None or not math.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(est: float, lo: float, hi: float, decimals: int) -> str:
    """'est (lo to hi)', using 'to' so negative bounds stay readable."""
    if not all(math.isfinite(x) for x in (est, lo, hi)):
        return "not estimable"
    return f"{fmt_number(est, decimals)} ({fmt_number(lo, decimals)} to {fmt_number(hi, decimals)})"


def mmrm_included(
    residuals: pd.DataFrame | None, arm_of: pd.Series, arms: tuple[str, ...]
) -> dict[str, int]:
    """Participants per arm in an MMRM: those with at least one observation in the fit.

    This is the number CONSORT calls "analysed" for a likelihood-based model that uses every
    observed visit. ``residuals`` is the model's residual table (None: not fitted, all 0);
    ``arm_of`` maps subject_id to arm.
    """
    if residuals is None or residuals.empty:
        return dict.fromkeys(arms, 0)
    included = residuals["subject_id"].astype(str).drop_duplicates().map(arm_of)
    return {arm: int((included == arm).sum()) for arm in arms}


def exclusion_reasons(
    adeff: pd.DataFrame,
    outcome: str,
    residuals: pd.DataFrame | None,
    arms: tuple[str, ...],
    baseline_visit: str,
) -> dict[str, list[tuple[str, int]]]:
    """Why randomized participants are not in the primary MMRM, per arm (CONSORT).

    In this order: no baseline value, no post-baseline value; anyone else left out was left
    out for a missing covariate (the model's own exclusion rule).
    """
    rows = adeff.loc[adeff["outcome"] == outcome]
    seen = rows.loc[pd.to_numeric(rows["value"], errors="coerce").notna()]
    base = set(seen.loc[seen["visit"] == baseline_visit, "subject_id"])
    post = set(seen.loc[seen["visit"] != baseline_visit, "subject_id"])
    fitted = set() if residuals is None else set(residuals["subject_id"].astype(str))
    out: dict[str, list[tuple[str, int]]] = {}
    for arm in arms:
        ids = set(rows.loc[rows["arm"] == arm, "subject_id"]) - fitted
        no_base = ids - base
        no_post = (ids - no_base) - post
        other = ids - no_base - no_post
        out[arm] = [
            ("no baseline value", len(no_base)),
            ("no post-baseline value", len(no_post)),
            ("missing covariate value", len(other)),
        ]
    return out


def ci_label(alpha: float = 0.05) -> str:
    """'95% CI' for alpha = 0.05, '90% CI' for 0.10, ..."""
    return f"{100 * (1 - alpha):g}% CI"


def smd_continuous(a: pd.Series, b: pd.Series) -> float:
    """Standardized mean difference (b - a) / sqrt((s_a^2 + s_b^2) / 2), as R tableone."""
    a, b = a.dropna().astype(float), b.dropna().astype(float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return math.nan if pooled == 0 else float((b.mean() - a.mean()) / pooled)


def smd_categorical(a: pd.Series, b: pd.Series) -> float:
    """Multi-level standardized difference of Yang & Dalton (2012), as R tableone.

    ``sqrt((p_b - p_a)' S^-1 (p_b - p_a))`` over the levels but the first, with
    ``S = (S_a + S_b) / 2`` and ``S_x = diag(p_x) - p_x p_x'``. Always >= 0.
    """
    a, b = a.dropna().astype(str), b.dropna().astype(str)
    levels = sorted(set(a) | set(b))
    if len(levels) < 2 or a.empty or b.empty:
        return math.nan
    pa = np.array([(a == lv).mean() for lv in levels])[1:]
    pb = np.array([(b == lv).mean() for lv in levels])[1:]
    s = (np.diag(pa) - np.outer(pa, pa) + np.diag(pb) - np.outer(pb, pb)) / 2
    diff = pb - pa
    try:
        value = float(diff @ np.linalg.solve(s, diff))
    except np.linalg.LinAlgError:
        value = float(diff @ np.linalg.pinv(s) @ diff)
    return math.sqrt(max(value, 0.0))


SKEWED = 1.0  # |sample skewness| above which Table 1 shows median [IQR] instead of mean (SD)


def is_skewed(x: pd.Series) -> bool:
    """Whether a continuous characteristic is better summarised by median [IQR]."""
    x = x.dropna().astype(float)
    return len(x) >= 10 and abs(float(np.asarray(x.skew()))) > SKEWED


def _continuous_cell(x: pd.Series, decimals: int, *, median: bool = False) -> str:
    x = x.dropna().astype(float)
    if x.empty:
        return "-"
    if median:
        q1, q2, q3 = (float(v) for v in x.quantile([0.25, 0.5, 0.75]))
        return (
            f"{fmt_number(q2, decimals)} [{fmt_number(q1, decimals)}, {fmt_number(q3, decimals)}]"
        )
    sd = x.std(ddof=1) if len(x) > 1 else math.nan
    return f"{fmt_number(x.mean(), decimals)} ({fmt_number(sd, decimals) or '-'})"


def table1(
    adsl: pd.DataFrame,
    adeff: pd.DataFrame,
    trial: TrialConfig,
    covariate_types: Mapping[str, str],
) -> pd.DataFrame:
    """Baseline characteristics by arm and overall (CONSORT item 15), without p-values.

    Returns
    -------
    DataFrame
        Columns ``characteristic, level, statistic``, one per arm (labelled ``<arm> (n = N)``),
        ``Overall (n = N)`` and ``SMD``. Continuous rows are mean (SD), or median [IQR] when
        the characteristic is skewed (|skewness| > 1 over at least 10 values); categorical rows
        n (%) of the non-missing; a ``missing`` row appears when any value is missing. The
        baseline value of every outcome is included. The SMD compares treatment with control.
    """
    arms = list(trial.arms)
    groups = {arm: adsl.loc[adsl["arm"] == arm] for arm in arms}
    headers = {arm: f"{arm} (n = {len(groups[arm])})" for arm in arms}
    overall = f"Overall (n = {len(adsl)})"
    rows: list[dict[str, str]] = []

    def add_continuous(name: str, values: dict[str, pd.Series], all_values: pd.Series,
                       decimals: int) -> None:  # fmt: skip
        median = is_skewed(all_values)
        statistic = "median [IQR]" if median else "mean (SD)"
        row = {"characteristic": name, "level": "", "statistic": statistic}
        for arm in arms:
            row[headers[arm]] = _continuous_cell(values[arm], decimals, median=median)
        row[overall] = _continuous_cell(all_values, decimals, median=median)
        row["SMD"] = fmt_number(smd_continuous(values[arms[0]], values[arms[1]]), 2)
        rows.append(row)
        add_missing(name, values, all_values)

    def add_missing(name: str, values: dict[str, pd.Series], all_values: pd.Series) -> None:
        if all_values.isna().any():
            row = {"characteristic": name, "level": "missing", "statistic": "n"}
            for arm in arms:
                row[headers[arm]] = str(int(values[arm].isna().sum()))
            row[overall] = str(int(all_values.isna().sum()))
            row["SMD"] = ""
            rows.append(row)

    for cov in trial.covariates:
        name = cov.name
        values = {arm: groups[arm][name] for arm in arms}
        if covariate_types.get(name) == "numeric":
            add_continuous(name, values, adsl[name], 1)
            continue
        levels = sorted(adsl[name].dropna().astype(str).unique())
        smd = fmt_number(smd_categorical(values[arms[0]], values[arms[1]]), 2)
        for i, level in enumerate(levels):
            row = {"characteristic": name, "level": level, "statistic": "n (%)"}
            for arm, col in [*((a, headers[a]) for a in arms), (None, overall)]:
                x = (adsl if arm is None else groups[arm])[name].dropna().astype(str)
                k = int((x == level).sum())
                row[col] = f"{k} ({fmt_number(100 * k / len(x), 1)})" if len(x) else "-"
            row["SMD"] = smd if i == 0 else ""
            rows.append(row)
        add_missing(name, values, adsl[name])

    base = adeff.loc[adeff["ablfl"] == "Y"]
    for outcome in trial.outcomes:
        b = base.loc[base["outcome"] == outcome.name].set_index("subject_id")["value"]
        values = {arm: groups[arm]["subject_id"].map(b) for arm in arms}
        add_continuous(
            f"{outcome.label} at baseline ({outcome.unit})",
            values,
            adsl["subject_id"].map(b),
            outcome.decimals,
        )
    columns = [*TABLE1_COLUMNS, *headers.values(), overall, "SMD"]
    return pd.DataFrame(rows, columns=columns)


def outcome_table(
    effects: pd.DataFrame,
    lsmeans: pd.DataFrame,
    adeff: pd.DataFrame,
    trial: TrialConfig,
    outcomes: tuple[Outcome, ...],
    *,
    analysis: str = "mmrm",
    alpha: float = 0.05,
    response: str = "change",
) -> pd.DataFrame:
    """Outcome table at the primary visit: per arm n, baseline mean (SD), LS-mean change
    (CI) (the LS mean itself when the MMRM's ``response`` is the value); the difference (CI), p
    and the adjusted p.

    ``n`` and the baseline mean (SD) are of the same participants: those with a change from
    baseline observed at the primary visit. The LS means and the difference are model-based
    and use every participant in the model (all observed visits).

    Returns
    -------
    DataFrame
        One row per outcome, text cells formatted with the outcome's decimals.
    """
    visit = trial.primary_visit
    ci = ci_label(alpha)
    rows = []
    for o in outcomes:
        d = o.decimals
        e = effects.loc[
            (effects["outcome"] == o.name)
            & (effects["analysis"] == analysis)
            & (effects["visit"] == visit)
        ]
        row: dict[str, str] = {"outcome": f"{o.label} ({o.unit})", "better": o.better}
        at_visit = adeff.loc[(adeff["outcome"] == o.name) & (adeff["visit"] == visit)]
        base = adeff.loc[(adeff["outcome"] == o.name) & (adeff["ablfl"] == "Y")]
        for arm in trial.arms:
            ls = lsmeans.loc[
                (lsmeans["outcome"] == o.name)
                & (lsmeans["analysis"] == analysis)
                & (lsmeans["visit"] == visit)
                & (lsmeans["arm"] == arm)
            ]
            observed = at_visit.loc[(at_visit["arm"] == arm) & at_visit["change"].notna()]
            row[f"{arm}: n"] = str(len(observed))
            row[f"{arm}: baseline mean (SD)"] = _continuous_cell(
                base.loc[base["subject_id"].isin(set(observed["subject_id"])), "value"], d
            )
            if len(ls):
                first = ls.iloc[0]
                change = fmt_ci(first["estimate"], first["ci_lower"], first["ci_upper"], d)
            else:
                change = "not estimable"
            row[f"{arm}: {'change' if response == 'change' else 'LS mean'} ({ci})"] = change
        if len(e):
            r = e.iloc[0]
            row[f"difference ({ci})"] = fmt_ci(r["estimate"], r["ci_lower"], r["ci_upper"], d)
            row["p"] = fmt_p(r["p_value"])
            adjusted = str(r.get("multiplicity", "")).startswith("Holm")
            row["p (Holm)"] = fmt_p(r["p_adjusted"]) if adjusted else ""
        else:
            row[f"difference ({ci})"] = "not estimable"
            row["p"] = row["p (Holm)"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def visit_completion(flow: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    """Subjects attending each visit by arm: n (% of randomized)."""
    f = flow.fillna({"visit": ""})
    randomized = f.loc[f["stage"] == "randomized"].set_index("arm")["n"]
    rows = []
    for v in trial.visits:
        row = {"visit": v.label, "week": fmt_number(v.week, 0)}
        for arm in [*trial.arms, "total"]:
            n = int(
                f.loc[
                    (f["stage"] == "attended") & (f["visit"] == v.label) & (f["arm"] == arm), "n"
                ].sum()
            )
            total = int(randomized.get(arm, 0))
            pct = fmt_number(100 * n / total, 1) if total else "-"
            row[f"{arm} (n = {total})"] = f"{n} ({pct})"
        rows.append(row)
    return pd.DataFrame(rows)
