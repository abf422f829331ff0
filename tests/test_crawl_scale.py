"""The Hugging Face crawl at Hub scale: one catalog write per batch, model_info requests side by side.

Against the Hub imitation (tests/hub_imitation.py) on 127.0.0.1, in pages of 100 models. Catalog
statements are counted from DuckDB's own query log; the Hub's latency is the imitation's.
"""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pytest

from conftest import CliResult, assert_one_line_error, record_crawler_waits, run_hubindex
from hub_imitation import MODEL_INFO, HubImitation, HubServer, hub_server  # noqa: F401 - hub_server is a fixture
from hubindex import hookimpl
from hubindex.catalog import Catalog
from hubindex.index import Index
from hubindex.pipeline import BATCH_RECORDS
from hubindex.plugins import pm
from hubindex.types import CheckpointRecord
from hubindex_plugins.crawl_hf import HfCrawler

# A statement that writes the checkpoints table.
WRITES_CHECKPOINTS = re.compile(
    r"^\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|MERGE\s+INTO|UPDATE|DELETE\s+FROM)\s+checkpoints\b", re.IGNORECASE
)
# Columns that say when, not what: they differ between two crawls of the same Hub.
TIME_COLUMNS = ("crawled_at", "first_seen_at")


@pytest.fixture
def hub(hub_server: HubServer) -> Iterator[HubImitation]:  # noqa: F811 - pages of 100, not 3
    with hub_server.serve(HubImitation(page_size=100)) as imitation:
        yield imitation


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The crawler's retry waits, recorded instead of slept."""
    return record_crawler_waits(monkeypatch)


def add_repos(hub: HubImitation, count: int) -> list[str]:
    """Repos listed (by downloads) in the order of their names."""
    names = [f"org/model-{i:03d}" for i in range(count)]
    for rank, name in enumerate(names):
        hub.add_repo(name, downloads=100_000 - rank, params={"F32": 1000 + rank})
    return names


def crawl(index_dir: Path, hub: HubImitation, *args: str) -> CliResult:
    return run_hubindex("crawl", "hf", "--endpoint", hub.url, *args, index_dir=index_dir)


def ok(result: CliResult) -> CliResult:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def query(index_dir: Path, sql: str) -> list[dict[str, Any]]:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        cursor = catalog.conn.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def catalog_contents(index_dir: Path) -> dict[str, Any]:
    """What a crawl stored, without the times at which it did."""
    rows = query(index_dir, "SELECT * FROM checkpoints ORDER BY checkpoint_id")
    return {
        "checkpoints": [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in rows],
        "failures": query(index_dir, "SELECT subject, kind, message FROM failures ORDER BY ALL"),
        "runs": query(index_dir, "SELECT status, seen, added, changed, unchanged, failed, fetched, watermark "
                                 "FROM crawl_runs ORDER BY run_id"),
    }


class _QueryLog:
    """Turns on DuckDB's query log, into a file, for each catalog connection opened."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.opened = 0

    @hookimpl
    def prepare_catalog(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.opened += 1
        path = str(self.folder / str(self.opened)).replace("'", "''")
        conn.execute(f"CALL enable_logging('QueryLog', storage='file', storage_config={{'path': '{path}'}})")

    def statements(self) -> list[str]:
        found = []
        for entries in sorted(self.folder.glob("*/duckdb_log_entries.csv")):
            with entries.open(newline="") as handle:
                found += [row["message"] for row in csv.DictReader(handle) if row["type"] == "QueryLog"]
        return found


@contextmanager
def catalog_statements(folder: Path) -> Iterator[list[str]]:
    """The SQL statements run on the catalogs opened in the block; the list fills when the block ends."""
    log = _QueryLog(folder)
    pm.register(log, name="test-query-log")
    statements: list[str] = []
    try:
        yield statements
    finally:
        pm.unregister(name="test-query-log")
        statements += log.statements()  # the log is written out as each connection closes


def checkpoint_writes(statements: list[str]) -> int:
    return sum(bool(WRITES_CHECKPOINTS.match(s)) for s in statements)


# ------------------------------------------------------------------------ one upsert per batch


def test_one_percent_changed_crawl_costs_no_more_upserts(hub: HubImitation, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    names = add_repos(hub, 2 * BATCH_RECORDS)
    ok(crawl(index_dir, hub))

    with catalog_statements(tmp_path / "unchanged") as unchanged:
        result = ok(crawl(index_dir, hub))
    assert "400 seen, 0 added, 0 changed, 400 unchanged, 0 failed, 0 metadata fetches" in result.stdout

    # 1% of the repos get a new commit, two in each batch: listing-only and fetched records mix.
    for rank in (50, 150, 250, 350):
        hub.update_repo(names[rank], safetensors={"parameters": {"F32": 5}, "total": 5})
    with catalog_statements(tmp_path / "changed") as changed:
        result = ok(crawl(index_dir, hub))
    assert "400 seen, 0 added, 4 changed, 396 unchanged, 0 failed, 4 metadata fetches" in result.stdout

    batches = math.ceil(len(names) / BATCH_RECORDS)
    assert checkpoint_writes(unchanged) == batches
    assert checkpoint_writes(changed) <= 1.2 * checkpoint_writes(unchanged)
    # The refetched repos got their new metadata; the others kept theirs.
    rows = {r["checkpoint_id"]: r for r in query(index_dir, "SELECT * FROM checkpoints")}
    assert rows["hf:org/model-050"]["metadata_sha"] == hub.repos["org/model-050"].sha
    assert rows["hf:org/model-050"]["params_total"] == 5
    assert rows["hf:org/model-051"]["metadata_sha"] == hub.repos["org/model-051"].sha
    assert rows["hf:org/model-051"]["license"] == "apache-2.0"
    assert rows["hf:org/model-051"]["weight_files"] is not None


def test_mixed_batch_is_one_statement_and_each_record_owns_its_columns(tmp_path: Path) -> None:
    owned = {"repo_id", "sha", "metadata_sha", "license", "downloads"}
    full = {"repo_id": "org/a", "sha": "1", "metadata_sha": "1", "license": "mit", "downloads": 5, "num_classes": 10}
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        catalog.upsert_checkpoints(
            [CheckpointRecord("hf:org/a", full), CheckpointRecord("hf:org/b", {**full, "repo_id": "org/b"})],
            source="hf", owned_columns=owned,
        )
        catalog.conn.execute("CALL enable_logging('QueryLog')")
        result = catalog.upsert_checkpoints([
            # Listed only: what it does not carry (metadata_sha, license) stays as stored.
            CheckpointRecord("hf:org/a", {"repo_id": "org/a", "sha": "1", "downloads": 6}),
            # Fetched anew: owned columns overwrite, with NULL too; the others only fill gaps.
            CheckpointRecord("hf:org/b", {"repo_id": "org/b", "sha": "2", "metadata_sha": "2", "license": None,
                                          "downloads": 7, "num_classes": 99}),
            # Listed, then fetched in the same batch: both apply, in order.
            CheckpointRecord("hf:org/c", {"repo_id": "org/c", "sha": "3", "downloads": 1}),
            CheckpointRecord("hf:org/c", {"repo_id": "org/c", "sha": "3", "metadata_sha": "3", "license": "gpl"}),
            # A record that owns other columns than its crawler's: license is not among them.
            CheckpointRecord("hf:org/a", {"license": "other", "local_path": "/x"},
                             owned_columns=frozenset({"local_path"})),
        ], source="hf", owned_columns=owned)
        statements = [row[0] for row in catalog.conn.execute(
            "SELECT message FROM duckdb_logs WHERE type = 'QueryLog'").fetchall()]
        catalog.conn.execute("CALL disable_logging()")
        rows = {r["checkpoint_id"]: r for r in catalog.checkpoint_rows(["hf:org/a", "hf:org/b", "hf:org/c"])}

    assert checkpoint_writes(statements) == 1
    assert (result.added, result.changed, result.unchanged) == (["hf:org/c"], ["hf:org/b"], ["hf:org/a"])
    a, b, c = rows["hf:org/a"], rows["hf:org/b"], rows["hf:org/c"]
    assert (a["metadata_sha"], a["license"], a["downloads"], a["local_path"], a["num_classes"]) == ("1", "mit", 6, "/x", 10)
    assert (b["sha"], b["metadata_sha"], b["license"], b["downloads"], b["num_classes"]) == ("2", "2", None, 7, 10)
    assert (c["sha"], c["metadata_sha"], c["license"], c["downloads"]) == ("3", "3", "gpl", 1)


# ------------------------------------------------------------------------ concurrent model_info


def test_concurrent_model_info_is_faster_and_stores_the_same(hub: HubImitation, tmp_path: Path) -> None:
    add_repos(hub, 40)
    hub.latency(MODEL_INFO, 0.05)
    seconds, contents = {}, {}
    for workers in (1, 8):
        index_dir = tmp_path / f"concurrency-{workers}"
        Index(index_dir).open_catalog().close()  # created beforehand: the time is the crawl's
        started = time.perf_counter()
        result = ok(crawl(index_dir, hub, "--concurrency", str(workers)))
        seconds[workers] = time.perf_counter() - started
        assert "40 seen, 40 added, 0 changed, 0 unchanged, 0 failed, 40 metadata fetches" in result.stdout
        contents[workers] = catalog_contents(index_dir)
    assert contents[8] == contents[1]
    assert hub.count(MODEL_INFO) == 80
    # 40 requests of 50 ms: 2 s one after the other, about 0.25 s eight at a time.
    assert seconds[1] / seconds[8] >= 3, seconds


def test_rate_limit_during_concurrent_fetching_holds_every_request(
    hub: HubImitation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = add_repos(hub, 40)
    hub.latency(MODEL_INFO, 0.05)
    hub.rate_limit(f"/api/models/{names[5]}", reset=0)  # RateLimit t=0: wait one second

    pauses: list[tuple[float, float]] = []
    sent: list[tuple[float, str]] = []
    original_init, original_get = HfCrawler.__init__, HfCrawler._get_model_info

    def sleep(seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        pauses.append((started, time.monotonic()))

    def init(self: HfCrawler, **options: Any) -> None:
        original_init(self, **options)
        self.sleep = sleep

    def get_model_info(client: Any, repo_id: str) -> dict[str, Any]:
        sent.append((time.monotonic(), repo_id))
        return original_get(client, repo_id)

    monkeypatch.setattr(HfCrawler, "__init__", init)
    monkeypatch.setattr(HfCrawler, "_get_model_info", staticmethod(get_model_info))
    index_dir = tmp_path / "index"
    result = ok(crawl(index_dir, hub, "--concurrency", "8"))
    assert "40 seen, 40 added, 0 changed, 0 unchanged, 0 failed, 40 metadata fetches" in result.stdout

    (pause,) = pauses  # waited once, by the crawl, for the whole pool
    assert pause[1] - pause[0] >= 1.0
    # Requests already past the gate when the 429 was read may start a moment later; none after.
    assert [repo for at, repo in sent if pause[0] + 0.05 < at < pause[1]] == []
    assert [r.status for r in hub.requests(MODEL_INFO, names[5])] == [429, 200]
    assert max(at for at, repo in sent if repo == names[5]) >= pause[1]
    assert query(index_dir, "SELECT count(*) AS n FROM checkpoints WHERE metadata_sha = sha") == [{"n": 40}]


def test_rate_limit_past_max_wait_keeps_what_concurrent_requests_brought(
    hub: HubImitation, tmp_path: Path, waits: list[float]
) -> None:
    names = add_repos(hub, 40)
    hub.latency(MODEL_INFO, 0.02)
    hub.retry_after(f"/api/models/{names[10]}", 999999, times=None)
    index_dir = tmp_path / "index"
    index_dir.mkdir()  # an existing index: the first crawl of a new one also says it started it
    result = crawl(index_dir, hub, "--max-wait", "5", "--concurrency", "8")
    assert_one_line_error(result, f"rate limited by {hub.url}", "999999 s", "--max-wait 5 s", exit_code=1)
    assert waits == []
    fetched = hub.model_info_ids()
    assert set(names[:10]) <= set(fetched) and names[10] not in fetched
    stored = query(index_dir, "SELECT repo_id FROM checkpoints WHERE metadata_sha = sha")
    assert sorted(r["repo_id"] for r in stored) == sorted(fetched)  # every answer that came is kept
    assert query(index_dir, "SELECT * FROM failures") == []  # a rate limit is not the repo's failure

    hub.recover()
    hub.clear_log()
    result = ok(crawl(index_dir, hub, "--max-wait", "5", "--concurrency", "8"))
    assert "(resumed run 1)" in result.stdout
    refetched = hub.model_info_ids()
    assert names[10] in refetched and sorted(fetched + refetched) == names  # nothing fetched twice


def test_ctrl_c_during_concurrent_fetching_stops_at_once(hub: HubImitation, tmp_path: Path) -> None:
    add_repos(hub, 20)
    hub.latency(MODEL_INFO, 30)  # requests that would hold the crawl for --timeout

    def interrupt() -> None:
        deadline = time.monotonic() + 20
        while hub.count(MODEL_INFO) < 4:  # the crawl is under way, with requests in flight
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    result = crawl(tmp_path / "index", hub, "--concurrency", "4")
    assert result.exit_code == 130, (result.stdout, result.stderr)
    assert time.monotonic() - started < 10
    # The requests in flight are cut, not waited for: the worker threads are gone at once.
    deadline = time.monotonic() + 2
    while any(t.name.startswith("hubindex-model-info") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "model_info threads still running after Ctrl-C"
        time.sleep(0.01)
    assert query(tmp_path / "index", "SELECT status FROM crawl_runs") == [{"status": "interrupted"}]


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_concurrency_option_is_checked(hub: HubImitation, tmp_path: Path, value: str) -> None:
    result = crawl(tmp_path / "index", hub, "--concurrency", value)
    assert_one_line_error(result, "--concurrency", exit_code=2)
    assert hub.log == []
