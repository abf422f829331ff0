"""sfda, ncti, gbc and knn-loo against their formulas written out, re-implementations of the public
references (TencentARC/SFDA, BUserName/NCTI, google-research stable_transfer), and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

import hubindex.plugins
import hubindex_plugins.metrics_discriminant as module
from hubindex.types import MetricInput, MetricNotApplicable
from hubindex_plugins.metrics_discriminant import (
    Gbc,
    KnnLeaveOneOut,
    Ncti,
    Sfda,
    gbc,
    knn_loo,
    ncti_pool,
    ncti_terms,
    sfda,
)
from test_metrics import every_row

METRICS = (Sfda(), Ncti(), Gbc(), KnnLeaveOneOut())


def blobs(per_class: int, n_classes: int, d: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes: random means (norm ~ spread * sqrt(d)) plus unit noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    return spread * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(len(labels), d)), labels


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ registry


def test_the_four_metrics_are_registered_for_classification() -> None:
    registered = hubindex.plugins.metrics()
    for name in ("sfda", "ncti", "gbc", "knn-loo"):
        component = registered[name].component
        assert component.version == "1" and component.needs == frozenset()
        assert component.targets == {"classification"} and component.higher_is_better
        assert component.description and "\n" not in component.description


# ------------------------------------------------------------------------------------ sfda


def direct_sfda(x: np.ndarray, y: np.ndarray) -> float:
    """The SFDA score written out with loops and a dense inverse (module docstring, sfda)."""
    n, d = x.shape
    classes = int(y.max()) + 1

    def stage(x: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, float, np.ndarray]:
        means = np.array([x[y == c].mean(axis=0) for c in range(classes)])
        s_w = np.zeros((d, d))
        for i in range(n):
            s_w += np.outer(x[i] - means[y[i]], x[i] - means[y[i]]) / n
        if shrinkage is None:
            shrinkage = max(math.exp(-5 * np.linalg.eigvalsh(s_w)[-1]), 1e-10)
        w = (1 - shrinkage) * s_w + shrinkage * np.trace(s_w) / d * np.eye(d)
        w_inv = np.linalg.inv(w)
        logits = np.zeros((n, classes))
        for i in range(n):
            for c in range(classes):
                logits[i, c] = (x[i] @ w_inv @ means[c] - 0.5 * means[c] @ w_inv @ means[c]
                                + math.log(np.sum(y == c) / n))
        return softmax_rows(logits), shrinkage, means

    probs, shrinkage, means = stage(x, None)
    soft = softmax_rows(probs)  # the reference's softening of the probabilities
    mixed = np.zeros_like(x)
    for i in range(n):
        outer = np.mean([means[c] for c in range(classes) if c != y[i]], axis=0)
        mixed[i] = soft[i, y[i]] * x[i] + (1 - soft[i, y[i]]) * outer
    probs, _, _ = stage(mixed, shrinkage)
    return float(np.mean([probs[i, y[i]] for i in range(n)]))


@pytest.mark.parametrize(("per_class", "d", "scale"), [(5, 3, 0.3), (5, 3, 3.0), (3, 12, 0.3)],
                         ids=["d<n", "d<n-floor", "d>n"])
def test_sfda_matches_the_formula(per_class: int, d: int, scale: float) -> None:
    x, y = blobs(per_class, 3, d, spread=1.0, seed=1)
    x *= scale
    # The formula is defined for d > n too (the metric refuses that regime: see the saturation test).
    value = sfda(x, y, 3)
    assert value == pytest.approx(direct_sfda(x, y), rel=1e-8)
    assert 1 / 3 < value <= 1


def reference_sfda(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """TencentARC/SFDA `SFDA_Score` as its code runs: lambda from 3 power-iteration steps, the
    generalised eigenproblem eigh(S_B, W) with all d eigenvectors, coef = M V V^T. Returns (score, lambda)."""
    x = np.array(features, dtype=np.float64)  # the reference overwrites the array it is given
    n, d = x.shape
    classes = int(labels.max()) + 1
    priors = np.bincount(labels) / n

    def cov(rows: np.ndarray, shrinkage: float = -1) -> np.ndarray:
        emp = np.atleast_2d(np.cov(rows.T, bias=1))
        if shrinkage < 0:
            return emp
        shrunk = (1 - shrinkage) * emp
        shrunk.flat[:: d + 1] += shrinkage * np.trace(emp) / d
        return shrunk

    def power_largest(a: np.ndarray) -> float:
        v = a.sum(axis=1)
        for _ in range(3):
            u = a @ v
            u /= np.linalg.norm(u)
            v = a @ u
            v /= np.linalg.norm(v)
        return float(v @ a @ u)

    def fit_predict(x: np.ndarray, shrinkage: float | None) -> tuple[np.ndarray, float]:
        means = np.array([x[labels == c].mean(axis=0) for c in range(classes)])
        s_w = sum(priors[c] * cov(x[labels == c]) for c in range(classes))
        if shrinkage is None:
            shrinkage = max(np.exp(-5 * power_largest(s_w)), 1e-10)
        s_t = cov(x, shrinkage)
        shrunk_w = (1 - shrinkage) * s_w
        shrunk_w.flat[:: d + 1] += shrinkage * np.trace(s_w) / d
        evals, evecs = scipy.linalg.eigh(s_t - shrunk_w, shrunk_w)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        return softmax_rows(x @ coef.T + intercept), float(shrinkage)

    probs, shrinkage = fit_predict(x, None)
    probs = np.exp(probs) / np.exp(probs).sum(axis=1, keepdims=True)
    means = np.array([x[labels == c].mean(axis=0) for c in range(classes)])
    outer = np.array([(means.sum(axis=0) - means[c]) / (classes - 1) for c in range(classes)])
    for c in range(classes):
        rows = np.flatnonzero(labels == c)
        weight = probs[rows, c][:, None]
        x[rows] = weight * x[rows] + (1 - weight) * outer[c]
    probs, _ = fit_predict(x, shrinkage)
    return float(np.mean(probs[np.arange(n), labels])), shrinkage


def test_sfda_matches_the_reference_given_its_lambda() -> None:
    x, y = blobs(20, 4, 10, spread=0.6, seed=2)
    x *= 0.25  # small features: lambda = exp(-5 sigma_1) is well above its floor
    expected, reference_lambda = reference_sfda(x, y)
    # Given the same lambda the classifiers are the same: M V V^T = M W^-1.
    assert sfda(x, y, 4, shrinkage=reference_lambda) == pytest.approx(expected, rel=1e-8)
    # The reference's power-iteration estimate of sigma_1 is below the exact one, so its lambda is larger.
    within = x - np.array([x[y == c].mean(axis=0) for c in range(4)])[y]
    exact_lambda = math.exp(-5 * np.linalg.eigvalsh(within.T @ within / len(y))[-1])
    assert exact_lambda < reference_lambda < 1.01 * exact_lambda
    assert Sfda().score(MetricInput(x, y, every_row(y))) == pytest.approx(expected, rel=1e-3)


def test_sfda_matches_the_reference_at_the_lambda_floor() -> None:
    x, y = blobs(15, 5, 8, spread=0.4, seed=3)
    expected, reference_lambda = reference_sfda(3 * x, y)
    assert reference_lambda == 1e-10
    assert Sfda().score(MetricInput(3 * x, y, every_row(y))) == pytest.approx(expected, rel=1e-8)


def test_sfda_is_scale_invariant_only_at_the_lambda_floor() -> None:
    x, y = blobs(15, 4, 6, spread=0.4, seed=4)
    x *= 3.0  # sigma_1(S_W) ~ 10: lambda at its floor 1e-10
    big = Sfda().score(MetricInput(x, y, every_row(y)))
    assert Sfda().score(MetricInput(10 * x, y, every_row(y))) == pytest.approx(big, rel=1e-9)
    small = Sfda().score(MetricInput(0.05 * x, y, every_row(y)))  # lambda near 1: nearly nearest-mean
    assert abs(small - big) > 1e-3


def test_sfda_saturates_on_noise_when_d_reaches_n_minus_c() -> None:
    # Resubstitution LDA with lambda at its floor separates any 60 train rows in >= 57 dimensions.
    y = np.repeat(np.arange(3), 20)
    noise = 3 * np.random.default_rng(21).normal(size=(60, 100))
    assert sfda(noise[:, :58], y, 3) == pytest.approx(1.0, abs=1e-9)
    assert reference_sfda(noise[:, :58], y)[0] == pytest.approx(1.0, abs=1e-9)
    assert sfda(noise, y, 3) == pytest.approx(1.0, abs=1e-9)  # d > n: S_W's null space does it
    assert sfda(noise[:, :20], y, 3) < 0.9
    # So the metric refuses that regime rather than rank noise first.
    with pytest.raises(MetricNotApplicable, match="needs d < n - C"):
        Sfda().score(MetricInput(noise[:, :57], y, every_row(y)))
    assert Sfda().score(MetricInput(noise[:, :56], y, every_row(y))) < 1.0


def test_sfda_refuses_classes_that_are_points() -> None:
    x = np.repeat(np.eye(3), 2, axis=0)
    y = np.repeat(np.arange(3), 2)
    with pytest.raises(MetricNotApplicable, match="sfda: every class is a single point"):
        sfda(x, y, 3)


# ------------------------------------------------------------------------------------ ncti


def test_ncti_terms_match_the_formula() -> None:
    # d = 5 <= 64: the PCA is a rotation, which LDA does not see; features large: lambda at its floor.
    x, y = blobs(12, 4, 5, spread=0.7, seed=5)
    x *= 4.0
    n, d, classes = len(y), 5, 4
    means = np.array([x[y == c].mean(axis=0) for c in range(classes)])
    centre = x.mean(axis=0)
    s_w, s_b = np.zeros((d, d)), np.zeros((d, d))
    for i in range(n):
        s_w += np.outer(x[i] - means[y[i]], x[i] - means[y[i]])
        s_b += np.outer(means[y[i]] - centre, means[y[i]] - centre)
    e = np.sort(np.linalg.eigvals(np.linalg.solve(s_w, s_b)).real)[::-1][: classes - 1]
    seli = float(np.sum(np.sqrt(n * (1 + e))))  # LDA projection whitened by S_W / n
    sigma_inv = np.linalg.inv(s_w / n)
    logits = np.array([[-0.5 * (x[i] - means[c]) @ sigma_inv @ (x[i] - means[c]) + math.log(np.mean(y == c))
                        for c in range(classes)] for i in range(n)])
    posteriors = softmax_rows(logits)
    ncc = float(np.mean([posteriors[i, y[i]] for i in range(n)]))
    class_nuclear = sum(np.linalg.svd(posteriors[y == c], compute_uv=False).sum() for c in range(classes))
    lower = sum(math.sqrt(12 / classes) for _ in range(classes))
    upper = sum(math.sqrt(12 * min(12, classes)) for _ in range(classes))

    terms = ncti_terms(x, y, classes)
    assert terms.seli_nuclear == pytest.approx(seli, rel=1e-8)
    assert terms.ncc == pytest.approx(ncc, rel=1e-8)
    assert terms.vc_log_nuclear == pytest.approx(math.log(class_nuclear), rel=1e-8)
    assert terms.seli01 == pytest.approx(1 - (classes - 1) * math.sqrt(n) / seli, rel=1e-8)
    assert terms.vc01 == pytest.approx((class_nuclear - lower) / (upper - lower), rel=1e-8)
    assert Ncti().score(MetricInput(x, y, every_row(y))) == pytest.approx(
        terms.seli01 + ncc - terms.vc01, rel=1e-8)


def reference_ncti_terms(features: np.ndarray, labels: np.ndarray, dimensions: int) -> tuple[float, float, float]:
    """BUserName/NCTI `NCTI_Score`: (||Z||_*, ncc, log sum_c ||P_c||_*). The reference asks for
    PCA(64) with scikit-learn's default solver (unseeded randomized SVD on inputs over 500 x 500);
    here the exact solver, so that the comparison is repeatable."""
    pca = PCA(n_components=dimensions, svd_solver="full")
    x = pca.fit_transform(features)
    temp = max(np.exp(-pca.explained_variance_[:32].sum()), 1e-10)
    if temp == 1e-10:
        clf = LinearDiscriminantAnalysis(solver="svd")
    else:
        clf = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(temp))
    low = clf.fit_transform(x, labels)
    low = low - low.mean(axis=0, keepdims=True)
    pred = clf.predict_proba(x)
    class_nuclear = sum(np.linalg.norm(pred[labels == c], ord="nuc") for c in range(int(labels.max()) + 1))
    return (float(np.linalg.norm(low, ord="nuc")), float(np.mean(pred[np.arange(len(labels)), labels])),
            float(np.log(class_nuclear)))


def reference_ncti_pool(raw: list[tuple[float, float, float]]) -> np.ndarray:
    """`evaluate_metric_group1_cpu.py`: min-max over the pool, seli + ncc - vc."""
    seli, ncc, vc = (np.array(column) for column in zip(*raw))

    def minmax(a: np.ndarray) -> np.ndarray:
        return (a - a.min()) / (a.max() - a.min())

    return minmax(seli) + minmax(ncc) - minmax(vc)


@pytest.mark.parametrize("scale", [1.0, 0.02], ids=["svd-solver", "shrinkage-solver"])
def test_ncti_matches_the_reference(scale: float) -> None:
    rng = np.random.default_rng(6)
    _, y = blobs(25, 5, 1, spread=0.0, seed=6)
    pool = [blobs(25, 5, 70, spread=spread, seed=7 + i)[0] for i, spread in enumerate((0.05, 0.2, 0.5, 1.0))]
    pool = [scale * (x @ rng.normal(size=(70, 70))) for x in pool]  # correlated features
    ours = [ncti_terms(x, y, 5) for x in pool]
    raw = [reference_ncti_terms(x, y, 64) for x in pool]
    for terms, (seli, ncc, vc) in zip(ours, raw):
        assert terms.seli_nuclear == pytest.approx(seli, rel=1e-7)
        assert terms.ncc == pytest.approx(ncc, rel=1e-7)
        assert terms.vc_log_nuclear == pytest.approx(vc, rel=1e-7)
    assert ncti_pool(ours) == pytest.approx(reference_ncti_pool(raw), rel=1e-6, abs=1e-9)
    # Per checkpoint the scaled terms replace the pool's min-max: other values, here the same order.
    per_checkpoint = np.array([t.score for t in ours])
    assert not np.allclose(per_checkpoint, reference_ncti_pool(raw))
    assert list(np.argsort(per_checkpoint)) == list(np.argsort(reference_ncti_pool(raw))) == [0, 1, 2, 3]


def test_ncti_depends_on_the_pca_subspace_only() -> None:
    x, y = blobs(20, 4, 90, spread=0.3, seed=8)
    rotation, _ = np.linalg.qr(np.random.default_rng(8).normal(size=(90, 90)))
    value = Ncti().score(MetricInput(x, y, every_row(y)))
    assert Ncti().score(MetricInput(x @ rotation, y, every_row(y))) == pytest.approx(value, rel=1e-8)
    assert Ncti().score(MetricInput(7 * x + 3, y, every_row(y))) == pytest.approx(value, rel=1e-8)


def test_ncti_pool_of_equal_terms_is_zero() -> None:
    x, y = blobs(10, 3, 8, spread=0.5, seed=9)
    terms = ncti_terms(x, y, 3)
    assert np.array_equal(ncti_pool([terms, terms]), [0.0, 0.0])


# ------------------------------------------------------------------------------------ gbc


def pca_scores(x: np.ndarray, dimensions: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dimensions].T


def direct_gbc(x: np.ndarray, y: np.ndarray, dimensions: int, covariance: str) -> float:
    """-sum over ordered class pairs of exp(-D_B) with the covariance matrices written out."""
    h = pca_scores(x, dimensions)
    classes = int(y.max()) + 1
    means = [h[y == c].mean(axis=0) for c in range(classes)]
    covs = []
    for c in range(classes):
        var = ((h[y == c] - means[c]) ** 2).mean(axis=0)
        covs.append(np.diag(var) if covariance == "diagonal" else var.mean() * np.eye(dimensions))
    total = 0.0
    for a in range(classes):
        for b in range(classes):
            if a != b:
                s = (covs[a] + covs[b]) / 2
                diff = means[a] - means[b]
                ratio = np.linalg.det(s) / math.sqrt(np.linalg.det(covs[a]) * np.linalg.det(covs[b]))
                distance = diff @ np.linalg.inv(s) @ diff / 8 + 0.5 * math.log(ratio)
                total += math.exp(-distance)
    return -total


@pytest.mark.parametrize("covariance", ["spherical", "diagonal"])
def test_gbc_matches_the_formula(covariance: str) -> None:
    x, y = blobs(8, 3, 4, spread=0.5, seed=10)
    x[:, 0] *= 3.0  # unequal variances, so diagonal and spherical differ
    value = gbc(x, y, 3, covariance=covariance)
    assert value == pytest.approx(direct_gbc(x, y, 4, covariance), rel=1e-8)
    assert -6 < value < 0  # 3 x 2 ordered pairs, each BC in (0, 1]
    if covariance == "spherical":
        assert Gbc().score(MetricInput(x, y, every_row(y))) == value


def reference_gbc(x: np.ndarray, y: np.ndarray, gaussian_type: str, dimensions: int,
                  log_det_dimension: bool = False) -> float:
    """stable_transfer `gbc.py` (in float64; it runs in float32): exact PCA, variances floored at
    1e-4, spherical variances passed as scalars. log_det_dimension=True repeats the scalar over the
    p dimensions (det(sigma^2 I_p)), which the reference does not."""
    h = PCA(n_components=dimensions, svd_solver="full").fit_transform(x)
    stats = {}
    for c in np.unique(y):
        rows = h[y == c]
        stats[c] = (rows.mean(axis=0), np.maximum(rows.var(axis=0), 1e-4))
    total = 0.0
    for c1 in np.unique(y):
        for c2 in np.unique(y):
            if c1 == c2:
                continue
            (mu1, s1), (mu2, s2) = stats[c1], stats[c2]
            if gaussian_type == "spherical":
                s1, s2 = np.mean(s1), np.mean(s2)
                if log_det_dimension:
                    s1, s2 = np.full(dimensions, s1), np.full(dimensions, s2)
            avg = (s1 + s2) / 2
            first = np.sum((mu1 - mu2) ** 2 / avg) / 8
            second = np.sum(np.log(avg)) - 0.5 * np.sum(np.log(s1)) - 0.5 * np.sum(np.log(s2))
            total += math.exp(-(first + 0.5 * second))
    return -total


def test_gbc_matches_the_reference_diagonal_and_fixes_its_spherical_determinant() -> None:
    x, y = blobs(30, 5, 100, spread=0.15, seed=11)
    x[y == 0] *= 1.8  # class 0 spreads more: the log-determinant term matters
    assert gbc(x, y, 5, covariance="diagonal") == pytest.approx(reference_gbc(x, y, "diagonal", 64), rel=1e-8)
    ours = gbc(x, y, 5, covariance="spherical")
    assert ours == pytest.approx(reference_gbc(x, y, "spherical", 64, log_det_dimension=True), rel=1e-8)
    # The reference counts the overlap term of a spherical Gaussian once instead of p = 64 times:
    # its classes overlap more than the Bhattacharyya distance says.
    reference = reference_gbc(x, y, "spherical", 64)
    assert reference < 1.5 * ours < 0


def test_gbc_floor_is_relative_to_the_feature_scale() -> None:
    x, y = blobs(20, 4, 70, spread=0.3, seed=12)
    value = Gbc().score(MetricInput(x, y, every_row(y)))
    assert Gbc().score(MetricInput(1e-3 * x, y, every_row(y))) == pytest.approx(value, rel=1e-9)
    # The reference's absolute floor 1e-4 swallows variances of order 1e-6 and changes the score.
    assert reference_gbc(x, y, "spherical", 64) != pytest.approx(reference_gbc(1e-3 * x, y, "spherical", 64), rel=1e-3)


# ------------------------------------------------------------------------------------ knn-loo


def direct_knn_loo(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Every row against every other, exact distances, ties to the lower position, majority vote
    with ties to the class of the nearest neighbour."""
    correct = 0
    for i in range(len(y)):
        ranked = sorted((float(np.sum((x[i] - x[j]) ** 2)), j) for j in range(len(y)) if j != i)
        neighbours = [int(y[j]) for _, j in ranked[:k]]
        counts = {c: neighbours.count(c) for c in neighbours}
        winner = next(c for c in neighbours if counts[c] == max(counts.values()))
        correct += winner == y[i]
    return correct / len(y)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_knn_loo_matches_brute_force(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "KNN_LOO_BLOCK", 7)  # several blocks, one ragged
    x, y = blobs(12, 3, 5, spread=0.5, seed=13)
    value = knn_loo(x, y, k=k)
    assert value == direct_knn_loo(x, y, k)
    assert 0.3 < value < 1.0


def test_knn_loo_matches_scikit_learn_neighbours() -> None:
    from sklearn.neighbors import NearestNeighbors

    x, y = blobs(40, 5, 16, spread=0.3, seed=14)
    _, nearest = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x).kneighbors(x)
    assert nearest[:, 0].tolist() == list(range(len(y)))  # scikit-learn returns each row first
    expected = np.mean(y[nearest[:, 1]] == y)
    assert KnnLeaveOneOut().score(MetricInput(x, y, every_row(y))) == pytest.approx(expected)


def test_knn_loo_never_picks_the_row_itself_even_among_duplicates() -> None:
    base = np.random.default_rng(15).normal(size=(6, 4))
    # Every row appears twice with opposite labels: the only row at distance 0 is the other copy.
    x = np.concatenate([base, base])
    y = np.concatenate([np.zeros(6, dtype=np.int64), np.ones(6, dtype=np.int64)])
    assert knn_loo(x, y) == 0.0
    assert knn_loo(x, np.concatenate([y[:6], y[:6]])) == 1.0  # same labels: duplicates are always right
    # -0.0 and 0.0 are the same value: still duplicates.
    x_signed = x.copy()
    x_signed[0, 0], x_signed[6, 0] = 0.0, -0.0
    assert knn_loo(x_signed, y) == 0.0


def test_knn_loo_ties_go_to_the_lower_position() -> None:
    # Row 0 sits between rows 1 and 2 at the same distance 1; three copies of a far point (rows 3-5).
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]])
    y = np.array([1, 1, 0, 0, 1, 0])
    # Row 0 -> row 1 (label 1, right); row 3 -> row 4 (wrong), row 4 -> row 3 (wrong), row 5 -> row 3 (right).
    expected = np.mean([True, *(y[[1, 2]] == y[[0, 0]]), False, False, True])  # rows 1, 2 -> row 0
    assert knn_loo(x, y) == expected == 0.5


def test_knn_loo_needs_two_rows() -> None:
    with pytest.raises(MetricNotApplicable, match="knn-loo: needs at least 2 train rows"):
        knn_loo(np.ones((1, 3)), np.zeros(1, dtype=np.int64))


# ------------------------------------------------------------------------------------ all four


@pytest.mark.parametrize("shape", [(300, 160), (140, 200)], ids=["covariance", "gram"])
def test_lanczos_gives_the_dense_eigensolver_values(shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.sparse.linalg

    x, y = blobs(shape[0] // 4, 4, shape[1], spread=0.3, seed=22)
    x = x @ np.random.default_rng(22).normal(size=(shape[1], shape[1]))  # a decaying spectrum
    functions = [lambda: sfda(x, y, 4), *(lambda m=metric: m.score(MetricInput(x, y, every_row(y)))
                                          for metric in METRICS[1:3])]
    dense = [function() for function in functions]
    calls: list[int] = []
    eigsh = scipy.sparse.linalg.eigsh
    monkeypatch.setattr(scipy.sparse.linalg, "eigsh", lambda *a, **k: calls.append(k["k"]) or eigsh(*a, **k))
    monkeypatch.setattr(module, "DENSE_EIGEN_SIZE", 8)
    lanczos = [function() for function in functions]
    assert sorted(calls) == ([1, 64, 64] if shape[0] >= shape[1] else [64, 64])  # sigma_1 of S_W, two PCAs
    assert lanczos == pytest.approx(dense, rel=1e-8)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_separated_classes_score_higher_than_noise(metric) -> None:
    x, y = blobs(20, 4, 30, spread=1.0, seed=16)
    noise = np.random.default_rng(16).normal(size=x.shape)
    assert metric.score(MetricInput(x, y, every_row(y))) > metric.score(MetricInput(noise, y, every_row(y)))


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_label_permutation_and_row_order_do_not_matter(metric) -> None:
    x, y = blobs(15, 4, 12, spread=0.4, seed=17)
    value = metric.score(MetricInput(x, y, every_row(y)))
    relabelled = np.array([2, 0, 3, 1])[y]
    assert metric.score(MetricInput(x, relabelled, every_row(y))) == pytest.approx(value, rel=1e-9)
    order = np.random.default_rng(17).permutation(len(y))
    assert metric.score(MetricInput(x[order], y[order], every_row(y))) == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_deterministic_and_independent_of_the_seed(metric) -> None:
    x, y = blobs(12, 3, 20, spread=0.4, seed=18)
    values = {metric.score(MetricInput(x, y, every_row(y), seed=seed)) for seed in (0, 0, 1, 12345)}
    assert len(values) == 1 and np.isfinite(values.pop())


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_only_train_rows_count(metric) -> None:
    x, y = blobs(12, 3, 10, spread=0.5, seed=19)
    train = np.arange(len(y)) % 4 != 0
    garbage = x.copy()
    garbage[~train] = 1e3  # held-out rows are ignored, whatever they hold
    value = metric.score(MetricInput(garbage, y, train))
    assert value == pytest.approx(metric.score(MetricInput(x[train], y[train], every_row(y[train]))), rel=1e-9)


@pytest.mark.parametrize("metric", METRICS[:3], ids=lambda m: m.name)
def test_a_class_with_one_train_row_is_not_applicable(metric) -> None:
    x, y = blobs(5, 3, 4, spread=1.0, seed=20)
    train = np.ones(len(y), dtype=bool)
    train[y == 2] = False
    train[np.flatnonzero(y == 2)[0]] = True
    with pytest.raises(MetricNotApplicable, match=rf"{metric.name}: needs at least 2 train rows in every class"):
        metric.score(MetricInput(x, y, train))


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_a_single_class_is_not_applicable(metric) -> None:
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(MetricNotApplicable, match=f"{metric.name}: needs at least 2 classes"):
        metric.score(MetricInput(np.random.default_rng(0).normal(size=(10, 3)), y, every_row(y)))
