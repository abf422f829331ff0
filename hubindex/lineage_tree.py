"""One checkpoint's lineage read for people: its ancestors and descendants as a tree, and its family.

Read-only, from the tables hubindex.lineage keeps. A line of the tree is one (child, parent) pair,
shown with the evidence that counts most for it (PairEdge.primary) and its status:

- `closure`: an effective edge the closure uses - the tree goes on through it;
- `cycle`: an effective edge left out of the closure because it lies on a cycle - shown, not followed;
- `unresolved`: the parent is a name that is no checkpoint id (a local path) - shown, never followed;
- `not used`: a stated edge that another outweighs (a card over a config's `_name_or_path`, declared
  over recovered) or a recovered one below RECOVERED_MIN_CONFIDENCE, or a self-reference.

Ancestors show every edge stored for the checkpoint and each of its ancestors, used or not;
descendants show the effective edges (those the closure and the `descendants()` macro count). The
nodes followed are the closure's, so a tree and `ancestors()`/`descendants()` always agree. A node
reached along several paths (a merge) is expanded once, on its shortest path, and marked elsewhere.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

from hubindex.errors import UsageError
from hubindex.lineage import RECOVERED_MIN_CONFIDENCE, CatalogLike

STATUSES = ("closure", "cycle", "unresolved", "not used")
TREE_COLUMNS = ["checkpoint_id", "parent", "relation", "evidence", "confidence", "declared", "depth", "direction",
                "status", "other_evidence"]
# Checkpoints drawn in a family plot at most: nearest to the checkpoint first.
PLOT_NODES = 200


@dataclass(frozen=True)
class Evidence:
    """One stored `lineage` row of a pair: what one kind of evidence says."""

    relation: str
    evidence: str
    confidence: float
    declared: bool


@dataclass(frozen=True)
class PairEdge:
    """The stored edges between one child and one parent, with what the closure makes of them."""

    child: str
    parent: str
    stated: tuple[Evidence, ...]  # strongest first: declared before recovered, then by confidence
    parent_resolved: bool
    status: str  # one of STATUSES
    note: str | None = None  # why an edge is not used

    @property
    def primary(self) -> Evidence:
        return self.stated[0]

    def label(self) -> str:
        p = self.primary
        return evidence_label(p.relation, p.evidence, p.confidence, p.declared, [e.evidence for e in self.stated[1:]])

    def record(self, node: str, in_catalog: bool) -> dict[str, Any]:
        """The pair as JSON data, about `node` (its parent or its child)."""
        p = self.primary
        return {"checkpoint_id": node, "relation": p.relation, "evidence": p.evidence, "confidence": p.confidence,
                "declared": p.declared, "status": self.status, "note": self.note,
                "other_evidence": [e.evidence for e in self.stated[1:]], "in_catalog": in_catalog}


def evidence_label(relation: str, evidence: str, confidence: float, declared: bool, others: Iterable[str] = ()) -> str:
    """`finetune (card)`, `finetune (config, 0.6)`, `finetune (recovered: weights, 0.82)`; more evidence after +."""
    what = evidence if declared else f"recovered: {evidence}"
    if confidence < 1.0 or not declared:
        what += f", {confidence:.2g}"
    return f"{relation} ({what}{''.join(f' +{e}' for e in others)})"


def status_note(status: str, note: str | None) -> str:
    """What a tree or a card says after an edge that the closure does not follow ('' for one it does)."""
    if status == "cycle":
        return "on a cycle: left out of the closure, not followed"
    if status == "unresolved":
        return "unresolved: a name that is no checkpoint id"
    if status == "not used":
        return f"not used: {note}" if note else "not used"
    return ""


def sql_literal(text: str) -> str:
    """A checkpoint id as a SQL literal: DuckDB scans the closure's indexes only for a filter on a
    constant, which a prepared statement's parameter is not (as in hubindex.lineage)."""
    return "'" + str(text).replace("'", "''") + "'"


def _strength(e: Evidence) -> tuple[bool, float, str]:
    return (not e.declared, -e.confidence, e.evidence)


def _pairs(rows: Iterable[tuple[Any, ...]]) -> list[PairEdge]:
    """Pair edges of rows (child, parent, relation, evidence, confidence, declared, parent_resolved, in_closure)."""
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[(row[0], row[1])].append(row)
    # What a child's best declared edge says, for explaining the edges it outweighs.
    declared_best: dict[str, tuple[float, str]] = {}
    for (child, parent), group in grouped.items():
        for row in group:
            if row[5] and row[6] and parent != child and row[4] > declared_best.get(child, (-1.0, ""))[0]:
                declared_best[child] = (row[4], row[3])
    pairs = []
    for (child, parent), group in grouped.items():
        stated = tuple(sorted((Evidence(r[2], r[3], float(r[4]), bool(r[5])) for r in group), key=_strength))
        resolved, in_closure = bool(group[0][6]), group[0][7]
        note = None
        if in_closure is True:
            status = "closure"
        elif in_closure is False:
            status = "cycle"
        elif not resolved:
            status = "unresolved"
        else:
            status, best = "not used", declared_best.get(child)
            if parent == child:
                note = "names itself"
            elif best is not None and stated[0].declared:
                note = f"outweighed by its {best[1]} ({best[0]:.2g})"
            elif best is not None:
                note = f"declared edges win (its {best[1]})"
            elif stated[0].confidence < RECOVERED_MIN_CONFIDENCE:
                note = f"below {RECOVERED_MIN_CONFIDENCE:g}"
        pairs.append(PairEdge(child, parent, stated, resolved, status, note))
    return sorted(pairs, key=lambda p: (p.child, p.parent))


_EDGE_COLUMNS = ("l.child, l.parent, l.relation, l.evidence, l.confidence, l.declared, l.parent_resolved, "
                 "e.in_closure")


def has_lineage(catalog: CatalogLike) -> bool:
    """Whether the catalog has the lineage tables (a read-only catalog from before them is not migrated)."""
    return bool(catalog.conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'lineage_closure' "
        "AND table_schema = 'main' AND table_catalog = current_database()").fetchone()[0])


def parent_pairs(catalog: CatalogLike, children: str) -> list[PairEdge]:
    """Every stored edge of the children the SQL `children` (one column) selects, used or not."""
    return _pairs(catalog.conn.execute(f"""
        SELECT {_EDGE_COLUMNS} FROM lineage l LEFT JOIN lineage_effective e USING (child, parent)
        WHERE l.child IN ({children})""").fetchall())


def child_pairs(catalog: CatalogLike, parents: str) -> list[PairEdge]:
    """The effective edges (closure and cycle) whose parent the SQL `parents` (one column) selects."""
    return _pairs(catalog.conn.execute(f"""
        SELECT {_EDGE_COLUMNS} FROM lineage_effective e JOIN lineage l USING (child, parent)
        WHERE e.parent IN ({parents})""").fetchall())


def lineage_name(catalog: CatalogLike, name: str) -> str | None:
    """`name` (or hf:`name`) when the lineage table knows it as a child or a parent, else None."""
    for candidate in (name, f"hf:{name}"):
        known = catalog.conn.execute(
            f"SELECT (SELECT count(*) FROM (SELECT 1 FROM lineage WHERE child = {sql_literal(candidate)} LIMIT 1)) "
            f"+ (SELECT count(*) FROM (SELECT 1 FROM lineage WHERE parent = {sql_literal(candidate)} LIMIT 1))"
        ).fetchone()[0]
        if known:
            return candidate
    return None


# ------------------------------------------------------------------------------------ the tree


@dataclass
class Branch:
    """A node of the printed tree: a checkpoint (or an unresolved name) and the edge that leads to it."""

    node: str
    edge: PairEdge | None  # None for the checkpoint itself
    depth: int
    children: list[Branch] = field(default_factory=list)
    expanded_under: str | None = None  # set when its own branches are shown under another node


@dataclass
class LineageTree:
    """A checkpoint's ancestors (`up`) and descendants (`down`), with counts from the closure."""

    checkpoint_id: str
    up: Branch | None
    down: Branch | None
    roots: list[str]
    ancestors_total: int
    descendants_total: int
    depth: int | None
    in_catalog: set[str]

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """One row per line of the tree (TREE_COLUMNS): the checkpoint itself, then each edge."""
        yield (self.checkpoint_id, None, None, None, None, None, 0, "self", None, [])
        for direction, branch in (("up", self.up), ("down", self.down)):
            for b in _walk(branch):
                if b.edge is not None:
                    e, p = b.edge, b.edge.primary
                    yield (e.child, e.parent, p.relation, p.evidence, p.confidence, p.declared, b.depth, direction,
                           e.status, [s.evidence for s in e.stated[1:]])

    def edge_count(self) -> int:
        return sum(1 for branch in (self.up, self.down) for b in _walk(branch) if b.edge is not None)


def _walk(branch: Branch | None) -> Iterator[Branch]:
    stack = [branch] if branch is not None else []
    while stack:
        b = stack.pop()
        yield b
        stack.extend(reversed(b.children))


def _grow(start: str, pairs: list[PairEdge], up: bool, depth: int | None) -> Branch:
    """The tree from `start` through the pairs (parents of each child when `up`, else children of each
    parent): every pair is a line; only closure edges are followed, each node on its shortest path."""
    out: dict[str, list[PairEdge]] = defaultdict(list)
    for pair in pairs:
        out[pair.child if up else pair.parent].append(pair)
    for edges in out.values():
        edges.sort(key=lambda p: (STATUSES.index(p.status), p.parent if up else p.child))
    limit = depth if depth is not None else 2**31 - 1
    home: dict[str, str] = {start: ""}  # node -> the node it is expanded under (breadth first: nearest)
    queue = deque([(start, 0)])
    while queue:
        node, d = queue.popleft()
        if d >= limit:
            continue
        for pair in out.get(node, []):
            other = pair.parent if up else pair.child
            if pair.status == "closure" and other not in home:
                home[other] = node
                queue.append((other, d + 1))
    root = Branch(start, None, 0)
    stack = [root]
    while stack:
        branch = stack.pop()
        if branch.depth >= limit:
            continue
        for pair in out.get(branch.node, []):
            other = pair.parent if up else pair.child
            child = Branch(other, pair, branch.depth + 1)
            branch.children.append(child)
            if pair.status == "closure":
                if home.get(other) == branch.node:
                    stack.append(child)
                elif out.get(other):
                    child.expanded_under = home.get(other)
    return root


def lineage_tree(catalog: CatalogLike, checkpoint_id: str, up: bool = True, down: bool = True,
                 depth: int | None = None) -> LineageTree:
    """The tree of a checkpoint known to the catalog or its lineage, `depth` edges each way at most (all by default)."""
    if depth is not None and depth < 1:
        raise UsageError(f"--depth must be at least 1 (got {depth})")
    me = sql_literal(checkpoint_id)
    within = f"AND depth < {depth}" if depth is not None else ""
    up_tree = down_tree = None
    if up:
        pairs = parent_pairs(catalog, f"SELECT ancestor FROM lineage_closure WHERE descendant = {me} {within} "
                                      f"UNION ALL SELECT {me}")
        up_tree = _grow(checkpoint_id, pairs, True, depth)
    if down:
        pairs = child_pairs(catalog, f"SELECT descendant FROM lineage_closure WHERE ancestor = {me} {within} "
                                     f"UNION ALL SELECT {me}")
        down_tree = _grow(checkpoint_id, pairs, False, depth)
    (ancestors_total, descendants_total) = catalog.conn.execute(
        f"SELECT (SELECT count(*) FROM lineage_closure WHERE descendant = {me}), "
        f"(SELECT count(*) FROM lineage_closure WHERE ancestor = {me})").fetchone()
    roots = [cid for (cid,) in catalog.conn.execute(
        f"SELECT ancestor FROM lineage_closure WHERE descendant = {me} AND ancestor_is_root "
        "ORDER BY depth DESC, ancestor").fetchall()]
    nodes = {b.node for tree in (up_tree, down_tree) for b in _walk(tree)}
    return LineageTree(checkpoint_id, up_tree, down_tree, roots, ancestors_total, descendants_total, depth,
                       _in_catalog(catalog.conn, nodes))


def _in_catalog(conn: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> set[str]:
    ids = sorted(ids)
    if not ids:
        return set()
    return {cid for (cid,) in conn.execute(
        "SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}


# ------------------------------------------------------------------------------------ as text

UNICODE_MARKS = {"tee": "├─ ", "last": "└─ ", "pipe": "│  ", "gap": "   ", "cycle": "↺", "see": "↪"}
ASCII_MARKS = {"tee": "|- ", "last": "`- ", "pipe": "|  ", "gap": "   ", "cycle": "(cycle)", "see": "->"}


def _describe(branch: Branch, tree: LineageTree, marks: dict[str, str]) -> str:
    edge = branch.edge
    assert edge is not None
    text = f"{branch.node}  {edge.label()}"
    if edge.status == "cycle":
        text += f"  {marks['cycle']} {status_note(edge.status, edge.note)}"
    elif edge.status != "closure":
        text += f"  {status_note(edge.status, edge.note)}"
    elif branch.node not in tree.in_catalog:
        text += "  (not in the catalog)"
    if branch.expanded_under:
        text += f"  {marks['see']} its lineage is shown under {branch.expanded_under}"
    return text


def tree_lines(tree: LineageTree, ascii_only: bool = False) -> list[str]:
    """The tree as text: a heading, then the ancestors (each line a parent of the line above it) and the
    descendants (each line a child of the line above it), drawn with box characters."""
    marks = ASCII_MARKS if ascii_only else UNICODE_MARKS
    heading = [tree.checkpoint_id]
    if tree.checkpoint_id not in tree.in_catalog:
        heading.append("not in the catalog")
    if tree.roots:
        heading.append(f"root {', '.join(tree.roots)}")
    heading.append(f"{tree.ancestors_total:,} ancestor{'s' * (tree.ancestors_total != 1)}, "
                   f"{tree.descendants_total:,} descendant{'s' * (tree.descendants_total != 1)}")
    lines = ["  ·  ".join(heading) if not ascii_only else "  -  ".join(heading)]
    cut = f" within {tree.depth} edge{'s' * (tree.depth != 1)}" if tree.depth is not None else ""
    for title, branch in ((f"ancestors{cut} (each line a parent of the one above)", tree.up),
                          (f"descendants{cut} (each line a child of the one above)", tree.down)):
        if branch is None:
            continue
        lines.append(title)
        if not branch.children:
            lines.append(f"{marks['last']}none")
            continue
        stack: list[tuple[Branch, str, bool]] = [(b, "", i == len(branch.children) - 1)
                                                 for i, b in reversed(list(enumerate(branch.children)))]
        while stack:
            b, prefix, last = stack.pop()
            lines.append(prefix + marks["last" if last else "tee"] + _describe(b, tree, marks))
            inner = prefix + marks["gap" if last else "pipe"]
            stack.extend((c, inner, i == len(b.children) - 1) for i, c in reversed(list(enumerate(b.children))))
    return lines


# ------------------------------------------------------------------------------------ the family


@dataclass
class Family:
    """What a lineage plot draws: up to PLOT_NODES members of a checkpoint's family and their edges."""

    checkpoint_id: str
    members: list[str]  # nearest first: the checkpoint, its ancestors, its descendants, then its roots'
    roles: dict[str, str]  # member -> "checkpoint" | "ancestor" | "descendant" | "family"
    edges: list[PairEdge]  # effective edges among the members
    total: int  # members of the whole family
    in_catalog: set[str]
    hidden_children: dict[str, int] = field(default_factory=dict)  # member -> its children not drawn

    @property
    def left_out(self) -> int:
        return self.total - len(self.members)


def family(catalog: CatalogLike, checkpoint_id: str, limit: int = PLOT_NODES) -> Family:
    """The checkpoint's family - its roots' descendants and its own ancestors - up to `limit` members.

    First the checkpoint, its ancestors, its descendants, then the rest; among descendants and the
    rest, those with children of their own before leaves (the family's shape before its thousands of
    quantisations), each nearest first. Every member's path to the checkpoint or a root is kept.
    """
    me = sql_literal(checkpoint_id)
    rows = catalog.conn.execute(f"""
        WITH roots AS (SELECT ancestor AS root FROM lineage_closure WHERE descendant = {me} AND ancestor_is_root
                       UNION ALL SELECT {me} WHERE NOT EXISTS (SELECT 1 FROM lineage_closure WHERE descendant = {me})),
        members AS (
            SELECT {me} AS id, 0 AS rank, 0 AS depth
            UNION ALL SELECT ancestor, 1, depth FROM lineage_closure WHERE descendant = {me}
            UNION ALL SELECT descendant, 2, depth FROM lineage_closure WHERE ancestor = {me}
            UNION ALL SELECT descendant, 4, depth FROM lineage_closure WHERE ancestor IN (SELECT root FROM roots)
        ),
        parents AS (SELECT DISTINCT parent FROM lineage_effective WHERE in_closure)
        -- a member's place is its first role (a leaf one step after), then its depth in that role
        SELECT id, min((rank + (rank >= 2 AND id NOT IN (SELECT parent FROM parents))::INTEGER) * 1000000 + depth)
                   AS place,
               count(*) OVER () AS total
        FROM members GROUP BY id ORDER BY place, id LIMIT {int(limit)}""").fetchall()
    roles = {cid: ("checkpoint", "ancestor", "descendant", "descendant", "family", "family")[place // 1000000]
             for cid, place, _ in rows}
    members = [cid for cid, _, _ in rows]
    total = rows[0][2] if rows else 1
    # Cycles are outside the closure: the members' partners on one are drawn too, as room allows.
    partners = [cid for (cid,) in catalog.conn.execute("""
        SELECT DISTINCT CASE WHEN list_contains($ids, child) THEN parent ELSE child END AS other
        FROM lineage_effective WHERE NOT in_closure AND (list_contains($ids, child) OR list_contains($ids, parent))
        ORDER BY other""", {"ids": members}).fetchall() if cid not in roles]
    total += len(partners)
    for cid in partners[:max(0, limit - len(members))]:
        members.append(cid)
        roles[cid] = "family"
    kept = "SELECT unnest(" + sql_literal_list(members) + ")"
    edges = [p for p in child_pairs(catalog, kept) if p.child in roles]
    drawn = defaultdict(int)
    for edge in edges:
        if edge.status == "closure":
            drawn[edge.parent] += 1
    hidden = {parent: count - drawn[parent] for parent, count in catalog.conn.execute(
        f"SELECT parent, count(*) FROM lineage_effective WHERE in_closure AND parent IN ({kept}) GROUP BY parent"
    ).fetchall() if count > drawn[parent]}
    return Family(checkpoint_id, members, roles, edges, total, _in_catalog(catalog.conn, members), hidden)


def sql_literal_list(ids: list[str]) -> str:
    return "[" + ", ".join(map(sql_literal, ids)) + "]::VARCHAR[]"
