"""`hubindex search` (agnostic, aware, hybrid, random) and `hubindex select mmi` on a real catalog."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error, catalog_held_by_another_process
from test_relate import family, kappa_json, register

from hubindex.catalog import utcnow
from hubindex.index import Index
from hubindex.selection import mmi_select
from hubindex.types import CheckpointRecord

# checkpoint_id: (in1k_top1, upstream_data, params_total)
POOL = {
    "timm:a": (80.0, "in1k", 10_000_000),
    "timm:b": (85.0, "in1k", 50_000_000),
    "timm:c": (None, "in21k", 20_000_000),  # no top-1: after every model with one
    "timm:d": (None, "laion2b-ft", 5_000_000),  # larger upstream data than c
    "timm:e": (None, None, 90_000_000),  # nothing but its size
    "timm:f": (85.0, "in1k", 80_000_000),  # ties b on top-1 and data: the larger model first
}
AGNOSTIC_ORDER = ["timm:f", "timm:b", "timm:a", "timm:d", "timm:c", "timm:e"]
# The task's scores of two metrics (logme: higher is better; task-relatedness: lower is better).
LOGME = {"timm:a": 0.9, "timm:b": 0.1, "timm:c": 0.8, "timm:d": 0.95, "timm:e": 0.2}  # f has no score
RELATEDNESS = {"timm:a": 3.0, "timm:b": 1.0, "timm:c": 2.0}


def add_checkpoints(index: Index, rows: dict[str, tuple[Any, ...]], library: str = "timm") -> None:
    records = [CheckpointRecord(cid, {"in1k_top1": top1, "upstream_data": data, "params_total": params,
                                      "library_name": library, "sha": "1"})
               for cid, (top1, data, params) in rows.items()]
    with index.open_catalog() as catalog:
        catalog.upsert_checkpoints(records, source="test", owned_columns={"in1k_top1"})


def add_scores(index: Index, task: str, metric: str, scores: dict[str, float], higher_is_better: bool = True) -> None:
    with index.open_catalog() as catalog:
        for cid, value in scores.items():
            catalog.conn.execute(
                "INSERT INTO task_scores VALUES (?, ?, ?, '1', ?, ?, 0.0, ?, '1', 'h', NULL, 'x')",
                [task, cid, metric, value, higher_is_better, utcnow()])


@pytest.fixture
def pool(index: Index, hubindex: Any, tmp_path: Path) -> Index:
    """Six timm checkpoints, one text model, an image task with logme and task-relatedness scores."""
    add_checkpoints(index, POOL)
    add_checkpoints(index, {"hf:org/text-model": (None, None, 1_000_000_000)}, library="transformers")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8))
    np.save(tmp_path / "y.npy", np.array([0, 1, 0, 1, 0, 1]))
    assert hubindex("task", "add", "pets", "--arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")).exit_code == 0
    add_scores(index, "pets", "logme", LOGME)
    add_scores(index, "pets", "task-relatedness", RELATEDNESS, higher_is_better=False)
    return index


def search(hubindex: Any, *args: str) -> dict[str, Any]:
    result = hubindex("search", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_agnostic_ranks_by_top1_then_upstream_data_then_size(pool: Index, hubindex: Any) -> None:
    found = search(hubindex, "--budget", "7", "--strategy", "agnostic")
    # Without a task the text model is in the pool: with nothing known but its size (1B), it comes
    # after every model with a top-1 or upstream data, and before the smaller e.
    assert found["selected"] == AGNOSTIC_ORDER[:5] + ["hf:org/text-model", "timm:e"]
    assert search(hubindex, "--budget", "2", "--strategy", "agnostic")["selected"] == AGNOSTIC_ORDER[:2]


def test_a_task_keeps_only_checkpoints_that_can_embed_its_examples(pool: Index, hubindex: Any) -> None:
    result = hubindex("search", "--task", "pets", "--budget", "10", "--strategy", "agnostic")
    assert "1 of 7 checkpoints in the pool cannot run on image examples" in result.stderr
    assert "hf:org/text-model" not in result.stdout


def test_aware_ranks_by_the_metric_in_its_direction(pool: Index, hubindex: Any) -> None:
    found = search(hubindex, "--task", "pets", "--budget", "3", "--strategy", "aware", "--metric", "logme")
    assert found["selected"] == ["timm:d", "timm:a", "timm:c"]
    assert [d["value"] for d in found["details"]] == [0.95, 0.9, 0.8]
    lower = search(hubindex, "--task", "pets", "--budget", "2", "--strategy", "aware", "--metric", "task-relatedness")
    assert lower["selected"] == ["timm:b", "timm:c"]  # lower is more related


def test_hybrid_is_top1_agnostic_plus_top_aware_without_duplicates(pool: Index, hubindex: Any) -> None:
    args = ("--task", "pets", "--strategy", "hybrid", "--metric", "logme")
    # f is the agnostic top-1 (no logme score), then logme's top: d, a.
    assert search(hubindex, *args, "--budget", "3")["selected"] == ["timm:f", "timm:d", "timm:a"]
    assert search(hubindex, *args, "--budget", "1")["selected"] == ["timm:f"]
    # When the agnostic top-1 is also aware's best, it is not picked twice.
    add_scores(pool, "pets", "knn", {"timm:f": 0.99, "timm:a": 0.5, "timm:b": 0.4})
    knn = search(hubindex, "--task", "pets", "--strategy", "hybrid", "--metric", "knn", "--budget", "3")
    assert knn["selected"] == ["timm:f", "timm:a", "timm:b"]


def test_random_is_seeded(pool: Index, hubindex: Any) -> None:
    first = search(hubindex, "--budget", "3", "--strategy", "random", "--seed", "7")["selected"]
    assert first == search(hubindex, "--budget", "3", "--strategy", "random", "--seed", "7")["selected"]
    ids = sorted([*POOL, "hf:org/text-model"])
    assert first == [ids[i] for i in np.random.default_rng(7).permutation(len(ids))[:3]]
    assert len(set(first)) == 3


def test_where_restricts_the_pool_and_selections_are_stored(pool: Index, hubindex: Any) -> None:
    found = search(hubindex, "--budget", "2", "--strategy", "agnostic", "--where", "params_total < 30e6")
    assert found["selected"] == ["timm:a", "timm:d"]
    with pool.open_catalog(read_only=True) as catalog:
        stored = catalog.conn.execute(
            "SELECT s.strategy, s.budget, s.pool_condition, s.pool_size, i.rank, i.checkpoint_id "
            "FROM selections s JOIN selection_items i USING (selection_id) WHERE s.selection_id = ? ORDER BY i.rank",
            [found["selection_id"]]).fetchall()
    assert stored == [("agnostic", 2, "params_total < 30e6", 3, 1, "timm:a"),
                      ("agnostic", 2, "params_total < 30e6", 3, 2, "timm:d")]


def test_search_errors_are_one_line(pool: Index, hubindex: Any) -> None:
    assert_one_line_error(hubindex("search", "--budget", "2", "--strategy", "aware"), "give --task")
    assert_one_line_error(hubindex("search", "--budget", "2", "--strategy", "best"), "unknown strategy 'best'",
                          "agnostic")
    assert_one_line_error(hubindex("search", "--task", "pets", "--budget", "2", "--strategy", "aware",
                                   "--metric", "linear"), "no linear scores", "hubindex score")
    assert_one_line_error(hubindex("search", "--task", "nope", "--budget", "2"), "no task named 'nope'")
    assert_one_line_error(hubindex("search", "--budget", "2", "--strategy", "mmi"), "hubindex select mmi")
    assert_one_line_error(hubindex("search", "--budget", "2", "--strategy", "agnostic", "--where", "false"),
                          "pool is empty", exit_code=4)  # nothing matched: NothingDone
    assert_one_line_error(hubindex("search", "--budget", "0"), "--budget")


def test_select_mmi_from_the_catalog_equals_mmi_on_its_kappa(index: Index, hubindex: Any) -> None:
    zoo = family()
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    assert hubindex("kappa").exit_code == 0
    table = kappa_json(hubindex)
    expected = mmi_select(np.array(table["kappa"]), 3)
    found = json.loads(hubindex("select", "mmi", "--budget", "3", "--json").stdout)
    assert found["selected"] == [table["checkpoints"][i] for i in expected.indices]
    assert found["mi_nats"] == expected.mi_nats and found["gain_nats"] == expected.gains
    assert found["corpus"] == "toy-corpus" and found["selection_id"] is not None
    # Nested: the first pick of K = 1 is the first of K = 3.
    one = json.loads(hubindex("select", "mmi", "--budget", "1", "--json").stdout)
    assert one["selected"] == found["selected"][:1]
    # --where restricts the pool to a sub-matrix of kappa.
    where = json.loads(hubindex("select", "mmi", "--budget", "2", "--where", "checkpoint_id <> 't:parent'",
                                "--json").stdout)
    keep = [i for i, name in enumerate(table["checkpoints"]) if name != "t:parent"]
    sub = mmi_select(np.array(table["kappa"])[np.ix_(keep, keep)], 2)
    assert where["selected"] == [table["checkpoints"][keep[i]] for i in sub.indices]
    printed = hubindex("select", "mmi", "--budget", "2")
    assert "mi_nats" in printed.stdout and found["selected"][0] in printed.stdout


def test_select_mmi_on_a_kappa_file(tmp_path: Path, hubindex: Any) -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(40, 12))
    kappa = np.corrcoef(features) ** 2
    np.save(tmp_path / "k.npy", kappa)
    found = json.loads(hubindex("select", "mmi", "--budget", "5", "--kappa", str(tmp_path / "k.npy"), "--json").stdout)
    expected = mmi_select(kappa, 5)
    assert (found["selected"], found["mi_nats"], found["gain_nats"]) == (expected.indices, expected.mi_nats,
                                                                        expected.gains)
    # Duplicate checkpoints: singular kappa is handled with a reported jitter.
    duplicated = np.corrcoef(np.vstack([features, features[:1]])) ** 2
    np.save(tmp_path / "dup.npy", duplicated)
    result = hubindex("select", "mmi", "--budget", "3", "--kappa", str(tmp_path / "dup.npy"))
    assert result.exit_code == 0 and "added" in result.stderr
    np.save(tmp_path / "bad.npy", np.ones((3, 4)))
    assert_one_line_error(hubindex("select", "mmi", "--budget", "2", "--kappa", str(tmp_path / "bad.npy")),
                          "square")
    assert_one_line_error(hubindex("select", "mmi", "--budget", "50", "--kappa", str(tmp_path / "k.npy")),
                          "more than the 40 rows")


# ------------------------------------------------------------------ ties, formats, storing


def test_aware_reports_a_tie_cut_by_the_budget(pool: Index, hubindex: Any) -> None:
    add_scores(pool, "pets", "knn", {"timm:a": 0.9, "timm:b": 0.5, "timm:c": 0.5, "timm:d": 0.1})
    args = ("--task", "pets", "--strategy", "aware", "--metric", "knn")
    found = search(hubindex, *args, "--budget", "2")
    assert found["selected"] == ["timm:a", "timm:b"]  # b before c by checkpoint_id alone
    assert found["ties"] == {"value": 0.5, "picked": ["timm:b"], "left_out": ["timm:c"]}
    printed = hubindex("search", *args, "--budget", "2")
    (line,) = [line for line in printed.stderr.splitlines() if "tie" in line]
    assert "knn = 0.5" in line and "timm:c" in line and "--budget" in line
    # A budget that takes the whole tie cuts nothing.
    assert search(hubindex, *args, "--budget", "3")["ties"] is None
    # Hybrid's aware part is cut the same way.
    hybrid = search(hubindex, "--task", "pets", "--strategy", "hybrid", "--metric", "knn", "--budget", "3")
    assert hybrid["selected"] == ["timm:f", "timm:a", "timm:b"] and hybrid["ties"]["left_out"] == ["timm:c"]


def test_search_formats(pool: Index, hubindex: Any) -> None:
    args = ("search", "--budget", "2", "--strategy", "agnostic")
    csv_out = hubindex(*args, "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.stderr
    assert csv_out.stdout.splitlines()[0] == "rank,checkpoint_id,value,reason"
    assert [line.split(",")[1] for line in csv_out.stdout.splitlines()[1:]] == AGNOSTIC_ORDER[:2]
    rows = [json.loads(line) for line in hubindex(*args, "--format", "ndjson").stdout.splitlines()]
    assert [r["checkpoint_id"] for r in rows] == AGNOSTIC_ORDER[:2]
    assert json.loads(hubindex(*args, "--format", "json").stdout)["selected"] == AGNOSTIC_ORDER[:2]
    assert json.loads(hubindex(*args, "--json").stdout)["selected"] == AGNOSTIC_ORDER[:2]  # the old spelling


def selections_count(index: Index) -> int:
    with index.open_catalog(read_only=True) as catalog:
        return catalog.conn.execute("SELECT count(*) FROM selections").fetchone()[0]


def test_no_save_prints_the_answer_and_stores_nothing(pool: Index, hubindex: Any) -> None:
    found = search(hubindex, "--budget", "2", "--strategy", "agnostic", "--no-save")
    assert found["selected"] == AGNOSTIC_ORDER[:2] and found["selection_id"] is None
    assert selections_count(pool) == 0


@contextmanager
def read_only(paths: list[Path]) -> Iterator[None]:
    """The paths unwritable, even for root (the immutable attribute), while the block runs."""
    modes = {path: path.stat().st_mode for path in paths}
    immutable: list[Path] = []
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        if os.geteuid() == 0:
            for path in paths:
                if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode:
                    pytest.skip("running as root where chattr +i is unavailable: nothing is read-only")
                immutable.append(path)
        yield
    finally:
        for path in immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        for path, mode in modes.items():
            path.chmod(mode)


def test_search_and_select_on_a_read_only_index_print_the_answer(index: Index, hubindex: Any) -> None:
    zoo = family()
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (80.0 + k, "in1k", 1000 * k) for k, name in enumerate(zoo)})
    assert hubindex("kappa").exit_code == 0
    expected = json.loads(hubindex("select", "mmi", "--budget", "2", "--no-save", "--format", "json").stdout)
    with read_only([index.catalog_path, index.root]):
        found = hubindex("search", "--budget", "2", "--strategy", "agnostic", "--format", "json")
        assert found.exit_code == 0, found.stderr
        assert json.loads(found.stdout)["selected"] == ["t:noise", "t:stranger"]  # highest top-1 first
        assert "not stored" in found.stderr and "read-only" in found.stderr
        mmi = hubindex("select", "mmi", "--budget", "2", "--format", "json")
        assert mmi.exit_code == 0, mmi.stderr
        assert json.loads(mmi.stdout)["selected"] == expected["selected"]
        assert "not stored" in mmi.stderr
        table = hubindex("select", "mmi", "--budget", "2")
        assert table.exit_code == 0 and expected["selected"][0] in table.stdout
    assert selections_count(index) == 0


def test_search_while_another_process_writes_answers_from_the_snapshot(pool: Index, hubindex: Any) -> None:
    with pool.open_catalog() as catalog:
        catalog.publish_snapshot()
    with catalog_held_by_another_process(pool.catalog_path):
        result = hubindex("search", "--budget", "2", "--strategy", "agnostic", "--where", "params_total < 30e6",
                          "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["selected"] == ["timm:a", "timm:d"]
    assert "read snapshot" in result.stderr
    assert "not stored" in result.stderr and "another process is writing the catalog" in result.stderr
    assert selections_count(pool) == 0


def test_select_mmi_budget_spellings(index: Index, hubindex: Any, tmp_path: Path) -> None:
    np.save(tmp_path / "k.npy", np.corrcoef(np.random.default_rng(1).normal(size=(6, 12))) ** 2)
    kappa = ("--kappa", str(tmp_path / "k.npy"), "--format", "json")
    long = json.loads(hubindex("select", "mmi", "--budget", "3", *kappa).stdout)
    assert json.loads(hubindex("select", "mmi", "-b", "3", *kappa).stdout) == long
    deprecated = hubindex("select", "mmi", "-k", "3", *kappa)
    assert json.loads(deprecated.stdout) == long and "deprecated" in deprecated.stderr
    assert "-k" not in hubindex("select", "mmi", "--help").stdout.replace("--kappa", "")
    assert_one_line_error(hubindex("select", "mmi", *kappa), "--budget", exit_code=2)
    assert_one_line_error(hubindex("select", "mmi", "-b", "2", "-k", "3", *kappa), "disagree", exit_code=2)


def test_mmi_gains_near_zero_print_with_their_sign_and_size(hubindex: Any, tmp_path: Path) -> None:
    # Two extra copies of the first checkpoint: with the jitter, the middle copy gains about 0.
    features = np.random.default_rng(10).normal(size=(5, 12))
    kappa = np.corrcoef(np.vstack([features, features[:1], features[:1]])) ** 2
    np.save(tmp_path / "k.npy", kappa)
    gains = mmi_select(kappa, 7).gains
    tiny = [g for g in gains if -5e-5 < g < 0]
    assert tiny, gains  # the case: round(g, 4) would print -0.0
    table = hubindex("select", "mmi", "--budget", "7", "--kappa", str(tmp_path / "k.npy"))
    assert table.exit_code == 0, table.stderr
    assert "-0.0 " not in table.stdout + " " and f"{tiny[0]:.3g}" in table.stdout
    csv_rows = hubindex("select", "mmi", "--budget", "7", "--kappa", str(tmp_path / "k.npy"), "--format", "csv")
    assert "-0.0," not in csv_rows.stdout and not csv_rows.stdout.rstrip().endswith("-0.0")
    help_text = " ".join(hubindex("select", "mmi", "--help").stdout.split())
    assert "A gain can be negative" in help_text and "var(i | S) < var(i | rest)" in help_text
