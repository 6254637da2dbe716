import logging
import signal
import types

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ecg_transfer import tracking as run_tracking
from ecg_transfer.datasets import MlflowRunTrackerDataset
from ecg_transfer.hooks import MlflowRunHooks, NodeTimingHooks, kedro_command, runner_name


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('hooks') / 'mlflow.db'}"  # one store: creating one takes seconds


@pytest.fixture
def tracking(store):
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("hooks_test")  # not an experiment id left over from another test
    yield MlflowClient()
    run_tracking.end_open_runs("KILLED", "test teardown")
    run_tracking.set_parent_run(None)
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _context():
    """What the hooks read of a KedroContext: mlflow.yml's server and experiment."""
    mlflow_yml = {"server": {"mlflow_tracking_uri": mlflow.get_tracking_uri()},
                  "tracking": {"experiment": {"name": "hooks_test"}}}
    return types.SimpleNamespace(config_loader={"mlflow": mlflow_yml}, _package_name="ecg_transfer")


def test_closes_the_runs_a_kedro_run_left_open_but_keeps_the_callers(tracking):
    hooks = MlflowRunHooks()
    with mlflow.start_run() as callers:
        hooks.after_context_created(context=_context())
        run = mlflow.start_run(nested=True)
        mlflow.start_run(run_id=run.info.run_id, nested=True)  # kedro-mlflow's re-entry per node
        mlflow.end_run()  # kedro-mlflow's own single end_run
        hooks.after_pipeline_run()
        assert mlflow.active_run().info.run_id == callers.info.run_id
    hooks = MlflowRunHooks()
    hooks.after_context_created(context=_context())
    mlflow.start_run()
    hooks.on_pipeline_error(error=RuntimeError())
    assert mlflow.active_run() is None


def test_node_timing_is_logged(caplog):
    class Node:
        name = "train_random_arm"

    hooks = NodeTimingHooks()
    with caplog.at_level(logging.INFO, logger="ecg_transfer.hooks"):
        hooks.before_pipeline_run()
        hooks.before_node_run(Node())
        hooks.after_node_run(Node())
        hooks.after_pipeline_run()
    assert any(m.startswith("node train_random_arm took ") for m in caplog.messages)
    assert any("slowest: train_random_arm" in m for m in caplog.messages)


RUN_PARAMS = {
    "env": "test", "pipeline_names": ["finetuning"], "namespaces": ["transfer"], "tags": None,
    "node_names": None, "from_nodes": None, "to_nodes": None, "from_inputs": None, "to_outputs": None,
    "load_versions": None, "runtime_params": {"study": {"n_trials": 2}, "fraction": 1.0},
    "runner": "<kedro.runner.thread_runner.ThreadRunner object at 0x7f3a2c1d0e50>", "only_missing_outputs": False,
}


def test_the_kedro_command_repeats_the_run_with_env_params_and_runner():
    assert kedro_command(RUN_PARAMS) == (
        "kedro run --env=test --pipelines=finetuning --namespaces=transfer --runner=ThreadRunner "
        "--params=study.n_trials=2,fraction=1"
    )
    assert kedro_command({"pipeline_names": None, "runner": "<kedro.runner.SequentialRunner object at 0x1>"}) == "kedro run"


def test_the_runner_is_named():
    from kedro.runner import SequentialRunner

    assert runner_name("<kedro.runner.sequential_runner.SequentialRunner object at 0x7f>") == "SequentialRunner"
    assert runner_name(SequentialRunner()) == runner_name(SequentialRunner) == "SequentialRunner"
    assert runner_name("ThreadRunner") == "ThreadRunner"


def _start_pipeline(hooks):
    """What a `kedro run` does up to its first node: kedro-mlflow opens the run (and sets its
    tags), the project's hooks run after it, a node loads the tracker and opens a child run."""
    hooks.after_context_created(context=_context())
    parent = mlflow.start_run()
    mlflow.set_tags({"runner": RUN_PARAMS["runner"], "kedro_command": "kedro run --pipeline=finetuning"})
    hooks.before_pipeline_run(run_params=RUN_PARAMS)
    child = MlflowRunTrackerDataset(system_metrics=False).load().start("transfer-f1-t0")
    return parent.info.run_id, child.run_id


def test_the_pipeline_run_gets_the_corrected_tags_and_its_children_finish(tracking):
    hooks = MlflowRunHooks()
    parent, child = _start_pipeline(hooks)
    tags = tracking.get_run(parent).data.tags
    assert tags["runner"] == "ThreadRunner"
    assert tags["kedro_command"].startswith("kedro run --env=test --pipelines=finetuning")
    assert run_tracking.parent_run().run_id == parent
    mlflow.end_run()  # kedro-mlflow's after_pipeline_run
    hooks.after_pipeline_run()
    assert tracking.get_run(parent).info.status == "FINISHED"
    assert tracking.get_run(child).info.status == "KILLED"  # a node left it open
    assert run_tracking.parent_run() is None and mlflow.active_run() is None


def test_an_error_ends_the_parent_and_every_open_child_failed(tracking):
    hooks = MlflowRunHooks()
    before = signal.getsignal(signal.SIGTERM)
    parent, child = _start_pipeline(hooks)
    assert signal.getsignal(signal.SIGTERM) != before  # SIGTERM raises while the pipeline runs
    hooks.on_pipeline_error(error=RuntimeError("boom"))
    assert [tracking.get_run(r).info.status for r in (parent, child)] == ["FAILED", "FAILED"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert mlflow.active_run() is None


def test_an_interrupted_pipeline_ends_killed_when_the_next_session_starts(tracking):
    hooks = MlflowRunHooks()
    parent, child = _start_pipeline(hooks)
    # Ctrl-C in a notebook: no Kedro hook runs; the next session's context cleans up
    hooks.after_context_created(context=_context())
    assert [tracking.get_run(r).info.status for r in (parent, child)] == ["KILLED", "KILLED"]
    assert mlflow.active_run() is None and run_tracking.open_runs() == []


def test_the_callers_run_is_left_open(tracking):
    hooks = MlflowRunHooks()
    with mlflow.start_run() as callers:
        hooks.after_context_created(context=_context())
        hooks.before_pipeline_run(run_params=RUN_PARAMS)  # kedro-mlflow logs into the caller's run
        child = MlflowRunTrackerDataset(system_metrics=False).load().start("x")
        hooks.on_pipeline_error(error=RuntimeError("boom"))
        assert mlflow.active_run().info.run_id == callers.info.run_id
        assert tracking.get_run(callers.info.run_id).info.status == "RUNNING"
    assert tracking.get_run(child.run_id).info.status == "FAILED"
