"""Relate probed checkpoints: the kappa table (incremental) and task fingerprints for neighbour search."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import HubindexError, UsageError
from hubindex.kappa import GRAM_BLOCK_BYTES, TensorSketch, _prepare, gram_inner_products, kappa_pair, kept_rows
from hubindex.store import STORE_DIR, EmbeddingStore, StoreError, atomic_write_bytes

DEFAULT_LAYER = "last"
FINGERPRINT_DIM = 4096
FINGERPRINT_SEED = 0


@dataclass(frozen=True)
class Probed:
    """A checkpoint's stored features on one corpus."""

    checkpoint_id: str
    sha: str
    path: str
    file_sha256: str
    n_items: int


@dataclass(frozen=True)
class CorpusRef:
    name: str
    content_hash: str


def resolve_corpus(catalog: Catalog, corpus: str | None) -> CorpusRef:
    """A probed corpus by name (its latest content) or hash prefix; the only one if None."""
    rows = catalog.conn.execute(
        "SELECT corpus, corpus_hash, max(created_at) FROM embeddings GROUP BY 1, 2 ORDER BY 3 DESC"
    ).fetchall()
    if not rows:
        raise HubindexError("no checkpoint has been probed yet; run `hubindex probe` first")
    if corpus is None:
        names = {r[0] for r in rows}
        if len(names) > 1:
            raise UsageError(f"several corpora are probed ({', '.join(sorted(names))}); choose one with --corpus")
        return CorpusRef(rows[0][0], rows[0][1])
    for name, content_hash, _ in rows:  # newest first: a name means its latest content
        if corpus in (name, content_hash) or (len(corpus) >= 8 and content_hash.startswith(corpus)):
            return CorpusRef(name, content_hash)
    known = ", ".join(sorted({r[0] for r in rows}))
    raise UsageError(f"corpus {corpus!r} has not been probed; probed corpora: {known}")


def probed_checkpoints(catalog: Catalog, corpus: CorpusRef) -> list[Probed]:
    """The newest stored features of each checkpoint on a corpus, ordered by checkpoint id."""
    rows = catalog.conn.execute(
        """
        SELECT checkpoint_id, checkpoint_sha, path, file_sha256, n_items FROM (
            SELECT *, row_number() OVER (PARTITION BY checkpoint_id ORDER BY created_at DESC) AS newest
            FROM embeddings WHERE corpus_hash = ? AND layer = ?
        ) WHERE newest = 1 ORDER BY checkpoint_id
        """,
        [corpus.content_hash, DEFAULT_LAYER],
    ).fetchall()
    return [Probed(*row) for row in rows]


class _FeatureCache:
    """Loads each checkpoint's features once per command."""

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store
        self.loaded: dict[str, np.ndarray] = {}

    def get(self, probed: Probed) -> np.ndarray:
        if probed.checkpoint_id not in self.loaded:
            self.loaded[probed.checkpoint_id] = self.store.read(probed.path, probed.n_items, probed.file_sha256)
        return self.loaded[probed.checkpoint_id]


@dataclass
class KappaUpdate:
    corpus: CorpusRef
    checkpoints: int
    computed: int
    reused: int
    failed: list[str]
    seconds: float

    def line(self) -> str:
        failed = f", {len(self.failed)} checkpoints failed (see failures)" if self.failed else ""
        return (
            f"kappa on {self.corpus.name} ({self.corpus.content_hash[:12]}): {self.checkpoints} checkpoints, "
            f"{self.computed} pairs computed, {self.reused} reused{failed} in {self.seconds:.1f} s"
        )


def missing_pairs(catalog: Catalog, corpus: CorpusRef, centered: bool,
                  probed: list[Probed]) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) positions in `probed` (i < j) of the pairs without a kappa row at both current shas.

    Found in SQL: a count of the current pairs first - a no-op run stops there, loading no pair -
    then, only if some are missing, an anti-join of all pairs against the stored ones.
    """
    import pyarrow as pa

    n = len(probed)
    table = pa.table({"idx": list(range(n)), "id": [p.checkpoint_id for p in probed], "sha": [p.sha for p in probed]})
    catalog.conn.register("probed_now", table)
    try:
        stored = ("SELECT checkpoint_a, checkpoint_b, sha_a, sha_b FROM kappa WHERE corpus_hash = $hash "
                  "AND centered = $centered")
        params = {"hash": corpus.content_hash, "centered": centered}
        ((current,),) = catalog.conn.execute(
            f"SELECT count(*) FROM ({stored}) k JOIN probed_now a ON k.checkpoint_a = a.id AND k.sha_a = a.sha "
            "JOIN probed_now b ON k.checkpoint_b = b.id AND k.sha_b = b.sha", params).fetchall()
        if current == n * (n - 1) // 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        found = catalog.conn.execute(
            f"SELECT a.idx AS i, b.idx AS j FROM probed_now a JOIN probed_now b ON a.id < b.id "
            f"ANTI JOIN ({stored}) k ON k.checkpoint_a = a.id AND k.checkpoint_b = b.id "
            "AND k.sha_a = a.sha AND k.sha_b = b.sha ORDER BY i, j", params).fetchnumpy()
    finally:
        catalog.conn.unregister("probed_now")
    return found["i"].astype(np.int64), found["j"].astype(np.int64)


def covering_checkpoints(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    """Checkpoints that touch every given pair, few of them: most pairs first (a greedy vertex cover).

    New or changed checkpoints miss pairs with everyone; the others only with them. So after a
    few new checkpoints, kappa is computed for those rows against every column, not for all rows.
    """
    remaining = np.ones(len(first), dtype=bool)
    degree = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    cover = []
    while remaining.any():
        if len(cover) >= n // 2:  # rows x all would cost as much as all pairs at once (symmetric)
            return np.arange(n)
        v = int(np.argmax(degree))
        cover.append(v)
        hit = remaining & ((first == v) | (second == v))
        remaining &= ~hit
        degree -= np.bincount(first[hit], minlength=n) + np.bincount(second[hit], minlength=n)
    return np.array(sorted(cover), dtype=np.int64)


def update_kappa(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, centered: bool = True,
    progress: Callable[[int], Any] | None = None, block_bytes: int = GRAM_BLOCK_BYTES,
) -> KappaUpdate:
    """Compute the kappa pairs the catalog lacks (new checkpoints, or ones whose sha changed).

    Pairs of checkpoints that kept every item go through the Gram route (`gram_inner_products`):
    the rows are a few checkpoints that touch every missing pair (`covering_checkpoints`), the
    columns every checkpoint, so an incremental run costs (new x all) pairs, a first run all pairs
    at once, and memory is one band of the item Gram matrices plus the features. Pairs with a
    checkpoint that dropped items (e.g. words lost to truncation) are compared on the items both
    kept, one pair at a time.
    """
    started = time.monotonic()
    probed = probed_checkpoints(catalog, corpus)
    n = len(probed)
    first, second = missing_pairs(catalog, corpus, centered, probed)
    reused = n * (n - 1) // 2 - len(first)
    failed: set[str] = set()
    if not len(first):
        return KappaUpdate(corpus, n, 0, reused, [], time.monotonic() - started)
    cache = _FeatureCache(EmbeddingStore(index_root))

    def load(position: int) -> np.ndarray | None:
        p = probed[position]
        if p.checkpoint_id in failed:
            return None
        try:
            return cache.get(p)
        except StoreError as exc:  # recorded; the other pairs go on
            failed.add(p.checkpoint_id)
            catalog.record_failure(None, "kappa", p.checkpoint_id, "store", str(exc))
            return None

    involved = np.unique(np.concatenate([first, second]))
    features = {int(v): f for v in involved if (f := load(int(v))) is not None}
    complete = {v for v, f in features.items() if bool(kept_rows(f).all())}
    rows = [int(v) for v in covering_checkpoints(first, second, n) if int(v) in complete]
    columns = sorted(complete)
    values: dict[tuple[int, int], tuple[float, int]] = {}
    if rows and len(columns) > 1:
        prepared = {v: _prepare(features[v], None, centered) for v in columns}
        if any(not np.any(prepared[v]) for v in columns):
            constant = [probed[v].checkpoint_id for v in columns if not np.any(prepared[v])]
            raise HubindexError(f"constant features (kappa undefined) for {', '.join(constant[:3])}")
        symmetric = rows == columns
        products = gram_inner_products([prepared[v] for v in rows],
                                       None if symmetric else [prepared[v] for v in columns], block_bytes)
        kappa = products.kappa()
        row_of = {v: r for r, v in enumerate(rows)}
        column_of = {v: c for c, v in enumerate(columns)}
        m = next(iter(features.values())).shape[0]
        for i, j in zip(first.tolist(), second.tolist()):
            if i in complete and j in complete:
                if i in row_of:
                    values[(i, j)] = (float(kappa[row_of[i], column_of[j]]), m)
                elif j in row_of:
                    values[(i, j)] = (float(kappa[row_of[j], column_of[i]]), m)
    new_rows = []
    for i, j in zip(first.tolist(), second.tolist()):
        a, b = probed[i], probed[j]
        if (i, j) not in values:
            fa, fb = features.get(i), features.get(j)
            if fa is None or fb is None:
                continue
            try:
                values[(i, j)] = kappa_pair(fa, fb, centered)
            except ValueError as exc:
                catalog.record_failure(None, "kappa", f"{a.checkpoint_id}|{b.checkpoint_id}", "kappa", str(exc))
                continue
        value, n_items = values[(i, j)]
        new_rows.append((corpus.name, corpus.content_hash, centered, a.checkpoint_id, b.checkpoint_id,
                         a.sha, b.sha, value, n_items, utcnow()))
    if new_rows:
        _write_pairs(catalog, new_rows)
        if progress:
            progress(len(new_rows))
    return KappaUpdate(corpus, n, len(new_rows), reused, sorted(failed), time.monotonic() - started)


def _write_pairs(catalog: Catalog, rows: list[tuple[Any, ...]]) -> None:
    """Insert or replace kappa rows in one transaction, handed to DuckDB as one Arrow table."""
    import pyarrow as pa

    names = ["corpus", "corpus_hash", "centered", "checkpoint_a", "checkpoint_b", "sha_a", "sha_b", "value",
             "n_items", "computed_at"]
    batch = pa.table({name: [row[k] for row in rows] for k, name in enumerate(names)})  # noqa: F841 - read by DuckDB
    with catalog.transaction():
        catalog.conn.execute(f"INSERT OR REPLACE INTO kappa ({', '.join(names)}) SELECT {', '.join(names)} FROM batch")


def kappa_matrix_from_catalog(
    catalog: Catalog, corpus: CorpusRef, centered: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(checkpoint ids, kappa matrix, items per pair) of every probed checkpoint with all its pairs."""
    probed = probed_checkpoints(catalog, corpus)
    position = {p.checkpoint_id: i for i, p in enumerate(probed)}
    shas = {p.checkpoint_id: p.sha for p in probed}
    n = len(probed)
    values = np.full((n, n), np.nan)
    counts = np.zeros((n, n), dtype=np.int64)
    np.fill_diagonal(values, 1.0)
    for a, b, sha_a, sha_b, value, n_items in catalog.conn.execute(
        "SELECT checkpoint_a, checkpoint_b, sha_a, sha_b, value, n_items FROM kappa "
        "WHERE corpus_hash = ? AND centered = ?",
        [corpus.content_hash, centered],
    ).fetchall():
        if a in position and b in position and (shas[a], shas[b]) == (sha_a, sha_b):
            i, j = position[a], position[b]
            values[i, j] = values[j, i] = value
            counts[i, j] = counts[j, i] = n_items
    complete = ~np.isnan(values).any(axis=1)
    ids = [p.checkpoint_id for p, keep in zip(probed, complete) if keep]
    return ids, values[np.ix_(complete, complete)], counts[np.ix_(complete, complete)]


# ------------------------------------------------------------------------------ fingerprints


def fingerprint_path(corpus: CorpusRef, dim: int) -> str:
    return f"{STORE_DIR}/fingerprints/{corpus.content_hash[:16]}-{dim}.faiss"


def _load_fingerprint_index(index_root: Path, relative: str, dim: int) -> Any:
    import faiss

    path = index_root / relative
    if not path.is_file():
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise StoreError(f"fingerprint index unreadable: {path} ({str(exc).splitlines()[0]}); delete it to rebuild") from None


def update_fingerprints(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, dim: int = FINGERPRINT_DIM,
    seed: int = FINGERPRINT_SEED,
) -> tuple[int, int]:
    """Sketch the checkpoints without an up-to-date fingerprint; return (added, kept)."""
    import faiss

    probed = probed_checkpoints(catalog, corpus)
    if not probed:
        return 0, 0
    current = {
        cid: (sha, fp_id)
        for cid, sha, fp_id in catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, fp_id FROM fingerprints WHERE corpus_hash = ? AND dim = ? AND seed = ?",
            [corpus.content_hash, dim, seed],
        ).fetchall()
    }
    todo = [p for p in probed if current.get(p.checkpoint_id, (None,))[0] != p.sha]
    if not todo:
        return 0, len(current)
    relative = fingerprint_path(corpus, dim)
    index = _load_fingerprint_index(index_root, relative, dim)
    # The table is the truth: drop rows a crash left behind and rows being replaced.
    replaced = {p.checkpoint_id for p in todo}
    keep_ids = {fp for cid, (_, fp) in current.items() if cid not in replaced}
    present = faiss.vector_to_array(index.id_map).astype(np.int64) if index.ntotal else np.array([], np.int64)
    stale = np.array([i for i in present if i not in keep_ids], dtype=np.int64)
    if stale.size:
        index.remove_ids(stale)
    sketch = TensorSketch(probed[0].n_items, dim, seed)
    features = _FeatureCache(EmbeddingStore(index_root))
    next_id = catalog.conn.execute("SELECT coalesce(max(fp_id), 0) FROM fingerprints").fetchone()[0] + 1
    rows = []
    for offset, p in enumerate(todo):
        vector = sketch.fingerprint(features.get(p))
        fp_id = next_id + offset
        index.add_with_ids(vector[None, :], np.array([fp_id], dtype=np.int64))
        rows.append((corpus.content_hash, p.checkpoint_id, p.sha, fp_id, dim, seed, utcnow()))
    atomic_write_bytes(index_root / relative, faiss.serialize_index(index).tobytes())
    with catalog.transaction():
        catalog.conn.executemany(
            "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?)", rows
        )
    return len(rows), len(keep_ids)


def nearest_checkpoints(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, checkpoint_id: str, k: int,
    dim: int = FINGERPRINT_DIM,
) -> list[tuple[str, float]]:
    """The k checkpoints whose fingerprints have the largest inner product (estimated kappa)."""
    row = catalog.conn.execute(
        "SELECT fp_id FROM fingerprints WHERE corpus_hash = ? AND checkpoint_id = ? AND dim = ?",
        [corpus.content_hash, checkpoint_id, dim],
    ).fetchone()
    if row is None:
        raise UsageError(
            f"{checkpoint_id} has no fingerprint on corpus {corpus.name}; probe it and run `hubindex kappa`"
        )
    index = _load_fingerprint_index(index_root, fingerprint_path(corpus, dim), dim)
    names = dict(catalog.conn.execute(
        "SELECT fp_id, checkpoint_id FROM fingerprints WHERE corpus_hash = ? AND dim = ?",
        [corpus.content_hash, dim],
    ).fetchall())
    query = index.reconstruct(int(row[0]))[None, :]
    scores, ids = index.search(query, min(k + 1, index.ntotal))
    found = [(names[i], float(s)) for s, i in zip(scores[0], ids[0]) if i in names and names[i] != checkpoint_id]
    return found[:k]
