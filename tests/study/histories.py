"""Small hand-shaped per-epoch histories shared by the study tests."""

import numpy as np
import pandas as pd

CLASSES = ("SB", "SR", "AFIB")


def make_histories(
    fractions=(1.0, 0.5),
    arms=("random", "transfer", "image"),
    n_trials=3,
    n_epochs=6,
    seed=0,
) -> pd.DataFrame:
    """Noisy rising curves; transfer sits 0.05 above random, image 0.02 below random."""
    rng = np.random.default_rng(seed)
    offsets = {"random": 0.0, "transfer": 0.05, "image": -0.02, "transfer_frozen": 0.01}
    rows = []
    for fraction in fractions:
        for arm in arms:
            for trial in range(1, n_trials + 1):
                base = 0.5 + offsets[arm] + 0.1 * fraction
                for epoch in range(1, n_epochs + 1):
                    for split in ("train", "val", "test"):
                        f1 = base + 0.03 * np.log(epoch) + rng.normal(0, 0.01)
                        row = {
                            "fraction": fraction, "arm": arm, "trial": trial, "epoch": epoch,
                            "split": split, "loss": 1.0 / epoch, "f1_weighted": f1,
                            "f1_macro": f1 - 0.1, "accuracy": f1 + 0.02,
                        }
                        for k, name in enumerate(CLASSES):
                            row[f"f1_{name}"] = f1 - 0.05 * k
                        rows.append(row)
    return pd.DataFrame(rows)
