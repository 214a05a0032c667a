"""What a trial's ``sensitivity:`` block asks for, and the words and columns of its tables.

Kept apart from :mod:`trialflow.sensitivity`, which imports the model fitting: the figures and
the report need only these names, and a step that draws or writes should not pay for loading
the statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trialflow.config import TrialConfig

__all__ = [
    "METHOD_WORDS",
    "RESPONDER_COLUMNS",
    "SENSITIVITY_COLUMNS",
    "STRATEGY_WORDS",
    "TIPPING_COLUMNS",
    "Settings",
]

SENSITIVITY_COLUMNS: tuple[str, ...] = (
    "outcome", "strategy", "method", "visit", "estimate", "std_error", "df", "ci_lower",
    "ci_upper", "p_value", "n", "imputations", "note",
)  # fmt: skip
TIPPING_COLUMNS: tuple[str, ...] = (
    "outcome", "method", "strategy", "visit", "delta", "estimate", "std_error", "df",
    "ci_lower", "ci_upper", "p_value", "tipping_delta", "note",
)  # fmt: skip
RESPONDER_COLUMNS: tuple[str, ...] = (
    "outcome", "visit", "responder", "method", "n_treatment", "n_control",
    "responders_treatment", "responders_control", "prop_treatment", "prop_control",
    "risk_difference", "rd_ci_lower", "rd_ci_upper", "odds_ratio", "or_ci_lower",
    "or_ci_upper", "or_p_value", "nnt", "nnt_ci_lower", "nnt_ci_upper", "nnt_interval",
    "imputations", "note",
)  # fmt: skip
METHOD_WORDS = {
    "multiple_imputation": "multiple imputation",
    "conditional_mean": "conditional mean imputation",
    "mmrm": "MMRM",
    "ancova": "ANCOVA",
}
STRATEGY_WORDS = {
    "mar": "missing at random (MAR)",
    "jump_to_reference": "jump to reference (J2R)",
    "copy_reference": "copy reference (CR)",
    "copy_increments_from_reference": "copy increments from reference (CIR)",
    "last_mean_carried_forward": "last mean carried forward (LMCF)",
    "completers": "completers",
    "per_protocol": "per protocol",
}


@dataclass(frozen=True)
class Settings:
    """The trial's ``sensitivity:`` block with its defaults."""

    strategies: tuple[str, ...]
    methods: tuple[str, ...]
    imputations: int
    seed: int
    completers: bool
    per_protocol: Mapping[str, Any] | None
    tipping_strategy: str
    tipping_points: int
    deltas: Mapping[str, Sequence[float]]
    responders: Mapping[str, Sequence[Mapping[str, float]]]
    alpha: float

    @classmethod
    def of(cls, trial: TrialConfig) -> Settings:
        s = dict(trial.sensitivity)
        tipping = dict(s.get("tipping_point") or {})
        return cls(
            strategies=tuple(s.get("strategies", ())),
            methods=tuple(s.get("methods", ())),
            imputations=int(s.get("imputations", 500)),
            seed=int(s.get("seed", 20261201)),
            completers=bool(s.get("completers", True)),
            per_protocol=s.get("per_protocol"),
            tipping_strategy=str(tipping.get("strategy", "mar")),
            tipping_points=int(tipping.get("points", 21)),
            deltas=dict(tipping.get("deltas") or {}),
            responders=dict(s.get("responders") or {}),
            alpha=float(trial.options["alpha"]),
        )

    @property
    def run_strategies(self) -> tuple[str, ...]:
        """The strategies reported, plus the tipping point's own if not among them."""
        return tuple(dict.fromkeys([*self.strategies, self.tipping_strategy]))
