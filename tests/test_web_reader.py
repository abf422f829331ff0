"""How `hubindex serve` shares the catalog file with writers (hubindex/web/reader.py,
hubindex/waiting_writers.py): the reader lets go when a writer announces itself, reads the
snapshot meanwhile, fences its connections, and writers held by anything else still fail at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from conftest import assert_one_line_error, catalog_held_by_another_process, run_hubindex

from hubindex.index import Index
from hubindex.waiting_writers import MARKER_PREFIX, announced, is_web_server, writers_waiting
from hubindex.web.reader import RequestTimeout, SharedReader


@pytest.fixture
def small_index(tmp_path: Path) -> Index:
    """A real catalog with one crawl of timm's registry, and its published snapshot."""
    index = Index(tmp_path / "index")
    assert run_hubindex("crawl", "timm", index_dir=index.root).exit_code == 0
    with index.open_catalog() as catalog:
        catalog.publish_snapshot()
    return index


def test_a_marker_of_a_live_writer_counts_and_a_dead_ones_does_not(tmp_path: Path) -> None:
    assert not writers_waiting(tmp_path)
    with announced(tmp_path):
        assert (tmp_path / f"{MARKER_PREFIX}{os.getpid()}").is_file()
        assert writers_waiting(tmp_path)
    assert not any(tmp_path.iterdir())  # the marker goes with the block
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{MARKER_PREFIX}{finished.stdout.strip()}").write_text("")  # a writer killed while waiting
    assert not writers_waiting(tmp_path)


def test_only_a_serve_process_counts_as_a_server() -> None:
    assert not is_web_server(os.getpid())  # pytest is not `hubindex serve`
    assert not is_web_server(None)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "hubindex", "serve"])
    try:
        deadline = time.monotonic() + 10  # /proc shows the new command line a moment after the start
        while not is_web_server(sleeper.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_web_server(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_reader_reads_the_snapshot_while_a_writer_waits(small_index: Index) -> None:
    reader = SharedReader(small_index.catalog_path)
    with reader.reading(timeout_s=5) as catalog:
        assert catalog.snapshot is None and catalog.path == small_index.catalog_path
    with announced(small_index.root):
        with reader.reading(timeout_s=5) as catalog:
            assert catalog.snapshot is not None  # the live file is left to the writer
            assert catalog.path.name == "catalog.snapshot.duckdb"
            assert catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 1826
        # The live catalog is not open: a writer gets it.
        with small_index.open_catalog() as writer:
            writer.conn.execute("SELECT 1")


def test_a_request_in_flight_keeps_the_file_until_it_ends_then_lets_go(small_index: Index) -> None:
    reader = SharedReader(small_index.catalog_path)
    held: list[float] = []

    def long_request() -> None:
        with reader.reading(timeout_s=10) as catalog:
            catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone()
            held.append(time.monotonic())
            time.sleep(0.5)
        held.append(time.monotonic())

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.1)
    # A writer of this process cannot take the file from its own reader; a separate process can, once it is free.
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, duckdb\n"
        "deadline = time.monotonic() + 20\n"
        "while True:\n"
        "    try:\n"
        f"        duckdb.connect({str(small_index.catalog_path)!r}).close(); print(time.monotonic()); break\n"
        "    except duckdb.IOException:\n"
        "        if time.monotonic() > deadline: sys.exit(1)\n"
        "        time.sleep(0.02)\n")], stdout=subprocess.PIPE, text=True)
    opened_at = float(writer.communicate(timeout=30)[0])
    thread.join()
    assert writer.returncode == 0
    # CLOCK_MONOTONIC is one clock for every process: the writer got the file only as the request ended.
    assert opened_at > held[0] + 0.4
    assert opened_at > held[1] - 0.05


def test_connections_are_fenced_like_hubindex_sql(small_index: Index) -> None:
    reader = SharedReader(small_index.catalog_path)
    with reader.reading(timeout_s=5) as catalog:
        for statement in ("SELECT * FROM read_csv('/etc/passwd')", "ATTACH '/tmp/x.duckdb' AS x",
                          "SET enable_external_access = true", "COPY checkpoints TO '/tmp/out.csv'"):
            with pytest.raises(duckdb.Error):
                catalog.conn.execute(statement)
        # The macros and views of `prepare_catalog` are there, as on every catalog connection.
        assert catalog.conn.execute("SELECT hub_url('timm:resnet50.a1_in1k')").fetchone()[0].startswith("https://")


def test_a_read_past_the_request_limit_is_interrupted(small_index: Index) -> None:
    reader = SharedReader(small_index.catalog_path)
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="0.3 s limit"):
        with reader.reading(timeout_s=0.3) as catalog:
            catalog.conn.execute("SELECT count(*) FROM range(100000000000) a").fetchone()
    assert time.monotonic() - started < 5
    with reader.reading(timeout_s=5) as catalog:  # and the next request is served
        assert catalog.conn.execute("SELECT 1").fetchone() == (1,)


def test_the_instance_is_reopened_after_the_longest_hold(small_index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    import hubindex.web.reader

    monkeypatch.setattr(hubindex.web.reader, "HOLD_MAX_S", 0.5)  # 10 s in service; the rule is the same
    reader = SharedReader(small_index.catalog_path)
    deadline = time.monotonic() + 0.5 * 3
    requests = 0
    while time.monotonic() < deadline:
        with reader.reading(timeout_s=5):
            requests += 1
    # Back-to-back requests share one instance (it lingers between them), yet it is reopened now and then.
    assert 2 <= reader.opens <= 4 < requests


def test_a_writer_held_by_another_writer_still_fails_at_once(small_index: Index) -> None:
    with catalog_held_by_another_process(small_index.catalog_path):
        started = time.monotonic()
        result = run_hubindex("crawl", "timm", index_dir=small_index.root)
        assert time.monotonic() - started < 20
    assert_one_line_error(result, "being written by another process", exit_code=3)
    assert not writers_waiting(small_index.root)
