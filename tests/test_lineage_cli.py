"""`hubindex lineage`, the lineage part of `hubindex show`, and family-aware --where, on a real catalog.

The family is written through the lineage API (record_edges) on a temporary index: declared edges of
several kinds and confidences, a recovered one, one below the recovered threshold, a parent that is
a local path, a merge, a 2-cycle, and a root that was never crawled.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error
from test_relate import family as feature_family
from test_relate import register
from test_search import add_checkpoints, pool  # noqa: F401 - pool is a fixture

from hubindex.index import Index
from hubindex.lineage import Edge, record_edges
from hubindex.lineage_tree import PLOT_NODES, family, lineage_tree, tree_lines
from hubindex.plots import layered_layout
from hubindex.types import CheckpointRecord

CRAWLED = ["hf:acme/base", "hf:acme/ft1", "hf:acme/ft2", "hf:acme/lora", "hf:acme/merged", "hf:acme/ft1-gguf",
           "hf:acme/twin", "hf:acme/hint", "hf:acme/ping", "hf:acme/pong"]


def card(parent: str, relation: str = "finetune") -> Edge:
    return Edge(parent, relation, "card", 1.0)


def write_family(index: Index) -> None:
    """The family (hf:meta/llama is named as a parent, never crawled):

    meta/llama -> base -> ft1 -> ft2 -> merged (also a merge of ft1); ft1 -> lora (adapter; its adapter
    config names a local path), ft1-gguf (quantized), twin (recovered from weights); ft2's config names
    base (outweighed by its card); hint has only a weak kappa hint of base; ping <-> pong name each
    other (a 2-cycle), ping also names base.
    """
    with index.open_catalog() as catalog:
        catalog.upsert_checkpoints([CheckpointRecord(cid, {"repo_id": cid[3:], "sha": "1"}) for cid in CRAWLED],
                                   source="test", owned_columns=())
        record_edges(catalog, "hf:acme/base", [card("hf:meta/llama")])
        record_edges(catalog, "hf:acme/ft1", [card("hf:acme/base")])
        record_edges(catalog, "hf:acme/ft2", [card("hf:acme/ft1"), Edge("hf:acme/base", "finetune", "config", 0.6)])
        record_edges(catalog, "hf:acme/lora", [card("hf:acme/ft1", "adapter"),
                                               Edge("/home/me/models/ft1", "adapter", "adapter-config", 1.0,
                                                    parent_resolved=False)])
        record_edges(catalog, "hf:acme/merged", [card("hf:acme/ft1", "merge"), card("hf:acme/ft2", "merge")])
        record_edges(catalog, "hf:acme/ft1-gguf", [card("hf:acme/ft1", "quantized")])
        record_edges(catalog, "hf:acme/twin", [Edge("hf:acme/ft1", "finetune", "weights", 0.82)])
        record_edges(catalog, "hf:acme/hint", [Edge("hf:acme/base", "unknown", "kappa", 0.5)])
        record_edges(catalog, "hf:acme/ping", [card("hf:acme/pong"), card("hf:acme/base")])
        record_edges(catalog, "hf:acme/pong", [card("hf:acme/ping")])


@pytest.fixture
def acme(index: Index) -> Index:
    write_family(index)
    return index


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def rows(hubindex: Any, *args: str) -> list[dict[str, Any]]:
    return json.loads(ok(hubindex("lineage", *args, "--format", "json")).stdout)


def test_the_tree_shows_ancestors_then_descendants(acme: Index, hubindex: Any) -> None:
    assert ok(hubindex("lineage", "hf:acme/ft1")).stdout.splitlines() == [
        "hf:acme/ft1  ·  root hf:meta/llama  ·  2 ancestors, 5 descendants",
        "ancestors (each line a parent of the one above)",
        "└─ hf:acme/base  finetune (card)",
        "   └─ hf:meta/llama  finetune (card)  (not in the catalog)",
        "descendants (each line a child of the one above)",
        "├─ hf:acme/ft1-gguf  quantized (card)",
        "├─ hf:acme/ft2  finetune (card)",
        "│  └─ hf:acme/merged  merge (card)",
        "├─ hf:acme/lora  adapter (card)",
        "├─ hf:acme/merged  merge (card)",
        "└─ hf:acme/twin  finetune (recovered: weights, 0.82)",
    ]


def test_unresolved_outweighed_and_weak_parents_are_shown_not_followed(acme: Index, hubindex: Any) -> None:
    lora = ok(hubindex("lineage", "hf:acme/lora", "--up")).stdout
    assert "├─ hf:acme/ft1  adapter (card)\n│  └─ hf:acme/base" in lora
    assert ("└─ /home/me/models/ft1  adapter (adapter-config)  unresolved: a name that is no checkpoint id"
            in lora)
    assert "\ndescendants" not in lora
    ft2 = ok(hubindex("lineage", "hf:acme/ft2", "--up")).stdout
    assert "└─ hf:acme/base  finetune (config, 0.6)  not used: outweighed by its card (1)" in ft2
    hint = ok(hubindex("lineage", "hf:acme/hint", "--up")).stdout
    assert "hf:acme/base  unknown (recovered: kappa, 0.5)  not used: below 0.8" in hint
    assert "0 ancestors" in hint.splitlines()[0]


def test_a_cycle_is_marked_and_not_followed(acme: Index, hubindex: Any) -> None:
    text = ok(hubindex("lineage", "hf:acme/ping")).stdout
    assert "├─ hf:acme/base  finetune (card)" in text
    assert "hf:acme/pong  finetune (card)  ↺ on a cycle: left out of the closure, not followed" in text
    assert text.count("hf:acme/pong") == 2  # once as a parent, once as a child; neither expanded
    base = ok(hubindex("lineage", "hf:acme/base", "--down")).stdout
    assert "└─ hf:acme/ping  finetune (card)\n   └─ hf:acme/pong  finetune (card)  ↺ on a cycle" in base


def test_a_merge_is_expanded_once_on_its_shortest_path(acme: Index, hubindex: Any) -> None:
    text = ok(hubindex("lineage", "hf:acme/merged", "--up")).stdout
    # merged -> ft1 (depth 1) is expanded; ft2's parent ft1 is marked instead of repeated.
    assert "hf:acme/ft1  merge (card)\n│  └─ hf:acme/base" in text
    assert ("└─ hf:acme/ft2  merge (card)\n   ├─ hf:acme/ft1  finetune (card)  ↪ its lineage is shown under "
            "hf:acme/merged\n") in text
    assert text.count("hf:meta/llama") == 2  # heading (root) and once in the tree


def test_depth_limits_both_directions(acme: Index, hubindex: Any) -> None:
    found = rows(hubindex, "hf:acme/ft1", "--depth", "1")
    assert [(r["direction"], r["checkpoint_id"], r["parent"], r["depth"]) for r in found] == [
        ("self", "hf:acme/ft1", None, 0),
        ("up", "hf:acme/ft1", "hf:acme/base", 1),
        ("down", "hf:acme/ft1-gguf", "hf:acme/ft1", 1),
        ("down", "hf:acme/ft2", "hf:acme/ft1", 1),
        ("down", "hf:acme/lora", "hf:acme/ft1", 1),
        ("down", "hf:acme/merged", "hf:acme/ft1", 1),
        ("down", "hf:acme/twin", "hf:acme/ft1", 1),
    ]
    text = ok(hubindex("lineage", "hf:acme/ft1", "--depth", "1", "--down")).stdout
    assert "descendants within 1 edge (" in text and "│  └─ hf:acme/merged" not in text
    deep = rows(hubindex, "hf:acme/merged", "--up", "--depth", "2")
    assert {r["parent"] for r in deep if r["depth"] == 2} == {"hf:acme/base", "hf:acme/ft1"}
    assert "hf:meta/llama" not in {r["parent"] for r in deep}


def test_machine_formats_carry_every_edge_with_its_evidence(acme: Index, hubindex: Any) -> None:
    found = rows(hubindex, "hf:acme/lora", "--up")
    by_parent = {r["parent"]: r for r in found if r["direction"] == "up"}
    assert by_parent["/home/me/models/ft1"] == {
        "checkpoint_id": "hf:acme/lora", "parent": "/home/me/models/ft1", "relation": "adapter",
        "evidence": "adapter-config", "confidence": 1.0, "declared": True, "depth": 1, "direction": "up",
        "status": "unresolved", "other_evidence": []}
    assert (by_parent["hf:acme/ft1"]["status"], by_parent["hf:meta/llama"]["depth"]) == ("closure", 3)
    twin = [r for r in rows(hubindex, "hf:acme/ft1", "--down") if r["checkpoint_id"] == "hf:acme/twin"]
    assert [(r["evidence"], r["declared"], r["confidence"]) for r in twin] == [("weights", False, 0.82)]
    csv_lines = ok(hubindex("lineage", "hf:acme/ft2", "--format", "csv")).stdout.splitlines()
    assert csv_lines[0] == ("checkpoint_id,parent,relation,evidence,confidence,declared,depth,direction,status,"
                            "other_evidence")
    assert "hf:acme/ft2,hf:acme/base,finetune,config,0.6,True,1,up,not used,[]" in csv_lines
    ndjson = [json.loads(line) for line in ok(hubindex("lineage", "hf:acme/ft2", "--format", "ndjson")).stdout.splitlines()]
    assert ndjson == rows(hubindex, "hf:acme/ft2")


def test_the_tree_agrees_with_the_closure(acme: Index) -> None:
    with acme.open_catalog(read_only=True) as catalog:
        for cid in [*CRAWLED, "hf:meta/llama"]:
            tree = lineage_tree(catalog, cid)
            followed = {(r[7], r[0] if r[7] == "down" else r[1]) for r in tree.rows() if r[8] == "closure"}
            closure_up = {r[0] for r in catalog.conn.execute("SELECT checkpoint_id FROM ancestors(?)", [cid]).fetchall()}
            closure_down = {r[0] for r in catalog.conn.execute("SELECT checkpoint_id FROM descendants(?)",
                                                               [cid]).fetchall()}
            assert {n for d, n in followed if d == "up"} == closure_up, cid
            assert {n for d, n in followed if d == "down"} == closure_down, cid
            assert tree_lines(tree, ascii_only=True)[0].startswith(cid)


def test_a_parent_known_only_to_lineage_and_a_repo_id_are_accepted(acme: Index, hubindex: Any) -> None:
    text = ok(hubindex("lineage", "hf:meta/llama", "--down", "--depth", "1")).stdout
    assert text.splitlines()[0] == "hf:meta/llama  ·  not in the catalog  ·  0 ancestors, 8 descendants"
    assert "└─ hf:acme/base  finetune (card)" in text
    assert ok(hubindex("lineage", "acme/ft2", "--up", "--depth", "1")).stdout.startswith("hf:acme/ft2  ·")


def test_an_unknown_checkpoint_is_one_line_with_close_ids(acme: Index, hubindex: Any) -> None:
    line = assert_one_line_error(hubindex("lineage", "hf:acme/ft3"), exit_code=2)
    assert "no checkpoint 'hf:acme/ft3'" in line and "did you mean" in line and "hf:acme/ft2" in line
    assert_one_line_error(hubindex("lineage", "hf:acme/ft1", "--depth", "0"), "--depth", exit_code=2)
    assert_one_line_error(hubindex("lineage", "hf:acme/ft1", "--up", "--plot", "x.png"), "drop --up", exit_code=2)
    assert_one_line_error(hubindex("lineage", "nothing/like-it"), "no checkpoint 'nothing/like-it'", exit_code=2)


def test_the_plot_draws_the_family(acme: Index, hubindex: Any, tmp_path: Any) -> None:
    out = tmp_path / "plots" / "ft2.png"
    result = ok(hubindex("lineage", "hf:acme/ft2", "--plot", str(out)))
    # llama's closure descendants, and pong, on a cycle with ping; hint's weak kappa hint is no edge.
    assert "10 of the 10 checkpoints of the family of hf:acme/ft2" in result.stderr and result.stdout == ""
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with acme.open_catalog(read_only=True) as catalog:
        whole = family(catalog, "hf:acme/ft2")
        assert whole.members[:4] == ["hf:acme/ft2", "hf:acme/ft1", "hf:acme/base", "hf:meta/llama"]
        assert whole.roles["hf:acme/merged"] == "descendant" and whole.roles["hf:acme/lora"] == "family"
        assert "hf:acme/hint" not in whole.members  # a weak hint is no family member
        assert {(e.child, e.parent, e.status) for e in whole.edges} >= {
            ("hf:acme/pong", "hf:acme/ping", "cycle"), ("hf:acme/twin", "hf:acme/ft1", "closure")}
        cut = family(catalog, "hf:acme/ft2", limit=5)
        assert (len(cut.members), cut.total, cut.left_out) == (5, 9, 4)  # ping is left out: so is pong
        assert all(e.child in cut.members and e.parent in cut.members for e in cut.edges)
    assert PLOT_NODES == 200


def test_the_layout_puts_parents_above_children_and_wraps_wide_layers() -> None:
    edges = [("b", "a"), ("c", "b"), ("d", "a"), ("c", "d")] + [(f"q{i}", "b") for i in range(30)]
    nodes = ["a", "b", "c", "d", *(f"q{i}" for i in range(30))]
    pos = layered_layout(nodes, edges, row_nodes=12)
    assert pos["a"][1] > pos["b"][1] == pos["d"][1] > pos["c"][1]  # c sits below both its parents
    assert len({pos[f"q{i}"][1] for i in range(30)}) == 3  # 31 nodes on c's layer: three rows of 12
    assert len(set(pos.values())) == len(nodes)


def test_a_large_fan_out_plot_is_capped(index: Index, hubindex: Any, tmp_path: Any) -> None:
    with index.open_catalog() as catalog:
        catalog.upsert_checkpoints([CheckpointRecord("hf:big/base", {"sha": "1"})], source="test", owned_columns=())
        from hubindex.lineage import EdgeSet, record_edge_sets

        record_edge_sets(catalog, {f"hf:big/q{i}": EdgeSet.of([card("hf:big/base", "quantized")]) for i in range(260)})
    result = ok(hubindex("lineage", "hf:big/q7", "--plot", str(tmp_path / "big.png")))
    assert "200 of the 261 checkpoints" in result.stderr and "61 left out, leaves and the farthest first" in result.stderr
    with index.open_catalog(read_only=True) as catalog:
        drawn = family(catalog, "hf:big/q7")
    # q7 and its parent first, then the other leaves by id; the base's 61 children not drawn are counted.
    assert drawn.members[:3] == ["hf:big/q7", "hf:big/base", "hf:big/q0"] and drawn.hidden_children == {"hf:big/base": 61}
    table = ok(hubindex("lineage", "hf:big/base"))
    assert table.stdout.count("quantized (card)") == 260


# ------------------------------------------------------------------------------------ show


def test_show_lists_parents_and_children_from_the_lineage_table(acme: Index, hubindex: Any) -> None:
    lora = json.loads(ok(hubindex("show", "hf:acme/lora", "--format", "json")).stdout)["lineage"]
    assert [(p["checkpoint_id"], p["relation"], p["evidence"], p["status"]) for p in lora["parents"]] == [
        ("hf:acme/ft1", "adapter", "card", "closure"),
        ("/home/me/models/ft1", "adapter", "adapter-config", "unresolved")]
    ft1 = json.loads(ok(hubindex("show", "hf:acme/ft1", "--format", "json")).stdout)["lineage"]
    assert [c["checkpoint_id"] for c in ft1["children"]] == [
        "hf:acme/ft1-gguf", "hf:acme/ft2", "hf:acme/lora", "hf:acme/merged", "hf:acme/twin"]
    assert (ft1["children_total"], ft1["descendants_total"], ft1["roots"]) == (5, 5, ["hf:meta/llama"])
    text = ok(hubindex("show", "hf:acme/ft2")).stdout
    section = text.split("\nlineage\n")[1].split("\n\n")[0]
    assert section.splitlines() == [
        "  root      hf:meta/llama (3 ancestors, 1 descendant; `hubindex lineage hf:acme/ft2` shows them)",
        "  parent    hf:acme/ft1  finetune (card)",
        "  parent    hf:acme/base  finetune (config, 0.6)  not used: outweighed by its card (1)",
        "  child     hf:acme/merged  merge (card)",
    ]


# ------------------------------------------------------------------------------------ family search


def timm_family(index: Index) -> None:
    """timm:a is the base of b and c; c of d (timm tags); e and f are of no family."""
    with index.open_catalog() as catalog:
        for child, parent in (("timm:b", "timm:a"), ("timm:c", "timm:a"), ("timm:d", "timm:c")):
            record_edges(catalog, child, [Edge(parent, "finetune", "timm-tag", 1.0)])


def test_search_where_restricts_the_pool_to_a_family(pool: Index, hubindex: Any) -> None:  # noqa: F811
    timm_family(pool)
    where = "checkpoint_id IN (SELECT checkpoint_id FROM descendants('timm:a'))"
    result = ok(hubindex("search", "--task", "pets", "--budget", "5", "--strategy", "aware", "--metric", "logme",
                         "--where", where, "--json"))
    found = json.loads(result.stdout)
    # logme: d 0.95, c 0.8, b 0.1 among a's descendants; a (0.9) is not its own descendant.
    assert (found["selected"], found["pool_size"]) == (["timm:d", "timm:c", "timm:b"], 3)
    family_with_root = f"checkpoint_id = 'timm:a' OR {where}"
    found = json.loads(ok(hubindex("search", "--task", "pets", "--budget", "2", "--strategy", "aware",
                                   "--metric", "logme", "--where", family_with_root, "--json")).stdout)
    assert found["selected"] == ["timm:d", "timm:a"]


def test_root_of_restricts_the_pool_per_row(pool: Index, hubindex: Any) -> None:  # noqa: F811
    timm_family(pool)
    root_of = json.loads(ok(hubindex("search", "--budget", "9", "--strategy", "agnostic", "--where",
                                     "root_of(checkpoint_id) = 'timm:a'", "--json")).stdout)
    assert sorted(root_of["selected"]) == ["timm:a", "timm:b", "timm:c", "timm:d"]


def test_ancestors_of_each_row_restrict_the_pool(pool: Index, hubindex: Any) -> None:  # noqa: F811
    timm_family(pool)
    found = json.loads(ok(hubindex("search", "--budget", "9", "--strategy", "agnostic", "--where",
                                   "'timm:a' IN (SELECT checkpoint_id FROM ancestors(checkpoint_id))",
                                   "--json")).stdout)
    assert sorted(found["selected"]) == ["timm:b", "timm:c", "timm:d"]


def test_select_mmi_where_restricts_the_pool_to_a_family(index: Index, hubindex: Any) -> None:
    zoo = feature_family()
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    with index.open_catalog() as catalog:
        for child in ("t:child", "t:cousin"):
            record_edges(catalog, child, [card("t:parent")])
    ok(hubindex("kappa"))
    found = json.loads(ok(hubindex("select", "mmi", "--budget", "5", "--where",
                                   "checkpoint_id IN (SELECT checkpoint_id FROM descendants('t:parent'))",
                                   "--json")).stdout)
    assert sorted(found["selected"]) == ["t:child", "t:cousin"] and found["pool_size"] == 2
    assert np.all(np.isfinite(found["mi_nats"]))
