"""Largest differences between trialflow and its references, per reference and quantity.

Run from the project root: ``python tests/reference/summarise_differences.py``. It refits every
model the reference tests check (SAS listings, R programs) and prints, per reference and
quantity, the largest relative difference |ours - reference| / |reference| and where it occurs.
Printed SAS numbers are rounded, so their differences include the print rounding.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.stats import (  # noqa: E402 (the test modules hold the fitting recipes)
    test_mean_model as plan,
)
from tests.stats import (  # noqa: E402
    test_refbased_reference as sensitivity,
)
from tests.stats import (  # noqa: E402
    test_sas_parity as sas,
)
from tests.stats import (  # noqa: E402
    test_small_sample as small,
)
from tests.stats import (  # noqa: E402
    test_subgroups as groups,
)

Row = tuple[str, str, float, str]


def _largest(reference: str, quantity: str, ours: Iterable[float], theirs: Iterable[float],
             where: Iterable[str]) -> Row:  # fmt: skip
    a, b = np.asarray(list(ours), dtype=float), np.asarray(list(theirs), dtype=float)
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    if np.all(np.isnan(rel)):
        return reference, quantity, float("nan"), ""
    i = int(np.nanargmax(rel))
    return reference, quantity, float(rel[i]), list(where)[i]


def _sas_rows() -> list[Row]:
    fit = sas.fit_un()
    out: list[Row] = []
    for table, kind in ((fit.effects, "diffs"), (fit.lsmeans, "lsmeans")):
        for quantity in ("estimate", "std_error", "df"):
            ours, theirs, where = [], [], []
            for r in table.to_dict("records"):
                match = {"visit": r["visit"], "arm": "TRT-PBO" if kind == "diffs" else r["arm"]}
                value, line = sas._sas("design/SAS/sas_log_reml.txt", kind, quantity, **match)
                ours.append(r[quantity])
                theirs.append(value)
                where.append(line)
            out.append(_largest(f"SAS UN Satterthwaite {kind}", quantity, ours, theirs, where))
    t3 = fit.type3.set_index("effect")
    for quantity, column in (("F", "F"), ("den_df", "den_df")):
        ours, theirs, where = [], [], []
        for effect, sas_effect in sas.TYPE3_EFFECTS:
            value, line = sas._sas("design/SAS/sas_log_reml.txt", "type3", quantity,
                                   effect=sas_effect)  # fmt: skip
            ours.append(t3.loc[effect, column])
            theirs.append(value)
            where.append(line)
        out.append(_largest("SAS UN Satterthwaite Type 3", quantity, ours, theirs, where))
    for method, prefix in (("kenward_roger", "kr"), ("kenward_roger_linear", "kr1")):
        for code in sorted(sas.KR_TOLERANCE):
            listing = f"design/ddfm_covtype/{prefix}_{code}.csv"
            ours3 = sas._arm_only(code, method)
            for value, quantity in zip(ours3, ("estimate", "std_error", "df"), strict=True):
                expected, line = sas._sas(listing, "diffs", quantity)
                out.append(_largest(f"SAS {method} {code}", quantity, [value], [expected], [line]))
    return out


def _r_rows() -> list[Row]:
    out: list[Row] = []
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for case in plan.CASES:
        fit = plan._fit(*case)
        for ours, ref, keys in ((fit.effects, plan.EFFECTS, ["visit"]),
                                (fit.lsmeans, plan.LSMEANS, ["visit", "arm"])):  # fmt: skip
            both = plan._select(ref, *case).merge(ours, on=keys, suffixes=("_r", ""))
            frames.setdefault(("R mean-model options (gls + emmeans)", ""), []).append(
                both.assign(where="/".join(case))
            )
    for method in small.METHODS:
        for case in small.CASES:
            fit = small._fit(*case, method)
            ref = small.CONTRASTS.loc[
                (small.CONTRASTS["dataset"] == case[0])
                & (small.CONTRASTS["outcome"] == case[1])
                & (small.CONTRASTS["model"] == case[2])
                & (small.CONTRASTS["df_method"] == method)
            ]
            ours = pd.concat([fit.effects.assign(kind="effect", arm=fit.effects["contrast"]),
                              fit.lsmeans.assign(kind="lsmean")])  # fmt: skip
            both = ref.merge(ours, on=["kind", "visit", "arm"], suffixes=("_r", ""))
            frames.setdefault((f"R first-principles {method}", ""), []).append(
                both.assign(where="/".join(case))
            )
    for case in groups.CASES:
        ours = groups._subgroup(*case)
        primary = groups.SETTINGS[case[0]][2][-1]
        ref = groups.EFFECTS.loc[
            (groups.EFFECTS["dataset"] == case[0])
            & (groups.EFFECTS["outcome"] == case[1])
            & (groups.EFFECTS["subgroup"] == case[2])
            & (groups.EFFECTS["visit"] == primary)
        ]
        both = ref.merge(ours, on=["level", "visit"], suffixes=("_r", ""))
        frames.setdefault(("R subgroups (gls)", ""), []).append(both.assign(where="/".join(case)))
    for method in small.METHODS:
        for case in small.CASES:
            ours = small._fit(*case, method).type3
            ref = small.TYPE3.loc[
                (small.TYPE3["dataset"] == case[0])
                & (small.TYPE3["outcome"] == case[1])
                & (small.TYPE3["model"] == case[2])
                & (small.TYPE3["df_method"] == method)
            ]
            both = ref.merge(ours, on="effect", suffixes=("_r", ""))
            both = both.rename(columns={"F": "estimate", "F_r": "estimate_r",
                                        "den_df": "df", "den_df_r": "df_r"})  # fmt: skip
            both["std_error"] = both["std_error_r"] = np.nan
            frames.setdefault((f"R Type III {method} (F; den df)", ""), []).append(
                both.assign(where="/".join(case))
            )
    for case in small.LMM_CASES:
        fit = small._lmm(*case, "kenward_roger")
        for ours, ref, keys in ((fit.effects, small.LMM_EFFECTS, ["visit"]),
                                (fit.lsmeans, small.LMM_LSMEANS, ["visit", "arm"])):  # fmt: skip
            want = ref.loc[(ref["dataset"] == case[0]) & (ref["outcome"] == case[1])]
            both = want.merge(ours, on=keys, suffixes=("_r", ""))
            frames.setdefault(("R pbkrtest LMM Kenward-Roger", ""), []).append(
                both.assign(where="/".join(case))
            )
    for (name, _), parts in frames.items():
        both = pd.concat(parts, ignore_index=True)
        for quantity in ("estimate", "std_error", "df"):
            if both[quantity].notna().any():
                out.append(_largest(name, quantity, both[quantity], both[f"{quantity}_r"],
                                    both["where"]))  # fmt: skip
    return out


def _sensitivity_rows() -> list[Row]:
    """Conditional-mean imputation with jackknife SEs against make_sensitivity_references.R."""
    parts = [
        sensitivity.cmi_table(*case).assign(where="/".join(case)) for case in sensitivity.CASES
    ]
    both = pd.concat(parts, ignore_index=True).dropna(subset=["estimate_ours"])
    where = both["where"] + "/" + both["strategy"] + "/" + both["visit"]
    name = "R first-principles conditional mean + jackknife"
    return [
        _largest(name, "estimate", both["estimate_ours"], both["estimate"], where),
        _largest(name, "std_error", both["std_error_ours"], both["std_error"], where),
    ]


def main() -> None:
    """Print the table."""
    rows = _sas_rows() + _r_rows() + _sensitivity_rows()
    print(f"{'reference':<48} {'quantity':<10} {'max rel diff':>12}  where")
    for reference, quantity, diff, where in rows:
        print(f"{reference:<48} {quantity:<10} {diff:>12.2e}  {where}")


if __name__ == "__main__":
    main()
