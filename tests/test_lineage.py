"""Checkpoint lineage: declared edges from the crawlers, the closure kept up to date, the SQL macros.

Declared edges come through the real crawlers: the Hub crawler against the Hub imitation on
127.0.0.1, the timm crawler on the offline registry, and the local crawler on a Hugging Face cache
laid out with the zoo's own card and manifest writers (metadata only, no weights). The closure's
incremental update is checked against a rebuild, and both against a plain-Python reading of the
rule, on a random forest with random replacements, cycles included.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import pytest
from conftest import catalog_at_version

from hub_imitation import RESOLVE, HubImitation, hub, hub_server  # noqa: F401 - hub and hub_server are fixtures
from hubindex import lineage_closure
from hubindex.catalog import Catalog
from hubindex.index import Index
from hubindex.lineage import (
    RECOVERED_MIN_CONFIDENCE,
    Edge,
    EdgeSet,
    ancestors,
    closure_drift,
    cycle_edges,
    descendants,
    edges,
    rebuild_closure,
    record_edge_sets,
    record_edges,
    root,
    roots,
)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def lineage_rows(index: Index, child: str | None = None) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """{(child, parent, evidence): (relation, confidence, declared, parent_resolved)}."""
    with index.open_catalog(read_only=True) as catalog:
        return {(e.child, e.parent, e.evidence): (e.relation, e.confidence, e.declared, e.parent_resolved)
                for e in edges(catalog, child=child)}


def closure_of(index: Index, checkpoint_id: str) -> dict[str, int]:
    with index.open_catalog(read_only=True) as catalog:
        return {r.checkpoint_id: r.depth for r in descendants(catalog, checkpoint_id)}


# ------------------------------------------------------------------------ the Hub crawler


def populate_family(hub: HubImitation) -> None:
    """A base model and its family: a fine-tune chain, adapters, quantised leaves, a merge, a config-only
    child, a self-reference and a two-repo cycle."""
    hub.add_repo("acme/base")
    hub.add_repo("acme/ft1", base_model="acme/base", base_model_relation="finetune")
    hub.add_repo("acme/ft2", base_model="acme/ft1")  # no relation: inferred
    hub.add_repo("acme/lora", base_model="acme/ft1", model_type=None,
                 adapter_config={"base_model_name_or_path": "acme/ft1", "peft_type": "LORA", "r": 8})
    hub.add_repo("acme/lora-local", model_type=None,
                 adapter_config={"base_model_name_or_path": "/home/me/models/ft1", "peft_type": "LORA"})
    hub.add_repo("acme/ft1-gguf", base_model="acme/ft1", extra_tags=["gguf"],
                 files={"ft1.Q4_K_M.gguf": b"\x00" * 32, "README.md": b"# gguf\n"})
    hub.add_repo("acme/ft1-awq", base_model="acme/ft1", base_model_relation="quantized")
    hub.add_repo("acme/merged", base_model=["acme/ft1", "acme/ft2"])
    hub.add_repo("acme/from-config", name_or_path="acme/base")
    hub.add_repo("acme/own-config", name_or_path="acme/own-config")
    hub.add_repo("acme/run-config", name_or_path="outputs/checkpoint-500")
    hub.add_repo("acme/odd", base_model="acme/base", base_model_relation="sideways")
    hub.add_repo("acme/selfish", base_model="acme/selfish")
    hub.add_repo("acme/ping", base_model="acme/pong")
    hub.add_repo("acme/pong", base_model="acme/ping")


def test_hub_cards_adapters_and_configs_give_typed_edges(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate_family(hub)
    ok(hubindex("crawl", "hf", "--endpoint", hub.url))
    rows = lineage_rows(index)

    assert rows[("hf:acme/ft1", "hf:acme/base", "card")] == ("finetune", 1.0, True, True)
    assert rows[("hf:acme/ft2", "hf:acme/ft1", "card")] == ("finetune", 1.0, True, True)
    assert rows[("hf:acme/lora", "hf:acme/ft1", "card")][0] == "adapter"  # inferred from adapter_config.json
    assert rows[("hf:acme/lora", "hf:acme/ft1", "adapter-config")] == ("adapter", 1.0, True, True)
    # A local path in an adapter config is kept as written, unresolved.
    assert rows[("hf:acme/lora-local", "/home/me/models/ft1", "adapter-config")] == ("adapter", 1.0, True, False)
    assert rows[("hf:acme/ft1-gguf", "hf:acme/ft1", "card")][0] == "quantized"  # inferred from the gguf tag
    assert rows[("hf:acme/ft1-awq", "hf:acme/ft1", "card")][0] == "quantized"  # stated
    assert rows[("hf:acme/merged", "hf:acme/ft1", "card")][0] == "merge"
    assert rows[("hf:acme/merged", "hf:acme/ft2", "card")][0] == "merge"
    assert rows[("hf:acme/from-config", "hf:acme/base", "config")] == ("finetune", 0.6, True, True)
    assert rows[("hf:acme/odd", "hf:acme/base", "card")][0] == "finetune"
    assert not any(child in ("hf:acme/own-config", "hf:acme/run-config") for child, _, _ in rows)
    assert rows[("hf:acme/selfish", "hf:acme/selfish", "card")][0] == "finetune"  # kept, never in the closure
    with index.open_catalog(read_only=True) as catalog:
        (odd,) = edges(catalog, child="hf:acme/odd")
        assert "sideways" in odd.detail and odd.in_closure
        (gguf,) = edges(catalog, child="hf:acme/ft1-gguf")
        assert gguf.detail == "inferred: tag gguf"

        # The closure: depths are shortest paths; the merge is under the base at depth 2.
        assert {r.checkpoint_id: r.depth for r in descendants(catalog, "hf:acme/base")} == {
            "hf:acme/ft1": 1, "hf:acme/odd": 1, "hf:acme/from-config": 1, "hf:acme/ft2": 2, "hf:acme/lora": 2,
            "hf:acme/ft1-gguf": 2, "hf:acme/ft1-awq": 2, "hf:acme/merged": 2}
        assert [(r.checkpoint_id, r.depth) for r in ancestors(catalog, "hf:acme/merged")] == [
            ("hf:acme/ft1", 1), ("hf:acme/ft2", 1), ("hf:acme/base", 2)]
        assert root(catalog, "hf:acme/lora") == "hf:acme/base"
        # Self-reference and the 2-cycle: in lineage, out of the closure, the walks end.
        assert descendants(catalog, "hf:acme/selfish") == ancestors(catalog, "hf:acme/selfish") == []
        assert cycle_edges(catalog) == [("hf:acme/ping", "hf:acme/pong"), ("hf:acme/pong", "hf:acme/ping")]
        assert descendants(catalog, "hf:acme/ping") == []
        assert closure_drift(catalog) == 0
    # adapter_config.json was read for the two repos that list it, and nothing else was resolved.
    assert sorted(r.repo_id for r in hub.requests(RESOLVE)) == ["acme/lora", "acme/lora-local"]


def test_a_recrawl_replaces_a_childs_edges_and_moves_its_subtree(
    hub: HubImitation, hubindex: Any, index: Index
) -> None:
    hub.add_repo("acme/base")
    hub.add_repo("acme/other-base")
    hub.add_repo("acme/mid", base_model="acme/base")
    hub.add_repo("acme/leaf", base_model="acme/mid")
    ok(hubindex("crawl", "hf", "--endpoint", hub.url))
    assert closure_of(index, "hf:acme/base") == {"hf:acme/mid": 1, "hf:acme/leaf": 2}

    card = dict(hub.repos["acme/mid"].card_data, base_model="acme/other-base")
    hub.update_repo("acme/mid", card_data=card)
    ok(hubindex("crawl", "hf", "--endpoint", hub.url))
    assert closure_of(index, "hf:acme/base") == {}
    assert closure_of(index, "hf:acme/other-base") == {"hf:acme/mid": 1, "hf:acme/leaf": 2}
    assert ("hf:acme/mid", "hf:acme/base", "card") not in lineage_rows(index)
    with index.open_catalog(read_only=True) as catalog:
        assert closure_drift(catalog) == 0


def test_edges_and_checkpoint_rows_commit_together(
    hub: HubImitation, hubindex: Any, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("acme/base")
    hub.add_repo("acme/child", base_model="acme/base")

    def crash(conn: Any) -> int:
        raise RuntimeError("power cut while updating the closure")

    monkeypatch.setattr(lineage_closure, "update_closure", crash)
    result = hubindex("crawl", "hf", "--endpoint", hub.url)
    assert result.exit_code != 0
    with index.open_catalog(read_only=True) as catalog:
        counts = [catalog.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("checkpoints", "lineage", "lineage_closure")]
    assert counts == [0, 0, 0]


# ------------------------------------------------------------------------ timm and the local zoo


def test_timm_tags_give_finetune_edges(hubindex: Any, index: Index) -> None:
    ok(hubindex("crawl", "timm", "--filter", "convnext_small.*"))
    declared = {(child, parent) for child, parent, evidence in lineage_rows(index) if evidence == "timm-tag"}
    assert declared == {
        ("timm:convnext_small.fb_in22k_ft_in1k", "timm:convnext_small.fb_in22k"),
        ("timm:convnext_small.fb_in22k_ft_in1k_384", "timm:convnext_small.fb_in22k"),
        ("timm:convnext_small.in12k_ft_in1k", "timm:convnext_small.in12k"),
        ("timm:convnext_small.in12k_ft_in1k_384", "timm:convnext_small.in12k"),
    }
    assert {v[0] for v in lineage_rows(index).values()} == {"finetune"}
    assert closure_of(index, "timm:convnext_small.in12k") == {
        "timm:convnext_small.in12k_ft_in1k": 1, "timm:convnext_small.in12k_ft_in1k_384": 1}


def test_a_timm_parent_outside_the_filter_still_resolves(hubindex: Any, index: Index) -> None:
    ok(hubindex("crawl", "timm", "--filter", "convnext_small.in12k_ft_in1k"))
    assert lineage_rows(index) == {("timm:convnext_small.in12k_ft_in1k", "timm:convnext_small.in12k", "timm-tag"):
                                   ("finetune", 1.0, True, True)}


def zoo_cache(out: Path) -> None:
    """The zoo's members as cache repos holding only what states lineage: card, manifest, a config."""
    from hubindex_plugins.zoo import MEMBERS, assemble_cache_repo, lineage_record, repo_folder, write_card, write_json

    for member in MEMBERS:
        files = out / "staging" / member.name
        files.mkdir(parents=True)
        write_json(files / "config.json", {"model_type": "bert"} if member.kind == "text" else
                   {"architecture": "efficientnet_lite0", "num_features": 1280, "num_classes": 10})
        write_card(files, member, "metadata only")
        write_json(files / "hubindex_lineage.json", lineage_record(member, {}))
        assemble_cache_repo(files, repo_folder(out / "cache", member.repo_id))


def test_local_zoo_manifests_and_folders_give_edges(hubindex: Any, index: Index, tmp_path: Path) -> None:
    zoo_cache(tmp_path)
    adapter = tmp_path / "folders" / "my-adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": "hubindex-zoo/all-MiniLM-L6-v2", "peft_type": "LORA"}))
    (adapter / "config.json").write_text(json.dumps({"model_type": "bert", "_name_or_path": "sentence-transformers/x"}))
    ok(hubindex("crawl", "local", str(tmp_path / "cache")))
    ok(hubindex("crawl", "local", str(tmp_path / "folders")))
    rows = lineage_rows(index)

    minilm = "hf:hubindex-zoo/all-MiniLM-L6-v2"
    assert rows[("hf:hubindex-zoo/all-MiniLM-L6-v2-bbc-topics", minilm, "manifest")][0] == "finetune"
    assert rows[("hf:hubindex-zoo/all-MiniLM-L6-v2-first3", minilm, "manifest")][0] == "unknown"  # truncated
    assert rows[("hf:hubindex-zoo/all-MiniLM-L6-v2-first3", minilm, "card")][0] == "finetune"  # card: inferred
    lite = "hf:hubindex-zoo/tf_efficientnet_lite0.in1k"
    assert rows[("hf:hubindex-zoo/tf_efficientnet_lite0.in1k_ft_digits", lite, "manifest")][0] == "finetune"
    # Sources and random initialisations have no parent.
    assert not any(child.endswith(("random-init", "random_init", ".in1k", "L6-v2", "L3-v2"))
                   for child, _, _ in rows)
    local_adapter = f"local:{adapter.resolve()}"
    assert rows[(local_adapter, minilm, "adapter-config")] == ("adapter", 1.0, True, True)
    assert rows[(local_adapter, "hf:sentence-transformers/x", "config")] == ("adapter", 0.6, True, True)
    assert closure_of(index, minilm) == {"hf:hubindex-zoo/all-MiniLM-L6-v2-bbc-topics": 1,
                                         "hf:hubindex-zoo/all-MiniLM-L6-v2-first3": 1, local_adapter: 1}
    assert closure_of(index, lite) == {"hf:hubindex-zoo/tf_efficientnet_lite0.in1k_ft_digits": 1}


def test_a_local_copy_fills_in_but_does_not_overwrite_hub_edges(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        hub_card = Edge("hf:org/base", "finetune", "card", 1.0)
        record_edge_sets(catalog, {"hf:org/x": EdgeSet.of([hub_card])})
        local = EdgeSet.of([Edge("hf:org/other", "finetune", "card", 1.0),
                            Edge("hf:org/zoo-parent", "unknown", "manifest", 1.0)],
                           ["card", "config", "manifest"], fill_only=["card", "config"])
        record_edge_sets(catalog, {"hf:org/x": local, "hf:org/y": local})
        assert {(e.child, e.parent, e.evidence) for e in edges(catalog)} == {
            ("hf:org/x", "hf:org/base", "card"), ("hf:org/x", "hf:org/zoo-parent", "manifest"),
            ("hf:org/y", "hf:org/other", "card"), ("hf:org/y", "hf:org/zoo-parent", "manifest")}


# ------------------------------------------------------------------------ the effective-edge rule


def test_declared_edges_win_over_recovered_ones(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        def parents() -> list[str]:
            return [r.checkpoint_id for r in ancestors(catalog, "c", depth=1)]

        record_edges(catalog, "c", [Edge("w", "finetune", "weights", 0.95),
                                    Edge("k", "unknown", "kappa", RECOVERED_MIN_CONFIDENCE - 0.01)])
        assert parents() == ["w"]  # the kappa edge is under the threshold
        record_edges(catalog, "c", [Edge("cfg", "finetune", "config", 0.6)])
        assert parents() == ["cfg"]  # any declared edge beats recovered ones
        record_edges(catalog, "c", [Edge("card-parent", "finetune", "card", 1.0)])
        assert parents() == ["card-parent"]  # among declared, the highest confidence
        record_edges(catalog, "c", [Edge("/some/path", "finetune", "card", 1.0, parent_resolved=False)])
        assert parents() == ["cfg"]  # an unresolved parent counts for nothing
        record_edges(catalog, "c", [], evidence=["card", "config"])
        assert parents() == ["w"]
        assert {e.evidence: e.in_closure for e in edges(catalog, child="c")} == {"weights": True, "kappa": None}
        assert closure_drift(catalog) == 0


def test_edges_are_validated() -> None:
    with pytest.raises(ValueError, match="relation"):
        Edge("p", "sideways", "card", 1.0)
    with pytest.raises(ValueError, match="evidence"):
        Edge("p", "finetune", "gossip", 1.0)
    with pytest.raises(ValueError, match="confidence"):
        Edge("p", "finetune", "weights", 1.5)
    with pytest.raises(ValueError, match="not among"):
        EdgeSet(frozenset({"card"}), (Edge("p", "finetune", "weights", 0.9),))
    assert not Edge("p", "unknown", "kappa", 0.9).declared and Edge("p", "adapter", "adapter-config", 1.0).declared


# ------------------------------------------------------------------------ the closure


def reference_closure(rows: list[tuple[str, str, bool, bool, float]]) -> tuple[dict[tuple[str, str], bool], dict]:
    """The rule read plainly: ({(child, parent): in_closure} of effective edges,
    {(ancestor, descendant): (depth, ancestor_is_root)})."""
    by_child: dict[str, list[tuple[str, bool, float]]] = defaultdict(list)
    for child, parent, resolved, declared, confidence in rows:
        if resolved and parent != child:
            by_child[child].append((parent, declared, confidence))
    effective: set[tuple[str, str]] = set()
    for child, found in by_child.items():
        declared = [(p, c) for p, d, c in found if d]
        if declared:
            best = max(c for _, c in declared)
            effective |= {(child, p) for p, c in declared if c == best}
        else:
            effective |= {(child, p) for p, d, c in found if c >= RECOVERED_MIN_CONFIDENCE}
    parents: dict[str, set[str]] = defaultdict(set)
    for child, parent in effective:
        parents[child].add(parent)

    def reach(start: str, up: dict[str, set[str]]) -> dict[str, int]:
        depth, queue = {}, deque([(start, 0)])
        while queue:
            node, d = queue.popleft()
            for parent in sorted(up.get(node, ())):
                if parent not in depth:
                    depth[parent] = d + 1
                    queue.append((parent, d + 1))
        return depth

    in_closure = {(c, p): c not in reach(p, parents) for c, p in effective}
    kept: dict[str, set[str]] = defaultdict(set)
    for (c, p), keep in in_closure.items():
        if keep:
            kept[c].add(p)
    nodes = {n for edge in effective for n in edge}
    closure = {(a, d): (depth, not kept[a]) for d in nodes for a, depth in reach(d, kept).items()}
    return in_closure, closure


def stored_state(catalog: Catalog) -> tuple[dict[tuple[str, str], bool], dict[tuple[str, str], tuple[int, bool]]]:
    effective = {(c, p): k for c, p, k in catalog.conn.execute("SELECT * FROM lineage_effective").fetchall()}
    closure = {(a, d): (n, r) for a, d, n, r in catalog.conn.execute("SELECT * FROM lineage_closure").fetchall()}
    return effective, closure


def test_incremental_closure_equals_a_rebuild_on_a_random_forest(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    nodes = [f"n{i:02d}" for i in range(24)]
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        # A forest first, in one batch: most nodes under an earlier one.
        record_edge_sets(catalog, {node: EdgeSet.of([Edge(rng.choice(nodes[:i]), "finetune", "card", 1.0)])
                                   for i, node in enumerate(nodes) if i and rng.random() < 0.8})
        cycles_seen = 0
        for step in range(40):
            sets = {}
            for child in rng.sample(nodes, rng.choice([1, 1, 1, 3])):
                evidence = rng.choice(["card", "card", "config", "weights", "kappa"])
                confidence = {"card": 1.0, "config": 0.6}.get(evidence) or rng.choice([0.5, 0.85, 0.95])
                # Any parent: itself, an ancestor, a descendant (a cycle), or a name that resolves to nothing.
                found = [Edge(rng.choice(nodes), "finetune", evidence, confidence) for _ in range(rng.choice([0, 1, 1, 2]))]
                if rng.random() < 0.1:
                    found.append(Edge("./local/dir", "finetune", evidence, confidence, parent_resolved=False))
                sets[child] = EdgeSet.of(found, [evidence])
            record_edge_sets(catalog, sets)
            assert closure_drift(catalog) == 0, f"step {step}: incremental closure differs from a rebuild"
            rows = catalog.conn.execute(
                "SELECT child, parent, parent_resolved, declared, confidence FROM lineage").fetchall()
            assert stored_state(catalog) == reference_closure(rows), f"step {step}"
            cycles_seen += bool(cycle_edges(catalog))
        assert cycles_seen >= 3  # the walk met cycles, and broke them again
        # A repair from a damaged closure gives the same state back.
        before = stored_state(catalog)
        catalog.conn.execute("DELETE FROM lineage_closure WHERE depth = 1")
        assert closure_drift(catalog) > 0
        rebuild_closure(catalog)
        assert stored_state(catalog) == before


def test_unchanged_parents_cost_no_closure_work(tmp_path: Path) -> None:
    with Catalog(tmp_path / "catalog.duckdb") as catalog:
        chain = [Edge("a", "finetune", "card", 1.0)]
        assert record_edges(catalog, "b", chain).changed == 1
        assert record_edges(catalog, "c", [Edge("b", "finetune", "card", 1.0)]).walked == 1
        update = record_edges(catalog, "b", [Edge("a", "adapter", "card", 1.0), Edge("a", "finetune", "weights", 0.9)],
                              evidence=["card", "weights"])
        assert (update.changed, update.walked) == (0, 0)  # another relation or a recovered edge: same parents
        assert record_edges(catalog, "b", [Edge("z", "finetune", "card", 1.0)]).walked == 2  # b and c


# ------------------------------------------------------------------------ SQL


def test_macros_in_hubindex_sql_and_where(hubindex: Any, index: Index) -> None:
    from hubindex.probing import matching_checkpoints

    with index.open_catalog() as catalog:
        catalog.conn.execute("INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at) "
                             "SELECT unnest(['hf:m/base', 'hf:m/ft', 'hf:m/q', 'hf:m/other']), 'hf', now(), now()")
        record_edges(catalog, "hf:m/ft", [Edge("hf:m/base", "finetune", "card", 1.0)])
        record_edges(catalog, "hf:m/q", [Edge("hf:m/ft", "quantized", "card", 1.0)])
    result = ok(hubindex("sql", "SELECT * FROM descendants('hf:m/base')", "--format", "json"))
    assert json.loads(result.stdout) == [{"checkpoint_id": "hf:m/ft", "depth": 1}, {"checkpoint_id": "hf:m/q", "depth": 2}]
    result = ok(hubindex("sql", "SELECT root_of('hf:m/q') AS r, root_of('hf:m/other') AS o, "
                                "(SELECT list(checkpoint_id) FROM ancestors('hf:m/q')) AS a", "--format", "json"))
    assert json.loads(result.stdout) == [{"r": "hf:m/base", "o": "hf:m/other", "a": ["hf:m/ft", "hf:m/base"]}]
    result = ok(hubindex("sql", "SELECT * FROM roots('hf:m/ft')", "--format", "json"))
    assert json.loads(result.stdout) == [{"checkpoint_id": "hf:m/base", "depth": 1}]
    where = "checkpoint_id IN (SELECT checkpoint_id FROM descendants('hf:m/base'))"
    assert matching_checkpoints(index, where) == ["hf:m/ft", "hf:m/q"]
    # Per row: the argument is the calling query's own checkpoint_id column.
    where = "'hf:m/ft' IN (SELECT checkpoint_id FROM ancestors(checkpoint_id))"
    assert matching_checkpoints(index, where) == ["hf:m/q"]
    result = ok(hubindex("sql", "SELECT checkpoint_id, root_of(checkpoint_id) AS root FROM checkpoints ORDER BY 1",
                         "--format", "json"))
    assert {r["checkpoint_id"]: r["root"] for r in json.loads(result.stdout)} == {
        "hf:m/base": "hf:m/base", "hf:m/ft": "hf:m/base", "hf:m/q": "hf:m/base", "hf:m/other": "hf:m/other"}
    with index.open_catalog(read_only=True) as catalog:
        assert [r.checkpoint_id for r in roots(catalog, "hf:m/q")] == ["hf:m/base"]


def test_a_catalog_from_before_lineage_reads_without_macros(tmp_path: Path, hubindex: Any, index: Index) -> None:
    catalog_at_version(index.catalog_path, 9).close()
    assert ok(hubindex("sql", "SELECT count(*) AS n FROM checkpoints", "--format", "csv")).stdout.split() == ["n", "0"]


def test_migration_backfills_lineage_from_base_models(index: Index) -> None:
    conn = catalog_at_version(index.catalog_path, 9)
    conn.execute("""
        INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at, base_models, tags, library_name)
        VALUES ('hf:o/base', 'hf', now(), now(), NULL, NULL, NULL),
               ('hf:o/ft', 'hf', now(), now(), ['o/base'], [], 'transformers'),
               ('hf:o/q', 'hf', now(), now(), ['o/ft'], ['gguf'], NULL),
               ('hf:o/lora', 'hf', now(), now(), ['o/ft'], [], 'peft'),
               ('hf:o/m', 'hf', now(), now(), ['o/ft', 'o/q', 'o/ft'], [], NULL),
               ('hf:o/tagged', 'hf', now(), now(), ['o/ft'], ['base_model:adapter:o/ft'], NULL),
               ('hf:o/odd', 'hf', now(), now(), ['../up'], [], NULL)
    """)
    conn.close()
    with Catalog(index.catalog_path) as catalog:
        rows = {(e.child, e.parent): (e.relation, e.parent_resolved) for e in edges(catalog)}
        assert rows == {
            ("hf:o/ft", "hf:o/base"): ("finetune", True), ("hf:o/q", "hf:o/ft"): ("quantized", True),
            ("hf:o/lora", "hf:o/ft"): ("adapter", True), ("hf:o/m", "hf:o/ft"): ("merge", True),
            ("hf:o/m", "hf:o/q"): ("merge", True), ("hf:o/tagged", "hf:o/ft"): ("adapter", True),
            ("hf:o/odd", "../up"): ("finetune", False)}
        assert {r.checkpoint_id: r.depth for r in descendants(catalog, "hf:o/base")} == {
            "hf:o/ft": 1, "hf:o/q": 2, "hf:o/lora": 2, "hf:o/m": 2, "hf:o/tagged": 2}
        assert closure_drift(catalog) == 0


def test_check_finds_a_closure_that_drifted_and_repair_rebuilds_it(hubindex: Any, index_dir: Path) -> None:
    index = Index(index_dir)
    with index.open_catalog() as catalog:
        record_edges(catalog, "b", [Edge("a", "finetune", "card", 1.0)])
        record_edges(catalog, "c", [Edge("b", "finetune", "card", 1.0)])
    assert hubindex("check").exit_code == 0
    with index.open_catalog() as catalog:  # as a crash between two writers could leave it, were they not one transaction
        catalog.conn.execute("DELETE FROM lineage_closure WHERE ancestor = 'a' AND descendant = 'c'")
    found = hubindex("check")
    assert found.exit_code != 0 and "lineage_closure: 1 row(s) differ from what the lineage table implies" in \
        found.stdout + found.stderr
    repaired = hubindex("check", "--repair")
    assert "rebuilt the lineage closure" in repaired.stdout + repaired.stderr
    assert hubindex("check").exit_code == 0
    with index.open_catalog(read_only=True) as catalog:
        assert [r.checkpoint_id for r in descendants(catalog, "a")] == ["b", "c"]
