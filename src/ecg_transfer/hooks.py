"""Project hooks: wall time per node, logged, so a long study says where its time went
(benchmarks/study_runtime.py reads these lines); and MLflow runs that end in the state the
`kedro run` ended in (FINISHED, FAILED, KILLED), none left open or RUNNING."""

from __future__ import annotations

import atexit
import logging
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from mlflow.tracking import MlflowClient

from ecg_transfer.tracking import (
    FAILED,
    FINISHED,
    KILLED,
    ParentRun,
    end_open_runs,
    raise_on_sigterm,
    set_parent_run,
    stop_system_metrics,
    value_text,
)

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


def runner_name(runner: Any) -> str:
    """``SequentialRunner`` for a runner, its class or Kedro's ``str(runner)`` of one."""
    if isinstance(runner, type):
        return runner.__name__
    if not isinstance(runner, str):
        return type(runner).__name__
    found = re.search(r"([A-Za-z_]\w*) object at 0x", runner)
    return found.group(1) if found else runner.rsplit(".", 1)[-1].strip("<>'\" ")


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def kedro_command(run_params: Mapping[str, Any]) -> str:
    """The ``kedro run`` command line that repeats a run, from Kedro's ``run_params``: the
    pipelines, ``--env``, ``--params`` and every filter and runner option that was given."""
    parts = ["kedro", "run"]

    def option(name: str, value: Any) -> None:
        if value:
            parts.append(f"--{name}={','.join(map(str, value)) if isinstance(value, list | tuple) else value}")

    option("env", run_params.get("env"))
    option("pipelines", [p for p in run_params.get("pipeline_names") or [] if p != "__default__"])
    option("namespaces", run_params.get("namespaces"))
    option("tags", run_params.get("tags"))
    option("nodes", run_params.get("node_names"))
    option("from-nodes", run_params.get("from_nodes"))
    option("to-nodes", run_params.get("to_nodes"))
    option("from-inputs", run_params.get("from_inputs"))
    option("to-outputs", run_params.get("to_outputs"))
    option("load-versions", [f"{k}:{v}" for k, v in (run_params.get("load_versions") or {}).items()])
    runner = runner_name(run_params.get("runner")) if run_params.get("runner") else "SequentialRunner"
    if runner not in {"SequentialRunner", "None"}:
        option("runner", runner)
    option("params", [f"{k}={value_text(v)}" for k, v in _flat(run_params.get("runtime_params") or {}).items()])
    if run_params.get("only_missing_outputs"):
        parts.append("--only-missing-outputs")
    return shlex.join(parts)


class MlflowRunHooks:
    """The `kedro run`'s MLflow run (opened by kedro-mlflow) and the child runs its nodes open
    end as the run ended, and none stays open in the process:

    - success: FINISHED; child runs a node left open end KILLED (with a warning);
    - an exception (``on_pipeline_error``): the parent and every open child FAILED;
    - Ctrl-C, or SIGTERM (turned into :class:`~ecg_transfer.tracking.Terminated` while the
      pipeline runs): KILLED. Kedro runs no hook for those, so the ``with`` blocks of the child
      runs end them while the stack unwinds, and the parent is ended at interpreter exit (before
      MLflow's own exit handler would mark it FINISHED) or, in a notebook, when the next
      session starts.

    It also publishes the parent run for the tracking datasets (:func:`set_parent_run`) and
    corrects two tags kedro-mlflow writes: ``kedro_command`` (with ``--env``, ``--params``,
    ``--namespaces``...) and ``runner`` (a name, not an object's repr).

    kedro-mlflow re-enters its run before every node (``start_run(run_id=..., nested=True)``,
    for multi-threaded runners); MLflow 3 stacks those re-entries, so its single ``end_run()``
    after the pipeline leaves the run open in the process and a second `kedro run` in the same
    process (a notebook, a test) would log into the first one: this hook runs after
    kedro-mlflow's and closes whatever this run left open, keeping a run the caller had opened
    before the session.
    """

    def __init__(self) -> None:
        self._opened_before: str | None = None
        self._parent: ParentRun | None = None
        self._parent_is_ours = False
        self._restore_sigterm = None
        self._exit_handler_registered = False

    @hook_impl(tryfirst=True)
    def after_context_created(self) -> None:
        self._end_interrupted("the previous kedro run in this process was interrupted")
        active = mlflow.active_run()
        self._opened_before = active.info.run_id if active else None

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        active = mlflow.active_run()
        if active is None:  # tracking disabled for this pipeline
            return
        self._parent = ParentRun(active.info.run_id, active.info.experiment_id, mlflow.get_tracking_uri())
        self._parent_is_ours = active.info.run_id != self._opened_before
        set_parent_run(self._parent)
        try:
            client = MlflowClient(tracking_uri=self._parent.tracking_uri)
            client.set_tag(active.info.run_id, "kedro_command", kedro_command(run_params))
            if run_params.get("runner"):
                client.set_tag(active.info.run_id, "runner", runner_name(run_params["runner"]))
        except Exception as error:  # noqa: BLE001 - tags are a convenience
            logger.warning("could not correct the MLflow run's tags: %s", error)
        self._restore_sigterm = raise_on_sigterm()
        if not self._exit_handler_registered:
            # Registered after mlflow's own exit handler (at its import), so it runs first.
            atexit.register(self._at_exit)
            self._exit_handler_registered = True

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        end_open_runs(KILLED, "the node that started them did not end them")
        self._end_pipeline()
        self._close_ours(FINISHED)

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception) -> None:
        end_open_runs(FAILED, f"the pipeline failed: {type(error).__name__}")
        self._end_parent(FAILED)
        self._end_pipeline()
        self._close_ours(FAILED)

    def _end_parent(self, status: str) -> None:
        if self._parent is None or not self._parent_is_ours:
            return
        try:
            MlflowClient(tracking_uri=self._parent.tracking_uri).set_terminated(self._parent.run_id, status)
        except Exception as error:  # noqa: BLE001 - ending as much as possible
            logger.warning("could not end the MLflow run %s %s: %s", self._parent.run_id, status, error)

    def _end_interrupted(self, reason: str) -> None:
        """A pipeline that began and reached neither after_pipeline_run nor on_pipeline_error
        was interrupted: its runs end KILLED."""
        if self._parent is None:
            return
        logger.warning("MLflow run %s ends KILLED: %s", self._parent.run_id, reason)
        end_open_runs(KILLED, reason)
        self._end_parent(KILLED)
        self._end_pipeline()
        self._close_ours(KILLED)

    def _at_exit(self) -> None:
        try:
            self._end_interrupted("the process ended during the kedro run (Ctrl-C, SIGTERM)")
        except Exception as error:  # noqa: BLE001 - nothing to raise to at exit
            logger.warning("could not end the MLflow runs at exit: %s", error)

    def _end_pipeline(self) -> None:
        stop_system_metrics()
        set_parent_run(None)
        self._parent = None
        if self._restore_sigterm is not None:
            self._restore_sigterm()
            self._restore_sigterm = None

    def _close_ours(self, status: str = FINISHED) -> None:
        while (active := mlflow.active_run()) is not None and active.info.run_id != self._opened_before:
            mlflow.end_run(status)


# The former name, kept for code that imported it.
CloseMlflowRunHooks = MlflowRunHooks
