"""CAE pretraining throughput (windows/s) on one process and on several DDP processes.

Writes a synthetic window store (default CAE, 2,048-sample windows) to a temporary folder
and trains on it with the project's own loop: ``fit`` for one process and
``fit_distributed`` (torchrun, gloo on CPU, nccl on CUDA) for several, with the same global
batch. "train windows/s" is the median over the epochs after the first of the global
training rate (rank 0's clock); "wall s" is the whole call, process start-up included.
Prints a Markdown table; docs/models_and_training.md records its output.

    python benchmarks/pretraining_throughput.py                   # CPU: 1 process (1 and 2 threads), 2 processes
    python benchmarks/pretraining_throughput.py --nproc 1 2 4     # more processes
    python benchmarks/pretraining_throughput.py --device cuda     # one process per GPU (needs as many GPUs)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder
from ecg_transfer.signals.window_store import WindowStoreWriter
from ecg_transfer.study.tables import to_markdown
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.launcher import LaunchConfig, StoreSplit, fit_distributed
from ecg_transfer.training.tasks import ReconstructionTask


def _store(root: Path, n_train: int, n_test: int, length: int) -> Path:
    rng = np.random.default_rng(0)
    n = n_train + n_test
    index = pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)], "label": [None] * n,
        "split": ["train"] * n_train + ["test"] * n_test, "lead": ["II"] * n,
    })
    with WindowStoreWriter(root / "windows") as writer:
        writer.append(rng.standard_normal((n, length)).astype(np.float32), index)
    return root / "windows"


def _model(seed: int) -> ConvAutoencoder:
    torch.manual_seed(seed)
    return ConvAutoencoder(CaeConfig())


def _measure(store: Path, nproc: int, threads: int | None, cfg: TrainConfig) -> tuple[float, float]:
    splits = {name: StoreSplit(str(store), name) for name in ("train", "test")}
    start = time.perf_counter()
    if nproc == 1:
        result = fit(_model(cfg.seed), ReconstructionTask(), splits["train"].open(), None,
                     {"test": (splits["test"].open(), None)}, replace(cfg, num_threads=threads),
                     progress=False)
    else:
        result = fit_distributed(_model(cfg.seed), ReconstructionTask(), splits["train"], {"test": splits["test"]},
                                 cfg, LaunchConfig(nproc=nproc), progress=False)
    wall = time.perf_counter() - start
    train = result.history[(result.history.split == "train") & (result.history.epoch > 1)]
    return float(train.samples_per_s.median()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=768, help="training windows per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, seed=0,
                      eval_batch_size=256)
    if args.device == "cuda":
        where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    runs = [(n, None) for n in args.nproc]
    if args.device == "cpu" and 1 in args.nproc:  # one process on 1 thread and on 2 threads
        runs = [(1, 1), (1, 2)] + [(n, None) for n in args.nproc if n != 1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ecg-pretrain-bench-") as root:
        store = _store(Path(root), args.windows, max(64, args.windows // 8), CaeConfig().window_length)
        for nproc, threads in runs:
            per_s, wall = _measure(store, nproc, threads, cfg)
            rows.append({
                "device": where, "processes": nproc,
                "threads/process": threads or os.environ.get("OMP_NUM_THREADS", "1 (torchrun default)"),
                "global batch": args.batch_size, "train windows/s": round(per_s), "wall s": round(wall, 1),
            })
            print(rows[-1], flush=True)
    print(f"\ntorch {torch.__version__}, {args.windows} training windows x {args.epochs} epochs, default CAE\n")
    print(to_markdown(pd.DataFrame(rows), index=False))


if __name__ == "__main__":
    main()
