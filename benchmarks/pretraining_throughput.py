"""Pretraining throughput (windows/s) on one process and on several DDP processes.

Writes a synthetic window store (default CAE, 2,048-sample windows, two windows per record)
to a temporary folder and trains on it with the project's own loop: ``fit`` for one process
and ``fit_distributed`` (torchrun, gloo on CPU, nccl on CUDA) for several, with the same
global batch. "train windows/s" is the median over the epochs after the first of the global
training rate (rank 0's clock); "wall s" is the whole call, process start-up included.
Prints a Markdown table; docs/models_and_training.md records its output.

    python benchmarks/pretraining_throughput.py                   # CPU: 1 process (1 and 2 threads), 2 processes
    python benchmarks/pretraining_throughput.py --nproc 1 2 4     # more processes
    python benchmarks/pretraining_throughput.py --device cuda     # one process per GPU (needs as many GPUs)
    python benchmarks/pretraining_throughput.py --leads 12        # windows of 12 leads (in_channels 12)
    python benchmarks/pretraining_throughput.py --method masked   # a pretext method (docs/pretext_tasks.md)

``--leads N``: windows of N channels, (windows, N, 2048), and models built with ``in_channels``
N, as a study of N ``preprocessing.leads`` trains them (4 x N x 2048 bytes per window, float32).
``--method``: the paper's CAE (``cae``) or one of the pretext methods of ``--env=pretext``
(``contrastive``, ``contrastive_record``, ``masked``, with conf/pretext's options); a
contrastive window is encoded twice (two views), so compare its windows/s with that in mind.
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

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.signals.synthetic.morphology import TWELVE_LEADS
from ecg_transfer.signals.window_store import WindowStoreWriter
from ecg_transfer.study.tables import to_markdown
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.launcher import LaunchConfig, StoreSplit, fit_distributed
from ecg_transfer.training.pretext_methods import PretextMethod

#: The methods of conf/pretext/parameters.yml.
METHODS = {
    "cae": {"task": "reconstruct"},
    "contrastive": {"task": "contrastive", "positives": "same_window"},
    "contrastive_record": {"task": "contrastive", "positives": "same_record"},
    "masked": {"task": "masked", "mask_ratio": 0.2, "span_length": 50},
}
FS = 250.0


def _store(root: Path, n_train: int, n_test: int, cae: CaeConfig) -> Path:
    rng = np.random.default_rng(0)
    n = n_train + n_test
    leads = ",".join(TWELVE_LEADS[: cae.in_channels]) if cae.in_channels > 1 else "II"
    index = pd.DataFrame({
        "record_id": [f"r{i // 2}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
        "label": [None] * n, "split": ["train"] * n_train + ["test"] * n_test, "lead": [leads] * n,
    })
    shape = (n, cae.window_length) if cae.in_channels == 1 else (n, cae.in_channels, cae.window_length)
    with WindowStoreWriter(root / "windows") as writer:
        writer.append(rng.standard_normal(shape).astype(np.float32), index)
    return root / "windows"


def _measure(store: Path, method: PretextMethod, cae: CaeConfig, nproc: int, threads: int | None,
             cfg: TrainConfig) -> tuple[float, float]:
    # Paired splits (same_record) as the pretraining node reads them: pairs from seed, seed + 1.
    splits = {name: StoreSplit(str(store), name, cfg.seed + offset if method.paired else None)
              for offset, name in enumerate(("train", "test"))}
    torch.manual_seed(cfg.seed)
    model, task = method.build(cae, FS), method.task_strategy()
    start = time.perf_counter()
    if nproc == 1:
        result = fit(model, task, splits["train"].open(), splits["train"].labels(),
                     {"test": (splits["test"].open(), splits["test"].labels())}, replace(cfg, num_threads=threads),
                     progress=False)
    else:
        spec = None if method.task == "reconstruct" else method.model_spec(cae, FS)
        result = fit_distributed(model, task, splits["train"], {"test": splits["test"]},
                                 cfg, LaunchConfig(nproc=nproc), progress=False, model_spec=spec)
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
    parser.add_argument("--leads", type=int, default=1, help="channels per window (the model's in_channels)")
    parser.add_argument("--method", choices=sorted(METHODS), default="cae")
    args = parser.parse_args()
    if not 1 <= args.leads <= len(TWELVE_LEADS):
        parser.error(f"--leads must be in 1..{len(TWELVE_LEADS)}, got {args.leads}")
    cae = replace(CaeConfig(), in_channels=args.leads)
    method = PretextMethod.from_params(args.method, METHODS[args.method])
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
        store = _store(Path(root), args.windows, max(64, args.windows // 8), cae)
        for nproc, threads in runs:
            per_s, wall = _measure(store, method, cae, nproc, threads, cfg)
            rows.append({
                "device": where, "method": args.method, "leads": args.leads, "processes": nproc,
                "threads/process": threads or os.environ.get("OMP_NUM_THREADS", "1 (torchrun default)"),
                "global batch": args.batch_size, "train windows/s": round(per_s), "wall s": round(wall, 1),
            })
            print(rows[-1], flush=True)
    print(f"\ntorch {torch.__version__}, {args.windows} training windows x {args.epochs} epochs, default CAE "
          f"architecture, {args.leads} lead(s), method {args.method}\n")
    print(to_markdown(pd.DataFrame(rows), index=False))


if __name__ == "__main__":
    main()
