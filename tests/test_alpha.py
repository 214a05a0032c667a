"""The trial's ``alpha`` sets every confidence interval and every label of its level.

config/README.md: ``analysis.alpha`` is the "two-sided level of the confidence intervals
(default 0.05, i.e. 95% CI)". The bundled weight-bearing trial is analysed with alpha = 0.10:
every interval of every table must be estimate +- q * SE with q the 0.95 quantile of the
distribution its method uses (t on the row's df; the normal where the method is normal-based:
df infinite, Hedges' g, the non-responder imputation's Wald intervals), and the report must
call every interval a 90% CI. The mixed ANOVA has no interval (F tests only).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import optimize, stats

from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.consort import checklist
from trialflow.derive import derive
from trialflow.report import display_inputs, render_report, result_sentence
from trialflow.sensitivity import analyse_sensitivity
from trialflow.tables import fmt_ci, fmt_number

from .conftest import ROOT
from .counting import report_inputs

ALPHA = 0.10


def _at(trial: TrialConfig, alpha: float) -> TrialConfig:
    # Few imputations and tipping deltas: the intervals' construction does not depend on them.
    return dataclasses.replace(
        trial,
        analysis={**trial.analysis, "alpha": alpha},
        sensitivity={**trial.sensitivity, "imputations": 20, "tipping_point": {"points": 3}},
    )


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    bundled = load_trial(ROOT / "config" / "trials" / "weightbearing.yaml")
    trial = _at(bundled, ALPHA)
    clean = read_and_clean(trial, root=ROOT)
    d = derive(clean, trial)
    result = analyse_trial(d.adeff, d.adsl, trial)
    sens = analyse_sensitivity(d.adeff, d.adsl, trial)
    # The responders' pooled df is not in the table: the same imputations at alpha = 0.05
    # give it (the seed and each outcome's stream do not depend on alpha or other outcomes).
    rules = trial.sensitivity["responders"]
    responding = dataclasses.replace(
        _at(bundled, 0.05), outcomes=tuple(o for o in trial.outcomes if o.name in rules)
    )
    at_05 = analyse_sensitivity(d.adeff, d.adsl, responding).responders
    inputs = report_inputs(
        trial, clean, d, result, sensitivity=sens.table, tipping=sens.tipping,
        responders=sens.responders, sensitivity_summary=sens.records,
    )  # fmt: skip
    return {"trial": trial, "result": result, "sens": sens, "responders_05": at_05,
            "inputs": inputs, "html": render_report(display_inputs(inputs), root=ROOT)}  # fmt: skip


def _quantile(df: pd.Series) -> np.ndarray:
    """The 1 - alpha/2 quantile of t on df, of the normal where df is infinite."""
    df = df.to_numpy(dtype=float)
    t = stats.t.ppf(1 - ALPHA / 2, np.where(np.isfinite(df), df, 1.0))
    return np.where(np.isfinite(df), t, stats.norm.ppf(1 - ALPHA / 2))


def _assert_half_widths(frame: pd.DataFrame, q: np.ndarray | None = None, est: str = "estimate"):
    assert len(frame) > 0 and frame[est].notna().all()
    q = _quantile(frame["df"]) if q is None else q
    half = q * frame["std_error"].to_numpy(dtype=float)
    assert_allclose(frame[est] - frame["ci_lower"], half, rtol=1e-10)
    assert_allclose(frame["ci_upper"] - frame[est], half, rtol=1e-10)


def test_model_intervals_follow_alpha(run) -> None:
    """config/README.md analysis.alpha: effects.csv (MMRM, LMM, ANCOVA), lsmeans.csv and
    subgroups.csv intervals are estimate +- t_{1 - alpha/2, df} * SE."""
    result, trial = run["result"], run["trial"]
    effects = result.effects
    assert set(effects["analysis"]) == {"mmrm", "lmm", "ancova"}
    assert np.isfinite(effects["df"]).all()
    for analysis in ("mmrm", "lmm", "ancova"):
        _assert_half_widths(effects.loc[effects["analysis"] == analysis])
        _assert_half_widths(result.lsmeans.loc[result.lsmeans["analysis"] == analysis])
    _assert_half_widths(result.subgroups)
    for record in result.models.values():
        assert record["mmrm"]["info"]["alpha"] == ALPHA
    assert len(effects) == 3 * len(trial.outcomes) * len(trial.post_baseline_visits)


def test_effect_size_intervals_follow_alpha(run) -> None:
    """README: Hedges' g with a CI from the large-sample variance (normal): g +- z * SE, at the
    trial's level."""
    g = run["result"].effect_sizes
    _assert_half_widths(g, q=np.full(len(g), stats.norm.ppf(1 - ALPHA / 2)), est="g")


def test_sensitivity_intervals_follow_alpha(run) -> None:
    """README, sensitivity analyses: multiple imputation t intervals on Barnard-Rubin df,
    conditional mean normal intervals, completers and per protocol the refitted models'; the
    tipping-point rows likewise; all at the trial's level."""
    table, tipping = run["sens"].table, run["sens"].tipping
    methods = set(zip(table["strategy"], table["method"], strict=True))
    assert {("mar", "multiple_imputation"), ("mar", "conditional_mean"), ("completers", "mmrm"),
            ("completers", "ancova"), ("per_protocol", "mmrm")} <= methods  # fmt: skip
    mi = table["method"] == "multiple_imputation"
    cm = table["method"] == "conditional_mean"
    assert np.isfinite(table.loc[mi, "df"]).all() and np.isinf(table.loc[cm, "df"]).all()
    _assert_half_widths(table)
    assert set(tipping["method"]) == {"multiple_imputation", "conditional_mean"}
    _assert_half_widths(tipping)


def _t_ratio(df: float) -> float:
    return float(stats.t.ppf(1 - ALPHA / 2, df) / stats.t.ppf(0.975, df))


def test_responder_intervals_follow_alpha(run) -> None:
    """README, responders: risk difference with a Wald CI and the baseline-adjusted odds ratio
    with a Wald CI, at the trial's level; by multiple imputation on Rubin's rules (t on the
    pooled df). NNT's interval is Altman's: the reciprocal of the risk difference's."""
    resp, at_05 = run["sens"].responders, run["responders_05"]
    z = stats.norm.ppf(1 - ALPHA / 2)
    nri = resp.loc[resp["method"] == "nonresponder_imputation"]
    assert len(nri) == 2
    p_t, p_c = nri["prop_treatment"], nri["prop_control"]
    se_rd = np.sqrt(p_t * (1 - p_t) / nri["n_treatment"] + p_c * (1 - p_c) / nri["n_control"])
    assert_allclose(nri["rd_ci_upper"] - nri["risk_difference"], z * se_rd, rtol=1e-10)
    assert_allclose(nri["risk_difference"] - nri["rd_ci_lower"], z * se_rd, rtol=1e-10)
    log_or = np.log(nri["odds_ratio"])
    se_or = np.abs(log_or) / stats.norm.isf(nri["or_p_value"] / 2)  # the Wald test's SE
    assert_allclose(np.log(nri["or_ci_upper"]) - log_or, z * se_or, rtol=1e-8)
    assert_allclose(log_or - np.log(nri["or_ci_lower"]), z * se_or, rtol=1e-8)
    assert_allclose(1 / resp["rd_ci_upper"], resp["nnt_ci_lower"], rtol=1e-12)
    # Multiple imputation: the same pooled estimate, SE and df at both levels, so the ratio of
    # the half-widths is t_{0.95, df} / t_{0.975, df}, which gives df; the odds ratio's
    # p-value must then be the t test on that df and SE.
    mi = resp.loc[resp["method"] == "multiple_imputation"].reset_index(drop=True)
    mi_05 = at_05.loc[at_05["method"] == "multiple_imputation"].reset_index(drop=True)
    assert len(mi) == len(mi_05) == 2
    assert_allclose(mi["risk_difference"], mi_05["risk_difference"], rtol=1e-12)
    lowest, highest = _t_ratio(1.0), float(z / stats.norm.ppf(0.975))
    for lo, hi, scale in (("rd_ci_lower", "rd_ci_upper", None), ("or_ci_lower", "or_ci_upper", 1)):
        f = np.log if scale else np.asarray
        width, width_05 = f(mi[hi]) - f(mi[lo]), f(mi_05[hi]) - f(mi_05[lo])
        for i, ratio in enumerate(width / width_05):
            assert lowest < ratio < highest - 1e-9, (lo, ratio)  # t, not normal, not alpha 0.05
            if not scale:
                continue
            df = optimize.brentq(lambda d, r=ratio: _t_ratio(d) - r, 1.0, 1e9, xtol=1e-12)
            se = width_05[i] / 2 / stats.t.ppf(0.975, df)
            p = 2 * stats.t.sf(abs(np.log(mi.loc[i, "odds_ratio"])) / se, df)
            assert p == pytest.approx(mi.loc[i, "or_p_value"], rel=1e-5)


def test_report_labels_every_interval_with_the_trials_level(run) -> None:
    """config/README.md analysis.alpha (alpha 0.10 is a 90% CI): the report never says 95%,
    and its sentences, tables, notes and methods text say 90% with the 90% bounds."""
    html, trial, inputs = run["html"], run["trial"], run["inputs"]
    assert not re.search(r"95\s*%", html)
    for words in ("difference (90% CI)", "change (90% CI)", "Hedges&#x27; g (90% CI)",
                  "risk difference (90% CI)", "odds ratio (90% CI)", "Change (90% CI) is the",
                  "with 90% confidence intervals", "its 90% confidence interval",
                  "difference, 90% CI, p"):  # fmt: skip
        assert words in html, words
    effects = inputs.effects
    for o in trial.outcomes:
        row = effects.loc[
            (effects["outcome"] == o.name)
            & (effects["analysis"] == "mmrm")
            & (effects["visit"] == trial.primary_visit)
        ].iloc[0]
        d = o.decimals
        bounds = f"90% CI {fmt_number(row['ci_lower'], d)} to {fmt_number(row['ci_upper'], d)};"
        assert bounds in result_sentence(o, trial, effects, inputs.lsmeans), o.name
        assert bounds in html
        assert fmt_ci(row["estimate"], row["ci_lower"], row["ci_upper"], d) in html
    where = checklist(trial).set_index("item")["where in this report"]
    assert where["Outcomes and estimation: effect sizes with precision"].endswith(
        "(difference, 90% CI, p)"
    )
