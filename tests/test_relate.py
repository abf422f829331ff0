"""`hubindex kappa` (catalog and array modes), `neighbors` and `plot kappa` on a real store and catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_kappa import direct_kappa

from hubindex.catalog import utcnow
from hubindex.index import Index
from hubindex.store import EmbeddingStore, embedding_key

CORPUS_HASH = "f" * 64


def family(seed: int = 0, m: int = 120) -> dict[str, np.ndarray]:
    """Feature matrices of related and unrelated 'checkpoints' on the same m items."""
    rng = np.random.default_rng(seed)
    parent = rng.normal(size=(m, 24))
    other = rng.normal(size=(m, 24))
    return {
        "t:parent": parent @ rng.normal(size=(24, 48)),
        "t:child": parent @ rng.normal(size=(24, 32)) + 0.3 * rng.normal(size=(m, 32)),
        "t:cousin": np.tanh(parent[:, :12]) @ rng.normal(size=(12, 20)) + 1.0 * rng.normal(size=(m, 20)),
        "t:stranger": other @ rng.normal(size=(24, 40)),
        "t:noise": rng.normal(size=(m, 64)),
    }


def register(index: Index, checkpoint_id: str, features: np.ndarray, sha: str = "1") -> None:
    """Store features and register them as the probe pipeline does."""
    key = embedding_key(sha + checkpoint_id, CORPUS_HASH, "last", "test")
    stored = EmbeddingStore(index.root).write(key, features)
    with index.open_catalog() as catalog:
        catalog.register_embedding({
            "checkpoint_id": checkpoint_id, "checkpoint_sha": sha, "corpus": "toy-corpus",
            "corpus_hash": CORPUS_HASH, "layer": "last", "pooling": "test", "probe": "test",
            "probe_version": "1", "n_items": stored.n_items, "n_kept": stored.n_kept, "dim": stored.dim,
            "path": stored.path, "file_sha256": stored.sha256, "seconds": 0.0, "created_at": utcnow(),
        })


def kappa_rows_matrix(rows: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The checkpoints (sorted) and symmetric matrix, unit diagonal, of `kappa --format json`'s pair rows."""
    ids = sorted({r["checkpoint_a"] for r in rows} | {r["checkpoint_b"] for r in rows})
    position = {cid: i for i, cid in enumerate(ids)}
    values = np.eye(len(ids))
    for r in rows:
        i, j = position[r["checkpoint_a"]], position[r["checkpoint_b"]]
        values[i, j] = values[j, i] = r["kappa"]
    return ids, values


def kappa_json(hubindex: Any, *args: str) -> dict[str, Any]:
    """`kappa --format json` as {"checkpoints", "kappa" (matrix), "rows" (as printed)}."""
    result = hubindex("kappa", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    ids, values = kappa_rows_matrix(rows)
    return {"checkpoints": ids, "kappa": values.tolist(), "rows": rows}


def test_catalog_kappa_matches_direct_and_is_incremental(index: Index, hubindex: Any) -> None:
    zoo = family()
    names = list(zoo)
    for name in names[:4]:
        register(index, name, zoo[name])
    first = hubindex("kappa")
    assert first.exit_code == 0, first.stderr
    assert "4 checkpoints, 6 pairs computed, 0 reused" in first.stdout

    register(index, names[4], zoo[names[4]])
    second = hubindex("kappa")
    assert "5 checkpoints, 4 pairs computed, 6 reused" in second.stdout

    # A checkpoint whose sha changed gets its pairs recomputed, the others are reused.
    register(index, "t:child", zoo["t:child"] * 2.0, sha="2")
    third = hubindex("kappa")
    assert "5 checkpoints, 4 pairs computed, 6 reused" in third.stdout

    table = kappa_json(hubindex)
    ids = table["checkpoints"]
    values = np.array(table["kappa"])
    assert sorted(ids) == sorted(names)
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            assert values[i, j] == pytest.approx(direct_kappa(zoo[a], zoo[b]), abs=1e-6)
    with index.open_catalog(read_only=True) as catalog:
        assert catalog.conn.execute("SELECT count(*) FROM kappa").fetchone() == (10,)
        assert catalog.conn.execute("SELECT count(*) FROM kappa WHERE checkpoint_a >= checkpoint_b").fetchone() == (0,)

    # The family structure: a checkpoint and its child are closer than unrelated checkpoints.
    position = {name: i for i, name in enumerate(ids)}
    assert values[position["t:parent"], position["t:child"]] > values[position["t:parent"], position["t:stranger"]]


def test_neighbors_find_the_highest_kappa(index: Index, hubindex: Any) -> None:
    zoo = family(seed=3, m=300)
    for name, features in zoo.items():
        register(index, name, features)
    table = kappa_json(hubindex)
    values = np.array(table["kappa"])
    ids = table["checkpoints"]
    result = hubindex("neighbors", "t:parent", "-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    row = values[ids.index("t:parent")]
    exact_order = [ids[i] for i in np.argsort(-row) if ids[i] != "t:parent"]
    assert [f["checkpoint_id"] for f in found] == exact_order[:2]
    for entry in found:
        exact = row[ids.index(entry["checkpoint_id"])]
        assert entry["kappa"] == pytest.approx(exact, abs=1e-6)  # re-ranked by exact kappa
        assert abs(entry["kappa_estimate"] - exact) < 0.1
    missing = hubindex("neighbors", "t:nobody")
    assert missing.exit_code == 2 and "has no fingerprint" in missing.stderr


def test_plot_kappa_writes_png(index: Index, hubindex: Any, tmp_path: Path) -> None:
    for name, features in family().items():
        register(index, name, features)
    assert hubindex("kappa").exit_code == 0
    out = tmp_path / "kappa.png"
    result = hubindex("plot", "kappa", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_array_mode_json_matches_direct(tmp_path: Path, hubindex: Any) -> None:
    zoo = family(seed=5)
    paths = []
    for name, features in zoo.items():
        path = tmp_path / f"{name.split(':')[1]}.npy"
        np.save(path, features)
        paths.append(str(path))
    result = hubindex("kappa", "--arrays", *paths, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)  # one row per pair of files, in the order given
    assert [(r["checkpoint_a"], r["checkpoint_b"]) for r in out] == [
        (a, b) for i, a in enumerate(paths) for b in paths[i + 1:]]
    assert {r["n_items"] for r in out} == {120}
    ids, values = kappa_rows_matrix(out)
    assert ids == sorted(paths)
    features = [zoo[f"t:{Path(p).stem}"] for p in ids]
    direct = np.array([[direct_kappa(a, b) for b in features] for a in features])
    assert np.abs(values - direct).max() < 1e-6
    uncentered = kappa_rows_matrix(json.loads(hubindex("kappa", "--arrays", *paths, "--json", "--uncentered").stdout))
    assert np.abs(uncentered[1] - np.array(
        [[direct_kappa(a, b, centered=False) for b in features] for a in features])).max() < 1e-6
    table = hubindex("kappa", "--arrays", *paths)
    assert table.exit_code == 0 and "parent" in table.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: [str(d / "a.npy")], "at least two"),
        (lambda d: [str(d / "a.npy"), str(d / "missing.npy")], "no such file"),
        (lambda d: [str(d / "a.npy"), str(d / "short.npy")], "same number of rows"),
        (lambda d: [str(d / "a.npy"), str(d / "text.npy")], "not a .npy"),
        (lambda d: [str(d / "a.npy"), str(d / "vector.npy")], "2-D"),
    ],
)
def test_array_mode_bad_input(tmp_path: Path, hubindex: Any, setup: Any, message: str) -> None:
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(10, 3)))
    np.save(tmp_path / "short.npy", np.ones((9, 3)))
    np.save(tmp_path / "vector.npy", np.ones(10))
    (tmp_path / "text.npy").write_text("not numpy")
    result = hubindex("kappa", "--arrays", *setup(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_kappa_without_probes_is_a_clear_error(hubindex: Any) -> None:
    result = hubindex("kappa")
    assert result.exit_code == 1
    assert result.stderr.startswith("hubindex: error: no checkpoint has been probed")


def test_catalog_kappa_takes_the_gram_route_and_stays_exact(index: Index, hubindex: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from hubindex import relate

    zoo = family(seed=3, m=150)
    zoo["t:truncated"] = zoo["t:parent"][:, :30].copy()
    zoo["t:truncated"][140:] = np.nan  # dropped items: compared with each pair on the items both kept
    names = sorted(zoo)
    for name in names[:4]:
        register(index, name, zoo[name])
    assert "4 checkpoints, 6 pairs computed" in hubindex("kappa").stdout

    # Two new checkpoints: the Gram route's rows are only those two, against every column.
    rows_used: list[int] = []
    original = relate.gram_inner_products

    def counting(rows: list, columns: list | None = None, *args: Any, **kwargs: Any) -> Any:
        rows_used.append(len(rows))
        return original(rows, columns, *args, **kwargs)

    monkeypatch.setattr(relate, "gram_inner_products", counting)
    for name in names[4:]:
        register(index, name, zoo[name])
    second = hubindex("kappa")
    assert "6 checkpoints, 9 pairs computed, 6 reused" in second.stdout, second.stdout
    assert rows_used == [1]  # of the two new, only the complete one takes the Gram route

    from hubindex.kappa import kappa_pair  # the float64 formula, on the items both kept

    table = kappa_json(hubindex)
    ids, values = table["checkpoints"], np.array(table["kappa"])
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            assert values[i, j] == pytest.approx(kappa_pair(zoo[a], zoo[b])[0], abs=1e-8), (a, b)


def test_a_run_with_nothing_to_compute_reads_no_features(index: Index, hubindex: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    zoo = family()
    for name, features in zoo.items():
        register(index, name, features)
    assert "10 pairs computed" in hubindex("kappa").stdout
    reads: list[str] = []
    original = EmbeddingStore.read
    monkeypatch.setattr(EmbeddingStore, "read", lambda self, path, *a, **k: reads.append(path) or original(self, path, *a, **k))
    again = hubindex("kappa")
    assert "5 checkpoints, 0 pairs computed, 10 reused" in again.stdout
    assert reads == []


def test_the_covering_rows_are_the_checkpoints_with_most_missing_pairs() -> None:
    from hubindex.relate import covering_checkpoints

    n = 40  # 3 new checkpoints (37, 38, 39) miss pairs with everyone: they are the rows
    pairs = [(i, j) for j in (37, 38, 39) for i in range(j)]
    first, second = (np.array(side) for side in zip(*pairs))
    assert covering_checkpoints(first, second, n).tolist() == [37, 38, 39]
    everything = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    first, second = (np.array(side) for side in zip(*everything))
    assert covering_checkpoints(first, second, 6).tolist() == list(range(6))
