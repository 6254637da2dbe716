"""Live MLflow tracking of training runs, without Kedro.

A :class:`RunTracker` is bound to one parent run (the run of a ``kedro run``). Each training
run becomes a child run, opened when its training starts (:meth:`RunTracker.start`), given one
metric batch per finished epoch (``<split>_<metric>``, ``step=epoch``) and ended ``FINISHED``,
``FAILED`` or ``KILLED``. Everything goes through :class:`~mlflow.tracking.MlflowClient` and
run ids, never through MLflow's fluent "active run" stack, so several child runs can be open at
once (K trials trained together) and from several threads.

When tracking is off, :class:`NullTracker` offers the same methods and does nothing, so training
code never asks whether MLflow is there::

    with tracker.start("transfer-f0.5-t3", params, tags) as run:   # FAILED on an exception,
        result = fit(..., on_epoch_end=run.on_epoch_end)          # KILLED on Ctrl-C / SIGTERM
        run.finish(metrics={"honest_test_f1_weighted": 0.81})

Runs found finished on disk are logged in one go with :meth:`RunTracker.log_finished`.
Callers type against the protocols :class:`Tracker` and :class:`Run`, which both kinds meet.

Every call to MLflow goes through the store's :class:`~ecg_transfer.tracking.connection.TrackingLink`:
after one failure no call of this ``kedro run`` goes to that store again, and the runs that
lack tracking are remembered (a store that goes away costs seconds, not hours of retries).
Metric names are MLflow-safe by :mod:`ecg_transfer.tracking.keys` (a class named ``~``).

Process-wide: :func:`end_open_runs` ends every child run still open in this process (the
Kedro hooks call it on an error, an interrupt or a termination).
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from ecg_transfer.tracking.connection import TrackingLink, link_for
from ecg_transfer.tracking.keys import check_key, class_params, metric_key

logger = logging.getLogger(__name__)

FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)

_IDENTIFYING_COLUMNS = {"epoch", "split", "fraction", "arm", "trial"}
_METRICS_PER_CALL = 1000  # MLflow's limits per log_batch call
_PARAMS_PER_CALL = 100
_MAX_PARAM_LENGTH = 6000


def _now_ms() -> int:
    return int(time.time() * 1000)


def value_text(value: Any) -> str:
    """The one spelling of a param or tag value: floats as short as they round-trip
    (``1.0`` -> ``'1'``, ``0.5`` -> ``'0.5'``), so a fraction tag and param read the same."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        short = f"{number:g}"
        return short if math.isfinite(number) and float(short) == number else repr(number)
    return str(value)


def epoch_metrics(rows: pd.DataFrame | Iterable[Mapping[str, Any]], timestamp_ms: int | None = None,
                  labels: set[str] | None = None) -> list[Metric]:
    """MLflow metrics of history rows (one per (epoch, split)): ``<split>_<column>`` for every
    numeric column but the identifying ones, ``step=epoch``; NaN and inf are left out. Names
    go through :func:`~ecg_transfer.tracking.keys.metric_key` (a ValueError for one MLflow
    refuses); the class labels that got a safe name are added to ``labels`` when given."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return []
    timestamp = _now_ms() if timestamp_ms is None else int(timestamp_ms)
    columns = [
        c for c in frame.columns
        if c not in _IDENTIFYING_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]
    metrics = []
    for row in frame.to_dict("records"):
        prefix = f"{row['split']}_" if "split" in row else ""
        step = int(row.get("epoch", 0))
        for column in columns:
            value = row[column]
            if value is not None and math.isfinite(float(value)):
                metrics.append(Metric(_key(f"{prefix}{column}", labels), float(value), timestamp, step))
    return metrics


def _key(name: str, labels: set[str] | None) -> str:
    key, label = metric_key(name)
    if label is not None and labels is not None:
        labels.add(label)
    return key


def _final_metrics(metrics: Mapping[str, Any] | None, timestamp_ms: int,
                   labels: set[str] | None = None) -> list[Metric]:
    return [
        Metric(_key(str(k), labels), float(v), timestamp_ms, 0)
        for k, v in (metrics or {}).items()
        if v is not None and math.isfinite(float(v))
    ]


def _params(params: Mapping[str, Any] | None) -> list[Param]:
    return [Param(check_key(str(k), f"the param {k!r}"), value_text(v)[:_MAX_PARAM_LENGTH])
            for k, v in (params or {}).items()]


def _tags(tags: Mapping[str, Any] | None) -> list[RunTag]:
    return [RunTag(check_key(str(k), f"the tag {k!r}"), value_text(v)) for k, v in (tags or {}).items()]


def _log(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    """log_batch within MLflow's per-call limits."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    for start in range(0, len(params), _PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[start : start + _PARAMS_PER_CALL])
    for start in range(0, len(tags), _PARAMS_PER_CALL):
        client.log_batch(run_id, tags=tags[start : start + _PARAMS_PER_CALL])
    for start in range(0, len(metrics), _METRICS_PER_CALL):
        client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_CALL])


# ------------------------------------------------------------------ what callers type against
@runtime_checkable
class Run(Protocol):
    """One training run's tracking, open until ended: :class:`TrackedRun` or :class:`NullRun`."""

    run_name: str
    run_id: str | None
    status: str | None
    last_epoch: int | None

    @property
    def ended(self) -> bool: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None: ...
    def log_epoch(self, epoch: int, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None: ...
    def log_history(self, history: pd.DataFrame) -> None: ...
    def on_epoch_end(self, epoch: int, history_so_far: pd.DataFrame) -> None: ...
    def end(self, status: str) -> None: ...
    def finish(self, metrics: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
               tags: Mapping[str, Any] | None = None, status: str = FINISHED) -> None: ...
    def fail(self) -> None: ...
    def kill(self) -> None: ...
    def __enter__(self) -> Run: ...
    def __exit__(self, exc_type, exc, tb) -> None: ...


@runtime_checkable
class Tracker(Protocol):
    """Where training runs are tracked: :class:`RunTracker` (MLflow) or :class:`NullTracker`."""

    enabled: bool
    parent_run_id: str | None

    def start(self, run_name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None) -> Run: ...
    def log_finished(self, run_name: str, params: Mapping[str, Any] | None = None,
                     tags: Mapping[str, Any] | None = None, history: pd.DataFrame | None = None,
                     metrics: Mapping[str, Any] | None = None, duration_s: float | None = None,
                     start_time_ms: int | None = None, status: str = FINISHED) -> str | None: ...
    def log_record(self, record: Mapping[str, Any]) -> str | None: ...


# ------------------------------------------------------------------ open runs of this process
_open_lock = threading.Lock()
_open_runs: dict[str, TrackedRun] = {}


def open_runs() -> list[TrackedRun]:
    """The child runs started in this process and not ended yet."""
    with _open_lock:
        return list(_open_runs.values())


def end_open_runs(status: str, reason: str = "") -> list[str]:
    """End every child run still open in this process with ``status``; their ids (None for a
    run the store never got)."""
    ended = []
    for run in open_runs():
        run.end(status)
        ended.append(run.run_id)
    if ended:
        logger.warning("MLflow: %d open child run(s) ended %s%s", len(ended), status, f" ({reason})" if reason else "")
    return ended


class TrackedRun:
    """One child run, open from :meth:`RunTracker.start` until :meth:`finish`/:meth:`fail`/
    :meth:`kill` (or the end of its ``with`` block: ``FINISHED`` unless an exception left it,
    ``FAILED`` for an ``Exception``, ``KILLED`` for ``KeyboardInterrupt``/``SystemExit``).
    ``run_id`` is None when the store was away when it started: its calls are then skipped
    (and the run is listed among those lacking tracking) while training goes on."""

    def __init__(self, client: MlflowClient, run_id: str | None, run_name: str, link: TrackingLink | None = None):
        self.client = client
        self.run_id = run_id
        self.run_name = run_name
        self.link = link if link is not None else link_for(client.tracking_uri)
        self.status: str | None = None  # set once ended
        self.last_epoch: int | None = None
        self._logged_params: dict[str, str] = {}
        self._class_labels: set[str] = set()

    @property
    def ended(self) -> bool:
        return self.status is not None

    def _send(self, what: str, call: Callable[[], object]) -> None:
        """Through the store's link: skipped once the store failed (it warns once, the first time)."""
        if self.run_id is not None:  # else never created: listed as untracked when that failed
            self.link.send(self.run_name, what, call)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params not logged before (MLflow refuses to change a logged param)."""
        new = [p for p in _params(params) if self._logged_params.get(p.key) != p.value]
        changed = [p.key for p in new if p.key in self._logged_params]
        if changed:
            logger.warning("MLflow run %s: params %s already logged with other values; kept the first",
                           self.run_name, changed)
            new = [p for p in new if p.key not in self._logged_params]
        if new:
            self._send("logging params", lambda: _log(self.client, self.run_id, params=new))
            self._logged_params.update({p.key: p.value for p in new})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        batch = _tags(tags)
        self._send("setting tags", lambda: _log(self.client, self.run_id, tags=batch))

    def _log_metrics(self, what: str, batch: list[Metric], labels: set[str]) -> None:
        """A metric batch, after the params naming the classes its keys call by a safe name."""
        if labels - self._class_labels:
            self._class_labels |= labels
            self.log_params(class_params(sorted(labels)))
        self._send(what, lambda: _log(self.client, self.run_id, metrics=batch))

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        labels: set[str] = set()
        batch = [Metric(m.key, m.value, m.timestamp, step) for m in _final_metrics(metrics, _now_ms(), labels)]
        self._log_metrics("logging metrics", batch, labels)

    def log_epoch(self, epoch: int, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None:
        """The rows of one finished epoch (one per split), as ``<split>_<metric>`` at
        ``step=epoch``."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if "epoch" not in frame.columns:
            frame = frame.assign(epoch=epoch)
        labels: set[str] = set()
        batch = epoch_metrics(frame, labels=labels)
        self._log_metrics(f"logging epoch {epoch}", batch, labels)
        self.last_epoch = max(int(epoch), self.last_epoch or 0)

    def log_history(self, history: pd.DataFrame) -> None:
        """The epochs of ``history`` not logged yet (all of them on the first call: a resumed
        run's earlier epochs arrive with its first new one)."""
        if history is None or history.empty:
            return
        new = history if self.last_epoch is None else history[history["epoch"] > self.last_epoch]
        if new.empty:
            return
        labels: set[str] = set()
        batch = epoch_metrics(new, labels=labels)
        last = int(new["epoch"].max())
        self._log_metrics(f"logging epoch {last}", batch, labels)
        self.last_epoch = last

    def on_epoch_end(self, epoch: int, history_so_far: pd.DataFrame) -> None:
        """The training engine's ``on_epoch_end(epoch, history_so_far)`` callback."""
        self.log_history(history_so_far[history_so_far["epoch"] <= epoch])

    def end(self, status: str) -> None:
        """End the run with ``status`` (once; later calls do nothing)."""
        if self.ended:
            return
        self.status = status
        with _open_lock:
            _open_runs.pop(self.run_id or f"untracked:{id(self)}", None)
        self._send(f"ending the run {status}", lambda: self.client.set_terminated(self.run_id, status, _now_ms()))

    def finish(self, metrics: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
               tags: Mapping[str, Any] | None = None, status: str = FINISHED) -> None:
        """Log the run's summary metrics (step 0), any params and tags known only now, and end it."""
        if params:
            self.log_params(params)
        if tags:
            self.set_tags(tags)
        if metrics:
            self.log_metrics(metrics)
        self.end(status)

    def fail(self) -> None:
        self.end(FAILED)

    def kill(self) -> None:
        self.end(KILLED)

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end(FINISHED)
        elif issubclass(exc_type, Exception):
            self.end(FAILED)
        else:  # KeyboardInterrupt, SystemExit (Terminated), GeneratorExit
            self.end(KILLED)

    def __repr__(self) -> str:
        return f"TrackedRun({self.run_name!r}, run_id={self.run_id!r}, status={self.status!r})"


class NullRun:
    """What :class:`NullTracker` hands out: the methods of :class:`TrackedRun`, doing nothing."""

    run_id = None
    last_epoch = None

    def __init__(self, run_name: str = ""):
        self.run_name = run_name
        self.status: str | None = None

    @property
    def ended(self) -> bool:
        return self.status is not None

    def log_params(self, params) -> None: ...
    def set_tags(self, tags) -> None: ...
    def log_metrics(self, metrics, step: int = 0) -> None: ...
    def log_epoch(self, epoch, rows) -> None: ...
    def log_history(self, history) -> None: ...
    def on_epoch_end(self, epoch, history_so_far) -> None: ...

    def end(self, status: str) -> None:
        self.status = self.status or status

    def finish(self, metrics=None, params=None, tags=None, status: str = FINISHED) -> None:
        self.end(status)

    def fail(self) -> None:
        self.end(FAILED)

    def kill(self) -> None:
        self.end(KILLED)

    def __enter__(self) -> NullRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(FINISHED if exc_type is None else FAILED if issubclass(exc_type, Exception) else KILLED)


class RunTracker:
    """Child runs of the parent run ``parent_run_id`` in ``experiment_id``."""

    enabled = True

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str | None = None):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.link = link_for(client.tracking_uri)

    @classmethod
    def for_run(cls, parent_run_id: str, tracking_uri: str | None = None) -> RunTracker:
        client = MlflowClient(tracking_uri=tracking_uri)
        return cls(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)

    def _create(self, run_name: str, tags: Mapping[str, Any] | None, start_time_ms: int) -> str | None:
        """A new child run's id, or None when the store is away (the run goes untracked)."""
        all_tags = {check_key(value_text(k), f"the tag {k!r}"): value_text(v) for k, v in (tags or {}).items()}
        all_tags["mlflow.runName"] = run_name
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        created = []
        self.link.send(run_name, "creating the run", lambda: created.append(self.client.create_run(
            self.experiment_id, start_time=start_time_ms, tags=all_tags, run_name=run_name).info.run_id))
        return created[0] if created else None

    def start(self, run_name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """Open a child run now (status ``RUNNING``, tag ``live=True``); end it with the
        handle's ``finish``, ``fail`` or ``kill``, or use it as a context manager. The store
        was checked before the ``kedro run`` began; if it is away now the run trains untracked."""
        run = TrackedRun(self.client, self._create(run_name, {"live": True, **(tags or {})}, _now_ms()), run_name,
                         self.link)
        with _open_lock:
            _open_runs[run.run_id or f"untracked:{id(run)}"] = run
        if params:
            run.log_params(params)
        return run

    def log_finished(
        self, run_name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
        history: pd.DataFrame | None = None, metrics: Mapping[str, Any] | None = None,
        duration_s: float | None = None, start_time_ms: int | None = None, status: str = FINISHED,
    ) -> str | None:
        """A run trained before (found finished on disk) as one child run written at once: its
        whole history, its summary metrics, and its duration when known (else it ends as it
        starts). Tagged ``live=False`` (filter ``tags.live = 'True'`` for the runs trained
        by this `kedro run`). Returns the run id (None when the store is away)."""
        end = _now_ms()
        if start_time_ms is None:
            start_time_ms = end - int(round(1000 * duration_s)) if duration_s is not None else end
        elif duration_s is not None:
            end = int(start_time_ms + round(1000 * duration_s))
        labels: set[str] = set()
        metrics_batch = _final_metrics(metrics, end, labels)
        if history is not None and len(history):
            metrics_batch += epoch_metrics(history, end, labels)
        all_params = _params({**(params or {}), **class_params(sorted(labels))})
        run_id = self._create(run_name, {"live": False, **(tags or {})}, int(start_time_ms))
        if run_id is None:
            return None
        run = TrackedRun(self.client, run_id, run_name, self.link)
        run._send("logging the finished run", lambda: _log(self.client, run_id, metrics=metrics_batch,
                                                            params=all_params))
        run._send("ending the finished run", lambda: self.client.set_terminated(run_id, status, end))
        return run_id

    def log_record(self, record: Mapping[str, Any]) -> str | None:
        """:meth:`log_finished` for a run record ``{"run_name", "params", "tags", "history",
        "metrics"}`` (``study.experiment.run_record``), optionally with ``duration_s`` and
        ``start_time_ms``."""
        return self.log_finished(
            record["run_name"], record.get("params"), record.get("tags"), record.get("history"),
            record.get("metrics"), record.get("duration_s"), record.get("start_time_ms"),
        )


class NullTracker:
    """The tracker when MLflow tracking is off: same methods, nothing logged."""

    enabled = False
    parent_run_id = None

    def start(self, run_name: str, params=None, tags=None) -> NullRun:
        return NullRun(run_name)

    def log_finished(self, run_name: str, *args, **kwargs) -> None:
        return None

    def log_record(self, record: Mapping[str, Any]) -> None:
        return None


def epoch_logger(run: Run,
                 then: Callable[[int, pd.DataFrame], None] | None = None) -> Callable[[int, pd.DataFrame], None]:
    """An ``on_epoch_end(epoch, history_so_far)`` callback for the training engine: logs the
    run's new epochs, then calls ``then`` (another callback) if given."""

    def on_epoch_end(epoch: int, history_so_far: pd.DataFrame) -> None:
        run.on_epoch_end(epoch, history_so_far)
        if then is not None:
            then(epoch, history_so_far)

    return on_epoch_end
