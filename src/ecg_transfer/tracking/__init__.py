"""Tracking of training runs in MLflow, without Kedro, in rooms:

- :mod:`.runs`: child runs logged live (:class:`RunTracker`, :class:`TrackedRun`), their no-op
  twins (:class:`NullTracker`, :class:`NullRun`) and the protocols both meet (:class:`Tracker`,
  :class:`Run`: type a tracker argument with these);
- :mod:`.keys`: MLflow-safe metric names for any class label;
- :mod:`.connection`: the store checked once before training, every call bounded, and a
  circuit breaker after the first failure (a server that goes away costs seconds);
- :mod:`.parent`: the parent run of this process, published by the hooks;
- :mod:`.termination`: SIGTERM as an exception, so runs end ``KILLED``;
- :mod:`.system_metrics`: MLflow's optional GPU/CPU metrics on the parent run.

Everything is importable from here, as before the split.
"""

from ecg_transfer.tracking.connection import (
    TrackingLink,
    TrackingStoreUnreachable,
    bound_http_requests,
    check_tracking_store,
    link_for,
    prompt_http_requests,
    report_untracked,
    reset_links,
    untracked_runs,
)
from ecg_transfer.tracking.keys import check_key, metric_key
from ecg_transfer.tracking.parent import ParentRun, parent_run, set_parent_run
from ecg_transfer.tracking.runs import (
    FAILED,
    FINISHED,
    KILLED,
    NullRun,
    NullTracker,
    Run,
    RunTracker,
    TrackedRun,
    Tracker,
    end_open_runs,
    epoch_logger,
    epoch_metrics,
    open_runs,
    value_text,
)
from ecg_transfer.tracking.system_metrics import (
    start_system_metrics,
    stop_system_metrics,
    system_metrics_wanted,
)
from ecg_transfer.tracking.termination import Terminated, raise_on_sigterm

__all__ = [
    "FAILED", "FINISHED", "KILLED", "NullRun", "NullTracker", "ParentRun", "Run", "RunTracker", "Terminated",
    "TrackedRun", "Tracker", "TrackingLink", "TrackingStoreUnreachable", "bound_http_requests", "check_key",
    "check_tracking_store", "end_open_runs", "epoch_logger", "epoch_metrics", "link_for", "metric_key",
    "open_runs", "parent_run", "prompt_http_requests", "raise_on_sigterm", "report_untracked", "reset_links",
    "set_parent_run", "start_system_metrics", "stop_system_metrics", "system_metrics_wanted", "untracked_runs",
    "value_text",
]
