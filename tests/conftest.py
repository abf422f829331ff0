"""Shared fixtures: every test gets its own index folder; the CLI runs in-process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hubindex.cli import main
from hubindex.index import Index


@dataclass
class Zoo:
    """A zoo built by `hubindex zoo build` (a Hugging Face cache folder)."""

    out: Path
    results: dict[str, Any]  # repo_id -> hubindex_plugins.zoo.MemberResult
    seconds: float

    def snapshot(self, repo_id: str) -> Path:
        return self.results[repo_id].snapshot

    def lineage(self, repo_id: str) -> dict[str, Any]:
        from hubindex_plugins.zoo import LINEAGE_FILE

        return json.loads((self.snapshot(repo_id) / LINEAGE_FILE).read_text())

    def card(self, repo_id: str) -> dict[str, Any]:
        from huggingface_hub import metadata_load

        return metadata_load(self.snapshot(repo_id) / "README.md") or {}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    """The whole real zoo, built once per session with the function the CLI uses (20-45 s)."""
    from hubindex_plugins.zoo import build_zoo

    out = tmp_path_factory.mktemp("zoo")
    start = time.perf_counter()
    results = build_zoo(out, progress=False)
    return Zoo(out, {r.repo_id: r for r in results}, time.perf_counter() - start)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_hubindex(*args: str, index_dir: Path | None = None) -> CliResult:
    """Run `hubindex ARGS` in this process, through the same main() as the console script."""
    argv = (["--index", str(index_dir)] if index_dir is not None else []) + [str(a) for a in args]
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(argv)
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def assert_one_line_error(result: CliResult, *fragments: str, exit_code: int | None = None) -> str:
    """A failed command printed exactly one `hubindex: error:` line (holding the fragments), nothing else."""
    assert result.exit_code != 0
    if exit_code is not None:
        assert result.exit_code == exit_code, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hubindex: error: "), result.stderr
    assert result.stdout == "", result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def catalog_snapshot(index: Index) -> dict:
    """Everything in the catalog, plus the bytes of every file in the index folder."""
    with index.open_catalog(read_only=True) as catalog:
        tables = {
            name: catalog.conn.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
            for (name,) in catalog.conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "AND table_catalog = current_database() ORDER BY 1"
            ).fetchall()
        }
    files = {str(p.relative_to(index.root)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(index.root.rglob("*")) if p.is_file()}
    return {"tables": tables, "files": files}


@pytest.fixture
def index_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty index folder; HUBINDEX_INDEX points at it so nothing touches index_data/."""
    folder = tmp_path / "index"
    folder.mkdir()  # the command line makes a missing folder only in crawl, zoo build and nightly
    monkeypatch.setenv("HUBINDEX_INDEX", str(folder))
    return folder


@pytest.fixture
def index(index_dir: Path) -> Index:
    return Index(index_dir)


@pytest.fixture
def hubindex(index_dir: Path):  # noqa: ANN201 - returns the runner function
    """Run the CLI against the test's own index: hubindex('sql', 'SELECT 1')."""

    def run(*args: str) -> CliResult:
        return run_hubindex(*args, index_dir=index_dir)

    return run


def record_crawler_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The Hub crawler's retry waits, recorded instead of slept (HfCrawler.sleep is the hook)."""
    from hubindex_plugins.crawl_hf import HfCrawler

    recorded: list[float] = []
    original_init = HfCrawler.__init__

    def init(self: HfCrawler, **options: Any) -> None:
        original_init(self, **options)
        self.sleep = recorded.append

    monkeypatch.setattr(HfCrawler, "__init__", init)
    return recorded


@contextmanager
def catalog_held_by_another_process(catalog_path: Path) -> Iterator[None]:
    """Within the block, another process holds the catalog open for writing (DuckDB's file lock)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, duckdb
            conn = duckdb.connect({str(catalog_path)!r})
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def catalog_at_version(path: Path, version: int) -> Any:
    """A DuckDB connection to a new catalog as the first `version` migrations left it (for migration tests)."""
    import duckdb

    from hubindex.migrations import MIGRATIONS

    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                 "applied_at TIMESTAMP NOT NULL)")
    for migration in MIGRATIONS[:version]:
        conn.execute(migration.sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [migration.version, migration.name])
    return conn


@dataclass
class WebServer:
    """`hubindex serve` running in its own process on 127.0.0.1, over `index_dir`."""

    url: str  # http://127.0.0.1:PORT (no trailing slash)
    index_dir: Path
    process: subprocess.Popen
    names: dict[str, str]


@contextmanager
def served(index_dir: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `hubindex serve --port 0` on index_dir; yield its base URL and process; stop it after."""
    process = subprocess.Popen([sys.executable, "-m", "hubindex.cli", "--index", str(index_dir), "serve",
                                "--port", "0", *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        if not first.startswith("hubindex serve: http://"):
            process.kill()
            raise AssertionError(f"serve did not start: {first!r} {process.stderr.read()[-2000:]}")
        yield first.split()[2].rstrip("/"), process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def web_index(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The index of tests/web_index.py, built once per session (about 100 s after the zoo)."""
    from web_index import build_web_index

    index_dir = tmp_path_factory.mktemp("web-index")
    names = build_web_index(zoo.out, index_dir, tmp_path_factory.mktemp("web-work"))
    return index_dir, names


@pytest.fixture(scope="session")
def web_server(web_index: tuple[Path, dict[str, str]]) -> Iterator[WebServer]:
    """`hubindex serve` over the web index, one process for the session."""
    index_dir, names = web_index
    with served(index_dir) as (url, process):
        yield WebServer(url, index_dir, process, names)
