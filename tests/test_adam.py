"""ADaM exchange datasets: the SAS transport files read back agree with the CSVs, with the
workflow's own adsl/adeff, with define.csv, and are the same bytes on every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from trialflow.adam import AdamDataset, Variable, unique_codes, write_adam, write_xpt
from trialflow.clean import read_and_clean
from trialflow.config import TrialConfig, load_trial
from trialflow.derive import Derived, derive
from trialflow.errors import DataError

from .conftest import ROOT, TinyTrial

FILES = {
    "adam_adsl": "adsl.csv",
    "adam_adsl_xpt": "adsl.xpt",
    "adam_adeff": "adeff.csv",
    "adam_adeff_xpt": "adeff.xpt",
    "adam_define": "define.csv",
}


def _write(trial: TrialConfig, folder: Path) -> tuple[dict[str, Path], Derived]:
    derived = derive(read_and_clean(trial), trial)
    paths = {key: folder / name for key, name in FILES.items()}
    write_adam(derived.adsl, derived.adeff, trial, {k: str(p) for k, p in paths.items()})
    return paths, derived


@pytest.fixture(scope="module", params=["weightbearing", "exercise_education"])
def bundled(request, tmp_path_factory) -> tuple[TrialConfig, dict[str, Path], Derived]:
    trial = load_trial(ROOT / "config" / "trials" / f"{request.param}.yaml")
    paths, derived = _write(trial, tmp_path_factory.mktemp(request.param))
    return trial, paths, derived


def _read(paths: dict[str, Path], name: str) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    xpt, meta = pyreadstat.read_xport(str(paths[f"adam_{name}_xpt"]))
    csv = pd.read_csv(paths[f"adam_{name}"], dtype=str, keep_default_na=False)
    return xpt, csv, meta


def test_xpt_names_and_labels_match_define(bundled) -> None:
    _, paths, _ = bundled
    define = pd.read_csv(paths["adam_define"], keep_default_na=False)
    for name, label in (("adsl", "Subject-Level Analysis Dataset"),
                        ("adeff", "Efficacy Analysis Dataset")):  # fmt: skip
        xpt, csv, meta = _read(paths, name)
        rows = define.loc[define["dataset"] == name.upper()]
        assert meta.table_name == name.upper() and meta.file_label == label
        assert list(xpt.columns) == list(csv.columns) == list(rows["variable"])
        assert meta.column_names_to_labels == dict(
            zip(rows["variable"], rows["label"], strict=True)
        )
        assert all(len(v) <= 8 for v in xpt.columns)
        assert all(len(t) <= 40 and t.isascii() for t in rows["label"])
        types = {"string": "Char", "double": "Num"}
        assert {k: types[v] for k, v in meta.readstat_variable_types.items()} == dict(
            zip(rows["variable"], rows["type"], strict=True)
        )
        assert meta.variable_storage_width == dict(
            zip(rows["variable"], rows["length"], strict=True)
        )


def test_xpt_values_equal_the_csv(bundled) -> None:
    _, paths, _ = bundled
    for name in ("adsl", "adeff"):
        xpt, csv, meta = _read(paths, name)
        for column in xpt.columns:
            if meta.readstat_variable_types[column] == "string":
                assert list(xpt[column]) == list(csv[column]), column
            else:
                numbers = pd.to_numeric(csv[column].replace("", np.nan))
                np.testing.assert_array_equal(xpt[column].to_numpy(), numbers.to_numpy())


def test_adsl_maps_the_workflow_adsl(bundled) -> None:
    trial, paths, derived = bundled
    adsl, _, _ = _read(paths, "adsl")
    friendly = derived.adsl
    assert adsl["USUBJID"].is_unique and len(adsl) == len(friendly)
    assert list(adsl["USUBJID"]) == [f"{trial.name}-{s}" for s in friendly["subject_id"]]
    assert (adsl["STUDYID"] == trial.name).all()
    assert list(adsl["TRT01P"]) == list(friendly["arm"])
    # TRT01PN: 1 for the control arm, 2 for the treatment arm, one number per arm.
    assert adsl.groupby("TRT01P")["TRT01PN"].nunique().eq(1).all()
    assert dict(zip(adsl["TRT01P"], adsl["TRT01PN"], strict=True)) == {
        trial.control: 1.0, trial.treatment: 2.0
    }  # fmt: skip
    assert list(adsl["ITTFL"]) == list(friendly["itt"])
    assert list(adsl["COMPLFL"]) == list(friendly["completed"])
    assert (adsl["SAFFL"] == "Y").all()
    if "per_protocol" in friendly:
        assert list(adsl["PPROTFL"]) == list(friendly["per_protocol"])
    if "withdrawal_reason" in friendly:
        assert list(adsl["DCSREAS"]) == list(friendly["withdrawal_reason"].fillna(""))


def test_adeff_maps_the_workflow_adeff(bundled) -> None:
    trial, paths, derived = bundled
    adeff, _, _ = _read(paths, "adeff")
    friendly = derived.adeff
    assert len(adeff) == len(friendly)
    np.testing.assert_array_equal(adeff["AVAL"], friendly["value"])
    np.testing.assert_array_equal(adeff["BASE"], friendly["baseline"])
    np.testing.assert_array_equal(adeff["PCHG"], friendly["pct_change"])
    np.testing.assert_array_equal(adeff["AVISITN"], friendly["visit_index"])
    assert list(adeff["AVISIT"]) == list(friendly["visit"])
    post = adeff["AVISIT"] != trial.baseline_visit
    np.testing.assert_allclose(adeff.loc[post, "CHG"], (adeff["AVAL"] - adeff["BASE"])[post])
    assert adeff.loc[~post, "CHG"].isna().all()
    # ABLFL only on the baseline visit; ANL01FL exactly where CHG is present.
    assert set(adeff.loc[adeff["ABLFL"] == "Y", "AVISIT"]) == {trial.baseline_visit}
    assert (adeff.loc[~post, "ABLFL"] == "Y").all()
    assert ((adeff["ANL01FL"] == "Y") == adeff["CHG"].notna()).all()
    # One PARAMCD (at most 8 characters) and one PARAM per outcome, in the outcomes' order.
    codes = adeff.drop_duplicates("PARAMN")
    assert list(codes["PARAMN"]) == list(range(1, len(trial.outcomes) + 1))
    assert all(len(c) <= 8 for c in codes["PARAMCD"])
    assert list(codes["PARAM"]) == [f"{o.label} ({o.unit})" for o in trial.outcomes]
    pairs = adeff.groupby("PARAMCD")["PARAM"].nunique()
    assert pairs.eq(1).all() and len(pairs) == len(trial.outcomes)
    adsl, _, _ = _read(paths, "adsl")
    arms = dict(zip(adsl["USUBJID"], adsl["TRT01PN"], strict=True))
    assert (adeff["USUBJID"].map(arms) == adeff["TRT01PN"]).all()


def test_xpt_is_byte_identical_and_stamped_from_source_date_epoch(
    tiny: TinyTrial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = tiny.load()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764115200")  # 2025-11-26 00:00:00 UTC
    first, _ = _write(trial, tmp_path / "a")
    second, _ = _write(trial, tmp_path / "b")
    for key in FILES:
        assert first[key].read_bytes() == second[key].read_bytes(), key
    header = first["adam_adsl_xpt"].read_bytes()[:640]
    assert header.count(b"26NOV25:00:00:00") == 4
    _, meta = pyreadstat.read_xport(str(first["adam_adsl_xpt"]))
    assert str(meta.creation_time) == "2025-11-26 00:00:00"
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    unset, _ = _write(trial, tmp_path / "c")
    assert unset["adam_adeff_xpt"].read_bytes()[:640].count(b"01JAN70:00:00:00") == 4


def test_non_ascii_text_and_long_names_fit_transport_version_5(
    tiny: TinyTrial, tmp_path: Path
) -> None:
    long_name = "Age at randomisation (years rounded down)"
    tiny.config["covariates"] = [long_name, {"name": "sexe", "levels": {"F": "Femme"}}]
    tiny.config["outcomes"][0]["unit"] = "µg/m²"
    for row in tiny.subjects:
        row[long_name] = row.pop("age")
        row["sexe"] = {"F": "Féminin", "M": "Masculin"}[row.pop("sex")]
    paths, _ = _write(tiny.load(), tmp_path)
    adsl, meta = pyreadstat.read_xport(str(paths["adam_adsl_xpt"]))
    assert list(adsl.columns[5:7]) == ["AGEATRAN", "SEXE"]
    assert meta.column_names_to_labels["AGEATRAN"] == long_name[:40]
    assert set(adsl["SEXE"]) == {"Feminin", "Masculin"}
    adeff, _ = pyreadstat.read_xport(str(paths["adam_adeff_xpt"]))
    # NFKD turns the superscript 2 into 2; the micro sign has no ASCII form.
    assert adeff["PARAM"].iloc[0] == "Pain VAS (?g/m2)"


def test_codes_are_unique_and_at_most_eight_characters() -> None:
    codes = unique_codes(["knee_strength_left", "knee_strength_right", "2nd visit", "ITTFL"],
                         taken={"ITTFL"})  # fmt: skip
    assert codes == ["KNEE_STR", "KNEE_ST2", "NDVISIT", "ITTFL2"]


def test_a_name_too_long_for_transport_stops_clearly(tmp_path: Path) -> None:
    frame = pd.DataFrame({"SUBJECTID": ["a"]})
    dataset = AdamDataset("ADSL", "Subject-Level Analysis Dataset", frame,
                          (Variable("SUBJECTID", "Subject", "Collected"),))  # fmt: skip
    with pytest.raises(DataError, match="SUBJECTID"):
        write_xpt(dataset, tmp_path / "adsl.xpt")
    assert not (tmp_path / "adsl.xpt").exists()
