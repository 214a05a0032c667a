"""Rubin's rules against R mice.

Reference program: tests/reference/make_pooling_references.R (mice::pool.scalar on seeded sets
of estimates and variances; output tests/reference/output/pooling.csv, one row per case).
Tolerance: 1e-12 relative (the same closed-form formulas in double precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.pooling import rubin

REF = pd.read_csv(
    Path(__file__).resolve().parents[1] / "reference" / "output" / "pooling.csv",
    dtype={"estimates": str, "variances": str},
)


@pytest.mark.parametrize("case", REF["case"].tolist())
def test_rubin_matches_mice_pool_scalar(case: str) -> None:
    row = REF.set_index("case").loc[case]
    q = np.array(row["estimates"].split(";"), dtype=float)
    u = np.array(row["variances"].split(";"), dtype=float)
    df_complete = None if pd.isna(row["df_complete"]) else float(row["df_complete"])
    pooled = rubin(q, u, df_complete=df_complete)
    assert pooled.m == row["m"]
    for ours, theirs in (
        (pooled.estimate, row["qbar"]),
        (pooled.within, row["ubar"]),
        (pooled.between, row["b"]),
        (pooled.total, row["t"]),
        (pooled.df, row["df"]),
        (pooled.relative_increase, row["r"]),
        (pooled.fmi, row["fmi"]),
    ):
        assert ours == pytest.approx(float(theirs), rel=1e-12)


def test_no_between_imputation_variance_gives_the_complete_data_df_limit() -> None:
    # B = 0: nothing is missing in effect; the Barnard-Rubin df are the observed-data df
    # (df_com + 1) / (df_com + 3) * df_com, and the interval is the complete-data one.
    pooled = rubin(np.full(4, 2.0), np.full(4, 0.25), df_complete=30)
    assert pooled.between == 0 and pooled.std_error == pytest.approx(0.5)
    assert pooled.df == pytest.approx(31 / 33 * 30)
    lo, hi, p = pooled.interval(0.05)
    assert (hi - lo) / 2 == pytest.approx(0.5 * stats.t.ppf(0.975, 31 / 33 * 30), rel=1e-12)
    assert 0 < p < 0.001


BAD = {
    "one imputation": ([1.0], [0.1]),
    "lengths differ": ([1.0, 2.0], [0.1]),
    "missing estimate": ([1.0, np.nan], [0.1, 0.1]),
    "negative variance": ([1.0, 2.0], [0.1, -0.1]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_a_reason(case: str) -> None:
    q, u = BAD[case]
    with pytest.raises(ModelError, match=r"imputation|variance"):
        rubin(np.array(q), np.array(u))
