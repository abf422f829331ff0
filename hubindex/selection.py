"""Maximum Mutual Information (MMI) selection of checkpoints over the task-space covariance kappa.

Greedy Algorithm 1 of Huang, Qiu & Church (2021), after Krause, Singh & Guestrin (2008). With
kappa the covariance of a Gaussian process over tasks and Z the whole zoo, S grows by the i not in
S that maximises

    delta_i = 1/2 ln( var(i | S) / var(i | Z \\ S \\ {i}) ),
    var(i | A) = kappa_ii - kappa(i, A) kappa(A, A)^-1 kappa(A, i),   var(i | {}) = kappa_ii.

The objective I(S; Z \\ S) is submodular but not monotone: gains shrink as S grows and can turn
negative (a late pick may lower the total), and the greedy still takes the largest. `mi_nats` is
the running sum of delta, in nats; the public reference prints the sum of ln ratios, i.e. twice it.

Cost O(n^3 + K n^2) for K picks out of n, against O(K n^4) for the literal algorithm
(`mmi_select_literal`, kept for checking). A Cholesky factor kappa + jitter I = L L^T and the
triangular inverse L^-1 (2n^3/3 flops, in one n x n buffer) give P = L^-T L^-1. Then two running
quantities, O(n t) each at pick t besides one O(n^2) column of P:

- var(i | S): an incremental Cholesky of the selected set (pivoted Cholesky with the greedy's picks
  as pivots). Picking j adds g = (kappa(:, j) - G G(j, :)^T) / sqrt(var(j | S)) as a column of G,
  and var(i | S) -= g_i^2.
- var(i | Z \\ S \\ {i}) = 1 / [P_A]_ii with P_A the inverse of kappa restricted to A = Z \\ S.
  Removing j from A is the rank-one Schur downdate P_A <- P_A - u u^T / u_j with u = P_A(:, j);
  it is kept in factored form, P_A = P - W W^T, so each pick costs one column of P (a
  matrix-vector product with rows j.. of L^-1) and never writes to an n x n matrix. When i is
  the last candidate left, var(i | {}) = kappa_ii.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

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
# Elements per block when scanning or copying kappa, so neither needs n x n temporaries.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class MMISelection:
    """A greedy MMI selection: the picks in order, their gains and the running mutual information."""

    indices: list[int]  # rows of kappa, in pick order
    mi_nats: list[float]  # I(S; Z \ S) after each pick, as the running sum of gains
    gains: list[float]  # delta of each pick, in nats
    jitter: float  # added to the diagonal of kappa; 0.0 if nothing was


def mmi_select(kappa: np.ndarray, budget: int, jitter: float | None = None) -> MMISelection:
    """Greedy MMI selection of `budget` rows of kappa: the picks of Algorithm 1, in O(n^3 + K n^2)."""
    kappa = _validated(kappa, budget)
    n = kappa.shape[0]
    linv, precision, jitter = _inverse_factor(kappa, jitter)  # precision: [P_A]_ii, A = Z \ S
    diag = kappa.diagonal() + jitter
    given_s = diag.copy()  # var(i | S)
    chol_s = np.empty((n, budget))  # G: var(i | S) = diag - rowwise |G|^2
    downdate = np.empty((n, budget))  # W: P_A = P - W W^T
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
        column = 0.5 * (kappa[:, j] + kappa[j, :])
        column[j] += jitter
        _eliminate(column, chol_s, t, j, given_s)
        # P(:, j) = L^-T (L^-1 e_j); L^-1 e_j is zero above row j, so only rows j.. of L^-1 are read.
        p_column = linv[j:, :].T @ linv[j:, j]
        _eliminate(p_column, downdate, t, j, precision)
    return MMISelection(indices, np.cumsum(gains).tolist(), gains, float(jitter))


def mmi_select_literal(kappa: np.ndarray, budget: int, jitter: float = 0.0) -> MMISelection:
    """Algorithm 1 written literally, a fresh solve per candidate per step, O(K n^4): for checking only."""
    kappa = _validated(kappa, budget)
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


def _validated(kappa: np.ndarray, budget: int) -> np.ndarray:
    kappa = np.asarray(kappa, dtype=np.float64)
    if kappa.ndim != 2 or kappa.shape[0] != kappa.shape[1] or kappa.shape[0] == 0:
        raise ValueError(f"kappa must be a non-empty square matrix, got shape {kappa.shape}")
    n = kappa.shape[0]
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an integer, got {budget!r}")
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be between 1 and the number of checkpoints ({n}), got {budget}")
    diag = kappa.diagonal()
    if not np.all(np.isfinite(diag)):
        raise ValueError("kappa has non-finite values (NaN or inf)")
    if not np.all(diag > 0):
        raise ValueError(f"kappa must have a positive diagonal; row {int(np.argmin(diag))} has {diag.min()}")
    tolerance = SYMMETRY_TOL * diag.max()
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, rows):
        block = kappa[start:start + rows]
        if not np.all(np.isfinite(block)):
            raise ValueError("kappa has non-finite values (NaN or inf)")
        asymmetry = np.abs(block - kappa[:, start:start + rows].T).max()
        if asymmetry > tolerance:
            raise ValueError(f"kappa is not symmetric: |kappa_ij - kappa_ji| reaches {asymmetry:.3g}")
    return kappa


def _inverse_factor(kappa: np.ndarray, jitter: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(L^-1, diag of P = L^-T L^-1, jitter) for (kappa + kappa^T) / 2 + jitter I = L L^T."""
    n = kappa.shape[0]
    # One n x n buffer for L, then L^-1 in place: lower triangle, zeros above, Fortran order for LAPACK.
    work = np.empty((n, n), order="F")
    mean_diag = float(kappa.diagonal().mean())
    if jitter is not None:
        if not (np.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
        precision = _try_inverse_factor(kappa, float(jitter), work, floor=0.0)
        if precision is None:
            raise ValueError(f"kappa + {jitter} I is not positive definite; use jitter=None to choose a jitter")
        return work, precision, float(jitter)
    floor = SINGULAR_FLOOR * mean_diag
    for eps in (0.0, *JITTER_STEPS):
        precision = _try_inverse_factor(kappa, eps * mean_diag, work, floor)
        if precision is not None:
            return work, precision, eps * mean_diag
    raise ValueError(f"kappa is not positive semi-definite: still singular with {JITTER_STEPS[-1]:g} * "
                     "mean(diag) added to the diagonal")


def _try_inverse_factor(kappa: np.ndarray, jitter: float, work: np.ndarray, floor: float) -> np.ndarray | None:
    """Put L^-1 in work and return diag(P); None if L fails or some var(i | Z \\ {i}) = 1 / P_ii is below floor."""
    n = kappa.shape[0]
    columns = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n, columns):
        stop = min(n, start + columns)
        work[:, start:stop] = 0.5 * (kappa[:, start:stop] + kappa[start:stop, :].T)
    work[np.diag_indices(n)] += jitter
    factor, info = lapack.dpotrf(work, lower=1, clean=1, overwrite_a=1)
    assert np.shares_memory(factor, work)
    # var(i | Z \ {i}) <= var(i | rows before i) = L_ii^2, so a small pivot fails early, before the inverse.
    if info != 0 or work.diagonal().min() ** 2 < floor:
        return None
    inverse, info = lapack.dtrtri(work, lower=1, overwrite_c=1)
    assert np.shares_memory(inverse, work)
    if info != 0:
        return None
    precision = np.einsum("ij,ij->j", work, work)
    if not np.all(np.isfinite(precision)) or 1.0 / precision.max() < floor:
        return None
    return precision
