"""Executors: a Ray run of probe and score equals the local run; failures in Ray tasks are recorded.

One local Ray instance (2 CPUs) serves the whole module; the `ray` executor joins it instead of
starting its own. Checkpoints are the real zoo, crawled with `hubindex crawl local`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pytest
from conftest import CliResult, Zoo, assert_one_line_error, run_hubindex

from hubindex import hookimpl
from hubindex.errors import HubindexError
from hubindex.executors import make_executor
from hubindex.index import Index
from hubindex.plugins import executors, pm
from hubindex.probing import probe_resources, run_probe
from hubindex.store import EmbeddingStore
from hubindex.types import TEXT, Executor, Probe, TaskResources, WorkDone

ORG = "hf:hubindex-zoo/"
LITE0_FAMILY = "library_name = 'timm' AND checkpoint_id LIKE '%lite0%'"
TEXT_ITEMS = "200"
IMAGE_ITEMS = "12"
# Ray tasks run torch with one thread, the local run with every core: float32 sums may add up in
# another order, which moves features by a few units in the last place (~1e-7 relative). The
# metrics are smooth in the features; 1e-5 leaves room for that and nothing else.
FEATURE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
SCORE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
# PARC is a rank correlation of pairwise distances: a last-place change can swap two nearly tied
# distances, which moves it by a few 1e-5 (measured: 3.4e-5 at a value of -0.041).
RANK_SCORE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-4}
RANK_METRICS = {"parc"}
DRIVER_PID = os.getpid()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """One local Ray instance with two CPUs for the module."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    # Classes of this test module are not importable in the workers: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def crawled(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index with the zoo crawled and a 40-image digits task; copied by each test that writes."""
    from sklearn.datasets import load_digits

    index_dir = tmp_path_factory.mktemp("executors-index")
    data = tmp_path_factory.mktemp("executors-data")
    assert run_hubindex("crawl", "local", str(zoo.out), index_dir=index_dir).exit_code == 0
    digits = load_digits()
    picked = np.concatenate([np.flatnonzero(digits.target == c)[:10] for c in range(4)])
    np.save(data / "x.npy", digits.images[picked] / 16.0)
    np.save(data / "y.npy", digits.target[picked])
    added = run_hubindex("task", "add", "digits", "--arrays", str(data / "x.npy"), str(data / "y.npy"),
                         index_dir=index_dir)
    assert added.exit_code == 0, added.stderr
    return index_dir


def fresh_copy(crawled: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(crawled, target)
    return target


def hubindex_in(index_dir: Path) -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        result = run_hubindex(*args, index_dir=index_dir)
        assert result.exit_code == 0, (args, result.stderr)
        return result

    return run


def embeddings(index_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of the embeddings table by checkpoint (without timings), and each stored matrix."""
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        cur = catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, corpus, corpus_hash, layer, pooling, probe, probe_version, "
            "n_items, n_kept, dim, path, file_sha256 FROM embeddings ORDER BY checkpoint_id, corpus")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row)) for row in cur.fetchall()]
    store = EmbeddingStore(index_dir)
    out = {}
    for row in rows:
        row["features"] = store.read(row["path"], row["n_items"], row["file_sha256"])
        out[f"{row['checkpoint_id']} @ {row['corpus']}"] = row
    return out


def assert_same_embeddings(local: dict[str, dict[str, Any]], remote: dict[str, dict[str, Any]]) -> None:
    assert set(local) == set(remote)
    for key, row in local.items():
        other = remote[key]
        same = ("checkpoint_sha", "corpus_hash", "layer", "pooling", "probe", "probe_version", "n_items", "n_kept",
                "dim", "path")
        assert {c: row[c] for c in same} == {c: other[c] for c in same}, key
        np.testing.assert_allclose(other["features"], row["features"], equal_nan=True, **FEATURE_TOLERANCE)


# ------------------------------------------------------------------------------------ equal runs


def test_a_ray_probe_run_equals_the_local_run(ray_instance: Any, crawled: Path, tmp_path: Path) -> None:
    local, remote = fresh_copy(crawled, tmp_path, "local"), fresh_copy(crawled, tmp_path, "ray")
    lines = {}
    for index_dir, options in ((local, ()), (remote, ("--executor", "ray", "--workers", "2"))):
        run = hubindex_in(index_dir)
        text = run("probe", "--where", "true", "--corpus", "bbc-news", "--max-items", TEXT_ITEMS, *options)
        images = run("probe", "--where", "true", "--corpus", "sample-images", "--max-items", IMAGE_ITEMS, *options)
        lines[index_dir] = (text.stdout.split(" in ")[0], images.stdout.split(" in ")[0])
    assert lines[local] == lines[remote]
    assert "10 checkpoints; 5 probed, 0 reused, 0 failed, 5 without a matching probe" in lines[remote][0]
    stored = embeddings(remote)
    assert len(stored) == 10 and {row["dim"] for row in stored.values()} == {384, 1280}
    assert_same_embeddings(embeddings(local), stored)

    # A second Ray run finds everything stored and starts no task.
    again = hubindex_in(remote)("probe", "--where", "true", "--corpus", "bbc-news", "--max-items", TEXT_ITEMS,
                                "--executor", "ray")
    assert "10 checkpoints; 0 probed, 5 reused, 0 failed" in again.stdout


def scores(index_dir: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute(
            "SELECT checkpoint_id, metric, metric_version, value, higher_is_better, inputs_hash FROM task_scores "
            "WHERE task = 'digits'").fetchall()
    return {(row[0], row[1]): row[2:] for row in rows}


def task_feature_rows(index_dir: Path) -> list[tuple[Any, ...]]:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        return catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, kind, pooling, has_head, n_examples, dim, path FROM task_features "
            "ORDER BY ALL").fetchall()


def test_a_ray_score_run_equals_the_local_run(ray_instance: Any, crawled: Path, tmp_path: Path) -> None:
    local, remote = fresh_copy(crawled, tmp_path, "local"), fresh_copy(crawled, tmp_path, "ray")
    summaries = {}
    for index_dir, options in ((local, ()), (remote, ("--executor", "ray", "--workers", "2"))):
        result = run_hubindex("score", "--task", "digits", "--where", LITE0_FAMILY, *options, index_dir=index_dir)
        assert result.exit_code == 0, result.stderr
        summaries[index_dir] = result.stderr.splitlines()[0].split(" in ")[0]
    assert summaries[local] == summaries[remote]
    assert "3 checkpoints, 3 embedded" in summaries[remote]

    assert task_feature_rows(local) == task_feature_rows(remote)
    local_scores, remote_scores = scores(local), scores(remote)
    assert set(local_scores) == set(remote_scores) and len(remote_scores) >= 3 * 8
    for key, (version, value, higher, inputs) in local_scores.items():
        other = remote_scores[key]
        assert (version, higher, inputs) == (other[0], other[2], other[3]), key
        tolerance = RANK_SCORE_TOLERANCE if key[1] in RANK_METRICS else SCORE_TOLERANCE
        np.testing.assert_allclose(other[1], value, **tolerance, err_msg=str(key))


# ------------------------------------------------------------------------------------ failures


class CrashingProbe(Probe):
    """Ends its worker process on the one checkpoint it accepts (a model that kills the process)."""

    name = "test-crash"
    modality = TEXT
    pooling = "crash"

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        return Path(checkpoint.get("local_path") or "").name == "crash-me"

    def embed(self, checkpoint: dict[str, Any], corpus: Any) -> Any:
        if os.getpid() != DRIVER_PID:  # never take the test process down
            os._exit(3)
        raise RuntimeError("the crashing probe ran in the test process")


class CrashingProbes:
    @staticmethod
    @hookimpl
    def register_probes(register):  # noqa: ANN001, ANN205 - hook signature
        register(CrashingProbe)


def test_failures_in_ray_tasks_are_recorded_and_the_others_stored(
    ray_instance: Any, crawled: Path, zoo: Zoo, tmp_path: Path
) -> None:
    index_dir = fresh_copy(crawled, tmp_path, "failing")
    run = hubindex_in(index_dir)
    broken = tmp_path / "broken-lite0"
    shutil.copytree(zoo.snapshot("hubindex-zoo/tf_efficientnet_lite0.in1k"), broken)
    (broken / "model.safetensors").unlink()
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    crash = tmp_path / "crash-me"
    crash.mkdir()
    (crash / "config.json").write_text(json.dumps({"note": "no model_type: no built-in probe takes it"}))
    run("crawl", "local", str(broken))
    run("crawl", "local", str(crash))

    pm.register(CrashingProbes, name="test-crashing-probes")
    try:
        images = run("probe", "--where", "library_name = 'timm'", "--corpus", "sample-images",
                     "--max-items", IMAGE_ITEMS, "--executor", "ray")
        crashed = run_hubindex("probe", f"local:{crash}", "--corpus", "bbc-news", "--max-items", "20",
                               "--executor", "ray", index_dir=index_dir)
    finally:
        pm.unregister(name="test-crashing-probes")
    assert "6 checkpoints; 5 probed, 0 reused, 1 failed" in images.stdout
    assert "1 checkpoints; 0 probed, 0 reused, 1 failed" in crashed.stdout
    assert crashed.exit_code == 4  # nothing probed
    stored = embeddings(index_dir)
    assert {key.split(" @ ")[0] for key in stored} == {
        row for row in (ORG + name for name in (
            "tf_efficientnet_lite0.in1k", "tf_efficientnet_lite0.in1k_ft_digits", "tf_efficientnet_lite0.random_init",
            "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"))}

    failures = json.loads(run("sql", "SELECT subject, stage, kind, message FROM open_failures", "--format",
                              "json").stdout)
    by_subject = {row["subject"]: row for row in failures}
    assert set(by_subject) == {f"local:{broken}", f"local:{crash}"}
    assert by_subject[f"local:{broken}"]["kind"] == "load-error"
    assert by_subject[f"local:{crash}"]["kind"] == "worker-crashed"
    assert by_subject[f"local:{crash}"]["message"].startswith("test-crash on bbc-news: the Ray worker died")
    assert {row["stage"] for row in failures} == {"probe"}


# ------------------------------------------------------------------------------------ choosing


def test_unknown_executor_and_misplaced_options_are_one_line_errors(crawled: Path) -> None:
    unknown = run_hubindex("probe", "--where", "true", "--executor", "dask", index_dir=crawled)
    assert_one_line_error(unknown, "unknown executor 'dask'", "local, ray", exit_code=2)
    workers = run_hubindex("score", "--task", "digits", "--workers", "3", index_dir=crawled)
    assert_one_line_error(workers, "--workers needs --executor ray", exit_code=2)
    address = run_hubindex("probe", "--where", "true", "--address", "auto", index_dir=crawled)
    assert_one_line_error(address, "--address needs --executor ray", exit_code=2)


def test_a_ray_address_nothing_listens_on_fails_fast() -> None:
    from hubindex_plugins.executors import reachable_or_error

    with socket.socket() as free:  # a port that was free a moment ago: nothing listens there
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(HubindexError, match=f"cannot reach Ray at {address}"):
            reachable_or_error(address)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        reachable_or_error(f"127.0.0.1:{listening.getsockname()[1]}")
    reachable_or_error("auto")  # Ray resolves it (and says so when no cluster runs)


def test_without_ray_the_ray_executor_says_how_to_install_it(crawled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when Ray is not installed
    result = run_hubindex("probe", "--where", "true", "--executor", "ray", index_dir=crawled)
    assert_one_line_error(result, "pip install 'hubindex[ray]'", exit_code=2)


def test_a_probe_on_cuda_asks_ray_for_a_gpu_per_checkpoint() -> None:
    assert probe_resources("cuda") == TaskResources(cpus=1, gpus=1)
    assert probe_resources("cpu") == TaskResources(cpus=1, gpus=0)


# ------------------------------------------------------------------------------------ plugins


class ReversedExecutor(Executor):
    """Runs the items in this process, last first: completion order differs from submission order."""

    name = "test-reversed"
    version = "2"
    maps: list[int] = []

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], resources: TaskResources,
            shared: Any = None) -> Iterator[WorkDone]:
        items = list(items)
        ReversedExecutor.maps.append(len(items))
        for item in reversed(items):
            yield WorkDone(item, fn(item, shared))


class ReversedExecutors:
    @staticmethod
    @hookimpl
    def register_executors(register):  # noqa: ANN001, ANN205 - hook signature
        register(ReversedExecutor)


def test_a_third_party_executor_runs_probes(crawled: Path, tmp_path: Path) -> None:
    local, other = fresh_copy(crawled, tmp_path, "local"), fresh_copy(crawled, tmp_path, "other")
    pm.register(ReversedExecutors, name="test-reversed-executors")
    try:
        assert executors()["test-reversed"].plugin == "test-reversed-executors"
        listed = json.loads(run_hubindex("plugins", "--json", index_dir=other).stdout)
        assert next(e for e in listed if e["name"] == "test-reversed-executors")["executors"] == ["test-reversed (v2)"]
        ReversedExecutor.maps.clear()
        result = hubindex_in(other)("probe", "--where", LITE0_FAMILY, "--corpus", "sample-images", "--max-items",
                                    IMAGE_ITEMS, "--executor", "test-reversed")
        assert ReversedExecutor.maps == [3]
        with make_executor("test-reversed") as executor:
            again = run_probe(Index(other), [ORG + "tf_efficientnet_lite0.in1k"], "sample-images",
                              max_items=int(IMAGE_ITEMS), show_progress=False, executor=executor)
        assert (again.probed, again.reused) == (0, 1) and ReversedExecutor.maps == [3]  # nothing to run: no map
    finally:
        pm.unregister(name="test-reversed-executors")
    assert "3 checkpoints; 3 probed, 0 reused, 0 failed" in result.stdout
    hubindex_in(local)("probe", "--where", LITE0_FAMILY, "--corpus", "sample-images", "--max-items", IMAGE_ITEMS)
    assert_same_embeddings(embeddings(local), embeddings(other))
