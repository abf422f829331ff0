"""`hubindex show CHECKPOINT`: one checkpoint's card from a real catalog, store and kappa table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import assert_one_line_error
from test_relate import family, register
from test_search import add_scores, read_only

from hubindex.cards import CARD_NEIGHBORS
from hubindex.catalog import utcnow
from hubindex.index import Index
from hubindex.lineage import Edge, EdgeSet, record_edge_sets
from hubindex.types import CheckpointRecord

NAMES = {"t:parent": "hf:org/base", "t:child": "hf:org/child", "t:cousin": "hf:org/cousin",
         "t:stranger": "hf:other/stranger", "t:noise": "hf:other/noise"}


@pytest.fixture
def catalog(index: Index, hubindex: Any) -> Index:
    """Five probed checkpoints with kappa, lineage (child, cousin and two fine-tunes name org/base), scores and a failure."""
    zoo = family()
    for name, features in zoo.items():
        register(index, NAMES[name], features)
    extra = {f"hf:org/fine-{k}": {"base_models": ["org/base"]} for k in range(2)}  # never probed
    records = [CheckpointRecord(cid, {"repo_id": cid[3:], "sha": "1", "license": "apache-2.0", "downloads": 1234,
                                      "likes": 5, "pipeline_tag": "feature-extraction", "library_name": "transformers",
                                      "params_total": 86_000_000, "params_by_dtype": {"F32": 86_000_000},
                                      **({"base_models": ["org/base"]} if cid in ("hf:org/child", "hf:org/cousin")
                                         else {})})
               for cid in NAMES.values()]
    records += [CheckpointRecord(cid, {"repo_id": cid[3:], "sha": "1", **fields}) for cid, fields in extra.items()]
    with index.open_catalog() as catalog:
        catalog.upsert_checkpoints(records, source="test", owned_columns=())
        # The edges their cards state, as the crawlers record them with the rows.
        record_edge_sets(catalog, {r.checkpoint_id: EdgeSet.of([Edge("hf:org/base", "finetune", "card", 1.0)])
                                   for r in records if r.columns.get("base_models")})
        catalog.conn.execute("INSERT INTO failures (stage, subject, kind, message, occurred_at) VALUES "
                             "('probe', 'hf:org/child', 'load-error', 'no weights', ?), "
                             "('probe', 'hf:org/child', 'old', 'fixed since', ?)", [utcnow(), utcnow()])
        catalog.conn.execute("UPDATE failures SET resolved_at = occurred_at WHERE kind = 'old'")
    assert hubindex("kappa").exit_code == 0
    add_scores(index, "pets", "logme", {"hf:org/child": 0.75, "hf:org/base": 0.5})
    return index


def card(hubindex: Any, *args: str) -> dict[str, Any]:
    result = hubindex("show", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def stored_top(index: Index, checkpoint_id: str) -> list[tuple[str, float]]:
    with index.open_catalog(read_only=True) as catalog:
        return catalog.conn.execute(
            "SELECT CASE WHEN checkpoint_a = $id THEN checkpoint_b ELSE checkpoint_a END, value FROM kappa "
            "WHERE $id IN (checkpoint_a, checkpoint_b) AND centered ORDER BY value DESC LIMIT $k",
            {"id": checkpoint_id, "k": CARD_NEIGHBORS}).fetchall()


def test_card_as_json_holds_every_section(catalog: Index, hubindex: Any) -> None:
    found = card(hubindex, "hf:org/child")
    assert list(found) == ["checkpoint_id", "metadata", "license", "size", "lineage", "probed", "neighbors",
                           "task_scores", "open_failures"]
    meta = found["metadata"]
    assert (meta["source"], meta["pipeline_tag"], meta["library_name"]) == ("test", "feature-extraction",
                                                                            "transformers")
    assert (meta["downloads"], meta["likes"], meta["sha"]) == (1234, 5, "1") and meta["crawled_at"]
    assert found["license"] == "apache-2.0"
    assert found["size"]["params_total"] == 86_000_000
    assert found["lineage"]["parents"] == [{
        "checkpoint_id": "hf:org/base", "relation": "finetune", "evidence": "card", "confidence": 1.0, "declared": True,
        "status": "closure", "note": None, "other_evidence": [], "in_catalog": True}]
    assert found["lineage"]["children"] == [] and found["lineage"]["children_total"] == 0
    assert (found["lineage"]["roots"], found["lineage"]["ancestors_total"]) == (["hf:org/base"], 1)
    (probed,) = found["probed"]
    assert (probed["corpus"], probed["corpus_hash"], probed["n_items"]) == ("toy-corpus", "f" * 64, 120)
    (neighbors,) = found["neighbors"]
    assert neighbors["corpus_hash"] == "f" * 64
    # Exactly the stored kappa, highest first: nothing recomputed.
    assert [(n["checkpoint_id"], n["kappa"]) for n in neighbors["neighbors"]] == stored_top(catalog, "hf:org/child")
    assert len(neighbors["neighbors"]) == 4  # the four other probed checkpoints
    assert [(s["task"], s["metric"], s["value"]) for s in found["task_scores"]] == [("pets", "logme", 0.75)]
    (failure,) = found["open_failures"]  # the resolved one is not open
    assert (failure["stage"], failure["kind"], failure["message"]) == ("probe", "load-error", "no weights")


def test_lineage_lists_children_and_a_repo_id_names_the_checkpoint(catalog: Index, hubindex: Any) -> None:
    found = card(hubindex, "org/base")  # the Hub repo id of hf:org/base
    assert found["checkpoint_id"] == "hf:org/base"
    assert [c["checkpoint_id"] for c in found["lineage"]["children"]] == [
        "hf:org/child", "hf:org/cousin", "hf:org/fine-0", "hf:org/fine-1"]
    assert found["lineage"]["children_total"] == 4 and found["lineage"]["parents"] == []
    assert (found["lineage"]["roots"], found["lineage"]["descendants_total"]) == ([], 4)
    unprobed = card(hubindex, "hf:org/fine-0")
    assert unprobed["probed"] == [] and unprobed["neighbors"] == [] and unprobed["task_scores"] == []


def test_card_as_a_table_reads_as_sections(catalog: Index, hubindex: Any) -> None:
    result = hubindex("show", "hf:org/child")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for heading in ("metadata", "license", "size", "lineage", "probed corpora",
                    "nearest neighbours (stored exact kappa)", "task scores", "open failures"):
        assert f"\n{heading}\n" in text, heading
    assert "apache-2.0" in text and "86,000,000" in text and "  parent    hf:org/base  finetune (card)\n" in text
    best, value = stored_top(catalog, "hf:org/child")[0]
    assert f"{best}" in text and f"{value:.4f}" in text
    assert "load-error" in text and "no weights" in text and "fixed since" not in text
    assert "not probed" in hubindex("show", "hf:org/fine-0").stdout


def test_card_as_rows(catalog: Index, hubindex: Any) -> None:
    csv_out = hubindex("show", "hf:org/child", "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "section,key,value" and "license,license,apache-2.0" in lines
    rows = [json.loads(line) for line in hubindex("show", "hf:org/child", "--format", "ndjson").stdout.splitlines()]
    (parent,) = [r["value"] for r in rows if (r["section"], r["key"]) == ("lineage", "parent")]
    assert (parent["checkpoint_id"], parent["relation"], parent["evidence"]) == ("hf:org/base", "finetune", "card")
    assert {r["section"] for r in rows} >= {"metadata", "probed", "neighbors", "task_scores", "open_failures"}


def test_unknown_checkpoint_is_one_line_with_close_ids(catalog: Index, hubindex: Any) -> None:
    line = assert_one_line_error(hubindex("show", "hf:org/chlid"), exit_code=2)
    assert "no checkpoint 'hf:org/chlid'" in line and "hf:org/child" in line and "hubindex sql" in line
    line = assert_one_line_error(hubindex("show", "zzzzzz"), exit_code=2)
    assert "did you mean" not in line and "hubindex sql" in line


def test_show_works_on_a_read_only_index(catalog: Index, hubindex: Any) -> None:
    expected = card(hubindex, "hf:org/child")
    with read_only([catalog.catalog_path, catalog.root]):
        assert card(hubindex, "hf:org/child") == expected
