"""CDISC SDTM input: a demographics domain (DM) and findings domains (QS, VS, LB, ...).

A trial description with ``data.format: sdtm`` names its DM file, its findings files and, per
outcome, the test it is read from (``data.tests``). :func:`read_sdtm` turns them into the
subjects and long visits tables cleaning reads, before any cleaning, so that cleaning, queries
and CONSORT counts are those of the same data in subjects and visits files:

- DM rows of people never randomized (ARMCD ``SCRNFAIL`` or ``NOTASSGN``, ARM "Screen Failure"
  or "Not Assigned", or an empty ARMCD) are the screening log's exclusions (CONSORT
  enrolment), the other rows the subjects;
- findings rows of a mapped test give the outcome's value (``--STRESN``, or ``--STRESC`` with a
  query when ``--STRESN`` is empty), one visits row per subject and visit; rows of other tests,
  of visits that are not analysed and of people not randomized are left out with a query.

Every cell keeps the domain file, row (observation in a SAS transport file) and SDTM variable
it came from, so that queries name a cell the user can find.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from trialflow.config import TrialConfig
from trialflow.errors import DataError
from trialflow.io import RawTable, read_table
from trialflow.paths import data_file, raw_files

if TYPE_CHECKING:
    from trialflow.clean import CleanResult

__all__ = ["SdtmTables", "clean_sdtm", "read_sdtm"]

# Why a DM row was never randomized, by ARMCD and by ARM (SDTM IG 3.x controlled terms).
NOT_RANDOMIZED_CODES = {
    "SCRNFAIL": "screen failure",
    "NOTASSGN": "not assigned",
    "": "not assigned",
}
NOT_RANDOMIZED_ARMS = {"screen failure": "screen failure", "not assigned": "not assigned"}
_SHOWN = 10  # identifiers or visits shown in a message


@dataclass
class SdtmTables:
    """SDTM domains as the tables cleaning reads, with what cleaning does not see."""

    subjects: RawTable
    visits: RawTable
    screening: pd.DataFrame  # columns of trialflow.screening.SCREENING_COLUMNS
    queries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Finding:
    """One findings row that gives an outcome's value."""

    subject: str
    visit: str
    outcome: str
    text: str
    file: str
    row: int
    column: str


def _query(file: str, row: int | None, column: str, value: str, rule: str, action: str,
           subject: str = "") -> dict[str, Any]:  # fmt: skip
    """A data query (the keys of trialflow.clean.QUERY_COLUMNS)."""
    return {"file": file, "row": row, "column": column, "value": value, "rule": rule,
            "action": action, "subject_id": subject}  # fmt: skip


def _read(trial: TrialConfig, key: str, root: str | Path) -> RawTable:
    """The domain file under ``data.<key>``, named in messages as the trial description names
    it (a ConfigError if it is missing)."""
    path = raw_files(trial)[key]
    table = read_table(data_file(trial, key, root))
    table.path = path
    for note in table.notes:
        note["file"] = path
    return table


def _not_randomized(table: RawTable) -> pd.Series:
    """Per DM row, why the person was never randomized ("" for the randomized)."""
    armcd_col, arm_col = table.column_named("ARMCD"), table.column_named("ARM")
    if armcd_col is None and arm_col is None:
        raise DataError(
            "DM has neither an ARMCD nor an ARM column",
            file=table.path,
            row=table.header_row,
            fix="export DM with ARMCD (arm code) or ARM (arm description)",
        )
    reason = pd.Series("", index=table.frame.index)
    if arm_col is not None:
        arm = table.frame[arm_col].str.strip().str.lower()
        reason = arm.map(NOT_RANDOMIZED_ARMS).fillna("")
    if armcd_col is not None:
        code = table.frame[armcd_col].str.strip().str.upper().map(NOT_RANDOMIZED_CODES)
        reason = reason.where(reason != "", code.fillna(""))
    return reason


def _arm_of(trial: TrialConfig, table: RawTable) -> tuple[pd.Series, str]:
    """Each DM row's arm as the trial description spells it, and the DM variable read.

    ARMCD is read when its values are arm labels (in any case), else ARM, whose values may
    also be the arms' display labels (``arms.labels``); unknown values are passed on as read,
    so that cleaning names them.
    """
    spelled = {a.lower(): a for a in trial.arms}
    spelled.update({v.strip().lower(): k for k, v in trial.arm_labels.items()})
    for name in ("ARMCD", "ARM"):
        column = table.column_named(name)
        if column is None:
            continue
        text = table.frame[column].str.strip()
        arms = text.str.lower().map(spelled)
        if arms.notna().any():
            return arms.fillna(text), column
    column = str(table.column_named("ARMCD") or table.column_named("ARM"))
    return table.frame[column], column


def _subjects(trial: TrialConfig, dm: RawTable, randomized: pd.Series) -> RawTable:
    """The randomized DM rows as the subjects table: identifier, arm and the covariates (and
    withdrawal reason, per-protocol column) found in DM in any case."""
    (usubjid,) = dm.required_columns(["USUBJID"], "DM", "export DM with USUBJID")
    arm, arm_from = _arm_of(trial, dm)
    kept = dm.frame.index[randomized]
    columns = {trial.subject_id_column: usubjid}
    wanted = [c.name for c in trial.covariates]
    wanted += [trial.withdrawal_reason_column] if trial.withdrawal_reason_column else []
    per_protocol = (trial.sensitivity.get("per_protocol") or {}).get("column")
    wanted += [per_protocol] if per_protocol else []
    for name in wanted:
        # An absent column stays absent: cleaning names it with the fix.
        columns[name] = dm.column_named(name) or name
    frame = pd.DataFrame(
        {ours: dm.frame[theirs].loc[kept] for ours, theirs in columns.items() if theirs in dm.frame}
    )
    frame[trial.arm_column] = arm.loc[kept]
    columns[trial.arm_column] = arm_from
    frame = frame.reset_index(drop=True)
    return RawTable(
        frame=frame,
        path=dm.path,
        notes=dm.notes,
        lines=[dm.row_number(int(p)) for p in kept],
        origins={ours: [theirs] * len(frame) for ours, theirs in columns.items()},
        labels={ours: dm.labels[theirs] for ours, theirs in columns.items() if theirs in dm.labels},
        row_kind=dm.row_kind,
    )


def _screening(dm: RawTable, reason: pd.Series) -> pd.DataFrame:
    """Every DM row as a screening log row: the randomized with their identifier, the others
    with why they were not randomized."""
    ids = dm.frame[str(dm.column_named("USUBJID"))].str.strip()
    return pd.DataFrame(
        {
            "subject_id": ids.where(reason == "", ""),
            "reason": reason,
            "source_row": [dm.row_number(int(p)) for p in dm.frame.index],
        }
    ).reset_index(drop=True)


def _domain_columns(table: RawTable) -> tuple[str, dict[str, str]]:
    """A findings file's domain (the prefix of its --TESTCD variable) and its variables:
    usubjid, testcd, stresn, and stresc, visit, visitnum when present."""
    testcd = next((str(c) for c in table.frame.columns if str(c).upper().endswith("TESTCD")), None)
    if testcd is None or len(testcd) != 8:
        raise DataError(
            "a findings domain needs a --TESTCD variable (QSTESTCD, VSTESTCD, LBTESTCD, ...)",
            file=table.path,
            row=table.header_row,
            fix="list only SDTM findings domains under data.findings",
        )
    prefix = testcd[:2].upper()
    names = ["USUBJID", f"{prefix}TESTCD", f"{prefix}STRESN"]
    found = table.required_columns(names, f"the {prefix} domain", "export the domain with "
                                   "USUBJID, --TESTCD, --STRESN and VISIT or VISITNUM")  # fmt: skip
    columns = dict(zip(["usubjid", "testcd", "stresn"], found, strict=True))
    for key, name in (("stresc", f"{prefix}STRESC"), ("visit", "VISIT"), ("visitnum", "VISITNUM")):
        column = table.column_named(name)
        if column is not None:
            columns[key] = column
    if "visit" not in columns and "visitnum" not in columns:
        raise DataError(
            f"the {prefix} domain has neither a VISIT nor a VISITNUM column",
            file=table.path,
            row=table.header_row,
            fix="export the domain with VISIT (or VISITNUM)",
        )
    return prefix, columns


def _visit_key(text: str) -> str:
    """A VISIT or VISITNUM as compared with data.visit_labels: any case and spacing, and
    VISITNUM 2.0 as 2."""
    key = " ".join(text.lower().split())
    try:
        number = float(key)
    except ValueError:
        return key
    return f"{number:g}"


def _visit_labels(
    trial: TrialConfig, table: RawTable, columns: dict[str, str]
) -> tuple[pd.Series, pd.Series]:
    """Each row's visit as written (VISIT, else VISITNUM) and its visit label: None for a
    visit data.visit_labels leaves out, "" for an unscheduled one (neither mapped nor, without
    data.visit_labels, a visit label)."""
    frame = table.frame
    written = frame[columns["visit"]].str.strip() if "visit" in columns else None
    if "visitnum" in columns:
        number = frame[columns["visitnum"]].str.strip()
        written = number if written is None else written.where(written != "", number)
    assert written is not None and trial.sdtm is not None  # see _domain_columns
    mapping: dict[str, str | None] = {_visit_key(v): v for v in trial.visit_labels}
    if trial.sdtm.visit_labels:
        mapping = {_visit_key(k): v for k, v in trial.sdtm.visit_labels.items()}
    return written, written.map(lambda w: mapping.get(_visit_key(w), ""))


def _ignored(
    table: RawTable, column: str, values: pd.Series, rule: str, what: str
) -> list[dict[str, Any]]:
    """One query per distinct value of the rows left out, with their count."""
    queries = []
    for value, count in values.value_counts(sort=False).sort_index().items():
        queries.append(_query(table.path, None, column, str(value), rule,
                              f"{count} {table.row_kind}(s) left out: {what}"))  # fmt: skip
    return queries


def _check_known(table: RawTable, column: str, ids: pd.Series, reason: dict[str, str]) -> None:
    """Every subject of the findings rows is in DM."""
    unknown = ids.index[~ids.isin(set(reason))]
    if len(unknown):
        names = list(dict.fromkeys(ids.loc[unknown]))
        raise DataError(
            f"{len(names)} subject(s) are not in DM: {', '.join(names[:_SHOWN])}",
            file=table.path,
            row=table.row_number(int(unknown[0])),
            row_kind=table.row_kind,
            column=column,
            fix="add them to DM, or correct USUBJID",
        )


def _read_findings(
    trial: TrialConfig, table: RawTable, reason: dict[str, str]
) -> tuple[list[_Finding], list[dict[str, Any]]]:
    """The rows of one findings file that give outcome values, and the queries of the rows
    left out (other tests, visits not analysed, people not randomized)."""
    assert trial.sdtm is not None
    domain, columns = _domain_columns(table)
    frame = table.frame
    outcome_of = {t.testcd.upper(): t.outcome for t in trial.sdtm.tests if t.domain == domain}
    codes = frame[columns["testcd"]].str.strip()
    outcome = codes.str.upper().map(outcome_of)
    queries = _ignored(table, columns["testcd"], codes[outcome.isna()], "unmapped_test_code",
                       "no outcome is read from this test code (data.tests)")  # fmt: skip
    ids = frame[columns["usubjid"]].str.strip()
    mapped = outcome.notna()
    _check_known(table, columns["usubjid"], ids[mapped], reason)
    excluded = mapped & (ids.map(reason) != "")
    if excluded.any():
        names = list(dict.fromkeys(ids[excluded]))
        queries.append(_query(
            table.path, None, columns["usubjid"], ", ".join(names[:_SHOWN]), "not_randomized",
            f"{int(excluded.sum())} {table.row_kind}(s) of {len(names)} people never "
            "randomized (DM) left out"))  # fmt: skip
    written, label = _visit_labels(trial, table, columns)
    unscheduled = mapped & ~excluded & (label == "")
    visit_column = columns["visit"] if "visit" in columns else columns["visitnum"]
    if unscheduled.any():
        counts = written[unscheduled].value_counts(sort=False).sort_index()
        queries.append(_query(
            table.path, None, visit_column, ", ".join(map(str, counts.index)),
            "unscheduled_visit", f"{int(counts.sum())} {table.row_kind}(s) of visits that are "
            "not analysed left out (map them under data.visit_labels)"))  # fmt: skip
    use = mapped & ~excluded & label.notna() & (label != "")
    found = [
        _finding(table, columns, int(p), outcome[p], label[p], queries) for p in frame.index[use]
    ]
    return found, queries


def _finding(
    table: RawTable,
    columns: dict[str, str],
    position: int,
    outcome: str,
    label: str,
    queries: list[dict[str, Any]],
) -> _Finding:
    """The finding of one row: --STRESN, or --STRESC (with a query) when --STRESN is empty."""
    row = table.frame.loc[position]
    subject = row[columns["usubjid"]].strip()
    text, column = row[columns["stresn"]].strip(), columns["stresn"]
    stresc = row[columns["stresc"]].strip() if "stresc" in columns else ""
    if text == "" and stresc != "":
        text, column = stresc, columns["stresc"]
        queries.append(_query(table.path, table.row_number(position), column, stresc,
                              "stresc_used", f"{columns['stresn']} is empty: value read from "
                              f"{column}", subject))  # fmt: skip
    return _Finding(subject, label, outcome, text, table.path, table.row_number(position), column)


def _where(f: _Finding) -> str:
    return f"{f.file} row {f.row}"


def _unique(findings: list[_Finding], queries: list[dict[str, Any]]) -> list[_Finding]:
    """One finding per subject, visit and outcome: a repeat with the same value is dropped
    with a query, one with another value stops the run naming both rows."""
    first: dict[tuple[str, str, str], _Finding] = {}
    for f in findings:
        key = (f.subject, f.visit, f.outcome)
        kept = first.setdefault(key, f)
        if kept is f:
            continue
        if kept.text != f.text:
            raise DataError(
                f"two findings of {f.outcome!r} for subject {f.subject!r} at visit {f.visit!r}: "
                f"{kept.text!r} ({_where(kept)}, {kept.column}) and {f.text!r} ({_where(f)})",
                file=f.file,
                row=f.row,
                column=f.column,
                fix="keep one finding per subject, visit and test (correct or remove the other)",
            )
        queries.append(_query(f.file, f.row, f.column, f.text, "exact_duplicate",
                              f"row dropped (identical to {_where(kept)})", f.subject))  # fmt: skip
    return list(first.values())


def _pivot(trial: TrialConfig, findings: list[_Finding], path: str) -> RawTable:
    """The findings as the long visits table: one row per subject and visit, one column per
    outcome; each cell keeps its file, row and SDTM variable."""
    rows: dict[tuple[str, str], dict[str, _Finding]] = {}
    for f in findings:
        rows.setdefault((f.subject, f.visit), {})[f.outcome] = f
    sid, visit = trial.subject_id_column, trial.visit_column
    data: dict[str, list[str]] = {sid: [k[0] for k in rows], visit: [k[1] for k in rows]}
    first = [next(iter(cells.values())) for cells in rows.values()]
    sources = {sid: [(f.file, f.row) for f in first], visit: [(f.file, f.row) for f in first]}
    origins = {sid: ["USUBJID"] * len(first), visit: ["VISIT"] * len(first)}
    for o in trial.outcomes:
        cells = [row.get(o.name) for row in rows.values()]
        data[o.column] = [c.text if c else "" for c in cells]
        held = [c or f for c, f in zip(cells, first, strict=True)]
        sources[o.column] = [(c.file, c.row) for c in held]
        origins[o.column] = [c.column if c else "" for c in cells]
    return RawTable(
        frame=pd.DataFrame(data, columns=list(data)),
        path=path,
        lines=[f.row for f in first],
        origins=origins,
        sources=sources,
    )


def read_sdtm(trial: TrialConfig, root: str | Path = ".") -> SdtmTables:
    """The trial's SDTM domains (paths relative to ``root``) as the tables cleaning reads."""
    assert trial.sdtm is not None
    dm = _read(trial, "dm", root)
    reason = _not_randomized(dm)
    ids = dm.frame[dm.required_columns(["USUBJID"], "DM", "export DM with USUBJID")[0]]
    queries: list[dict[str, Any]] = []
    findings: list[_Finding] = []
    for i in range(len(trial.sdtm.findings)):
        table = _read(trial, f"findings[{i}]", root)
        queries += [{**note, "subject_id": ""} for note in table.notes]
        found, asked = _read_findings(trial, table, dict(zip(ids.str.strip(), reason, strict=True)))
        # A test not done (no result) is a missing value, as an empty cell of a visits file.
        findings += [f for f in found if f.text != ""]
        queries += asked
    visits = _pivot(trial, _unique(findings, queries), ", ".join(trial.sdtm.findings))
    return SdtmTables(
        subjects=_subjects(trial, dm, reason == ""),
        visits=visits,
        screening=_screening(dm, reason),
        queries=queries,
    )


def clean_sdtm(trial: TrialConfig, root: str | Path = ".") -> CleanResult:
    """Read and clean the trial's SDTM domains: the cleaning result of their subjects and
    visits tables, with the DM rows as screening log and the queries of the rows left out."""
    from trialflow.clean import QUERY_COLUMNS, clean_trial

    tables = read_sdtm(trial, root)
    result = clean_trial(trial, tables.subjects, tables.visits)
    extra = pd.DataFrame(tables.queries, columns=list(QUERY_COLUMNS)).astype({"row": "Int64"})
    queries = result.queries
    if len(extra):
        queries = pd.concat([queries, extra], ignore_index=True)
    if len(queries):
        queries = queries.sort_values(
            ["file", "row", "column"], kind="stable", na_position="first"
        ).reset_index(drop=True)
    return replace(result, queries=queries, screening=tables.screening)
