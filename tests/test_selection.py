"""MMI selection against Algorithm 1 written literally, closed forms, ties, duplicates and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hubindex.selection import MMISelection, mmi_select, mmi_select_literal


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
