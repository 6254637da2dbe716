"""Torch threads on a shared machine: CAE training steps with 1 vs 2 threads, alone and beside
a competing process.

On a 2-core machine torch's default of one thread per core can stall badly when another
process takes a core: every parallel region waits for the thread that was descheduled. This
benchmark measures it instead of guessing, and the project's default ``num_threads`` follows
from its table (docs/models_and_training.md, "Threads on a shared machine").

For each thread count it runs the project's CAE train step (forward, MSE, backward, Adam) on a
fixed batch, ``--steps`` times, first alone, then while a competing process runs: another
CAE training loop, as a second user's job would be: one thread at lower priority (``nice 10``),
one thread at the same priority, or torch's default threads at the same priority.
Prints the median and 90th-percentile seconds per step and the slowdown against the
1-thread-alone median.

    python benchmarks/thread_contention.py                  # 2 x 2 conditions, 40 steps each
    python benchmarks/thread_contention.py --threads 1 2 4  # more thread counts
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder
from ecg_transfer.study.tables import to_markdown

_COMPETITOR = """
import torch, time
from torch.nn import functional as F
from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder
torch.manual_seed(1)
model = ConvAutoencoder(CaeConfig())
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(64, 1, 2048)
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    loss = F.mse_loss(model(x), x)
    opt.zero_grad(); loss.backward(); opt.step()
"""


def _step_times(threads: int, steps: int, batch_size: int) -> np.ndarray:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ConvAutoencoder(CaeConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 1, CaeConfig().window_length)
    times = []
    for _ in range(steps + 5):  # five warm-up steps, not counted
        start = time.perf_counter()
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return np.asarray(times[5:])


# (label, nice level, the competitor's torch threads; None = torch's default, one per core)
LOADS = (
    ("alone", None, None),
    ("beside a 1-thread job at nice 10", 10, 1),
    ("beside a 1-thread job", 0, 1),
    ("beside a default-threads job", 0, None),
)


def _competitor(seconds: float, nice: int, threads: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads is not None:
            env[name] = str(threads)
    return subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", _COMPETITOR.format(seconds=seconds)],
                            env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="upper bound on each competing process's life")
    args = parser.parse_args()
    rows = []
    for load, nice, competitor_threads in LOADS:
        for threads in args.threads:
            competitor = _competitor(args.max_seconds, nice, competitor_threads) if nice is not None else None
            try:
                if competitor is not None:
                    time.sleep(3.0)  # let it import torch and start training
                times = _step_times(threads, args.steps, args.batch_size)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            rows.append({"load": load, "threads": threads, "median s/step": float(np.median(times)),
                         "p90 s/step": float(np.quantile(times, 0.9))})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    reference = table[(table.load == "alone") & (table.threads == 1)]["median s/step"].iloc[0]
    table["slowdown vs 1 thread alone"] = (table["median s/step"] / reference).round(2)
    table["threads"] = table["threads"].astype(str)
    table["median s/step"] = table["median s/step"].round(3)
    table["p90 s/step"] = table["p90 s/step"].round(3)
    print(f"\nCAE train step, batch {args.batch_size}, {args.steps} steps per row, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print(to_markdown(table, index=False))


if __name__ == "__main__":
    main()
