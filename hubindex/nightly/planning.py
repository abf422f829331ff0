"""Planning a stage: which checkpoints need probing or scoring, from what the catalog already holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hubindex.catalog import Catalog


@dataclass(frozen=True)
class Planned:
    """A checkpoint a stage will hand to probing or scoring, with the revision it will use."""

    checkpoint_id: str
    revision: str | None
    layer: str
    pooling: str
    had_features: bool  # probe: features on this corpus at another revision; score: task features stored


@dataclass
class Plan:
    todo: list[Planned] = field(default_factory=list)
    up_to_date: int = 0
    skipped_failed: int = 0
    no_probe: int = 0


def stored_keys(catalog: Catalog, corpus_hash: str) -> set[tuple[str, str, str, str]]:
    """(checkpoint_id, sha, layer, pooling) of the features stored for a corpus content."""
    rows = catalog.conn.execute(
        "SELECT checkpoint_id, checkpoint_sha, layer, pooling FROM embeddings WHERE corpus_hash = ?", [corpus_hash]
    ).fetchall()
    return {tuple(row) for row in rows}


def plan_probe(catalog: Catalog, rows: list[dict[str, Any]], data: Any, instances: list[Any],
                failed: set[tuple[str, str]]) -> Plan:
    """Which checkpoints need features on the corpus: those without features at their current revision."""
    from hubindex.probing import pick_probe, unsupported_reason

    stored = {
        (cid, sha, layer, pooling, dtype): path
        for cid, sha, layer, pooling, dtype, path in catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, layer, pooling, dtype, path FROM embeddings "
            "WHERE corpus_hash = ? AND n_items = ?", [data.content_hash, data.size]).fetchall()
    }
    before = {cid for (cid,) in catalog.conn.execute(
        "SELECT DISTINCT checkpoint_id FROM embeddings WHERE corpus = ?", [data.name]).fetchall()}
    root = catalog.path.parent
    plan = Plan()
    for row in rows:
        probe = pick_probe(instances, row, data.modality)
        cid = row["checkpoint_id"]
        if probe is None and unsupported_reason(instances, row) is not None:
            # No probe takes it at all: the probe run records why (once per revision, as failures are).
            if (cid, row.get("sha")) in failed:
                plan.skipped_failed += 1
            else:
                plan.todo.append(Planned(cid, row.get("sha"), "", "", False))
            continue
        if probe is None:
            plan.no_probe += 1
            continue
        revision = probe.revision(row)
        path = stored.get((cid, revision, probe.layer, probe.pooling, probe.dtype_for(row)))
        if path is not None and (root / path).is_file():
            plan.up_to_date += 1
        elif (cid, revision) in failed:
            plan.skipped_failed += 1
        else:
            plan.todo.append(Planned(cid, revision, probe.layer, probe.pooling, cid in before))
    return plan


def plan_score(catalog: Catalog, rows: list[dict[str, Any]], task: dict[str, Any], instances: list[Any],
                failed: set[tuple[str, str]]) -> Plan:
    """Checkpoints to score on a task; had_features marks those whose task features are stored (no model run)."""
    from hubindex.probing import pick_probe

    embedded = {tuple(r) for r in catalog.conn.execute(
        "SELECT checkpoint_sha, pooling, dtype FROM task_features WHERE task_hash = ? AND kind = 'features'",
        [task["content_hash"]]).fetchall()}
    plan = Plan()
    for row in rows:
        probe = pick_probe(instances, row, task["modality"])
        if probe is None:
            plan.no_probe += 1
            continue
        cid, revision = row["checkpoint_id"], probe.revision(row)
        if (cid, revision) in failed:
            plan.skipped_failed += 1
            continue
        plan.todo.append(Planned(cid, revision, probe.layer, probe.example_pooling,
                                  (revision, probe.example_pooling, probe.dtype_for(row)) in embedded))
    return plan


def scored_keys(catalog: Catalog, task: str, since: datetime | None = None) -> set[tuple[str, str]]:
    """(checkpoint_id, metric) of a task's stored scores (computed since a time, if given)."""
    rows = catalog.conn.execute(
        "SELECT checkpoint_id, metric FROM task_scores WHERE task = ? AND computed_at >= ?",
        [task, since or datetime(1970, 1, 1)],
    ).fetchall()
    return {tuple(row) for row in rows}

