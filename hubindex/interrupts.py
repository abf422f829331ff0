"""Stopping long runs cleanly: SIGINT (Ctrl-C) and SIGTERM (systemd stop, kill) raise KeyboardInterrupt.

Probe, score, crawl and nightly runs commit each finished unit of work at once, so stopping between
units loses nothing; the command then exits 130 and the next run completes the work. The handlers
are installed even where the signals were ignored (a process started in the background by a
script inherits SIGINT ignored), so `kill -INT` always stops a run.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

stop_requested = threading.Event()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt (and set stop_requested)."""
    stop_requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: Any) -> None:
        stop_requested.set()
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def was_interrupted(exc: BaseException) -> bool:
    """A stop: KeyboardInterrupt, or a library's own error (DuckDB's InterruptException, a torch
    RuntimeError) raised because SIGINT or SIGTERM landed while it ran."""
    return isinstance(exc, KeyboardInterrupt) or stop_requested.is_set()
