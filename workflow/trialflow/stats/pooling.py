"""Rubin's rules: one estimate from the analyses of several imputed datasets.

Each of ``m`` completed datasets gives an estimate ``q_i`` and its variance ``u_i``. The pooled
estimate is their mean, and its variance ``T = U + (1 + 1/m) B`` adds the between-imputation
variance ``B`` to the mean within-imputation variance ``U``. Degrees of freedom follow Barnard
& Rubin (1999), which stay below the complete-data df ``df_complete`` in small samples; without
``df_complete`` (large samples) they are Rubin's (1987) ``(m - 1) / lambda^2``. This is what R
``mice::pool`` and ``pool.scalar`` compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trialflow.errors import ModelError

__all__ = ["Pooled", "rubin"]


@dataclass(frozen=True)
class Pooled:
    """Rubin's rules for one quantity.

    Attributes
    ----------
    estimate, std_error, df
        Pooled estimate, sqrt of the total variance, and its degrees of freedom.
    within, between, total
        Mean within-imputation variance U, between-imputation variance B, total variance T.
    relative_increase
        ``(1 + 1/m) B / U``, the relative increase in variance due to missing data.
    fmi
        Fraction of missing information, ``(r + 2 / (df + 3)) / (r + 1)``.
    m
        Number of imputations.
    """

    estimate: float
    std_error: float
    df: float
    within: float
    between: float
    total: float
    relative_increase: float
    fmi: float
    m: int

    def interval(self, alpha: float = 0.05) -> tuple[float, float, float]:
        """Confidence interval and two-sided p-value from the t distribution on ``df``."""
        crit = float(stats.t.ppf(1.0 - alpha / 2.0, self.df))
        p = float(2.0 * stats.t.sf(abs(self.estimate / self.std_error), self.df))
        return self.estimate - crit * self.std_error, self.estimate + crit * self.std_error, p


def _barnard_rubin(m: int, lam: float, df_complete: float | None) -> float:
    """Degrees of freedom of the pooled estimate (Barnard & Rubin 1999; Rubin 1987)."""
    df_old = (m - 1) / lam**2 if lam > 0 else math.inf
    if df_complete is None or not math.isfinite(df_complete):
        return df_old
    df_obs = (df_complete + 1.0) / (df_complete + 3.0) * df_complete * (1.0 - lam)
    return df_obs if not math.isfinite(df_old) else df_old * df_obs / (df_old + df_obs)


def rubin(
    estimates: np.ndarray, variances: np.ndarray, *, df_complete: float | None = None
) -> Pooled:
    """Pool one quantity over ``m`` imputations by Rubin's rules.

    Parameters
    ----------
    estimates, variances
        The estimate and its squared standard error from each completed dataset.
    df_complete
        Degrees of freedom the analysis would have without missing data (e.g. n - p of the
        ANCOVA); None for large samples.

    Returns
    -------
    Pooled

    Raises
    ------
    ModelError
        Fewer than two imputations, different lengths, or a negative or missing variance.
    """
    q = np.asarray(estimates, dtype=float)
    u = np.asarray(variances, dtype=float)
    m = q.size
    if m < 2 or u.size != m:
        raise ModelError(
            f"Rubin's rules need at least two imputations with one variance each (got {m} "
            f"estimates and {u.size} variances)",
            fix="pass the estimate and variance of every completed dataset",
        )
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(u)) and np.all(u >= 0)):
        raise ModelError(
            "an imputation gave a missing estimate or a missing or negative variance",
            fix="check the analysis of each completed dataset",
        )
    within = float(u.mean())
    between = float(q.var(ddof=1))
    total = within + (1.0 + 1.0 / m) * between
    lam = (1.0 + 1.0 / m) * between / total if total > 0 else 0.0
    r = (1.0 + 1.0 / m) * between / within if within > 0 else math.inf
    df = _barnard_rubin(m, lam, df_complete)
    fmi = (r + 2.0 / (df + 3.0)) / (r + 1.0) if math.isfinite(r) else 1.0
    return Pooled(
        estimate=float(q.mean()),
        std_error=math.sqrt(total),
        df=df,
        within=within,
        between=between,
        total=total,
        relative_increase=r,
        fmi=fmi,
        m=m,
    )
