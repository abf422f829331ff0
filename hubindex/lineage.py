"""Checkpoint lineage: typed parent edges with their evidence, and queries over their closure.

An Edge says that a checkpoint (the child) was made from another (the parent): how (`relation`),
on what evidence (`evidence`), and how sure that is (`confidence`). Declared edges are what a
checkpoint's own files state (its card, adapter config, config, timm tag, zoo manifest); recovered
edges (weights, kappa) are inferred for checkpoints that state nothing. Sources write edges with
record_edges / record_edge_sets: a child's edges of the evidence kinds given replace the stored ones
of those kinds, and the closure (hubindex.lineage_closure) follows in the same transaction.

Parents are checkpoint ids (`hf:org/name`, `timm:arch.tag`) when the name written resolves to one -
the checkpoint need not be in the catalog yet - and otherwise the name as written, with
parent_resolved false (a local path in an adapter config): still queryable, never in the closure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import duckdb

import hubindex.lineage_closure as lineage_closure  # noqa: PLR0402 - `from hubindex import` counts as importing the package (tests/test_layout.py)
from hubindex.lineage_closure import RECOVERED_MIN_CONFIDENCE

RELATIONS = ("finetune", "adapter", "quantized", "merge", "distillation", "unknown")
# What a checkpoint's own files state: card base_model, adapter_config.json, config.json
# _name_or_path, the timm pretrained tag, a zoo manifest (hubindex_lineage.json).
DECLARED_EVIDENCE = ("card", "adapter-config", "config", "timm-tag", "manifest")
# What other components infer for checkpoints that state nothing: identical or near weights, kappa.
RECOVERED_EVIDENCE = ("weights", "kappa")
EVIDENCE = DECLARED_EVIDENCE + RECOVERED_EVIDENCE
# Confidence of declared edges. A config's `_name_or_path` is written by transformers itself, not
# by the author: often the base model, but also the repo's own name, an intermediate local
# checkpoint or whatever the training script loaded first - so it counts only when nothing better
# is stated.
DECLARED_CONFIDENCE = {"card": 1.0, "adapter-config": 1.0, "timm-tag": 1.0, "manifest": 1.0, "config": 0.6}
MAX_DETAIL = 300

__all__ = [
    "DECLARED_CONFIDENCE", "DECLARED_EVIDENCE", "EVIDENCE", "RECOVERED_EVIDENCE", "RECOVERED_MIN_CONFIDENCE",
    "RELATIONS", "ClosureUpdate", "Edge", "EdgeSet", "Relative", "StoredEdge", "ancestors", "closure_drift",
    "cycle_edges", "descendants", "edges", "rebuild_closure", "record_edge_sets", "record_edges", "root", "roots",
]


class CatalogLike(Protocol):
    """What lineage needs of a catalog (hubindex.catalog.Catalog): its connection and transactions."""

    conn: duckdb.DuckDBPyConnection

    def transaction(self) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class Edge:
    """One parent of a child, as one kind of evidence says it."""

    parent: str  # a checkpoint id, or the name as written when parent_resolved is false
    relation: str  # one of RELATIONS
    evidence: str  # one of EVIDENCE
    confidence: float  # 0..1; declared evidence uses DECLARED_CONFIDENCE
    parent_resolved: bool = True
    detail: str | None = None  # what exactly said so, e.g. "card base_model_relation: adapter"

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"unknown lineage relation {self.relation!r}; expected one of {RELATIONS}")
        if self.evidence not in EVIDENCE:
            raise ValueError(f"unknown lineage evidence {self.evidence!r}; expected one of {EVIDENCE}")
        if not isinstance(self.parent, str) or not self.parent:
            raise ValueError("a lineage edge needs a parent")
        if not (isinstance(self.confidence, (int, float)) and math.isfinite(self.confidence)
                and 0.0 <= self.confidence <= 1.0):
            raise ValueError(f"lineage confidence must be a number from 0 to 1, got {self.confidence!r}")

    @property
    def declared(self) -> bool:
        """Whether the checkpoint's own files state this edge (else it was recovered)."""
        return self.evidence in DECLARED_EVIDENCE


@dataclass(frozen=True)
class EdgeSet:
    """A child's edges of some evidence kinds, as one source saw them now.

    They replace the child's stored edges of those kinds (an empty set of edges deletes them). Kinds
    in fill_only are only filled in: where the child already has edges of the kind, they stay - as
    the columns a crawler does not own only fill gaps.
    """

    evidence: frozenset[str]
    edges: tuple[Edge, ...] = ()
    fill_only: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.evidence) - set(EVIDENCE)
        if unknown:
            raise ValueError(f"unknown lineage evidence {sorted(unknown)}; expected some of {EVIDENCE}")
        stray = {e.evidence for e in self.edges} - set(self.evidence)
        if stray:
            raise ValueError(f"edges of evidence {sorted(stray)} are not among the kinds replaced {sorted(self.evidence)}")

    @classmethod
    def of(cls, edges: Iterable[Edge], evidence: Iterable[str] | None = None, fill_only: Iterable[str] = ()) -> EdgeSet:
        """The set of these edges, for the kinds given (default: the kinds the edges have)."""
        edges = tuple(edges)
        kinds = frozenset(evidence) if evidence is not None else frozenset(e.evidence for e in edges)
        return cls(kinds, edges, frozenset(fill_only) & kinds)


@dataclass(frozen=True)
class StoredEdge:
    """A row of the `lineage` table."""

    child: str
    parent: str
    relation: str
    evidence: str
    confidence: float
    declared: bool
    parent_resolved: bool
    detail: str | None
    seen_at: datetime
    in_closure: bool | None  # None: not an effective edge; False: effective but on a cycle


@dataclass(frozen=True)
class Relative:
    """An ancestor or descendant of a checkpoint, `depth` edges away along the shortest path."""

    checkpoint_id: str
    depth: int


@dataclass(frozen=True)
class ClosureUpdate:
    """What record_edge_sets did: children whose effective parents changed, and nodes walked again."""

    children: int
    changed: int
    walked: int


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ------------------------------------------------------------------------------------ writing


def record_edges(catalog: CatalogLike, child: str, edges: Iterable[Edge],
                 evidence: Iterable[str] | None = None) -> ClosureUpdate:
    """Replace the child's edges of the evidence kinds given (default: those of `edges`) and update the closure."""
    return record_edge_sets(catalog, {child: EdgeSet.of(edges, evidence)})


def record_edge_sets(catalog: CatalogLike, sets: Mapping[str, EdgeSet], now: datetime | None = None) -> ClosureUpdate:
    """Store many children's edge sets and update the closure for all of them, in one transaction.

    Runs inside the caller's transaction when there is one (a crawl batch, with its checkpoint rows),
    so a crash leaves the edges and the closure as they were, or both updated.
    """
    if not sets:
        return ClosureUpdate(0, 0, 0)
    now = now or _utcnow()
    kinds, rows = [], []
    for child, edge_set in sets.items():
        if not isinstance(child, str) or not child:
            raise ValueError(f"a lineage child must be a checkpoint id, got {child!r}")
        kinds += [(child, kind, kind not in edge_set.fill_only) for kind in sorted(edge_set.evidence)]
        seen: set[tuple[str, str]] = set()
        for edge in edge_set.edges:
            if (edge.parent, edge.evidence) in seen:
                continue  # the first statement of a parent wins (a list naming it twice)
            seen.add((edge.parent, edge.evidence))
            detail = edge.detail[:MAX_DETAIL] if edge.detail else None
            rows.append((child, edge.parent, edge.parent_resolved, edge.relation, edge.evidence,
                         float(edge.confidence), edge.declared, detail))
    if not kinds:
        return ClosureUpdate(0, 0, 0)
    conn = catalog.conn
    with catalog.transaction():
        # Rows go in as one list per column: one statement, whatever the batch's size.
        conn.execute("CREATE OR REPLACE TEMP TABLE _lineage_kinds AS "
                     "SELECT unnest(?::VARCHAR[]) AS child, unnest(?::VARCHAR[]) AS evidence, "
                     "unnest(?::BOOLEAN[]) AS replace", [list(column) for column in zip(*kinds)])
        conn.execute("""
            DELETE FROM _lineage_kinds k WHERE NOT k.replace
            AND EXISTS (SELECT 1 FROM lineage l WHERE l.child = k.child AND l.evidence = k.evidence)
        """)
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE _lineage_staged (child VARCHAR, parent VARCHAR, parent_resolved BOOLEAN,
                relation VARCHAR, evidence VARCHAR, confidence DOUBLE, declared BOOLEAN, detail VARCHAR)
        """)
        if rows:
            conn.execute("""
                INSERT INTO _lineage_staged SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]),
                    unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), unnest(?::BOOLEAN[]),
                    unnest(?::VARCHAR[])
            """, [list(column) for column in zip(*rows)])
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {lineage_closure.CHILDREN} AS SELECT DISTINCT child FROM _lineage_kinds")
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE {lineage_closure.BEFORE} AS SELECT child, parent, in_closure
            FROM lineage_effective WHERE child IN (SELECT child FROM {lineage_closure.CHILDREN})
        """)
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE _lineage_incoming AS SELECT s.*, ?::TIMESTAMP AS seen_at FROM _lineage_staged s
            WHERE EXISTS (SELECT 1 FROM _lineage_kinds k WHERE k.child = s.child AND k.evidence = s.evidence)
        """, [now])
        lineage_closure.write_rows(
            conn, "lineage", ("child", "parent", "evidence"),
            ("parent_resolved", "relation", "confidence", "declared", "detail", "seen_at"), "_lineage_incoming",
            "(child, evidence) IN (SELECT child, evidence FROM _lineage_kinds)")
        lineage_closure.refresh_effective(conn)
        changed = conn.execute(f"SELECT count(*) FROM {lineage_closure.CHANGED}").fetchone()[0]
        walked = lineage_closure.update_closure(conn) if changed else 0
        children = conn.execute(f"SELECT count(*) FROM {lineage_closure.CHILDREN}").fetchone()[0]
    return ClosureUpdate(children, changed, walked)


def rebuild_closure(catalog: CatalogLike) -> int:
    """Recompute the effective edges and the closure from the `lineage` table alone (a repair); returns closure rows."""
    with catalog.transaction():
        return lineage_closure.rebuild(catalog.conn)


def closure_drift(catalog: CatalogLike) -> int:
    """Rows of lineage_effective and lineage_closure that a rebuild would change (0: consistent); works read-only."""
    return lineage_closure.drift(catalog.conn)


# ------------------------------------------------------------------------------------ reading


def _literal(text: str) -> str:
    """A string as a SQL literal. DuckDB scans an index only for a filter on a constant, which a
    prepared statement's parameter is not: the id goes into the statement itself."""
    if not isinstance(text, str):
        raise TypeError(f"a checkpoint id must be a string, got {type(text).__name__}")
    return "'" + text.replace("'", "''") + "'"


def _relatives(catalog: CatalogLike, sql: str, depth: int | None) -> list[Relative]:
    rows = catalog.conn.execute(sql, [depth if depth is not None else 2**31 - 1]).fetchall()
    return [Relative(cid, d) for cid, d in rows]


def ancestors(catalog: CatalogLike, checkpoint_id: str, depth: int | None = None) -> list[Relative]:
    """The checkpoint's ancestors within `depth` edges (all by default), nearest first."""
    return _relatives(catalog, f"SELECT ancestor, depth FROM lineage_closure WHERE descendant = {_literal(checkpoint_id)} "
                               "AND depth <= ? ORDER BY depth, ancestor", depth)


def descendants(catalog: CatalogLike, checkpoint_id: str, depth: int | None = None) -> list[Relative]:
    """The checkpoint's descendants within `depth` edges (all by default), nearest first."""
    return _relatives(catalog, f"SELECT descendant, depth FROM lineage_closure WHERE ancestor = {_literal(checkpoint_id)} "
                               "AND depth <= ? ORDER BY depth, descendant", depth)


def roots(catalog: CatalogLike, checkpoint_id: str) -> list[Relative]:
    """The ancestors with no ancestor of their own (several for a merge), farthest first; [itself at 0] when it has none."""
    # DuckDB scans the index only when a table's filter is on the indexed column alone: a HAVING is
    # not pushed down into the scan, a WHERE would be.
    rows = catalog.conn.execute(
        f"SELECT ancestor, depth FROM lineage_closure WHERE descendant = {_literal(checkpoint_id)} "
        "GROUP BY ALL HAVING bool_and(ancestor_is_root) ORDER BY depth DESC, ancestor").fetchall()
    return [Relative(cid, d) for cid, d in rows] or [Relative(checkpoint_id, 0)]


def root(catalog: CatalogLike, checkpoint_id: str) -> str:
    """The checkpoint's root: its farthest ancestor without ancestors (ties: the smallest id), itself if it has none."""
    return roots(catalog, checkpoint_id)[0].checkpoint_id


def edges(catalog: CatalogLike, child: str | None = None, parent: str | None = None) -> list[StoredEdge]:
    """Stored edges of a child, or to a parent (or both given: between them), by child, parent and evidence."""
    conditions, params = [], []
    for column, value in (("child", child), ("parent", parent)):
        if value is not None:
            conditions.append(f"l.{column} = ?")
            params.append(value)
    where = " AND ".join(conditions) or "true"
    rows = catalog.conn.execute(f"""
        SELECT l.child, l.parent, l.relation, l.evidence, l.confidence, l.declared, l.parent_resolved, l.detail,
               l.seen_at, e.in_closure
        FROM lineage l LEFT JOIN lineage_effective e USING (child, parent)
        WHERE {where} ORDER BY l.child, l.parent, l.evidence
    """, params).fetchall()
    return [StoredEdge(*row) for row in rows]


def cycle_edges(catalog: CatalogLike) -> list[tuple[str, str]]:
    """(child, parent) of the effective edges left out of the closure because they lie on a cycle."""
    return [tuple(row) for row in catalog.conn.execute(
        "SELECT child, parent FROM lineage_effective WHERE NOT in_closure ORDER BY child, parent").fetchall()]

