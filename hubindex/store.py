"""The FAISS embedding store: one reconstructable index per (checkpoint, corpus, layer, pooling).

On-disk layout, under the index folder:

    store/embeddings/<corpus hash[:16]>/<key>.faiss
        IndexIDMap2(IndexFlatL2) of the feature rows; the id of a row is its item's position in
        the corpus, and items the checkpoint dropped are absent. <key> is a hash of
        (checkpoint sha, corpus hash, layer, pooling, dtype), so a changed checkpoint gets a new file.

Files are written to a temporary name in the same folder, flushed to disk and renamed into
place, so a crash leaves either the old file or the new one, never half of one. The catalog's
`embeddings` table registers a file (with its sha256) only after it is in place; a file on disk
without a row is simply overwritten by the next probe.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubindex.errors import HubindexError
from hubindex.kappa import kept_rows

STORE_DIR = "store"


class StoreError(HubindexError):
    """A stored file is missing, unreadable or not what the catalog says."""


def embedding_key(checkpoint_sha: str, corpus_hash: str, layer: str, pooling: str, dtype: str = "float32") -> str:
    """Relative path of a feature matrix in the store (float32 keys are those from before dtype was part of it)."""
    parts = (checkpoint_sha, corpus_hash, layer, pooling) + (() if dtype == "float32" else (dtype,))
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"{STORE_DIR}/embeddings/{corpus_hash[:16]}/{digest[:32]}.faiss"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data to path so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


@dataclass(frozen=True)
class StoredMatrix:
    path: str  # relative to the index folder
    n_items: int
    n_kept: int
    dim: int
    sha256: str


class EmbeddingStore:
    """Feature matrices of an index folder, as FAISS files."""

    def __init__(self, index_root: Path) -> None:
        self.root = Path(index_root)

    def write(self, relative: str, features: np.ndarray) -> StoredMatrix:
        """Store a feature matrix (NaN rows = dropped items) atomically; return what was stored."""
        import faiss

        if features.ndim != 2:
            raise ValueError(f"features must be a matrix, got shape {features.shape}")
        rows = kept_rows(features)
        kept = np.ascontiguousarray(features[rows], dtype=np.float32)
        index = faiss.IndexIDMap2(faiss.IndexFlatL2(features.shape[1]))
        index.add_with_ids(kept, np.flatnonzero(rows).astype(np.int64))
        data = faiss.serialize_index(index).tobytes()
        path = self.root / relative
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        return StoredMatrix(relative, features.shape[0], int(rows.sum()), features.shape[1],
                            hashlib.sha256(data).hexdigest())

    def read(self, relative: str, n_items: int, sha256: str | None = None) -> np.ndarray:
        """The stored matrix with n_items rows, NaN where an item was dropped."""
        import faiss

        path = self.root / relative
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"stored features missing or unreadable: {path} ({exc.strerror or exc})") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"stored features changed on disk since they were registered: {path}")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise StoreError(f"not a FAISS index: {path} ({str(exc).splitlines()[0]})") from None
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= n_items):
            raise StoreError(f"{path} holds item ids outside 0..{n_items - 1}")
        out = np.full((n_items, index.d), np.nan, dtype=np.float32)
        if ids.size:
            out[ids] = index.index.reconstruct_n(0, index.ntotal)
        return out

    def is_valid(self, relative: str, sha256: str) -> bool:
        """Whether the file exists and is exactly what was registered."""
        path = self.root / relative
        return path.is_file() and file_sha256(path) == sha256
