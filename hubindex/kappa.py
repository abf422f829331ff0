"""Task-space covariance kappa: kernel alignment between checkpoints' features on shared items.

    kappa(i, j) = ||F_i^T F_j||_F^2 / ( ||F_i^T F_i||_F * ||F_j^T F_j||_F )

with the columns of each F mean-centred first (linear CKA; Huang, Qiu & Church 2021). Rows are
probe items; a row of NaN marks an item the checkpoint dropped (e.g. a word lost to truncation),
and a pair is compared only on the items both kept.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    for i in range(n):
        for j in range(i + 1, n):
            if all_rows[i] and all_rows[j]:
                denominator = norms[i] * norms[j]
                if denominator == 0.0:
                    raise ValueError(f"feature matrix {i if norms[i] == 0 else j} is constant; kappa is undefined")
                value, used = cross_frobenius_sq(prepared[i], prepared[j]) / denominator, m
            else:
                value, used = kappa_pair(features[i], features[j], centered)
            values[i, j] = values[j, i] = value
            counts[i, j] = counts[j, i] = used
    return KappaMatrix(values, counts)


# ------------------------------------------------------------------------------------ sketches


class TensorSketch:
    """A random sketch s(F) of vec(F F^T) with <s(F_i), s(F_j)> ~ <F_i F_i^T, F_j F_j^T>_F.

    Degree-2 TensorSketch (Pham & Pagh 2013): two independent count sketches of the items, combined
    by FFT. Unbiased for inner products; the error shrinks as 1/sqrt(dim). Computing it costs
    O(d (m + dim log dim)) and never forms the m x m Gram matrix.
    """

    def __init__(self, n_items: int, dim: int = 4096, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n_items = n_items
        self.dim = dim
        self.buckets = rng.integers(0, dim, size=(2, n_items))
        self.signs = rng.choice(np.array([-1.0, 1.0]), size=(2, n_items))

    def _count_sketch(self, features: np.ndarray, which: int) -> np.ndarray:
        out = np.zeros((self.dim, features.shape[1]), dtype=_DTYPE)
        np.add.at(out, self.buckets[which], features * self.signs[which][:, None])
        return out

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
