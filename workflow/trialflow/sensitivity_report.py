"""The report's "Estimand and sensitivity analyses" section: tables, methods text, sentences.

Everything is written from the result tables (``sensitivity.csv``, ``tipping_point.csv``,
``responders.csv``, ``effects.csv``) and the trial description, never retyped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from trialflow.config import Outcome, TrialConfig
from trialflow.estimand import estimand, estimator_lines
from trialflow.sensitivity_plan import METHOD_WORDS, STRATEGY_WORDS, Settings
from trialflow.tables import ci_label, fmt_ci, fmt_number, fmt_p

__all__ = [
    "estimand_table",
    "responder_table",
    "sensitivity_methods",
    "sensitivity_sentences",
    "sensitivity_table",
]


def estimand_table(trial: TrialConfig) -> pd.DataFrame:
    """The primary estimand's attributes, one row each."""
    return pd.DataFrame(estimand(trial).rows(), columns=["attribute", "description"])


def _at_primary(frame: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.loc[frame["visit"] == trial.primary_visit]


def sensitivity_table(
    trial: TrialConfig, effects: pd.DataFrame, sensitivity: pd.DataFrame
) -> pd.DataFrame:
    """Every analysis at the primary visit, outcome by outcome, primary MMRM first."""
    ci = ci_label(trial.options["alpha"])
    rows = []
    primary = _at_primary(effects.loc[effects["analysis"] == "mmrm"], trial)
    sens = _at_primary(sensitivity, trial)
    for o in trial.outcomes:
        first = primary.loc[primary["outcome"] == o.name]
        records = [("primary", "mmrm", r) for r in first.to_dict("records")]
        records += [
            (r["strategy"], r["method"], r)
            for r in sens.loc[sens["outcome"] == o.name].to_dict("records")
        ]
        for strategy, method, r in records:
            rows.append(
                {
                    "outcome": o.label,
                    "assumption": "primary (MAR)"
                    if strategy == "primary"
                    else STRATEGY_WORDS.get(str(strategy), str(strategy)),
                    "method": METHOD_WORDS.get(str(method), str(method)),
                    f"difference ({ci})": fmt_ci(
                        r["estimate"], r["ci_lower"], r["ci_upper"], o.decimals
                    ),
                    "p": fmt_p(r["p_value"]),
                    "n": "" if pd.isna(r["n"]) else str(int(r["n"])),
                    "note": _short_note(r),
                }
            )
    return pd.DataFrame(rows)


def _short_note(row: Mapping[Any, Any]) -> str:
    note = row.get("note")
    if note is None or (isinstance(note, float) and math.isnan(note)):
        return ""
    return str(note) if str(note).startswith("not run") else ""


def _effect_words(r: Mapping[Any, Any], o: Outcome, ci: str) -> str:
    est = float(r["estimate"])
    unit = "percentage points" if o.unit == "%" else o.unit
    return (
        f"{fmt_number(est, o.decimals)} {unit} ({ci} {fmt_number(float(r['ci_lower']), o.decimals)}"
        f" to {fmt_number(float(r['ci_upper']), o.decimals)}; p = {fmt_p(float(r['p_value']))})"
    ).replace("p = <", "p < ")


def _significant(r: Mapping[Any, Any], alpha: float) -> bool:
    return bool(float(r["p_value"]) < alpha)


def _outcome_sentence(
    o: Outcome, trial: TrialConfig, primary: Mapping[Any, Any], rows: pd.DataFrame
) -> str:
    alpha = trial.options["alpha"]
    ci = ci_label(alpha)
    shown = rows.loc[
        rows["estimate"].notna() & ~rows["strategy"].isin(["completers", "per_protocol"])
    ]
    if shown.empty:
        return f"No sensitivity analysis of {o.label} could be run (see the table for why)."
    parts = [
        f"{STRATEGY_WORDS[str(r['strategy'])]} by {METHOD_WORDS[str(r['method'])]}: "
        f"{_effect_words(r, o, ci)}"
        for r in shown.to_dict("records")
    ]
    base = _significant(primary, alpha)
    agree = [_significant(r, alpha) == base for r in shown.to_dict("records")]
    verdict = (
        f"the {'statistically significant' if base else 'non-significant'} primary result holds "
        "under every assumption"
        if all(agree)
        else f"the conclusion changes under {len(agree) - sum(agree)} of {len(agree)} analyses"
    )
    return (
        f"At {trial.primary_visit}, the difference in {o.label} ({trial.treatment} minus "
        f"{trial.control}) was {_effect_words(primary, o, ci)} in the primary MMRM; "
        + "; ".join(parts)
        + f". {verdict[0].upper()}{verdict[1:]}."
    )


def _tipping_sentence(o: Outcome, trial: TrialConfig, tipping: pd.DataFrame) -> str:
    rows = tipping.loc[tipping["outcome"] == o.name].drop_duplicates("method")
    if rows.empty:
        return ""
    found, missing = [], []
    unit = "percentage points" if o.unit == "%" else o.unit
    for r in rows.to_dict("records"):
        tip = float(r["tipping_delta"])
        method = METHOD_WORDS[str(r["method"])]
        if math.isfinite(tip) and tip > 0:
            found.append(f"{fmt_number(tip, max(o.decimals, 1) + 1)} {unit} ({method})")
        else:
            missing.append(f"{method}: {r['note']}")
    way = "higher" if o.better == "lower" else "lower"
    text = f"Tipping point for {o.label}: "
    if found:
        text += (
            f"when every {trial.treatment}-arm value imputed after dropout is made worse "
            f"({way}) by delta, significance at {trial.primary_visit} is lost at delta = "
            + "; ".join(found)
        )
    if missing:
        text += ("; " if found else "") + "no tipping point (" + "; ".join(missing) + ")"
    return text + "."


def sensitivity_sentences(
    trial: TrialConfig, effects: pd.DataFrame, sensitivity: pd.DataFrame, tipping: pd.DataFrame
) -> list[str]:
    """Result sentences per outcome: every assumption against the primary, and the tipping point."""
    out = []
    primary = _at_primary(effects.loc[effects["analysis"] == "mmrm"], trial)
    sens = _at_primary(sensitivity, trial)
    for o in trial.outcomes:
        first = primary.loc[primary["outcome"] == o.name]
        if first.empty or not math.isfinite(float(first["estimate"].iloc[0])):
            continue
        row = first.iloc[0].to_dict()
        out.append(_outcome_sentence(o, trial, row, sens.loc[sens["outcome"] == o.name]))
        tip = _tipping_sentence(o, trial, tipping)
        if tip:
            out.append(tip)
    return out


def sensitivity_methods(trial: TrialConfig, summary: Mapping[Any, Any]) -> list[str]:
    """Methods paragraphs of the sensitivity analyses."""
    s = Settings.of(trial)
    main, lines = estimator_lines(trial)
    strategies = ", ".join(STRATEGY_WORDS[x] for x in s.strategies)
    dropouts = "; ".join(
        f"{o.label}: {rec['dropouts']['treatment']} ({trial.treatment}) and "
        f"{rec['dropouts']['control']} ({trial.control})"
        for o in trial.outcomes
        if (rec := summary.get(o.name)) and "dropouts" in rec
    )
    text = [
        main,
        "Sensitivity analyses relax the missing-at-random assumption for participants who "
        "dropped out (a missing value at the last visit; missed visits followed by an observed "
        f"one are always imputed under MAR). Strategies: {strategies}. The imputation model is "
        "the primary MMRM (same mean model and covariance); the reference arm is "
        f"{trial.control}. Each completed dataset is analysed by ANCOVA of the change from "
        "baseline at each visit on arm, baseline and covariates.",
    ]
    if "multiple_imputation" in s.methods:
        text.append(
            f"Multiple imputation: {s.imputations} imputations; the MMRM's parameters are drawn "
            "by refitting it to a bootstrap sample of participants stratified by arm "
            "(approximate Bayesian), missing values are drawn from their conditional normal "
            "distribution given the participant's observed values, and the estimates are "
            f"pooled by Rubin's rules with Barnard-Rubin degrees of freedom (seed {s.seed})."
        )
    if "conditional_mean" in s.methods:
        text.append(
            "Conditional mean imputation: each missing value is replaced by its conditional "
            "mean under the MMRM's estimates; standard errors are jackknife (leave one "
            "participant out, refitting the MMRM) and intervals normal-based (Wolbers et al. "
            "2022)."
        )
    text.append(" ".join(lines))
    if dropouts:
        text.append(f"Participants with a missing value at the last visit: {dropouts}.")
    return text


METHODS = {
    "nonresponder_imputation": "dropouts = non-responders",
    "multiple_imputation": "multiple imputation (MAR)",
}


def responder_table(trial: TrialConfig, responders: pd.DataFrame) -> pd.DataFrame:
    """Responder analyses at the primary visit, formatted."""
    if responders.empty:
        return pd.DataFrame()
    labels = {o.name: o for o in trial.outcomes}
    ci = ci_label(trial.options["alpha"])
    rows = []
    for r in responders.to_dict("records"):
        o = labels[str(r["outcome"])]
        done = isinstance(r.get("risk_difference"), float) and math.isfinite(r["risk_difference"])
        method = METHODS.get(str(r["method"]), "")
        rows.append(
            {
                "outcome": o.label,
                "responder": r["responder"],
                "method": method,
                f"{trial.treatment}": _share(r["responders_treatment"], r["n_treatment"]),
                f"{trial.control}": _share(r["responders_control"], r["n_control"]),
                f"risk difference ({ci})": fmt_ci(
                    r["risk_difference"], r["rd_ci_lower"], r["rd_ci_upper"], 3
                ) if done else "",
                f"odds ratio ({ci})": fmt_ci(r["odds_ratio"], r["or_ci_lower"], r["or_ci_upper"], 2)
                if done and math.isfinite(r["odds_ratio"]) else "",
                "NNT": str(r["nnt_interval"]) if done else str(r.get("note") or ""),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _share(count: Any, n: Any) -> str:
    try:
        c, total = float(count), int(n)
    except (TypeError, ValueError):
        return ""
    shown = f"{c:.0f}" if c == int(c) else f"{c:.1f}"
    return f"{shown}/{total} ({100 * c / total:.0f}%)"
