"""Seeded simulator of two-arm longitudinal trials, used for the bundled synthetic data.

A scenario (``config/scenarios/<name>.yaml``) gives the arms and their sizes, the visits,
baseline covariates, and per outcome: baseline mean and SD, the mean change from baseline per
arm and visit, visit-specific SDs and the within-subject correlation across visits. Dropout is
monotone with a mechanism (MCAR, MAR on the last observed value of a driver outcome, or MNAR on
the current, unobserved value) calibrated to a target cumulative rate per arm; sporadic missing
cells are MCAR. Optional ``anomalies`` inject a few realistic data-entry problems so that the
cleaning stage has something to report. Same scenario and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from trialflow.config import load_yaml
from trialflow.errors import ConfigError


@dataclass(frozen=True)
class SimulatedTrial:
    """Raw-looking tables as a trial would export them (column names from the scenario)."""

    subjects: pd.DataFrame
    visits: pd.DataFrame
    adverse_events: pd.DataFrame | None = None
    screening: pd.DataFrame | None = None


def _correlation(spec: Mapping[str, Any], weeks: np.ndarray) -> np.ndarray:
    k = len(weeks)
    kind = spec.get("structure", "ar1")
    if kind == "matrix":
        r = np.asarray(spec["matrix"], dtype=float)
    elif kind == "exchangeable":
        r = np.full((k, k), float(spec["rho"]))
        np.fill_diagonal(r, 1.0)
    elif kind == "ar1":
        # Correlation decays with the visit distance in steps (as in the AR(1) model).
        lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
        r = float(spec["rho"]) ** lag
    else:
        raise ConfigError(f"unknown correlation structure {kind!r}")
    if r.shape != (k, k):
        raise ConfigError(f"correlation matrix must be {k} x {k}")
    return r


def _fmt(values: np.ndarray, decimals: int) -> list[str]:
    return ["" if np.isnan(v) else f"{v:.{decimals}f}" for v in values]


def outcome_values(
    out: Mapping[str, Any],
    arm_of: np.ndarray,
    arms: list[str],
    weeks: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One outcome at every visit (subjects x visits): baseline mean + the arm's mean change +
    correlated visit-specific noise, clipped to the outcome's ``clip`` range."""
    n, k = len(arm_of), len(weeks)
    sd = np.asarray(out["sd"], dtype=float)
    corr = _correlation(out.get("correlation", {"structure": "ar1", "rho": 0.7}), weeks)
    chol = np.linalg.cholesky(corr * np.outer(sd, sd))
    noise = rng.standard_normal((n, k)) @ chol.T
    mean = np.empty((n, k))
    for arm in arms:
        mean[arm_of == arm] = out["baseline_mean"] + np.asarray(out["change"][arm], dtype=float)
    lo, hi = out.get("clip", [-np.inf, np.inf])
    return np.clip(mean + noise, lo, hi)


def monotone_dropout(
    drop: Mapping[str, Any],
    values: dict[str, np.ndarray],
    default_driver: str,
    arm_of: np.ndarray,
    arms: list[str],
    rng: np.random.Generator,
) -> np.ndarray:
    """Position of each subject's last attended visit under monotone dropout.

    One hazard per post-baseline visit, calibrated to the arm's cumulative rate; under MAR it
    moves with the last observed value of the driver outcome, under MNAR with the current one.
    """
    n, k = values[default_driver].shape
    last = np.full(n, k - 1)
    mech = drop.get("mechanism", "none").upper()
    if mech == "NONE":
        return last
    driver = values[drop.get("driver", default_driver)]
    z = (driver - driver[:, :1].mean()) / driver[:, :1].std()
    sign = 1.0 if drop.get("direction", "higher") == "higher" else -1.0
    strength = 0.0 if mech == "MCAR" else float(drop.get("strength", 1.0))
    for arm in arms:
        rate = float(drop["rate"][arm])
        hazard = 1 - (1 - rate) ** (1 / (k - 1))
        members = np.flatnonzero(arm_of == arm)
        for j in range(1, k):
            at_risk = members[last[members] == k - 1]
            # MAR: previous (observed) value; MNAR: current (unobserved) value.
            zz = z[at_risk, j - 1 if mech == "MAR" else j]
            p = expit(logit(hazard) + sign * strength * zz)
            out_now = at_risk[rng.random(len(at_risk)) < p]
            last[out_now] = j - 1
    return last


def simulate(scenario: dict[str, Any]) -> SimulatedTrial:
    """Simulate one trial from a scenario mapping (see ``config/scenarios/*.yaml``).

    Returns
    -------
    SimulatedTrial
        ``subjects``: one row per randomized subject (identifier, arm, covariates);
        ``visits``: one row per attended visit (identifier, visit label, outcomes), cells empty
        where missing; rows after dropout are absent.
    """
    rng = np.random.default_rng(int(scenario["seed"]))
    cols = {"subject_id": "subject_id", "arm": "arm", "visit": "visit"}
    cols.update(scenario.get("columns", {}))
    arms: list[str] = [scenario["arms"]["control"], scenario["arms"]["treatment"]]
    sizes = [int(scenario["n"][a]) for a in arms]
    visits = scenario["visits"]
    labels = [v["label"] for v in visits]
    weeks = np.array([float(v["week"]) for v in visits])
    k = len(visits)
    n = sum(sizes)

    # Randomization list: permuted, so arm order does not follow identifiers.
    arm_of = np.repeat(np.array(arms, dtype=object), sizes)
    arm_of = arm_of[rng.permutation(n)]
    prefix = scenario.get("id_prefix", "S")
    ids = [f"{prefix}{i + 1:03d}" for i in range(n)]
    subjects = pd.DataFrame({cols["subject_id"]: ids, cols["arm"]: arm_of})
    for cov in scenario.get("covariates", []):
        if cov["type"] == "normal":
            x = rng.normal(cov["mean"], cov["sd"], n)
            lo, hi = cov.get("range", [-np.inf, np.inf])
            subjects[cov["column"]] = _fmt(np.clip(x, lo, hi), int(cov.get("decimals", 0)))
        else:
            levels = list(cov["levels"])
            subjects[cov["column"]] = rng.choice(levels, size=n, p=cov["probs"])

    # Outcomes: baseline mean + arm-specific mean change + correlated visit-specific noise.
    values = {
        out["name"]: outcome_values(out, arm_of, arms, weeks, rng) for out in scenario["outcomes"]
    }
    drop = scenario.get("dropout", {"mechanism": "none"})
    last = monotone_dropout(drop, values, scenario["outcomes"][0]["name"], arm_of, arms, rng)

    rows = []
    sporadic = float(scenario.get("sporadic_missing", 0.0))
    for i in range(n):
        for j in range(last[i] + 1):
            row = {cols["subject_id"]: ids[i], cols["visit"]: labels[j]}
            for out in scenario["outcomes"]:
                v = values[out["name"]][i, j]
                if j > 0 and rng.random() < sporadic:
                    v = np.nan
                row[out["column"]] = _fmt(np.array([v]), int(out["decimals"]))[0]
            rows.append(row)
    visits_df = pd.DataFrame(rows)
    reasons = list(drop.get("reasons", []))
    if reasons:
        # Drawn last, so that adding reasons to a scenario leaves every value unchanged.
        column = scenario.get("columns", {}).get("withdrawal_reason", "withdrawal_reason")
        picks = rng.choice(len(reasons), size=n)
        subjects[column] = [reasons[picks[i]] if last[i] < k - 1 else "" for i in range(n)]
    deviation = scenario.get("protocol_deviation")
    if deviation:
        # Drawn after everything else, so that adding it leaves every other value unchanged.
        picks = rng.choice(len(deviation["levels"]), size=n, p=deviation["probs"])
        subjects[deviation["column"]] = [deviation["levels"][i] for i in picks]
    harms = scenario.get("adverse_events")
    events = (
        _adverse_events(harms, rng, ids, arm_of, weeks[last], cols["subject_id"]) if harms else None
    )
    log = scenario.get("screening")
    screened = _screening_log(log, rng, ids, cols["subject_id"]) if log else None
    return _inject(
        SimulatedTrial(
            subjects=subjects, visits=visits_df, adverse_events=events, screening=screened
        ),
        scenario.get("anomalies", {}),
    )


def _screening_log(
    spec: dict[str, Any], rng: np.random.Generator, ids: list[str], id_column: str
) -> pd.DataFrame:
    """One row per person screened: the randomized (identifier) and the excluded (reason),
    in a random order. Drawn last, so that adding it leaves every other value unchanged."""
    rows = [{id_column: i, "reason": ""} for i in ids]
    for reason, count in spec["excluded"].items():
        rows += [{id_column: "", "reason": reason}] * int(count)
    order = rng.permutation(len(rows))
    frame = pd.DataFrame([rows[i] for i in order], columns=[id_column, "reason"])
    frame.insert(0, "screening_number", [f"SCR{i + 1:03d}" for i in range(len(frame))])
    return frame


def _adverse_events(
    spec: dict[str, Any],
    rng: np.random.Generator,
    ids: list[str],
    arm_of: np.ndarray,
    follow_up: np.ndarray,
    id_column: str,
) -> pd.DataFrame:
    """Events per participant and term (Poisson, rate per arm), onset during follow-up.

    Drawn after everything else, so that adding them leaves every other value unchanged.
    """
    severity = spec.get("severity", {"levels": ["mild"], "probs": [1.0]})
    rows = []
    for term, rates in spec["terms"].items():
        counts = rng.poisson([float(rates[a]) for a in arm_of])
        for i in np.flatnonzero(counts):
            for _ in range(int(counts[i])):
                rows.append(
                    {
                        id_column: ids[i],
                        "term": term,
                        "severity": str(rng.choice(severity["levels"], p=severity["probs"])),
                        "serious": "yes" if rng.random() < float(spec["serious"]) else "no",
                        "related": "yes" if rng.random() < float(spec["related"]) else "no",
                        "week": int(rng.integers(0, int(follow_up[i]) + 1)),
                    }
                )
    frame = pd.DataFrame(
        rows, columns=[id_column, "term", "severity", "serious", "related", "week"]
    )
    return frame.sort_values([id_column, "week", "term"], kind="stable").reset_index(drop=True)


def _inject(trial: SimulatedTrial, spec: dict[str, Any]) -> SimulatedTrial:
    """Plant documented data-entry problems at fixed rows (deterministic, no randomness)."""
    subjects, visits = trial.subjects.copy(), trial.visits.copy()
    for item in spec.get("visits", []):
        row, column, kind = int(item["row"]), item.get("column"), item["kind"]
        if kind == "value":
            visits.loc[row, column] = str(item["value"])
        elif kind == "pad_label":
            visits.loc[row, column] = f" {visits.loc[row, column]} "
        elif kind == "duplicate_row":
            visits = pd.concat(
                [visits.iloc[: row + 1], visits.iloc[[row]], visits.iloc[row + 1 :]],
                ignore_index=True,
            )
    for item in spec.get("subjects", []):
        row, column, kind = int(item["row"]), item.get("column"), item["kind"]
        if kind == "value":
            subjects.loc[row, column] = str(item["value"])
        elif kind == "pad_label":
            subjects.loc[row, column] = f" {subjects.loc[row, column]} "
        elif kind == "upper_label":
            subjects.loc[row, column] = str(subjects.loc[row, column]).upper()
    return SimulatedTrial(
        subjects=subjects,
        visits=visits,
        adverse_events=trial.adverse_events,
        screening=trial.screening,
    )


def write_trial(trial: SimulatedTrial, folder: str | Path) -> list[Path]:
    """Write ``subjects.csv`` and ``visits.csv`` to ``folder`` (byte-reproducible)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "subjects.csv", out / "visits.csv"]
    trial.subjects.to_csv(paths[0], index=False, lineterminator="\n")
    trial.visits.to_csv(paths[1], index=False, lineterminator="\n")
    for name, table in (("adverse_events", trial.adverse_events), ("screening", trial.screening)):
        if table is not None:
            paths.append(out / f"{name}.csv")
            table.to_csv(paths[-1], index=False, lineterminator="\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line: ``trialflow-simulate config/scenarios/<name>.yaml data/raw/<name>``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("scenario", help="scenario YAML file")
    parser.add_argument("folder", help="folder to write subjects.csv and visits.csv to")
    args = parser.parse_args(argv)
    for path in write_trial(simulate(load_yaml(args.scenario)), args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
