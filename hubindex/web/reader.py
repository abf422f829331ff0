"""How the web explorer reads the catalog: one fenced read-only DuckDB instance, shared by the
requests in flight and let go between them, so that writers get the file.

DuckDB lets a file be open by one writing process or by readers, never both. A server that kept
the catalog open would lock every `hubindex crawl` and nightly stage out. Here the catalog is
opened when a request needs it, shared by whatever requests overlap (each on its own cursor), and
closed LINGER_S after the last one is done. Under a steady load the readers would overlap forever, so
a writer that finds the file held by this server announces itself (hubindex.waiting_writers): the
server stops sharing the instance, closes it when the requests in flight finish, and reads the
published snapshot (`catalog.snapshot.duckdb`), or waits, until the writer has the file. While a
writer holds the file, requests read that snapshot, as `hubindex sql` does, and the page says how
old it is. Without any announcement the instance is still reopened every HOLD_MAX_S, with a short
gap, so that a long-running server never reads one instance for ever.

The instance is opened with file access disabled and its configuration locked: no page, and no
query of the SQL page, can read or write a file through DuckDB (read_csv, COPY, ATTACH, INSTALL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from hubindex.catalog import CONNECTION_PREPARERS, CatalogLockedError, connect_file, snapshot_path
from hubindex.errors import HubindexError
from hubindex.migrations import LATEST_VERSION
from hubindex.user_sql import FENCES
from hubindex.waiting_writers import writers_waiting

# The longest stretch the server holds the catalog open, and the gap it then leaves for writers
# that do not announce themselves (a writer that does is let in at once).
HOLD_MAX_S = 10.0
WRITER_GAP_S = 0.25
# How often a request waiting for a writer to take the file looks again.
WRITER_POLL_S = 0.05
# How long an idle instance stays open for the next request (a writer that announces itself waits
# at most this long for an idle server).
LINGER_S = 0.5


class RequestTimeout(HubindexError):
    """A request ran past the server's time limit; its catalog work was interrupted."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the page took longer than the server's {limit_s:g} s limit; "
                         "narrow it (fewer rows per page, a smaller query) or ask again")
        self.limit_s = limit_s


@dataclass(frozen=True)
class SnapshotNote:
    """The request was answered from the published snapshot while a writer held the catalog."""

    taken_at: datetime  # UTC, naive
    writer_pid: int | None


@dataclass
class RequestCatalog:
    """What a request reads through: a cursor of the shared instance (`conn`, as Catalog has)."""

    conn: duckdb.DuckDBPyConnection
    path: Path
    snapshot: SnapshotNote | None
    read_only: bool = True


class _Instance:
    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path, snapshot: SnapshotNote | None) -> None:
        self.conn = conn
        self.path = path
        self.snapshot = snapshot
        self.opened = time.monotonic()
        self.idle_since = self.opened
        self.users = 0


class SharedReader:
    """Opens the catalog (or its snapshot) for the requests in flight; closes it when none is."""

    def __init__(self, catalog_path: Path) -> None:
        self.catalog_path = catalog_path
        self.index_root = catalog_path.parent
        self._lock = threading.Condition()
        self._instance: _Instance | None = None
        self._draining = False
        self._gap_until = 0.0
        self.opens = 0  # instances opened so far

    def check(self) -> None:
        """Open and close once: a missing, foreign or too new catalog is an error before serving."""
        with self.reading(timeout_s=30.0):
            pass

    @contextmanager
    def reading(self, timeout_s: float) -> Iterator[RequestCatalog]:
        """A cursor for one request; its statements are interrupted when timeout_s has passed."""
        deadline = time.monotonic() + timeout_s
        instance = self._acquire(deadline, timeout_s)
        try:
            cursor = instance.conn.cursor()
            for prepare in CONNECTION_PREPARERS:
                prepare(cursor)  # temp views and macros live per connection
            timer = threading.Timer(max(0.001, deadline - time.monotonic()), cursor.interrupt)
            timer.daemon = True
            timer.start()
            try:
                yield RequestCatalog(cursor, instance.path, instance.snapshot)
            except duckdb.InterruptException:
                raise RequestTimeout(timeout_s) from None
            finally:
                timer.cancel()
                cursor.close()
        finally:
            self._release(instance)

    def _acquire(self, deadline: float, timeout_s: float) -> _Instance:
        with self._lock:
            while True:
                now = time.monotonic()
                instance = self._instance
                waiting = writers_waiting(self.index_root)
                if instance is not None and not self._draining:
                    if now - instance.opened < HOLD_MAX_S and not (waiting and instance.snapshot is None):
                        instance.users += 1
                        return instance
                    # Held long enough, or a writer asks for the file: let it close, then leave a gap.
                    self._draining = True
                    if instance.users == 0:
                        self._close(instance)
                        continue
                if instance is None and now >= self._gap_until:
                    # While a writer waits, only the snapshot may be opened (when there is one).
                    instance = self._open(snapshot_only=waiting)
                    if instance is not None:
                        self.opens += 1
                        self._instance = instance
                        instance.users += 1
                        return instance
                if now >= deadline:
                    raise RequestTimeout(timeout_s)
                wake = min(deadline, self._gap_until if self._gap_until > now else now + WRITER_POLL_S)
                self._lock.wait(timeout=max(0.001, wake - now))

    def _release(self, instance: _Instance) -> None:
        with self._lock:
            instance.users -= 1
            if instance.users > 0:
                return
            instance.idle_since = time.monotonic()
            if self._draining or writers_waiting(self.index_root):
                self._close(instance)
            else:
                # Kept a moment for the next request (opening costs ~20 ms), then closed when still idle.
                timer = threading.Timer(LINGER_S, self._close_if_idle, args=(instance,))
                timer.daemon = True
                timer.start()
            self._lock.notify_all()

    def _close_if_idle(self, instance: _Instance) -> None:
        with self._lock:
            if self._instance is instance and instance.users == 0 and \
                    time.monotonic() - instance.idle_since >= LINGER_S * 0.99:
                self._close(instance)
                self._lock.notify_all()

    def _close(self, instance: _Instance) -> None:
        """Close the idle instance (under the lock); after a drain, requests wait WRITER_GAP_S."""
        instance.conn.close()
        if self._instance is instance:
            self._instance = None
        if self._draining:
            # Requests arriving in the next WRITER_GAP_S wait: a writer retrying for the file gets it.
            self._gap_until = time.monotonic() + WRITER_GAP_S
            self._draining = False

    def _open(self, snapshot_only: bool) -> _Instance | None:
        """The catalog, or its snapshot while a writer holds it (or waits for it: snapshot_only);
        None when only the snapshot may be read and there is none yet."""
        path = self.catalog_path
        if not path.is_file():
            raise HubindexError(f"no catalog at {path}; build one with `hubindex crawl ...` "
                                "or choose another index with --index DIR")
        writer_pid = None
        if not snapshot_only:
            try:
                return self._instance_of(connect_file(path, read_only=True, config=FENCES), path, None)
            except CatalogLockedError as busy:
                writer_pid = busy.writer_pid
        snapshot_file = snapshot_path(path)
        if not snapshot_file.is_file():
            if snapshot_only:
                return None
            raise HubindexError(f"catalog {path} is being written by another process and it has published no "
                                "read snapshot yet; try again when the writer finishes")
        conn = connect_file(snapshot_file, read_only=True, config=FENCES)
        taken = datetime.fromtimestamp(snapshot_file.stat().st_mtime, timezone.utc).replace(tzinfo=None)
        return self._instance_of(conn, snapshot_file, SnapshotNote(taken, writer_pid))

    @staticmethod
    def _instance_of(conn: duckdb.DuckDBPyConnection, path: Path, snapshot: SnapshotNote | None) -> _Instance:
        try:
            _check_schema(conn, path)
        except BaseException:
            conn.close()
            raise
        return _Instance(conn, path, snapshot)


def _check_schema(conn: duckdb.DuckDBPyConnection, path: Path) -> None:
    has_table = conn.execute("SELECT count(*) FROM information_schema.tables "
                             "WHERE table_name = 'schema_migrations'").fetchone()[0]
    version = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0] if has_table else 0
    if version == 0:
        raise HubindexError(f"{path} is not a hubindex catalog (no schema history)")
    if version > LATEST_VERSION:
        raise HubindexError(f"catalog {path} has schema version {version}, newer than this hubindex understands "
                            f"({LATEST_VERSION}); upgrade hubindex")
