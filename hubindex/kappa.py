"""Task-space covariance kappa: kernel alignment between checkpoints' features on shared items.

    kappa(i, j) = ||F_i^T F_j||_F^2 / ( ||F_i^T F_i||_F * ||F_j^T F_j||_F )

with the columns of each F mean-centred first (linear CKA; Huang, Qiu & Church 2021). Rows are
probe items; a row of NaN marks an item the checkpoint dropped (e.g. a word lost to truncation),
and a pair is compared only on the items both kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Work in float64: Frobenius norms of Gram matrices square the features' dynamic range.
_DTYPE = np.float64


def kept_rows(features: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows with only finite values."""
    return np.isfinite(features).all(axis=1)


def _prepare(features: np.ndarray, rows: np.ndarray | None, centered: bool) -> np.ndarray:
    selected = np.asarray(features, dtype=_DTYPE)
    if rows is not None:
        selected = selected[rows]
    if centered:
        selected = selected - selected.mean(axis=0, keepdims=True)
    return selected


def gram_frobenius(features: np.ndarray) -> float:
    """||F^T F||_F, computed on the smaller of F^T F and F F^T (they have the same norm)."""
    m, d = features.shape
    gram = features.T @ features if d <= m else features @ features.T
    return float(np.linalg.norm(gram))


def cross_frobenius_sq(a: np.ndarray, b: np.ndarray) -> float:
    """||A^T B||_F^2, through A^T B (m*da*db) or the item Gram matrices (m^2*(da+db)), whichever is cheaper."""
    m, da = a.shape
    db = b.shape[1]
    if da * db <= m * (da + db):
        return float(np.square(a.T @ b).sum())
    return float(np.sum((a @ a.T) * (b @ b.T)))


def kappa_pair(a: np.ndarray, b: np.ndarray, centered: bool = True) -> tuple[float, int]:
    """(kappa, number of items used) for two feature matrices with aligned rows."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"feature matrices must have the same rows (items): {a.shape[0]} != {b.shape[0]}")
    rows = kept_rows(a) & kept_rows(b)
    n_items = int(rows.sum())
    if n_items < 2:
        raise ValueError(f"only {n_items} item(s) kept by both checkpoints; kappa needs at least 2")
    fa = _prepare(a, rows, centered)
    fb = _prepare(b, rows, centered)
    denominator = gram_frobenius(fa) * gram_frobenius(fb)
    if denominator == 0.0:
        raise ValueError("a feature matrix is constant on the shared items; kappa is undefined")
    return cross_frobenius_sq(fa, fb) / denominator, n_items


@dataclass
class KappaMatrix:
    values: np.ndarray  # n x n, symmetric, unit diagonal
    n_items: np.ndarray  # n x n, items each pair was compared on


def kappa_matrix(features: list[np.ndarray], centered: bool = True) -> KappaMatrix:
    """Exact pairwise kappa. Checkpoints that kept the same items share one normalised Gram pass."""
    n = len(features)
    if n == 0:
        raise ValueError("no feature matrices given")
    m = features[0].shape[0]
    for i, f in enumerate(features):
        if f.ndim != 2 or f.shape[0] != m:
            raise ValueError(f"feature matrix {i} has shape {f.shape}; all need {m} rows (one per item)")
    values = np.eye(n)
    counts = np.zeros((n, n), dtype=np.int64)
    masks = [kept_rows(f) for f in features]
    prepared: dict[int, np.ndarray] = {}
    norms: dict[int, float] = {}
    all_rows = [bool(mask.all()) for mask in masks]
    for i in range(n):
        counts[i, i] = int(masks[i].sum())
        if all_rows[i]:
            prepared[i] = _prepare(features[i], None, centered)
            norms[i] = gram_frobenius(prepared[i])
    for i, norm in norms.items():
        if norm == 0.0:
            raise ValueError(f"feature matrix {i} is constant; kappa is undefined")
    full = sorted(prepared)
    if len(full) > 1 and _gram_route_is_cheaper([prepared[i].shape[1] for i in full], m):
        block = _aligned_cross_norms([prepared[i] for i in full])
        for a, i in enumerate(full):
            for b, j in enumerate(full):
                if i < j:
                    values[i, j] = values[j, i] = block[a, b] / (norms[i] * norms[j])
                    counts[i, j] = counts[j, i] = m
    for i in range(n):
        for j in range(i + 1, n):
            if all_rows[i] and all_rows[j]:
                if counts[i, j]:
                    continue  # done by the Gram route
                value, used = cross_frobenius_sq(prepared[i], prepared[j]) / (norms[i] * norms[j]), m
            else:
                value, used = kappa_pair(features[i], features[j], centered)
            values[i, j] = values[j, i] = value
            counts[i, j] = counts[j, i] = used
    return KappaMatrix(values, counts)


# Memory for one block of item Gram rows in the Gram route (float64).
GRAM_BLOCK_BYTES = 512 * 1024 * 1024


def _gram_route_is_cheaper(dims: list[int], m: int) -> bool:
    """Pairwise ||F_i^T F_j||^2 costs m*d_i*d_j per pair; the Gram route m^2*d per checkpoint + m^2 per pair."""
    n = len(dims)
    pairwise = sum(m * dims[i] * dims[j] for i in range(n) for j in range(i + 1, n))
    gram = m * m * (sum(dims) + n * (n - 1) / 2)
    return gram < pairwise


def _aligned_cross_norms(prepared: list[np.ndarray]) -> np.ndarray:
    """All <F_i F_i^T, F_j F_j^T>_F at once (see gram_inner_products), in float64 throughout."""
    return gram_inner_products(prepared, band_dtype=np.float64).cross


@dataclass
class Prepared:
    """Features ready for the feature route: float32, kept rows only, centred if kappa is; ||F^T F||_F."""

    features: np.ndarray  # as stored (NaN rows = dropped items), for pairs that kept other items
    values: np.ndarray
    rows: np.ndarray
    norm: float


def prepare(features: np.ndarray, centered: bool = True) -> Prepared:
    rows = kept_rows(features)
    values = _prepare(features, rows, centered).astype(np.float32)
    m, d = values.shape
    gram = values.T @ values if d <= m else values @ values.T
    return Prepared(features, values, rows, float(np.linalg.norm(gram.astype(np.float64))))


def kappa_against(query: np.ndarray | Prepared, others: list[np.ndarray | Prepared],
                  centered: bool = True, device: str | None = None) -> np.ndarray:
    """Exact kappa of one feature matrix against each of `others` (rows aligned, NaN rows dropped).

    The feature route, ||F_q^T F_j||^2 / (||F_q^T F_q|| ||F_j^T F_j||), with float32 products and
    float64 sums: m d^2 per candidate - cheaper than the Gram route's m^2 d for one row - and within
    1e-6 of the float64 formula (1e-9 to 1e-7 measured: the rounding of the cross and the self
    products correlates). Pass
    `Prepared` matrices (see `prepare`) to reuse their norms across calls. Pairs that do not share
    all items are compared with `kappa_pair` on the items both kept. `device` (e.g. "cuda") runs
    the products with torch there.
    """
    query = query if isinstance(query, Prepared) else prepare(query, centered)
    if query.norm == 0.0:
        raise ValueError("the query's features are constant; kappa is undefined")
    values = np.empty(len(others))
    others = [other if isinstance(other, Prepared) else prepare(other, centered) for other in others]
    aligned: list[int] = []
    for k, other in enumerate(others):
        if other.norm == 0.0:
            raise ValueError(f"feature matrix {k} is constant; kappa is undefined")
        if np.array_equal(other.rows, query.rows):
            aligned.append(k)
        else:
            values[k] = kappa_pair(query.features, other.features, centered)[0]
    # One product against many candidates at once (BLAS is faster on one wide matrix), in groups
    # that bound the temporary to about 256 MB.
    group: list[int] = []
    width = 0
    for position, k in enumerate(aligned):
        group.append(k)
        width += others[k].values.shape[1]
        if position == len(aligned) - 1 or width * query.values.shape[1] * 4 > 256 * 1024**2:
            stacked = np.concatenate([others[j].values for j in group], axis=1)
            if device is None:
                squares = np.square((query.values.T @ stacked).astype(np.float64)).sum(axis=0)
            else:
                import torch

                cross = torch.as_tensor(query.values, device=device).T @ torch.as_tensor(stacked, device=device)
                squares = cross.double().square().sum(dim=0).cpu().numpy()
            bounds = np.cumsum([0] + [others[j].values.shape[1] for j in group])
            for j, a, b in zip(group, bounds, bounds[1:]):
                values[j] = float(squares[a:b].sum()) / (query.norm * others[j].norm)
            group, width = [], 0
    return values


@dataclass
class GramProducts:
    cross: np.ndarray  # <G_i, G_j> for i of the rows, j of the columns
    row_self: np.ndarray  # <G_i, G_i> = ||F_i^T F_i||_F^2, from the same bands
    column_self: np.ndarray

    def kappa(self) -> np.ndarray:
        """The cross products normalised by the self products of the same bands (their rounding cancels)."""
        return self.cross / np.sqrt(np.outer(self.row_self, self.column_self))


def gram_inner_products(
    rows: list[np.ndarray], columns: list[np.ndarray] | None = None, block_bytes: int = GRAM_BLOCK_BYTES,
    band_dtype: Any = np.float32, progress: Any = None, device: str | None = None,
) -> GramProducts:
    """<F_i F_i^T, F_j F_j^T>_F for every i of `rows` and j of `columns` (default: rows, symmetric).

    All matrices have the same m rows (items, all kept; centred already if kappa is centred). The
    item Gram matrices G_i = F_i F_i^T are never held whole: a band of item rows [a, b) at a time,
    and only its upper triangle (columns a..m; off-diagonal entries weighted by sqrt 2, since G is
    symmetric), is formed for every checkpoint in `band_dtype` - m^2 d per checkpoint - and the
    band's products are accumulated in float64 - m^2 per pair. float32 bands keep kappa within
    ~1e-8 of the float64 formula; float32 products would drift by ~3e-6. Memory is one band, about
    block_bytes, whatever the number of checkpoints. `device` (e.g. "cuda") runs the same
    arithmetic with torch on that device; None is numpy on the CPU.
    """
    ops: _ArrayOps = _NumpyOps(band_dtype) if device is None else _TorchOps(band_dtype, device)
    symmetric = columns is None
    columns = rows if columns is None else columns
    m = rows[0].shape[0]
    if any(f.shape[0] != m for f in (*rows, *columns)):
        raise ValueError("every feature matrix needs the same items (rows) for the Gram route")
    rows_c = [ops.asarray(f) for f in rows]
    columns_c = rows_c if symmetric else [ops.asarray(f) for f in columns]
    count = len(rows_c) + (0 if symmetric else len(columns_c))
    cross = ops.zeros((len(rows_c), len(columns_c)))
    row_self, column_self = ops.zeros(len(rows_c)), ops.zeros(len(columns_c))
    start = 0
    while start < m:
        # A band of b rows holds about b * (m - start) entries per checkpoint, 8 bytes each.
        band = max(1, min(m - start, block_bytes // max(1, 8 * count * (m - start))))
        stop = start + band
        weights = np.full((band, m - start), np.sqrt(2.0))
        weights[np.arange(band), np.arange(band)] = 1.0  # the diagonal of G counts once
        weights[np.tril_indices(band, -1)] = 0.0  # below the diagonal: counted by its mirror
        weights = ops.asarray(weights)
        left = ops.band(rows_c, start, stop, weights)
        right = left if symmetric else ops.band(columns_c, start, stop, weights)
        cross += ops.product(left, right, symmetric)
        row_self += ops.self_products(left)
        if not symmetric:
            column_self += ops.self_products(right)
        del left, right
        if progress is not None:
            progress(band)
        start = stop
    products = GramProducts(ops.to_numpy(cross), ops.to_numpy(row_self), ops.to_numpy(column_self))
    if symmetric:
        products.column_self = products.row_self
    return products


class _ArrayOps:
    """The few array operations of the Gram route, on one array library and device."""

    def asarray(self, array: np.ndarray) -> Any: ...

    def zeros(self, shape: Any) -> Any: ...

    def band(self, features: list[Any], start: int, stop: int, weights: Any) -> Any:
        """Rows start..stop, columns start..m of each G = F F^T, weighted and flattened, as float64 rows."""

    def to_numpy(self, array: Any) -> np.ndarray: ...

    def product(self, left: Any, right: Any, symmetric: bool) -> Any:
        """left @ right.T, the float64 products of two bands."""

    def self_products(self, band: Any) -> Any:
        """Each band row's inner product with itself (float64)."""


class _NumpyOps(_ArrayOps):
    def __init__(self, band_dtype: Any) -> None:
        self.band_dtype = band_dtype

    def asarray(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=self.band_dtype)

    def zeros(self, shape: Any) -> np.ndarray:
        return np.zeros(shape)

    def band(self, features: list[np.ndarray], start: int, stop: int, weights: np.ndarray) -> np.ndarray:
        # Each checkpoint's band goes straight into its float64 row: one float32 product weighted in
        # place, then one converting copy (a stack and an astype were two more passes over n bands).
        rows = np.empty((len(features), weights.size))
        for row, f in zip(rows, features):
            gram = f[start:stop] @ f[start:].T
            np.multiply(gram, weights, out=gram)
            row[:] = gram.ravel()
        return rows

    def self_products(self, band: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", band, band)

    def to_numpy(self, array: np.ndarray) -> np.ndarray:
        return array

    def product(self, left: np.ndarray, right: np.ndarray, symmetric: bool) -> np.ndarray:
        """left @ right.T. A product of two different bands with a short side runs on one BLAS
        thread: OpenBLAS's two threads were many times slower on such shapes on a busy machine;
        the symmetric product (syrk) keeps them."""
        if symmetric or min(left.shape[0], right.shape[0]) >= _SKINNY_ROWS:
            return left @ right.T
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            return left @ right.T


# Below this many checkpoints on one side, a band product is "skinny" (see _NumpyOps.product).
_SKINNY_ROWS = 128


class _TorchOps(_ArrayOps):
    def __init__(self, band_dtype: Any, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.band_dtype = torch.float64 if np.dtype(band_dtype) == np.float64 else torch.float32

    def asarray(self, array: np.ndarray) -> Any:
        return self.torch.as_tensor(np.ascontiguousarray(array)).to(self.device, self.band_dtype)

    def zeros(self, shape: Any) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def band(self, features: list[Any], start: int, stop: int, weights: Any) -> Any:
        return self.torch.stack([((f[start:stop] @ f[start:].T) * weights).reshape(-1) for f in features]).double()

    def self_products(self, band: Any) -> Any:
        return (band * band).sum(1)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.cpu().numpy()

    def product(self, left: Any, right: Any, symmetric: bool) -> Any:
        return left @ right.T


def default_device() -> str | None:
    """"cuda" when torch sees a GPU, else None (numpy on the CPU)."""
    import glob

    if not glob.glob("/dev/nvidia[0-9]*") and not Path("/proc/driver/nvidia").exists():
        return None  # no NVIDIA driver: not worth seconds of importing torch to be told so
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


# ------------------------------------------------------------------------------------ sketches


class TensorSketch:
    """A random sketch s(F) of vec(F F^T) with <s(F_i), s(F_j)> ~ <F_i F_i^T, F_j F_j^T>_F.

    Degree-2 TensorSketch (Pham & Pagh 2013): two independent count sketches of the items, combined
    by FFT. Unbiased for inner products; the error shrinks as 1/sqrt(dim). Computing it costs
    O(d (m + dim log dim)) and never forms the m x m Gram matrix.
    """

    def __init__(self, n_items: int, dim: int = 4096, seed: int = 0) -> None:
        from scipy.sparse import csr_matrix

        rng = np.random.default_rng(seed)
        self.n_items = n_items
        self.dim = dim
        buckets = rng.integers(0, dim, size=(2, n_items))
        signs = rng.choice(np.array([-1.0, 1.0]), size=(2, n_items))
        # Each count sketch is a sparse dim x m matrix with one +-1 per column.
        self.hashes = [
            csr_matrix((signs[k], (buckets[k], np.arange(n_items))), shape=(dim, n_items)) for k in range(2)
        ]

    def _count_sketch(self, features: np.ndarray, which: int) -> np.ndarray:
        return np.asarray(self.hashes[which] @ features)

    def sketch(self, features: np.ndarray, centered: bool = True) -> np.ndarray:
        """Fingerprint of one checkpoint; dropped (NaN) items contribute nothing."""
        if features.shape[0] != self.n_items:
            raise ValueError(f"sketch expects {self.n_items} items, got {features.shape[0]}")
        rows = kept_rows(features)
        prepared = np.zeros(features.shape, dtype=_DTYPE)
        prepared[rows] = _prepare(features, rows, centered)
        first = np.fft.rfft(self._count_sketch(prepared, 0), axis=0)
        second = np.fft.rfft(self._count_sketch(prepared, 1), axis=0)
        return np.fft.irfft((first * second).sum(axis=1), n=self.dim)

    def fingerprint(self, features: np.ndarray, centered: bool = True) -> np.ndarray:
        """The sketch scaled by the exact ||F^T F||_F: inner products of fingerprints estimate kappa."""
        rows = kept_rows(features)
        norm = gram_frobenius(_prepare(features, rows, centered))
        if norm == 0.0:
            raise ValueError("constant features have no fingerprint")
        return (self.sketch(features, centered) / norm).astype(np.float32)
