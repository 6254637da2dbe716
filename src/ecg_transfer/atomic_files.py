"""Files and folders written so that a reader sees the old version or the new one, never half.

Every writer of the project that must survive being killed goes through here: checkpoints,
encoder weights, the window store's index and the window store folder itself. A file is
written under a hidden temporary name in its own folder and renamed over the target
(``os.replace`` is atomic on one file system). A folder cannot be replaced atomically, so
it is built as a hidden ``.<name>.partial-<host>-<pid>-<id>`` sibling and swapped in; the
writer's host and process id in the name let a later writer remove the leftovers of a
killed one (and only those: a partial whose writer still runs, or that was written from
another machine sharing the folder, is left alone).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
# ".<name>.<kind>-<host>-<pid>-<12 hex>"; the host may itself contain "-" and ".",
# so pid and id are read from the right.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<host>.+)-(?P<pid>\d+)-(?P<id>[0-9a-f]{12})$")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], durable: bool = True) -> None:
    """Call ``write(tmp_path)`` on a hidden temporary file beside ``path``, then rename it to ``path``.

    The temporary file is removed if ``write`` fails. ``durable`` flushes the file to disk
    before the rename, so that a power loss cannot leave the new name on empty content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def this_host() -> str:
    """The host name as it appears in leftover names (characters outside [A-Za-z0-9._] as '_')."""
    return _UNSAFE.sub("_", socket.gethostname()) or "unknown"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False  # not a pid this system can have
    return True


def leftover_dir(path: str | os.PathLike, kind: str = "partial") -> Path:
    """A fresh hidden sibling name for ``path``: ``.<name>.<kind>-<host>-<pid>-<id>`` (not created)."""
    if kind not in ("partial", "old"):
        raise ValueError(f"leftover_dir: kind must be 'partial' or 'old', got {kind!r}")
    path = Path(path)
    return path.parent / f".{path.name}.{kind}-{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def remove_stale_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.partial-*`` / ``.<name>.old-*`` siblings of ``path`` left by dead writers.

    Only leftovers written on this host by a process that no longer runs are removed; an
    ``old`` copy is kept while ``path`` itself is missing (it is then the only complete
    version). Returns what was removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    host = this_host()
    removed = []
    for candidate in sorted(path.parent.iterdir()):
        match = _LEFTOVER.match(candidate.name)
        if match is None or match["name"] != path.name or match["host"] != host:
            continue
        if process_alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not path.exists():
            logger.warning("%s is missing but %s holds a complete earlier version; left in place", path, candidate)
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
        logger.info("removed %s, left behind by process %s that no longer runs", candidate, match["pid"])
    return removed


def replace_directory(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the complete folder ``new`` to ``path``, replacing what is there.

    Folders cannot be swapped atomically: the old one is renamed aside first, so that at
    every moment ``path`` names either the old or the new complete folder (or, for the
    instant between the two renames, nothing, with the old copy kept beside it).
    """
    new, path = Path(new), Path(path)
    if path.exists():
        old = leftover_dir(path, "old")
        os.rename(path, old)
        os.rename(new, path)
        shutil.rmtree(old)
    else:
        os.rename(new, path)


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held by this process until the block ends; other
    processes wait. The lock file stays (removing it would race a waiting process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
