"""Writers and `hubindex serve` sharing one catalog file.

DuckDB lets a file be open by one writing process or by readers, never both. `hubindex serve`
opens the catalog only while requests read it, but under a steady load those reads overlap and a
writer (a crawl, a nightly stage) would keep finding the file held. So a writer that finds the
catalog held by a serving process says so: it leaves a marker file `catalog.writer-waiting.<pid>`
beside the catalog while it retries, the server sees the marker, lets the file go as soon as its
requests in flight finish, and answers from the published snapshot (or waits) until the writer has
the file. A writer held up by anything else (another writer) fails at once, as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hubindex.catalog import CatalogLockedError

MARKER_PREFIX = "catalog.writer-waiting."
# How long a writer waits for a server to let go: the server's request time limit (10 s by default)
# bounds how long it can keep the file once it has seen the marker.
SERVER_PATIENCE_S = 60.0
RETRY_S = 0.05
T = TypeVar("T")


def is_web_server(pid: int | None) -> bool:
    """Whether process `pid` is `hubindex serve` (read from /proc; False where there is none)."""
    if pid is None:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in args and any(b"hubindex" in arg for arg in args)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writers_waiting(index_root: Path) -> bool:
    """Whether a live writer has announced that it waits for the catalog."""
    try:
        entries = [entry.name for entry in os.scandir(index_root) if entry.name.startswith(MARKER_PREFIX)]
    except OSError:
        return False
    for name in entries:
        pid = name[len(MARKER_PREFIX):]
        if pid.isdigit() and _alive(int(pid)):
            return True
    return False


@contextmanager
def announced(index_root: Path) -> Iterator[None]:
    """Within the block, this process's marker says it waits for the catalog."""
    marker = index_root / f"{MARKER_PREFIX}{os.getpid()}"
    try:
        marker.write_text(f"{os.getpid()}\n")
    except OSError:
        pass  # a read-only folder: nothing can be written there anyway, the open will fail clearly
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def open_past_server(open_catalog: Callable[[], T], index_root: Path) -> T:
    """open_catalog(); when a `hubindex serve` process holds the file, announce and retry until it lets go."""
    try:
        return open_catalog()
    except CatalogLockedError as busy:
        if not is_web_server(busy.writer_pid):
            raise
        first = busy
    deadline = time.monotonic() + SERVER_PATIENCE_S
    with announced(index_root):
        while time.monotonic() < deadline:
            time.sleep(RETRY_S)
            try:
                return open_catalog()
            except CatalogLockedError as busy:
                if not is_web_server(busy.writer_pid):
                    raise
    raise first
