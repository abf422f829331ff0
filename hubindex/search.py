"""Search: run a query plugin on a pool of checkpoints and keep its answer in `selections`.

The pool is every checkpoint, or those matching a read-only `--where` condition. A task-aware
strategy reads the task's scores of one metric from `task_scores` (run `hubindex score` first); a
kappa strategy (MMI) reads kappa of one probed corpus from the `kappa` table (run `hubindex
kappa` first), restricted to the pool. Every answer is stored - strategy, version, budget, task,
metric, corpus and its content hash, pool - with its picks in `selection_items`, in one transaction.
The answer is computed on a read-only catalog and stored afterwards; a read-only or busy index
(another process writing) still gets its answer, unstored (`SearchResult.not_stored` says why).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hubindex.catalog import Catalog, utcnow
from hubindex.corpus_versions import CorpusRef
from hubindex.errors import CatalogBusyError, HubindexError, NothingDone, UsageError
from hubindex.index import Index
from hubindex.plugins import known_names, probes, queries
from hubindex.scoring import metric_classes
from hubindex.types import USES_KAPPA, USES_TASK, Pick, Query, QueryContext
from hubindex.user_sql import reading_catalog

DEFAULT_METRIC = "linear"


@dataclass
class SearchResult:
    strategy: str
    budget: int
    picks: list[Pick]
    pool_size: int
    selection_id: int | None = None
    task: str | None = None
    metric: str | None = None
    corpus: str | None = None  # the corpus name; which of its probed versions is corpus_hash
    corpus_hash: str | None = None
    corpus_spec: str | None = None  # how to name that version again, e.g. bbc-news@10000
    notes: list[str] = field(default_factory=list)
    # Checkpoints scoring the same as the last pick ranked by score, up to float noise, when some were
    # left out: {"value": v, "picked": [...], "left_out": [...]}; None when the budget cuts no tie.
    ties: dict[str, Any] | None = None
    not_stored: str | None = None  # why the answer is not in `selections` (read-only index, busy, --no-save)
    # How many of the pool the strategy could choose from (for kappa strategies: those with kappa).
    candidates: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "budget": self.budget, "task": self.task, "metric": self.metric,
            "corpus": self.corpus, "corpus_hash": self.corpus_hash,
            "pool_size": self.pool_size, "candidates": self.candidates, "selection_id": self.selection_id,
            "selected": [p.checkpoint_id for p in self.picks],
            "details": [{"rank": rank, "checkpoint_id": p.checkpoint_id, "value": p.value, "reason": p.reason}
                        for rank, p in enumerate(self.picks, 1)],
            "ties": self.ties,
        }

    def tie_note(self) -> str | None:
        """One line on the tie the budget cut, if any."""
        if not self.ties:
            return None
        left = self.ties["left_out"]
        shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
        return (f"{len(left)} checkpoint(s) tie with the last pick at {self.metric} = {self.ties['value']:.6g} and "
                f"were left out by checkpoint_id order: {shown}; raise --budget to include them")

    def corpus_line(self) -> str | None:
        """`corpus bbc-news@10000 (hash 1a2b3c4d5e6f)` for a selection made on kappa, else None."""
        if self.corpus_hash is None:
            return None
        return f"corpus {self.corpus_spec or self.corpus} (hash {self.corpus_hash[:12]})"


def query_class(name: str) -> type[Query]:
    registered = queries()
    if name not in registered:
        known = known_names(registered)
        raise UsageError(f"unknown strategy {name!r}; available strategies: {known}")
    return registered[name].component


@dataclass
class PoolKappa:
    """kappa of the pool on one corpus: dense (ids, matrix) or low-rank (ids, F, d); see QueryContext."""

    corpus: CorpusRef
    dense: tuple[list[str], np.ndarray] | None = None
    lowrank: tuple[list[str], np.ndarray, np.ndarray] | None = None
    note: str | None = None

    @property
    def ids(self) -> list[str]:
        return (self.dense or self.lowrank)[0]  # type: ignore[index]


def _pool_kappa(catalog: Catalog, index_root: Any, pool: list[dict[str, Any]], corpus: str | None,
                budget: int) -> PoolKappa:
    """kappa of the pool's checkpoints on the corpus: the stored pairs where they are all there and
    the exact MMI fits; else, when kappa is a sparse graph or the pool is too large, the low-rank
    approximation from the fingerprints (hubindex.selection.lowrank_factor_from_features)."""
    from hubindex.relate import (
        current_pair_count,
        kappa_matrix_from_catalog,
        probed_checkpoints,
        resolve_corpus,
    )
    from hubindex.selection import LOWRANK_RANK, choose_mmi_path

    ref = resolve_corpus(catalog, corpus)
    wanted = {row["checkpoint_id"] for row in pool}
    probed = [p for p in probed_checkpoints(catalog, ref) if p.checkpoint_id in wanted]
    n = len(probed)
    complete = current_pair_count(catalog, ref, True, probed) == n * (n - 1) // 2
    sparse = not complete and _is_sparse_graph(catalog, ref.content_hash)
    if sparse or choose_mmi_path(n, budget) != "exact":
        from hubindex.fingerprints import fingerprint_matrix
        from hubindex.selection import lowrank_factor_from_features

        ids, fingerprints = fingerprint_matrix(catalog, index_root, ref)
        keep = [k for k, cid in enumerate(ids) if cid in wanted]
        if not keep:
            raise HubindexError(f"no checkpoint of the pool has a fingerprint on {ref.spec}; run `hubindex probe` "
                                f"and `hubindex kappa --corpus {ref.spec}` first")
        rank = min(LOWRANK_RANK, len(keep), fingerprints.shape[1])
        factors, diagonal = lowrank_factor_from_features(fingerprints[keep], rank)
        why = "kappa is a sparse graph" if sparse else f"{n:,} checkpoints are too many for exact MMI"
        return PoolKappa(ref, lowrank=([ids[k] for k in keep], factors, diagonal),
                         note=f"{why}: MMI runs on a rank-{rank} approximation of kappa from the fingerprints")
    ids, values, _ = kappa_matrix_from_catalog(catalog, ref, only=wanted)
    if not ids:
        raise HubindexError(f"no checkpoint of the pool has kappa on {ref.spec}; run `hubindex probe` and "
                            f"`hubindex kappa --corpus {ref.spec}` first")
    return PoolKappa(ref, dense=(ids, values))


def _is_sparse_graph(catalog: Catalog, corpus_hash: str) -> bool:
    return catalog.conn.execute("SELECT count(*) > 0 FROM kappa_graph WHERE corpus_hash = ?",
                                [corpus_hash]).fetchone()[0]


def _runnable_on_task(catalog: Catalog, task: str, pool: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The pool's checkpoints that a probe of the task's modality can run (an image task has no use for text models)."""
    found = catalog.conn.execute("SELECT modality FROM tasks WHERE task = ?", [task]).fetchone()
    if found is None:
        raise UsageError(f"no task named {task!r}; `hubindex task list` shows the tasks")
    instances = [r.component() for r in probes().values() if r.component.modality == found[0]]
    runnable = [row for row in pool if any(probe.accepts(row) for probe in instances)]
    if len(runnable) < len(pool):
        notes.append(f"{len(pool) - len(runnable)} of {len(pool)} checkpoints in the pool cannot run on "
                     f"{found[0]} examples and were left out")
    if not runnable:
        raise UsageError(f"no checkpoint in the pool can run on task {task!r} ({found[0]} examples)")
    return runnable


def _pool_ids(index: Index, where: str | None) -> list[str]:
    """The pool's checkpoint ids: all, or those matching --where (from the read snapshot while a writer works)."""
    from hubindex.probing import matching_checkpoints

    return matching_checkpoints(index, where if where is not None else "true", snapshot_fallback=True)


def _boundary_ties(picks: list[Pick], scores: dict[str, float]) -> dict[str, Any] | None:
    """The checkpoints scoring as the last pick (when it was ranked by its score), if the budget left some out."""
    from hubindex.evaluation import SCORE_NOISE

    last = picks[-1] if picks else None
    if last is None or last.value is None or scores.get(last.checkpoint_id) != last.value:
        return None
    chosen = {pick.checkpoint_id for pick in picks}
    noise = SCORE_NOISE * max(1.0, abs(last.value))
    tied = sorted(cid for cid, value in scores.items() if abs(value - last.value) <= noise)
    left_out = [cid for cid in tied if cid not in chosen]
    if not left_out:
        return None
    return {"value": last.value, "picked": [cid for cid in tied if cid in chosen], "left_out": left_out}


def _index_writable(index: Index) -> bool:
    # DuckDB writes the catalog file and a write-ahead log beside it.
    return os.access(index.root, os.W_OK) and (not index.catalog_path.exists()
                                                or os.access(index.catalog_path, os.W_OK))


def store_selection(index: Index, result: SearchResult, strategy_version: str, where: str | None,
                    seed: int) -> str | None:
    """Keep the answer in `selections` (setting its selection_id); None once stored, else why it was not."""
    if not _index_writable(index):
        return f"the index {index.root} is read-only"
    try:
        catalog = index.open_catalog()
    except CatalogBusyError:
        return "another process is writing the catalog"
    with catalog, catalog.transaction():
        (result.selection_id,) = catalog.conn.execute(
            "INSERT INTO selections (strategy, strategy_version, budget, task, metric, corpus, corpus_hash, "
            "pool_condition, pool_size, seed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING selection_id",
            [result.strategy, strategy_version, result.budget, result.task, result.metric, result.corpus,
             result.corpus_hash, where, result.pool_size, seed, utcnow()],
        ).fetchone()
        for rank, pick in enumerate(result.picks, 1):
            catalog.conn.execute(
                "INSERT INTO selection_items VALUES (?, ?, ?, ?, ?, ?)",
                [result.selection_id, rank, pick.checkpoint_id, pick.value, pick.mi_nats, pick.reason],
            )
    return None


def run_search(index: Index, strategy: str, budget: int, task: str | None = None, metric: str | None = None,
               where: str | None = None, corpus: str | None = None, seed: int = 0,
               kappa: tuple[list[str], np.ndarray] | None = None, save: bool = True,
               reading: Callable[[], AbstractContextManager[Catalog]] | None = None) -> SearchResult:
    """Run one strategy on the pool, read-only, then store its selection where the index can take it.

    `reading` opens the catalog read-only (the command line's says when it reads the snapshot);
    with `save`, the answer goes into `selections` unless the index is read-only or another process
    writes it: `result.not_stored` then says why (see `store_selection`).
    """
    query_cls = query_class(strategy)
    if budget < 1:
        raise UsageError(f"--budget must be at least 1 (got {budget})")
    notes: list[str] = []
    corpus_hash = corpus_spec = None
    higher_is_better = True
    if USES_TASK in query_cls.uses:
        if task is None:
            raise UsageError(f"strategy {strategy!r} ranks by a task's scores: give --task NAME")
        metric = metric or DEFAULT_METRIC
        (metric_cls,) = metric_classes([metric])
        higher_is_better = metric_cls.higher_is_better
    # Everything is computed on a read-only catalog; only storing the answer writes (one mode per process).
    pool_ids = _pool_ids(index, where)
    with (reading or (lambda: reading_catalog(index.catalog_path)))() as catalog:
        pool = catalog.checkpoint_rows(pool_ids)
        if not pool:
            raise NothingDone("the pool is empty: no checkpoint matches --where" if where else "the catalog is empty")
        if task is not None:
            pool = _runnable_on_task(catalog, task, pool, notes)
        context = QueryContext(catalog, pool, task, metric, higher_is_better, seed)
        scored: dict[str, float] = {}
        if USES_TASK in query_cls.uses:
            scored = context.task_scores()
            if not scored:
                raise HubindexError(f"no {metric} scores for task {task!r} in the pool; run "
                                    f"`hubindex score --task {task} --metric {metric}` first")
            if len(scored) < len(pool):
                notes.append(f"{len(pool) - len(scored)} of {len(pool)} checkpoints in the pool have no {metric} "
                             f"score for task {task!r}: only a task-agnostic pick can choose them")
        candidates = None
        if USES_KAPPA in query_cls.uses:
            if kappa is None:
                found = _pool_kappa(catalog, index.root, pool, corpus, budget)
                corpus, corpus_hash, corpus_spec = found.corpus.name, found.corpus.content_hash, found.corpus.spec
                if found.note:
                    notes.append(found.note)
                if where is not None and len(found.ids) < len(pool):  # without --where most rows are never probed
                    notes.append(f"{len(pool) - len(found.ids)} of {len(pool)} checkpoints in the pool have no "
                                 f"kappa on {corpus_spec} and were left out")
                context.kappa, context.kappa_lowrank = found.dense, found.lowrank
                candidates = len(found.ids)
            else:
                context.kappa = kappa
        picks = query_cls().select(context, budget)
        # The task is kept even for task-free strategies: their picks for it can then be compared in SQL.
        result = SearchResult(strategy, budget, picks, len(pool), task=task,
                              metric=metric if USES_TASK in query_cls.uses else None, corpus=corpus,
                              corpus_hash=corpus_hash, corpus_spec=corpus_spec, notes=notes,
                              candidates=candidates)
        result.ties = _boundary_ties(picks, scored)
    if not save:
        result.not_stored = "--no-save"
    else:
        result.not_stored = store_selection(index, result, query_cls.version, where, seed)
    return result
