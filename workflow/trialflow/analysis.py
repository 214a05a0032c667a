"""The analysis plan of one trial: every model for every outcome, as stable tables.

For each outcome of the trial description this runs, on the ITT population in ADEFF/ADSL:
the primary MMRM on change from baseline, the supportive random-intercept LMM on all visits,
ANCOVA per visit, the complete-case mixed ANOVA the published trials used, and Hedges' g of
change. It adds Holm-adjusted p-values across the secondary outcomes at the primary visit and
returns the tables of the output contract (see :data:`EFFECT_TABLE_COLUMNS`). A model that cannot
be fitted for one outcome becomes a row saying so; the other outcomes and models still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from trialflow.config import Outcome, TrialConfig
from trialflow.errors import ModelError
from trialflow.plan import lmm_df_method
from trialflow.stats.ancova import fit_ancova
from trialflow.stats.anova import mixed_anova
from trialflow.stats.effect_size import hedges_g, holm
from trialflow.stats.lmm import fit_lmm
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import fit_mmrm
from trialflow.stats.results import (
    EFFECT_COLUMNS,
    LSMEAN_COLUMNS,
    TYPE3_COLUMNS,
    ModelResult,
    jsonable,
)
from trialflow.stats.subgroups import SUBGROUP_COLUMNS, cut_labels, fit_subgroup

# The model tables of the output contract: the model's own columns behind outcome and analysis.
EFFECT_TABLE_COLUMNS: tuple[str, ...] = (
    "outcome",
    "analysis",
    *EFFECT_COLUMNS,
    "p_adjusted",
    "multiplicity",
    "df_method",
    "converged",
    "note",
)
LSMEAN_TABLE_COLUMNS: tuple[str, ...] = (
    "outcome",
    "analysis",
    *LSMEAN_COLUMNS,
    "response",
    "df_method",
)
TYPE3_TABLE_COLUMNS: tuple[str, ...] = ("outcome", "analysis", *TYPE3_COLUMNS, "df_method")
SUBGROUP_TABLE_COLUMNS: tuple[str, ...] = ("outcome", *SUBGROUP_COLUMNS)
ANOVA_TABLE_COLUMNS: tuple[str, ...] = (
    "outcome",
    "source",
    "F",
    "df1",
    "df2",
    "p_value",
    "partial_eta_sq",
)
ANALYSES: tuple[str, ...] = ("mmrm", "lmm", "ancova")
T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass
class TrialAnalysis:
    """All tables of one trial's analysis plus one model record per outcome."""

    effects: pd.DataFrame
    lsmeans: pd.DataFrame
    anova: pd.DataFrame
    effect_sizes: pd.DataFrame
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    residuals: dict[str, pd.DataFrame] = field(default_factory=dict)
    type3: pd.DataFrame = field(default_factory=pd.DataFrame)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)


def mean_spec(options: Mapping[str, Any]) -> MeanSpec:
    """The trial's mean model, built once from its analysis options and shared by every model."""
    return MeanSpec(
        response=options["response"],
        baseline=options["baseline"],
        covariates_by_visit=tuple(options["covariates_by_visit"]),
        lsmeans_weights=options["lsmeans_weights"],
    )


def outcome_data(
    adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, outcome: Outcome
) -> pd.DataFrame:
    """ADEFF rows of one outcome joined with the ADSL covariates."""
    covariates = [c.name for c in trial.covariates]
    rows = adeff.loc[adeff["outcome"] == outcome.name]
    return rows.merge(
        adsl[["subject_id", *covariates]], on="subject_id", how="left", validate="many_to_one"
    )


def _not_fitted(outcome: str, analysis: str, trial: TrialConfig, reason: str) -> pd.DataFrame:
    visits = [v.label for v in trial.post_baseline_visits]
    return pd.DataFrame(
        {
            "outcome": outcome,
            "analysis": analysis,
            "contrast": f"{trial.treatment} - {trial.control}",
            "visit": visits,
            "converged": False,
            "note": f"not fitted: {reason}",
        }
    )


def _degenerate(data: pd.DataFrame, post: pd.DataFrame, outcome: Outcome) -> str | None:
    """Why no model of this outcome can be fitted, checked once before any fit (or None)."""
    values = data["value"].dropna()
    if values.empty:
        return f"no value of {outcome.label} was observed"
    if values.nunique() == 1:
        return f"no variability: every value of {outcome.label} is {values.iloc[0]:g}"
    change = post["change"].dropna()
    if change.empty:
        return "no change from baseline can be computed (no subject has both)"
    if change.nunique() == 1:
        return f"no variability in the change from baseline (always {change.iloc[0]:g})"
    return None


def _try(fit: Callable[[], T]) -> tuple[T | None, str]:
    """Run one model; a failure becomes a reason, so the other models still run.

    A ModelError is an expected limitation of the data (its message says so). Anything else is
    unexpected: its traceback goes to the log, and the outputs still say the model failed.
    """
    try:
        return fit(), ""
    except ModelError as exc:
        return None, exc.message
    except Exception as exc:  # a model must never take the whole trial down with it
        logger.exception("unexpected failure of a model fit")
        return None, f"unexpected error ({type(exc).__name__}: {exc}); see the log"


def analyse_outcome(
    data: pd.DataFrame, trial: TrialConfig, outcome: Outcome, options: Mapping[str, Any]
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Fit every model of the analysis plan to one outcome."""
    covariates = [c.name for c in trial.covariates]
    spec = mean_spec(options)
    baseline = None if spec.baseline == "none" else "baseline"
    all_visits = list(trial.visit_labels)
    post_visits = [v.label for v in trial.post_baseline_visits]
    post = data.loc[data["visit"].isin(post_visits)]
    degenerate = _degenerate(data, post, outcome)
    fits: dict[str, Callable[[], ModelResult]] = {
        "mmrm": lambda: fit_mmrm(
            post,
            response=spec.response,
            baseline=baseline,
            covariates=covariates,
            covariance=options["covariance"],
            fallback=options["fallback"],
            reference_arm=trial.control,
            visit_order=post_visits,
            alpha=options["alpha"],
            df_method=options["df"],
            mean=spec,
            week="week",
            subject="subject_id",
            visit="visit",
            arm="arm",
        ),
        "lmm": lambda: fit_lmm(
            data,
            response="value",
            covariates=covariates,
            reference_arm=trial.control,
            visit_order=all_visits,
            baseline_visit=trial.baseline_visit,
            random_slope=options["random_slope"],
            week="week",
            alpha=options["alpha"],
            df_method=lmm_df_method(options),
            lsmeans_weights=spec.lsmeans_weights,
            covariates_by_visit=spec.covariates_by_visit,
            subject="subject_id",
            visit="visit",
            arm="arm",
        ),
        "ancova": lambda: fit_ancova(
            post,
            response=spec.response,
            baseline=baseline,
            lsmeans_weights=spec.lsmeans_weights,
            covariates=covariates,
            reference_arm=trial.control,
            visit_order=post_visits,
            alpha=options["alpha"],
            subject="subject_id",
            visit="visit",
            arm="arm",
        ),
    }
    effects, lsmeans = [], []
    record: dict[str, Any] = {
        "outcome": outcome.name,
        "label": outcome.label,
        "unit": outcome.unit,
        "better": outcome.better,
        "primary": outcome.primary,
    }
    for name, fit in fits.items():
        result, reason = _try(fit) if degenerate is None else (None, degenerate)
        if result is None:
            effects.append(_not_fitted(outcome.name, name, trial, reason))
            record[name] = {"fitted": False, "reason": reason}
            continue
        eff = result.effects.copy()
        eff.insert(0, "analysis", name)
        eff.insert(0, "outcome", outcome.name)
        eff["df_method"] = result.info.get("df_method", "")
        eff["converged"] = result.converged
        eff["note"] = "; ".join(result.warnings)
        effects.append(eff)
        ls = result.lsmeans.copy()
        ls.insert(0, "analysis", name)
        ls.insert(0, "outcome", outcome.name)
        ls["response"] = "value" if name == "lmm" else spec.response
        ls["df_method"] = result.info.get("df_method", "")
        lsmeans.append(ls)
        record[name] = {"fitted": True, **result.to_dict()}
        if name == "mmrm" and result.residuals is not None:
            record["_residuals"] = result.residuals
        if result.type3 is not None:
            tests = result.type3.assign(analysis=name, df_method=result.info.get("df_method", ""))
            record["_type3"] = pd.concat([record.get("_type3"), tests], ignore_index=True)
        if result.covariance is not None:
            sd = np.sqrt(np.diag(result.covariance.to_numpy()))
            corr = result.covariance / np.outer(sd, sd)
            record[name]["correlation"] = jsonable(corr)
    anova, reason = (
        (None, str(degenerate))
        if degenerate
        else _try(
            lambda: mixed_anova(
                data,
                response="value",
                subject="subject_id",
                visit="visit",
                arm="arm",
                reference_arm=trial.control,
                visit_order=all_visits,
            )
        )
    )
    if anova is not None:
        anova.insert(0, "outcome", outcome.name)
        record["mixed_anova"] = {
            "fitted": True,
            "rule": str(anova["rule"].iloc[0]) if "rule" in anova else "",
            "warnings": list(anova.attrs.get("warnings", [])),
        }
    else:
        anova = pd.DataFrame({"outcome": [outcome.name], "source": [""], "note": [reason]})
        record["mixed_anova"] = {"fitted": False, "reason": reason}
    g, reason = (
        (None, str(degenerate))
        if degenerate
        else _try(
            lambda: hedges_g(
                post,
                response="change",
                reference_arm=trial.control,
                visit_order=post_visits,
                alpha=options["alpha"],
                subject="subject_id",
                visit="visit",
                arm="arm",
            )
        )
    )
    if g is not None:
        g.insert(0, "outcome", outcome.name)
    else:
        g = pd.DataFrame({"outcome": [outcome.name], "note": [reason]})
    return effects, lsmeans, anova, g, record


# A numeric covariate with more distinct values than this is not taken as categorical levels.
MAX_SUBGROUP_LEVELS = 10


def _subgroup_levels(
    values: pd.Series, name: str, cuts: Sequence[float]
) -> tuple[pd.Series, list[str], str]:
    """Level labels of a subgroup, its levels, and why it cannot be analysed ("" if it can)."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if cuts:
        labels, levels = cut_labels(values, cuts)
        if not numeric:
            return labels, levels, f"{name} is not numeric; cut points apply to numeric covariates"
        return labels, levels, ""
    labels = values.astype(object).where(values.notna(), None)
    labels = labels.map(lambda v: None if v is None else str(v))
    levels = sorted(labels.dropna().unique())
    if numeric and len(levels) > MAX_SUBGROUP_LEVELS:
        why = (
            f"{name} is numeric with {len(levels)} distinct values; give cut points, e.g. "
            f"{{name: {name}, cut: [...]}}"
        )
        return labels, [], why
    return labels, levels, ""


def subgroup_table(
    data: pd.DataFrame, trial: TrialConfig, outcome: Outcome, options: Mapping[str, Any]
) -> pd.DataFrame:
    """Exploratory subgroup analyses of the MMRM for one outcome (one row per level)."""
    spec = mean_spec(options)
    post_visits = [v.label for v in trial.post_baseline_visits]
    post = data.loc[data["visit"].isin(post_visits)]
    covariates = [c.name for c in trial.covariates]
    tables = []
    for group in options["subgroups"]:
        name, cuts = group["name"], group.get("cut") or []
        labels, levels, why = _subgroup_levels(post[name], name, cuts)
        if why:
            row = {"subgroup": name, "visit": trial.primary_visit, "note": f"not analysed: {why}"}
            tables.append(pd.DataFrame([row]).assign(outcome=outcome.name))
            continue
        table = fit_subgroup(
            post.assign(_subgroup=labels),
            name=name,
            column="_subgroup",
            levels=levels,
            response=spec.response,
            subject="subject_id",
            visit="visit",
            arm="arm",
            baseline=None if spec.baseline == "none" else "baseline",
            # A categorical subgroup replaces its covariate; a cut numeric one keeps it.
            covariates=covariates if cuts else [c for c in covariates if c != name],
            reference_arm=trial.control,
            visit_order=post_visits,
            primary_visit=trial.primary_visit,
            covariance=options["covariance"],
            fallback=options["fallback"],
            df_method=options["df"],
            alpha=options["alpha"],
            mean=spec,
            week="week",
        )
        tables.append(table.assign(outcome=outcome.name))
    if not tables:
        return pd.DataFrame(columns=list(SUBGROUP_TABLE_COLUMNS))
    return pd.concat(tables, ignore_index=True).reindex(columns=list(SUBGROUP_TABLE_COLUMNS))


def add_multiplicity(
    effects: pd.DataFrame, trial: TrialConfig, *, primary_adjustment: str = "holm"
) -> pd.DataFrame:
    """Adjusted p-values at the primary visit, per analysis, in two families.

    Primary outcomes: one primary outcome is tested unadjusted; several (co-primary) are
    Holm-adjusted among themselves unless ``primary_adjustment`` is ``"none"``. Secondary
    outcomes: Holm-adjusted among themselves. A family keeps every pre-specified outcome: an
    outcome whose model could not be fitted counts as p = 1, so the family never shrinks.
    Rows at other visits are exploratory and get no adjusted p-value.
    """
    out = effects.copy()
    out["p_adjusted"] = np.nan
    out["multiplicity"] = ""
    primary = {o.name for o in trial.primary_outcomes}
    at_visit = out["visit"] == trial.primary_visit
    visit = trial.primary_visit
    for analysis in out["analysis"].unique():
        rows = at_visit & (out["analysis"] == analysis)
        for members, kind in ((rows & out["outcome"].isin(primary), "primary"),
                              (rows & ~out["outcome"].isin(primary), "secondary")):  # fmt: skip
            m = int(members.sum())
            if m == 0:
                continue
            p = out.loc[members, "p_value"].to_numpy(dtype=float)
            missing = int(np.isnan(p).sum())
            counted = f" ({missing} not estimable, counted as p = 1)" if missing else ""
            if kind == "primary" and (m == 1 or primary_adjustment == "none"):
                adjusted = p
                rule = (
                    "primary outcome: unadjusted"
                    if m == 1
                    else "co-primary outcomes: unadjusted (primary_adjustment: none)"
                )
            else:
                adjusted = holm(np.where(np.isnan(p), 1.0, p))
                adjusted = np.where(np.isnan(p), np.nan, adjusted)
                rule = f"Holm across {m} {kind} outcomes at {visit}{counted}"
            out.loc[members, "p_adjusted"] = adjusted
            out.loc[members, "multiplicity"] = rule
    return out


def analyse_trial(adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig) -> TrialAnalysis:
    """Run the analysis plan on every outcome of a trial.

    Returns
    -------
    TrialAnalysis
        ``effects`` (columns :data:`EFFECT_TABLE_COLUMNS`, rows ordered by outcome as in the
        trial description, then analysis mmrm, lmm, ancova, then visit), ``lsmeans``
        (:data:`LSMEAN_TABLE_COLUMNS`), ``anova`` (:data:`ANOVA_TABLE_COLUMNS` first),
        ``effect_sizes`` (Hedges' g per outcome and visit), one model record per outcome and
        the MMRM residuals per outcome (see :attr:`ModelResult.residuals`).
    """
    options = trial.options
    effects, lsmeans, anovas, sizes = [], [], [], []
    models: dict[str, dict[str, Any]] = {}
    residuals: dict[str, pd.DataFrame] = {}
    type3: list[pd.DataFrame] = []
    subgroups: list[pd.DataFrame] = []
    for outcome in trial.outcomes:
        data = outcome_data(adeff, adsl, trial, outcome)
        eff, ls, anova, g, record = analyse_outcome(data, trial, outcome, options)
        tests = record.pop("_type3", None)
        if tests is not None:
            type3.append(tests.assign(outcome=outcome.name))
        if options["subgroups"]:
            subgroups.append(subgroup_table(data, trial, outcome, options))
        effects.extend(eff)
        lsmeans.extend(ls)
        anovas.append(anova)
        sizes.append(g)
        record["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        resid = record.pop("_residuals", None)
        if resid is not None:
            residuals[outcome.name] = resid
        models[outcome.name] = record
    eff_table = add_multiplicity(
        pd.concat(effects, ignore_index=True),
        trial,
        primary_adjustment=options["primary_adjustment"],
    )
    eff_table = eff_table.reindex(
        columns=[*EFFECT_TABLE_COLUMNS, *[c for c in eff_table if c not in EFFECT_TABLE_COLUMNS]]
    )
    ls_table = pd.concat(lsmeans, ignore_index=True) if lsmeans else pd.DataFrame()
    ls_table = ls_table.reindex(columns=list(LSMEAN_TABLE_COLUMNS))
    anova_table = pd.concat(anovas, ignore_index=True)
    anova_table = anova_table.reindex(
        columns=[*ANOVA_TABLE_COLUMNS, *[c for c in anova_table if c not in ANOVA_TABLE_COLUMNS]]
    )
    return TrialAnalysis(
        effects=eff_table,
        lsmeans=ls_table,
        anova=anova_table,
        effect_sizes=pd.concat(sizes, ignore_index=True),
        models=models,
        residuals=residuals,
        type3=_stack(type3, TYPE3_TABLE_COLUMNS),
        subgroups=_stack(subgroups, SUBGROUP_TABLE_COLUMNS),
    )


def _stack(tables: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(tables, ignore_index=True).reindex(columns=list(columns))
