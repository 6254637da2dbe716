"""Project hooks: wall time per node, logged, so a long study says where its time went
(benchmarks/study_runtime.py reads these lines); and MLflow runs that end in the state the
`kedro run` ended in (FINISHED, FAILED, KILLED), none left open or RUNNING, with a tracking
store that is checked before anything runs and that costs seconds if it goes away
(:mod:`ecg_transfer.tracking.connection`)."""

from __future__ import annotations

import atexit
import logging
import os
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
    TrackingLink,
    bound_http_requests,
    check_tracking_store,
    end_open_runs,
    link_for,
    prompt_http_requests,
    raise_on_sigterm,
    report_untracked,
    reset_links,
    set_parent_run,
    stop_system_metrics,
    value_text,
)

PARENT = "the kedro run's own run"  # how the parent run is named in the list of untracked runs

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

    The tracking store is checked before kedro-mlflow first touches it, MLflow's HTTP calls are
    bounded, and once a call fails the store gets no more calls in this run, kedro-mlflow's
    own included (:mod:`ecg_transfer.tracking.connection`); the end of the run lists the runs
    that lack tracking.

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
        self._catalog = None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        """Before kedro-mlflow's: bound MLflow's HTTP calls, then check the tracking store (an
        unreachable server is an error naming it, in seconds; a SQLite store and the
        experiment are created once, under a lock)."""
        self._end_interrupted("the previous kedro run in this process was interrupted")
        bound_http_requests()
        active = mlflow.active_run()
        self._opened_before = active.info.run_id if active else None
        if active is None:
            check_tracking_store(*tracking_settings(context))

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl(tryfirst=True)
    def before_node_run(self, node) -> None:
        """A server that went away between nodes is found here, in one short try, before
        kedro-mlflow's calls for the node would wait on it."""
        if self._parent is not None:
            link_for(self._parent.tracking_uri).probe(PARENT, f"checking the server before node {node.name}")

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        active = mlflow.active_run()
        if active is None:  # tracking disabled for this pipeline
            return
        self._parent = ParentRun(active.info.run_id, active.info.experiment_id, mlflow.get_tracking_uri())
        self._parent_is_ours = active.info.run_id != self._opened_before
        set_parent_run(self._parent)
        reset_links()  # a new kedro run tries every store again
        link = link_for(self._parent.tracking_uri)
        link.on_down.append(self._quiet_kedro_mlflow)
        client = MlflowClient(tracking_uri=self._parent.tracking_uri)
        tags = {"kedro_command": kedro_command(run_params)}
        if run_params.get("runner"):
            tags["runner"] = runner_name(run_params["runner"])
        for name, value in tags.items():
            link.send(PARENT, "correcting its tags", lambda n=name, v=value: client.set_tag(active.info.run_id, n, v))
        self._restore_sigterm = raise_on_sigterm(on_signal=prompt_http_requests)
        if not self._exit_handler_registered:
            # Registered after mlflow's own exit handler (at its import), so it runs first.
            atexit.register(self._at_exit)
            self._exit_handler_registered = True

    @hook_impl(trylast=True)
    def after_pipeline_run(self) -> None:
        end_open_runs(KILLED, "the node that started them did not end them")
        self._close_ours(FINISHED)
        self._end_pipeline()

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception) -> None:
        end_open_runs(FAILED, f"the pipeline failed: {type(error).__name__}")
        self._end_parent(FAILED)
        self._close_ours(FAILED)
        self._end_pipeline()

    def _quiet_kedro_mlflow(self, link: TrackingLink) -> None:
        """The store went away: kedro-mlflow's own calls (a parameter log and a re-opened run
        before every node, artifact datasets, ending its run) would each fail after retries
        and fail the pipeline; turn them off for the rest of this run, as kedro-mlflow does for
        a pipeline with tracking disabled."""
        from kedro_mlflow.framework.hooks import mlflow_hook
        from kedro_mlflow.io.catalog.switch_catalog_logging import switch_catalog_logging

        mlflow_hook._is_mlflow_enabled = False
        mlflow_hook.run_id = None
        if self._catalog is not None:
            switch_catalog_logging(self._catalog, False)
        logger.warning("MLflow tracking to %s is off for the rest of this kedro run", link.uri)

    def _end_parent(self, status: str) -> None:
        if self._parent is None or not self._parent_is_ours:
            return
        client = MlflowClient(tracking_uri=self._parent.tracking_uri)
        run_id = self._parent.run_id
        link_for(self._parent.tracking_uri).send(PARENT, f"ending it {status}",
                                                 lambda: client.set_terminated(run_id, status))

    def _end_interrupted(self, reason: str) -> None:
        """A pipeline that began and reached neither after_pipeline_run nor on_pipeline_error
        was interrupted: its runs end KILLED."""
        if self._parent is None:
            return
        logger.warning("MLflow run %s ends KILLED: %s", self._parent.run_id, reason)
        end_open_runs(KILLED, reason)
        self._end_parent(KILLED)
        self._close_ours(KILLED)
        self._end_pipeline()

    def _at_exit(self) -> None:
        try:
            self._end_interrupted("the process ended during the kedro run (Ctrl-C, SIGTERM)")
        except Exception as error:  # noqa: BLE001 - nothing to raise to at exit
            logger.warning("could not end the MLflow runs at exit: %s", error)

    def _end_pipeline(self) -> None:
        stop_system_metrics()
        report_untracked()
        if self._parent is not None:
            link = link_for(self._parent.tracking_uri)
            if self._quiet_kedro_mlflow in link.on_down:
                link.on_down.remove(self._quiet_kedro_mlflow)
        set_parent_run(None)
        self._parent = None
        self._catalog = None
        if self._restore_sigterm is not None:
            self._restore_sigterm()
            self._restore_sigterm = None

    def _close_ours(self, status: str = FINISHED) -> None:
        """End the runs this `kedro run` left on MLflow's active-run stack; with the store away,
        only take them off the stack (MLflow's exit handler would otherwise try each again)."""
        link = link_for(self._parent.tracking_uri if self._parent else mlflow.get_tracking_uri())
        while (active := mlflow.active_run()) is not None and active.info.run_id != self._opened_before:
            if link.down:
                from mlflow.tracking.fluent import _active_run_stack

                _active_run_stack.get().pop()
                continue
            link.send(PARENT, f"ending it {status}", lambda: mlflow.end_run(status))  # pops before it calls


def tracking_settings(context) -> tuple[str, str | None]:
    """(tracking URI, experiment name) as kedro-mlflow will read them from ``mlflow.yml``: the
    configured URI (else ``MLFLOW_TRACKING_URI``, else ``mlruns``), the experiment's name (else
    the package's). The name is None when the experiment has its own artifact location (then
    kedro-mlflow creates it)."""
    try:
        conf = context.config_loader["mlflow"] or {}
    except Exception:  # noqa: BLE001 - no mlflow.yml: kedro-mlflow's defaults
        conf = {}
    uri = (conf.get("server") or {}).get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", "mlruns")
    experiment = (conf.get("tracking") or {}).get("experiment") or {}
    name = experiment.get("name") or getattr(context, "_package_name", None)
    if (experiment.get("create_experiment_kwargs") or {}).get("artifact_location"):
        name = None
    return str(uri), name


# The former name, kept for code that imported it.
CloseMlflowRunHooks = MlflowRunHooks
