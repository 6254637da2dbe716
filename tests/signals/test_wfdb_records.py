"""WFDB readers on real PhysioNet and CPSC 2021 files, and on crafted bad headers."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.wfdb_records import (
    PhysioNetLabelledWfdb,
    WfdbFolder,
    WfdbLabelledFolder,
    patient_from_comments,
    read_wfdb_minimal,
    write_wfdb_records,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHYSIONET = FIXTURES / "physionet_wfdb"
CPSC = FIXTURES / "cpsc2021"


def _reasons(log: ExclusionLog) -> dict[str, str]:
    return log.to_frame().set_index("record_id")["reason"].to_dict()


# ------------------------------------------------------------------ PhysioNet, SNOMED labels
def test_physionet_labels_and_the_rhythm_code_rule():
    log = ExclusionLog()
    records = list(PhysioNetLabelledWfdb(PHYSIONET, progress=False).iter_records(log))
    # Dx lines: JS20008 SA; JS20004 ST; E07500 SB (+ a non-rhythm code); E07504 no rhythm;
    # HR06003 SR+ST; JS20012 ST+AT
    assert {r.record_id: r.label for r in records} == {"E07500": "SB", "JS20004": "ST",
                                                       "JS20008": "SA"}
    assert _reasons(log) == {"E07504": "no_rhythm_code", "HR06003": "multiple_rhythm_codes",
                             "JS20012": "multiple_rhythm_codes"}
    assert all(r.fs == 500.0 and r.lead == "II" and r.patient_id == r.record_id for r in records)


def test_physionet_signal_is_millivolts_from_the_header_gain():
    records = {r.record_id: r for r in PhysioNetLabelledWfdb(PHYSIONET, progress=False)
               .iter_records(ExclusionLog())}
    digital = wfdb.rdrecord(str(PHYSIONET / "E07500"), physical=False).d_signal[:, 1]
    np.testing.assert_allclose(records["E07500"].signal, digital / 1000.0)  # gain 1000/mV


def test_physionet_priority_rule_keeps_multi_rhythm_records():
    log = ExclusionLog()
    reader = PhysioNetLabelledWfdb(PHYSIONET, rhythm_priority=["AT", "ST", "SR"], progress=False)
    labels = {r.record_id: r.label for r in reader.iter_records(log)}
    assert labels["HR06003"] == "ST" and labels["JS20012"] == "AT"
    assert _reasons(log) == {"E07504": "no_rhythm_code"}
    with pytest.raises(ValueError, match="XX"):
        PhysioNetLabelledWfdb(PHYSIONET, rhythm_priority=["XX"])


def test_real_zero_leads_of_js20004_and_js20008():
    # both have V2, V4, V6 all zero; lead II is intact
    for record_name in ("JS20004", "JS20008"):
        signals = wfdb.rdrecord(str(PHYSIONET / record_name)).p_signal
        assert [i for i in range(12) if not signals[:, i].any()] == [7, 9, 11]
    log = ExclusionLog()
    kept = {r.record_id for r in PhysioNetLabelledWfdb(PHYSIONET, lead="V4", progress=False)
            .iter_records(log)}
    assert kept == {"E07500"}
    assert _reasons(log)["JS20004"] == "flat_lead" and _reasons(log)["JS20008"] == "flat_lead"


def test_ambiguous_saawr_code_can_be_ignored(tmp_path):
    shutil.copy(PHYSIONET / "JS20008.mat", tmp_path / "SAAWR1.mat")
    header = (PHYSIONET / "JS20008.hea").read_text()
    header = header.replace("JS20008", "SAAWR1").replace("284470004,427393009", "195101003")
    (tmp_path / "SAAWR1.hea").write_text(header + "# patient: P-9\n")
    records = list(PhysioNetLabelledWfdb(tmp_path, progress=False).iter_records(ExclusionLog()))
    assert [(r.label, r.patient_id) for r in records] == [("SAAWR", "P-9")]
    log = ExclusionLog()
    assert list(PhysioNetLabelledWfdb(tmp_path, accept_ambiguous_saawr=False, progress=False)
                .iter_records(log)) == []
    assert _reasons(log) == {"SAAWR1": "no_rhythm_code"}


def test_duplicate_record_names_in_subfolders(tmp_path):
    for folder in ("g1", "g2"):
        (tmp_path / folder).mkdir()
        for suffix in (".hea", ".mat"):
            shutil.copy(PHYSIONET / f"E07500{suffix}", tmp_path / folder / f"E07500{suffix}")
    log = ExclusionLog()
    assert len(list(PhysioNetLabelledWfdb(tmp_path, progress=False).iter_records(log))) == 1
    assert log.to_frame()["reason"].tolist() == ["duplicate_id"]


# ------------------------------------------------------------------ unlabelled corpus
def test_cpsc_record_read_at_200_hz_with_lead_ii_by_name():
    log = ExclusionLog()
    records = list(WfdbFolder(CPSC, progress=False).iter_records(log))
    assert len(log) == 0 and len(records) == 1
    record = records[0]
    assert (record.record_id, record.fs, record.lead, record.label) == ("data_8_4", 200.0,
                                                                        "II", None)
    assert record.patient_id == "data_8_4"  # no patient comment, no sub-folder
    # header: gain 47660.88631984586, baseline -230655 for lead II
    digital = wfdb.rdrecord(str(CPSC / "data_8_4"), physical=False).d_signal[:, 1]
    np.testing.assert_allclose(record.signal, (digital + 230655) / 47660.88631984586)
    assert len(record.signal) == 8235


def test_lead_fallback_names_case_and_first_channel(tmp_path):
    shutil.copy(CPSC / "data_8_4.dat", tmp_path / "data_8_4.dat")
    header = (CPSC / "data_8_4.hea").read_text().replace(" 0 I\n", " 0 V5\n").replace(
        " 0 II\n", " 0 ecg  ii\n")
    (tmp_path / "data_8_4.hea").write_text(header)
    records = list(WfdbFolder(tmp_path, leads=("MLII", "ECG II"), progress=False)
                   .iter_records(ExclusionLog()))
    assert records[0].lead == "ecg  ii"
    log = ExclusionLog()
    assert list(WfdbFolder(tmp_path, leads=("MLII",), progress=False).iter_records(log)) == []
    assert _reasons(log) == {"data_8_4": "missing_lead"}
    first = list(WfdbFolder(tmp_path, leads=("MLII",), allow_first_channel=True, progress=False)
                 .iter_records(ExclusionLog()))
    assert first[0].lead == "V5"


def test_unparsable_header_is_logged_naming_the_file(tmp_path):
    shutil.copytree(CPSC, tmp_path / "corpus")
    (tmp_path / "corpus" / "broken.hea").write_text("this is not a header\n")
    shutil.copy(CPSC / "data_8_4.dat", tmp_path / "corpus" / "lies.dat")
    (tmp_path / "corpus" / "lies.hea").write_text(
        "lies 2 200 8235\nlies.dat 16 1000/mV 16 0 0 0 0 II\n")  # says 2 signals, lists 1
    log = ExclusionLog()
    records = list(WfdbFolder(tmp_path / "corpus", progress=False).iter_records(log))
    assert [r.record_id for r in records] == ["data_8_4"]
    frame = log.to_frame().set_index("record_id")
    assert frame.loc["broken", "reason"] == "unreadable"
    assert str(tmp_path / "corpus" / "broken.hea") in frame.loc["broken", "detail"]
    assert "declares 2 signals but 1 signal lines" in frame.loc["lies", "detail"]
    with pytest.raises(ValueError, match=r"broken\.hea.*'this is not a header'"):
        read_wfdb_minimal(tmp_path / "corpus" / "broken.hea")


def test_fallback_reader_handles_utf16_header_that_wfdb_rejects(tmp_path):
    shutil.copy(CPSC / "data_8_4.dat", tmp_path / "data_8_4.dat")
    text = (CPSC / "data_8_4.hea").read_text()
    (tmp_path / "data_8_4.hea").write_text(text, encoding="utf-16")
    with pytest.raises(Exception):
        wfdb.rdrecord(str(tmp_path / "data_8_4"))
    records = list(WfdbFolder(tmp_path, progress=False).iter_records(ExclusionLog()))
    expected = wfdb.rdrecord(str(CPSC / "data_8_4"), channel_names=["II"]).p_signal[:, 0]
    np.testing.assert_allclose(records[0].signal, expected)
    assert records[0].fs == 200.0


@pytest.mark.parametrize("record", ["physionet_wfdb/JS20008", "cpsc2021/data_8_4"])
def test_fallback_reader_matches_wfdb_on_real_mat_and_format_16(record):
    ours = read_wfdb_minimal(FIXTURES / f"{record}.hea")
    theirs = wfdb.rdrecord(str(FIXTURES / record))
    np.testing.assert_allclose(ours.signals, theirs.p_signal)
    assert ours.sig_names == theirs.sig_name and ours.fs == theirs.fs


def test_fallback_reader_matches_wfdb_on_format_212(tmp_path):
    signal = np.random.default_rng(3).normal(0, 1, size=(1001, 2))
    wfdb.wrsamp("r212", fs=360, units=["mV", "uV"], sig_name=["MLII", "V1"], p_signal=signal,
                fmt=["212", "212"], write_dir=str(tmp_path))
    ours = read_wfdb_minimal(tmp_path / "r212.hea")
    np.testing.assert_allclose(ours.signals, wfdb.rdrecord(str(tmp_path / "r212")).p_signal)
    assert ours.units == ["mV", "uV"]
    records = list(WfdbFolder(tmp_path, leads=("V1",), min_duration_s=1.0, progress=False)
                   .iter_records(ExclusionLog()))
    # microvolts come out as millivolts
    np.testing.assert_allclose(records[0].signal,
                               wfdb.rdrecord(str(tmp_path / "r212")).p_signal[:, 1] / 1000)


def test_write_then_read_round_trip_with_patient_ids(tmp_path):
    rng = np.random.default_rng(0)
    written = [
        EcgRecord("mon_a_0", "patient-A", rng.normal(0, 0.5, 2500), 250.0, "II", None, "sim"),
        EcgRecord("mon_b_0", "patient B", rng.normal(0, 0.5, 5000), 500.0, "II", None, "sim"),
    ]
    assert write_wfdb_records(tmp_path, written, progress=False) == 2
    read = list(WfdbFolder(tmp_path, min_duration_s=8.2, progress=False)
                .iter_records(ExclusionLog()))
    assert [(r.record_id, r.patient_id, r.fs, r.lead) for r in read] == [
        ("mon_a_0", "patient-A", 250.0, "II"), ("mon_b_0", "patient B", 500.0, "II")]
    for before, after in zip(written, read):
        step = np.ptp(before.signal) / 65535  # format 16 quantisation
        np.testing.assert_allclose(after.signal, before.signal, atol=step)
    with pytest.raises(ValueError, match="'a/b'"):
        write_wfdb_records(tmp_path, [EcgRecord("a/b", "p", np.ones(3), 1.0, "II", None, "s")],
                           progress=False)


def test_patient_id_rules(tmp_path):
    assert patient_from_comments(["Age: 5", "Patient ID = 17"]) == "17"
    assert patient_from_comments(["Age: 5"]) is None
    rng = np.random.default_rng(1)
    write_wfdb_records(tmp_path / "ward7", [EcgRecord("rec1", "x", rng.normal(size=2500), 250.0,
                                                      "II", None, "sim")], progress=False)
    text = (tmp_path / "ward7" / "rec1.hea").read_text().replace("# patient: x\n", "")
    (tmp_path / "ward7" / "rec1.hea").write_text(text)
    records = list(WfdbFolder(tmp_path, progress=False).iter_records(ExclusionLog()))
    assert [(r.record_id, r.patient_id) for r in records] == [("ward7/rec1", "ward7")]


def test_every_constructor_names_a_missing_folder(tmp_path):
    missing = tmp_path / "absent"
    for build in (lambda: WfdbFolder(missing), lambda: PhysioNetLabelledWfdb(missing),
                  lambda: WfdbLabelledFolder(missing, tmp_path / "labels.csv")):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            build()
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        WfdbLabelledFolder(tmp_path, tmp_path / "labels.csv")


# ------------------------------------------------------------------ labelled folder + CSV
def test_labelled_folder_labels_and_exclusions(tmp_path):
    root = tmp_path / "mine"
    shutil.copytree(PHYSIONET, root / "site1")
    (root / "site2").mkdir()
    for suffix in (".hea", ".mat"):
        shutil.copy(PHYSIONET / f"E07500{suffix}", root / "site2" / f"E07500{suffix}")
    labels = pd.DataFrame({
        "record": ["JS20008", "site1/E07500", "site2/E07500", "JS20004", "E07504", "nothere",
                   "JS20008", "E07500", "HR06003"],
        "label": ["si", "SB", "SB", "ST", "Noise", "SR", "SA", "SB", "SR"],
        "patient_id": ["P1", "P2", "P2", "", "P4", "P5", "P1", "P2", "P6"],
    })
    labels.to_csv(tmp_path / "labels.csv", index=False)
    log = ExclusionLog()
    records = list(WfdbLabelledFolder(root, tmp_path / "labels.csv", progress=False)
                   .iter_records(log))
    assert [(r.record_id, r.label, r.patient_id) for r in records] == [
        ("JS20008", "SA", "P1"), ("site1/E07500", "SB", "P2"), ("site2/E07500", "SB", "P2"),
        ("JS20004", "ST", "JS20004"), ("HR06003", "SR", "P6")]
    assert log.to_frame()[["record_id", "reason"]].values.tolist() == [
        ["E07504", "unknown_label"], ["nothere", "missing_file"], ["JS20008", "duplicate_id"],
        ["E07500", "duplicate_id"]]


def test_labels_csv_without_label_column_names_the_file(tmp_path):
    (tmp_path / "labels.csv").write_text("record,rhythm\nA,SR\n")
    with pytest.raises(ValueError, match=r"labels\.csv.*\['label'\]"):
        list(WfdbLabelledFolder(tmp_path, tmp_path / "labels.csv").iter_records(ExclusionLog()))


def test_decimal_comma_gain_goes_to_the_fallback_not_a_wrong_gain(tmp_path):
    shutil.copy(CPSC / "data_8_4.dat", tmp_path / "data_8_4.dat")
    text = (CPSC / "data_8_4.hea").read_text()
    (tmp_path / "data_8_4.hea").write_text(
        text.replace("47660.88631984586", "47660,88631984586").replace("38777.46675997201",
                                                                       "38777,46675997201"))
    # wfdb alone would misread it silently
    assert wfdb.rdheader(str(tmp_path / "data_8_4")).sig_name[1] != "II"
    (record,) = list(WfdbFolder(tmp_path, progress=False).iter_records(ExclusionLog()))
    expected = wfdb.rdrecord(str(CPSC / "data_8_4"), channel_names=["II"]).p_signal[:, 0]
    np.testing.assert_allclose(record.signal, expected)
    assert record.lead == "II"
