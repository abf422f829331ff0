"""What a newcomer must be able to rely on: exit codes that mean the same everywhere, reading without
write access, and no index made by a typo."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from conftest import (
    assert_one_line_error,
    catalog_held_by_another_process,
    run_hubindex,
)

from hubindex.errors import EXIT_CODES
from hubindex.index import Index
from hubindex.interrupts import stop_requested


def _task_arrays(folder: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.integers(0, 255, size=(40, 8, 8), dtype=np.uint8))  # 40 tiny images
    np.save(folder / "y.npy", np.arange(40) % 2)
    return str(folder / "x.npy"), str(folder / "y.npy")


def test_the_exit_codes_are_documented_in_the_help() -> None:
    result = run_hubindex("--help")
    assert result.exit_code == 0
    epilog = result.stdout[result.stdout.index("Exit codes:"):]
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4} {meaning}" in epilog
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 130}
    guide = (Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in guide


def test_a_typo_in_index_is_an_error_not_a_new_index(tmp_path: Path) -> None:
    typo = tmp_path / "indx"
    x, y = _task_arrays(tmp_path)
    added = run_hubindex("task", "add", "digits", "--arrays", x, y, index_dir=typo)
    assert_one_line_error(added, f"no index folder {typo}", "check --index", exit_code=2)
    assert not typo.exists()
    listed = run_hubindex("task", "list", index_dir=typo)
    assert listed.exit_code == 1 and "no catalog" in listed.stderr
    assert not typo.exists()


def test_crawl_starts_a_new_index_and_says_so(tmp_path: Path) -> None:
    fresh = tmp_path / "new-index"
    models = tmp_path / "models"
    assert_one_line_error(run_hubindex("crawl", "local", str(models), index_dir=fresh), exit_code=2)
    assert not fresh.exists()  # refused options start nothing
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    result = run_hubindex("crawl", "local", str(models), index_dir=fresh)
    assert result.exit_code == 0, result.stderr
    assert f"hubindex: started a new index in {fresh}" in result.stderr
    assert (fresh / "catalog.duckdb").is_file()
    again = run_hubindex("crawl", "local", str(models), index_dir=fresh)
    assert "started a new index" not in again.stderr


def test_run_summaries_take_every_format(tmp_path: Path, hubindex: Any) -> None:
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    first = hubindex("crawl", "local", str(models), "--format", "json")
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["status"], summary["seen"], summary["added"], summary["failures"]) == ("completed", 1, 1, [])
    assert summary["summary"].startswith("crawl local run 1: completed")
    rows = list(csv.DictReader(io.StringIO(hubindex("crawl", "local", str(models), "--format", "csv").stdout)))
    assert [(row["run_id"], row["unchanged"]) for row in rows] == [("2", "1")]
    line = json.loads(hubindex("crawl", "local", str(models), "--format", "ndjson").stdout)
    assert line["run_id"] == 3 and "failures" not in line  # lists go to JSON only


def test_task_list_reads_the_snapshot_while_another_process_writes(tmp_path: Path, index: Index,
                                                                    hubindex: Any) -> None:
    x, y = _task_arrays(tmp_path)
    assert hubindex("task", "add", "digits", "--arrays", x, y).exit_code == 0
    with index.open_catalog() as catalog:
        catalog.publish_snapshot()
    with catalog_held_by_another_process(index.catalog_path):
        listed = hubindex("task", "list", "--format", "csv")
    assert listed.exit_code == 0, listed.stderr
    assert listed.stdout.splitlines()[1].startswith("digits,")
    assert "read snapshot" in listed.stderr


def test_an_interrupt_inside_a_duckdb_call_exits_130_and_the_run_is_marked_interrupted(
        tmp_path: Path, index: Index, hubindex: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C that lands inside DuckDB surfaces as duckdb.InterruptException, not KeyboardInterrupt."""
    from hubindex import pipeline

    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    assert hubindex("crawl", "local", str(models)).exit_code == 0

    flush = pipeline._Batcher.flush

    def interrupted_flush(self: Any) -> None:
        if not stop_requested.is_set():  # the first write is interrupted; closing the run then works
            stop_requested.set()  # what the SIGINT handler does before the library call returns
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")
        flush(self)

    monkeypatch.setattr(pipeline._Batcher, "flush", interrupted_flush)
    result = hubindex("crawl", "local", str(models))
    assert result.exit_code == 130, result.stderr
    assert "interrupted" in result.stderr and "catalog could not be read" not in result.stderr
    with index.open_catalog(read_only=True) as catalog:
        statuses = [s for (s,) in catalog.conn.execute("SELECT status FROM crawl_runs ORDER BY run_id").fetchall()]
    assert statuses == ["completed", "interrupted"]


def test_an_internal_error_is_one_line_with_a_way_to_the_traceback(
        index: Index, hubindex: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import hubindex.cli.catalog_commands as catalog_commands

    def broken() -> list:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(catalog_commands, "describe_plugins", broken)
    line = assert_one_line_error(hubindex("plugins"), "internal error (ZeroDivisionError: division by zero)",
                                 "HUBINDEX_DEBUG=1", exit_code=1)
    assert "Traceback" not in line
    monkeypatch.setenv("HUBINDEX_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        hubindex("plugins")


@pytest.mark.parametrize("command", [("probe",), ("score", "--task", "t"), ("search", "--budget", "2", "--strategy", "agnostic"),
                                     ("select", "mmi", "--budget", "2")])
def test_a_bad_where_is_a_usage_error_quoting_the_condition(tmp_path: Path, hubindex: Any,
                                                            command: tuple[str, ...]) -> None:
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "bert"}')
    assert hubindex("crawl", "local", str(models)).exit_code == 0
    x, y = _task_arrays(tmp_path)
    assert hubindex("task", "add", "t", "--arrays", x, y).exit_code == 0
    for condition, says in (("params_total <", "is not a valid SQL condition"), ("nosuch = 1", "cannot run")):
        line = assert_one_line_error(hubindex(*command, "--where", condition), exit_code=2)
        assert f"--where {condition!r} {says}" in line
