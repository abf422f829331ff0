"""`hubindex search` (agnostic, aware, hybrid, random) and `hubindex select mmi` on a real catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error
from test_relate import family, register

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
                          "pool is empty")
    assert_one_line_error(hubindex("search", "--budget", "0"), "--budget")


def test_select_mmi_from_the_catalog_equals_mmi_on_its_kappa(index: Index, hubindex: Any) -> None:
    zoo = family()
    for name, features in zoo.items():
        register(index, name, features)
    add_checkpoints(index, {name: (None, None, None) for name in zoo})
    assert hubindex("kappa").exit_code == 0
    table = json.loads(hubindex("kappa", "--json").stdout)
    expected = mmi_select(np.array(table["kappa"]), 3)
    found = json.loads(hubindex("select", "mmi", "--budget", "3", "--json").stdout)
    assert found == {"selected": [table["checkpoints"][i] for i in expected.indices], "mi_nats": expected.mi_nats}
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
    assert found == {"selected": expected.indices, "mi_nats": expected.mi_nats}
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
