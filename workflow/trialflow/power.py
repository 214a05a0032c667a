"""Power and sample size of a planned trial by simulation: scenarios, shards and the power table.

A power scenario (``config/power/<name>.yaml``) is a simulator scenario (the format of
``config/scenarios/``) plus the candidate sample sizes per arm, the effects, the number of
replicates, the number of shards and a seed. Every cell (sample size x effect, and effect 0 for
the type I error) is simulated ``replicates`` times and each simulated trial is analysed by the
primary MMRM (:mod:`trialflow.power_sim`). The replicates are split into shards, one job each;
each replicate's random stream depends only on the seed, its sample size and its number, so the
gathered table is byte-identical whatever the number of shards, cores or jobs.

:func:`load_power_scenario` validates a scenario (JSON schema, then the checks a schema cannot
express), :func:`run_shard` runs one shard, :func:`gather` combines the shards and
:func:`power_table` summarises them (:data:`POWER_COLUMNS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trialflow.config import SCHEMA_DIR, TRIAL_NAME, did_you_mean, load_yaml, validate_schema
from trialflow.errors import ConfigError, DataError, ModelError
from trialflow.power_sim import (
    REPLICATE_COLUMNS,
    AnalysisPlan,
    TrialModel,
    run_replicates,
)

__all__ = [
    "POWER_COLUMNS",
    "POWER_DIR",
    "PowerScenario",
    "available_scenarios",
    "gather",
    "load_power_scenario",
    "missing_scenario",
    "parse_power_scenario",
    "power_table",
    "run_shard",
    "scenario_path",
]

POWER_SCHEMA = SCHEMA_DIR / "power.schema.yaml"
POWER_DIR = "config/power"
POWER_COLUMNS: tuple[str, ...] = (
    "n_per_arm",
    "effect",
    "replicates",
    "power",
    "power_mcse",
    "type1_error",
    "coverage",
    "mean_estimate",
)
# Seconds per MMRM fit of a 200-subject, 3-post-baseline-visit trial on one core (measured by
# benchmarks/bench_power.py), used only to size the jobs' runtime request.
_SECONDS_PER_FIT = 0.1


@dataclass(frozen=True)
class PowerScenario:
    """A validated power scenario."""

    name: str
    source: str
    content: Mapping[str, Any]  # the scenario with its defaults, as echoed on the power page
    model: TrialModel
    plan: AnalysisPlan
    n_per_arm: tuple[int, ...]
    effects: tuple[float, ...]
    replicates: int
    shards: int

    @property
    def outcome(self) -> Mapping[str, Any]:
        """The simulator's entry of the analysed outcome."""
        return next(o for o in self.content["outcomes"] if o["name"] == self.model.outcome)

    @property
    def visit(self) -> str:
        """Label of the primary visit."""
        return self.model.labels[self.model.primary]

    @property
    def cells(self) -> list[tuple[int, float]]:
        """Every (sample size per arm, effect) simulated, effect 0 included, in table order."""
        effects = sorted({0.0, *self.effects})
        return [(n, e) for n in self.n_per_arm for e in effects]

    def shard_replicates(self, shard: int) -> range:
        """Replicate numbers of shard ``shard`` (0-based): consecutive, as even as possible."""
        if not 0 <= shard < self.shards:
            raise ConfigError(
                f"shard {shard} does not exist: the scenario has {self.shards} shard(s)",
                file=self.source,
                fix=f"use a shard number from 0 to {self.shards - 1}",
            )
        start = shard * self.replicates // self.shards
        return range(start, (shard + 1) * self.replicates // self.shards)

    def runtime_minutes(self) -> int:
        """A generous runtime request for one shard's job (for cluster schedulers)."""
        fits = len(self.cells) * math.ceil(self.replicates / self.shards)
        size = sum(max(n / 100.0, 1.0) for n in self.n_per_arm) / len(self.n_per_arm)
        return 10 + math.ceil(3.0 * fits * size * _SECONDS_PER_FIT / 60.0)


def available_scenarios(project: Path) -> list[str]:
    """Names of the power scenarios in ``config/power/``."""
    folder = project / POWER_DIR
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def scenario_path(project: Path, name: object) -> Path:
    """The file of the scenario ``name`` (``--config power=<name>``), checked to exist."""
    known = available_scenarios(project)
    listing = ", ".join(known) or f"none yet in {POWER_DIR}/"
    if not isinstance(name, str) or not TRIAL_NAME.fullmatch(name):
        raise ConfigError(
            f"power scenario name {name!r} is not allowed: use letters, digits, _ and - only",
            file="config/config.yaml",
            fix=f"name a file of {POWER_DIR}/ without .yaml (available: {listing})",
        )
    path = project / POWER_DIR / f"{name}.yaml"
    if not path.is_file():
        hint = did_you_mean(name, known) if known else f"none yet in {POWER_DIR}/"
        raise ConfigError(
            f"power scenario {name!r} not found ({hint})",
            file=f"{POWER_DIR}/{name}.yaml",
            fix=f"create it (see config/README.md, 'Power scenarios') or use one of: {listing}",
        )
    return path


def missing_scenario(known: Sequence[str]) -> ConfigError:
    """The error of the power target run without a scenario: how to name one, and which exist."""
    listing = ", ".join(known) or f"none yet: add one to {POWER_DIR}/"
    return ConfigError(
        "the power target needs a power scenario",
        file="config/config.yaml",
        fix=f"name one: snakemake --cores 2 power --config power=<name> (available: {listing})",
    )


def load_power_scenario(path: str | Path, *, name: str | None = None) -> PowerScenario:
    """Read, validate and parse a power scenario file."""
    p = Path(path)
    raw = load_yaml(p)
    if "n" in raw:
        # A simulator scenario copied as it is: its one sample size becomes the candidates.
        raise ConfigError(
            "key n: a power scenario has candidate sample sizes, not the simulator's n",
            file=str(p),
            fix="replace n with n_per_arm: a list of sample sizes per arm, e.g. [20, 30, 40]",
        )
    content = validate_schema(raw, POWER_SCHEMA, source=str(p))
    return parse_power_scenario(content, name=name or p.stem, source=str(p))


Fail = Callable[[str, str, str], ConfigError]


def parse_power_scenario(content: Mapping[str, Any], *, name: str, source: str) -> PowerScenario:
    """Check a schema-validated scenario for consistency and build a :class:`PowerScenario`.

    Raises
    ------
    ConfigError
        Naming the file, the key and the fix.
    """

    def fail(key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(f"key {key}: {message}", file=source, fix=fix)

    arms = (str(content["arms"]["control"]), str(content["arms"]["treatment"]))
    if arms[0] == arms[1]:
        raise fail("arms", "control and treatment have the same label", "give two labels")
    labels, weeks = _visits(content["visits"], fail)
    analysis = content["analysis"]
    names = [str(o["name"]) for o in content["outcomes"]]
    outcome = str(analysis.get("outcome", names[0]))
    if outcome not in names:
        raise fail(
            "analysis.outcome", f"{outcome!r} is not an outcome", did_you_mean(outcome, names)
        )
    visit = str(analysis.get("visit", labels[-1]))
    if visit not in labels[1:]:
        raise fail(
            "analysis.visit",
            f"{visit!r} is not a post-baseline visit ({did_you_mean(visit, labels[1:])})",
            "name a visit after the first (the first visit is the baseline)",
        )
    dropout = dict(content.get("dropout") or {"mechanism": "none"})
    drawn = _drawn_outcomes(content["outcomes"], outcome, dropout, arms, fail)
    for i, entry in enumerate(content["outcomes"]):
        if entry["name"] in {e["name"] for e in drawn}:
            _check_outcome(entry, f"outcomes[{i}]", arms, weeks, fail)
    if content["shards"] > content["replicates"]:
        raise fail(
            "shards",
            f"{content['shards']} shards for {content['replicates']} replicates",
            "use at most as many shards as replicates",
        )
    model = TrialModel(
        arms=arms,
        labels=tuple(labels),
        weeks=weeks,
        outcomes=tuple(drawn),
        outcome=outcome,
        primary=labels.index(visit),
        dropout=dropout,
        sporadic_missing=float(content["sporadic_missing"]),
        seed=int(content["seed"]),
    )
    plan = _plan(analysis, model, fail)
    return PowerScenario(
        name=name,
        source=source,
        content=content,
        model=model,
        plan=plan,
        n_per_arm=tuple(sorted(int(n) for n in content["n_per_arm"])),
        effects=tuple(sorted(float(e) + 0.0 for e in content["effects"])),
        replicates=int(content["replicates"]),
        shards=int(content["shards"]),
    )


def _visits(visits: Sequence[Mapping[str, Any]], fail: Fail) -> tuple[list[str], np.ndarray]:
    labels = [str(v["label"]) for v in visits]
    weeks = np.array([float(v["week"]) for v in visits])
    for i in range(1, len(labels)):
        if labels[i] in labels[:i]:
            raise fail(f"visits[{i}]", f"visit {labels[i]!r} is listed twice", "list it once")
        if weeks[i] <= weeks[i - 1]:
            raise fail(
                f"visits[{i}]",
                f"week {weeks[i]:g} of {labels[i]!r} is not after week {weeks[i - 1]:g}",
                "list visits in time order with increasing weeks",
            )
    return labels, weeks


def _drawn_outcomes(
    outcomes: Sequence[Mapping[str, Any]],
    outcome: str,
    dropout: Mapping[str, Any],
    arms: tuple[str, str],
    fail: Fail,
) -> list[Mapping[str, Any]]:
    """The outcome entries a replicate draws: the analysed one and the dropout driver."""
    names = [str(o["name"]) for o in outcomes]
    needed = {outcome}
    if str(dropout["mechanism"]).lower() != "none":
        driver = str(dropout.get("driver", outcome))
        if driver not in names:
            raise fail(
                "dropout.driver", f"{driver!r} is not an outcome", did_you_mean(driver, names)
            )
        needed.add(driver)
        rates = dropout.get("rate") or {}
        for arm in arms:
            if arm not in rates:
                raise fail(
                    "dropout.rate",
                    f"no dropout rate for arm {arm!r}",
                    f"give the cumulative dropout of both arms, e.g. {{{arms[0]}: 0.2, "
                    f"{arms[1]}: 0.2}}",
                )
    return [o for o in outcomes if o["name"] in needed]


def _check_outcome(
    entry: Mapping[str, Any], key: str, arms: tuple[str, str], weeks: np.ndarray, fail: Fail
) -> None:
    """Per-visit lengths, positive SDs, a valid correlation and a clip range in order."""
    k = len(weeks)
    sd = np.asarray(entry["sd"], dtype=float)
    if sd.size != k or np.any(sd <= 0):
        raise fail(f"{key}.sd", f"needs {k} positive SDs, one per visit", f"write {k} values > 0")
    for arm in arms:
        change = entry["change"].get(arm)
        if change is None or len(change) != k:
            raise fail(
                f"{key}.change.{arm}",
                f"needs the mean change of arm {arm!r} at each of the {k} visits",
                f"write {k} numbers (the first, at baseline, is 0)",
            )
    lo, hi = entry.get("clip", [-math.inf, math.inf])
    if not lo < hi:
        raise fail(f"{key}.clip", f"min {lo:g} is not below max {hi:g}", "write [min, max]")
    _check_correlation(entry.get("correlation"), f"{key}.correlation", k, fail)


def _check_correlation(spec: Mapping[str, Any] | None, key: str, k: int, fail: Fail) -> None:
    if spec is None:
        return
    kind = spec["structure"]
    if kind in ("ar1", "exchangeable") and "rho" not in spec:
        raise fail(key, f"structure {kind} needs rho", "add rho: <correlation>, e.g. 0.7")
    if kind == "exchangeable" and spec["rho"] <= -1.0 / (k - 1):
        raise fail(
            f"{key}.rho", "too negative for a valid correlation", f"use rho > {-1 / (k - 1):.3g}"
        )
    if kind == "matrix":
        r = np.asarray(spec.get("matrix", []), dtype=float)
        valid = r.shape == (k, k) and np.allclose(r, r.T) and np.allclose(np.diag(r), 1.0)
        if not valid or np.linalg.eigvalsh(r).min() <= 0:
            raise fail(
                f"{key}.matrix",
                f"is not a {k} x {k} correlation matrix (symmetric, 1 on the diagonal, "
                "positive definite)",
                f"write {k} rows of {k} correlations",
            )


def _plan(analysis: Mapping[str, Any], model: TrialModel, fail: Fail) -> AnalysisPlan:
    plan = AnalysisPlan(
        covariance=str(analysis["covariance"]),
        fallback=tuple(str(c) for c in analysis["fallback"]),
        df=str(analysis["df"]),
        alpha=float(analysis["alpha"]),
        response=str(analysis["response"]),
        baseline=str(analysis["baseline"]),
    )
    try:
        plan.spec.check([], len(model.labels) - 1)
    except ModelError as exc:
        raise fail("analysis.baseline", exc.message, exc.fix or "") from None
    return plan


def run_shard(scenario: PowerScenario, shard: int) -> pd.DataFrame:
    """Simulate and analyse shard ``shard`` of every cell (one row per cell and replicate)."""
    return run_replicates(
        scenario.model, scenario.plan, scenario.cells, scenario.shard_replicates(shard)
    )


def gather(shards: Sequence[pd.DataFrame], scenario: PowerScenario) -> pd.DataFrame:
    """Every replicate of every cell, in a fixed order, checked to be complete and unique."""
    frame = pd.concat(list(shards), ignore_index=True)[list(REPLICATE_COLUMNS)]
    frame = frame.sort_values(["n_per_arm", "effect", "replicate"], kind="stable")
    frame = frame.reset_index(drop=True)
    expected = [(n, e, r) for n, e in scenario.cells for r in range(scenario.replicates)]
    found = list(zip(frame["n_per_arm"], frame["effect"], frame["replicate"], strict=True))
    if found != expected:
        raise DataError(
            f"the shards hold {len(found)} replicate results where the scenario has "
            f"{len(expected)} (a shard of another version of the scenario?)",
            file=scenario.source,
            fix="rerun the power target so that every shard is recomputed",
        )
    return frame


def power_table(replicates: pd.DataFrame, scenario: PowerScenario) -> pd.DataFrame:
    """Power, its Monte Carlo standard error, type I error, CI coverage and mean estimate.

    A replicate whose MMRM could not be fitted counts as not significant in power and type I
    error; coverage and the mean estimate are over the fitted replicates.
    """
    frame = replicates.assign(
        significant=replicates["p_value"] < scenario.plan.alpha,
        covered=(replicates["ci_lower"] <= replicates["effect"])
        & (replicates["effect"] <= replicates["ci_upper"]),
        fitted=replicates["estimate"].notna(),
    )
    cells = {key: group for key, group in frame.groupby(["n_per_arm", "effect"], sort=True)}
    rows = []
    for n in scenario.n_per_arm:
        null = cells[(n, 0.0)]
        for effect in scenario.effects:
            group = cells[(n, effect)]
            fitted = group.loc[group["fitted"]]
            power = float(group["significant"].mean())
            rows.append(
                {
                    "n_per_arm": n,
                    "effect": effect,
                    "replicates": len(group),
                    "power": power,
                    "power_mcse": math.sqrt(power * (1.0 - power) / len(group)),
                    "type1_error": float(null["significant"].mean()),
                    "coverage": float(fitted["covered"].mean()) if len(fitted) else math.nan,
                    "mean_estimate": float(fitted["estimate"].mean()) if len(fitted) else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=list(POWER_COLUMNS))


def sample_size_for(table: pd.DataFrame, effect: float, target: float) -> int | None:
    """The smallest candidate sample size per arm from which power stays at or above
    ``target`` (None if the largest candidate does not reach it)."""
    rows = table.loc[table["effect"] == effect].sort_values("n_per_arm")
    below = rows.loc[rows["power"] < target, "n_per_arm"]
    above = rows.loc[rows["power"] >= target, "n_per_arm"]
    if below.empty:
        return int(rows["n_per_arm"].iloc[0]) if len(rows) else None
    later = above[above > below.max()]
    return int(later.min()) if len(later) else None
