"""`hubindex sql`: read-only user SQL with parameters, formats, limits, and every write refused."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import duckdb
import pytest
from conftest import assert_one_line_error, catalog_snapshot

from hubindex.cli import format_rows
from hubindex.user_sql import _first_line
from hubindex.index import Index
from hubindex.types import CheckpointRecord

RECORDS = [
    CheckpointRecord("timm:resnet50.a1_in1k", {
        "repo_id": "resnet50.a1_in1k", "sha": "a" * 40, "library_name": "timm", "params_total": 25_560_000,
        "in1k_top1": 81.24, "tags": ["timm", "resnet50"], "input_size": [3, 224, 224],
        "pretrained_cfg": {"input_size": [3, 224, 224], "license": "apache-2.0"},
    }),
    CheckpointRecord("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", {
        "repo_id": "vit_base_patch16_224.augreg2_in21k_ft_in1k", "sha": "b" * 40, "library_name": "timm",
        "params_total": 86_570_000, "in1k_top1": 85.1, "tags": ["timm", "vit"],
    }),
    CheckpointRecord("hf:google-bert/bert-base-uncased", {
        "repo_id": "google-bert/bert-base-uncased", "sha": "c" * 40, "library_name": "transformers",
        "license": "apache-2.0", "params_total": 110_106_428, "params_by_dtype": {"F32": 110_106_428},
        "weight_files": [{"name": "model.safetensors", "size": 440_449_768, "sha256": "d" * 64}],
        "eval_results": [{"task": "text-classification", "dataset": "glue", "split": "validation",
                          "metric": "accuracy", "value": 0.91}],
    }),
]
WRITES = {
    "insert": "INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at) "
              "VALUES ('x', 'x', now(), now())",
    "update": "UPDATE checkpoints SET sha = 'x'",
    "delete": "DELETE FROM checkpoints",
    "drop": "DROP TABLE checkpoints",
    "create": "CREATE TABLE t AS SELECT 1 AS a",
    "create-temp": "CREATE TEMP TABLE t AS SELECT 1 AS a",
    "attach": "ATTACH '{tmp}/other.duckdb' AS other",
    "copy-to": "COPY checkpoints TO '{tmp}/dump.csv'",
    "copy-select-to": "COPY (SELECT * FROM checkpoints) TO '{tmp}/dump.parquet' (FORMAT parquet)",
    "export": "EXPORT DATABASE '{tmp}/export'",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/hostname')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "set-lock": "SET lock_configuration = false",
    "reset": "RESET enable_external_access",
    "two-statements": "SELECT 1; DROP TABLE checkpoints",
    "pragma": "PRAGMA database_list",
    "call": "CALL pragma_database_list()",
    "checkpoint": "CHECKPOINT",
    "begin": "BEGIN TRANSACTION",
    "cte-delete": "WITH gone AS (DELETE FROM checkpoints RETURNING *) SELECT * FROM gone",
    "nextval": "SELECT nextval('crawl_run_ids')",
    "explain-analyze-delete": "EXPLAIN ANALYZE DELETE FROM checkpoints",
}






@pytest.fixture
def catalog(index: Index) -> Index:
    with index.open_catalog() as cat:
        cat.upsert_checkpoints(RECORDS, source="test", owned_columns=set())
        run_id, _ = cat.start_crawl_run("test", "1", {}, "test:[]")
        cat.record_failure(run_id, "crawl", "hf:org/broken", "http-503", "server error")
        cat.record_failure(run_id, "crawl", "hf:org/fixed", "timeout", "slow")
        cat.resolve_failures("crawl", ["hf:org/fixed"])
        cat.finish_crawl_run(run_id, "completed")
    return index


# ------------------------------------------------------------------------------ reading


def test_select_with_named_parameters(hubindex, catalog: Index) -> None:
    result = hubindex(
        "sql", "SELECT checkpoint_id, params_total FROM checkpoints WHERE library_name = $lib "
               "AND params_total < $max ORDER BY params_total",
        "-p", "lib", "timm", "-p", "max", "30000000", "--format", "csv",
    )
    assert result.exit_code == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["checkpoint_id", "params_total"], ["timm:resnet50.a1_in1k", "25560000"]
    ]


def test_missing_parameter_is_a_one_line_error(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT * FROM checkpoints WHERE library_name = $lib")
    line = assert_one_line_error(result)
    assert "lib" in line


def test_json_format(hubindex, catalog: Index) -> None:
    result = hubindex(
        "sql", "SELECT checkpoint_id, tags, params_by_dtype, weight_files, eval_results, pretrained_cfg, "
               "input_size, in1k_top1, first_seen_at, 1.5 AS dec, 'nan'::DOUBLE AS nan, NULL AS nothing "
               "FROM checkpoints ORDER BY checkpoint_id",
        "--format", "json",
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [d["checkpoint_id"] for d in data] == sorted(r.checkpoint_id for r in RECORDS)
    bert, resnet, vit = data
    assert bert["params_by_dtype"] == {"F32": 110_106_428}  # a MAP: an object
    assert bert["weight_files"] == [{"name": "model.safetensors", "size": 440_449_768, "sha256": "d" * 64}]
    assert bert["eval_results"][0]["value"] == 0.91
    assert resnet["tags"] == ["timm", "resnet50"]
    assert resnet["input_size"] == [3, 224, 224]
    # JSON columns are JSON values, not strings holding JSON.
    assert resnet["pretrained_cfg"] == {"input_size": [3, 224, 224], "license": "apache-2.0"}
    assert resnet["in1k_top1"] == 81.24
    assert isinstance(resnet["first_seen_at"], str) and resnet["first_seen_at"][:2] == "20"
    assert resnet["dec"] == 1.5  # DuckDB reads 1.5 as a DECIMAL
    assert resnet["nan"] is None and "NaN" not in result.stdout  # NaN is not JSON
    assert vit["pretrained_cfg"] is None and vit["nothing"] is None


def test_csv_format(hubindex, catalog: Index) -> None:
    result = hubindex(
        "sql", "SELECT checkpoint_id, tags, params_by_dtype, pretrained_cfg, license FROM checkpoints "
               "ORDER BY checkpoint_id", "--format", "csv",
    )
    assert result.exit_code == 0, result.stderr
    header, bert, resnet, vit = list(csv.reader(io.StringIO(result.stdout)))
    assert header == ["checkpoint_id", "tags", "params_by_dtype", "pretrained_cfg", "license"]
    assert json.loads(bert[2]) == {"F32": 110_106_428}
    assert bert[4] == "apache-2.0"
    assert json.loads(resnet[1]) == ["timm", "resnet50"]
    assert json.loads(resnet[3])["license"] == "apache-2.0"
    assert vit[3] == vit[4] == ""


def test_table_format(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT checkpoint_id, tags, in1k_top1 FROM checkpoints "
                             "WHERE in1k_top1 IS NOT NULL ORDER BY in1k_top1 DESC")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["checkpoint_id", "tags", "in1k_top1"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", '["timm",', '"vit"]', "85.1"]
    assert lines[3].split() == ["timm:resnet50.a1_in1k", '["timm",', '"resnet50"]', "81.24"]
    assert len(lines) == 4


def test_format_rows_renders_nested_values() -> None:
    rows = [({"a": 1}, [1, 2], None, b"\x00\xff")]
    columns = ["m", "l", "n", "b"]
    assert json.loads(format_rows(columns, rows, "json")) == [{"m": {"a": 1}, "l": [1, 2], "n": None, "b": "00ff"}]
    assert format_rows(columns, rows, "csv") == 'm,l,n,b\n"{""a"": 1}","[1, 2]",,00ff\n'
    assert '{"a": 1}' in format_rows(columns, rows, "table")


def test_empty_result_prints_the_header(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT checkpoint_id FROM checkpoints WHERE false", "--format", "csv")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "checkpoint_id\n", "")
    result = hubindex("sql", "SELECT checkpoint_id FROM checkpoints WHERE false", "--format", "json")
    assert json.loads(result.stdout) == []


def test_row_cap(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT range AS i FROM range(20)", "--max-rows", "5", "--format", "csv")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["i", "0", "1", "2", "3", "4"]
    assert result.stderr.splitlines() == ["hubindex: showing the first 5 rows; raise --max-rows for more"]

    exact = hubindex("sql", "SELECT range AS i FROM range(5)", "--max-rows", "5", "--format", "csv")
    assert exact.stdout.splitlines() == ["i", "0", "1", "2", "3", "4"]
    assert exact.stderr == ""


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_exports_carry_every_row(hubindex, catalog: Index, fmt: str) -> None:
    """An export is never cut: 25,000 rows (over the table's 1,000 and the 10,000-row fetch batches)."""
    result = hubindex("sql", "SELECT range AS i, 'x' || range AS s FROM range(25000)", "--format", fmt)
    assert (result.exit_code, result.stderr) == (0, "")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    elif fmt == "json":
        rows = json.loads(result.stdout)
    else:
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [int(row["i"]) for row in rows] == list(range(25000))
    assert rows[-1]["s"] == "x24999"


def test_a_table_is_cut_for_reading_and_says_how_to_get_every_row(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT range AS i FROM range(1500)")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1000 + 2  # header and rule
    assert result.stderr.splitlines() == [
        "hubindex: showing the first 1,000 rows; --format csv|json|ndjson gives every row"]


def test_parquet_export_is_streamed_to_a_file(hubindex, catalog: Index, tmp_path: Path) -> None:
    out = tmp_path / "rows.parquet"
    result = hubindex("sql", "SELECT range AS i FROM range(30000)", "--format", "parquet", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "wrote 30,000 rows" in result.stderr
    assert duckdb.sql(f"SELECT count(*), sum(i) FROM read_parquet('{out}')").fetchall() == [(30000, 449985000)]
    assert not list(tmp_path.glob(".*partial"))

    assert_one_line_error(hubindex("sql", "SELECT 1", "--format", "parquet"), "--out", exit_code=2)
    assert_one_line_error(hubindex("sql", "SELECT 1", "--format", "parquet", "--out", str(tmp_path / "no" / "x.parquet")),
                          "does not exist", exit_code=2)
    assert not (tmp_path / "no").exists()


def test_timeout(hubindex, catalog: Index) -> None:
    # DuckDB answers count(*) over range() without scanning it; hashing every value is real work.
    started = time.monotonic()
    result = hubindex("sql", "SELECT sum(hash(i)) FROM range(10000000000) t(i)", "--timeout", "0.2")
    elapsed = time.monotonic() - started
    line = assert_one_line_error(result)
    assert "0.2 s time limit" in line and "--timeout" in line
    assert elapsed < 10
    assert hubindex("sql", "SELECT 42 AS answer", "--format", "csv").stdout == "answer\n42\n"


def test_bad_sql_is_one_line(hubindex, catalog: Index) -> None:
    line = assert_one_line_error(hubindex("sql", "SELEC 1"))
    assert line == 'hubindex: error: invalid SQL: Parser Error: syntax error at or near "SELEC"'


def test_unknown_table_keeps_the_hint_on_one_line(hubindex, catalog: Index) -> None:
    line = assert_one_line_error(hubindex("sql", "SELECT * FROM checkpoint"))
    assert 'Did you mean "checkpoints"' in line
    assert "LINE 1" not in line and "^" not in line


def test_unknown_column_lists_candidates_on_one_line(hubindex, catalog: Index) -> None:
    line = assert_one_line_error(hubindex("sql", "SELECT checkpoint_idd FROM checkpoints"))
    assert '"checkpoint_idd" not found' in line and '"checkpoint_id"' in line
    assert "LINE 1" not in line


def test_first_line_of_duckdb_errors() -> None:
    conn = duckdb.connect()
    cases = {
        "SELECT * FROM nowhere_table": "Catalog Error: Table with name nowhere_table does not exist!",
        "SELECT [1, 2][1.5 / 0]": "Binder Error: No function matches",
        "SELECT 'a'::INT": "Conversion Error: Could not convert string 'a' to INT32",
    }
    for sql, start in cases.items():
        with pytest.raises(duckdb.Error) as caught:
            conn.execute(sql)
        assert "\n" in str(caught.value)  # DuckDB's own message spans several lines
        line = _first_line(caught.value)
        assert line.startswith(start), line
        assert "\n" not in line and "LINE 1" not in line and "^" not in line
        assert len(line) <= 400
    # Indented candidate lists are joined with '; ' under their heading.
    class Fake(Exception):
        pass

    text = "Binder Error: no match.\n\tCandidate functions:\n\tf(INT)\n\tf(VARCHAR)\n\nLINE 1: SELECT f(1.5)\n       ^"
    assert _first_line(Fake(text)) == "Binder Error: no match. Candidate functions: f(INT); f(VARCHAR)"
    assert _first_line(Fake("")) == "Fake"


def test_no_catalog_is_a_one_line_error(hubindex, index_dir: Path) -> None:
    line = assert_one_line_error(hubindex("sql", "SELECT 1"))
    assert "no catalog" in line and str(index_dir) in line
    assert list(index_dir.iterdir()) == []  # reading never creates a catalog


def test_not_a_catalog_file_is_a_one_line_error(hubindex, index_dir: Path) -> None:
    (index_dir / "catalog.duckdb").write_bytes(b"this is not a database" * 100)
    assert_one_line_error(hubindex("sql", "SELECT 1"))


def test_builtin_views_and_macros(hubindex, catalog: Index) -> None:
    result = hubindex("sql", "SELECT subject, kind FROM open_failures", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["subject,kind", "hf:org/broken,http-503"]

    result = hubindex("sql", "SELECT hub_url(checkpoint_id) AS url FROM checkpoints ORDER BY 1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [r["url"] for r in json.loads(result.stdout)] == [
        "https://huggingface.co/google-bert/bert-base-uncased",
        "https://huggingface.co/timm/resnet50.a1_in1k",
        "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    ]


def test_other_read_only_statements(hubindex, catalog: Index) -> None:
    assert hubindex("sql", "EXPLAIN SELECT * FROM checkpoints").exit_code == 0
    described = hubindex("sql", "DESCRIBE checkpoints", "--format", "json")
    assert described.exit_code == 0, described.stderr
    assert "checkpoint_id" in {c["column_name"] for c in json.loads(described.stdout)}
    assert hubindex("sql", "FROM checkpoints SELECT count(*) AS n", "--format", "csv").stdout == "n\n3\n"


# ------------------------------------------------------------------------------ writing is refused


@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_are_refused(hubindex, catalog: Index, tmp_path: Path, name: str) -> None:
    target = tmp_path / "target"
    target.mkdir()
    before = catalog_snapshot(catalog)
    result = hubindex("sql", WRITES[name].format(tmp=target))
    assert_one_line_error(result)
    assert catalog_snapshot(catalog) == before
    assert list(target.iterdir()) == []  # nothing written through COPY, ATTACH or EXPORT
    assert hubindex("sql", "SELECT count(*) AS n FROM checkpoints", "--format", "csv").stdout == "n\n3\n"


def test_refusals_say_why(hubindex, catalog: Index) -> None:
    assert "read-only SELECT" in assert_one_line_error(hubindex("sql", "DROP TABLE checkpoints"))
    assert "exactly one SQL statement, got 2" in assert_one_line_error(
        hubindex("sql", "SELECT 1; DROP TABLE checkpoints")
    )
    assert "disabled" in assert_one_line_error(hubindex("sql", "SELECT * FROM read_csv('/etc/passwd')"))
    assert "exactly one SQL statement, got 0" in assert_one_line_error(hubindex("sql", " ; "))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_time_limit_must_be_a_finite_number(hubindex, catalog: Index, value: str) -> None:
    result = hubindex("sql", "SELECT 1", "--timeout", value)
    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.stderr
    assert result.stderr.count("\n") == 1
