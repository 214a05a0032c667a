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
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from trialflow.errors import ModelError

__all__ = [
    "POSITIONAL",
    "STRUCTURES",
    "CovarianceStructure",
    "equally_spaced",
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


def _complex_step(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """d func / d x_j for every j, stacked on the first axis, by complex step."""
    out = []
    for j in range(x.size):
        z = x.astype(complex)
        z[j] += 1j * _COMPLEX_STEP
        out.append(func(z).imag / _COMPLEX_STEP)
    return np.array(out)


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
    # Whether the matrix is linear in the natural parameters (then Kenward-Roger's
    # second-derivative term vanishes and KR and KR(LINEAR) coincide, as in SAS).
    linear: ClassVar[bool] = False

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

    @abstractmethod
    def natural(self, theta: np.ndarray) -> np.ndarray:
        """The parameters SAS PROC MIXED estimates (e.g. UN(i,j); variances and rho)."""

    @abstractmethod
    def sigma_natural(self, phi: np.ndarray) -> np.ndarray:
        """Covariance matrix at natural parameters ``phi`` (accepts complex input)."""

    def natural_jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d phi / d theta, shape (n_params, n_params), by complex step."""
        theta = np.asarray(theta, dtype=float)
        out = np.empty((theta.size, theta.size))
        for j in range(theta.size):
            z = theta.astype(complex)
            z[j] += 1j * _COMPLEX_STEP
            out[:, j] = self.natural(z).imag / _COMPLEX_STEP
        return out

    def natural_derivatives(
        self, phi: np.ndarray, *, second_order: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """First and second derivatives of Sigma in the natural parameters.

        Returns d Sigma / d phi_i, shape (r, k, k), by complex step, and
        d2 Sigma / d phi_i d phi_j, shape (r, r, k, k): zero for a linear structure, else
        central differences of the complex-step first derivatives (error ~1e-9 relative).
        """
        phi = np.asarray(phi, dtype=float)
        r = phi.size
        first = _complex_step(self.sigma_natural, phi)
        second = np.zeros((r, r, self.n_visits, self.n_visits))
        if second_order and not self.linear:
            for j in range(r):
                h = 1e-5 * max(1.0, abs(float(phi[j])))
                e = np.zeros(r)
                e[j] = h
                plus = _complex_step(self.sigma_natural, phi + e)
                minus = _complex_step(self.sigma_natural, phi - e)
                second[:, j] = (plus - minus) / (2.0 * h)
            second = 0.5 * (second + second.transpose(1, 0, 2, 3))
        return first, second

    def sigma_many(self, thetas: np.ndarray) -> np.ndarray:
        """Covariance matrices at each row of ``thetas`` (samples x n_params)."""
        k = self.n_visits
        return np.stack([self.sigma(t) for t in thetas]) if len(thetas) else np.empty((0, k, k))

    def jacobian_many(self, thetas: np.ndarray) -> np.ndarray:
        """``jacobian`` at each row of ``thetas``: shape (samples, n_params, k, k)."""
        if not len(thetas):
            return np.empty((0, self.n_params, self.n_visits, self.n_visits))
        return np.stack([self.jacobian(t) for t in thetas])

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
    linear = True

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

    def _lower_many(self, thetas: np.ndarray) -> np.ndarray:
        k = self.n_visits
        values = np.array(thetas, dtype=float)
        values[:, self._diag] = np.exp(values[:, self._diag])
        lower = np.zeros((values.shape[0], k, k))
        lower[:, self._rows, self._cols] = values
        return lower

    def sigma_many(self, thetas: np.ndarray) -> np.ndarray:
        lower = self._lower_many(thetas)
        return lower @ np.swapaxes(lower, 1, 2)

    def jacobian_many(self, thetas: np.ndarray) -> np.ndarray:
        lower = self._lower_many(thetas)
        b, k = lower.shape[0], self.n_visits
        out = np.zeros((b, self.n_params, k, k))
        for j, (r, c) in enumerate(zip(self._rows, self._cols, strict=True)):
            col = lower[:, :, c] * (lower[:, r, r, None] if r == c else 1.0)
            out[:, j, r, :] += col
            out[:, j, :, r] += col
        return out

    def natural(self, theta: np.ndarray) -> np.ndarray:
        # UN(1,1), UN(2,1), UN(2,2), UN(3,1), ... as SAS lists them.
        return self.sigma(theta)[self._rows, self._cols]

    def sigma_natural(self, phi: np.ndarray) -> np.ndarray:
        k = self.n_visits
        out = np.zeros((k, k), dtype=np.result_type(phi, float))
        out[self._rows, self._cols] = phi
        out[self._cols, self._rows] = phi
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

    def natural(self, theta: np.ndarray) -> np.ndarray:
        sd = self._sd(theta)
        var = sd**2 if self.heterogeneous else sd[:1] ** 2
        if self.n_visits == 1:
            return var
        return np.concatenate([var, [self._rho(theta)]])

    def sigma_natural(self, phi: np.ndarray) -> np.ndarray:
        k = self.n_visits
        var = phi[:k] if self.heterogeneous else phi[0] * np.ones(k, dtype=phi.dtype)
        sd = np.sqrt(var)
        if k == 1:
            return np.outer(sd, sd)
        return self._correlation(phi[-1]) * np.outer(sd, sd)

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        sd = self._sd(theta)
        if self.n_visits == 1:
            return np.outer(sd, sd)
        return self._correlation(self._rho(theta)) * np.outer(sd, sd)

    @abstractmethod
    def _rho(self, theta: np.ndarray) -> np.ndarray:
        """The correlation parameter at ``theta``."""

    @abstractmethod
    def _correlation(self, rho: np.ndarray) -> np.ndarray:
        """The k x k correlation matrix at correlation parameter ``rho``."""

    def _variances(self, s: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        if self.heterogeneous:
            return {f"variance[{v}]": float(s[i, i]) for i, v in enumerate(visits)}
        return {"variance": float(s[0, 0])}


class CompoundSymmetry(_OneCorrelationParameter):
    """Compound symmetry: one variance, one correlation shared by every pair of visits.

    Its natural parameters are SAS's: the common covariance ("CS") and the residual variance,
    in which the matrix is linear.
    """

    code = "cs"
    label = "compound symmetry"
    linear = True

    def _bounds(self) -> float:
        # Positive definiteness of a k x k CS correlation needs rho > -1 / (k - 1).
        return -1.0 / (self.n_visits - 1)

    def _rho(self, theta: np.ndarray) -> np.ndarray:
        lo = self._bounds()
        return lo + (1.0 - lo) * _logistic(theta[-1])

    def _correlation(self, rho: np.ndarray) -> np.ndarray:
        k = self.n_visits
        dtype = np.result_type(rho, float)
        return (1.0 - rho) * np.eye(k, dtype=dtype) + rho * np.ones((k, k), dtype=dtype)

    def natural(self, theta: np.ndarray) -> np.ndarray:
        if self.heterogeneous or self.n_visits == 1:
            return super().natural(theta)
        s = self.sigma(theta)
        return np.array([s[0, 1], s[0, 0] - s[0, 1]])

    def sigma_natural(self, phi: np.ndarray) -> np.ndarray:
        if self.heterogeneous or self.n_visits == 1:
            return super().sigma_natural(phi)
        k = self.n_visits
        dtype = np.result_type(phi, float)
        return phi[0] * np.ones((k, k), dtype=dtype) + phi[1] * np.eye(k, dtype=dtype)

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
    linear = False


class AutoRegressive(_OneCorrelationParameter):
    """First-order autoregressive: correlation rho**lag, lag in visit positions."""

    code = "ar1"
    label = "first-order autoregressive"

    def _lags(self) -> np.ndarray:
        k = self.n_visits
        return np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)

    def _rho(self, theta: np.ndarray) -> np.ndarray:
        return np.tanh(theta[-1])

    def _correlation(self, rho: np.ndarray) -> np.ndarray:
        k = self.n_visits
        # Repeated products, not rho ** lag: complex powers of a negative base lose the
        # complex-step derivative to branch-cut rounding.
        powers = np.ones(k, dtype=np.result_type(rho, float))
        for lag in range(1, k):
            powers[lag] = powers[lag - 1] * rho
        return _toeplitz(powers)

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
    linear = True

    @property
    def n_params(self) -> int:
        return self.n_visits

    def sigma(self, theta: np.ndarray) -> np.ndarray:
        var = np.exp(2.0 * theta[0])
        one = np.ones(1, dtype=np.result_type(theta, float))
        acf = _pacf_to_acf(np.tanh(theta[1:]))
        return var * _toeplitz(np.concatenate([one, acf]))

    def natural(self, theta: np.ndarray) -> np.ndarray:
        # The covariance at each lag 0..k-1 (SAS: Residual, TOEP(2), ..., TOEP(k)).
        return self.sigma(theta)[0]

    def sigma_natural(self, phi: np.ndarray) -> np.ndarray:
        return _toeplitz(phi)

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


class SpatialPower(_OneCorrelationParameter):
    """Spatial power: correlation rho**|week_i - week_j| (SAS ``TYPE=SP(POW)(week)``).

    Unlike AR(1) and Toeplitz, the lag is the distance in weeks, so unequally spaced visits
    are modelled as they are. rho is kept in (0, 1).
    """

    code = "sp_pow"
    label = "spatial power"

    def __init__(self, n_visits: int, weeks: Sequence[float] | None = None) -> None:
        super().__init__(n_visits)
        if weeks is None or len(weeks) != n_visits:
            raise ModelError(
                "the spatial power covariance needs the week of every visit",
                fix="give every visit its week in the trial description",
            )
        w = np.asarray(weeks, dtype=float)
        if len(set(w.tolist())) != n_visits:
            raise ModelError(
                "the spatial power covariance needs distinct weeks for the visits",
                fix="give every visit a different week",
            )
        self.distance = np.abs(np.subtract.outer(w, w))

    def _rho(self, theta: np.ndarray) -> np.ndarray:
        return _logistic(theta[-1])

    def _correlation(self, rho: np.ndarray) -> np.ndarray:
        # exp(d log rho), analytic in rho for the complex step; the diagonal is exactly 1.
        return np.exp(self.distance * np.log(rho))

    def start(self, s: np.ndarray) -> np.ndarray:
        head = self._log_sd_start(s)
        if self.n_visits == 1:
            return head
        corr = _correlations(s)
        upper = np.triu_indices(self.n_visits, 1)
        r = np.clip(corr[upper], 0.05, 0.95)
        # Per-week rho matching the average log-correlation per week of distance.
        rho = float(np.exp(np.sum(np.log(r)) / np.sum(self.distance[upper])))
        return np.concatenate([head, [_logit(min(max(rho, 0.05), 0.99))]])

    def parameters(self, theta: np.ndarray, visits: tuple[str, ...]) -> dict[str, float]:
        s = self.sigma(theta)
        out = self._variances(s, visits)
        if self.n_visits > 1:
            out["rho_per_week"] = float(_logistic(theta[-1]))
        return out


class HeterogeneousSpatialPower(SpatialPower):
    """Spatial power with one variance per visit (SAS ``TYPE=SP(POW)(week)`` with
    heterogeneous variances, e.g. via ``LOCAL``-free ``SP(POWH)``-style variance per visit)."""

    code = "sp_powh"
    label = "heterogeneous spatial power"
    heterogeneous = True


STRUCTURES: dict[str, type[CovarianceStructure]] = {
    cls.code: cls
    for cls in (
        Unstructured,
        CompoundSymmetry,
        HeterogeneousCompoundSymmetry,
        AutoRegressive,
        HeterogeneousAutoRegressive,
        Toeplitz,
        SpatialPower,
        HeterogeneousSpatialPower,
    )
}
# Structures whose lag is the visit position: they assume equally spaced visits.
POSITIONAL: tuple[str, ...] = ("ar1", "ar1h", "toep")


def equally_spaced(weeks: Sequence[float] | None) -> bool:
    """Whether visits are equally spaced in time (True when the weeks are unknown)."""
    if weeks is None or len(weeks) < 3:
        return True
    gaps = np.diff(np.asarray(weeks, dtype=float))
    return bool(np.allclose(gaps, gaps[0], rtol=1e-9, atol=1e-9))


def make_structure(
    code: str, n_visits: int, weeks: Sequence[float] | None = None
) -> CovarianceStructure:
    """Build a covariance structure by its code.

    Parameters
    ----------
    code
        One of ``"us"``, ``"cs"``, ``"csh"``, ``"ar1"``, ``"ar1h"``, ``"toep"``, ``"sp_pow"``,
        ``"sp_powh"`` (case-insensitive).
    n_visits
        Number of visits.
    weeks
        Week of each visit (needed by the spatial structures).

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
    if key in ("sp_pow", "sp_powh"):
        return (
            SpatialPower(n_visits, weeks)
            if key == "sp_pow"
            else HeterogeneousSpatialPower(n_visits, weeks)
        )
    return STRUCTURES[key](n_visits)
