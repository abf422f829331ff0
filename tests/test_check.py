"""`hubindex check`: damaged catalogs, missing or changed store files and orphans are found, one
line each, and `--repair` removes what the next run recomputes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error
from test_probe import _bert

from hubindex.catalog import SNAPSHOT_FILENAME


@pytest.fixture
def probed(tmp_path: Path, hubindex: Any) -> Path:
    """Two tiny BERTs crawled, probed on 40 words and related (kappa, fingerprints); a labeled task."""
    zoo = tmp_path / "zoo"
    _bert(zoo / "small")
    _bert(zoo / "wide", hidden=64, positions=64)
    assert hubindex("crawl", "local", str(zoo)).exit_code == 0
    assert hubindex("probe", "--where", "true", "--corpus", "bbc-news", "--max-items", "40").exit_code == 0
    assert hubindex("kappa", "--corpus", "bbc-news").exit_code == 0
    np.save(tmp_path / "x.npy", np.array([f"news item number {i} about the market" for i in range(40)]))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    assert hubindex("task", "add", "toy", "--arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")).exit_code == 0
    return zoo


def _files(index_dir: Path, pattern: str) -> list[Path]:
    return sorted(index_dir.glob(pattern))


def test_a_sound_index_checks_out(probed: Path, hubindex: Any, index_dir: Path) -> None:
    result = hubindex("check")
    assert result.exit_code == 0, result
    assert result.stdout.startswith(f"index {index_dir} is sound: checked ")
    assert "2 embeddings files" in result.stdout


def test_missing_changed_and_orphan_files_are_found_and_repaired(probed: Path, hubindex: Any, index_dir: Path) -> None:
    features = _files(index_dir, "store/embeddings/*/*.faiss")
    assert len(features) == 2
    features[0].unlink()
    features[1].write_bytes(b"garbage")
    orphan = features[0].parent / "0123456789abcdef.faiss"
    orphan.write_bytes(b"left behind")
    temporary = features[0].parent / ".x.faiss.123.tmp"
    temporary.write_bytes(b"half written")

    found = hubindex("check")
    assert found.exit_code == 1
    problems = [line for line in found.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4, found.stdout
    text = "\n".join(problems)
    assert "is missing" in text and "changed on disk since it was registered" in text
    assert "orphan: no row names it" in text and "orphan: a temporary file left by an interrupted write" in text
    assert_one_line_error(type(found)(1, "", found.stderr), "4 problem(s)", "check --repair")

    repaired = hubindex("check", "--repair")
    assert repaired.exit_code == 0, repaired
    assert sum(line.startswith("repaired: ") for line in repaired.stdout.splitlines()) == 4
    assert not orphan.exists() and not temporary.exists() and not features[1].exists()
    assert hubindex("check").exit_code == 0
    # What was removed is recomputed by the next run, and the index is sound again.
    again = hubindex("probe", "--where", "true", "--corpus", "bbc-news", "--max-items", "40")
    assert "2 probed, 0 reused" in again.stdout, again
    assert hubindex("check").exit_code == 0


def test_a_fingerprint_folder_missing_rows_is_rebuilt(probed: Path, hubindex: Any, index_dir: Path) -> None:
    (rows,) = _files(index_dir, "store/fingerprints/*/rows-*.f16")
    rows.write_bytes(rows.read_bytes()[:100])  # less than one of the two rows the table names
    found = hubindex("check")
    assert found.exit_code == 1 and "holds 0 rows, the catalog names 2" in found.stdout, found.stdout
    neighbors = hubindex("neighbors", f"local:{probed / 'small'}", "--corpus", "bbc-news", "-k", "1")
    assert_one_line_error(neighbors, "holds 0 rows, the catalog names 2", "check --repair")
    assert hubindex("check", "--repair").exit_code == 0
    assert not rows.parent.exists()
    assert hubindex("kappa", "--corpus", "bbc-news").exit_code == 0
    neighbors = hubindex("neighbors", f"local:{probed / 'small'}", "--corpus", "bbc-news", "-k", "1")
    assert neighbors.exit_code == 0 and "wide" in neighbors.stdout
    assert hubindex("check").exit_code == 0


def test_an_unreadable_fingerprint_ivf_file_is_removed_and_rebuilt(probed: Path, hubindex: Any, index_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import hubindex.fingerprint_index as fingerprint_index

    monkeypatch.setattr(fingerprint_index, "SHARD_ROWS", 1)
    monkeypatch.setattr(fingerprint_index, "IVF_LISTS", 1)
    monkeypatch.setattr(fingerprint_index, "APPROXIMATE_ABOVE", 2)
    (folder,) = _files(index_dir, "store/fingerprints/*")
    shutil.rmtree(folder)  # rebuilt in shards of one row, each closed one with its IVF file
    assert hubindex("kappa", "--corpus", "bbc-news").exit_code == 0
    ivf = folder / "ivf-00001.faiss"
    intact = ivf.read_bytes()
    ivf.write_bytes(b"\x00" * 64)
    found = hubindex("check")
    assert found.exit_code == 1 and "ivf-00001.faiss: is not a readable fingerprint IVF index" in found.stdout
    assert hubindex("check", "--repair").exit_code == 0 and not ivf.exists()
    assert hubindex("kappa", "--corpus", "bbc-news").exit_code == 0
    assert ivf.read_bytes() == intact
    assert hubindex("check").exit_code == 0


def test_a_truncated_catalog_is_found_and_restored_from_its_snapshot(probed: Path, hubindex: Any,
                                                                     index_dir: Path) -> None:
    catalog = index_dir / "catalog.duckdb"
    shutil.copyfile(catalog, index_dir / SNAPSHOT_FILENAME)  # what a nightly run publishes
    size = catalog.stat().st_size
    with catalog.open("r+b") as handle:
        handle.truncate(size // 2)

    # Commands that read the damaged part fail in one line, never with a traceback.
    for command in (["task", "list"], ["check"]):
        result = hubindex(*command)
        assert result.exit_code == 1, (command, result)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    found = hubindex("check")
    assert "problem: catalog: " in found.stdout and "is damaged" in found.stdout
    assert "its read snapshot reads in full" in found.stdout

    repaired = hubindex("check", "--repair")
    assert repaired.exit_code == 0, repaired
    assert "catalog replaced by its read snapshot" in repaired.stdout
    assert list(index_dir.glob("catalog.duckdb.damaged-*")), "the damaged file is kept"
    assert hubindex("task", "list").exit_code == 0
    assert hubindex("check").exit_code == 0


def test_a_truncated_catalog_without_a_snapshot_cannot_be_repaired(probed: Path, hubindex: Any,
                                                                   index_dir: Path) -> None:
    catalog = index_dir / "catalog.duckdb"
    with catalog.open("r+b") as handle:
        handle.truncate(300 * 1024)
    result = hubindex("check", "--repair")
    assert result.exit_code == 1 and "no readable snapshot" in result.stdout
    assert catalog.stat().st_size == 300 * 1024, "nothing is deleted that cannot be recomputed"
