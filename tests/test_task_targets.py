"""Task target kinds: how multi-label and regression labels are read, checked, split and hashed,
what the array mode and LogME do with them, and the migration that gave tasks a target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, catalog_at_version
from scipy.optimize import minimize

from hubindex.errors import UsageError
from hubindex.task_targets import encode_multi_label, encode_regression, encode_targets, split_targets
from hubindex.tasks import task_content_hash
from hubindex.types import TARGET_MULTI_LABEL, TARGET_REGRESSION, MetricInput, MetricNotApplicable
from hubindex_plugins.metrics import LogME, logme_fit


def test_multi_label_sets_from_strings_lists_and_indicator_rows() -> None:
    labels, classes = encode_multi_label(["sport|uk", "uk", "", "politics | uk"], "y")
    assert classes == ["politics", "sport", "uk"]
    assert labels.tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 1]]
    assert labels.dtype == np.int8
    listed, names = encode_multi_label([[3, 1], [1], []], "y")
    assert names == ["1", "3"] and listed.tolist() == [[1, 1], [1, 0], [0, 0]]
    matrix, columns = encode_multi_label(np.array([[1, 0, 1], [0, 1, 1]]), "y")
    assert columns == ["0", "1", "2"] and matrix.tolist() == [[1, 0, 1], [0, 1, 1]]
    named, chosen = encode_multi_label([[0, 2], [2]], "y", class_names=["cat", "dog", "fox"])
    assert chosen == ["cat", "fox"] and named.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize(("raw", "message"), [
    (["", ""], "no example has a class"),
    ([["a", 1]], "labels mix integers and strings"),
    (np.array([[1, 0.5], [0, 1]]), "must hold 0/1 indicators"),
    (np.array([[1, 1], [1, 1]]), "every example has every class"),
    ([], "no labels"),
])
def test_multi_label_refuses_what_is_not_a_set_of_classes(raw, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        encode_multi_label(raw, "y")


def test_regression_values_and_their_errors() -> None:
    values, names = encode_regression(["1.5", 2, np.float32(-3.25)], "y")
    assert values.tolist() == [[1.5], [2.0], [-3.25]] and names == ["value"]
    wide, wide_names = encode_regression([[1, 2], [3, 5]], "y")
    assert wide.shape == (2, 2) and wide_names == ["value0", "value1"]
    for raw, message in ((["1", "x"], "label 1 is 'x', not a number"), ([1, float("nan")], "finite numbers"),
                         ([[1, 2], [3]], "same number of target values"), ([2, 2, 2], "same target value"),
                         ([True, False], "finite numbers")):
        with pytest.raises(UsageError, match=message):
            encode_regression(raw, "y")


def test_a_fractional_class_label_points_to_regression() -> None:
    with pytest.raises(UsageError, match="--target regression"):
        encode_targets([0.5, 1.5], "classification", "y")


def test_non_class_targets_split_by_a_seeded_shuffle() -> None:
    values = np.arange(50, dtype=np.float64)[:, None]
    train = split_targets(values, TARGET_REGRESSION, 0.2, seed=3)
    assert (~train).sum() == 10
    assert np.array_equal(train, split_targets(values, TARGET_REGRESSION, 0.2, seed=3))
    assert not np.array_equal(train, split_targets(values, TARGET_REGRESSION, 0.2, seed=4))
    assert split_targets(values[:2], TARGET_MULTI_LABEL, 0.9, seed=0).sum() == 1  # one row is always kept


def test_the_target_kind_is_part_of_the_content_hash() -> None:
    items = ["a", "b"]
    train = np.array([True, False])
    as_values = task_content_hash("text", items, np.array([[0.0], [1.0]]), ["value"], train, TARGET_REGRESSION)
    as_sets = task_content_hash("text", items, np.array([[1], [0]], dtype=np.int8), ["x"], train, TARGET_MULTI_LABEL)
    as_classes = task_content_hash("text", items, np.array([0, 1]), ["0", "1"], train)
    assert len({as_values, as_sets, as_classes}) == 3


# ------------------------------------------------------------------------------------ LogME


def evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta), evaluated as the density it is."""
    n = len(y)
    covariance = features @ features.T / alpha + np.eye(n) / beta
    sign, logdet = np.linalg.slogdet(covariance)
    assert sign > 0
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(covariance, y)))


def test_logme_regression_is_the_maximised_evidence_of_each_centred_target() -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(30, 6))
    values = features @ rng.normal(size=(6, 2)) + 0.5 * rng.normal(size=(30, 2)) + np.array([4.0, -2.0])
    expected = []
    for column in values.T:
        centred = column - column.mean()
        best = minimize(lambda p: -evidence(features, centred, np.exp(p[0]), np.exp(p[1])), x0=[0.0, 0.0],
                        method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10_000})
        expected.append(-best.fun / len(column))
    data = MetricInput(features, values, np.ones(30, dtype=bool), target=TARGET_REGRESSION)
    assert LogME().score(data) == pytest.approx(np.mean(expected), rel=1e-6)


def test_logme_multi_label_with_one_class_per_example_is_classification_logme() -> None:
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(3), 10)
    features = rng.normal(size=(30, 5)) + labels[:, None]
    one_hot = np.eye(3, dtype=np.int8)[labels]
    train = np.ones(30, dtype=bool)
    as_sets = LogME().score(MetricInput(features, one_hot, train, target=TARGET_MULTI_LABEL))
    assert as_sets == pytest.approx(LogME().score(MetricInput(features, labels, train)), rel=1e-12)
    assert as_sets == pytest.approx(logme_fit(features, one_hot.astype(float)).score, rel=1e-12)


def test_logme_needs_two_train_rows_of_targets() -> None:
    data = MetricInput(np.ones((3, 2)), np.array([[1.0], [2.0], [3.0]]), np.array([True, False, False]),
                       target=TARGET_REGRESSION)
    with pytest.raises(MetricNotApplicable, match="at least 2 train rows"):
        LogME().score(data)


# ------------------------------------------------------------------------------------ command line


def test_array_mode_scores_regression_and_refuses_metrics_that_do_not_define_it(hubindex, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    features = rng.normal(size=(40, 4))
    np.save(tmp_path / "f.npy", features)
    np.save(tmp_path / "v.npy", features[:, 0] * 2 + 0.1 * rng.normal(size=40))
    result = hubindex("metric", "logme", "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "v.npy"),
                      "--target", "regression", "--format", "json")
    assert result.exit_code == 0, result.stderr
    values = np.load(tmp_path / "v.npy")[:, None]
    assert json.loads(result.stdout)["value"] == pytest.approx(logme_fit(features, values - values.mean()).score)
    refused = hubindex("metric", "knn", "--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "v.npy"),
                       "--target", "regression")
    assert "metric 'knn' scores classification targets, not regression" in assert_one_line_error(refused)


def test_task_add_refuses_targets_a_source_cannot_give(hubindex, index_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    result = hubindex("task", "add", "pets", "--images", str(tmp_path / "photos"), "--target", "regression")
    assert "--images reads one class per sub-folder" in assert_one_line_error(result)
    (tmp_path / "t.csv").write_text("text,score\nfine,1.5\ngood,2.5\nbad,oops\n")
    bad = hubindex("task", "add", "scores", "--csv", str(tmp_path / "t.csv"), "--text-col", "text",
                   "--label-col", "score", "--target", "regression")
    assert "label 2 is 'oops', not a number" in assert_one_line_error(bad)


def test_tasks_added_before_targets_existed_are_classification(tmp_path: Path) -> None:
    from hubindex.catalog import Catalog

    path = tmp_path / "catalog.duckdb"
    conn = catalog_at_version(path, 8)
    conn.execute("INSERT INTO tasks VALUES ('old', 'text', 'csv', 'x.csv', 4, 3, 2, ['a', 'b'], 0.2, 0, 'h', "
                 "'tasks/old-h', now()::TIMESTAMP)")
    conn.close()
    with Catalog(path) as catalog:
        assert catalog.conn.execute("SELECT task, target FROM tasks").fetchall() == [("old", "classification")]
