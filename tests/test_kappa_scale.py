"""Catalog kappa in blocks: any chunking gives the float64 formula, blocks commit as they finish, torch agrees."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_relate import register
from test_search import add_checkpoints

from hubindex.index import Index
from hubindex.kappa import gram_inner_products, kappa_against, kappa_pair
from hubindex.relate import resolve_corpus, update_kappa


def families(n: int, m: int = 90, seed: int = 0) -> dict[str, np.ndarray]:
    """n checkpoints in a few families: a shared latent basis each, own mixing and noise."""
    rng = np.random.default_rng(seed)
    bases = [rng.normal(size=(m, 6)) for _ in range(3)]
    zoo = {}
    for k in range(n):
        d = int(rng.integers(8, 30))
        zoo[f"s:{k:03d}"] = (bases[k % 3] @ rng.normal(size=(6, d)) + rng.uniform(0.1, 2.0) * rng.normal(size=(m, d))
                             + rng.normal(size=d) * 3.0)
    return zoo


def stored_kappa(index: Index) -> dict[tuple[str, str], float]:
    with index.open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute("SELECT checkpoint_a, checkpoint_b, value FROM kappa").fetchall()
    return {(a, b): v for a, b, v in rows}


def run_update(index: Index, **kwargs: Any) -> Any:
    with index.open_catalog() as catalog:
        return update_kappa(catalog, index.root, resolve_corpus(catalog, None), **kwargs)


@pytest.mark.parametrize("feature_bytes", [1, 3 * 90 * 30 * 4 * 2, 1 << 30])
def test_any_chunking_gives_the_formula(index: Index, feature_bytes: int) -> None:
    zoo = families(9)
    for name, features in zoo.items():
        register(index, name, features)
    update = run_update(index, feature_bytes=feature_bytes, device=None)
    assert update.computed == 36 and not update.failed
    for (a, b), value in stored_kappa(index).items():
        assert value == pytest.approx(kappa_pair(zoo[a], zoo[b])[0], abs=1e-7), (a, b)


def test_incremental_blocks_pair_only_the_new_rows(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubindex import relate

    zoo = families(12)
    names = sorted(zoo)
    for name in names[:10]:
        register(index, name, zoo[name])
    run_update(index, device=None)
    calls: list[tuple[int, int]] = []
    original = relate.gram_inner_products

    def counting(rows: list, columns: list | None = None, **kwargs: Any) -> Any:
        calls.append((len(rows), len(columns) if columns is not None else len(rows)))
        return original(rows, columns, **kwargs)

    monkeypatch.setattr(relate, "gram_inner_products", counting)
    for name in (names[10], names[11]):
        register(index, name, zoo[name])
    # Chunks of 4 checkpoints: the two new rows meet their 11 partners (10 old, one another) in
    # three blocks.
    update = run_update(index, feature_bytes=2 * 4 * 90 * 29 * 4, device=None)
    assert update.computed == 21 and update.reused == 45
    assert [rows for rows, _ in calls] == [2, 2, 2] and sum(columns for _, columns in calls) == 11
    values = stored_kappa(index)
    assert len(values) == 66
    for (a, b), value in values.items():
        assert value == pytest.approx(kappa_pair(zoo[a], zoo[b])[0], abs=1e-7)


def test_an_interrupted_run_keeps_its_finished_blocks(index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubindex import relate

    zoo = families(8)
    for name, features in zoo.items():
        register(index, name, features)
    original = relate.gram_inner_products
    blocks = {"done": 0}

    def dies_on_the_third_block(*args: Any, **kwargs: Any) -> Any:
        if blocks["done"] == 2:
            raise KeyboardInterrupt
        blocks["done"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(relate, "gram_inner_products", dies_on_the_third_block)
    with pytest.raises(KeyboardInterrupt):
        run_update(index, feature_bytes=2 * 2 * 90 * 29 * 4, device=None)  # chunks of 2: ten blocks
    kept = stored_kappa(index)
    assert 0 < len(kept) < 28
    monkeypatch.setattr(relate, "gram_inner_products", original)
    update = run_update(index, device=None)
    assert update.reused == len(kept) and update.computed == 28 - len(kept)
    for (a, b), value in stored_kappa(index).items():
        assert value == pytest.approx(kappa_pair(zoo[a], zoo[b])[0], abs=1e-7)


def test_unreadable_and_constant_checkpoints_fail_alone(index: Index) -> None:
    zoo = families(5)
    zoo["s:flat"] = np.ones((90, 12))
    for name, features in zoo.items():
        register(index, name, features)
    with index.open_catalog(read_only=True) as catalog:
        (path,) = catalog.conn.execute("SELECT path FROM embeddings WHERE checkpoint_id = 's:001'").fetchone()
    (index.root / path).write_bytes(b"damaged")
    update = run_update(index, device=None)
    assert update.failed == ["s:001", "s:flat"]
    assert update.computed == 6  # the four others, all their pairs
    with index.open_catalog(read_only=True) as catalog:
        subjects = {s for (s,) in catalog.conn.execute("SELECT subject FROM failures WHERE stage = 'kappa'").fetchall()}
    assert subjects == {"s:001", "s:flat"}


def test_torch_gives_the_numpy_products() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    rows = [rng.normal(size=(70, d)) for d in (5, 17, 30)]
    columns = [rng.normal(size=(70, d)) for d in (9, 12)]
    for left, right in ((rows, None), (rows, columns)):
        by_numpy = gram_inner_products(left, right, block_bytes=20_000).kappa()
        by_torch = gram_inner_products(left, right, block_bytes=20_000, device="cpu").kappa()
        np.testing.assert_allclose(by_torch, by_numpy, atol=1e-9)


@pytest.mark.gpu
def test_cuda_gives_the_numpy_products() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    rng = np.random.default_rng(5)
    rows = [rng.normal(size=(300, d)) for d in (64, 128, 100)]
    np.testing.assert_allclose(gram_inner_products(rows, device="cuda").kappa(),
                               gram_inner_products(rows).kappa(), atol=1e-7)


def test_kappa_against_is_the_formula_and_handles_dropped_items(tmp_path: Path) -> None:
    zoo = list(families(6, m=120, seed=2).values())
    truncated = zoo[3].copy()
    truncated[100:] = np.nan
    others = [*zoo[1:], truncated]
    values = kappa_against(zoo[0], others)
    expected = [kappa_pair(zoo[0], other)[0] for other in others]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    if importlib.util.find_spec("torch") is not None:
        np.testing.assert_allclose(kappa_against(zoo[0], others, device="cpu"), values, atol=1e-9)
    with pytest.raises(ValueError, match="constant"):
        kappa_against(np.ones((120, 4)), others)


def test_above_dense_max_kappa_is_a_sparse_graph_of_exact_nearest_pairs(index: Index, hubindex: Any) -> None:
    zoo = families(40, seed=6)
    names = sorted(zoo)
    for name in names[:36]:
        register(index, name, zoo[name])
    result = hubindex("kappa", "--dense-max", "10", "--graph-neighbors", "5", "--graph-candidates", "15")
    assert result.exit_code == 0, result.stderr
    assert "36 checkpoints (sparse graph: 5 highest of 15 candidates each)" in result.stdout
    stored = stored_kappa(index)
    assert 36 * 5 / 2 <= len(stored) <= 36 * 5  # each pair once, found from one end or both
    for (a, b), value in stored.items():  # float32 products: kappa_against's 1e-6
        assert value == pytest.approx(kappa_pair(zoo[a], zoo[b])[0], abs=1e-6)
    # Against exact all-pairs kappa, each checkpoint's 5 nearest are in the graph.
    exact = {(a, b): kappa_pair(zoo[a], zoo[b])[0] for a in names[:36] for b in names[:36] if a != b}
    found = 0
    for a in names[:36]:
        nearest = sorted((b for b in names[:36] if b != a), key=lambda b: -exact[(a, b)])[:5]
        found += sum(tuple(sorted((a, b))) in stored for b in nearest)
    assert found / (36 * 5) >= 0.9

    again = hubindex("kappa", "--dense-max", "10", "--graph-neighbors", "5", "--graph-candidates", "15")
    assert "0 pairs computed" in again.stdout, again.stdout
    for name in names[36:]:
        register(index, name, zoo[name])
    more = hubindex("kappa", "--dense-max", "10", "--graph-neighbors", "5", "--graph-candidates", "15")
    assert "40 checkpoints" in more.stdout
    with index.open_catalog(read_only=True) as catalog:
        searched = catalog.conn.execute("SELECT count(*) FROM kappa_graph").fetchone()[0]
    assert searched == 40
    new_pairs = set(stored_kappa(index)) - set(stored)
    assert new_pairs and all(set(pair) & set(names[36:]) for pair in new_pairs)  # only the new ones searched


def test_graph_options_are_checked(index: Index, hubindex: Any) -> None:
    register(index, "s:one", families(1)["s:000"])
    result = hubindex("kappa", "--graph-neighbors", "50", "--graph-candidates", "10")
    assert result.exit_code == 2
    assert "--graph-neighbors 50 exceeds --graph-candidates 10" in result.stderr


def graph_index(index: Index, hubindex: Any, n: int = 30) -> dict[str, np.ndarray]:
    zoo = families(n, seed=8)
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    result = hubindex("kappa", "--dense-max", "10", "--graph-neighbors", "4", "--graph-candidates", "12")
    assert result.exit_code == 0, result.stderr
    return zoo


def test_mmi_on_a_sparse_graph_runs_on_the_fingerprints_low_rank_kappa(index: Index, hubindex: Any) -> None:
    graph_index(index, hubindex)
    result = hubindex("select", "mmi", "--budget", "4")
    assert result.exit_code == 0, result.stderr
    assert "kappa is a sparse graph: MMI runs on a rank-" in result.stderr
    picks = [line.split()[1] for line in result.stdout.splitlines()[2:]]
    assert len(picks) == len(set(picks)) == 4
    # The three families are the task space's three directions: the first three picks cover them.
    assert len({int(p.split(":")[1]) % 3 for p in picks[:3]}) == 3


def test_mmi_beyond_the_exact_limit_goes_low_rank_and_keeps_its_picks_close(
        index: Index, hubindex: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubindex import selection

    zoo = families(24, seed=9)
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    assert hubindex("kappa").exit_code == 0
    exact = hubindex("select", "mmi", "--budget", "3", "--json")
    monkeypatch.setattr(selection, "EXACT_MAX_N", 10)
    approximate = hubindex("select", "mmi", "--budget", "3", "--json")
    assert approximate.exit_code == 0, approximate.stderr
    import json

    exact_picks, approximate_picks = (json.loads(r.stdout)["selected"] for r in (exact, approximate))
    assert exact_picks != [] and len(approximate_picks) == 3
    assert {int(p.split(":")[1]) % 3 for p in approximate_picks} == {0, 1, 2}  # one per family, as exact


def test_a_checkpoint_without_its_pairs_is_left_out_not_the_whole_pool(index: Index, hubindex: Any) -> None:
    zoo = families(6, seed=10)
    names = sorted(zoo)
    for name in names[:5]:
        register(index, name, zoo[name])
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    assert hubindex("kappa").exit_code == 0
    register(index, names[5], zoo[names[5]])  # probed after the last kappa run
    result = hubindex("select", "mmi", "--budget", "5", "--json")
    assert result.exit_code == 0, result.stderr
    import json

    assert sorted(json.loads(result.stdout)["selected"]) == names[:5]


def test_select_mmi_on_a_kappa_file_beyond_the_exact_limit(tmp_path: Path, hubindex: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from hubindex import selection

    rng = np.random.default_rng(3)
    factors = rng.normal(size=(40, 5))
    kappa = factors @ factors.T + np.diag(rng.uniform(0.5, 1.0, 40))
    np.save(tmp_path / "kappa.npy", kappa)
    monkeypatch.setattr(selection, "EXACT_MAX_N", 10)
    result = hubindex("select", "mmi", "--budget", "5", "--kappa", str(tmp_path / "kappa.npy"), "--json")
    assert result.exit_code == 0, result.stderr
    assert "too many for exact MMI" in result.stderr
    import json

    exact = selection.mmi_select(kappa, 5).indices
    assert json.loads(result.stdout)["selected"] == exact  # rank 40 of a rank-5 + diagonal kappa: the same picks
