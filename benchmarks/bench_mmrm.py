"""Benchmark of trialflow's MMRM against R nlme::gls and lme4::lmer on a large simulated trial.

Simulates 10,000 subjects with three post-baseline visits, an unstructured covariance and about
10% dropout per later visit, times :func:`trialflow.stats.mmrm.fit_mmrm` (median of three runs)
and, when ``Rscript`` is available, the same unstructured-covariance model in ``nlme::gls``
(corSymm + varIdent, REML) and the usual ``lme4::lmer`` approximation
(``(0 + visit | subject)`` random effects) on the same data, written to a temporary directory.
R times cover the model fit only, not reading the file. Prints a table of seconds and the ratio
to ``fit_mmrm``.

Run from the package root: ``python benchmarks/bench_mmrm.py [--subjects 10000] [--no-r]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trialflow.stats.mmrm import fit_mmrm

VISITS = ["week4", "week8", "week12"]
COVARIANCE = np.array([[4.0, 2.4, 2.0], [2.4, 5.0, 3.2], [2.0, 3.2, 6.0]])

R_PROGRAM = r"""
suppressPackageStartupMessages({library(nlme); library(lme4)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
d$arm <- factor(d$arm, levels = c("control", "active"))
d$visit <- factor(d$visit, levels = c("week4", "week8", "week12"))
d$visit_k <- as.integer(d$visit)
method <- args[2]
t <- system.time({
  if (method == "gls") {
    fit <- gls(change ~ baseline + age + arm * visit, data = d, method = "REML",
               correlation = corSymm(form = ~ visit_k | subject),
               weights = varIdent(form = ~ 1 | visit))
  } else {
    fit <- lmer(change ~ baseline + age + arm * visit + (0 + visit | subject), data = d,
                REML = TRUE,
                control = lmerControl(check.nobs.vs.nRE = "ignore",
                                      check.nobs.vs.nlev = "ignore"))
  }
})[["elapsed"]]
cat(sprintf("%.6f\n", t))
"""


def simulate(n_subjects: int, seed: int = 1) -> pd.DataFrame:
    """Long table of a two-arm trial with monotone dropout (10% at each later visit)."""
    rng = np.random.default_rng(seed)
    treated = rng.integers(0, 2, n_subjects)
    baseline = rng.normal(50.0, 10.0, n_subjects)
    age = rng.normal(55.0, 10.0, n_subjects).round(1)
    mean = np.outer(treated, [1.0, 2.0, 3.0]) + 0.3 * (baseline[:, None] - 50.0)
    y = mean + rng.multivariate_normal(np.zeros(3), COVARIANCE, size=n_subjects)
    observed = np.ones((n_subjects, 3), dtype=bool)
    for j in (1, 2):
        observed[:, j] = observed[:, j - 1] & (rng.uniform(size=n_subjects) >= 0.1)
    i, j = np.nonzero(observed)
    return pd.DataFrame(
        {
            "subject": [f"S{k:05d}" for k in i],
            "arm": np.where(treated[i] == 1, "active", "control"),
            "visit": np.asarray(VISITS)[j],
            "baseline": baseline[i].round(3),
            "age": age[i],
            "change": y[i, j].round(4),
        }
    )


def time_trialflow(data: pd.DataFrame, repeats: int = 3) -> float:
    """Median wall time of fit_mmrm over ``repeats`` runs."""
    times = []
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
            covariance="us",
            reference_arm="control",
            visit_order=VISITS,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_r(data: pd.DataFrame, method: str, timeout: float) -> float | None:
    """Seconds R spends fitting (``gls`` or ``lmer``), or None if R is absent or fails."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "trial.csv"
        program = Path(tmp) / "fit.R"
        data.to_csv(csv, index=False)
        program.write_text(R_PROGRAM)
        try:
            done = subprocess.run(
                [rscript, str(program), str(csv), method],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except (subprocess.SubprocessError, OSError):
            return None
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--no-r", action="store_true", help="time trialflow only")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per R fit")
    args = parser.parse_args()

    data = simulate(args.subjects)
    rows: list[tuple[str, float | None]] = [("trialflow fit_mmrm (us)", time_trialflow(data))]
    if not args.no_r:
        rows.append(("R nlme::gls corSymm+varIdent", time_r(data, "gls", args.timeout)))
        rows.append(("R lme4::lmer (0 + visit | subject)", time_r(data, "lmer", args.timeout)))
    base = rows[0][1] or float("nan")
    print(f"{args.subjects} subjects, {len(data)} observations, 3 visits")
    print(f"{'method':<38} {'seconds':>10} {'ratio':>8}")
    for name, seconds in rows:
        if seconds is None:
            print(f"{name:<38} {'n/a':>10} {'n/a':>8}")
        else:
            print(f"{name:<38} {seconds:>10.3f} {seconds / base:>8.1f}")


if __name__ == "__main__":
    main()
