"""The simulator: bundled data regenerate byte for byte; dropout mechanisms behave."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit

from trialflow.config import load_yaml
from trialflow.simulate import simulate, write_trial

from .conftest import ROOT


@pytest.mark.parametrize("name", ["exercise_education", "weightbearing"])
def test_bundled_data_regenerate_byte_for_byte(tmp_path, name: str) -> None:
    scenario = load_yaml(ROOT / "config" / "scenarios" / f"{name}.yaml")
    for path in write_trial(simulate(scenario), tmp_path):
        committed = ROOT / "data" / "raw" / name / path.name
        assert path.read_bytes() == committed.read_bytes(), f"{committed} differs"


def test_bundled_sizes_match_the_published_trials() -> None:
    ee = simulate(load_yaml(ROOT / "config" / "scenarios" / "exercise_education.yaml"))
    assert ee.subjects["arm"].str.strip().str.lower().value_counts().to_dict() == {
        "exercise": 28,
        "education": 26,
    }
    wb = simulate(load_yaml(ROOT / "config" / "scenarios" / "weightbearing.yaml"))
    assert wb.subjects["Group"].str.strip().value_counts().to_dict() == {
        "weightbearing": 15,
        "nonweightbearing": 14,
    }


# Subjects per arm of the dropout tests: the binomial SE of a rate near 0.2-0.4 is then 0.004-0.005,
# and a simulation takes about 2 s.
N_PER_ARM = 10_000
TARGET = {"education": 0.2, "exercise": 0.4}


def _big_scenario(mechanism: str) -> dict:
    scenario = load_yaml(ROOT / "config" / "scenarios" / "exercise_education.yaml")
    scenario = copy.deepcopy(scenario)
    scenario["n"] = {arm: N_PER_ARM for arm in TARGET}
    # Dropout depends on the driver (pain) alone; the other outcomes only cost time.
    scenario["outcomes"] = [o for o in scenario["outcomes"] if o["name"] == "pain_vas"]
    scenario["dropout"]["mechanism"] = mechanism
    scenario["dropout"]["rate"] = dict(TARGET)
    scenario["anomalies"] = {}
    scenario["sporadic_missing"] = 0.0
    return scenario


def _clipped_moments(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float]:
    """Mean and second moment of clip(Y, lo, hi) for Y ~ N(mean, sd^2): the two clipped tails
    sit at lo and hi, the middle is the truncated normal."""
    a, b = (lo - mean) / sd, (hi - mean) / sd
    below, above = stats.norm.cdf(a), stats.norm.sf(b)
    middle = stats.truncnorm(a, b, loc=mean, scale=sd)
    inside = 1 - below - above
    first = lo * below + hi * above + inside * middle.mean()
    second = lo**2 * below + hi**2 * above + inside * (middle.var() + middle.mean() ** 2)
    return float(first), float(second)


def _staying(
    mean: np.ndarray, cov: np.ndarray, clip: tuple[float, float],
    standardise: tuple[float, float], intercept: float, slope: float,
) -> float:  # fmt: skip
    """E prod_j [1 - expit(intercept + slope * (clip(Y_j) - centre) / scale)], Y ~ N(mean, cov),
    by Gauss-Hermite quadrature on a tensor grid (20 nodes a dimension: converged to 1e-5)."""
    x, w = np.polynomial.hermite_e.hermegauss(20)  # weight exp(-x^2 / 2)
    d = len(mean)
    grid = np.stack(np.meshgrid(*[x] * d, indexing="ij")).reshape(d, -1)
    weight = np.prod(np.meshgrid(*[w / np.sqrt(2 * np.pi)] * d, indexing="ij"), axis=0).ravel()
    y = np.clip(mean[:, None] + np.linalg.cholesky(cov) @ grid, *clip)
    centre, scale = standardise
    stay = 1 - expit(intercept + slope * (y - centre) / scale)
    return float(weight @ stay.prod(axis=0))


def _expected_dropout(scenario: dict, arm: str) -> tuple[float, float]:
    """Exact expected cumulative dropout of one arm by the last visit, and its standard error
    for ``N_PER_ARM`` subjects.

    The simulator's definition (trialflow/simulate.py, ``monotone_dropout``): a subject still
    in the trial drops out at post-baseline visit j = 1..K-1 with probability
    p_j = expit(logit(h) + sign * strength * z), with h = 1 - (1 - rate)^(1 / (K - 1)) and z the
    driver outcome (clipped, standardised by the mean and SD of all baselines) at visit j - 1
    (MAR) or j (MNAR); strength is 0 under MCAR. Dropout by the last visit is therefore
    1 - E prod_j (1 - p_j). Under MCAR that is 1 - (1 - h)^(K - 1) = rate exactly. Under MAR and
    MNAR the hazard is calibrated at z = 0, not on average over z, so the expected rate differs
    from the nominal one (0.2 -> 0.226 under MAR here): it is computed from the scenario's
    normal model of the driver, over the K - 1 visits that drive dropout.

    Standard error: completion is one Bernoulli draw per subject (its visits are one event,
    not a cluster of events), independent between subjects given the centre and scale of z;
    so Var = p(1 - p) / n. The centre and scale are estimated from the 2n baselines, and their
    error moves every subject's hazard at once (the one shared, cluster-like term): its
    delta-method variance is added, d(rate)/d(centre)^2 * s^2 / 2n +
    d(rate)/d(scale)^2 * s^2 / 4n (about a quarter of the binomial SE under MAR).
    """
    drop = scenario["dropout"]
    out = next(o for o in scenario["outcomes"] if o["name"] == drop["driver"])
    k = len(scenario["visits"])
    sd = np.asarray(out["sd"], dtype=float)
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    cov = out["correlation"]["rho"] ** lag * np.outer(sd, sd)  # the scenario's AR(1)
    clip = (float(out["clip"][0]), float(out["clip"][1]))
    # Centre and scale of z: moments of the pooled baselines (equal arm sizes).
    moments = [
        _clipped_moments(out["baseline_mean"] + out["change"][a][0], sd[0], *clip) for a in TARGET
    ]
    centre = float(np.mean([m[0] for m in moments]))
    scale = float(np.sqrt(np.mean([m[1] for m in moments]) - centre**2))
    mechanism = drop["mechanism"].upper()
    slope = 0.0 if mechanism == "MCAR" else float(drop.get("strength", 1.0))
    slope *= 1.0 if drop.get("direction", "higher") == "higher" else -1.0
    rate = float(drop["rate"][arm])
    intercept = float(logit(1 - (1 - rate) ** (1 / (k - 1))))
    visits = np.arange(k - 1) if mechanism == "MAR" else np.arange(1, k)
    mean = out["baseline_mean"] + np.asarray(out["change"][arm], dtype=float)[visits]
    args = (mean, cov[np.ix_(visits, visits)], clip)

    def dropout(c: float, s: float) -> float:
        return 1 - _staying(*args, (c, s), intercept, slope)

    p = dropout(centre, scale)
    eps = 1e-4
    d_centre = (dropout(centre + eps, scale) - p) / eps
    d_scale = (dropout(centre, scale + eps) - p) / eps
    n = N_PER_ARM
    var = p * (1 - p) / n + (d_centre**2 / (2 * n) + d_scale**2 / (4 * n)) * scale**2
    return p, float(np.sqrt(var))


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR", "MNAR"])
def test_dropout_rates_by_arm(mechanism: str) -> None:
    """README, "The bundled trials": completion as published, with dropout missing at random
    on pain (the simulator calibrates each arm's dropout to a target cumulative rate); the power
    planner simulates "their published dropout". Each arm's share of subjects without the final
    visit is within 4 standard errors of the exact expectation (a correct simulator fails this
    with probability 6e-5 per arm and seed)."""
    scenario = _big_scenario(mechanism)
    trial = simulate(scenario)
    completed = trial.visits.loc[trial.visits["visit"] == "week26", "subject_id"]
    arm = trial.subjects.set_index("subject_id")["arm"]
    rate = 1 - completed.map(arm).value_counts() / arm.value_counts()
    for name, target in TARGET.items():
        expected, se = _expected_dropout(scenario, name)
        if mechanism == "MCAR":  # the derivation: exactly the target, binomial SE
            assert expected == pytest.approx(target, abs=1e-12)
            assert se == pytest.approx(np.sqrt(target * (1 - target) / N_PER_ARM), rel=1e-9)
        assert abs(rate[name] - expected) < 4 * se, (name, rate[name], expected, se)


def test_mar_dropout_depends_on_observed_pain() -> None:
    trial = simulate(_big_scenario("MAR"))
    v = trial.visits
    base = v.loc[v["visit"] == "baseline"].set_index("subject_id")["Pain VAS"].astype(float)
    completed = set(v.loc[v["visit"] == "week26", "subject_id"])
    done = base.index.isin(completed)
    assert base[~done].mean() > base[done].mean() + 0.3


def test_same_seed_same_data_other_seed_other_data() -> None:
    scenario = load_yaml(ROOT / "config" / "scenarios" / "weightbearing.yaml")
    a, b = simulate(scenario), simulate(scenario)
    assert a.visits.equals(b.visits)
    scenario["seed"] += 1
    c = simulate(scenario)
    assert not np.array_equal(a.visits["6MWD"].to_numpy(), c.visits["6MWD"].to_numpy())
