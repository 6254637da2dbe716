"""Throughput of the image-transfer arm's two stages, to size the feature-extraction run.

Measures spectrogram images/s (scipy STFT + resize + colormap + normalisation, always CPU)
and backbone features/s (frozen CNN forward under inference_mode) at several batch sizes,
on CPU and, when available, CUDA. Each figure is the median of --repeats timed runs after
one warm-up run. Windows are random z-scored noise: the work does not depend on content.

    python benchmarks/image_features_throughput.py [--backbone efficientnet_lite0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from ecg_transfer.models.image_backbones import BACKBONES, load_backbone
from ecg_transfer.models.spectrogram import SpectrogramConfig, spectrogram_images


def _median_rate(fn, n_items: int, repeats: int) -> float:
    fn()  # warm-up: first calls allocate, pick kernels, import lazily
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return n_items / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = SpectrogramConfig()
    backbone = load_backbone(args.backbone)
    rng = np.random.default_rng(args.seed)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    cpu_name = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_name}"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if "cuda" in devices else ", no CUDA")
    )
    print(f"backbone {backbone.name} ({backbone.feature_dim}-d), STFT nperseg={cfg.nperseg} "
          f"hop={cfg.nperseg - cfg.noverlap} nfft={cfg.nfft}, images {cfg.image_size}px")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    print()
    print("| device | batch | spectrogram images/s | backbone features/s | end-to-end windows/s |")
    print("|---|---|---|---|---|")
    for device in devices:
        backbone.to(device)
        for batch_size in args.batch_sizes:
            windows = rng.standard_normal((batch_size, cfg.window_length)).astype(np.float32)

            def make_images():
                return spectrogram_images(windows, cfg, mean=backbone.mean, std=backbone.std)

            images = make_images().to(device, memory_format=torch.channels_last)

            def run_backbone():
                with torch.inference_mode():
                    out = backbone.module(images)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

            images_per_s = _median_rate(make_images, batch_size, args.repeats)
            features_per_s = _median_rate(run_backbone, batch_size, args.repeats)
            end_to_end = 1.0 / (1.0 / images_per_s + 1.0 / features_per_s)
            print(f"| {device} | {batch_size} | {images_per_s:,.0f} | {features_per_s:,.1f} | {end_to_end:,.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
