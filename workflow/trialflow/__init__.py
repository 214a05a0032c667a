"""trialflow: analysis of two-arm longitudinal randomized trials.

The library behind the Snakemake workflow: reading and cleaning raw exports
(:mod:`trialflow.clean`), CDISC-style analysis datasets (:mod:`trialflow.derive`), a seeded
trial simulator (:mod:`trialflow.simulate`) and the statistical engine.
"""

from __future__ import annotations

from trialflow.config import TrialConfig, load_trial
from trialflow.errors import ConfigError, DataError, ModelError, TrialflowError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "TrialConfig",
    "TrialflowError",
    "__version__",
    "load_trial",
]
