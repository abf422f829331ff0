"""`hubindex score` on the real zoo: task features embedded once, metric plugins, incremental scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from conftest import CliResult, Zoo, assert_one_line_error, run_hubindex

from hubindex import hookimpl
from hubindex.index import Index
from hubindex.plugins import pm
from hubindex.store import EmbeddingStore
from hubindex.types import (
    NEEDS_HEAD,
    NEEDS_HELD_OUT,
    NEEDS_LABEL_EMBEDDINGS,
    TARGET_CLASSIFICATION,
    TARGET_MULTI_LABEL,
    Metric,
    MetricInput,
)

ORG = "hf:hubindex-zoo/"
LITE0 = ORG + "tf_efficientnet_lite0.in1k"
DIGITS = ORG + "tf_efficientnet_lite0.in1k_ft_digits"
RANDOM = ORG + "tf_efficientnet_lite0.random_init"
MINILM = ORG + "all-MiniLM-L6-v2"
LITE0_FAMILY = "library_name = 'timm' AND checkpoint_id LIKE '%lite0%'"


class CountingCentroid(Metric):
    """Held-out accuracy of the nearest class mean; counts its calls."""

    name = "test-centroid"
    version = "1"
    needs = frozenset({NEEDS_HELD_OUT})
    calls: list[str] = []

    def score(self, data: MetricInput) -> float:
        CountingCentroid.calls.append(self.version)
        features, labels = data.train_rows()
        held_out, truth = data.held_out_rows()
        means = np.stack([features[labels == c].mean(axis=0) for c in range(data.n_classes)])
        predicted = ((held_out[:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
        return float((predicted == truth).mean())


class BrokenMetric(Metric):
    name = "test-broken"
    needs = frozenset({NEEDS_HEAD})

    def score(self, data: MetricInput) -> float:
        raise RuntimeError("this metric always fails")


class TestMetrics:
    @staticmethod
    @hookimpl
    def register_metrics(register):  # noqa: ANN001, ANN205 - hook signature
        register(CountingCentroid)
        register(BrokenMetric)


@pytest.fixture(scope="module", autouse=True)
def test_metrics() -> Iterator[None]:
    pm.register(TestMetrics, name="test-metrics")
    yield
    pm.unregister(name="test-metrics")


@pytest.fixture(scope="module")
def scored(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The zoo crawled, a 60-digit image task and a 45-article text task added."""
    from sklearn.datasets import load_digits

    from hubindex_plugins.zoo import read_bbc_news

    index_dir = tmp_path_factory.mktemp("score-index")
    data = tmp_path_factory.mktemp("score-data")

    def run(*args: str) -> CliResult:
        return run_hubindex(*args, index_dir=index_dir)

    assert run("crawl", "local", str(zoo.out)).exit_code == 0
    digits = load_digits()
    picked = np.concatenate([np.flatnonzero(digits.target == c)[:12] for c in range(5)])
    np.save(data / "x.npy", digits.images[picked] / 16.0)
    np.save(data / "y.npy", digits.target[picked])
    assert run("task", "add", "digits", "--arrays", str(data / "x.npy"), str(data / "y.npy")).exit_code == 0
    reference = np.concatenate([np.flatnonzero(digits.target == c)[20:32] for c in range(10)])
    np.save(data / "rx.npy", digits.images[reference] / 16.0)
    np.save(data / "ry.npy", digits.target[reference])
    assert run("task", "add", "digits-ref", "--arrays", str(data / "rx.npy"), str(data / "ry.npy")).exit_code == 0
    topics, texts, labels = read_bbc_news()
    chosen = [i for topic in range(3) for i in [j for j, label in enumerate(labels) if label == topic][:15]]
    np.save(data / "tx.npy", np.array([" ".join(texts[i].split()[:40]) for i in chosen]))
    np.save(data / "ty.npy", np.array([topics[labels[i]] for i in chosen]))
    assert run("task", "add", "bbc", "--arrays", str(data / "tx.npy"), str(data / "ty.npy")).exit_code == 0
    return {"index": Index(index_dir), "run": run}


def scores(index: Index, task: str) -> dict[tuple[str, str], float]:
    with index.open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute("SELECT checkpoint_id, metric, value FROM task_scores WHERE task = ?",
                                    [task]).fetchall()
    return {(c, m): v for c, m, v in rows}


def stored_features(index: Index, checkpoint_id: str, task: str, kind: str = "features") -> np.ndarray:
    with index.open_catalog(read_only=True) as catalog:
        path, sha, n = catalog.conn.execute(
            "SELECT path, file_sha256, n_examples FROM task_features WHERE checkpoint_id = ? AND task = ? AND kind = ?",
            [checkpoint_id, task, kind]).fetchone()
    return EmbeddingStore(index.root).read(path, n, sha)


def test_score_embeds_once_and_stores_every_metric(scored: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    first = run("score", "--task", "digits", "--where", LITE0_FAMILY, "--metric", "test-centroid",
                "--metric", "knn", "--metric", "leep", "--metric", "nce", "--json")
    assert first.exit_code == 0, first.stderr
    table = {row["checkpoint_id"]: row for row in json.loads(first.stdout)}
    assert set(table) == {LITE0, DIGITS, RANDOM}
    found = scores(index, "digits")
    assert len(found) == 3 * 4
    # The checkpoint fine-tuned on digits explains digit labels with its own head far better.
    assert found[(DIGITS, "nce")] > found[(RANDOM, "nce")]
    assert found[(DIGITS, "leep")] > found[(RANDOM, "leep")]
    assert all(found[(c, "leep")] <= 0 for c in table)

    second = run("score", "--task", "digits", "--where", LITE0_FAMILY, "--metric", "test-centroid",
                 "--metric", "knn", "--metric", "leep", "--metric", "nce")
    assert "3 checkpoints, 0 embedded; 0 scores computed, 12 up to date" in second.stderr, second.stderr
    # The table printed holds the stored values, rounded.
    header = second.stdout.splitlines()[0].split()
    assert header == ["checkpoint_id", "test-centroid", "knn", "leep", "nce"]
    line = next(line for line in second.stdout.splitlines() if line.startswith(DIGITS + " "))
    assert [float(v) for v in line.split()[1:]] == [round(found[(DIGITS, m)], 4) for m in header[1:]]


def test_stored_scores_equal_the_metric_on_the_stored_features(scored: dict[str, Any]) -> None:
    from hubindex.scoring import metric_classes
    from hubindex.tasks import load_task

    index = scored["index"]
    scored["run"]("score", "--task", "digits", "--where", LITE0_FAMILY, "--metric", "knn", "--metric", "leep")
    with index.open_catalog(read_only=True) as catalog:
        task = load_task(index, catalog, "digits")
    knn, leep = (cls() for cls in metric_classes(["knn", "leep"]))
    for checkpoint_id in (LITE0, DIGITS):
        features = stored_features(index, checkpoint_id, "digits").astype(np.float64)
        head = stored_features(index, checkpoint_id, "digits", "head").astype(np.float64)
        assert features.shape == (60, 1280) and np.allclose(head.sum(axis=1), 1.0, atol=1e-4)
        data = MetricInput(features, task.labels, task.train, head, seed=task.seed)
        found = scores(index, "digits")
        assert found[(checkpoint_id, "knn")] == pytest.approx(knn.score(data), abs=1e-12)
        assert found[(checkpoint_id, "leep")] == pytest.approx(leep.score(data), abs=1e-12)
    # The fine-tuned head has 10 digit classes; ImageNet heads have 1,000.
    assert stored_features(index, DIGITS, "digits", "head").shape[1] == 10
    assert stored_features(index, LITE0, "digits", "head").shape[1] == 1000


def test_new_metric_version_recomputes_without_loading_models(scored: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    run = scored["run"]
    run("score", "--task", "digits", "--where", LITE0_FAMILY, "--metric", "test-centroid")
    CountingCentroid.calls.clear()
    from hubindex_plugins.probe_image import TimmImageProbe

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a stored task's features must not load the model again")

    monkeypatch.setattr(TimmImageProbe, "create_model", no_model)
    monkeypatch.setattr(CountingCentroid, "version", "2")
    result = run("score", "--task", "digits", "--where", LITE0_FAMILY, "--metric", "test-centroid")
    assert "0 embedded; 3 scores computed" in result.stderr, result.stderr
    assert CountingCentroid.calls == ["2", "2", "2"]
    with scored["index"].open_catalog(read_only=True) as catalog:
        versions = catalog.conn.execute(
            "SELECT DISTINCT metric_version FROM task_scores WHERE metric = 'test-centroid'").fetchall()
    assert versions == [("2",)]


def test_failing_metric_is_recorded_and_others_are_kept(scored: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    result = run("score", "--task", "digits", LITE0, "--metric", "test-broken", "--metric", "knn")
    assert result.exit_code == 0, result.stderr
    assert "1 failed" in result.stderr and "this metric always fails" in result.stderr
    with index.open_catalog(read_only=True) as catalog:
        failure = catalog.conn.execute(
            "SELECT stage, subject, kind FROM failures WHERE message LIKE '%always fails%'").fetchone()
    assert failure == ("score", LITE0, "metric-error")
    assert (LITE0, "knn") in scores(index, "digits")


def test_text_task_skips_head_metrics_for_encoders_without_a_head(scored: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    result = run("score", "--task", "bbc", MINILM, ORG + "all-MiniLM-L6-v2-random-init", "--metric", "logme",
                 "--metric", "leep", "--metric", "test-centroid")
    assert result.exit_code == 0, result.stderr
    assert "2 not applicable" in result.stderr and "leep: needs a checkpoint with a classification head" in result.stderr
    found = scores(index, "bbc")
    assert set(found) == {(c, m) for c in (MINILM, ORG + "all-MiniLM-L6-v2-random-init")
                          for m in ("logme", "test-centroid")}
    # A pretrained sentence encoder separates news topics better than the same network at random.
    assert found[(MINILM, "logme")] > found[(ORG + "all-MiniLM-L6-v2-random-init", "logme")]
    assert stored_features(index, MINILM, "bbc").shape == (45, 384)


def test_a_score_that_produces_no_score_exits_4(scored: dict[str, Any]) -> None:
    result = scored["run"]("score", "--task", "bbc", MINILM, "--metric", "leep")
    assert result.exit_code == 4, result.stderr
    assert "1 not applicable" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("hubindex: error: no score for task 'bbc'")


def test_task_relatedness_with_a_reference_task(scored: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    missing = run("score", "--task", "digits", DIGITS, "--metric", "task-relatedness")
    assert "1 not applicable" in missing.stderr and "--reference-task" in missing.stderr
    result = run("score", "--task", "digits", DIGITS, RANDOM, "--metric", "task-relatedness",
                 "--reference-task", "digits-ref")
    assert result.exit_code == 0, result.stderr
    with index.open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute(
            "SELECT checkpoint_id, reference_task, higher_is_better FROM task_scores "
            "WHERE task = 'digits' AND metric = 'task-relatedness' ORDER BY 1").fetchall()
    assert rows == [(DIGITS, "digits-ref", False), (RANDOM, "digits-ref", False)]
    assert_one_line_error(run("score", "--task", "digits", "--reference-task", "bbc", "--metric", "task-relatedness"),
                          "holds text examples")


def test_score_errors_are_one_line(scored: dict[str, Any]) -> None:
    run = scored["run"]
    assert_one_line_error(run("score", "--task", "digits", "--metric", "no-such-metric"), "unknown metric",
                          "available metrics", "logme")
    assert_one_line_error(run("score", "--task", "nope"), "no task named 'nope'", "digits")
    assert_one_line_error(run("score", "--task", "digits", "--where", "no_column = 1"), "no_column")
    assert_one_line_error(run("score", "--task", "digits", "hf:not/there"), "not in the catalog")


def test_checkpoint_that_cannot_load_is_recorded(scored: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    run, index = scored["run"], scored["index"]
    copy = tmp_path / "copy-of-lite0"
    with index.open_catalog(read_only=True) as catalog:
        source = catalog.checkpoint(LITE0)["local_path"]
    shutil.copytree(source, copy)
    assert run("crawl", "local", str(copy)).exit_code == 0
    (copy / "model.safetensors").write_bytes(b"broken")
    with index.open_catalog(read_only=True) as catalog:
        broken_id = catalog.conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE local_path = ?", [str(copy)]).fetchone()[0]
    result = run("score", "--task", "digits", broken_id, LITE0, "--metric", "knn")
    assert result.exit_code == 0 and "1 failed" in result.stderr and "load-error" in result.stderr


# ------------------------------------------------------------------------------------ target kinds


class LabelEmbeddingShape(Metric):
    """The width of the first label encoder's class-name embeddings; records what it was given."""

    name = "test-label-width"
    needs = frozenset({NEEDS_LABEL_EMBEDDINGS})
    targets = frozenset({TARGET_CLASSIFICATION, TARGET_MULTI_LABEL})
    seen: list[tuple[tuple[int, int], ...]] = []

    def score(self, data: MetricInput) -> float:
        LabelEmbeddingShape.seen.append(tuple(m.shape for m in data.label_embeddings))
        return float(data.label_embeddings[0].shape[1])


@pytest.fixture(scope="module")
def target_tasks(scored: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A multi-label and a regression text task on the same BBC articles as `bbc`."""
    from hubindex_plugins.zoo import read_bbc_news

    data = tmp_path_factory.mktemp("target-data")
    topics, texts, labels = read_bbc_news()
    chosen = [i for topic in range(3) for i in [j for j, label in enumerate(labels) if label == topic][:15]]
    lengths = np.array([len(texts[i].split()) for i in chosen], dtype=np.float64)
    rows = ["text,tags,words"]
    for i, length in zip(chosen, lengths):
        tags = [topics[labels[i]]] + (["long"] if length > np.median(lengths) else [])
        text = " ".join(texts[i].split()[:40]).replace('"', "'")
        rows.append(f'"{text}",{"|".join(tags)},{np.log(length):.6f}')
    (data / "bbc.csv").write_text("\n".join(rows) + "\n")
    run = scored["run"]
    tagged = run("task", "add", "bbc-tags", "--csv", str(data / "bbc.csv"), "--text-col", "text",
                 "--label-col", "tags", "--target", "multi-label")
    assert tagged.exit_code == 0, tagged.stderr
    assert "45 text examples, 4 classes (multi-label)" in tagged.stdout
    sized = run("task", "add", "bbc-length", "--csv", str(data / "bbc.csv"), "--text-col", "text",
                "--label-col", "words", "--target", "regression")
    assert sized.exit_code == 0, sized.stderr
    assert "1 target values" in sized.stdout
    return {"lengths": np.log(lengths)}


def test_task_list_says_what_each_task_predicts(scored: dict[str, Any], target_tasks: dict[str, Any]) -> None:
    listed = {row["task"]: row for row in json.loads(scored["run"]("task", "list", "--format", "json").stdout)}
    assert (listed["bbc"]["target"], listed["bbc-tags"]["target"], listed["bbc-length"]["target"]) == (
        "classification", "multi-label", "regression")
    assert listed["bbc-tags"]["n_classes"] == 4 and listed["bbc-length"]["n_classes"] == 0
    from hubindex.tasks import load_task

    with scored["index"].open_catalog(read_only=True) as catalog:
        tags = load_task(scored["index"], catalog, "bbc-tags")
        length = load_task(scored["index"], catalog, "bbc-length")
    assert tags.classes == ["business", "entertainment", "long", "politics"]
    assert tags.labels.shape == (45, 4) and set(tags.labels.sum(axis=1)) == {1, 2}
    assert np.allclose(length.labels[:, 0], target_tasks["lengths"], atol=1e-6)
    assert (~length.train).sum() == 9  # 20% of 45, a plain seeded shuffle


def test_metrics_score_only_the_targets_they_define(scored: dict[str, Any], target_tasks: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    for task in ("bbc-tags", "bbc-length"):
        result = run("score", "--task", task, MINILM, ORG + "all-MiniLM-L6-v2-random-init",
                     "--metric", "logme", "--metric", "knn")
        assert result.exit_code == 0, result.stderr
        assert f"knn scores classification tasks, not {'multi-label' if task == 'bbc-tags' else 'regression'}" \
            in result.stderr
        found = scores(index, task)
        assert set(found) == {(MINILM, "logme"), (ORG + "all-MiniLM-L6-v2-random-init", "logme")}
        # The pretrained encoder explains topics (and topic-linked length) better than random weights.
        assert found[(MINILM, "logme")] > found[(ORG + "all-MiniLM-L6-v2-random-init", "logme")]
    # The stored LogME of the regression task is LogME of the stored features against the values.
    from hubindex_plugins.metrics import logme_fit

    with index.open_catalog(read_only=True) as catalog:
        from hubindex.tasks import load_task

        length = load_task(index, catalog, "bbc-length")
    features = stored_features(index, MINILM, "bbc-length").astype(np.float64)
    values = length.labels[length.train]
    expected = logme_fit(features[length.train], values - values.mean(axis=0)).score
    assert scores(index, "bbc-length")[(MINILM, "logme")] == pytest.approx(expected, rel=1e-9)
    # The target kind changes the labels, not what the checkpoint sees: the same articles, the same features.
    assert np.array_equal(stored_features(index, MINILM, "bbc-length"), stored_features(index, MINILM, "bbc-tags"))


def test_label_encoders_embed_the_class_names(scored: dict[str, Any], target_tasks: dict[str, Any]) -> None:
    run, index = scored["run"], scored["index"]
    pm.register(type("LabelMetric", (), {"register_metrics": staticmethod(
        hookimpl(lambda register: register(LabelEmbeddingShape)))}), name="test-label-metric")
    try:
        missing = run("score", "--task", "bbc", MINILM, "--metric", "test-label-width")
        assert missing.exit_code == 4
        assert "needs embeddings of the class names: score with --label-encoder CHECKPOINT" in missing.stderr
        LabelEmbeddingShape.seen.clear()
        given = run("score", "--task", "bbc-tags", MINILM, "--metric", "test-label-width",
                    "--label-encoder", MINILM, "--label-encoder", MINILM + "-first3")
        assert given.exit_code == 0, given.stderr
        assert LabelEmbeddingShape.seen == [((4, 384), (4, 384))]
        assert scores(index, "bbc-tags")[(MINILM, "test-label-width")] == 384.0
        again = run("score", "--task", "bbc-tags", MINILM, "--metric", "test-label-width",
                    "--label-encoder", MINILM, "--label-encoder", MINILM + "-first3")
        assert "1 up to date" in again.stderr and len(LabelEmbeddingShape.seen) == 1
        # Other label encoders are other inputs: the score is computed again.
        other = run("score", "--task", "bbc-tags", MINILM, "--metric", "test-label-width", "--label-encoder", MINILM)
        assert "1 scores computed" in other.stderr and LabelEmbeddingShape.seen[-1] == ((4, 384),)
        unknown = run("score", "--task", "bbc-tags", MINILM, "--metric", "test-label-width",
                      "--label-encoder", "hf:nobody/nothing")
        assert "--label-encoder 'hf:nobody/nothing': no such checkpoint in the catalog" in \
            assert_one_line_error(unknown)
        image = run("score", "--task", "bbc-tags", MINILM, "--metric", "test-label-width", "--label-encoder", LITE0)
        assert "no text probe takes this checkpoint" in assert_one_line_error(image)
    finally:
        pm.unregister(name="test-label-metric")
