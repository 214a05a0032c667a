"""Benchmark: the LMM's own REML engine against statsmodels MixedLM and R lme4::lmer.

Usage: python benchmarks/bench_lmm.py [--no-r] [--mixedlm-max N] [n_subjects ...]

Simulates the exercise_education scenario (5 visits, MAR dropout) with n subjects (default
1,000, 10,000 and 100,000), runs clean and derive, and fits the primary outcome's LMM
(``value ~ age + sex + arm * visit``, every visit including baseline) with a random intercept
and with a random intercept and slope on week / 12, three ways on the same rows:

* trialflow: :func:`trialflow.stats.lmm.fit_lmm` as the analysis plan calls it (validation,
  design, fit, Satterthwaite df, tables), median of three runs;
* statsmodels MixedLM (the former engine, the baseline): ``MixedLM.from_formula`` and its REML
  fit from its own default start, once, up to ``--mixedlm-max`` subjects (default 10,000:
  beyond, one fit takes minutes);
* R ``lme4::lmer`` with its default optimizer, when ``Rscript`` is installed (and not
  ``--no-r``): the rows are written to a temporary CSV and only the ``lmer`` call is timed.

Prints seconds and the ratio of each to trialflow, and the largest difference of the
treatment effects (arm-by-visit estimates) from trialflow's. Set OPENBLAS_NUM_THREADS=1 for
stable timings.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scaled_trial import ROOT, scaled_trial
from statsmodels.regression.mixed_linear_model import MixedLM

from trialflow.analysis import mean_spec, outcome_data, outcome_plan
from trialflow.clean import read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.derive import derive
from trialflow.stats.lmm import fit_lmm

RANDOM = {"intercept": "(1 | subject_id)", "slope": "(1 + I(week / 12) | subject_id)"}

R_PROGRAM = r"""
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1], stringsAsFactors = FALSE)
d$arm <- factor(d$arm, levels = c(args[3], args[4]))
d$visit <- factor(d$visit, levels = strsplit(args[5], ",")[[1]])
d$subject_id <- factor(d$subject_id)
f <- as.formula(paste("value ~ age + sex + arm * visit +", args[2]))
t <- system.time(fit <- lmer(f, data = d, REML = TRUE))[["elapsed"]]
cf <- fixef(fit)
cat(paste(cf[grepl(":visit", names(cf))], collapse = ","), "\n")
cat(sprintf("%.6f\n", t))
"""


def _lmm_rows(n: int, folder: Path) -> tuple[pd.DataFrame, TrialConfig]:
    """The primary outcome's rows as the analysis plan hands them to the LMM."""
    trial = load_trial(scaled_trial(n, folder))
    d = derive(read_and_clean(trial, root=ROOT), trial)
    rows = outcome_data(d.adeff, d.adsl, trial, trial.primary_outcomes[0])
    return outcome_plan(rows, trial, mean_spec(trial.options)).data, trial


def _trialflow(data: pd.DataFrame, trial: TrialConfig, slope: bool) -> tuple[float, np.ndarray]:
    """Median seconds of three fit_lmm runs, and the treatment effects."""
    times, effects = [], np.empty(0)
    for _ in range(3):
        start = time.perf_counter()
        result = fit_lmm(
            data,
            response="value",
            subject="subject_id",
            visit="visit",
            arm="arm",
            covariates=[c.name for c in trial.covariates],
            reference_arm=trial.control,
            visit_order=list(trial.visit_labels),
            baseline_visit=trial.baseline_visit,
            random_slope=slope,
            week="week",
        )
        times.append(time.perf_counter() - start)
        effects = result.effects["estimate"].to_numpy()
    return statistics.median(times), effects


def _mixedlm(data: pd.DataFrame, trial: TrialConfig, slope: bool) -> tuple[float, np.ndarray]:
    """Seconds of one MixedLM fit (formula and REML fit), and the treatment effects."""
    rows = data.loc[data["value"].notna()].copy()
    rows["time"] = rows["week"] / 12.0
    visits = ", ".join(repr(v) for v in trial.visit_labels)
    formula = (
        f"value ~ age + sex + C(arm, Treatment({trial.control!r})) * "
        f"C(visit, Treatment({trial.baseline_visit!r}), levels=[{visits}])"
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM.from_formula(
            formula, rows, groups="subject_id", re_formula="~ time" if slope else "1"
        )
        fit = model.fit(reml=True)
    seconds = time.perf_counter() - start
    names = [k for k in fit.fe_params.index if ":" in k]
    return seconds, fit.fe_params[names].to_numpy()


def _lmer(data: pd.DataFrame, trial: TrialConfig, slope: bool) -> tuple[float, np.ndarray] | None:
    """Seconds R's lmer spends fitting, and the treatment effects; None without R."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    rows = data.loc[data["value"].notna(), ["subject_id", "arm", "visit", "week", "value"]]
    rows = rows.assign(age=data["age"], sex=data["sex"])
    with tempfile.TemporaryDirectory() as tmp:
        csv, program = Path(tmp) / "rows.csv", Path(tmp) / "fit.R"
        rows.to_csv(csv, index=False)
        program.write_text(R_PROGRAM)
        labels = ",".join(trial.visit_labels)
        arms = [trial.control, trial.treatment]
        command = [rscript, str(program), str(csv), RANDOM["slope" if slope else "intercept"]]
        try:
            done = subprocess.run(
                [*command, *arms, labels], capture_output=True, text=True, check=True
            )
        except (subprocess.SubprocessError, OSError):
            return None
    effects, seconds = done.stdout.strip().splitlines()[-2:]
    return float(seconds), np.array([float(v) for v in effects.split(",")])


def _cells(other: tuple[float, np.ndarray] | None, ours: tuple[float, np.ndarray]) -> str:
    if other is None:
        return f"{'n/a':>9}{'n/a':>8}{'n/a':>10}"
    seconds, effects = other
    diff = float(np.max(np.abs(effects - ours[1])))
    return f"{seconds:9.2f}{seconds / ours[0]:8.1f}{diff:10.1e}"


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--no-r", action="store_true", help="do not time R lme4::lmer")
    parser.add_argument("--mixedlm-max", type=int, default=10_000, help="largest n for MixedLM")
    args = parser.parse_args()
    print(
        f"{'subjects':>9} {'obs':>8} {'random':<10}{'trialflow s':>12}"
        f"{'MixedLM s':>10}{'x tf':>8}{'max |d|':>10}{'lmer s':>9}{'x tf':>8}{'max |d|':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data, trial = _lmm_rows(n, Path(tmp) / f"n{n}")
            n_obs = int(data["value"].notna().sum())
            for name in RANDOM:
                slope = name == "slope"
                ours = _trialflow(data, trial, slope)
                sm = _mixedlm(data, trial, slope) if n <= args.mixedlm_max else None
                r = None if args.no_r else _lmer(data, trial, slope)
                print(
                    f"{n:>9} {n_obs:>8} {name:<10}{ours[0]:12.2f}"
                    f"{_cells(sm, ours)}{_cells(r, ours)}",
                    flush=True,
                )
    print(
        f"x tf: seconds / trialflow's seconds; max |d|: largest difference of the treatment "
        f"effects from trialflow's; MixedLM n/a: not run above --mixedlm-max "
        f"({args.mixedlm_max}); lmer n/a: no Rscript (or --no-r)."
    )


if __name__ == "__main__":
    main()
