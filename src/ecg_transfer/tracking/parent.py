"""The parent run of this process: the run a ``kedro run`` logs into (opened by kedro-mlflow),
published by the project's hooks so that datasets loaded in any thread find it (MLflow's
active run is per thread). One value per process, set and cleared by the hooks only."""

from __future__ import annotations

from dataclasses import dataclass


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


