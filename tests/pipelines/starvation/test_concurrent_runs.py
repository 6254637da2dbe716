"""Two `kedro run`s started together on one fresh project folder (issue 20 item 6): before, one
crashed with `sqlite3.OperationalError: table latest_metrics already exists` (both created
MLflow's store), refused the bundled data the other was still writing ("refusing to write a
synthetic chapman folder"), or read a stage output the other was rewriting; and both trained
the CAE. Both finish now, each logged, and the CAE is trained by one of them (CI once met the
other worker reaching the CAE after it was done: that worker logs it as a reused run)."""

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


def test_two_runs_started_together_on_an_empty_folder_both_finish(tmp_path):
    project = make_project_copy(tmp_path / "project")
    assert not (project / "mlflow.db").exists() and not any((project / "data").rglob("*.*"))
    options = ("--pipelines=starvation", "--to-nodes=draw_bootstrap_samples,pretrain_autoencoder")
    runs = [_run(project, *options) for _ in range(2)]
    logs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs[0][-3000:] + "\n-----\n" + logs[1][-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiments = client.search_experiments(filter_string="name = 'ecg_transfer'")
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert sorted(run.info.status for run in parents) == ["FINISHED", "FINISHED"]
    # The CAE trained once: one child run fed while it trained (tag live=True). The other worker
    # collected it while it waited (no child run) or, when it came to the CAE after the first had
    # finished, logged the finished run from disk as a run of its own (live=False), as any
    # later `kedro run` that reuses it does.
    children = [run for run in runs if run not in parents]
    assert {run.info.run_name for run in children} == {"cae-pretraining"}
    assert sorted(run.data.tags["live"] for run in children) in (["True"], ["False", "True"])
    samples = pd.read_parquet(project / "data/05_model_input/bootstrap_samples.parquet")
    assert len(samples) > 0
    leftovers = [p.name for p in (project / "data").rglob(".*")
                 if p.name.endswith(".tmp") or ".partial-" in p.name or ".old-" in p.name]
    assert leftovers == []
