"""The DuckDB catalog: connection, migrations, checkpoint upserts, run bookkeeping.

All times are stored as UTC in TIMESTAMP columns.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import duckdb

from hubindex.errors import CatalogBusyError, HubindexError
from hubindex.migrations import LATEST_VERSION, MIGRATIONS
from hubindex.types import CheckpointRecord

CATALOG_FILENAME = "catalog.duckdb"
# A read-only copy of the catalog that a long writer (the nightly run) publishes for readers.
SNAPSHOT_FILENAME = "catalog.snapshot.duckdb"
# Statement types a user query may have: reading, and explaining how a read would run.


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (the catalog's convention)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class CatalogLockedError(CatalogBusyError):
    """Another process holds the catalog file's lock; `writer_pid` is that process, when DuckDB names it."""

    def __init__(self, message: str, writer_pid: int | None) -> None:
        super().__init__(message)
        self.writer_pid = writer_pid


# DuckDB names the holder of a conflicting lock: "Conflicting lock is held in /usr/bin/python3 (PID 1234)".
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in .*?\(PID (\d+)\)")


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    return connect_file(path, read_only, config=None)


def connect_file(path: Path, read_only: bool, config: dict[str, Any] | None) -> duckdb.DuckDBPyConnection:
    """Open the file (with DuckDB settings `config`); a lock held by another process is a CatalogLockedError."""
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config or {})
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            holder = _LOCK_HOLDER.search(text)
            raise CatalogLockedError(
                f"catalog {path} is being written by another process; retry when it finishes "
                f"({text.splitlines()[0]})",
                int(holder.group(1)) if holder else None,
            ) from None
        raise HubindexError(f"cannot open catalog {path}: {text.splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise HubindexError(
            f"cannot open catalog {path}: {str(exc).splitlines()[0]} "
            "(is it a hubindex DuckDB file?)"
        ) from None


# Called on every new connection (views and macros of the `prepare_catalog` hook); the plugin
# manager adds itself when it loads, so the catalog does not depend on the plugin layer.
CONNECTION_PREPARERS: list[Callable[[duckdb.DuckDBPyConnection], None]] = []


def _prepare(conn: duckdb.DuckDBPyConnection) -> None:
    for prepare in CONNECTION_PREPARERS:
        prepare(conn)


@dataclass
class UpsertResult:
    added: list[str]
    changed: list[str]
    unchanged: list[str]
    # (checkpoint_id, reason) of records whose values could not be stored at all
    rejected: list[tuple[str, str]] = field(default_factory=list)


class Catalog:
    """A hubindex catalog file. Open for writing with `Catalog(path)`, for reading with read_only."""

    def __init__(self, path: Path | str, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._in_transaction = False  # see _Transaction
        if read_only:
            if not self.path.exists():
                raise HubindexError(
                    f"no catalog at {self.path}; build one with `hubindex crawl ...` "
                    "or choose another index with --index DIR"
                )
            self.conn = _connect(self.path, read_only=True)
            self._check_version()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HubindexError(f"cannot create index folder {self.path.parent}: {exc.strerror}") from None
            self.conn = _connect(self.path, read_only=False)
            self.migrate()
        self._columns: dict[str, str] | None = None
        _prepare(self.conn)

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        if not exists:
            return 0
        return self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    def _check_version(self) -> int:
        version = self.schema_version()
        if version > LATEST_VERSION:
            raise HubindexError(
                f"catalog {self.path} has schema version {version}, newer than this hubindex "
                f"understands ({LATEST_VERSION}); upgrade hubindex"
            )
        return version

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        current = self._check_version()
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            with self.transaction():
                self.conn.execute(migration.sql)
                if migration.after is not None:
                    migration.after(self.conn)
                self.conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                    [migration.version, migration.name, utcnow()],
                )
            applied.append(migration.version)
        return applied

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def publish_snapshot(self) -> Path:
        """Copy the committed catalog to catalog.snapshot.duckdb beside it, atomically; return its path.

        Readers use the snapshot while this process holds the catalog for writing (DuckDB lets a
        file be open by one writing process and no reader). The copy is made by DuckDB inside one
        transaction - never by reading the file, which would also drop this process's lock on it.
        """
        target = snapshot_path(self.path)
        temporary = target.with_name(f".{target.name}.tmp")
        for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
            leftover.unlink(missing_ok=True)  # from a run killed while copying
        database = self.conn.execute("SELECT current_database()").fetchone()[0]
        quoted_path = str(temporary).replace("'", "''")
        self.conn.execute(f"ATTACH '{quoted_path}' AS hubindex_snapshot")
        try:
            self.conn.execute(f'COPY FROM DATABASE "{database}" TO hubindex_snapshot')
        finally:
            self.conn.execute("DETACH hubindex_snapshot")  # closes and checkpoints the copy
        os.replace(temporary, target)
        _fsync_folder(target.parent)
        return target

    # ---------------------------------------------------------------- checkpoints

    def checkpoint_columns(self) -> dict[str, str]:
        """{column: DuckDB type} of the checkpoints table."""
        if self._columns is None:
            rows = self.conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'checkpoints' ORDER BY ordinal_position"
            ).fetchall()
            self._columns = dict(rows)
        return self._columns

    def stored_values(self, column: str, where: str = "true", params: Sequence[Any] = ()) -> dict[str, Any]:
        """{checkpoint_id: column value} for the checkpoints matching a trusted condition."""
        if column not in self.checkpoint_columns():
            raise ValueError(f"unknown checkpoints column {column!r}")
        rows = self.conn.execute(
            f"SELECT checkpoint_id, {column} FROM checkpoints WHERE {where}", list(params)
        ).fetchall()
        return dict(rows)

    def upsert_checkpoints(
        self,
        records: Sequence[CheckpointRecord],
        source: str,
        owned_columns: Iterable[str],
        now: datetime | None = None,
    ) -> UpsertResult:
        """Insert or update checkpoints in one statement; owned columns overwrite, the others only fill gaps.

        A record owns its own `owned_columns`, else the ones given here, among the columns it
        carries; a column it does not carry keeps its stored value. Records of one id apply in
        order, as separate upserts would. Runs inside the caller's transaction if there is one. A
        record that owns sha and whose sha differs from the stored one counts as changed.
        """
        if not records:
            return UpsertResult([], [], [])
        now = now or utcnow()
        types = self.checkpoint_columns()
        default_owned = frozenset(owned_columns)
        by_id: dict[str, _Upsert] = {}
        for record in records:
            unknown = set(record.columns) - set(types)
            if unknown:
                raise ValueError(f"{record.checkpoint_id}: unknown catalog columns {sorted(unknown)}")
            upsert = _Upsert(dict(record.columns), (record.owned_columns or default_owned) & set(record.columns))
            earlier = by_id.get(record.checkpoint_id)
            by_id[record.checkpoint_id] = earlier.then(upsert) if earlier else upsert
        ids = list(by_id)
        stored_sha = dict(
            self.conn.execute(
                "SELECT checkpoint_id, sha FROM checkpoints WHERE list_contains(?, checkpoint_id)", [ids]
            ).fetchall()
        )
        result = UpsertResult([], [], [])
        for cid, upsert in by_id.items():
            new_sha = upsert.columns.get("sha")
            if cid not in stored_sha:
                result.added.append(cid)
            elif "sha" in upsert.owned and new_sha is not None and new_sha != stored_sha[cid]:
                result.changed.append(cid)
            else:
                result.unchanged.append(cid)

        carried = sorted({c for upsert in by_id.values() for c in upsert.columns} - set(_ROW_COLUMNS))
        owners = {c: sum(c in upsert.owned for upsert in by_id.values()) for c in carried}
        # Columns that some records own and others do not: each row says which it is.
        mixed = [c for c in carried if 0 < owners[c] < len(by_id)]
        rows = []
        for cid, upsert in by_id.items():
            row: dict[str, Any] = {"checkpoint_id": cid, "source": source, "first_seen_at": now, "crawled_at": now}
            try:
                for column in carried:
                    row[column] = _to_arrow_value(upsert.columns.get(column), types[column])
            except Exception as exc:  # noqa: BLE001 - untrusted metadata (e.g. JSON nested too deep)
                _reject(result, cid, exc)
                continue
            row.update({_owns(column): column in upsert.owned for column in mixed})
            rows.append(row)
        statement = _upsert_statement(types, carried, owners, mixed)
        params = [ids] if mixed else []  # the stored rows to read: the batch's
        for batch in _arrow_batches(rows, result):  # noqa: B007 - read by DuckDB's replacement scan
            self.conn.execute(statement, params)
        return result

    def checkpoint(self, checkpoint_id: str) -> dict[str, Any] | None:
        """One checkpoint row as a dict, or None."""
        rows = self.checkpoint_rows([checkpoint_id])
        return rows[0] if rows else None

    # ---------------------------------------------------------------- runs and failures

    def start_crawl_run(self, crawler: str, version: str, params: dict[str, Any], query_key: str) -> tuple[int, int | None]:
        """Record a new crawl run; return (run_id, id of the interrupted run it resumes or None)."""
        with self.transaction():
            # A run still marked 'running' died without finishing: nobody else can be writing,
            # since DuckDB gives this process the only write lock on the file.
            self.conn.execute(
                "UPDATE crawl_runs SET status = 'interrupted' WHERE status = 'running'"
            )
            previous = self.conn.execute(
                "SELECT run_id, status FROM crawl_runs WHERE query_key = ? "
                "ORDER BY run_id DESC LIMIT 1",
                [query_key],
            ).fetchone()
            resumed_from = previous[0] if previous and previous[1] in ("interrupted", "failed") else None
            run_id = self.conn.execute(
                "INSERT INTO crawl_runs (crawler, crawler_version, params, query_key, status, "
                "started_at, resumed_from) VALUES (?, ?, ?, ?, 'running', ?, ?) RETURNING run_id",
                [crawler, version, json.dumps(params, default=str), query_key, utcnow(), resumed_from],
            ).fetchone()[0]
        return run_id, resumed_from

    def last_completed_watermark(self, query_key: str) -> datetime | None:
        """Newest last_modified seen by the last completed run of the same query."""
        row = self.conn.execute(
            "SELECT watermark FROM crawl_runs WHERE query_key = ? AND status = 'completed' "
            "ORDER BY run_id DESC LIMIT 1",
            [query_key],
        ).fetchone()
        return row[0] if row else None

    def add_run_counts(self, run_id: int, **counts: int) -> None:
        sets = ", ".join(f"{name} = {name} + ?" for name in counts)
        self.conn.execute(f"UPDATE crawl_runs SET {sets} WHERE run_id = ?", [*counts.values(), run_id])

    def set_watermark(self, run_id: int, watermark: datetime | None) -> None:
        if watermark is not None:
            self.conn.execute(
                "UPDATE crawl_runs SET watermark = greatest(coalesce(watermark, ?), ?) WHERE run_id = ?",
                [watermark, watermark, run_id],
            )

    def finish_crawl_run(self, run_id: int, status: str, error: str | None = None) -> None:
        self.conn.execute(
            "UPDATE crawl_runs SET status = ?, finished_at = ?, error = ? WHERE run_id = ?",
            [status, utcnow(), error, run_id],
        )

    def crawl_run(self, run_id: int) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM crawl_runs WHERE run_id = ?", [run_id])
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))

    def record_failure(self, run_id: int | None, stage: str, subject: str, kind: str, message: str) -> None:
        """Record a failure; an open failure of the same subject, stage and kind is updated instead."""
        updated = self.conn.execute(
            "UPDATE failures SET run_id = ?, message = ?, occurred_at = ? "
            "WHERE subject = ? AND stage = ? AND kind = ? AND resolved_at IS NULL RETURNING failure_id",
            [run_id, message, utcnow(), subject, stage, kind],
        ).fetchall()
        if not updated:
            self.conn.execute(
                "INSERT INTO failures (run_id, stage, subject, kind, message, occurred_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, stage, subject, kind, message, utcnow()],
            )

    def resolve_failures(self, stage: str, subjects: Sequence[str]) -> None:
        """Mark open failures of these subjects resolved (a later run succeeded on them)."""
        if subjects:
            self.conn.execute(
                "UPDATE failures SET resolved_at = ? WHERE stage = ? AND resolved_at IS NULL "
                "AND list_contains(?, subject)",
                [utcnow(), stage, list(subjects)],
            )

    # ---------------------------------------------------------------- embeddings

    def checkpoint_rows(self, checkpoint_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Checkpoint rows as dicts, in the order of the ids given; unknown ids are left out."""
        if not checkpoint_ids:
            return []
        cur = self.conn.execute(
            "SELECT * FROM checkpoints WHERE list_contains(?, checkpoint_id)", [list(checkpoint_ids)]
        )
        names = [d[0] for d in cur.description]
        by_id = {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
        return [by_id[cid] for cid in checkpoint_ids if cid in by_id]

    def embedding(
        self, checkpoint_sha: str, corpus_hash: str, layer: str, pooling: str, checkpoint_id: str | None = None,
        dtype: str = "float32",
    ) -> dict[str, Any] | None:
        """A registered feature matrix for this key (checkpoint_id's own row first), or None.

        Checkpoints with the same sha (the same files under two ids) share one stored matrix.
        """
        cur = self.conn.execute(
            "SELECT * FROM embeddings WHERE checkpoint_sha = ? AND corpus_hash = ? AND layer = ? AND pooling = ? "
            "AND dtype = ? ORDER BY checkpoint_id IS NOT DISTINCT FROM ? DESC, created_at DESC LIMIT 1",
            [checkpoint_sha, corpus_hash, layer, pooling, dtype, checkpoint_id],
        )
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    def register_embedding(self, row: dict[str, Any]) -> None:
        """Register (or replace) a stored feature matrix; `row` has the embeddings table's columns."""
        columns = list(row)
        self.conn.execute(
            f"INSERT OR REPLACE INTO embeddings ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})",
            [row[c] for c in columns],
        )


def fetch_dicts(conn: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """The rows of one statement as {column: value} dicts."""
    cursor = conn.execute(sql, params) if params is not None else conn.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def snapshot_path(catalog_path: Path) -> Path:
    """Where the read snapshot of a catalog lives."""
    return Path(catalog_path).with_name(SNAPSHOT_FILENAME)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in the folder survive a power cut."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class _Transaction:
    """BEGIN/COMMIT around a block; ROLLBACK if it raises. Nested use joins the outer one.

    Nesting is counted here: in DuckDB a BEGIN inside a transaction fails and aborts the outer one.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.owner = False

    def __enter__(self) -> None:
        self.owner = not self.catalog._in_transaction
        if self.owner:
            self.catalog.conn.execute("BEGIN TRANSACTION")
            self.catalog._in_transaction = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.owner:
            return
        self.catalog._in_transaction = False
        self.catalog.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _to_arrow_value(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type.startswith("MAP("):
        return [{"key": k, "value": v} for k, v in value.items()]
    if column_type == "JSON":
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _arrow_batches(rows: list[dict[str, Any]], result: UpsertResult) -> Iterator[Any]:
    """Rows as Arrow tables: one table normally; row by row when values of mixed types (from an
    untrusted source) defeat one table, rejecting the rows Arrow cannot represent at all."""
    import pyarrow as pa  # a dependency of datasets; DuckDB scans Arrow tables without copies

    if not rows:
        return
    try:
        table = pa.Table.from_pylist(rows)
    except Exception:  # noqa: BLE001 - mixed types, integers past 64 bits, ...: find the bad rows below
        table = None
    if table is not None:
        yield table
        return
    for row in rows:
        try:
            table = pa.Table.from_pylist([row])
        except Exception as exc:  # noqa: BLE001 - this row alone cannot be stored; the others can
            _reject(result, row["checkpoint_id"], exc)
            continue
        yield table


def _reject(result: UpsertResult, checkpoint_id: str, exc: BaseException) -> None:
    """Take a record out of the upsert: it becomes a failure (bad-metadata) and the batch goes on."""
    for bucket in (result.added, result.changed, result.unchanged):
        if checkpoint_id in bucket:
            bucket.remove(checkpoint_id)
    message = " ".join(str(exc).split())[:200]
    result.rejected.append((checkpoint_id, f"unstorable metadata: {type(exc).__name__}: {message}"))


def _cast_expression(column: str, column_type: str) -> str:
    # Arrow infers types from the values (and gives `null` to all-NULL columns); cast to the
    # catalog's declared type so every batch lands the same way.
    if column_type.startswith("MAP(") and column_type.endswith(")"):
        key, value = column_type[4:-1].split(",", 1)
        return f"map_from_entries(TRY_CAST({column} AS STRUCT(key {key}, value {value.strip()})[]))"
    # TRY_CAST: a value of the wrong kind from an untrusted source becomes NULL, not a failed batch.
    return f"TRY_CAST({column} AS {column_type})"


# Columns every upserted row gets from the upsert itself, not from its record.
_ROW_COLUMNS = ("checkpoint_id", "source", "first_seen_at", "crawled_at")


@dataclass
class _Upsert:
    """One checkpoint's values in an upsert, and the columns among them that it overwrites."""

    columns: dict[str, Any]
    owned: frozenset[str]

    def then(self, later: _Upsert) -> _Upsert:
        """One upsert with the effect of this one followed by `later` (an id repeated in a batch)."""
        columns = dict(self.columns)
        for name, value in later.columns.items():
            if name in later.owned or columns.get(name) is None:
                columns[name] = value
        return _Upsert(columns, self.owned | later.owned)


def _owns(column: str) -> str:
    """The batch column saying whether a row owns `column`."""
    return f"owns_{column}"


def _upsert_statement(
    types: dict[str, str], carried: list[str], owners: dict[str, int], mixed: list[str]
) -> str:
    """The one INSERT ... ON CONFLICT that writes the Arrow table `batch` into checkpoints.

    ON CONFLICT sees only the catalog's columns, not which row owns what; so a column that some
    rows own and others do not is resolved in the SELECT, against the stored row, and the conflict
    update then takes it as it is. Then the statement takes one parameter: the batch's ids.
    """
    values = [_cast_expression(f"batch.{column}", types[column]) for column in _ROW_COLUMNS]
    updates = ["crawled_at = excluded.crawled_at"]
    for column in carried:
        value = _cast_expression(f"batch.{column}", types[column])
        if column in mixed:
            value = f"CASE WHEN batch.{_owns(column)} THEN {value} ELSE coalesce(stored.{column}, {value}) END"
        values.append(value)
        if owners[column]:
            updates.append(f"{column} = excluded.{column}")
        else:
            updates.append(f"{column} = coalesce(checkpoints.{column}, excluded.{column})")
    # Only a batch with mixed ownership reads stored rows: those of its ids, found by a filter on
    # the id column (a join would read every stored row's wide columns).
    join = (
        f" LEFT JOIN (SELECT checkpoint_id, {', '.join(mixed)} FROM checkpoints"
        " WHERE list_contains(?, checkpoint_id)) AS stored ON stored.checkpoint_id = batch.checkpoint_id"
    ) if mixed else ""
    return (
        f"INSERT INTO checkpoints ({', '.join([*_ROW_COLUMNS, *carried])}) SELECT {', '.join(values)} "
        f"FROM batch{join} ON CONFLICT (checkpoint_id) DO UPDATE SET {', '.join(updates)}"
    )
