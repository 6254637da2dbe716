"""Running a distributed (DDP) training job with torchrun: the job file, the worker and the launcher.

- :func:`main`, the worker that ``torchrun`` starts, once per rank, on one machine or many:
  ``torchrun ... -m ecg_transfer.training.launcher JOB.json``. The job file names
  everything a worker needs (model class and config, initial weights, window store and
  splits, ``TrainConfig``, checkpoint folder and run key), so no Python object crosses
  process boundaries and a memmapped corpus is opened, never pickled. Each worker trains
  through ``engine.fit`` with its rank's
  :class:`~ecg_transfer.training.distributed.DistributedContext`.
- :func:`fit_distributed`, the launcher a caller (the Kedro node) uses instead of ``fit``:
  it writes the job, runs ``python -m torch.distributed.run`` on this machine with
  ``nproc`` workers (or, with ``launch="external"``, waits for a ``torchrun`` started by
  the user on several machines), and then reads the finished run back through ``fit``,
  which returns its stored :class:`FitResult` and loads the trained weights.

Only tasks that say they are ``distributable`` (their epoch rows come from loss sums:
``ReconstructionTask`` and the pretext tasks ``ContrastiveTask`` and
``MaskedReconstructionTask``) run distributed; a task that keeps every output for its metrics
(classification) is refused. A model that its class and ``cfg`` do not rebuild (a pretext
model: augmentations, masking) comes with a ``model_spec`` naming a builder function and its
plain arguments; a split of window pairs (``same_record``) is a :class:`StoreSplit` with a
``pair_seed``. See docs/models_and_training.md ("Distributed pretraining") and
docs/pretext_tasks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ecg_transfer.atomic_files import atomic_write
from ecg_transfer.signals.window_store import WindowStore
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.distributed import DistributedContext
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.loop import FitResult
from ecg_transfer.training.pretext_tasks import (
    PairedWindows,
    pair_windows_by_record,
    pretext_task_from_description,
    record_codes,
)
from ecg_transfer.training.tasks import Task, task_from_description
from ecg_transfer.typed_config import config_from_params

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
LAUNCHES = ("local", "external")
JOB_FORMAT = "ecg_transfer.distributed_job/1"
JOB_FOLDER = "distributed"  # inside the run's checkpoint folder
RANKS_FILE = "ranks.json"
WORKER_MODULE = "ecg_transfer.training.launcher"


@dataclass(frozen=True)
class LaunchConfig:
    """How :func:`fit_distributed` runs the workers.

    ``nproc``: worker processes on this machine (one per GPU on CUDA). ``backend``: "auto"
    is nccl on CUDA and gloo on CPU. ``sync_batchnorm`` converts BatchNorm to
    ``nn.SyncBatchNorm`` (statistics over the global batch); CUDA only, since torch refuses
    CPU input there. ``max_restarts``: torchrun restarts the worker group this often after a
    failure; the restarted workers resume from the last checkpoint. ``timeout_s``: how long
    a collective waits for a missing rank. ``launch``: "local" runs torchrun here; "external"
    only writes the job (to ``job_file`` when given) and waits until a torchrun started by
    someone else (several machines, Slurm) has finished the run.
    """

    nproc: int = 1
    backend: str = "auto"
    sync_batchnorm: bool = False
    max_restarts: int = 0
    timeout_s: float = 1800.0
    launch: str = "local"
    job_file: str | None = None
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.nproc, bool) or int(self.nproc) != self.nproc or self.nproc < 1:
            raise ValueError(f"LaunchConfig: nproc must be an integer >= 1, got {self.nproc!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"LaunchConfig: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.launch not in LAUNCHES:
            raise ValueError(f"LaunchConfig: launch must be one of {LAUNCHES}, got {self.launch!r}")
        if self.max_restarts < 0 or not self.timeout_s > 0 or not self.poll_s > 0:
            raise ValueError(
                f"LaunchConfig: max_restarts must be >= 0 and timeout_s, poll_s > 0, got "
                f"{self.max_restarts}, {self.timeout_s}, {self.poll_s}"
            )

    @classmethod
    def from_params(cls, nproc: int = 1, params: Mapping[str, Any] | None = None) -> LaunchConfig:
        """``nproc`` (``training.nproc``) plus an optional ``distributed:`` parameter block."""
        params = dict(params or {})
        if "nproc" in params:  # nproc sits in training
            raise ValueError("pretraining.distributed: unknown parameter(s) ['nproc']; it is pretraining.training.nproc")
        launch = config_from_params(cls, params, "pretraining.distributed")
        return replace(launch, nproc=config_from_params(cls, {"nproc": nproc}, "pretraining.training").nproc)

    @property
    def distributed(self) -> bool:
        """Whether the run goes through torchrun at all (else plain ``fit``)."""
        return self.nproc > 1 or self.launch == "external"


@dataclass(frozen=True)
class StoreSplit:
    """One split of a window store, named by path: each worker opens its own memmap.
    ``pair_seed``: read it as :class:`PairedWindows`, each window beside another window of
    its record drawn from this seed (``same_record`` contrastive pretraining), the pairs the
    one-process run draws with :func:`pair_windows_by_record`, with each row's record code as
    its labels (:meth:`labels`)."""

    store: str
    split: str
    pair_seed: int | None = None

    def open(self):
        store = WindowStore(self.store)
        view = store.split_view(self.split)
        if self.pair_seed is None:
            return view
        return PairedWindows(view, pair_windows_by_record(self._records(store), self.pair_seed))

    def labels(self):
        """What the loop reads as the split's labels: the record codes of a paired split
        (:func:`record_codes`; its records' windows are no negatives of each other), else None."""
        return None if self.pair_seed is None else record_codes(self._records(WindowStore(self.store)))

    def _records(self, store: WindowStore):
        return store.index["record_id"].to_numpy()[store.split_indices(self.split)]

    def spec(self) -> dict[str, Any]:
        return {"store": str(Path(self.store).resolve()), "split": self.split,
                **({} if self.pair_seed is None else {"pair_seed": int(self.pair_seed)})}


# ---------------------------------------------------------------- the job and its worker


def write_job(
    path: str | os.PathLike,
    model: nn.Module,
    task: Task,
    train: StoreSplit,
    evals: Mapping[str, StoreSplit],
    cfg: TrainConfig,
    launch: LaunchConfig,
    checkpoints: CheckpointStore,
    run_key: str,
    progress: bool = True,
    model_spec: Mapping[str, Any] | None = None,
) -> Path:
    """Write the job file (and the model's initial weights beside the run's checkpoints).
    ``model_spec``: how a worker builds the model (see :func:`fit_distributed`)."""
    _check_distributable(task, "write_job")
    spec = dict(model_spec) if model_spec is not None else _model_spec(model)
    folder = checkpoints.run_dir(run_key) / JOB_FOLDER
    initial = folder / "initial_state.pt"
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    atomic_write(initial, lambda tmp: torch.save(state, tmp))
    job = {
        "format": JOB_FORMAT,
        "model": {**spec, "initial_state": str(initial.resolve())},
        "task": task.describe(),
        "train": train.spec(),
        "evals": {name: split.spec() for name, split in evals.items()},
        "train_config": asdict(cfg),
        "launch": asdict(launch),
        "checkpoints": str(checkpoints.root.resolve()),
        "run_key": run_key,
        "progress": bool(progress),
    }
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(job, indent=2)))
    return path


def run_job(job: Mapping[str, Any]) -> list[str]:
    """Train the job's run as one rank (inside torchrun); returns the ranks' state digests."""
    if job.get("format") != JOB_FORMAT:
        raise ValueError(f"run_job: not a distributed job file (format {job.get('format')!r}, expected {JOB_FORMAT!r})")
    cfg = config_from_params(TrainConfig, job["train_config"], "distributed job: train_config")
    launch = config_from_params(LaunchConfig, job["launch"], "distributed job: launch")
    context = DistributedContext.from_env(cfg.device, launch.backend, launch.sync_batchnorm, launch.timeout_s)
    try:
        model = _build_model(job["model"])
        task = pretext_task_from_description(job["task"]) or task_from_description(job["task"])
        _check_distributable(task, "run_job")
        train = StoreSplit(**job["train"])
        evals = {name: (split.open(), split.labels()) for name, split in
                 ((name, StoreSplit(**spec)) for name, spec in job["evals"].items())}
        store = CheckpointStore(job["checkpoints"])
        fit(
            model, task, train.open(), train.labels(), evals, cfg, checkpoints=store, run_key=job["run_key"],
            progress=bool(job["progress"]) and context.is_writer, distributed=context,
        )
        digests = context.state_digests(model)
        if context.is_writer:
            ranks = {"world_size": context.world_size, "backend": dist.get_backend(),
                     "device": str(context.device), "state_sha1": digests}
            path = store.run_dir(job["run_key"]) / JOB_FOLDER / RANKS_FILE
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(ranks, indent=2)))
        if len(set(digests)) != 1:
            raise RuntimeError(f"run_job[{job['run_key']}]: the ranks ended with different weights: {digests}")
        return digests
    finally:
        context.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``torchrun [torchrun options] -m ecg_transfer.training.launcher JOB.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m ecg_transfer.training.launcher",
        description="One rank of a distributed (DDP) training job; start it with torchrun.",
    )
    parser.add_argument("job", help="the job file written by fit_distributed / write_job")
    args = parser.parse_args(argv)
    run_job(json.loads(Path(args.job).read_text()))
    return 0


# ---------------------------------------------------------------- the launcher


def torchrun_command(job: str | os.PathLike, launch: LaunchConfig) -> list[str]:
    """The single-machine torchrun command the launcher runs (rendezvous on 127.0.0.1, free port)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={launch.nproc}",
        "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "--local-addr=127.0.0.1",
        f"--max-restarts={launch.max_restarts}", "-m", WORKER_MODULE, str(job),
    ]


def fit_distributed(
    model: nn.Module,
    task: Task,
    train: StoreSplit,
    evals: Mapping[str, StoreSplit],
    cfg: TrainConfig,
    launch: LaunchConfig,
    checkpoints: CheckpointStore | None = None,
    run_key: str | None = None,
    progress: bool = True,
    model_spec: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train like :func:`~ecg_transfer.training.engine.fit`, on ``launch.nproc`` processes.

    ``model`` is rebuilt in every worker from its class and its ``cfg`` dataclass, or, with
    ``model_spec`` ``{"builder": "module:function", "arguments": {...}}``, by that function
    called with those JSON-able arguments (a pretext model:
    :meth:`~ecg_transfer.training.pretext_methods.PretextMethod.model_spec`), and starts from
    the weights ``model`` has now; it ends holding the trained weights, as with
    ``fit``. ``train``/``evals``: window-store splits. The returned result's ``extra`` has
    ``world_size``. A run found done in ``checkpoints`` is returned without launching; an
    interrupted one resumes from its last checkpoint, with any number of processes.
    """
    _check_distributable(task, "fit_distributed")
    with tempfile.TemporaryDirectory(prefix="ecg-ddp-") as scratch:
        store = checkpoints if checkpoints is not None else CheckpointStore(scratch)
        key = run_key or "distributed"
        if not store.is_done(key):
            job_path = Path(launch.job_file) if launch.job_file else store.run_dir(key) / JOB_FOLDER / "job.json"
            write_job(job_path, model, task, train, evals, cfg, launch, store, key, progress, model_spec)
            if launch.launch == "local":
                _run_local(job_path, launch, key)
            else:
                _wait_external(job_path, store, key, launch)
        result = fit(
            model, task, train.open(), train.labels(), {name: (split.open(), split.labels()) for name, split in evals.items()},
            cfg, checkpoints=store, run_key=key, progress=False,
        )
        ranks_file = store.run_dir(key) / JOB_FOLDER / RANKS_FILE
        if ranks_file.is_file():
            result.extra["world_size"] = json.loads(ranks_file.read_text())["world_size"]
    return result


def _run_local(job_path: Path, launch: LaunchConfig, key: str) -> None:
    command = torchrun_command(job_path, launch)
    logger.info("distributed run %s: %s", key, " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(
            f"fit_distributed[{key}]: the torchrun workers failed (exit {completed.returncode}; their "
            f"logs are above). Running again resumes from the last checkpoint. Command: {' '.join(command)}"
        )


def _wait_external(job_path: Path, store: CheckpointStore, key: str, launch: LaunchConfig) -> None:
    logger.warning(
        "distributed run %s waits for an external launch: on every machine run\n  torchrun --nnodes=N "
        "--nproc-per-node=GPUS --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT --rdzv-id=ID "
        "-m %s %s", key, WORKER_MODULE, job_path.resolve(),
    )
    while not store.is_done(key):
        time.sleep(launch.poll_s)


def _qualified(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(name: str) -> Any:
    module, _, attribute = name.partition(":")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def _model_spec(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        raise TypeError(
            f"fit_distributed: a worker rebuilds the model as type(model)(model.cfg), so the model needs a "
            f"dataclass config in .cfg; {type(model).__name__} has none"
        )
    return {"class": _qualified(type(model)), "config_class": _qualified(type(cfg)),
            "config": json.loads(json.dumps(asdict(cfg)))}


def _build_model(spec: Mapping[str, Any]) -> nn.Module:
    if "builder" in spec:
        model = _resolve(spec["builder"])(**spec["arguments"])
    else:
        model = _resolve(spec["class"])(_resolve(spec["config_class"])(**spec["config"]))
    model.load_state_dict(torch.load(spec["initial_state"], map_location="cpu", weights_only=True))
    return model


def _check_distributable(task: Task, caller: str) -> None:
    if not task.distributable:
        raise ValueError(
            f"{caller}: only tasks scored from loss sums run distributed (task.distributable: "
            f"ReconstructionTask, ContrastiveTask, MaskedReconstructionTask), got {task!r}"
        )


if __name__ == "__main__":
    sys.exit(main())
