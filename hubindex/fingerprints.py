"""Task fingerprints in the catalog: which checkpoints have one, bringing them up to date, and neighbours.

A fingerprint's inner products estimate kappa (the sketch and its on-disk index:
`hubindex.fingerprint_index`); `nearest_checkpoints` takes the top candidates by that estimate and
re-ranks them with exact kappa from the embedding store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubindex import fingerprint_index
from hubindex.catalog import Catalog, utcnow
from hubindex.corpus_versions import CorpusRef
from hubindex.errors import UsageError
from hubindex.fingerprint_index import (
    FINGERPRINT_DIM,
    FINGERPRINT_SEED,
    LAYOUT_FILE,
    RERANK_BATCH,
    UPDATE_BATCH,
    FingerprintIndex,
    shard_files,
    fingerprint_folder,
    task_fingerprint,
)
from hubindex.kappa import kappa_against, prepare
from hubindex.probed import DEFAULT_LAYER, Probed
from hubindex.store import STORE_DIR, EmbeddingStore, StoreError

# ------------------------------------------------------------------------------ catalog side

# One folder's rows in the catalog. Queries below name rows through these, and a few checkpoints
# or rows through a registered Arrow table: at 10^6 checkpoints, materialising every row in Python
# would cost seconds per command.
_FOLDER_ROWS = "SELECT * FROM fingerprints WHERE corpus_hash = $hash AND dim = $dim AND seed = $seed"


@dataclass(frozen=True)
class _Registered:
    """The rows the catalog names in one folder (one per checkpoint; the others are dead)."""

    fp_ids: np.ndarray

    @property
    def committed(self) -> int:
        return int(self.fp_ids.max()) + 1 if len(self.fp_ids) else 0

    def live_mask(self, n_rows: int) -> np.ndarray:
        live = np.zeros(n_rows, dtype=bool)
        live[self.fp_ids] = True
        return live


def _params(corpus: CorpusRef, dim: int, seed: int) -> dict[str, Any]:
    return {"hash": corpus.content_hash, "dim": dim, "seed": seed}


def _registered(catalog: Catalog, corpus: CorpusRef, dim: int, seed: int) -> _Registered:
    found = catalog.conn.execute(f"SELECT fp_id FROM ({_FOLDER_ROWS})", _params(corpus, dim, seed)).fetchnumpy()
    return _Registered(np.asarray(found["fp_id"], dtype=np.int64))


class _Wanted:
    """A list of values as the DuckDB view `wanted (value)` while the block runs, to join against."""

    def __init__(self, catalog: Catalog, values: list[Any]) -> None:
        import pyarrow as pa

        self.catalog = catalog
        self.table = pa.table({"value": values})

    def __enter__(self) -> None:
        self.catalog.conn.register("wanted", self.table)

    def __exit__(self, *exc: object) -> None:
        self.catalog.conn.unregister("wanted")


def _rows_of(catalog: Catalog, corpus: CorpusRef, dim: int, seed: int, checkpoint_ids: list[str]) -> dict[str, int]:
    """checkpoint -> its row, for those of the given checkpoints that have a fingerprint."""
    with _Wanted(catalog, checkpoint_ids):
        rows = catalog.conn.execute(f"SELECT f.checkpoint_id, f.fp_id FROM ({_FOLDER_ROWS}) f "
                                    "JOIN wanted w ON f.checkpoint_id = w.value", _params(corpus, dim, seed)).fetchall()
    return {cid: int(fp) for cid, fp in rows}


def _names_of(catalog: Catalog, corpus: CorpusRef, dim: int, seed: int, fp_ids: list[int]) -> dict[int, str]:
    with _Wanted(catalog, fp_ids):
        rows = catalog.conn.execute(f"SELECT f.fp_id, f.checkpoint_id FROM ({_FOLDER_ROWS}) f "
                                    "JOIN wanted w ON f.fp_id = w.value", _params(corpus, dim, seed)).fetchall()
    return {int(fp): cid for fp, cid in rows}


def _probed_subset(catalog: Catalog, corpus: CorpusRef, checkpoint_ids: list[str]) -> dict[str, Probed]:
    """The newest stored features of the given checkpoints: `relate.probed_checkpoints`'s rows, for a few."""
    with _Wanted(catalog, checkpoint_ids):
        rows = catalog.conn.execute(
            """
            SELECT checkpoint_id, checkpoint_sha, path, file_sha256, n_items FROM (
                SELECT *, row_number() OVER (PARTITION BY checkpoint_id ORDER BY created_at DESC) AS newest
                FROM embeddings WHERE corpus_hash = $hash AND layer = $layer
                AND checkpoint_id IN (SELECT value FROM wanted)
            ) WHERE newest = 1
            """,
            {"hash": corpus.content_hash, "layer": DEFAULT_LAYER}).fetchall()
    return {row[0]: Probed(*row) for row in rows}


def _outdated(catalog: Catalog, corpus: CorpusRef, dim: int, seed: int) -> tuple[list[str], int]:
    """Probed checkpoints without a fingerprint of their newest features' sha (by id), and how many of
    them have an older one. The newest sha per checkpoint by arg_max: 2x faster than a window here."""
    rows = catalog.conn.execute(
        "SELECT n.checkpoint_id, f.checkpoint_id IS NOT NULL FROM ("
        " SELECT checkpoint_id, arg_max(checkpoint_sha, created_at) AS sha FROM embeddings"
        " WHERE corpus_hash = $hash AND layer = $layer GROUP BY checkpoint_id) n"
        f" LEFT JOIN ({_FOLDER_ROWS}) f ON f.checkpoint_id = n.checkpoint_id"
        " WHERE f.checkpoint_sha IS DISTINCT FROM n.sha ORDER BY n.checkpoint_id",
        {**_params(corpus, dim, seed), "layer": DEFAULT_LAYER}).fetchall()
    return [cid for cid, _ in rows], sum(bool(replacing) for _, replacing in rows)


def open_for_catalog(catalog: Catalog, index_root: Path, corpus: CorpusRef, dim: int = FINGERPRINT_DIM,
                     seed: int = FINGERPRINT_SEED, writable: bool = False) -> tuple[FingerprintIndex, _Registered]:
    """The corpus's fingerprint index holding exactly the rows the catalog names, and those rows."""
    registered = _registered(catalog, corpus, dim, seed)
    folder = fingerprint_folder(index_root, corpus.content_hash, dim, seed)
    # The module's settings are read here, at call time, so that tests can lower them.
    index = FingerprintIndex.open(folder, dim, seed, committed=registered.committed, writable=writable,
                                  shard_rows=fingerprint_index.SHARD_ROWS, ivf_lists=fingerprint_index.IVF_LISTS,
                                  approximate_above=fingerprint_index.APPROXIMATE_ABOVE)
    return index, registered


def update_fingerprints(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, dim: int = FINGERPRINT_DIM,
    seed: int = FINGERPRINT_SEED,
) -> tuple[int, int]:
    """Fingerprint the checkpoints without an up-to-date one (new, or sha changed); return (added, kept).

    Only the new rows are appended, UPDATE_BATCH at a time, each batch's catalog rows committed
    after its rows are on disk. A checkpoint that cannot be read or has constant features is
    recorded in `failures` and skipped; the others go on.
    """
    _remove_legacy_file(index_root, corpus)
    folder = fingerprint_folder(index_root, corpus.content_hash, dim, seed)
    if not (folder / LAYOUT_FILE).is_file():
        # Rows without a folder come from the one-file layout before this one (or a folder deleted
        # by hand): nothing holds their vectors any more, so they are fingerprinted again.
        with catalog.transaction():
            catalog.conn.execute("DELETE FROM fingerprints WHERE corpus_hash = $hash AND dim = $dim AND seed = $seed",
                                 _params(corpus, dim, seed))
    todo, replacing = _outdated(catalog, corpus, dim, seed)
    # Opened for writing even with nothing to add: it truncates what a crash left past the committed
    # rows, and rebuilds an IVF file that `hubindex check --repair` removed.
    writable = bool(todo) or (folder / LAYOUT_FILE).is_file()
    index, registered = open_for_catalog(catalog, index_root, corpus, dim, seed, writable=writable)
    kept = len(registered.fp_ids) - replacing
    if writable:
        index.close_full_shards()
    if not todo:
        return 0, kept
    store = EmbeddingStore(index_root)
    added = 0
    for start in range(0, len(todo), UPDATE_BATCH):
        batch = _probed_subset(catalog, corpus, todo[start:start + UPDATE_BATCH])
        done: list[Probed] = []
        vectors = []
        for p in (batch[c] for c in todo[start:start + UPDATE_BATCH] if c in batch):
            try:
                vectors.append(task_fingerprint(store.read(p.path, p.n_items, p.file_sha256), dim, seed))
                done.append(p)
            except (StoreError, ValueError) as exc:  # recorded; the other checkpoints go on
                catalog.record_failure(None, "kappa", p.checkpoint_id, "fingerprint", str(exc).splitlines()[0])
        if not done:
            continue
        fp_ids = index.append(np.stack(vectors))
        now = utcnow()
        with catalog.transaction():
            catalog.conn.executemany(
                "INSERT OR REPLACE INTO fingerprints (corpus_hash, checkpoint_id, checkpoint_sha, fp_id, dim, seed, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(corpus.content_hash, p.checkpoint_id, p.sha, int(fp), dim, seed, now) for p, fp in zip(done, fp_ids)],
            )
        added += len(done)
    return added, kept


def fingerprints_current(catalog: Catalog, index_root: Path, corpus: CorpusRef, dim: int = FINGERPRINT_DIM,
                         seed: int = FINGERPRINT_SEED) -> int | None:
    """How many fingerprints the corpus has when `update_fingerprints` would change nothing, else None.

    Only reads, so a read-only index can answer: nothing outdated, the folder complete, no rows past
    the committed ones, no legacy file, and every IVF file that a writable open would add or drop.
    """
    folder = fingerprint_folder(index_root, corpus.content_hash, dim, seed)
    if not (folder / LAYOUT_FILE).is_file() or any(folder.parent.glob(f"{corpus.content_hash[:16]}-*.faiss")):
        return None
    if _outdated(catalog, corpus, dim, seed)[0]:
        return None
    try:
        index, registered = open_for_catalog(catalog, index_root, corpus, dim, seed)
    except StoreError:
        return None
    full = index.full_shards
    ivf = {int(path.stem.split("-")[1]) for path in folder.glob("ivf-[0-9]*.faiss")}
    on_disk = sum(path.stat().st_size for _, path in shard_files(folder))
    if on_disk != index.n_rows * index.layout.row_bytes or any(s >= full for s in ivf):
        return None
    if index.n_rows >= index.approximate_above and len(ivf) < full:
        return None
    return len(registered.fp_ids)


def _remove_legacy_file(index_root: Path, corpus: CorpusRef) -> None:
    """Before this layout a corpus's fingerprints were one FAISS file; its rows are gone, so is it."""
    folder = Path(index_root) / STORE_DIR / "fingerprints"
    for path in folder.glob(f"{corpus.content_hash[:16]}-*.faiss") if folder.is_dir() else []:
        path.unlink(missing_ok=True)


def default_candidates(k: int) -> int:
    """How many fingerprint candidates are re-ranked exactly for k neighbours."""
    return max(10 * k, 100)


def fingerprint_candidates(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, checkpoint_ids: list[str], count: int,
    dim: int = FINGERPRINT_DIM, seed: int = FINGERPRINT_SEED,
) -> dict[str, list[str]]:
    """For each checkpoint, the `count` others with the largest fingerprint estimate of kappa (one batched search).

    A checkpoint without a fingerprint (never sketched, or its features failed) gets no candidates.
    """
    scored = _estimated_neighbours(catalog, index_root, corpus, checkpoint_ids, count, dim, seed, missing_ok=True)
    return {cid: [other for other, _ in scored.get(cid, [])] for cid in checkpoint_ids}


def _estimated_neighbours(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, checkpoint_ids: list[str], count: int, dim: int, seed: int,
    missing_ok: bool = False,
) -> dict[str, list[tuple[str, float]]]:
    """checkpoint -> [(other, estimate)], best first; estimates from the float16 rows."""
    query_rows = _rows_of(catalog, corpus, dim, seed, checkpoint_ids)
    missing = [c for c in checkpoint_ids if c not in query_rows]
    if missing and not missing_ok:
        raise UsageError(f"{missing[0]} has no fingerprint on corpus {corpus.name}"
                         + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; probe it and run `hubindex kappa`")
    asked = [c for c in checkpoint_ids if c in query_rows]
    if not asked:
        return {}
    index, registered = open_for_catalog(catalog, index_root, corpus, dim, seed)
    queries = index.rows(np.array([query_rows[c] for c in asked], dtype=np.int64))
    _, found = index.search(queries, min(count + 1, len(registered.fp_ids)), registered.live_mask(index.n_rows))
    name_of = _names_of(catalog, corpus, dim, seed, sorted({int(r) for r in found.ravel() if r >= 0}))
    out = {}
    for cid, query, rows in zip(asked, queries, found):
        others = [int(r) for r in rows if name_of.get(int(r), cid) != cid][:count]
        estimates = index.rows(np.array(others, dtype=np.int64)) @ query if others else np.zeros(0)
        out[cid] = [(name_of[r], float(e)) for r, e in zip(others, estimates)]
    return out


def fingerprint_matrix(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, dim: int = FINGERPRINT_DIM, seed: int = FINGERPRINT_SEED,
) -> tuple[list[str], np.ndarray]:
    """(checkpoint ids, n x dim float32 fingerprints) of the live rows, ordered by checkpoint id."""
    index, _ = open_for_catalog(catalog, index_root, corpus, dim, seed)
    found = catalog.conn.execute(f"SELECT checkpoint_id, fp_id FROM ({_FOLDER_ROWS}) ORDER BY checkpoint_id",
                                 _params(corpus, dim, seed)).fetchnumpy()
    return [str(c) for c in found["checkpoint_id"]], index.rows(np.asarray(found["fp_id"], dtype=np.int64))


def nearest_checkpoints(
    catalog: Catalog, index_root: Path, corpus: CorpusRef, checkpoint_id: str, k: int,
    candidates: int | None = None, dim: int = FINGERPRINT_DIM, seed: int = FINGERPRINT_SEED,
) -> list[tuple[str, float, float]]:
    """The k checkpoints with the highest exact kappa among the `candidates` best fingerprint estimates.

    Returns (checkpoint id, exact kappa, fingerprint estimate), by exact kappa. A true neighbour is
    missed only if its estimate is outside the top `candidates` (default max(10 k, 100)).
    """
    count = default_candidates(k) if candidates is None else max(candidates, k)
    estimated = _estimated_neighbours(catalog, index_root, corpus, [checkpoint_id], count, dim, seed)[checkpoint_id]
    probed = _probed_subset(catalog, corpus, [checkpoint_id] + [c for c, _ in estimated])
    if checkpoint_id not in probed:
        raise UsageError(f"{checkpoint_id} has a fingerprint but no stored features on corpus {corpus.name}; "
                         "probe it again")
    store = EmbeddingStore(index_root)

    def features(p: Probed) -> np.ndarray:
        return store.read(p.path, p.n_items, p.file_sha256)

    query = prepare(features(probed[checkpoint_id]))  # its norm once, not once per batch
    scored = [(c, e) for c, e in estimated if c in probed]  # a checkpoint without features now has no kappa
    exact: list[float] = []
    for start in range(0, len(scored), RERANK_BATCH):
        batch = [features(probed[c]) for c, _ in scored[start:start + RERANK_BATCH]]
        exact.extend(float(v) for v in kappa_against(query, batch, centered=True))
    ranked = sorted(zip((c for c, _ in scored), exact, (e for _, e in scored)), key=lambda t: (-t[1], t[0]))
    return ranked[:k]
