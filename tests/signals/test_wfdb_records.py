"""WFDB readers on real PhysioNet and CPSC 2021 files, and on crafted bad headers."""

import inspect
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from ecg_transfer.signals import wfdb_readers
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
                   "JS20008", "E07500", "HR06003.hea"],
        "label": ["si", "SB", "SB", "ST", " Noise ", "SR", "SA", "SB", "SR"],
        "patient_id": ["P1", "P2", "P2", "", "P4", "P5", "P1", "P2", "P6"],
    })
    labels.to_csv(tmp_path / "labels.csv", index=False)
    log = ExclusionLog()
    records = list(WfdbLabelledFolder(root, tmp_path / "labels.csv", progress=False)
                   .iter_records(log))
    # any label string is a label, blanks stripped; patient_id column used when present
    assert [(r.record_id, r.label, r.patient_id) for r in records] == [
        ("JS20008", "si", "P1"), ("site1/E07500", "SB", "P2"), ("site2/E07500", "SB", "P2"),
        ("JS20004", "ST", "JS20004"), ("E07504", "Noise", "P4"), ("HR06003", "SR", "P6")]
    assert log.to_frame()[["record_id", "reason"]].values.tolist() == [
        ["nothere", "missing_file"], ["JS20008", "duplicate_id"], ["E07500", "duplicate_id"],
        ["site1/JS20012", "unlabelled_record"]]


def _labelled_folder(tmp_path, n=4, fs=360, seconds=9.0):
    """n single-lead MLII records at ``fs`` Hz, named r0..r{n-1}."""
    rng = np.random.default_rng(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        wfdb.wrsamp(f"r{i}", fs=fs, units=["mV"], sig_name=["MLII"],
                    p_signal=rng.normal(0, 0.3, size=(int(seconds * fs), 1)), fmt=["16"],
                    write_dir=str(tmp_path))
    return tmp_path


def test_labelled_folder_label_map_and_exclude_labels(tmp_path):
    root = _labelled_folder(tmp_path / "ecgs")
    (tmp_path / "labels.csv").write_text("record,label\nr0,A\nr1,N\nr2,O\nr3,~\n")
    log = ExclusionLog()
    reader = WfdbLabelledFolder(root, tmp_path / "labels.csv", lead="MLII",
                                label_map={"A": "AF", "N": "Other", "O": "Other", "~": "noise"},
                                exclude_labels=["noise"], progress=False)
    records = list(reader.iter_records(log))
    assert [(r.record_id, r.label, r.fs, r.lead) for r in records] == [
        ("r0", "AF", 360.0, "MLII"), ("r1", "Other", 360.0, "MLII"), ("r2", "Other", 360.0, "MLII")]
    excluded = log.to_frame().set_index("record_id")
    assert excluded["reason"].to_dict() == {"r3": "excluded_label"}
    assert "~ (mapped to noise)" in excluded.loc["r3", "detail"]
    # the label before the map may be named too
    log = ExclusionLog()
    kept = list(WfdbLabelledFolder(root, tmp_path / "labels.csv", lead="MLII", exclude_labels="A",
                                   progress=False).iter_records(log))
    assert [r.label for r in kept] == ["N", "O", "~"] and log.count("excluded_label") == 1


def test_labelled_folder_csv_columns_header_and_patients(tmp_path):
    root = _labelled_folder(tmp_path / "ecgs")
    csv = tmp_path / "labels.csv"
    # named columns in any case and order, blanks around cells and names
    csv.write_text(" Rhythm , File ,Subject\n afib , r0 , s1\nnormal,r1 ,s1\nnormal,r2,\n")
    records = list(WfdbLabelledFolder(root, csv, lead="MLII", record_column="file",
                                      label_column="rhythm", patient_column="subject",
                                      progress=False).iter_records(ExclusionLog()))
    assert [(r.record_id, r.label, r.patient_id) for r in records] == [
        ("r0", "afib", "s1"), ("r1", "normal", "s1"), ("r2", "normal", "r2")]
    with pytest.raises(ValueError, match=r"no column 'label' \(label_column\); found columns "
                                         r"\['Rhythm', 'File', 'Subject'\]"):
        WfdbLabelledFolder(root, csv, lead="MLII", record_column="file", header=True).labels()
    # header-less, detected: two columns and the first cell names a record in the folder
    csv.write_text("r0,afib\nr1 , normal\n")
    reader = WfdbLabelledFolder(root, csv, lead="MLII", progress=False)
    assert reader.labels()[["record", "label"]].values.tolist() == [["r0", "afib"], ["r1", "normal"]]
    log = ExclusionLog()
    assert [r.patient_id for r in reader.iter_records(log)] == ["r0", "r1"]
    assert _reasons(log) == {"r2": "unlabelled_record", "r3": "unlabelled_record"}
    # header-less with positions, a patient column among them
    csv.write_text("afib;x,r0,p9\n")
    (record,) = WfdbLabelledFolder(root, csv, lead="MLII", header=False, record_column=1,
                                   label_column=0, patient_column=2,
                                   progress=False).iter_records(ExclusionLog())
    assert (record.record_id, record.label, record.patient_id) == ("r0", "afib;x", "p9")
    with pytest.raises(ValueError, match="no header row, so patient_column='subject'"):
        WfdbLabelledFolder(root, csv, header=False, patient_column="subject").labels()


def test_labelled_folder_refuses_a_csv_it_cannot_read_as_labels(tmp_path):
    root = _labelled_folder(tmp_path / "ecgs")
    csv = tmp_path / "labels.csv"
    csv.write_text("record,rhythm\nr0,SR\n")
    with pytest.raises(ValueError, match=r"labels\.csv.*cannot tell whether the first row "
                                         r"\['record', 'rhythm'\] is a header"):
        list(WfdbLabelledFolder(root, csv).iter_records(ExclusionLog()))
    csv.write_text("id,rhythm,age\nr0,SR,50\n")
    with pytest.raises(ValueError, match="does not hold the column"):
        WfdbLabelledFolder(root, csv).labels()
    with pytest.raises(ValueError, match=r"found columns \['id', 'rhythm', 'age'\]"):
        WfdbLabelledFolder(root, csv, header=True).labels()
    csv.write_text("")
    with pytest.raises(ValueError, match="empty"):
        WfdbLabelledFolder(root, csv).labels()
    with pytest.raises(ValueError, match="header must be"):
        WfdbLabelledFolder(root, csv, header="yes")


# ------------------------------------------------------------------ headers and samples
def _one_record(tmp_path, signal=None, fs=500, name="rec"):
    if signal is None:
        signal = np.sin(np.arange(10 * fs) / 30.0)
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["II"], p_signal=signal.reshape(-1, 1),
                fmt=["16"], write_dir=str(tmp_path))
    return tmp_path / f"{name}.hea"


@pytest.mark.parametrize(
    ("field", "message"),
    [("abc", "sampling frequency field 'abc' on the record line 'rec 1 abc 5000' is not a number"),
     ("-500", "sampling frequency field '-500' on the record line 'rec 1 -500 5000' is not a "
              "positive number"),
     ("0", "sampling frequency field '0' on the record line 'rec 1 0 5000' is not a positive"),
     (None, "sampling frequency field missing on the record line 'rec 1'")],
)
def test_a_bad_sampling_frequency_is_unreadable_not_250_hz(tmp_path, field, message):
    header = _one_record(tmp_path)
    lines = header.read_text().splitlines()
    fields = lines[0].split()
    lines[0] = " ".join(fields[:2] + ([field, fields[3]] if field is not None else []))
    header.write_text("\n".join(lines) + "\n")
    if field in ("abc", "-500", None):
        assert wfdb.rdheader(str(tmp_path / "rec")).fs == 250  # what wfdb would do silently
    (tmp_path / "labels.csv").write_text("record,label\nrec,N\n")
    for reader in (WfdbFolder(tmp_path, progress=False),
                   PhysioNetLabelledWfdb(tmp_path, progress=False),
                   WfdbLabelledFolder(tmp_path, tmp_path / "labels.csv", progress=False)):
        log = ExclusionLog()
        assert list(reader.iter_records(log)) == []
        (row,) = log.to_frame().to_dict("records")
        assert row["reason"] == "unreadable" and message in row["detail"]
        assert str(header) in row["detail"]


def test_a_valid_sampling_frequency_with_counter_frequency_is_read(tmp_path):
    header = _one_record(tmp_path, fs=500)
    lines = header.read_text().splitlines()
    lines[0] = lines[0].replace(" 500 ", " 500/1000(0) ")
    header.write_text("\n".join(lines) + "\n")
    (record,) = WfdbFolder(tmp_path, progress=False).iter_records(ExclusionLog())
    assert record.fs == 500.0 and record.duration_s == 10.0


def test_non_finite_and_implausible_samples_are_excluded(tmp_path):
    signal = np.sin(np.arange(5000) / 30.0)
    with_nan = signal.copy()
    with_nan[[10, 11]] = np.nan  # written as WFDB's invalid sample, read back as NaN
    _one_record(tmp_path, with_nan, name="gap")
    _one_record(tmp_path, signal, name="ok")
    # a gain of 1e-300 adu/mV (a corrupt header field) makes one sample about 3e304 mV
    tiny = _one_record(tmp_path, signal, name="tiny_gain")
    lines = tiny.read_text().splitlines()
    gain_field = lines[1].split()[2]
    lines[1] = lines[1].replace(gain_field, "1e-300" + gain_field[gain_field.index("("):])
    tiny.write_text("\n".join(lines) + "\n")
    log = ExclusionLog()
    strict = WfdbFolder(tmp_path, allow_nan_gaps=False, progress=False)
    assert [r.record_id for r in strict.iter_records(log)] == ["ok"]
    details = log.to_frame().set_index("record_id")
    assert details["reason"].to_dict() == {"gap": "non_finite",
                                          "tiny_gain": "implausible_amplitude"}
    assert details.loc["gap", "detail"] == "2 NaN and 0 infinite samples in lead II"
    assert "max_amplitude_mv=20" in details.loc["tiny_gain", "detail"]
    # the threshold is the reader's option, in mV
    log = ExclusionLog()
    list(WfdbFolder(tmp_path, max_amplitude_mv=0.5, allow_nan_gaps=False, progress=False)
         .iter_records(log))
    assert log.count("implausible_amplitude") == 2


def test_unlabelled_corpus_keeps_recordings_with_nan_gaps_that_leave_a_window(tmp_path):
    fs = 250
    wave = np.sin(np.arange(60 * fs) / 30.0)
    gappy = wave.copy()
    gappy[2000:4000] = np.nan  # a lead off for 8 s, then for 2 s: 16 s, 20 s and 16 s remain
    gappy[9000:9500] = np.nan
    holey = wave[: 20 * fs].copy()
    holey[::1000] = np.nan  # NaN every 4 s: no NaN-free stretch of 8.2 s
    for name, signal in (("gappy", gappy), ("holey", holey), ("whole", wave)):
        _one_record(tmp_path, signal, fs=fs, name=name)  # NaN written as WFDB's invalid sample

    log = ExclusionLog()
    records = {r.record_id: r for r in WfdbFolder(tmp_path, progress=False).iter_records(log)}
    assert sorted(records) == ["gappy", "whole"]
    gaps = np.isnan(records["gappy"].signal)
    assert gaps.sum() == 2500 and gaps[2000:4000].all() and gaps[9000:9500].all()
    np.testing.assert_allclose(records["gappy"].signal[~gaps], wave[~gaps], atol=1e-3)
    assert not np.isnan(records["whole"].signal).any()
    (row,) = log.to_frame().to_dict("records")
    assert row["record_id"] == "holey" and row["reason"] == "non_finite"
    assert "leave no NaN-free stretch of 8.2 s: the longest is 999 samples" in row["detail"]

    # allow_nan_gaps=False: every NaN excludes the recording, as in the labelled readers
    log = ExclusionLog()
    strict = WfdbFolder(tmp_path, allow_nan_gaps=False, progress=False)
    assert [r.record_id for r in strict.iter_records(log)] == ["whole"]
    assert log.to_frame().set_index("record_id")["detail"].to_dict() == {
        "gappy": "2500 NaN and 0 infinite samples in lead II",
        "holey": "5 NaN and 0 infinite samples in lead II"}
    # the labelled readers have no such option: a labelled record gives whole-record windows
    for reader in (PhysioNetLabelledWfdb, WfdbLabelledFolder):
        assert "allow_nan_gaps" not in inspect.signature(reader).parameters


def test_infinite_samples_from_the_fallback_reader_are_non_finite(tmp_path):
    shutil.copy(PHYSIONET / "JS20008.hea", tmp_path / "JS20008.hea")
    values = scipy.io.loadmat(PHYSIONET / "JS20008.mat")["val"].astype(np.float64)
    values[1, 40] = np.inf  # lead II
    scipy.io.savemat(tmp_path / "JS20008.mat", {"val": values})
    # UTF-16 text: wfdb refuses the header, so the fallback reads the float .mat
    (tmp_path / "JS20008.hea").write_text((PHYSIONET / "JS20008.hea").read_text(),
                                          encoding="utf-16")
    log = ExclusionLog()
    assert list(WfdbFolder(tmp_path, progress=False).iter_records(log)) == []
    assert log.to_frame()[["reason", "detail"]].values.tolist() == [
        ["non_finite", "0 NaN and 1 infinite samples in lead II"]]


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


def test_a_labels_csv_as_people_write_it_bom_crlf_duplicates_and_paths_outside(tmp_path, monkeypatch):
    """What held when probed (issue 20), kept: a BOM and CRLF line ends read as plain text, a
    duplicated row is one record plus a duplicate_id, and a row naming a record outside the
    folder (relative or absolute) is missing_file: nothing outside the folder is read."""
    root = _labelled_folder(tmp_path / "mine", n=3)
    outside = _labelled_folder(tmp_path / "outside", n=1)  # a readable record the CSV must not reach
    rows = ["record,label", "r0,Normal", "r1, AF ", "r1, AF ", "../outside/r0,Normal",
            f"{(outside / 'r0').as_posix()},Normal", "r2,Normal"]
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    read: list[Path] = []
    original = wfdb_readers.read_one_lead

    def spying(header_path, *args):
        read.append(Path(header_path))
        return original(header_path, *args)

    monkeypatch.setattr(wfdb_readers, "read_one_lead", spying)
    log = ExclusionLog()
    records = list(WfdbLabelledFolder(root, csv, lead="MLII", progress=False).iter_records(log))
    assert [(r.record_id, r.label) for r in records] == [("r0", "Normal"), ("r1", "AF"), ("r2", "Normal")]
    assert log.to_frame()[["record_id", "reason"]].values.tolist() == [
        ["r1", "duplicate_id"], ["../outside/r0", "missing_file"],
        [(outside / "r0").as_posix(), "missing_file"]]
    assert read and all(path.resolve().is_relative_to(root.resolve()) for path in read)
