"""Residual covariance structures across visits for the MMRM.

Each structure maps an unconstrained parameter vector ``theta`` to a positive-definite
visits x visits covariance matrix, so the optimiser can search freely. Variances are on the log
scale; correlations go through ``tanh`` or a logistic map onto their valid range; the
unstructured matrix uses the log-Cholesky parametrisation and the Toeplitz matrix the
partial autocorrelations (Durbin-Levinson), which covers exactly the positive-definite Toeplitz
correlation matrices. Lags of AR(1) and Toeplitz are counted in visit positions, as SAS
``TYPE=AR(1)``/``TOEP`` and R ``mmrm`` do.

Every map is written with operations that are analytic in ``theta``, so the Jacobian
d Sigma / d theta is obtained by complex-step differentiation: exact to rounding error, for any
structure, without a hand-written derivative per structure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from trialflow.errors import ModelError

__all__ = [
    "STRUCTURES",
    "CovarianceStructure",
    "make_structure",
    "nearest_positive_definite",
]

_COMPLEX_STEP = 1e-30


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return float(np.log(p / (1.0 - p)))


def _atanh(r: float) -> float:
    return float(np.arctanh(min(max(r, -0.95), 0.95)))


def nearest_positive_definite(s: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Symmetric matrix with eigenvalues floored at ``floor`` times the largest one.

    Parameters
    ----------
    s
        Square matrix (e.g. a pairwise moment estimate that may be indefinite).
    floor
        Relative floor on the eigenvalues.

    Returns
    -------
    numpy.ndarray
        A positive-definite matrix close to ``s``.
    """
    sym = 0.5 * (s + s.T)
    vals, vecs = np.linalg.eigh(sym)
    top = max(float(vals.max()), 1e-12)
    vals = np.maximum(vals, floor * top)
    return (vecs * vals) @ vecs.T


def _correlations(s: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(s))
    return s / np.outer(sd, sd)


def _lag_means(corr: np.ndarray) -> np.ndarray:
    k = corr.shape[0]
    return np.array([np.mean(np.diagonal(corr, offset=lag)) for lag in range(1, k)])


def _toeplitz(first_row: np.ndarray) -> np.ndarray:
    k = first_row.shape[0]
    idx = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    return first_row[idx]


def _pacf_to_acf(pacf: np.ndarray) -> np.ndarray:
    """Autocorrelations at lags 1..p from partial autocorrelations (Durbin-Levinson)."""
    p = pacf.shape[0]
    dtype = np.result_type(pacf, float)
    rho = np.zeros(p, dtype=dtype)
    phi = np.zeros(0, dtype=dtype)
    for m in range(p):
        a = pacf[m]
        # rho_{m+1} = sum_j phi_{m,j} rho_{m+1-j} + a * (1 - sum_j phi_{m,j} rho_j)
        if m == 0:
            rho[0] = a
            phi = np.array([a], dtype=dtype)
            continue
        past = rho[:m][::-1]
        head = rho[:m]
        rho[m] = phi @ past + a * (1.0 - phi @ head)
        phi = np.concatenate([phi - a * phi[::-1], np.array([a], dtype=dtype)])
    return rho


def _acf_to_pacf(rho: np.ndarray) -> np.ndarray:
    """Partial autocorrelations from autocorrelations (inverse of :func:`_pacf_to_acf`)."""
    p = rho.shape[0]
    pacf = np.zeros(p)
    phi = np.zeros(0)
    for m in range(p):
        if m == 0:
            a = rho[0]
            phi = np.array([a])
        else:
            num = rho[m] - phi @ rho[:m][::-1]
            den = 1.0 - phi @ rho[:m]
            a = num / den
            phi = np.concatenate([phi - a * phi[::-1], [a]])
        pacf[m] = a
    return pacf


class CovarianceStructure(ABC):
    """A parametrised family of visits x visits covariance matrices.

    Parameters
    ----------
    n_visits
        Number of visits (dimension of the matrix).
    """

    code: ClassVar[str] = ""
    label: ClassVar[str] = ""

    def __init__(self, n_visits: int) -> None:
        if n_visits < 1:
            raise ModelError("a covariance structure needs at least one visit")
        self.n_visits = n_visits

    @property
    @abstractmethod
    def n_params(self) -> int:
        """Number of free parameters."""

    @abstractmethod
    def sigma(self, theta: np.ndarray) -> np.ndarray:
        """Covariance matrix at ``theta`` (accepts complex input for complex-step)."""

    @abstractmethod
    def start(self, s: np.ndarray) -> np.ndarray:
        """Starting ``theta`` from a positive-definite moment estimate ``s`` of the matrix."""

    @abstractmethod
    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        """Parameters on an interpretable scale (variances, correlations), keyed by name."""

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d Sigma / d theta_j for every j, shape (n_params, k, k), by complex step."""
        theta = np.asarray(theta, dtype=float)
        out = np.empty((theta.size, self.n_visits, self.n_visits))
        for j in range(theta.size):
            z = theta.astype(complex)
            z[j] += 1j * _COMPLEX_STEP
            out[j] = self.sigma(z).imag / _COMPLEX_STEP
        return out


class Unstructured(CovarianceStructure):
    """Unstructured: every variance and covariance free (log-Cholesky parametrisation)."""

    code = "us"
    label = "unstructured"

    def __init__(self, n_visits: int) -> None:
        super().__init__(n_visits)
        self._rows, self._cols = np.tril_indices(n_visits)
        self._diag = np.flatnonzero(self._rows == self._cols)

    @property
    def n_params(self) -> int:
        return self.n_visits * (self.n_visits + 1) // 2

    def _lower(self, theta: np.ndarray) -> np.ndarray:
        k = self.n_visits
        values = np.array(theta, dtype=np.result_type(theta, float))
        values[self._diag] = np.exp(values[self._diag])
        lower = np.zeros((k, k), dtype=values.dtype)
        lower[self._rows, self._cols] = values
        return lower

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        lower = self._lower(theta)
        # Plain transpose (not conjugate) keeps the map analytic for the complex step.
        return lower @ lower.T

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """Analytic: for L[r, c] (times L[r, r] on the diagonal), dSigma = e_r l_c' + l_c e_r'."""
        lower = self._lower(np.asarray(theta, dtype=float))
        k = self.n_visits
        out = np.zeros((theta.size, k, k))
        for j, (r, c) in enumerate(zip(self._rows, self._cols, strict=True)):
            col = lower[:, c] * (lower[r, r] if r == c else 1.0)
            out[j, r, :] += col
            out[j, :, r] += col
        return out

    def start(self, s: np.ndarray) -> np.ndarray:
        lower = np.linalg.cholesky(s)
        diag = np.arange(self.n_visits)
        lower[diag, diag] = np.log(lower[diag, diag])
        return lower[np.tril_indices(self.n_visits)].copy()

    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        s = self.sigma(theta)
        out = {f"variance[{v}]": float(s[i, i]) for i, v in enumerate(visits)}
        corr = _correlations(s)
        for i in range(self.n_visits):
            for j in range(i + 1, self.n_visits):
                out[f"correlation[{visits[i]},{visits[j]}]"] = float(corr[i, j])
        return out


class _OneCorrelationParameter(CovarianceStructure):
    """Structures with one variance (or one per visit, when heterogeneous) and one parameter
    for the correlation; theta = log standard deviation(s), then the correlation parameter."""

    heterogeneous: ClassVar[bool] = False

    @property
    def n_params(self) -> int:
        n_var = self.n_visits if self.heterogeneous else 1
        return n_var + (1 if self.n_visits > 1 else 0)

    def _sd(self, theta: np.ndarray) -> np.ndarray:
        if self.heterogeneous:
            return np.exp(theta[: self.n_visits])
        return np.exp(theta[0]) * np.ones(self.n_visits)

    def _log_sd_start(self, s: np.ndarray) -> np.ndarray:
        sd = np.sqrt(np.diag(s))
        return np.log(sd) if self.heterogeneous else np.array([np.log(np.sqrt(np.mean(sd**2)))])

    def _variances(self, s: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        if self.heterogeneous:
            return {f"variance[{v}]": float(s[i, i]) for i, v in enumerate(visits)}
        return {"variance": float(s[0, 0])}


class CompoundSymmetry(_OneCorrelationParameter):
    """Compound symmetry: one variance, one correlation shared by every pair of visits."""

    code = "cs"
    label = "compound symmetry"

    def _bounds(self) -> float:
        # Positive definiteness of a k x k CS correlation needs rho > -1 / (k - 1).
        return -1.0 / (self.n_visits - 1)

    def _corr(self, theta: np.ndarray) -> np.ndarray:
        k = self.n_visits
        dtype = np.result_type(theta, float)
        if k == 1:
            return np.ones((1, 1), dtype=dtype)
        lo = self._bounds()
        rho = lo + (1.0 - lo) * _logistic(theta[-1])
        return (1.0 - rho) * np.eye(k, dtype=dtype) + rho * np.ones((k, k), dtype=dtype)

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        sd = self._sd(theta)
        return self._corr(theta) * np.outer(sd, sd)

    def start(self, s: np.ndarray) -> np.ndarray:
        head = self._log_sd_start(s)
        if self.n_visits == 1:
            return head
        rho = float(np.mean(_lag_means(_correlations(s))))
        lo = self._bounds()
        return np.concatenate([head, [_logit((rho - lo) / (1.0 - lo))]])

    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        s = self.sigma(theta)
        out = self._variances(s, visits)
        if self.n_visits > 1:
            out["correlation"] = float(_correlations(s)[0, 1])
        return out


class HeterogeneousCompoundSymmetry(CompoundSymmetry):
    """Heterogeneous compound symmetry: one variance per visit, one common correlation."""

    code = "csh"
    label = "heterogeneous compound symmetry"
    heterogeneous = True


class AutoRegressive(_OneCorrelationParameter):
    """First-order autoregressive: correlation rho**lag, lag in visit positions."""

    code = "ar1"
    label = "first-order autoregressive"

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        k = self.n_visits
        sd = self._sd(theta)
        if k == 1:
            return np.outer(sd, sd)
        rho = np.tanh(theta[-1])
        # Repeated products, not rho ** lag: complex powers of a negative base lose the
        # complex-step derivative to branch-cut rounding.
        powers = np.ones(k, dtype=np.result_type(theta, float))
        for lag in range(1, k):
            powers[lag] = powers[lag - 1] * rho
        return _toeplitz(powers) * np.outer(sd, sd)

    def start(self, s: np.ndarray) -> np.ndarray:
        head = self._log_sd_start(s)
        if self.n_visits == 1:
            return head
        rho = float(_lag_means(_correlations(s))[0])
        return np.concatenate([head, [_atanh(rho)]])

    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        s = self.sigma(theta)
        out = self._variances(s, visits)
        if self.n_visits > 1:
            out["rho"] = float(np.tanh(theta[-1]))
        return out


class HeterogeneousAutoRegressive(AutoRegressive):
    """Heterogeneous AR(1): one variance per visit, correlation rho**lag."""

    code = "ar1h"
    label = "heterogeneous first-order autoregressive"
    heterogeneous = True


class Toeplitz(CovarianceStructure):
    """Homogeneous Toeplitz: one variance, one free correlation per lag (in visit positions)."""

    code = "toep"
    label = "Toeplitz"

    @property
    def n_params(self) -> int:
        return self.n_visits

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        var = np.exp(2.0 * theta[0])
        one = np.ones(1, dtype=np.result_type(theta, float))
        acf = _pacf_to_acf(np.tanh(theta[1:]))
        return var * _toeplitz(np.concatenate([one, acf]))

    def start(self, s: np.ndarray) -> np.ndarray:
        sd = np.sqrt(np.diag(s))
        head = [np.log(np.sqrt(np.mean(sd**2)))]
        if self.n_visits == 1:
            return np.array(head)
        rho = _lag_means(_correlations(s))
        for shrink in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0):
            r = shrink * rho
            pacf = _acf_to_pacf(r)
            if np.all(np.abs(pacf) < 0.98):
                return np.concatenate([head, np.arctanh(pacf)])
        return np.concatenate([head, np.zeros(self.n_visits - 1)])

    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        s = self.sigma(theta)
        out = {"variance": float(s[0, 0])}
        corr = _correlations(s)
        for lag in range(1, self.n_visits):
            out[f"correlation[lag {lag}]"] = float(corr[0, lag])
        return out


STRUCTURES: dict[str, type[CovarianceStructure]] = {
    cls.code: cls
    for cls in (
        Unstructured,
        CompoundSymmetry,
        HeterogeneousCompoundSymmetry,
        AutoRegressive,
        HeterogeneousAutoRegressive,
        Toeplitz,
    )
}


def make_structure(code: str, n_visits: int) -> CovarianceStructure:
    """Build a covariance structure by its code.

    Parameters
    ----------
    code
        One of ``"us"``, ``"cs"``, ``"csh"``, ``"ar1"``, ``"ar1h"``, ``"toep"``
        (case-insensitive).
    n_visits
        Number of visits.

    Returns
    -------
    CovarianceStructure

    Raises
    ------
    ModelError
        Unknown code.
    """
    key = str(code).lower()
    if key not in STRUCTURES:
        raise ModelError(
            f"unknown covariance structure {code!r}",
            fix=f"use one of {', '.join(STRUCTURES)}",
        )
    return STRUCTURES[key](n_visits)
