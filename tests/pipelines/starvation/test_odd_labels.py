"""Issue 20 item 1: class names as people write them (``~`` for "too noisy", ``AF+flutter``,
``1st° AV block``, ``?``) through the whole `study` on the tiny configuration. Before, every
per-class MLflow metric name was invalid (``train_f1_~``) and each run logged no per-epoch
metric at all, with one warning. Now the tables keep the user's text and MLflow gets every
epoch under the classes' safe names, with the mapping in each run's params."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ecg_transfer.signals.classes import safe_class_name
from tests.conftest import inside_project, make_project_copy
from tests.pipelines.starvation.test_own_labels import _study

ODD = {"normal": "~", "afib": "AF+flutter", "other": "1st° AV block", "noisy": "?"}
CLASSES = ["~", "AF+flutter", "1st° AV block"]  # by frequency; "?" (was "noisy") is too small


@pytest.fixture(scope="module")
def odd_study(own_labelled_folder, tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("odd") / "project")
    with inside_project(project):
        _study(project, own_labelled_folder.catalog_entry(label_map=ODD))
        yield project


def test_the_tables_keep_the_users_label_text(odd_study):
    assert json.loads((odd_study / "data/03_primary/label_classes.json").read_text()) == CLASSES
    # The mapping to safe names, on disk beside the class list (read as text: "N/A"-like labels stay).
    table = pd.read_csv(odd_study / "data/03_primary/label_class_table.csv", dtype=str, keep_default_na=False)
    assert table["label"].tolist() == CLASSES
    assert table["safe_name"].tolist() == [safe_class_name(label) for label in CLASSES]
    summary = pd.read_csv(odd_study / "data/08_reporting/study/run_summary.csv")
    assert {f"honest_test_f1_{label}" for label in CLASSES} <= set(summary.columns)


def test_every_finetuning_run_has_its_per_class_history_in_mlflow(odd_study):
    client = MlflowClient(tracking_uri=f"sqlite:///{odd_study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'finetuning'")
    assert runs
    for run in runs:
        for label in CLASSES:
            safe = safe_class_name(label)
            assert run.data.params[f"class_name.{safe}"] == label
            history = client.get_metric_history(run.info.run_id, f"val_f1_{safe}")
            assert sorted(m.step for m in history) == [1, 2], (run.info.run_name, label)  # conf/test: 2 epochs
