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
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from trialflow.config import Outcome, TrialConfig
from trialflow.errors import ModelError
from trialflow.parallel import fork_map, split_workers
from trialflow.plan import lmm_df_method
from trialflow.stats.ancova import fit_ancova
from trialflow.stats.anova import mixed_anova
from trialflow.stats.design import sorted_categorical, text_labels
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
    "n_analysed",
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


# ADEFF's label columns, which every model of every outcome selects, groups and sorts by.
LABEL_COLUMNS = ("outcome", "subject_id", "arm", "visit")


def coded_labels(adeff: pd.DataFrame) -> pd.DataFrame:
    """ADEFF with its label columns coded once as categoricals (categories in sorted order).

    The values are the same; selecting, grouping and sorting by them becomes integer work,
    where the text of every row took most of the time of analysing a large trial.
    """
    coded = adeff.copy(deep=False)
    for column in LABEL_COLUMNS:
        # Text labels only (numbers keep their own order and pass through unchanged).
        if pd.api.types.infer_dtype(adeff[column], skipna=True) == "string":
            coded[column] = sorted_categorical(adeff[column])
    return coded


def outcome_data(
    adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, outcome: Outcome
) -> pd.DataFrame:
    """ADEFF rows of one outcome joined with the ADSL covariates."""
    covariates = [c.name for c in trial.covariates]
    rows = adeff.loc[adeff["outcome"] == outcome.name]
    keys = adsl[["subject_id", *covariates]]
    ids = rows["subject_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        # Joined on the same codes (subjects without effect rows have none and are not needed).
        coded = pd.Categorical(keys["subject_id"], dtype=ids.dtype)
        keys = keys.assign(subject_id=coded).loc[coded.notna()]
    return rows.merge(keys, on="subject_id", how="left", validate="many_to_one")


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


@dataclass(frozen=True)
class OutcomePlan:
    """One outcome's rows and the trial's plan, prepared once and shared by every model."""

    trial: TrialConfig
    options: Mapping[str, Any]
    spec: MeanSpec
    data: pd.DataFrame  # every visit, baseline included
    post: pd.DataFrame  # post-baseline visits

    @property
    def covariates(self) -> list[str]:
        return [c.name for c in self.trial.covariates]

    @property
    def baseline(self) -> str | None:
        return None if self.spec.baseline == "none" else "baseline"

    @property
    def post_visits(self) -> list[str]:
        return [v.label for v in self.trial.post_baseline_visits]


# Column names of the analysis datasets, passed to every model.
_COLUMNS = {"subject": "subject_id", "visit": "visit", "arm": "arm"}


def _mmrm(plan: OutcomePlan) -> ModelResult:
    opts = plan.options
    return fit_mmrm(
        plan.post,
        response=plan.spec.response,
        baseline=plan.baseline,
        covariates=plan.covariates,
        covariance=opts["covariance"],
        fallback=opts["fallback"],
        reference_arm=plan.trial.control,
        visit_order=plan.post_visits,
        alpha=opts["alpha"],
        df_method=opts["df"],
        mean=plan.spec,
        week="week",
        **_COLUMNS,
    )


def _lmm(plan: OutcomePlan) -> ModelResult:
    opts = plan.options
    return fit_lmm(
        plan.data,
        response="value",
        covariates=plan.covariates,
        reference_arm=plan.trial.control,
        visit_order=list(plan.trial.visit_labels),
        baseline_visit=plan.trial.baseline_visit,
        random_slope=opts["random_slope"],
        week="week",
        alpha=opts["alpha"],
        df_method=lmm_df_method(opts),
        lsmeans_weights=plan.spec.lsmeans_weights,
        covariates_by_visit=plan.spec.covariates_by_visit,
        **_COLUMNS,
    )


def _ancova(plan: OutcomePlan) -> ModelResult:
    return fit_ancova(
        plan.post,
        response=plan.spec.response,
        baseline=plan.baseline,
        lsmeans_weights=plan.spec.lsmeans_weights,
        covariates=plan.covariates,
        reference_arm=plan.trial.control,
        visit_order=plan.post_visits,
        alpha=plan.options["alpha"],
        **_COLUMNS,
    )


MODELS: dict[str, Callable[[OutcomePlan], ModelResult]] = {
    "mmrm": _mmrm,
    "lmm": _lmm,
    "ancova": _ancova,
}


def _add_result(
    name: str, result: ModelResult, plan: OutcomePlan, outcome: Outcome, record: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The effect and LS-mean rows of one fitted model; its record goes into ``record``."""
    df_method = result.info.get("df_method", "")
    eff = result.effects.copy()
    eff.insert(0, "analysis", name)
    eff.insert(0, "outcome", outcome.name)
    eff["df_method"] = df_method
    eff["converged"] = result.converged
    eff["note"] = "; ".join(result.warnings)
    # The subjects in the model: every subject of the MMRM and LMM (n counts those observed
    # at the visit); the ANCOVA at each visit uses exactly those observed there.
    eff["n_analysed"] = eff["n"] if name == "ancova" else int(result.info["n_subjects"])
    ls = result.lsmeans.copy()
    ls.insert(0, "analysis", name)
    ls.insert(0, "outcome", outcome.name)
    ls["response"] = "value" if name == "lmm" else plan.spec.response
    ls["df_method"] = df_method
    record[name] = {"fitted": True, **result.to_dict()}
    if name == "mmrm" and result.residuals is not None:
        record["_residuals"] = result.residuals
    if result.type3 is not None:
        tests = result.type3.assign(analysis=name, df_method=df_method)
        record["_type3"] = pd.concat([record.get("_type3"), tests], ignore_index=True)
    if result.covariance is not None:
        sd = np.sqrt(np.diag(result.covariance.to_numpy()))
        record[name]["correlation"] = jsonable(result.covariance / np.outer(sd, sd))
    return eff, ls


def _anova(
    plan: OutcomePlan, outcome: Outcome, degenerate: str | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The published trials' mixed ANOVA, and its record."""
    anova, reason = (
        (None, str(degenerate))
        if degenerate
        else _try(
            lambda: mixed_anova(
                plan.data,
                response="value",
                reference_arm=plan.trial.control,
                visit_order=list(plan.trial.visit_labels),
                subject="subject_id",
                visit="visit",
                arm="arm",
            )
        )
    )
    if anova is None:
        table = pd.DataFrame({"outcome": [outcome.name], "source": [""], "note": [reason]})
        return table, {"fitted": False, "reason": reason}
    anova.insert(0, "outcome", outcome.name)
    return anova, {
        "fitted": True,
        "rule": str(anova["rule"].iloc[0]) if "rule" in anova else "",
        "warnings": list(anova.attrs.get("warnings", [])),
    }


def _effect_sizes(plan: OutcomePlan, outcome: Outcome, degenerate: str | None) -> pd.DataFrame:
    """Hedges' g of change per visit (a note row when it cannot be computed)."""
    g, reason = (
        (None, str(degenerate))
        if degenerate
        else _try(
            lambda: hedges_g(
                plan.post,
                response="change",
                reference_arm=plan.trial.control,
                visit_order=plan.post_visits,
                alpha=plan.options["alpha"],
                **_COLUMNS,
            )
        )
    )
    if g is None:
        return pd.DataFrame({"outcome": [outcome.name], "note": [reason]})
    g.insert(0, "outcome", outcome.name)
    return g


def outcome_plan(data: pd.DataFrame, trial: TrialConfig, spec: MeanSpec) -> OutcomePlan:
    """One outcome's rows (all visits and post-baseline) with the trial's plan."""
    post = data.loc[data["visit"].isin([v.label for v in trial.post_baseline_visits])]
    return OutcomePlan(trial, trial.options, spec, data, post)


# The analyses of one outcome, each independent of the others: the models, then the mixed
# ANOVA and the effect sizes.
_ANALYSES = (*MODELS, "mixed_anova", "effect_sizes")


def _analysis(plan: OutcomePlan, outcome: Outcome, degenerate: str | None, name: str) -> Any:
    """One analysis of :data:`_ANALYSES`: a model's (result, reason why not fitted), the mixed
    ANOVA's (table, record) or the effect sizes' table."""
    if name == "mixed_anova":
        return _anova(plan, outcome, degenerate)
    if name == "effect_sizes":
        return _effect_sizes(plan, outcome, degenerate)
    return (None, degenerate) if degenerate else _try(partial(MODELS[name], plan))


def analyse_outcome(
    plan: OutcomePlan, outcome: Outcome, workers: int = 1
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Fit every model of the analysis plan to one outcome (the analyses side by side on up to
    ``workers`` processes)."""
    trial = plan.trial
    degenerate = _degenerate(plan.data, plan.post, outcome)
    results = fork_map(partial(_analysis, plan, outcome, degenerate), _ANALYSES, workers)
    done = dict(zip(_ANALYSES, results, strict=True))
    effects, lsmeans = [], []
    record: dict[str, Any] = {
        "outcome": outcome.name,
        "label": outcome.label,
        "unit": outcome.unit,
        "better": outcome.better,
        "primary": outcome.primary,
    }
    for name in MODELS:
        result, reason = done[name]
        if result is None:
            effects.append(_not_fitted(outcome.name, name, trial, reason))
            record[name] = {"fitted": False, "reason": reason}
            continue
        eff, ls = _add_result(name, result, plan, outcome, record)
        effects.append(eff)
        lsmeans.append(ls)
    anova, record["mixed_anova"] = done["mixed_anova"]
    return effects, lsmeans, anova, done["effect_sizes"], record


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
    labels = text_labels(values)
    levels = sorted(labels.dropna().unique())
    if numeric and len(levels) > MAX_SUBGROUP_LEVELS:
        why = (
            f"{name} is numeric with {len(levels)} distinct values; give cut points, e.g. "
            f"{{name: {name}, cut: [...]}}"
        )
        return labels, [], why
    return labels, levels, ""


def subgroup_table(plan: OutcomePlan, outcome: Outcome) -> pd.DataFrame:
    """Exploratory subgroup analyses of the MMRM for one outcome (one row per level)."""
    trial, options, spec, post = plan.trial, plan.options, plan.spec, plan.post
    covariates = plan.covariates
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
            baseline=plan.baseline,
            # A categorical subgroup replaces its covariate; a cut numeric one keeps it.
            covariates=covariates if cuts else [c for c in covariates if c != name],
            reference_arm=trial.control,
            visit_order=plan.post_visits,
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


def _outcome_analysis(
    outcome: Outcome, *, adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, workers: int
) -> tuple[Any, ...]:
    """Every model of one outcome (and its subgroup table), as analyse_trial collects them."""
    plan = outcome_plan(outcome_data(adeff, adsl, trial, outcome), trial, mean_spec(trial.options))
    eff, ls, anova, g, record = analyse_outcome(plan, outcome, workers)
    subgroups = subgroup_table(plan, outcome) if trial.options["subgroups"] else None
    return eff, ls, anova, g, record, subgroups


def analyse_trial(
    adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig, *, workers: int = 1
) -> TrialAnalysis:
    """Run the analysis plan on every outcome of a trial, on up to ``workers`` processes:
    across outcomes, and within an outcome (its analyses) the workers its outcomes leave idle.

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
    across, within = split_workers(workers, len(trial.outcomes), len(adsl))
    analysed = fork_map(
        partial(
            _outcome_analysis, adeff=coded_labels(adeff), adsl=adsl, trial=trial, workers=within
        ),
        trial.outcomes,
        across,
    )
    for outcome, (eff, ls, anova, g, record, subgroup) in zip(
        trial.outcomes, analysed, strict=True
    ):
        tests = record.pop("_type3", None)
        if tests is not None:
            type3.append(tests.assign(outcome=outcome.name))
        if subgroup is not None:
            subgroups.append(subgroup)
        effects.extend(eff)
        lsmeans.extend(ls)
        anovas.append(anova)
        sizes.append(g)
        record["options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        resid = record.pop("_residuals", None)
        if resid is not None:
            residuals[outcome.name] = resid
        models[outcome.name] = record
    # Rows of models that were not fitted have no estimate or p-value columns of their own.
    stacked = pd.concat(effects, ignore_index=True)
    stacked = stacked.reindex(
        columns=[*dict.fromkeys([*EFFECT_TABLE_COLUMNS[:-5], *stacked.columns])]
    )
    eff_table = add_multiplicity(
        stacked,
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
