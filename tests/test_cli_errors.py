"""Bad input to the command line: one line on stderr, a non-zero exit code, the catalog intact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import (
    assert_one_line_error,
    catalog_held_by_another_process,
    catalog_snapshot,
)

from hubindex.cli import main
from hubindex.index import Index
from hubindex.types import CheckpointRecord


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str






@pytest.fixture
def catalog(index: Index) -> Index:
    with index.open_catalog() as cat:
        cat.upsert_checkpoints(
            [CheckpointRecord("timm:resnet18.a1_in1k", {"repo_id": "resnet18.a1_in1k", "sha": "a" * 40,
                                                         "in1k_top1": 71.5, "tags": ["timm"]})],
            source="timm", owned_columns=set(),
        )
    return index


def test_unknown_crawl_source(hubindex, catalog: Index) -> None:
    before = catalog_snapshot(catalog)
    line = assert_one_line_error(hubindex("crawl", "nosuch"), exit_code=2)
    assert "unknown crawl source 'nosuch'" in line
    assert "hf" in line and "local" in line and "timm" in line  # the sources that exist
    assert catalog_snapshot(catalog) == before


def test_unknown_crawl_source_creates_no_index(hubindex, index_dir: Path) -> None:
    assert_one_line_error(hubindex("crawl", "nosuch"), exit_code=2)
    assert not (index_dir / "catalog.duckdb").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--bogus", "sql", "SELECT 1"), "No such option '--bogus'"),
        (("sql", "SELECT 1", "--bogus"), "No such option '--bogus'"),
        (("crawl", "timm", "--limt", "3"), "Did you mean '--limit'?"),
        (("crawl", "timm", "--limit", "0"), "--limit"),
        (("crawl", "timm", "--limit", "many"), "--limit"),
        (("crawl", "timm", "extra"), "unexpected extra argument"),
        (("crawl", "local"), "Missing argument 'PATH'"),
        (("sql",), "Missing argument 'QUERY'"),
        (("sql", "SELECT 1", "--format", "xml"), "--format"),
        (("sql", "SELECT 1", "--max-rows", "0"), "--max-rows"),
        (("sql", "SELECT 1", "--timeout", "0"), "--timeout"),
        (("sql", "SELECT $a", "-p", "a"), "-p"),
        (("nosuchcommand",), "No such command 'nosuchcommand'"),
    ],
)
def test_bad_arguments_are_one_line(hubindex, catalog: Index, args: tuple[str, ...], expected: str) -> None:
    before = catalog_snapshot(catalog)
    line = assert_one_line_error(hubindex(*args), exit_code=2)
    assert expected in line
    assert catalog_snapshot(catalog) == before


def run_plain(*args: str) -> CliResult:
    """The CLI with exactly these arguments (no --index; HUBINDEX_INDEX names the test's index)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(list(args))
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def test_missing_command_after_options_is_one_line(hubindex) -> None:
    line = assert_one_line_error(hubindex(), exit_code=2)  # `hubindex --index DIR`
    assert "Missing command" in line


@pytest.mark.parametrize("args", [(), ("crawl",)])
def test_no_subcommand_prints_help_not_a_multiline_error(index_dir: Path, args: tuple[str, ...]) -> None:
    result = run_plain(*args)
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: hubindex") and "Commands:" in result.stdout
    assert result.stderr == ""


def run_with_index(index_path: str, *args: str) -> CliResult:
    """The CLI with an explicit --index (the `hubindex` fixture always passes the test's own)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(["--index", index_path, *args])
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.mark.parametrize(
    ("index_path", "expected"),
    [
        ("/proc/x", "cannot create index folder /proc/x"),  # cannot be created
        ("/proc", "cannot open catalog /proc/catalog.duckdb"),  # exists, cannot be written
        ("/etc/hostname", "cannot create index folder /etc/hostname"),  # a file
    ],
)
def test_unwritable_index(index_path: str, expected: str) -> None:
    if index_path == "/etc/hostname" and not Path(index_path).is_file():
        pytest.skip("/etc/hostname is not a file here")
    line = assert_one_line_error(run_with_index(index_path, "crawl", "timm", "--limit", "1"))
    assert expected in line
    assert not Path(index_path, "catalog.duckdb").exists()


def test_sql_on_unreadable_index(index_dir: Path) -> None:
    line = assert_one_line_error(run_with_index("/proc/x", "sql", "SELECT 1"))
    assert "no catalog at /proc/x/catalog.duckdb" in line


def test_empty_index_option_is_refused(index_dir: Path) -> None:
    line = assert_one_line_error(run_with_index("", "sql", "SELECT 1"), exit_code=2)
    assert "--index" in line


def test_catalog_busy(hubindex, catalog: Index) -> None:
    """Another process writing the catalog: exit code 3 and one line, for readers and writers."""
    with catalog_held_by_another_process(catalog.catalog_path):
        for args in (("sql", "SELECT 1"), ("crawl", "local", str(catalog.root))):
            line = assert_one_line_error(hubindex(*args), exit_code=3)
            assert "being written by another process" in line
    assert hubindex("sql", "SELECT count(*) AS n FROM checkpoints", "--format", "csv").stdout == "n\n1\n"
