"""Input validation and design-matrix building shared by every model of :mod:`trialflow.stats`.

Every public model function passes its long table (one row per subject x visit) through
:func:`prepare_long` exactly once. It checks the columns, arms and visits, raising
:class:`~trialflow.errors.ModelError` with a message that names the offending column and says
what to do; it excludes subjects whose baseline or a covariate is missing (saying how many in
the returned warnings); and it hands back a frame with fixed internal column names, so that the
caller's column names are only ever used as labels. :func:`observed_rows` reduces that frame to
the rows with an observed response and codes subjects, visits and arms as integers.

Design matrices are assembled with numpy from these columns, never by evaluating column names
as formula code, so names with spaces, capitals or parentheses are safe. Categorical covariates
use treatment (dummy) coding with the first level in sorted order as reference, like R's
``contr.treatment`` on a factor with sorted levels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trialflow.errors import ModelError

__all__ = [
    "ARM",
    "BASELINE",
    "RESPONSE",
    "SUBJECT",
    "VISIT",
    "WEEK",
    "Covariate",
    "CovariateBlock",
    "ObservedRows",
    "PreparedData",
    "check_full_rank",
    "covariate_block",
    "is_categorical",
    "observed_rows",
    "prepare_long",
    "r_name",
    "redundant_columns",
    "sorted_categorical",
    "text_labels",
]

# Internal column names of the prepared frame; covariates are stored as ``_cov<i>``.
SUBJECT = "_subject"
ARM = "_arm"
VISIT = "_visit"
RESPONSE = "_y"
BASELINE = "_baseline"
WEEK = "_week"

# R's syntactic names: a letter, or a dot not followed by a digit, then letters, digits, dots
# and underscores (ASCII only, so the test does not depend on the locale).
_R_SYNTACTIC = re.compile(r"^((([A-Za-z]|[.][._A-Za-z])[._A-Za-z0-9]*)|[.])$")


@dataclass(frozen=True)
class Covariate:
    """One adjustment covariate: its user-facing name, internal column and kind."""

    name: str
    column: str
    categorical: bool


@dataclass(frozen=True)
class PreparedData:
    """Validated long data with internal column names.

    Attributes
    ----------
    frame
        All rows of the subjects kept (responses may be missing), sorted by subject and visit,
        with columns :data:`SUBJECT`, :data:`ARM`, :data:`VISIT` (an ordered categorical
        following ``visits``), :data:`RESPONSE`, optionally :data:`BASELINE` and
        :data:`WEEK`, and one ``_cov<i>`` column per covariate. Labels are strings.
    visits
        Visit labels in analysis order (visits with at least one row).
    arms
        Arm labels, the reference (control) arm first, then the other arms in sorted order.
    covariates
        Covariate descriptions, in the order given by the caller.
    warnings
        Human-readable notes about excluded subjects or dropped visits.
    names
        Mapping of roles (``"response"``, ``"subject"``, ...) to the caller's column names.
    n_excluded_subjects
        Subjects dropped because their baseline or a covariate is missing.
    """

    frame: pd.DataFrame
    visits: list[str]
    arms: tuple[str, ...]
    covariates: tuple[Covariate, ...]
    warnings: tuple[str, ...]
    names: dict[str, str]
    n_excluded_subjects: int = 0

    @property
    def control(self) -> str:
        """Label of the reference (control) arm."""
        return self.arms[0]

    @property
    def treatment(self) -> str:
        """Label of the first non-reference arm (the treatment arm of a two-arm trial)."""
        return self.arms[1]

    @property
    def contrast(self) -> str:
        """Label of the treatment comparison, ``"<treatment> - <control>"``."""
        return f"{self.treatment} - {self.control}"


@dataclass(frozen=True)
class ObservedRows:
    """The rows of a :class:`PreparedData` with an observed response, integer-coded.

    Attributes
    ----------
    frame
        Rows with a non-missing :data:`RESPONSE`, sorted by subject and visit; the
        :data:`VISIT` categories are restricted to ``visits``.
    visits
        Visits with at least one observed response, in analysis order.
    dropped_visits
        Visits of the prepared data without any observed response.
    arms
        As in :class:`PreparedData` (reference first).
    subjects
        Subject labels of the rows, in order of ``subject_code``.
    y
        Response per row.
    subject_code, visit_code, arm_code
        Per row: index into ``subjects``, ``visits`` and ``arms``.
    """

    frame: pd.DataFrame
    visits: list[str]
    dropped_visits: list[str]
    arms: tuple[str, ...]
    subjects: tuple[str, ...]
    y: np.ndarray
    subject_code: np.ndarray
    visit_code: np.ndarray
    arm_code: np.ndarray

    @property
    def n_subjects(self) -> int:
        """Number of subjects with at least one observed response."""
        return len(self.subjects)

    @property
    def n_observations(self) -> int:
        """Number of observed responses."""
        return int(self.y.size)

    def counts(self) -> np.ndarray:
        """Subjects observed per arm (rows, in order of ``arms``) and visit (columns)."""
        cells = len(self.arms) * len(self.visits)
        pair = self.arm_code * len(self.visits) + self.visit_code
        counts = np.bincount(pair, minlength=cells).astype(np.int64)
        return counts.reshape(len(self.arms), len(self.visits))


def r_name(name: str) -> str:
    """Quote a column name the way R prints it in a formula (backticks if not syntactic).

    Parameters
    ----------
    name
        Column or coefficient name.

    Returns
    -------
    str
        ``name`` itself if R accepts it unquoted, else ``name`` in backticks with inner
        backticks escaped.
    """
    if _R_SYNTACTIC.match(name):
        return name
    return "`" + name.replace("`", "\\`") + "`"


def is_categorical(series: pd.Series) -> bool:
    """Whether a covariate column is treated as categorical (any non-numeric dtype or bool).

    Parameters
    ----------
    series
        The covariate column.

    Returns
    -------
    bool
        True for string, object, category and bool columns.
    """
    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def text_labels(values: pd.Series) -> pd.Series:
    """Labels as strings (missing stays missing) so that 1 and "1" name the same level.

    Text is already its own label; integers and booleans are converted once per distinct
    value (a long table repeats few labels); anything else value by value, since pandas counts
    1.0 and 1, or 0.0 and -0.0, as one distinct value where ``str`` gives two labels.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Each category once; the codes stay.
        names = text_labels(pd.Series(values.cat.categories, dtype=object))
        if names.is_unique:
            return values.cat.rename_categories(pd.Index(names.to_numpy(), dtype=object))
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "string":
        return values.astype("str")
    if kind not in ("integer", "boolean"):
        return _text_each(values)
    codes, distinct = pd.factorize(values)  # missing values get code -1
    labels = _text_each(pd.Series([*distinct, None], dtype=object))
    return pd.Series(labels.to_numpy()[codes], index=values.index, name=values.name)


def _text_each(values: pd.Series) -> pd.Series:
    out = values.astype(object).where(values.notna(), None)
    # Labels that are already text (the usual case) need no conversion cell by cell.
    if pd.api.types.infer_dtype(out, skipna=True) in ("string", "empty"):
        return out
    return out.map(lambda v: None if v is None else str(v))


def _numeric(data: pd.DataFrame, column: str, role: str) -> pd.Series:
    """Column as float; text that is not a number is an error, empty cells become NaN."""
    raw = data[column]
    if pd.api.types.is_bool_dtype(raw):
        raise ModelError(
            f"the {role} column holds true/false values, not numbers",
            column=column,
            fix=f"pass a numeric column as the {role}",
        )
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna()
    if bad.any():
        example = raw[bad].iloc[0]
        raise ModelError(
            f"the {role} column contains {int(bad.sum())} non-numeric value(s), e.g. {example!r}",
            column=column,
            fix=f"leave missing {role} values empty instead of writing text",
        )
    return values.astype(float)


def _visit_order(
    data: pd.DataFrame,
    visit: str,
    labels: pd.Series,
    weeks: pd.Series | None,
    visit_order: Sequence[object] | None,
) -> list[str]:
    """Visit labels in analysis order (may include visits without rows)."""
    present = [str(v) for v in labels.unique()]  # in order of first appearance
    if visit_order is not None:
        order = [str(v) for v in visit_order]
        if len(set(order)) != len(order):
            raise ModelError(
                "visit_order lists a visit more than once",
                column=visit,
                fix="list every visit label exactly once",
            )
        unknown = sorted(set(present) - set(order))
        if unknown:
            raise ModelError(
                f"visit(s) {unknown} occur in the data but not in visit_order {order}",
                column=visit,
                fix="add these visits to visit_order or remove their rows",
            )
        return order
    column = data[visit]
    if isinstance(column.dtype, pd.CategoricalDtype) and column.cat.ordered:
        return [str(c) for c in column.cat.categories]
    if weeks is not None:
        first_week = weeks.groupby(labels.to_numpy(), sort=False).min()
        # A stable sort keeps first-appearance order among visits with equal/missing weeks.
        return [str(v) for v in first_week.reindex(present).sort_values(kind="stable").index]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return [str(v) for v in sorted(column.dropna().unique())]
    return present


def prepare_long(
    data: pd.DataFrame,
    *,
    response: str,
    subject: str,
    visit: str,
    arm: str,
    reference_arm: object,
    covariates: Sequence[str] = (),
    baseline: str | None = None,
    week: str | None = None,
    visit_order: Sequence[object] | None = None,
    multi_arm: bool = False,
) -> PreparedData:
    """Validate long-format trial data and return it with internal column names.

    Parameters
    ----------
    data
        One row per subject x visit (for one outcome). Missing responses may be empty cells or
        absent rows.
    response, subject, visit, arm
        Column names of the response, subject identifier, visit label and arm label.
    reference_arm
        Label of the control arm, compared as text (``0`` and ``"0"`` are the same arm).
        ``None`` (for analyses where the direction does not matter) takes the first arm in
        sorted order.
    covariates
        Column names of adjustment covariates (numeric, or categorical when their dtype is not
        numeric, or bool).
    baseline
        Column name of the subject's baseline value, or None if the model has none.
    week
        Column name of the numeric study week; orders visits when ``visit_order`` is None.
    visit_order
        Visit labels in analysis order. If None: the categories of an ordered categorical visit
        column, else visits sorted by their smallest ``week``, else numeric visits sorted, else
        order of first appearance. Visits without rows are dropped with a warning.
    multi_arm
        Accept more than two arms (each is then compared with the reference arm).

    Returns
    -------
    PreparedData
        The validated data; see :class:`PreparedData`.

    Raises
    ------
    ModelError
        If a column is missing, the arms are fewer than two (or more than two without
        ``multi_arm``), the reference arm is unknown, a subject changes arm or has two rows
        for one visit, values are not numeric, or an arm has no usable subject.
    """
    if not isinstance(data, pd.DataFrame):
        raise ModelError(
            f"expected a pandas DataFrame, got {type(data).__name__}",
            fix="pass the long-format data as a pandas DataFrame",
        )
    covariates = list(covariates)
    roles: dict[str, str] = {"response": response, "subject": subject, "visit": visit, "arm": arm}
    if baseline is not None:
        roles["baseline"] = baseline
    if week is not None:
        roles["week"] = week
    _check_columns(data, roles, covariates)
    frame, specs = _internal_frame(data, roles, covariates)
    arms = _arm_order(frame, reference_arm, arm, multi_arm)
    _check_subjects(frame, arm, visit)
    notes: list[str] = []
    visits = _visit_order(data, visit, frame[VISIT], frame.get(WEEK), visit_order)
    present = set(frame[VISIT].unique())
    absent = [v for v in visits if v not in present]
    if absent:
        notes.append(f"visit(s) {absent} have no rows and were dropped")
        visits = [v for v in visits if v not in absent]
    frame[VISIT] = _as_visits(frame[VISIT], visits)
    frame, n_dropped, note = _exclude_incomplete(frame, baseline, specs)
    notes += [note] if note else []
    frame[SUBJECT] = frame[SUBJECT].cat.remove_unused_categories()
    # Sorted by subject label, then visit, through their codes: sorting the text of every row
    # took seconds at 100,000 subjects.
    codes = (frame[c].cat.codes.to_numpy() for c in (VISIT, SUBJECT))
    frame = frame.take(np.lexsort(tuple(codes))).reset_index(drop=True)
    observed = frame.loc[frame[RESPONSE].notna()]
    for label in arms:
        if not (observed[ARM] == label).any():
            raise ModelError(
                f"arm {label!r} has no subject with an observed response after exclusions",
                column=response,
                fix="check the response, baseline and covariate columns of this arm",
            )
    return PreparedData(
        frame=frame,
        visits=visits,
        arms=arms,
        covariates=tuple(specs),
        warnings=tuple(notes),
        names={**roles, "covariates": ";".join(covariates)},
        n_excluded_subjects=n_dropped,
    )


def _check_columns(data: pd.DataFrame, roles: dict[str, str], covariates: list[str]) -> None:
    """Every named column exists, no covariate is listed twice or plays another role."""
    for role, column in [*roles.items(), *(("covariate", c) for c in covariates)]:
        if column not in data.columns:
            raise ModelError(
                f"the {role} column is not in the data (columns: {list(map(str, data.columns))})",
                column=str(column),
                fix=f"name an existing column as the {role} or add it to the data",
            )
    if len(set(covariates)) != len(covariates):
        raise ModelError("a covariate is listed twice", fix="list each covariate once")
    clash = [c for c in covariates if c in roles.values()]
    if clash:
        raise ModelError(
            f"covariate {clash[0]!r} is also the subject, visit, arm, response, baseline or "
            "week column",
            column=clash[0],
            fix="remove it from the covariates",
        )
    if data.empty:
        raise ModelError("the data has no rows", fix="check the filter that selected the rows")
    for role in ("subject", "arm", "visit"):
        missing = data[roles[role]].isna().to_numpy()
        if missing.any():
            raise ModelError(
                f"{int(missing.sum())} row(s) have an empty {role}",
                row=int(np.flatnonzero(missing)[0]),
                column=roles[role],
                fix=f"fill in the {role} of every row or remove those rows",
            )


def _as_visits(labels: pd.Series, visits: list[str]) -> pd.Categorical:
    """Visit labels (every one among ``visits``) as a categorical ordered as ``visits``."""
    if isinstance(labels.dtype, pd.CategoricalDtype):
        # Already coded (perhaps with categories of other rows): recode, not re-read the text.
        coded = labels.cat.remove_unused_categories().cat.set_categories(visits, ordered=True)
        return coded.array  # type: ignore[return-value]
    return pd.Categorical(labels, categories=visits, ordered=True)


def _internal_frame(
    data: pd.DataFrame, roles: dict[str, str], covariates: list[str]
) -> tuple[pd.DataFrame, list[Covariate]]:
    """The rows with internal column names: labels as text, numbers as float."""
    frame = pd.DataFrame(
        {
            SUBJECT: sorted_categorical(text_labels(data[roles["subject"]])),
            ARM: sorted_categorical(text_labels(data[roles["arm"]])),
            VISIT: text_labels(data[roles["visit"]]),
            RESPONSE: _numeric(data, roles["response"], "response").to_numpy(),
        }
    )
    if "baseline" in roles:
        frame[BASELINE] = _numeric(data, roles["baseline"], "baseline").to_numpy()
    if "week" in roles:
        frame[WEEK] = _numeric(data, roles["week"], "week").to_numpy()
    specs: list[Covariate] = []
    for i, name in enumerate(covariates):
        column = f"_cov{i}"
        if is_categorical(data[name]):
            frame[column] = text_labels(data[name]).to_numpy()
            specs.append(Covariate(name, column, True))
        else:
            frame[column] = _numeric(data, name, "covariate").to_numpy()
            specs.append(Covariate(name, column, False))
    return frame, specs


def _arm_order(
    frame: pd.DataFrame, reference_arm: object, arm: str, multi_arm: bool
) -> tuple[str, ...]:
    """Arm labels, the reference (control) arm first."""
    found = sorted(frame[ARM].unique())
    if len(found) < 2:
        raise ModelError(
            f"the data contains only one arm ({found[0]!r}); a comparison needs two",
            column=arm,
            fix="pass the rows of both arms",
        )
    if len(found) > 2 and not multi_arm:
        raise ModelError(
            f"the data contains {len(found)} arms {found}; these analyses compare exactly two",
            column=arm,
            fix="select the rows of the two arms to compare",
        )
    control = found[0] if reference_arm is None else str(reference_arm)
    if control not in found:
        raise ModelError(
            f"reference arm {control!r} is not one of the arms {found}",
            column=arm,
            fix="set reference_arm to the label of the control arm",
        )
    return (control, *[a for a in found if a != control])


def sorted_categorical(labels: pd.Series) -> pd.Categorical:
    """Text labels as a categorical whose categories are in sorted order.

    Its codes order the rows as the labels would sort, and grouping, sorting and comparing
    them costs integer work: a long table repeats each subject at every visit, and handling
    the text of every row took most of the time of preparing a large trial's data. Only the
    distinct labels are sorted, in Python's own string order.
    """
    if isinstance(labels.dtype, pd.CategoricalDtype):
        codes, distinct = labels.cat.codes.to_numpy(), labels.cat.categories
    else:
        codes, distinct = pd.factorize(labels)
    names = np.asarray(distinct, dtype=object)
    if pd.Index(names).is_monotonic_increasing:  # distinct labels already in sorted order
        return pd.Categorical.from_codes(codes, pd.Index(names, dtype=object))
    order = np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ranked = np.full(len(codes), -1, dtype=np.int64)  # a missing label stays missing
    ranked[codes >= 0] = rank[codes[codes >= 0]]
    return pd.Categorical.from_codes(ranked, pd.Index(names[order], dtype=object))


def _check_subjects(frame: pd.DataFrame, arm: str, visit: str) -> None:
    """A subject stays in one arm and has at most one row per visit."""
    # Integer codes, not labels: the checks stay linear and cheap at any trial size.
    subject = frame[SUBJECT].cat.codes.to_numpy().astype(np.int64)
    names = frame[SUBJECT].cat.categories
    arm_code = frame[ARM].cat.codes.to_numpy()
    # A subject's arm codes all agree when their variance is 0: n * sum(a^2) == sum(a)^2
    # (exact: integers far below 2^53).
    rows = np.bincount(subject, minlength=len(names))
    total = np.bincount(subject, weights=arm_code, minlength=len(names))
    squares = np.bincount(subject, weights=arm_code.astype(float) ** 2, minlength=len(names))
    mixed = rows * squares != total**2
    if mixed.any():
        who = names[int(np.flatnonzero(mixed)[0])]
        raise ModelError(
            f"subject {who!r} appears in more than one arm",
            column=arm,
            fix="give every subject a single arm",
        )
    visit_code, visits = pd.factorize(frame[VISIT])
    key = subject * max(len(visits), 1) + visit_code
    if np.bincount(key).max() > 1:
        i = int(np.flatnonzero(pd.Series(key).duplicated().to_numpy())[0])
        raise ModelError(
            f"subject {frame[SUBJECT].iloc[i]!r} has more than one row at visit "
            f"{frame[VISIT].iloc[i]!r}",
            row=i,
            column=visit,
            fix="pass the rows of a single outcome, one row per subject and visit",
        )


def _exclude_incomplete(
    frame: pd.DataFrame, baseline: str | None, specs: Sequence[Covariate]
) -> tuple[pd.DataFrame, int, str]:
    """Drop subjects missing the baseline or a covariate in any row; say how many and why.

    Exclusions are per subject, as R's complete-case model frame drops all of a subject's rows.
    """
    required: list[tuple[str, str]] = []
    if baseline is not None:
        required.append((baseline, BASELINE))
    required += [(spec.name, spec.column) for spec in specs]
    drop: set[str] = set()
    reasons: list[str] = []
    for name, column in required:
        new = set(frame.loc[frame[column].isna(), SUBJECT]) - drop
        if new:
            reasons.append(f"missing {name!r}: {len(new)}")
        drop |= new
    if not drop:
        return frame, 0, ""
    gone = frame[SUBJECT].isin(drop).to_numpy()
    n_lost = int((gone & frame[RESPONSE].notna().to_numpy()).sum())
    what = "baseline or covariate" if baseline is not None else "covariate"
    note = (
        f"{len(drop)} subject(s) excluded because of a missing {what} "
        f"({'; '.join(reasons)}); their {n_lost} observed response(s) are not used"
    )
    return frame.loc[~gone], len(drop), note


def observed_rows(prepared: PreparedData) -> ObservedRows:
    """The rows with an observed response, with subjects, visits and arms as integer codes.

    Parameters
    ----------
    prepared
        Output of :func:`prepare_long`.

    Returns
    -------
    ObservedRows
        Rows sorted by subject and visit; visits without any observed response are left out
        of ``visits`` and listed in ``dropped_visits``.
    """
    # The prepared frame is sorted by subject and visit (its visit categories are ``visits``):
    # leaving rows out keeps that order, so codes follow from where the labels change.
    full = prepared.frame
    frame = full.loc[full[RESPONSE].notna()].reset_index(drop=True)
    seen = np.zeros(len(prepared.visits), dtype=bool)
    seen[frame[VISIT].cat.codes.to_numpy()] = True
    visits = [v for v, s in zip(prepared.visits, seen, strict=True) if s]
    dropped = [v for v, s in zip(prepared.visits, seen, strict=True) if not s]
    frame[VISIT] = frame[VISIT].cat.remove_unused_categories()
    subject = frame[SUBJECT].to_numpy(dtype=object)
    first = np.r_[True, subject[1:] != subject[:-1]]
    return ObservedRows(
        frame=frame,
        visits=visits,
        dropped_visits=dropped,
        arms=prepared.arms,
        subjects=tuple(subject[first]),
        y=frame[RESPONSE].to_numpy(dtype=float),
        subject_code=np.cumsum(first, dtype=np.int64) - 1,
        visit_code=frame[VISIT].cat.codes.to_numpy(dtype=np.int64),
        arm_code=pd.Index(prepared.arms).get_indexer(pd.Index(frame[ARM])).astype(np.int64),
    )


@dataclass(frozen=True)
class CovariateBlock:
    """Design columns of the covariates for one model frame.

    Attributes
    ----------
    matrix
        Rows x columns design block (numeric covariates as they are, factors as treatment
        dummies with the first sorted level as reference).
    labels
        R-style column labels, unquoted (``age``, ``SiteB``, ``study siteB``, ...).
    grid
        Reference-grid values for LS means: numeric covariates at their mean over the rows
        used, each factor dummy at 1/levels (levels weighted equally, as emmeans does).
    """

    matrix: np.ndarray
    labels: list[str]
    grid: np.ndarray


def covariate_block(
    frame: pd.DataFrame, covariates: Sequence[Covariate], weights: str = "equal"
) -> CovariateBlock:
    """Build the covariate design columns for the rows of ``frame``.

    Parameters
    ----------
    frame
        Prepared rows actually used in the fit.
    covariates
        Covariates as returned by :func:`prepare_long`.
    weights
        LS-mean weights of factor levels: ``"equal"`` or ``"proportional"`` (their frequency
        among the rows of ``frame``).

    Returns
    -------
    CovariateBlock
        Matrix, labels and reference-grid row. Factor levels absent from ``frame`` are not
        coded, matching R after ``droplevels``.
    """
    cols: list[np.ndarray] = []
    labels: list[str] = []
    grid: list[float] = []
    for spec in covariates:
        values = frame[spec.column]
        if spec.categorical:
            levels = sorted(values.unique())
            codes = values.to_numpy()
            for level in levels[1:]:
                cols.append((codes == level).astype(float))
                labels.append(f"{spec.name}{level}")
                proportional = weights == "proportional"
                grid.append(float(np.mean(codes == level)) if proportional else 1.0 / len(levels))
        else:
            x = values.to_numpy(dtype=float)
            cols.append(x)
            labels.append(spec.name)
            grid.append(float(x.mean()))
    matrix = np.column_stack(cols) if cols else np.empty((len(frame), 0))
    return CovariateBlock(matrix=matrix, labels=labels, grid=np.asarray(grid, dtype=float))


def redundant_columns(x: np.ndarray) -> list[int]:
    """Indices of the columns of ``x`` that are linear combinations of the columns before them.

    Columns are scaled to unit length first, so that the rank decision does not depend on the
    units of a covariate.

    Parameters
    ----------
    x
        Design matrix (rows x columns).

    Returns
    -------
    list of int
        Empty if ``x`` has full column rank.
    """
    norms = np.linalg.norm(x, axis=0)
    norms[norms == 0] = 1.0
    scaled = x / norms
    if np.linalg.matrix_rank(scaled) == x.shape[1]:
        return []
    redundant: list[int] = []
    for j in range(1, x.shape[1] + 1):
        if np.linalg.matrix_rank(scaled[:, :j]) < j - len(redundant):
            redundant.append(j - 1)
    return redundant


def check_full_rank(x: np.ndarray, labels: Sequence[str], what: str) -> None:
    """Raise :class:`ModelError` if the design matrix ``x`` is rank deficient.

    Parameters
    ----------
    x
        Design matrix (rows x columns).
    labels
        Column labels, used to name the redundant columns in the message.
    what
        Short description of the model for the message, e.g. ``"ANCOVA at visit week4"``.

    Raises
    ------
    ModelError
        If there are fewer rows than columns or a column is redundant.
    """
    if x.shape[0] < x.shape[1]:
        raise ModelError(
            f"{what}: {x.shape[0]} observation(s) for {x.shape[1]} model coefficients",
            fix="use fewer covariates or check that enough subjects have data",
        )
    redundant = [labels[j] for j in redundant_columns(x)]
    if redundant:
        raise ModelError(
            f"{what}: the design matrix is rank deficient; redundant column(s) {redundant}",
            fix="remove covariates that are constant or duplicate another covariate or the arm",
        )


def visit_patterns(observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a subjects x visits boolean matrix, and each subject's row.

    Same result as ``np.unique(observed, axis=0, return_inverse=True)`` (patterns in
    lexicographic order, first visit most significant), computed on one integer per subject
    instead of sorting rows, which is what matters for 100,000 subjects.
    """
    k = observed.shape[1]
    if k > 62:
        patterns, which = np.unique(observed, axis=0, return_inverse=True)
        return patterns, np.asarray(which).ravel()
    weights = np.left_shift(np.int64(1), np.arange(k - 1, -1, -1, dtype=np.int64))
    codes, which = np.unique(observed.astype(np.int64) @ weights, return_inverse=True)
    patterns = (codes[:, None] & weights[None, :]) > 0
    return patterns, np.asarray(which).ravel()
