"""preprocessing.task: multilabel from a 12-lead PhysioNet-style WFDB folder (SNOMED codes on
``# Dx:``) to a window store of label sets: the label decision, the splits, the targets."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_transfer.datasets.raw_ecg import PhysioNetWfdbDataset
from ecg_transfer.datasets.window_store_dataset import WindowStoreDataset
from ecg_transfer.pipelines.ingestion.nodes import check_labelled_records, scan_labelled_records
from ecg_transfer.pipelines.preprocessing.nodes import (
    assign_labelled_splits,
    decide_label_classes,
    window_labelled_records,
)
from ecg_transfer.signals.classes import label_set
from tests.fixtures.multilabel_wfdb import CODES, write_multilabel_wfdb_folder

PREPROCESSING = {
    "unlabelled_seed": 0, "task": "multilabel",
    "signal": {"target_fs": 250, "window_length": 2048},
    "labelled_splits": {"test_fraction": 0.2, "val_fraction": 0.1, "seed": 3},
}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml") / "wfdb"
    written = write_multilabel_wfdb_folder(root)
    source = PhysioNetWfdbDataset(path=str(root), task="multilabel", label_set=CODES, progress=False).load()
    scanned, exclusions = scan_labelled_records(source)
    return source, check_labelled_records(source, scanned, exclusions), written


def test_multilabel_preprocessing_keeps_label_sets_and_every_label_in_every_split(labelled, tmp_path):
    source, manifest, written = labelled
    assert len(manifest) == len(written)  # every record has a mapped code; the unmapped one is ignored
    assert manifest["label"].str.contains(";").any()
    classes, decisions = decide_label_classes(manifest, PREPROCESSING)
    assert "LPR" not in classes and set(classes) == {"SR", "AF", "LBBB", "RBBB", "PVC"}
    assert set(decisions["reason"]) <= {"class_too_small"}  # LPR records keep their other labels
    splits = assign_labelled_splits(manifest, decisions, PREPROCESSING)
    labels = manifest.set_index("record_id")["label"]
    for name in classes:
        has = splits["record_id"].map(lambda record, name=name: name in label_set(labels[record]))
        assert set(splits.loc[has, "split"]) == {"train", "val", "test"}, name
    patients = manifest.set_index("record_id")["patient_id"]
    assert (splits.groupby(splits["record_id"].map(patients))["split"].nunique() == 1).all()

    dataset = WindowStoreDataset(str(tmp_path / "labelled_windows"))
    dataset.save(window_labelled_records(source, splits, classes, manifest, PREPROCESSING))
    store = dataset.load()
    assert store.task == "multilabel" and list(store.classes) == classes
    targets = store.label_targets(classes)
    expected = np.array([[CODES[c] for c in written[r] if c in CODES].count(name) > 0 for r in store.index["record_id"]
                         for name in classes]).reshape(-1, len(classes))
    np.testing.assert_array_equal(targets, expected.astype(np.int8))
    with pytest.raises(ValueError, match="holds label sets"):
        store.label_codes(classes)


def test_under_task_single_label_sets_are_refused(labelled):
    _, manifest, _ = labelled
    with pytest.raises(ValueError, match="set preprocessing.task: multilabel"):
        decide_label_classes(manifest, {**PREPROCESSING, "task": "single"})
    with pytest.raises(ValueError, match="preprocessing.task must be one of"):
        decide_label_classes(manifest, {**PREPROCESSING, "task": "multi"})


def test_the_bootstrap_samples_of_a_multilabel_store_hold_every_label(labelled, tmp_path):
    from ecg_transfer.pipelines.finetuning.nodes import draw_bootstrap_samples

    source, manifest, _ = labelled
    classes, decisions = decide_label_classes(manifest, PREPROCESSING)
    splits = assign_labelled_splits(manifest, decisions, PREPROCESSING)
    dataset = WindowStoreDataset(str(tmp_path / "labelled_windows"))
    dataset.save(window_labelled_records(source, splits, classes, manifest, PREPROCESSING))
    store = dataset.load()
    samples = draw_bootstrap_samples(store, {"fractions": [1.0, 0.25], "n_trials": 3, "base_seed": 1})
    train_targets = store.label_targets(classes)[store.split_indices("train")]
    for _, sample in samples.groupby(["fraction", "trial"]):
        assert train_targets[sample["position"].to_numpy()].any(axis=0).all()
