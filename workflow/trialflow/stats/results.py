"""Result container shared by every model in :mod:`trialflow.stats`.

One shape for every fit: tables as DataFrames with a fixed column order, plus
convergence state and warnings carried as data (never only printed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EFFECT_COLUMNS: tuple[str, ...] = (
    "contrast",
    "visit",
    "estimate",
    "std_error",
    "df",
    "ci_lower",
    "ci_upper",
    "p_value",
    "n",
)
TYPE3_COLUMNS: tuple[str, ...] = ("effect", "num_df", "den_df", "F", "p_value")
LSMEAN_COLUMNS: tuple[str, ...] = (
    "visit",
    "arm",
    "estimate",
    "std_error",
    "df",
    "ci_lower",
    "ci_upper",
    "n",
)


def gradient_size(gradient: np.ndarray) -> float:
    """Largest absolute gradient component at the optimum, to two significant digits.

    At a converged optimum the gradient is rounding noise, whose last digits depend on how the
    BLAS happened to align its arrays in that process; two digits say how converged the fit is
    and are the same whichever process or worker ran it.
    """
    return float(f"{float(np.max(np.abs(gradient))):.1e}")


def jsonable(value: Any) -> Any:
    """Convert DataFrames, numpy scalars and arrays to JSON types (NaN and inf become None)."""
    if isinstance(value, pd.DataFrame):
        return {
            "columns": [str(c) for c in value.columns],
            "index": [str(i) for i in value.index],
            "data": [[jsonable(v) for v in row] for row in value.to_numpy().tolist()],
        }
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return None if not math.isfinite(f) else f
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


@dataclass(frozen=True)
class ModelResult:
    """Outcome of one model fit.

    Attributes
    ----------
    analysis
        ``"mmrm"``, ``"lmm"``, ``"ancova"`` or ``"mixed_anova"``.
    effects
        Treatment minus control per post-baseline visit, columns
        :data:`EFFECT_COLUMNS` in that order.
    lsmeans
        Least-squares means per visit and arm, columns :data:`LSMEAN_COLUMNS`.
    covariance
        Estimated residual covariance across visits (visits x visits), or None.
    converged
        Whether the optimizer reported convergence at an interior optimum.
    warnings
        Human-readable warnings raised during the fit (convergence, fallbacks, ...).
    info
        Free-form model description: formula, covariance structure requested and
        used, log-likelihood, numbers of subjects and observations, optimizer, ...
    residuals
        Per observation used in the fit (where the model provides them): subject, visit,
        observed, fitted, residual and normalized residual (residual whitened by the
        Cholesky factor of the subject's residual covariance, as nlme's
        ``type = "normalized"``). Not part of :meth:`to_dict`.
    type3
        Type III F tests of the fixed effects (columns :data:`TYPE3_COLUMNS`), where the model
        provides them.
    """

    analysis: str
    effects: pd.DataFrame
    lsmeans: pd.DataFrame
    covariance: pd.DataFrame | None = None
    converged: bool = True
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    residuals: pd.DataFrame | None = None
    type3: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything in JSON-serialisable form (NaN and inf become None)."""
        return jsonable(
            {
                "analysis": self.analysis,
                "converged": self.converged,
                "warnings": list(self.warnings),
                "info": self.info,
                "covariance": self.covariance,
                "effects": self.effects,
                "lsmeans": self.lsmeans,
                "type3": self.type3,
            }
        )
