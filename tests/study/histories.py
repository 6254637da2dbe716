"""Small hand-shaped study outputs shared by the study and statistics tests: per-epoch histories,
per-record predictions, arm settings and an arm registry."""

import numpy as np
import pandas as pd

from ecg_transfer.study.arms import arm_registry

CLASSES = ("SB", "SR", "AFIB")
# The default study's arms, as conf/base/parameters_study.yml declares them (display order).
ARMS = {
    "random": {"init": "random", "freeze": False, "input": "window", "label": "random init", "colour": "tab:grey"},
    "image": {"init": "pretrained", "freeze": True, "input": "spectrogram", "label": "image transfer",
              "colour": "tab:orange"},
    "transfer": {"init": "pretrained", "freeze": False, "input": "window", "label": "CAE transfer",
                 "colour": "tab:blue"},
    "transfer_frozen": {"init": "pretrained", "freeze": True, "input": "window",
                        "label": "CAE transfer, frozen encoder", "colour": "tab:cyan"},
    "random_frozen": {"init": "random", "init_scheme": "standard", "freeze": True, "input": "window",
                      "label": "random init, frozen encoder", "colour": "tab:brown"},
}
OFFSETS = {"random": 0.0, "transfer": 0.05, "image": -0.02, "transfer_frozen": 0.01, "random_frozen": -0.1}


def registry(arms=tuple(ARMS)):
    return arm_registry({name: ARMS[name] for name in arms})


def make_histories(
    fractions=(1.0, 0.5),
    arms=("random", "transfer", "image"),
    n_trials=3,
    n_epochs=6,
    seed=0,
    classes=CLASSES,
) -> pd.DataFrame:
    """Noisy rising curves; transfer sits 0.05 above random, image 0.02 below random."""
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in fractions:
        for arm in arms:
            for trial in range(1, n_trials + 1):
                base = 0.5 + OFFSETS[arm] + 0.1 * fraction
                for epoch in range(1, n_epochs + 1):
                    for split in ("train", "val", "test"):
                        f1 = base + 0.03 * np.log(epoch) + rng.normal(0, 0.01)
                        row = {
                            "fraction": fraction, "arm": arm, "trial": trial, "epoch": epoch,
                            "split": split, "loss": 1.0 / epoch, "f1_weighted": f1,
                            "f1_macro": f1 - 0.1, "accuracy": f1 + 0.02,
                        }
                        for k, name in enumerate(classes):
                            row[f"f1_{name}"] = f1 - 0.05 * k
                        row["auroc_macro"] = min(1.0, f1 + 0.2)
                        rows.append(row)
    return pd.DataFrame(rows)


def make_predictions(
    fractions=(1.0, 0.5),
    arms=("random", "transfer", "image"),
    n_trials=3,
    n_records=40,
    seed=0,
    classes=CLASSES,
) -> pd.DataFrame:
    """Per-record class probabilities: each arm is right on a share of the records that grows
    with its offset; the same test records for every arm."""
    rng = np.random.default_rng(seed)
    truth = np.array([classes[i % len(classes)] for i in range(n_records)])
    rows = []
    for fraction in fractions:
        for arm in arms:
            for trial in range(1, n_trials + 1):
                for selection in ("honest", "best_test"):
                    for split in ("val", "test"):
                        right = rng.random(n_records) < 0.6 + OFFSETS[arm] * 2
                        for i, label in enumerate(truth):
                            guess = label if right[i] else classes[(classes.index(label) + 1) % len(classes)]
                            probs = {f"prob_{c}": (0.8 if c == guess else 0.2 / (len(classes) - 1)) for c in classes}
                            rows.append({"fraction": fraction, "arm": arm, "trial": trial,
                                         "selection": selection, "epoch": 3, "split": split,
                                         "record_id": f"r{i:03d}", "label": label, **probs})
    return pd.DataFrame(rows)


def make_arm_settings(arm, fractions=(1.0, 0.5), n_trials=3, classes=CLASSES, **changes) -> dict:
    """What an arm's ``arm_settings`` dataset holds (contract: LEAD writes it per arm)."""
    spec = arm_registry(ARMS)[arm].result_spec()
    settings = {
        "arm": arm, "spec": spec, "fractions": list(fractions), "n_trials": n_trials,
        "training": {"epochs": 6, "batch_size": 32, "lr": 0.005, "device": "auto", "monitor_split": "val"},
        "classes": list(classes), "bootstrap_fingerprint": "b00t", "labelled_fingerprint": "1abe", "parameters": {},
        "encoder_fingerprint": None if spec["init"] == "random" else "enc0", "run_fingerprint": f"run-{arm}",
    }
    for key, value in changes.items():
        if key == "training":
            settings["training"] = {**settings["training"], **value}
        else:
            settings[key] = value
    return settings


# ---------------------------------------------------------------- multi-label (issue 19)

LABELS = ("AF", "LBBB", "STach")


def make_multilabel_histories(
    fractions=(1.0, 0.5), arms=("random", "transfer", "image"), n_trials=3, n_epochs=6, seed=0, labels=LABELS,
) -> pd.DataFrame:
    """What a multi-label study's histories hold (the fine-tuning's contract): loss, macro and
    per-label AUROC on every split, macro and per-label F1 on val and test only (thresholds come
    from validation), no weighted F1, no accuracy. Transfer sits 0.05 above random."""
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in fractions:
        for arm in arms:
            for trial in range(1, n_trials + 1):
                base = 0.6 + OFFSETS[arm] + 0.1 * fraction
                for epoch in range(1, n_epochs + 1):
                    for split in ("train", "val", "test"):
                        auroc = min(0.99, base + 0.03 * np.log(epoch) + rng.normal(0, 0.01))
                        row = {"fraction": fraction, "arm": arm, "trial": trial, "epoch": epoch, "split": split,
                               "loss": 1.0 / epoch, "auroc_macro": auroc,
                               **{f"auroc_{name}": auroc + 0.02 * (k - 1) for k, name in enumerate(labels)}}
                        if split != "train":
                            row["f1_macro"] = auroc - 0.3
                            row.update({f"f1_{name}": auroc - 0.3 + 0.02 * (k - 1) for k, name in enumerate(labels)})
                        rows.append(row)
    return pd.DataFrame(rows)


def multilabel_targets(n_records: int, labels=LABELS) -> np.ndarray:
    """(n_records, K) 0/1 label sets: record i carries label k when (i + k) % 3 == 0, and record
    i % 4 == 1 carries the first label too, so sets of one and of two labels occur."""
    targets = np.array([[int((i + k) % 3 == 0) for k in range(len(labels))] for i in range(n_records)])
    targets[1::4, 0] = 1
    return targets


def make_multilabel_predictions(
    fractions=(1.0, 0.5), arms=("random", "transfer", "image"), n_trials=3, n_records=30, seed=0, labels=LABELS,
) -> pd.DataFrame:
    """Per-record predictions in the fine-tuning's multi-label contract: ``label`` the record's
    labels joined by ";" in class order, ``target_<label>`` 0/1, ``prob_<label>`` sigmoid scores
    that separate the targets better the larger the arm's offset; the same records for every arm."""
    rng = np.random.default_rng(seed)
    targets = multilabel_targets(n_records, labels)
    joined = [";".join(name for name, t in zip(labels, row) if t) for row in targets]
    rows = []
    for fraction in fractions:
        for arm in arms:
            for trial in range(1, n_trials + 1):
                for selection in ("honest", "best_test"):
                    for split in ("val", "test"):
                        scores = np.clip(0.5 + (targets - 0.5) * (0.3 + 2 * OFFSETS[arm])
                                         + rng.normal(0, 0.3, targets.shape), 0.0, 1.0)
                        for i in range(n_records):
                            rows.append({"fraction": fraction, "arm": arm, "trial": trial, "selection": selection,
                                         "epoch": 3, "split": split, "record_id": f"r{i:03d}", "label": joined[i],
                                         **{f"target_{n}": int(targets[i, k]) for k, n in enumerate(labels)},
                                         **{f"prob_{n}": float(scores[i, k]) for k, n in enumerate(labels)}})
    return pd.DataFrame(rows)
