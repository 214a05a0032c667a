"""Benchmark of the MMRM's degrees-of-freedom methods: what Kenward-Roger costs.

Simulates a two-arm trial (default 10,000 subjects, 5 post-baseline visits, unstructured
covariance, about 10% dropout per later visit) and times :func:`trialflow.fit_mmrm` (median of
three runs) under every df method, for the default mean model and for the SAS-style plan with a
baseline slope per visit. Each row's ratio is against Satterthwaite with the same mean model, in
the same run. Kenward-Roger adds Q_ij for every pair of covariance parameters (15 parameters for
5 visits: 120 distinct pairs), summed once per pattern of observed visits, never per subject.

Run from the package root: ``python benchmarks/bench_df_methods.py [--subjects 10000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from trialflow import MeanSpec, fit_mmrm

METHODS = ("satterthwaite", "kenward_roger", "kenward_roger_linear", "between_within", "residual")


def simulate(n_subjects: int, n_visits: int, seed: int = 1) -> pd.DataFrame:
    """Long table with monotone dropout (10% at each later visit)."""
    rng = np.random.default_rng(seed)
    visits = [f"week{4 * (j + 1)}" for j in range(n_visits)]
    lag = np.abs(np.subtract.outer(np.arange(n_visits), np.arange(n_visits)))
    sd = np.linspace(2.0, 3.0, n_visits)
    covariance = 0.6**lag * np.outer(sd, sd)
    treated = rng.integers(0, 2, n_subjects)
    baseline = rng.normal(50.0, 10.0, n_subjects)
    mean = np.outer(treated, np.arange(1, n_visits + 1)) + 0.3 * (baseline[:, None] - 50.0)
    y = mean + rng.multivariate_normal(np.zeros(n_visits), covariance, size=n_subjects)
    observed = np.ones((n_subjects, n_visits), dtype=bool)
    for j in range(1, n_visits):
        observed[:, j] = observed[:, j - 1] & (rng.uniform(size=n_subjects) >= 0.1)
    i, j = np.nonzero(observed)
    return pd.DataFrame(
        {
            "subject": [f"S{k:06d}" for k in i],
            "arm": np.where(treated[i] == 1, "active", "control"),
            "visit": np.asarray(visits)[j],
            "baseline": baseline[i].round(3),
            "age": rng.normal(55.0, 10.0, n_subjects).round(1)[i],
            "change": y[i, j].round(4),
        }
    )


def seconds(data: pd.DataFrame, method: str, baseline: str, repeats: int) -> float:
    """Median wall time of fit_mmrm over ``repeats`` runs."""
    times = []
    visits = sorted(data["visit"].unique(), key=lambda v: int(v[4:]))
    for _ in range(repeats):
        start = time.perf_counter()
        fit_mmrm(
            data,
            response="change",
            subject="subject",
            visit="visit",
            arm="arm",
            baseline="baseline",
            covariates=["age"],
            reference_arm="control",
            visit_order=visits,
            df_method=method,
            mean=MeanSpec(baseline=baseline),  # type: ignore[arg-type]
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = simulate(args.subjects, args.visits)
    print(f"{args.subjects} subjects, {len(data)} observations, {args.visits} visits, UN")
    print(f"{'mean model':<12} {'df method':<22} {'seconds':>9} {'ratio':>7}")
    for baseline in ("main", "by_visit"):
        base = seconds(data, "satterthwaite", baseline, args.repeats)
        for method in METHODS:
            t = base if method == "satterthwaite" else seconds(data, method, baseline, args.repeats)
            print(f"{baseline:<12} {method:<22} {t:>9.3f} {t / base:>7.2f}")


if __name__ == "__main__":
    main()
