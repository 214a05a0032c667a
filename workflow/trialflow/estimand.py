"""The primary estimand (ICH E9(R1)) of a trial and the estimators that address it.

The trial description may state the estimand's attributes under ``estimand:``; whatever it
leaves out is filled from the rest of the description: the treatment comparison, the
randomized population, the primary outcome's change from baseline at the primary visit,
discontinuation (dropout) as the intercurrent event handled by the hypothetical strategy (what
the MMRM under missing at random estimates), and the difference in means as the summary.
The sensitivity estimators are the analyses of the ``sensitivity:`` block, each with the
assumption about dropouts it makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trialflow.config import TrialConfig

__all__ = ["Estimand", "IntercurrentEvent", "estimand", "estimator_lines"]

STRATEGY_NAMES = {
    "treatment_policy": "treatment policy",
    "hypothetical": "hypothetical",
    "composite": "composite",
    "while_on_treatment": "while on treatment",
    "principal_stratum": "principal stratum",
}
DROPOUT_EVENT = "Discontinuation of the assigned intervention or of follow-up (dropout)"
HYPOTHETICAL_WORDS = (
    "the outcome the participant would have had without discontinuing; estimated under "
    "missing at random (MAR) by the primary MMRM, which uses every observed visit"
)

# What each imputation strategy assumes about participants after dropout.
ASSUMPTIONS = {
    "mar": "missing at random: after dropout participants continue like similar participants "
    "of their own arm who stayed",
    "jump_to_reference": "jump to reference: after dropout the mean is the control arm's at "
    "once (any benefit is lost)",
    "copy_reference": "copy reference: participants who dropped out follow the control arm's "
    "mean profile throughout",
    "copy_increments_from_reference": "copy increments from reference: after dropout the "
    "benefit reached is kept and changes follow the control arm's",
    "last_mean_carried_forward": "last mean carried forward: the arm's mean at the last "
    "observed visit persists",
}


@dataclass(frozen=True)
class IntercurrentEvent:
    """An intercurrent event and the strategy that handles it."""

    event: str
    strategy: str
    description: str

    @property
    def strategy_name(self) -> str:
        return STRATEGY_NAMES.get(self.strategy, self.strategy)


@dataclass(frozen=True)
class Estimand:
    """The attributes of the primary estimand, in words."""

    treatment: str
    population: str
    variable: str
    events: tuple[IntercurrentEvent, ...]
    summary: str
    outcome: str
    visit: str

    def rows(self) -> list[tuple[str, str]]:
        """(attribute, description) rows of the estimand table."""
        events = "; ".join(
            f"{e.event}: {e.strategy_name} strategy ({e.description})" for e in self.events
        )
        return [
            ("Treatment", self.treatment),
            ("Population", self.population),
            ("Variable (endpoint)", self.variable),
            ("Intercurrent events", events or "none stated"),
            ("Population-level summary", self.summary),
        ]


def _variable(trial: TrialConfig, given: Mapping[str, Any]) -> tuple[str, str, str]:
    name = given.get("outcome") or trial.primary_outcomes[0].name
    visit = given.get("visit") or trial.primary_visit
    outcome = trial.outcome(name)
    week = trial.visit(visit).week
    what = "Change from baseline" if trial.options["response"] == "change" else "Value"
    text = f"{what} in {outcome.label} ({outcome.unit}) at {visit} (week {week:g})"
    return name, visit, text


def estimand(trial: TrialConfig) -> Estimand:
    """The trial's primary estimand: its ``estimand:`` block, completed by defaults."""
    given = dict(trial.estimand)
    name, visit, variable = _variable(trial, given.get("variable") or {})
    events = tuple(
        IntercurrentEvent(e["event"], e["strategy"], e.get("description", ""))
        for e in given.get("intercurrent_events") or []
    ) or (IntercurrentEvent(DROPOUT_EVENT, "hypothetical", HYPOTHETICAL_WORDS),)
    alpha = trial.options["alpha"]
    level = f"{100 * (1 - alpha):g}%"
    return Estimand(
        treatment=given.get("treatment")
        or f"{trial.treatment} versus {trial.control}, as randomized",
        population=given.get("population")
        or "Participants eligible for the trial, as randomized (intention to treat): every "
        "randomized participant with a baseline value",
        variable=variable,
        events=events,
        summary=given.get("summary")
        or f"Difference in mean {variable[0].lower() + variable[1:]} between arms "
        f"({trial.treatment} minus {trial.control}), with its {level} confidence interval",
        outcome=name,
        visit=visit,
    )


def estimator_lines(trial: TrialConfig) -> tuple[str, list[str]]:
    """The main estimator and the sensitivity estimators, one line each."""
    opts = trial.options
    main = (
        f"Main estimator: the MMRM ({opts['covariance']} covariance, REML) of all observed "
        "visits, which is valid under missing at random and so targets the hypothetical "
        "strategy for dropout."
    )
    s = dict(trial.sensitivity)
    methods = " and ".join(
        {"multiple_imputation": "multiple imputation", "conditional_mean": "conditional mean "
         "imputation with jackknife"}[m] for m in s.get("methods", [])
    )  # fmt: skip
    lines = [f"Sensitivity estimators ({methods}), each with its assumption about dropouts:"]
    lines += [f"{ASSUMPTIONS[x][0].upper()}{ASSUMPTIONS[x][1:]}." for x in s.get("strategies", [])]
    tipping = (s.get("tipping_point") or {}).get("strategy", "mar")
    lines.append(
        f"Delta adjustment ({tipping}): values of the {trial.treatment} arm imputed after "
        "dropout are made worse by delta, and the tipping point is the delta at which "
        "significance is lost."
    )
    if s.get("completers", True):
        lines.append(
            "Completers: the MMRM and ANCOVA of participants observed at the primary visit."
        )
    if s.get("per_protocol"):
        lines.append("Per protocol: the MMRM and ANCOVA of the per-protocol population.")
    return main, lines
