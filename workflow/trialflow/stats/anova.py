"""Mixed (split-plot) ANOVA of the response: arm between subjects, visit within subjects.

The classical repeated-measures ANOVA needs every subject at every visit, so it is fitted to
complete cases only (subjects observed at all visits, baseline included) and the table says how
many subjects that rule excluded. ``pingouin.mixed_anova`` does the computation, including the
Greenhouse-Geisser epsilon. pingouin's sums of squares for the visit main effect are type II
(visit means weighted by arm size); the default here is type III, as in R's ``afex`` and SPSS,
which tests the unweighted average of the arms. With equal arm sizes the two coincide, and the
arm and arm-by-visit rows are the same under both types.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from trialflow.errors import ModelError
from trialflow.stats.design import ARM, RESPONSE, SUBJECT, VISIT, prepare_long

ANOVA_COLUMNS: tuple[str, ...] = (
    "source",
    "F",
    "df1",
    "df2",
    "p_value",
    "partial_eta_sq",
    "p_value_gg",
    "n_subjects",
    "rule",
)


# Deprecation notices about library APIs (e.g. pandas warning pingouin that ``inplace`` in
# ``DataFrame.dropna`` is going away) say nothing about the data or the model, so they must not
# reach the trial report as model warnings. Only these categories, and only when raised from
# the libraries' own code, are dropped; every other warning is kept.
_LIBRARY_DEPRECATIONS: tuple[type[Warning], ...] = (
    FutureWarning,
    DeprecationWarning,
    PendingDeprecationWarning,
)
_LIBRARY_DIRS: tuple[Path, ...] = tuple(
    Path(spec.origin).resolve().parent
    for spec in map(importlib.util.find_spec, ("pandas", "pingouin", "numpy", "scipy"))
    if spec is not None and spec.origin is not None
)


def _concerns_analysis(caught: warnings.WarningMessage) -> bool:
    """Whether a warning caught around pingouin says something about the analysis.

    Parameters
    ----------
    caught
        One warning recorded by :func:`warnings.catch_warnings`.

    Returns
    -------
    bool
        False for a ResourceWarning, and for FutureWarning, DeprecationWarning and
        PendingDeprecationWarning (and their subclasses) attributed to a file of pandas,
        pingouin, numpy or scipy; True otherwise.
    """
    if issubclass(caught.category, ResourceWarning):
        # The garbage collector reporting another object (a file left open elsewhere).
        return False
    if not issubclass(caught.category, _LIBRARY_DEPRECATIONS):
        return True
    try:
        origin = Path(caught.filename).resolve()
    except (OSError, ValueError):
        return True
    return not any(origin.is_relative_to(root) for root in _LIBRARY_DIRS)


def _orthonormal_contrasts(k: int) -> np.ndarray:
    """k x (k-1) matrix with orthonormal columns orthogonal to the vector of ones."""
    basis = np.linalg.qr(np.column_stack([np.ones(k), np.eye(k)[:, : k - 1]]))[0]
    return basis[:, 1:]


def _visit_type3(
    wide: pd.DataFrame, arms: pd.Series, eps: float
) -> tuple[float, float, float, float, float, float]:
    """Type III test of the visit main effect: F, df1, df2, p, partial eta^2, GG p.

    On orthonormal within-subject contrasts Y* = Y C, the hypothesis is that the unweighted
    average of the two arm means of Y* is zero; the error term is the pooled within-arm sum
    of squares of Y*, the same error term as for the arm-by-visit interaction.
    """
    k = wide.shape[1]
    ystar = wide.to_numpy(dtype=float) @ _orthonormal_contrasts(k)
    groups = [ystar[(arms == a).to_numpy()] for a in arms.unique()]
    means = [g.mean(axis=0) for g in groups]
    sse = float(sum(((g - m) ** 2).sum() for g, m in zip(groups, means, strict=True)))
    centre = np.mean(means, axis=0)
    weight = sum(1.0 / len(g) for g in groups) / len(groups) ** 2
    ss = float(centre @ centre) / weight
    df1 = float(k - 1)
    df2 = float((len(wide) - len(groups)) * (k - 1))
    f = (ss / df1) / (sse / df2)
    p = float(stats.f.sf(f, df1, df2))
    p_gg = float(stats.f.sf(f, eps * df1, eps * df2)) if np.isfinite(eps) else np.nan
    return f, df1, df2, p, ss / (ss + sse), p_gg


def mixed_anova(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    visit_order: Sequence[str] | None = None,
    reference_arm: str | None = None,
    ss_type: Literal[2, 3] = 3,
) -> pd.DataFrame:
    """Mixed ANOVA (arm x visit) on subjects observed at every visit.

    Parameters
    ----------
    data
        Long data of one outcome, all visits including baseline.
    response, subject, visit, arm
        Column names of the raw response value, subject identifier, visit label and arm.
    visit_order
        Visit labels in order; None takes the categories of an ordered categorical visit
        column, else sorted numeric visits, else the order of first appearance. Every visit
        must be observed for a subject to be included.
    reference_arm
        Label of the control arm (only used for validation; the F tests do not depend on it).
    ss_type
        3 (default; type III sums of squares for the visit main effect, as R's ``afex`` and
        SPSS) or 2 (type II, pingouin's own numbers).

    Returns
    -------
    pandas.DataFrame
        Rows ``arm``, ``visit``, ``arm:visit``; columns :data:`ANOVA_COLUMNS`: uncorrected
        F, degrees of freedom and p-value, partial eta squared, the Greenhouse-Geisser
        corrected p-value (NaN for the between-subject row), the number of subjects analysed
        and the complete-case rule with the number of subjects it excluded.
        Warnings raised by pingouin are listed in ``DataFrame.attrs["warnings"]``, except
        deprecation notices from the libraries' own code, which do not concern the analysis.

    Raises
    ------
    ModelError
        On invalid input, fewer than two complete-case subjects in an arm, or a response
        without variability among the complete cases.
    """
    if ss_type not in (2, 3):
        raise ModelError(f"unknown ss_type {ss_type!r}", fix="use 2 or 3")
    prep = prepare_long(
        data,
        response=response,
        subject=subject,
        visit=visit,
        arm=arm,
        reference_arm=reference_arm,
        visit_order=visit_order,
    )
    frame = prep.frame
    observed = frame.loc[frame[RESPONSE].notna()]
    n_visits = len(prep.visits)
    per_subject = observed.groupby(SUBJECT)[VISIT].nunique()
    complete_ids = per_subject.index[per_subject.to_numpy() == n_visits]
    n_total = int(frame[SUBJECT].nunique())
    n_complete = len(complete_ids)
    rule = (
        f"complete cases: subjects with an observed {response!r} at all {n_visits} visits "
        f"({', '.join(prep.visits)}); {n_total - n_complete} of {n_total} subjects excluded; "
        f"type {'III' if ss_type == 3 else 'II'} sums of squares"
    )
    cc = observed.loc[observed[SUBJECT].isin(complete_ids)].copy()
    n_arm = cc.groupby(ARM)[SUBJECT].nunique()
    for a in (prep.control, prep.treatment):
        if int(n_arm.get(a, 0)) < 2:
            raise ModelError(
                f"arm {a!r} has {int(n_arm.get(a, 0))} subject(s) observed at every visit; the "
                "mixed ANOVA needs at least 2 per arm",
                column=response,
                fix="use the mixed model (fit_lmm or fit_mmrm), which handles missing visits",
            )
    if n_visits < 2:
        raise ModelError(
            "the mixed ANOVA needs at least two visits",
            column=visit,
            fix="pass the rows of all visits, baseline included",
        )
    cc[VISIT] = cc[VISIT].astype(str)
    # pingouin fails on a constant response with an obscure KeyError or a singular matrix; the
    # F ratio is 0 / 0 there, so say so instead.
    if np.ptp(cc[RESPONSE].to_numpy(dtype=float)) == 0:
        raise ModelError(
            f"no variability in {response}; the ANOVA is not defined",
            column=response,
            fix="check the response column: every analysed value is the same",
        )

    # Imported here: pingouin loads matplotlib.pyplot (0.6 s), which only this analysis needs;
    # the sensitivity analyses import this module without it.
    import pingouin as pg

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = pg.mixed_anova(
            data=cc,
            dv=RESPONSE,
            within=VISIT,
            subject=SUBJECT,
            between=ARM,
            correction=True,
            effsize="np2",
        )
    # pingouin renamed "p-unc"/"p-GG-corr" to "p_unc"/"p_GG_corr"; accept both spellings.
    table = table.rename(columns=lambda c: str(c).replace("-", "_"))
    table["Source"] = table["Source"].replace(
        {ARM: "arm", VISIT: "visit", "Interaction": "arm:visit"}
    )
    table = table.set_index("Source").loc[["arm", "visit", "arm:visit"]]
    p_gg = (
        table["p_GG_corr"].astype(float)
        if "p_GG_corr" in table
        else pd.Series(np.nan, index=table.index)
    )
    if n_visits == 2:
        p_gg.loc[["visit", "arm:visit"]] = table.loc[["visit", "arm:visit"], "p_unc"]
    out = pd.DataFrame(
        {
            "source": table.index.to_list(),
            "F": table["F"].astype(float).to_numpy(),
            "df1": table["DF1"].astype(float).to_numpy(),
            "df2": table["DF2"].astype(float).to_numpy(),
            "p_value": table["p_unc"].astype(float).to_numpy(),
            "partial_eta_sq": table["np2"].astype(float).to_numpy(),
            "p_value_gg": p_gg.to_numpy(),
        }
    )
    if ss_type == 3:
        wide = cc.pivot(index=SUBJECT, columns=VISIT, values=RESPONSE).loc[:, prep.visits]
        arms = cc.drop_duplicates(SUBJECT).set_index(SUBJECT)[ARM].reindex(wide.index)
        eps = float(table.loc["visit", "eps"]) if "eps" in table else np.nan
        if n_visits == 2:
            eps = 1.0
        f, df1, df2, p, pes, pgg = _visit_type3(wide, arms, eps)
        out.loc[1, ["F", "df1", "df2", "p_value", "partial_eta_sq", "p_value_gg"]] = [
            f,
            df1,
            df2,
            p,
            pes,
            pgg,
        ]
    out["p_value_gg"] = out["p_value_gg"].where(out["source"] != "arm", np.nan)
    out["n_subjects"] = n_complete
    out["rule"] = rule
    relevant = (str(w.message) for w in caught if _concerns_analysis(w))
    out.attrs["warnings"] = [*prep.warnings, *dict.fromkeys(relevant)]
    return out.loc[:, list(ANOVA_COLUMNS)]
