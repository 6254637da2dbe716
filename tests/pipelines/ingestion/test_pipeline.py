"""Ingestion: the bundled data scanned into manifests, with every unusable record (the kinds
the real Chapman release has) excluded under its reason and counted in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from ecg_transfer.pipelines.ingestion.nodes import MANIFEST_COLUMNS
from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline
from ecg_transfer.signals.chapman import CHAPMAN_LEADS, DIAGNOSTICS_FILE
from ecg_transfer.signals.records import EcgRecord
from ecg_transfer.signals.wfdb_records import write_wfdb_records
from tests.pipelines.conftest import copy_raw_data, make_catalog, run, shrunk_parameters

SCAN = create_pipeline().from_nodes("scan_labelled_records", "scan_unlabelled_records").to_nodes("report_ingestion")
SCAN_LABELLED = create_pipeline().from_nodes("scan_labelled_records").to_nodes("scan_labelled_records")


@pytest.fixture
def raw(tiny_raw_data, tmp_path):
    """A private copy of the bundled raw data: (root, chapman folder, monitor folder)."""
    root = copy_raw_data(tiny_raw_data, tmp_path)
    return root, root / "data/01_raw/chapman_shaoxing", root / "data/01_raw/monitor_corpus"


def _catalog(root):
    return make_catalog(root, {}, files=("chapman_release", "monitor_corpus"))


def _diagnostics(chapman) -> pd.DataFrame:
    return pd.read_excel(chapman / DIAGNOSTICS_FILE, dtype={"FileName": str})


def _report_count(report, dataset, outcome, reason) -> int:
    rows = report[(report["dataset"] == dataset) & (report["outcome"] == outcome) & (report["reason"] == reason)]
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
    assert catalog.load("labelled_exclusions").empty

    unlabelled = catalog.load("unlabelled_manifest")
    assert len(unlabelled) == params["unlabelled"]["n_patients"]
    assert unlabelled["label"].isna().all()
    assert set(unlabelled["fs"]) <= {float(f) for f in params["unlabelled"]["sampling_rates"]}
    assert np.allclose(unlabelled["duration_s"], params["unlabelled"]["seconds_per_patient"])

    report = catalog.load("ingestion_report")
    assert _report_count(report, "labelled", "accepted", "") == len(manifest)
    assert _report_count(report, "unlabelled", "accepted", "") == len(unlabelled)
    by_label = report[report["outcome"] == "accepted_by_label"].set_index("reason")["count"]
    assert by_label.to_dict() == manifest["label"].value_counts().to_dict()
    assert not (report["outcome"] == "excluded").any()


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


def test_a_release_with_no_usable_record_fails_naming_the_folder(raw):
    root, chapman, _ = raw
    for csv in (chapman / "ECGDataDenoised").glob("*.csv"):
        csv.unlink()
    catalog = _catalog(root)
    with pytest.raises(ValueError, match="labelled: no usable record") as error:
        run(SCAN_LABELLED, catalog)
    assert str(chapman) in str(error.value)
    assert not catalog.exists("labelled_manifest")


def test_a_catalog_path_that_does_not_exist_fails_at_once_naming_it(raw, tmp_path):
    root, _, _ = raw
    catalog = _catalog(root)
    missing = tmp_path / "nowhere" / "chapman_shaoxing"
    catalog["chapman_release"] = type(catalog.get("chapman_release"))(path=str(missing), progress=False)
    with pytest.raises(DatasetError, match="does not exist") as error:
        run(SCAN, catalog)
    assert str(missing) in str(error.value)
    assert not catalog.exists("labelled_manifest")
    assert not catalog.exists("ingestion_report")
