"""kappa against a direct evaluation of the formula, its properties, and the sketch."""

from __future__ import annotations

import numpy as np
import pytest

from hubindex.kappa import TensorSketch, _gram_route_is_cheaper, kappa_matrix, kappa_pair


def direct_kappa(a: np.ndarray, b: np.ndarray, centered: bool = True) -> float:
    """METHODS.md section 1, written out literally."""
    if centered:
        a = a - a.mean(axis=0)
        b = b - b.mean(axis=0)
    return np.linalg.norm(a.T @ b, "fro") ** 2 / (np.linalg.norm(a.T @ a, "fro") * np.linalg.norm(b.T @ b, "fro"))


@pytest.fixture
def zoo() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shared = rng.normal(size=(150, 16))
    # Wide (d > m) and narrow (d < m) matrices exercise both ways of computing the norms.
    return [
        shared @ rng.normal(size=(16, 40)) + 0.3 * rng.normal(size=(150, 40)),
        shared @ rng.normal(size=(16, 300)) + 1.0 * rng.normal(size=(150, 300)),
        np.tanh(shared @ rng.normal(size=(16, 8))),
        rng.normal(size=(150, 20)) + 5.0,
    ]


@pytest.mark.parametrize("centered", [True, False])
def test_matrix_matches_direct_formula(zoo: list[np.ndarray], centered: bool) -> None:
    values = kappa_matrix(zoo, centered=centered).values
    for i, a in enumerate(zoo):
        for j, b in enumerate(zoo):
            assert values[i, j] == pytest.approx(direct_kappa(a, b, centered), abs=1e-6)


def test_wide_features_take_the_gram_route_and_match() -> None:
    rng = np.random.default_rng(2)
    shared = rng.normal(size=(40, 10))
    zoo = [shared @ rng.normal(size=(10, d)) + rng.normal(size=(40, d)) for d in (200, 300, 250)]
    assert _gram_route_is_cheaper([200, 300, 250], 40)
    values = kappa_matrix(zoo).values
    for i, a in enumerate(zoo):
        for j, b in enumerate(zoo):
            assert values[i, j] == pytest.approx(direct_kappa(a, b), abs=1e-9)


def test_properties(zoo: list[np.ndarray]) -> None:
    result = kappa_matrix(zoo)
    values = result.values
    assert np.array_equal(values, values.T)
    assert np.allclose(np.diag(values), 1.0)
    assert (values >= 0).all() and (values <= 1 + 1e-12).all()
    assert np.linalg.eigvalsh(values).min() > -1e-9  # PSD: a covariance over tasks
    assert (result.n_items == 150).all()


def test_invariances(zoo: list[np.ndarray]) -> None:
    a, b = zoo[0], zoo[1]
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    assert kappa_pair(a @ rotation * 3.0 + 2.0, b)[0] == pytest.approx(kappa_pair(a, b)[0], abs=1e-9)


def test_dropped_items_compare_on_shared_rows(zoo: list[np.ndarray]) -> None:
    a, b = zoo[0].copy(), zoo[1].copy()
    a[:10] = np.nan
    b[5:20] = np.nan
    value, n_items = kappa_pair(a, b)
    keep = np.r_[20:150]
    assert n_items == 130
    assert value == pytest.approx(direct_kappa(zoo[0][keep], zoo[1][keep]), abs=1e-9)
    matrix = kappa_matrix([a, b, zoo[2]])
    assert matrix.n_items[0, 1] == 130 and matrix.n_items[0, 2] == 140 and matrix.n_items[2, 2] == 150
    assert matrix.values[0, 1] == pytest.approx(value)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same rows"):
        kappa_pair(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        kappa_matrix([np.ones((5, 2)), np.arange(10.0).reshape(5, 2)])
    with pytest.raises(ValueError, match="at least 2"):
        kappa_pair(np.full((3, 2), np.nan), np.ones((3, 2)))


def test_sketch_inner_products_estimate_kappa(zoo: list[np.ndarray]) -> None:
    exact = kappa_matrix(zoo).values
    sketch = TensorSketch(n_items=150, dim=8192, seed=3)
    prints = np.stack([sketch.fingerprint(f) for f in zoo])
    approx = prints @ prints.T
    assert np.abs(approx - exact).max() < 0.1
    # The ranking of neighbours is what `hubindex neighbors` needs.
    assert np.argsort(-approx[0])[1] == np.argsort(-exact[0])[1]
