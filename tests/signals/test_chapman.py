"""The Chapman reader on the real Diagnostics.xlsx and on real waveforms in the release's
CSV format."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecg_transfer.signals.chapman import (
    CHAPMAN_LEADS,
    RHYTHMS,
    ChapmanRelease,
    chapman_rhythm_label,
    read_chapman_csv,
    read_diagnostics,
    rhythm_from_acronym,
    write_chapman_release,
)
from ecg_transfer.signals.records import ExclusionLog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_METADATA = FIXTURES / "chapman"
SMALL_RELEASE = FIXTURES / "chapman_release"  # JS20011 (header row), JS20008 (no header)

# Record counts of the public release, PAPER.md.
PAPER_COUNTS = {"SB": 3889, "SR": 1826, "AFIB": 1780, "ST": 1568, "SVT": 587, "AF": 445,
                "SA": 399, "AT": 121, "AVNRT": 16, "AVRT": 8, "SAAWR": 7}


@pytest.fixture(scope="module")
def real_diagnostics() -> pd.DataFrame:
    return read_diagnostics(REAL_METADATA)


def test_real_diagnostics_labels_match_the_paper_counts(real_diagnostics):
    assert len(real_diagnostics) == 10_646
    labels = real_diagnostics["Rhythm"].map(chapman_rhythm_label)
    assert labels.notna().all()
    assert labels.value_counts().to_dict() == PAPER_COUNTS
    assert not real_diagnostics["FileName"].duplicated().any()
    assert real_diagnostics["FileName"].iloc[0] == "MUSE_20180113_171327_27000"


def test_real_rhythm_names_sheet_spells_si_and_maps_onto_the_11_classes():
    names = pd.read_excel(REAL_METADATA / "RhythmNames.xlsx")
    acronyms = names.iloc[:, 0].astype(str).str.strip()
    assert "SI" in set(acronyms) and "SA" not in set(acronyms)
    assert sorted(chapman_rhythm_label(a) for a in acronyms) == sorted(RHYTHMS)


def test_rhythm_order_is_the_paper_order():
    assert RHYTHMS.index("SB") == 0
    assert RHYTHMS.index("SAAWR") == 10
    assert len(set(RHYTHMS)) == 11


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("SA", "SA"), ("SI", "SA"), (" afib ", "AFIB"), ("SAAWR", "SAAWR"), ("Other", None),
     (None, None), (float("nan"), None)],
)
def test_rhythm_from_acronym(cell, expected):
    assert rhythm_from_acronym(cell) == expected


def _real_js20008_microvolts() -> np.ndarray:
    record = wfdb.rdrecord(str(FIXTURES / "physionet_wfdb" / "JS20008"), physical=False)
    return record.d_signal.astype(np.float64)  # gain 1000/mV, baseline 0: microvolts


def test_csv_with_and_without_header_read_the_same_leads():
    with_header = read_chapman_csv(SMALL_RELEASE / "ECGDataDenoised" / "JS20011.csv")
    without_header = read_chapman_csv(SMALL_RELEASE / "ECGDataDenoised" / "JS20008.csv")
    assert list(with_header.columns) == list(CHAPMAN_LEADS) == list(without_header.columns)
    assert with_header.shape == without_header.shape == (5000, 12)
    np.testing.assert_array_equal(without_header.to_numpy(), _real_js20008_microvolts())


def test_small_release_gives_millivolts_labels_and_patient_ids():
    log = ExclusionLog()
    records = list(ChapmanRelease(SMALL_RELEASE, progress=False).iter_records(log))
    assert len(log) == 0
    assert [(r.record_id, r.label, r.patient_id) for r in records] == [
        ("JS20011", "ST", "JS20011"), ("JS20008", "SA", "JS20008")]
    physical = wfdb.rdrecord(str(FIXTURES / "physionet_wfdb" / "JS20008"), channel_names=["II"])
    np.testing.assert_allclose(records[1].signal, physical.p_signal[:, 0], atol=1e-12)
    assert records[1].fs == 500.0 and records[1].lead == "II"
    assert records[1].source.endswith("JS20008.csv")


def test_release_is_lazy_and_missing_folder_names_the_path(tmp_path):
    ChapmanRelease(tmp_path)  # no Diagnostics.xlsx yet: nothing is read at construction
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ChapmanRelease(missing)
    with pytest.raises(FileNotFoundError, match="Diagnostics.xlsx"):
        list(ChapmanRelease(tmp_path).iter_records(ExclusionLog()))


def test_zero_leads_of_a_real_record_are_flat(tmp_path):
    # JS20008 has V2, V4, V6 all zero and lead II intact (as in the real release's zero files)
    shutil.copytree(SMALL_RELEASE, tmp_path / "release")
    for lead, expected in [("V2", "flat_lead"), ("V4", "flat_lead"), ("II", None)]:
        log = ExclusionLog()
        records = list(ChapmanRelease(tmp_path / "release", lead=lead, progress=False)
                       .iter_records(log))
        reasons = log.to_frame().set_index("record_id")["reason"].to_dict()
        assert reasons.get("JS20008") == expected
        assert "JS20011" in [r.record_id for r in records]


def _waveform(seed: int, n: int = 5000) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 300, size=(n, 12))


def test_every_chapman_exclusion_reason_from_crafted_input(tmp_path):
    good = _waveform(0)
    names = ["ok_sa", "ok_si", "missing", "garbled", "short", "has_nan", "has_inf", "huge",
             "zeros", "odd_label", "ok_sa"]
    rhythms = ["SA", "SI", "SR", "SR", "SR", "SR", "SR", "SR", "SVT", "XYZ", "SB"]
    diagnostics = pd.DataFrame({"FileName": names, "Rhythm": rhythms})
    lead_ii = CHAPMAN_LEADS.index("II")
    with_nan, with_inf, huge = good.copy(), good.copy(), good.copy()
    with_nan[100, lead_ii] = np.nan
    with_inf[200, lead_ii] = np.inf  # written as "inf", which pandas reads back as infinity
    huge[300, lead_ii] = 1e300  # microvolts: one corrupt sample
    zeros = np.zeros_like(good)
    waves = [("ok_sa", good), ("ok_si", good), ("garbled", good), ("short", good[:4000]),
             ("has_nan", with_nan), ("has_inf", with_inf), ("huge", huge), ("zeros", zeros),
             ("odd_label", good)]
    assert write_chapman_release(tmp_path, diagnostics, waves, progress=False) == 9
    assert ",inf," in (tmp_path / "ECGDataDenoised" / "has_inf.csv").read_text()
    (tmp_path / "ECGDataDenoised" / "garbled.csv").write_text("I,II\n1,abc\n")
    log = ExclusionLog()
    records = list(ChapmanRelease(tmp_path, progress=False).iter_records(log))
    assert [(r.record_id, r.label) for r in records] == [("ok_sa", "SA"), ("ok_si", "SA")]
    reasons = log.to_frame()[["record_id", "reason"]].values.tolist()
    assert reasons == [["missing", "missing_file"], ["garbled", "unreadable"],
                       ["short", "too_short"], ["has_nan", "non_finite"],
                       ["has_inf", "non_finite"], ["huge", "implausible_amplitude"],
                       ["zeros", "flat_lead"], ["odd_label", "unknown_label"],
                       ["ok_sa", "duplicate_id"]]
    details = log.to_frame().set_index("record_id")["detail"]
    assert "garbled.csv" in details["garbled"]
    assert details["has_inf"] == "0 NaN and 1 infinite samples in lead II"
    assert "sample 300" in details["huge"] and "1e+297 mV" in details["huge"]
    # the threshold is a reader option in millivolts: 300 uV noise passes 20 mV, not 0.5 mV
    log = ExclusionLog()
    list(ChapmanRelease(tmp_path, max_amplitude_mv=0.5, progress=False).iter_records(log))
    assert log.count("implausible_amplitude") == 3  # ok_sa, ok_si and huge
    # 4000 samples at 500 Hz = 8.0 s, under 8.2 s; with a lower bar it is kept
    log = ExclusionLog()
    kept = [r.record_id for r in ChapmanRelease(tmp_path, min_duration_s=8.0, progress=False)
            .iter_records(log)]
    assert "short" in kept


def test_write_then_read_round_trip_with_real_layout(tmp_path):
    waves = [(f"MUSE_{i}", _waveform(i)) for i in range(3)]
    diagnostics = pd.DataFrame({"FileName": [n for n, _ in waves], "Rhythm": ["SB", "AFIB", "SR"],
                                "PatientAge": [50, 60, 70]})
    write_chapman_release(tmp_path, diagnostics, iter(waves), csv_folder="ECGData",
                          progress=False)
    header = (tmp_path / "ECGData" / "MUSE_0.csv").read_text().split("\n", 1)[0]
    assert header == ",".join(CHAPMAN_LEADS)
    pd.testing.assert_frame_equal(read_diagnostics(tmp_path), diagnostics)
    records = list(ChapmanRelease(tmp_path, csv_folder="ECGData", lead="v1", progress=False)
                   .iter_records(ExclusionLog()))
    assert [r.label for r in records] == ["SB", "AFIB", "SR"]
    for record, (_, wave) in zip(records, waves):
        assert record.lead == "V1"
        # CSVs hold 3 decimals of a microvolt
        np.testing.assert_allclose(record.signal, wave[:, 6] / 1000.0, atol=5e-7)


def test_writer_and_reader_reject_bad_shapes_and_leads(tmp_path):
    diagnostics = pd.DataFrame({"FileName": ["a"], "Rhythm": ["SR"]})
    with pytest.raises(ValueError, match=r"'a'.*\(5000, 3\)"):
        write_chapman_release(tmp_path, diagnostics, [("a", np.zeros((5000, 3)))], progress=False)
    with pytest.raises(ValueError, match="lead 'V7'"):
        ChapmanRelease(tmp_path, lead="V7")
    bad = tmp_path / "eleven.csv"
    bad.write_text("\n".join(",".join(["1"] * 11) for _ in range(3)))
    with pytest.raises(ValueError, match="eleven.csv.*11 columns"):
        read_chapman_csv(bad)
