"""The nightly lock: one run at a time per index, and who holds it, in words."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from filelock import Timeout, UnixFileLock

from hubindex.catalog import utcnow
from hubindex.nightly.errors import NightlyLockedError, StorageError

LOCK_FILENAME = "nightly.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds the nightly lock, as written in the lock file."""

    pid: int
    host: str
    started_at: str  # 'YYYY-MM-DD HH:MM UTC'
    run_id: int | None = None

    def describe(self) -> str:
        run = f"nightly run {self.run_id}" if self.run_id is not None else "nightly run"
        return f"{run} (pid {self.pid} on {self.host}, started {self.started_at})"


def read_lock_holder(index_root: Path) -> LockHolder | None:
    """The holder written in <index>/nightly.lock, or None when there is none or it cannot be read."""
    try:
        data = json.loads((index_root / LOCK_FILENAME).read_text())
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started_at"]), data.get("run_id"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_writer(index_root: Path, writer_pid: int | None) -> str:
    """Who writes the catalog, in words: the nightly run when it is the lock's holder, else the process id."""
    holder = read_lock_holder(index_root)
    if holder is not None and holder.pid == writer_pid and holder.host == socket.gethostname():
        return holder.describe()
    return f"process {writer_pid}" if writer_pid is not None else "another process"


class NightlyLock:
    """An exclusive flock on <index>/nightly.lock that also records its holder in the file.

    filelock's UnixFileLock takes the flock: the kernel releases it when the process ends, however
    it ends (SIGKILL included), so the next run takes over the lock of a run that died. The file
    stays after release (removing it would let two runs lock two different files), and it is never
    truncated by a run that fails to get the lock, so the holder it names stays readable.
    """

    def __init__(self, index_root: Path) -> None:
        self.path = index_root / LOCK_FILENAME
        self.holder: LockHolder | None = None
        # fallback_to_soft off: a marker file would outlive a killed run and need age-based breaking.
        self._lock = UnixFileLock(self.path, timeout=0, blocking=False, thread_local=False,
                                  fallback_to_soft=False, preserve_lock_file=True, on_acquired=self._record_holder)

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout:
            holder = read_lock_holder(self.path.parent)
            who = holder.describe() if holder is not None else "nightly run"
            raise NightlyLockedError(f"another {who} holds {self.path}; wait for it to finish") from None
        except OSError as exc:
            raise StorageError(f"cannot create the nightly lock {self.path}: {exc.strerror or exc}") from None

    def _record_holder(self, handle: int) -> None:
        self.holder = LockHolder(os.getpid(), socket.gethostname(), utcnow().strftime("%Y-%m-%d %H:%M UTC"))
        _write_holder(handle, self.holder, self.path)

    def name_run(self, run_id: int) -> None:
        """Write the run's id into the lock file, for messages about who holds it."""
        assert self.holder is not None and self._lock.is_locked
        self.holder = replace(self.holder, run_id=run_id)
        try:
            handle = os.open(self.path, os.O_WRONLY)
        except OSError as exc:
            self.release()
            raise StorageError(f"cannot write the nightly lock {self.path}: {exc.strerror or exc}") from None
        try:
            _write_holder(handle, self.holder, self.path)
        except StorageError:
            self.release()
            raise
        finally:
            os.close(handle)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def _write_holder(handle: int, holder: LockHolder, path: Path) -> None:
    data = json.dumps(asdict(holder)).encode()
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, data, 0)
    except OSError as exc:
        raise StorageError(f"cannot write the nightly lock {path}: {exc.strerror or exc}") from None
