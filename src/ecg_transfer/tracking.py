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

Process-wide end states: :func:`end_open_runs` ends every child run still open in this process
(the Kedro hooks call it on an error, an interrupt or a termination), and
:func:`raise_on_sigterm` turns SIGTERM into :class:`Terminated` (a ``SystemExit``), so a killed
job unwinds like Ctrl-C does instead of dying with its runs marked ``RUNNING``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import numbers
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

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


def epoch_metrics(rows: pd.DataFrame | Iterable[Mapping[str, Any]], timestamp_ms: int | None = None) -> list[Metric]:
    """MLflow metrics of history rows (one per (epoch, split)): ``<split>_<column>`` for every
    numeric column but the identifying ones, ``step=epoch``; NaN and inf are left out."""
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
                metrics.append(Metric(f"{prefix}{column}", float(value), timestamp, step))
    return metrics


def _final_metrics(metrics: Mapping[str, Any] | None, timestamp_ms: int) -> list[Metric]:
    return [
        Metric(str(k), float(v), timestamp_ms, 0)
        for k, v in (metrics or {}).items()
        if v is not None and math.isfinite(float(v))
    ]


def _params(params: Mapping[str, Any] | None) -> list[Param]:
    return [Param(str(k), value_text(v)[:_MAX_PARAM_LENGTH]) for k, v in (params or {}).items()]


def _tags(tags: Mapping[str, Any] | None) -> list[RunTag]:
    return [RunTag(str(k), value_text(v)) for k, v in (tags or {}).items()]


def _log(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    """log_batch within MLflow's per-call limits."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    for start in range(0, len(params), _PARAMS_PER_CALL):
        client.log_batch(run_id, params=params[start : start + _PARAMS_PER_CALL])
    for start in range(0, len(tags), _PARAMS_PER_CALL):
        client.log_batch(run_id, tags=tags[start : start + _PARAMS_PER_CALL])
    for start in range(0, len(metrics), _METRICS_PER_CALL):
        client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_CALL])


# ------------------------------------------------------------------ open runs of this process
_open_lock = threading.Lock()
_open_runs: dict[str, TrackedRun] = {}


def open_runs() -> list[TrackedRun]:
    """The child runs started in this process and not ended yet."""
    with _open_lock:
        return list(_open_runs.values())


def end_open_runs(status: str, reason: str = "") -> list[str]:
    """End every child run still open in this process with ``status``; their ids."""
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
    ``FAILED`` for an ``Exception``, ``KILLED`` for ``KeyboardInterrupt``/``SystemExit``)."""

    def __init__(self, client: MlflowClient, run_id: str, run_name: str):
        self.client = client
        self.run_id = run_id
        self.run_name = run_name
        self.status: str | None = None  # set once ended
        self.last_epoch: int | None = None
        self._logged_params: dict[str, str] = {}
        self._logging_errors = 0

    @property
    def ended(self) -> bool:
        return self.status is not None

    def _safely(self, what: str, call: Callable[[], None]) -> None:
        """A failing log call (server away, say) warns instead of stopping the training."""
        try:
            call()
        except Exception as error:  # noqa: BLE001 - tracking must not kill hours of training
            self._logging_errors += 1
            if self._logging_errors == 1:
                logger.warning("MLflow run %s (%s): %s failed, training goes on: %s",
                               self.run_name, self.run_id, what, error)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params not logged before (MLflow refuses to change a logged param)."""
        new = [p for p in _params(params) if self._logged_params.get(p.key) != p.value]
        changed = [p.key for p in new if p.key in self._logged_params]
        if changed:
            logger.warning("MLflow run %s: params %s already logged with other values; kept the first",
                           self.run_name, changed)
            new = [p for p in new if p.key not in self._logged_params]
        if new:
            self._safely("logging params", lambda: _log(self.client, self.run_id, params=new))
            self._logged_params.update({p.key: p.value for p in new})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._safely("setting tags", lambda: _log(self.client, self.run_id, tags=_tags(tags)))

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        batch = [Metric(m.key, m.value, m.timestamp, step) for m in _final_metrics(metrics, _now_ms())]
        self._safely("logging metrics", lambda: _log(self.client, self.run_id, metrics=batch))

    def log_epoch(self, epoch: int, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> None:
        """The rows of one finished epoch (one per split), as ``<split>_<metric>`` at
        ``step=epoch``."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if "epoch" not in frame.columns:
            frame = frame.assign(epoch=epoch)
        batch = epoch_metrics(frame)
        self._safely(f"logging epoch {epoch}", lambda: _log(self.client, self.run_id, metrics=batch))
        self.last_epoch = max(int(epoch), self.last_epoch or 0)

    def log_history(self, history: pd.DataFrame) -> None:
        """The epochs of ``history`` not logged yet (all of them on the first call: a resumed
        run's earlier epochs arrive with its first new one)."""
        if history is None or history.empty:
            return
        new = history if self.last_epoch is None else history[history["epoch"] > self.last_epoch]
        if new.empty:
            return
        batch = epoch_metrics(new)
        last = int(new["epoch"].max())
        self._safely(f"logging epoch {last}", lambda: _log(self.client, self.run_id, metrics=batch))
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
            _open_runs.pop(self.run_id, None)
        self._safely(f"ending the run {status}", lambda: self.client.set_terminated(self.run_id, status, _now_ms()))

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

    @classmethod
    def for_run(cls, parent_run_id: str, tracking_uri: str | None = None) -> RunTracker:
        client = MlflowClient(tracking_uri=tracking_uri)
        return cls(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)

    def _create(self, run_name: str, tags: Mapping[str, Any] | None, start_time_ms: int) -> str:
        all_tags = {value_text(k): value_text(v) for k, v in (tags or {}).items()}
        all_tags["mlflow.runName"] = run_name
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, start_time=start_time_ms, tags=all_tags, run_name=run_name)
        return run.info.run_id

    def start(self, run_name: str, params: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None) -> TrackedRun:
        """Open a child run now (status ``RUNNING``, tag ``live=True``); end it with the
        handle's ``finish``, ``fail`` or ``kill``, or use it as a context manager. Errors
        reaching MLflow here are raised: better before training than after it."""
        run = TrackedRun(self.client, self._create(run_name, {"live": True, **(tags or {})}, _now_ms()), run_name)
        with _open_lock:
            _open_runs[run.run_id] = run
        if params:
            run.log_params(params)
        return run

    def log_finished(
        self, run_name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
        history: pd.DataFrame | None = None, metrics: Mapping[str, Any] | None = None,
        duration_s: float | None = None, start_time_ms: int | None = None, status: str = FINISHED,
    ) -> str:
        """A run trained before (found finished on disk) as one child run written at once: its
        whole history, its summary metrics, and its duration when known (else it ends as it
        starts). Tagged ``live=False`` (filter ``tags.live = 'True'`` for the runs trained
        by this `kedro run`). Returns the run id."""
        end = _now_ms()
        if start_time_ms is None:
            start_time_ms = end - int(round(1000 * duration_s)) if duration_s is not None else end
        elif duration_s is not None:
            end = int(start_time_ms + round(1000 * duration_s))
        run_id = self._create(run_name, {"live": False, **(tags or {})}, int(start_time_ms))
        metrics_batch = _final_metrics(metrics, end)
        if history is not None and len(history):
            metrics_batch += epoch_metrics(history, end)
        _log(self.client, run_id, metrics=metrics_batch, params=_params(params))
        self.client.set_terminated(run_id, status, end)
        return run_id

    def log_record(self, record: Mapping[str, Any]) -> str:
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


def epoch_logger(run: TrackedRun | NullRun,
                 then: Callable[[int, pd.DataFrame], None] | None = None) -> Callable[[int, pd.DataFrame], None]:
    """An ``on_epoch_end(epoch, history_so_far)`` callback for the training engine: logs the
    run's new epochs, then calls ``then`` (another callback) if given."""

    def on_epoch_end(epoch: int, history_so_far: pd.DataFrame) -> None:
        run.on_epoch_end(epoch, history_so_far)
        if then is not None:
            then(epoch, history_so_far)

    return on_epoch_end


# ------------------------------------------------------------------ the parent run of this process
@dataclass(frozen=True)
class ParentRun:
    """The run a ``kedro run`` logs into, published by the project's hooks so that datasets
    loaded in any thread find it (MLflow's active run is per thread)."""

    run_id: str
    experiment_id: str
    tracking_uri: str


_parent: ParentRun | None = None


def set_parent_run(parent: ParentRun | None) -> None:
    global _parent
    _parent = parent


def parent_run() -> ParentRun | None:
    return _parent


# ------------------------------------------------------------------ system metrics
_monitors: dict[str, Any] = {}


def system_metrics_wanted(mode: bool | str) -> bool:
    """``mode``: ``True``/``"on"``, ``False``/``"off"`` or ``"auto"`` (on when CUDA is available).
    MLflow's monitor needs ``psutil`` (CPU, memory, disk, network) and, for the GPU numbers,
    ``nvidia-ml-py``; without psutil it stays off, with a log line saying so."""
    text = str(mode).strip().lower()
    if text in {"false", "off", "no", "0", "none"}:
        return False
    if text == "auto":
        try:
            import torch
        except ImportError:
            return False
        if not torch.cuda.is_available():
            return False
    elif text not in {"true", "on", "yes", "1"}:
        raise ValueError(f"system_metrics: expected auto, true or false, got {mode!r}")
    if importlib.util.find_spec("psutil") is None:
        logger.log(logging.INFO if text == "auto" else logging.WARNING,
                   "MLflow system metrics are off: `pip install psutil nvidia-ml-py` to log them")
        return False
    if importlib.util.find_spec("pynvml") is None and text == "auto":
        logger.info("MLflow system metrics without GPU numbers: `pip install nvidia-ml-py` for them")
    return True


def start_system_metrics(run_id: str, mode: bool | str = "auto", tracking_uri: str | None = None,
                         sampling_interval_s: float = 10.0) -> bool:
    """Log MLflow system metrics (``system/gpu_utilization_percentage``, memory, CPU...) to
    ``run_id`` every ``sampling_interval_s`` until :func:`stop_system_metrics` or the run ends.
    One monitor per run, however often it is asked for. Returns whether one is running."""
    if run_id in _monitors:
        return True
    if not system_metrics_wanted(mode):
        return False
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_interval_s,
                                       resume_logging=True, tracking_uri=tracking_uri)
        monitor.start()
    except Exception as error:  # noqa: BLE001 - an optional extra
        logger.warning("MLflow system metrics could not start: %s", error)
        return False
    _monitors[run_id] = monitor
    return True


def stop_system_metrics() -> None:
    """Stop every system-metrics monitor this process started."""
    while _monitors:
        _, monitor = _monitors.popitem()
        try:
            monitor.finish()
        except Exception as error:  # noqa: BLE001
            logger.debug("stopping a system metrics monitor: %s", error)


# ------------------------------------------------------------------ termination
class Terminated(SystemExit):
    """SIGTERM (a scheduler's cancel, ``kill``) as an exception: raised in the main thread by
    the handler of :func:`raise_on_sigterm`, it unwinds the stack like Ctrl-C does, so ``with``
    blocks end their runs ``KILLED``; the process exits with status ``128 + signum``."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def raise_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise :class:`Terminated` in the main thread; return a function restoring the
    previous handler. Does nothing (and restores nothing) outside the main thread or when
    SIGTERM is ignored. A second SIGTERM while the first unwinds is logged and ignored, so the
    end states still get written."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        return lambda: None
    raised = []

    def on_sigterm(signum, frame):
        if raised:
            logger.warning("SIGTERM again: still ending the MLflow runs")
            return
        raised.append(signum)
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore
