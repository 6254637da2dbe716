import logging

import mlflow
import pytest

from ecg_transfer.hooks import CloseMlflowRunHooks, NodeTimingHooks


@pytest.fixture
def tracking(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("hooks_test")  # not an experiment id left over from another test
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_closes_the_runs_a_kedro_run_left_open_but_keeps_the_callers(tracking):
    hooks = CloseMlflowRunHooks()
    with mlflow.start_run() as callers:
        hooks.after_context_created()
        run = mlflow.start_run(nested=True)
        mlflow.start_run(run_id=run.info.run_id, nested=True)  # kedro-mlflow's re-entry per node
        mlflow.end_run()  # kedro-mlflow's own single end_run
        hooks.after_pipeline_run()
        assert mlflow.active_run().info.run_id == callers.info.run_id
    hooks = CloseMlflowRunHooks()
    hooks.after_context_created()
    mlflow.start_run()
    hooks.on_pipeline_error()
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
