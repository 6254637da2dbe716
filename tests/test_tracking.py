"""Live tracking: child runs open while they train, one metric batch per epoch, real durations,
and end states FINISHED / FAILED / KILLED (ecg_transfer.tracking)."""

import logging
import os
import signal
import sys
import time
import types

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ecg_transfer import tracking
from ecg_transfer.tracking import (
    NullTracker,
    RunTracker,
    Terminated,
    end_open_runs,
    epoch_logger,
    open_runs,
    raise_on_sigterm,
    value_text,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # one store for the module: creating a SQLite store takes seconds
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}")


@pytest.fixture
def tracker(client):
    experiment = client.get_experiment_by_name("tracking_test")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("tracking_test")
    parent = client.create_run(experiment_id, run_name="parent")
    tracking.reset_links()  # a store another test took down is up again
    yield RunTracker(client, experiment_id, parent.info.run_id)
    end_open_runs(tracking.KILLED, "test teardown")
    tracking.reset_links()


def _epoch(epoch: int, loss: float) -> pd.DataFrame:
    return pd.DataFrame({
        "epoch": [epoch] * 3, "split": ["train", "val", "test"], "loss": [loss, loss + 0.1, loss + 0.2],
        "f1_weighted": [float("nan"), 0.5 + epoch / 10, 0.4 + epoch / 10],
    })


def test_a_run_is_open_while_it_trains_and_logs_each_epoch_as_it_ends(tracker, client):
    run = tracker.start("transfer-f1-t1", {"arm": "transfer", "fraction": 1.0, "lr": 1e-3},
                        {"arm": "transfer", "fraction": 1.0, "trial": 1})
    history = _epoch(1, 1.0)
    run.on_epoch_end(1, history)
    live = client.get_run(run.run_id)
    assert live.info.status == "RUNNING"
    assert live.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert live.data.metrics == {"train_loss": 1.0, "val_loss": 1.1, "test_loss": 1.2,
                                 "val_f1_weighted": 0.6, "test_f1_weighted": 0.5}
    assert open_runs() == [run]
    time.sleep(0.3)
    history = pd.concat([history, _epoch(2, 0.5)], ignore_index=True)
    run.on_epoch_end(2, history)
    run.finish({"honest_test_f1_weighted": 0.6}, params={"device": "cpu"})

    done = client.get_run(run.run_id)
    assert done.info.status == "FINISHED"
    assert done.info.end_time - done.info.start_time >= 300  # the real duration, not ~0
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val_loss")] == [(1, 1.1), (2, 0.6)]
    assert done.data.metrics["honest_test_f1_weighted"] == 0.6
    # one spelling for the fraction: tag and param alike
    assert done.data.params == {"arm": "transfer", "fraction": "1", "lr": "0.001", "device": "cpu"}
    assert done.data.tags["fraction"] == done.data.params["fraction"]
    assert done.data.tags["live"] == "True"
    assert open_runs() == []


def test_several_runs_are_open_at_once_each_with_its_own_history(tracker, client):
    runs = [tracker.start(f"random-f0.5-t{trial}", {"trial": trial}) for trial in range(3)]
    histories = [pd.DataFrame() for _ in runs]
    for epoch in (1, 2):
        for trial, run in enumerate(runs):
            histories[trial] = pd.concat([histories[trial], _epoch(epoch, trial + epoch)], ignore_index=True)
            run.on_epoch_end(epoch, histories[trial])
    assert {client.get_run(r.run_id).info.status for r in runs} == {"RUNNING"}
    for run in runs:
        run.finish()
    for trial, run in enumerate(runs):
        assert [m.value for m in client.get_metric_history(run.run_id, "train_loss")] == [trial + 1, trial + 2]


def test_a_resumed_run_logs_its_earlier_epochs_with_its_first_new_one(tracker, client):
    history = pd.concat([_epoch(e, 1.0 / e) for e in (1, 2, 3)], ignore_index=True)
    with tracker.start("resumed") as run:
        run.on_epoch_end(3, history)  # epochs 1-2 came from the checkpoint
    assert [m.step for m in client.get_metric_history(run.run_id, "val_loss")] == [1, 2, 3]
    assert client.get_run(run.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"), (Terminated(), "KILLED")],
)
def test_a_run_left_by_an_exception_ends_failed_and_by_an_interrupt_killed(tracker, client, error, status):
    with pytest.raises(type(error)):
        with tracker.start("crashing") as run:
            run.log_epoch(1, [{"split": "train", "loss": 1.0}])
            raise error
    assert client.get_run(run.run_id).info.status == status
    assert open_runs() == []


def test_end_open_runs_ends_what_is_left(tracker, client):
    runs = [tracker.start("a"), tracker.start("b")]
    runs[0].finish()
    assert end_open_runs("KILLED", "test") == [runs[1].run_id]
    assert [client.get_run(r.run_id).info.status for r in runs] == ["FINISHED", "KILLED"]


def test_a_finished_run_from_disk_is_logged_at_once_with_its_duration(tracker, client):
    history = pd.concat([_epoch(1, 1.0), _epoch(2, 0.5)], ignore_index=True)
    run_id = tracker.log_record({
        "run_name": "image-f1-t2", "params": {"fraction": 1.0}, "tags": {"fraction": "1", "reused": True},
        "history": history, "metrics": {"lci": 0.2, "nan": float("nan")}, "duration_s": 42.5,
    })
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.end_time - run.info.start_time == 42_500
    assert run.data.metrics["lci"] == 0.2 and "nan" not in run.data.metrics
    assert len(client.get_metric_history(run_id, "test_f1_weighted")) == 2
    assert run.data.tags["reused"] == "True" and run.data.tags["live"] == "False"


def test_after_one_failing_call_no_call_goes_to_that_store_and_the_runs_lacking_tracking_are_named(
        tracker, client, caplog):
    """Issue 20 item 4: a server that goes away costs one failing call, not minutes per call."""
    run = tracker.start("server-away")
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("server away")

    away = type("Client", (), {"log_batch": staticmethod(refuse), "set_terminated": staticmethod(refuse),
                               "create_run": staticmethod(refuse), "tracking_uri": client.tracking_uri})()
    run.client = tracker.client = away
    with caplog.at_level(logging.WARNING, logger="ecg_transfer.tracking"):
        run.log_epoch(1, [{"split": "train", "loss": 1.0}])
        run.log_epoch(2, [{"split": "train", "loss": 0.5}])
        run.finish({"honest_test_f1_weighted": 0.5})
        later = tracker.start("after-the-outage", {"fraction": 1.0})
        later.log_epoch(1, [{"split": "train", "loss": 1.0}])
        later.finish()
        assert tracker.log_finished("from-disk", metrics={"m": 1.0}) is None
    assert len(calls) == 1  # the first failure only
    assert sum("server away" in m for m in caplog.messages) == 1
    assert later.run_id is None and later.status == "FINISHED" and tracking.open_runs() == []
    assert client.get_run(run.run_id).info.status == "RUNNING"  # what could not be sent stays so
    untracked = tracking.untracked_runs()[client.tracking_uri]
    assert untracked == {"server-away": "logging epoch 1", "after-the-outage": "creating the run",
                         "from-disk": "creating the run"}
    report = tracking.report_untracked()
    assert "3 run(s) lack tracking" in report and "after-the-outage" in report


def test_a_metric_name_mlflow_refuses_is_an_error_not_an_outage(tracker, client):
    run = tracker.start("bad-name")
    with pytest.raises(ValueError, match="loss<1>"):
        run.log_epoch(1, [{"split": "train", "loss<1>": 1.0}])
    run.log_epoch(2, [{"split": "train", "loss": 0.5}])  # the store is still up
    run.finish()
    assert client.get_run(run.run_id).data.metrics == {"train_loss": 0.5}


ODD_LABELS = ["~", "AF+flutter", "1st° AV block", "N/A", "(other)", "?"]


def test_per_class_metrics_of_any_label_reach_mlflow_under_safe_names_with_the_mapping(tracker, client):
    """Issue 20 item 1: ``train_f1_~`` is no MLflow name; every epoch still gets logged."""
    from ecg_transfer.signals.classes import class_table

    rows = [{"epoch": 1, "split": split, "loss": 1.0, **{f"f1_{label}": i / 10 for i, label in enumerate(ODD_LABELS)},
             "f1_SR": 0.9, "f1_weighted": 0.5} for split in ("train", "val")]
    with tracker.start("odd-labels") as run:
        run.on_epoch_end(1, pd.DataFrame(rows))
        run.on_epoch_end(2, pd.DataFrame(rows).assign(epoch=2))
        run.finish({"honest_test_f1_~": 0.3})
    done = client.get_run(run.run_id)
    table = class_table(ODD_LABELS + ["SR"])
    safe = dict(zip(table["label"], table["safe_name"]))
    assert safe["SR"] == "SR" and len(set(safe.values())) == len(safe)
    for split in ("train", "val"):
        history = client.get_metric_history(run.run_id, f"{split}_f1_{safe['~']}")
        assert [(m.step, m.value) for m in history] == [(1, 0.0), (2, 0.0)]
        assert f"{split}_f1_SR" in done.data.metrics and f"{split}_f1_weighted" in done.data.metrics
    assert done.data.metrics[f"honest_test_f1_{safe['~']}"] == 0.3
    assert {f"class_name.{safe[label]}": label for label in ODD_LABELS} == {
        k: v for k, v in done.data.params.items() if k.startswith("class_name.")}


def test_per_label_auroc_of_a_multilabel_run_reaches_mlflow_under_safe_names(tracker, client):
    """Issue 19: a multi-label history has ``auroc_<label>`` beside ``f1_<label>``."""
    from ecg_transfer.signals.classes import safe_class_name

    rows = [{"epoch": 1, "split": "val", "loss": 1.0, "auroc_macro": 0.7, "auroc_AF+flutter": 0.6, "auroc_SR": 0.8}]
    with tracker.start("multilabel") as run:
        run.on_epoch_end(1, pd.DataFrame(rows))
        run.finish({"honest_test_auroc_macro": 0.75})
    done = client.get_run(run.run_id)
    assert done.data.metrics == {"val_loss": 1.0, "val_auroc_macro": 0.7, "val_auroc_SR": 0.8,
                                 f"val_auroc_{safe_class_name('AF+flutter')}": 0.6, "honest_test_auroc_macro": 0.75}
    assert done.data.params[f"class_name.{safe_class_name('AF+flutter')}"] == "AF+flutter"


def test_a_server_where_nothing_listens_is_an_error_naming_it_at_once(tmp_path):
    import socket
    import time as clock

    from ecg_transfer.tracking import TrackingStoreUnreachable, check_tracking_store

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{probe.getsockname()[1]}"
    started = clock.monotonic()
    with pytest.raises(TrackingStoreUnreachable, match=uri.replace(".", r"\.")):
        check_tracking_store(uri, "x")
    assert clock.monotonic() - started < 60  # generous; MLflow's own retries took over 4 minutes


def test_a_sqlite_store_and_its_experiment_are_created_once_under_a_lock(tmp_path):
    from ecg_transfer.tracking import check_tracking_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    check_tracking_store(uri, "made_once")
    check_tracking_store(uri, "made_once")
    assert (tmp_path / "mlflow.db.lock").exists()
    assert MlflowClient(tracking_uri=uri).get_experiment_by_name("made_once") is not None


def test_the_null_tracker_takes_the_same_calls():
    tracker = NullTracker()
    calls = []
    with tracker.start("x", {"a": 1}) as run:
        callback = epoch_logger(run, then=lambda epoch, history: calls.append(epoch))
        callback(1, _epoch(1, 1.0))
        run.finish({"m": 1.0})
    assert calls == [1] and run.status == "FINISHED"
    assert tracker.log_record({"run_name": "y"}) is None


def test_epoch_logger_logs_then_calls_the_next_callback(tracker, client):
    seen = []
    with tracker.start("chained") as run:
        epoch_logger(run, then=lambda epoch, history: seen.append(len(history)))(1, _epoch(1, 1.0))
    assert seen == [3]
    assert client.get_run(run.run_id).data.metrics["train_loss"] == 1.0


def test_values_have_one_spelling():
    assert [value_text(v) for v in (1.0, 0.5, 1, 1e-3, 0.1 + 0.2, True, "1.0")] == [
        "1", "0.5", "1", "0.001", "0.30000000000000004", "True", "1.0"]


def test_sigterm_becomes_an_exception_while_installed():
    previous = signal.getsignal(signal.SIGTERM)
    restore = raise_on_sigterm()
    try:
        with pytest.raises(Terminated) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; never reached
        assert raised.value.code == 128 + signal.SIGTERM
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_system_metrics_start_once_per_run_and_stop(monkeypatch):
    started = []

    class Monitor:
        def __init__(self, run_id, **kwargs):
            self.run_id = run_id

        def start(self):
            started.append(self.run_id)

        def finish(self):
            started.remove(self.run_id)

    fake = types.ModuleType("mlflow.system_metrics.system_metrics_monitor")
    fake.SystemMetricsMonitor = Monitor
    monkeypatch.setitem(sys.modules, "mlflow.system_metrics.system_metrics_monitor", fake)
    monkeypatch.setattr(tracking.system_metrics, "system_metrics_wanted", lambda mode: mode != "false")
    assert tracking.start_system_metrics("r1", "true") and tracking.start_system_metrics("r1", "true")
    assert not tracking.start_system_metrics("r2", "false")
    assert started == ["r1"]
    tracking.stop_system_metrics()
    assert started == []


def test_system_metrics_off_without_psutil_or_when_asked(monkeypatch):
    assert not tracking.system_metrics_wanted("false")
    with pytest.raises(ValueError, match="system_metrics"):
        tracking.system_metrics_wanted("sometimes")
    monkeypatch.setattr(tracking.system_metrics.importlib.util, "find_spec", lambda name: None)
    assert not tracking.system_metrics_wanted("true")


def test_both_trackers_and_both_runs_meet_the_protocols_callers_type_against(tracker):
    from ecg_transfer.tracking import NullRun, Run, Tracker

    assert isinstance(tracker, Tracker) and isinstance(NullTracker(), Tracker)
    with tracker.start("protocol") as run:
        assert isinstance(run, Run) and isinstance(NullRun("x"), Run)
