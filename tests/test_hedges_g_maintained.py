"""Hedges' g against maintained implementations: R effectsize and pingouin.

Promise (README, "The analysis plan", effect sizes): Hedges' g of change with the pooled SD
and the small-sample correction, 95% CI from the large-sample variance. The R reference of
tests/stats/test_effect_size.py evaluates the same formula in R; these tests compare with two
implementations maintained by others, which differ in the correction and the interval:

- trialflow: J = 1 - 3 / (4 (n_t + n_c) - 9) (Hedges & Olkin's approximation); 95% CI
  g +- z se with the large-sample se^2 = (n_t + n_c) / (n_t n_c) + g^2 / (2 (n_t + n_c)).
- pingouin 0.7 ``compute_effsize`` / ``compute_esci``: the same J and se; CI g +- t se with
  n_t + n_c - 2 degrees of freedom.
- R effectsize 0.8.3 ``hedges_g``: the exact J = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)),
  m = n_t + n_c - 2; CI from the noncentral t distribution of the t statistic, times J.

pingouin runs in every test run; the R effectsize numbers are committed
(tests/reference/make_effectsize_references.R -> tests/reference/output/hedges_effectsize.csv).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from scipy.special import gammaln

from trialflow.stats.effect_size import hedges_g

REFERENCE = Path(__file__).resolve().parent / "reference"
INDEX = pd.read_csv(REFERENCE / "data" / "datasets.csv", dtype=str, keep_default_na=False)
# Written by tests/reference/make_effectsize_references.R (effectsize::cohens_d, hedges_g).
EFFECTSIZE = pd.read_csv(REFERENCE / "output" / "hedges_effectsize.csv", keep_default_na=False)
CASES = list(
    EFFECTSIZE[["dataset", "outcome"]].drop_duplicates().itertuples(index=False, name=None)
)


def _change(dataset: str, outcome: str) -> tuple[pd.DataFrame, pd.Series]:
    """Post-baseline rows of one outcome with a change, and the dataset's index entry."""
    meta = INDEX.set_index("dataset").loc[dataset]
    data = pd.read_csv(REFERENCE / "data" / f"{dataset}.csv", keep_default_na=False,
                       na_values=[""])  # fmt: skip
    rows = data.loc[
        (data["outcome"] == outcome)
        & (data["visit"] != meta["baseline_visit"])
        & data["change"].notna()
    ]
    return rows, meta


def _trialflow(dataset: str, outcome: str) -> pd.DataFrame:
    rows, meta = _change(dataset, outcome)
    order = rows.drop_duplicates("visit").sort_values("visit_index")["visit"].tolist()
    return hedges_g(rows, response="change", subject="subject_id", visit="visit", arm="arm",
                    reference_arm=meta["control"], visit_order=order)  # fmt: skip


def _approximate_j(n: np.ndarray) -> np.ndarray:
    return 1 - 3 / (4 * n - 9)


def _exact_j(n: np.ndarray) -> np.ndarray:
    m = n - 2
    return np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))


@pytest.mark.parametrize(("dataset", "outcome"), CASES)
def test_hedges_g_and_its_interval_match_pingouin(dataset: str, outcome: str) -> None:
    rows, meta = _change(dataset, outcome)
    table = _trialflow(dataset, outcome).set_index("visit")
    for visit, at in rows.groupby("visit", sort=False):
        x = at.loc[at["arm"] == meta["treatment"], "change"].to_numpy()
        y = at.loc[at["arm"] == meta["control"], "change"].to_numpy()
        ours = table.loc[visit]
        g = pg.compute_effsize(x, y, paired=False, eftype="hedges")
        assert ours["g"] == pytest.approx(g, rel=1e-12)
        # pingouin's interval is g +- t(n - 2) se; the same se gives trialflow's g +- z se.
        lo, hi = pg.compute_esci(stat=g, nx=len(x), ny=len(y), eftype="hedges",
                                 confidence=0.95, decimals=16)  # fmt: skip
        se = (hi - lo) / (2 * stats.t.ppf(0.975, len(x) + len(y) - 2))
        assert ours["std_error"] == pytest.approx(se, rel=1e-12)
        z = stats.norm.ppf(0.975)
        assert ours["ci_lower"] == pytest.approx(g - z * se, rel=1e-12)
        assert ours["ci_upper"] == pytest.approx(g + z * se, rel=1e-12)


@pytest.mark.parametrize(("dataset", "outcome"), CASES)
def test_hedges_g_matches_r_effectsize(dataset: str, outcome: str) -> None:
    ref = EFFECTSIZE.loc[(EFFECTSIZE["dataset"] == dataset) & (EFFECTSIZE["outcome"] == outcome)]
    ours = _trialflow(dataset, outcome)
    assert ours["visit"].tolist() == ref["visit"].tolist()
    np.testing.assert_array_equal(ours["n_treatment"], ref["n_treatment"])
    np.testing.assert_array_equal(ours["n_control"], ref["n_control"])
    n = (ref["n_treatment"] + ref["n_control"]).to_numpy(dtype=float)
    g = ours["g"].to_numpy()
    # Same mean difference over the same pooled SD: Cohen's d agrees to rounding.
    np.testing.assert_allclose(g / _approximate_j(n), ref["cohens_d"], rtol=1e-12)
    # With effectsize's exact J in place of the approximation, g agrees to rounding; the
    # approximation itself moves g by less than 1e-4 (relative) at these sizes (n >= 26).
    np.testing.assert_allclose(g / _approximate_j(n) * _exact_j(n), ref["hedges_g"], rtol=1e-12)
    np.testing.assert_allclose(g, ref["hedges_g"], rtol=1e-4)


@pytest.mark.parametrize(("dataset", "outcome"), CASES)
def test_normal_interval_is_close_to_effectsize_noncentral_t(dataset: str, outcome: str) -> None:
    ref = EFFECTSIZE.loc[(EFFECTSIZE["dataset"] == dataset) & (EFFECTSIZE["outcome"] == outcome)]
    ours = _trialflow(dataset, outcome)
    # Different methods, so no equality: over the 32 comparisons of hedges_effectsize.csv the
    # large-sample normal interval is 0.8% to 3.2% wider than the noncentral-t one and its
    # ends lie within 0.03 of it. A wrong level or a wrong se (e.g. without its g^2 term, 6%
    # narrower at g = 1) leaves this band.
    width = (ours["ci_upper"] - ours["ci_lower"]).to_numpy()
    ref_width = (ref["ci_upper"] - ref["ci_lower"]).to_numpy()
    assert np.all((width / ref_width > 1.0) & (width / ref_width < 1.04))
    np.testing.assert_allclose(ours["ci_lower"], ref["ci_lower"], atol=0.03)
    np.testing.assert_allclose(ours["ci_upper"], ref["ci_upper"], atol=0.03)
