"""Training and inference throughput (windows/s) of the CAE and the rhythm classifier.

Runs the project's own loop (``ecg_transfer.training.engine.fit``/``evaluate``),
so the numbers include batching, the metrics and deterministic mode exactly as
the study pays for them. Prints a Markdown table; docs/models_and_training.md
records its output.

    python benchmarks/training_throughput.py                 # default widths, CPU (+ CUDA if present)
    python benchmarks/training_throughput.py --preset paper  # the wider preset
    python benchmarks/training_throughput.py --compile       # also time torch.compile on the classifier
    python benchmarks/training_throughput.py --leads 12      # windows of 12 leads (in_channels 12)

``--leads N`` feeds windows of N channels, (windows, N, 2048), to models built with
``in_channels`` N, as a study of N ``preprocessing.leads`` does; a window then takes
4 x N x 2048 bytes (float32).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from ecg_transfer.models.cae import (
    PAPER_WIDTH_CHANNELS,
    CaeConfig,
    ConvAutoencoder,
    count_parameters,
)
from ecg_transfer.models.classifier import build_classifier
from ecg_transfer.study.tables import to_markdown
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.tasks import ClassificationTask, ReconstructionTask


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _windows(rng, n_windows: int, cae_cfg: CaeConfig) -> np.ndarray:
    """(n, L) for one lead, as a one-lead window store holds them; (n, C, L) for C leads."""
    leads = () if cae_cfg.in_channels == 1 else (cae_cfg.in_channels,)
    return rng.standard_normal((n_windows, *leads, cae_cfg.window_length)).astype(np.float32)


def _measure(model_name, cae_cfg, device, batch_size, bf16, n_windows, epochs, seed=0):
    rng = np.random.default_rng(seed)
    x = _windows(rng, n_windows, cae_cfg)
    y = rng.integers(0, 11, n_windows)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, device=device, bf16=bf16, bf16_cpu=bf16,
                      eval_batch_size=batch_size, seed=seed)
    if model_name == "cae":
        model, task, labels = ConvAutoencoder(cae_cfg), ReconstructionTask(), None
    else:
        model = build_classifier(cae_cfg, 11, seed)
        task, labels = ClassificationTask([f"class{i}" for i in range(11)]), y
    # A classifier keeps its best-validation epoch, so it needs a validation split (the same windows).
    evals = {"test": (x, labels)} if labels is None else {"val": (x, labels), "test": (x, labels)}
    history = fit(model, task, x, labels, evals, cfg, progress=False).history
    later = history[history.epoch > 1] if epochs > 1 else history  # epoch 1 carries warm-up
    return (
        float(later[later.split == "train"].samples_per_s.median()),
        float(later[later.split == "test"].samples_per_s.median()),
        count_parameters(model),
    )


def _measure_compile(cae_cfg, batch_size, steps=20):
    """Classifier train steps/s with torch.compile, and the one-off compile time."""
    model = build_classifier(cae_cfg, 11, 0)
    compiled = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    x = torch.randn(batch_size, cae_cfg.in_channels, cae_cfg.window_length)
    y = torch.randint(0, 11, (batch_size,))

    def step():
        loss = F.cross_entropy(compiled(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return compile_s, steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("default", "paper"), default="default")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--windows", type=int, default=384, help="windows per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=["classifier", "cae"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--leads", type=int, default=1, help="channels per window (the models' in_channels)")
    args = parser.parse_args()
    if args.leads < 1:
        parser.error(f"--leads must be >= 1, got {args.leads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cae_cfg = CaeConfig() if args.preset == "default" else replace(CaeConfig(), channels=PAPER_WIDTH_CHANNELS)
    cae_cfg = replace(cae_cfg, in_channels=args.leads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for model_name in args.models:
            for batch_size in args.batch_sizes:
                for bf16 in (False, True):
                    train, infer, n_params = _measure(model_name, cae_cfg, device, batch_size, bf16, args.windows, args.epochs)
                    rows.append({
                        "device": _device_name(device), "model": model_name, "leads": args.leads, "params": n_params,
                        "batch": batch_size, "precision": "bf16 autocast" if bf16 else "fp32",
                        "train windows/s": round(train), "inference windows/s": round(infer),
                    })
                    print(rows[-1], flush=True)
    print(f"\npreset {args.preset}: {cae_cfg}\ntorch {torch.__version__}\n")
    print(to_markdown(pd.DataFrame(rows), index=False))
    if args.compile:
        compile_s, per_s = _measure_compile(cae_cfg, 64)
        print(f"\ntorch.compile classifier, batch 64, fp32: compile {compile_s:.1f} s, then {per_s:.0f} train windows/s")


if __name__ == "__main__":
    main()
