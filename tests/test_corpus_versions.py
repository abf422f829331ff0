"""A corpus probed at two sizes: every command names the version it works on, and a bare name asks which."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error, catalog_at_version, catalog_snapshot
from test_relate import family, kappa_json, kappa_rows_matrix

from hubindex.catalog import Catalog, utcnow
from hubindex.corpus_versions import corpus_versions, resolve_corpus
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.migrations import MIGRATIONS
from hubindex.probing import make_corpus

FULL, SMALL = 60, 40  # the zoo's usual size and a later, smaller --max-items run
NAMES = ["t:child", "t:cousin", "t:noise", "t:parent", "t:stranger"]


def import_features(hubindex: Any, folder: Path, items: int, names: list[str]) -> None:
    """`features import` of family() features on the first `items` words of bbc-news."""
    folder.mkdir()
    pairs = []
    for name, features in family(seed=3, m=items).items():
        if name in names:
            path = folder / f"{name.split(':')[1]}.npy"
            np.save(path, features.astype(np.float32))
            pairs.append(f"{name}={path}")
    result = hubindex("features", "import", *pairs, "--corpus", "bbc-news", "--max-items", str(items),
                      "--register-new")
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def two_sizes(index: Index, hubindex: Any, tmp_path: Path) -> dict[int, str]:
    """All five checkpoints on bbc-news@60, then two of them on bbc-news@40 (the newer version)."""
    index.root.mkdir(parents=True, exist_ok=True)
    import_features(hubindex, tmp_path / "full", FULL, NAMES)
    import_features(hubindex, tmp_path / "small", SMALL, ["t:child", "t:parent"])
    return {n: make_corpus("bbc-news", n).load().content_hash for n in (FULL, SMALL)}


def listing(hashes: dict[int, str]) -> list[str]:
    return [f"bbc-news@{FULL} ({FULL} items, hash {hashes[FULL][:12]}, 5 checkpoints)",
            f"bbc-news@{SMALL} ({SMALL} items, hash {hashes[SMALL][:12]}, 2 checkpoints)"]


def test_a_bare_name_with_two_versions_is_refused_everywhere_with_the_versions(
        two_sizes: dict[int, str], hubindex: Any, tmp_path: Path) -> None:
    for args in (["kappa", "--corpus", "bbc-news"], ["neighbors", "t:cousin", "--corpus", "bbc-news"],
                 ["select", "mmi", "--budget", "3", "--corpus", "bbc-news"],
                 ["plot", "kappa", "--out", str(tmp_path / "k.png"), "--corpus", "bbc-news"]):
        assert_one_line_error(hubindex(*args), "corpus 'bbc-news' has 2 probed versions", *listing(two_sizes),
                              exit_code=2)
    assert_one_line_error(hubindex("kappa"), "2 corpus versions are probed; choose one with --corpus",
                          *listing(two_sizes), exit_code=2)
    assert_one_line_error(hubindex("kappa", "--corpus", "bbc-news@99"), "corpus 'bbc-news@99' has not been probed",
                          *listing(two_sizes), exit_code=2)


def test_items_and_hash_prefixes_name_the_same_version(two_sizes: dict[int, str], index: Index) -> None:
    with index.open_catalog(read_only=True) as catalog:
        for n, content_hash in two_sizes.items():
            for spec in (f"bbc-news@{n}", content_hash[:8], content_hash, f"bbc-news@{content_hash[:6]}",
                         f"bbc-news@{content_hash[:6].upper()}"):
                ref = resolve_corpus(catalog, spec)
                assert (ref.name, ref.content_hash, ref.n_items, ref.spec) == ("bbc-news", content_hash, n,
                                                                                 f"bbc-news@{n}"), spec
        with pytest.raises(UsageError, match="has not been probed"):
            resolve_corpus(catalog, two_sizes[FULL][:7])  # too short to be told from a name


def test_kappa_neighbors_and_mmi_work_on_the_version_named(two_sizes: dict[int, str], hubindex: Any,
                                                            index: Index) -> None:
    full = hubindex("kappa", "--corpus", f"bbc-news@{FULL}")
    assert full.exit_code == 0, full.stderr
    assert "5 checkpoints, 10 pairs computed" in full.stdout
    assert f"corpus bbc-news@{FULL} (hash {two_sizes[FULL][:12]})" in full.stderr
    small = kappa_json(hubindex, "--corpus", two_sizes[SMALL][:10])
    assert [(r["checkpoint_a"], r["checkpoint_b"]) for r in small["rows"]] == [("t:child", "t:parent")]
    assert {(r["corpus"], r["corpus_hash"], r["n_items"]) for r in small["rows"]} == {
        ("bbc-news", two_sizes[SMALL], SMALL)}
    table = kappa_json(hubindex, "--corpus", f"bbc-news@{FULL}")
    assert table["checkpoints"] == NAMES and len(table["rows"]) == 10
    assert {r["corpus_hash"] for r in table["rows"]} == {two_sizes[FULL]}

    found = hubindex("neighbors", "t:cousin", "--corpus", f"bbc-news@{FULL}", "-k", "2", "--format", "json")
    assert found.exit_code == 0, found.stderr
    rows = json.loads(found.stdout)
    row = dict(zip(table["checkpoints"], table["kappa"][NAMES.index("t:cousin")]))
    assert [r["checkpoint_id"] for r in rows] == sorted((c for c in NAMES if c != "t:cousin"), key=lambda c: -row[c])[:2]
    assert {(r["corpus"], r["corpus_hash"]) for r in rows} == {("bbc-news", two_sizes[FULL])}
    shown = hubindex("neighbors", "t:cousin", "--corpus", f"bbc-news@{FULL}", "-k", "2")
    assert shown.stderr == f"corpus bbc-news@{FULL} (hash {two_sizes[FULL][:12]})\n"
    assert rows[0]["checkpoint_id"] in shown.stdout and "corpus_hash" not in shown.stdout
    # The smaller version does not have t:cousin: the answer says so instead of switching versions.
    assert_one_line_error(hubindex("neighbors", "t:cousin", "--corpus", f"bbc-news@{SMALL}"), "has no fingerprint",
                          exit_code=2)

    picked = hubindex("select", "mmi", "--budget", "3", "--corpus", f"bbc-news@{FULL}", "--format", "json")
    assert picked.exit_code == 0, picked.stderr
    with index.open_catalog(read_only=True) as catalog:
        stored = catalog.conn.execute("SELECT s.corpus, s.corpus_hash, count(*) FROM selections s "
                                      "JOIN selection_items USING (selection_id) GROUP BY ALL").fetchall()
    assert stored == [("bbc-news", two_sizes[FULL], 3)]


def test_search_results_carry_the_corpus_hash(two_sizes: dict[int, str], hubindex: Any, index: Index) -> None:
    from hubindex.search import run_search

    assert hubindex("kappa", "--corpus", f"bbc-news@{SMALL}").exit_code == 0
    result = run_search(index, "mmi", 2, corpus=f"bbc-news@{SMALL}")
    assert result.as_json()["corpus"] == "bbc-news" and result.as_json()["corpus_hash"] == two_sizes[SMALL]
    assert result.corpus_line() == f"corpus bbc-news@{SMALL} (hash {two_sizes[SMALL][:12]})"
    assert sorted(result.as_json()["selected"]) == ["t:child", "t:parent"]
    with pytest.raises(UsageError, match="2 probed versions"):
        run_search(index, "mmi", 3, corpus="bbc-news")


def test_corpora_lists_every_version_in_every_format(two_sizes: dict[int, str], hubindex: Any) -> None:
    table = hubindex("corpora")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["spec", "corpus", "items", "corpus_hash", "checkpoints", "first_probed", "last_probed"]
    assert lines[2].split()[:5] == [f"bbc-news@{FULL}", "bbc-news", str(FULL), two_sizes[FULL][:12], "5"]
    assert lines[3].split()[:5] == [f"bbc-news@{SMALL}", "bbc-news", str(SMALL), two_sizes[SMALL][:12], "2"]

    rows = json.loads(hubindex("corpora", "--format", "json").stdout)
    assert [(r["spec"], r["corpus"], r["items"], r["corpus_hash"], r["checkpoints"]) for r in rows] == [
        (f"bbc-news@{FULL}", "bbc-news", FULL, two_sizes[FULL], 5),
        (f"bbc-news@{SMALL}", "bbc-news", SMALL, two_sizes[SMALL], 2)]
    assert all(r["first_probed"] <= r["last_probed"] for r in rows)
    assert json.loads(hubindex("corpora", "--json").stdout) == rows
    assert [json.loads(line) for line in hubindex("corpora", "--format", "ndjson").stdout.splitlines()] == rows
    exported = list(csv.DictReader(io.StringIO(hubindex("corpora", "--format", "csv").stdout)))
    assert [(r["spec"], r["corpus_hash"], r["items"]) for r in exported] == [
        (r["spec"], r["corpus_hash"], str(r["items"])) for r in rows]


def test_corpora_on_an_index_without_probes_is_empty(index: Index, hubindex: Any) -> None:
    with index.open_catalog():
        pass
    assert json.loads(hubindex("corpora", "--format", "json").stdout) == []


def test_a_kappa_run_with_nothing_to_compute_never_opens_for_writing(
        two_sizes: dict[int, str], hubindex: Any, index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = f"bbc-news@{FULL}"
    assert "10 pairs computed" in hubindex("kappa", "--corpus", spec).stdout
    before = catalog_snapshot(index)
    writes: list[bool] = []
    original = Index.open_catalog

    def read_only_index(self: Index, read_only: bool = False) -> Catalog:
        if not read_only:
            writes.append(True)
            raise HubindexError("the index is read-only")
        return original(self, read_only=True)

    monkeypatch.setattr(Index, "open_catalog", read_only_index)
    again = hubindex("kappa", "--corpus", spec)
    assert again.exit_code == 0, again.stderr
    assert "5 checkpoints, 0 pairs computed, 10 reused" in again.stdout
    assert again.stdout.splitlines()[0].endswith("; fingerprints: 0 new, 5 kept")
    rows = json.loads(hubindex("kappa", "--corpus", spec, "--format", "json").stdout)
    assert kappa_rows_matrix(rows)[0] == NAMES
    assert writes == [] and catalog_snapshot(index) == before
    # With pairs to compute (the smaller version has none yet), it asks for writing.
    assert_one_line_error(hubindex("kappa", "--corpus", f"bbc-news@{SMALL}"), "the index is read-only")
    assert writes == [True]


def test_plot_kappa_does_not_create_a_missing_folder(two_sizes: dict[int, str], hubindex: Any,
                                                     tmp_path: Path) -> None:
    assert hubindex("kappa", "--corpus", f"bbc-news@{FULL}").exit_code == 0
    missing = tmp_path / "figures" / "new"
    assert_one_line_error(hubindex("plot", "kappa", "--corpus", f"bbc-news@{FULL}", "--out", str(missing / "k.png")),
                          f"folder {missing} does not exist", exit_code=2)
    assert not missing.exists() and not missing.parent.exists()
    out = tmp_path / "k.png"
    drawn = hubindex("plot", "kappa", "--corpus", f"bbc-news@{FULL}", "--out", str(out))
    assert drawn.exit_code == 0, drawn.stderr
    assert out.read_bytes()[:4] == b"\x89PNG" and f"hash {two_sizes[FULL][:12]}" in drawn.stderr


def register_version(catalog: Catalog, checkpoint_id: str, corpus: str, corpus_hash: str, n_items: int) -> None:
    catalog.register_embedding({
        "checkpoint_id": checkpoint_id, "checkpoint_sha": "1", "corpus": corpus, "corpus_hash": corpus_hash,
        "layer": "last", "pooling": "test", "probe": "test", "probe_version": "1", "n_items": n_items,
        "n_kept": n_items, "dim": 4, "path": f"store/{checkpoint_id}.faiss", "file_sha256": "0", "seconds": 0.0,
        "created_at": utcnow(),
    })


def test_versions_of_one_size_are_named_by_hash_and_one_version_by_its_name(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.duckdb") as catalog:
        with pytest.raises(HubindexError, match="no checkpoint has been probed"):
            resolve_corpus(catalog, None)
        register_version(catalog, "t:a", "words", "a" * 64, 100)
        assert resolve_corpus(catalog, None).spec == "words@100"
        assert resolve_corpus(catalog, "words").content_hash == "a" * 64
        register_version(catalog, "t:b", "words", "b" * 64, 100)  # same size, other content (another seed)
        register_version(catalog, "t:c", "images", "c" * 64, 100)
        assert [v.spec for v in corpus_versions(catalog)] == ["images@100", "words@aaaaaaaaaaaa", "words@bbbbbbbbbbbb"]
        with pytest.raises(UsageError, match="corpus 'words@100' has 2 probed versions; name one: words@aaaaaaaaaaaa"):
            resolve_corpus(catalog, "words@100")
        assert resolve_corpus(catalog, "words@bbbbbbbbbbbb").content_hash == "b" * 64
        assert resolve_corpus(catalog, "images").spec == "images@100"


def test_the_migration_adds_the_selection_hash_where_the_name_tells_it(tmp_path: Path) -> None:
    path = tmp_path / "c.duckdb"
    conn = catalog_at_version(path, 7)
    for cid, corpus, corpus_hash in (("t:a", "words", "a" * 64), ("t:a", "sizes", "b" * 64),
                                     ("t:b", "sizes", "c" * 64)):
        conn.execute("INSERT INTO embeddings VALUES (?, 'sha', ?, ?, 'last', 'p', 'float32', 'test', '1', 10, 10, 4, "
                     "'store/x.faiss', 'f00', 0.0, now()::TIMESTAMP)", [cid, corpus, corpus_hash])
    for corpus in ("words", "sizes", None):
        conn.execute("INSERT INTO selections (strategy, strategy_version, budget, corpus, pool_size, created_at) "
                     "VALUES ('mmi', '1', 2, ?, 2, now()::TIMESTAMP)", [corpus])
    conn.close()

    with Catalog(path) as catalog:
        assert catalog.conn.execute("SELECT corpus, corpus_hash FROM selections ORDER BY selection_id").fetchall() == [
            ("words", "a" * 64), ("sizes", None), (None, None)]  # two contents of 'sizes': which one is unknown
        catalog.conn.execute(MIGRATIONS[7].sql)  # a second run changes nothing
        assert catalog.conn.execute("SELECT count(corpus_hash) FROM selections").fetchone() == (1,)
