"""Fine-tuning on a multi-label window store (``preprocessing.task: multilabel``, issue 19):
the window arms (random init; the CAE's encoder, frozen) and the spectrogram arm train with
binary cross-entropy per label through the same nodes as the single-label study, and write
histories, predictions and run records in the multi-label format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.datasets.raw_ecg import PhysioNetWfdbDataset
from ecg_transfer.datasets.window_store_dataset import WindowStoreDataset
from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import encoder_model_card
from ecg_transfer.pipelines.finetuning.nodes import draw_bootstrap_samples, train_arm
from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline
from ecg_transfer.pipelines.ingestion.nodes import check_labelled_records, scan_labelled_records
from ecg_transfer.pipelines.preprocessing.nodes import (
    assign_labelled_splits,
    decide_label_classes,
    window_labelled_records,
)
from ecg_transfer.signals.window_store import WindowStore, WindowStoreWriter
from ecg_transfer.study.arms import arm_registry
from ecg_transfer.study.run_settings import check_arm_settings
from ecg_transfer.training.tasks import MultiLabelTask, balanced_label_weights
from tests.fixtures.multilabel_wfdb import CODES, write_multilabel_wfdb_folder
from tests.pipelines.conftest import RecordingTracker, make_catalog, run, shrunk_parameters

LABELS = ["SR", "AF", "LBBB"]
ARMS = ("random", "transfer_frozen", "image")
PIPELINE = create_pipeline()
ML_ARMS = PIPELINE.from_nodes("draw_bootstrap_samples").to_nodes(*(f"{arm}.train_arm" for arm in ARMS))
PARAMS = ("study", "pretraining", "finetuning", "preprocessing", "image_transfer")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _multilabel_store(path, n_records=36, window_length=2048):
    """Two windows per record (one patient each), splits in blocks (24 train, 6 val, 6 test
    records), label sets over LABELS with every label in every split and some records with
    none; a label adds a sine of its own frequency, so the arms can learn it."""
    rng = np.random.default_rng(0)
    sets = (rng.random((n_records, 3)) < 0.45).astype(np.int8)
    for start in (0, 24, 30):
        sets[start : start + 3] = np.eye(3, dtype=np.int8)
    sets[[5, 27]] = 0
    t = np.arange(window_length) / 250.0
    windows = np.repeat(sets, 2, axis=0) @ np.stack([np.sin(2 * np.pi * f * t) for f in (1.0, 3.0, 7.0)])
    windows = (windows + rng.normal(0, 0.5, windows.shape)).astype(np.float32)
    records = [f"r{i:02d}" for i in range(n_records)]
    index = pd.DataFrame({
        "record_id": np.repeat(records, 2), "patient_id": np.repeat([f"p{i:02d}" for i in range(n_records)], 2),
        "label": np.repeat([";".join(np.asarray(LABELS)[row.astype(bool)]) or "other" for row in sets], 2),
        "split": np.repeat(["train"] * 24 + ["val"] * 6 + ["test"] * 6, 2),
        "window_in_record": np.tile([0, 1], n_records), "lead": "II",
    })
    with WindowStoreWriter(path, meta={"classes": LABELS, "task": "multilabel"}) as writer:
        writer.append(windows, index)
    return WindowStore(path)


def _encoder(params):
    cfg = CaeConfig.from_dict(params["pretraining"]["cae"])
    torch.manual_seed(0)
    state = Encoder(cfg).state_dict()
    return {"weights": state, "card": encoder_model_card(state, cfg, {"data": {"corpus": "test"}})}


def _features(store, dim=12):
    """A feature vector per record that carries its label set."""
    rng = np.random.default_rng(1)
    targets = store.label_targets(LABELS)
    values = rng.normal(size=(len(store), dim)) + np.pad(targets, ((0, 0), (0, dim - 3))) * 3
    table = pd.DataFrame(values.astype(np.float32), columns=[f"fake_{i:04d}" for i in range(dim)])
    table.insert(0, "record_id", store.index["record_id"].to_numpy())
    return table.drop_duplicates("record_id")


def _catalog(root, params, store, **data):
    return make_catalog(
        root, {k: params[k] for k in PARAMS}, files=("run_checkpoints",), labelled_windows=store,
        label_classes=list(LABELS), **{"pretrained_encoder@finetuning": _encoder(params)},
        image_spectrogram_features=_features(store), **data,
    )


@pytest.fixture(scope="module")
def finetuned(one_torch_thread, tmp_path_factory):
    params = shrunk_parameters()
    root = tmp_path_factory.mktemp("multilabel_finetuning")
    store = _multilabel_store(root / "labelled_windows")
    return run(ML_ARMS, _catalog(root, params, store)), params, store


def test_every_arm_trains_on_label_sets_and_scores_macro_auroc(finetuned):
    catalog, params, _ = finetuned
    epochs = params["finetuning"]["training"]["epochs"]
    metric_columns = MultiLabelTask(LABELS).metric_columns
    for arm in ARMS:
        history = catalog.load(f"{arm}.training_histories")
        assert set(metric_columns) <= set(history.columns) and "f1_weighted" not in history.columns, arm
        assert set(history["split"]) == {"train", "val", "test", "val_record", "test_record"}, arm
        for _, one in history.groupby(["fraction", "trial"]):
            assert sorted(one.loc[one["split"] == "test", "epoch"]) == list(range(1, epochs + 1))
        assert history.loc[history["split"] == "test", "auroc_macro"].between(0, 1).all(), arm


def test_every_arm_saves_multilabel_predictions_and_records(finetuned):
    catalog, params, store = finetuned
    targets = pd.DataFrame(store.label_targets(LABELS), index=store.index["record_id"]).groupby(level=0).first()
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    for arm in ARMS:
        predictions = catalog.load(f"{arm}.run_predictions")
        assert list(predictions.columns) == [
            "fraction", "arm", "trial", "selection", "epoch", "split", "record_id", "label",
            *(f"target_{name}" for name in LABELS), *(f"prob_{name}" for name in LABELS)], arm
        assert len(predictions) == n_runs * 2 * 12  # (honest, best_test) x (6 val + 6 test records)
        np.testing.assert_array_equal(predictions[[f"target_{name}" for name in LABELS]].to_numpy(),
                                      targets.loc[predictions["record_id"]].to_numpy())
        records = [r for r in catalog.load("run_tracker").live if r["tags"]["arm"] == arm]
        assert len(records) == n_runs
        assert all({"best_test_auroc_macro", "honest_test_auroc_macro"} <= set(r["metrics"]) for r in records)
    settings = [catalog.load(f"{arm}.arm_settings") for arm in ARMS]
    assert all(s["classes"] == LABELS for s in settings)
    check_arm_settings(settings, list(ARMS))


def test_balanced_class_weighting_weighs_each_label_s_positives_by_its_rarity(finetuned, tmp_path):
    """``class_weighting: balanced`` under multi-label: each label's positive targets weigh
    n_negative / n_positive of the arm's training rows (windows for a window arm, records for the
    spectrogram arm: two windows per record here, so the same ratios), in every run's loss."""
    catalog, params, store = finetuned
    params["finetuning"]["class_weighting"] = "balanced"
    arms = ("random", "image")
    weighted = run(PIPELINE.only_nodes(*(f"{arm}.train_arm" for arm in arms)),
                   _catalog(tmp_path, params, store, bootstrap_samples=catalog.load("bootstrap_samples")))
    train = (store.index["split"] == "train").to_numpy()
    positives = store.label_targets(LABELS)[train].sum(axis=0)
    expected = (train.sum() - positives) / positives
    np.testing.assert_allclose(balanced_label_weights(store.label_targets(LABELS)[train], LABELS), expected)
    checkpoints = sorted((tmp_path / "data/06_models/checkpoints").rglob("checkpoint.pt"))
    n_runs = len(params["study"]["fractions"]) * params["study"]["n_trials"]
    assert len(checkpoints) == n_runs * len(arms)
    for path in checkpoints:
        task = torch.load(path, weights_only=True)["task"]
        assert task["labels"] == LABELS
        np.testing.assert_allclose(task["positive_weights"], expected, rtol=1e-6)
    for arm in arms:  # the weighted loss trains other weights than the plain one
        plain, other = catalog.load(f"{arm}.training_histories"), weighted.load(f"{arm}.training_histories")
        assert not np.allclose(plain["loss"], other["loss"]), arm


def test_a_12_lead_cinc_style_folder_trains_the_window_arm_on_every_lead(tmp_path):
    """From the generated 12-lead folder (SNOMED codes on ``# Dx:``) through the label decision,
    the splits and the windows (all 12 leads) to the random window arm: one output per label
    that kept enough patients (LPR, two patients, is left out)."""
    params = shrunk_parameters()
    params["preprocessing"].update(task="multilabel", leads="all")
    params["preprocessing"]["labelled_splits"].update(test_fraction=0.2, val_fraction=0.15, seed=3)
    params["study"].update(fractions=[1.0], n_trials=1)
    write_multilabel_wfdb_folder(tmp_path / "wfdb", n_patients=40)
    source = PhysioNetWfdbDataset(path=str(tmp_path / "wfdb"), task="multilabel", label_set=CODES,
                                  progress=False).load()
    manifest = check_labelled_records(source, *scan_labelled_records(source, params["preprocessing"]))
    classes, decisions = decide_label_classes(manifest, params["preprocessing"])
    splits = assign_labelled_splits(manifest, decisions, params["preprocessing"])
    dataset = WindowStoreDataset(str(tmp_path / "labelled_windows"))
    dataset.save(window_labelled_records(source, splits, classes, manifest, params["preprocessing"]))
    store = dataset.load()
    assert store.task == "multilabel" and store.windows.shape[1] == 12 and "LPR" not in classes

    spec = arm_registry(params["study"]["arms"])["random"]
    histories, predictions, settings = train_arm(
        spec, store, classes, draw_bootstrap_samples(store, params["study"]), None, RecordingTracker(),
        params["study"], params["finetuning"], pretraining=params["pretraining"])
    assert set(MultiLabelTask(classes).metric_columns) <= set(histories.columns)
    assert [c for c in predictions.columns if c.startswith(("target_", "prob_"))] == [
        *(f"target_{name}" for name in classes), *(f"prob_{name}" for name in classes)]
    targets = pd.DataFrame(store.label_targets(classes), index=store.index["record_id"]).groupby(level=0).first()
    np.testing.assert_array_equal(predictions[[f"target_{name}" for name in classes]].to_numpy(),
                                  targets.loc[predictions["record_id"]].to_numpy())
    assert settings["classes"] == classes
