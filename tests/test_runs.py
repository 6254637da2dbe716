import numpy as np
import torch

from ecg_transfer.runs import fingerprint


def test_fingerprint_is_stable_for_equal_content_and_changes_with_it():
    labels = np.array(["SR", "SB", None], dtype=object)
    same = np.array(["SR", "SB", None], dtype=object)  # other objects, same strings
    assert fingerprint({"lr": 0.005}, labels, np.arange(3)) == fingerprint({"lr": 0.005}, same, np.arange(3))
    assert fingerprint(labels) != fingerprint(np.array(["SR", "SB", "AF"], dtype=object))
    assert fingerprint(np.arange(3)) != fingerprint(np.arange(3).astype(np.int32))  # dtype counts
    assert fingerprint({"lr": 0.005}) != fingerprint({"lr": 0.001})
    weights = {"w": torch.ones(2)}
    assert fingerprint(weights) == fingerprint({"w": torch.ones(2)}) != fingerprint({"w": torch.zeros(2)})
