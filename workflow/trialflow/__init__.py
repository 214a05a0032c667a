"""trialflow: analysis of two-arm longitudinal randomized trials.

The library behind the Snakemake workflow: reading and cleaning raw exports
(:mod:`trialflow.clean`), CDISC-style analysis datasets (:mod:`trialflow.derive`), a seeded
trial simulator (:mod:`trialflow.simulate`) and the statistical engine (:mod:`trialflow.stats`):
:func:`fit_mmrm` (with the plan's :class:`MeanSpec`), :func:`fit_lmm`, :func:`fit_ancova`,
:func:`mixed_anova`, :func:`hedges_g`, :func:`fit_subgroup`.

The model functions are imported on first use, so that reading a configuration does not pay
for importing statsmodels and scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

from trialflow.config import TrialConfig, load_trial
from trialflow.errors import ConfigError, DataError, ModelError, TrialflowError

__version__ = "0.1.0"

_LAZY = {
    "fit_mmrm": "trialflow.stats.mmrm",
    "fit_lmm": "trialflow.stats.lmm",
    "fit_ancova": "trialflow.stats.ancova",
    "mixed_anova": "trialflow.stats.anova",
    "hedges_g": "trialflow.stats.effect_size",
    "holm": "trialflow.stats.effect_size",
    "ModelResult": "trialflow.stats.results",
    "MeanSpec": "trialflow.stats.meanmodel",
    "fit_subgroup": "trialflow.stats.subgroups",
    "analyse_trial": "trialflow.analysis",
}

__all__ = [
    "ConfigError",
    "DataError",
    "MeanSpec",
    "ModelError",
    "ModelResult",
    "TrialConfig",
    "TrialflowError",
    "__version__",
    "analyse_trial",
    "fit_ancova",
    "fit_lmm",
    "fit_mmrm",
    "fit_subgroup",
    "hedges_g",
    "holm",
    "load_trial",
    "mixed_anova",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trialflow' has no attribute {name!r}")
