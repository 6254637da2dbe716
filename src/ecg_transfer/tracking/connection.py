"""How this process reaches its tracking store, so that a store that is away costs seconds.

Three rules, in the order a ``kedro run`` meets them (the project's hooks apply them):

1. **Checked once, before anything trains** (:func:`check_tracking_store`): a tracking server
   (``http(s)://``) must answer one request within :data:`CHECK_TIMEOUT_S` seconds, without
   retries, or the run stops with :class:`TrackingStoreUnreachable` naming the URI. A SQLite
   store is created there, under a file lock beside it (``<db>.lock``), with the experiment:
   two ``kedro run`` started together on a fresh folder would otherwise both create MLflow's
   tables and one fail with ``table ... already exists``.
2. **Every call bounded** (:func:`bound_http_requests`): MLflow's client retries a failing HTTP
   request 7 times with exponential back-off and waits 120 s for an answer (about 4 minutes
   per call); the run uses :data:`HTTP_LIMITS` instead, unless the environment sets
   ``MLFLOW_HTTP_REQUEST_*`` itself. On SIGTERM, :func:`prompt_http_requests` makes the calls
   that end the runs ``KILLED`` a single short try.
3. **One failure, then no more tries** (:class:`TrackingLink`, a circuit breaker per tracking
   URI): after a call fails, no call of this run goes to that store again; training goes on
   (its histories, checkpoints and results are on disk as always) and :func:`untracked_runs`
   says which runs lack some or all of their tracking (the hooks log it at the end).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from ecg_transfer.atomic_files import file_lock

logger = logging.getLogger(__name__)

# MLflow's defaults are 7 retries, back-off factor 2, 120 s: minutes per call to a dead server.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# While the process ends on a signal: one try, a short wait.
PROMPT_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
CHECK_TIMEOUT_S = 5
_CHECK_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S)}


class TrackingStoreUnreachable(RuntimeError):
    """The tracking store named by the URI does not answer (checked before anything trains)."""


def bound_http_requests(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`HTTP_LIMITS` in ``os.environ`` where the user has not set the variable (MLflow
    reads them at every request); returns what was set."""
    environ = os.environ if environ is None else environ
    chosen = {name: value for name, value in HTTP_LIMITS.items() if name not in environ}
    os.environ.update(chosen)
    return chosen


def prompt_http_requests() -> None:
    """From now on one short try per request (the process is ending: don't stall its exit)."""
    os.environ.update(PROMPT_LIMITS)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder, as MLflow
    reads it), or None for another kind of store."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    return Path(path) if path not in ("", ":memory:") else None


def check_tracking_store(uri: str, experiment_name: str | None = None) -> None:
    """Before anything trains: a server answers within :data:`CHECK_TIMEOUT_S` (else
    :class:`TrackingStoreUnreachable` naming ``uri``); a SQLite store and ``experiment_name``
    are created once, under a lock. Other stores (a folder, Databricks) are left to MLflow."""
    from mlflow.tracking import MlflowClient

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        started = time.monotonic()
        try:
            with _environment(_CHECK_LIMITS):
                MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - any failure means the same to the user
            raise TrackingStoreUnreachable(
                f"the MLflow tracking server {uri} did not answer ({time.monotonic() - started:.0f} s, no retries): "
                f"{type(error).__name__}: {str(error)[:300]}. Start it, point MLFLOW_TRACKING_URI (or "
                "server.mlflow_tracking_uri in conf/<env>/mlflow.yml) at one that runs, or unset MLFLOW_TRACKING_URI "
                "to track into the project's SQLite store (docs/tracking.md)"
            ) from error
        return
    database = sqlite_path(uri)
    if database is None:
        return
    with file_lock(database.with_name(database.name + ".lock")):
        client = MlflowClient(tracking_uri=uri)  # creates MLflow's tables when the file is new
        if experiment_name and client.get_experiment_by_name(experiment_name) is None:
            client.create_experiment(experiment_name)


def _is_bad_request(error: Exception) -> bool:
    """A request MLflow refuses for its content (a metric name it does not accept): the same
    every time, so an error of the code, not an outage."""
    return getattr(error, "error_code", None) == "INVALID_PARAMETER_VALUE"


class TrackingLink:
    """One tracking store as this run sees it: up until a call fails, then down for the rest of
    the run (no call waits on it again). Remembers, per run name, the first thing that was not
    sent, so the end of the run can say which runs lack their tracking. ``on_down`` callbacks
    run once, when it goes down (the hooks silence kedro-mlflow's own calls there)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.failure: str | None = None
        self.untracked: dict[str, str] = {}
        self.on_down: list[Callable[[TrackingLink], None]] = []
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.failure is not None

    def send(self, run_name: str, what: str, call: Callable[[], object]) -> bool:
        """``call()`` unless the store is down; whether it was sent. A refused request (bad
        content) is raised: it is a deterministic error, not an outage."""
        if self.down:
            self._missed(run_name, what)
            return False
        try:
            call()
            return True
        except Exception as error:  # noqa: BLE001 - tracking must not stop hours of training
            if _is_bad_request(error):
                raise
            self._trip(run_name, what, error)
            return False

    def _trip(self, run_name: str, what: str, error: Exception) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = f"{type(error).__name__}: {str(error)[:300]}"
        self._missed(run_name, what)
        if not first:
            return
        logger.warning(
            "MLflow tracking store %s failed while %s for run %s (%s). No further tracking calls go "
            "to it in this kedro run; training goes on and its histories, checkpoints and results are "
            "kept on disk. The runs that lack tracking are listed at the end",
            self.uri, what, run_name, self.failure,
        )
        for callback in list(self.on_down):
            try:
                callback(self)
            except Exception as failure:  # noqa: BLE001 - going down must not raise
                logger.warning("after the tracking store went down: %s", failure)

    def _missed(self, run_name: str, what: str) -> None:
        with self._lock:
            self.untracked.setdefault(run_name, what)

    def probe(self, run_name: str, what: str = "checking the server before a node") -> bool:
        """For a server (``http(s)://``): one request, one short try; whether it is up. Other
        stores are local files: taken as up. A failure takes the link down."""
        if self.down:
            return False
        if urlparse(self.uri).scheme not in ("http", "https"):
            return True
        from mlflow.tracking import MlflowClient

        def ask() -> None:
            with _environment(PROMPT_LIMITS):
                MlflowClient(tracking_uri=self.uri).search_experiments(max_results=1)

        return self.send(run_name, what, ask)


_links: dict[str, TrackingLink] = {}
_links_lock = threading.Lock()


def link_for(uri: str) -> TrackingLink:
    """The process's link to the store at ``uri`` (one per URI, shared by all its runs)."""
    with _links_lock:
        return _links.setdefault(str(uri), TrackingLink(str(uri)))


def reset_links() -> None:
    """Forget earlier failures: a new ``kedro run`` in this process tries every store again."""
    with _links_lock:
        _links.clear()


def untracked_runs() -> dict[str, dict[str, str]]:
    """Per tracking URI that failed: {run name: the first thing not sent}."""
    with _links_lock:
        return {uri: dict(link.untracked) for uri, link in _links.items() if link.untracked}


def report_untracked() -> str | None:
    """A warning listing the runs that lack some or all of their tracking (None when none do)."""
    lines = []
    for uri, runs in untracked_runs().items():
        failure = link_for(uri).failure
        named = "; ".join(f"{name} (from {what})" for name, what in sorted(runs.items()))
        lines.append(f"MLflow store {uri} went away ({failure}): {len(runs)} run(s) lack tracking: {named}")
    if not lines:
        return None
    text = "\n".join(lines) + (
        "\nTheir histories and results are on disk (data/07_model_output/<arm>/, checkpoints in "
        "data/06_models/checkpoints); "
        "the runs that were open stay RUNNING in MLflow."
    )
    logger.warning(text)
    return text
