"""MMI selection against Algorithm 1 written literally, closed forms, ties, duplicates and bad input;
the low-rank path against the exact one; memory: the guard and the work in the caller's buffer."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from hubindex import selection
from hubindex.selection import (
    EXACT_MAX_N,
    JITTER_STEPS,
    MMIMemoryError,
    MMISelection,
    available_memory_bytes,
    choose_mmi_path,
    exact_mmi_bytes,
    lowrank_factor_from_features,
    lowrank_factor_from_kappa,
    mmi_select,
    mmi_select_literal,
    mmi_select_lowrank,
)


def correlation(n: int, seed: int, extra_dims: int = 5) -> np.ndarray:
    """A random full-rank kappa-like matrix: features' Gram matrix normalised to unit diagonal."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, n + extra_dims)) + rng.normal(size=(1, n + extra_dims))
    gram = features @ features.T
    scale = 1.0 / np.sqrt(gram.diagonal())
    return gram * scale[:, None] * scale[None, :]


def with_duplicates(kappa: np.ndarray, rows: list[int]) -> np.ndarray:
    """kappa of the zoo whose checkpoints are `rows` of the given one (a row repeated is a duplicate)."""
    return kappa[np.ix_(rows, rows)]


def mutual_information(kappa: np.ndarray, selected: list[int]) -> float:
    """I(S; Z \\ S) of a Gaussian with covariance kappa, from log-determinants."""
    rest = [i for i in range(len(kappa)) if i not in selected]

    def logdet(rows: list[int]) -> float:
        return np.linalg.slogdet(kappa[np.ix_(rows, rows)])[1] if rows else 0.0

    return 0.5 * (logdet(selected) + logdet(rest) - logdet(list(range(len(kappa)))))


@pytest.mark.parametrize("n", [5, 12, 30, 60])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_literal_algorithm(n: int, seed: int) -> None:
    kappa = correlation(n, seed)
    fast = mmi_select(kappa, n)
    literal = mmi_select_literal(kappa, n)
    assert fast.indices == literal.indices
    assert sorted(fast.indices) == list(range(n))
    assert fast.jitter == 0.0
    np.testing.assert_allclose(fast.gains, literal.gains, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fast.mi_nats, literal.mi_nats, rtol=1e-8, atol=1e-10)


def test_partial_budget_matches_literal() -> None:
    kappa = correlation(90, seed=5)
    assert mmi_select(kappa, 8).indices == mmi_select_literal(kappa, 8).indices


def test_mi_is_the_running_sum_of_gains_and_the_gaussian_mutual_information() -> None:
    kappa = correlation(20, seed=3)
    result = mmi_select(kappa, 20)
    np.testing.assert_allclose(result.mi_nats, np.cumsum(result.gains))
    for k in (1, 4, 10, 19):
        assert result.mi_nats[k - 1] == pytest.approx(mutual_information(kappa, result.indices[:k]), abs=1e-9)
    # I(Z; {}) = 0, so the gains add up to zero and the objective is not monotone.
    assert result.mi_nats[-1] == pytest.approx(0.0, abs=1e-9)
    assert min(result.gains) < 0


def test_selections_are_nested() -> None:
    kappa = correlation(40, seed=4)
    full = mmi_select(kappa, 40).indices
    for budget in (1, 3, 10, 25, 39):
        assert mmi_select(kappa, budget).indices == full[:budget]


def test_result_type_and_input_untouched() -> None:
    kappa = correlation(10, seed=6)
    before = kappa.copy()
    result = mmi_select(kappa, 4)
    assert isinstance(result, MMISelection)
    assert np.array_equal(kappa, before)
    assert all(isinstance(i, int) for i in result.indices)
    assert len(result.indices) == len(result.gains) == len(result.mi_nats) == 4
    with pytest.raises(AttributeError):
        result.jitter = 1.0  # type: ignore[misc]
    # Plain lists and float32 are accepted.
    assert mmi_select(kappa.astype(np.float32), 4).indices == mmi_select(kappa.tolist(), 4).indices


def test_two_checkpoints_by_hand() -> None:
    r = 0.6
    result = mmi_select(np.array([[1.0, r], [r, 1.0]]), 2)
    # Step 1: var(i | {}) = 1 and var(i | other) = 1 - r^2 for both, a tie that index 0 wins.
    # Step 2: var(1 | {0}) = 1 - r^2 and var(1 | {}) = 1.
    assert result.indices == [0, 1]
    assert result.gains == pytest.approx([-0.5 * np.log(1 - r * r), 0.5 * np.log(1 - r * r)])
    assert result.mi_nats == pytest.approx([-0.5 * np.log(1 - r * r), 0.0], abs=1e-15)


def test_three_checkpoints_by_hand() -> None:
    a, b, c = 0.7, 0.2, 0.4  # kappa_01, kappa_02, kappa_12
    kappa = np.array([[1.0, a, b], [a, 1.0, c], [b, c, 1.0]])

    def given_pair(x: float, y: float, between: float) -> float:
        """var(i | j, l) for unit variances with kappa_ij = x, kappa_il = y, kappa_jl = between."""
        return 1.0 - (x * x + y * y - 2.0 * x * y * between) / (1.0 - between * between)

    first = [-0.5 * np.log(given_pair(a, b, c)), -0.5 * np.log(given_pair(a, c, b)),
             -0.5 * np.log(given_pair(b, c, a))]
    result = mmi_select(kappa, 3)
    j = int(np.argmax(first))
    assert result.indices[0] == j == 1
    assert result.gains[0] == pytest.approx(first[j], rel=1e-12)
    # Step 2 from S = {1}: delta_i = 1/2 ln( (1 - kappa_i1^2) / (1 - kappa_il^2) ), l the third one.
    second = {0: 0.5 * np.log((1 - a * a) / (1 - b * b)), 2: 0.5 * np.log((1 - c * c) / (1 - b * b))}
    k = max(second, key=second.get)
    assert result.indices[1] == k
    assert result.gains[1] == pytest.approx(second[k], rel=1e-12)
    assert result.mi_nats[-1] == pytest.approx(0.0, abs=1e-12)


def test_single_checkpoint() -> None:
    result = mmi_select(np.array([[2.0]]), 1)
    assert (result.indices, result.gains, result.mi_nats, result.jitter) == ([0], [0.0], [0.0], 0.0)


def test_identity_ties_go_to_the_lowest_index() -> None:
    result = mmi_select(np.eye(7), 7)
    assert result.indices == list(range(7))
    assert result.gains == [0.0] * 7
    assert result.jitter == 0.0


@pytest.mark.parametrize("kappa, expected", [
    (0.5 * np.eye(10) + 0.5, list(range(10))),  # every pair alike: all ties
    (np.kron(np.eye(3), 0.3 * np.eye(4) + 0.7), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]),  # three alike blocks
    (np.kron(np.eye(3), np.ones((2, 2))), [0, 2, 4, 1, 3, 5]),  # three exact pairs of duplicates
], ids=["equicorrelated", "blocks", "duplicate-pairs"])
def test_symmetric_ties_go_to_the_lowest_index(kappa: np.ndarray, expected: list[int]) -> None:
    fast = mmi_select(kappa, len(kappa))
    assert fast.indices == expected
    assert mmi_select_literal(kappa, len(kappa), jitter=fast.jitter).indices == expected


@pytest.mark.parametrize("rows", [
    [0, 1, 2, 3, 4, 5, 6, 2],  # one checkpoint twice
    [0, 1, 2, 3, 4, 5, 2, 4, 6, 7],  # two pairs
    [3, 0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 3],  # a pair far apart
])
def test_duplicate_checkpoints(rows: list[int]) -> None:
    kappa = with_duplicates(correlation(12, seed=8), rows)
    n = len(rows)
    distinct = len(set(rows))
    result = mmi_select(kappa, n)
    assert result.jitter > 0
    assert np.all(np.isfinite(result.mi_nats)) and np.all(np.isfinite(result.gains))
    first = [rows[i] for i in result.indices[:distinct]]
    assert sorted(first) == sorted(set(rows)), "a checkpoint came twice before every distinct one"
    literal = mmi_select_literal(kappa, n, jitter=result.jitter)
    assert result.indices == literal.indices
    np.testing.assert_allclose(result.mi_nats, literal.mi_nats, rtol=1e-5, atol=1e-6)


def test_triplicate_middle_copy_gains_nothing() -> None:
    rows = [0, 1, 2, 3, 4, 5, 2, 6, 2, 7]
    kappa = with_duplicates(correlation(12, seed=8), rows)
    result = mmi_select(kappa, len(rows))
    copies = [position for position, i in enumerate(result.indices) if rows[i] == 2]
    assert copies[0] == 0 and copies[-1] == len(rows) - 1  # one copy explains the others; the last explains nothing
    middle = result.gains[copies[1]]
    assert abs(middle) < 1e-4  # given one copy, another is as predictable from S as from the rest
    # So it comes after every distinct checkpoint that still adds information, and before those that lower it.
    assert all(g >= middle - 1e-4 for g in result.gains[:copies[1]])
    assert all(g <= middle + 1e-4 for g in result.gains[copies[1]:])
    assert result.indices == mmi_select_literal(kappa, len(rows), jitter=result.jitter).indices


def test_greedy_gains_never_increase() -> None:
    # I(S; Z \ S) is submodular, so the greedy's gains fall (though not monotone: they go negative).
    for seed in range(3):
        gains = mmi_select(correlation(25, seed=20 + seed), 25).gains
        assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(gains))


def test_near_duplicates_and_all_ones_get_jitter() -> None:
    ones = mmi_select(np.ones((6, 6)), 6)
    assert ones.jitter > 0 and ones.indices == list(range(6))
    kappa = correlation(10, seed=9)
    kappa[1, 4] = kappa[4, 1] = 1.0 - 1e-15
    kappa[1, :4] = kappa[4, :4]
    kappa[:4, 1] = kappa[:4, 4]
    kappa[1, 5:] = kappa[4, 5:]
    kappa[5:, 1] = kappa[5:, 4]
    result = mmi_select(kappa, 10)
    assert result.jitter > 0 and np.all(np.isfinite(result.mi_nats))
    assert result.indices == mmi_select_literal(kappa, 10, jitter=result.jitter).indices


def test_explicit_jitter_is_used_as_given() -> None:
    kappa = correlation(15, seed=10)
    result = mmi_select(kappa, 15, jitter=1e-3)
    assert result.jitter == 1e-3
    literal = mmi_select_literal(kappa, 15, jitter=1e-3)
    assert result.indices == literal.indices
    np.testing.assert_allclose(result.mi_nats, literal.mi_nats, rtol=1e-8, atol=1e-10)
    assert mmi_select(kappa, 15, jitter=0.0).indices == mmi_select(kappa, 15).indices


def test_tiny_asymmetry_is_tolerated() -> None:
    kappa = correlation(8, seed=11)
    kappa[2, 5] += 1e-12
    assert mmi_select(kappa, 8).indices == mmi_select_literal(kappa, 8).indices


@pytest.mark.parametrize("kappa, budget, message", [
    (np.ones((3, 4)), 1, "square"),
    (np.ones(3), 1, "square"),
    (np.zeros((0, 0)), 1, "square"),
    (np.array([[1.0, 0.5], [0.4, 1.0]]), 1, "symmetric"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), 1, "non-finite"),
    (np.array([[np.inf, 0.0], [0.0, 1.0]]), 1, "non-finite"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), 1, "positive diagonal"),
    (np.eye(3), 0, "budget"),
    (np.eye(3), 4, "budget"),
])
def test_bad_input(kappa: np.ndarray, budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mmi_select(kappa, budget)
    with pytest.raises(ValueError, match=message):
        mmi_select_literal(kappa, budget)


def test_budget_must_be_an_integer() -> None:
    with pytest.raises(TypeError, match="budget"):
        mmi_select(np.eye(3), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="budget"):
        mmi_select(np.eye(3), True)


def test_not_positive_semidefinite() -> None:
    with pytest.raises(ValueError, match="not positive semi-definite"):
        mmi_select(np.array([[1.0, 2.0], [2.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="not positive"):
        mmi_select_literal(np.array([[1.0, 2.0], [2.0, 1.0]]), 1)


def test_bad_jitter() -> None:
    with pytest.raises(ValueError, match="jitter"):
        mmi_select(np.eye(3), 2, jitter=-1.0)
    with pytest.raises(ValueError, match="not positive definite"):
        mmi_select(np.ones((3, 3)), 2, jitter=0.0)


# ------------------------------------------------------------------------- memory of the exact path


def exactly_symmetric(kappa: np.ndarray) -> np.ndarray:
    """kappa with its upper triangle mirrored, so that kappa == kappa.T bit for bit."""
    return np.triu(kappa) + np.triu(kappa, 1).T


def test_memory_guard_is_one_line_and_comes_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 6000
    kappa = np.broadcast_to(np.float64(1.0), (n, n))  # read-only, so the exact path would copy it: 288 MB
    monkeypatch.setattr(selection, "available_memory_bytes", lambda: 100 * 10**6)
    tracemalloc.start()
    try:
        with pytest.raises(MMIMemoryError) as raised:
            mmi_select(kappa, 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * n * n / 2
    message = str(raised.value)
    assert "\n" not in message
    assert "needs 0.4 GB" in message and "0.1 GB is available" in message and "mmi_select_lowrank" in message
    # Code that catches memory errors, or ValueError like the other input errors, catches it.
    assert isinstance(raised.value, MemoryError) and isinstance(raised.value, ValueError)


def test_exact_path_works_in_the_callers_buffer_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    kappa = exactly_symmetric(correlation(60, seed=12))
    expected = mmi_select_literal(kappa, 12).indices
    # Room for the in-place path only: it fails if the exact path tries to copy kappa.
    room = (exact_mmi_bytes(60, 12, in_place=True) + exact_mmi_bytes(60, 12)) // 2
    monkeypatch.setattr(selection, "available_memory_bytes", lambda: room)
    for layout in (kappa, np.asfortranarray(kappa)):
        before = layout.copy()
        assert mmi_select(layout, 12).indices == expected
        assert np.array_equal(layout.view(np.int64), before.view(np.int64))
    with pytest.raises(MMIMemoryError):
        mmi_select(kappa + np.triu(np.full_like(kappa, 1e-12), 1), 12)  # not exactly symmetric: needs a copy


def test_callers_buffer_is_restored_after_an_error() -> None:
    singular = np.ones((6, 6))
    with pytest.raises(ValueError, match="not positive definite"):
        mmi_select(singular, 3, jitter=0.0)
    assert np.array_equal(singular, np.ones((6, 6)))


def test_in_place_and_copied_give_the_same_selection() -> None:
    kappa = exactly_symmetric(correlation(80, seed=13))
    in_place = mmi_select(kappa, 30)
    kappa.setflags(write=False)  # a read-only kappa is never written: it is copied
    copied = mmi_select(kappa, 30)
    assert in_place == copied


def test_choose_mmi_path() -> None:
    assert choose_mmi_path(EXACT_MAX_N + 1, 50, available_bytes=10**15) == "lowrank"
    assert choose_mmi_path(1000, 50, available_bytes=10**12) == "exact"
    tight = exact_mmi_bytes(1000, 50) - 1
    assert choose_mmi_path(1000, 50, available_bytes=tight) == "lowrank"
    assert choose_mmi_path(1000, 50, in_place=True, available_bytes=tight) == "exact"
    assert available_memory_bytes() > 0


# ---------------------------------------------------------------------------------- low-rank path


def lowrank_zoo(n: int, rank: int, seed: int, unit_diagonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(F, d) of a zoo-like kappa = F F^T + diag(d): families share a direction, d in [0.05, 1)."""
    rng = np.random.default_rng(seed)
    families = rng.normal(size=(max(1, n // 10), rank))
    factors = (families[rng.integers(0, len(families), size=n)] + rng.normal(size=(n, rank))) / np.sqrt(rank)
    factors *= rng.uniform(0.2, 1.5, size=(n, 1))
    noise = rng.uniform(0.05, 1.0, size=n)
    if unit_diagonal:  # like linear CKA
        noise = rng.uniform(0.05, 0.95, size=n)
        factors *= np.sqrt((1.0 - noise) / np.einsum("ij,ij->i", factors, factors))[:, None]
    return factors, noise


@pytest.mark.parametrize("n, rank, budget", [(6, 2, 6), (40, 5, 40), (120, 12, 30), (300, 40, 50), (25, 60, 25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lowrank_matches_exact_on_lowrank_plus_diagonal(n: int, rank: int, budget: int, seed: int) -> None:
    factors, noise = lowrank_zoo(n, rank, seed, unit_diagonal=seed == 2)
    exact = mmi_select(factors @ factors.T + np.diag(noise), budget)
    low = mmi_select_lowrank(factors, noise, budget)
    assert low.indices == exact.indices
    assert low.jitter == exact.jitter == 0.0
    np.testing.assert_allclose(low.gains, exact.gains, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(low.mi_nats, exact.mi_nats, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lowrank_duplicates_with_zero_noise_get_jitter(seed: int) -> None:
    factors, noise = lowrank_zoo(30, 6, seed)
    twins = [2, 7, 11]
    noise[twins] = 0.0  # fully explained by the factor, and then duplicated: kappa is singular
    rows = list(range(30)) + twins
    factors, noise = factors[rows], noise[rows]
    low = mmi_select_lowrank(factors, noise, len(rows))
    kappa_diag = np.einsum("ij,ij->i", factors, factors) + noise
    assert low.jitter == JITTER_STEPS[0] * kappa_diag.mean()
    assert np.all(np.isfinite(low.gains))
    assert sorted(rows[i] for i in low.indices[:30]) == list(range(30)), "a twin came before every distinct one"
    exact = mmi_select(factors @ factors.T + np.diag(noise), len(rows), jitter=low.jitter)
    assert low.indices == exact.indices
    # A jitter of 1e-10 leaves about 1e-6 nats of rounding in either path (the exact one against the literal too).
    np.testing.assert_allclose(low.mi_nats, exact.mi_nats, rtol=1e-5, atol=1e-5)


def test_lowrank_selections_are_nested_and_accept_lists() -> None:
    factors, noise = lowrank_zoo(50, 4, seed=5)
    full = mmi_select_lowrank(factors, noise, 50).indices
    for budget in (1, 7, 49):
        assert mmi_select_lowrank(factors, noise, budget).indices == full[:budget]
    assert mmi_select_lowrank(factors.tolist(), noise.tolist(), 7).indices == full[:7]
    assert mmi_select_lowrank(np.asfortranarray(factors.astype(np.float32)), noise, 3).jitter == 0.0


def test_lowrank_explicit_jitter() -> None:
    factors, noise = lowrank_zoo(20, 3, seed=6)
    low = mmi_select_lowrank(factors, noise, 20, jitter=1e-3)
    assert low.jitter == 1e-3
    assert low.indices == mmi_select(factors @ factors.T + np.diag(noise), 20, jitter=1e-3).indices
    noise[4] = 0.0
    with pytest.raises(ValueError, match="d \\+ jitter must be positive"):
        mmi_select_lowrank(factors, noise, 3, jitter=0.0)


@pytest.mark.parametrize("factors, noise, budget, message", [
    (np.ones(3), np.ones(3), 1, "n x r"),
    (np.ones((3, 0)), np.ones(3), 1, "n x r"),
    (np.ones((3, 2)), np.ones(4), 1, "one entry per row"),
    (np.ones((3, 2)), np.array([1.0, -0.1, 1.0]), 1, ">= 0"),
    (np.ones((3, 2)), np.array([1.0, np.nan, 1.0]), 1, "finite"),
    (np.array([[1.0], [0.0]]), np.array([1.0, 0.0]), 1, "positive diagonal"),
    (np.ones((3, 2)), np.ones(3), 4, "budget"),
])
def test_lowrank_bad_input(factors: np.ndarray, noise: np.ndarray, budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mmi_select_lowrank(factors, noise, budget)


def test_lowrank_memory_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    factors, noise = lowrank_zoo(100, 4, seed=7)
    monkeypatch.setattr(selection, "available_memory_bytes", lambda: 10**4)
    with pytest.raises(MMIMemoryError, match="lower the budget or the rank") as raised:
        mmi_select_lowrank(factors, noise, 10)
    assert "\n" not in str(raised.value)


def test_factor_from_kappa() -> None:
    rng = np.random.default_rng(8)
    features = rng.normal(size=(60, 8))
    exact_rank = features @ features.T
    factors, noise = lowrank_factor_from_kappa(exact_rank, rank=8)
    assert factors.shape == (60, 8)
    np.testing.assert_allclose(factors @ factors.T, exact_rank, atol=1e-9 * np.abs(exact_rank).max())
    assert np.all(noise >= 0) and noise.max() < 1e-9 * exact_rank.diagonal().max()
    # Below the full rank the residual kappa - F F^T is PSD: d is its diagonal and F F^T + diag(d) keeps kappa's.
    kappa = correlation(60, seed=8)
    factors, noise = lowrank_factor_from_kappa(kappa.astype(np.float32), rank=10)
    residual = kappa - factors @ factors.T
    assert np.linalg.eigvalsh(residual).min() > -1e-6
    np.testing.assert_allclose(noise, residual.diagonal(), atol=1e-6)
    # Its top-10 eigenvalues are kappa's, to the accuracy of the randomized method on this flat spectrum.
    np.testing.assert_allclose(np.linalg.eigvalsh(factors.T @ factors), np.linalg.eigvalsh(kappa)[-10:], rtol=1e-2)


def test_factor_from_features() -> None:
    rng = np.random.default_rng(9)
    fingerprints = rng.normal(size=(80, 12))
    fingerprints /= np.linalg.norm(fingerprints, axis=1, keepdims=True)  # kappa_ii = 1
    factors, noise = lowrank_factor_from_features(fingerprints.astype(np.float32), rank=12)
    np.testing.assert_allclose(factors @ factors.T, fingerprints @ fingerprints.T, atol=1e-6)
    assert noise.max() < 1e-6
    factors, noise = lowrank_factor_from_features(fingerprints, rank=4, diagonal=2.0)
    np.testing.assert_allclose(np.einsum("ij,ij->i", factors, factors) + noise, 2.0)
    assert np.linalg.eigvalsh(fingerprints @ fingerprints.T - factors @ factors.T).min() > -1e-9
    with pytest.raises(ValueError, match="rank"):
        lowrank_factor_from_features(fingerprints, rank=0)


def test_lowrank_of_a_factored_kappa_is_close_to_exact() -> None:
    kappa = correlation(150, seed=10)
    exact = mmi_select(kappa, 10)
    low = mmi_select_lowrank(*lowrank_factor_from_kappa(kappa, rank=150), 10)
    assert low.indices == exact.indices  # at full rank the factor is kappa itself
