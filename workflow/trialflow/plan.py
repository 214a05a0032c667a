"""The trial's analysis plan in words, written once from its options for every text that needs it.

The report's model notes, its methods paragraph and the model records all describe the same
choices (response, baseline, covariates by visit, LS-mean weights, degrees of freedom,
covariance); this module is the one place that turns the options into those words, so the texts
cannot disagree with each other or with the models as run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from trialflow.config import TrialConfig
from trialflow.stats.covariance import POSITIONAL, equally_spaced

__all__ = [
    "DF_WORDS",
    "STRUCTURE_NAMES",
    "lmm_df_method",
    "mmrm_formula",
    "plan_sentences",
    "structure_name",
    "supportive_note",
]

STRUCTURE_NAMES: dict[str, str] = {
    "us": "unstructured",
    "toep": "Toeplitz",
    "ar1": "first-order autoregressive",
    "ar1h": "heterogeneous first-order autoregressive",
    "cs": "compound-symmetry",
    "csh": "heterogeneous compound-symmetry",
    "sp_pow": "spatial power (in weeks)",
    "sp_powh": "heterogeneous spatial power (in weeks)",
}
DF_WORDS: dict[str, str] = {
    "satterthwaite": "Satterthwaite degrees of freedom",
    "kenward_roger": "Kenward-Roger degrees of freedom and adjusted standard errors (SAS DDFM=KR)",
    "kenward_roger_linear": "Kenward-Roger degrees of freedom and adjusted standard errors "
    "without the second-derivative term (SAS DDFM=KR(LINEAR))",
    "between_within": "between-within degrees of freedom (SAS DDFM=BW)",
    "residual": "residual degrees of freedom (SAS DDFM=RESIDUAL)",
}


def structure_name(code: str | None) -> str:
    """The covariance structure in words, e.g. 'Toeplitz' for 'toep'."""
    return STRUCTURE_NAMES.get(str(code), str(code))


def lmm_df_method(options: Mapping[str, Any]) -> Literal["satterthwaite", "kenward_roger"]:
    """The LMM's df method: Kenward-Roger when the plan asks for it, else Satterthwaite."""
    return "kenward_roger" if str(options["df"]).startswith("kenward_roger") else "satterthwaite"


def mmrm_formula(trial: TrialConfig) -> str:
    """The MMRM's mean model as a formula in the trial's words."""
    opts = trial.options
    terms: list[str] = []
    if opts["baseline"] != "none":
        terms.append("baseline")
    terms += [c.name for c in trial.covariates]
    terms += ["arm", "visit"]
    if opts["baseline"] == "by_visit":
        terms.append("baseline:visit")
    terms += [f"{c}:visit" for c in opts["covariates_by_visit"]]
    terms.append("arm:visit")
    response = "change from baseline" if opts["response"] == "change" else "value"
    return f"{response} ~ {' + '.join(terms)}"


def plan_sentences(trial: TrialConfig) -> list[str]:
    """One sentence per choice of the analysis plan, for the methods text."""
    opts = trial.options
    response = (
        "The response was the change from baseline at each post-baseline visit"
        if opts["response"] == "change"
        else "The response was the outcome's value at each post-baseline visit (the baseline "
        "visit is not a response of the MMRM)"
    )
    baseline = {
        "main": "the baseline value entered with one common slope",
        "by_visit": "the baseline value entered with a separate slope at each visit "
        "(baseline-by-visit interaction)",
        "none": "the baseline value was not a covariate",
    }[opts["baseline"]]
    by_visit = (
        f"{', '.join(opts['covariates_by_visit'])} also interacted with visit"
        if opts["covariates_by_visit"]
        else "no covariate interacted with visit"
    )
    weights = (
        "Least-squares means set numeric covariates and baseline at their mean and weighted "
        "the levels of categorical covariates "
        + ("equally" if opts["lsmeans_weights"] == "equal" else "by their observed frequency")
    )
    sentences = [
        f"{response}; {baseline}; {by_visit}.",
        f"{weights}.",
        f"Inference used {DF_WORDS[opts['df']]}.",
    ]
    used = {opts["covariance"], *opts["fallback"]} & set(POSITIONAL)
    if used and not equally_spaced([v.week for v in trial.post_baseline_visits]):
        names = ", ".join(structure_name(c) for c in sorted(used))
        sentences.append(
            f"The visits are not equally spaced in time, but the {names} structure counts lags "
            "in visit positions and so assumes equal spacing; spatial power in weeks (sp_pow) "
            "is the structure that uses the actual spacing."
        )
    return sentences


def supportive_note(trial: TrialConfig) -> str:
    """Which options each supportive model followed."""
    opts = trial.options
    lmm_df = DF_WORDS[lmm_df_method(opts)].split(" (")[0]
    lmm_df += " (as R pbkrtest)" if lmm_df_method(opts) == "kenward_roger" else ""
    response = "change" if opts["response"] == "change" else "value"
    baseline = {"main": "baseline + ", "by_visit": "baseline + ", "none": ""}[opts["baseline"]]
    by_visit = "".join(f" + {c}:visit" for c in opts["covariates_by_visit"])
    return (
        f"mmrm: primary model, {mmrm_formula(trial)} (all visits shown); lmm: linear mixed model "
        f"on all visits including baseline, value ~ covariates{by_visit} + arm * visit + "
        f"random effects, effect = arm-by-visit interaction, {lmm_df}; the LMM has no baseline "
        "covariate or change response (baseline is one of its visits); "
        f"ancova: {response} ~ {baseline}covariates + arm at each visit (its own baseline slope "
        "at every visit), residual df. LS means of all three weight factor levels "
        + ("equally." if opts["lsmeans_weights"] == "equal" else "by their observed frequency.")
    )
