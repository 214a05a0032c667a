"""REDCap exports: the "CSV Raw data" export of a longitudinal project and its data dictionary.

A trial description with ``data.format: redcap`` names the export (``data.records``: one row
per record and event, the record identifier in the first column, the event in
``redcap_event_name``), the data dictionary (``data.dictionary``), which event is which visit
(``data.events``) and the field holding the allocated arm (``data.randomisation.field``).
:func:`read_redcap` reshapes the export into the subjects and long visits tables cleaning
reads, before any cleaning, so that cleaning, queries and CONSORT counts are those of the same
data in two files:

- subject-level fields (the arm, covariates, the per-protocol and withdrawal-reason fields) are
  read from whichever event of the record holds them (two different values are an error), and
  radio, dropdown, yes/no and true/false codes become their choice labels;
- each row of a mapped event is one visit, its outcome fields kept as exported (numbers); an
  event row without any outcome value is no visit, as in a long file without that row;
- events not in ``data.events`` (screening, adverse-event forms) are left out with one data
  query naming them, and are an error when they hold outcome values (a visit not mapped);
- rows of repeating instruments or events are refused, as are ``*_complete`` form-status and
  other fields the trial description does not name, which are never read.

Every row keeps its spreadsheet row in the export and every cell its REDCap field, so that
queries name a cell the user can find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from trialflow.config import TrialConfig, did_you_mean
from trialflow.errors import DataError
from trialflow.io import RawTable, read_table
from trialflow.paths import data_file

EVENT = "redcap_event_name"
REPEAT_INSTRUMENT = "redcap_repeat_instrument"
# The dictionary columns read, as REDCap names them.
FIELD_NAME = "Variable / Field Name"
FORM_NAME = "Form Name"
FIELD_TYPE = "Field Type"
CHOICES = "Choices, Calculations, OR Slider Labels"
CHOICE_TYPES = frozenset({"radio", "dropdown"})
FIXED_CHOICES = {"yesno": {"1": "Yes", "0": "No"}, "truefalse": {"1": "True", "0": "False"}}


@dataclass(frozen=True)
class Field:
    """One field of the data dictionary; ``choices`` maps raw codes to labels."""

    name: str
    form: str
    type: str
    choices: dict[str, str] = field(default_factory=dict)


def parse_choices(text: str, *, file: str, row: int, name: str) -> dict[str, str]:
    """``"1, Exercise | 2, Education"`` as ``{"1": "Exercise", "2": "Education"}``."""
    choices: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split("|"))):
        code, comma, label = item.partition(",")
        if not comma or not code.strip():
            raise DataError(
                f"choice {item!r} of field {name!r} is not 'code, label'",
                file=file,
                row=row,
                column=CHOICES,
                fix="write the choices as REDCap does, e.g. '1, Exercise | 2, Education'",
            )
        choices[code.strip()] = label.strip()
    return choices


def read_dictionary(path: Path, configured: str) -> dict[str, Field]:
    """The data dictionary's fields by name, with the choices of categorical fields."""
    table = read_table(path)
    table.path = configured
    name_col, form_col, type_col, choices_col = table.required_columns(
        [FIELD_NAME, FORM_NAME, FIELD_TYPE, CHOICES],
        "the REDCap data dictionary",
        "give data.dictionary the project's data dictionary as REDCap downloads it (CSV)",
    )
    fields: dict[str, Field] = {}
    for pos, row in enumerate(table.frame.itertuples(index=False)):
        cells = dict(zip(table.frame.columns, row, strict=True))
        name, kind = cells[name_col].strip(), cells[type_col].strip().lower()
        choices = FIXED_CHOICES.get(kind, {})
        if kind in CHOICE_TYPES:
            choices = parse_choices(
                cells[choices_col], file=configured, row=table.row_number(pos), name=name
            )
        fields[name] = Field(name, cells[form_col].strip(), kind, choices)
    return fields


def read_records(path: Path, configured: str) -> RawTable:
    """The export, checked to be longitudinal and free of repeating instruments."""
    table = read_table(path)
    table.path = configured
    (event,) = table.required_columns(
        [EVENT],
        "the REDCap export",
        "export the records of a longitudinal project (with events) as 'CSV Raw data'",
    )
    table.frame = table.frame.rename(columns={event: EVENT})
    repeat = table.column_named(REPEAT_INSTRUMENT)
    if repeat is not None:
        repeated = table.frame.index[table.frame[repeat].str.strip() != ""]
        if len(repeated):
            pos = int(repeated[0])
            instrument = _cell(table, pos, repeat)
            raise DataError(
                f"{len(repeated)} row(s) belong to repeating instruments (the first, of record "
                f"{_cell(table, pos)!r}, to instrument {instrument!r}); a repeated form "
                "is not a visit",
                file=configured,
                row=table.row_number(pos),
                column=repeat,
                fix=f"export the records without the repeating instrument {instrument!r} "
                "(choose the instruments in REDCap's export), or make its fields non-repeating "
                "and map its events under data.events",
            )
    return table


def _cell(table: RawTable, pos: int, column: str | None = None) -> str:
    """The stripped text of a cell (of the record identifier, the first column, by default)."""
    name = table.frame.columns[0] if column is None else column
    return str(table.frame.at[pos, name]).strip()


def _check_fields(trial: TrialConfig, records: RawTable, fields: dict[str, Field]) -> None:
    """Every field the trial reads is in the dictionary and in the export, not a checkbox."""
    dictionary = str(trial.dictionary_path)
    for name in (*subject_fields(trial), *(o.column for o in trial.outcomes)):
        if name not in fields:
            raise DataError(
                f"field {name!r} is not in the data dictionary "
                f"({did_you_mean(name, list(fields))})",
                file=dictionary,
                column=FIELD_NAME,
                fix="correct the field name in the trial description (REDCap's variable name), "
                "or download the dictionary of the project the records come from",
            )
        if fields[name].type == "checkbox":
            raise DataError(
                f"field {name!r} is a checkbox (one exported column per choice)",
                file=dictionary,
                column=FIELD_NAME,
                fix="use a radio, dropdown, yes/no or number field for the arm, covariates and "
                "outcomes",
            )
        if name not in records.frame.columns:
            raise DataError(
                f"the export has no column of field {name!r}",
                file=records.path,
                row=1,
                fix="export every field the trial description names (with its form)",
            )


def subject_fields(trial: TrialConfig) -> list[str]:
    """The fields read once per record: arm, covariates, per-protocol and withdrawal reason."""
    names = [trial.arm_column, *(c.name for c in trial.covariates)]
    per_protocol = (trial.sensitivity.get("per_protocol") or {}).get("column")
    names += [n for n in (per_protocol, trial.withdrawal_reason_column) if n]
    return list(dict.fromkeys(names))


def _one_value(records: RawTable, positions: list[int], name: str) -> tuple[str, int | None]:
    """The record's value of a subject-level field and its row position (None if empty).

    The field may be recorded in any event; two different values are an error.
    """
    cells = records.frame.loc[positions, name].str.strip()
    filled = cells[cells != ""]
    if filled.nunique() > 1:
        first, other = filled.index[0], filled.index[filled != filled.iloc[0]][0]
        raise DataError(
            f"record {_cell(records, first)!r} has two values of field {name!r}: "
            f"{filled[first]!r} (row {records.row_number(first)}, event "
            f"{_cell(records, first, EVENT)!r}) and {filled[other]!r} (row "
            f"{records.row_number(other)}, event {_cell(records, other, EVENT)!r})",
            file=records.path,
            row=records.row_number(other),
            column=name,
            fix="a subject-level field (arm, covariate) holds one value per record: record it "
            "in one event, or correct the other",
        )
    return (str(filled.iloc[0]), int(filled.index[0])) if len(filled) else ("", None)


def _label(records: RawTable, item: Field, code: str, pos: int | None) -> str:
    """The choice label of ``code`` for a categorical field (other fields: ``code`` itself)."""
    if not item.choices or code == "":
        return code
    if code not in item.choices:
        raise DataError(
            f"code {code!r} of field {item.name!r} is not one of its choices in the data "
            f"dictionary ({', '.join(f'{k}, {v}' for k, v in item.choices.items())})",
            file=records.path,
            row=None if pos is None else records.row_number(pos),
            column=item.name,
            fix="export the records as 'CSV Raw data' with the dictionary of the same project "
            "version, or correct the code",
        )
    return item.choices[code]


def _record_positions(records: RawTable) -> dict[str, list[int]]:
    """Each record's row positions, records in order of first appearance."""
    ids = records.frame.iloc[:, 0].str.strip()
    positions: dict[str, list[int]] = {}
    for pos, record in enumerate(ids):
        positions.setdefault(record, []).append(pos)
    return positions


def subjects_table(trial: TrialConfig, records: RawTable, fields: dict[str, Field]) -> RawTable:
    """One row per record: identifier and subject-level fields (choice labels).

    A record's row is the export row holding its arm (else its first row); each field's cell
    keeps the row it was read from.
    """
    names = subject_fields(trial)
    cells: dict[str, list[str]] = {trial.subject_id_column: [], **{n: [] for n in names}}
    cell_lines: dict[str, list[int]] = {n: [] for n in names}
    lines = []
    for positions in _record_positions(records).values():
        cells[trial.subject_id_column].append(str(records.frame.iloc[positions[0], 0]))
        found = {}
        for name in names:
            code, found[name] = _one_value(records, positions, name)
            cells[name].append(_label(records, fields[name], code, found[name]))
        arm_at = found[trial.arm_column]
        row = records.row_number(positions[0] if arm_at is None else arm_at)
        lines.append(row)
        for name, pos in found.items():
            cell_lines[name].append(row if pos is None else records.row_number(pos))
    return RawTable(
        frame=pd.DataFrame(cells, dtype=str),
        path=records.path,
        lines=lines,
        origins={trial.subject_id_column: [str(records.frame.columns[0])] * len(lines)},
        cell_lines=cell_lines,
    )


def events_of(trial: TrialConfig) -> dict[str, str]:
    """REDCap event name -> visit label, as ``data.events`` maps them."""
    return {str(k).strip(): str(v) for k, v in trial.raw["data"]["events"].items()}


def _unmapped_events(trial: TrialConfig, records: RawTable, unmapped: pd.Series) -> list[str]:
    """The events of the rows ``unmapped``; an error if one of them holds an outcome value."""
    events = records.frame[EVENT].str.strip()
    for o in trial.outcomes:
        filled = unmapped & (records.frame[o.column].str.strip() != "")
        if filled.any():
            pos = int(filled.to_numpy().argmax())
            raise DataError(
                f"event {events[pos]!r} holds outcome field {o.column!r} (record "
                f"{_cell(records, pos)!r}) but is not a visit of the trial",
                file=records.path,
                row=records.row_number(pos),
                column=o.column,
                fix=f"map the event to its visit under data.events (e.g. {events[pos]}: "
                f"{trial.visit_labels[-1]}); known events: "
                + ", ".join(map(repr, events_of(trial))),
            )
    return list(dict.fromkeys(events[unmapped]))


def _unmapped_note(path: str, events: list[str]) -> dict[str, object]:
    """The one data query naming the events left out."""
    return {
        "file": path,
        "row": None,
        "column": EVENT,
        "value": ", ".join(events),
        "rule": "unmapped_event",
        "action": "rows left out: not a visit of the trial (data.events); subject-level fields "
        "are read from them",
        "subject_id": "",
    }


def visits_table(trial: TrialConfig, records: RawTable) -> RawTable:
    """One row per record and mapped event that holds an outcome value, in export order."""
    mapping = events_of(trial)
    mapped = records.frame[EVENT].str.strip().isin(set(mapping))
    left_out = _unmapped_events(trial, records, ~mapped)
    outcomes = [o.column for o in trial.outcomes]
    held = records.frame[outcomes].apply(lambda x: x.str.strip() != "").any(axis=1)
    rows = records.frame.loc[mapped & held]
    frame = pd.DataFrame(
        {
            trial.subject_id_column: rows.iloc[:, 0],
            trial.visit_column: rows[EVENT].str.strip().map(mapping),
            **{c: rows[c] for c in outcomes},
        }
    ).reset_index(drop=True)
    n = len(frame)
    notes = list(records.notes)
    if left_out:
        notes.append(_unmapped_note(records.path, left_out))
    return RawTable(
        frame=frame,
        path=records.path,
        notes=notes,
        lines=[records.row_number(int(p)) for p in rows.index],
        origins={
            trial.subject_id_column: [str(records.frame.columns[0])] * n,
            trial.visit_column: [EVENT] * n,
        },
    )


def read_redcap(trial: TrialConfig, root: str | Path = ".") -> tuple[RawTable, RawTable]:
    """The subjects and long visits tables of a REDCap export, ready for cleaning."""
    fields = read_dictionary(data_file(trial, "dictionary", root), str(trial.dictionary_path))
    records = read_records(data_file(trial, "records", root), trial.visits_path)
    _check_fields(trial, records, fields)
    return subjects_table(trial, records, fields), visits_table(trial, records)
