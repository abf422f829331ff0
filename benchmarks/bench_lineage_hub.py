"""Lineage at Hub scale: the closure against the recursive query over base_models, on the same catalog.

    .venv/bin/python benchmarks/bench_lineage_hub.py --checkpoints 200000 1000000

For each size, in a child process of its own (so that its peak RSS is its own), a real catalog is
made with hubindex's migrations and filled with a synthetic forest shaped like the Hub's:

- 55 % of the checkpoints have no parent, and no child: most Hub repos name no base model;
- the rest belong to ROOTS families whose sizes fall off as a power law (k^-1.1): the largest holds
  about a fifth of them, as Llama's and Qwen's families dwarf the others;
- inside a family, a new checkpoint is made from the root 30 % of the time (wide fan-outs: the
  largest base gets tens of thousands of direct children), continues the family's latest fine-tune
  chain 30 % of the time (LLM-like chains, at most MAX_CHAIN deep), and otherwise derives from any
  fine-tune, merge or distillation of the family; its relation is finetune, quantized, adapter,
  merge (then with a second parent) or distillation; quantised and adapter checkpoints are leaves;
- 2 % of the children also carry a config edge (`_name_or_path`, 0.6) to the same parent, and 1 %
  of the parentless ones an unresolved parent (a local path).

The rows go in with bulk SQL: `checkpoints` (with `base_models`, the repo names that cards state) and
`lineage`; then the closure is built with hubindex.lineage.rebuild_closure (timed). On that catalog,
opened read-only, for the largest family (the root with the most descendants), a mid one and a leaf:

- the recursive CTE over checkpoints.base_models, interrupted by DuckDB at TIMEOUT_S (as `hubindex sql`
  does), once, or the median of 3 runs when it takes under 3 s;
- `SELECT * FROM descendants('X')` directly on an open connection, and through the read-only path of
  `hubindex sql` (open the catalog read-only, prepare the macros, fence the query, stream every row),
  each the median of REPEATS runs; and the whole `hubindex sql` command once in a fresh process;

then what `hubindex lineage` does with the largest family (its whole tree, read and as text) and
with a deep leaf in it (the family plot, 200 of its members drawn), and, back on the writable
catalog, one incremental record_edges (a new leaf under a chain) and one
re-parenting of a checkpoint with a subtree. The table for docs/whole-hub.md is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOTS = 300
PARENTLESS = 0.55
MAX_CHAIN = 20
TIMEOUT_S = 30.0
REPEATS = 5
REPO = Path(__file__).resolve().parent.parent

RECURSIVE = """
    WITH RECURSIVE family(checkpoint_id) AS (
        SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id = {x}
        UNION
        SELECT c.checkpoint_id FROM checkpoints c JOIN family f ON list_contains(c.base_models, f.checkpoint_id[4:])
    )
    SELECT checkpoint_id FROM family WHERE checkpoint_id <> {x}"""
CLOSURE = "SELECT * FROM descendants({x})"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def forest(n: int, seed: int = 0) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """The checkpoint ids, and each child's parents as (parent, relation)."""
    rng = random.Random(seed)
    children = int(n * (1 - PARENTLESS))
    weights = [k ** -1.1 for k in range(1, ROOTS + 1)]
    total = sum(weights)
    sizes = [int(children * w / total) for w in weights]
    sizes[0] += children - sum(sizes)
    ids: list[str] = []
    parents: dict[str, list[tuple[str, str]]] = {}
    for family, size in enumerate(sizes):
        root = f"hf:family{family}/base"
        ids.append(root)
        eligible = [root]  # what a new checkpoint can be made from
        depth = {root: 0}
        latest = root
        for i in range(size):
            cid = f"hf:family{family}/m{i}"
            draw = rng.random()
            if draw < 0.3:
                parent, relation = root, rng.choice(("quantized", "quantized", "adapter", "finetune"))
            elif draw < 0.6 and depth[latest] < MAX_CHAIN:
                parent, relation = latest, "finetune"
            else:
                parent = eligible[rng.randrange(len(eligible))]
                relation = rng.choices(("finetune", "quantized", "adapter", "merge", "distillation"),
                                       (0.40, 0.30, 0.22, 0.04, 0.04))[0]
            if depth[parent] >= MAX_CHAIN:
                parent = root
            stated = [(parent, relation)]
            if relation == "merge":
                other = eligible[rng.randrange(len(eligible))]
                if other != parent:
                    stated.append((other, "merge"))
            parents[cid] = stated
            ids.append(cid)
            depth[cid] = 1 + max(depth[p] for p, _ in stated)
            if relation in ("finetune", "merge", "distillation"):
                eligible.append(cid)
                latest = cid
    ids += [f"hf:solo/m{i}" for i in range(n - len(ids))]
    return ids, parents


def median_time(fn: Any, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def recursive_time(conn: Any, x: str) -> tuple[float | None, int | None]:
    """Seconds and rows of the recursive CTE, or (None, None) when DuckDB interrupted it at TIMEOUT_S."""
    import duckdb

    def once() -> tuple[float | None, int | None]:
        timer = threading.Timer(TIMEOUT_S, conn.interrupt)
        timer.start()
        start = time.perf_counter()
        try:
            rows = len(conn.execute(RECURSIVE.format(x=literal(x))).fetchall())
        except duckdb.InterruptException:
            return None, None
        finally:
            timer.cancel()
        return time.perf_counter() - start, rows

    first, rows = once()
    if first is None or first >= 3.0:
        return first, rows
    return statistics.median([first, once()[0], once()[0]]), rows  # type: ignore[list-item]


def run(n: int, folder: Path) -> dict[str, Any]:
    from hubindex.catalog import Catalog
    from hubindex.lineage import (
        Edge,
        EdgeSet,
        rebuild_closure,
        record_edge_sets,
        record_edges,
    )
    from hubindex.lineage_tree import family, lineage_tree, tree_lines
    from hubindex.plots import plot_lineage
    from hubindex.plugins import load_default_plugins
    from hubindex.user_sql import open_readonly_query

    load_default_plugins()  # the macros
    result: dict[str, Any] = {"checkpoints": n}
    start = time.perf_counter()
    ids, parents = forest(n)
    result["generate_s"] = time.perf_counter() - start
    rng = random.Random(1)
    path = folder / "catalog.duckdb"
    start = time.perf_counter()
    with Catalog(path) as catalog:
        conn = catalog.conn
        bases = [[p[3:] for p, _ in parents[cid]] if cid in parents else None for cid in ids]
        conn.execute("""
            INSERT INTO checkpoints (checkpoint_id, source, repo_id, first_seen_at, crawled_at, base_models)
            SELECT id, 'hf', id[4:], now()::TIMESTAMP, now()::TIMESTAMP, bases
            FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::VARCHAR[][]) AS bases)""", [ids, bases])
        rows = []
        for child, stated in parents.items():
            for parent, relation in stated:
                rows.append((child, parent, True, relation, "card", 1.0, True))
            if rng.random() < 0.02:
                rows.append((child, stated[0][0], True, "finetune", "config", 0.6, True))
        solos = [cid for cid in ids if cid.startswith("hf:solo/")]
        for cid in rng.sample(solos, len(solos) // 100):
            rows.append((cid, f"/home/user/models/{cid[8:]}", False, "finetune", "config", 0.6, True))
        conn.execute("""
            INSERT INTO lineage SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]),
                unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), unnest(?::BOOLEAN[]), NULL,
                now()::TIMESTAMP""", [list(column) for column in zip(*rows)])
        result["insert_s"] = time.perf_counter() - start
        result["lineage_rows"] = len(rows)
        start = time.perf_counter()
        result["closure_rows"] = rebuild_closure(catalog)
        result["rebuild_s"] = time.perf_counter() - start
        result["parentless"] = n - len(parents)
        result["max_depth"], result["mean_depth"] = conn.execute(
            "SELECT max(depth), avg(depth) FROM lineage_closure WHERE ancestor_is_root").fetchone()
        large, large_n = conn.execute("SELECT ancestor, count(*) FROM lineage_closure GROUP BY 1 "
                                      "ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
        mid, mid_n = conn.execute("SELECT ancestor, count(*) AS k FROM lineage_closure GROUP BY 1 "
                                  "ORDER BY abs(k - 500), 1 LIMIT 1").fetchone()
        leaf = conn.execute("SELECT descendant FROM lineage_closure WHERE descendant NOT IN "
                            "(SELECT ancestor FROM lineage_closure) ORDER BY depth DESC, 1 LIMIT 1").fetchone()[0]
        result["widest_fan_out"] = conn.execute("SELECT max(k) FROM (SELECT count(*) AS k FROM lineage_closure "
                                                "WHERE depth = 1 GROUP BY ancestor)").fetchone()[0]
    result["catalog_mb"] = path.stat().st_size / 2**20
    families = {"large": (large, large_n), "mid": (mid, mid_n), "leaf": (leaf, 0)}
    result["families"] = {}
    with Catalog(path, read_only=True) as catalog:
        conn = catalog.conn
        for name, (x, size) in families.items():
            found = len(conn.execute(CLOSURE.format(x=literal(x))).fetchall())
            assert found == size, (name, found, size)
            seconds, rows_found = recursive_time(conn, x)
            if rows_found is not None:
                assert rows_found == size, (name, rows_found, size)  # the same answer, the slow way
            direct = median_time(lambda x=x: conn.execute(CLOSURE.format(x=literal(x))).fetchall())
            result["families"][name] = {"id": x, "descendants": size, "recursive_s": seconds, "closure_direct_s": direct}

    def through_sql(x: str) -> int:
        count = 0
        with open_readonly_query(path, CLOSURE.format(x=literal(x))) as stream:
            for batch in stream.batches():
                count += len(batch)
        return count

    for name, (x, size) in families.items():
        entry = result["families"][name]
        assert through_sql(x) == size
        entry["hubindex_sql_s"] = median_time(lambda x=x: through_sql(x))
        start = time.perf_counter()
        subprocess.run([str(REPO / ".venv/bin/hubindex"), "--index", str(folder), "sql", CLOSURE.format(x=literal(x)),
                        "--format", "csv"], check=True, stdout=subprocess.DEVNULL)
        entry["cli_process_s"] = time.perf_counter() - start

    # What `hubindex lineage` does with them: the whole tree below the largest root, and the plot of a
    # leaf's family (the leaf's ancestors, then its roots' descendants, 200 drawn).
    with Catalog(path, read_only=True) as catalog:
        start = time.perf_counter()
        tree = lineage_tree(catalog, large)
        result["lineage_tree_large_s"] = time.perf_counter() - start
        result["lineage_tree_large_edges"] = tree.edge_count()
        start = time.perf_counter()
        lines = tree_lines(tree)
        result["lineage_tree_large_text_s"] = time.perf_counter() - start
        assert len(lines) > large_n
        deep = catalog.conn.execute(f"SELECT descendant FROM lineage_closure WHERE ancestor = {literal(large)} "
                                    "ORDER BY depth DESC, 1 LIMIT 1").fetchone()[0]
        start = time.perf_counter()
        members = family(catalog, deep)
        plot_lineage(members, folder / "family.png")
        result["lineage_plot_s"] = time.perf_counter() - start
        result["lineage_plot_family"] = members.total

    with Catalog(path) as catalog:
        chain = catalog.conn.execute(f"SELECT descendant FROM lineage_closure WHERE ancestor = {literal(large)} "
                                     "ORDER BY depth DESC, 1 LIMIT 1").fetchone()[0]
        times = []
        for k in range(3):
            start = time.perf_counter()
            record_edges(catalog, f"hf:new/leaf{k}", [Edge(chain, "quantized", "card", 1.0)])
            times.append(time.perf_counter() - start)
        result["record_edges_new_leaf_s"] = statistics.median(times)
        moved, moved_n = catalog.conn.execute(
            "SELECT ancestor, count(*) AS k FROM lineage_closure GROUP BY 1 HAVING k BETWEEN 200 AND 2000 "
            "ORDER BY k DESC, 1 LIMIT 1").fetchone()
        start = time.perf_counter()
        update = record_edge_sets(catalog, {moved: EdgeSet.of([Edge("hf:family1/base", "finetune", "card", 1.0)])})
        result["reparent_s"] = time.perf_counter() - start
        result["reparent_subtree"], result["reparent_walked"] = moved_n, update.walked
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def fmt_s(value: float | None) -> str:
    if value is None:
        return f"> {TIMEOUT_S:g} s (interrupted)"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [("| checkpoints | lineage rows | closure rows | max / mean depth | widest fan-out | rebuild | "
              "new leaf (record_edges) | re-parent subtree | catalog | peak RSS |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['checkpoints']:,} ({r['parentless']:,} without parent) | {r['lineage_rows']:,} | "
                     f"{r['closure_rows']:,} | {r['max_depth']} / {r['mean_depth']:.1f} | {r['widest_fan_out']:,} | "
                     f"{fmt_s(r['rebuild_s'])} | {fmt_s(r['record_edges_new_leaf_s'])} | "
                     f"{fmt_s(r['reparent_s'])} ({r['reparent_subtree']:,} below) | {r['catalog_mb']:.0f} MB | "
                     f"{r['peak_rss_mb']:,.0f} MB |")
    lines += ["", ("| checkpoints | `hubindex lineage ROOT` (largest family): read | its tree as text | "
                   "`--plot` of a leaf's family (read, lay out, draw 200) |"), "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['checkpoints']:,} | {fmt_s(r['lineage_tree_large_s'])} "
                     f"({r['lineage_tree_large_edges']:,} edges) | {fmt_s(r['lineage_tree_large_text_s'])} | "
                     f"{fmt_s(r['lineage_plot_s'])} (family of {r['lineage_plot_family']:,}) |")
    lines += ["", ("| checkpoints | family | descendants | recursive CTE over base_models | "
                   "descendants() direct | descendants() via `hubindex sql` path | `hubindex sql` process |"),
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, f in r["families"].items():
            lines.append(f"| {r['checkpoints']:,} | {name} | {f['descendants']:,} | {fmt_s(f['recursive_s'])} | "
                         f"{fmt_s(f['closure_direct_s'])} | {fmt_s(f['hubindex_sql_s'])} | "
                         f"{fmt_s(f['cli_process_s'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: one size
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(run(args.checkpoints[0], Path(folder))), flush=True)
        return
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} CPUs", flush=True)
    results = []
    for n in args.checkpoints:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", "--checkpoints", str(n)], check=True,
                              capture_output=True, text=True)
        results.append(json.loads(done.stdout.splitlines()[-1]))
        print(json.dumps(results[-1]), f"({time.perf_counter() - start:.0f} s in all)", flush=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    print(markdown(results))


if __name__ == "__main__":
    main()
