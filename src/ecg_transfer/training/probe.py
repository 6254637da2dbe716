"""Linear probe: how much of a label a frozen representation holds, read by a linear model.

A pretext task is judged by what a classifier can do with the frozen encoder's codes. The
fine-tuned arms of a study answer that too, but mix it with what fine-tuning learns; a linear
probe asks the codes alone, cheaply, so a pretraining can be scored many times (corpus sizes,
seeds). The probe is the usual one of self-supervised learning papers: each feature
standardised with the training codes' mean and SD, then a multinomial logistic regression
(L2, C = 1), scored by macro F1 on codes of other records.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _codes_and_labels(codes, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(codes, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"linear_probe_f1: {name} codes must be (windows, features), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"linear_probe_f1: {name} labels must be ({x.shape[0]},) like its codes, got {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"linear_probe_f1: {name} codes hold NaN or infinite values")
    return x, y


def linear_probe_f1(train_codes, train_labels, test_codes, test_labels, max_iter: int = 3000) -> float:
    """Macro F1 on the test codes of a logistic regression fitted on the standardised train codes.

    Codes are (windows, features), e.g. ``engine.predict(encoder, windows)``; keep a record's
    windows on one side (a record-disjoint split), or the probe also scores memorised records.
    Macro F1 averages the classes present in either test labels or predictions, so a probe
    that ignores a class pays for it. Deterministic: the solver (lbfgs) draws nothing.
    """
    x_train, y_train = _codes_and_labels(train_codes, train_labels, "train")
    x_test, y_test = _codes_and_labels(test_codes, test_labels, "test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"linear_probe_f1: train codes have {x_train.shape[1]} features, test codes {x_test.shape[1]}"
        )
    if np.unique(y_train).size < 2:
        raise ValueError("linear_probe_f1: the train labels hold fewer than two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(x_train, y_train)
    return float(f1_score(y_test, probe.predict(x_test), average="macro"))


__all__ = ["linear_probe_f1"]
