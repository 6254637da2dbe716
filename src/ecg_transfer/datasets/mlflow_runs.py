"""A write-only Kedro dataset that records training runs as MLflow child runs of the run
kedro-mlflow opened for this ``kedro run``, so that nodes never touch MLflow themselves and
the MLflow UI can filter the study by arm, fraction and trial."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import mlflow
import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

_BATCH = 900  # MLflow accepts at most 1,000 metrics per log_batch call


def _history_metrics(history: pd.DataFrame, timestamp: int) -> list[Metric]:
    """Per-epoch metrics named ``<split>_<metric>`` with the epoch as the MLflow step."""
    metrics = []
    value_columns = [
        c for c in history.columns
        if c not in {"epoch", "split", "fraction", "arm", "trial"} and pd.api.types.is_numeric_dtype(history[c])
    ]
    for row in history.itertuples(index=False):
        row = row._asdict()
        prefix = f"{row['split']}_" if "split" in row else ""
        for column in value_columns:
            value = float(row[column])
            if math.isfinite(value):
                metrics.append(Metric(f"{prefix}{column}", value, timestamp, int(row["epoch"])))
    return metrics


class MlflowChildRunsDataset(AbstractDataset[list, None]):
    """Each item saved is one run: ``{"run_name", "params", "tags", "history", "metrics"}``,
    where ``history`` has one row per (epoch, split)."""

    def __init__(self, metadata: dict[str, Any] | None = None):
        self.metadata = metadata

    def _load(self) -> None:
        raise DatasetError("MlflowChildRunsDataset is write-only: read the runs with MlflowClient")

    def _save(self, runs: Iterable[dict[str, Any]]) -> None:
        parent = mlflow.active_run()
        if parent is None:
            logger.info("no active MLflow run (tracking disabled?): child runs not logged")
            return
        client = MlflowClient()
        experiment_id = parent.info.experiment_id
        for run in runs:
            tags = {str(k): str(v) for k, v in run.get("tags", {}).items()}
            tags.update({"mlflow.parentRunId": parent.info.run_id, "mlflow.runName": run["run_name"]})
            child = client.create_run(experiment_id, tags=tags, run_name=run["run_name"])
            run_id = child.info.run_id
            timestamp = child.info.start_time
            params = [Param(str(k), str(v)[:6000]) for k, v in run.get("params", {}).items()]
            metrics = [
                Metric(str(k), float(v), timestamp, 0)
                for k, v in run.get("metrics", {}).items()
                if v is not None and math.isfinite(float(v))
            ]
            history = run.get("history")
            if history is not None and len(history):
                metrics += _history_metrics(history, timestamp)
            for start in range(0, len(params), 100):  # MLflow's per-call limit for params
                client.log_batch(run_id, params=params[start : start + 100])
            for start in range(0, len(metrics), _BATCH):
                client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
            client.set_terminated(run_id)

    def _describe(self) -> dict[str, Any]:
        return {"target": "MLflow child runs of the active run"}
