"""Small-sample inference for fixed effects: Satterthwaite, Kenward-Roger, between-within, residual.

Every method works from the same ingredients of a REML fit, computed once in the covariance
parameters ``phi`` in which SAS PROC MIXED states them (see
:meth:`~trialflow.stats.covariance.CovarianceStructure.natural`):

- ``Phi = (X' V^-1 X)^-1``, the model-based covariance of the fixed effects;
- ``P_i = -X' V^-1 V_i V^-1 X``, ``Q_ij = X' V^-1 V_i V^-1 V_j V^-1 X`` and
  ``R_ij = X' V^-1 V_ij V^-1 X`` (``V_i``, ``V_ij``: first and second derivatives of V);
- ``W``, the covariance of the covariance parameters: the inverse observed REML information,
  as SAS (``DDFM=SATTERTH`` and ``DDFM=KR``), R ``mmrm`` and ``lmerTest`` use it; R
  ``pbkrtest`` (Kenward-Roger for ``lmer`` fits) uses the inverse expected information, so the
  LMM's Kenward-Roger does too. With the observed information, the Kenward-Roger df of a single
  contrast equal its Satterthwaite df (SAS prints the same df under both); with the expected
  information they differ.

Kenward-Roger (Kenward & Roger 1997) inflates Phi by the Kackar-Harville term and a bias
correction, ``Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j - R_ij / 4)] Phi``, and tests
``L beta = 0`` with the scaled statistic ``lambda F`` on ``(q, m)`` degrees of freedom; the
denominator df comes from the unadjusted Phi, so ``kenward_roger_linear`` (SAS
``DDFM=KR(LINEAR)``: the ``R_ij`` term left out) changes standard errors but not df. For
covariance structures linear in their parameters (UN, CS, Toeplitz) the two are identical.
Satterthwaite tests of several rows use the eigen-decomposition of ``L Phi L'`` (Fai & Cornelius
1996), as SAS and ``lmerTest`` do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from trialflow.stats.results import TYPE3_COLUMNS

__all__ = [
    "DF_METHODS",
    "Ingredients",
    "TestResult",
    "kr_adjusted",
]

DF_METHODS: tuple[str, ...] = (
    "satterthwaite",
    "kenward_roger",
    "kenward_roger_linear",
    "between_within",
    "residual",
)
DF_LABELS: dict[str, str] = {
    "satterthwaite": "Satterthwaite",
    "kenward_roger": "Kenward-Roger",
    "kenward_roger_linear": "Kenward-Roger (linear)",
    "between_within": "between-within",
    "residual": "residual",
}


@dataclass(frozen=True)
class TestResult:
    """An F test of ``L beta = 0``."""

    f_value: float
    num_df: int
    den_df: float
    p_value: float


@dataclass(frozen=True)
class Ingredients:
    """What every df method needs from a fit (see the module docstring).

    Attributes
    ----------
    beta, phi
        Fixed effects and their model-based covariance.
    p, q, r
        ``P_i`` (n_par, p, p), ``Q_ij`` and ``R_ij`` (n_par, n_par, p, p).
    w_observed
        Covariance of the covariance parameters: inverse observed information (Satterthwaite).
    w_kr
        The one Kenward-Roger uses: the observed for the MMRM (SAS, R ``mmrm``), the expected
        for the LMM (R ``pbkrtest``).
    residual_df
        ``N - rank(X)``.
    """

    beta: np.ndarray
    phi: np.ndarray
    p: np.ndarray
    q: np.ndarray
    r: np.ndarray
    w_observed: np.ndarray
    w_kr: np.ndarray
    residual_df: float


def kr_adjusted(ing: Ingredients, *, linear: bool) -> np.ndarray:
    """Kenward-Roger adjusted covariance of the fixed effects, ``Phi_A``."""
    phi, w = ing.phi, ing.w_kr
    pphi = np.einsum("iab,bc->iac", ing.p, phi)
    # sum_ij W_ij P_i Phi P_j
    ppp = np.einsum("ij,iab,jbc->ac", w, pphi, ing.p)
    inner = np.einsum("ij,ijab->ab", w, ing.q) - ppp
    if not linear:
        inner = inner - 0.25 * np.einsum("ij,ijab->ab", w, ing.r)
    adjusted = phi + 2.0 * phi @ inner @ phi
    return 0.5 * (adjusted + adjusted.T)


def _gradients(ing: Ingredients, rows: np.ndarray) -> np.ndarray:
    """d (l' Phi l) / d phi_i for every row l: -(Phi l)' P_i (Phi l), shape (n_rows, n_par)."""
    v = rows @ ing.phi
    return -np.einsum("ca,iab,cb->ci", v, ing.p, v)


def _single_row_df(ing: Ingredients, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``2 (l' Phi l)^2 / (g' W g)`` for every contrast row l (inf when g' W g is 0)."""
    variance = np.einsum("ca,ab,cb->c", rows, ing.phi, rows)
    g = _gradients(ing, rows)
    spread = np.einsum("ci,ij,cj->c", g, w, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, 2.0 * variance**2 / spread, np.inf)


def satterthwaite_df(ing: Ingredients, rows: np.ndarray) -> np.ndarray:
    """Satterthwaite df of single contrasts, with the observed-information W."""
    return _single_row_df(ing, rows, ing.w_observed)


def _kr_df(ing: Ingredients, contrast: np.ndarray) -> tuple[float, float]:
    """Kenward-Roger denominator df ``m`` and scale ``lambda`` for ``L beta = 0`` (L: q x p)."""
    phi, w = ing.phi, ing.w_kr
    q = contrast.shape[0]
    theta = contrast.T @ np.linalg.solve(contrast @ phi @ contrast.T, contrast)
    # T_i = Theta Phi P_i Phi, as batched matrix products (einsum would loop naively).
    t = theta @ (phi @ ing.p @ phi)
    traces = np.einsum("iaa->i", t)
    a1 = float(traces @ w @ traces)
    a2 = float(np.einsum("ij,iab,jba->", w, t, t))
    b = (a1 + 6.0 * a2) / (2.0 * q)
    g = ((q + 1.0) * a1 - (q + 4.0) * a2) / ((q + 2.0) * a2)
    denom = 3.0 * q + 2.0 * (1.0 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2.0 - g) / denom
    e_star = 1.0 / (1.0 - a2 / q)
    v_star = (2.0 / q) * (1.0 + c1 * b) / ((1.0 - c2 * b) ** 2 * (1.0 - c3 * b))
    rho = v_star / (2.0 * e_star**2)
    m = 4.0 + (q + 2.0) / (q * rho - 1.0)
    scale = m / (e_star * (m - 2.0))
    return m, scale


def kr_df(ing: Ingredients, rows: np.ndarray) -> np.ndarray:
    """Kenward-Roger df of single contrasts (each row its own 1-df test).

    For one row, Theta has rank one, so A1 = A2 = g' W g / (l' Phi l)^2 with g the gradient of
    l' Phi l, and Kenward & Roger's m reduces to 2 / A2 (with lambda = 1): Satterthwaite's
    formula with Kenward-Roger's W. :func:`_kr_df` computes the general case.
    """
    return _single_row_df(ing, rows, ing.w_kr)


def contrast_df(
    ing: Ingredients, rows: np.ndarray, method: str, between_within: float | None = None
) -> np.ndarray:
    """Denominator df of single contrasts under ``method`` (one of :data:`DF_METHODS`).

    ``between_within`` is the between-within df of the effect the contrasts belong to.
    """
    if method == "satterthwaite":
        return satterthwaite_df(ing, rows)
    if method in ("kenward_roger", "kenward_roger_linear"):
        return kr_df(ing, rows)
    if method == "between_within" and between_within is not None:
        return np.full(len(rows), between_within)
    return np.full(len(rows), ing.residual_df)


def _satterthwaite_f(ing: Ingredients, contrast: np.ndarray) -> tuple[float, float]:
    """F and denominator df of a multi-row test by the eigen-decomposition method."""
    q = contrast.shape[0]
    values, vectors = np.linalg.eigh(contrast @ ing.phi @ contrast.T)
    rows = vectors.T @ contrast
    t2 = (rows @ ing.beta) ** 2 / values
    nu = satterthwaite_df(ing, rows)
    f_value = float(t2.sum() / q)
    if q == 1:
        return f_value, float(nu[0])
    big = nu > 2.0
    e_sum = float(np.sum(nu[big] / (nu[big] - 2.0)))
    den = 2.0 * e_sum / (e_sum - q) if e_sum > q else float("nan")
    return f_value, den


def f_test(
    ing: Ingredients,
    contrast: np.ndarray,
    method: str,
    adjusted: np.ndarray | None = None,
    between_within: float | None = None,
) -> TestResult:
    """F test of ``contrast @ beta = 0`` with the denominator df of ``method``.

    Parameters
    ----------
    ing
        Ingredients of the fit.
    contrast
        Hypothesis matrix L (q x p), full row rank.
    method
        One of :data:`DF_METHODS`.
    adjusted
        Kenward-Roger ``Phi_A`` (needed for the two Kenward-Roger methods).
    between_within
        Between-within df of the effect tested.
    """
    q = contrast.shape[0]
    est = contrast @ ing.beta
    if method in ("kenward_roger", "kenward_roger_linear"):
        if adjusted is None:
            raise ValueError("Kenward-Roger tests need the adjusted covariance")
        m, scale = _kr_df(ing, contrast)
        f_plain = float(est @ np.linalg.solve(contrast @ adjusted @ contrast.T, est)) / q
        f_value, den = scale * f_plain, m
    elif method == "satterthwaite":
        f_value, den = _satterthwaite_f(ing, contrast)
    else:
        f_value = float(est @ np.linalg.solve(contrast @ ing.phi @ contrast.T, est)) / q
        den = float(contrast_df(ing, contrast[:1], method, between_within)[0])
    p_value = float(stats.f.sf(f_value, q, den)) if np.isfinite(den) else float("nan")
    return TestResult(f_value=f_value, num_df=q, den_df=float(den), p_value=p_value)


def type3_table(
    hypotheses: Mapping[str, np.ndarray], test: Callable[[np.ndarray, str], TestResult]
) -> pd.DataFrame:
    """One row per term: ``effect, num_df, den_df, F, p_value`` (SAS "Type 3 Tests").

    ``hypotheses`` maps each term to its Type III matrix; ``test`` runs one F test given the
    matrix and the term's name.
    """
    rows = []
    for effect, contrast in hypotheses.items():
        result = test(contrast, effect)
        rows.append(
            {
                "effect": effect,
                "num_df": result.num_df,
                "den_df": result.den_df,
                "F": result.f_value,
                "p_value": result.p_value,
            }
        )
    return pd.DataFrame(rows, columns=list(TYPE3_COLUMNS))
