"""One replicate of a planned trial: simulated into arrays and analysed by the primary MMRM.

A power scenario is run thousands of times, so each replicate does only what changes from one
replicate to the next. The data come from the simulator's own outcome and dropout models
(:func:`trialflow.simulate.outcome_values`, :func:`trialflow.simulate.monotone_dropout`),
drawn straight into arrays: no files are written, read or cleaned. The MMRM's mean model is
built once per sample size (:func:`build_design`) by the engine's own
:func:`~trialflow.stats.mmrm.prepare_mmrm` on a template of every subject at every visit. Its
design is linear in the baseline value, ``X = X0 + baseline * X1``, so a replicate only scales
one precomputed matrix and keeps the rows it observed. The REML fit, its covariance fallbacks
and the small-sample degrees of freedom are those of :mod:`trialflow.stats.mmrm`, as in the
trial's analysis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from trialflow.errors import ModelError
from trialflow.simulate import monotone_dropout, outcome_values
from trialflow.stats.design import BASELINE
from trialflow.stats.inference import contrast_df, kr_adjusted
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import _ingredients, _RemlProblem, fit_covariance, intervals, prepare_mmrm

__all__ = [
    "REPLICATE_COLUMNS",
    "AnalysisPlan",
    "Design",
    "TrialModel",
    "build_design",
    "fit_replicate",
    "run_replicates",
    "simulate_replicate",
]

# One row per replicate in the shard files: the cell, the replicate and the primary contrast.
REPLICATE_COLUMNS: tuple[str, ...] = (
    "n_per_arm",
    "effect",
    "replicate",
    "estimate",
    "std_error",
    "df",
    "ci_lower",
    "ci_upper",
    "p_value",
    "covariance",
    "note",
)


@dataclass(frozen=True)
class AnalysisPlan:
    """The primary MMRM fitted to every replicate (the trial description's ``analysis`` keys)."""

    covariance: str = "us"
    fallback: tuple[str, ...] = ("toep", "ar1", "cs")
    df: str = "satterthwaite"
    alpha: float = 0.05
    response: str = "change"
    baseline: str = "main"

    @property
    def spec(self) -> MeanSpec:
        return MeanSpec(response=self.response, baseline=self.baseline)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrialModel:
    """What the simulator needs for one planned trial, apart from its size and effect.

    ``outcomes`` are the simulator's outcome entries that are drawn: the analysed outcome and,
    if another outcome drives dropout, that one, in the scenario's order.
    """

    arms: tuple[str, str]  # control, treatment
    labels: tuple[str, ...]  # visit labels; the first is the baseline
    weeks: np.ndarray
    outcomes: tuple[Mapping[str, Any], ...]
    outcome: str  # name of the analysed outcome
    primary: int  # position of the primary visit among all visits
    dropout: Mapping[str, Any]
    sporadic_missing: float
    seed: int

    def with_effect(self, effect: float) -> tuple[Mapping[str, Any], ...]:
        """The outcome entries with the treatment arm's mean change set to ``effect`` above the
        control arm's at the primary visit.

        The difference keeps the scenario's shape over visits (scaled to ``effect`` at the
        primary visit); a scenario without a difference there gets one growing linearly with
        the week.
        """
        control, treatment = self.arms
        out = []
        for entry in self.outcomes:
            if entry["name"] != self.outcome:
                out.append(entry)
                continue
            base = np.asarray(entry["change"][control], dtype=float)
            gap = np.asarray(entry["change"][treatment], dtype=float) - base
            if gap[self.primary] != 0:
                shape = gap / gap[self.primary]
            else:
                shape = (self.weeks - self.weeks[0]) / (self.weeks[self.primary] - self.weeks[0])
            change = {control: base.tolist(), treatment: (base + effect * shape).tolist()}
            out.append({**entry, "change": change})
        return tuple(out)

    def generator(self, n_per_arm: int, replicate: int) -> np.random.Generator:
        """The random stream of one replicate at one sample size.

        It depends on the scenario's seed, the sample size and the replicate's number only, so a
        replicate gives the same result in whichever shard or job it runs, and every effect of
        the scenario is applied to the same simulated trials (common random numbers: power
        curves are not blurred by simulation noise between effects, and the type I error comes
        from the very trials the power does, without the effect).
        """
        return np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(n_per_arm, replicate))
        )


@dataclass(frozen=True)
class Design:
    """One sample size: the MMRM's design at every subject x post-baseline visit, built once.

    Rows are subject-major (subject ``i``, post-baseline visit ``j`` at row ``i * m + j``);
    controls are subjects ``0 .. n-1``, treated subjects ``n .. 2n-1``.
    """

    n_per_arm: int
    x0: np.ndarray  # design with the baseline value 0
    x1: np.ndarray  # change of the design per unit of baseline value
    contrast: np.ndarray  # treatment minus control at the primary visit
    post_weeks: list[float]

    @property
    def n_post(self) -> int:
        return len(self.post_weeks)

    @property
    def treated(self) -> np.ndarray:
        """1 for the treatment arm, 0 for the control arm, subject by subject."""
        return np.repeat(np.array([0, 1]), self.n_per_arm)


def build_design(model: TrialModel, plan: AnalysisPlan, n_per_arm: int) -> Design:
    """The mean model of the primary MMRM for ``n_per_arm`` subjects per arm.

    Raises
    ------
    ModelError
        If the plan cannot be fitted to this design (e.g. a baseline-by-visit slope with a
        single post-baseline visit).
    """
    post = list(model.labels[1:])
    m, n = len(post), 2 * n_per_arm
    subject = np.repeat(np.arange(n), m)
    template = pd.DataFrame(
        {
            "subject": [f"{i:07d}" for i in subject],
            "arm": np.asarray(model.arms, dtype=object)[subject // n_per_arm],
            "visit": np.tile(post, n),
            "week": np.tile(model.weeks[1:], n),
            # Any values that vary between subjects: the design is rebuilt below at 0 and 1.
            "baseline": subject.astype(float),
            "y": np.zeros(n * m),
        }
    )
    ready = prepare_mmrm(
        template,
        response="y",
        subject="subject",
        visit="visit",
        arm="arm",
        baseline=None if plan.baseline == "none" else "baseline",
        covariates=(),
        reference_arm=model.arms[0],
        visit_order=post,
        week="week",
        spec=plan.spec,
    )
    frame = ready.obs.frame
    # The engine sorts its rows; each goes back to its subject-major position.
    order = np.asarray(ready.obs.subjects, dtype=int)[ready.obs.subject_code] * m
    order += ready.obs.visit_code
    x0 = np.empty((n * m, ready.mean.n_coef))
    x1 = np.zeros_like(x0)
    if plan.baseline == "none":
        x0[order] = ready.mean.x
    else:
        x0[order] = ready.mean.design(frame.assign(**{BASELINE: 0.0}))
        x1[order] = ready.mean.design(frame.assign(**{BASELINE: 1.0})) - x0[order]
    return Design(
        n_per_arm=n_per_arm,
        x0=x0,
        x1=x1,
        contrast=ready.mean.effect_row(model.labels[model.primary]),
        post_weeks=[float(w) for w in model.weeks[1:]],
    )


def simulate_replicate(
    model: TrialModel, n_per_arm: int, effect: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One simulated trial: the analysed outcome (subjects x visits, rounded to its
    ``decimals`` as the simulator writes it) and which post-baseline values are observed
    (subjects x post-baseline visits)."""
    arm_of = np.repeat(np.asarray(model.arms, dtype=object), n_per_arm)
    arms = list(model.arms)
    entries = model.with_effect(effect)
    values = {e["name"]: outcome_values(e, arm_of, arms, model.weeks, rng) for e in entries}
    last = monotone_dropout(model.dropout, values, model.outcome, arm_of, arms, rng)
    k = len(model.labels)
    attended = np.arange(1, k)[None, :] <= last[:, None]
    sporadic = rng.random((len(arm_of), k - 1)) < model.sporadic_missing
    decimals = next(e for e in entries if e["name"] == model.outcome).get("decimals")
    y = values[model.outcome]
    return (y if decimals is None else np.round(y, int(decimals))), attended & ~sporadic


@dataclass(frozen=True)
class Estimate:
    """The primary contrast of one replicate (NaN with a note when the MMRM failed)."""

    estimate: float = math.nan
    std_error: float = math.nan
    df: float = math.nan
    ci_lower: float = math.nan
    ci_upper: float = math.nan
    p_value: float = math.nan
    covariance: str = ""
    note: str = ""


def fit_replicate(
    design: Design, plan: AnalysisPlan, values: np.ndarray, observed: np.ndarray
) -> Estimate:
    """Fit the primary MMRM to one replicate; the treatment difference at the primary visit."""
    m = design.n_post
    rows = np.flatnonzero(observed.ravel())
    subject, visit = np.divmod(rows, m)
    counts = np.zeros((2, m), dtype=np.int64)
    np.add.at(counts, (design.treated[subject], visit), 1)
    if np.any(counts == 0):
        return Estimate(note="an arm has no observed value at a post-baseline visit")
    baseline = values[:, 0]
    post = values[:, 1:] - baseline[:, None] if plan.response == "change" else values[:, 1:]
    x = design.x0[rows] + baseline[subject, None] * design.x1[rows]
    _, code = np.unique(subject, return_inverse=True)
    problem = _RemlProblem(x, post.ravel()[rows], code, visit, int(code.max()) + 1, m)
    try:
        choice = fit_covariance(problem, plan.covariance, plan.fallback, design.post_weeks)
    except ModelError as exc:
        return Estimate(note=exc.message)
    kenward_roger = plan.df.startswith("kenward_roger")
    ingredients = _ingredients(problem, choice.fit, kenward_roger=kenward_roger)
    covariance = (
        kr_adjusted(ingredients, linear=plan.df == "kenward_roger_linear")
        if kenward_roger
        else ingredients.phi
    )
    row = design.contrast[None, :]
    estimate = row @ ingredients.beta
    std_error = np.sqrt(row @ covariance @ row.T)[0]
    df = contrast_df(ingredients, row, plan.df)
    lower, upper, p_value = intervals(estimate, std_error, df, plan.alpha)
    return Estimate(
        estimate=float(estimate[0]),
        std_error=float(std_error[0]),
        df=float(df[0]),
        ci_lower=float(lower[0]),
        ci_upper=float(upper[0]),
        p_value=float(p_value[0]),
        covariance=choice.fit.structure.code,
    )


def run_replicates(
    model: TrialModel,
    plan: AnalysisPlan,
    cells: Sequence[tuple[int, float]],
    replicates: range,
) -> pd.DataFrame:
    """Every cell (sample size per arm, effect) for the replicates in ``replicates``.

    One row per cell and replicate, in :data:`REPLICATE_COLUMNS`, sorted by cell then replicate.
    BLAS runs single-threaded: its threads only slow down matrices this small (parallelism comes
    from running shards side by side).
    """
    rows: list[dict[str, Any]] = []
    designs: dict[int, Design] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for n_per_arm, effect in cells:
            if n_per_arm not in designs:
                designs[n_per_arm] = build_design(model, plan, n_per_arm)
            for r in replicates:
                values, observed = simulate_replicate(
                    model, n_per_arm, effect, model.generator(n_per_arm, r)
                )
                fit = fit_replicate(designs[n_per_arm], plan, values, observed)
                rows.append(
                    {"n_per_arm": n_per_arm, "effect": effect, "replicate": r, **asdict(fit)}
                )
    return pd.DataFrame(rows, columns=list(REPLICATE_COLUMNS))
