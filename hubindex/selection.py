"""Maximum Mutual Information (MMI) selection of checkpoints over the task-space covariance kappa.

Greedy Algorithm 1 of Huang, Qiu & Church (2021), after Krause, Singh & Guestrin (2008). With
kappa the covariance of a Gaussian process over tasks and Z the whole zoo, S grows by the i not in
S that maximises

    delta_i = 1/2 ln( var(i | S) / var(i | Z \\ S \\ {i}) ),
    var(i | A) = kappa_ii - kappa(i, A) kappa(A, A)^-1 kappa(A, i),   var(i | {}) = kappa_ii.

The objective I(S; Z \\ S) is submodular but not monotone: gains shrink as S grows and can turn
negative (a late pick may lower the total), and the greedy still takes the largest. `mi_nats` is
the running sum of delta, in nats; the public reference prints the sum of ln ratios, i.e. twice it.

Exact path (`mmi_select`), O(n^3 + K n^2) for K picks out of n, against O(K n^4) for the literal
algorithm (`mmi_select_literal`, kept for checking). A Cholesky factor kappa + jitter I = L L^T and
the triangular inverse L^-1 (2n^3/3 flops) give P = L^-T L^-1. Then two running quantities, O(n t)
each at pick t besides one O(n^2) column of P:

- var(i | S): an incremental Cholesky of the selected set (pivoted Cholesky with the greedy's picks
  as pivots). Picking j adds g = (kappa(:, j) - G G(j, :)^T) / sqrt(var(j | S)) as a column of G,
  and var(i | S) -= g_i^2.
- var(i | Z \\ S \\ {i}) = 1 / [P_A]_ii with P_A the inverse of kappa restricted to A = Z \\ S.
  Removing j from A is the rank-one Schur downdate P_A <- P_A - u u^T / u_j with u = P_A(:, j);
  it is kept in factored form, P_A = P - W W^T, so each pick costs one column of P (a
  triangular matrix-vector product with L^-1) and never writes to an n x n matrix. When i is
  the last candidate left, var(i | {}) = kappa_ii.

Memory of the exact path: one n x n float64 buffer. L^-1 goes in its lower triangle and kappa stays
in its strict upper triangle (plus a copy of the diagonal), which is all the greedy reads. When the
caller's kappa is float64, contiguous, writeable, in memory (not a file mapping) and exactly
symmetric, that buffer is kappa itself: its lower triangle is used as scratch and restored before
`mmi_select` returns, also on error, so do not read it from another thread meanwhile (pass a
read-only array to forbid this and pay for a copy). Anything else is copied once, as float64, and
symmetrised in the copy. Before allocating, `exact_mmi_bytes` is checked against
`available_memory_bytes`; if it does not fit, `MMIMemoryError` says so in one line.

Low-rank path (`mmi_select_lowrank`), for zoos too large for n x n: kappa = F F^T + D with F an
n x r factor (r << n) and D = diag(d) > 0 (d plus the jitter below), so that the diagonal is
kappa's own. Nothing n x n is formed: memory O(n (r + K)), time O(n r^2) to start and
O(n (r + t) + r^2) at pick t.

- var(i | S): the same incremental Cholesky, with kappa(:, j) = F F_j^T + d_j e_j computed on the fly.
- var(i | Z \\ S \\ {i}) = 1 / [P_A]_ii again, P_A = (kappa_A)^-1 kept as P_Z - W W^T as on the
  exact path: (kappa_A)^-1 is the Schur complement P_AA - P_AS P_SS^-1 P_SA of P = P_Z = kappa^-1,
  which the rank-one downdates by u = P_A(:, j) = P_Z(:, j) - W W(j, :)^T build one pick at a time.
  P_Z is never formed: Woodbury on kappa = F F^T + D gives P_Z = D^-1 - D^-1 F H^-1 F^T D^-1 with
  the r x r matrix H = I + F^T D^-1 F = R^T R (Cholesky). So [P_Z]_ii = 1/d_i - |F_i R^-1|^2 / d_i^2,
  O(n r^2) for all i once, and P_Z(:, j) = e_j / d_j - D^-1 F (H^-1 F_j^T) / d_j, O(n r + r^2).
  Downdating H instead (H_A = I + F_A^T D_A^-1 F_A loses F_j^T F_j / d_j when j leaves A, an
  O(r^2) Sherman-Morrison step) is exact in theory but not in floating point: for a tiny d_j the
  cancellation happens in the r x r matrix that every row shares, and spoils every gain; in
  P_Z - W W^T it stays in the rows it concerns, as on the exact path.
  1/d_i - |F_i R^-1|^2 / d_i^2 itself cancels when d_i << |F_i|^2 and i is not predictable from
  the others (n not much above r): the relative error is then about eps |F_i|^2 / d_i.

On an exactly low-rank-plus-diagonal kappa both paths give the same picks. `lowrank_factor_from_kappa`
(randomized Nystrom, for a dense kappa) and `lowrank_factor_from_features` (randomized SVD of
fingerprints X with kappa ~= X X^T) build (F, d) with a PSD residual kappa - F F^T, so d >= 0 is its
diagonal; the off-diagonal residual is what the low-rank path ignores. `choose_mmi_path` says which
path a caller should run: exact up to EXACT_MAX_N checkpoints when it fits in memory, low-rank
with rank LOWRANK_RANK above.

Ties: the lowest index wins among the gains equal to the best within their rounding. A variance
var(i | A) is known to a few ulps of kappa_ii, so delta_i to about
TIE_ULPS * eps * kappa_ii * (1/var(i | S) + 1/var(i | Z \\ S \\ {i})) / 2, plus TIE_NATS. Exact ties
(identical or symmetric checkpoints) come out of floating point that far apart, and differently in
the two implementations; the band lets both settle them the same way. Away from ties both take the
plain argmax.

Jitter: duplicate checkpoints make kappa singular (equal rows, kappa = 1 off the diagonal), and
then var(i | Z \\ S \\ {i}) = 0. With `jitter=None`, kappa is used as is when its Cholesky factor
exists and every var(i | Z \\ {i}) is at least SINGULAR_FLOOR * mean(diag); otherwise
eps * mean(diag) is added to the diagonal for eps = 1e-10, 1e-9, ..., 1e-2, the first that passes
the same test. The jitter is independent noise on every checkpoint: a duplicate is then nearly
determined by its twin, so one of a pair is picked early (it explains its twin) and the other only
after every distinct checkpoint (it explains nothing new). With three or more copies the middle
ones gain about 0 (given one copy, another is as predictable from S as from the rest): they come
after every distinct checkpoint that still raises the MI, but before those that lower it, so drop
exact duplicates first if a budget reaches that far. The amount added is reported in
`MMISelection.jitter`, and `mmi_select_literal` on kappa + jitter I gives the same selection. An
explicit `jitter` is used as given (it must leave kappa + jitter I positive definite).
The low-rank path needs every d_i + jitter > 0 (it divides by it). Since var(i | Z \\ {i}) >= d_i,
the same test passes when min(d) >= SINGULAR_FLOOR * mean(diag); otherwise (d_i = 0 for a
duplicate, or for a checkpoint the factor explains fully) JITTER_STEPS[0] * mean(diag) is added,
the first step, which always lifts d above that floor. `mmi_select` on F F^T + diag(d) with
`jitter=result.jitter` then gives the same picks.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
from scipy.linalg import blas, cho_solve, cholesky, lapack, solve_triangular

from hubindex.errors import HubindexError
from hubindex.lowrank import (  # noqa: F401 - the factor builders are part of this module's API
    BLOCK_ELEMENTS,
    LOWRANK_RANK,
    lowrank_factor_from_features,
    lowrank_factor_from_kappa,
)
from hubindex.memory import available_memory_bytes

# Gains closer than this (nats) plus their rounding bands are ties.
TIE_NATS = 1e-9
# Rounding band of var(i | A), in ulps of kappa_ii: it comes from cancellation in
# kappa_ii - kappa(i, A) kappa(A, A)^-1 kappa(A, i), so it is large relative to a small variance.
TIE_ULPS = 256
# var(i | Z \ {i}) below this fraction of mean(diag) marks kappa as numerically singular.
SINGULAR_FLOOR = 1e-11
# Jitter tried in turn, as fractions of mean(diag), when jitter=None and kappa is singular.
JITTER_STEPS = tuple(10.0**-k for k in range(10, 1, -1))
# Relative asymmetry |kappa_ij - kappa_ji| / max(diag) tolerated; the mean of the two is used.
SYMMETRY_TOL = 1e-8
# Largest zoo for which callers should run the exact path: the 2n^3/3 flops grow from 9-35 s at
# n = 10,000 on 2 cores (idle to loaded) to 1-5 minutes at 20,000, where one n x n buffer is 3.2 GB.
# Above it, use the low-rank path.
EXACT_MAX_N = 20_000
# Columns per block in the triangular passes over the exact path's buffer (temporaries n x this).
_TRIANGLE_BLOCK = 256


class MMIMemoryError(HubindexError, MemoryError, ValueError):
    """An MMI selection that would not fit in the memory available; the message says what to do."""


@dataclass(frozen=True)
class MMISelection:
    """A greedy MMI selection: the picks in order, their gains and the running mutual information."""

    indices: list[int]  # rows of kappa, in pick order
    mi_nats: list[float]  # I(S; Z \ S) after each pick, as the running sum of gains
    gains: list[float]  # delta of each pick, in nats
    jitter: float  # added to the diagonal of kappa; 0.0 if nothing was


def exact_mmi_bytes(n: int, budget: int, in_place: bool = False) -> int:
    """Bytes `mmi_select` allocates for n checkpoints and K = budget: the n x n buffer unless in place, plus O(n K)."""
    buffer = 0 if in_place else 8 * n * n
    # G and W (n x K each), a dozen length-n vectors, and the blocked temporaries.
    return buffer + 8 * n * (2 * budget + 12) + 8 * 3 * min(n * n, max(BLOCK_ELEMENTS, n * _TRIANGLE_BLOCK))


def lowrank_mmi_bytes(n: int, rank: int, budget: int, copies_factors: bool = False) -> int:
    """Bytes `mmi_select_lowrank` allocates for an n x rank factor and K = budget (plus the factor if copied)."""
    factors = 8 * n * rank if copies_factors else 0
    # G and W (n x K each), a dozen length-n vectors, r x r matrices and the blocked temporaries.
    return factors + 8 * n * (2 * budget + 12) + 8 * 4 * rank * rank + 8 * 3 * min(n * rank, BLOCK_ELEMENTS + rank)


def choose_mmi_path(n: int, budget: int, in_place: bool = False,
                    available_bytes: int | None = None) -> Literal["exact", "lowrank"]:
    """'exact' when n <= EXACT_MAX_N and `mmi_select` fits in memory, else 'lowrank' (use `mmi_select_lowrank`)."""
    if n > EXACT_MAX_N:
        return "lowrank"
    available = available_memory_bytes() if available_bytes is None else available_bytes
    return "exact" if exact_mmi_bytes(n, budget, in_place) <= available else "lowrank"


def mmi_select(kappa: np.ndarray, budget: int, jitter: float | None = None) -> MMISelection:
    """Greedy MMI selection of `budget` rows of kappa: the picks of Algorithm 1, in O(n^3 + K n^2)."""
    given = kappa
    kappa, exactly_symmetric = _checked(kappa, budget)
    n = kappa.shape[0]
    owned = not isinstance(given, np.ndarray)  # converted here: nobody else sees it
    in_place = (kappa.dtype == np.float64 and (kappa.flags.c_contiguous or kappa.flags.f_contiguous)
                and (owned or (exactly_symmetric and kappa.flags.writeable and not _file_backed(kappa))))
    if jitter is not None and not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
    message = partial(_exact_memory_message, n)
    _require_memory(exact_mmi_bytes(n, budget, in_place), message)
    diag = kappa.diagonal().astype(np.float64)
    if not in_place:
        try:
            kappa = np.array(kappa, dtype=np.float64, order="K")
        except MemoryError:  # the estimate fitted, but the allocation did not
            raise MMIMemoryError(message(exact_mmi_bytes(n, budget), available_memory_bytes())) from None
    # The buffer as a Fortran-ordered matrix for LAPACK: kappa^T is kappa once symmetrised.
    buffer = kappa.T if kappa.flags.c_contiguous else kappa
    if not exactly_symmetric:
        _symmetrise_upper(buffer)
    restore = in_place and not owned
    try:
        return _greedy_exact(buffer, diag, budget, jitter)
    finally:
        if restore:
            _mirror_upper(buffer)
            _set_diagonal(buffer, diag)


def mmi_select_lowrank(factors: np.ndarray, diagonal: np.ndarray, budget: int,
                       jitter: float | None = None) -> MMISelection:
    """Greedy MMI selection of `budget` rows of kappa = F F^T + diag(d), in O(n (r + K)) memory, O(n (r + K)^2) time."""
    factors, noise, kappa_diag = _checked_lowrank(factors, diagonal, budget)
    mean_diag = float(kappa_diag.mean())
    if jitter is None:
        jitter = 0.0 if noise.min() >= SINGULAR_FLOOR * mean_diag else JITTER_STEPS[0] * mean_diag
    elif not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
    elif not np.all(noise + jitter > 0):
        raise ValueError(f"the diagonal d + jitter must be positive; row {int(np.argmin(noise))} has "
                         f"{noise.min() + jitter}: use jitter=None to choose a jitter")
    jitter = float(jitter)
    noise = noise + jitter
    diag = kappa_diag + jitter
    precision, h_factor = _lowrank_precision(factors, noise)  # [P_Z]_ii, and R with H_Z = R^T R

    def columns(j: int) -> tuple[np.ndarray, np.ndarray]:
        """kappa(:, j) + jitter e_j = F F_j^T + d_j e_j, and P_Z(:, j) = e_j / d_j - D^-1 F H_Z^-1 F_j^T / d_j."""
        column = factors @ factors[j]
        column[j] += noise[j]
        p_column = factors @ cho_solve((h_factor, False), factors[j])
        p_column /= noise
        p_column *= -1.0 / noise[j]
        p_column[j] += 1.0 / noise[j]
        return column, p_column

    return _greedy(diag, precision, budget, columns, jitter)


def mmi_select_literal(kappa: np.ndarray, budget: int, jitter: float = 0.0) -> MMISelection:
    """Algorithm 1 written literally, a fresh solve per candidate per step, O(K n^4): for checking only."""
    kappa = np.asarray(_checked(kappa, budget)[0], dtype=np.float64)
    n = kappa.shape[0]
    if not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
    covariance = 0.5 * (kappa + kappa.T) + jitter * np.eye(n)
    indices: list[int] = []
    gains: list[float] = []
    for _ in range(budget):
        given_s = np.ones(n)
        rest = np.ones(n)
        candidate = np.ones(n, dtype=bool)
        candidate[indices] = False
        for i in np.flatnonzero(candidate):
            others = [a for a in range(n) if a != i and a not in indices]
            given_s[i] = _conditional_variance(covariance, int(i), indices)
            rest[i] = _conditional_variance(covariance, int(i), others)
        j, gain = _pick(given_s, rest, covariance.diagonal(), candidate)
        indices.append(j)
        gains.append(gain)
    return MMISelection(indices, np.cumsum(gains).tolist(), gains, float(jitter))


def _greedy_exact(buffer: np.ndarray, diag: np.ndarray, budget: int, jitter: float | None) -> MMISelection:
    """The exact greedy on a symmetric Fortran-ordered buffer; its lower triangle ends up holding L^-1."""
    assert buffer.flags.f_contiguous  # else LAPACK and BLAS would work on silent n x n copies
    precision, jitter = _inverse_factor(buffer, diag, jitter)
    diag = diag + jitter
    return _greedy(diag, precision, budget, lambda j: (_kappa_column(buffer, diag, j), _inverse_column(buffer, j)),
                   jitter)


def _greedy(diag: np.ndarray, precision: np.ndarray, budget: int,
            columns: Callable[[int], tuple[np.ndarray, np.ndarray]], jitter: float) -> MMISelection:
    """The greedy from diag(kappa) + jitter, [P_Z]_ii (downdated in place) and columns(j) = (kappa(:, j), P_Z(:, j))."""
    n = len(diag)
    given_s = diag.copy()  # var(i | S)
    chol_s = np.empty((n, budget))  # G: var(i | S) = diag - rowwise |G|^2
    downdate = np.empty((n, budget))  # W: P_A = P - W W^T, A = Z \ S
    candidate = np.ones(n, dtype=bool)
    indices: list[int] = []
    gains: list[float] = []
    for t in range(budget):
        if t == n - 1:
            rest = diag  # the last candidate is conditioned on the empty set
        else:
            rest = np.divide(1.0, precision, out=np.ones(n), where=candidate)
        j, gain = _pick(given_s, rest, diag, candidate)
        indices.append(j)
        gains.append(gain)
        candidate[j] = False
        if t == budget - 1:
            break
        kappa_column, p_column = columns(j)
        _eliminate(kappa_column, chol_s, t, j, given_s)
        _eliminate(p_column, downdate, t, j, precision)
    return MMISelection(indices, np.cumsum(gains).tolist(), gains, float(jitter))


def _kappa_column(buffer: np.ndarray, diag: np.ndarray, j: int) -> np.ndarray:
    """kappa(:, j) (+ jitter at j) from the strict upper triangle of the buffer and the saved diagonal."""
    column = np.empty(buffer.shape[0])
    column[:j] = buffer[:j, j]
    column[j] = diag[j]
    column[j + 1:] = buffer[j, j + 1:]
    return column


def _inverse_column(buffer: np.ndarray, j: int) -> np.ndarray:
    """P(:, j) = L^-T (L^-1 e_j), with L^-1 in the buffer's lower triangle (trmv reads nothing else)."""
    column = np.zeros(buffer.shape[0])
    column[j:] = buffer[j:, j]  # L^-1 e_j is zero above row j
    return blas.dtrmv(buffer, column, lower=1, trans=1, overwrite_x=1)


def _lower_column_squares(buffer: np.ndarray) -> np.ndarray:
    """Squared norm of each column of the lower triangle (diagonal included) of the buffer."""
    n = buffer.shape[0]
    squares = np.empty(n)
    for start in range(0, n, _TRIANGLE_BLOCK):
        stop = min(n, start + _TRIANGLE_BLOCK)
        below = buffer[stop:, start:stop]
        block = np.tril(buffer[start:stop, start:stop])
        squares[start:stop] = np.einsum("ij,ij->j", below, below) + np.einsum("ij,ij->j", block, block)
    return squares


def _symmetrise_upper(buffer: np.ndarray) -> None:
    """Put (kappa_ij + kappa_ji) / 2 in the strict upper triangle; the lower triangle is only read."""
    n = buffer.shape[0]
    for start in range(0, n, _TRIANGLE_BLOCK):
        stop = min(n, start + _TRIANGLE_BLOCK)
        buffer[:start, start:stop] = 0.5 * (buffer[:start, start:stop] + buffer[start:stop, :start].T)
        block = buffer[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        block[upper] = 0.5 * (block[upper] + block.T[upper])


def _mirror_upper(buffer: np.ndarray) -> None:
    """Copy the strict upper triangle onto the strict lower one."""
    n = buffer.shape[0]
    for start in range(0, n, _TRIANGLE_BLOCK):
        stop = min(n, start + _TRIANGLE_BLOCK)
        buffer[stop:, start:stop] = buffer[start:stop, stop:].T
        block = buffer[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        block[lower] = block.T[lower]


def _set_diagonal(buffer: np.ndarray, values: np.ndarray) -> None:
    rows = np.arange(buffer.shape[0])
    buffer[rows, rows] = values


def _conditional_variance(covariance: np.ndarray, i: int, given: list[int]) -> float:
    if not given:
        return float(covariance[i, i])
    cross = covariance[i, given]
    return float(covariance[i, i] - cross @ np.linalg.solve(covariance[np.ix_(given, given)], cross))


def _pick(given_s: np.ndarray, rest: np.ndarray, diag: np.ndarray, candidate: np.ndarray) -> tuple[int, float]:
    """(index, delta) of the pick: the lowest-index candidate whose delta ties the best within rounding."""
    a, b, scale = given_s[candidate], rest[candidate], diag[candidate]
    if not (np.all(a > 0) and np.all(b > 0) and np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a conditional variance is not positive: kappa (+ jitter) is numerically singular; "
                         "use jitter=None or a larger jitter")
    gain = 0.5 * np.log(a / b)
    band = (0.5 * TIE_ULPS * np.finfo(np.float64).eps) * scale * (1.0 / a + 1.0 / b)
    best = np.max(gain - band)
    first = int(np.argmax(gain + band + TIE_NATS >= best))
    return int(np.flatnonzero(candidate)[first]), float(gain[first])


def _eliminate(column: np.ndarray, factor: np.ndarray, t: int, j: int, diagonal: np.ndarray) -> None:
    """One pivoted-Cholesky step on pivot j: store column t of the factor and downdate the diagonal."""
    if t:
        column -= factor[:, :t] @ factor[j, :t]
    pivot = column[j]
    if not pivot > 0:
        raise ValueError("a conditional variance is not positive: kappa (+ jitter) is numerically singular; "
                         "use jitter=None or a larger jitter")
    column /= np.sqrt(pivot)
    factor[:, t] = column
    diagonal -= column * column


def _checked_budget(budget: int, n: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be between 1 and the number of checkpoints ({n}), got {budget}")


def _checked(kappa: np.ndarray, budget: int) -> tuple[np.ndarray, bool]:
    """(kappa as an array, whether it is exactly symmetric), after checking it; only non-arrays are copied."""
    if not isinstance(kappa, np.ndarray):
        kappa = np.asarray(kappa, dtype=np.float64)
    if kappa.dtype.kind not in "biuf":
        raise ValueError(f"kappa must be a real matrix, got dtype {kappa.dtype}")
    if kappa.ndim != 2 or kappa.shape[0] != kappa.shape[1] or kappa.shape[0] == 0:
        raise ValueError(f"kappa must be a non-empty square matrix, got shape {kappa.shape}")
    n = kappa.shape[0]
    _checked_budget(budget, n)
    diag = kappa.diagonal().astype(np.float64)
    if not np.all(np.isfinite(diag)):
        raise ValueError("kappa has non-finite values (NaN or inf)")
    if not np.all(diag > 0):
        raise ValueError(f"kappa must have a positive diagonal; row {int(np.argmin(diag))} has {diag.min()}")
    tolerance = SYMMETRY_TOL * diag.max()
    # Bit patterns, so that a matrix restored from its upper triangle is the caller's to the bit.
    exact_view = np.int64 if kappa.dtype == np.float64 else None
    exactly_symmetric = True
    rows = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n, rows):
        block = kappa[start:start + rows]
        mirror = kappa[:, start:start + rows].T
        if exact_view is not None and exactly_symmetric:
            exactly_symmetric = np.array_equal(block.view(exact_view), mirror.view(exact_view))
        block = block.astype(np.float64, copy=False)
        if not np.all(np.isfinite(block)):
            raise ValueError("kappa has non-finite values (NaN or inf)")
        difference = block - mirror
        asymmetry = np.abs(difference, out=difference).max()
        if asymmetry > tolerance:
            raise ValueError(f"kappa is not symmetric: |kappa_ij - kappa_ji| reaches {asymmetry:.3g}")
    return kappa, exactly_symmetric and exact_view is not None


def _checked_lowrank(factors: np.ndarray, diagonal: np.ndarray,
                     budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F as C-ordered float64, d, diag of kappa) after checking them and the memory the selection needs."""
    given = factors
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[0] == 0 or factors.shape[1] == 0:
        raise ValueError(f"factors must be an n x r matrix with n, r >= 1, got shape {factors.shape}")
    n = factors.shape[0]
    _checked_budget(budget, n)
    copied = not (isinstance(given, np.ndarray) and given.dtype == np.float64 and given.flags.c_contiguous)
    # Checked before copying, so that a factor too large to copy gets the one-line error too.
    _require_memory(lowrank_mmi_bytes(n, factors.shape[1], budget, copied),
                    partial(_lowrank_memory_message, n, factors.shape[1], budget))
    factors = np.ascontiguousarray(factors, dtype=np.float64)
    noise = np.asarray(diagonal, dtype=np.float64)
    if noise.shape != (n,):
        raise ValueError(f"diagonal must have one entry per row of factors ({n}), got shape {noise.shape}")
    if not (np.all(np.isfinite(noise)) and np.all(np.isfinite(factors))):
        raise ValueError("factors and diagonal must be finite (no NaN or inf)")
    if not np.all(noise >= 0):
        raise ValueError(f"diagonal must be >= 0; row {int(np.argmin(noise))} has {noise.min()}")
    kappa_diag = np.einsum("ij,ij->i", factors, factors) + noise
    if not np.all(kappa_diag > 0):
        raise ValueError(f"kappa must have a positive diagonal; row {int(np.argmin(kappa_diag))} has 0")
    return factors, noise, kappa_diag


def _lowrank_precision(factors: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([P_Z]_ii for every i, R) for kappa = F F^T + diag(noise), with H_Z = I + F^T diag(noise)^-1 F = R^T R."""
    n, rank = factors.shape
    rows = max(1, BLOCK_ELEMENTS // rank)
    h = np.eye(rank)
    for start in range(0, n, rows):
        scaled = factors[start:start + rows] / np.sqrt(noise[start:start + rows])[:, None]
        h += scaled.T @ scaled
    h_factor = cholesky(0.5 * (h + h.T), lower=False)
    precision = np.empty(n)
    for start in range(0, n, rows):
        # |F_i R^-1|^2 = F_i H_Z^-1 F_i^T, and [P_Z]_ii = 1/d_i - F_i H_Z^-1 F_i^T / d_i^2.
        solved = solve_triangular(h_factor, factors[start:start + rows].T, trans="T")
        block_noise = noise[start:start + rows]
        precision[start:start + rows] = (1.0 - np.einsum("ij,ij->j", solved, solved) / block_noise) / block_noise
    return precision, h_factor


def _file_backed(array: np.ndarray) -> bool:
    """Whether the array's memory is a file mapping (np.memmap, np.load(mmap_mode=...)): never scribbled on."""
    base: object = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def _require_memory(needed: int, message: Callable[[int, int], str]) -> None:
    """Raise MMIMemoryError with message(needed, available) when `needed` bytes exceed what is available."""
    available = available_memory_bytes()
    if needed > available:
        raise MMIMemoryError(message(needed, available))


def _exact_memory_message(n: int, needed: int, available: int) -> str:
    return (f"exact MMI over {n:,} checkpoints needs {needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is "
            "available: use the low-rank path, mmi_select_lowrank(*lowrank_factor_from_kappa(kappa), budget) "
            "or mmi_select_lowrank(*lowrank_factor_from_features(fingerprints), budget)")


def _lowrank_memory_message(n: int, rank: int, budget: int, needed: int, available: int) -> str:
    return (f"low-rank MMI over {n:,} checkpoints (rank {rank}, budget {budget}) needs {needed / 1e9:.1f} GB of "
            f"memory but {available / 1e9:.1f} GB is available: lower the budget or the rank")


def _inverse_factor(buffer: np.ndarray, diag: np.ndarray, jitter: float | None) -> tuple[np.ndarray, float]:
    """(diag of P = L^-T L^-1, jitter) with L^-1 put in the buffer's lower triangle, kappa + jitter I = L L^T."""
    mean_diag = float(diag.mean())
    if jitter is not None:
        precision = _try_inverse_factor(buffer, diag, float(jitter), floor=0.0)
        if precision is None:
            raise ValueError(f"kappa + {jitter} I is not positive definite; use jitter=None to choose a jitter")
        return precision, float(jitter)
    floor = SINGULAR_FLOOR * mean_diag
    for eps in (0.0, *JITTER_STEPS):
        precision = _try_inverse_factor(buffer, diag, eps * mean_diag, floor)
        if precision is not None:
            return precision, eps * mean_diag
    raise ValueError(f"kappa is not positive semi-definite: still singular with {JITTER_STEPS[-1]:g} * "
                     "mean(diag) added to the diagonal")


def _try_inverse_factor(buffer: np.ndarray, diag: np.ndarray, jitter: float, floor: float) -> np.ndarray | None:
    """Put L^-1 in the lower triangle and return diag(P); None if L fails or some var(i | Z \\ {i}) is below floor."""
    # The lower triangle is rebuilt from the upper one on every try: a failed factorisation leaves it half done.
    _mirror_upper(buffer)
    _set_diagonal(buffer, diag + jitter)
    factor, info = lapack.dpotrf(buffer, lower=1, clean=0, overwrite_a=1)
    assert np.shares_memory(factor, buffer)
    # var(i | Z \ {i}) <= var(i | rows before i) = L_ii^2, so a small pivot fails early, before the inverse.
    if info != 0 or buffer.diagonal().min() ** 2 < floor:
        return None
    inverse, info = lapack.dtrtri(buffer, lower=1, overwrite_c=1)
    assert np.shares_memory(inverse, buffer)
    if info != 0:
        return None
    precision = _lower_column_squares(buffer)
    if not np.all(np.isfinite(precision)) or 1.0 / precision.max() < floor:
        return None
    return precision
