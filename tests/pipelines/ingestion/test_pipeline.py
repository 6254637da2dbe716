"""Ingestion: the bundled data and a user's own labelled folder scanned into manifests, with
every unusable record excluded under its reason, counted in the report (made once
preprocessing has decided the classes, so it counts those exclusions too), and saved even
when no record is left."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import wfdb
from kedro.io import AbstractDataset, DatasetError
from kedro_datasets.pandas import CSVDataset

from ecg_transfer.pipelines.ingestion.nodes import MANIFEST_COLUMNS
from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline
from ecg_transfer.pipelines.preprocessing.pipeline import create_pipeline as preprocessing
from ecg_transfer.signals.chapman import CHAPMAN_LEADS, DIAGNOSTICS_FILE
from ecg_transfer.signals.records import EcgRecord
from ecg_transfer.signals.wfdb_records import write_wfdb_records
from tests.pipelines.conftest import copy_raw_data, make_catalog, run, shrunk_parameters

# The report node lives in preprocessing, after the class decision and the overlap it also counts.
SCAN = create_pipeline() + preprocessing().only_nodes(
    "decide_label_classes", "assign_labelled_splits", "find_labelled_overlap", "report_ingestion"
)
SCAN_LABELLED = create_pipeline().from_nodes("scan_labelled_records").to_nodes("check_labelled_records")


@pytest.fixture
def raw(tiny_raw_data, tmp_path):
    """A private copy of the bundled raw data: (root, chapman folder, monitor folder)."""
    root = copy_raw_data(tiny_raw_data, tmp_path)
    return root, root / "data/01_raw/chapman_shaoxing", root / "data/01_raw/unlabelled_recordings"


def _catalog(root):
    params = {"preprocessing": shrunk_parameters()["preprocessing"]}
    return make_catalog(root, params, files=("labelled_recordings", "unlabelled_recordings"))


def _diagnostics(chapman) -> pd.DataFrame:
    return pd.read_excel(chapman / DIAGNOSTICS_FILE, dtype={"FileName": str})


def _report_count(report, dataset, outcome, reason, stage="ingestion") -> int:
    rows = report[(report["dataset"] == dataset) & (report["outcome"] == outcome) & (report["reason"] == reason)
                  & (report["stage"] == stage)]
    return int(rows["count"].sum())


def test_scan_lists_every_simulated_record_with_its_label(raw):
    root, chapman, _ = raw
    params = shrunk_parameters()["bundled_data"]
    catalog = run(SCAN, _catalog(root))

    manifest = catalog.load("labelled_manifest")
    diagnostics = _diagnostics(chapman)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == params["labelled"]["n_records"] == len(diagnostics)
    assert manifest["record_id"].is_unique
    labels = dict(zip(diagnostics["FileName"], diagnostics["Rhythm"]))
    assert (manifest["label"] == manifest["record_id"].map(labels)).all()
    assert (manifest["label"].value_counts() >= params["labelled"]["min_per_class"]).all()
    assert (manifest["fs"] == 500.0).all() and (manifest["duration_s"] == 10.0).all()
    assert (manifest["lead"] == "II").all()
    assert manifest["simulated"].dtype == bool and manifest["simulated"].all()
    assert (manifest["nan_samples"] == 0).all()
    assert catalog.load("labelled_exclusions").empty

    unlabelled = catalog.load("unlabelled_manifest")
    assert len(unlabelled) == params["unlabelled"]["n_patients"]
    assert unlabelled["label"].isna().all()
    assert unlabelled["simulated"].all()
    assert set(unlabelled["fs"]) <= {float(f) for f in params["unlabelled"]["sampling_rates"]}
    assert np.allclose(unlabelled["duration_s"], params["unlabelled"]["seconds_per_patient"])

    report = catalog.load("ingestion_report")
    assert list(report.columns) == ["dataset", "stage", "outcome", "reason", "count"]
    assert _report_count(report, "labelled", "accepted", "") == len(manifest)
    assert _report_count(report, "unlabelled", "accepted", "") == len(unlabelled)
    by_label = report[report["outcome"] == "accepted_by_label"].set_index("reason")["count"]
    assert by_label.to_dict() == manifest["label"].value_counts().to_dict()
    assert not (report["outcome"] == "excluded").any()
    assert not (report["outcome"] == "accepted_with_gaps").any()
    # preprocessing keeps every bundled record: the study uses all of them
    assert _report_count(report, "labelled", "used", "", stage="preprocessing") == len(manifest)
    used = report[report["outcome"] == "used_by_label"].set_index("reason")["count"]
    assert used.to_dict() == by_label.to_dict()


def test_bad_records_are_excluded_with_their_reason_and_counted(raw):
    root, chapman, monitor = raw
    diagnostics = _diagnostics(chapman)
    wave_dir = chapman / "ECGDataDenoised"
    zero, gone, relabelled = diagnostics["FileName"].iloc[:3]
    # The real release has all-zero denoised files, listed files without a CSV, and labels
    # outside the 11 rhythms; "SI" is the release's other spelling of SA.
    zeros = pd.DataFrame(np.zeros((5000, 12)), columns=list(CHAPMAN_LEADS))
    zeros.to_csv(wave_dir / f"{zero}.csv", index=False)
    (wave_dir / f"{gone}.csv").unlink()
    diagnostics.loc[diagnostics["FileName"] == relabelled, "Rhythm"] = "AVRT-LIKE"
    alias = "MUSE_20990101_000000_00001"
    (wave_dir / f"{alias}.csv").write_bytes((wave_dir / f"{diagnostics['FileName'].iloc[3]}.csv").read_bytes())
    diagnostics = pd.concat([diagnostics, diagnostics.iloc[[3]].assign(FileName=alias, Rhythm="SI")])
    diagnostics.to_excel(chapman / DIAGNOSTICS_FILE, index=False)
    short = EcgRecord("short_monitor", "short_patient", np.sin(np.arange(1000) / 20.0), 250.0, "II", None, "test")
    write_wfdb_records(monitor, [short], progress=False)

    catalog = run(SCAN, _catalog(root))

    manifest = catalog.load("labelled_manifest")
    excluded = catalog.load("labelled_exclusions").set_index("record_id")
    assert excluded["reason"].to_dict() == {zero: "flat_lead", gone: "missing_file", relabelled: "unknown_label"}
    assert (excluded["dataset"] == "labelled").all()
    assert "AVRT-LIKE" in excluded.loc[relabelled, "detail"]
    assert str(wave_dir / f"{gone}.csv") == excluded.loc[gone, "source"]
    assert not set(excluded.index) & set(manifest["record_id"])
    assert len(manifest) + len(excluded) == len(diagnostics)
    assert manifest.set_index("record_id").loc[alias, "label"] == "SA"

    unlabelled_excluded = catalog.load("unlabelled_exclusions")
    assert unlabelled_excluded[["record_id", "reason"]].values.tolist() == [["short_monitor", "too_short"]]
    assert "short_monitor" not in set(catalog.load("unlabelled_manifest")["record_id"])

    report = catalog.load("ingestion_report")
    for reason in ("flat_lead", "missing_file", "unknown_label"):
        assert _report_count(report, "labelled", "excluded", reason) == 1, reason
    assert _report_count(report, "labelled", "accepted", "") == len(manifest) == len(diagnostics) - 3
    assert _report_count(report, "unlabelled", "excluded", "too_short") == 1


def test_monitor_recordings_with_nan_gaps_are_kept_counted_and_reported(raw):
    root, _, monitor = raw
    wave = np.sin(np.arange(60 * 250) / 20.0)
    gappy = wave.copy()
    gappy[3000:5000] = np.nan  # a lead off for 8 s: 12 s and 40 s remain
    holey = wave.copy()
    holey[::1500] = np.nan  # NaN every 6 s: no stretch as long as a window
    # WFDB stores NaN as its invalid sample value; the reader reads it back as NaN
    wfdb.wrsamp("gappy", fs=250, units=["mV"], sig_name=["II"], p_signal=gappy.reshape(-1, 1),
                fmt=["16"], comments=["patient: gap_patient"], write_dir=str(monitor))
    wfdb.wrsamp("holey", fs=250, units=["mV"], sig_name=["II"], p_signal=holey.reshape(-1, 1),
                fmt=["16"], comments=["patient: holey_patient"], write_dir=str(monitor))

    catalog = run(SCAN, _catalog(root))

    manifest = catalog.load("unlabelled_manifest").set_index("record_id")
    assert manifest.loc["gappy", "nan_samples"] == 2000 and manifest.loc["gappy", "n_samples"] == 60 * 250
    assert manifest["nan_samples"].drop("gappy").eq(0).all()
    assert manifest["nan_samples"].dtype == np.int64
    excluded = catalog.load("unlabelled_exclusions").set_index("record_id")
    assert excluded["reason"].to_dict() == {"holey": "non_finite"}
    assert "leave no NaN-free stretch of 8.2 s" in excluded.loc["holey", "detail"]
    report = catalog.load("ingestion_report")
    assert _report_count(report, "unlabelled", "accepted_with_gaps", "nan_gaps") == 1
    assert _report_count(report, "unlabelled", "excluded", "non_finite") == 1
    assert _report_count(report, "unlabelled", "accepted", "") == len(manifest)


def test_a_release_with_no_usable_record_fails_after_saving_the_exclusions(raw, tmp_path):
    root, chapman, _ = raw
    n_records = len(_diagnostics(chapman))
    for csv in (chapman / "ECGDataDenoised").glob("*.csv"):
        csv.unlink()
    catalog = _catalog(root)
    report = tmp_path / "reporting" / "labelled_exclusions.csv"
    catalog["labelled_exclusions"] = CSVDataset(filepath=str(report))
    with pytest.raises(ValueError, match="labelled: no usable record") as error:
        run(SCAN_LABELLED, catalog)
    message = str(error.value)
    assert str(chapman) in message
    assert f"missing_file: {n_records}" in message and "labelled_exclusions" in message
    assert not catalog.exists("labelled_manifest")
    # the report the message points at exists, one row per record, with its reason
    saved = pd.read_csv(report, keep_default_na=False)
    assert len(saved) == n_records and set(saved["reason"]) == {"missing_file"}


def test_a_catalog_path_that_does_not_exist_fails_at_once_naming_it(raw, tmp_path):
    root, _, _ = raw
    catalog = _catalog(root)
    missing = tmp_path / "nowhere" / "chapman_shaoxing"
    catalog["labelled_recordings"] = type(catalog.get("labelled_recordings"))(path=str(missing), progress=False)
    with pytest.raises(DatasetError, match="does not exist") as error:
        run(SCAN, catalog)
    assert str(missing) in str(error.value)
    assert not catalog.exists("labelled_manifest")
    assert not catalog.exists("ingestion_report")


# ------------------------------------------------------------------ a user's own labelled folder
def _own_catalog(raw, own, **options):
    """The bundled unlabelled corpus, and `labelled_recordings` pointing at the user's folder."""
    root, _, _ = raw
    catalog = _catalog(root)
    catalog["labelled_recordings"] = AbstractDataset.from_config(
        "labelled_recordings", own.catalog_entry(**options))
    return catalog


def test_own_labelled_folder_is_scanned_with_its_own_labels(raw, own_labelled_folder, caplog):
    own = own_labelled_folder
    with caplog.at_level(logging.WARNING):
        catalog = run(SCAN, _own_catalog(raw, own))

    manifest = catalog.load("labelled_manifest")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert dict(zip(manifest["record_id"], manifest["label"])) == own.labels
    assert manifest["label"].map(type).eq(str).all()
    assert (manifest["fs"] == 360.0).all() and (manifest["lead"] == "MLII").all()
    assert (manifest["patient_id"] == manifest["record_id"]).all()  # no patient column
    assert np.allclose(manifest["duration_s"], manifest["record_id"].map(own.durations_s), atol=1e-2)
    assert manifest["duration_s"].min() < 8.5 and manifest["duration_s"].max() > 59
    # real data: the study must not call it synthetic; the bundled corpus still is
    assert not manifest["simulated"].any()
    assert catalog.load("unlabelled_manifest")["simulated"].all()

    excluded = catalog.load("labelled_exclusions").set_index("record_id")
    assert excluded["reason"].to_dict() == {own.missing_record: "missing_file",
                                            own.unlabelled_record: "unlabelled_record"}
    report = catalog.load("ingestion_report")
    by_label = report[(report["dataset"] == "labelled") & (report["outcome"] == "accepted_by_label")]
    assert dict(zip(by_label["reason"], by_label["count"])) == own.counts() == {
        "afib": 10, "noisy": 2, "normal": 12, "other": 8}
    assert _report_count(report, "labelled", "excluded", "missing_file") == 1
    assert _report_count(report, "labelled", "excluded", "unlabelled_record") == 1
    # every record left out, by the reader or by preprocessing, is counted under its reason
    decided = catalog.load("labelled_class_exclusions")
    dropped = decided[decided["outcome"] == "excluded"]
    assert sorted(dropped["reason"]) == ["class_too_small"] * 2  # noisy: 2 patients
    assert report.loc[report["outcome"] == "excluded", "count"].sum() == len(excluded) + len(dropped)
    for reason, count in dropped["reason"].value_counts().items():
        assert _report_count(report, "labelled", "excluded", reason, stage="preprocessing") == count
    assert _report_count(report, "labelled", "used", "", stage="preprocessing") == len(manifest) - len(dropped)
    used = report[report["outcome"] == "used_by_label"]
    assert dict(zip(used["reason"], used["count"])) == {"afib": 10, "normal": 12, "other": 8}
    # one summary line per reason, not one line per record
    summaries = [r.getMessage() for r in caplog.records
                 if r.levelno == logging.WARNING and "excluded as" in r.getMessage()]
    assert len(summaries) == 2 and any("1 record(s) excluded as unlabelled_record" in m for m in summaries)


def test_own_labels_mapped_merged_and_excluded(raw, own_labelled_folder):
    own = own_labelled_folder
    catalog = run(SCAN, _own_catalog(
        raw, own, label_map={"afib": "AF", "normal": "non-AF", "other": "non-AF"},
        exclude_labels=["noisy"]))
    manifest = catalog.load("labelled_manifest")
    assert manifest["label"].value_counts().to_dict() == {"non-AF": 20, "AF": 10}
    excluded = catalog.load("labelled_exclusions")
    noisy = excluded[excluded["reason"] == "excluded_label"]
    assert sorted(noisy["record_id"]) == sorted(r for r, label in own.labels.items() if label == "noisy")
    assert noisy["detail"].str.contains("label noisy is in exclude_labels").all()
    report = catalog.load("ingestion_report")
    assert _report_count(report, "labelled", "excluded", "excluded_label") == 2
    assert _report_count(report, "labelled", "accepted", "") == 30


def test_own_folder_bad_samples_and_headers_are_counted_exclusions(raw, own_labelled_folder, tmp_path):
    own = own_labelled_folder
    folder = tmp_path / "copy"
    shutil.copytree(own.root, folder)
    names = sorted(own.labels)
    # a sample rate that is not a number (wfdb would read 250 Hz), a corrupt 1e300-ish sample
    bad_fs = folder / f"{names[0]}.hea"
    lines = bad_fs.read_text().splitlines()
    lines[0] = lines[0].replace(" 360 ", " abc ")
    bad_fs.write_text("\n".join(lines) + "\n")
    huge = folder / f"{names[1]}.hea"
    lines = huge.read_text().splitlines()
    gain = lines[1].split()[2]
    lines[1] = lines[1].replace(gain, "1e-300" + gain[gain.index("("):])
    huge.write_text("\n".join(lines) + "\n")
    gap = wfdb.rdrecord(str(folder / names[2]))
    signal = gap.p_signal.copy()
    signal[100:110, 0] = np.nan
    wfdb.wrsamp(names[2], fs=360, units=["mV"], sig_name=["MLII"], p_signal=signal, fmt=["16"],
                write_dir=str(folder))
    catalog = _own_catalog(raw, own)
    catalog["labelled_recordings"] = AbstractDataset.from_config(
        "labelled_recordings", {**own.catalog_entry(), "path": str(folder)})
    run(SCAN, catalog)
    excluded = catalog.load("labelled_exclusions").set_index("record_id")
    assert excluded.loc[names[0], "reason"] == "unreadable"
    assert "sampling frequency field 'abc'" in excluded.loc[names[0], "detail"]
    assert excluded.loc[names[1], "reason"] == "implausible_amplitude"
    assert excluded.loc[names[2], "reason"] == "non_finite"
    assert len(catalog.load("labelled_manifest")) == len(own.labels) - 3


def test_the_documented_local_catalog_entry_reads_the_own_folder(own_labelled_folder, tmp_path):
    """docs/own_data.md's conf/local/catalog.yml entry, with its paths moved here, works."""
    import re
    from pathlib import Path

    import yaml
    from kedro.io import DataCatalog

    text = (Path(__file__).resolve().parents[3] / "docs" / "own_data.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    entry = next(b for b in blocks if b and "labelled_recordings" in b)["labelled_recordings"]
    own = own_labelled_folder
    entry.update(path=str(own.root), labels_csv=str(own.labels_csv), progress=False)
    assert entry["type"] == "ecg_transfer.datasets.WfdbLabelledFolderDataset"
    reader = DataCatalog.from_config({"labelled_recordings": entry}).load("labelled_recordings")
    from ecg_transfer.signals.records import ExclusionLog

    records = list(reader.iter_records(ExclusionLog()))
    assert {r.record_id: r.label for r in records} == own.labels
