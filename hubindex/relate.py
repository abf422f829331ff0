"""Relate probed checkpoints: the kappa table (incremental) and task fingerprints for neighbour search."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import HubindexError, UsageError
from hubindex.kappa import TensorSketch, kappa_pair
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


def update_kappa(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, centered: bool = True,
    progress: Callable[[int], Any] | None = None,
) -> KappaUpdate:
    """Compute the kappa pairs the catalog lacks (new checkpoints, or ones whose sha changed)."""
    started = time.monotonic()
    probed = probed_checkpoints(catalog, corpus)
    stored = {
        (a, b): (sha_a, sha_b)
        for a, b, sha_a, sha_b in catalog.conn.execute(
            "SELECT checkpoint_a, checkpoint_b, sha_a, sha_b FROM kappa WHERE corpus_hash = ? AND centered = ?",
            [corpus.content_hash, centered],
        ).fetchall()
    }
    cache = _FeatureCache(EmbeddingStore(index_root))
    failed: set[str] = set()

    def load(p: Probed) -> np.ndarray | None:
        if p.checkpoint_id in failed:
            return None
        try:
            return cache.get(p)
        except StoreError as exc:  # recorded; the other pairs go on
            failed.add(p.checkpoint_id)
            catalog.record_failure(None, "kappa", p.checkpoint_id, "store", str(exc))
            return None

    new_rows = []
    reused = 0
    for i, a in enumerate(probed):
        for b in probed[i + 1:]:
            if stored.get((a.checkpoint_id, b.checkpoint_id)) == (a.sha, b.sha):
                reused += 1
                continue
            fa, fb = load(a), load(b)
            if fa is None or fb is None:
                continue
            try:
                value, n_items = kappa_pair(fa, fb, centered)
            except ValueError as exc:
                catalog.record_failure(None, "kappa", f"{a.checkpoint_id}|{b.checkpoint_id}", "kappa", str(exc))
                continue
            new_rows.append((corpus.name, corpus.content_hash, centered, a.checkpoint_id, b.checkpoint_id,
                             a.sha, b.sha, value, n_items, utcnow()))
            if progress:
                progress(1)
    if new_rows:
        with catalog.transaction():
            catalog.conn.executemany("INSERT OR REPLACE INTO kappa VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", new_rows)
    return KappaUpdate(corpus, len(probed), len(new_rows), reused, sorted(failed), time.monotonic() - started)


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
