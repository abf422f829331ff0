"""The errors of a nightly run, and which of them stop the whole run rather than one stage."""

from __future__ import annotations

import errno

from hubindex.errors import CatalogBusyError, HubindexError, Interrupted
from hubindex.interrupts import stop_requested

# Errors that no retry fixes: the run stops and says what could not be written.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied")


class NightlyLockedError(CatalogBusyError):
    """Another nightly run holds the index's lock."""


class NightlyInterrupted(Interrupted):
    """The run was stopped by SIGINT or SIGTERM; the next run completes its work."""


class StorageError(HubindexError):
    """The disk is full or a file cannot be written: the run stops."""


def storage_problem(exc: BaseException) -> str | None:
    """The reason, when an error (or one it was raised from) is a full disk or a write refused."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return str(seen.strerror or seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return next((marker for marker in STORAGE_MESSAGES if marker in text), None)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def fatal_error(exc: BaseException) -> StorageError | NightlyInterrupted | None:
    """The error that stops the whole run, if exc is one: a signal, a full disk or a refused write."""
    if isinstance(exc, (StorageError, NightlyInterrupted)):
        return exc
    if stop_requested.is_set():
        # Probing and crawling turn Ctrl-C into their own error; the run still stops.
        return NightlyInterrupted("interrupted by a signal")
    problem = storage_problem(exc)
    if problem is not None:
        return StorageError(first_line(exc) if problem in str(exc) else f"{first_line(exc)}: {problem}")
    return None


def raise_if_fatal(exc: BaseException) -> None:
    """Signals, full disks and refused writes stop the run; every other error only fails its stage."""
    fatal = fatal_error(exc)
    if fatal is exc:
        raise exc
    if fatal is not None:
        raise fatal from exc
