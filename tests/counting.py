"""Participants counted again from the analysis datasets, without the models' own code.

Only the observed values (ADEFF ``value``), the visit labels and the covariates of ADSL are
read: not ADEFF's derived ``baseline``, ``change`` or ``anl01fl``, so a derivation bug cannot
hide a counting bug. The definitions are the README's (What you get, ``tables/effects.csv``):
``n`` is the participants observed at the visit, ``n_analysed`` the participants in the model,
where a model takes a participant only with the data it needs (config/README.md: the MMRM and
the ANCOVA model change from baseline adjusted for the baseline value and the covariates, the
LMM models the value at every visit, baseline included, adjusted for the covariates).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from trialflow.config import TrialConfig
from trialflow.report import ReportInputs


def observed_rows(adeff: pd.DataFrame, adsl: pd.DataFrame, trial: TrialConfig) -> pd.DataFrame:
    """One row per outcome, subject and visit, with what each model needs of it as flags.

    ``change``: the value and the subject's baseline value observed, covariates complete, a
    post-baseline visit (the rows of the MMRM and the ANCOVA). ``value``: the value observed
    and covariates complete, at any visit (the rows of the LMM).
    """
    covariates = [c.name for c in trial.covariates]
    complete = adsl.set_index("subject_id")[covariates].notna().all(axis=1)
    rows = adeff.loc[:, ["outcome", "subject_id", "arm", "visit", "value"]].copy()
    at_baseline = rows.loc[rows["visit"] == trial.baseline_visit]
    baseline = at_baseline.set_index(["outcome", "subject_id"])["value"]
    keys = pd.MultiIndex.from_frame(rows[["outcome", "subject_id"]])
    has_covariates = rows["subject_id"].map(complete).fillna(False).astype(bool)
    rows["value_ok"] = rows["value"].notna() & has_covariates
    rows["change_ok"] = (
        rows["value_ok"]
        & baseline.reindex(keys).notna().to_numpy()
        & (rows["visit"] != trial.baseline_visit)
    )
    return rows


def count(rows: pd.DataFrame, flag: str, by: list[str]) -> pd.Series:
    """Distinct subjects of the rows with ``flag`` set, by the columns ``by``."""
    return rows.loc[rows[flag]].groupby(by)["subject_id"].nunique()


# The rows each analysis of effects.csv models.
FLAG = {"mmrm": "change_ok", "ancova": "change_ok", "lmm": "value_ok"}


def expected_n(rows: pd.DataFrame, analysis: str, outcome: str, visit: str) -> int:
    """``n`` of an effects.csv row: both arms' participants observed at the visit."""
    by_visit = count(rows, FLAG[analysis], ["outcome", "visit"])
    return int(by_visit.get((outcome, visit), 0))


def expected_n_analysed(rows: pd.DataFrame, analysis: str, outcome: str, visit: str) -> int:
    """``n_analysed`` of an effects.csv row: the participants in the model.

    The MMRM: every participant with at least one change from baseline (the model uses every
    observed post-baseline visit); the LMM: every participant with at least one value, baseline
    included; the ANCOVA is fitted at each visit to those observed there.
    """
    if analysis == "ancova":
        return expected_n(rows, analysis, outcome, visit)
    per_outcome = count(rows, FLAG[analysis], ["outcome"])
    return int(per_outcome.get(outcome, 0))


def report_inputs(trial: TrialConfig, clean: Any, d: Any, result: Any, **more: Any) -> ReportInputs:
    """The report's inputs from a trial's cleaning, derivation and analysis, held in memory."""
    return ReportInputs(
        trial=trial, adsl=d.adsl, adeff=d.adeff, flow=d.flow, queries=clean.queries,
        effects=result.effects, lsmeans=result.lsmeans, anova=result.anova,
        effect_sizes=result.effect_sizes, models=result.models,
        covariate_types=clean.covariate_types, figures={}, input_files=[],
        residuals=result.residuals, type3=result.type3, subgroups=result.subgroups, **more,
    )  # fmt: skip
