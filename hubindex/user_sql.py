"""Users' read-only SQL over the catalog: one fenced SELECT, a time limit, results in batches.

Three fences: the file is opened read-only, the statement must be a single SELECT/EXPLAIN, and
external access (ATTACH, COPY, read_csv, INSTALL/LOAD) is disabled and locked. A catalog locked by
a writer is read from its published snapshot when the caller allows it.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from hubindex.catalog import Catalog, CatalogLockedError, snapshot_path
from hubindex.errors import HubindexError, QueryError, QueryTimeout

DEFAULT_ROW_CAP = 1000
DEFAULT_TIMEOUT_S = 30.0
READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# The fences of every user query (and of `hubindex serve`'s connections): no file or network access,
# no extension loading, and the configuration locked so that the query cannot lift them (last).
FENCES = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
# Rows fetched from DuckDB at a time when a result is streamed out.
STREAM_BATCH_ROWS = 10_000



@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    # Set when the catalog was locked by a writer and the query read its snapshot instead.
    snapshot: SnapshotRead | None = None


@dataclass(frozen=True)
class SnapshotRead:
    """A query answered from the read snapshot: which file, how old, and who held the catalog."""

    path: Path
    taken_at: datetime  # UTC, naive
    writer_pid: int | None


def open_for_reading(path: Path, snapshot_fallback: bool = False) -> tuple[Catalog, SnapshotRead | None]:
    """The catalog opened read-only; with snapshot_fallback, its snapshot while a writer holds it."""
    try:
        return Catalog(path, read_only=True), None
    except CatalogLockedError as busy:
        snapshot = snapshot_path(path)
        if not snapshot_fallback or not snapshot.is_file():
            raise
        try:
            catalog = Catalog(snapshot, read_only=True)
            taken_at = datetime.fromtimestamp(snapshot.stat().st_mtime, timezone.utc).replace(tzinfo=None)
        except (HubindexError, OSError):
            raise busy from None
        return catalog, SnapshotRead(snapshot, taken_at, busy.writer_pid)


@contextmanager
def reading_catalog(path: Path, on_snapshot: Callable[[SnapshotRead], None] | None = None) -> Iterator[Catalog]:
    """The catalog opened read-only for a command that only reads (a read-only folder works); while
    another process writes it, its last published snapshot, after `on_snapshot` is told which."""
    catalog, snapshot = open_for_reading(path, snapshot_fallback=True)
    with catalog:
        if snapshot is not None and on_snapshot is not None:
            on_snapshot(snapshot)
        yield catalog


@dataclass
class QueryStream:
    """An open user query: its columns, then its rows in batches (JSON columns decoded)."""

    columns: list[str]
    types: list[str]
    snapshot: SnapshotRead | None
    _cursor: duckdb.DuckDBPyConnection
    _timeout_s: float

    def batches(self, rows: int = STREAM_BATCH_ROWS) -> Iterator[list[tuple[Any, ...]]]:
        while True:
            with query_errors(self._timeout_s):
                batch = self._cursor.fetchmany(rows)
            if not batch:
                return
            yield decode_json_columns(batch, self.types)

    def write_parquet(self, target: Path) -> int:
        """Stream the result into a Parquet file (written beside, then renamed); returns its row count."""
        with warnings.catch_warnings():
            # DuckDB notes that a result already executed is copied batch by batch into Arrow:
            # that copy is the stream this export wants (the query runs once, under its fences).
            warnings.simplefilter("ignore", UserWarning)
            reader = self._cursor.to_arrow_reader(STREAM_BATCH_ROWS)
        partial = target.with_name(f".{target.name}.partial")
        # The user's connection has no file access; a separate in-memory DuckDB writes the file.
        with duckdb.connect() as writer, query_errors(self._timeout_s):
            writer.register("query_result", reader)
            quoted = str(partial).replace("'", "''")
            writer.execute(f"COPY query_result TO '{quoted}' (FORMAT parquet)")
            count = writer.execute(f"SELECT count(*) FROM read_parquet('{quoted}')").fetchone()[0]
        partial.replace(target)
        return int(count)


@contextmanager
def query_errors(timeout_s: float) -> Iterator[None]:
    """DuckDB errors of a running user query as one-line QueryErrors."""
    try:
        yield
    except duckdb.InterruptException:
        raise QueryTimeout(timeout_s) from None
    except duckdb.IOException as exc:
        raise QueryError(f"{_first_line(exc)}; `hubindex check` says whether the catalog is damaged") from None
    except duckdb.Error as exc:
        raise QueryError(_first_line(exc)) from None


def check_read_statement(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but exactly one SELECT or EXPLAIN statement (a QueryError that says why)."""
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"invalid SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"expected exactly one SQL statement, got {len(statements)}")
    if statements[0].type not in READ_STATEMENTS:
        kind = statements[0].type.name
        raise QueryError(f"only read-only SELECT queries are allowed (got a statement of type {kind})")


@contextmanager
def open_readonly_query(
    path: Path,
    sql: str,
    params: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    snapshot_fallback: bool = False,
) -> Iterator[QueryStream]:
    """Run one user SELECT on a read-only connection with no file or network access.

    The time limit covers the whole query, reading its rows included. With snapshot_fallback, a
    catalog locked by a writer is read from its snapshot (stream.snapshot).
    """
    catalog, snapshot = open_for_reading(path, snapshot_fallback)
    conn = catalog.conn
    timer = threading.Timer(timeout_s, conn.interrupt)
    try:
        for name, value in FENCES.items():
            conn.execute(f"SET {name} = {str(value).lower()}")
        check_read_statement(conn, sql)
        timer.start()
        with query_errors(timeout_s):
            cursor = conn.execute(sql, params or None)
        description = cursor.description or []
        yield QueryStream([d[0] for d in description], [str(d[1]) for d in description], snapshot, cursor,
                          timeout_s)
    finally:
        timer.cancel()
        catalog.close()


def run_readonly_query(
    path: Path,
    sql: str,
    params: dict[str, str] | None = None,
    row_cap: int = DEFAULT_ROW_CAP,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    snapshot_fallback: bool = False,
) -> QueryResult:
    """The first row_cap rows of one user SELECT (result.truncated says whether there were more)."""
    with open_readonly_query(path, sql, params, timeout_s, snapshot_fallback) as stream:
        rows: list[tuple[Any, ...]] = []
        for batch in stream.batches(min(row_cap + 1, STREAM_BATCH_ROWS)):
            rows.extend(batch)
            if len(rows) > row_cap:
                break
        return QueryResult(stream.columns, rows[:row_cap], truncated=len(rows) > row_cap, snapshot=stream.snapshot)


def decode_json_columns(rows: list[tuple[Any, ...]], types: list[str]) -> list[tuple[Any, ...]]:
    """Turn the text of JSON-typed columns (e.g. pretrained_cfg) into Python values."""
    json_columns = [i for i, column_type in enumerate(types) if column_type == "JSON"]
    if not json_columns:
        return rows

    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value

    return [
        tuple(decode(v) if i in json_columns else v for i, v in enumerate(row)) for row in rows
    ]


# A DuckDB error reads "<Kind> Error: message", maybe hint lines ('Did you mean "x"?',
# candidate bindings), then "LINE n: <query>" and a caret line under the offending token.
_QUERY_ECHO = re.compile(r"^LINE \d+:")
_MAX_ERROR_CHARS = 400


def _first_line(exc: BaseException) -> str:
    """A DuckDB error as one line: the message and its hints, without the echoed query and caret."""
    parts: list[str] = []
    for line in str(exc).splitlines():
        line = " ".join(line.split())
        if _QUERY_ECHO.match(line):
            break  # the rest is the query echoed back with a caret under the error
        if line:
            parts.append(line)
    if not parts:
        return type(exc).__name__
    text = parts[0]
    for part in parts[1:]:
        text += (" " if text.endswith((".", "!", "?", ":")) else "; ") + part
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3].rstrip() + "..."
    return text
