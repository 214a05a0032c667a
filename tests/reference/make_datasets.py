"""Simulate the synthetic reference datasets the R programs and the stats tests share.

Writes ``tests/reference/data/<dataset>.csv`` (long format: one row per subject x visit x
outcome) and the index ``tests/reference/data/datasets.csv``. Everything is driven by seeded
numpy generators and written with a fixed float format, so re-running the script reproduces
the files byte for byte. Values are rounded to 4 decimals *before* ``baseline`` and ``change``
are derived, so the derived columns are exact functions of the written values.

Two forms of missing response are produced on purpose: a sporadically missed visit is kept as
a row with an empty ``value``, while visits after a dropout have no row at all.

The two bundled trials are built from their raw files by ``bundled_inputs.py``, which applies
the README's cleaning rules and derives baseline and change without importing trialflow, so the
R references also check trialflow's cleaning and derivation
(``tests/test_reference_inputs.py`` compares the two).

Run from the project root: ``python tests/reference/make_datasets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from bundled_inputs import bundled_dataset, index_entry

DATA_DIR = Path(__file__).resolve().parent / "data"
BUNDLED = ("exercise_education", "weightbearing")
FLOAT_FORMAT = "%.4f"


@dataclass(frozen=True)
class OutcomeSpec:
    """Mean trajectory and covariance of one simulated outcome."""

    name: str
    control_mean: tuple[float, ...]
    treatment_mean: tuple[float, ...]
    sd: tuple[float, ...]
    corr: np.ndarray


def _corr_unstructured(n: int, rho_adjacent: float, decay: float) -> np.ndarray:
    """A positive-definite, not exactly AR(1) / not exactly CS correlation matrix."""
    corr = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            lag = j - i
            # Later visits correlate more strongly with each other than early ones.
            r = rho_adjacent * decay ** (lag - 1) + 0.03 * min(i, j)
            corr[i, j] = corr[j, i] = min(r, 0.9)
    np.linalg.cholesky(corr)  # fails loudly if the matrix is not positive definite
    return corr


def _simulate_outcome(
    rng: np.random.Generator,
    spec: OutcomeSpec,
    is_treatment: np.ndarray,
    shift: np.ndarray,
) -> np.ndarray:
    """Subjects x visits matrix of complete responses."""
    cov = np.outer(spec.sd, spec.sd) * spec.corr
    noise = rng.multivariate_normal(np.zeros(len(spec.sd)), cov, size=is_treatment.size)
    mean = np.where(
        is_treatment[:, None], np.asarray(spec.treatment_mean), np.asarray(spec.control_mean)
    )
    return np.round(mean + shift[:, None] + noise, 4)


def _to_long(
    subjects: pd.DataFrame,
    responses: dict[str, np.ndarray],
    visits: list[str],
    weeks: list[int],
    last_visit: np.ndarray,
    sporadic: dict[str, np.ndarray],
    covariates: list[str],
) -> pd.DataFrame:
    """Long table; rows after a subject's last attended visit are absent."""
    rows: list[dict[str, object]] = []
    for outcome, values in responses.items():
        miss = sporadic[outcome]
        for i, subj in enumerate(subjects.itertuples(index=False)):
            y = values[i].copy()
            y[miss[i]] = np.nan
            base = y[0]
            for k, (visit, week) in enumerate(zip(visits, weeks, strict=True)):
                if k > last_visit[i]:
                    break
                row: dict[str, object] = {
                    "subject_id": subj.subject_id,
                    "arm": subj.arm,
                    "visit": visit,
                    "visit_index": k + 1,
                    "week": week,
                    "outcome": outcome,
                    "value": y[k],
                    "baseline": base,
                    # Change is undefined (empty) at the baseline visit itself.
                    "change": np.nan if k == 0 else round(y[k] - base, 4),
                }
                for cov in covariates:
                    row[cov] = getattr(subj, cov)
                rows.append(row)
    return pd.DataFrame(rows)


def make_sim_dropout(seed: int = 20240501) -> pd.DataFrame:
    """Two arms x 40 subjects, four visits, two outcomes, MAR dropout and sporadic gaps."""
    rng = np.random.default_rng(seed)
    n_per_arm = 40
    visits = ["baseline", "week4", "week8", "week12"]
    weeks = [0, 4, 8, 12]
    arm = np.array(["placebo"] * n_per_arm + ["active"] * n_per_arm)
    arm = arm[rng.permutation(arm.size)]
    n = arm.size
    age = np.round(rng.normal(55.0, 10.0, size=n), 1)
    subjects = pd.DataFrame(
        {"subject_id": [f"D{i + 1:03d}" for i in range(n)], "arm": arm, "age": age}
    )
    is_trt = arm == "active"
    age_c = (age - 55.0) / 10.0

    pain = OutcomeSpec(
        name="pain",
        control_mean=(6.0, 5.7, 5.5, 5.4),
        treatment_mean=(6.0, 5.2, 4.8, 4.5),
        sd=(1.5, 1.6, 1.8, 2.0),
        corr=_corr_unstructured(4, 0.65, 0.85),
    )
    grip = OutcomeSpec(
        name="grip",
        control_mean=(30.0, 30.5, 31.0, 31.2),
        treatment_mean=(30.0, 31.5, 33.0, 34.0),
        sd=(8.0, 8.3, 8.8, 9.5),
        corr=_corr_unstructured(4, 0.75, 0.9),
    )
    responses = {
        "pain": _simulate_outcome(rng, pain, is_trt, 0.3 * age_c),
        "grip": _simulate_outcome(rng, grip, is_trt, -2.0 * age_c),
    }

    # MAR dropout: the hazard of leaving before visit k+1 depends on the pain observed at
    # visit k, so missingness is explained by observed data only.
    last_visit = np.full(n, len(visits) - 1)
    for i in range(n):
        for k in range(len(visits) - 1):
            hazard = 1.0 / (1.0 + np.exp(-(-2.85 + 0.6 * (responses["pain"][i, k] - 6.0))))
            if rng.uniform() < hazard:
                last_visit[i] = k
                break

    sporadic: dict[str, np.ndarray] = {}
    for outcome in responses:
        miss = rng.uniform(size=(n, len(visits))) < 0.05
        miss[:, 0] = rng.uniform(size=n) < 0.03  # baseline is rarely missed
        sporadic[outcome] = miss
    return _to_long(subjects, responses, visits, weeks, last_visit, sporadic, ["age"])


def make_sim_catcov(seed: int = 20240502) -> pd.DataFrame:
    """Two arms x 35 subjects, three visits, one outcome, numeric and categorical covariates."""
    rng = np.random.default_rng(seed)
    n_per_arm = 35
    visits = ["baseline", "week6", "week12"]
    weeks = [0, 6, 12]
    arm = np.array(["usual care"] * n_per_arm + ["exercise"] * n_per_arm)
    arm = arm[rng.permutation(arm.size)]
    n = arm.size
    age = np.round(rng.normal(62.0, 8.0, size=n), 1)
    site = rng.choice(np.array(["A", "B", "C"]), size=n, p=[0.4, 0.35, 0.25])
    sex = rng.choice(np.array(["F", "M"]), size=n)
    subjects = pd.DataFrame(
        {
            "subject_id": [f"C{i + 1:03d}" for i in range(n)],
            "arm": arm,
            "age": age,
            "Site": site,
            "sex": sex,
        }
    )
    is_trt = arm == "exercise"
    shift = (
        -0.25 * (age - 62.0)
        + np.select([site == "B", site == "C"], [3.0, -2.5], 0.0)
        + np.where(sex == "M", 2.0, 0.0)
    )
    function = OutcomeSpec(
        name="function",
        control_mean=(50.0, 51.0, 51.5),
        treatment_mean=(50.0, 54.0, 56.0),
        sd=(10.0, 10.5, 11.5),
        corr=_corr_unstructured(3, 0.7, 0.85),
    )
    responses = {"function": _simulate_outcome(rng, function, is_trt, shift)}

    last_visit = np.full(n, len(visits) - 1)
    for i in rng.choice(n, size=2, replace=False):
        last_visit[i] = 1  # two early withdrawals after week 6
    miss = rng.uniform(size=(n, len(visits))) < 0.02
    miss[:, 0] = False
    return _to_long(
        subjects, responses, visits, weeks, last_visit, {"function": miss}, ["age", "Site", "sex"]
    )


DATASETS: list[dict[str, str]] = [
    {
        "dataset": "sim_dropout",
        "control": "placebo",
        "treatment": "active",
        "baseline_visit": "baseline",
        "covariates": "age",
    },
    {
        "dataset": "sim_catcov",
        "control": "usual care",
        "treatment": "exercise",
        "baseline_visit": "baseline",
        "covariates": "age;Site;sex",
    },
]


def make_lmm_boundary(seed: int = 1) -> pd.DataFrame:
    """30 subjects x 3 visits of normal values centred within subject (no arm effect).

    Every subject's mean is zero, so the REML estimate of the subject variance is on the
    boundary (zero): lme4 reports a singular fit. Not in the index: only the LMM's boundary
    test and tests/reference/make_lmm_boundary_references.R use it.
    """
    rng = np.random.default_rng(seed)
    n = 30
    values = rng.normal(size=(n, 3))
    values -= values.mean(axis=1, keepdims=True)
    return pd.DataFrame(
        {
            "subject_id": np.repeat(np.arange(n), 3),
            "arm": np.repeat(np.where(np.arange(n) % 2 == 0, "ctl", "trt"), 3),
            "visit": np.tile(["v0", "v1", "v2"], n),
            "value": values.ravel(),
        }
    )


def main() -> None:
    """Write every dataset and the index file."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    index = list(DATASETS)
    for name in BUNDLED:
        # Values are written as the raw files hold them (at most 2 decimals): no rounding.
        bundled_dataset(name).to_csv(DATA_DIR / f"{name}.csv", index=False, lineterminator="\n")
        index.append(index_entry(name))
    builders = {"sim_dropout": make_sim_dropout, "sim_catcov": make_sim_catcov}
    for entry in DATASETS:
        frame = builders[entry["dataset"]]()
        frame.to_csv(
            DATA_DIR / f"{entry['dataset']}.csv",
            index=False,
            float_format=FLOAT_FORMAT,
            lineterminator="\n",
        )
    pd.DataFrame(index).to_csv(DATA_DIR / "datasets.csv", index=False, lineterminator="\n")
    # Full precision: rounding would move the subject means off zero.
    make_lmm_boundary().to_csv(
        DATA_DIR / "lmm_boundary.csv", index=False, float_format="%.17g", lineterminator="\n"
    )


if __name__ == "__main__":
    main()
