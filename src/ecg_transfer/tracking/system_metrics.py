"""MLflow's system metrics (GPU utilisation and memory, CPU, RAM) on the parent run, an
optional extra: on when asked for (or when CUDA is there, ``auto``) and ``psutil`` is installed."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

logger = logging.getLogger(__name__)

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


