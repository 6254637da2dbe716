import numpy as np
import pandas as pd
import pytest
import torch

from ecg_transfer.models.cae import ConvAutoencoder
from ecg_transfer.models.classifier import FeatureClassifier, build_classifier
from ecg_transfer.training.checkpoints import CheckpointStore
from ecg_transfer.training.engine import TrainConfig, evaluate, fit, learning_rate, predict
from ecg_transfer.training.loop import check_honest_epoch
from ecg_transfer.training.metrics import classification_metrics
from ecg_transfer.training.replicas import LocalReplicas
from ecg_transfer.training.tasks import ClassificationTask, MultiLabelTask, ReconstructionTask
from tests.tiny import TINY_CAE

TINY = TINY_CAE


def _data(n=40, length=256, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, length)).astype(np.float32), rng.integers(0, n_classes, n)


def _comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns="samples_per_s")  # wall-clock throughput is the only non-deterministic column


def _classifier(seed=0):
    return build_classifier(TINY, 3, seed)


CLS = ClassificationTask(("c0", "c1", "c2"))
CAE = ReconstructionTask()
CFG = TrainConfig(epochs=3, batch_size=16, lr=0.005, seed=1)


def test_history_columns_and_rows():
    x, y = _data()
    result = fit(_classifier(), CLS, x, y, {"val": (x[:10], y[:10])}, CFG, progress=False)
    history = result.history
    assert list(history.columns[:6]) == ["epoch", "split", "loss", "f1_weighted", "f1_macro", "accuracy"]
    assert {"f1_c0", "f1_c2", "auroc_macro", "samples_per_s"} <= set(history.columns)
    assert list(zip(history.epoch, history.split)) == [(e, s) for e in (1, 2, 3) for s in ("train", "val")]
    assert (history.samples_per_s > 0).all()
    assert result.monitor == ("val", "f1_weighted")
    test = history[history.split == "val"]
    assert result.best_value == test.f1_weighted.max()
    assert result.best_epoch == int(test.epoch[test.f1_weighted.idxmax()])


def test_same_seed_gives_bit_identical_history_and_weights():
    x, y = _data()
    runs = []
    for _ in range(2):
        model = _classifier()
        runs.append((fit(model, CLS, x, y, {"val": (x, y)}, CFG, progress=False), model))
    pd.testing.assert_frame_equal(_comparable(runs[0][0].history), _comparable(runs[1][0].history), check_exact=True)
    for key, value in runs[0][1].state_dict().items():
        assert torch.equal(value, runs[1][1].state_dict()[key])


def test_global_rng_untouched():
    x, y = _data(n=16)
    torch.manual_seed(99)
    expected = torch.rand(1)
    torch.manual_seed(99)
    fit(_classifier(), CLS, x, y, {"val": (x, y)}, TrainConfig(epochs=1, batch_size=8), progress=False)
    assert torch.equal(torch.rand(1), expected)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    x, y = _data()
    evals = {"val": (x[:12], y[:12])}
    reference_model = _classifier()
    reference = fit(reference_model, CLS, x, y, evals, CFG, progress=False)

    store = CheckpointStore(tmp_path)

    def interrupt(epoch, _history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_classifier(), CLS, x, y, evals, CFG, store, "run", progress=False, on_epoch_end=interrupt)
    assert store.load("run")["epoch"] == 2 and not store.is_done("run")

    resumed_model = _classifier(seed=7)  # the checkpoint, not the fresh init, must decide the weights
    resumed = fit(resumed_model, CLS, x, y, evals, CFG, store, "run", progress=False)
    assert resumed.resumed_from_epoch == 2
    pd.testing.assert_frame_equal(_comparable(resumed.history), _comparable(reference.history), check_exact=True)
    for key, value in reference_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key])

    # A finished run is not trained again: its result comes back from the store.
    calls = []
    again = fit(_classifier(), CLS, x, y, evals, CFG, store, "run", progress=False,
                on_epoch_end=lambda e, h: calls.append(e))
    assert calls == [] and store.is_done("run")
    pd.testing.assert_frame_equal(again.history, resumed.history)


def test_resume_with_another_config_is_refused(tmp_path):
    x, y = _data(n=16)
    store = CheckpointStore(tmp_path)
    with pytest.raises(RuntimeError):
        fit(_classifier(), CLS, x, y, {"val": (x, y)}, CFG, store, "r", progress=False,
            on_epoch_end=lambda e, h: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(ValueError, match="another config.*batch_size: checkpoint 16 vs now 8"):
        fit(_classifier(), CLS, x, y, {"val": (x, y)}, TrainConfig(epochs=3, batch_size=8, seed=1),
            store, "r", progress=False)


def test_reconstruction_reports_mse_and_summed_error_and_keeps_best():
    x, _ = _data(n=24)
    model = ConvAutoencoder(TINY)
    cfg = TrainConfig(epochs=2, batch_size=8)
    result = fit(model, CAE, x, None, {"test": x[:8]}, cfg, progress=False)
    history = result.history
    assert {"mse", "sse_per_window"} <= set(history.columns)
    assert np.allclose(history.sse_per_window, history.mse * 256)
    assert np.allclose(history.loss, history.mse)
    assert result.monitor == ("test", "loss")
    assert result.best_value == history[history.split == "test"].loss.min()
    # restore_best: the model holds the best epoch's weights, which reproduce the best test MSE.
    assert evaluate(model, CAE, x[:8], None, cfg)["mse"] == pytest.approx(result.best_value, rel=1e-5)


def test_nan_loss_stops_with_the_run_and_epoch():
    x, y = _data(n=16)
    x[3, 10] = np.nan
    with pytest.raises(FloatingPointError, match=r"fit\[nan-run\].*epoch 1"):
        fit(_classifier(), CLS, x, y, {"val": (x[4:], y[4:])}, CFG, run_key="nan-run", progress=False)


def test_early_stopping_on_a_flat_monitor():
    # A learning rate far below float resolution leaves the weights bit-identical, so the
    # monitored loss never improves after epoch 1 and patience 2 stops after epoch 3.
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((20, 5)).astype(np.float32), rng.integers(0, 3, 20)
    cfg = TrainConfig(epochs=10, batch_size=5, lr=1e-30, patience=2, monitor_metric="loss")
    result = fit(FeatureClassifier(5, 3, hidden=0, dropout=0.0), CLS, features, labels,
                 {"val": (features, labels)}, cfg, progress=False)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


class RecordingArray:
    """Array stand-in that logs which rows the loop reads and refuses whole-array reads."""

    def __init__(self, data, limit):
        self.data, self.limit, self.reads = data, limit, []
        self.shape = data.shape

    def __getitem__(self, rows):
        selected = self.data[rows]
        if selected.shape[0] > self.limit:
            raise AssertionError(f"read {selected.shape[0]} rows at once")
        self.reads.append(np.atleast_1d(np.arange(self.shape[0])[rows]).tolist())
        return selected


def test_batches_are_read_lazily_and_in_the_same_order_for_every_arm():
    x, y = _data()
    cae = ConvAutoencoder(TINY)
    orders = []
    for init, freeze in (("random", False), ("pretrained", False), ("pretrained", True)):
        recording = RecordingArray(x, limit=16)
        model = build_classifier(TINY, 3, 0, init=init, freeze=freeze, encoder_state=cae.encoder.state_dict())
        fit(model, CLS, recording, y, {"val": (x[:8], y[:8])}, TrainConfig(epochs=2, batch_size=16), progress=False)
        orders.append(recording.reads)
    assert orders[0] == orders[1] == orders[2]
    assert sorted(sum(orders[0][:3], [])) == list(range(40))  # epoch 1 covers every window once


def test_memmap_input_gives_the_same_history(tmp_path):
    x, y = _data(n=24)
    path = tmp_path / "windows.f32"
    stored = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    stored[:] = x
    stored.flush()
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    cfg = TrainConfig(epochs=1, batch_size=8)
    from_memory = fit(_classifier(), CLS, x, y, {"val": (x, y)}, cfg, progress=False)
    from_disk = fit(_classifier(), CLS, mapped, y, {"val": (mapped, y)}, cfg, progress=False)
    pd.testing.assert_frame_equal(_comparable(from_memory.history), _comparable(from_disk.history))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"evals": {"train": None}}, "'train' is reserved"),
        ({"train_y": np.full(8, 5)}, r"outside 0..2"),
        ({"train_x": np.zeros((8, 300), np.float32)}, "300 samples, the model expects 256"),
        ({"train_y": np.zeros(8, dtype=float)}, "integer class indices"),
        ({"evals": {"val": (np.zeros((4, 256), np.float32), np.zeros(4, int))}, "monitor_split": "other"},
         "monitor split 'other' is not among the eval splits"),
    ],
)
def test_bad_inputs_raise(kwargs, message):
    kwargs = dict(kwargs)
    cfg = TrainConfig(epochs=1, monitor_split=kwargs.pop("monitor_split", None))
    arguments = {"train_x": np.zeros((8, 256), np.float32), "train_y": np.zeros(8, dtype=int),
                 "evals": {"val": (np.zeros((4, 256), np.float32), np.zeros(4, int))}}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit(_classifier(), CLS, arguments["train_x"], arguments["train_y"], arguments["evals"], cfg,
            progress=False)


def _sine_classes(n=96, seed=0):
    """Three classes told apart by frequency (1, 2.5, 5 Hz at 250 Hz), random phase, noise, z-scored."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    t = np.arange(256) / 250
    x = np.sin(2 * np.pi * np.array([1.0, 2.5, 5.0])[labels][:, None] * t + rng.uniform(0, 6.3, (n, 1)))
    x = x + 0.3 * rng.standard_normal((n, 256))
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return x.astype(np.float32), labels


def test_the_loop_learns_a_separable_task():
    x, y = _sine_classes()
    result = fit(_classifier(), CLS, x[:64], y[:64], {"val": (x[64:], y[64:])},
                 TrainConfig(epochs=6, batch_size=16), progress=False)
    assert result.best_value >= 0.9  # best held-out weighted F1; chance is about 0.33


def test_cae_pretraining_lowers_the_held_out_mse():
    x, _ = _sine_classes()
    result = fit(ConvAutoencoder(TINY), CAE, x[:64], None, {"test": x[64:]},
                 TrainConfig(epochs=6, batch_size=16), progress=False)
    test = result.history[result.history.split == "test"]
    assert result.best_value < 0.95 * test.mse.iloc[0]


def test_default_schedule_is_the_papers_constant_adam_rate():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.lr_schedule, cfg.warmup_epochs, cfg.grad_clip) == (0.005, "constant", 0.0, 0.0)
    assert {learning_rate(cfg, step, 7) for step in range(70)} == {0.005}


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(epochs=4, lr=0.01, lr_schedule="cosine", warmup_epochs=1)
    rates = [learning_rate(cfg, step, 10) for step in range(40)]
    assert rates[:10] == pytest.approx([0.001 * k for k in range(1, 11)])  # linear warmup to lr
    assert rates[10] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then only down
    assert rates[-1] < 0.0001
    assert learning_rate(TrainConfig(epochs=4, lr=0.01, warmup_epochs=0.5), 39, 10) == 0.01  # constant after warmup


@pytest.mark.parametrize(
    "kwargs, message",
    [({"lr_schedule": "step"}, "lr_schedule"), ({"warmup_epochs": -1}, "warmup_epochs"),
     ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs"), ({"grad_clip": -1.0}, "grad_clip")],
)
def test_invalid_schedule_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_scheduled_run_resumes_to_the_same_history(tmp_path):
    x, _ = _data(n=24)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.003, lr_schedule="cosine", warmup_epochs=0.5, grad_clip=1.0)
    torch.manual_seed(0)
    straight = fit(ConvAutoencoder(TINY), CAE, x, None, {"test": x[:8]}, cfg, progress=False)
    store = CheckpointStore(tmp_path)
    torch.manual_seed(0)
    model = ConvAutoencoder(TINY)

    def stop_after_first(epoch, history):
        if epoch == 1:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        fit(model, CAE, x, None, {"test": x[:8]}, cfg, store, "cae", progress=False,
            on_epoch_end=stop_after_first)
    torch.manual_seed(0)
    resumed = fit(ConvAutoencoder(TINY), CAE, x, None, {"test": x[:8]}, cfg, store, "cae", progress=False)
    assert resumed.resumed_from_epoch == 1
    pd.testing.assert_frame_equal(_comparable(straight.history), _comparable(resumed.history), check_exact=True)


def test_tiny_cae_learns_with_the_default_design():
    # A smooth random-phase signal: the default CAE design must move clearly off the
    # "predict zero" MSE of 1 that the old (max pool, nearest, post-ReLU) design sat at.
    rng = np.random.default_rng(0)
    t = np.arange(256) / 32.0
    phase, freq = rng.uniform(0, 2 * np.pi, (64, 1)), rng.uniform(0.8, 1.6, (64, 1))
    x = np.sin(2 * np.pi * freq * t + phase).astype(np.float32)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    cfg = TrainConfig(epochs=12, batch_size=16, lr=0.01, lr_schedule="cosine", warmup_epochs=0.5)
    torch.manual_seed(0)
    result = fit(ConvAutoencoder(TINY), CAE, x, None, {"test": x[:16]}, cfg, progress=False)
    assert result.best_value < 0.8  # measured 0.62


# ---------------------------------------------------------------- AUROC, predictions, records


def test_probabilities_give_auroc_and_the_kept_predictions():
    x, y = _sine_classes(n=80)
    evals = {"val": (x[48:64], y[48:64]), "test": (x[64:], y[64:])}
    cfg = TrainConfig(epochs=4, batch_size=16, seed=2, monitor_split="val")
    result = fit(_classifier(), CLS, x[:48], y[:48], evals, cfg, progress=False)
    history = result.history
    assert list(history.columns[-2:]) == ["auroc_macro", "samples_per_s"]
    assert history.auroc_macro.between(0, 1).all()  # train rows too

    honest, best_test = result.predictions["honest"], result.predictions["best_test"]
    assert honest["epoch"] == result.best_epoch
    test = history[history.split == "test"].set_index("epoch")
    assert best_test["epoch"] == test.f1_weighted.idxmax()  # the earliest best test epoch
    for kept in (honest, best_test):
        assert set(kept) == {"epoch", "val", "test"}
        assert kept["val"].shape == (16, 3) and kept["test"].shape == (16, 3) and kept["test"].dtype == np.float32
        np.testing.assert_allclose(kept["test"].sum(axis=1), 1.0, rtol=1e-5)
        # The kept probabilities are the ones the history row was computed from.
        again = classification_metrics(y[64:], kept["test"].argmax(1), CLS.classes, kept["test"])
        assert again["f1_weighted"] == test.loc[kept["epoch"], "f1_weighted"]
        assert again["auroc_macro"] == test.loc[kept["epoch"], "auroc_macro"]


def test_no_best_test_predictions_without_a_test_split_and_none_for_reconstruction():
    x, y = _data(n=24)
    result = fit(_classifier(), CLS, x, y, {"val": (x[:8], y[:8])}, TrainConfig(epochs=2, batch_size=8),
                 progress=False)
    assert set(result.predictions) == {"honest"}
    cae = fit(ConvAutoencoder(TINY), CAE, x, None, {"test": x[:8]}, TrainConfig(epochs=1, batch_size=8),
              progress=False)
    assert cae.predictions == {}


def test_record_level_rows_average_the_window_logits():
    x, y = _sine_classes(n=72)
    test_x, test_y = x[48:], y[48:]
    records = np.repeat(["r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"], 3)
    test_y = np.repeat(test_y[::3], 3)  # one label per record
    cfg = TrainConfig(epochs=1, batch_size=16, monitor_split="val_record")
    model = _classifier()
    result = fit(model, CLS, x[:48], y[:48], {"val": (test_x, test_y, records)}, cfg, progress=False)
    history = result.history
    assert list(history.split) == ["train", "val", "val_record"]
    assert result.monitor == ("val_record", "f1_weighted")

    logits = predict(model, test_x, device="cpu").reshape(8, 3, 3).mean(axis=1)  # model = epoch 1 weights
    record_row = history[history.split == "val_record"].iloc[0]
    expected = classification_metrics(test_y[::3], logits.argmax(1), CLS.classes)
    for metric in ("f1_weighted", "f1_macro", "accuracy"):
        assert record_row[metric] == pytest.approx(expected[metric])
    log_probabilities = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy()
    assert record_row["loss"] == pytest.approx(-log_probabilities[np.arange(8), test_y[::3]].mean(), rel=1e-5)

    honest = result.predictions["honest"]
    assert set(honest) == {"epoch", "val", "val_record", "val_record_ids"} and honest["val"].shape == (24, 3)
    assert honest["val_record"].shape == (8, 3) and list(honest["val_record_ids"]) == [f"r{i}" for i in range(1, 9)]
    np.testing.assert_allclose(honest["val_record"], torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-6)


def test_windows_of_one_record_must_share_its_label():
    x, y = _data(n=16)
    y[:2] = [0, 1]
    records = np.array(["a", "a"] + [f"r{i}" for i in range(14)])
    with pytest.raises(ValueError, match=r"split val record 'a' has windows labelled \['c0', 'c1'\]"):
        fit(_classifier(), CLS, x, y, {"val": (x, y, records)}, CFG, progress=False)
    with pytest.raises(ValueError, match="reconstruction task is not scored per record"):
        fit(ConvAutoencoder(TINY), CAE, x, None, {"val": (x, None, records)}, CFG, progress=False)
    with pytest.raises(ValueError, match="record ids of shape"):
        fit(_classifier(), CLS, x, y, {"val": (x, y, records[:3])}, CFG, progress=False)


def test_checkpoints_and_results_load_weights_only_and_keep_predictions(tmp_path):
    x, y = _data()
    records = np.arange(12) // 2
    y[:12] = np.repeat(y[:12:2], 2)
    evals = {"val": (x[12:24], y[12:24]), "test": (x[:12], y[:12], records)}
    cfg = TrainConfig(epochs=3, batch_size=16, seed=1, monitor_split="val")
    reference = fit(_classifier(), CLS, x, y, evals, cfg, progress=False)

    store = CheckpointStore(tmp_path)

    def interrupt(epoch, _history):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_classifier(), CLS, x, y, evals, cfg, store, "run", progress=False, on_epoch_end=interrupt)
    checkpoint = torch.load(store.run_dir("run") / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and isinstance(checkpoint["history"], list)
    resumed = fit(_classifier(seed=5), CLS, x, y, evals, cfg, store, "run", progress=False)
    done = torch.load(store.run_dir("run") / "result.pt", weights_only=True)
    assert done["epoch"] == 3 and len(done["history"]) == len(reference.history)
    reused = fit(_classifier(), CLS, x, y, evals, cfg, store, "run", progress=False)
    for result in (resumed, reused):
        pd.testing.assert_frame_equal(_comparable(result.history), _comparable(reference.history), check_exact=True)
        assert result.predictions.keys() == reference.predictions.keys() == {"honest", "best_test"}
        for selection, kept in reference.predictions.items():
            assert kept.keys() == result.predictions[selection].keys()
            for key, value in kept.items():
                np.testing.assert_array_equal(result.predictions[selection][key], value)
    assert list(reference.predictions["honest"]["test_record_ids"]) == list(range(6))


@pytest.mark.parametrize(
    "evals, monitor_split, message",
    [
        ({"test": "held-out"}, None, r"monitor split 'val' is not among the eval splits \['test'\]; a classifier needs a validation split"),
        ({"val": "held-out", "test": "held-out"}, "test", "would select the kept .* on the test data"),
        ({"val": "held-out", "test": "records"}, "test_record", "would select the kept .* on the test data"),
        ({"val": "held-out"}, "train", "would select the kept .* on the training data"),
    ],
)
def test_a_classifier_must_pick_its_epoch_on_a_validation_split(evals, monitor_split, message):
    x, y = _data(n=16)
    splits = {name: (x, y, np.arange(16)) if kind == "records" else (x, y) for name, kind in evals.items()}
    with pytest.raises(ValueError, match=message):
        fit(_classifier(), CLS, x, y, splits, TrainConfig(epochs=1, batch_size=8, monitor_split=monitor_split),
            progress=False)


def test_a_classifier_monitors_val_by_default_and_its_honest_predictions_come_from_there():
    x, y = _data()
    evals = {"val": (x[:12], y[:12]), "test": (x[12:24], y[12:24])}
    result = fit(_classifier(), CLS, x, y, evals, TrainConfig(epochs=3, batch_size=16, seed=1), progress=False)
    assert result.monitor == ("val", "f1_weighted")
    assert check_honest_epoch(result.history, result.predictions, result.monitor) == result.best_epoch
    # predictions selected on another split are caught
    history = result.history.copy()
    val = history.split == "val"
    history.loc[val, "f1_weighted"] = np.where(history.loc[val, "epoch"] == 3, 2.0, 0.0)  # best now epoch 3
    if result.predictions["honest"]["epoch"] != 3:
        with pytest.raises(ValueError, match=r"'honest' predictions are from epoch \d, but the best val f1_weighted .* epoch 3"):
            check_honest_epoch(history, result.predictions, ("val", "f1_weighted"))
    history.loc[val, "f1_weighted"] = np.where(history.loc[val, "epoch"] == 3, 0.0, 2.0)  # ties: the earliest, epoch 1
    predictions = {"honest": {"epoch": 2}}
    with pytest.raises(ValueError, match="epoch 2, but .* epoch 1"):
        check_honest_epoch(history, predictions, ("val", "f1_weighted"))
    assert check_honest_epoch(history, {"honest": {"epoch": 1}}, ("val", "f1_weighted")) == 1


def test_the_honest_epoch_check_takes_the_direction_of_the_tasks_monitor():
    """A (split, metric) monitor is read in its task's direction: the best multi-label
    auroc_macro is the highest, the best reconstruction mse the lowest."""
    history = pd.DataFrame({"epoch": [1, 2, 3], "split": "val", "auroc_macro": [0.6, 0.8, 0.7],
                            "mse": [0.5, 0.2, 0.3]})
    assert check_honest_epoch(history, {"honest": {"epoch": 2}}, ("val", "auroc_macro"), MultiLabelTask(["AF"])) == 2
    assert check_honest_epoch(history, {"honest": {"epoch": 2}}, ("val", "mse"), ReconstructionTask()) == 2
    with pytest.raises(ValueError, match="best val mse in the history is at epoch 1"):
        check_honest_epoch(history, {"honest": {"epoch": 2}}, ("val", "mse"))  # no task: higher is better


def test_reconstruction_keeps_its_held_out_monitor():
    x, _ = _data(n=16)
    result = fit(ConvAutoencoder(TINY), CAE, x, None, {"test": x[:8]}, TrainConfig(epochs=1, batch_size=8),
                 progress=False)
    assert result.monitor == ("test", "loss")


class _RecordingReplicas(LocalReplicas):
    """The local answers, with a log of what the loop asked."""

    def __init__(self):
        self.asked = []

    def __getattribute__(self, name):
        if name in ("training_device", "checkpoints", "wrap", "shard", "global_loss", "end_epoch", "eval_range", "sum"):
            object.__getattribute__(self, "asked").append(name)
        return object.__getattribute__(self, name)


def test_the_loop_asks_its_replicas_and_the_local_ones_change_nothing(tmp_path):
    x, y = _data(n=24)
    evals = {"val": (x[:8], y[:8])}
    cfg = TrainConfig(epochs=2, batch_size=8, seed=4)
    plain = fit(_classifier(), CLS, x, y, evals, cfg, progress=False)
    replicas = _RecordingReplicas()
    asked = fit(_classifier(), CLS, x, y, evals, cfg, CheckpointStore(tmp_path), "r", progress=False,
                distributed=replicas)
    pd.testing.assert_frame_equal(_comparable(plain.history), _comparable(asked.history), check_exact=True)
    counts = {name: replicas.asked.count(name) for name in set(replicas.asked)}
    assert counts == {"checkpoints": 1, "training_device": 1, "wrap": 1, "shard": 6, "global_loss": 6,
                      "end_epoch": 2, "eval_range": 2, "sum": 2}
