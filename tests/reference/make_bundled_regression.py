"""Regression pin: the bundled trials' model tables under the default analysis options.

Run from the project root with the release to pin (the tables in tests/reference/output/ were
written by commit c6aa0da, before the analysis-plan options existed, so the test that reads
them shows that the default options still give those numbers):

    python tests/reference/make_bundled_regression.py tests/reference/output

Writes bundled_default_effects.csv and bundled_default_lsmeans.csv (full precision).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from trialflow.analysis import analyse_trial
from trialflow.clean import read_and_clean
from trialflow.config import load_trial
from trialflow.derive import derive

ROOT = Path(__file__).resolve().parents[2]
TRIALS = ("exercise_education", "weightbearing")
EFFECT_COLUMNS = ["trial", "outcome", "analysis", "visit", "estimate", "std_error", "df",
                  "ci_lower", "ci_upper", "p_value", "n"]  # fmt: skip
LSMEAN_COLUMNS = ["trial", "outcome", "analysis", "visit", "arm", "estimate", "std_error", "df",
                  "n"]  # fmt: skip


def main(out: Path) -> None:
    effects, lsmeans = [], []
    for name in TRIALS:
        trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml", name=name)
        data = derive(read_and_clean(trial, root=ROOT), trial)
        result = analyse_trial(data.adeff, data.adsl, trial)
        effects.append(result.effects.assign(trial=name))
        lsmeans.append(result.lsmeans.assign(trial=name))
    pd.concat(effects)[EFFECT_COLUMNS].to_csv(
        out / "bundled_default_effects.csv", index=False, float_format="%.17g"
    )
    pd.concat(lsmeans)[LSMEAN_COLUMNS].to_csv(
        out / "bundled_default_lsmeans.csv", index=False, float_format="%.17g"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
