"""Per-run checkpoints on disk, so an interrupted study resumes where it stopped.

Each run key gets a folder under ``root``: ``checkpoint.pt`` (the last finished
epoch: weights, optimiser, RNG state, history so far) and, once the run is over,
``result.pt`` (what :meth:`CheckpointStore.mark_done` was given). Files are
written to a temporary name and renamed, so a crash mid-write never leaves a
truncated checkpoint that a resume would trust. Payloads hold only tensors and
plain Python types, and are read with ``torch.load(..., weights_only=True)``.

Parallel workers sharing the folder split the runs with :meth:`CheckpointStore.claim`:
a ``claim.json`` lock file in the run's folder, created atomically, that names the
host, process and start time of the worker training the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from ecg_transfer.atomic_files import atomic_write, process_alive

logger = logging.getLogger(__name__)
T = TypeVar("T")

_SEGMENT = re.compile(r"^[A-Za-z0-9_.=+-]+$")
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.pt"
CLAIM_FILE = "claim.json"
# A claim file that is still empty or half-written this long after its creation is abandoned.
_UNREADABLE_CLAIM_GRACE_S = 60.0


class CheckpointStore:
    """A folder of runs; run keys may nest with '/' (``"f=0.25/transfer/trial=3"``).

    ``stale_after_s``: a claim made on *another* host is taken over once it is older than
    this (None: always respected, since its process cannot be checked from here). A claim
    from this host is taken over as soon as its process is gone.
    """

    def __init__(self, root: str | os.PathLike, stale_after_s: float | None = None):
        self.root = Path(root)
        self.stale_after_s = stale_after_s
        self._held: dict[str, str] = {}  # run key -> token of the claims this object holds

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.root)!r})"

    def run_dir(self, run_key: str) -> Path:
        segments = str(run_key).split("/")
        if not run_key or any(s in ("", ".", "..") or not _SEGMENT.match(s) for s in segments):
            raise ValueError(
                f"CheckpointStore({self.root}): run key {run_key!r} must be '/'-separated segments of "
                "letters, digits and _ . = + - (no empty, '.' or '..' segments)"
            )
        return self.root.joinpath(*segments)

    def _write(self, path: Path, payload: Any) -> None:
        atomic_write(path, lambda tmp: torch.save(payload, tmp))

    def _read(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights_only" not in str(error).lower().replace(" ", "_"):
                raise self._damaged(path, error) from error
            raise ValueError(
                f"CheckpointStore: cannot read {path}: it holds objects other than tensors and plain types "
                f"(it must hold only tensors and plain types), so an older version of the project wrote it; {self._retrain_hint(path)} ({error})"
            ) from error
        except Exception as error:
            raise self._damaged(path, error) from error

    def _damaged(self, path: Path, error: Exception) -> ValueError:
        # Writes are atomic, so a cut file comes from outside (a full disk, a copy cut short).
        return ValueError(
            f"CheckpointStore: {path} is damaged (truncated or corrupt: {type(error).__name__}: {error}); "
            f"{self._retrain_hint(path)}"
        )

    def _retrain_hint(self, path: Path) -> str:
        return (
            f"to retrain that run alone, delete its folder {path.parent} (or only {path.name}: without "
            f"{RESULT_FILE} the run resumes from {CHECKPOINT_FILE}; without both it starts again) and "
            "run the same command again; the other runs are reused"
        )

    def save(self, run_key: str, payload: dict[str, Any]) -> None:
        self._write(self.run_dir(run_key) / CHECKPOINT_FILE, payload)

    def load(self, run_key: str) -> dict[str, Any] | None:
        return self._read(self.run_dir(run_key) / CHECKPOINT_FILE)

    def mark_done(self, run_key: str, result: Any) -> None:
        self._write(self.run_dir(run_key) / RESULT_FILE, result)

    def is_done(self, run_key: str) -> bool:
        return (self.run_dir(run_key) / RESULT_FILE).is_file()

    def load_result(self, run_key: str) -> Any:
        """The object given to mark_done; KeyError when the run has not finished."""
        path = self.run_dir(run_key) / RESULT_FILE
        if not path.is_file():
            raise KeyError(f"CheckpointStore({self.root}): run {run_key!r} is not done ({path} missing)")
        return self._read(path)

    def clear(self, run_key: str) -> None:
        """Forget a run (checkpoint, result and claim), e.g. to retrain it with another config."""
        shutil.rmtree(self.run_dir(run_key), ignore_errors=True)

    # ------------------------------------------------------------------ claims

    @contextmanager
    def claim(self, run_key: str, stale_after_s: float | None = None) -> Iterator[bool]:
        """``with store.claim(key) as mine:`` -- ``mine`` is True when this process now holds
        the run (train it), False when another live worker does (skip it). A claim taken here
        is released on exit, also on an exception. Not re-entrant: a second claim of a run
        this process holds is False."""
        acquired = self.acquire(run_key, stale_after_s)
        try:
            yield acquired
        finally:
            if acquired:
                self.release(run_key)

    def acquire(self, run_key: str, stale_after_s: float | None = None) -> bool:
        """Take the run's claim; False when a live claim of another worker holds it."""
        path = self.run_dir(run_key) / CLAIM_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        stale_after_s = self.stale_after_s if stale_after_s is None else stale_after_s
        token = uuid.uuid4().hex
        for attempt in range(5):  # a race lost to another taker-over ends in another look
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                text = _read_text(path)
                if text is not None and not _is_stale(text, path, stale_after_s):
                    return False
                if text is not None and not _remove_stale(path, text):
                    time.sleep(0.05 * (attempt + 1))
                continue
            with os.fdopen(handle, "w") as claim_file:
                json.dump({**_this_process(), "token": token}, claim_file)
            self._held[run_key] = token
            return True
        return False

    def release(self, run_key: str) -> None:
        """Give up a claim this object holds (a claim of anyone else is left alone)."""
        token = self._held.pop(run_key, None)
        path = self.run_dir(run_key) / CLAIM_FILE
        text = _read_text(path)
        if token is not None and text is not None and _parse(text).get("token") == token:
            path.unlink(missing_ok=True)

    def wait_for(self, run_key: str, timeout_s: float | None = None, poll_s: float = 2.0) -> bool:
        """Wait while another worker trains the run: True once it is done, False as soon as
        nobody holds a live claim on it (its worker died or gave up: claim it and train it
        here). TimeoutError after ``timeout_s`` (None: no limit), naming the holder."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        path = self.run_dir(run_key) / CLAIM_FILE
        while True:
            if self.is_done(run_key):
                return True
            text = _read_text(path)
            if text is None or _is_stale(text, path, self.stale_after_s):
                return self.is_done(run_key)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"CheckpointStore({self.root}): run {run_key!r} is still claimed by {_parse(text)} "
                    f"after {timeout_s:g} s"
                )
            time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))

    def claim_holder(self, run_key: str) -> dict[str, Any] | None:
        """The claim's content (host, pid, started, ...) or None when the run is not claimed."""
        text = _read_text(self.run_dir(run_key) / CLAIM_FILE)
        return None if text is None else _parse(text)


def run_once(
    store: CheckpointStore | None,
    run_keys: Sequence[str],
    run: Callable[[int], T],
    timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> list[T]:
    """``[run(i) for i in range(len(run_keys))]``, with every run trained by one worker only:
    :func:`run_groups_once` with groups of one run."""
    return run_groups_once(store, run_keys, [[i] for i in range(len(run_keys))],
                           lambda indices: [run(indices[0])], timeout_s, poll_s)


def run_groups_once(
    store: CheckpointStore | None,
    run_keys: Sequence[str],
    groups: Sequence[Sequence[int]],
    run_group: Callable[[list[int]], Sequence[T]],
    timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> list[T]:
    """The scheduler of claimed runs: every run trained by one worker only.

    ``run_group(indices)`` trains runs ``run_keys[indices]`` together with ``store`` (so it
    returns the stored results of runs done already) and returns their results in that
    order. In each group this worker claims the runs nobody else holds and trains them
    together; a run claimed by another live worker is skipped and waited for after all
    groups (:meth:`CheckpointStore.wait_for`); once done, ``run_group([i])`` reads its
    result, so this worker's outputs still hold every run. A run whose worker died is
    claimed and trained here (resuming from its checkpoint), one at a time.
    """
    results: dict[int, T] = {}
    waiting: list[int] = []
    for group in groups:
        mine, held = [], []
        try:
            for index in group:
                if store is None or store.is_done(run_keys[index]):
                    mine.append(index)
                elif store.acquire(run_keys[index]):
                    mine.append(index)
                    held.append(index)
                else:
                    logger.info("run %s is being trained by %s; collecting it after the others",
                                run_keys[index], store.claim_holder(run_keys[index]))
                    waiting.append(index)
            if mine:
                results.update(zip(mine, run_group(mine)))
        finally:
            for index in held:
                store.release(run_keys[index])
    for index in waiting:
        while index not in results:
            if store.wait_for(run_keys[index], timeout_s, poll_s):
                results[index] = run_group([index])[0]
                continue
            with store.claim(run_keys[index]) as claimed:
                if claimed:
                    results[index] = run_group([index])[0]
    return [results[index] for index in range(len(run_keys))]


def _this_process() -> dict[str, Any]:
    now = time.time()
    return {
        "host": socket.gethostname(), "pid": os.getpid(), "started": now,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _is_stale(text: str, path: Path, stale_after_s: float | None) -> bool:
    holder = _parse(text)
    if not {"host", "pid", "started"} <= set(holder):
        # Empty or half-written: the writer is between O_EXCL and json.dump, or died there.
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_CLAIM_GRACE_S
        except FileNotFoundError:
            return False
    if holder["host"] == socket.gethostname():
        return not process_alive(int(holder["pid"]))
    return stale_after_s is not None and time.time() - float(holder["started"]) > stale_after_s


def _remove_stale(path: Path, text: str) -> bool:
    """Remove the stale claim ``text`` at ``path``, unless another worker got there first.

    Only one worker can hard-link the claim to a name derived from its content, so only
    one removes it; the others retry or see the new claim. A fresh claim that replaced
    the stale one between reading and linking is recognised by its content and kept.
    """
    grave = path.with_name(f".{CLAIM_FILE}.stale-{hashlib.sha1(text.encode()).hexdigest()[:16]}")
    try:
        os.link(path, grave)
    except FileNotFoundError:
        return True  # already gone: try to create ours
    except FileExistsError:
        try:  # a taker-over that died between link and cleanup leaves its grave behind
            if time.time() - grave.stat().st_ctime > _UNREADABLE_CLAIM_GRACE_S:
                grave.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False
    try:
        if _read_text(grave) == text:
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        grave.unlink(missing_ok=True)
