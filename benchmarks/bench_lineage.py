"""Lineage at scale: the closure's rebuild, its incremental updates and its lookups on a Hub-shaped forest.

    .venv/bin/python benchmarks/bench_lineage.py --checkpoints 100000 200000 1000000

The forest imitates the Hub's population: about half the checkpoints name no parent; the others
name one (a few percent two or more: merges), preferring popular parents (a preferential draw), so
that a few bases have tens of thousands of descendants. Edges go in with plain SQL, then the
closure is built once (what a migration or `rebuild_closure` does). Measured: that rebuild; the
lookups through the macros (read-only connection, as `hubindex sql` runs them); one crawl batch of
200 new children through record_edge_sets; re-parenting a checkpoint with a large subtree; and the
recursive CTE over `checkpoints.base_models` that the closure replaces, for comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from hubindex.catalog import Catalog
from hubindex.lineage import Edge, EdgeSet, rebuild_closure, record_edge_sets
from hubindex.plugins import load_default_plugins


def forest(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(child, parent) edges over n checkpoints hf:o/m<i>; parents come earlier, drawn by popularity."""
    rng = random.Random(seed)
    weights_pool: list[int] = [0]  # a parent is drawn from this list: each child adds its parent again
    edges = []
    for i in range(1, n):
        if rng.random() < 0.5:
            weights_pool.append(i)  # a new root, a candidate parent of its own
            continue
        for _ in range(2 if rng.random() < 0.03 else 1):
            parent = weights_pool[rng.randrange(len(weights_pool))] if rng.random() < 0.7 else rng.randrange(i)
            edges.append((f"hf:o/m{i}", f"hf:o/m{parent}"))
            weights_pool.append(parent)
        weights_pool.append(i)
    return edges


def timed(fn, repeat: int = 1) -> float:  # noqa: ANN001 - a callable
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(n: int, folder: Path) -> dict[str, float]:
    edges = forest(n)
    path = folder / f"lineage-{n}.duckdb"
    result: dict[str, float] = {"checkpoints": n, "edges": len(edges)}
    with Catalog(path) as catalog:
        conn = catalog.conn
        conn.execute("INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at, base_models) "
                     "SELECT 'hf:o/m' || i, 'hf', now(), now(), NULL FROM range(?) t(i)", [n])
        conn.execute("CREATE TEMP TABLE e (child VARCHAR, parent VARCHAR)")
        conn.execute("INSERT INTO e SELECT unnest(?), unnest(?)", [[c for c, _ in edges], [p for _, p in edges]])
        conn.execute("INSERT INTO lineage SELECT child, parent, true, 'finetune', 'card', 1.0, true, NULL, now() FROM e")
        conn.execute("""UPDATE checkpoints SET base_models = b.names FROM (
            SELECT child, list(parent[4:]) AS names FROM e GROUP BY child) b WHERE checkpoint_id = b.child""")
        result["rebuild_s"] = timed(lambda: rebuild_closure(catalog))
        result["closure_rows"] = conn.execute("SELECT count(*) FROM lineage_closure").fetchone()[0]
        biggest = conn.execute("SELECT ancestor, count(*) FROM lineage_closure GROUP BY 1 ORDER BY 2 DESC LIMIT 1").fetchone()
        deepest = conn.execute("SELECT descendant FROM lineage_closure ORDER BY depth DESC LIMIT 1").fetchone()[0]
        result["largest_family"] = biggest[1]
        new = {f"hf:o/new{k}": EdgeSet.of([Edge(f"hf:o/m{random.Random(k).randrange(n)}", "finetune", "card", 1.0)])
               for k in range(200)}
        result["batch_200_new_children_s"] = timed(lambda: record_edge_sets(catalog, new))
        mid = conn.execute("""SELECT ancestor FROM lineage_closure GROUP BY 1 HAVING count(*) BETWEEN 100 AND 5000
                              ORDER BY count(*) DESC LIMIT 1""").fetchone()
        if mid:
            subtree = conn.execute("SELECT count(*) FROM lineage_closure WHERE ancestor = ?", mid).fetchone()[0]
            result["reparent_subtree"] = subtree
            result["reparent_s"] = timed(lambda: record_edge_sets(
                catalog, {mid[0]: EdgeSet.of([Edge("hf:o/new0", "finetune", "card", 1.0)])}))
    with Catalog(path, read_only=True) as catalog:
        conn = catalog.conn
        result["descendants_of_largest_s"] = timed(
            lambda: conn.execute("SELECT count(*) FROM descendants(?)", [biggest[0]]).fetchall(), 5)
        result["ancestors_s"] = timed(lambda: conn.execute("SELECT * FROM ancestors(?)", [deepest]).fetchall(), 5)
        result["root_of_s"] = timed(lambda: conn.execute("SELECT root_of(?)", [deepest]).fetchall(), 5)
        recursive = """
            WITH RECURSIVE d(id) AS (SELECT ?::VARCHAR UNION
                SELECT c.checkpoint_id FROM checkpoints c JOIN d ON list_contains(c.base_models, d.id[4:]))
            SELECT count(*) FROM d"""
        if n <= 200_000:
            result["recursive_base_models_s"] = timed(lambda: conn.execute(recursive, [biggest[0]]).fetchall())
    path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    load_default_plugins()  # the macros
    with tempfile.TemporaryDirectory() as folder:
        for n in args.checkpoints:
            print(run(n, Path(folder)), flush=True)


if __name__ == "__main__":
    main()
