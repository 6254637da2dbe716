"""Several leads (issue 19): the setting, the readers (a record lacking a lead is missing_lead
naming it), (C, samples) records, per-lead z-scored (N, C, L) windows and their store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecg_transfer.signals.chapman import CHAPMAN_LEADS
from ecg_transfer.signals.leads import parse_leads, reading, shared_standard_leads, study_leads
from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    labelled_record_windows,
    unlabelled_record_windows,
    zscore,
)
from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.wfdb_readers import WfdbFolder, WfdbLabelledFolder
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter

FS = 250.0
CFG = PreprocessConfig(window_length=512)


def _ecg(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return np.sin(2 * np.pi * 1.2 * t) ** 15 + 0.05 * rng.standard_normal(n)


def _write(root, name, leads, seconds=10.0, seed=0):
    n = int(seconds * FS)
    base = _ecg(n, seed)
    signal = np.column_stack([(k + 1) * 0.5 * base + 0.01 * k for k in range(len(leads))])
    wfdb.wrsamp(name, fs=FS, units=["mV"] * len(leads), sig_name=list(leads), p_signal=signal,
                fmt=["16"] * len(leads), write_dir=str(root))
    return signal.T


def test_the_setting_takes_a_list_or_all_in_standard_spelling():
    assert parse_leads(["ii"]) == ("II",)
    assert parse_leads(["I", "avr", "v1"]) == ("I", "aVR", "V1")
    assert parse_leads("all") == "all" and parse_leads("II") == ("II",)
    with pytest.raises(ValueError, match=r"preprocessing.leads: lead\(s\) \['II'\] listed twice"):
        parse_leads(["II", "ii"])
    with pytest.raises(ValueError, match="non-empty list"):
        parse_leads([])


def test_all_is_the_standard_leads_every_record_shares_in_standard_order():
    lists = [("V1", "MLII", "I", "V2"), ("I", "II", "V1")]
    assert shared_standard_leads(lists, "x") == ("I", "II", "V1")
    assert study_leads("all", manifest_leads=pd.Series(["I,II,V1"] * 3)) == ("I", "II", "V1")
    assert study_leads(("V5",)) == ("V5",)
    with pytest.raises(ValueError, match="share none of the standard leads"):
        shared_standard_leads([("I",), ("V6",)], "x")


def test_a_folder_reads_the_listed_leads_in_order_and_names_a_missing_one(tmp_path):
    signals = _write(tmp_path, "full", ("I", "MLII", "V1"), seed=1)
    _write(tmp_path, "no_v1", ("I", "ECG II"), seed=2)
    reader = reading(WfdbFolder(tmp_path, progress=False), ("V1", "II", "I"))
    log = ExclusionLog()
    records = list(reader.iter_records(log))
    assert [r.record_id for r in records] == ["full"]
    record = records[0]
    assert record.signal.shape == (3, 2500) and record.lead == "V1,II,I"
    np.testing.assert_allclose(record.signal, signals[[2, 1, 0]], atol=1e-3)  # format 16 quantisation
    frame = log.to_frame()
    assert frame["reason"].tolist() == ["missing_lead"] and frame["record_id"].tolist() == ["no_v1"]
    assert "lead V1" in frame["detail"].iloc[0] and "['I', 'ECG II']" in frame["detail"].iloc[0]


def test_one_lead_keeps_the_catalog_names_and_refuses_another_lead(tmp_path):
    _write(tmp_path, "rec", ("MLII",))
    folder = WfdbFolder(tmp_path, progress=False)
    assert reading(folder, ("II",)) is folder  # the default: read as it always was
    (record,) = folder.iter_records(ExclusionLog())
    assert record.signal.ndim == 1 and record.lead == "MLII"
    with pytest.raises(ValueError, match=r"preprocessing.leads is \[V1\] but the catalog entry .* reads lead \['II', 'MLII'"):
        reading(folder, ("V1",))


def test_a_labelled_folder_reads_several_leads_too(tmp_path):
    _write(tmp_path, "a", ("I", "II", "III"))
    _write(tmp_path, "b", ("I", "II"))
    labels = tmp_path / "labels.csv"
    labels.write_text("record,label\na,x\nb,y\n")
    log = ExclusionLog()
    reader = reading(WfdbLabelledFolder(tmp_path, labels, progress=False), ("I", "III"))
    (record,) = reader.iter_records(log)
    assert record.record_id == "a" and record.lead == "I,III" and record.signal.shape[0] == 2
    assert log.count("missing_lead") == 1 and "lead III" in log.to_frame()["detail"].iloc[0]


def test_every_lead_of_a_record_is_checked_naming_it(tmp_path):
    signal = np.stack([_ecg(2500, 0), np.full(2500, 0.3)])
    record = EcgRecord("r", "p", signal, FS, "I,V1", "x", "src")
    from ecg_transfer.signals.records import SignalChecks

    assert SignalChecks().problem(record) == ("flat_lead", "lead V1 is constant at 0.3")
    with pytest.raises(ValueError, match="for lead"):
        EcgRecord("r", "p", signal, FS, "I,V1,V2", "x", "src")


def test_windows_of_c_leads_are_cut_at_the_same_places_and_z_scored_per_lead():
    one = _ecg(3000, 3)
    stacked = np.stack([one, 4.0 * one + 1.0, -one])
    windows, starts = labelled_record_windows(stacked, FS, CFG)
    assert windows.shape == (1, 3, 512) and windows.dtype == np.float32
    single, single_starts = labelled_record_windows(one, FS, CFG)
    np.testing.assert_array_equal(starts, single_starts)
    np.testing.assert_array_equal(windows[:, 0], single)  # lead by lead, the one-lead chain
    np.testing.assert_allclose(windows[:, 1], single, atol=1e-5)  # gain and offset z-scored away
    np.testing.assert_allclose(windows.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(windows.std(axis=-1), 1.0, atol=1e-3)
    assert zscore(stacked, 1e-6).shape == stacked.shape


def test_a_gap_in_any_lead_is_a_gap_for_all():
    x = np.stack([_ecg(6000, 4), _ecg(6000, 5)])
    x[1, 2900:3100] = np.nan
    got = unlabelled_record_windows(x, FS, CFG, np.random.default_rng(0))
    assert got.had_gaps and got.windows.shape[1:] == (2, 512)
    for start in got.starts:  # no window spans the gap of lead 2
        assert start + 512 <= 2900 or start >= 3100


def test_a_store_of_c_leads_is_n_c_l_and_a_one_lead_store_is_unchanged(tmp_path):
    windows = np.random.default_rng(0).standard_normal((5, 3, 64)).astype(np.float32)
    index = pd.DataFrame({"record_id": list("abcde"), "patient_id": list("abcde"), "label": ["x"] * 5})
    with WindowStoreWriter(tmp_path / "multi") as writer:
        writer.append(windows[:2], index[:2])
        with pytest.raises(ValueError, match=r"shape \(k, 3, 64\)"):
            writer.append(windows[:1, :2], index[:1])
        writer.append(windows[2:], index[2:])
    store = WindowStore(tmp_path / "multi")
    assert store.n_channels == 3 and store.windows.shape == (5, 3, 64) and store.meta["n_channels"] == 3
    np.testing.assert_array_equal(store.take([4, 0]), windows[[4, 0]])
    assert store.with_splits(["train"] * 4 + ["test"]).split_view("train").shape == (4, 3, 64)
    np.testing.assert_array_equal(store.split_view("train")[[3, 1]], windows[[3, 1]])
    with WindowStoreWriter(tmp_path / "one") as writer:
        writer.append(windows[:, 0], index)
    one = WindowStore(tmp_path / "one")
    assert one.windows.shape == (5, 64) and "n_channels" not in one.meta


def test_chapman_reads_several_leads_as_columns():
    from ecg_transfer.signals.chapman import ChapmanRelease
    from tests.signals.test_chapman import SMALL_RELEASE

    release = ChapmanRelease(SMALL_RELEASE, progress=False)
    assert release.record_lead_names() == [CHAPMAN_LEADS]
    singles = list(release.iter_records(ExclusionLog()))
    several = list(reading(release, ("V1", "II")).iter_records(ExclusionLog()))
    assert [r.lead for r in several] == ["V1,II"] * len(singles)
    for one, both in zip(singles, several):
        assert both.signal.shape == (2, one.signal.size)
        np.testing.assert_array_equal(both.signal[1], one.signal)
