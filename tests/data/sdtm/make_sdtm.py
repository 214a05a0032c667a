"""Write the bundled exercise_education trial as CDISC SDTM domains (DM, QS, VS, LB).

The SDTM twin (data/raw/exercise_education_sdtm/, config/trials/exercise_education_sdtm.yaml)
holds the same subjects, arms and values as data/raw/exercise_education/, so that its effects
equal those of the CSV files, plus what SDTM exports have and those files do not: people
screened but never randomized (DM rows with ARMCD SCRNFAIL or NOTASSGN), a screening visit, a
second questionnaire test and an unscheduled laboratory visit.

Run from the project folder: ``python tests/data/sdtm/make_sdtm.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SOURCE = Path("data/raw/exercise_education")
TARGET = Path("data/raw/exercise_education_sdtm")
STUDY = "EXEDU"
ARMS = {"education": ("EDU", "Education"), "exercise": ("EXE", "Exercise")}
VISITS = {"baseline": (1, "BASELINE"), "week6": (2, "WEEK 6"), "week12": (3, "WEEK 12"),
          "week18": (4, "WEEK 18"), "week26": (5, "WEEK 26")}  # fmt: skip
SCREENING = (0, "SCREENING")
# Outcome column of visits.csv -> (domain, test code, test name, unit).
TESTS = {
    "Pain VAS": ("QS", "PAINVAS", "Pain intensity VAS", "cm"),
    "Knee extension torque": ("VS", "KNEETORQ", "Knee extension torque", "Nm"),
    "Treadmill VO2": ("VS", "VO2PEAK", "Peak VO2 (treadmill)", "mL/kg/min"),
    "HbA1c": ("LB", "HBA1C", "Hemoglobin A1C", "%"),
}
# People screened but never randomized: (after which subject, USUBJID, ARMCD, ARM, age, sex).
NOT_RANDOMIZED = [
    ("EE003", "EE901", "SCRNFAIL", "Screen Failure", "71", "F"),
    ("EE020", "EE902", "SCRNFAIL", "Screen Failure", "48", "M"),
    ("EE040", "EE903", "NOTASSGN", "Not Assigned", "66", "F"),
]


def dm(subjects: pd.DataFrame) -> pd.DataFrame:
    """One DM row per person screened, the randomized in the order of subjects.csv."""
    rows = []
    extra = {after: rest for after, *rest in NOT_RANDOMIZED}
    for s in subjects.itertuples(index=False):
        armcd, arm = ARMS[s.arm.strip().lower()]
        rows.append([STUDY, "DM", s.subject_id, s.subject_id, s.age, s.sex, armcd, arm])
        if s.subject_id in extra:
            usubjid, armcd, arm, age, sex = extra[s.subject_id]
            rows.append([STUDY, "DM", usubjid, usubjid, age, sex, armcd, arm])
    columns = ["STUDYID", "DOMAIN", "USUBJID", "SUBJID", "AGE", "SEX", "ARMCD", "ARM"]
    return pd.DataFrame(rows, columns=columns)


def _result(text: str) -> tuple[str, str]:
    """(--STRESC, --STRESN) of a cell: a number in both, other text in --STRESC only."""
    try:
        float(text)
    except ValueError:
        return text, ""
    return text, text


def findings(visits: pd.DataFrame, domain: str, screened: pd.DataFrame) -> pd.DataFrame:
    """The domain's findings rows: one per subject, visit and test with a value."""
    rows = []
    for v in visits.to_dict("records"):
        number, name = VISITS[v["visit"].strip()]
        for column, (dom, code, test, unit) in TESTS.items():
            if dom == domain and v[column] != "":
                text = v[column]
                rows.append([v["subject_id"], code, test, text, *_result(text), unit, number,
                             name])  # fmt: skip
    rows += _extra_rows(domain, visits, screened)
    out = pd.DataFrame(rows, columns=["USUBJID", "TESTCD", "TEST", "ORRES", "STRESC", "STRESN",
                                      "STRESU", "VISITNUM", "VISIT"])  # fmt: skip
    out = out.sort_values(["USUBJID", "VISITNUM"], kind="stable").reset_index(drop=True)
    out.insert(0, "STUDYID", STUDY)
    out.insert(1, "DOMAIN", domain)
    out.insert(3, "SEQ", out.groupby("USUBJID").cumcount() + 1)
    fixed = {"STUDYID", "DOMAIN", "USUBJID", "VISITNUM", "VISIT"}
    return out.rename(columns={c: domain + c for c in out.columns if c not in fixed})


def _extra_rows(domain: str, visits: pd.DataFrame, screened: pd.DataFrame) -> list[list]:
    """Rows SDTM exports have and visits.csv does not: QS at screening for everyone screened
    plus a sleep-interference item at every visit; an unscheduled HbA1c."""
    rows: list[list] = []
    if domain == "QS":
        for i, sid in enumerate(screened["USUBJID"]):
            value = f"{4 + (i * 7) % 50 / 10:.1f}"
            rows.append([sid, "PAINVAS", "Pain intensity VAS", value, value, value, "cm",
                         *SCREENING])  # fmt: skip
        for i, v in enumerate(visits.itertuples(index=False)):
            number, name = VISITS[v.visit.strip()]
            value = str(i % 11)
            rows.append([v.subject_id, "PAINSLP", "Pain interference with sleep", value, value,
                         value, "", number, name])  # fmt: skip
    if domain == "LB":
        rows.append(["EE005", "HBA1C", "Hemoglobin A1C", "7.9", "7.9", "7.9", "%", 2.1,
                     "UNSCHEDULED 2.1"])  # fmt: skip
    return rows


def main() -> None:
    subjects = pd.read_csv(SOURCE / "subjects.csv", dtype=str, keep_default_na=False)
    visits = pd.read_csv(SOURCE / "visits.csv", dtype=str, keep_default_na=False)
    TARGET.mkdir(parents=True, exist_ok=True)
    screened = dm(subjects)
    screened.to_csv(TARGET / "dm.csv", index=False, lineterminator="\n")
    for domain in ("QS", "VS", "LB"):
        findings(visits, domain, screened).to_csv(
            TARGET / f"{domain.lower()}.csv", index=False, lineterminator="\n"
        )


if __name__ == "__main__":
    main()
