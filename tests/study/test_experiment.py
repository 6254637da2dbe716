import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from ecg_transfer.models.classifier import FeatureClassifier
from ecg_transfer.study.experiment import (
    ArmData,
    ModelRecipe,
    describe_outcomes,
    plan_runs,
    run_arm,
    run_key,
)
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig


def _data(rng, n_features=6):
    def split(n):
        y = np.arange(n) % 3
        x = (rng.standard_normal((n, n_features)) + y[:, None]).astype(np.float32)
        return x, y.astype(np.int64)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(30), split(12), split(12)
    records = np.array([f"r{i:02d}" for i in range(12)], dtype=object)
    return ArmData(train_x, train_y, val_x, val_y, test_x, test_y, records, records.copy())


def _samples():
    rows = []
    for fraction, size in ((1.0, 30), (0.5, 15)):
        for trial, seed in ((1, 101), (2, 202)):
            positions = np.random.default_rng(seed).integers(0, 30, size)
            rows.append(pd.DataFrame({"fraction": fraction, "trial": trial, "seed": seed, "position": positions}))
    return pd.concat(rows, ignore_index=True)


CLASSES = ("a", "b", "c")
CONFIG = TrainConfig(epochs=2, batch_size=8, lr=0.01, device="cpu", monitor_split="val")


def test_run_arm_trains_every_fraction_and_trial_and_reuses_finished_runs(tmp_path, caplog):
    data = _data(np.random.default_rng(0))
    seeds_seen = []

    def make_model(seed):
        seeds_seen.append(seed)
        torch.manual_seed(seed)
        return FeatureClassifier(6, 3, hidden=8, dropout=0.0)

    store = CheckpointStore(tmp_path)
    with caplog.at_level(logging.INFO, logger="ecg_transfer.study.experiment"):
        runs = run_arm("image", make_model, data, _samples(), CONFIG, CLASSES, store, "abc", progress=False)
    assert "image: reused 0 finished runs, resumed 0, trained 4" in caplog.text
    history, records = runs.histories, runs.records
    assert seeds_seen == [101, 202, 101, 202]  # the trial's seed, at every fraction
    assert list(history.columns[:3]) == ["fraction", "arm", "trial"]
    assert set(history["split"]) == {"train", "val", "test"}
    assert len(history) == 4 * 2 * 3  # runs x epochs x splits
    assert [r["params"]["n_train"] for r in records] == [30, 30, 15, 15]
    assert {r["tags"]["arm"] for r in records} == {"image"}
    assert records[0]["params"]["fraction"] == records[0]["tags"]["fraction"] == "1"
    assert store.is_done(run_key("image", 0.5, 2, "abc"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecg_transfer.study.experiment"):
        again = run_arm("image", make_model, data, _samples(), CONFIG, CLASSES, store, "abc", progress=False)
    assert "image: reused 4 finished runs, resumed 0, trained 0" in caplog.text
    pd.testing.assert_frame_equal(history.drop(columns="samples_per_s"), again.histories.drop(columns="samples_per_s"))
    pd.testing.assert_frame_equal(runs.predictions, again.predictions)


def test_run_arm_saves_the_probabilities_of_the_honest_and_the_best_test_epoch(tmp_path):
    data = _data(np.random.default_rng(1))

    def make_model(seed):
        torch.manual_seed(seed)
        return FeatureClassifier(6, 3, hidden=8, dropout=0.0)

    runs = run_arm("image", make_model, data, _samples(), CONFIG, CLASSES, None, "abc", progress=False)
    predictions = runs.predictions
    assert list(predictions.columns) == [
        "fraction", "arm", "trial", "selection", "epoch", "split", "record_id", "label", "prob_a", "prob_b", "prob_c"
    ]
    # 4 runs x 2 selections x (12 val + 12 test records)
    assert len(predictions) == 4 * 2 * 24
    np.testing.assert_allclose(predictions[["prob_a", "prob_b", "prob_c"]].sum(axis=1), 1.0, rtol=1e-5)
    one = predictions[(predictions["fraction"] == 1.0) & (predictions["trial"] == 1) & (predictions["split"] == "test")]
    assert list(one.loc[one["selection"] == "honest", "label"]) == [CLASSES[y] for y in data.test_y]
    summary_runs = runs.histories
    run = summary_runs[(summary_runs["fraction"] == 1.0) & (summary_runs["trial"] == 1)]
    val = run[run["split"] == "val"].set_index("epoch")["f1_weighted"]
    assert one.loc[one["selection"] == "honest", "epoch"].iloc[0] == int(val.idxmax())
    test = run[run["split"] == "test"].set_index("epoch")["f1_weighted"]
    best = one[one["selection"] == "best_test"]
    assert best["epoch"].iloc[0] == int(test.idxmax())
    # the saved probabilities reproduce the history's test F1 at that epoch
    predicted = best[["prob_a", "prob_b", "prob_c"]].to_numpy().argmax(axis=1)
    assert f1_score(data.test_y, predicted, average="weighted", labels=[0, 1, 2], zero_division=0) == pytest.approx(test.max())


def test_describe_outcomes_says_what_resume_did():
    assert describe_outcomes(["reused", "resumed:3", "trained", "resumed:7", "collected"]) == (
        "reused 1 finished runs, resumed 2 (from epoch 3, 7), trained 1, collected 1 trained by another worker"
    )


def test_runs_are_planned_as_data_before_anything_trains():
    plan = plan_runs("image", _samples(), "abc")
    assert [(run.fraction, run.trial, run.seed) for run in plan] == [(1.0, 1, 101), (1.0, 2, 202), (0.5, 1, 101), (0.5, 2, 202)]
    assert plan[2].key == run_key("image", 0.5, 1, "abc") == "finetuning/image/fraction=0.5/trial=01/abc"
    samples = _samples()
    own = samples[(samples["fraction"] == 0.5) & (samples["trial"] == 1)]["position"].to_numpy()
    np.testing.assert_array_equal(plan[2].positions, np.sort(own))


def test_a_recipe_says_what_a_model_learns_from_its_own_sample():
    seen = []
    recipe = ModelRecipe(lambda seed: FeatureClassifier(6, 3, hidden=0), fit_to_sample=lambda model, rows: seen.append(rows))
    rows = np.ones((4, 6), dtype=np.float32)
    recipe.model(1, lambda: rows)
    assert len(seen) == 1 and seen[0] is rows
    plain = ModelRecipe(lambda seed: FeatureClassifier(6, 3, hidden=0))
    plain.model(1, lambda: pytest.fail("a recipe without fit_to_sample never reads the training rows"))


def test_saved_honest_predictions_must_come_from_the_summaries_honest_epoch():
    """Issue 16 item 3: a run kept on validation loss saves its "honest" predictions at the
    lowest-loss epoch while the summaries' honest scores take the best validation f1_weighted:
    collecting it is an error naming the run, not a Table 2 mixing two epochs."""
    data = _data(np.random.default_rng(3))

    def make_model(seed):
        torch.manual_seed(seed)
        return FeatureClassifier(6, 3, hidden=8, dropout=0.0)

    on_loss = TrainConfig(epochs=6, batch_size=8, lr=0.05, device="cpu", monitor_split="val", monitor_metric="loss")
    with pytest.raises(ValueError, match=r"image: run fraction=.*trial=.*honest.*epoch \d+.*val f1_weighted"):
        run_arm("image", make_model, data, _samples(), on_loss, CLASSES, None, "abc", progress=False)
    run_arm("image", make_model, data, _samples(), replace(on_loss, monitor_metric=None), CLASSES, None, "abc",
            progress=False)
