"""The DuckDB catalog: migrations, upsert semantics, transactions, runs and failures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import catalog_at_version, catalog_held_by_another_process, run_hubindex

from hubindex.catalog import Catalog
from hubindex.errors import CatalogBusyError, HubindexError
from hubindex.migrations import LATEST_VERSION, MIGRATIONS
from hubindex.types import CheckpointRecord


@pytest.fixture
def catalog(tmp_path: Path) -> Any:
    with Catalog(tmp_path / "catalog.duckdb") as opened:
        yield opened


def test_fresh_catalog_has_every_migration(catalog: Catalog) -> None:
    rows = catalog.conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [(m.version, m.name) for m in MIGRATIONS]
    tables = {r[0] for r in catalog.conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"checkpoints", "crawl_runs", "failures", "schema_migrations"} <= tables
    required = {
        "checkpoint_id", "source", "repo_id", "sha", "last_modified", "crawled_at", "pipeline_tag",
        "library_name", "tags", "license", "params_total", "downloads", "likes", "gated", "in1k_top1",
        "in1k_top5", "upstream_data", "base_models", "local_path",
    }
    assert required <= set(catalog.checkpoint_columns())


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "c.duckdb"
    Catalog(path).close()
    with Catalog(path) as again:
        assert again.migrate() == []
        assert again.schema_version() == LATEST_VERSION


def test_features_stored_before_dtype_was_in_their_key_stay_registered(tmp_path: Path) -> None:
    # A catalog as version 5 left it, with one stored feature matrix and one task feature matrix.
    path = tmp_path / "c.duckdb"
    conn = catalog_at_version(path, 5)
    conn.execute("INSERT INTO embeddings VALUES ('hf:a/b', 'sha', 'bbc-news', 'hash', 'last', 'last-subword', "
                 "'transformers-text', '1', 10, 9, 32, 'store/x.faiss', 'f00', 1.5, now()::TIMESTAMP)")
    conn.execute("INSERT INTO task_features VALUES ('hf:a/b', 'sha', 'thash', 'features', 'mean-tokens', 'digits', "
                 "'transformers-text', '1', false, 5, 32, 'store/t.faiss', 'f11', 0.5, now()::TIMESTAMP)")
    conn.close()

    with Catalog(path) as catalog:
        assert catalog.schema_version() == LATEST_VERSION
        stored = catalog.embedding("sha", "hash", "last", "last-subword", "hf:a/b")
        assert stored is not None and (stored["dtype"], stored["path"], stored["n_kept"]) == ("float32", "store/x.faiss", 9)
        assert catalog.embedding("sha", "hash", "last", "last-subword", "hf:a/b", dtype="bfloat16") is None
        assert catalog.conn.execute("SELECT dtype, path FROM task_features").fetchall() == [("float32", "store/t.faiss")]
        # The same features in another precision are another row, not a replacement.
        catalog.register_embedding({**stored, "dtype": "bfloat16", "path": "store/y.faiss"})
        assert catalog.conn.execute("SELECT count(*) FROM embeddings").fetchone() == (2,)


def test_newer_catalog_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.duckdb"
    Catalog(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', now()::TIMESTAMP)")
    conn.close()
    with pytest.raises(HubindexError, match="newer than this hubindex"):
        Catalog(path)
    with pytest.raises(HubindexError, match="newer than this hubindex"):
        Catalog(path, read_only=True)
    conn = duckdb.connect(str(path), read_only=True)
    assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (999,)
    conn.close()


def test_not_a_catalog_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.duckdb"
    path.write_text("this is not a database")
    with pytest.raises(HubindexError, match="cannot open catalog"):
        Catalog(path)
    assert path.read_text() == "this is not a database"


def test_read_only_open_of_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(HubindexError, match="no catalog at"):
        Catalog(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()


def _row(catalog: Catalog, checkpoint_id: str) -> dict[str, Any]:
    row = catalog.checkpoint(checkpoint_id)
    assert row is not None
    return row


def test_upsert_owned_columns_overwrite_others_fill_gaps(catalog: Catalog) -> None:
    hub = CheckpointRecord("hf:org/m", {"repo_id": "org/m", "sha": "a" * 40, "license": "mit", "downloads": 5})
    result = catalog.upsert_checkpoints([hub], source="hf", owned_columns={"repo_id", "sha", "license", "downloads"})
    assert result.added == ["hf:org/m"]

    # Another crawler fills what is missing but does not overwrite what it does not own.
    local = CheckpointRecord(
        "hf:org/m", {"sha": "b" * 40, "license": "gpl", "local_path": "/x", "params_total": 7}
    )
    result = catalog.upsert_checkpoints([local], source="local", owned_columns={"local_path"})
    # Its sha differs, but sha is not this crawler's to write: nothing it owns changed.
    assert (result.changed, result.unchanged) == ([], ["hf:org/m"])
    row = _row(catalog, "hf:org/m")
    assert (row["sha"], row["license"], row["local_path"], row["params_total"]) == ("a" * 40, "mit", "/x", 7)
    assert row["source"] == "hf"

    # The owner writes NULL over a value: a license removed on the Hub disappears here too.
    gone = CheckpointRecord("hf:org/m", {"repo_id": "org/m", "sha": "a" * 40, "license": None, "downloads": 9})
    result = catalog.upsert_checkpoints([gone], source="hf", owned_columns={"repo_id", "sha", "license", "downloads"})
    assert result.unchanged == ["hf:org/m"]
    row = _row(catalog, "hf:org/m")
    assert (row["license"], row["downloads"], row["local_path"]) == (None, 9, "/x")


def test_upsert_complex_types_round_trip(catalog: Catalog) -> None:
    record = CheckpointRecord("hf:org/x", {
        "sha": "c" * 40,
        "tags": ["a", "b"],
        "params_by_dtype": {"F32": 10, "BF16": 3},
        "weight_files": [{"name": "model.safetensors", "size": 12, "sha256": None}],
        "eval_results": [{"task": "t", "dataset": "d", "split": "s", "metric": "accuracy", "value": 0.5}],
        "pretrained_cfg": {"input_size": [3, 224, 224]},
        "last_modified": datetime(2024, 2, 19, 11, 6, 12),
    })
    catalog.upsert_checkpoints([record], source="hf", owned_columns=set(record.columns))
    row = _row(catalog, "hf:org/x")
    assert row["tags"] == ["a", "b"]
    assert row["params_by_dtype"] == {"F32": 10, "BF16": 3}
    assert row["weight_files"] == [{"name": "model.safetensors", "size": 12, "sha256": None}]
    assert row["eval_results"][0]["value"] == 0.5
    assert catalog.conn.execute(
        "SELECT pretrained_cfg->'$.input_size'->>1 FROM checkpoints WHERE checkpoint_id = 'hf:org/x'"
    ).fetchone() == ("224",)
    assert row["last_modified"] == datetime(2024, 2, 19, 11, 6, 12)


def test_upsert_rejects_unknown_columns(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown catalog columns"):
        catalog.upsert_checkpoints([CheckpointRecord("x:1", {"no_such_column": 1})], source="x", owned_columns=())


def test_failed_transaction_leaves_nothing(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError):
        with catalog.transaction():
            catalog.upsert_checkpoints([CheckpointRecord("x:1", {"sha": "1"})], source="x", owned_columns={"sha"})
            raise RuntimeError("crash in the middle of a batch")
    assert catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)


def test_running_run_becomes_interrupted_and_is_resumed(catalog: Catalog) -> None:
    first, resumed = catalog.start_crawl_run("hf", "1", {"limit": 3}, "key")
    assert resumed is None
    second, resumed = catalog.start_crawl_run("hf", "1", {"limit": 3}, "key")
    assert resumed == first
    assert catalog.crawl_run(first)["status"] == "interrupted"
    catalog.finish_crawl_run(second, "completed")
    third, resumed = catalog.start_crawl_run("hf", "1", {"limit": 3}, "key")
    assert resumed is None  # the last run of that query completed: nothing to resume


def test_failures_recorded_once_and_resolved(catalog: Catalog) -> None:
    catalog.record_failure(1, "crawl", "hf:a/b", "http-503", "first")
    catalog.record_failure(2, "crawl", "hf:a/b", "http-503", "second")
    rows = catalog.conn.execute("SELECT run_id, message, resolved_at FROM failures").fetchall()
    assert rows == [(2, "second", None)]
    catalog.resolve_failures("crawl", ["hf:a/b"])
    assert catalog.conn.execute("SELECT count(*) FROM failures WHERE resolved_at IS NOT NULL").fetchone() == (1,)
    assert catalog.conn.execute("SELECT count(*) FROM open_failures").fetchone() == (0,)


def test_second_writer_gets_a_clear_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    Catalog(path).close()
    with catalog_held_by_another_process(path):
        with pytest.raises(CatalogBusyError, match="being written by another process"):
            Catalog(path)
        result = run_hubindex("sql", "SELECT 1", index_dir=tmp_path)
        assert result.exit_code == 3
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("hubindex: error: catalog")


def test_values_of_the_wrong_kind_do_not_sink_the_batch(catalog: Catalog) -> None:
    owned = {"sha", "params_total", "tags", "license"}
    records = [
        CheckpointRecord("x:good", {"sha": "1", "params_total": 5, "tags": ["a"], "license": "mit"}),
        CheckpointRecord("x:string-count", {"sha": "2", "params_total": "lots", "tags": ["b"], "license": "mit"}),
        CheckpointRecord("x:mixed-list", {"sha": "3", "params_total": 7, "tags": ["c", 4], "license": "mit"}),
    ]
    result = catalog.upsert_checkpoints(records, source="x", owned_columns=owned)
    assert result.added == ["x:good", "x:string-count"]
    assert [cid for cid, _ in result.rejected] == ["x:mixed-list"]
    assert _row(catalog, "x:good")["params_total"] == 5
    # A value that cannot be cast to the column's type is stored as NULL; the row still lands.
    assert _row(catalog, "x:string-count")["params_total"] is None
    assert catalog.checkpoint("x:mixed-list") is None


def test_huge_integers_and_deep_json_cost_their_own_row_only(catalog: Catalog) -> None:
    deep: list = []
    for _ in range(5000):  # deeper than json.dumps can go
        deep = [deep]
    owned = {"sha", "num_classes", "params_total", "pretrained_cfg"}
    records = [
        CheckpointRecord("x:before", {"sha": "1", "num_classes": 10}),
        CheckpointRecord("x:huge", {"sha": "2", "num_classes": 10**30}),
        CheckpointRecord("x:int32-overflow", {"sha": "3", "num_classes": 2**40, "params_total": 2**40}),
        CheckpointRecord("x:deep", {"sha": "4", "pretrained_cfg": {"a": deep}}),
        CheckpointRecord("x:after", {"sha": "5", "num_classes": 3}),
    ]
    result = catalog.upsert_checkpoints(records, source="x", owned_columns=owned)
    assert result.added == ["x:before", "x:int32-overflow", "x:after"]
    assert sorted(cid for cid, _ in result.rejected) == ["x:deep", "x:huge"]
    assert all("\n" not in why for _, why in result.rejected)
    # Past the INTEGER column's range: NULL there, the BIGINT column keeps its value.
    assert _row(catalog, "x:int32-overflow")["num_classes"] is None
    assert _row(catalog, "x:int32-overflow")["params_total"] == 2**40
    assert _row(catalog, "x:after")["num_classes"] == 3
