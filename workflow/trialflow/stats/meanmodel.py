"""The mean model of a trial's analysis plan, built once per fit and shared by every use of it.

A :class:`MeanSpec` holds the statistical analysis plan's choices in the trial's words: whether
the response is the change from baseline or the value, how the baseline value enters (one common
slope, a slope per visit as SAS ``basval*visit``, or not at all), which covariates also interact
with visit, and how LS means weight the levels of factors. :func:`build_mean_model` turns a spec
and the rows a model uses into a :class:`MeanModel`: the design matrix in R's column order, the
columns of every term (for Type III tests), the LS-mean grid (one row per arm x visit, and per
subgroup level when a subgroup factor is added) and the model written as a formula and in words.

Factors use treatment coding with the first level as reference (the control arm, the first
visit, the first sorted level of a covariate), so coefficients read like R's ``contr.treatment``.
Type III hypotheses are built as SAS builds them: the design is re-coded with sum-to-zero
contrasts (main effects then average over the levels of the factors they interact with) and
numeric covariates uncentred, and a term's hypothesis is "its sum-coded coefficients are zero",
mapped back to the treatment-coded coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from trialflow.errors import ModelError
from trialflow.stats.design import ARM, BASELINE, VISIT, Covariate, ObservedRows, r_name

__all__ = ["MeanModel", "MeanSpec", "Subgroup", "build_mean_model"]

Response = Literal["change", "value"]
BaselineUse = Literal["main", "by_visit", "none"]
Weights = Literal["equal", "proportional"]
RESPONSES: tuple[str, ...] = ("change", "value")
BASELINE_USES: tuple[str, ...] = ("main", "by_visit", "none")
WEIGHTS: tuple[str, ...] = ("equal", "proportional")


@dataclass(frozen=True)
class MeanSpec:
    """The analysis plan's mean model, in the trial's words.

    Attributes
    ----------
    response
        ``"change"`` (change from baseline) or ``"value"`` (the outcome's value) at each
        post-baseline visit.
    baseline
        ``"main"``: one common slope on the baseline value; ``"by_visit"``: plus the
        baseline-by-visit interaction (SAS ``basval*visit``); ``"none"``: no baseline term.
    covariates_by_visit
        Covariates that also interact with visit.
    lsmeans_weights
        ``"equal"``: factor levels weighted equally (SAS LSMEANS and emmeans default);
        ``"proportional"``: weighted by their frequency among the rows used (SAS ``OM``,
        emmeans ``weights = "proportional"``). Numeric covariates and baseline are at their
        mean over the rows used either way.
    """

    response: Response = "change"
    baseline: BaselineUse = "main"
    covariates_by_visit: tuple[str, ...] = ()
    lsmeans_weights: Weights = "equal"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("response", self.response, RESPONSES),
            ("baseline", self.baseline, BASELINE_USES),
            ("lsmeans_weights", self.lsmeans_weights, WEIGHTS),
        ):
            if value not in allowed:
                raise ModelError(
                    f"{key} {value!r} is not one of {', '.join(allowed)}",
                    fix=f"set {key} to one of {', '.join(allowed)}",
                )

    def check(self, covariates: Sequence[str], n_post_visits: int) -> None:
        """Refuse combinations that cannot be fitted, naming the key and the fix."""
        unknown = [c for c in self.covariates_by_visit if c not in covariates]
        if unknown:
            raise ModelError(
                f"covariates_by_visit names {unknown[0]!r}, which is not one of the covariates "
                f"({', '.join(covariates) or 'none'})",
                fix="add it to covariates, or remove it from covariates_by_visit",
            )
        if n_post_visits < 2 and (self.baseline == "by_visit" or self.covariates_by_visit):
            key = "baseline: by_visit" if self.baseline == "by_visit" else "covariates_by_visit"
            raise ModelError(
                f"{key} needs at least two post-baseline visits (the trial has {n_post_visits})",
                fix="use baseline: main and no covariates_by_visit with a single follow-up visit",
            )

    def words(self) -> str:
        """The choices as one sentence fragment for the methods text."""
        response = "change from baseline" if self.response == "change" else "value"
        base = {
            "main": "adjusted for the baseline value (one common slope)",
            "by_visit": "adjusted for the baseline value with a separate slope at each visit "
            "(baseline-by-visit interaction)",
            "none": "not adjusted for the baseline value",
        }[self.baseline]
        by_visit = (
            f"; {', '.join(self.covariates_by_visit)} also interact with visit"
            if self.covariates_by_visit
            else ""
        )
        weights = (
            "factor levels weighted equally in LS means"
            if self.lsmeans_weights == "equal"
            else "factor levels weighted by their observed frequency in LS means"
        )
        return f"response: {response}; {base}{by_visit}; {weights}"


@dataclass(frozen=True)
class Subgroup:
    """A subgroup factor added to the mean model with its visit and arm interactions.

    Attributes
    ----------
    name
        Name shown in tables (the covariate's name).
    column
        Internal column of the prepared rows holding the level label of every row.
    levels
        Levels in display order; the first is the reference level of the coding.
    """

    name: str
    column: str
    levels: tuple[str, ...]


@dataclass(frozen=True)
class _Factor:
    """One factor or numeric variable of the design, coded for the rows used."""

    key: str
    name: str
    column: str  # internal column of the prepared rows it codes
    matrix: np.ndarray  # treatment coding (numeric: the value)
    sum_matrix: np.ndarray  # sum-to-zero coding (numeric: the value)
    labels: list[str]
    levels: list[str] | None  # None for numeric
    average: np.ndarray  # grid value when averaged over: mean or level weights

    def at(self, level: str | None) -> np.ndarray:
        """Grid coding at one level (a fixed factor), or averaged when ``level`` is None."""
        if level is None or self.levels is None:
            return self.average
        out = np.zeros(len(self.levels) - 1)
        where = self.levels.index(level)
        if where > 0:
            out[where - 1] = 1.0
        return out

    def code(self, values: np.ndarray) -> np.ndarray:
        """Treatment coding of new rows; a level the model never saw codes as all zeros."""
        if self.levels is None:
            return values.astype(float)[:, None]
        return (values[:, None] == np.asarray(self.levels[1:], dtype=object)[None, :]).astype(float)


@dataclass(frozen=True)
class Term:
    """A model term: the factors it multiplies and the design columns it owns."""

    name: str
    factors: tuple[str, ...]
    columns: slice


@dataclass(frozen=True)
class MeanModel:
    """The design of one fit, its terms, LS-mean grid and description.

    Attributes
    ----------
    x
        Design matrix of the rows used (rows x coefficients), R's column order.
    names
        Coefficient names as R prints them.
    terms
        Terms in column order (the intercept first).
    spec
        The plan's choices this model follows.
    arms, visits
        Arm labels (reference first) and visits of the rows used.
    subgroup
        The subgroup factor, if one was added.
    reference_grid
        Coefficient name -> value of the averaged variables in LS means.
    formula
        R-style formula of the mean model.
    """

    x: np.ndarray
    names: list[str]
    terms: tuple[Term, ...]
    spec: MeanSpec
    arms: tuple[str, ...]
    visits: list[str]
    factors: dict[str, _Factor] = field(repr=False)
    subgroup: Subgroup | None
    reference_grid: dict[str, float]
    formula: str

    @property
    def n_coef(self) -> int:
        """Number of coefficients."""
        return int(self.x.shape[1])

    def grid_row(self, arm: str, visit: str, level: str | None = None) -> np.ndarray:
        """Contrast row of the LS mean of ``arm`` at ``visit`` (and subgroup ``level``)."""
        fixed = {"arm": arm, "visit": visit, "subgroup": level}
        parts: list[np.ndarray] = []
        for term in self.terms:
            if not term.factors:
                parts.append(np.ones(1))
                continue
            row = np.ones(1)
            for key in term.factors:
                coded = self.factors[key].at(fixed.get(key))
                row = (coded[:, None] * row[None, :]).ravel()
            parts.append(row)
        return np.concatenate(parts)

    def design(self, frame: pd.DataFrame, arm: str | None = None) -> np.ndarray:
        """Design rows, coded as ``x``, for other prepared rows (e.g. unobserved visits).

        ``arm`` puts every row in that arm (the reference arm's mean of a subject, for
        reference-based imputation). A factor level the model did not see codes as zeros, so
        its coefficient counts as 0 (not estimable from the rows used).
        """
        n = len(frame)
        coded: dict[str, np.ndarray] = {}
        for key, f in self.factors.items():
            if key == "arm" and arm is not None:
                values = np.full(n, arm, dtype=object)
            elif f.levels is None:
                values = frame[f.column].to_numpy(dtype=float)
            else:
                values = frame[f.column].astype(str).to_numpy().astype(object)
            coded[key] = f.code(values)
        return np.column_stack([_product([coded[k] for k in t.factors], n) for t in self.terms])

    def effect_row(self, visit: str, level: str | None = None) -> np.ndarray:
        """Contrast row of treatment minus control at ``visit`` (and subgroup ``level``)."""
        return self.grid_row(self.arms[1], visit, level) - self.grid_row(self.arms[0], visit, level)

    def type3(self) -> dict[str, np.ndarray]:
        """Type III hypothesis matrix of every term but the intercept, keyed by term name.

        Raises
        ------
        ModelError
            If the model is not hierarchical (a sum-coded term leaves the column space).
        """
        sum_x = np.column_stack([self._columns(t, coding="sum") for t in self.terms])
        # x @ m = sum_x, so beta = m @ beta_sum and beta_sum = m^-1 @ beta. x has full column
        # rank (checked before any fit) and the system is exact, so the normal equations give m;
        # unlike a least-squares solver they cost one product with the tall design.
        # Columns scaled to unit length first, so that a covariate's units do not square into
        # the condition of x'x.
        norms = np.linalg.norm(self.x, axis=0)
        norms[norms == 0] = 1.0
        scaled = self.x / norms
        m = np.linalg.solve(scaled.T @ scaled, scaled.T @ sum_x) / norms[:, None]
        scale = max(float(np.abs(sum_x).max()), 1.0)
        if float(np.abs(self.x @ m - sum_x).max()) > 1e-8 * scale:
            raise ModelError(
                "Type III tests need a hierarchical model (every interaction with its main "
                "effects)",
                fix="add the main effect of every covariate that interacts with visit",
            )
        inverse = np.linalg.inv(m)
        return {
            t.name: self._reference_basis(t) @ inverse[t.columns, :]
            for t in self.terms
            if t.factors and t.columns.stop > t.columns.start
        }

    def _reference_basis(self, term: Term) -> np.ndarray:
        """Map a term's sum-coded coefficients to differences from the reference level.

        The hypothesis is the same either way, but Satterthwaite's multi-row df depend on how
        its rows are written; SAS writes Type 3 rows as "level j minus the reference level".
        """
        out: np.ndarray = np.ones((1, 1))
        for key in term.factors:
            levels = self.factors[key].levels
            block: np.ndarray
            if levels is None:
                block = np.ones((1, 1))
            else:
                k = len(levels)
                # Sum coding: level j < k has coefficient s_j, the last level -sum(s).
                level = np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])
                block = level[1:] - level[0]
            # The first factor varies fastest within a term's columns.
            out = np.kron(block, out)
        return out

    def _columns(self, term: Term, *, coding: str) -> np.ndarray:
        n = self.x.shape[0]
        block = np.ones((n, 1))
        for key in term.factors:
            factor = self.factors[key]
            cols = factor.sum_matrix if coding == "sum" else factor.matrix
            block = (cols[:, :, None] * block[:, None, :]).reshape(n, -1)
        return block

    def describe(self, response: str) -> str:
        """The mean model in words."""
        covs = [f.name for k, f in self.factors.items() if k.startswith("cov")]
        adjust = f", adjusted for {', '.join(covs)}" if covs else ""
        sub = ""
        if self.subgroup is not None:
            sub = (
                f", with {self.subgroup.name}, its interaction with visit and the "
                f"arm-by-{self.subgroup.name}-by-visit interaction"
            )
        return (
            f"{response} at each post-baseline visit on arm, visit and their interaction"
            f"{adjust}{sub} ({self.spec.words()})"
        )


def _level_codes(values: np.ndarray, levels: Sequence[str]) -> np.ndarray:
    """Each row's position among ``levels`` (-1: none of them)."""
    return pd.Index(list(levels), dtype=object).get_indexer(pd.Index(values, dtype=object))


def _categorical(
    key: str, name: str, column: str, code: np.ndarray, levels: Sequence[str], weights: Weights
) -> _Factor:
    """A factor from each row's level code (rows x levels compares of integers, not text)."""
    levels = list(levels)
    k = len(levels)
    dummies = (code[:, None] == np.arange(1, k)[None, :]).astype(float)
    # contr.sum: level j (j < k) codes e_j, the last level codes -1 in every column.
    sum_cols = (code[:, None] == np.arange(k - 1)[None, :]).astype(float)
    sum_cols -= (code == k - 1).astype(float)[:, None]
    if weights == "proportional":
        freq = np.array([(code == j).mean() for j in range(1, k)])
    else:
        freq = np.full(k - 1, 1.0 / k)
    return _Factor(
        key=key,
        name=name,
        column=column,
        matrix=dummies,
        sum_matrix=sum_cols,
        labels=[f"{name}{lev}" for lev in levels[1:]],
        levels=levels,
        average=freq,
    )


def _numeric(key: str, name: str, column: str, values: np.ndarray) -> _Factor:
    x = values.astype(float)[:, None]
    return _Factor(
        key=key,
        name=name,
        column=column,
        matrix=x,
        sum_matrix=x,
        labels=[name],
        levels=None,
        average=np.array([float(x.mean())]),
    )


def _covariate_factor(spec: Covariate, key: str, frame: pd.DataFrame, weights: Weights) -> _Factor:
    values = frame[spec.column].to_numpy()
    if not spec.categorical:
        return _numeric(key, spec.name, spec.column, values)
    levels = sorted(set(values.tolist()))
    if len(levels) < 2:
        raise ModelError(
            f"categorical covariate has a single level ({levels[0]!r}) among the rows used",
            column=spec.name,
            fix="drop the covariate from the model",
        )
    code = _level_codes(values, levels)
    return _categorical(key, spec.name, spec.column, code, levels, weights)


def _factors(
    obs: ObservedRows,
    spec: MeanSpec,
    covariates: Sequence[Covariate],
    names: dict[str, str],
    subgroup: Subgroup | None,
) -> dict[str, _Factor]:
    frame = obs.frame
    weights = spec.lsmeans_weights
    out: dict[str, _Factor] = {}
    if spec.baseline != "none":
        out["baseline"] = _numeric(
            "baseline", names.get("baseline", "baseline"), BASELINE, frame[BASELINE].to_numpy()
        )
    for i, cov in enumerate(covariates):
        out[f"cov{i}"] = _covariate_factor(cov, f"cov{i}", frame, weights)
    # The observed rows carry their arm and visit codes (positions in obs.arms, obs.visits).
    out["arm"] = _categorical("arm", names["arm"], ARM, obs.arm_code, list(obs.arms), "equal")
    out["visit"] = _categorical("visit", names["visit"], VISIT, obs.visit_code, obs.visits, "equal")
    if subgroup is not None:
        levels = list(subgroup.levels)
        code = _level_codes(frame[subgroup.column].to_numpy(), levels)
        out["subgroup"] = _categorical(
            "subgroup", subgroup.name, subgroup.column, code, levels, weights
        )
    return out


def _term_list(
    spec: MeanSpec, covariates: Sequence[Covariate], has_subgroup: bool
) -> list[tuple[str, tuple[str, ...]]]:
    """Terms as (name, factor keys), in R's order: main effects, then interactions."""
    cov_keys = {c.name: f"cov{i}" for i, c in enumerate(covariates)}
    terms: list[tuple[str, tuple[str, ...]]] = [("(Intercept)", ())]
    if spec.baseline != "none":
        terms.append(("baseline", ("baseline",)))
    terms += [(c.name, (cov_keys[c.name],)) for c in covariates]
    terms += [("arm", ("arm",)), ("visit", ("visit",))]
    if has_subgroup:
        terms.append(("subgroup", ("subgroup",)))
    if spec.baseline == "by_visit":
        terms.append(("baseline:visit", ("baseline", "visit")))
    terms += [(f"{c}:visit", (cov_keys[c], "visit")) for c in spec.covariates_by_visit]
    if has_subgroup:
        terms.append(("subgroup:visit", ("subgroup", "visit")))
        terms.append(("arm:subgroup", ("arm", "subgroup")))
    terms.append(("arm:visit", ("arm", "visit")))
    if has_subgroup:
        terms.append(("arm:subgroup:visit", ("arm", "subgroup", "visit")))
    return terms


def _product(matrices: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Columns of an interaction term: row-wise products, the first factor varying fastest."""
    block = np.ones((n, 1))
    for m in matrices:
        block = (m[:, :, None] * block[:, None, :]).reshape(n, -1)
    return block


def _formula(response: str, terms: Sequence[Term], factors: dict[str, _Factor]) -> str:
    pieces = [":".join(r_name(factors[k].name) for k in t.factors) for t in terms if t.factors]
    return f"{r_name(response)} ~ {' + '.join(pieces)}"


def build_mean_model(
    obs: ObservedRows,
    spec: MeanSpec,
    *,
    covariates: Sequence[Covariate],
    names: dict[str, str],
    subgroup: Subgroup | None = None,
) -> MeanModel:
    """Build the design, terms and LS-mean grid of a mean model for the rows used.

    Parameters
    ----------
    obs
        The rows with an observed response (see :func:`~trialflow.stats.design.observed_rows`).
    spec
        The plan's choices.
    covariates
        Adjustment covariates (a subgroup's own covariate is left out by the caller).
    names
        The caller's column names by role (``arm``, ``visit``, ``baseline``, ``response``),
        used in coefficient names and the formula.
    subgroup
        A subgroup factor to add with its visit and arm interactions, or None.

    Returns
    -------
    MeanModel
    """
    factors = _factors(obs, spec, covariates, names, subgroup)
    terms: list[Term] = []
    blocks: list[np.ndarray] = []
    labels: list[str] = []
    start = 0
    n = obs.n_observations
    for name, keys in _term_list(spec, covariates, subgroup is not None):
        block = _product([factors[k].matrix for k in keys], n)
        term_labels = ["(Intercept)"] if not keys else [""]
        for key in keys:
            cols = [r_name(label) for label in factors[key].labels]
            term_labels = [c if not t else f"{t}:{c}" for c in cols for t in term_labels]
        blocks.append(block)
        labels += term_labels
        terms.append(Term(name=name, factors=keys, columns=slice(start, start + block.shape[1])))
        start += block.shape[1]
    grid: dict[str, float] = {}
    for key, f in factors.items():
        if key not in ("arm", "visit", "subgroup"):
            grid.update(zip([r_name(x) for x in f.labels], f.average.tolist(), strict=True))
    return MeanModel(
        x=np.column_stack(blocks),
        names=labels,
        terms=tuple(terms),
        spec=spec,
        arms=obs.arms,
        visits=list(obs.visits),
        factors=factors,
        subgroup=subgroup,
        reference_grid=grid,
        formula=_formula(names.get("response", "response"), terms, factors),
    )
