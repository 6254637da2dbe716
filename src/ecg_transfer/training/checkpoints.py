"""Per-run checkpoints on disk, so an interrupted study resumes where it stopped.

Each run key gets a folder under ``root``: ``checkpoint.pt`` (the last finished
epoch: weights, optimiser, RNG state, history so far) and, once the run is over,
``result.pt`` (what :meth:`CheckpointStore.mark_done` was given). Files are
written to a temporary name and renamed, so a crash mid-write never leaves a
truncated checkpoint that a resume would trust.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

_SEGMENT = re.compile(r"^[A-Za-z0-9_.=+-]+$")
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.pt"


class CheckpointStore:
    """A folder of runs; run keys may nest with '/' (``"f=0.25/transfer/trial=3"``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            torch.save(payload, tmp_name)
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)

    def _read(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            # Our own files hold DataFrames and numpy RNG states, which weights_only refuses.
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise ValueError(f"CheckpointStore: cannot read {path}: {error}") from error

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
        """Forget a run (checkpoint and result), e.g. to retrain it with another config."""
        shutil.rmtree(self.run_dir(run_key), ignore_errors=True)
