"""The fingerprint rows: the TensorSketch of a checkpoint's features, and the append-only sharded index of them.

A checkpoint's fingerprint on a corpus is a degree-2 TensorSketch of its centred item Gram matrix
F F^T, divided by the exact ||F^T F||_F, so <x_i, x_j> estimates kappa(i, j) (unbiased, error about
1/sqrt(dim)). `neighbors` takes the top candidates by that estimate and re-ranks them with exact
kappa from the embedding store, so the sketch only has to bring the true neighbours into the
candidate list, not order them.

On-disk layout, under the index folder, one folder per (corpus content, sketch dim, seed):

    store/fingerprints/<corpus hash[:16]>-<dim>-<seed>/
        layout.json          dim, seed, row dtype and rows per shard (fixed when the folder is made)
        rows-00000.f16 ...   raw little-endian float16 rows, SHARD_ROWS rows per file, no header;
                             row r of the folder is row r % SHARD_ROWS of shard r // SHARD_ROWS
        ivf-trained.faiss    an empty IVF + 8-bit scalar quantizer, trained once on the closed
                             shards when the folder first reaches APPROXIMATE_ABOVE rows
        ivf-00000.faiss ...  that trained index holding one closed (full) shard's rows, ids = row numbers

A row number is the fingerprint's `fp_id` in the catalog's `fingerprints` table. Rows are only
ever appended (written, flushed and fsynced; existing bytes are never rewritten), and the IVF
file of a shard is written once, atomically, when the shard fills, so closing a shard rewrites
nothing else. The table is the truth: rows beyond the highest fp_id it names (a crash between
the append and the catalog write) are ignored by readers and truncated by the next writer; a
checkpoint whose sha changed gets a new row and its table row points there, and rows no table
row points to are dead and filtered out at query time.

Search is exact below APPROXIMATE_ABOVE live rows: a flat inner product over the rows, read
through np.memmap. Above it, each closed shard is searched through its IVF file (mapped, not
read, with faiss's IO_FLAG_MMAP_IFC), probing IVF_NPROBE of IVF_LISTS lists, and the shard still
filling is scanned flat. Estimates shown to users are recomputed from the float16 rows, never
taken from the 8-bit codes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.kappa import kept_rows
from hubindex.store import STORE_DIR, StoreError, atomic_write_bytes

# 1,024 float16 values (2 KB) per fingerprint: 2 GB of rows and 1 GB of IVF codes at 10^6
# checkpoints. The sketch's error is about 2x that of 4,096, but only the candidate list depends
# on it - the order shown is exact kappa: on synthetic zoos of 1,000 and 3,000 checkpoints,
# re-ranking 100 candidates found the exact top 10 as often at 1,024 as at 4,096.
FINGERPRINT_DIM = 1024
FINGERPRINT_SEED = 0
# Rows per shard file: the still-open shard is scanned flat on every query (16,384 x 1,024
# float16 = 32 MB), and each closed one becomes an IVF file of 18 MB.
SHARD_ROWS = 16_384
# Below this many live rows every search is an exact flat scan (about 100 MB of float16).
APPROXIMATE_ABOVE = 50_000
# IVF lists per shard (64 rows per list in a full shard), and how many a query probes: 1/16 of
# the 8-bit codes are scanned. The time is linear in nprobe; on clustered synthetic rows at 10^6,
# nprobe 8 to 64 all found the same 98% of the exact top 100.
IVF_LISTS = 256
IVF_NPROBE = 16
# Fingerprints computed and committed per catalog transaction: a crash loses at most one batch.
UPDATE_BATCH = 64
# Up to this many queries, a flat scan runs in faiss on the float16 codes; more, in numpy + BLAS.
FAISS_FLAT_QUERIES = 8
# Candidates whose features are held at once during the exact re-rank.
RERANK_BATCH = 16

LAYOUT_FILE = "layout.json"
TRAINED_FILE = "ivf-trained.faiss"
ROW_DTYPE = np.dtype("<f2")


# ------------------------------------------------------------------------------ the sketch


@lru_cache(maxsize=8)
def _count_sketches(n_items: int, dim: int, seed: int) -> tuple[Any, Any]:
    """The two count sketches as sparse dim x m float32 matrices, drawn exactly as `kappa.TensorSketch` draws them."""
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(seed)
    buckets = rng.integers(0, dim, size=(2, n_items))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(2, n_items)).astype(np.float32)
    columns = np.arange(n_items)
    first, second = (csr_matrix((signs[k], (buckets[k], columns)), shape=(dim, n_items)) for k in range(2))
    return first, second


def task_fingerprint(features: np.ndarray, dim: int = FINGERPRINT_DIM, seed: int = FINGERPRINT_SEED,
                     centered: bool = True) -> np.ndarray:
    """`kappa.TensorSketch(m, dim, seed).fingerprint(features)` in float32, 2-3x faster at the same dim.

    The same hash functions, so the same sketch up to float32 rounding (relative 1e-6), far below the
    sketch's own error. Saved work: one centring pass instead of two, float32 count sketches and
    FFTs (scipy.fft) instead of float64, and ||F^T F||_F from float32 products summed in float64.
    Dropped (NaN) items contribute nothing.
    """
    from scipy import fft

    rows = kept_rows(features)
    if rows.sum() < 2:
        raise ValueError(f"only {int(rows.sum())} item(s) kept; a fingerprint needs at least 2")
    kept = np.asarray(features[rows], dtype=np.float64)
    if centered:
        kept = kept - kept.mean(axis=0, keepdims=True)
    prepared = kept.astype(np.float32)
    m, d = prepared.shape
    gram = prepared.T @ prepared if d <= m else prepared @ prepared.T
    norm = float(np.linalg.norm(gram.astype(np.float64)))
    if norm == 0.0:
        raise ValueError("constant features have no fingerprint")
    full = np.zeros(features.shape, dtype=np.float32)  # dropped items: zero rows, they add nothing
    full[rows] = prepared
    hash_first, hash_second = _count_sketches(features.shape[0], dim, seed)
    first = fft.rfft(np.asarray(hash_first @ full), axis=0)
    second = fft.rfft(np.asarray(hash_second @ full), axis=0)
    sketch = fft.irfft(np.einsum("ij,ij->i", first, second), n=dim)
    return (sketch / norm).astype(np.float32)


# ------------------------------------------------------------------------------ the row files


@dataclass(frozen=True)
class Layout:
    """What a fingerprint folder holds; written once when the folder is made."""

    dim: int
    seed: int
    shard_rows: int
    ivf_lists: int
    dtype: str = "float16"
    version: int = 1

    @property
    def row_bytes(self) -> int:
        return self.dim * ROW_DTYPE.itemsize


def fingerprint_folder(index_root: Path, corpus_hash: str, dim: int, seed: int) -> Path:
    """The folder of one corpus content's fingerprints at one sketch dim and seed."""
    return Path(index_root) / STORE_DIR / "fingerprints" / f"{corpus_hash[:16]}-{dim}-{seed}"


class FingerprintIndex:
    """The fingerprint rows of one folder: append-only float16 shards, exact or IVF search."""

    def __init__(self, folder: Path, layout: Layout, n_rows: int, writable: bool,
                 approximate_above: int) -> None:
        self.folder = folder
        self.layout = layout
        self.n_rows = n_rows
        self.writable = writable
        self.approximate_above = approximate_above
        self._maps: dict[int, np.memmap] = {}
        self._ivf: dict[int, Any] = {}
        self._flat: dict[int, Any] = {}

    # -------------------------------------------------------------- opening

    @classmethod
    def open(cls, folder: Path, dim: int = FINGERPRINT_DIM, seed: int = FINGERPRINT_SEED,
             committed: int | None = None, writable: bool = False, shard_rows: int = SHARD_ROWS,
             ivf_lists: int = IVF_LISTS, approximate_above: int = APPROXIMATE_ABOVE) -> FingerprintIndex:
        """Open (writable: create) a folder. `committed` rows are those the catalog names; rows past it
        are ignored, and truncated when writable. None (no catalog, e.g. a benchmark): every whole row."""
        folder = Path(folder)
        layout_path = folder / LAYOUT_FILE
        if layout_path.is_file():
            layout = _read_layout(layout_path)
            if (layout.dim, layout.seed) != (dim, seed):
                raise StoreError(f"{layout_path} is for dim {layout.dim} seed {layout.seed}, not dim {dim} seed {seed}; "
                                 "run `hubindex check --repair`")
        elif committed:
            raise StoreError(f"fingerprint folder {folder} is missing ({committed} rows are registered); "
                             "run `hubindex check --repair`, then `hubindex kappa`")
        else:
            layout = Layout(dim, seed, shard_rows, ivf_lists)
            if writable:
                atomic_write_bytes(layout_path, json.dumps(asdict(layout), indent=1).encode())
        present = _rows_on_disk(folder, layout)
        if committed is not None and present < committed:
            raise StoreError(f"fingerprint folder {folder} holds {present} rows, the catalog names {committed}; "
                             "run `hubindex check --repair`, then `hubindex kappa`")
        n_rows = present if committed is None else committed
        index = cls(folder, layout, n_rows, writable, approximate_above)
        if writable:
            index._truncate_to(n_rows)
        return index

    def _truncate_to(self, n_rows: int) -> None:
        """Drop rows past n_rows (a crash's leftovers, or dead rows at the end) and IVF files of shards
        that are no longer full. Truncation only shortens files; it never rewrites a byte."""
        size = self.layout.shard_rows
        for shard, path in shard_files(self.folder):
            keep = min(max(n_rows - shard * size, 0), size)
            if keep == 0:
                path.unlink()
            elif path.stat().st_size != keep * self.layout.row_bytes:
                with path.open("r+b") as handle:
                    handle.truncate(keep * self.layout.row_bytes)
                    os.fsync(handle.fileno())
        for path in self.folder.glob("ivf-[0-9]*.faiss"):
            if int(path.stem.split("-")[1]) >= n_rows // size:  # its shard is open again, or gone
                path.unlink()

    # -------------------------------------------------------------- writing

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Append rows (float32 in, float16 on disk); return their row numbers. Writes only the new rows."""
        if not self.writable:
            raise StoreError(f"fingerprint folder {self.folder} is open read-only")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.layout.dim:
            raise ValueError(f"fingerprints must be n x {self.layout.dim}, got shape {vectors.shape}")
        stored = vectors.astype(ROW_DTYPE)
        if not np.isfinite(stored).all():
            raise ValueError("fingerprints must be finite (and within float16 range)")
        first = self.n_rows
        size = self.layout.shard_rows
        position = 0
        while position < len(stored):
            row = first + position
            shard, offset = divmod(row, size)
            take = min(size - offset, len(stored) - position)
            path = _shard_path(self.folder, shard)
            created = not path.exists()
            with path.open("ab") as handle:
                if handle.tell() != offset * self.layout.row_bytes:
                    raise StoreError(f"{path} holds {handle.tell()} bytes, expected {offset * self.layout.row_bytes}; "
                                     "run `hubindex check --repair`")
                handle.write(stored[position:position + take].tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_folder(self.folder)
            self._maps.pop(shard, None)
            position += take
        self.n_rows = first + len(stored)
        self.close_full_shards()
        return np.arange(first, self.n_rows, dtype=np.int64)

    def close_full_shards(self) -> None:
        """Give each full shard its IVF file, once the folder is large enough to search approximately."""
        if self.n_rows < self.approximate_above:
            return
        missing = [s for s in range(self.full_shards) if not _ivf_path(self.folder, s).is_file()]
        if not missing:
            return
        trained = self._trained_index_bytes()
        import faiss

        for shard in missing:
            index = faiss.deserialize_index(trained)
            rows = np.asarray(self._shard_rows(shard), dtype=np.float32)
            ids = np.arange(shard * self.layout.shard_rows, shard * self.layout.shard_rows + len(rows), dtype=np.int64)
            index.add_with_ids(rows, ids)
            atomic_write_bytes(_ivf_path(self.folder, shard), faiss.serialize_index(index).tobytes())

    def _trained_index_bytes(self) -> np.ndarray:
        """The trained, empty IVF index; trained once, on up to 64 rows per list of the closed shards
        (k-means on more costs seconds per add and changes little: faiss asks for at least 39)."""
        import faiss

        path = self.folder / TRAINED_FILE
        if path.is_file():
            return np.fromfile(path, dtype=np.uint8)
        closed = self.full_shards * self.layout.shard_rows
        rng = np.random.default_rng(self.layout.seed)
        sample_rows = np.sort(rng.choice(closed, size=min(closed, 64 * self.layout.ivf_lists), replace=False))
        sample = self.rows(sample_rows)
        quantizer = faiss.IndexFlatIP(self.layout.dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, self.layout.dim, self.layout.ivf_lists,
                                              faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.layout.seed
        index.train(sample)
        data = faiss.serialize_index(index)
        atomic_write_bytes(path, data.tobytes())
        return data

    # -------------------------------------------------------------- reading

    @property
    def full_shards(self) -> int:
        return self.n_rows // self.layout.shard_rows

    def _shard_rows(self, shard: int) -> np.ndarray:
        """A shard's rows (up to n_rows), float16, mapped from disk."""
        size = self.layout.shard_rows
        count = min(size, self.n_rows - shard * size)
        cached = self._maps.get(shard)
        if cached is None or len(cached) < count:
            path = _shard_path(self.folder, shard)
            try:
                cached = np.memmap(path, dtype=ROW_DTYPE, mode="r", shape=(count, self.layout.dim))
            except (OSError, ValueError) as exc:
                raise StoreError(f"fingerprint rows unreadable: {path} ({exc}); run `hubindex check --repair`") from None
            self._maps[shard] = cached
        return cached[:count]

    def rows(self, row_numbers: np.ndarray) -> np.ndarray:
        """The given rows as float32 (row_numbers in any order)."""
        row_numbers = np.asarray(row_numbers, dtype=np.int64)
        if row_numbers.size and (row_numbers.min() < 0 or row_numbers.max() >= self.n_rows):
            raise IndexError(f"row numbers outside 0..{self.n_rows - 1}")
        out = np.empty((len(row_numbers), self.layout.dim), dtype=np.float32)
        shards = row_numbers // self.layout.shard_rows
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            out[where] = self._shard_rows(int(shard))[row_numbers[where] - shard * self.layout.shard_rows]
        return out

    def _shard_ivf(self, shard: int) -> Any | None:
        """The shard's IVF index, mapped from its file; None if it has none (yet)."""
        if shard in self._ivf:
            return self._ivf[shard]
        path = _ivf_path(self.folder, shard)
        if not path.is_file():
            return None
        import faiss

        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as exc:
            raise StoreError(f"fingerprint IVF file unreadable: {path} ({str(exc).splitlines()[0]}); "
                             "run `hubindex check --repair`") from None
        self._ivf[shard] = index
        return index

    def search(self, queries: np.ndarray, k: int, live: np.ndarray | None = None,
               exact: bool | None = None, nprobe: int = IVF_NPROBE) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), queries x k each, best first: the k live rows with the largest inner product
        with each query; -inf and row -1 where fewer than k were found.

        live: a boolean mask over the rows (None: all rows). exact: force the flat scan (True) or
        the IVF files where they exist (False); None decides by the number of live rows.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n_queries = len(queries)
        if live is not None and len(live) != self.n_rows:
            raise ValueError(f"live mask has {len(live)} entries for {self.n_rows} rows")
        live_count = self.n_rows if live is None else int(np.count_nonzero(live))
        if exact is None:
            exact = live_count < self.approximate_above
        best = _TopK(n_queries, k)
        selector = None if exact else _LiveSelector(None if live_count == self.n_rows else live)
        size = self.layout.shard_rows
        for shard in range(-(-self.n_rows // size)):
            ivf = None if exact or shard >= self.full_shards else self._shard_ivf(shard)
            if ivf is not None:
                best.add(*ivf.search(queries, k, params=selector.parameters(nprobe)))
                continue
            self._flat_search(shard, queries, k, live, best)
        return best.result()

    def _flat_search(self, shard: int, queries: np.ndarray, k: int, live: np.ndarray | None, best: _TopK) -> None:
        """Exact inner products with one shard's rows, dead rows left out.

        A few queries go through faiss's float16 scalar quantizer, which reads the float16 codes
        directly (about 4x faster than numpy's float16 -> float32 conversion); a batch converts
        each block once and multiplies it with every query (BLAS).
        """
        start = shard * self.layout.shard_rows
        rows = self._shard_rows(shard)
        shard_live = None if live is None else live[start:start + len(rows)]
        if len(queries) > FAISS_FLAT_QUERIES:
            for first, chunk in _chunks(rows, start):
                scores = np.asarray(chunk, dtype=np.float32) @ queries.T  # rows x queries
                if shard_live is not None:
                    scores[~shard_live[first - start:first - start + len(chunk)]] = -np.inf
                best.add_block(scores, first)
            return
        index = self._flat_index(shard, rows)
        selector = _LiveSelector(None if shard_live is None or shard_live.all() else shard_live)
        scores, local = index.search(queries, k, params=selector.flat_parameters())
        best.add(scores, np.where(local < 0, -1, local + start))

    def _flat_index(self, shard: int, rows: np.ndarray) -> Any:
        """The shard's float16 rows in a faiss IndexScalarQuantizer (a copy: 3 ms per full shard). Kept
        for shards searched flat on every query (those without an IVF file); closed shards that have
        one are copied only when an exact search is forced."""
        import faiss

        cached = self._flat.get(shard)
        if cached is not None and cached.ntotal == len(rows):
            return cached
        index = faiss.IndexScalarQuantizer(self.layout.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(np.ascontiguousarray(rows).view(np.uint8).reshape(-1), index.codes)
        index.ntotal = len(rows)
        if not _ivf_path(self.folder, shard).is_file():
            self._flat[shard] = index
        return index


def _chunks(rows: np.ndarray, first_row: int, chunk: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of mapped rows: converting float16 to float32 a block at a time bounds the memory."""
    for start in range(0, len(rows), chunk):
        yield first_row + start, rows[start:start + chunk]


class _LiveSelector:
    """faiss search parameters that skip dead rows (a bitmap over row numbers; None: all live)."""

    def __init__(self, live: np.ndarray | None) -> None:
        import faiss

        self.bitmap = None if live is None else np.packbits(live.astype(bool), bitorder="little")
        # faiss takes the bitmap's size in bytes; ids past it are not selected.
        self.selector = None if live is None else faiss.IDSelectorBitmap(len(self.bitmap), faiss.swig_ptr(self.bitmap))

    def flat_parameters(self) -> Any:
        import faiss

        return None if self.selector is None else faiss.SearchParameters(sel=self.selector)

    def parameters(self, nprobe: int) -> Any:
        import faiss

        if self.selector is None:
            return faiss.SearchParametersIVF(nprobe=nprobe)
        return faiss.SearchParametersIVF(nprobe=nprobe, sel=self.selector)


class _TopK:
    """The k best (score, row) per query, from per-shard results gathered first and merged once."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores: list[np.ndarray] = [np.full((n_queries, 0), -np.inf, dtype=np.float32)]
        self.rows: list[np.ndarray] = [np.full((n_queries, 0), -1, dtype=np.int64)]

    def add_block(self, scores: np.ndarray, first_row: int) -> None:
        """A rows x queries block of a flat scan: its k best per query."""
        block = scores.T
        if block.shape[1] > self.k:
            top = np.argpartition(-block, self.k - 1, axis=1)[:, :self.k]
            self.add(np.take_along_axis(block, top, axis=1), top + first_row)
        else:
            self.add(block, np.broadcast_to(np.arange(first_row, first_row + block.shape[1]), block.shape))

    def add(self, scores: np.ndarray, rows: np.ndarray) -> None:
        self.scores.append(np.where(rows < 0, -np.inf, scores).astype(np.float32))
        self.rows.append(rows.astype(np.int64))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = np.concatenate(self.scores, axis=1), np.concatenate(self.rows, axis=1)
        if scores.shape[1] > self.k:
            top = np.argpartition(-scores, self.k - 1, axis=1)[:, :self.k]
            scores, rows = np.take_along_axis(scores, top, axis=1), np.take_along_axis(rows, top, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        rows = np.where(np.isfinite(scores), np.take_along_axis(rows, order, axis=1), -1)
        pad = self.k - scores.shape[1]
        if pad > 0:
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return scores, rows


def folder_files(folder: Path) -> list[Path]:
    """The files a fingerprint folder is made of (anything else in it, e.g. a *.tmp, is not)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name == LAYOUT_FILE or (p.name.startswith("rows-") and p.suffix == ".f16")
        or (p.name.startswith("ivf-") and p.suffix == ".faiss")))


@dataclass
class FolderCheck:
    """What `hubindex check` found in one fingerprint folder."""

    rows_problem: str  # "" when every row the catalog names is present and finite
    unreadable_ivf: list[Path]  # derived files: removing them is enough, the next update rebuilds them


def check_folder(folder: Path, dim: int, seed: int, fp_ids: list[int]) -> FolderCheck:
    """Read every row the catalog names (a shard at a time) and open every IVF file of the folder."""
    committed = max(fp_ids, default=-1) + 1
    try:
        index = FingerprintIndex.open(folder, dim, seed, committed=committed)
        live = np.zeros(committed, dtype=bool)
        live[fp_ids] = True
        for shard in range(-(-committed // index.layout.shard_rows)):
            start = shard * index.layout.shard_rows
            rows = index._shard_rows(shard)
            if not np.isfinite(rows[live[start:start + len(rows)]]).all():
                return FolderCheck(f"holds non-finite values in rows-{shard:05d}.f16", [])
    except StoreError as exc:
        return FolderCheck(str(exc).split("; run")[0], [])
    import faiss

    unreadable = []
    for path in sorted(folder.glob("ivf-*.faiss")):
        try:
            faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError:
            unreadable.append(path)
    return FolderCheck("", unreadable)


def _read_layout(path: Path) -> Layout:
    try:
        return Layout(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise StoreError(f"fingerprint layout unreadable: {path} ({exc}); run `hubindex check --repair`") from None


def _shard_path(folder: Path, shard: int) -> Path:
    return folder / f"rows-{shard:05d}.f16"


def _ivf_path(folder: Path, shard: int) -> Path:
    return folder / f"ivf-{shard:05d}.faiss"


def shard_files(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.glob("rows-*.f16") if folder.is_dir() else []:
        try:
            found.append((int(path.stem.split("-")[1]), path))
        except ValueError:
            continue
    return sorted(found)


def _rows_on_disk(folder: Path, layout: Layout) -> int:
    """Whole rows in the shard files; every shard but the last must be full."""
    total = 0
    files = shard_files(folder)
    for position, (shard, path) in enumerate(files):
        rows = path.stat().st_size // layout.row_bytes
        if shard != position or (position < len(files) - 1 and rows != layout.shard_rows):
            raise StoreError(f"fingerprint shard {path} is out of place or short; run `hubindex check --repair`")
        total += rows
    return total


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)  # a new shard file's name survives a power cut
    finally:
        os.close(handle)
