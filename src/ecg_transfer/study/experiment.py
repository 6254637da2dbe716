"""One arm of the starvation experiment: for every training fraction and trial, train on that
trial's bootstrap sample and evaluate every epoch on the fixed validation and test splits.

Every arm goes through this one function and the one training engine, so arms differ only in
the model a factory builds: same samples, same seeds, same optimiser, same evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from ecg_transfer.signals.records import RHYTHMS
from ecg_transfer.study.summaries import summarise_runs
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig, fit

logger = logging.getLogger(__name__)

ARMS = ("random", "transfer", "transfer_frozen", "image")


@dataclass(frozen=True)
class ArmData:
    """Inputs of one arm: the training split (indexed by the bootstrap positions), and the fixed
    validation and test splits. x are windows (N, 2048) or feature vectors (N, F)."""

    train_x: Any
    train_y: np.ndarray
    val_x: Any
    val_y: np.ndarray
    test_x: Any
    test_y: np.ndarray


def labelled_arm_data(labelled_windows, inputs: np.ndarray | None = None) -> ArmData:
    """The labelled set by split, in memory (one window per record: small). ``inputs``, rows
    aligned with the window store (e.g. image features), replaces the windows."""
    codes = labelled_windows.label_codes(RHYTHMS)
    parts = {}
    for split in ("train", "val", "test"):
        rows = labelled_windows.split_indices(split)
        x = labelled_windows.take(rows) if inputs is None else inputs[rows]
        parts[split] = (x, codes[rows])
    return ArmData(*parts["train"], *parts["val"], *parts["test"])


def fingerprint(*parts: Any) -> str:
    """A short stable hash of configuration and data, so a finished run is reused only when
    nothing it depends on changed."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype != object:
            digest.update(str((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, np.ndarray):  # strings: their bytes, never the object pointers
            digest.update(json.dumps(part.tolist(), default=str).encode())
        elif isinstance(part, Mapping) and part and all(hasattr(v, "numpy") for v in part.values()):
            for key in sorted(part):
                digest.update(key.encode())
                digest.update(part[key].detach().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def labelled_run_fingerprint(labelled_windows, bootstrap_samples: pd.DataFrame, *settings: Any) -> str:
    """The fingerprint of an arm's runs: its own settings and inputs, plus what every arm
    shares (the labelled records with their labels and splits, and the bootstrap samples)."""
    return fingerprint(
        *settings,
        labelled_windows.index[["record_id", "label", "split"]].to_numpy(),
        bootstrap_samples[["fraction", "trial", "seed", "position"]].to_numpy(),
    )


def run_key(arm: str, fraction: float, trial: int, data_fingerprint: str) -> str:
    return f"finetuning/{arm}/fraction={fraction:g}/trial={trial:02d}/{data_fingerprint}"


def run_arm(
    arm: str,
    make_model: Callable[[int], nn.Module],
    data: ArmData,
    bootstrap_samples: pd.DataFrame,
    train_config: Mapping[str, Any],
    checkpoints: CheckpointStore | None,
    data_fingerprint: str,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Train `arm` on every (fraction, trial) sample; return the long per-epoch history and one
    MLflow run record per run. Finished runs found in `checkpoints` are not trained again."""
    histories, records = [], []
    groups = bootstrap_samples.groupby(["fraction", "trial"], sort=False)
    for (fraction, trial), sample in sorted(groups, key=lambda item: (-item[0][0], item[0][1])):
        seed = int(sample["seed"].iloc[0])
        positions = np.sort(sample["position"].to_numpy())
        config = TrainConfig(**{**dict(train_config), "seed": seed})
        key = run_key(arm, float(fraction), int(trial), data_fingerprint)
        logger.info("%s: fraction %g, trial %d (%d training windows)", arm, fraction, trial, positions.size)
        result = fit(
            make_model(seed),
            "classification",
            _take(data.train_x, positions),
            data.train_y[positions],
            {"val": (data.val_x, data.val_y), "test": (data.test_x, data.test_y)},
            config,
            checkpoints=checkpoints,
            run_key=key,
            progress=progress,
        )
        history = result.history.assign(fraction=float(fraction), arm=arm, trial=int(trial))
        histories.append(history)
        records.append(_run_record(arm, float(fraction), int(trial), seed, positions, data, config, result, history))
    columns = ["fraction", "arm", "trial"]
    history = pd.concat(histories, ignore_index=True)
    return history[columns + [c for c in history.columns if c not in columns]], records


def _take(x, positions: np.ndarray):
    """Rows of x, read once in sorted order (a memmap reads only those pages)."""
    return np.asarray(x[positions])


def _run_record(arm, fraction, trial, seed, positions, data, config, result, history) -> dict[str, Any]:
    summary = summarise_runs(history).iloc[0]
    final = {
        name: float(summary[name])
        for name in ("best_test_f1_weighted", "honest_test_f1_weighted", "best_test_f1_macro",
                     "honest_test_f1_macro", "lci")
        if name in summary and pd.notna(summary[name])
    }
    return {
        "run_name": f"{arm}-f{fraction:g}-t{trial}",
        "params": {
            "arm": arm, "fraction": fraction, "trial": trial, "seed": seed,
            "n_train": int(positions.size), "n_train_unique": int(np.unique(positions).size),
            "n_val": int(len(data.val_y)), "n_test": int(len(data.test_y)), "device": result.device,
            **{f"train.{k}": v for k, v in asdict(config).items() if k != "seed"},
        },
        "tags": {"arm": arm, "fraction": f"{fraction:g}", "trial": str(trial), "stage": "finetuning"},
        "history": history[["epoch", "split"] + [c for c in history.columns
                                                 if c not in ("epoch", "split", "fraction", "arm", "trial")]],
        "metrics": final,
    }
