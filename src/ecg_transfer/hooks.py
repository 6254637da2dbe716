"""Project hooks: wall time per node, logged, so a long study says where its time went
(benchmarks/study_runtime.py reads these lines); and no MLflow run left open after a run."""

from __future__ import annotations

import logging
import time

import mlflow
from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Logs ``node <name> took <seconds> s`` after every node and a slowest-first summary."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._took: dict[str, float] = {}

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._started.clear()
        self._took.clear()

    @hook_impl
    def before_node_run(self, node) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        took = time.perf_counter() - self._started.pop(node.name, time.perf_counter())
        self._took[node.name] = took
        logger.info("node %s took %.1f s", node.name, took)

    @hook_impl
    def after_pipeline_run(self) -> None:
        if self._took:
            slowest = sorted(self._took.items(), key=lambda item: -item[1])[:5]
            logger.info(
                "nodes: %.1f s in all; slowest: %s",
                sum(self._took.values()),
                ", ".join(f"{name} {seconds:.1f} s" for name, seconds in slowest),
            )


class CloseMlflowRunHooks:
    """Leaves no MLflow run open once a `kedro run` ends.

    kedro-mlflow re-enters its run before every node (``start_run(run_id=..., nested=True)``,
    for multi-threaded runners); MLflow 3 stacks those re-entries instead of refusing them,
    so its single ``end_run()`` after the pipeline leaves the run open in the process. A
    second `kedro run` in the same process (a notebook, a test) would then log into the first
    one. This hook runs after kedro-mlflow's and closes whatever this run left open, keeping a
    run the caller had opened before the session.
    """

    def __init__(self) -> None:
        self._opened_before: str | None = None

    @hook_impl
    def after_context_created(self) -> None:
        active = mlflow.active_run()
        self._opened_before = active.info.run_id if active else None

    def _close_ours(self) -> None:
        while (active := mlflow.active_run()) is not None and active.info.run_id != self._opened_before:
            mlflow.end_run()

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._close_ours()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._close_ours()
