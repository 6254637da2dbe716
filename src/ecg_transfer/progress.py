"""Progress as a reader of the output wants it: a tqdm bar on a terminal; in a file or a CI log
(where a bar is a stream of carriage returns), log lines instead: one per epoch, and for other
units (records, batches) one per tenth of the way.

Every loop of the project that shows progress goes through :func:`progress`, with tqdm's
arguments (``desc``, ``total``, ``initial``, ``unit``, ``disable``, ``leave``) and its
``set_postfix``, so the call sites read as tqdm calls do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def on_terminal(stream: Any = None) -> bool:
    """Whether progress goes to a terminal (tqdm writes to stderr)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressLines:
    """tqdm's iteration, ``set_postfix`` and context manager, as log lines: ``<desc>: epoch 3/10
    loss=0.41 val_f1_weighted=0.62`` after each epoch (after the loop body, so the line
    carries what the body set), or after each tenth of the way for other units."""

    def __init__(self, iterable: Iterable | None = None, desc: str | None = None, total: int | None = None,
                 initial: int = 0, unit: str = "it", **_ignored: Any):
        self.iterable = iterable
        self.desc = desc or "progress"
        self.total = total if total is not None else _length(iterable)
        self.n = int(initial)
        self.unit = unit
        self.postfix: dict[str, Any] = {}
        self._logged_tenth = 0

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._log()

    def _log(self) -> None:
        if self.unit != "epoch":
            if not self.total:
                return
            tenth = (10 * self.n) // self.total
            if tenth <= self._logged_tenth:
                return
            self._logged_tenth = tenth
        of = f"/{self.total}" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        logger.info("%s: %s %d%s%s", self.desc, self.unit, self.n, of, extra)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(iterable: Iterable | None = None, *args: Any, disable: bool = False, **kwargs: Any):
    """``tqdm(iterable, ...)`` on a terminal, :class:`ProgressLines` elsewhere; nothing shown
    either way when ``disable``."""
    if disable or on_terminal():
        return tqdm(iterable, *args, disable=disable, **kwargs)
    return ProgressLines(iterable, *args, **kwargs)
