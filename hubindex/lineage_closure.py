"""The lineage closure: which checkpoints descend from which, at what depth, kept up to date in SQL.

Three tables (migration 10): `lineage` holds every edge any source stated or recovered;
`lineage_effective` holds the edges the closure is built from, one row per (child, parent), with
`in_closure` saying whether the closure uses it; `lineage_closure` holds one row per (ancestor,
descendant) with the length of the shortest path between them, and whether the ancestor is a root
(has no ancestor itself).

The effective edges of a child (effective_edges): its declared edges of the highest confidence it
has among declared ones - a card (1.0) outweighs a config's `_name_or_path` (0.6) - when it has any;
otherwise its recovered edges of confidence >= RECOVERED_MIN_CONFIDENCE. Edges to an unresolved
parent (a name that is no checkpoint id) and self-edges never count.

Cycles (on the Hub a card may name its own repo, or two repos each other): an effective edge on a
cycle - its parent reaches its child - is kept in `lineage_effective` with in_closure false and
left out of the closure, and so is every other edge of that cycle. Which edge of a cycle "closes"
it depends on the order they were seen; leaving out all of them does not, so an incremental update
and a rebuild from scratch always agree. The closure is then the transitive closure of an acyclic
graph, and its walks end.

Incremental update (update_closure), for the children whose effective parents changed (C):
S = C, plus the members of the cycles through C before and after the change; D = S and every
descendant of S in the closure. Only rows whose descendant is in D can change, so those are
deleted and walked again: upwards from D through in-closure edges, joining the stored closure
rows of the first ancestor outside D. Children whose effective parents stay the same (a recrawl,
another relation, a recovered edge under declared ones) cost no closure work at all.

Cost: the walk is |D| times the ancestors per node; around it, a handful of column scans of
`lineage`, `lineage_effective` and `lineage_closure` (semi-joins on the batch's ids), whatever D
is: under a second for a crawl batch of 200 new children at 10^6 checkpoints, about 3 s to move a
subtree of 4,000, on a busy 2-core machine (benchmarks/bench_lineage.py). Only when a changed child
may be on a cycle (it had descendants, or a child in the same batch names it) is the reach upwards
from C computed: one scan of `lineage_effective` per level.
"""

from __future__ import annotations

import duckdb

# A recovered edge (weights, kappa) enters the closure at this confidence or more, when its child
# has no declared edge: below it, a similarity is a hint, not a parent.
RECOVERED_MIN_CONFIDENCE = 0.8
# Walks stop at this depth whatever happens: real lineage is a few dozen edges deep at most, and a
# closure damaged into a cycle must not make a walk run forever (a rebuild repairs it).
MAX_DEPTH = 10_000

# Temporary tables of one update; TEMP objects live with the connection, so they also work on a
# read-only catalog (closure_drift).
CHILDREN = "_lineage_children"  # (child): children whose stored edges were replaced
BEFORE = "_lineage_before"  # (child, parent, in_closure): their effective edges before
CHANGED = "_lineage_changed"  # (child): those whose effective parents changed
AFTER = "_lineage_after"  # (child, parent): the effective edges of CHILDREN now


def effective_edges(children: str | None = None) -> str:
    """SELECT (child, parent) of the effective edges, of all children or of those in the table named."""
    only = f"AND child IN (SELECT child FROM {children})" if children else ""
    return f"""
        WITH usable AS (
            SELECT child, parent, declared, confidence FROM lineage
            WHERE parent_resolved AND parent <> child {only}
        ), best AS (
            SELECT child, max(confidence) FILTER (WHERE declared) AS declared_best FROM usable GROUP BY child
        )
        SELECT DISTINCT u.child, u.parent FROM usable u JOIN best b USING (child)
        WHERE CASE WHEN b.declared_best IS NOT NULL THEN u.declared AND u.confidence = b.declared_best
                   ELSE NOT u.declared AND u.confidence >= {RECOVERED_MIN_CONFIDENCE} END
    """


def _reach(edges: str, starts: str) -> str:
    """SELECT (start, node): every node reachable upwards from each start through `edges`, cycles included.

    UNION (not UNION ALL) drops rows already found, so a walk around a cycle ends.
    """
    return f"""
        WITH RECURSIVE reach(start, node) AS (
            SELECT e.child, e.parent FROM ({edges}) e WHERE e.child IN (SELECT node FROM ({starts}))
            UNION
            SELECT r.start, e.parent FROM reach r JOIN ({edges}) e ON e.child = r.node
        )
        SELECT start, node FROM reach
    """


def _rewalk(conn: duckdb.DuckDBPyConnection) -> None:
    """Write the closure rows of every node in _lineage_region again, by walking up in-closure edges.

    The walk goes on through nodes of the region and stops at the first node outside it (an exit),
    whose own closure rows - left in place, and right, since its ancestors did not change - give the
    rest of the way and whether those ancestors are roots. The region's edges are read once, and the
    stored closure once, for the exits.
    """
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _lineage_region_edges AS SELECT child, parent FROM lineage_effective
        WHERE in_closure AND child IN (SELECT node FROM _lineage_region)
    """)
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_walk AS
        WITH RECURSIVE walk(descendant, node, depth) AS (
            SELECT child, parent, 1 FROM _lineage_region_edges
            UNION
            SELECT w.descendant, e.parent, w.depth + 1 FROM walk w
            JOIN _lineage_region_edges e ON e.child = w.node WHERE w.depth < {MAX_DEPTH}
        )
        SELECT * FROM walk
    """)
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _lineage_exits AS SELECT c.* FROM lineage_closure c
        WHERE c.descendant IN (SELECT node FROM _lineage_walk WHERE node NOT IN (SELECT node FROM _lineage_region))
    """)
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE _lineage_rows AS
        SELECT ancestor, descendant, min(depth)::INTEGER AS depth, bool_and(is_root) AS ancestor_is_root FROM (
            SELECT w.node AS ancestor, w.descendant, w.depth,
                   CASE WHEN w.node IN (SELECT node FROM _lineage_region)
                        THEN w.node NOT IN (SELECT child FROM _lineage_region_edges)
                        ELSE w.node NOT IN (SELECT descendant FROM _lineage_exits) END AS is_root
            FROM _lineage_walk w
            UNION ALL
            SELECT x.ancestor, w.descendant, w.depth + x.depth, x.ancestor_is_root
            FROM _lineage_walk w JOIN _lineage_exits x ON x.descendant = w.node
        ) GROUP BY ancestor, descendant
    """)
    write_rows(conn, "lineage_closure", ("ancestor", "descendant"), ("depth", "ancestor_is_root"), "_lineage_rows",
           "descendant IN (SELECT node FROM _lineage_region)")


def write_rows(conn: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...], values: tuple[str, ...],
           rows: str, scope: str = "true") -> None:
    """Make the rows of `table` matching `scope` those of the table `rows`, writing only what differs.

    Most rows of a moved subtree (or of a repair) stay as they are, and a row deleted and inserted
    again costs DuckDB's indexes dearly at commit; the value columns are not indexed, so they are
    updated in place.
    """
    keys, columns = ", ".join(key), ", ".join((*key, *values))
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_stored AS SELECT {columns} FROM {table} WHERE {scope}")
    conn.execute(f"""
        DELETE FROM {table} WHERE ({keys}) IN (
            SELECT {keys} FROM _lineage_stored EXCEPT SELECT {keys} FROM {rows})
    """)
    matches = " AND ".join(f"t.{k} = r.{k}" for k in key)
    conn.execute(f"""
        UPDATE {table} t SET {", ".join(f"{v} = r.{v}" for v in values)}
        FROM (SELECT {columns} FROM {rows} EXCEPT SELECT {columns} FROM _lineage_stored) r WHERE {matches}
    """)
    conn.execute(f"""
        INSERT INTO {table} ({columns}) SELECT {columns} FROM {rows}
        WHERE ({keys}) IN (SELECT {keys} FROM {rows} EXCEPT SELECT {keys} FROM _lineage_stored)
    """)


def refresh_effective(conn: duckdb.DuckDBPyConnection) -> None:
    """Replace the effective edges of the children in CHILDREN, keeping in_closure where an edge stays.

    Then CHANGED holds the children whose effective parents are no longer the ones in BEFORE, and
    AFTER their effective edges now.
    """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {AFTER} AS {effective_edges(CHILDREN)}")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_after_rows AS
        SELECT a.child, a.parent, b.in_closure FROM {AFTER} a LEFT JOIN {BEFORE} b USING (child, parent)
    """)
    write_rows(conn, "lineage_effective", ("child", "parent"), ("in_closure",), "_lineage_after_rows",
               f"child IN (SELECT child FROM {CHILDREN})")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE {CHANGED} AS
        SELECT DISTINCT child FROM (
            (SELECT child, parent FROM {BEFORE} EXCEPT SELECT child, parent FROM {AFTER})
            UNION ALL
            (SELECT child, parent FROM {AFTER} EXCEPT SELECT child, parent FROM {BEFORE})
        )
    """)


def update_closure(conn: duckdb.DuckDBPyConnection) -> int:
    """Bring the closure up to date after the children in CHANGED changed their effective parents.

    BEFORE must hold their effective edges from before (with in_closure), AFTER their edges now.
    Returns how many nodes' ancestor rows were walked again (|D|).
    """
    changed = f"SELECT child AS node FROM {CHANGED}"
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_below AS SELECT ancestor, descendant FROM lineage_closure
        WHERE ancestor IN (SELECT child FROM {CHANGED})
    """)
    # A new cycle must enter a changed child c: from a changed child (a new edge), from one of its
    # descendants (an in-closure edge), or along an edge already on a cycle - then c was on one before.
    maybe_cycle = conn.execute(f"""
        SELECT (SELECT count(*) FROM {BEFORE} WHERE child IN (SELECT child FROM {CHANGED}) AND NOT in_closure)
             + (SELECT count(*) FROM {AFTER} WHERE child IN (SELECT child FROM {CHANGED})
                AND parent IN (SELECT child FROM {CHANGED}))
             + (SELECT count(*) FROM _lineage_below)
    """).fetchone()[0]
    new_graph = "SELECT child, parent FROM lineage_effective"
    cycle = False
    if maybe_cycle:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_reach_new AS {_reach(new_graph, changed)}")
        cycle = conn.execute(f"""
            SELECT (SELECT count(*) FROM {BEFORE} WHERE child IN (SELECT child FROM {CHANGED}) AND NOT in_closure)
                 + (SELECT count(*) FROM _lineage_reach_new WHERE start = node)
        """).fetchone()[0] > 0
    if not cycle:
        # The common case: no cycle through C before or after, so S = C and all of its edges count.
        conn.execute(f"UPDATE lineage_effective SET in_closure = true WHERE child IN (SELECT child FROM {CHANGED})")
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE _lineage_region AS
            {changed} UNION SELECT descendant FROM _lineage_below
        """)
    else:
        _cycle_members(conn, changed, new_graph)
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE _lineage_region AS
            SELECT node FROM _lineage_s
            UNION SELECT descendant FROM lineage_closure WHERE ancestor IN (SELECT node FROM _lineage_s)
        """)
    _rewalk(conn)
    return conn.execute("SELECT count(*) FROM _lineage_region").fetchone()[0]


def _cycle_members(conn: duckdb.DuckDBPyConnection, changed: str, new_graph: str) -> None:
    """S (into _lineage_s) when a cycle runs through a changed child, and the in_closure of S's edges.

    A cycle through c is c's ancestors that are also its descendants. Ancestors are few (lineage is
    shallow), so reach is computed among C and its ancestors before and after the change: a node's
    ancestors lie among the ancestors of any of its descendants.
    """
    old_graph = f"""
        SELECT child, parent FROM lineage_effective WHERE child NOT IN (SELECT child FROM {CHANGED})
        UNION ALL SELECT child, parent FROM {BEFORE} WHERE child IN (SELECT child FROM {CHANGED})
    """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_reach_old AS {_reach(old_graph, changed)}")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_z AS
        {changed} UNION SELECT node FROM _lineage_reach_old UNION SELECT node FROM _lineage_reach_new
    """)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_reach_old AS {_reach(old_graph, 'SELECT node FROM _lineage_z')}")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_reach_new AS {_reach(new_graph, 'SELECT node FROM _lineage_z')}")
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_s AS
        {changed}
        UNION SELECT a.node FROM _lineage_reach_old a JOIN _lineage_reach_old b ON a.node = b.start AND b.node = a.start
        WHERE a.start IN (SELECT child FROM {CHANGED})
        UNION SELECT a.node FROM _lineage_reach_new a JOIN _lineage_reach_new b ON a.node = b.start AND b.node = a.start
        WHERE a.start IN (SELECT child FROM {CHANGED})
    """)
    # An edge s -> q is on a cycle when q reaches s; every parent of a node of S is in _lineage_z.
    conn.execute("""
        UPDATE lineage_effective e SET in_closure = NOT EXISTS (
            SELECT 1 FROM _lineage_reach_new r WHERE r.start = e.parent AND r.node = e.child)
        WHERE e.child IN (SELECT node FROM _lineage_s)
    """)


def compute_rebuild(conn: duckdb.DuckDBPyConnection) -> None:
    """The effective edges and the closure from scratch, into _lineage_rebuilt_effective / _closure.

    Cycles are found in the graph's core: nodes with no parent or no child cannot be on a cycle, so
    they are peeled off until none is left (as many rounds as the lineage is deep), and reach is
    computed among what remains - usually nothing.
    """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _lineage_rebuilt_effective AS SELECT child, parent, true AS in_closure "
                 f"FROM ({effective_edges()})")
    conn.execute("CREATE OR REPLACE TEMP TABLE _lineage_core AS SELECT child, parent FROM _lineage_rebuilt_effective")
    while True:
        peeled = conn.execute("""
            DELETE FROM _lineage_core WHERE child NOT IN (SELECT parent FROM _lineage_core)
            OR parent NOT IN (SELECT child FROM _lineage_core)
        """).fetchone()[0]
        if not peeled:
            break
    core = "SELECT child, parent FROM _lineage_core"
    conn.execute(f"""
        UPDATE _lineage_rebuilt_effective e SET in_closure = false
        FROM ({_reach(core, 'SELECT child AS node FROM _lineage_core')}) r
        WHERE r.start = e.parent AND r.node = e.child
    """)
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE _lineage_rebuilt_closure AS
        WITH RECURSIVE walk(descendant, node, depth) AS (
            SELECT child, parent, 1 FROM _lineage_rebuilt_effective WHERE in_closure
            UNION
            SELECT w.descendant, e.parent, w.depth + 1 FROM walk w
            JOIN _lineage_rebuilt_effective e ON e.child = w.node AND e.in_closure
            WHERE w.depth < {MAX_DEPTH}
        )
        SELECT node AS ancestor, descendant, min(depth)::INTEGER AS depth,
               node NOT IN (SELECT child FROM _lineage_rebuilt_effective WHERE in_closure) AS ancestor_is_root
        FROM walk GROUP BY ALL
    """)


def rebuild(conn: duckdb.DuckDBPyConnection) -> int:
    """Replace the effective edges and the closure with ones computed from `lineage` alone; returns closure rows."""
    compute_rebuild(conn)
    write_rows(conn, "lineage_effective", ("child", "parent"), ("in_closure",), "_lineage_rebuilt_effective")
    write_rows(conn, "lineage_closure", ("ancestor", "descendant"), ("depth", "ancestor_is_root"), "_lineage_rebuilt_closure")
    return conn.execute("SELECT count(*) FROM lineage_closure").fetchone()[0]


def drift(conn: duckdb.DuckDBPyConnection) -> int:
    """How many rows of lineage_effective and lineage_closure differ from a rebuild (0: consistent)."""
    compute_rebuild(conn)
    return conn.execute("""
        SELECT (SELECT count(*) FROM (
                    (SELECT * FROM lineage_effective EXCEPT SELECT * FROM _lineage_rebuilt_effective)
                    UNION ALL (SELECT * FROM _lineage_rebuilt_effective EXCEPT SELECT * FROM lineage_effective)))
             + (SELECT count(*) FROM (
                    (SELECT * FROM lineage_closure EXCEPT SELECT * FROM _lineage_rebuilt_closure)
                    UNION ALL (SELECT * FROM _lineage_rebuilt_closure EXCEPT SELECT * FROM lineage_closure)))
    """).fetchone()[0]
