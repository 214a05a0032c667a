"""ADaM exchange datasets: ADSL and ADEFF under CDISC variable names, as CSV and SAS transport.

``analysis/adsl.csv`` and ``analysis/adeff.csv`` keep the workflow's own column names (every
step reads them). For exchange, :func:`adam_datasets` renames and maps them to CDISC ADaM
variables (STUDYID, USUBJID, TRT01P, ITTFL, ... in ADSL; PARAMCD, AVISIT, AVAL, BASE, CHG, ...
in ADEFF) and :func:`write_adam` writes each dataset as CSV and as SAS transport version 5
(``.xpt``, the format regulators accept), plus ``define.csv``: one row per variable with its
label, type, length, origin and codelist.

Transport version 5 allows names of at most 8 characters, labels of at most 40 and text values
of at most 200 bytes, all ASCII. Names are built to fit; labels and text are transliterated to
ASCII (a character with no ASCII form becomes ``?``); a name, label or value that would still
not fit stops the run with a message. The transport header's time stamps are
:func:`trialflow.stamps.build_time`, so the same input gives the same bytes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from trialflow.config import TrialConfig
from trialflow.errors import DataError
from trialflow.labels import arm_name, visit_name
from trialflow.xport import widest_row, with_observations

__all__ = ["AdamDataset", "Variable", "adam_datasets", "adam_writes", "define_table", "write_adam"]

NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,7}$")
MAX_LABEL = 40
MAX_TEXT = 200  # bytes of a character value in transport version 5
# Where a time stamp lies in a transport file: (record, column) of the library header's
# created and modified fields, and the member header's (relative to its DSCRPTR record).
_LIBRARY_STAMPS = ((1, 64), (2, 0))
_MEMBER_STAMPS = ((1, 64), (2, 0))
_STAMP = re.compile(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d")
_DSCRPTR = b"HEADER RECORD*******DSCRPTR HEADER RECORD"


@dataclass(frozen=True)
class Variable:
    """One variable of an ADaM dataset: its name, label and where its values come from."""

    name: str
    label: str
    origin: str
    codelist: str = ""


@dataclass(frozen=True)
class AdamDataset:
    """An ADaM dataset: name (ADSL, ADEFF), label, values and per-variable metadata."""

    name: str
    label: str
    frame: pd.DataFrame
    variables: tuple[Variable, ...]


def ascii_text(text: str) -> str:
    """``text`` in ASCII: accents dropped (é -> e), other non-ASCII characters as ``?``."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return kept.encode("ascii", "replace").decode("ascii")


def short_label(text: str) -> str:
    """A transport label: ASCII, at most 40 characters."""
    return ascii_text(text)[:MAX_LABEL].rstrip()


def unique_codes(words: Sequence[str], taken: Iterable[str] = ()) -> list[str]:
    """Upper-case codes of at most 8 letters, digits or ``_`` (starting with a letter), one per
    word and all different from each other and from ``taken``; a clash ends in a number."""
    used = set(taken)
    codes = []
    for word in words:
        base = re.sub(r"[^A-Z0-9_]", "", ascii_text(word).upper()).lstrip("0123456789_")
        base = base or "VAR"
        code, n = base[:8], 1
        while code in used:
            n += 1
            code = base[: 8 - len(str(n))] + str(n)
        used.add(code)
        codes.append(code)
    return codes


def _yes(flags: pd.Series) -> np.ndarray:
    """ADaM flag text: ``Y`` or ``N``."""
    return np.where(flags.astype(str) == "Y", "Y", "N")


def _arm_codelist(trial: TrialConfig) -> tuple[str, str]:
    """The codelists of TRT01P (data label = display label) and TRT01PN (number = arm)."""
    text = "; ".join(f"{a} = {arm_name(trial, a)}" for a in trial.arms)
    numbers = "; ".join(f"{i} = {a}" for i, a in enumerate(trial.arms, start=1))
    return text, numbers


def _treatment(frame: pd.DataFrame, trial: TrialConfig, *, subjid: bool) -> dict[str, object]:
    """STUDYID, USUBJID (and SUBJID) and the planned treatment, text and number, of each row."""
    ids = frame["subject_id"].astype(str)
    number = {a: i for i, a in enumerate(trial.arms, start=1)}
    values: dict[str, object] = {"STUDYID": trial.name, "USUBJID": (trial.name + "-" + ids)}
    if subjid:
        values["SUBJID"] = ids
    values["TRT01P"] = frame["arm"].astype(str)
    values["TRT01PN"] = frame["arm"].map(number).astype("int64")
    return {k: v.to_numpy() if isinstance(v, pd.Series) else v for k, v in values.items()}


def _treatment_variables(trial: TrialConfig, *, subjid: bool) -> list[Variable]:
    """The metadata of the variables :func:`_treatment` makes."""
    text, numbers = _arm_codelist(trial)
    subject = f"Collected: subjects file column {trial.subject_id_column!r}"
    return [
        Variable("STUDYID", "Study Identifier", "Assigned: the trial's name"),
        Variable("USUBJID", "Unique Subject Identifier", "Derived: STUDYID-subject_id"),
        *([Variable("SUBJID", "Subject Identifier for the Study", subject)] if subjid else []),
        Variable("TRT01P", "Planned Treatment for Period 01",
                 f"Collected: subjects file column {trial.arm_column!r} (arm)", text),
        Variable("TRT01PN", "Planned Treatment for Period 01 (N)", "Derived: from TRT01P",
                 numbers),
    ]  # fmt: skip


# Names of ADSL's own variables: a covariate never takes one of them.
_RESERVED = ("STUDYID", "USUBJID", "SUBJID", "TRT01P", "TRT01PN", "ITTFL", "SAFFL", "COMPLFL",
             "PPROTFL", "DCSREAS")  # fmt: skip


def _flag_variables(adsl: pd.DataFrame, trial: TrialConfig) -> list[tuple[Variable, object]]:
    """ADSL's population flags and discontinuation reason, with their values."""
    flags: list[tuple[Variable, object]] = [
        (Variable("ITTFL", "Intent-To-Treat Population Flag",
                  "Derived: itt (everyone randomized)", "Y; N"), _yes(adsl["itt"])),
        (Variable("SAFFL", "Safety Population Flag", "Assigned: everyone randomized (the "
                  "denominator of the harms table)", "Y; N"), np.full(len(adsl), "Y")),
        (Variable("COMPLFL", "Completers Population Flag", "Derived: completed (the final "
                  f"visit {trial.final_visit!r} attended)", "Y; N"), _yes(adsl["completed"])),
    ]  # fmt: skip
    if "per_protocol" in adsl:
        rule = trial.sensitivity["per_protocol"]["column"]
        origin = f"Derived: per_protocol (subjects file column {rule!r})"
        variable = Variable("PPROTFL", "Per-Protocol Population Flag", origin, "Y; N")
        flags.append((variable, _yes(adsl["per_protocol"])))
    if "withdrawal_reason" in adsl:
        origin = f"Collected: subjects file column {trial.withdrawal_reason_column!r}"
        variable = Variable("DCSREAS", "Reason for Discontinuation from Study", origin)
        flags.append((variable, adsl["withdrawal_reason"].fillna("").astype(str).to_numpy()))
    return flags


def build_adsl(adsl: pd.DataFrame, trial: TrialConfig) -> AdamDataset:
    """ADSL: one row per randomized subject (the rows of ``adsl.csv``, in its order)."""
    values = _treatment(adsl, trial, subjid=True)
    variables = _treatment_variables(trial, subjid=True)
    names = unique_codes([c.name for c in trial.covariates], taken=_RESERVED)
    for covariate, name in zip(trial.covariates, names, strict=True):
        codes = "; ".join(f"{k} = {v}" for k, v in covariate.levels.items())
        origin = f"Collected: subjects file column {covariate.name!r}"
        variables.append(Variable(name, short_label(covariate.name), origin, codes))
        values[name] = adsl[covariate.name].to_numpy()
    for variable, column in _flag_variables(adsl, trial):
        variables.append(variable)
        values[variable.name] = column
    frame = pd.DataFrame(values, index=range(len(adsl)))
    return AdamDataset("ADSL", "Subject-Level Analysis Dataset", frame, tuple(variables))


def _parameter_variables(trial: TrialConfig, codes: Sequence[str]) -> list[Variable]:
    """PARAMCD, PARAM, PARAMN and the visit variables, with their codelists."""
    params = [f"{c} = {o.name}" for c, o in zip(codes, trial.outcomes, strict=True)]
    numbers = [f"{i} = {c}" for i, c in enumerate(codes, start=1)]
    visits = [f"{v.index} = {v.label} ({visit_name(trial, v.label)}, week {v.week:g})"
              for v in trial.visits]  # fmt: skip
    return [
        Variable("PARAMCD", "Parameter Code", "Derived: from outcome", "; ".join(params)),
        Variable("PARAM", "Parameter", "Derived: outcome label (unit)"),
        Variable("PARAMN", "Parameter (N)", "Derived: order of the outcomes", "; ".join(numbers)),
        Variable("AVISIT", "Analysis Visit", "Derived: visit",
                 "; ".join(v.label for v in trial.visits)),
        Variable("AVISITN", "Analysis Visit (N)", "Derived: visit_index", "; ".join(visits)),
    ]  # fmt: skip


_ANALYSIS_VALUES = (
    ("AVAL", "value", "Analysis Value", "Collected: visits file, the outcome's column"),
    ("BASE", "baseline", "Baseline Value", "Derived: AVAL at the baseline visit"),
    ("CHG", "change", "Change from Baseline", "Derived: AVAL - BASE after baseline"),
    ("PCHG", "pct_change", "Percent Change from Baseline", "Derived: 100 * CHG / BASE"),
    ("ABLFL", "ablfl", "Baseline Record Flag", "Derived: ablfl (the baseline visit)"),
    ("ANL01FL", "anl01fl", "Analysis Flag 01", "Derived: anl01fl (CHG present)"),
)


def build_adeff(adeff: pd.DataFrame, trial: TrialConfig) -> AdamDataset:
    """ADEFF: one row per subject x outcome x scheduled visit (the rows of ``adeff.csv``)."""
    codes = unique_codes([o.name for o in trial.outcomes])
    code = dict(zip((o.name for o in trial.outcomes), codes, strict=True))
    param = {o.name: ascii_text(f"{o.label} ({o.unit})") for o in trial.outcomes}
    order = {o.name: i for i, o in enumerate(trial.outcomes, start=1)}
    values = _treatment(adeff, trial, subjid=False)
    values["PARAMCD"] = adeff["outcome"].map(code).to_numpy()
    values["PARAM"] = adeff["outcome"].map(param).to_numpy()
    values["PARAMN"] = adeff["outcome"].map(order).astype("int64").to_numpy()
    values["AVISIT"] = adeff["visit"].astype(str).to_numpy()
    values["AVISITN"] = adeff["visit_index"].astype("int64").to_numpy()
    variables = [*_treatment_variables(trial, subjid=False), *_parameter_variables(trial, codes)]
    for name, column, label, origin in _ANALYSIS_VALUES:
        flag = column.endswith("fl")
        values[name] = adeff[column].fillna("").astype(str) if flag else adeff[column]
        variables.append(Variable(name, label, origin, "Y" if flag else ""))
    frame = pd.DataFrame({k: np.asarray(v) if not isinstance(v, str) else v
                          for k, v in values.items()}, index=range(len(adeff)))  # fmt: skip
    return AdamDataset("ADEFF", "Efficacy Analysis Dataset", frame, tuple(variables))


def adam_datasets(adsl: pd.DataFrame, adeff: pd.DataFrame, trial: TrialConfig) -> list[AdamDataset]:
    """ADSL and ADEFF under CDISC names, from the workflow's ``adsl`` and ``adeff`` tables."""
    return [build_adsl(adsl, trial), build_adeff(adeff, trial)]


def _is_text(column: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def transport_frame(dataset: AdamDataset) -> pd.DataFrame:
    """The dataset's values as transport version 5 holds them: numbers (doubles in the file;
    whole-number codes kept as integers for the CSV), text in ASCII (empty for missing) as
    Python strings; stops if a name, label or value does not fit."""
    _check_names(dataset)
    out: dict[str, pd.Series] = {}
    index = dataset.frame.index
    for variable in dataset.variables:
        column = dataset.frame[variable.name]
        if _is_text(column):
            text = _ascii_column(dataset.name, variable.name, column)
            # Kept as Python objects: pandas would otherwise infer its string type.
            out[variable.name] = pd.Series(text, index=index, dtype=object)
        elif pd.api.types.is_integer_dtype(column):  # a code or an order: 1, not 1.0
            out[variable.name] = pd.Series(column.to_numpy(dtype="int64"), index=index)
        else:
            values = column.to_numpy(dtype="float64", na_value=np.nan)
            out[variable.name] = pd.Series(values, index=index)
    return pd.DataFrame(out)


def _ascii_column(dataset: str, name: str, column: pd.Series) -> np.ndarray:
    """A text column as an array of ASCII Python strings, checked against the 200-byte limit.

    Work is per distinct value (a subject identifier repeats over visits and outcomes), and
    Python strings are what the transport writer walks through fastest."""
    text = column.to_numpy(dtype=object, na_value="")
    if pd.api.types.infer_dtype(text, skipna=False) != "string":  # not every value is text
        text = text.astype(str).astype(object)
    distinct = pd.unique(text)
    foreign = {v: ascii_text(v) for v in distinct if not v.isascii()}
    if foreign:
        text = pd.Series(text).replace(foreign).to_numpy(dtype=object)
        distinct = pd.unique(text)
    longest = max(distinct, key=len, default="")
    if len(longest) > MAX_TEXT:
        raise DataError(
            f"{dataset}.{name}: the value {longest!r} is longer than the {MAX_TEXT} characters "
            "a SAS transport file holds",
            fix="shorten the value in the input file",
        )
    return text


def _check_names(dataset: AdamDataset) -> None:
    """Stop if a name or label does not fit transport version 5."""
    names = [dataset.name, *(v.name for v in dataset.variables)]
    bad = [n for n in names if not NAME.match(n)]
    labels = [dataset.label, *(v.label for v in dataset.variables)]
    long = [t for t in labels if len(t) > MAX_LABEL or not t.isascii()]
    if bad or long or list(dataset.frame.columns) != names[1:]:
        raise DataError(
            f"{dataset.name} cannot be written as SAS transport version 5: names must be at "
            f"most 8 letters, digits or _ (starting with a letter), labels at most "
            f"{MAX_LABEL} ASCII characters; offending: {', '.join(bad + long) or 'columns'}",
            fix="rename the covariate or outcome in the trial description",
        )


def define_table(
    datasets: Sequence[AdamDataset], frames: Sequence[pd.DataFrame] | None = None
) -> pd.DataFrame:
    """One row per variable: dataset, variable, label, type, length, origin, codelist.

    ``length`` is the transport length: 8 for numbers, the longest value for text. ``frames``
    are the datasets' :func:`transport_frame` (computed when not given)."""
    rows = []
    frames = frames or [transport_frame(d) for d in datasets]
    for dataset, frame in zip(datasets, frames, strict=True):
        for v in dataset.variables:
            text = _is_text(frame[v.name])
            widths = [len(t) for t in pd.unique(frame[v.name])] if text else [8]
            rows.append(
                {
                    "dataset": dataset.name,
                    "dataset_label": dataset.label,
                    "variable": v.name,
                    "label": v.label,
                    "type": "Char" if text else "Num",
                    "length": max([1, *widths]),
                    "origin": ascii_text(v.origin),
                    "codelist": ascii_text(v.codelist),
                }
            )
    return pd.DataFrame(rows)


def write_xpt(dataset: AdamDataset, path: str | Path, frame: pd.DataFrame | None = None) -> None:
    """The dataset as SAS transport version 5, with labels and a fixed time stamp (``frame``:
    its :func:`transport_frame`, computed when not given)."""
    import pyreadstat

    from trialflow.io import atomic_path

    frame = transport_frame(dataset) if frame is None else frame
    labels: dict[str, str | None] = {v.name: v.label for v in dataset.variables}

    def written(rows: pd.DataFrame, tmp: Path) -> bytes:
        pyreadstat.write_xport(
            rows, str(tmp), file_label=dataset.label, column_labels=labels,
            table_name=dataset.name, file_format_version=5,
        )  # fmt: skip
        return tmp.read_bytes()

    with atomic_path(path) as tmp:
        # pyreadstat writes the headers from one row; the rows are encoded by numpy
        # (trialflow.xport), unless a number is beyond IBM floating point's range.
        data = with_observations(written(widest_row(frame), tmp), frame)
        tmp.write_bytes(fixed_stamps(written(frame, tmp) if data is None else data))


def fixed_stamps(data: bytes) -> bytes:
    """A transport file with every header time stamp set to :func:`build_time`."""
    from trialflow.stamps import build_time

    stamp = build_time().strftime("%d%b%y:%H:%M:%S").upper().encode("ascii")
    out = bytearray(data)
    member = data.find(_DSCRPTR)
    spots = [(0, rec, col) for rec, col in _LIBRARY_STAMPS]
    spots += [(member, rec, col) for rec, col in _MEMBER_STAMPS]
    for start, record, column in spots:
        at = start + 80 * record + column
        if member < 0 or not _STAMP.fullmatch(data[at : at + 16]):
            raise DataError(
                "the SAS transport file has an unexpected header layout (no time stamp where "
                "version 5 puts it)",
                fix="install the pyreadstat version of requirements.lock",
            )
        out[at : at + 16] = stamp
    return bytes(out)


def adam_writes(adsl: pd.DataFrame, adeff: pd.DataFrame, trial: TrialConfig,
                paths: Mapping[str, str]) -> list[Callable[[], None]]:  # fmt: skip
    """The writes of ADSL and ADEFF as CSV and XPT, and of define.csv, to ``paths`` (keys
    adam_adsl, adam_adsl_xpt, adam_adeff, adam_adeff_xpt, adam_define): independent, so a
    job with threads runs them side by side."""
    from trialflow.io import write_csv

    datasets = adam_datasets(adsl, adeff, trial)
    frames = [transport_frame(d) for d in datasets]
    writes: list[Callable[[], None]] = []
    for dataset, frame in zip(datasets, frames, strict=True):
        key = f"adam_{dataset.name.lower()}"
        writes.append(partial(write_csv, frame, paths[key]))
        writes.append(partial(write_xpt, dataset, paths[f"{key}_xpt"], frame))
    writes.append(partial(write_csv, define_table(datasets, frames), paths["adam_define"]))
    return writes


def write_adam(adsl: pd.DataFrame, adeff: pd.DataFrame, trial: TrialConfig,
               paths: Mapping[str, str]) -> None:  # fmt: skip
    """Write ADSL and ADEFF as CSV and XPT, and define.csv (see :func:`adam_writes`)."""
    for write in adam_writes(adsl, adeff, trial, paths):
        write()
