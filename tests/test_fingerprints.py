"""The fingerprint index: append-only shards on disk, crash consistency with the catalog, exact and
IVF search, and `neighbors` re-ranked by exact kappa - on real files, a real DuckDB catalog and real FAISS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Zoo, run_hubindex
from test_relate import CORPUS_HASH, family, kappa_rows_matrix, register

import hubindex.fingerprint_index as fingerprint_index
import hubindex.fingerprints as fingerprints
from hubindex.fingerprints import (
    FingerprintIndex,
    fingerprint_candidates,
    fingerprint_folder,
    fingerprint_matrix,
    nearest_checkpoints,
    task_fingerprint,
    update_fingerprints,
)
from hubindex.index import Index
from hubindex.kappa import TensorSketch, kappa_pair
from hubindex.relate import CorpusRef, resolve_corpus

CORPUS = CorpusRef("toy-corpus", CORPUS_HASH)


def clustered(n: int, dim: int, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few centres, as fingerprints of checkpoint families are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def catalog_rows(index: Index) -> dict[str, tuple[str, int]]:
    with index.open_catalog(read_only=True) as catalog:
        return {c: (sha, fp) for c, sha, fp in catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, fp_id FROM fingerprints").fetchall()}


def update(index: Index) -> tuple[int, int]:
    with index.open_catalog() as catalog:
        return update_fingerprints(catalog, index.root, CORPUS)


# ------------------------------------------------------------------------------ the sketch


def test_the_fast_fingerprint_is_the_tensor_sketch() -> None:
    features = family(seed=1, m=150)["t:cousin"].astype(np.float32)
    features[7] = np.nan  # a dropped item
    for dim in (256, 1024):
        expected = TensorSketch(150, dim, seed=4).fingerprint(features)
        np.testing.assert_allclose(task_fingerprint(features, dim, seed=4), expected, atol=1e-6)
    with pytest.raises(ValueError, match="constant"):
        task_fingerprint(np.ones((10, 3)), 64)


# ------------------------------------------------------------------------------ the row files


def test_appending_writes_only_the_new_rows(tmp_path: Path) -> None:
    folder = tmp_path / "fp"
    index = FingerprintIndex.open(folder, dim=16, writable=True, shard_rows=8, approximate_above=10**9)
    first = clustered(20, 16)
    assert index.append(first).tolist() == list(range(20))
    before = folder_state(folder)
    assert sorted(before) == ["layout.json", "rows-00000.f16", "rows-00001.f16", "rows-00002.f16"]

    later = FingerprintIndex.open(folder, dim=16, writable=True)  # a later command
    assert later.append(clustered(7, 16, seed=1)).tolist() == list(range(20, 27))
    after = folder_state(folder)
    for name in ("layout.json", "rows-00000.f16", "rows-00001.f16"):  # full shards: not touched at all
        assert after[name] == before[name], name
    assert after["rows-00002.f16"][0][:len(before["rows-00002.f16"][0])] == before["rows-00002.f16"][0]
    assert after["rows-00003.f16"][0] and (folder / "rows-00003.f16").stat().st_size == 3 * 16 * 2

    reread = FingerprintIndex.open(folder, dim=16)
    assert reread.n_rows == 27
    np.testing.assert_allclose(reread.rows(np.arange(20)), first, atol=1e-3)  # float16 on disk
    with pytest.raises(Exception, match="dim 16"):
        FingerprintIndex.open(folder, dim=32)


def test_closing_a_shard_writes_its_ivf_file_and_rewrites_no_other(tmp_path: Path) -> None:
    folder = tmp_path / "fp"
    index = FingerprintIndex.open(folder, dim=32, writable=True, shard_rows=200, ivf_lists=8, approximate_above=500)
    index.append(clustered(450, 32))
    assert not list(folder.glob("ivf-*"))  # below the threshold: no IVF files
    index.append(clustered(100, 32, seed=1))  # 550 rows: two shards closed, the threshold passed
    assert sorted(p.name for p in folder.glob("ivf-*")) == ["ivf-00000.faiss", "ivf-00001.faiss", "ivf-trained.faiss"]
    before = folder_state(folder)
    index.append(clustered(60, 32, seed=2))  # 610 rows: shard 2 closes
    after = folder_state(folder)
    assert sorted(set(after) - set(before)) == ["ivf-00002.faiss", "rows-00003.f16"]
    for name in ("ivf-00000.faiss", "ivf-00001.faiss", "ivf-trained.faiss", "rows-00000.f16", "rows-00001.f16"):
        assert after[name] == before[name], name


def test_exact_and_approximate_search_agree_on_clustered_data(tmp_path: Path) -> None:
    vectors = clustered(2950, 64, clusters=30)
    index = FingerprintIndex.open(tmp_path / "fp", dim=64, writable=True, shard_rows=500, ivf_lists=16,
                                  approximate_above=1000)
    index.append(vectors[:2800])
    index.append(vectors[2800:])  # rows 2500..2949: the open shard, scanned flat
    assert len(list((tmp_path / "fp").glob("ivf-0*.faiss"))) == 5
    queries = vectors[::97]
    exact_scores, exact_rows = index.search(queries, 10, exact=True)
    _, approximate_rows = index.search(queries, 10, nprobe=4)  # 2950 live rows: approximate by default
    np.testing.assert_allclose(exact_scores, np.sort(queries @ index.rows(np.arange(2950)).T, axis=1)[:, ::-1][:, :10],
                               atol=1e-5)
    overlap = np.mean([len(set(e) & set(a)) / 10 for e, a in zip(exact_rows, approximate_rows)])
    assert overlap >= 0.9, overlap
    assert (approximate_rows[:, 0] == np.arange(0, 2950, 97)).all()  # each query finds itself first
    # Dead rows are never returned, on either path.
    live = np.ones(2950, dtype=bool)
    live[exact_rows[:, :3].ravel()] = False
    for exact in (True, False):
        _, rows = index.search(queries, 10, live=live, exact=exact)
        assert not np.isin(rows, exact_rows[:, :3]).any()


def test_a_reader_ignores_rows_past_what_the_catalog_names_and_a_writer_truncates_them(tmp_path: Path) -> None:
    folder = tmp_path / "fp"
    index = FingerprintIndex.open(folder, dim=8, writable=True, shard_rows=4)
    index.append(clustered(10, 8))
    reader = FingerprintIndex.open(folder, dim=8, committed=6)
    assert reader.n_rows == 6
    assert reader.search(clustered(10, 8)[8], 10)[1].max() < 6
    with pytest.raises(Exception, match="holds 10 rows, the catalog names 12"):
        FingerprintIndex.open(folder, dim=8, committed=12)
    FingerprintIndex.open(folder, dim=8, committed=6, writable=True)
    assert sorted(p.name for p in folder.glob("rows-*")) == ["rows-00000.f16", "rows-00001.f16"]
    assert (folder / "rows-00001.f16").stat().st_size == 2 * 8 * 2


# ------------------------------------------------------------------------------ with the catalog


def test_update_appends_new_and_changed_checkpoints_only(index: Index) -> None:
    zoo = family(seed=3, m=200)
    for name in list(zoo)[:3]:
        register(index, name, zoo[name])
    assert update(index) == (3, 0)
    folder = fingerprint_folder(index.root, CORPUS_HASH, fingerprints.FINGERPRINT_DIM, fingerprints.FINGERPRINT_SEED)
    shard = folder / "rows-00000.f16"
    first_bytes = shard.read_bytes()
    for name in list(zoo)[3:]:
        register(index, name, zoo[name])
    assert update(index) == (2, 3)
    assert shard.read_bytes()[:len(first_bytes)] == first_bytes
    assert update(index) == (0, 5)

    # A replaced checkpoint (new sha) gets a new row; its old row is dead, never returned.
    old_row = catalog_rows(index)["t:child"][1]
    register(index, "t:child", zoo["t:parent"] @ np.random.default_rng(0).normal(size=(48, 30)), sha="2")
    assert update(index) == (1, 4)
    rows = catalog_rows(index)
    assert rows["t:child"] == ("2", 5) and old_row != 5
    with index.open_catalog(read_only=True) as catalog:
        ids, matrix = fingerprint_matrix(catalog, index.root, CORPUS)
        found = fingerprint_candidates(catalog, index.root, CORPUS, ["t:parent", "t:nobody"], 10)
    assert ids == sorted(zoo) and matrix.shape == (5, fingerprints.FINGERPRINT_DIM)
    assert sorted(found["t:parent"]) == sorted(set(zoo) - {"t:parent"})  # no dead row, no duplicate
    assert found["t:nobody"] == []
    assert found["t:parent"][0] == "t:child"  # now a linear map of the parent: kappa 1


def test_a_crash_between_the_append_and_the_catalog_write_is_completed_by_the_next_update(
        index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    zoo = family(seed=5, m=150)
    names = list(zoo)
    for name in names[:2]:
        register(index, name, zoo[name])
    assert update(index) == (2, 0)
    for name in names[2:]:
        register(index, name, zoo[name])

    def crash() -> None:
        raise KeyboardInterrupt  # what a kill looks like: the rows are on disk, the catalog has not seen them

    monkeypatch.setattr(fingerprints, "utcnow", crash)
    with pytest.raises(KeyboardInterrupt):
        update(index)
    monkeypatch.undo()
    folder = fingerprint_folder(index.root, CORPUS_HASH, fingerprints.FINGERPRINT_DIM, fingerprints.FINGERPRINT_SEED)
    row_bytes = fingerprints.FINGERPRINT_DIM * 2
    assert (folder / "rows-00000.f16").stat().st_size == 5 * row_bytes  # 3 rows past what the table names
    assert len(catalog_rows(index)) == 2
    with index.open_catalog(read_only=True) as catalog:  # readers see the 2 committed rows only
        assert fingerprint_candidates(catalog, index.root, CORPUS, [names[0]], 10)[names[0]] == [names[1]]

    assert update(index) == (3, 2)
    rows = catalog_rows(index)
    assert sorted(fp for _, fp in rows.values()) == [0, 1, 2, 3, 4]  # the leftovers were truncated, rows reused
    assert (folder / "rows-00000.f16").stat().st_size == 5 * row_bytes
    with index.open_catalog(read_only=True) as catalog:
        ids, matrix = fingerprint_matrix(catalog, index.root, CORPUS)
    for name, vector in zip(ids, matrix):
        np.testing.assert_allclose(vector, task_fingerprint(zoo[name]), atol=2e-3)


def test_rows_of_the_old_one_file_layout_are_fingerprinted_again(index: Index) -> None:
    zoo = family(seed=2, m=120)
    for name in list(zoo)[:2]:
        register(index, name, zoo[name])
    legacy = index.root / "store" / "fingerprints" / f"{CORPUS_HASH[:16]}-{fingerprints.FINGERPRINT_DIM}.faiss"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"an IndexIDMap2 of the old layout")
    with index.open_catalog() as catalog:  # fp_ids from the old global sequence, no folder
        catalog.conn.executemany("INSERT INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, now())",
                                 [(CORPUS_HASH, name, "1", 40 + k, fingerprints.FINGERPRINT_DIM, 0)
                                  for k, name in enumerate(list(zoo)[:2])])
    assert update(index) == (2, 0)
    assert not legacy.exists()
    assert sorted(fp for _, fp in catalog_rows(index).values()) == [0, 1]


def test_neighbours_are_reranked_by_exact_kappa(index: Index, hubindex: Any) -> None:
    zoo = family(seed=3, m=300)
    rng = np.random.default_rng(8)
    for k in range(6):  # more relatives, at graded distances, so the estimate has close calls to get wrong
        zoo[f"t:relative{k}"] = zoo["t:parent"][:, :30] @ rng.normal(size=(30, 24)) + (0.5 + k) * rng.normal(size=(300, 24))
    for name, features in zoo.items():
        register(index, name, features)
    assert update(index) == (len(zoo), 0)
    exact = {name: kappa_pair(zoo["t:parent"], features)[0] for name, features in zoo.items() if name != "t:parent"}
    order = sorted(exact, key=lambda name: -exact[name])
    with index.open_catalog(read_only=True) as catalog:
        everything = nearest_checkpoints(catalog, index.root, CORPUS, "t:parent", 4, candidates=len(zoo))
        few = nearest_checkpoints(catalog, index.root, CORPUS, "t:parent", 3, candidates=5)
        ids, matrix = fingerprint_matrix(catalog, index.root, CORPUS)
    assert [name for name, _, _ in everything] == order[:4]
    vectors = dict(zip(ids, matrix))
    for name, value, estimate in everything + few:
        assert value == pytest.approx(exact[name], abs=1e-6)
        assert estimate == pytest.approx(float(vectors["t:parent"] @ vectors[name]), abs=1e-5)
    values = [value for _, value, _ in few]
    assert values == sorted(values, reverse=True)  # the 5 best estimates, in exact order

    result = hubindex("neighbors", "t:parent", "-k", "2", "--candidates", "3", "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert [set(entry) for entry in found] == [{"checkpoint_id", "kappa", "kappa_estimate", "corpus", "corpus_hash"}] * 2
    assert {(entry["corpus"], entry["corpus_hash"]) for entry in found} == {(CORPUS.name, CORPUS.content_hash)}
    table = hubindex("neighbors", "t:parent", "-k", "2")
    assert table.stdout.split("\n")[0].split() == ["checkpoint_id", "kappa", "kappa_estimate"]


def test_above_the_threshold_the_catalog_path_searches_the_ivf_files(index: Index,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint_index, "SHARD_ROWS", 4)
    monkeypatch.setattr(fingerprint_index, "IVF_LISTS", 2)
    monkeypatch.setattr(fingerprint_index, "APPROXIMATE_ABOVE", 8)
    rng = np.random.default_rng(4)
    base = rng.normal(size=(120, 16))
    zoo = {f"t:m{k:02d}": base @ rng.normal(size=(16, 20)) + (k % 5) * rng.normal(size=(120, 20)) for k in range(10)}
    for name, features in zoo.items():
        register(index, name, features)
    assert update(index) == (10, 0)
    folder = fingerprint_folder(index.root, CORPUS_HASH, fingerprints.FINGERPRINT_DIM, fingerprints.FINGERPRINT_SEED)
    assert sorted(p.name for p in folder.glob("ivf-0*")) == ["ivf-00000.faiss", "ivf-00001.faiss"]
    with index.open_catalog(read_only=True) as catalog:
        found = nearest_checkpoints(catalog, index.root, CORPUS, "t:m00", 3, candidates=9)
    exact = sorted((name for name in zoo if name != "t:m00"), key=lambda n: -kappa_pair(zoo["t:m00"], zoo[n])[0])
    assert [name for name, _, _ in found] == exact[:3]


def test_a_checkpoint_without_a_fingerprint_is_a_usage_error(index: Index, hubindex: Any) -> None:
    zoo = family(m=100)
    register(index, "t:parent", zoo["t:parent"])
    register(index, "t:flat", np.ones((100, 4)))  # constant: no fingerprint, recorded as a failure
    assert update(index) == (1, 0)
    with index.open_catalog(read_only=True) as catalog:
        assert catalog.conn.execute("SELECT subject, kind FROM failures").fetchall() == [("t:flat", "fingerprint")]
        assert resolve_corpus(catalog, None) == CORPUS
    result = hubindex("neighbors", "t:flat")
    assert result.exit_code == 2 and "t:flat has no fingerprint on corpus toy-corpus" in result.stderr


@pytest.mark.slow
def test_the_readme_neighbours_example_returns_the_exact_top_1(zoo: Zoo, tmp_path: Path) -> None:
    """The README's `neighbors hf:hubindex-zoo/all-MiniLM-L6-v2 --corpus bbc-news -k 3` on the default
    10,000 words: first3 first, as exact kappa has it (the 4,096-number estimate alone put bbc-topics first)."""
    org = "hf:hubindex-zoo/"

    def run(*args: str) -> Any:
        result = run_hubindex(*args, index_dir=tmp_path / "index")
        assert result.exit_code == 0, (args, result.stderr)
        return result

    run("crawl", "local", str(zoo.out))
    run("probe", "--where", f"starts_with(checkpoint_id, '{org}')", "--corpus", "bbc-news")
    ids, values = kappa_rows_matrix(json.loads(run("kappa", "--corpus", "bbc-news", "--json").stdout))
    row = dict(zip(ids, values[ids.index(org + "all-MiniLM-L6-v2")]))
    found = json.loads(run("neighbors", org + "all-MiniLM-L6-v2", "--corpus", "bbc-news", "-k", "3", "--json").stdout)
    assert found[0]["checkpoint_id"] == org + "all-MiniLM-L6-v2-first3"
    assert [entry["kappa"] for entry in found] == pytest.approx(
        sorted((v for c, v in row.items() if c != org + "all-MiniLM-L6-v2"), reverse=True)[:3], abs=1e-6)
