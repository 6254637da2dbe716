import mlflow
import pandas as pd
import pytest
from kedro.io import DatasetError
from mlflow.tracking import MlflowClient

from ecg_transfer.datasets import MlflowChildRunsDataset


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
        MlflowChildRunsDataset().save(runs)
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


def test_without_an_active_run_nothing_is_logged_and_loading_is_refused(tracking):
    MlflowChildRunsDataset().save([{"run_name": "x", "history": None}])
    assert tracking.search_experiments()[0].name in {"child_runs_test", "Default"}
    assert not tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    with pytest.raises(DatasetError, match="write-only"):
        MlflowChildRunsDataset().load()
