"""Data-parallel training (DDP) with ``torch.distributed``, for CAE pretraining.

Three pieces, one per place the code runs:

- :class:`DistributedContext`, one rank's view of the job. ``engine.fit(...,
  distributed=context)`` asks it to shard each global batch over the ranks (the data order
  still comes from ``(seed, epoch)``, so the global batch is the configured one), to wrap
  the model in ``DistributedDataParallel``, to combine the batch losses and the eval loss
  sums of all ranks, and to average the BatchNorm running statistics after each epoch.
  Every rank thus scores the same numbers and agrees on the best epoch and on early
  stopping. Checkpoint reads are rank 0's, broadcast to the others (:class:`RankZeroStore`),
  so all ranks resume from the same checkpoint; only rank 0 writes checkpoints and the
  result. With ``distributed=None`` the loop is the single-process one, untouched.
- :func:`main`, the worker that ``torchrun`` starts, once per rank, on one machine or many:
  ``torchrun ... -m ecg_transfer.training.distributed JOB.json``. The job file names
  everything a worker needs (model class and config, initial weights, window store and
  splits, ``TrainConfig``, checkpoint folder and run key), so no Python object crosses
  process boundaries and a memmapped corpus is opened, never pickled.
- :func:`fit_distributed`, the launcher a caller (the Kedro node) uses instead of ``fit``:
  it writes the job, runs ``python -m torch.distributed.run`` on this machine with
  ``nproc`` workers (or, with ``launch="external"``, waits for a ``torchrun`` started by
  the user on several machines), and then reads the finished run back through ``fit``,
  which returns its stored :class:`FitResult` and loads the trained weights.

Only tasks whose epoch rows come from loss sums are supported (``ReconstructionTask``);
a task that keeps every output for its metrics (classification) is refused.
See docs/models_and_training.md ("Distributed pretraining").
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ecg_transfer.atomic_files import atomic_write
from ecg_transfer.signals.window_store import WindowStore
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import FitResult, TrainConfig, fit, resolve_device
from ecg_transfer.training.tasks import ReconstructionTask, Task

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "gloo", "nccl")
LAUNCHES = ("local", "external")
JOB_FORMAT = "ecg_transfer.distributed_job/1"
JOB_FOLDER = "distributed"  # inside the run's checkpoint folder
RANKS_FILE = "ranks.json"
WORKER_MODULE = "ecg_transfer.training.distributed"


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
        known = {f.name for f in dataclasses.fields(cls)} - {"nproc"}  # nproc sits in training
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"LaunchConfig: unknown distributed parameters {unknown}; known are {sorted(known)}")
        return cls(nproc=int(nproc), **params)

    @property
    def distributed(self) -> bool:
        """Whether the run goes through torchrun at all (else plain ``fit``)."""
        return self.nproc > 1 or self.launch == "external"


@dataclass(frozen=True)
class StoreSplit:
    """One split of a window store, named by path: each worker opens its own memmap."""

    store: str
    split: str

    def open(self):
        return WindowStore(self.store).split_view(self.split)

    def spec(self) -> dict[str, str]:
        return {"store": str(Path(self.store).resolve()), "split": self.split}


# ---------------------------------------------------------------- one rank


@dataclass
class DistributedContext:
    """One rank of an initialised process group; what ``engine.fit`` asks in distributed mode."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    sync_batchnorm: bool = False
    owns_group: bool = False

    @classmethod
    def from_env(
        cls, device: str = "auto", backend: str = "auto", sync_batchnorm: bool = False, timeout_s: float = 1800.0
    ) -> DistributedContext:
        """Join the group that torchrun describes in RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
        and MASTER_PORT: gloo on CPU, nccl on CUDA with one GPU per rank (``cuda:LOCAL_RANK``)."""
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing and not dist.is_initialized():
            raise RuntimeError(
                f"DistributedContext: environment variables {missing} are not set; start the workers "
                "with torchrun (python -m torch.distributed.run), see docs/models_and_training.md"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
            # cuBLAS is only deterministic with a fixed workspace (as in engine._prepare_device).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if sync_batchnorm and resolved.type != "cuda":
            raise ValueError(
                "DistributedContext: sync_batchnorm needs CUDA (torch's SyncBatchNorm refuses CPU "
                "input); on CPU every rank normalises with its own shard's statistics"
            )
        if backend == "auto":
            backend = "nccl" if resolved.type == "cuda" else "gloo"
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, resolved, sync_batchnorm, owns)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes checkpoints, results and job files."""
        return self.rank == 0

    def wrap(self, model: nn.Module, task: Task, where: str) -> nn.Module:
        """The module the training steps call: ``model`` in DDP (buffers synced by :meth:`end_epoch`)."""
        if task.keeps_outputs:
            raise ValueError(
                f"{where}: distributed training supports tasks scored from loss sums "
                f"(ReconstructionTask), not {task!r}, whose metrics need every output"
            )
        if self.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are averaged by end_epoch, not broadcast from rank 0 before every forward.
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)

    def checkpoints(self, store: CheckpointStore) -> RankZeroStore:
        """``store`` as this rank sees it: rank 0 reads and writes, the others get rank 0's reads."""
        return RankZeroStore(store, self)

    def shard(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """This rank's contiguous part of one (sorted) global batch, and how many rows count.

        A rank left without rows (a last batch smaller than the world) runs one row with
        weight 0, so that every rank takes part in the gradient all-reduce.
        """
        begin, end = (len(rows) * self.rank) // self.world_size, (len(rows) * (self.rank + 1)) // self.world_size
        return (rows[begin:end], end - begin) if end > begin else (rows[:1], 0)

    def global_loss(self, loss: torch.Tensor, share: int, total: int) -> tuple[torch.Tensor, float]:
        """The loss to back-propagate and the global batch's mean loss (the same on every rank).

        DDP averages gradients over ranks; scaling the local mean by ``share * world / total``
        makes that average the gradient of the global batch mean, also for unequal shards.
        """
        summed = (loss.detach().double() * share).reshape(1)
        dist.all_reduce(summed)
        return loss * (share * self.world_size / total), summed.item() / total

    def eval_range(self, n: int) -> tuple[int, int]:
        """The contiguous rows ``[begin, end)`` of an ``n``-row eval split this rank scores."""
        return (n * self.rank) // self.world_size, (n * (self.rank + 1)) // self.world_size

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks (float64), identical on every rank."""
        total = torch.tensor([value], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(total)
        return total.item()

    @torch.no_grad()
    def end_epoch(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running mean and variance) over ranks,
        so every rank evaluates and checkpoints the same model. Running means are linear in
        the batch means, so the average equals the running mean of the global batch means."""
        module = model.module if isinstance(model, DistributedDataParallel) else model
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.world_size)

    def state_digests(self, model: nn.Module) -> list[str]:
        """The SHA-1 of every rank's state dict, in rank order (a collective)."""
        digest = hashlib.sha1()
        for key, value in model.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        gathered: list[str | None] = [None] * self.world_size
        dist.all_gather_object(gathered, digest.hexdigest())
        return [str(value) for value in gathered]

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


class RankZeroStore:
    """A :class:`CheckpointStore` shared by the ranks of a job: every read is rank 0's,
    broadcast to the others (so all ranks resume from the same checkpoint even when the
    others would see another file, or none), and only rank 0 writes. Each read is also a
    synchronisation point: no rank reads before rank 0 has finished its last write."""

    def __init__(self, store: CheckpointStore, context: DistributedContext):
        self.store, self.context = store, context

    @property
    def root(self) -> Path:
        return self.store.root

    def run_dir(self, run_key: str) -> Path:
        return self.store.run_dir(run_key)

    def _read(self, read: Callable[[], Any]) -> Any:
        message: list[Any] = [None]
        if self.context.is_writer:
            try:
                message = [("ok", read())]
            except Exception as error:  # every rank must leave the broadcast, then all raise
                message = [("error", f"{type(error).__name__}: {error}")]
        dist.broadcast_object_list(message, src=0)
        status, value = message[0]
        if status == "error":
            raise RuntimeError(f"{self.store}: rank 0 could not read the checkpoint store: {value}")
        return value

    def is_done(self, run_key: str) -> bool:
        return self._read(lambda: self.store.is_done(run_key))

    def load(self, run_key: str) -> dict[str, Any] | None:
        return self._read(lambda: self.store.load(run_key))

    def load_result(self, run_key: str) -> Any:
        return self._read(lambda: self.store.load_result(run_key))

    def save(self, run_key: str, payload: dict[str, Any]) -> None:
        if self.context.is_writer:
            self.store.save(run_key, payload)

    def mark_done(self, run_key: str, result: Any) -> None:
        if self.context.is_writer:
            self.store.mark_done(run_key, result)


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
) -> Path:
    """Write the job file (and the model's initial weights beside the run's checkpoints)."""
    if not isinstance(task, ReconstructionTask):
        raise ValueError(f"write_job: distributed training supports ReconstructionTask only, got {task!r}")
    spec = _model_spec(model)
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
    cfg = TrainConfig(**job["train_config"])
    launch = LaunchConfig(**job["launch"])
    context = DistributedContext.from_env(cfg.device, launch.backend, launch.sync_batchnorm, launch.timeout_s)
    try:
        model = _build_model(job["model"])
        task = _task(job["task"])
        train = StoreSplit(**job["train"]).open()
        evals = {name: (StoreSplit(**spec).open(), None) for name, spec in job["evals"].items()}
        store = CheckpointStore(job["checkpoints"])
        fit(
            model, task, train, None, evals, cfg, checkpoints=store, run_key=job["run_key"],
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
    """``torchrun [torchrun options] -m ecg_transfer.training.distributed JOB.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m ecg_transfer.training.distributed",
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
) -> FitResult:
    """Train like :func:`~ecg_transfer.training.engine.fit`, on ``launch.nproc`` processes.

    ``model`` is rebuilt in every worker from its class and its ``cfg`` dataclass and
    starts from the weights it has now; it ends holding the trained weights, as with
    ``fit``. ``train``/``evals``: window-store splits. The returned result's ``extra`` has
    ``world_size``. A run found done in ``checkpoints`` is returned without launching; an
    interrupted one resumes from its last checkpoint, with any number of processes.
    """
    if not isinstance(task, ReconstructionTask):
        raise ValueError(f"fit_distributed: only ReconstructionTask runs distributed, got {task!r}")
    with tempfile.TemporaryDirectory(prefix="ecg-ddp-") as scratch:
        store = checkpoints if checkpoints is not None else CheckpointStore(scratch)
        key = run_key or "distributed"
        if not store.is_done(key):
            job_path = Path(launch.job_file) if launch.job_file else store.run_dir(key) / JOB_FOLDER / "job.json"
            write_job(job_path, model, task, train, evals, cfg, launch, store, key, progress)
            if launch.launch == "local":
                _run_local(job_path, launch, key)
            else:
                _wait_external(job_path, store, key, launch)
        result = fit(
            model, task, train.open(), None, {name: (split.open(), None) for name, split in evals.items()}, cfg,
            checkpoints=store, run_key=key, progress=False,
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
    model = _resolve(spec["class"])(_resolve(spec["config_class"])(**spec["config"]))
    model.load_state_dict(torch.load(spec["initial_state"], map_location="cpu", weights_only=True))
    return model


def _task(description: Mapping[str, Any]) -> Task:
    if description.get("name") != ReconstructionTask.name:
        raise ValueError(f"run_job: only the reconstruction task runs distributed, got {dict(description)}")
    return ReconstructionTask()


if __name__ == "__main__":
    sys.exit(main())
