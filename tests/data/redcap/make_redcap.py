"""Writes the bundled weightbearing trial as a REDCap project exports it.

The export (data/raw/weightbearing_redcap/export.csv, "CSV Raw data": one row per record and
event, choice fields as raw codes, a ``<form>_complete`` status per form) and its data
dictionary (dictionary.csv) hold the same subjects, arms and values as
data/raw/weightbearing/subjects.csv and visits.csv, so that config/trials/weightbearing_redcap.yaml
gives the same analysis as config/trials/weightbearing.yaml. Run from the project folder:
``python tests/data/redcap/make_redcap.py``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

SOURCE = Path("data/raw/weightbearing")
TARGET = Path("data/raw/weightbearing_redcap")
EVENTS = {"baseline": "baseline_arm_1", "week6": "week_6_arm_1", "week12": "week_12_arm_1"}
END_EVENT = "study_end_arm_1"  # holds no outcome: left out of the visits, read for the deviation
ARMS = {"nonweightbearing": "1", "weightbearing": "2"}
SEXES = {"F": "1", "M": "2"}
DEVIATIONS = {"none": "0", "minor": "1", "major": "2"}
OUTCOMES = {  # visits.csv column -> REDCap field
    "6MWD": "six_minute_walk",
    "Steps per day": "daily_steps",
    "HbA1c": "hba1c",
    "Ankle DF torque": "ankle_df_torque",
}
FORMS = {
    "randomisation": ["rand_group"],
    "demographics": ["age", "sex", "bmi"],
    "outcomes": list(OUTCOMES.values()),
    "study_completion": ["protocol_deviation"],
}
DICTIONARY_HEADER = [
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note",
    "Text Validation Type OR Show Slider Number", "Text Validation Min", "Text Validation Max",
    "Identifier?", "Branching Logic (Show field only if...)", "Required Field?",
]  # fmt: skip
# Field -> (type, label, choices, validation).
FIELDS = {
    "record_id": ("text", "Record ID", "", ""),
    "rand_group": ("radio", "Allocated group", "1, nonweightbearing | 2, weightbearing", ""),
    "age": ("text", "Age (years)", "", "integer"),
    "sex": ("radio", "Sex", "1, Female | 2, Male", ""),
    "bmi": ("text", "BMI (kg/m2)", "", "number"),
    "six_minute_walk": ("text", "6-minute walk distance (m)", "", ""),
    "daily_steps": ("text", "Steps per day", "", ""),
    "hba1c": ("text", "HbA1c (%)", "", "number"),
    "ankle_df_torque": ("text", "Ankle dorsiflexion torque (Nm)", "", "number"),
    "protocol_deviation": ("dropdown", "Protocol deviation", "0, none | 1, minor | 2, major", ""),
}


def _read(name: str) -> list[dict[str, str]]:
    with open(SOURCE / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def dictionary() -> str:
    """The data dictionary, fields in form order (record_id first, as REDCap requires)."""
    form_of = {"record_id": "randomisation"} | {f: k for k, v in FORMS.items() for f in v}
    rows = [DICTIONARY_HEADER]
    for name, (kind, label, choices, validation) in FIELDS.items():
        rows.append([name, form_of[name], "", kind, label, choices, "", validation, *[""] * 5])
    return _csv(rows)


def _row(record: str, event: str, values: dict[str, str]) -> list[str]:
    """One export row: fields of the event's forms filled, a status of 2 (complete) per form."""
    row = [record, event, "", ""]
    for fields in FORMS.values():
        cells = [values.get(f, "") for f in fields]
        row += [*cells, "2" if any(cells) else ""]
    return row


def export() -> str:
    """The records export: per record its baseline, follow-up and study-end events."""
    header = ["record_id", "redcap_event_name", "redcap_repeat_instrument"]
    header += ["redcap_repeat_instance"]
    for form, fields in FORMS.items():
        header += [*fields, f"{form}_complete"]
    visits: dict[tuple[str, str], dict[str, str]] = {}
    for v in _read("visits.csv"):
        key = (v["Patient ID"].strip(), v["Visit Name"].strip())
        visits[key] = {field: v[column].strip() for column, field in OUTCOMES.items()}
    rows = [header]
    for s in _read("subjects.csv"):
        record = s["Patient ID"].strip()
        subject = {
            "rand_group": ARMS[s["Group"].strip()],
            "age": s["Age (years)"],
            "sex": SEXES[s["Sex"]],
            "bmi": s["BMI"],
        }
        for label, event in EVENTS.items():
            values = visits.get((record, label))
            if values is not None or label == "baseline":
                extra = subject if label == "baseline" else {}
                rows.append(_row(record, event, {**(values or {}), **extra}))
        deviation = DEVIATIONS[s["Protocol deviation"]]
        rows.append(_row(record, END_EVENT, {"protocol_deviation": deviation}))
    return _csv(rows)


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    (TARGET / "export.csv").write_text(export(), encoding="utf-8")
    (TARGET / "dictionary.csv").write_text(dictionary(), encoding="utf-8")


if __name__ == "__main__":
    main()
