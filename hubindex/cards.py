"""A checkpoint's card: everything the catalog knows about one checkpoint, gathered read-only.

Sections, in order: metadata (where it comes from, what it is, when it was crawled), license,
size, lineage (its parents and children from the `lineage` table, hubindex.lineage_tree), the corpora it was
probed on, its nearest neighbours by stored exact kappa (the CARD_NEIGHBORS highest per corpus,
centred kappa at the checkpoint's current features; nothing is computed), its task scores, and
its open failures. `hubindex show` renders it; nothing here writes.
"""

from __future__ import annotations

import difflib
from typing import Any

from hubindex.catalog import Catalog, fetch_dicts
from hubindex.errors import UsageError

# Neighbours shown per probed corpus.
CARD_NEIGHBORS = 5
# Children listed (a popular base model has thousands); the card gives their total too.
CARD_CHILDREN = 50
# Close ids suggested for an unknown checkpoint.
SUGGESTIONS = 3

METADATA_COLUMNS = (
    "source", "repo_id", "author", "pipeline_tag", "library_name", "model_type", "architectures", "tags",
    "datasets", "arxiv_ids", "downloads", "likes", "in1k_top1", "in1k_top5", "upstream_data", "num_classes",
    "num_features", "input_size", "sha", "metadata_sha", "last_modified", "created_at", "first_seen_at",
    "crawled_at", "private", "gated", "gated_mode", "disabled", "hf_hub_id", "local_path",
)
SIZE_COLUMNS = ("params_total", "params_by_dtype")


def resolve_checkpoint(catalog: Catalog, name: str) -> str:
    """The checkpoint_id that `name` means: itself, `hf:` + it, or the one checkpoint with that repo_id."""
    found = catalog.conn.execute(
        "SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id IN (?, 'hf:' || ?) OR repo_id = ? "
        "ORDER BY checkpoint_id <> ?, checkpoint_id <> 'hf:' || ?, checkpoint_id LIMIT 2",
        [name, name, name, name, name]).fetchall()
    exact = [cid for (cid,) in found if cid in (name, f"hf:{name}")]
    if exact:
        return exact[0]
    if len(found) == 1:
        return found[0][0]
    # DuckDB shortlists by similarity (fast on a large catalog); difflib chooses the close ones.
    shortlist = [cid for (cid,) in catalog.conn.execute(
        "SELECT checkpoint_id FROM checkpoints ORDER BY jaro_winkler_similarity(lower(checkpoint_id), lower(?)) DESC, "
        "checkpoint_id LIMIT 200", [name]).fetchall()]
    close = difflib.get_close_matches(name, shortlist, n=SUGGESTIONS, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    if len(found) > 1:
        raise UsageError(f"{name!r} is the repo_id of several checkpoints; give the checkpoint_id (`hubindex sql "
                         f"\"SELECT checkpoint_id FROM checkpoints WHERE repo_id = '{name}'\"` lists them)")
    raise UsageError(f"no checkpoint {name!r} in the catalog; {hint}`hubindex sql \"SELECT checkpoint_id FROM "
                     f"checkpoints WHERE checkpoint_id ILIKE '%...%'\"` finds ids")


def checkpoint_card(catalog: Catalog, name: str, exact: bool = False) -> dict[str, Any]:
    """The card of one checkpoint (see the module docstring); a UsageError names close ids if it is unknown.

    With exact, `name` is a checkpoint_id known to be in the catalog (no resolving: a scan saved).
    """
    checkpoint_id = name if exact else resolve_checkpoint(catalog, name)
    (row,) = fetch_dicts(catalog.conn, "SELECT * FROM checkpoints WHERE checkpoint_id = ?", [checkpoint_id])
    probed = _probed(catalog, checkpoint_id)
    return {
        "checkpoint_id": checkpoint_id,
        "metadata": {key: row.get(key) for key in METADATA_COLUMNS if key in row},
        "license": row.get("license"),
        "size": {key: row.get(key) for key in SIZE_COLUMNS}
        | {"weight_bytes": sum(f["size"] or 0 for f in row["weight_files"]) if row.get("weight_files") else None},
        "lineage": _lineage(catalog, checkpoint_id),
        "probed": probed,
        "neighbors": _neighbors(catalog, checkpoint_id, probed),
        "task_scores": fetch_dicts(catalog.conn, "SELECT task, metric, value, higher_is_better, metric_version, reference_task, "
                                      "computed_at FROM task_scores WHERE checkpoint_id = ? ORDER BY task, metric",
                             [checkpoint_id]),
        "open_failures": fetch_dicts(catalog.conn, "SELECT stage, kind, message, occurred_at, run_id FROM failures "
                                        "WHERE resolved_at IS NULL AND subject IN (?, ?, ?) ORDER BY occurred_at, "
                                        "failure_id", [checkpoint_id, row.get("repo_id") or checkpoint_id,
                                                       row.get("local_path") or checkpoint_id]),
    }


def _lineage(catalog: Catalog, checkpoint_id: str) -> dict[str, Any]:
    """Parents: every stored edge of it, used or not; children: the effective edges to it (the first
    CARD_CHILDREN, and how many); its roots and how many ancestors and descendants the closure has."""
    from hubindex.lineage_tree import has_lineage, parent_pairs, sql_literal

    found: dict[str, Any] = {"parents": [], "children": [], "children_total": 0, "roots": [],
                             "ancestors_total": 0, "descendants_total": 0}
    if not has_lineage(catalog):  # a read-only catalog from before lineage
        return found
    me = sql_literal(checkpoint_id)
    parents = parent_pairs(catalog, f"SELECT {me}")
    parents.sort(key=lambda p: (("closure", "cycle", "not used", "unresolved").index(p.status), p.parent))
    children = [p for p in parent_pairs(catalog, f"SELECT child FROM lineage_effective WHERE parent = {me} "
                                                 f"ORDER BY child LIMIT {CARD_CHILDREN}") if p.parent == checkpoint_id]
    nodes = sorted({p.parent for p in parents} | {p.child for p in children})
    known = {cid for (cid,) in catalog.conn.execute(
        "SELECT checkpoint_id FROM checkpoints WHERE checkpoint_id IN (SELECT unnest(?::VARCHAR[]))", [nodes]).fetchall()}
    found["parents"] = [p.record(p.parent, p.parent in known) for p in parents]
    found["children"] = [p.record(p.child, p.child in known) for p in children]
    found["children_total"], found["ancestors_total"], found["descendants_total"] = catalog.conn.execute(
        f"SELECT (SELECT count(*) FROM lineage_effective WHERE parent = {me}), "
        f"(SELECT count(*) FROM lineage_closure WHERE descendant = {me}), "
        f"(SELECT count(*) FROM lineage_closure WHERE ancestor = {me})").fetchone()
    found["roots"] = [cid for (cid,) in catalog.conn.execute(
        f"SELECT ancestor FROM lineage_closure WHERE descendant = {me} AND ancestor_is_root "
        "ORDER BY depth DESC, ancestor").fetchall()]
    return found


def _probed(catalog: Catalog, checkpoint_id: str) -> list[dict[str, Any]]:
    """Its newest stored features per corpus version (corpus hash) and layer."""
    return fetch_dicts(catalog.conn, """
        SELECT corpus, corpus_hash, layer, pooling, probe, n_items, n_kept, dim, checkpoint_sha,
               created_at AS probed_at
        FROM (SELECT *, row_number() OVER (PARTITION BY corpus_hash, layer ORDER BY created_at DESC) AS newest
              FROM embeddings WHERE checkpoint_id = ?)
        WHERE newest = 1 ORDER BY corpus, probed_at DESC, layer""", [checkpoint_id])


def _neighbors(catalog: Catalog, checkpoint_id: str, probed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest stored centred kappa per corpus, at the checkpoint's current features there."""
    out = []
    seen = set()
    for entry in probed:
        key = (entry["corpus_hash"], entry["checkpoint_sha"])
        if key in seen:
            continue
        seen.add(key)
        found = fetch_dicts(catalog.conn, """
            SELECT other AS checkpoint_id, value AS kappa, n_items FROM (
                SELECT CASE WHEN checkpoint_a = $id THEN checkpoint_b ELSE checkpoint_a END AS other, value, n_items,
                       row_number() OVER (PARTITION BY other ORDER BY computed_at DESC) AS newest
                FROM kappa
                WHERE corpus_hash = $hash AND centered
                  AND ((checkpoint_a = $id AND sha_a = $sha) OR (checkpoint_b = $id AND sha_b = $sha))
            ) WHERE newest = 1 ORDER BY kappa DESC, checkpoint_id LIMIT $k""",
            {"id": checkpoint_id, "hash": entry["corpus_hash"], "sha": entry["checkpoint_sha"],
             "k": CARD_NEIGHBORS})  # type: ignore[arg-type]
        if found:
            out.append({"corpus": entry["corpus"], "corpus_hash": entry["corpus_hash"], "neighbors": found})
    return out


def card_rows(card: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """The card flattened to (section, key, value) rows, for CSV and JSON lines."""
    rows: list[tuple[str, str, Any]] = [("checkpoint", "checkpoint_id", card["checkpoint_id"])]
    rows += [("metadata", k, v) for k, v in card["metadata"].items() if v is not None]
    rows.append(("license", "license", card["license"]))
    rows += [("size", k, v) for k, v in card["size"].items() if v is not None]
    lineage = card["lineage"]
    rows += [("lineage", "root", cid) for cid in lineage["roots"]]
    rows += [("lineage", "parent", parent) for parent in lineage["parents"]]
    rows += [("lineage", "child", child) for child in lineage["children"]]
    rows += [("lineage", key, lineage[key]) for key in ("children_total", "ancestors_total", "descendants_total")]
    for entry in card["probed"]:
        rows.append(("probed", entry["corpus"], {k: v for k, v in entry.items() if k != "corpus"}))
    for entry in card["neighbors"]:
        for n in entry["neighbors"]:
            rows.append(("neighbors", f"{entry['corpus']}/{n['checkpoint_id']}",
                         {"corpus_hash": entry["corpus_hash"], "kappa": n["kappa"], "n_items": n["n_items"]}))
    for score in card["task_scores"]:
        rows.append(("task_scores", f"{score['task']}/{score['metric']}", score["value"]))
    for failure in card["open_failures"]:
        rows.append(("open_failures", f"{failure['stage']}/{failure['kind']}", failure["message"]))
    return rows
