"""A `kedro run` records an MLflow run in the project's SQLite store (kedro-mlflow) or on a
tracking server, and its runs end FINISHED, FAILED or KILLED as the run did."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from ecg_transfer.signals.overlap import OVERLAP_COLUMNS
from ecg_transfer.tracking import RunTracker
from tests.conftest import PROJECT_ROOT, free_port, running_mlflow_server


def test_a_kedro_run_records_an_mlflow_run_in_sqlite(project_copy):
    data = project_copy / "data"
    (data / "08_reporting" / "ingestion").mkdir(parents=True)
    manifest = pd.DataFrame({"record_id": ["a", "b"], "patient_id": ["a", "b"], "label": ["SR", "SB"]})
    manifest.to_parquet(data / "02_intermediate" / "labelled_manifest.parquet")
    manifest.assign(label=None).to_parquet(data / "02_intermediate" / "unlabelled_manifest.parquet")
    exclusions = pd.DataFrame(
        {"dataset": ["labelled"], "record_id": ["c"], "source": ["c.csv"], "reason": ["nan"], "detail": [""]}
    )
    exclusions.to_csv(data / "08_reporting" / "ingestion" / "labelled_exclusions.csv", index=False)
    exclusions.iloc[:0].to_csv(data / "08_reporting" / "ingestion" / "unlabelled_exclusions.csv", index=False)
    decided = exclusions.iloc[:0].assign(outcome="")  # preprocessing left nothing out
    decided.to_csv(data / "08_reporting" / "ingestion" / "labelled_class_exclusions.csv", index=False)
    pd.DataFrame(columns=OVERLAP_COLUMNS).to_csv(data / "08_reporting" / "ingestion" / "unlabelled_overlap.csv", index=False)

    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        session.run(pipeline_name="preprocessing", node_names=["report_ingestion"])

    assert mlflow.active_run() is None  # nothing left open for a next run in this process
    assert (project_copy / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "ingestion")]
    assert artifacts == ["ingestion/ingestion_report.csv"]
    report = pd.read_csv(data / "08_reporting" / "ingestion" / "ingestion_report.csv", keep_default_na=False)
    excluded = report[report["outcome"] == "excluded"]
    assert excluded[["dataset", "reason", "count"]].values.tolist() == [["labelled", "nan", 1]]


# ---------------------------------------------------------------- end states of a real `kedro run`
TINY_REGISTRY = '''
import os
import time
from pathlib import Path

from kedro.pipeline import Pipeline, node


def train(tracker, mode):
    """One live child run: an epoch logged, then done, a crash, or waiting to be signalled."""
    with tracker.start("tiny-f1-t0", {"fraction": 1.0}, {"fraction": 1.0}) as run:
        run.log_epoch(1, [{"split": "train", "loss": 1.0}])
        Path(os.environ["TINY_MARKER"]).write_text(str(run.run_id))
        if mode == "fail":
            raise RuntimeError("boom")
        if mode == "outage":  # the test kills the server, then lets the training go on
            go = Path(os.environ["TINY_MARKER"] + ".go")
            while not go.exists():
                time.sleep(0.05)
            for epoch in range(2, 31):
                run.log_epoch(epoch, [{"split": "train", "loss": 1.0 / epoch}])
            with tracker.start("tiny-f1-t1", {"fraction": 1.0}) as later:
                later.log_epoch(1, [{"split": "train", "loss": 1.0}])
            Path(os.environ["TINY_MARKER"] + ".done").write_text("trained")
            return
        deadline = time.monotonic() + (300 if mode == "wait" else 0)
        while time.monotonic() < deadline:
            time.sleep(0.05)


def register_pipelines():
    return {"__default__": Pipeline([node(train, ["run_tracker", "params:mode"], None, name="train")])}
'''


def make_tiny_project(root: Path) -> Path:
    """A one-node Kedro project using this project's settings (hooks, config loader), its
    mlflow.yml and its tracker dataset; the package lives in the project's src/."""
    (root / "src" / "tinyproj").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.kedro]\npackage_name = "tinyproj"\nproject_name = "tiny"\nkedro_init_version = "1.7.0"\n'
    )
    (root / "src" / "tinyproj" / "__init__.py").write_text("")
    (root / "src" / "tinyproj" / "settings.py").write_text("from ecg_transfer.settings import *  # noqa: F403\n")
    (root / "src" / "tinyproj" / "pipeline_registry.py").write_text(TINY_REGISTRY)
    for env in ("base", "local"):
        (root / "conf" / env).mkdir(parents=True)
    (root / "conf" / "base" / "catalog.yml").write_text(
        "run_tracker:\n  type: ecg_transfer.datasets.MlflowRunTrackerDataset\n  system_metrics: false\n"
    )
    (root / "conf" / "base" / "parameters.yml").write_text("mode: ok\n")
    mlflow_yml = (PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text()
    (root / "conf" / "base" / "mlflow.yml").write_text(
        mlflow_yml.replace("sqlite:///mlflow.db", f"sqlite:///{root / 'mlflow.db'}")
    )
    return root


def start_kedro_run(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update({"KEDRO_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
                        "TINY_MARKER": str(project / "started"), **(env or {})})
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", *args], cwd=project, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        # SIGINT as a terminal sends it: not ignored even if this test runs in a background job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        if process.poll() is not None:
            pytest.fail(f"kedro run ended early ({process.returncode}):\n{process.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the node did not start within {timeout_s} s")
        time.sleep(0.1)


def finish(process: subprocess.Popen, timeout_s: float = 120) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"kedro run did not end within {timeout_s} s:\n{output.decode()[-3000:]}")
    return process.returncode, output.decode()


def runs_by_name(tracking_uri: str, experiment: str = "ecg_transfer") -> dict:
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {run.info.run_name: run for run in runs}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "status", "exit_codes"),
    [("SIGTERM", "KILLED", {143}), ("SIGINT", "KILLED", {1, 130}), ("fail", "FAILED", {1})],
)
def test_a_terminated_interrupted_or_failed_kedro_run_ends_its_runs_so(tmp_path, how, status, exit_codes):
    project = make_tiny_project(tmp_path / "tiny")
    process = start_kedro_run(project, "--env=local", f"--params=mode={'fail' if how == 'fail' else 'wait'}")
    wait_for(project / "started", process)
    runs = runs_by_name(f"sqlite:///{project / 'mlflow.db'}")
    assert {name: run.info.status for name, run in runs.items()} == {"__default__": "RUNNING", "tiny-f1-t0": "RUNNING"} \
        or how == "fail"
    if how != "fail":
        process.send_signal(getattr(signal, how))
    code, output = finish(process)
    assert code in exit_codes, output[-3000:]
    runs = runs_by_name(f"sqlite:///{project / 'mlflow.db'}")
    assert {name: run.info.status for name, run in runs.items()} == {"__default__": status, "tiny-f1-t0": status}, \
        output[-3000:]
    assert runs["tiny-f1-t0"].data.tags["mlflow.parentRunId"] == runs["__default__"].info.run_id


# ---------------------------------------------------------------- a shared tracking server
@pytest.mark.slow
def test_runs_are_tracked_live_on_a_tracking_server(mlflow_server, tmp_path):
    """Through the tracker: a child run is visible, RUNNING, with its first epoch, while it
    trains; then a whole `kedro run` pointed at the server by MLFLOW_TRACKING_URI."""
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    experiment_id = client.create_experiment("server_tracker_test")
    parent = client.create_run(experiment_id, run_name="study")
    tracker = RunTracker(client, experiment_id, parent.info.run_id)
    with tracker.start("random-f0.5-t1", {"fraction": 0.5}, {"fraction": 0.5}) as run:
        run.log_epoch(1, [{"split": "val", "loss": 0.9, "f1_weighted": 0.3}])
        seen = MlflowClient(tracking_uri=mlflow_server.uri).get_run(run.run_id)  # another reader
        assert seen.info.status == "RUNNING" and seen.data.metrics == {"val_loss": 0.9, "val_f1_weighted": 0.3}
        run.log_epoch(2, [{"split": "val", "loss": 0.7, "f1_weighted": 0.4}])
        run.finish({"honest_test_f1_weighted": 0.4})
    client.set_terminated(parent.info.run_id)
    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED" and done.data.params == {"fraction": "0.5"}
    assert [m.value for m in client.get_metric_history(run.run_id, "val_loss")] == [0.9, 0.7]

    project = make_tiny_project(tmp_path / "tiny")
    code, output = finish(start_kedro_run(project, "--params=mode=ok", env={"MLFLOW_TRACKING_URI": mlflow_server.uri}))
    assert code == 0, output[-3000:]
    assert not (project / "mlflow.db").exists()  # the server got the runs, not the project's store
    runs = runs_by_name(mlflow_server.uri)
    assert {name: run.info.status for name, run in runs.items()} == {"__default__": "FINISHED", "tiny-f1-t0": "FINISHED"}
    parent_tags = runs["__default__"].data.tags
    assert parent_tags["runner"] == "SequentialRunner"
    assert parent_tags["kedro_command"] == "kedro run --params=mode=ok"
    child = runs["tiny-f1-t0"]
    assert child.data.tags["fraction"] == child.data.params["fraction"] == "1"


# ---------------------------------------------------------------- a tracking server that goes away
@pytest.fixture
def own_server(tmp_path):
    """A real `mlflow server` of this test alone (the test kills it)."""
    root = tmp_path / "server"
    root.mkdir()
    with running_mlflow_server(root) as (server, process):
        yield server, process


def _kill_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_server_where_nothing_listens_stops_the_run_before_any_node_naming_it(tmp_path):
    """Issue 20 item 4: was 4 min 13 s of client retries, then a traceback."""
    project = make_tiny_project(tmp_path / "tiny")
    uri = f"http://127.0.0.1:{free_port()}"
    code, output = finish(start_kedro_run(project, "--params=mode=ok", env={"MLFLOW_TRACKING_URI": uri}),
                          timeout_s=150)  # generous: the check itself takes one refused connection
    assert code != 0
    assert uri in output and "did not answer" in output, output[-3000:]
    assert not (project / "started").exists()


@pytest.mark.slow
def test_a_server_killed_mid_training_costs_seconds_and_the_untracked_runs_are_named(own_server, tmp_path):
    server, process = own_server
    project = make_tiny_project(tmp_path / "tiny")
    run = start_kedro_run(project, "--params=mode=outage", env={"MLFLOW_TRACKING_URI": server.uri})
    wait_for(project / "started", run)
    _kill_server(process)
    (project / "started.go").write_text("go")
    code, output = finish(run, timeout_s=150)  # generous; with MLflow's retries it took over 9 minutes
    assert code == 0, output[-3000:]
    assert (project / "started.done").read_text() == "trained"
    text = " ".join(output.split())  # the console wraps log lines
    assert "lack tracking" in text and "tiny-f1-t0 (from logging epoch 2)" in text, output[-3000:]
    assert "tiny-f1-t1 (from creating the run)" in text
    assert text.count("No further tracking calls") == 1


@pytest.mark.slow
def test_sigterm_ends_the_run_promptly_when_the_server_is_gone(own_server, tmp_path):
    server, process = own_server
    project = make_tiny_project(tmp_path / "tiny")
    run = start_kedro_run(project, "--params=mode=wait", env={"MLFLOW_TRACKING_URI": server.uri})
    wait_for(project / "started", run)
    _kill_server(process)
    run.send_signal(signal.SIGTERM)
    code, output = finish(run, timeout_s=120)  # generous; it did not end within 13 minutes before
    assert code == 143, output[-3000:]
