"""Catalog preparation: convenience views and macros available to every query.

Lineage macros read `lineage_closure` (hubindex/lineage_closure.py), whose two single-column
indexes make each of them an index lookup:

- `ancestors(id)`, `descendants(id)`: tables of (checkpoint_id, depth), nearest first;
- `roots(id)`: the ancestors with no ancestor of their own (checkpoint_id, depth), farthest first,
  or the checkpoint itself at depth 0 when it has no ancestor;
- `root_of(id)`: the first of those (farthest, then smallest id), as a value.
"""

from __future__ import annotations

from hubindex import hookimpl


@hookimpl
def prepare_catalog(conn):  # noqa: ANN001, ANN201 - hook signature
    # TEMP objects: they live with the connection, so read-only connections get them too and
    # the catalog file itself is never changed by preparing it.
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW open_failures AS "
        "SELECT * FROM failures WHERE resolved_at IS NULL"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO hub_url(checkpoint_id) AS CASE "
        "WHEN starts_with(checkpoint_id, 'hf:') THEN 'https://huggingface.co/' || checkpoint_id[4:] "
        "WHEN starts_with(checkpoint_id, 'timm:') THEN 'https://huggingface.co/timm/' || checkpoint_id[6:] "
        "END"
    )

    # A macro is bound to its tables when it is created: a catalog from before lineage (read-only,
    # so not migrated) gets none.
    has_lineage = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'lineage_closure' "
        "AND table_schema = 'main' AND table_catalog = current_database()"
    ).fetchone()[0]
    if not has_lineage:
        return
    # The argument may be a column of the calling query (`ancestors(checkpoint_id)` per row): the
    # inner queries name nothing it could be mistaken for (DuckDB lets WHERE see SELECT aliases).
    # DuckDB scans an index only when a table's filter is on the indexed column alone: roots filters
    # on ancestor_is_root in a HAVING, which is not pushed down into the scan.
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO ancestors(id) AS TABLE "
        "SELECT up.ancestor AS checkpoint_id, up.depth FROM "
        "(SELECT l.ancestor, l.depth FROM lineage_closure l WHERE l.descendant = id) up "
        "ORDER BY up.depth, up.ancestor"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO descendants(id) AS TABLE "
        "SELECT down.descendant AS checkpoint_id, down.depth FROM "
        "(SELECT l.descendant, l.depth FROM lineage_closure l WHERE l.ancestor = id) down "
        "ORDER BY down.depth, down.descendant"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO roots(id) AS TABLE "
        "SELECT r.ancestor AS checkpoint_id, r.depth FROM ("
        "SELECT up.ancestor, up.depth FROM (SELECT l.ancestor, l.depth, l.ancestor_is_root FROM lineage_closure l "
        "WHERE l.descendant = id) up GROUP BY ALL HAVING bool_and(up.ancestor_is_root) "
        "UNION ALL SELECT id, 0 WHERE NOT EXISTS (SELECT 1 FROM lineage_closure l WHERE l.descendant = id)) r "
        "ORDER BY r.depth DESC, r.ancestor"
    )
    # The first of roots(id), by an aggregate: a scalar subquery with ORDER BY ... LIMIT 1 is planned
    # as a scan of the whole closure.
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO root_of(id) AS coalesce(("
        "SELECT min_by(r.ancestor, {'d': -r.depth, 'a': r.ancestor}) FROM ("
        "SELECT up.ancestor, up.depth FROM (SELECT l.ancestor, l.depth, l.ancestor_is_root FROM lineage_closure l "
        "WHERE l.descendant = id) up GROUP BY ALL HAVING bool_and(up.ancestor_is_root)) r), id)"
    )
