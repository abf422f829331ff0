"""Low-rank-plus-diagonal kappa for MMI at scale: kappa ~ F F^T + diag(d), in O(n r) memory.

`lowrank_factor_from_kappa` (randomized Nystrom) factors a dense kappa; `lowrank_factor_from_features`
(randomized SVD) factors the fingerprint matrix, whose inner products estimate kappa, so no n x n
matrix is ever formed. `hubindex.selection.mmi_select_lowrank` runs the greedy on the factors.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.linalg import cholesky, lapack, solve_triangular

# Rank recommended for the low-rank path. On the benchmark's zoo-shaped kappa (n = 5,000, K = 50) the
# selection then loses 1.5-2% of the exact selection's I(S; Z \ S), against 4-8% at rank 128 and
# 0.7-1.7% at 512, which costs 2-3 times as much (benchmarks/bench_mmi.py).
LOWRANK_RANK = 256
# Elements per block when scanning or copying kappa, so neither needs n x n temporaries.
BLOCK_ELEMENTS = 1 << 22


def lowrank_factor_from_kappa(kappa: np.ndarray, rank: int = LOWRANK_RANK, oversample: int = 10,
                              power_iterations: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(F, d) with kappa ~= F F^T + diag(d) from a dense PSD kappa: randomized Nystrom, d the diagonal residual."""
    kappa = np.asarray(kappa)
    if kappa.ndim != 2 or kappa.shape[0] != kappa.shape[1] or kappa.shape[0] == 0:
        raise ValueError(f"kappa must be a non-empty square matrix, got shape {kappa.shape}")
    n = kappa.shape[0]
    rank = _checked_rank(rank, n)
    width = min(n, rank + oversample)
    basis = np.random.default_rng(seed).standard_normal((n, width))
    # Subspace iteration on the symmetric kappa: each pass sharpens the basis towards the top eigenvectors.
    for _ in range(power_iterations + 1):
        basis = _orthonormalised(_rows_times(kappa, basis))
    sketch = _rows_times(kappa, basis)
    # Nystrom with a small shift (Tropp et al. 2017): kappa ~= Y (Q^T Y)^-1 Y^T leaves a PSD residual.
    shift = np.finfo(np.float64).eps * np.sqrt(n) * np.linalg.norm(sketch)
    sketch += shift * basis
    core = basis.T @ sketch
    core_factor = cholesky(0.5 * (core + core.T), lower=False)
    left, values, _ = np.linalg.svd(solve_triangular(core_factor, sketch.T, trans="T").T, full_matrices=False)
    factors = left[:, :rank] * np.sqrt(np.maximum(values[:rank] ** 2 - shift, 0.0))
    return factors, _residual_diagonal(np.asarray(kappa.diagonal(), dtype=np.float64), factors)


def lowrank_factor_from_features(features: np.ndarray, rank: int = LOWRANK_RANK, diagonal: float | np.ndarray = 1.0,
                                 oversample: int = 10, power_iterations: int = 2,
                                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(F, d) from fingerprints X (kappa_ij ~= <x_i, x_j>): F = X V_r by randomized SVD, d = diagonal - |F_i|^2."""
    features = np.asarray(features)
    if features.ndim != 2 or 0 in features.shape:
        raise ValueError(f"features must be a non-empty n x D matrix, got shape {features.shape}")
    n, dims = features.shape
    rank = _checked_rank(rank, min(n, dims))
    width = min(n, dims, rank + oversample)
    basis = _orthonormalised(_rows_times(features, np.random.default_rng(seed).standard_normal((dims, width))))
    # At most one n x width matrix alive at a time: at n = 10^6 each is 2 GB.
    for _ in range(power_iterations):
        right_basis = _orthonormalised(_rows_transposed_times(features, basis))
        del basis
        basis = _orthonormalised(_rows_times(features, right_basis))
    # Top right singular vectors V_r of Q^T X; F = X V_r projects every fingerprint on them, so
    # X X^T - F F^T = X (I - V_r V_r^T) X^T is PSD and |F_i| <= |x_i|.
    projected = _rows_transposed_times(features, basis)
    del basis
    _, _, right = np.linalg.svd(projected.T, full_matrices=False)
    factors = _rows_times(features, right[:rank].T, order="C")  # as mmi_select_lowrank reads it
    full_diagonal = np.broadcast_to(np.asarray(diagonal, dtype=np.float64), (n,))
    return factors, _residual_diagonal(full_diagonal, factors)


def _checked_rank(rank: int, limit: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    return min(int(rank), limit)


def _orthonormalised(matrix: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of a tall Fortran-ordered matrix, computed in its own memory (QR)."""
    packed, tau, _, info = lapack.dgeqrf(matrix, overwrite_a=1)
    basis, _, info_q = lapack.dorgqr(packed, tau, overwrite_a=1)
    assert info == info_q == 0 and np.shares_memory(basis, matrix)
    return basis


def _rows_times(matrix: np.ndarray, right: np.ndarray, order: Literal["C", "F"] = "F") -> np.ndarray:
    """matrix @ right in float64, a block of rows at a time (no float64 copy of a float32 or mapped matrix)."""
    product = np.empty((matrix.shape[0], right.shape[1]), order=order)  # "F" for LAPACK's QR in place
    rows = max(1, BLOCK_ELEMENTS // matrix.shape[1])
    for start in range(0, matrix.shape[0], rows):
        product[start:start + rows] = matrix[start:start + rows].astype(np.float64, copy=False) @ right
    return product


def _rows_transposed_times(matrix: np.ndarray, right: np.ndarray) -> np.ndarray:
    """matrix^T @ right in float64, summed over blocks of rows."""
    product = np.zeros((matrix.shape[1], right.shape[1]), order="F")
    rows = max(1, BLOCK_ELEMENTS // matrix.shape[1])
    for start in range(0, matrix.shape[0], rows):
        product += matrix[start:start + rows].astype(np.float64, copy=False).T @ right[start:start + rows]
    return product


def _residual_diagonal(diagonal: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """diagonal - rowwise |F|^2, clipped at 0 where rounding takes it below."""
    return np.maximum(diagonal - np.einsum("ij,ij->i", factors, factors), 0.0)
