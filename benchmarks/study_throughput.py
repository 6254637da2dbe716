"""Fine-tuning throughput: trials one after another (`fit`) against batched trials
(`fit_trials`, K trials as one stacked model), and the wall time these rates project for
the paper's protocol. Prints Markdown tables; docs/models_and_training.md quotes them.

    python benchmarks/study_throughput.py                   # throughput + projection, CPU (+ CUDA)
    python benchmarks/study_throughput.py --kernels         # how to stack: vmap vs grouped convolutions
    python benchmarks/study_throughput.py --default-study   # run_arm on the default study's sizes

Throughput: synthetic windows (the cost does not depend on their values), the real models
and loops (deterministic mode, metrics, per-epoch evaluation; no checkpoints), run for each
arm kind of the study: a fine-tuned encoder (arms random, transfer), a frozen pretrained
encoder (transfer_frozen) and a head on 1,280 image features (image). Rates are medians
over ``--repeats`` interleaved repeats and over the epochs after the first.

Projection: the paper's protocol on Chapman-Shaoxing (~7,500 training windows at 100 %,
~3,000 validation + test windows scored every epoch, 150 epochs, 10 trials, fractions 1,
0.5 and 0.25, the four arms above, the paper's width preset and batch 64), from the
measured training and scoring rates plus the measured per-epoch overhead (metrics,
bookkeeping). The image arm's feature extraction is not included.

On a shared machine compare rows of one run as ratios; absolute numbers move with the load.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from ecg_transfer.models.cae import PAPER_WIDTH_CHANNELS, CaeConfig, Encoder
from ecg_transfer.models.classifier import build_classifier, build_feature_classifier
from ecg_transfer.study.experiment import ArmData, run_arm
from ecg_transfer.study.tables import to_markdown
from ecg_transfer.training.batched import _stacked_template, fit_trials
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.tasks import ClassificationTask

CLASSES = tuple(f"class{i}" for i in range(11))
TASK = ClassificationTask(CLASSES)
IMAGE_FEATURES = 1280  # efficientnet_lite0, the default image backbone
PAPER = {"train": 7_500, "eval": 3_000, "epochs": 150, "trials": 10, "fractions": (1.0, 0.5, 0.25), "batch": 64}
# arm kind -> how many of the paper's four arms it stands for
KINDS = {"fine-tuned encoder": 2, "frozen encoder": 1, "image-feature head": 1}


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores), {torch.get_num_threads()} threads"


def _cae(preset: str) -> CaeConfig:
    return CaeConfig() if preset == "default" else replace(CaeConfig(), channels=PAPER_WIDTH_CHANNELS)


def _model_factory(kind: str, cae: CaeConfig):
    if kind == "image-feature head":
        return (lambda seed: build_feature_classifier(IMAGE_FEATURES, len(CLASSES), seed)), IMAGE_FEATURES
    if kind == "fine-tuned encoder":
        return (lambda seed: build_classifier(cae, len(CLASSES), seed)), cae.window_length
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = Encoder(cae).state_dict()
    return (lambda seed: build_classifier(cae, len(CLASSES), seed, init="pretrained", freeze=True,
                                          encoder_state=state)), cae.window_length


def _data(width: int, n: int, n_eval: int, trials: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)).astype(np.float32)
    y = rng.integers(0, len(CLASSES), n)
    rows = [np.sort(rng.integers(0, n, n)) for _ in range(trials)]
    half = max(1, n_eval // 2)
    evals = {name: (rng.standard_normal((half, width)).astype(np.float32), rng.integers(0, len(CLASSES), half))
             for name in ("val", "test")}
    return x, y, rows, evals


def _rates(histories: list[pd.DataFrame], wall: float, trials: int, epochs: int) -> dict:
    """Training and scoring windows/s (epochs after the first) and the rest of the wall time
    per trial-epoch (metrics, bookkeeping, first-epoch warm-up spread over the run)."""
    train_s = eval_s = 0.0
    train_rates, eval_rates = [], []
    for history in histories:
        for row in history.itertuples():
            seconds = row.n_windows / row.samples_per_s
            if row.split == "train":
                train_s += seconds
                if row.epoch > 1:
                    train_rates.append(row.samples_per_s)
            else:
                eval_s += seconds
                if row.epoch > 1:
                    eval_rates.append(row.samples_per_s)
    return {
        "train": float(np.median(train_rates or [np.nan])), "eval": float(np.median(eval_rates or [np.nan])),
        "overhead": max(0.0, wall - train_s - eval_s) / (trials * epochs),
    }


def measure(kind: str, cae: CaeConfig, device: str, mode: str, trials: int, n: int, n_eval: int, epochs: int,
            batch: int) -> dict:
    make, width = _model_factory(kind, cae)
    x, y, rows, evals = _data(width, n, n_eval, trials)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, device=device, monitor_split="val", eval_batch_size=256)
    seeds = list(range(trials))
    start = time.perf_counter()
    if mode == "sequential":
        results = [fit(make(s), TASK, x[r], y[r], evals, replace(cfg, seed=s), progress=False) for s, r in zip(seeds, rows)]
        histories = [r.history for r in results]
    else:
        results = fit_trials([make(s) for s in seeds], TASK, x, y, rows, evals, cfg, seeds, progress=False)
        histories = [results[0].history]  # a batched row's rate is the group's: one trial's rows say it
    wall = time.perf_counter() - start
    sizes = {"train": n, "val": len(evals["val"][1]), "test": len(evals["test"][1])}
    histories = [h[h.split.isin(sizes)].assign(n_windows=h.split.map(sizes)) for h in histories]
    if mode != "sequential":  # rows hold the group's rate: count the group's windows
        histories = [h.assign(n_windows=h.n_windows * trials) for h in histories]
    return _rates(histories, wall, trials, epochs)


def project_paper(rates: dict) -> float:
    """Seconds for one arm of the paper protocol at these rates (a batched rate is already
    the group's: all its trials' windows per second)."""
    seconds = 0.0
    for fraction in PAPER["fractions"]:
        train = PAPER["train"] * fraction * PAPER["trials"] / rates["train"]
        score = PAPER["eval"] * PAPER["trials"] / rates["eval"]
        overhead = rates["overhead"] * PAPER["trials"]
        seconds += PAPER["epochs"] * (train + score + overhead)
    return seconds


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def throughput_table(args) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        trials = args.trials or (PAPER["trials"] if device == "cuda" else 5)
        n = args.windows or (PAPER["train"] if device == "cuda" else 192)
        epochs = args.epochs or (5 if device == "cuda" else 3)
        for preset in args.presets:
            cae = _cae(preset)
            batch = args.batch or (PAPER["batch"] if preset == "paper" else 32)
            for kind in KINDS:
                measured: dict[str, list[dict]] = {"sequential": [], "batched": []}
                for _ in range(args.repeats):  # interleaved, so load changes hit both modes
                    for mode in measured:
                        measured[mode].append(measure(kind, cae, device, mode, trials, n, n // 2, epochs, batch))
                for mode, runs in measured.items():
                    rates = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
                    k = 1 if mode == "sequential" else trials
                    rows.append({
                        "device": _device_name(device), "preset": preset, "arm kind": kind, "batch": batch,
                        "mode": "sequential" if k == 1 else f"batched, {k} trials",
                        "train windows/s": round(rates["train"]), "scoring windows/s": round(rates["eval"]),
                        "overhead ms/trial-epoch": round(1000 * rates["overhead"], 1),
                        "paper protocol, per arm": project_paper(rates),
                    })
                    print({k2: v for k2, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    table["paper protocol, per arm"] = table["paper protocol, per arm"].map(_hours)
    print(f"\ntorch {torch.__version__}; {args.repeats} repeats; load average {os.getloadavg()[0]:.1f}\n")
    print(to_markdown(table, index=False))
    print("\nPaper protocol, all four arms (2 x fine-tuned encoder + frozen encoder + image head):")
    for (device, preset, mode), part in pd.DataFrame(rows).groupby(["device", "preset", "mode"], sort=False):
        total = sum(KINDS[kind] * seconds for kind, seconds in zip(part["arm kind"], part["paper protocol, per arm"]))
        print(f"- {device}, {preset} preset, {mode}: {_hours(total)}")


# ---------------------------------------------------------------- stacking: vmap vs grouped


def _grouped_classifier_step(models, x, y):
    """The default classifier as hand-written grouped convolutions (layout (B, K*C, L)),
    its BatchNorms native over K*C channels, linears as bmm; returns (step, check)."""
    trials = len(models)
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=0.005)
    encoder = models[0].encoder
    padding = encoder.cfg.kernel_size // 2

    def bn(h, name):
        return F.batch_norm(h, buffers[f"{name}.running_mean"].view(-1), buffers[f"{name}.running_var"].view(-1),
                            params[f"{name}.weight"].reshape(-1), params[f"{name}.bias"].reshape(-1), True, 0.1, 1e-5)

    def conv(h, name, pad):
        w = params[name]
        return F.conv1d(h, w.reshape(-1, *w.shape[2:]), padding=pad, groups=trials)

    def linear(h, name):  # h (K, B, F)
        return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))

    def forward(xx):  # (B, K, L)
        h = xx
        for i, (block, pool) in enumerate(zip(encoder.blocks, encoder.pools)):
            p = f"encoder.blocks.{i}."
            out = F.relu(bn(conv(h, p + "conv1.weight", padding), p + "bn1"))
            out = bn(conv(out, p + "conv2.weight", padding), p + "bn2")
            if isinstance(block.skip, torch.nn.Identity):
                skip = h
            else:
                w = params[p + "skip.0.weight"]
                if h.shape[1] == trials:  # single input channel: a broadcast multiply, as the model does
                    skip = h.repeat_interleave(w.shape[1], 1) * w.reshape(1, -1, 1)
                else:
                    skip = F.conv1d(h, w.reshape(-1, *w.shape[2:]), groups=trials)
                skip = bn(skip, p + "skip.1")
            h = pool(out + skip)
        h = h.reshape(h.shape[0], trials, -1).transpose(0, 1)
        h = F.relu(linear(linear(h, "encoder.to_code"), "head.layers.0"))
        return linear(h, "head.layers.3")

    xg = x.squeeze(2).transpose(0, 1).contiguous()

    def step():
        out = forward(xg)
        loss = torch.stack([F.cross_entropy(out[k], y[k]) for k in range(trials)]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _vmap_step(models, x, y, stacked_bn: bool):
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    template = _stacked_template(models[0])[0] if stacked_bn else copy.deepcopy(models[0]).to("meta")
    template.train()
    optimizer = torch.optim.Adam(list(params.values()), lr=0.005)

    def loss_of(p, b, xx, yy):
        return F.cross_entropy(functional_call(template, (p, b), (xx,)), yy)

    def step():
        loss = vmap(loss_of, randomness="error")(params, buffers, x, y).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _sequential_step(models, x, y):
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.005) for m in models]

    def step():
        for k, (model, optimizer) in enumerate(zip(models, optimizers)):
            loss = F.cross_entropy(model(x[k]), y[k])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return step


def kernels_table(args) -> None:
    """One training step of K classifiers (dropout 0), four ways, interleaved repeats."""
    device = "cpu"
    preset = args.presets[0]
    trials, batch = args.trials or 5, args.batch or (PAPER["batch"] if preset == "paper" else 32)
    cae = _cae(preset)
    ways = {
        "sequential (K models)": lambda m, x, y: _sequential_step(m, x, y),
        "vmap, vmap's own batch-norm rule": lambda m, x, y: _vmap_step(m, x, y, stacked_bn=False),
        "vmap + stacked batch norm (fit_trials)": lambda m, x, y: _vmap_step(m, x, y, stacked_bn=True),
        "hand-written grouped convolutions": lambda m, x, y: _grouped_classifier_step(m, x, y),
    }
    x = torch.randn(trials, batch, 1, cae.window_length, device=device)
    y = torch.randint(0, len(CLASSES), (trials, batch), device=device)
    steps = {}
    for name, make in ways.items():
        models = [build_classifier(cae, len(CLASSES), s, dropout=0.0).train() for s in range(trials)]
        steps[name] = make(models, x, y)
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats * 3):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(3):
                step()
            times[name].append((time.perf_counter() - start) / 3)
    base = np.median(times["sequential (K models)"])
    rows = [{"way": name, "ms per step": round(1000 * np.median(t), 1),
             "train windows/s": round(trials * batch / np.median(t)), "vs sequential": f"{base / np.median(t):.2f}x"}
            for name, t in times.items()]
    print(f"\nOne training step of {trials} classifiers ({preset} preset), batch {batch} each, {_device_name(device)}, "
          f"median of {len(times['sequential (K models)'])}; load average {os.getloadavg()[0]:.1f}\n")
    print(to_markdown(pd.DataFrame(rows), index=False))


# ---------------------------------------------------------------- the default study


def default_study_table(args) -> None:
    """run_arm as the default study runs it: 630 training windows at 100 %, 10 epochs, 5
    trials, fractions 1 / 0.5 / 0.25, batch 32, validation and test scored every epoch."""
    cae = _cae("default")
    rng = np.random.default_rng(0)
    n, n_eval = 630, 135

    def split(size):
        return rng.standard_normal((size, cae.window_length)).astype(np.float32), rng.integers(0, len(CLASSES), size)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(n), split(n_eval), split(n_eval)
    data = ArmData(train_x, train_y, val_x, val_y, test_x, test_y)
    samples = pd.concat([
        pd.DataFrame({"fraction": fraction, "trial": trial, "seed": 2021 + trial,
                      "position": np.random.default_rng(trial).integers(0, n, round(fraction * n))})
        for fraction in (1.0, 0.5, 0.25) for trial in range(1, 6)
    ], ignore_index=True)
    cfg = TrainConfig(epochs=10, batch_size=32, lr=0.005, monitor_split="val")
    rows = []
    for kind in ("fine-tuned encoder", "frozen encoder"):
        make, _ = _model_factory(kind, cae)
        seconds: dict[str, list[float]] = {"1": [], "auto": []}
        for _ in range(args.repeats):
            for setting in seconds:
                start = time.perf_counter()
                run_arm("bench", make, data, samples, cfg, CLASSES, None, "bench", progress=False, batch_trials=setting)
                seconds[setting].append(time.perf_counter() - start)
                print(kind, setting, f"{seconds[setting][-1]:.1f} s", flush=True)
        sequential, batched = np.median(seconds["1"]), np.median(seconds["auto"])
        rows.append({"arm kind": kind, "batch_trials: 1": f"{sequential:.1f} s", "batch_trials: auto": f"{batched:.1f} s",
                     "speed-up": f"{sequential / batched:.2f}x"})
    print(f"\nrun_arm, default study sizes, {_device_name('cpu')}, median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(to_markdown(pd.DataFrame(rows), index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", choices=("default", "paper"), default=["default", "paper"])
    parser.add_argument("--trials", type=int, default=None, help="trials per group (CPU 5, CUDA 10)")
    parser.add_argument("--windows", type=int, default=None, help="training windows per trial (CPU 192, CUDA 7,500)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per measurement (CPU 3, CUDA 5)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default preset 32, paper 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kernels", action="store_true", help="only: vmap vs grouped convolutions, one step")
    parser.add_argument("--default-study", action="store_true", help="only: run_arm on the default study's sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}", flush=True)
    if args.kernels:
        kernels_table(args)
    elif args.default_study:
        default_study_table(args)
    else:
        throughput_table(args)


if __name__ == "__main__":
    main()
