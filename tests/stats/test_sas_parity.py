"""Parity with SAS PROC MIXED listings published for fev_data (see tests/reference/sas/README.md).

Every expected number is read from tests/reference/sas/sas_numbers.csv, whose rows name the
upstream listing and the line the number is printed on; each test below names them too.

Tolerances: printed listings are rounded to 4 decimals (estimates, SE), whole df and 2-decimal
F, so numbers are compared within half a unit of the last printed digit, plus 1e-4 relative
because SAS stops slightly short of the REML optimum (about 1e-4 relative in the covariance
parameters). Satterthwaite df move most with those last digits: printed df are compared within
0.6, the tolerance R mmrm's own tests use for these listings. The
full-precision ``ods output`` files are compared at 1e-4 relative where SAS reached the REML
optimum; where SAS stopped short (its final -2 REML log-likelihood, printed in the same listing,
is above ours), the tolerance is widened and the gap is stated.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from trialflow import ModelResult
from trialflow.stats.covariance import make_structure
from trialflow.stats.inference import contrast_df, kr_adjusted
from trialflow.stats.meanmodel import MeanSpec
from trialflow.stats.mmrm import (
    _fit_structure,
    _ingredients,
    _RemlProblem,
    fit_mmrm,
)

REF = Path(__file__).resolve().parents[1] / "reference"
SAS = pd.read_csv(REF / "sas" / "sas_numbers.csv", dtype=str)
VISITS = ["VIS1", "VIS2", "VIS3", "VIS4"]


def _fev() -> pd.DataFrame:
    subjects = pd.read_csv(REF / "data" / "fev" / "subjects.csv")
    visits = pd.read_csv(REF / "data" / "fev" / "visits.csv")
    rows = visits.loc[visits["visit"] != "baseline"].merge(subjects, on="subject_id")
    return rows


def _sas(listing: str, table: str, quantity: str, **match: str) -> tuple[float, str]:
    rows = SAS.loc[(SAS["listing"] == listing) & (SAS["table"] == table)]
    rows = rows.loc[rows["quantity"] == quantity]
    for key, value in match.items():
        rows = rows.loc[rows[key] == value]
    assert len(rows) == 1, (listing, table, quantity, match)
    row = rows.iloc[0]
    return float(row["value"]), f"{row['listing']}:{row['line']}"


@cache
def fit_un() -> ModelResult:
    # design/SAS/sas_log_reml.txt: MODEL FEV1 = ARMCD AVISIT ARMCD*AVISIT RACE SEX / DDFM=SATTERTH;
    # REPEATED AVISIT / TYPE=UN (value response, no baseline covariate).
    return fit_mmrm(
        _fev(),
        response="FEV1",
        subject="subject_id",
        visit="visit",
        arm="arm",
        baseline=None,
        covariates=["RACE", "SEX"],
        reference_arm="PBO",
        visit_order=VISITS,
        mean=MeanSpec(response="value", baseline="none"),
    )


@pytest.fixture(scope="module")
def un_fit() -> ModelResult:
    return fit_un()


def test_un_satterthwaite_reml_loglik(un_fit: ModelResult) -> None:
    # design/SAS/sas_log_reml.txt:101 (-2 Res Log Like of the final iteration).
    expected, _ = _sas("design/SAS/sas_log_reml.txt", "fit", "neg2loglik_final_iteration")
    assert -2.0 * un_fit.info["loglik"] == pytest.approx(expected, abs=5e-8 * expected)


@pytest.mark.parametrize("visit", VISITS)
def test_un_satterthwaite_treatment_difference(un_fit: ModelResult, visit: str) -> None:
    row = un_fit.effects.set_index("visit").loc[visit]
    for ours, quantity, half_unit in (
        (row["estimate"], "estimate", 5e-5),
        (row["std_error"], "std_error", 5e-5),
        (row["df"], "df", 0.6),
    ):
        expected, where = _sas(
            "design/SAS/sas_log_reml.txt", "diffs", quantity, arm="TRT-PBO", visit=visit
        )
        assert abs(ours - expected) <= half_unit + 1e-4 * abs(expected), (where, ours)


@pytest.mark.parametrize("visit", VISITS)
@pytest.mark.parametrize("arm", ["PBO", "TRT"])
def test_un_satterthwaite_lsmeans(un_fit: ModelResult, visit: str, arm: str) -> None:
    table = un_fit.lsmeans.set_index(["visit", "arm"])
    row = table.loc[(visit, arm)]
    for ours, quantity, half_unit in (
        (row["estimate"], "estimate", 5e-5),
        (row["std_error"], "std_error", 5e-5),
        (row["df"], "df", 0.6),
    ):
        expected, where = _sas(
            "design/SAS/sas_log_reml.txt", "lsmeans", quantity, arm=arm, visit=visit
        )
        assert abs(ours - expected) <= half_unit + 1e-4 * abs(expected), (where, ours)


TYPE3_EFFECTS = [
    ("arm", "ARMCD"),
    ("visit", "AVISIT"),
    ("arm:visit", "AVISIT*ARMCD"),
    ("RACE", "RACE"),
    ("SEX", "SEX"),
]


@pytest.mark.parametrize(("effect", "sas_effect"), TYPE3_EFFECTS)
def test_un_satterthwaite_type3(un_fit: ModelResult, effect: str, sas_effect: str) -> None:
    # design/SAS/sas_log_reml.txt:194-198, "Type 3 Tests of Fixed Effects".
    assert un_fit.type3 is not None
    row = un_fit.type3.set_index("effect").loc[effect]
    num_df, _ = _sas("design/SAS/sas_log_reml.txt", "type3", "num_df", effect=sas_effect)
    den_df, where = _sas("design/SAS/sas_log_reml.txt", "type3", "den_df", effect=sas_effect)
    f_value, _ = _sas("design/SAS/sas_log_reml.txt", "type3", "F", effect=sas_effect)
    assert row["num_df"] == num_df, where
    assert abs(row["den_df"] - den_df) <= 0.6, (where, row["den_df"])
    assert abs(row["F"] - f_value) <= 0.005 + 1e-4 * f_value, (where, row["F"])


def _arm_only(code: str, method: str) -> tuple[float, float, float]:
    """TRT - PBO of MODEL FEV1 = ARMCD; REPEATED AVISIT / TYPE=<code> (the ddfm_covtype runs)."""
    data = _fev().dropna(subset=["FEV1"]).sort_values(["subject_id", "visit"])
    subject_code, subjects = pd.factorize(data["subject_id"], sort=True)
    visit_code = data["visit"].map({v: i for i, v in enumerate(VISITS)}).to_numpy()
    x = np.column_stack([np.ones(len(data)), (data["arm"] == "TRT").to_numpy(dtype=float)])
    problem = _RemlProblem(
        x, data["FEV1"].to_numpy(), np.asarray(subject_code), visit_code, len(subjects), 4
    )
    fit = _fit_structure(problem, make_structure(code, 4))
    assert fit.converged

    ing = _ingredients(problem, fit, kenward_roger=True)
    adjusted = kr_adjusted(ing, linear=method == "kenward_roger_linear")
    row = np.array([[0.0, 1.0]])
    return (
        float(ing.beta[1]),
        float(np.sqrt(adjusted[1, 1])),
        float(contrast_df(ing, row, method)[0]),
    )


# Relative tolerance per structure. SAS reached the optimum for CS and AR(1) (their final
# -2 REML log-likelihoods equal ours to 1e-9 relative: kr_cs.txt:88, kr_ar1.txt:90); for UN,
# CSH and Toeplitz it stopped short by 8e-6, 1e-5 and 1e-6 in -2 REML log-likelihood
# (kr_us.txt:90, kr_csh.txt:91, kr_toep.txt:89), which moves the estimate by up to 3e-5, the
# SE by up to 2e-4 and the df by up to 4e-4 relative.
KR_TOLERANCE = {"cs": 1e-4, "ar1": 1e-4, "us": 5e-4, "csh": 6e-4, "toep": 2e-4}
SAS_FILE = {"us": "us", "cs": "cs", "ar1": "ar1", "csh": "csh", "toep": "toep"}


@pytest.mark.parametrize("code", sorted(KR_TOLERANCE))
@pytest.mark.parametrize(
    ("method", "prefix"), [("kenward_roger", "kr"), ("kenward_roger_linear", "kr1")]
)
def test_kenward_roger_matches_sas(code: str, method: str, prefix: str) -> None:
    listing = f"design/ddfm_covtype/{prefix}_{SAS_FILE[code]}.csv"
    estimate, se, df = _arm_only(code, method)
    for ours, quantity in ((estimate, "estimate"), (se, "std_error"), (df, "df")):
        expected, where = _sas(listing, "diffs", quantity)
        assert_allclose(ours, expected, rtol=KR_TOLERANCE[code], err_msg=where)


def test_kr_linear_differs_from_kr_only_for_nonlinear_structures() -> None:
    # design/ddfm_covtype/kr_ar1.csv:2 and kr1_ar1.csv:2: SE 0.95865 (KR) vs 0.96058 (linear).
    _, se_kr, df_kr = _arm_only("ar1", "kenward_roger")
    _, se_linear, df_linear = _arm_only("ar1", "kenward_roger_linear")
    assert se_linear / se_kr - 1 == pytest.approx(0.96058142305176 / 0.95865439662225 - 1, rel=1e-2)
    assert df_kr == pytest.approx(df_linear, rel=1e-12)
