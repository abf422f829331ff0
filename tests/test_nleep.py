"""N-LEEP (version 2) against its formula written out, the public references, and the properties it must have."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from hubindex.types import MetricInput, MetricNotApplicable
from hubindex_plugins.metric_nleep import (
    NLEEP_MAX_DIMENSIONS,
    NLEEP_TEMPERATURES,
    NLeep,
    nleep_fit,
)
from hubindex_plugins.metrics import leep
from test_metrics import every_row

# Version 1 of the metric: every component up to 80% of the variance, the mixture's own posterior.
V1: dict[str, object] = {"max_dimensions": None, "temperatures": (1.0,)}


def class_structured(n: int, d: int, n_classes: int, seed: int, between: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Class means plus anisotropic noise, both with a decaying spectrum (as in real embeddings).

    Noise variance of coordinate i ~ i^-0.8, class means ~ i^-2 (in the leading directions);
    the class means hold `between` of the total variance. Labels are balanced and shuffled.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    i = np.arange(1, d + 1, dtype=np.float64)
    noise_var = i**-0.8 / np.sum(i**-0.8)
    mean_var = i**-2.0 / np.sum(i**-2.0)
    means = rng.normal(size=(n_classes, d)) * np.sqrt(mean_var)
    means *= np.sqrt(between / (1 - between) / np.mean(np.sum(means**2, axis=1)))
    return means[labels] + rng.normal(size=(n, d)) * np.sqrt(noise_var), labels


def noise_like(features: np.ndarray, seed: int) -> np.ndarray:
    """Pure Gaussian noise of the same shape, each dimension with the features' own variance."""
    return np.random.default_rng(seed).normal(size=features.shape) * features.std(axis=0)


def label_entropy(labels: np.ndarray) -> float:
    shares = np.bincount(labels) / len(labels)
    return float(-np.sum(shares[shares > 0] * np.log(shares[shares > 0])))


# ------------------------------------------------------------------------------------ the formula


def direct_leep_rows(theta: np.ndarray, labels: np.ndarray, fit_rows: list[int], score_rows: list[int],
                     n_classes: int) -> list[float]:
    """log sum_z P(y_j | z) theta_jz for each score row, P(y | z) from the fit rows, with loops."""
    n_components = theta.shape[1]
    joint = np.zeros((n_classes, n_components))
    for j in fit_rows:
        for z in range(n_components):
            joint[labels[j], z] += theta[j, z]
    logs = []
    for j in score_rows:
        expected = 0.0
        for z in range(n_components):
            column = sum(joint[y, z] for y in range(n_classes))
            if column > 0:
                expected += joint[labels[j], z] / column * theta[j, z]
        logs.append(math.log(expected) if expected > 0 else -math.inf)
    return logs


def direct_nleep(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """(N-LEEP, T) step by step: PCA, the seeded mixture, its log-weights, the folds, T, LEEP."""
    n, n_classes = len(labels), int(labels.max()) + 1
    # 1. PCA on the centred rows: the components up to 80% of the variance, at most 32.
    centred = features - features.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    p = min(int(np.searchsorted(share, 0.8) + 1), 32)
    scores = centred @ vt[:p].T  # the signs differ from scikit-learn's: k-means++ and EM do not see them
    # 2. The mixture: K = 5C diagonal Gaussians, seeded, reg_covar relative to the score variance.
    k = n_classes * min(5, n // (2 * n_classes))
    mixture = GaussianMixture(k, covariance_type="diag", reg_covar=1e-6 * scores.var(axis=0).mean(),
                              max_iter=1000, random_state=seed).fit(scores)
    # 3. log( pi_z N(x_j; mu_z, diag var_z) ), one entry at a time.
    log_weights = np.zeros((n, k))
    for j in range(n):
        for z in range(k):
            total = math.log(mixture.weights_[z])
            for i in range(p):
                var = mixture.covariances_[z, i]
                total -= 0.5 * (math.log(2 * math.pi * var) + (scores[j, i] - mixture.means_[z, i]) ** 2 / var)
            log_weights[j, z] = total
    # 4. Two folds: each class's rows, in the order of a seeded random key per row, alternate.
    keys = np.random.default_rng(seed).permutation(n)
    fold = np.zeros(n, dtype=bool)
    for c in range(n_classes):
        rows = sorted(np.flatnonzero(labels == c), key=lambda j: keys[j])
        for position, j in enumerate(rows):
            fold[j] = position % 2 == 1
    # 5. The temperature with the best held-out LEEP (first on a tie), then LEEP of all rows at it.
    def posterior(t: float) -> np.ndarray:
        if math.isinf(t):
            return np.full((n, k), 1.0 / k)
        theta = np.exp((log_weights - log_weights.max(axis=1, keepdims=True)) / t)
        return theta / theta.sum(axis=1, keepdims=True)

    best, best_t = -math.inf, None
    for t in [2.0 ** (e / 2) for e in range(-4, 29)] + [math.inf]:
        theta = posterior(t)
        logs = []
        for held in (True, False):
            fit_rows = [j for j in range(n) if fold[j] != held]
            fit_classes = {int(labels[j]) for j in fit_rows}
            score_rows = [j for j in range(n) if fold[j] == held and int(labels[j]) in fit_classes]
            logs += direct_leep_rows(theta, labels, fit_rows, score_rows, n_classes)
        value = sum(logs) / len(logs)
        if value > best:
            best, best_t = value, t
    everything = list(range(n))
    return sum(direct_leep_rows(posterior(best_t), labels, everything, everything, n_classes)) / n, best_t


@pytest.mark.parametrize(("per_class", "d", "between", "flat", "dimensions"),
                         [(12, 6, 0.6, 0.0, 3), (40, 80, 0.95, 1.0, 32)], ids=["p < 32", "p capped at 32"])
def test_nleep_matches_the_formula_written_out(per_class: int, d: int, between: float, flat: float,
                                               dimensions: int) -> None:
    features, labels = class_structured(3 * per_class, d, 3, seed=1, between=between)
    # Isotropic noise on top flattens the spectrum: 80% of the variance then needs more than 32 components.
    features = features + flat * np.random.default_rng(2).normal(size=features.shape)
    train = every_row(labels)
    train[::7] = False
    expected, temperature = direct_nleep(features[train], labels[train], seed=5)
    fit = nleep_fit(features[train], labels[train], 3, seed=5)
    assert fit.dimensions == dimensions
    assert fit.temperature == temperature and math.isfinite(temperature)
    assert NLeep().score(MetricInput(features, labels, train, seed=5)) == pytest.approx(expected, rel=1e-8)


def test_the_temperatures_run_from_a_quarter_to_the_uniform_posterior() -> None:
    assert NLEEP_TEMPERATURES[0] == 0.25 and NLEEP_TEMPERATURES[-2] == 2.0**14 and 1.0 in NLEEP_TEMPERATURES
    assert math.isinf(NLEEP_TEMPERATURES[-1])


# ------------------------------------------------------------------------------------ what version 2 is for


@pytest.fixture(scope="module")
def realistic() -> dict[str, object]:
    """n = 2,000, d = 512, C = 20 class-structured features and noise like them, fitted by versions 2 and 1."""
    features, labels = class_structured(2000, 512, 20, seed=3)
    noise = noise_like(features, seed=4)
    return {"labels": labels,
            "real": nleep_fit(features, labels, 20, seed=0), "noise": nleep_fit(noise, labels, 20, seed=0),
            "real v1": nleep_fit(features, labels, 20, seed=0, **V1),
            "noise v1": nleep_fit(noise, labels, 20, seed=0, **V1)}


def test_the_posterior_is_not_one_hot_at_a_realistic_size(realistic) -> None:
    fit = realistic["real"]
    assert 0.6 < fit.posterior.max(axis=1).mean() < 0.95
    assert fit.dimensions == NLEEP_MAX_DIMENSIONS == 32 and fit.components == 100 and 1 < fit.temperature < 10
    # Version 1 (PCA to 80%: about 140 dimensions, the mixture's own posterior) is one-hot here.
    old = realistic["real v1"]
    assert old.dimensions > 100 and old.posterior.max(axis=1).mean() > 0.99


def test_noise_scores_the_label_entropy_floor_far_below_real_features(realistic) -> None:
    floor = -label_entropy(realistic["labels"])
    assert realistic["noise"].score == pytest.approx(floor, abs=0.02)
    assert realistic["real"].score > floor + 1.0
    # Version 1 lifts noise almost half a nat above the floor: with hard clusters, P(y | z) of
    # 100 components is fitted to the 2,000 rows it then scores (a bias of about K (C - 1) / 2n).
    assert realistic["noise v1"].score > floor + 0.4


def test_more_class_structure_scores_higher() -> None:
    scores = []
    for between in (0.0, 0.1, 0.3):
        features, labels = class_structured(600, 64, 6, seed=6, between=between)
        scores.append(NLeep().score(MetricInput(features, labels, every_row(labels), seed=0)))
    assert scores[0] < scores[1] < scores[2]


# ------------------------------------------------------------------------------------ properties


def test_nleep_is_deterministic_given_the_seed() -> None:
    features, labels = class_structured(300, 40, 5, seed=7)
    data = MetricInput(features, labels, every_row(labels), seed=3)
    first = NLeep().score(data)
    assert NLeep().score(data) == first
    assert nleep_fit(features, labels, 5, seed=3).score == first


def test_nleep_does_not_depend_on_class_names_or_feature_scale() -> None:
    features, labels = class_structured(300, 40, 5, seed=8)
    value = NLeep().score(MetricInput(features, labels, every_row(labels), seed=1))
    renamed = np.array([3, 0, 4, 1, 2])[labels]
    assert NLeep().score(MetricInput(features, renamed, every_row(labels), seed=1)) == pytest.approx(value, rel=1e-12)
    assert NLeep().score(MetricInput(features * 1e3, labels, every_row(labels), seed=1)) == pytest.approx(
        value, rel=1e-6)


def test_nleep_is_not_applicable_to_too_few_rows_or_constant_features() -> None:
    labels = np.repeat(np.arange(4), 2)[:7]  # 7 rows for 4 classes: under 2 per component
    with pytest.raises(MetricNotApplicable, match="nleep: needs at least 8 train rows for 4 classes"):
        NLeep().score(MetricInput(np.random.default_rng(0).normal(size=(7, 3)), labels, every_row(labels)))
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(MetricNotApplicable, match="nleep: the train features are constant"):
        NLeep().score(MetricInput(np.ones((10, 3)), labels, every_row(labels)))


def test_a_class_with_one_train_row_is_left_out_of_the_calibration_only() -> None:
    features, labels = class_structured(60, 8, 3, seed=9)
    labels = labels.copy()
    labels[0] = 3  # a fourth class with a single row: no other fold can predict it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = NLeep().score(MetricInput(features, labels, every_row(labels), seed=0))
    assert np.isfinite(value) and value < 0


# ------------------------------------------------------------------------------------ public references


def reference_nleep(features: np.ndarray, labels: np.ndarray, reference: str) -> tuple[float, np.ndarray]:
    """A public reference's N-LEEP, re-implemented after its code: (score, posterior).

    "sfda", TencentARC/SFDA `metrics.NLEEP`: PCA(n_components=0.8) (scikit-learn's "auto" solver),
    GaussianMixture(5C) with scikit-learn's defaults - full covariances, an absolute reg_covar of
    1e-6, at most 100 EM iterations, and no seed (seeded here, with 0, so that the test repeats) -
    and LEEP without the log: the mean expected probability.
    "stable_transfer", google-research `stable_transfer/transferability` (`pca_reduction` then
    `nleep.get_nleep_score`): PCA(0.8, svd_solver="full") cast to float32, the same default
    mixture with random_state=123, its posterior cast to float32, LEEP with the log (a row whose
    expected probability is 0 counts as -log C).
    """
    n, n_classes = len(labels), int(labels.max()) + 1
    if reference == "sfda":
        scores = PCA(n_components=0.8).fit_transform(features)
        theta = GaussianMixture(n_components=5 * n_classes, random_state=0).fit(scores).predict_proba(scores)
    else:
        scores = PCA(n_components=0.8, svd_solver="full").fit_transform(features).astype(np.float32)
        mixture = GaussianMixture(n_components=5 * n_classes, random_state=123).fit(scores)
        theta = mixture.predict_proba(scores).astype(np.float32)
    joint = np.zeros((n_classes, theta.shape[1]))
    for j in range(n):
        joint[labels[j]] += theta[j] / n
    conditional = joint / joint.sum(axis=0)
    expected = np.array([theta[j] @ conditional[labels[j]] for j in range(n)])
    if reference == "sfda":
        return float(expected.mean()), theta
    logs = [math.log(e) if e > 0 else -math.log(n_classes) for e in expected]
    return float(np.mean(logs)), theta


def test_the_references_full_covariance_mixture_is_one_hot_and_scores_noise_above_the_floor() -> None:
    # 26 PCA dimensions, 30 components of 20 rows each: every full covariance is singular
    # but for reg_covar, and the posterior is one-hot for features and noise alike.
    features, labels = class_structured(600, 64, 6, seed=10)
    noise = noise_like(features, seed=11)
    floor = -label_entropy(labels)
    ours_real = nleep_fit(features, labels, 6, seed=0)
    ours_noise = nleep_fit(noise, labels, 6, seed=0)
    ref_real, theta_real = reference_nleep(features, labels, "stable_transfer")
    ref_noise, theta_noise = reference_nleep(noise, labels, "stable_transfer")
    assert theta_real.max(axis=1).mean() > 0.999 and theta_noise.max(axis=1).mean() > 0.999
    assert ref_noise > floor + 0.1  # in-sample P(y | z) of one-hot clusters: noise looks informative
    assert ours_noise.score == pytest.approx(floor, abs=0.01)
    assert ours_real.posterior.max(axis=1).mean() < 0.95
    assert ref_real > floor + 0.3 and ours_real.score > floor + 0.3  # both see the class structure
    # SFDA returns the mean expected probability, not the mean of its log: a value in (0, 1] where
    # LEEP is <= 0, and above exp(LEEP) of the same posterior (Jensen).
    sfda, theta_sfda = reference_nleep(features, labels, "sfda")
    with_log = leep(theta_sfda.astype(np.float64), labels, 6)
    assert 0 < sfda <= 1 and sfda > math.exp(with_log)
