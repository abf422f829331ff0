"""Relate probed checkpoints: the kappa table (incremental). Task fingerprints: `hubindex.fingerprints`."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.catalog import Catalog, utcnow
from hubindex.corpus_versions import CorpusRef, resolve_corpus  # noqa: F401 - resolve_corpus is re-exported
from hubindex.kappa import (
    GRAM_BLOCK_BYTES,
    Prepared,
    default_device,
    gram_inner_products,
    kappa_against,
    kappa_pair,
    prepare,
)
from hubindex.probed import DEFAULT_LAYER, Probed, probed_checkpoints  # noqa: F401 - re-exported
from hubindex.store import EmbeddingStore, StoreError


class _FeatureCache:
    """Each checkpoint's features, loaded once and kept while they fit in `max_bytes` (least recent out)."""

    def __init__(self, store: EmbeddingStore, max_bytes: int = 1 << 62) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.loaded: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, probed: Probed) -> np.ndarray:
        if probed.checkpoint_id in self.loaded:
            self.loaded.move_to_end(probed.checkpoint_id)
            return self.loaded[probed.checkpoint_id]
        features = self.store.read(probed.path, probed.n_items, probed.file_sha256)
        self.loaded[probed.checkpoint_id] = features
        while sum(f.nbytes for f in self.loaded.values()) > self.max_bytes and len(self.loaded) > 1:
            self.loaded.popitem(last=False)
        return features


@dataclass
class KappaUpdate:
    corpus: CorpusRef
    checkpoints: int
    computed: int
    reused: int
    failed: list[str]
    seconds: float
    graph: GraphSettings | None = None  # set when kappa is the sparse graph, not all pairs

    def line(self) -> str:
        failed = f", {len(self.failed)} checkpoints failed (see failures)" if self.failed else ""
        kind = (f" (sparse graph: {self.graph.neighbors} highest of {self.graph.candidates} candidates each)"
                if self.graph else "")
        return (
            f"kappa on {self.corpus.spec or self.corpus.name} ({self.corpus.content_hash[:12]}): {self.checkpoints} checkpoints{kind}, "
            f"{self.computed} pairs computed, {self.reused} reused{failed} in {self.seconds:.1f} s"
        )


class _ProbedTable:
    """The probed checkpoints as a DuckDB view `probed_now` (idx, id, sha) while the block runs."""

    def __init__(self, catalog: Catalog, probed: list[Probed]) -> None:
        import pyarrow as pa

        self.catalog = catalog
        self.table = pa.table({"idx": list(range(len(probed))), "id": [p.checkpoint_id for p in probed],
                               "sha": [p.sha for p in probed]})

    def __enter__(self) -> None:
        self.catalog.conn.register("probed_now", self.table)

    def __exit__(self, *exc: object) -> None:
        self.catalog.conn.unregister("probed_now")


# The kappa rows of one corpus between the probed checkpoints at their current shas.
_CURRENT_PAIRS = (
    "FROM (SELECT * FROM kappa WHERE corpus_hash = $hash AND centered = $centered) k "
    "JOIN probed_now a ON k.checkpoint_a = a.id AND k.sha_a = a.sha "
    "JOIN probed_now b ON k.checkpoint_b = b.id AND k.sha_b = b.sha"
)


def current_pair_count(catalog: Catalog, corpus: CorpusRef, centered: bool, probed: list[Probed]) -> int:
    """How many kappa pairs of the probed checkpoints are stored at their current shas (counted in SQL)."""
    with _ProbedTable(catalog, probed):
        ((count,),) = catalog.conn.execute(f"SELECT count(*) {_CURRENT_PAIRS}",
                                           {"hash": corpus.content_hash, "centered": centered}).fetchall()
    return int(count)


def missing_pairs(catalog: Catalog, corpus: CorpusRef, centered: bool,
                  probed: list[Probed]) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) positions in `probed` (i < j) of the pairs without a kappa row at both current shas.

    Found in SQL: a count of the current pairs first - a no-op run stops there, loading no pair -
    then, only if some are missing, an anti-join of all pairs against the stored ones.
    """
    n = len(probed)
    if current_pair_count(catalog, corpus, centered, probed) == n * (n - 1) // 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    with _ProbedTable(catalog, probed):
        found = catalog.conn.execute(
            "SELECT a.idx AS i, b.idx AS j FROM probed_now a JOIN probed_now b ON a.id < b.id "
            "ANTI JOIN (SELECT checkpoint_a, checkpoint_b, sha_a, sha_b FROM kappa WHERE corpus_hash = $hash "
            "AND centered = $centered) k ON k.checkpoint_a = a.id AND k.checkpoint_b = b.id "
            "AND k.sha_a = a.sha AND k.sha_b = b.sha ORDER BY i, j",
            {"hash": corpus.content_hash, "centered": centered}).fetchnumpy()
    return found["i"].astype(np.int64), found["j"].astype(np.int64)


def covering_checkpoints(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    """Checkpoints that touch every given pair, few of them: most pairs first (a greedy vertex cover).

    New or changed checkpoints miss pairs with everyone; the others only with them. So after a
    few new checkpoints, kappa is computed for those rows against every column, not for all rows.
    Each step visits only the pairs of the checkpoint it picks, so the whole cover costs O(pairs).
    """
    if len(first) == n * (n - 1) // 2:  # every pair: every checkpoint is a row (a first run)
        return np.arange(n)
    ends = np.concatenate([first, second])
    pair_of_end = np.concatenate([np.arange(len(first)), np.arange(len(second))])
    order = np.argsort(ends, kind="stable")
    starts = np.searchsorted(ends[order], np.arange(n + 1))
    remaining = np.ones(len(first), dtype=bool)
    degree = np.bincount(ends, minlength=n)
    cover = []
    while degree.max(initial=0) > 0:
        if len(cover) >= n // 2:  # rows x all would cost as much as all pairs at once (symmetric)
            return np.arange(n)
        v = int(np.argmax(degree))
        cover.append(v)
        pairs = pair_of_end[order[starts[v]:starts[v + 1]]]
        hit = pairs[remaining[pairs]]
        remaining[hit] = False
        degree -= np.bincount(first[hit], minlength=n) + np.bincount(second[hit], minlength=n)
    return np.array(sorted(cover), dtype=np.int64)


# Features held at once by catalog kappa: a chunk of row checkpoints and a chunk of columns, in
# float32. Bigger chunks recompute fewer Gram bands (a column's bands are formed once per row
# chunk: 2 d / chunk of the pair products' work), smaller ones bound memory for any n.
KAPPA_FEATURE_BYTES = 2 * 1024**3
# Above this many checkpoints on a corpus, kappa is a sparse graph rather than all pairs. Near
# the point where the two cost the same on m = 2,000 items, d = 384: all pairs cost about
# n m^2 / 2 per checkpoint, the graph 2 C m d^2 (C candidates re-ranked exactly); and 10^4
# checkpoints already make 5 10^7 rows.
DENSE_MAX = 10_000


@dataclass(frozen=True)
class GraphSettings:
    """The sparse kappa graph: each checkpoint's `neighbors` highest exact kappa among `candidates`."""

    neighbors: int = 32
    candidates: int = 128
    batch: int = 256  # checkpoints searched and committed together


def kappa_up_to_date(catalog: Catalog, corpus: CorpusRef, centered: bool = True, dense_max: int = DENSE_MAX,
                     graph: GraphSettings | None = None) -> KappaUpdate | None:
    """The update `update_kappa` would report if it has nothing to compute, else None.

    Only reads, so a read-only catalog can answer a run with nothing to do.
    """
    started = time.monotonic()
    probed = probed_checkpoints(catalog, corpus)
    n = len(probed)
    if n > dense_max:
        if _graph_todo(catalog, corpus, centered, probed):
            return None
        ((stored,),) = catalog.conn.execute("SELECT count(*) FROM kappa WHERE corpus_hash = ? AND centered = ?",
                                            [corpus.content_hash, centered]).fetchall()
        return KappaUpdate(corpus, n, 0, int(stored), [], time.monotonic() - started, graph=graph or GraphSettings())
    if current_pair_count(catalog, corpus, centered, probed) < n * (n - 1) // 2:
        return None
    return KappaUpdate(corpus, n, 0, n * (n - 1) // 2, [], time.monotonic() - started)


def current_pairs(catalog: Catalog, corpus: CorpusRef, centered: bool = True,
                  batch: int = 100_000) -> Iterator[tuple[str, str, float, int]]:
    """The stored kappa pairs (a, b, value, items) of the probed checkpoints at their current shas,
    a < b, read in batches. Consume it before running another query on the catalog."""
    probed = probed_checkpoints(catalog, corpus)
    with _ProbedTable(catalog, probed):
        cursor = catalog.conn.execute(
            f"SELECT k.checkpoint_a, k.checkpoint_b, k.value, k.n_items {_CURRENT_PAIRS} ORDER BY 1, 2",
            {"hash": corpus.content_hash, "centered": centered})
        while rows := cursor.fetchmany(batch):
            yield from rows


def update_kappa(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, centered: bool = True,
    progress: Callable[[int], Any] | None = None, block_bytes: int = GRAM_BLOCK_BYTES,
    feature_bytes: int = KAPPA_FEATURE_BYTES, device: str | None = "auto", dense_max: int = DENSE_MAX,
    graph: GraphSettings | None = None,
) -> KappaUpdate:
    """Compute the kappa pairs the catalog lacks (new checkpoints, or ones whose sha changed).

    Pairs of checkpoints that kept every item go through the Gram route (`gram_inner_products`)
    in blocks: the rows are a few checkpoints that touch every missing pair
    (`covering_checkpoints`), the columns the checkpoints they pair with, each side cut into chunks
    whose float32 features fit in half of `feature_bytes`. An incremental run so costs (new x all)
    pairs, a first run all pairs, and memory is two chunks of features plus one band of the item
    Gram matrices (`block_bytes`), whatever n. Each block's pairs are committed as it finishes, so
    an interrupted run keeps them and the next run computes only the rest. `device` "auto" is
    the GPU when torch sees one. Pairs with a checkpoint that dropped items (e.g. words lost to
    truncation) are compared on the items both kept, one pair at a time.

    Above `dense_max` checkpoints all pairs are no longer computed: see `update_kappa_graph`.
    """
    started = time.monotonic()
    probed = probed_checkpoints(catalog, corpus)
    n = len(probed)
    if n > dense_max:
        return update_kappa_graph(catalog, index_root, corpus, centered, probed, graph, progress, started, device)
    first, second = missing_pairs(catalog, corpus, centered, probed)
    reused = n * (n - 1) // 2 - len(first)
    if not len(first):
        return KappaUpdate(corpus, n, 0, reused, [], time.monotonic() - started)
    run = _KappaRun(catalog, index_root, corpus, centered, probed, progress)
    complete = np.array([p.complete for p in probed])
    gram = complete[first] & complete[second]
    if gram.any():
        if device == "auto":
            device = default_device()
        run.gram_blocks(first[gram], second[gram], block_bytes, feature_bytes, device)
    run.pairwise(first[~gram], second[~gram], feature_bytes)
    return KappaUpdate(corpus, n, run.computed, reused, sorted(run.failed), time.monotonic() - started)


class _KappaRun:
    """One `update_kappa` run: loads features (recording unreadable or constant ones), writes pairs."""

    def __init__(self, catalog: Catalog, index_root: Path, corpus: CorpusRef, centered: bool,
                 probed: list[Probed], progress: Callable[[int], Any] | None) -> None:
        self.catalog, self.corpus, self.centered, self.probed = catalog, corpus, centered, probed
        self.store = EmbeddingStore(index_root)
        self.progress = progress
        self.failed: set[str] = set()
        self.computed = 0

    def _fail(self, subject: str, kind: str, message: str) -> None:
        self.failed.add(subject)
        self.catalog.record_failure(None, "kappa", subject, kind, message)

    def _read(self, position: int, cache: _FeatureCache | None = None) -> np.ndarray | None:
        p = self.probed[position]
        if p.checkpoint_id in self.failed:
            return None
        try:
            return cache.get(p) if cache is not None else self.store.read(p.path, p.n_items, p.file_sha256)
        except StoreError as exc:  # recorded; the other pairs go on
            self._fail(p.checkpoint_id, "store", str(exc))
            return None

    def _prepared(self, position: int) -> np.ndarray | None:
        """Centred (if kappa is) float32 features of a complete checkpoint; None if unreadable or constant."""
        features = self._read(position)
        if features is None:
            return None
        mean = features.mean(axis=0, dtype=np.float64, keepdims=True) if self.centered else 0.0
        prepared = (features - mean).astype(np.float32)
        if not np.any(prepared):
            self._fail(self.probed[position].checkpoint_id, "kappa", "constant features: kappa is undefined")
            return None
        return prepared

    def write(self, first: np.ndarray, second: np.ndarray, values: np.ndarray, n_items: np.ndarray) -> None:
        """Insert the pairs (positions i < j) with their values, in one transaction."""
        now = utcnow()
        rows = [(self.corpus.name, self.corpus.content_hash, self.centered, self.probed[i].checkpoint_id,
                 self.probed[j].checkpoint_id, self.probed[i].sha, self.probed[j].sha, float(v), int(c), now)
                for i, j, v, c in zip(first.tolist(), second.tolist(), values.tolist(), n_items.tolist())]
        if rows:
            _write_pairs(self.catalog, rows)
            self.computed += len(rows)
            if self.progress:
                self.progress(len(rows))

    def gram_blocks(self, first: np.ndarray, second: np.ndarray, block_bytes: int, feature_bytes: int,
                    device: str | None) -> None:
        n = len(self.probed)
        covering = np.zeros(n, dtype=bool)
        covering[covering_checkpoints(first, second, n)] = True
        swap = ~covering[first]  # each pair's row is its covering end
        row, column = np.where(swap, second, first), np.where(swap, first, second)
        m = self.probed[0].n_items
        dim = max(self.probed[int(v)].dim for v in np.union1d(row, column))
        per_chunk = max(1, feature_bytes // 2 // max(1, 4 * m * dim))
        row_chunk = _chunk_numbers(row, per_chunk, n)
        column_chunk = _chunk_numbers(column, per_chunk, n)
        order = np.lexsort((column_chunk[column], row_chunk[row]))
        row, column = row[order], column[order]
        keys = row_chunk[row] * (n + 1) + column_chunk[column]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        held: dict[int, np.ndarray | None] = {}  # the current row chunk's features
        current_row_chunk = -1
        for block_rows, block_columns in zip(np.split(row, bounds), np.split(column, bounds)):
            if row_chunk[block_rows[0]] != current_row_chunk:
                current_row_chunk = int(row_chunk[block_rows[0]])
                held = {int(v): self._prepared(int(v)) for v in np.unique(block_rows)}
            else:
                held.update({int(v): self._prepared(int(v)) for v in np.unique(block_rows) if int(v) not in held})
            column_features = {int(v): held[int(v)] if int(v) in held else self._prepared(int(v))
                               for v in np.unique(block_columns)}
            self._gram_block(block_rows, block_columns, held, column_features, block_bytes, device)
            del column_features

    def _gram_block(self, rows: np.ndarray, columns: np.ndarray, row_features: dict[int, np.ndarray | None],
                    column_features: dict[int, np.ndarray | None], block_bytes: int, device: str | None) -> None:
        usable = np.array([row_features[int(i)] is not None and column_features[int(j)] is not None
                           for i, j in zip(rows.tolist(), columns.tolist())], dtype=bool)
        rows, columns = rows[usable], columns[usable]
        if not len(rows):
            return
        row_ids, column_ids = np.unique(rows), np.unique(columns)
        union = np.union1d(row_ids, column_ids)
        if len(union) ** 2 <= 2 * len(row_ids) * len(column_ids):  # one symmetric pass is cheaper
            features = {**row_features, **column_features}
            kappa = gram_inner_products([features[int(v)] for v in union], block_bytes=block_bytes,
                                        device=device).kappa()
            row_ids = column_ids = union
        else:
            kappa = gram_inner_products([row_features[int(v)] for v in row_ids],
                                        [column_features[int(v)] for v in column_ids],
                                        block_bytes=block_bytes, device=device).kappa()
        values = kappa[np.searchsorted(row_ids, rows), np.searchsorted(column_ids, columns)]
        low, high = np.minimum(rows, columns), np.maximum(rows, columns)
        self.write(low, high, values, np.full(len(rows), self.probed[0].n_items))

    def pairwise(self, first: np.ndarray, second: np.ndarray, feature_bytes: int) -> None:
        """Pairs with a checkpoint that dropped items, each on the items both kept."""
        if not len(first):
            return
        cache = _FeatureCache(self.store, feature_bytes)
        done_first, done_second, values, counts = [], [], [], []
        for i, j in zip(first.tolist(), second.tolist()):
            fa, fb = self._read(i, cache), self._read(j, cache)
            if fa is None or fb is None:
                continue
            try:
                value, used = kappa_pair(fa, fb, self.centered)
            except ValueError as exc:
                a, b = self.probed[i].checkpoint_id, self.probed[j].checkpoint_id
                self.catalog.record_failure(None, "kappa", f"{a}|{b}", "kappa", str(exc))
                continue
            done_first.append(i), done_second.append(j), values.append(value), counts.append(used)
        self.write(np.array(done_first, np.int64), np.array(done_second, np.int64), np.array(values),
                   np.array(counts, np.int64))


def update_kappa_graph(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, centered: bool, probed: list[Probed],
    graph: GraphSettings | None = None, progress: Callable[[int], Any] | None = None,
    started: float | None = None, device: str | None = "auto",
) -> KappaUpdate:
    """The sparse kappa graph: for every checkpoint not yet searched at its sha, exact kappa to the
    `graph.neighbors` highest of its `graph.candidates` fingerprint candidates, stored in `kappa`
    like dense pairs (a pair found from both ends is stored once) and marked in `kappa_graph`.

    Cost per checkpoint: one fingerprint search plus C exact kappas by the feature route (m d^2
    each), so a run is linear in the new checkpoints, whatever n. The fingerprints are brought up
    to date first. A checkpoint searched earlier keeps its pairs; newer checkpoints that are its
    neighbours add their pairs with it from their side.
    """
    from hubindex.fingerprints import fingerprint_candidates, update_fingerprints

    started = time.monotonic() if started is None else started
    graph = graph or GraphSettings()
    device = default_device() if device == "auto" else device
    update_fingerprints(catalog, index_root, corpus)
    todo_ids = _graph_todo(catalog, corpus, centered, probed)
    position = {p.checkpoint_id: k for k, p in enumerate(probed)}
    todo = [p for p in probed if p.checkpoint_id in todo_ids]
    run = _KappaRun(catalog, index_root, corpus, centered, probed, progress)
    prepared = _PreparedCache(run, KAPPA_FEATURE_BYTES)
    before = run.computed
    for start in range(0, len(todo), graph.batch):
        batch = todo[start:start + graph.batch]
        candidates = fingerprint_candidates(catalog, index_root, corpus, [p.checkpoint_id for p in batch],
                                            graph.candidates)
        pairs: dict[tuple[int, int], tuple[float, int]] = {}
        searched = []
        for p in batch:
            query = prepared.get(position[p.checkpoint_id])
            if query is None:
                continue
            others = [position[c] for c in candidates[p.checkpoint_id]]
            others = [o for o in others if prepared.get(o) is not None]
            values = kappa_against(query, [prepared.get(o) for o in others], centered, device) if others else []
            for k in np.argsort(values)[::-1][:graph.neighbors]:
                o = others[int(k)]
                i, j = sorted((position[p.checkpoint_id], o))
                pairs[(i, j)] = (float(values[int(k)]), int((query.rows & prepared.get(o).rows).sum()))
            searched.append(p)
        first = np.array([i for i, _ in pairs], dtype=np.int64)
        second = np.array([j for _, j in pairs], dtype=np.int64)
        values = np.array([v for v, _ in pairs.values()])
        counts = np.array([c for _, c in pairs.values()], dtype=np.int64)
        now = utcnow()
        marks = [(corpus.content_hash, centered, p.checkpoint_id, p.sha, graph.neighbors, graph.candidates, now)
                 for p in searched]
        with catalog.transaction():  # the pairs and the marks of one batch together
            run.write(first, second, values, counts)
            if marks:
                catalog.conn.executemany("INSERT OR REPLACE INTO kappa_graph VALUES (?, ?, ?, ?, ?, ?, ?)", marks)
    stored = catalog.conn.execute(
        "SELECT count(*) FROM kappa WHERE corpus_hash = ? AND centered = ?", [corpus.content_hash, centered]
    ).fetchone()[0]
    computed = run.computed - before
    return KappaUpdate(corpus, len(probed), computed, max(0, stored - computed), sorted(run.failed),
                       time.monotonic() - started, graph=graph)


def _graph_todo(catalog: Catalog, corpus: CorpusRef, centered: bool, probed: list[Probed]) -> set[str]:
    """The probed checkpoints the sparse graph has not searched at their current sha."""
    with _ProbedTable(catalog, probed):
        return {cid for (cid,) in catalog.conn.execute(
            "SELECT p.id FROM probed_now p ANTI JOIN kappa_graph g ON g.checkpoint_id = p.id "
            "AND g.checkpoint_sha = p.sha AND g.corpus_hash = ? AND g.centered = ?",
            [corpus.content_hash, centered]).fetchall()}


class _PreparedCache:
    """`kappa.prepare`d features by checkpoint position, least recently used out past `max_bytes`."""

    def __init__(self, run: _KappaRun, max_bytes: int) -> None:
        self.run, self.max_bytes = run, max_bytes
        self.held: OrderedDict[int, Prepared | None] = OrderedDict()
        self.bytes = 0

    def get(self, position: int) -> Prepared | None:
        if position in self.held:
            self.held.move_to_end(position)
            return self.held[position]
        features = self.run._read(position)
        prepared = None
        if features is not None:
            prepared = prepare(features, self.run.centered)
            if prepared.norm == 0.0:
                self.run._fail(self.run.probed[position].checkpoint_id, "kappa",
                               "constant features: kappa is undefined")
                prepared = None
        self.held[position] = prepared
        self.bytes += _prepared_bytes(prepared)
        while self.bytes > self.max_bytes and len(self.held) > 1:
            _, dropped = self.held.popitem(last=False)
            self.bytes -= _prepared_bytes(dropped)
        return prepared


def _prepared_bytes(prepared: Prepared | None) -> int:
    return 0 if prepared is None else prepared.features.nbytes + prepared.values.nbytes


def _chunk_numbers(positions: np.ndarray, per_chunk: int, n: int) -> np.ndarray:
    """For each of n positions, the chunk its rank among the distinct `positions` falls in."""
    distinct = np.unique(positions)
    chunks = np.full(n, -1, dtype=np.int64)
    chunks[distinct] = np.arange(len(distinct)) // per_chunk
    return chunks


def _write_pairs(catalog: Catalog, rows: list[tuple[Any, ...]]) -> None:
    """Insert or replace kappa rows in one transaction, handed to DuckDB as one Arrow table."""
    import pyarrow as pa

    names = ["corpus", "corpus_hash", "centered", "checkpoint_a", "checkpoint_b", "sha_a", "sha_b", "value",
             "n_items", "computed_at"]
    batch = pa.table({name: [row[k] for row in rows] for k, name in enumerate(names)})  # noqa: F841 - read by DuckDB
    with catalog.transaction():
        catalog.conn.execute(f"INSERT OR REPLACE INTO kappa ({', '.join(names)}) SELECT {', '.join(names)} FROM batch")


def kappa_matrix_from_catalog(
    catalog: Catalog, corpus: CorpusRef, centered: bool = True, only: set[str] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(checkpoint ids, kappa matrix, items per pair) of the probed checkpoints (those in `only`)
    whose pairs are all stored; a checkpoint lacking pairs is left out, most gaps first.

    Filled from one SQL join read as numpy columns (n^2 / 2 rows at n checkpoints, no Python loop).
    """
    probed = [p for p in probed_checkpoints(catalog, corpus) if only is None or p.checkpoint_id in only]
    n = len(probed)
    values = np.full((n, n), np.nan)
    counts = np.zeros((n, n), dtype=np.int64)
    np.fill_diagonal(values, 1.0)
    with _ProbedTable(catalog, probed):
        pairs = catalog.conn.execute(f"SELECT a.idx AS i, b.idx AS j, k.value, k.n_items {_CURRENT_PAIRS}",
                                     {"hash": corpus.content_hash, "centered": centered}).fetchnumpy()
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    values[i, j] = values[j, i] = pairs["value"]
    counts[i, j] = counts[j, i] = pairs["n_items"]
    for position, p in enumerate(probed):
        counts[position, position] = p.n_kept
    complete = _without_missing_pairs(np.isnan(values))
    ids = [p.checkpoint_id for p, keep in zip(probed, complete) if keep]
    return ids, values[np.ix_(complete, complete)], counts[np.ix_(complete, complete)]


def _without_missing_pairs(missing: np.ndarray) -> np.ndarray:
    """Rows to keep so that no kept pair is missing: the checkpoints with most missing pairs go first.

    A checkpoint probed after the last `hubindex kappa` lacks its pairs with everyone; dropping it
    keeps the others, where dropping every row with a gap would drop them all.
    """
    keep = np.ones(len(missing), dtype=bool)
    gaps = missing.sum(axis=1)
    while gaps.max(initial=0) > 0:
        worst = int(np.argmax(gaps))
        keep[worst] = False
        gaps -= missing[:, worst]
        gaps[worst] = 0
    return keep
