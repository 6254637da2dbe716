import json
import multiprocessing
import os
import socket
import time

import pandas as pd
import pytest
import torch

from ecg_transfer.training.checkpoints import CheckpointStore, run_once


def test_save_load_round_trip_leaves_no_temporary_files(tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.load("f=0.25/transfer/trial=3") is None
    store.save("f=0.25/transfer/trial=3", {"epoch": 2, "w": torch.arange(3)})
    store.save("f=0.25/transfer/trial=3", {"epoch": 3, "w": torch.arange(4)})
    payload = store.load("f=0.25/transfer/trial=3")
    assert payload["epoch"] == 3 and torch.equal(payload["w"], torch.arange(4))
    files = sorted(p.name for p in (tmp_path / "ckpt" / "f=0.25" / "transfer" / "trial=3").iterdir())
    assert files == ["checkpoint.pt"]


def test_done_marker_and_result(tmp_path):
    store = CheckpointStore(tmp_path)
    assert not store.is_done("run")
    with pytest.raises(KeyError, match="not done"):
        store.load_result("run")
    history = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    store.mark_done("run", {"history": history, "state": {"w": torch.ones(2)}})
    assert store.is_done("run")
    assert store.load_result("run")["history"] == history
    store.clear("run")
    assert not store.is_done("run") and store.load("run") is None


@pytest.mark.parametrize("key", ["", "../escape", "a//b", "a/./b", "sp ace", "/abs"])
def test_unsafe_run_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="run key"):
        CheckpointStore(tmp_path).save(key, {})


def test_corrupt_checkpoint_names_the_file(tmp_path):
    store = CheckpointStore(tmp_path)
    store.run_dir("r").mkdir(parents=True)
    (store.run_dir("r") / "checkpoint.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        store.load("r")


@pytest.mark.parametrize("name", ["checkpoint.pt", "result.pt"])
def test_truncated_file_is_called_damaged_with_how_to_retrain(tmp_path, name):
    store = CheckpointStore(tmp_path)
    store.save("f=1/arm/trial=0", {"weights": torch.arange(1000.0)})
    store.mark_done("f=1/arm/trial=0", {"epoch": 3, "weights": torch.arange(1000.0)})
    path = store.run_dir("f=1/arm/trial=0") / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    read = store.load if name == "checkpoint.pt" else store.load_result
    with pytest.raises(ValueError) as error:
        read("f=1/arm/trial=0")
    message = str(error.value)
    assert str(path) in message and "damaged" in message and "older version" not in message
    assert f"delete its folder {path.parent}" in message and "run the same command again" in message


def test_files_are_read_weights_only(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save("r", {"frame": pd.DataFrame({"a": [1]})})  # what older versions stored
    with pytest.raises(ValueError, match="only tensors and plain types"):
        store.load("r")


# ---------------------------------------------------------------- claims (parallel workers)

_fork = multiprocessing.get_context("fork")


def _hold_claim(root, key, ready, release, answers):
    store = CheckpointStore(root)
    with store.claim(key) as mine:
        answers.put(mine)
        ready.set()
        release.wait(30)


def test_a_claim_held_by_another_live_process_is_respected_and_released_on_exit(tmp_path):
    store = CheckpointStore(tmp_path)
    ready, release, answers = _fork.Event(), _fork.Event(), _fork.Queue()
    worker = _fork.Process(target=_hold_claim, args=(tmp_path, "f=1/random/t=1", ready, release, answers))
    worker.start()
    try:
        assert ready.wait(30) and answers.get(timeout=5) is True
        holder = store.claim_holder("f=1/random/t=1")
        assert holder["pid"] == worker.pid and holder["host"] == socket.gethostname() and holder["started"] > 0
        with store.claim("f=1/random/t=1") as mine:
            assert mine is False
        assert store.claim_holder("f=1/random/t=1")["pid"] == worker.pid  # a refused claim removes nothing
    finally:
        release.set()
        worker.join(30)
    assert worker.exitcode == 0 and store.claim_holder("f=1/random/t=1") is None
    with store.claim("f=1/random/t=1") as mine:
        assert mine is True


def _claim_many(root, keys, barrier, answers):
    store = CheckpointStore(root)
    mine = [key for key in keys if store.acquire(key)]
    barrier.wait(30)  # hold every claim until all workers have tried
    answers.put(mine)
    for key in mine:
        store.release(key)


def test_parallel_workers_split_the_runs(tmp_path):
    keys = [f"run/trial={i}" for i in range(20)]
    barrier, answers = _fork.Barrier(3), _fork.Queue()
    workers = [_fork.Process(target=_claim_many, args=(tmp_path, keys, barrier, answers)) for _ in range(3)]
    for worker in workers:
        worker.start()
    claimed = [answers.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert sorted(sum(claimed, [])) == sorted(keys)  # every run claimed exactly once


def test_a_claim_is_released_on_an_exception(tmp_path):
    store = CheckpointStore(tmp_path)
    with pytest.raises(RuntimeError), store.claim("r") as mine:
        assert mine
        raise RuntimeError("training failed")
    assert store.claim_holder("r") is None


def _write_claim(store, key, **fields):
    path = store.run_dir(key) / "claim.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), **fields}))
    return path


def test_a_stale_claim_of_a_dead_local_process_is_taken_over(tmp_path):
    store = CheckpointStore(tmp_path)
    _write_claim(store, "r", pid=2**31 - 2)  # above any pid_max: no such process
    with store.claim("r") as mine:
        assert mine and store.claim_holder("r")["pid"] == os.getpid()
    assert store.claim_holder("r") is None


def test_a_claim_of_this_process_is_not_taken_twice(tmp_path):
    store = CheckpointStore(tmp_path)
    with store.claim("r") as first, CheckpointStore(tmp_path).claim("r") as second:
        assert first and not second


def test_claims_from_another_host_are_respected_unless_older_than_stale_after_s(tmp_path):
    _write_claim(CheckpointStore(tmp_path), "old", host="elsewhere", pid=1, started=time.time() - 3600)
    _write_claim(CheckpointStore(tmp_path), "new", host="elsewhere", pid=1)
    assert not CheckpointStore(tmp_path).acquire("old")  # default: always respected
    patient = CheckpointStore(tmp_path, stale_after_s=600)
    assert not patient.acquire("new")
    assert patient.acquire("old") and patient.claim_holder("old")["host"] == socket.gethostname()
    assert CheckpointStore(tmp_path).acquire("new", stale_after_s=0)  # per call too


def test_an_unreadable_claim_is_respected_until_it_is_old(tmp_path):
    store = CheckpointStore(tmp_path)
    path = _write_claim(store, "r")
    path.write_text("")  # a writer between creating the file and writing it
    assert not store.acquire("r")
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert store.acquire("r")


def test_release_leaves_a_claim_of_another_worker_alone(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.acquire("r")
    _write_claim(store, "r", pid=1, token="someone-else")  # e.g. taken over after we were presumed dead
    store.release("r")
    assert store.claim_holder("r")["token"] == "someone-else"


def _finish_after(root, key, seconds):
    store = CheckpointStore(root)
    with store.claim(key) as mine:
        assert mine
        time.sleep(seconds)
        store.mark_done(key, {"epochs_run": 1})


def test_wait_for_returns_when_the_other_worker_finishes_or_dies(tmp_path):
    store = CheckpointStore(tmp_path)
    worker = _fork.Process(target=_finish_after, args=(tmp_path, "r", 0.5))
    worker.start()
    deadline = time.monotonic() + 30
    while store.claim_holder("r") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not store.acquire("r")
    assert store.wait_for("r", timeout_s=30, poll_s=0.05) is True
    worker.join(30)
    assert store.load_result("r") == {"epochs_run": 1}

    _write_claim(store, "dead", pid=2**31 - 2)
    assert store.wait_for("dead", timeout_s=5, poll_s=0.05) is False  # claim it and train it here
    _write_claim(store, "busy", pid=os.getppid())
    with pytest.raises(TimeoutError, match="'busy' is still claimed"):
        store.wait_for("busy", timeout_s=0.2, poll_s=0.05)


def _worker(root, keys, log_path, answers):
    store = CheckpointStore(root)

    def train(index):
        key = keys[index]
        if store.is_done(key):
            return store.load_result(key)["value"]
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()} {key}\n")
        time.sleep(0.05)
        store.mark_done(key, {"value": index * 10})
        return index * 10

    answers.put(run_once(store, keys, train, timeout_s=60, poll_s=0.02))


def test_two_workers_on_one_folder_train_each_run_once_and_both_return_every_run(tmp_path):
    keys = [f"finetuning/arm/fraction=1/trial={i:02d}" for i in range(8)]
    log_path, answers = tmp_path / "trained.log", _fork.Queue()
    workers = [_fork.Process(target=_worker, args=(tmp_path / "runs", keys, log_path, answers)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outputs = [answers.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert outputs == [[i * 10 for i in range(8)]] * 2
    trained = [line.split()[1] for line in log_path.read_text().splitlines()]
    assert sorted(trained) == sorted(keys)  # each run trained exactly once


def test_run_once_takes_over_a_run_whose_worker_died(tmp_path):
    store = CheckpointStore(tmp_path)
    _write_claim(store, "a", pid=2**31 - 2)
    assert run_once(store, ["a", "b"], lambda i: i + 1, timeout_s=5, poll_s=0.01) == [1, 2]
    assert run_once(None, ["a"], lambda i: "no store") == ["no store"]


def test_claims_and_leftover_cleanup_share_one_process_check(tmp_path):
    from ecg_transfer import atomic_files
    from ecg_transfer.training import checkpoints

    assert checkpoints.process_alive is atomic_files.process_alive
    assert atomic_files.process_alive(os.getpid())
    assert not atomic_files.process_alive(0) and not atomic_files.process_alive(2**80)  # 2**80: OverflowError in kill
    store = CheckpointStore(tmp_path)
    _write_claim(store, "r", pid=2**80)
    with store.claim("r") as mine:
        assert mine
