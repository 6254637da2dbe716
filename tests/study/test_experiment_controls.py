"""Controls of the experiment (issue 16): each frozen window run's head standardises the
frozen encoder's code with the mean and SD of that run's own bootstrap sample (sequential and
stacked trials alike); the fine-tuning settings carry patience and the class weighting."""

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.classifier import build_classifier
from ecg_transfer.study.experiment import ArmData, FinetuningConfig, ModelRecipe, run_arm
from ecg_transfer.training.engine import TrainConfig
from tests.tiny import TINY_CAE

CONFIG = TrainConfig(epochs=1, batch_size=8, lr=0.01, device="cpu", monitor_split="val", bf16=False)


def _data(rng) -> ArmData:
    def split(n, shift):
        y = np.arange(n) % 3
        return (rng.standard_normal((n, 256)) + shift).astype(np.float32), y.astype(np.int64)

    # Validation and test windows on another scale: they must never reach the scaling.
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(24, 0.0), split(9, 5.0), split(9, -5.0)
    records = np.array([f"r{i}" for i in range(9)], dtype=object)
    return ArmData(train_x, train_y, val_x, val_y, test_x, test_y, records, records.copy())


@pytest.mark.parametrize("batch_trials", [1, 2])
def test_each_frozen_run_scales_the_code_by_its_own_bootstrap_sample(batch_trials):
    data = _data(np.random.default_rng(0))
    samples = pd.concat([
        pd.DataFrame({"fraction": 1.0, "trial": trial, "seed": seed,
                      "position": np.random.default_rng(seed).integers(0, 24, 12)})
        for trial, seed in ((1, 11), (2, 22))
    ], ignore_index=True)
    built = {}

    def make_model(seed):
        model = build_classifier(TINY_CAE, 3, seed, init="random", freeze=True, init_scheme="standard",
                                 head_hidden=4, dropout=0.0)
        built.setdefault(seed, []).append(model)
        return model

    # The frozen window kind's recipe: the code is scaled by the run's own training rows.
    recipe = ModelRecipe(make_model, fit_to_sample=lambda model, rows: model.fit_input_scaling(rows))
    run_arm("random_frozen", recipe, data, samples, CONFIG, ("a", "b", "c"), None, "fp",
            progress=False, batch_trials=batch_trials)
    for seed in (11, 22):
        model = built[seed][-1]
        positions = np.sort(samples.loc[samples["seed"] == seed, "position"].to_numpy())
        reference = build_classifier(TINY_CAE, 3, seed, init="random", freeze=True, init_scheme="standard",
                                     head_hidden=4, dropout=0.0)
        with torch.no_grad():
            code = reference.encoder(torch.from_numpy(data.train_x[positions]).unsqueeze(1)).double()
        np.testing.assert_allclose(model.head.input_mean.numpy(), code.mean(0).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.head.input_sd.numpy(), code.std(0, unbiased=False).numpy() + 1e-6,
                                   rtol=1e-4)


FINETUNING = {"head": {"hidden": 8, "dropout": 0.0}, "training": {"epochs": 30, "patience": 3, "monitor_split": "val"}}


def test_finetuning_settings_carry_patience_and_the_class_weighting():
    config = FinetuningConfig.from_params(FINETUNING)
    assert config.training.patience == 3 and config.class_weighting == "none"
    assert config.class_weights(np.array([0, 0, 1, 2]), ("a", "b", "c")) is None
    balanced = FinetuningConfig.from_params({**FINETUNING, "class_weighting": "balanced"})
    np.testing.assert_allclose(balanced.class_weights(np.array([0, 0, 1, 2]), ("a", "b", "c")), [4 / 6, 4 / 3, 4 / 3])
    with pytest.raises(ValueError, match="finetuning.class_weighting must be one of"):
        FinetuningConfig.from_params({**FINETUNING, "class_weighting": "inverse"})


def test_run_arm_stops_a_classifier_run_early_and_trains_with_the_class_weights():
    data = _data(np.random.default_rng(1))
    samples = pd.DataFrame({"fraction": 1.0, "trial": 1, "seed": 5,
                            "position": np.random.default_rng(5).integers(0, 24, 24)})
    config = TrainConfig(epochs=40, batch_size=8, lr=1e-9, device="cpu", monitor_split="val", patience=2, bf16=False)

    def make_model(seed):
        return build_classifier(TINY_CAE, 3, seed, init="random", head_hidden=4, dropout=0.0)

    plain = run_arm("random", make_model, data, samples, config, ("a", "b", "c"), None, "fp", progress=False)
    epochs = plain.histories["epoch"].max()
    assert epochs < 40  # a rate of 1e-9 never improves on epoch 1: patience 2 stops at epoch 3
    assert epochs == 3
    weighted = run_arm("random", make_model, data, samples, config, ("a", "b", "c"), None, "fp", progress=False,
                       class_weights=[1.0, 5.0, 0.2])
    first = lambda runs: runs.histories.query("split == 'train' and epoch == 1")["loss"].item()  # noqa: E731
    assert first(weighted) != pytest.approx(first(plain))
