"""Missing-data sensitivity analyses of every outcome: the tables of the output contract.

For each outcome the primary MMRM is fitted once (the trial's mean model and covariance) and
shared by every strategy and method (see :mod:`trialflow.stats.imputation` and
:mod:`trialflow.stats.refbased`). This module turns them into ``sensitivity.csv`` (one row per
outcome x strategy x method x visit, plus completers and per-protocol refits of the MMRM and
ANCOVA), ``tipping_point.csv`` (delta-adjusted estimates at the primary visit and the tipping
delta) and ``responders.csv``. An analysis that cannot run for an outcome becomes rows with
the reason in ``note``; the others still run.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from trialflow.analysis import (
    MODELS,
    OutcomePlan,
    coded_labels,
    mean_spec,
    outcome_data,
    outcome_plan,
)
from trialflow.config import Outcome, TrialConfig
from trialflow.errors import ModelError
from trialflow.parallel import chunks, fork_map, split_workers
from trialflow.sensitivity_plan import (
    RESPONDER_COLUMNS,
    SENSITIVITY_COLUMNS,
    TIPPING_COLUMNS,
    Settings,
)
from trialflow.stats.imputation import ImputationSet, Refitter, imputation_set
from trialflow.stats.mmrm import CovarianceChoice, PreparedMmrm, fit_prepared, prepare_mmrm
from trialflow.stats.pooling import rubin
from trialflow.stats.refbased import (
    Jackknife,
    MultipleImputation,
    VisitChanges,
    conditional_mean,
    multiple_imputation,
    normal_interval,
)
from trialflow.stats.responders import Covariates, logistic_many, nnt, responder, risk_difference

logger = logging.getLogger(__name__)


@dataclass
class SensitivityAnalysis:
    """The three tables and a record per outcome (strategies, dropouts, tipping deltas)."""

    table: pd.DataFrame
    tipping: pd.DataFrame
    responders: pd.DataFrame
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Primary:
    """One outcome's primary MMRM and imputation set, fitted once and shared."""

    ready: PreparedMmrm
    choice: CovarianceChoice
    data: ImputationSet
    refitter: Refitter
    harm: float  # +1 when higher values are worse, -1 when lower values are worse
    primary: int  # position of the primary visit among the modelled visits


def outcome_key(name: str) -> int:
    """A stable number per outcome name: its random streams do not depend on outcome order."""
    return zlib.crc32(name.encode("utf-8"))


def _fit_primary(plan: OutcomePlan, outcome: Outcome) -> _Primary:
    opts, trial = plan.options, plan.trial
    ready = prepare_mmrm(
        plan.post,
        response=plan.spec.response,
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline=plan.baseline,
        covariates=plan.covariates,
        reference_arm=trial.control,
        visit_order=plan.post_visits,
        week="week",
        spec=plan.spec,
    )
    choice, _ = fit_prepared(ready, opts["covariance"], opts["fallback"], opts["df"])
    data = imputation_set(ready)
    if trial.primary_visit not in data.visits:
        raise ModelError(f"no response was observed at the primary visit {trial.primary_visit}")
    return _Primary(
        ready=ready,
        choice=choice,
        data=data,
        refitter=Refitter(ready.problem, choice.fit),
        harm=1.0 if outcome.better == "lower" else -1.0,
        primary=data.visits.index(trial.primary_visit),
    )


def _common_notes(fitted: _Primary) -> list[str]:
    data, choice = fitted.data, fitted.choice
    notes = []
    if choice.fallback_reason:
        notes.append(f"imputation model covariance {choice.fit.structure.code}")
    if not data.dropped.any():
        notes.append("no subject dropped out: every strategy equals MAR")
    return notes


def _rows(
    outcome: str,
    strategy: str,
    method: str,
    visits: Sequence[str],
    values: Mapping[str, Any],
    note: str,
) -> pd.DataFrame:
    frame = pd.DataFrame({"visit": list(visits), **values})
    frame.insert(0, "method", method)
    frame.insert(0, "strategy", strategy)
    frame.insert(0, "outcome", outcome)
    frame["note"] = note
    return frame


def _jackknife_rows(
    outcome: str, fitted: _Primary, jk: Jackknife, settings: Settings, notes: list[str]
) -> list[pd.DataFrame]:
    out = []
    extra = ["jackknife standard error; normal-based interval"]
    if jk.dropped_column_fits:
        extra.append(
            f"{jk.dropped_column_fits} leave-one-out refit(s) without post-baseline data for a "
            "covariate level: that coefficient was dropped (0) in those refits"
        )
    for strategy in settings.strategies:
        est, se = jk.summary(strategy)
        lo, hi, p = normal_interval(est, se, settings.alpha)
        values = {
            "estimate": est, "std_error": se, "df": np.inf, "ci_lower": lo, "ci_upper": hi,
            "p_value": p, "n": jk.n,
        }  # fmt: skip
        note = "; ".join([*notes, *extra])
        out.append(_rows(outcome, strategy, "conditional_mean", jk.visits, values, note))
    return out


def _mi_rows(
    outcome: str, mi: MultipleImputation, n: int, settings: Settings, notes: list[str]
) -> list[pd.DataFrame]:
    out = []
    extra = [f"Rubin's rules, Barnard-Rubin df (complete-data df {mi.df_complete:g})"]
    if mi.failures:
        extra.append(f"{mi.failures} bootstrap sample(s) without a converged MMRM were redrawn")
    for strategy in settings.strategies:
        pooled = [mi.pooled(strategy, t) for t in range(len(mi.visits))]
        ci = [p.interval(settings.alpha) for p in pooled]
        values = {
            "estimate": [p.estimate for p in pooled],
            "std_error": [p.std_error for p in pooled],
            "df": [p.df for p in pooled],
            "ci_lower": [c[0] for c in ci],
            "ci_upper": [c[1] for c in ci],
            "p_value": [c[2] for c in ci],
            "n": n,
            "imputations": mi.m,
        }
        note = "; ".join([*notes, *extra])
        out.append(_rows(outcome, strategy, "multiple_imputation", mi.visits, values, note))
    return out


def _not_run(
    outcome: str, strategies: Sequence[str], method: str, visits: Sequence[str], why: str
) -> list[pd.DataFrame]:
    return [_rows(outcome, s, method, visits, {}, f"not run: {why}") for s in strategies]


def _try(run: Callable[[], Any]) -> tuple[Any, str]:
    """One analysis; a failure becomes a reason so that the others still run."""
    try:
        return run(), ""
    except ModelError as exc:
        return None, exc.message
    except Exception as exc:  # one analysis must never take the others down with it
        logger.exception("unexpected failure of a sensitivity analysis")
        return None, f"unexpected error ({type(exc).__name__}: {exc}); see the log"


@dataclass
class _MethodResults:
    jackknife: Jackknife | None = None
    mi: MultipleImputation | None = None
    reasons: dict[str, str] = field(default_factory=dict)


def _run_methods(fitted: _Primary, settings: Settings, key: int, workers: int) -> _MethodResults:
    """Each method under every strategy that applies (one that does not gets a reason), its
    refits and imputations on up to ``workers`` processes."""
    out = _MethodResults()
    strategies = list(settings.run_strategies)
    if "last_mean_carried_forward" in strategies and (fitted.data.last < 0).any():
        n_none = int((fitted.data.last < 0).sum())
        out.reasons["last_mean_carried_forward"] = (
            f"last mean carried forward needs an observed post-baseline visit; {n_none} "
            "subject(s) have none"
        )
        strategies.remove("last_mean_carried_forward")
    if not strategies:
        return out
    if "conditional_mean" in settings.methods:
        out.jackknife, why = _try(
            lambda: conditional_mean(fitted.data, fitted.refitter, strategies, workers=workers)
        )
        if why:
            out.reasons["conditional_mean"] = why
    if "multiple_imputation" in settings.methods:
        out.mi, why = _try(
            lambda: multiple_imputation(
                fitted.data,
                fitted.refitter,
                strategies,
                imputations=settings.imputations,
                seed=settings.seed,
                key=key,
                primary=fitted.primary,
                workers=workers,
            )
        )
        if why:
            out.reasons["multiple_imputation"] = why
    return out


def _strategy_tables(
    outcome: str, fitted: _Primary, results: _MethodResults, settings: Settings
) -> list[pd.DataFrame]:
    visits, notes = fitted.data.visits, _common_notes(fitted)
    reported = [s for s in settings.strategies if s not in results.reasons]
    skipped = [s for s in settings.strategies if s in results.reasons]
    tables: list[pd.DataFrame] = []
    narrowed = replace(settings, strategies=tuple(reported))
    for method in settings.methods:
        if method in results.reasons:
            tables += _not_run(
                outcome, settings.strategies, method, visits, results.reasons[method]
            )
            continue
        if method == "conditional_mean" and results.jackknife is not None:
            tables += _jackknife_rows(outcome, fitted, results.jackknife, narrowed, notes)
        if method == "multiple_imputation" and results.mi is not None:
            tables += _mi_rows(outcome, results.mi, fitted.data.n, narrowed, notes)
        for s in skipped:
            tables += _not_run(outcome, [s], method, visits, results.reasons[s])
    return tables


def _population_rows(
    plan: OutcomePlan, outcome: str, strategy: str, subjects: set[str], why_none: str
) -> list[pd.DataFrame]:
    """The MMRM and ANCOVA refitted to a subset of subjects (completers, per protocol)."""
    visits = plan.post_visits
    if not subjects:
        return _not_run(outcome, [strategy], "mmrm", visits, why_none) + _not_run(
            outcome, [strategy], "ancova", visits, why_none
        )
    sub = replace(
        plan,
        data=plan.data.loc[plan.data["subject_id"].isin(subjects)],
        post=plan.post.loc[plan.post["subject_id"].isin(subjects)],
    )
    tables = []
    for method in ("mmrm", "ancova"):
        result, why = _try(partial(MODELS[method], sub))
        if result is None:
            tables += _not_run(outcome, [strategy], method, visits, why)
            continue
        eff = result.effects
        values = {c: eff[c].to_numpy() for c in ("estimate", "std_error", "df", "ci_lower")}
        values.update({c: eff[c].to_numpy() for c in ("ci_upper", "p_value", "n")})
        note = "; ".join([f"{len(subjects)} subjects", *result.warnings])
        tables.append(_rows(outcome, strategy, method, list(eff["visit"]), values, note))
    return tables


def _populations(
    plan: OutcomePlan, outcome: str, settings: Settings, adsl: pd.DataFrame
) -> list[pd.DataFrame]:
    tables: list[pd.DataFrame] = []
    if settings.completers:
        at = plan.post.loc[plan.post["visit"] == plan.trial.primary_visit]
        seen = set(at.loc[at["value"].notna(), "subject_id"])
        tables += _population_rows(
            plan, outcome, "completers", seen, "no subject was observed at the primary visit"
        )
    if settings.per_protocol and "per_protocol" in adsl:
        members = set(adsl.loc[adsl["per_protocol"] == "Y", "subject_id"])
        tables += _population_rows(
            plan, outcome, "per_protocol", members, "no subject is in the per-protocol population"
        )
    return tables


# ---- tipping point -------------------------------------------------------------------------

Evaluator = Callable[[float], tuple[float, float, float]]


def _p_value(est: float, se: float, df: float) -> float:
    if not np.isfinite(df):
        return float(2.0 * stats.norm.sf(abs(est / se)))
    return float(2.0 * stats.t.sf(abs(est / se), df))


def _interval(est: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    q = stats.norm.ppf(1 - alpha / 2) if not np.isfinite(df) else stats.t.ppf(1 - alpha / 2, df)
    return est - float(q) * se, est + float(q) * se


def tipping_delta(at: Evaluator, harm: float, alpha: float) -> tuple[float, str]:
    """The smallest delta (>= 0, in the direction of harm) at which the p-value reaches alpha.

    ``at(shift)`` gives (estimate, standard error, df) when ``shift`` (= harm x delta) is added to
    the treatment arm's values imputed after dropout. Returns NaN with the reason when there is
    no tipping point.
    """
    est0, se0, df0 = at(0.0)
    if _p_value(est0, se0, df0) >= alpha:
        return 0.0, "not significant without delta adjustment"
    if est0 * harm > 0:
        return (
            float("nan"),
            "the estimate favours the control arm; harm added to the treatment arm only "
            "strengthens that",
        )
    slope = (at(harm)[0] - est0) * harm
    if abs(slope) < 1e-12:
        return float(
            "nan"
        ), "no treatment-arm value is imputed after dropout, so delta changes nothing"
    # The estimate reaches 0 (p = 1) at this delta; the tipping point lies before it.
    zero = abs(est0) / abs(slope)

    def excess(delta: float) -> float:
        return _p_value(*at(harm * delta)) - alpha

    grid = np.linspace(0.0, zero, 201)
    above = [d for d in grid if excess(d) >= 0]
    first = above[0]
    before = grid[max(int(np.searchsorted(grid, first)) - 1, 0)]
    return float(optimize.brentq(excess, before, first, xtol=1e-10)), ""


def _evaluators(results: _MethodResults, strategy: str, primary: int) -> dict[str, Evaluator]:
    out: dict[str, Evaluator] = {}
    jk, mi = results.jackknife, results.mi
    if jk is not None and strategy in jk.strategies:

        def cmi(shift: float) -> tuple[float, float, float]:
            est, se = jk.summary(strategy, shift)
            return float(est[primary]), float(se[primary]), float("inf")

        out["conditional_mean"] = cmi
    if mi is not None and strategy in mi.strategies:

        def pooled(shift: float) -> tuple[float, float, float]:
            p = mi.pooled(strategy, primary, shift)
            return p.estimate, p.std_error, p.df

        out["multiple_imputation"] = pooled
    return out


def default_deltas(outcome: Outcome, points: int) -> np.ndarray:
    """0 to half the outcome's range: harm as large as half the scale, in ``points`` steps."""
    return np.linspace(0.0, (outcome.range_max - outcome.range_min) / 2.0, points)


def _tipping_table(
    outcome: Outcome, fitted: _Primary, results: _MethodResults, settings: Settings
) -> tuple[pd.DataFrame, dict[str, float]]:
    strategy, visit = settings.tipping_strategy, fitted.data.visits[fitted.primary]
    given = settings.deltas.get(outcome.name)
    deltas = (
        np.asarray(given, dtype=float)
        if given
        else default_deltas(outcome, settings.tipping_points)
    )
    tables, found = [], {}
    for method, at in _evaluators(results, strategy, fitted.primary).items():
        tip, why = tipping_delta(at, fitted.harm, settings.alpha)
        found[method] = tip
        rows = []
        for delta in deltas:
            est, se, df = at(fitted.harm * float(delta))
            lo, hi = _interval(est, se, df, settings.alpha)
            rows.append((float(delta), est, se, df, lo, hi, _p_value(est, se, df)))
        frame = pd.DataFrame(
            rows,
            columns=["delta", "estimate", "std_error", "df", "ci_lower", "ci_upper", "p_value"],
        )
        frame = frame.assign(
            outcome=outcome.name, method=method, strategy=strategy, visit=visit,
            tipping_delta=tip, note=why,
        )  # fmt: skip
        tables.append(frame)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return table.reindex(columns=list(TIPPING_COLUMNS)), found


# ---- responders ----------------------------------------------------------------------------


def _responder_label(rule: Mapping[str, float], outcome: Outcome) -> tuple[str, str, float]:
    kind, threshold = next(iter(rule.items()))
    way = "reduction" if outcome.better == "lower" else "increase"
    text = (
        f">= {threshold:g}% {way}"
        if kind == "percent"
        else f">= {threshold:g} {outcome.unit} {way}"
    )
    return kind, text, float(threshold)


def _covariates(treated: np.ndarray, baseline: np.ndarray) -> Covariates:
    """The responder model's design (intercept, treatment, baseline), grouped."""
    return Covariates.of(np.column_stack([np.ones(treated.size), treated, baseline]))


def _binary_summaries(successes: np.ndarray, groups: Covariates) -> list[dict[str, Any]]:
    """Counts, risk difference and baseline-adjusted log odds ratio of each completed dataset
    (one row of ``successes``: its responders in each of the covariate ``groups``)."""
    arm = groups.x[:, 1] == 1
    n_t, n_c = int(groups.size[arm].sum()), int(groups.size[~arm].sum())
    beta, cov, ok = logistic_many(groups.x, successes, groups.size)
    # Whole numbers of responders: their sums are exact in any order.
    by_arm = np.column_stack([successes[:, arm].sum(axis=1), successes[:, ~arm].sum(axis=1)])
    out = []
    for (r_t, r_c), b, c, fitted in zip(by_arm.tolist(), beta, cov, ok, strict=True):
        p_t, p_c, rd, rd_var = risk_difference(r_t, n_t, r_c, n_c)
        log_or, or_var = (b[1], c[1, 1]) if fitted else (np.nan, np.nan)
        out.append({
            "n_treatment": n_t, "n_control": n_c, "responders_treatment": r_t,
            "responders_control": r_c, "prop_treatment": p_t, "prop_control": p_c, "rd": rd,
            "rd_var": rd_var, "log_or": log_or, "or_var": or_var,
        })  # fmt: skip
    return out


def _responder_row(s: dict[str, Any], df: float, alpha: float) -> dict[str, Any]:
    """The row of responders.csv from a summary (pooled or not) with its df."""
    rd_lo, rd_hi = _interval(s["rd"], float(np.sqrt(s["rd_var"])), df, alpha)
    or_se = float(np.sqrt(s["or_var"]))
    or_lo, or_hi = _interval(s["log_or"], or_se, s.get("or_df", df), alpha)
    number = nnt(s["rd"], rd_lo, rd_hi)
    keep = ("n_treatment", "n_control", "responders_treatment", "responders_control",
            "prop_treatment", "prop_control")  # fmt: skip
    return {
        **{k: s[k] for k in keep},
        "risk_difference": s["rd"], "rd_ci_lower": rd_lo, "rd_ci_upper": rd_hi,
        "odds_ratio": float(np.exp(s["log_or"])), "or_ci_lower": float(np.exp(or_lo)),
        "or_ci_upper": float(np.exp(or_hi)),
        "or_p_value": _p_value(s["log_or"], or_se, s.get("or_df", df)),
        "nnt": number.value, "nnt_ci_lower": number.lower, "nnt_ci_upper": number.upper,
        "nnt_interval": number.text,
    }  # fmt: skip


def _pool_binary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Rubin's rules for the risk difference and the log odds ratio over imputations."""
    rd = rubin(np.array([s["rd"] for s in summaries]), np.array([s["rd_var"] for s in summaries]))
    lor = rubin(
        np.array([s["log_or"] for s in summaries]), np.array([s["or_var"] for s in summaries])
    )
    out = {k: float(np.mean([s[k] for s in summaries])) for k in summaries[0]}
    out.update(rd=rd.estimate, rd_var=rd.total, log_or=lor.estimate, or_var=lor.total)
    out.update(rd_df=rd.df, or_df=lor.df)
    return out


@dataclass(frozen=True)
class _ResponderData:
    """Randomized subjects with a baseline value: arm, baseline, change at the primary visit."""

    treated: np.ndarray
    baseline: np.ndarray
    change: np.ndarray  # NaN where missing at the visit

    @classmethod
    def of(cls, plan: OutcomePlan, visit: str) -> _ResponderData:
        # Every visit's rows: a subject without any post-baseline row still counts.
        rows = plan.data
        subjects = rows.groupby("subject_id", sort=True)[["arm", "baseline"]].first()
        subjects = subjects.loc[subjects["baseline"].notna()]
        at = rows.loc[rows["visit"] == visit].set_index("subject_id")["change"]
        return cls(
            treated=(subjects["arm"].astype(str) == plan.trial.treatment).to_numpy(),
            baseline=subjects["baseline"].to_numpy(dtype=float),
            change=at.reindex(subjects.index).to_numpy(dtype=float),
        )


# Completed values turned into responder flags at once (imputations x subjects).
_CHUNK_VALUES = 4_000_000


def _imputed_summaries(
    changes: VisitChanges,
    baseline: np.ndarray,
    groups: Covariates,
    kind: str,
    threshold: float,
    lower: bool,
    workers: int,
) -> list[dict[str, Any]]:
    """:func:`_binary_summaries` of every imputation's responders, a slice of imputations at a
    time (the flags of all imputations of a large trial would not fit in memory), the slices
    on up to ``workers`` processes. The subjects observed at the visit respond alike in every
    imputation: their responders are counted once."""
    observed = responder(changes.observed, baseline, kind, threshold, lower)
    fixed = groups.successes(np.nan_to_num(observed, nan=0.0)[None])
    at = baseline[changes.missing][None]

    def summaries(rows: np.ndarray) -> list[dict[str, Any]]:
        flags = responder(changes.imputed[rows], at, kind, threshold, lower)
        return _binary_summaries(fixed + groups.successes(flags, changes.missing), groups)

    per_value = max(changes.missing.size, 1)
    cut = chunks(changes.imputed.shape[0], max(1, _CHUNK_VALUES // per_value))
    slices = fork_map(summaries, cut, workers)
    return [summary for chunk in slices for summary in chunk]


def _responder_tables(
    plan: OutcomePlan,
    outcome: Outcome,
    fitted: _Primary,
    results: _MethodResults,
    alpha: float,
    rules: Sequence[Mapping[str, float]],
    workers: int,
) -> pd.DataFrame:
    """Non-responder imputation on every randomized subject with a baseline value; MAR multiple
    imputation on the MMRM's analysis set (baseline and covariates complete)."""
    data, visit = fitted.data, fitted.data.visits[fitted.primary]
    everyone = _ResponderData.of(plan, visit)
    base = plan.post.groupby("subject_id")["baseline"].first().reindex(list(data.subjects))
    baseline = base.to_numpy(dtype=float)
    lower = outcome.better == "lower"
    groups = _covariates(everyone.treated, everyone.baseline)
    imputed_groups = _covariates(data.treated, baseline)
    rows = []
    for rule in rules:
        kind, label, threshold = _responder_label(rule, outcome)
        head = {"outcome": outcome.name, "visit": visit, "responder": label}
        flags = responder(everyone.change, everyone.baseline, kind, threshold, lower)
        counted = groups.successes(np.nan_to_num(flags, nan=0.0)[None])
        summary = _binary_summaries(counted, groups)[0]
        note = "missing at the visit counted as non-response"
        if not np.isfinite(summary["log_or"]):
            note += "; logistic regression did not converge (separation)"
        rows.append({**head, "method": "nonresponder_imputation",
                     **_responder_row(summary, np.inf, alpha), "note": note})  # fmt: skip
        mi = results.mi
        if mi is None or mi.primary_changes is None:
            continue
        draws = _imputed_summaries(mi.primary_changes, baseline, imputed_groups, kind,
                                   threshold, lower, workers)  # fmt: skip
        if not all(np.isfinite(d["log_or"]) for d in draws):
            why = "not run: logistic regression did not converge in an imputation"
            rows.append({**head, "method": "multiple_imputation", "imputations": mi.m,
                         "note": why})  # fmt: skip
            continue
        pooled = _pool_binary(draws)
        row = _responder_row(pooled, pooled["rd_df"], alpha)
        why = "MAR multiple imputation; Rubin's rules (mean counts shown)"
        rows.append({**head, "method": "multiple_imputation", **row, "imputations": mi.m,
                     "note": why})  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=list(RESPONDER_COLUMNS))


# ---- one outcome, one trial ----------------------------------------------------------------


def outcome_sensitivity(
    plan: OutcomePlan,
    outcome: Outcome,
    settings: Settings,
    adsl: pd.DataFrame,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Every sensitivity analysis of one outcome: table rows, tipping rows, responder rows
    (refits, imputations and responder fits on up to ``workers`` processes)."""
    visits = plan.post_visits
    fitted, why = _try(lambda: _fit_primary(plan, outcome))
    record: dict[str, Any] = {"outcome": outcome.name}
    tables: list[pd.DataFrame] = []
    tipping = pd.DataFrame(columns=list(TIPPING_COLUMNS))
    responders = pd.DataFrame(columns=list(RESPONDER_COLUMNS))
    if fitted is None:
        record["reason"] = why
        for method in settings.methods:
            tables += _not_run(
                outcome.name, settings.strategies, method, visits, f"primary MMRM: {why}"
            )
    else:
        results = _run_methods(fitted, settings, outcome_key(outcome.name), workers)
        tables += _strategy_tables(outcome.name, fitted, results, settings)
        tipping, found = _tipping_table(outcome, fitted, results, settings)
        rules = settings.responders.get(outcome.name) or []
        if rules:
            responders = _responder_tables(
                plan, outcome, fitted, results, settings.alpha, rules, workers
            )
        record.update(_record(fitted, results, found))
    tables += _populations(plan, outcome.name, settings, adsl)
    return _stack(tables, SENSITIVITY_COLUMNS), tipping, responders, record


def _record(fitted: _Primary, results: _MethodResults, found: dict[str, float]) -> dict[str, Any]:
    data = fitted.data
    dropped = data.dropped
    return {
        "n": data.n,
        "dropouts": {
            "treatment": int((dropped & data.treated).sum()),
            "control": int((dropped & ~data.treated).sum()),
        },
        "intermittent_missing": int((np.isnan(data.y) & ~data.after).sum()),
        "covariance": fitted.choice.fit.structure.code,
        "tipping_delta": found,
        "reasons": results.reasons,
        "bootstrap_failures": results.mi.failures if results.mi is not None else None,
    }


def _outcome_sensitivity(
    outcome: Outcome, *, adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, workers: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    plan = outcome_plan(outcome_data(adeff, adsl, trial, outcome), trial, mean_spec(trial.options))
    return outcome_sensitivity(plan, outcome, Settings.of(trial), adsl, workers)


def analyse_sensitivity(
    adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, *, workers: int = 1
) -> SensitivityAnalysis:
    """Every sensitivity analysis of every outcome of a trial, on up to ``workers`` processes:
    across outcomes, and within an outcome the workers its outcomes leave idle. Each outcome's
    random streams are its own and its chunks are cut the same way for any number of workers,
    so the result is the same."""
    tables, tippings, responders = [], [], []
    records: dict[str, dict[str, Any]] = {}
    across, within = split_workers(workers, len(trial.outcomes), len(adsl))
    analysed = fork_map(
        partial(
            _outcome_sensitivity,
            adeff=coded_labels(adeff),
            adsl=adsl,
            trial=trial,
            workers=within,
        ),
        trial.outcomes,
        across,
    )
    for outcome, (table, tipping, resp, record) in zip(trial.outcomes, analysed, strict=True):
        tables.append(table)
        tippings.append(tipping)
        responders.append(resp)
        records[outcome.name] = record
    return SensitivityAnalysis(
        table=_stack(tables, SENSITIVITY_COLUMNS),
        tipping=_stack(tippings, TIPPING_COLUMNS),
        responders=_stack(responders, RESPONDER_COLUMNS),
        records=records,
    )


def _stack(tables: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame(columns=list(columns))
    out = pd.concat(tables, ignore_index=True).reindex(columns=list(columns))
    for column in ("imputations", "n", "n_treatment", "n_control"):
        if column in out:
            out[column] = out[column].astype("Int64")
    return out
