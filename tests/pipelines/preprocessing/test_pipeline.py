"""Preprocessing: patient-level splits, then z-scored float32 windows in on-disk stores."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline as ingestion
from ecg_transfer.pipelines.preprocessing.pipeline import create_pipeline
from ecg_transfer.signals.records import RHYTHMS
from tests.pipelines.conftest import copy_raw_data, make_catalog, run, shrunk_parameters

SCAN = ingestion().from_nodes("scan_labelled_records", "scan_unlabelled_records").to_nodes("report_ingestion")
PREPROCESS = create_pipeline().from_nodes("assign_labelled_splits", "assign_unlabelled_splits").to_nodes(
    "window_labelled_records", "window_unlabelled_records"
)
LABELLED = create_pipeline().from_nodes("assign_labelled_splits").to_nodes("window_labelled_records")


@pytest.fixture(scope="module")
def preprocessed(tiny_raw_data, tmp_path_factory):
    root = copy_raw_data(tiny_raw_data, tmp_path_factory.mktemp("preprocessing"))
    params = shrunk_parameters()
    catalog = run(SCAN + PREPROCESS, make_catalog(root, params))
    return catalog, params


def test_one_z_scored_float32_window_per_labelled_record_with_its_split(preprocessed):
    catalog, params = preprocessed
    manifest = catalog.load("labelled_manifest")
    splits = catalog.load("labelled_splits")
    store = catalog.load("labelled_windows")
    window_length = params["preprocessing"]["signal"]["window_length"]

    assert store.windows.dtype == np.float32 and store.windows.shape == (len(manifest), window_length)
    index = store.index
    assert sorted(index["record_id"]) == sorted(manifest["record_id"])
    assert index["record_id"].is_unique
    assert (index["split"] == index["record_id"].map(dict(zip(splits["record_id"], splits["split"])))).all()
    assert (index["label"] == index["record_id"].map(dict(zip(manifest["record_id"], manifest["label"])))).all()
    windows = np.asarray(store.windows, dtype=np.float64)
    assert np.allclose(windows.mean(axis=1), 0.0, atol=1e-4)
    assert np.allclose(windows.std(axis=1), 1.0, atol=1e-3)


def test_unlabelled_recordings_give_several_windows_each(preprocessed):
    catalog, params = preprocessed
    store = catalog.load("pretraining_windows")
    per_recording = params["preprocessing"]["signal"]["windows_per_recording"]
    manifest = catalog.load("unlabelled_manifest")

    assert store.windows.dtype == np.float32
    assert store.windows.shape == (per_recording * len(manifest), params["preprocessing"]["signal"]["window_length"])
    assert (store.index.groupby("record_id").size() == per_recording).all()
    assert store.index["label"].isna().all()
    assert set(store.index["split"]) == {"train", "test"}  # no validation split for the CAE
    windows = np.asarray(store.windows, dtype=np.float64)
    assert np.allclose(windows.std(axis=1), 1.0, atol=1e-3)
    # Different positions in one recording, not one window repeated.
    for _, rows in store.index.groupby("record_id"):
        assert rows["window_start"].nunique() == per_recording


def test_no_patient_is_in_two_splits_and_every_rhythm_is_in_each_split(preprocessed):
    catalog, _ = preprocessed
    for name in ("labelled_windows", "pretraining_windows"):
        index = catalog.load(name).index
        assert (index.groupby("patient_id")["split"].nunique() == 1).all(), name
    labelled = catalog.load("labelled_windows").index
    for split in ("train", "val", "test"):
        assert set(labelled.loc[labelled["split"] == split, "label"]) == set(RHYTHMS), split


def test_a_record_that_changed_since_ingestion_fails_naming_it(tiny_raw_data, tmp_path):
    root = copy_raw_data(tiny_raw_data, tmp_path)
    params = shrunk_parameters()
    catalog = run(SCAN, make_catalog(root, params))
    victim = catalog.load("labelled_manifest")["record_id"].iloc[5]
    (root / "data/01_raw/chapman_shaoxing/ECGDataDenoised" / f"{victim}.csv").unlink()

    # The windows stream into the store, so the node's error surfaces while the catalog saves.
    with pytest.raises(DatasetError, match="data changed since `ingestion` ran") as error:
        run(LABELLED, catalog)
    assert victim in str(error.value)
    assert RuntimeError in _causes(error.value)
    assert not catalog.exists("labelled_windows")
    assert not list((root / "data/05_model_input").iterdir())  # no partial store left behind


def test_splits_refuse_a_manifest_without_patients(preprocessed, tmp_path):
    catalog, params = preprocessed
    broken = catalog.load("labelled_manifest").drop(columns="patient_id")
    only_splits = create_pipeline().from_nodes("assign_labelled_splits").to_nodes("assign_labelled_splits")
    with pytest.raises(KeyError, match="patient_id"):
        run(only_splits, make_catalog(tmp_path, params, files=(), labelled_manifest=broken))


def _causes(error: BaseException) -> list[type]:
    chain = []
    while error is not None:
        chain.append(type(error))
        error = error.__cause__
    return chain
