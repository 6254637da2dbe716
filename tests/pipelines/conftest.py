"""Shared pieces of the per-pipeline tests: the project's own parameters (conf/base merged with
conf/test, as ``kedro run --env=test`` merges them), an in-memory catalog built around the
project's real file datasets, and one tiny bundled dataset made once per test session."""

from __future__ import annotations

import copy
import functools
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from ecg_transfer import settings
from ecg_transfer.pipelines.bundled_data.pipeline import create_pipeline as bundled_data
from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline as ingestion
from ecg_transfer.pipelines.preprocessing.pipeline import create_pipeline as preprocessing

CONF = Path(__file__).resolve().parents[2] / "conf"

# The datasets whose real project types the tests use (from conf/base/catalog.yml, re-rooted
# at a temporary folder); every other catalog entry becomes a memory dataset.
FILE_DATASETS = ("labelled_recordings", "unlabelled_recordings", "labelled_windows", "unlabelled_windows", "run_checkpoints")


def load_parameters() -> dict[str, Any]:
    """Every top-level parameter group of conf/base, overridden by the tiny conf/test, loaded
    as ``kedro run --env=test`` loads them (so ``${globals:...}`` are resolved to numbers)."""
    return copy.deepcopy(_test_parameters())


@functools.cache
def _test_parameters() -> dict[str, Any]:
    with warnings.catch_warnings():  # omegaconf's deprecation notice about Kedro's own resolvers
        warnings.simplefilter("ignore", UserWarning)
        # The project's loader settings: a bare loader would unregister the project's resolvers
        # (oc.env) for every later test in the process.
        loader = settings.CONFIG_LOADER_CLASS(str(CONF), env="test", **settings.CONFIG_LOADER_ARGS)
        return dict(loader["parameters"])


def shrunk_parameters() -> dict[str, Any]:
    """The test parameters, shrunk further so one pipeline slice runs in a second or two."""
    params = copy.deepcopy(load_parameters())
    # 11 rhythms x 6 records: the smallest set that keeps every rhythm in train, val and test.
    params["bundled_data"]["labelled"].update(n_records=66, min_per_class=6)
    params["bundled_data"]["unlabelled"].update(n_patients=4, seconds_per_patient=30)
    params["pretraining"]["cae"]["channels"] = [2] * params["pretraining"]["cae"]["n_blocks"]
    params["pretraining"]["training"].update(epochs=2, batch_size=8, device="cpu")
    params["finetuning"]["training"].update(epochs=2, batch_size=16, device="cpu")
    params["finetuning"]["head"]["hidden"] = 8
    params["image_transfer"]["device"] = "cpu"
    params["image_transfer"]["feature_batch_size"] = 8
    params["statistics"]["record_n_boot"] = 200
    return params


def catalog_config(name: str) -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((CONF / "base" / "catalog.yml").read_text())[name])


class KeptMemoryDataset(MemoryDataset):
    """A memory dataset the runner does not empty after its last use, so a test can read
    intermediate outputs (manifests, splits) after the run."""

    def __init__(self, *data: Any):
        super().__init__(*data, copy_mode="assign")

    def _release(self) -> None:
        pass


def file_dataset(name: str, root: Path, **overrides: Any) -> AbstractDataset:
    """The catalog.yml entry ``name``, with its path moved under ``root``."""
    config = catalog_config(name)
    config["path"] = str(root / config["path"])
    if name in ("labelled_recordings", "unlabelled_recordings"):
        config["progress"] = False
    config.update(overrides)
    return AbstractDataset.from_config(name, config)


def make_catalog(
    root: Path,
    params: dict[str, Any],
    files: tuple[str, ...] = FILE_DATASETS,
    **data: Any,
) -> DataCatalog:
    """Real file datasets under ``root`` for ``files``, ``params:<group>`` entries, and memory
    datasets holding ``data``; a run adds kept memory datasets for everything else."""
    datasets: dict[str, AbstractDataset] = {name: file_dataset(name, root) for name in files}
    for group, value in params.items():
        datasets[f"params:{group}"] = MemoryDataset(value, copy_mode="deepcopy")
    for name, value in data.items():
        datasets[name] = value if isinstance(value, AbstractDataset) else KeptMemoryDataset(value)
    datasets.setdefault("run_tracker", KeptMemoryDataset(RecordingTracker()))
    return DataCatalog(datasets)


class RecordingTracker:
    """A stand-in for the MLflow run tracker (ecg_transfer.tracking) that remembers what a node
    tracked: ``live`` runs with the epochs they logged as training went, and ``whole`` records of
    reused runs."""

    def __init__(self) -> None:
        self.live: list[dict[str, Any]] = []
        self.whole: list[dict[str, Any]] = []

    def start(self, run_name, params=None, tags=None):
        run = _RecordedRun(run_name, dict(params or {}), dict(tags or {}))
        self.live.append(run.__dict__)
        return run

    def log_record(self, record):
        self.whole.append(dict(record))

    def log_finished(self, run_name, params=None, tags=None, history=None, metrics=None, **kwargs):
        self.whole.append({"run_name": run_name, "params": params, "tags": tags, "history": history,
                           "metrics": metrics})


class _RecordedRun:
    def __init__(self, run_name, params, tags):
        self.run_name, self.params, self.tags = run_name, params, tags
        self.epochs: list[int] = []
        self.metrics: dict[str, Any] = {}
        self.status: str | None = None

    def on_epoch_end(self, epoch, history_so_far):
        self.epochs.append(int(epoch))

    def finish(self, metrics=None, params=None, tags=None, status="FINISHED"):
        self.metrics.update(metrics or {})
        self.params.update(params or {})
        self.tags.update(tags or {})
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.status is None:
            self.status = "FINISHED" if exc_type is None else "FAILED"


def run(pipeline: Pipeline, catalog: DataCatalog) -> DataCatalog:
    """Run ``pipeline`` with the SequentialRunner; every dataset the catalog lacks is kept in memory."""
    for name in pipeline.datasets():
        if name not in catalog:
            catalog[name] = KeptMemoryDataset()
    SequentialRunner().run(pipeline, catalog)
    return catalog


@pytest.fixture(scope="session")
def tiny_raw_data(tmp_path_factory) -> Path:
    """The bundled data pipeline's output (shrunk): a Chapman release and a WFDB corpus."""
    root = tmp_path_factory.mktemp("tiny_raw")
    params = shrunk_parameters()
    catalog = make_catalog(root, {"bundled_data": params["bundled_data"]}, files=("labelled_recordings", "unlabelled_recordings"))
    run(bundled_data(), catalog)
    return root


def copy_raw_data(tiny_raw_data: Path, root: Path) -> Path:
    """A private copy of the raw folders that a test may damage."""
    shutil.copytree(tiny_raw_data / "data", root / "data")
    return root


@pytest.fixture(scope="session")
def tiny_windows(tiny_raw_data, tmp_path_factory) -> Path:
    """Ingestion and preprocessing run on the tiny raw data: the window stores the training
    pipelines read (treat them as read-only)."""
    root = copy_raw_data(tiny_raw_data, tmp_path_factory.mktemp("tiny_windows"))
    params = shrunk_parameters()
    catalog = make_catalog(root, params, files=FILE_DATASETS)
    run(ingestion() + preprocessing(), catalog)
    return root


def window_store(root: Path, name: str):
    return file_dataset(name, root).load()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from 2 threads, and OpenMP spinning under a loaded CPU made them
    about ten times slower (module-scoped so that module fixtures that train get it too)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
