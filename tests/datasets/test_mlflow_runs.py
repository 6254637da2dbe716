import json
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError
from mlflow.tracking import MlflowClient

from ecg_transfer.datasets import (
    MlflowEncoderModelDataset,
    MlflowRunTrackerDataset,
)
from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import encoder_model_card


@pytest.fixture
def tracking(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("child_runs_test")
    yield MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)


def test_runs_become_children_of_the_active_run_with_their_histories(tracking):
    history = pd.DataFrame({
        "epoch": [1, 1, 2, 2], "split": ["test", "val", "test", "val"],
        "f1_weighted": [0.5, 0.4, 0.6, float("nan")], "loss": [1.0, 1.1, 0.9, 1.0],
    })
    runs = [{
        "run_name": "transfer-f0.5-t1", "params": {"arm": "transfer", "fraction": 0.5, "seed": 7},
        "tags": {"arm": "transfer"}, "history": history, "metrics": {"honest_test_f1_weighted": 0.6},
    }]
    with mlflow.start_run() as parent:
        tracker = MlflowRunTrackerDataset().load()
        for run in runs:  # what a node does with a run finished earlier
            tracker.log_record(run)
    children = tracking.search_runs([parent.info.experiment_id], filter_string="tags.arm = 'transfer'")
    assert len(children) == 1
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.run_name == "transfer-f0.5-t1"
    assert child.data.params == {"arm": "transfer", "fraction": "0.5", "seed": "7"}
    steps = {m.step: m.value for m in tracking.get_metric_history(child.info.run_id, "test_f1_weighted")}
    assert steps == {1: 0.5, 2: 0.6}
    assert len(tracking.get_metric_history(child.info.run_id, "val_f1_weighted")) == 1  # NaN not logged
    assert child.data.metrics["honest_test_f1_weighted"] == 0.6


def test_without_an_active_run_nothing_is_logged(tracking):
    MlflowRunTrackerDataset().load().log_record({"run_name": "x", "history": None})
    assert tracking.search_experiments()[0].name in {"child_runs_test", "Default"}
    assert not tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])


def test_the_tracker_dataset_loads_a_tracker_bound_to_the_active_run(tracking):
    with mlflow.start_run() as parent:
        tracker = MlflowRunTrackerDataset(system_metrics=False).load()
        assert tracker.enabled and tracker.parent_run_id == parent.info.run_id
        with tracker.start("random-f1-t0", {"fraction": 1.0}, {"fraction": 1.0}) as run:
            run.log_epoch(1, [{"split": "val", "loss": 0.5}])
    child = tracking.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED" and child.data.metrics == {"val_loss": 0.5}


def test_without_an_active_run_the_tracker_does_nothing_and_saving_is_refused(tracking):
    tracker = MlflowRunTrackerDataset().load()
    assert not tracker.enabled
    with tracker.start("x") as run:
        run.log_epoch(1, [{"split": "val", "loss": 0.5}])
    assert not tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    with pytest.raises(DatasetError, match="read-only"):
        MlflowRunTrackerDataset().save(object())


def test_the_encoder_is_logged_as_an_mlflow_model_with_its_card(tracking):
    cfg = CaeConfig(channels=(2,) * 9, bottleneck=8)
    encoder = Encoder(cfg).eval()
    card = encoder_model_card(encoder.state_dict(), cfg, {"reconstruction": {"test_mse_per_sample": 0.1}})
    with mlflow.start_run() as parent:
        MlflowEncoderModelDataset().save({"weights": encoder.state_dict(), "card": card})
    models = tracking.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert [(m.name, m.source_run_id) for m in models] == [("pretrained_encoder", parent.info.run_id)]
    card_file = tracking.download_artifacts(parent.info.run_id, "pretrained_encoder/model_card.json")
    assert json.loads(Path(card_file).read_text())["architecture"]["bottleneck"] == 8
    loaded = mlflow.pytorch.load_model(f"models:/{models[0].model_id}")  # no project code needed
    x = torch.randn(3, 1, cfg.window_length)
    assert torch.allclose(loaded(x), encoder(x), atol=1e-6)
    with pytest.raises(DatasetError, match="write-only"):
        MlflowEncoderModelDataset().load()
