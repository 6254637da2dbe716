"""SIGTERM (a scheduler's cancel, ``kill``) as an exception, so that a killed job unwinds like
Ctrl-C does: ``with`` blocks end their MLflow runs ``KILLED`` instead of leaving them
``RUNNING``. Knows nothing of MLflow: the hooks pass what must happen first (``on_signal``:
make every later tracking call fail fast, so that ending the runs cannot stall the exit)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Terminated(SystemExit):
    """SIGTERM (a scheduler's cancel, ``kill``) as an exception: raised in the main thread by
    the handler of :func:`raise_on_sigterm`, it unwinds the stack like Ctrl-C does, so ``with``
    blocks end their runs ``KILLED``; the process exits with status ``128 + signum``."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def raise_on_sigterm(on_signal: Callable[[], None] | None = None) -> Callable[[], None]:
    """Make SIGTERM raise :class:`Terminated` in the main thread; return a function restoring the
    previous handler. Does nothing (and restores nothing) outside the main thread or when
    SIGTERM is ignored. on_signal runs first, in the handler (keep it short). A second
    SIGTERM while the first unwinds is logged and ignored, so the end states still get written
    (tracking calls are bounded, so that takes seconds, see :mod:`ecg_transfer.tracking.connection`)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        return lambda: None
    raised = []

    def on_sigterm(signum, frame):
        if raised:
            logger.warning("SIGTERM again: still ending the MLflow runs")
            return
        raised.append(signum)
        if on_signal is not None:
            on_signal()
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore
