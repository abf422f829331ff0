"""`hubindex features import`: features computed elsewhere join the index as probed ones do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error
from test_relate import kappa_rows_matrix

from hubindex.probing import make_corpus

N_ITEMS = 60


@pytest.fixture
def matrices(tmp_path: Path) -> dict[str, Path]:
    """Three related feature matrices on the first 60 words of bbc-news, as .npy files."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(N_ITEMS, 8))
    out = {}
    for k, name in enumerate(("gpu:alpha", "gpu:beta", "gpu:gamma")):
        features = shared @ rng.normal(size=(8, 16 + k)) + (k + 0.5) * rng.normal(size=(N_ITEMS, 16 + k))
        if name == "gpu:gamma":
            features[-3:] = np.nan  # items this checkpoint dropped
        out[name] = tmp_path / f"{name.split(':')[1]}.npy"
        np.save(out[name], features.astype(np.float32))
    return out


def test_imported_features_are_registered_and_related_like_probed_ones(
    matrices: dict[str, Path], tmp_path: Path, hubindex: Any
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "features.csv").write_text("checkpoint_id,file,sha\ngpu:gamma,../gamma.npy,c0ffee\n")
    pairs = [f"{name}={path}" for name, path in matrices.items() if name != "gpu:gamma"]
    args = ["features", "import", *pairs, "--from", str(folder), "--corpus", "bbc-news", "--max-items", str(N_ITEMS)]

    refused = hubindex(*args)
    assert_one_line_error(refused, "not in the catalog: gpu:alpha, gpu:beta, gpu:gamma", "--register-new", exit_code=2)
    first = hubindex(*args, "--register-new")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith(f"features on bbc-news ({N_ITEMS} items, hash ")
    assert "3 imported, 0 unchanged, 3 new checkpoint rows" in first.stdout
    again = hubindex(*args)
    assert "0 imported, 3 unchanged" in again.stdout, again

    rows = json.loads(hubindex("sql", "SELECT e.checkpoint_id, e.checkpoint_sha, probe, pooling, n_items, n_kept, "
                               "c.source FROM embeddings e JOIN checkpoints c USING (checkpoint_id) ORDER BY 1",
                               "--format", "json").stdout)
    assert [(r["checkpoint_id"], r["probe"], r["pooling"], r["n_items"], r["n_kept"], r["source"]) for r in rows] == [
        ("gpu:alpha", "import", "imported", N_ITEMS, N_ITEMS, "import"),
        ("gpu:beta", "import", "imported", N_ITEMS, N_ITEMS, "import"),
        ("gpu:gamma", "import", "imported", N_ITEMS, N_ITEMS - 3, "import"),
    ]
    assert rows[2]["checkpoint_sha"] == "c0ffee"
    corpus_hash = make_corpus("bbc-news", N_ITEMS).load().content_hash
    assert json.loads(hubindex("sql", "SELECT DISTINCT corpus_hash FROM embeddings", "--format", "json").stdout) == [
        {"corpus_hash": corpus_hash}]

    # kappa on the imported features equals kappa on the arrays themselves.
    catalog = kappa_rows_matrix(json.loads(hubindex("kappa", "--corpus", "bbc-news", "--json").stdout))
    arrays = kappa_rows_matrix(json.loads(hubindex("kappa", "--arrays", *(str(p) for p in matrices.values()),
                                                   "--json").stdout))
    np.testing.assert_allclose(catalog[1], arrays[1], atol=1e-6)  # both in checkpoint (file) name order
    assert hubindex("check").exit_code == 0


@pytest.mark.parametrize("problem, fragment", [
    ("rows", "59 rows, but corpus bbc-news has 60 items"),
    ("inf", "holds inf"),
    ("text", "not a .npy array file"),
    ("vector", "expected a numeric 2-D matrix"),
    ("missing", "no such file"),
])
def test_bad_matrices_are_refused_in_one_line(tmp_path: Path, hubindex: Any, problem: str, fragment: str) -> None:
    path = tmp_path / "bad.npy"
    good = np.ones((N_ITEMS, 4), dtype=np.float32)
    if problem == "rows":
        np.save(path, good[1:])
    elif problem == "inf":
        good[3, 1] = np.inf
        np.save(path, good)
    elif problem == "text":
        path.write_text("not numpy")
    elif problem == "vector":
        np.save(path, good[:, 0])
    result = hubindex("features", "import", f"gpu:x={path}", "--corpus", "bbc-news", "--max-items", str(N_ITEMS),
                      "--register-new")
    assert_one_line_error(result, fragment, exit_code=2)


def test_sources_are_named_clearly(hubindex: Any, tmp_path: Path) -> None:
    assert_one_line_error(hubindex("features", "import", "--corpus", "bbc-news"), "nothing to import", exit_code=2)
    assert_one_line_error(hubindex("features", "import", "gpu:x", "--corpus", "bbc-news"),
                          "give CHECKPOINT_ID=FILE.npy", exit_code=2)
    assert_one_line_error(hubindex("features", "import", "--from", str(tmp_path), "--corpus", "bbc-news"),
                          "no features.csv", exit_code=2)


def test_a_refused_matrix_leaves_no_catalog_row_behind(tmp_path: Path, hubindex: Any) -> None:
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.ones((N_ITEMS, 4), dtype=np.float32) * np.arange(N_ITEMS)[:, None])
    np.save(bad, np.ones((3, 4), dtype=np.float32))
    result = hubindex("features", "import", f"gpu:bad={bad}", f"gpu:good={good}", "--corpus", "bbc-news",
                      "--max-items", str(N_ITEMS), "--register-new")
    assert result.exit_code == 2
    rows = json.loads(hubindex("sql", "SELECT count(*) AS n FROM checkpoints", "--format", "json").stdout)
    assert rows == [{"n": 0}]
