"""The whole study on the tiny `test` configuration: every output, the MLflow runs, resuming
without retraining, and the results notebook."""

from __future__ import annotations

import nbformat
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient

from tests.conftest import inside_project, make_project_copy

ARMS = ["random", "image", "transfer", "transfer_frozen", "random_frozen"]
FRACTIONS = [1.0, 0.5]  # conf/test
N_TRIALS = 2
EPOCHS = 2


def _run(project, pipeline="starvation"):
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test") as session:
        session.run(pipeline_name=pipeline)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("study") / "project")
    with inside_project(project):
        _run(project)
        yield project


def _client(project):
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_the_study_writes_every_report(tiny_study):
    study = tiny_study / "data" / "08_reporting" / "study"
    for name in ("table2_f1_weighted", "table2_f1_weighted_honest", "table2_f1_macro",
                 "table2_f1_macro_honest", "table3_lci"):
        assert (study / f"{name}.csv").is_file() and (study / f"{name}.md").is_file(), name
    for name in ("f1_vs_fraction", "f1_vs_fraction_honest", "learning_curves", "per_class_f1"):
        assert (study / f"{name}.png").stat().st_size > 10_000, name
    assert (tiny_study / "data/08_reporting/pretraining/cae_reconstruction.png").is_file()
    assert (tiny_study / "data/08_reporting/image_transfer/spectrogram_examples.png").is_file()
    report = (study / "report.md").read_text()
    assert "0.857 ± 0.004" in report  # the paper's transfer result, beside ours
    summary = pd.read_csv(study / "run_summary.csv")
    assert len(summary) == len(ARMS) * len(FRACTIONS) * N_TRIALS
    assert set(summary["arm"]) == set(ARMS)
    assert summary["best_test_f1_weighted"].between(0, 1).all()
    assert (summary["best_test_f1_weighted"] >= summary["honest_test_f1_weighted"] - 1e-12).all()
    table2 = pd.read_csv(study / "table2_f1_weighted.csv", index_col=0)
    assert list(table2.index[:N_TRIALS]) == ["trial 1", "trial 2"]
    assert "100% transfer" in table2.columns


def test_every_arm_of_a_trial_trains_on_the_same_sample_with_the_same_seed(tiny_study):
    project = tiny_study
    runs = _client(project).search_runs(
        [_client(project).get_experiment_by_name("ecg_transfer").experiment_id],
        filter_string="tags.stage = 'finetuning'",
    )
    table = pd.DataFrame([{**r.data.params, "arm": r.data.tags["arm"]} for r in runs])
    per_trial = table.groupby(["fraction", "trial"]).agg(
        arms=("arm", "nunique"), seeds=("seed", "nunique"), sizes=("n_train", "nunique"),
        unique=("n_train_unique", "nunique"),
    )
    assert (per_trial["arms"] == len(ARMS)).all()
    assert (per_trial[["seeds", "sizes", "unique"]] == 1).all().all()


def test_mlflow_holds_one_parent_run_with_a_child_per_fraction_arm_trial(tiny_study):
    client = _client(tiny_study)
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    finetuning = [r for r in children if r.data.tags.get("stage") == "finetuning"]
    assert len(finetuning) == len(ARMS) * len(FRACTIONS) * N_TRIALS
    assert {(r.data.tags["arm"], float(r.data.tags["fraction"])) for r in finetuning} == {
        (arm, fraction) for arm in ARMS for fraction in FRACTIONS
    }
    one = next(r for r in finetuning if r.data.tags["arm"] == "transfer")
    for param in ("arm", "fraction", "trial", "seed", "n_train", "n_val", "n_test", "device", "train.lr"):
        assert param in one.data.params, param
    assert one.data.params["device"] == "cpu" and float(one.data.params["train.lr"]) == 0.005
    history = client.get_metric_history(one.info.run_id, "test_f1_weighted")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    assert "honest_test_f1_weighted" in one.data.metrics
    pretraining = [r for r in children if r.data.tags.get("stage") == "pretraining"]
    assert len(pretraining) == 1
    assert len(client.get_metric_history(pretraining[0].info.run_id, "test_mse")) >= 1
    pretraining_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "pretraining")}
    assert "pretraining/cae_reconstruction.png" in pretraining_artifacts
    encoder_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "pretrained_encoder")}
    assert "pretrained_encoder/model_card.json" in encoder_artifacts
    assert all(r.info.status == "FINISHED" for r in runs)
    # Trained live: each child run opened when its training started and logged as it went.
    assert all(r.data.tags.get("live") == "True" for r in finetuning)
    assert all(r.info.end_time - r.info.start_time > 50 for r in finetuning)  # ms: real durations
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "study")}
    assert {"study/table2_f1_weighted.csv", "study/report.md", "study/learning_curves.png"} <= artifacts
    assert float(parents[0].data.params["finetuning.training.lr"]) == 0.005


def test_running_again_reuses_finished_runs_instead_of_retraining(tiny_study):
    checkpoints = tiny_study / "data" / "06_models" / "checkpoints"
    results = sorted(checkpoints.rglob("result.pt"))
    assert len(results) == len(ARMS) * len(FRACTIONS) * N_TRIALS + 1  # + the CAE
    stamps = {path: path.stat().st_mtime_ns for path in results}
    before = pd.read_csv(tiny_study / "data" / "07_model_output" / "training_histories.csv")
    _run(tiny_study, pipeline="study")
    after = pd.read_csv(tiny_study / "data" / "07_model_output" / "training_histories.csv")
    assert {path: path.stat().st_mtime_ns for path in results} == stamps
    pd.testing.assert_frame_equal(before.drop(columns="samples_per_s"), after.drop(columns="samples_per_s"))


def test_the_results_notebook_runs_top_to_bottom(tiny_study, monkeypatch):
    monkeypatch.setenv("KEDRO_ENV", "test")
    notebook = nbformat.read(tiny_study / "notebooks" / "study_results.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tiny_study / "notebooks")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
