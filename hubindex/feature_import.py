"""Registering features computed elsewhere: `hubindex features import`.

Features probed on a GPU cluster (or synthetic ones, for benchmarks of large task spaces) join the
index exactly as probed ones do: one matrix per (checkpoint, corpus), rows aligned with the
corpus' items (a row of NaN marks an item the checkpoint dropped), written to the embedding store
under the same key - (checkpoint sha, corpus content hash, layer, pooling, dtype) - and registered
in `embeddings` with its sha256, probe `import`. kappa, neighbours, MMI and scores then use them.

A checkpoint is named by its catalog id and keyed by the catalog's sha (its local copy's, if it
has one). With `register_new`, an id the catalog lacks gets a row of its own (source `import`),
keyed by the sha given in the manifest or else the sha256 of the .npy file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import UsageError
from hubindex.index import Index
from hubindex.store import EmbeddingStore, embedding_key, file_sha256
from hubindex.tasks import load_feature_matrix
from hubindex.types import CheckpointRecord, CorpusData

MANIFEST = "features.csv"
IMPORT_PROBE = "import"
# Matrices registered per catalog transaction.
COMMIT_EVERY = 500


@dataclass(frozen=True)
class FeatureFile:
    checkpoint_id: str
    path: Path
    sha: str | None = None  # for checkpoints the catalog lacks


@dataclass
class ImportSummary:
    imported: int = 0
    unchanged: int = 0
    registered: list[str] = field(default_factory=list)  # new catalog rows

    def line(self, corpus: CorpusData) -> str:
        new = f", {len(self.registered)} new checkpoint rows" if self.registered else ""
        return (f"features on {corpus.name} ({corpus.size} items, hash {corpus.content_hash[:12]}): "
                f"{self.imported} imported, {self.unchanged} unchanged{new}")


def read_sources(pairs: list[str], folders: list[Path]) -> list[FeatureFile]:
    """CHECKPOINT_ID=FILE.npy pairs, and the rows of each folder's features.csv (checkpoint_id, file[, sha])."""
    files = []
    for pair in pairs:
        checkpoint_id, equals, path = pair.partition("=")
        if not equals or not checkpoint_id or not path:
            raise UsageError(f"{pair!r}: give CHECKPOINT_ID=FILE.npy")
        files.append(FeatureFile(checkpoint_id, Path(path).expanduser()))
    for folder in folders:
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise UsageError(f"{folder}: no {MANIFEST} (columns checkpoint_id, file and optionally sha)")
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not {"checkpoint_id", "file"} <= set(reader.fieldnames or []):
                raise UsageError(f"{manifest}: needs the columns checkpoint_id and file (and optionally sha)")
            for number, row in enumerate(reader, start=2):
                if not row["checkpoint_id"] or not row["file"]:
                    raise UsageError(f"{manifest} line {number}: checkpoint_id and file must not be empty")
                files.append(FeatureFile(row["checkpoint_id"], folder / row["file"], row.get("sha") or None))
    if not files:
        raise UsageError("nothing to import: give CHECKPOINT_ID=FILE.npy pairs or --from FOLDER")
    return files


def load_matrix(path: Path, corpus: CorpusData) -> np.ndarray:
    """A feature matrix with one row per corpus item (NaN rows: dropped items); a UsageError if not."""
    matrix = load_feature_matrix(path, "features")
    if matrix.shape[0] != corpus.size:
        raise UsageError(f"{path}: {matrix.shape[0]} rows, but corpus {corpus.name} has {corpus.size} items "
                         "(one row per item, in the corpus' order)")
    matrix = matrix.astype(np.float32)
    dropped = np.isnan(matrix).all(axis=1)
    if not np.isfinite(matrix[~dropped]).all():
        raise UsageError(f"{path}: holds inf, or NaN in rows that are not wholly NaN (a dropped item is a row of NaN)")
    if dropped.all():
        raise UsageError(f"{path}: every row is NaN (every item dropped)")
    return matrix


def import_features(index: Index, corpus: CorpusData, files: list[FeatureFile], layer: str = "last",
                    pooling: str = "imported", dtype: str = "float32", register_new: bool = False) -> ImportSummary:
    """Store and register each file's matrix, COMMIT_EVERY to a transaction.

    A bad file stops the import with a one-line error naming it; what was registered before it
    stays, and running the import again skips matrices already registered unchanged.
    """
    summary = ImportSummary()
    store = EmbeddingStore(index.root)
    with index.open_catalog() as catalog:
        known = {row["checkpoint_id"]: row for row in catalog.checkpoint_rows([f.checkpoint_id for f in files])}
        unknown = sorted({f.checkpoint_id for f in files} - set(known))
        if unknown and not register_new:
            raise UsageError(f"not in the catalog: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                             "(crawl them first, or pass --register-new to add rows keyed by the manifest's sha)")
        shas = {f.checkpoint_id: _sha(known.get(f.checkpoint_id), f) for f in files}
        new = set(unknown)
        pending: list[dict] = []
        for file in files:
            matrix = load_matrix(file.path, corpus)
            sha = shas[file.checkpoint_id]
            stored = catalog.embedding(sha, corpus.content_hash, layer, pooling, file.checkpoint_id, dtype)
            key = embedding_key(sha, corpus.content_hash, layer, pooling, dtype)
            written = store.write(key, matrix)
            if stored is not None and stored["file_sha256"] == written.sha256 and stored["checkpoint_id"] == file.checkpoint_id:
                summary.unchanged += 1
                continue
            pending.append({
                "checkpoint_id": file.checkpoint_id, "checkpoint_sha": sha, "corpus": corpus.name,
                "corpus_hash": corpus.content_hash, "layer": layer, "pooling": pooling, "dtype": dtype,
                "probe": IMPORT_PROBE, "probe_version": "1", "n_items": written.n_items, "n_kept": written.n_kept,
                "dim": written.dim, "path": written.path, "file_sha256": written.sha256, "seconds": None,
                "created_at": utcnow(),
            })
            if len(pending) >= COMMIT_EVERY:
                _commit(catalog, pending, new, summary)
                pending = []
        if pending:
            _commit(catalog, pending, new, summary)
    return summary


def _sha(row: dict | None, file: FeatureFile) -> str:
    """The sha features of this checkpoint are keyed by: the catalog's, else the manifest's, else the file's."""
    if row is not None:
        sha = row.get("local_sha") if row.get("local_path") and row.get("local_sha") else row.get("sha")
        if not sha:
            raise UsageError(f"{file.checkpoint_id} has no sha in the catalog; crawl it again")
        return sha
    if file.sha:
        return file.sha
    if not file.path.is_file():
        raise UsageError(f"{file.path}: no such file")
    return file_sha256(file.path)


def _commit(catalog: Catalog, rows: list[dict], new: set[str], summary: ImportSummary) -> None:
    """Register a batch of matrices in one transaction, with the catalog rows of new checkpoints among them."""
    records = [CheckpointRecord(row["checkpoint_id"], {"repo_id": row["checkpoint_id"].partition(":")[2],
                                                       "sha": row["checkpoint_sha"]})
               for row in rows if row["checkpoint_id"] in new]
    with catalog.transaction():
        if records:
            result = catalog.upsert_checkpoints(records, source=IMPORT_PROBE, owned_columns={"repo_id", "sha"})
            if result.rejected:
                raise UsageError(f"cannot register {result.rejected[0][0]}: {result.rejected[0][1]}")
        for row in rows:
            catalog.register_embedding(row)
    summary.imported += len(rows)
    summary.registered += [record.checkpoint_id for record in records]
