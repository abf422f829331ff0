"""The built-in metrics against direct evaluations of their formulas, and their properties."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax, softmax

import hubindex.plugins
import hubindex_plugins.metrics as metrics_module
from hubindex.types import MetricInput, MetricNotApplicable
from hubindex_plugins.metric_task_relatedness import (
    COVARIANCE_WEIGHT,
    MAX_CORE_CONDITION,
    RIDGE_FACTORS,
    TaskRelatedness,
    relatedness,
)
from hubindex_plugins.metric_nleep import NLeep, nleep_components
from hubindex_plugins.metrics import (
    HScore,
    Leep,
    LinearProbe,
    LogME,
    NearestNeighbour,
    Nce,
    ShrinkageHScore,
    logme_fit,
)

ALL_METRICS = {
    "linear", "knn", "leep", "nleep", "logme", "hscore", "hscore-shrinkage", "nce", "task-relatedness",
    "knn-loo", "sfda", "ncti", "gbc", "transrate", "pactran", "etran", "parc", "emms",
}


def blobs(per_class: int, n_classes: int, d: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes: random means (norm ~ spread * sqrt(d)) plus unit noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    means = spread * rng.normal(size=(n_classes, d))
    return means[labels] + rng.normal(size=(len(labels), d)), labels


def every_row(labels: np.ndarray) -> np.ndarray:
    return np.ones(len(labels), dtype=bool)


def held_out_every(labels: np.ndarray, k: int) -> np.ndarray:
    """Train mask holding out every k-th row of each class."""
    train = np.ones(len(labels), dtype=bool)
    for c in np.unique(labels):
        train[np.flatnonzero(labels == c)[::k]] = False
    return train


def random_head(n: int, n_source: int, seed: int, sharpness: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return softmax(sharpness * rng.normal(size=(n, n_source)), axis=1)


# ------------------------------------------------------------------------------------ direct formulas


def direct_leep(theta: np.ndarray, labels: np.ndarray) -> float:
    """METHODS.md section 3, written out with loops."""
    n, n_source = theta.shape
    classes = int(labels.max()) + 1
    joint = np.zeros((classes, n_source))
    for j in range(n):
        joint[labels[j]] += theta[j] / n
    conditional = np.zeros_like(joint)
    for z in range(n_source):
        if joint[:, z].sum() > 0:
            conditional[:, z] = joint[:, z] / joint[:, z].sum()
    total = 0.0
    for j in range(n):
        total += np.log(sum(conditional[labels[j], z] * theta[j, z] for z in range(n_source)))
    return total / n


def direct_nce(source: np.ndarray, labels: np.ndarray) -> float:
    n = len(labels)
    value = 0.0
    for y in np.unique(labels):
        for z in np.unique(source):
            p_yz = np.sum((labels == y) & (source == z)) / n
            p_z = np.sum(source == z) / n
            if p_yz > 0:
                value += p_yz * np.log(p_yz / p_z)
    return value


def direct_between_class(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cov(E[f | y]) as a dense d x d matrix: each row replaced by its class mean (normalised by n)."""
    g = np.zeros_like(features)
    for c in np.unique(labels):
        g[labels == c] = features[labels == c].mean(axis=0)
    return np.cov(g, rowvar=False, bias=True)


def direct_hscore(features: np.ndarray, labels: np.ndarray) -> float:
    cov_f = np.cov(features, rowvar=False, bias=True)
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ direct_between_class(features, labels)))


def direct_shrinkage_hscore(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.covariance import LedoitWolf

    shrunk = LedoitWolf().fit(features)
    alpha = shrunk.shrinkage_
    return float(np.trace(np.linalg.inv(shrunk.covariance_) @ ((1 - alpha) * direct_between_class(features, labels))))


def direct_log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, F F^T / alpha + I / beta) / n, densely."""
    n = len(y)
    cov = features @ features.T / alpha + np.eye(n) / beta
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y)) / n)


# ------------------------------------------------------------------------------------ registry


def test_registry_lists_every_metric_with_a_version() -> None:
    registered = hubindex.plugins.metrics()
    assert ALL_METRICS <= set(registered)
    for name in ALL_METRICS:
        component = registered[name].component
        assert component.version == ("2" if name == "nleep" else "1")
        assert component.description and "\n" not in component.description
    assert registered["task-relatedness"].component.higher_is_better is False
    assert registered["leep"].component.needs == {"head"}
    assert registered["linear"].component.needs == {"held-out"}
    assert registered["task-relatedness"].component.needs == {"reference"}


# ------------------------------------------------------------------------------------ linear and knn


def test_linear_and_knn_are_perfect_on_separable_data() -> None:
    features, labels = blobs(20, 4, 8, spread=10.0, seed=1)
    data = MetricInput(features, labels, held_out_every(labels, 4))
    assert LinearProbe().score(data) == 1.0
    assert NearestNeighbour().score(data) == 1.0


def test_linear_matches_a_tightly_converged_probe() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, labels = blobs(30, 5, 12, spread=0.35, seed=2)
    train = held_out_every(labels, 3)
    scaler = StandardScaler().fit(features[train])
    probe = LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000).fit(scaler.transform(features[train]), labels[train])
    expected = np.mean(probe.predict(scaler.transform(features[~train])) == labels[~train])
    value = LinearProbe().score(MetricInput(features, labels, train))
    assert 0.3 < value < 1.0  # a task where the probe matters
    assert value == expected


def test_linear_warns_when_the_probe_does_not_converge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "PROBE_MAX_ITER", 2)
    features, labels = blobs(30, 5, 12, spread=0.35, seed=2)
    with pytest.warns(RuntimeWarning, match="linear: the logistic regression did not converge"):
        LinearProbe().score(MetricInput(features, labels, held_out_every(labels, 3)))


def test_knn_matches_brute_force_nearest_neighbour() -> None:
    features, labels = blobs(25, 4, 6, spread=0.5, seed=3)
    train = held_out_every(labels, 5)
    distances = ((features[~train][:, None, :] - features[train][None, :, :]) ** 2).sum(axis=2)
    expected = np.mean(labels[train][np.argmin(distances, axis=1)] == labels[~train])
    value = NearestNeighbour().score(MetricInput(features, labels, train))
    assert 0.3 < value < 1.0
    assert value == pytest.approx(expected)


@pytest.mark.parametrize("queries", [1, 40])  # FAISS searches few and many queries differently
@pytest.mark.parametrize("first", [0, 1])
def test_knn_ties_go_to_the_first_train_row(first: int, queries: int) -> None:
    rng = np.random.default_rng(4)
    point = np.array([1.0, 2.0, 3.0])
    others = point + 10 + rng.normal(size=(30, 3))
    # Two identical train rows with different labels (positions 3 and 20), held-out rows near them.
    train_rows = np.concatenate([others[:3], [point], others[3:19], [point], others[19:]])
    train_labels = np.array([1] * 3 + [first] + [1] * 16 + [1 - first] + [1] * 11)
    held_out = point + 0.01 * rng.normal(size=(queries, 3))
    features = np.concatenate([train_rows, held_out])
    labels = np.concatenate([train_labels, np.full(queries, first)])
    train = np.arange(len(labels)) < len(train_rows)
    assert NearestNeighbour().score(MetricInput(features, labels, train)) == 1.0


def test_held_out_metrics_need_held_out_rows() -> None:
    features, labels = blobs(5, 2, 3, spread=1.0, seed=4)
    with pytest.raises(MetricNotApplicable, match="knn: needs held-out rows"):
        NearestNeighbour().score(MetricInput(features, labels, every_row(labels)))


# ------------------------------------------------------------------------------------ leep, nce, nleep


def test_leep_matches_the_formula() -> None:
    labels = np.random.default_rng(5).integers(0, 4, size=60)
    theta = random_head(60, 7, seed=5)
    theta[:, 6] = 0.0  # a source class no row gives any probability
    theta /= theta.sum(axis=1, keepdims=True)
    train = held_out_every(labels, 6)
    value = Leep().score(MetricInput(np.zeros((60, 2)), labels, train, head_probs=theta))
    assert value == pytest.approx(direct_leep(theta[train], labels[train]), rel=1e-12)
    assert value < 0


def test_leep_of_a_perfect_one_hot_head_is_zero() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    head = np.zeros((7, 5))
    head[np.arange(7), labels + 2] = 1.0  # source class = target class + 2
    assert Leep().score(MetricInput(np.zeros((7, 1)), labels, every_row(labels), head_probs=head)) == 0.0


def test_leep_is_at_most_zero() -> None:
    for seed in range(5):
        labels = np.random.default_rng(seed).integers(0, 3, size=40)
        labels[:3] = [0, 1, 2]
        head = random_head(40, 10, seed=seed, sharpness=5.0)
        assert Leep().score(MetricInput(np.zeros((40, 1)), labels, every_row(labels), head_probs=head)) <= 0


def test_head_probs_must_be_probabilities() -> None:
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="leep: head_probs rows must be probabilities"):
        Leep().score(MetricInput(np.zeros((4, 1)), labels, every_row(labels), head_probs=np.full((4, 3), 0.5)))


def test_nce_matches_the_formula() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=80)
    head = random_head(80, 6, seed=6)
    train = held_out_every(labels, 4)
    value = Nce().score(MetricInput(np.zeros((80, 1)), labels, train, head_probs=head))
    assert value == pytest.approx(direct_nce(np.argmax(head[train], axis=1), labels[train]), rel=1e-12)
    assert value < 0


def test_nce_is_zero_when_the_target_is_a_function_of_the_source_label() -> None:
    source = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
    labels = source % 2  # several source classes map to one target class
    head = random_head(10, 6, seed=7) * 0.1
    head[np.arange(10), source] += 0.9  # the argmax is the source label
    assert Nce().score(MetricInput(np.zeros((10, 1)), labels, every_row(labels), head_probs=head)) == 0.0


def test_nleep_is_repeatable_with_the_same_seed() -> None:
    features, labels = blobs(40, 4, 16, spread=0.5, seed=9)
    data = MetricInput(features, labels, every_row(labels), seed=3)
    assert NLeep().score(data) == NLeep().score(data)


def test_nleep_uses_fewer_components_when_rows_are_few() -> None:
    assert nleep_components(1000, 10) == 50
    assert nleep_components(65, 10) == 30  # 2 rows per component at most
    assert nleep_components(20, 10) == 10
    with pytest.raises(MetricNotApplicable, match="nleep: needs at least 20 train rows for 10 classes"):
        nleep_components(19, 10)
    features, labels = blobs(5, 3, 4, spread=1.0, seed=10)
    assert np.isfinite(NLeep().score(MetricInput(features, labels, every_row(labels))))


# ------------------------------------------------------------------------------------ logme


@pytest.mark.parametrize(("per_class", "d"), [(10, 80), (40, 12)], ids=["n<d", "n>d"])
def test_logme_is_the_maximised_evidence(per_class: int, d: int) -> None:
    features, labels = blobs(per_class, 3, d, spread=0.4, seed=12)
    n = len(labels)
    targets = np.eye(3)[labels]
    fit = logme_fit(features, targets)
    for k in range(3):
        alpha, beta = fit.alpha[k], fit.beta[k]
        at_optimum = direct_log_evidence(features, targets[:, k], alpha, beta)
        assert fit.evidence[k] == pytest.approx(at_optimum, rel=1e-9, abs=1e-12)
        for da in (0.99, 1.0, 1.01):
            for db in (0.99, 1.0, 1.01):
                assert direct_log_evidence(features, targets[:, k], alpha * da, beta * db) <= at_optimum + 1e-12
    assert LogME().score(MetricInput(features, labels, every_row(labels))) == pytest.approx(fit.evidence.mean())
    assert (n < d) == (per_class == 10)


def test_logme_uses_the_train_rows_only() -> None:
    features, labels = blobs(20, 3, 5, spread=0.5, seed=13)
    train = held_out_every(labels, 4)
    expected = logme_fit(features[train], np.eye(3)[labels[train]]).score
    assert LogME().score(MetricInput(features, labels, train)) == pytest.approx(expected)


def test_logme_is_sane_for_many_more_dimensions_than_rows() -> None:
    rng = np.random.default_rng(14)
    n, d = 500, 2048
    features = rng.normal(size=(n, d))
    labels = np.arange(n) % 10
    fit = logme_fit(features, np.eye(10)[labels])
    assert np.isfinite(fit.score) and -1.0 < fit.score < 0.0
    # The same evidence without the (d - r) log(alpha) term of the null space is positive nonsense.
    rank = np.linalg.matrix_rank(features)
    assert rank == n
    without_null_space = fit.evidence + (d - rank) / 2 * np.log(fit.alpha) / n
    assert np.mean(without_null_space) > 0
    k = 0
    assert fit.evidence[k] == pytest.approx(
        direct_log_evidence(features, np.eye(10)[labels][:, k], fit.alpha[k], fit.beta[k]), rel=1e-9)


# ------------------------------------------------------------------------------------ h-scores


def test_hscore_matches_the_formula() -> None:
    features, labels = blobs(20, 4, 6, spread=0.7, seed=15)
    train = held_out_every(labels, 5)
    value = HScore().score(MetricInput(features, labels, train))
    assert value == pytest.approx(direct_hscore(features[train], labels[train]), rel=1e-9)


def test_hscore_matches_the_formula_with_more_dimensions_than_rows() -> None:
    features, labels = blobs(6, 3, 40, spread=0.7, seed=16)
    value = HScore().score(MetricInput(features, labels, every_row(labels)))
    assert value == pytest.approx(direct_hscore(features, labels), rel=1e-7)


@pytest.mark.parametrize(("per_class", "d"), [(30, 8), (8, 50)], ids=["n>d", "n<d"])
def test_shrinkage_hscore_matches_ledoit_wolf(per_class: int, d: int) -> None:
    features, labels = blobs(per_class, 3, d, spread=0.6, seed=17)
    value = ShrinkageHScore().score(MetricInput(features, labels, every_row(labels)))
    assert value == pytest.approx(direct_shrinkage_hscore(features, labels), rel=1e-8)


@pytest.mark.parametrize("metric", [HScore(), ShrinkageHScore()], ids=["hscore", "hscore-shrinkage"])
def test_hscores_prefer_separable_labels_to_shuffled_ones(metric) -> None:
    features, labels = blobs(25, 4, 10, spread=2.0, seed=18)
    shuffled = np.random.default_rng(18).permutation(labels)
    assert metric.score(MetricInput(features, labels, every_row(labels))) > 3 * metric.score(
        MetricInput(features, shuffled, every_row(labels)))


# ------------------------------------------------------------------------------------ helpful errors


@pytest.mark.parametrize("metric", [LogME(), HScore(), NLeep(), LinearProbe()], ids=lambda m: m.name)
def test_a_class_without_train_rows_is_named(metric) -> None:
    features, labels = blobs(6, 3, 4, spread=1.0, seed=19)
    train = labels != 2
    train[0] = False  # keeps a held-out row of class 0 as well
    with pytest.raises(ValueError, match=rf"{metric.name}: 1 of 3 classes have no train rows \(class 2\)"):
        metric.score(MetricInput(features, labels, train))


def test_a_single_class_is_not_applicable() -> None:
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(MetricNotApplicable, match="logme: needs at least 2 classes"):
        LogME().score(MetricInput(np.ones((10, 3)), labels, every_row(labels)))


def test_non_finite_features_are_refused() -> None:
    features, labels = blobs(5, 2, 3, spread=1.0, seed=20)
    features[3, 1] = np.nan
    with pytest.raises(ValueError, match="hscore: features hold NaN"):
        HScore().score(MetricInput(features, labels, every_row(labels)))


# ------------------------------------------------------------------------------------ task-relatedness


def standardised(rows: np.ndarray, origin: np.ndarray, scale: float) -> np.ndarray:
    return (rows - origin) / scale


def direct_relatedness(target: MetricInput, reference: MetricInput) -> float:
    """The estimator of plugins/metric_task_relatedness.py with dense d x d covariances and loops."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rx, ry, rtrain = reference.features, reference.labels, reference.train
    tx, ty = target.features[target.train], target.labels[target.train]
    origin = rx[rtrain].mean(axis=0)
    scale = np.sqrt(np.trace(np.cov(rx[rtrain], rowvar=False, bias=True)))
    r_rows = standardised(rx[rtrain], origin, scale)
    t_rows = standardised(tx, origin, scale)
    ref_classes, tgt_classes = int(ry.max()) + 1, int(ty.max()) + 1
    mu_r = [r_rows[ry[rtrain] == r].mean(axis=0) for r in range(ref_classes)]
    mu_t = [t_rows[ty == t].mean(axis=0) for t in range(tgt_classes)]
    sigma_r = [np.cov(r_rows[ry[rtrain] == r], rowvar=False, bias=True) for r in range(ref_classes)]
    sigma_t = [np.cov(t_rows[ty == t], rowvar=False, bias=True) for t in range(tgt_classes)]
    pi_t = np.array([np.mean(ty == t) for t in range(tgt_classes)])
    pi_r = np.array([np.mean(ry[rtrain] == r) for r in range(ref_classes)])

    cost = np.zeros((tgt_classes, ref_classes))
    for t in range(tgt_classes):
        for r in range(ref_classes):
            cost[t, r] = (np.sum((mu_r[r] - mu_t[t]) ** 2)
                          + COVARIANCE_WEIGHT * np.linalg.norm(sigma_r[r] - sigma_t[t], "fro") ** 2)
    _, match = linear_sum_assignment(cost)

    d_prior = np.array([pi_r[match[t]] for t in range(tgt_classes)])
    d_prior /= d_prior.sum()
    label_entropy = 0.0
    for t in range(tgt_classes):  # B(t | r) is 1 for r = match[t]: each term is D log(D / D)
        label_entropy -= d_prior[t] * np.log(d_prior[t] / d_prior[t])

    scaler = StandardScaler().fit(rx[rtrain])
    classifier = LogisticRegression(C=1.0, tol=1e-6, max_iter=10_000).fit(scaler.transform(rx[rtrain]), ry[rtrain])
    loss = 0.0
    for t in range(tgt_classes):
        rows = (ry == match[t]) & ~rtrain
        if not rows.any():
            rows = (ry == match[t]) & rtrain
        logits = classifier.decision_function(scaler.transform(rx[rows]))[:, match]
        loss += d_prior[t] * np.mean(-log_softmax(logits, axis=1)[:, t])

    def gamma(a: np.ndarray) -> float:
        return sum(pi_t[t] * (np.sum((a @ mu_r[match[t]] - mu_t[t]) ** 2)
                              + COVARIANCE_WEIGHT * np.linalg.norm(a @ sigma_r[match[t]] @ a.T - sigma_t[t], "fro") ** 2)
                   for t in range(tgt_classes))

    d = rx.shape[1]
    best = gamma(np.eye(d))
    energy = sum(pi_t[t] * np.sum(mu_r[match[t]] ** 2) for t in range(tgt_classes))
    for factor in RIDGE_FACTORS:
        rho = factor * energy
        lhs = sum(pi_t[t] * np.outer(mu_t[t], mu_r[match[t]]) for t in range(tgt_classes)) + rho * np.eye(d)
        rhs = sum(pi_t[t] * np.outer(mu_r[match[t]], mu_r[match[t]]) for t in range(tgt_classes)) + rho * np.eye(d)
        a = lhs @ np.linalg.inv(rhs)
        assert np.linalg.cond(a) < MAX_CORE_CONDITION
        best = min(best, gamma(a))
    return loss + label_entropy + best


def test_task_relatedness_matches_a_dense_evaluation() -> None:
    ref_x, ref_y = blobs(12, 4, 6, spread=0.8, seed=21)
    reference = MetricInput(ref_x, ref_y, held_out_every(ref_y, 4))
    tgt_x, tgt_y = blobs(10, 3, 6, spread=0.8, seed=22)
    target = MetricInput(1.5 * tgt_x + 0.3, tgt_y, held_out_every(tgt_y, 5), reference=reference)
    result = relatedness(target)
    assert result.label_mismatch == 0.0
    assert len(set(result.assignment.tolist())) == 3
    assert TaskRelatedness().score(target) == pytest.approx(direct_relatedness(target, reference), rel=1e-8)


def test_a_relabelled_copy_of_the_reference_is_more_related_than_random_features() -> None:
    ref_x, ref_y = blobs(15, 5, 8, spread=1.0, seed=23)
    reference = MetricInput(ref_x, ref_y, every_row(ref_y))
    permutation = np.array([3, 0, 4, 1, 2])
    copy = MetricInput(ref_x, permutation[ref_y], every_row(ref_y), reference=reference)
    result = relatedness(copy)
    assert np.array_equal(result.assignment, np.argsort(permutation))  # B undoes the relabelling
    assert result.mismatch == pytest.approx(0.0, abs=1e-12)
    unrelated = MetricInput(np.random.default_rng(23).normal(size=ref_x.shape), permutation[ref_y],
                            every_row(ref_y), reference=reference)
    assert TaskRelatedness().score(copy) < TaskRelatedness().score(unrelated)


def test_task_relatedness_needs_as_many_reference_classes() -> None:
    ref_x, ref_y = blobs(8, 3, 4, spread=1.0, seed=24)
    tgt_x, tgt_y = blobs(8, 4, 4, spread=1.0, seed=25)
    target = MetricInput(tgt_x, tgt_y, every_row(tgt_y), reference=MetricInput(ref_x, ref_y, every_row(ref_y)))
    with pytest.raises(MetricNotApplicable, match="target task has 4 classes and the reference task 3"):
        TaskRelatedness().score(target)


def test_no_warnings_on_ordinary_inputs() -> None:
    features, labels = blobs(20, 3, 5, spread=1.0, seed=26)
    head = random_head(len(labels), 4, seed=26)
    data = MetricInput(features, labels, held_out_every(labels, 4), head_probs=head,
                       reference=MetricInput(features, labels, every_row(labels)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in (LinearProbe(), NearestNeighbour(), Leep(), NLeep(), LogME(), HScore(), ShrinkageHScore(),
                       Nce(), TaskRelatedness()):
            assert np.isfinite(metric.score(data))
