"""What to expect from the size of the unlabelled corpus, per pretext method (issue 18).

For each pretraining method of conf/pretext/parameters.yml (cae = reconstruct, contrastive
same_window, contrastive same_record, masked) and each corpus size (simulated monitor
patients), pretrains the same encoder with a fixed seed and a fixed epoch budget, then scores
its frozen 60-feature codes with a linear probe (training/probe.py: standardised codes,
logistic regression, macro F1) on one fixed labelled set split by record. The frozen random
encoder with the standard init (every BatchNorm gamma 1, ``zero_init_residual=False``: the
study's non-degenerate frozen control) is the row to beat. Prints a Markdown table of probe
F1 (mean over pretraining seeds and each seed's value) and one of pretraining time per epoch.

    OMP_NUM_THREADS=1 python benchmarks/pretext_corpus_size.py [--sizes 100,300,1000]
        [--seeds 0,1,2] [--epochs 8] [--labelled 600]

Data: the bundled data's simulator and seeds (conf/base/parameters_bundled_data.yml): the
unlabelled corpus is ``simulate_monitor_corpus`` (60 s of lead II per patient, 250/500 Hz
devices), its first n patients for size n (so the corpora are nested; the bundled corpus is
the first 240), each giving ``windows_per_recording`` random windows as the bundled
preprocessing does; every fifth patient is held out (the pretext's held-out loss picks the
kept epoch, as the pipeline does). The labelled set is ``simulate_chapman_release`` limited
to four balanced rhythms (SB, SR, ST, AFIB), one centred window per record, split 50/50 by
record (``assign_splits``). Preprocessing is the study's (0.5 Hz high-pass, z-score), but at
62.5 Hz with 512-sample windows (the same 8.2 s as the study's 2,048 at 250 Hz) and a narrow
encoder, so that the grid runs on a 2-core CPU; the masked spans keep their 0.2 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    labelled_record_windows,
    windows_from_unlabelled_records,
)
from ecg_transfer.signals.splits import assign_splits
from ecg_transfer.signals.synthetic import simulate_chapman_release, simulate_monitor_corpus
from ecg_transfer.study.tables import to_markdown
from ecg_transfer.training.engine import TrainConfig, fit, predict
from ecg_transfer.training.pretext_methods import PretextMethod
from ecg_transfer.training.probe import linear_probe_f1

ROOT = Path(__file__).resolve().parents[1]
RATE = 62.5        # Hz: the study's 250 Hz / 4
WINDOW = 512       # samples: 8.192 s, the study's window length in seconds
STUDY_RATE = 250.0
# The study's encoder shape (nine residual blocks, kernel 19, 60 features), narrower and
# pooled by 32 to 16 positions x 8 channels before the linear to 60.
ENCODER = CaeConfig(window_length=WINDOW, channels=(4, 4, 8, 8, 8, 8, 8, 8, 8), pool_factors=(2, 2, 2, 2, 2, 1, 1, 1, 1))
CLASSES = ("SB", "SR", "ST", "AFIB")
HELD_OUT_EVERY = 5  # patient i is held out when i % 5 == 4: nested corpora, nested splits


def _conf(*parts: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / Path(*parts)).read_text())


def preprocessing_config() -> PreprocessConfig:
    """The study's preprocessing.signal with the benchmark's rate and window length."""
    signal = dict(_conf("base", "parameters_preprocessing.yml")["preprocessing"]["signal"])
    return PreprocessConfig.from_params({**signal, "target_fs": RATE, "window_length": WINDOW})


def pretext_methods() -> list[PretextMethod]:
    """conf/pretext's methods; a masked span keeps its duration at the benchmark's rate."""
    methods = []
    for name, spec in _conf("pretext", "parameters.yml")["pretraining"]["methods"].items():
        spec = dict(spec)
        if spec["task"] == "masked":
            spec["span_length"] = max(1, round(spec.get("span_length", 50) * RATE / STUDY_RATE))
        methods.append(PretextMethod.from_params(name, spec))
    return methods


def unlabelled_corpus(n_patients: int, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(windows, patient index of each window) of the first n_patients simulated monitor patients."""
    bundled = _conf("base", "parameters_bundled_data.yml")["bundled_data"]
    seed = _conf("base", "parameters_preprocessing.yml")["preprocessing"]["unlabelled_seed"]
    corpus = simulate_monitor_corpus(n_patients, bundled["unlabelled"]["seconds_per_patient"], bundled["seed"] + 1,
                                     tuple(bundled["unlabelled"]["sampling_rates"]))
    chunks = list(windows_from_unlabelled_records(corpus.iter_records(progress=False), cfg, seed, progress=False))
    windows = np.concatenate([c[0] for c in chunks])
    records = pd.concat([c[1] for c in chunks])["record_id"].str.rsplit("_", n=1).str[1].astype(int)
    return windows, records.to_numpy()


def labelled_set(n_records: int, cfg: PreprocessConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (windows, labels), "test": ...}: lead II, one centred window per record, 50/50 by record."""
    seed = _conf("base", "parameters_bundled_data.yml")["bundled_data"]["seed"]
    release = simulate_chapman_release(n_records, seed, class_shares={c: 1.0 for c in CLASSES}, min_per_class=1)
    rhythms = release.diagnostics["Rhythm"].to_numpy()
    windows = np.stack([labelled_record_windows(waveform[:, 1], 500.0, cfg)[0][0]
                        for _, waveform in release.iter_waveforms(progress=False)])
    names = release.diagnostics["FileName"].astype(str)
    split = assign_splits(pd.DataFrame({"patient_id": names, "label": rhythms}), 0.5, 0.0, seed=17).to_numpy()
    labels = np.array([CLASSES.index(r) for r in rhythms])
    return {name: (windows[split == name], labels[split == name]) for name in ("train", "test")}


def probe(encoder: torch.nn.Module, labelled: dict) -> float:
    codes = {name: predict(encoder, x, device="cpu") for name, (x, _) in labelled.items()}
    return linear_probe_f1(codes["train"], labelled["train"][1], codes["test"], labelled["test"][1])


def pretrain(method: PretextMethod, windows: np.ndarray, patients: np.ndarray, epochs: int, seed: int):
    """The encoder after ``epochs`` of ``method`` on these windows (kept epoch: lowest held-out
    loss, as the pipeline keeps it), with seconds per epoch and the kept epoch."""
    training = dict(_conf("base", "parameters_pretraining.yml")["pretraining"]["training"])
    training = {k: v for k, v in training.items() if k not in ("nproc", "device", "patience", "seed", "epochs")}
    cfg = TrainConfig(**training, **method.training, epochs=epochs, seed=seed, device="cpu", patience=None)
    held_out = patients % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    records = patients.astype(str)
    train_x, train_y = method.inputs(windows[~held_out], records[~held_out], seed)
    test_x, test_y = method.inputs(windows[held_out], records[held_out], seed + 1)
    torch.manual_seed(seed)
    model = method.build(ENCODER, RATE)
    started = time.perf_counter()
    result = fit(model, method.task_strategy(), train_x, train_y, {"test": (test_x, test_y)}, cfg, progress=False)
    return model.encoder, (time.perf_counter() - started) / result.epochs_run, int(result.best_epoch)


def random_encoder(seed: int) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(replace(ENCODER, zero_init_residual=False))


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,300,1000", help="corpus sizes in simulated patients")
    parser.add_argument("--seeds", default="0,1,2", help="pretraining (and random-encoder) seeds")
    parser.add_argument("--epochs", type=int, default=8, help="pretraining epochs of every method")
    parser.add_argument("--labelled", type=int, default=600, help="labelled records (half fit the probe)")
    parser.add_argument("--methods", default=None, help="comma-separated subset of conf/pretext's methods")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in pretext_methods() if args.methods is None or m.name in args.methods.split(",")]
    begun = time.perf_counter()
    cfg = preprocessing_config()
    windows, patients = unlabelled_corpus(max(sizes), cfg)
    labelled = labelled_set(args.labelled, cfg)

    control = [probe(random_encoder(seed), labelled) for seed in seeds]
    f1 = {("random encoder, frozen (standard init)", n): control for n in sizes}
    timing = []
    for method in methods:
        for n in sizes:
            rows = patients < n
            for seed in seeds:
                encoder, per_epoch, kept = pretrain(method, windows[rows], patients[rows], args.epochs, seed)
                f1.setdefault((method.name, n), []).append(probe(encoder, labelled))
                timing.append({"method": method.name, "patients": n, "windows": int(rows.sum()),
                               "seed": seed, "s_per_epoch": per_epoch, "kept_epoch": kept})
                print(f"{method.name} n={n} seed={seed}: F1 {f1[(method.name, n)][-1]:.3f}, "
                      f"{per_epoch:.1f} s/epoch, kept epoch {kept}", file=sys.stderr, flush=True)

    label = {m.name: f"{m.name} ({m.task}{', ' + m.options['positives'] if 'positives' in m.options else ''})"
             for m in methods}
    table = pd.DataFrame(
        {f"{n} patients ({int((patients < n).sum())} windows)": {label.get(name, name): _cell(values)
                                                                  for (name, size), values in f1.items() if size == n}
         for n in sizes})
    print(f"Linear-probe macro F1 of the frozen encoder's codes, mean over pretraining seeds {seeds} "
          f"(each seed's value in brackets); {args.epochs} pretraining epochs; encoder: nine residual blocks, kernel 19, "
          f"60 features, channels {list(ENCODER.channels)}, pooling {list(ENCODER.pool_factors)}, {WINDOW}-sample "
          f"windows at {RATE} Hz; "
          f"labelled: {len(labelled['train'][1])} train / {len(labelled['test'][1])} test records, "
          f"4 balanced rhythms (chance 0.25).\n")
    print(to_markdown(table))
    times = pd.DataFrame(timing).groupby(["method", "patients", "windows"], sort=False).agg(
        s_per_epoch=("s_per_epoch", "mean"), kept_epochs=("kept_epoch", lambda k: ", ".join(map(str, k))))
    times["s_per_epoch"] = times["s_per_epoch"].map(lambda s: f"{s:.1f}")
    print("\nPretraining seconds per epoch (training and held-out scoring, mean over seeds; measured on a "
          "loaded shared 2-core machine, OMP_NUM_THREADS=1) and the epoch kept by the held-out loss per seed:\n")
    print(to_markdown(times.reset_index(), index=False))
    print(f"\nTotal: {(time.perf_counter() - begun) / 60:.1f} minutes.")


if __name__ == "__main__":
    main()
