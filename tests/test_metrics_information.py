"""TransRate, PACTran, ETran and PARC against hand evaluations of their formulas, against
re-implementations of their public reference code, and their properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata, spearmanr

import hubindex.plugins
import hubindex_plugins.metrics_information as info
from hubindex.types import TARGET_MULTI_LABEL, TARGET_REGRESSION, MetricInput, MetricNotApplicable
from hubindex_plugins.metrics_information import (
    ETran,
    PacTran,
    Parc,
    TransRate,
    average_ranks,
    coding_rate,
    energy_score,
    lda_score,
    pactran_gaussian,
    transrate_rows,
)
from test_metrics import blobs, every_row


def score(metric: type, features: np.ndarray, labels: np.ndarray, **kwargs: object) -> float:
    return metric().score(MetricInput(features, labels, every_row(labels), **kwargs))


def det2(m: np.ndarray) -> float:
    return float(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])


def inverse2(m: np.ndarray) -> np.ndarray:
    return np.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]]) / det2(m)


def test_registry_lists_the_four_metrics() -> None:
    registered = hubindex.plugins.metrics()
    for name in ("transrate", "pactran", "etran", "parc"):
        component = registered[name].component
        assert component.version == "1"
        assert component.description and "\n" not in component.description
    assert registered["pactran"].component.higher_is_better is False
    assert all(registered[name].component.higher_is_better for name in ("transrate", "etran", "parc"))
    assert registered["parc"].component.targets == {"classification", "multi-label", "regression"}
    assert registered["transrate"].component.targets == {"classification"}


# ------------------------------------------------------------------------------------ transrate


FEATURES_7x2 = np.array([[2.0, 1.0], [1.5, -0.5], [3.0, 0.2], [0.1, 2.0], [-1.0, 0.5], [-0.4, -2.0], [0.7, 0.9]])
LABELS_7 = np.array([0, 0, 0, 0, 1, 1, 1])


def test_transrate_matches_the_formula_by_hand() -> None:
    eps2 = 1e-4
    rows = [r / math.hypot(*r) for r in FEATURES_7x2]  # unit rows
    mean = sum(rows) / 7
    z = np.array([(r - mean) / math.hypot(*(r - mean)) for r in rows])  # centred, unit again

    def rate(block: np.ndarray) -> float:
        n = len(block)
        scatter = sum(np.outer(r, r) for r in block)  # Z^T Z, 2 x 2
        return 0.5 * math.log(det2(np.eye(2) + scatter / (n * eps2)))

    expected = rate(z) - (4 / 7) * rate(z[:4]) - (3 / 7) * rate(z[4:])  # n_c / n weights, n_c inside
    assert score(TransRate, FEATURES_7x2, LABELS_7) == pytest.approx(expected, rel=1e-12)
    assert info.TRANSRATE_EPS2 == eps2


def listing_transrate(features: np.ndarray, labels: np.ndarray, eps: float = 1e-4) -> float:
    """The paper's 10-line listing (as in thuml tllib ranking/transrate.py): centring only, 1/(n eps),
    classes averaged with weight 1/C."""
    def rate(z: np.ndarray) -> float:
        n, d = z.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]

    z = features - features.mean(axis=0)
    classes = int(labels.max()) + 1
    return rate(z) - sum(rate(z[labels == c]) for c in range(classes)) / classes


def symmetric_unit_rows(half: int, d: int, seed: int) -> np.ndarray:
    """Rows U and -U with |u| = 1: normalising, centring and normalising again leaves them as they are."""
    u = np.random.default_rng(seed).normal(size=(half, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return np.concatenate([u, -u])


def test_transrate_against_the_paper_listing() -> None:
    features = symmetric_unit_rows(12, 5, seed=1)
    assert np.allclose(transrate_rows(features), features)
    balanced = np.arange(24) % 3
    # Same value when classes are balanced (n_c / n = 1 / C) and the rows are already normalised.
    assert score(TransRate, features, balanced) == pytest.approx(listing_transrate(features, balanced), rel=1e-10)
    # Imbalanced classes: the listing's 1/C weights differ from the paper's n_c / n by exactly
    # sum_c (n_c / n - 1 / C) R(Z_c).
    imbalanced = np.array([0] * 14 + [1] * 6 + [2] * 4)
    rates = [coding_rate(features[imbalanced == c]) for c in range(3)]
    gap = sum((np.sum(imbalanced == c) / 24 - 1 / 3) * rates[c] for c in range(3))
    ours = score(TransRate, features, imbalanced)
    assert listing_transrate(features, imbalanced) - ours == pytest.approx(gap, rel=1e-9)
    assert abs(gap) > 0.5
    # Scale: the listing's value moves with the feature scale, this one does not.
    assert listing_transrate(10 * features, balanced) > listing_transrate(features, balanced) + 1.0
    assert score(TransRate, 10 * features, balanced) == pytest.approx(score(TransRate, features, balanced), rel=1e-12)


def repository_transrate(features: np.ndarray, labels: np.ndarray, eps: float) -> float:
    """Long-Kai/TransRate, non-projected path: unit rows at extraction, centring, unit rows again
    (pre_transrate), eigenvalues of Z^T Z / n and Z_c^T Z_c / n_c, then process_transrate_logs as its
    non-projected source-selection run calls it (normalize_eigz=True: eigenvalues divided by their
    sum) with its defaults ('all' eigenvalues, 'weight' residuals - no-ops here - and both rates
    divided by rank(Z^T Z / n))."""
    z = features / np.linalg.norm(features, axis=1, keepdims=True)
    z = z - z.mean(axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    total = z.T @ z / n
    eig = np.linalg.svd(total, compute_uv=False)
    rank = np.linalg.matrix_rank(total)
    scale = eig.sum()
    rz = np.sum(np.log(1 + eig / scale / eps)) / rank
    rzc = 0.0
    for c in range(int(labels.max()) + 1):
        zc = z[labels == c]
        eig_c = np.linalg.svd(zc.T @ zc / len(zc), compute_uv=False)
        rzc += np.sum(np.log(1 + eig_c / scale / eps)) / rank * len(zc) / n
    return rz / 2 - rzc / 2


def test_transrate_against_the_repository_pipeline() -> None:
    features, labels = blobs(15, 3, 6, spread=0.7, seed=2)
    features = features + 3.0  # not centred: the normalisations matter
    labels = labels[np.r_[0:40, 44:45]]  # imbalanced: 15, 15, 11
    features = features[np.r_[0:40, 44:45]]
    rank = np.linalg.matrix_rank(transrate_rows(features))
    assert rank == 6
    # The repository divides both rates by rank(Z); otherwise it computes the same quantity.
    assert score(TransRate, features, labels) == pytest.approx(rank * repository_transrate(features, labels, 1e-4),
                                                               rel=1e-9)


def test_transrate_is_higher_for_separated_classes() -> None:
    separated, labels = blobs(30, 4, 10, spread=2.0, seed=3)
    noise, _ = blobs(30, 4, 10, spread=0.0, seed=3)
    assert score(TransRate, separated, labels) > score(TransRate, noise, labels) + 1.0


def test_transrate_invariances() -> None:
    features, labels = blobs(12, 3, 8, spread=0.8, seed=4)
    value = score(TransRate, features, labels)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    # Rows are scaled to unit norm before centring (as the repository does): a shift is not invariant.
    assert score(TransRate, features - 1.0, labels) != pytest.approx(value, rel=1e-3)
    assert score(TransRate, features @ rotation * 7.0, labels) == pytest.approx(value, rel=1e-10)
    assert score(TransRate, features, np.array([2, 0, 1])[labels]) == pytest.approx(value, rel=1e-12)
    assert score(TransRate, features, labels) == value  # deterministic


def test_transrate_uses_the_train_rows_and_needs_two_rows_per_class() -> None:
    features, labels = blobs(6, 2, 4, spread=1.0, seed=5)
    train = np.arange(12) % 3 != 0
    assert TransRate().score(MetricInput(features, labels, train)) == pytest.approx(
        score(TransRate, features[train], labels[train]))
    with pytest.raises(MetricNotApplicable, match="transrate: needs at least 2 train rows in every class"):
        score(TransRate, features[:7], labels[:7])  # class 1 has one row


# ------------------------------------------------------------------------------------ pactran


def test_pactran_matches_the_bound_by_hand() -> None:
    x = np.array([[1.0, 2.0], [2.0, 0.5], [0.0, 1.0], [3.0, 3.0], [-1.0, 0.0], [0.5, -1.0], [-2.0, 1.5], [1.0, -0.5]])
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    n, d, k = 8, 2, 3
    lam, s = 0.1, 10.0
    mean = x.sum(axis=0) / n
    xc = x - mean
    ridge = lam * n  # beta sigma0^2
    sigma0_2 = s / d
    beta = ridge / sigma0_2

    def rer(theta: np.ndarray) -> float:
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        total = 0.0
        for i in range(n):
            logits = [sum(xc[i, j] * w[j, c] for j in range(d)) + b[c] for c in range(k)]
            total += -logits[y[i]] + math.log(sum(math.exp(v) for v in logits))
        return total / n + sum(w[j, c] ** 2 for j in range(d) for c in range(k)) / (2 * ridge)

    optimum = minimize(rer, np.zeros(d * k + k), method="BFGS", options={"gtol": 1e-11}).x
    w, b = optimum[: d * k].reshape(d, k), optimum[d * k:]
    trace = 0.0  # sum over weights W_jc of the mean cross-entropy's second derivative
    for j in range(d):
        for c in range(k):
            for i in range(n):
                p = softmax(xc[i] @ w + b)
                trace += xc[i, j] ** 2 * p[c] * (1 - p[c]) / n
    expected = rer(optimum) + d * k / (2 * beta) * math.log(1 + beta * sigma0_2 * trace / (d * k))
    fit = pactran_gaussian(x, y, 3, seed=0)
    assert fit.converged
    # Both optima come from iterative solvers (gradient tolerances 1e-9 and 1e-11): they agree to ~1e-9.
    assert fit.risk == pytest.approx(rer(optimum), rel=1e-9)
    assert fit.hessian_trace == pytest.approx(trace, rel=1e-6)
    assert fit.bound == pytest.approx(expected, rel=1e-7)
    assert score(PacTran, x, y) == fit.bound


def reference_pac_gauss(features: np.ndarray, labels: np.ndarray, lda_factor: float, s2_factor: float,
                        seed: int) -> tuple[float, float, np.ndarray]:
    """google-research/pactran_metrics calculate_pac_gauss (2022-07-17 release: centred features),
    for one (lda_factor, s2_factor): (pac_gauss, pac_opt, theta)."""
    classes = int(labels.max()) + 1
    onehot = np.eye(classes)[labels]
    x = features - features.mean(axis=0)
    n, d = x.shape
    kd = d * classes
    ldas2 = lda_factor * n

    def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = theta.reshape(d + 1, classes)
        return theta[:d], theta[d:]

    def loss(theta: np.ndarray) -> float:
        w, b = split(theta)
        log_q = (x @ w + b) - logsumexp(x @ w + b, axis=1, keepdims=True)
        return np.sum(onehot * (np.log(onehot + 1e-10) - log_q)) / n + 0.5 * np.sum(w**2) / ldas2

    def gradient(theta: np.ndarray) -> np.ndarray:
        w, b = split(theta)
        g = (softmax(x @ w + b, axis=1) - onehot) / n
        return np.concatenate([x.T @ g + w / ldas2, g.sum(axis=0, keepdims=True)]).ravel()

    start = np.concatenate([np.random.default_rng(seed).normal(size=(d, classes)) * 0.03,
                            np.zeros((1, classes))]).ravel()
    theta = minimize(loss, start, method="L-BFGS-B", jac=gradient, options={"maxiter": 100}, tol=1e-6).x
    pac_opt = loss(theta)
    w, b = split(theta)
    p = softmax(x @ w + b, axis=1)
    h_w = (x**2).T @ (p - p**2) + 1 / ldas2  # no 1/n: the summed loss's curvature
    h_b = (p - p**2).sum(axis=0)  # bias curvature, averaged in with the weights'
    sigma2_inv = (h_w.sum() + h_b.sum()) * ldas2 / kd + 1e-10
    return pac_opt + 0.5 * kd / ldas2 * (s2_factor / d) * np.log(sigma2_inv), pac_opt, theta


def test_pactran_against_the_reference() -> None:
    features, labels = blobs(20, 3, 6, spread=0.6, seed=6)
    n, d, k = 60, 6, 3
    reference, pac_opt, _ = reference_pac_gauss(features, labels, lda_factor=0.1, s2_factor=10.0, seed=1)
    fit = pactran_gaussian(features, labels, 3, seed=0)
    # The same optimum: the reference stops at tol 1e-6 (and adds 1e-10 log(1 + 1e-10) per row).
    assert fit.risk == pytest.approx(pac_opt, rel=1e-5)
    # The bounds differ only in the log's argument: the reference's Hessian is n times ours (no
    # 1/n) plus the bias curvature.
    x = features - features.mean(axis=0)
    p = softmax(x @ fit.weights + fit.bias, axis=1)
    ridge = 0.1 * n
    ours_arg = 1 + ridge * fit.hessian_trace / (d * k)
    reference_arg = 1 + ridge * (n * fit.hessian_trace + np.sum(p * (1 - p))) / (d * k)
    coefficient = 0.5 * d * k / ridge * (10.0 / d)
    assert reference - fit.bound == pytest.approx(coefficient * (np.log(reference_arg) - np.log(ours_arg)), rel=1e-4)
    assert reference - fit.bound > 5.0  # here 11.43 against 2.48: the factor n inside the log dominates


def test_pactran_is_lower_for_separated_classes() -> None:
    separated, labels = blobs(25, 4, 8, spread=1.5, seed=7)
    noise, _ = blobs(25, 4, 8, spread=0.0, seed=7)
    assert score(PacTran, separated, labels) < score(PacTran, noise, labels) - 0.3


def test_pactran_is_seeded_and_label_permutation_invariant() -> None:
    features, labels = blobs(15, 3, 10, spread=0.5, seed=8)
    value = score(PacTran, features, labels, seed=5)
    assert score(PacTran, features, labels, seed=5) == value
    assert score(PacTran, features, labels, seed=6) == pytest.approx(value, rel=1e-7)  # only the start differs
    assert score(PacTran, features, np.array([1, 2, 0])[labels], seed=5) == pytest.approx(value, rel=1e-7)


def test_pactran_warns_when_lbfgs_does_not_converge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(info, "PACTRAN_MAX_ITER", 2)
    features, labels = blobs(15, 3, 10, spread=0.5, seed=8)
    with pytest.warns(RuntimeWarning, match="pactran: L-BFGS stopped before converging"):
        score(PacTran, features, labels)


def test_pactran_needs_two_rows_per_class() -> None:
    features, labels = blobs(3, 2, 4, spread=1.0, seed=9)
    with pytest.raises(MetricNotApplicable, match="pactran: needs at least 2 train rows"):
        score(PacTran, features[:4], labels[:4])


# ------------------------------------------------------------------------------------ etran


def test_etran_matches_the_formula_by_hand() -> None:
    x = 0.1 * np.array([[1.0, 2.0], [2.0, 0.5], [0.0, 1.0], [1.5, 1.0], [-1.0, 0.0], [0.5, -1.0], [-2.0, 1.5]])
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    n, d = 7, 2
    energies = sorted(math.log(sum(math.exp(v) for v in row)) for row in x)
    s_en = energies[0]  # max(1, floor(5 * 7 / 1000)) = 1 row
    priors = [4 / 7, 3 / 7]
    means = [x[y == c].mean(axis=0) for c in (0, 1)]
    s_w = sum(np.outer(x[i] - means[y[i]], x[i] - means[y[i]]) for i in range(n)) / n
    trace = s_w[0, 0] + s_w[1, 1]
    largest = trace / 2 + math.sqrt((s_w[0, 0] - s_w[1, 1]) ** 2 / 4 + s_w[0, 1] ** 2)
    a = max(math.exp(-5 * largest), 1e-10)
    inverse = inverse2((1 - a) * s_w + a * trace / d * np.eye(2))
    s_cls = 0.0
    for i in range(n):
        logits = [x[i] @ inverse @ means[c] - 0.5 * means[c] @ inverse @ means[c] + math.log(priors[c]) for c in (0, 1)]
        s_cls += math.exp(logits[y[i]]) / (math.exp(logits[0]) + math.exp(logits[1])) / n
    assert 1e-10 < a < 1  # the shrinkage is active at this scale
    assert energy_score(x) == pytest.approx(s_en, rel=1e-12)
    assert lda_score(x, y, 2) == pytest.approx(s_cls, rel=1e-10)
    assert score(ETran, x, y) == pytest.approx(s_en + s_cls, rel=1e-12)


def direct_lda(x: np.ndarray, y: np.ndarray) -> float:
    """Dense LDA posterior with the shrunk within-class covariance inverted explicitly."""
    n, d = x.shape
    classes = int(y.max()) + 1
    means = np.array([x[y == c].mean(axis=0) for c in range(classes)])
    priors = np.bincount(y) / n
    s_w = sum(priors[c] * np.cov(x[y == c].T, bias=True) for c in range(classes))
    a = max(np.exp(-5 * np.linalg.eigvalsh(s_w)[-1]), 1e-10)
    inverse = np.linalg.inv((1 - a) * s_w + a * np.trace(s_w) / d * np.eye(d))
    logits = x @ inverse @ means.T - 0.5 * np.einsum("cd,de,ce->c", means, inverse, means) + np.log(priors)
    return float(np.mean(softmax(logits, axis=1)[np.arange(n), y]))


@pytest.mark.parametrize(("per_class", "d"), [(20, 6), (4, 30)], ids=["n>d", "n<d"])
def test_etran_lda_is_the_dense_formula(per_class: int, d: int) -> None:
    features, labels = blobs(per_class, 3, d, spread=0.3, seed=10)
    features *= 0.2  # a shrinkage well above its 1e-10 floor keeps the explicit inverse accurate
    assert lda_score(features, labels, 3) == pytest.approx(direct_lda(features, labels), rel=1e-8)


def test_etran_energy_averages_the_lowest_half_percent() -> None:
    features = np.random.default_rng(11).normal(size=(450, 5))
    energies = np.sort(logsumexp(features, axis=1))
    assert energy_score(features) == pytest.approx(energies[:2].mean(), rel=1e-12)  # floor(5 * 450 / 1000) = 2


def reference_etran(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """mgholamikn/ETran metrics.py: (Energy_Score(x, 0.5, 'bot'), LDA_Score(x, y))."""
    n, d = x.shape
    energies = logsumexp(x, axis=1)
    chosen = np.argsort(energies)[: int(0.5 * 10) * n // 1000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an empty slice below 200 rows
        s_en = float(np.mean(energies[chosen]))
    classes = int(y.max()) + 1
    priors = np.bincount(y) / n
    means = np.array([x[y == c].mean(axis=0) for c in range(classes)])
    s_w = sum(priors[c] * np.cov(x[y == c].T, bias=True) for c in range(classes))
    v = s_w.sum(axis=1)  # three power-iteration steps for the largest eigenvalue
    for _ in range(3):
        u = s_w @ v / np.linalg.norm(s_w @ v)
        v = s_w @ u / np.linalg.norm(s_w @ u)
    a = max(np.exp(-5 * (v @ s_w @ u)), 1e-10)

    def shrunk(cov: np.ndarray) -> np.ndarray:
        return (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)

    s_b = shrunk(np.cov(x.T, bias=True)) - shrunk(s_w)
    values, vectors = np.linalg.eigh(np.linalg.inv(shrunk(s_w)) @ s_b)  # eigh of a non-symmetric matrix
    vectors = vectors[:, np.argsort(values)[::-1]]
    coef = means @ vectors @ vectors.T
    intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
    probs = softmax(x @ coef.T + intercept, axis=1)
    return s_en, float(np.mean(probs[np.arange(n), y]))


def test_etran_against_the_reference() -> None:
    features, labels = blobs(70, 3, 5, spread=0.4, seed=12)
    features = 0.5 * features @ np.diag([1.0, 3.0, 0.3, 1.0, 2.0])  # a covariance far from I
    s_en, s_cls = reference_etran(features, labels)
    assert s_en == pytest.approx(energy_score(features), rel=1e-12)  # 210 rows: the same lowest row
    # The reference's LDA is the identity-covariance posterior: eigh returns an orthonormal V and
    # means V V^T = means, whatever the covariance.
    identity = -0.5 * ((features[:, None, :] - np.array([features[labels == c].mean(axis=0) for c in range(3)])) ** 2)
    identity = identity.sum(axis=2) + np.log(np.bincount(labels) / 210)
    assert s_cls == pytest.approx(np.mean(softmax(identity, axis=1)[np.arange(210), labels]), rel=1e-8)
    ours = lda_score(features, labels, 3)
    assert abs(ours - s_cls) > 0.05  # here 0.518 against 0.434
    # Below 200 rows the reference's energy averages no rows at all.
    assert math.isnan(reference_etran(features[:150], labels[:150])[0])
    assert np.isfinite(score(ETran, features[:150], labels[:150]))


def test_etran_prefers_true_labels_and_is_label_permutation_invariant() -> None:
    features, labels = blobs(25, 4, 6, spread=1.0, seed=13)
    shuffled = np.random.default_rng(13).permutation(labels)
    value = score(ETran, features, labels)
    assert value > score(ETran, features, shuffled) + 0.2  # the same energy, a worse LDA score
    assert score(ETran, features, np.array([3, 1, 0, 2])[labels]) == pytest.approx(value, rel=1e-10)
    assert score(ETran, features, labels, seed=1) == score(ETran, features, labels, seed=2)  # no randomness
    noise, _ = blobs(25, 4, 6, spread=0.0, seed=13)
    assert lda_score(features, labels, 4) > lda_score(noise, labels, 4) + 0.2


def test_etran_is_not_applicable_without_spread_or_rows() -> None:
    labels = np.array([0, 0, 1, 1])
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    with pytest.raises(MetricNotApplicable, match="etran: every train row equals its class mean"):
        score(ETran, features, labels)
    with pytest.raises(MetricNotApplicable, match="etran: needs at least 2 train rows"):
        score(ETran, features[:3], labels[:3])


# ------------------------------------------------------------------------------------ parc


def test_parc_matches_the_formula_by_hand() -> None:
    x = np.array([[1.0, 2.0, 0.5], [2.0, 0.5, 1.0], [0.0, 1.0, -1.0], [3.0, 3.0, 0.0], [-1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    y = np.array([0, 0, 1, 1, 2, 2])
    n = 6
    xc = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(xc.T @ xc)  # d = 3 < 32: every component, largest first
    vectors = vectors[:, ::-1]
    for k in range(3):  # scikit-learn's sign: the largest loading positive
        vectors[:, k] *= np.sign(vectors[np.argmax(np.abs(vectors[:, k])), k])
    z = xc @ vectors
    z /= z.std(axis=0)
    onehot = np.eye(3)[y]

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        num = sum((ai - ma) * (bi - mb) for ai, bi in zip(a, b))
        return num / math.sqrt(sum((ai - ma) ** 2 for ai in a) * sum((bi - mb) ** 2 for bi in b))

    d_f = [1 - pearson(z[i], z[j]) for i in range(n) for j in range(i + 1, n)]
    d_y = [1 - pearson(onehot[i], onehot[j]) for i in range(n) for j in range(i + 1, n)]
    assert score(Parc, x, y) == pytest.approx(spearmanr(d_f, d_y)[0], rel=1e-10)


def reference_parc(features: np.ndarray, labels: np.ndarray, solver: str = "randomized") -> float:
    """dbolya/parc methods.py PARC(n_dims=32): PCA (randomized, random_state 1919, one power
    iteration), StandardScaler, 1 - np.corrcoef of rows, upper triangles, 100 * Spearman."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    dims = min(32, features.shape[0])
    reduced = PCA(n_components=dims, svd_solver=solver, random_state=1919, iterated_power=1).fit_transform(features)
    reduced = StandardScaler().fit_transform(reduced)
    targets = np.eye(int(labels.max()) + 1)[labels] if labels.ndim == 1 else labels
    upper = np.triu_indices(len(features), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant rows
        return 100 * spearmanr((1 - np.corrcoef(reduced))[upper], (1 - np.corrcoef(targets))[upper])[0]


def test_parc_against_the_reference() -> None:
    features, labels = blobs(15, 4, 48, spread=0.4, seed=14)
    ours = score(Parc, features, labels)
    # With an exact PCA the reference computes the same number, times 100.
    assert 100 * ours == pytest.approx(reference_parc(features, labels, solver="full"), rel=1e-9)
    # Its randomized PCA (one power iteration) only approximates the top 32 components.
    approximate = reference_parc(features, labels)
    assert approximate != pytest.approx(100 * ours, rel=1e-6)
    assert abs(approximate - 100 * ours) < 5.0


def test_parc_reference_pitfalls() -> None:
    rng = np.random.default_rng(15)
    labels = np.repeat(np.arange(3), 20)
    low_rank = rng.normal(size=(3, 5))[labels] + 0.3 * rng.normal(size=(60, 5))
    features = low_rank @ rng.normal(size=(5, 40))  # rank 5 in 40 dimensions
    ours = score(Parc, features, labels)
    # The reference standardises 27 components of rounding noise to unit variance; they swamp the
    # signal (here rho 0.55 against 0.15).
    assert ours > 0.5
    assert abs(reference_parc(features, labels, solver="full")) / 100 < ours - 0.3
    with pytest.raises(ValueError):  # fewer than 32 dimensions
        reference_parc(features[:, :10], labels)
    assert np.isfinite(score(Parc, features[:, :10], labels))
    # A multi-label row with no label has no correlation: NaN in the reference.
    multi = np.eye(3)[labels]
    multi[0] = 0
    assert math.isnan(reference_parc(features, multi, solver="full"))
    value = Parc().score(MetricInput(features, multi, every_row(labels), target=TARGET_MULTI_LABEL))
    assert np.isfinite(value) and value > 0.5


def test_parc_constant_rows_convention() -> None:
    rows = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    pairs = info.pair_dissimilarities(rows, "pearson")
    expected = []
    for i in range(5):
        for j in range(i + 1, 5):
            if i in (0, 2, 3) or j in (0, 2, 3):  # constant rows: 0 0 0 twice, 1 1 1 once
                expected.append(0.0 if (rows[i] == rows[j]).all() else 1.0)
            else:
                expected.append(1 - np.corrcoef(rows[i], rows[j])[0, 1])
    assert pairs == pytest.approx(expected, abs=1e-12)


def test_parc_is_higher_for_separated_classes_and_invariant() -> None:
    separated, labels = blobs(15, 4, 40, spread=1.0, seed=16)
    noise, _ = blobs(15, 4, 40, spread=0.0, seed=16)
    value = score(Parc, separated, labels)
    assert value > score(Parc, noise, labels) + 0.1
    assert score(Parc, separated, np.array([2, 3, 0, 1])[labels]) == pytest.approx(value, rel=1e-12)
    assert score(Parc, 5.0 * separated + 2.0, labels) == pytest.approx(value, rel=1e-9)
    assert -1.0 <= value <= 1.0


def test_parc_regression_and_multi_label() -> None:
    rng = np.random.default_rng(17)
    n = 80
    signal = rng.normal(size=(n, 2))
    # Few noise dimensions: PARC standardises every principal component, noise ones included.
    features = np.concatenate([signal, 0.5 * rng.normal(size=(n, 4))], axis=1) @ rng.normal(size=(6, 6))
    target = signal[:, :1] * 3.0 + 0.1 * rng.normal(size=(n, 1))

    def regression(values: np.ndarray) -> float:
        return Parc().score(MetricInput(features, values, every_row(values), target=TARGET_REGRESSION))

    value = regression(target)
    assert value > 0.1
    assert abs(regression(rng.normal(size=(n, 1)))) < 0.05
    assert regression(10.0 * target - 4.0) == pytest.approx(value, rel=1e-12)  # per-column standardisation
    two = np.concatenate([target, np.full((n, 1), 7.0)], axis=1)  # a constant column is dropped
    assert regression(two) == pytest.approx(value, rel=1e-12)
    with pytest.raises(MetricNotApplicable, match="parc: every regression target is constant"):
        regression(np.ones((n, 1)))
    multi = (signal[:, :2] > 0).astype(np.int8)
    multi_value = Parc().score(MetricInput(features, multi, every_row(multi), target=TARGET_MULTI_LABEL))
    assert multi_value > 0.1
    with pytest.raises(ValueError, match="parc: multi-label labels must be 0/1"):
        Parc().score(MetricInput(features, 2 * multi, every_row(multi), target=TARGET_MULTI_LABEL))


def test_parc_subsamples_with_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    features, labels = blobs(20, 4, 12, spread=0.6, seed=18)
    monkeypatch.setattr(info, "PARC_MAX_ROWS", 50)
    first = score(Parc, features, labels, seed=3)
    assert score(Parc, features, labels, seed=3) == first
    assert score(Parc, features, labels, seed=4) != first
    rows = np.sort(np.random.default_rng(3).choice(80, 50, replace=False))
    monkeypatch.setattr(info, "PARC_MAX_ROWS", 5_000)
    subset = labels[rows]
    assert score(Parc, features[rows], np.unique(subset, return_inverse=True)[1]) == pytest.approx(first, rel=1e-12)


def test_parc_needs_three_rows_and_varying_labels() -> None:
    features, labels = blobs(1, 2, 5, spread=1.0, seed=19)
    with pytest.raises(MetricNotApplicable, match="parc: needs at least 3 train rows"):
        score(Parc, features, labels)
    multi = np.ones((6, 2), dtype=np.int8)
    with pytest.raises(MetricNotApplicable, match="parc: every pair of train rows has the same label"):
        Parc().score(MetricInput(np.random.default_rng(0).normal(size=(6, 4)), multi, every_row(multi),
                                 target=TARGET_MULTI_LABEL))


@pytest.mark.parametrize("d", [300, 150], ids=["n<d", "n>d"])
def test_lanczos_and_dense_eigenpairs_agree(monkeypatch: pytest.MonkeyPatch, d: int) -> None:
    features, labels = blobs(60, 3, d, spread=0.2, seed=21)
    dense = (score(Parc, features, labels), lda_score(0.05 * features, labels, 3))
    monkeypatch.setattr(info, "DENSE_EIGEN_SIZE", 8)  # ARPACK for the top 32 (PARC) and the top 1 (ETran)
    lanczos = (score(Parc, features, labels), lda_score(0.05 * features, labels, 3))
    assert lanczos == pytest.approx(dense, rel=1e-9)


def test_average_ranks_are_scipy_average_ranks() -> None:
    rng = np.random.default_rng(20)
    for values in (rng.normal(size=3000), rng.integers(0, 6, size=3000).astype(float),
                   np.round(rng.normal(size=9000), 3), np.r_[rng.normal(size=6000), np.zeros(7)]):
        assert np.array_equal(average_ranks(values), rankdata(values))
