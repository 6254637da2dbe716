"""Kedro datasets between the nodes and MLflow, so that nodes never touch MLflow themselves:

- ``MlflowRunTrackerDataset`` (read-only): loads a :class:`~ecg_transfer.tracking.RunTracker`
  bound to the run kedro-mlflow opened for this ``kedro run`` (a no-op tracker when tracking
  is off); training nodes open one child run per training run with it and log every epoch live
  (typed as :class:`ecg_transfer.tracking.Tracker`).
- ``MlflowEncoderModelDataset`` (write-only): the pretrained encoder as an MLflow PyTorch model
  (listed in the experiment's Models tab) with its model card.

The parent run is the one the project's hooks published (:func:`ecg_transfer.tracking.parent_run`,
found from any thread), else MLflow's active run in this thread.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from kedro.io import AbstractDataset, DatasetError
from mlflow.tracking import MlflowClient

from ecg_transfer.tracking import (
    NullTracker,
    ParentRun,
    RunTracker,
    link_for,
    parent_run,
    start_system_metrics,
)

logger = logging.getLogger(__name__)


def _parent() -> ParentRun | None:
    published = parent_run()
    if published is not None:
        return published
    active = mlflow.active_run()
    if active is None:
        return None
    return ParentRun(active.info.run_id, active.info.experiment_id, mlflow.get_tracking_uri())


def _tracker() -> RunTracker | NullTracker:
    parent = _parent()
    if parent is None:
        return NullTracker()
    return RunTracker(MlflowClient(tracking_uri=parent.tracking_uri), parent.experiment_id, parent.run_id)


class MlflowRunTrackerDataset(AbstractDataset[None, Any]):
    """Read-only: ``load()`` returns a ``RunTracker`` for child runs of the active parent run,
    or a ``NullTracker`` when tracking is off.

    ``system_metrics``: ``auto`` (default: on when CUDA is available and ``psutil`` is installed),
    ``true`` or ``false``: MLflow's system metrics (GPU utilisation and memory, CPU, RAM) logged to
    the parent run every ``system_metrics_interval_s`` seconds while it runs.
    """

    def __init__(self, system_metrics: bool | str = "auto", system_metrics_interval_s: float = 10.0,
                 metadata: dict[str, Any] | None = None):
        self.system_metrics = system_metrics
        self.system_metrics_interval_s = float(system_metrics_interval_s)
        self.metadata = metadata

    def _load(self) -> RunTracker | NullTracker:
        tracker = _tracker()
        if tracker.enabled:
            start_system_metrics(tracker.parent_run_id, self.system_metrics,
                                 tracker.client.tracking_uri, self.system_metrics_interval_s)
        else:
            logger.info("no MLflow parent run (tracking disabled?): training runs are not tracked")
        return tracker

    def _save(self, data: Any) -> None:
        raise DatasetError("MlflowRunTrackerDataset is read-only: nodes load a tracker and log through it")

    def _describe(self) -> dict[str, Any]:
        return {"target": "live MLflow child runs of the active run", "system_metrics": self.system_metrics}


@contextmanager
def _tracking_uri(uri: str):
    """MLflow's model logging reads the process's tracking URI: point it at the parent's."""
    before = mlflow.get_tracking_uri()
    if before == uri:
        yield
        return
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


class MlflowEncoderModelDataset(AbstractDataset[dict, None]):
    """Write-only: saves ``{"weights": encoder state_dict, "card": model card}`` (what
    ``PretrainedEncoderDataset`` saves) to the parent run as an MLflow PyTorch model named
    ``name``, in MLflow's safe ``pt2`` format (``torch.export``: loads with
    ``mlflow.pytorch.load_model`` without this project's code), with the card inside the
    model (``model_card.json``) and as the run artifact ``<name>/model_card.json``.
    ``registered_model_name`` also registers it in the model registry.
    """

    def __init__(self, name: str = "pretrained_encoder", registered_model_name: str | None = None,
                 metadata: dict[str, Any] | None = None):
        self.name = name
        self.registered_model_name = registered_model_name
        self.metadata = metadata

    def _load(self) -> None:
        raise DatasetError(
            "MlflowEncoderModelDataset is write-only: load the model with mlflow.pytorch.load_model('models:/<id>')"
        )

    def _save(self, data: dict[str, Any]) -> None:
        """Through the store's link: with the store away the encoder stays on disk only (its
        weights and card are saved by ``pretrained_encoder``) and the run says so at its end."""
        parent = _parent()
        if parent is None:
            logger.info("no active MLflow run (tracking disabled?): the encoder is not logged as a model")
            return
        link_for(parent.tracking_uri).send(f"model {self.name}", "logging the encoder model",
                                           lambda: self._log_model(parent, data))

    def _log_model(self, parent: ParentRun, data: dict[str, Any]) -> None:
        import mlflow.pytorch
        import numpy as np
        import torch

        from ecg_transfer.models.cae import CaeConfig, Encoder

        card = dict(data["card"])
        encoder = Encoder(CaeConfig.from_dict(card["architecture"], f"the card of the MLflow model {self.name!r}: architecture"))
        encoder.load_state_dict(data["weights"])
        encoder.eval()
        example = np.zeros((2, encoder.cfg.in_channels, encoder.input_length), dtype=np.float32)
        client = MlflowClient(tracking_uri=parent.tracking_uri)
        # Created here so that the model lands in the parent run's experiment (MLflow would
        # otherwise pick the process's current experiment).
        model = client.create_logged_model(
            parent.experiment_id, name=self.name, source_run_id=parent.run_id,
            tags={"stage": "pretraining"}, model_type="encoder",
        )
        text = json.dumps(card, indent=2, sort_keys=True, default=float)
        with tempfile.TemporaryDirectory() as folder:
            card_path = Path(folder) / "model_card.json"
            card_path.write_text(text, encoding="utf-8")
            with _tracking_uri(parent.tracking_uri):
                info = mlflow.pytorch.log_model(
                    encoder, name=self.name, model_id=model.model_id, run_id=parent.run_id,
                    serialization_format="pt2", input_example=example, extra_files=[str(card_path)],
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                    registered_model_name=self.registered_model_name,
                )
            client.log_text(parent.run_id, text, f"{self.name}/model_card.json")
        logger.info("encoder logged as MLflow model %s", info.model_uri)

    def _describe(self) -> dict[str, Any]:
        return {"name": self.name, "registered_model_name": self.registered_model_name}
