"""Two `kedro run`s started together on one fresh project folder (issue 20 item 6): before, one
crashed with `sqlite3.OperationalError: table latest_metrics already exists` (both created
MLflow's store) or read a stage output the other was rewriting. Both finish now, each logged."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
from mlflow.tracking import MlflowClient

from tests.conftest import make_project_copy


def _run(project, *options):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "250", "OMP_NUM_THREADS": "1"})
    command = [sys.executable, "-m", "kedro", "run", "--env=test", *options]
    return subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_runs_started_together_on_a_fresh_folder_both_finish(tmp_path):
    project = make_project_copy(tmp_path / "project")
    bundled = _run(project, "--pipelines=bundled_data")  # the raw data a user brings; then a fresh store
    assert bundled.communicate(timeout=900)[0] is not None and bundled.returncode == 0
    (project / "mlflow.db").unlink()
    runs = [_run(project, "--pipelines=study", "--to-nodes=draw_bootstrap_samples") for _ in range(2)]
    logs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs[0][-3000:] + "\n-----\n" + logs[1][-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiments = client.search_experiments(filter_string="name = 'ecg_transfer'")
    assert len(experiments) == 1
    parents = client.search_runs([experiments[0].experiment_id])
    assert sorted(run.info.status for run in parents) == ["FINISHED", "FINISHED"]
    samples = pd.read_parquet(project / "data/05_model_input/bootstrap_samples.parquet")
    assert len(samples) > 0
    leftovers = [p.name for p in (project / "data").rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == []
