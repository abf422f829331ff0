"""`hubindex check`: verify an index folder, and with --repair remove what can be recomputed.

What is checked, one line per problem found:

- the catalog: it opens, every migration is applied, and DuckDB can read every table in full (a
  truncated or damaged file often still answers `count(*)` from its metadata);
- the store: every file the catalog registers (feature matrices of `embeddings` and
  `task_features`) is present with its sha256; every fingerprint folder holds, readable and
  finite, the rows its table names, and its IVF files open; each task's copied examples are present;
- orphans: store files no row names, temporary files a crash left behind, and rows of
  checkpoints that are no longer in the catalog.

--repair deletes what the next run recomputes: rows whose files are missing or changed (and those
files), fingerprint folders missing rows (with their table rows; `hubindex kappa` rebuilds them),
unreadable fingerprint IVF files (the next `hubindex kappa` rebuilds them), orphan files and rows. A catalog that
cannot be read is replaced by its read snapshot (`catalog.snapshot.duckdb`, published by nightly
runs) when the snapshot itself checks out; the damaged file is kept beside it. Nothing that cannot be
recomputed (checkpoint rows, tasks, scores of other checkpoints) is deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb

from hubindex.catalog import Catalog, snapshot_path, utcnow
from hubindex.errors import HubindexError
from hubindex.fingerprint_index import check_folder, fingerprint_folder, folder_files
from hubindex.index import Index
from hubindex.migrations import LATEST_VERSION
from hubindex.store import STORE_DIR, file_sha256

# Rows are read in chunks of this many when checking that a table reads in full.
READ_CHUNK = 10_000
# Tables whose rows name a checkpoint that must exist, and what a row of them is.
CHECKPOINT_ROWS = {"embeddings": "stored features", "kappa": "kappa pair", "fingerprints": "fingerprint"}


@dataclass
class Problem:
    """Something wrong with the index: the thing, what is wrong, and the repair (None: cannot be recomputed)."""

    thing: str
    message: str
    repair: Callable[[Catalog], str] | None = None

    def line(self) -> str:
        fix = "--repair removes it; the next run recomputes it" if self.repair else "not recomputable"
        return f"{self.thing}: {self.message} ({fix})"


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # what was looked at, counted

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if p.repair is None] if self.repaired else self.problems


def _table_problems(conn: duckdb.DuckDBPyConnection, report: CheckReport) -> list[Problem]:
    """Tables DuckDB cannot read in full."""
    problems = []
    tables = [t for (t,) in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
        "AND table_catalog = current_database() AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
    rows = 0
    for table in tables:
        try:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            while chunk := cursor.fetchmany(READ_CHUNK):
                rows += len(chunk)
        except duckdb.Error as exc:
            problems.append(Problem(f"catalog table {table}", f"cannot be read in full ({_first_line(exc)})"))
    report.checked.update(tables=len(tables), rows=rows)
    return problems


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _readable(path: Path) -> str | None:
    """None if the catalog file opens and reads in full, else why not."""
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return f"it does not open ({_first_line(exc)})"
    try:
        problems = _table_problems(conn, CheckReport())
    finally:
        conn.close()
    return f"{problems[0].thing} {problems[0].message}" if problems else None


def _restore_snapshot(index: Index) -> Callable[[Catalog | None], str] | None:
    """The repair of an unreadable catalog: its read snapshot, if that one reads in full."""
    snapshot = snapshot_path(index.catalog_path)
    if not snapshot.is_file() or _readable(snapshot) is not None:
        return None

    def restore(_: Catalog | None) -> str:
        kept = index.catalog_path.with_name(f"{index.catalog_path.name}.damaged-{utcnow():%Y%m%dT%H%M%S}")
        os.replace(index.catalog_path, kept)
        shutil.copyfile(snapshot, index.catalog_path)
        return f"catalog replaced by its read snapshot of {snapshot.stat().st_mtime:.0f}; the damaged file is {kept}"

    return restore


def _store_problems(catalog: Catalog, root: Path, report: CheckReport) -> tuple[list[Problem], set[str]]:
    """Registered files missing or changed, fingerprint folders missing rows, missing task folders;
    and the store files in use."""
    problems: list[Problem] = []
    in_use: set[str] = set()
    for table, label in (("embeddings", "features"), ("task_features", "task features")):
        rows = catalog.conn.execute(
            f"SELECT path, file_sha256, min(checkpoint_id), count(*) FROM {table} GROUP BY path, file_sha256").fetchall()
        report.checked[f"{table} files"] = len(rows)
        for path, sha, checkpoint_id, count in rows:
            in_use.add(path)
            file = root / path
            if not file.is_file():
                why = "is missing"
            elif file_sha256(file) != sha:
                why = "changed on disk since it was registered"
            else:
                continue
            problems.append(Problem(f"store file {path}", f"{label} of {checkpoint_id} ({count} row(s)) {why}",
                                    _drop_rows(table, path, file)))
    folders = catalog.conn.execute(
        "SELECT corpus_hash, dim, seed, list(fp_id) FROM fingerprints GROUP BY corpus_hash, dim, seed").fetchall()
    report.checked["fingerprint folders"] = len(folders)
    for corpus_hash, dim, seed, ids in folders:
        folder = fingerprint_folder(root, corpus_hash, dim, seed)
        relative = folder.relative_to(root).as_posix()
        in_use.update(p.relative_to(root).as_posix() for p in folder_files(folder))
        found = check_folder(folder, dim, seed, ids)
        if found.rows_problem:
            problems.append(Problem(f"store folder {relative}", f"{found.rows_problem} ({len(ids)} fingerprints name it)",
                                    _drop_fingerprints(corpus_hash, dim, seed, folder)))
        for path in found.unreadable_ivf:
            problems.append(Problem(f"store file {path.relative_to(root).as_posix()}",
                                    "is not a readable fingerprint IVF index", _remove_file(path)))
    for task, path in catalog.conn.execute("SELECT task, path FROM tasks").fetchall():
        if not (root / path).is_dir():
            problems.append(Problem(f"task {task}", f"its examples folder {path} is missing; add the task again"))
    return problems, in_use


def _drop_rows(table: str, path: str, file: Path) -> Callable[[Catalog], str]:
    def repair(catalog: Catalog) -> str:
        with catalog.transaction():
            count = catalog.conn.execute(f"DELETE FROM {table} WHERE path = ? RETURNING 1", [path]).fetchall()
        file.unlink(missing_ok=True)
        return f"removed {len(count)} {table} row(s) of {path} and the file"

    return repair


def _drop_fingerprints(corpus_hash: str, dim: int, seed: int, folder: Path) -> Callable[[Catalog], str]:
    def repair(catalog: Catalog) -> str:
        with catalog.transaction():
            count = catalog.conn.execute(
                "DELETE FROM fingerprints WHERE corpus_hash = ? AND dim = ? AND seed = ? RETURNING 1",
                [corpus_hash, dim, seed]).fetchall()
        shutil.rmtree(folder, ignore_errors=True)
        return f"removed {len(count)} fingerprint row(s) and {folder.name}/; `hubindex kappa` rebuilds them"

    return repair


def _remove_file(file: Path) -> Callable[[Catalog], str]:
    def repair(_: Catalog) -> str:
        file.unlink(missing_ok=True)
        return f"removed {file}"

    return repair


def _orphan_problems(catalog: Catalog, root: Path, in_use: set[str]) -> list[Problem]:
    """Store files no row names, temporary files left by a crash, rows of checkpoints that are gone."""
    problems = []
    store = root / STORE_DIR
    for file in sorted(store.rglob("*")) if store.is_dir() else []:
        relative = file.relative_to(root).as_posix()
        if file.is_file() and relative not in in_use:
            what = "a temporary file left by an interrupted write" if file.name.endswith(".tmp") else "no row names it"
            problems.append(Problem(f"store file {relative}", f"orphan: {what}", _remove_file(file)))
    for table, label in CHECKPOINT_ROWS.items():
        columns = ("checkpoint_a", "checkpoint_b") if table == "kappa" else ("checkpoint_id",)
        condition = " OR ".join(f"{c} NOT IN (SELECT checkpoint_id FROM checkpoints)" for c in columns)
        (count,) = catalog.conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()
        if count:
            problems.append(Problem(f"catalog table {table}", f"{count} {label} row(s) of checkpoints no longer "
                                    "in the catalog", _delete_where(table, condition)))
    return problems


def _delete_where(table: str, condition: str) -> Callable[[Catalog], str]:
    def repair(catalog: Catalog) -> str:
        with catalog.transaction():
            count = catalog.conn.execute(f"DELETE FROM {table} WHERE {condition} RETURNING 1").fetchall()
        return f"removed {len(count)} orphan {table} row(s)"

    return repair


def _lineage_problems(catalog: Catalog) -> list[Problem]:
    """The lineage closure must be what the `lineage` table implies (it is kept incrementally)."""
    from hubindex.lineage import closure_drift, rebuild_closure

    drift = closure_drift(catalog)
    if not drift:
        return []

    def rebuild(catalog: Catalog) -> str:
        return f"rebuilt the lineage closure from the lineage table ({rebuild_closure(catalog)} rows)"

    return [Problem("catalog table lineage_closure", f"{drift} row(s) differ from what the lineage table implies",
                    rebuild)]


def check_index(index: Index, repair: bool = False) -> CheckReport:
    """Check the index folder; with repair, remove what can be recomputed. Problems are in the report."""
    report = CheckReport()
    path = index.catalog_path
    if not path.is_file():
        raise HubindexError(f"no catalog at {path}; nothing to check (choose the index with --index DIR)")
    why = _readable(path)
    if why is not None:
        restore = _restore_snapshot(index)
        report.problems.append(Problem("catalog", f"{path} is damaged: {why}; "
                                       + ("its read snapshot reads in full" if restore else
                                          "no readable snapshot: restore it from a backup, or move it away and "
                                          "crawl again"), restore))
        if not (repair and restore):
            return report
        report.repaired.append(restore(None))
    with Catalog(path, read_only=not repair) as catalog:  # a read-write open applies missing migrations
        applied = catalog.conn.execute("SELECT list(version ORDER BY version) FROM schema_migrations").fetchone()[0]
        if applied != list(range(1, LATEST_VERSION + 1)):
            report.problems.append(Problem("catalog schema", f"migrations {applied} of 1..{LATEST_VERSION} applied"))
        report.problems += _table_problems(catalog.conn, report)
        store_problems, in_use = _store_problems(catalog, index.root, report)
        report.problems += store_problems + _orphan_problems(catalog, index.root, in_use)
        report.problems += _lineage_problems(catalog)
        if repair:
            for problem in report.problems:
                if problem.repair is not None and problem.thing != "catalog":
                    report.repaired.append(problem.repair(catalog))
    return report
