"""Several `kedro run`s on one project folder, as on a cluster sharing a data folder: two workers
split an arm's runs instead of training each twice (issue 13.9), and a worker sends its live
runs to a real MLflow tracking server given by MLFLOW_TRACKING_URI (issue 12.5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from tests.conftest import inside_project, make_project_copy

N_RUNS = 2 * 2  # conf/test: fractions [1.0, 0.5] x 2 trials
OUTCOME = re.compile(r"random: reused (\d+) finished runs, resumed (\d+).*?, trained (\d+)(?:, collected (\d+))?")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny project with its labelled windows and bootstrap samples made (no CAE needed)."""
    project = make_project_copy(tmp_path_factory.mktemp("workers") / "project")
    with inside_project(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            session.run(pipeline_name="starvation", to_nodes=["draw_bootstrap_samples"])
        yield project


def _worker(project, namespace, extra_env=None):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "250", "OMP_NUM_THREADS": "1",
           **(extra_env or {})}
    command = [sys.executable, "-m", "kedro", "run", "--env=test", "--pipeline=finetuning",
               f"--namespaces={namespace}"]
    return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_workers_on_one_folder_train_each_run_once(prepared):
    workers = [_worker(prepared, "random") for _ in range(2)]
    logs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    outcomes = []
    for log in logs:
        found = OUTCOME.search(log.replace("\n", " "))
        assert found, log[-3000:]
        outcomes.append([int(value or 0) for value in found.groups()])
    trained = sum(outcome[2] for outcome in outcomes)
    assert trained == N_RUNS, outcomes  # every run trained once, by one worker or the other
    for reused, resumed, mine, collected in outcomes:  # and each worker's outputs hold all runs
        assert reused + resumed + mine + collected == N_RUNS
    checkpoints = prepared / "data/06_models/checkpoints"
    assert len(list(checkpoints.rglob("result.pt"))) == N_RUNS
    assert not list(checkpoints.rglob("claim.json"))  # every claim released
    history = pd.read_csv(prepared / "data/07_model_output/random/training_histories.csv")
    assert history.groupby(["fraction", "trial"]).ngroups == N_RUNS


def test_a_worker_logs_its_live_runs_to_a_tracking_server(prepared, mlflow_server):
    # An experiment of its own: the server is shared by the test session (tests/conftest.py).
    mlflow_yml = prepared / "conf" / "test" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace("name: ecg_transfer", "name: workers_on_a_server"))
    worker = _worker(prepared, "random_frozen", {"MLFLOW_TRACKING_URI": mlflow_server.uri})
    log = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, log[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("workers_on_a_server")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.arm = 'random_frozen'")
    assert len(runs) == N_RUNS
    assert all(run.info.status == "FINISHED" and run.data.tags.get("live") == "True" for run in runs)
    history = client.get_metric_history(runs[0].info.run_id, "test_f1_weighted")
    assert sorted(metric.step for metric in history) == [1, 2]  # conf/test: 2 epochs, one point each
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs}
    assert len(parents) == 1 and client.get_run(parents.pop()).info.status == "FINISHED"
