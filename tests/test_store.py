"""The FAISS embedding store: exact round trips, dropped items, atomic writes, corruption detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hubindex.store import EmbeddingStore, StoreError, embedding_key


def test_round_trip_keeps_dropped_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 16)).astype(np.float32)
    features[[3, 17, 49]] = np.nan
    store = EmbeddingStore(tmp_path)
    key = embedding_key("a" * 40, "c" * 64, "last", "last-subword")
    stored = store.write(key, features)
    assert (stored.n_items, stored.n_kept, stored.dim) == (50, 47, 16)
    back = store.read(key, 50, stored.sha256)
    assert np.array_equal(np.isnan(back).all(axis=1), np.isnan(features).all(axis=1))
    assert np.array_equal(back[~np.isnan(back).any(axis=1)], features[~np.isnan(features).any(axis=1)])
    assert store.is_valid(key, stored.sha256)
    assert not list((tmp_path / key).parent.glob("*.tmp")), "no temporary file left behind"


def test_key_depends_on_every_part() -> None:
    keys = {
        embedding_key("a", "c", "last", "p"), embedding_key("b", "c", "last", "p"),
        embedding_key("a", "d", "last", "p"), embedding_key("a", "c", "3", "p"), embedding_key("a", "c", "last", "q"),
        embedding_key("a", "c", "last", "p", "bfloat16"), embedding_key("a", "c", "last", "p", "float16"),
    }
    assert len(keys) == 7
    # float32 features keep the file names they had before the precision was part of the key.
    assert embedding_key("a", "c", "last", "p", "float32") == embedding_key("a", "c", "last", "p")
    assert embedding_key("a", "c", "last", "p") == "store/embeddings/c/bc91f0ee8b987d5a48cdfc04e4e27d3f.faiss"


def test_corrupt_or_missing_files_are_reported(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    key = embedding_key("a", "c", "last", "p")
    stored = store.write(key, np.ones((4, 3), dtype=np.float32))
    (tmp_path / key).write_bytes(b"garbage")
    assert not store.is_valid(key, stored.sha256)
    with pytest.raises(StoreError, match="changed on disk"):
        store.read(key, 4, stored.sha256)
    with pytest.raises(StoreError, match="not a FAISS index"):
        store.read(key, 4)
    with pytest.raises(StoreError, match="missing"):
        store.read("store/embeddings/none.faiss", 4)


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(tmp_path)
    key = embedding_key("a", "c", "last", "p")
    old = store.write(key, np.ones((4, 3), dtype=np.float32))

    def crash(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hubindex.store.os.replace", crash)
    with pytest.raises(StoreError, match="No space left on device"):
        store.write(key, np.zeros((4, 3), dtype=np.float32))
    assert store.is_valid(key, old.sha256)
    assert np.array_equal(store.read(key, 4), np.ones((4, 3), dtype=np.float32))
    assert not list((tmp_path / key).parent.glob("*.tmp"))
