"""EMMS against direct evaluations of its formula, a re-implementation of the reference's loop, and
its properties."""

from __future__ import annotations

import numpy as np
import pytest

import hubindex.plugins
from hubindex.types import (
    TARGET_MULTI_LABEL,
    TARGET_REGRESSION,
    MetricInput,
    MetricNotApplicable,
)
from hubindex_plugins.metric_emms import (
    EMMS,
    MISSING_EMBEDDINGS,
    emms_fit,
    emms_inputs,
    simplex_minimum,
)


def score(features: np.ndarray, labels: np.ndarray, embeddings: tuple[np.ndarray, ...] = (), **kw: object) -> float:
    train = kw.pop("train", np.ones(len(labels), dtype=bool))
    return EMMS().score(MetricInput(features=features, labels=labels, train=train, label_embeddings=embeddings, **kw))


def fit(features: np.ndarray, labels: np.ndarray, embeddings: tuple[np.ndarray, ...], seed: int = 0):
    data = MetricInput(features=features, labels=labels, train=np.ones(len(labels), dtype=bool),
                       label_embeddings=embeddings, seed=seed)
    return emms_fit(*emms_inputs(data), seed=seed)


def standardise(a: np.ndarray) -> np.ndarray:
    """Columns centred and divided by their standard deviation (ddof 0); constant columns -> 0."""
    out = np.zeros_like(a, dtype=np.float64)
    for j in range(a.shape[1]):
        column = a[:, j].astype(np.float64)
        spread = np.sqrt(np.mean((column - column.mean()) ** 2))
        if spread > 1e-12 * np.abs(column).max():
            out[:, j] = (column - column.mean()) / spread
    return out


def ols_residual(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return z - x @ np.linalg.lstsq(x, z, rcond=None)[0]


def direct_emms(features: np.ndarray, targets: list[np.ndarray], weights: np.ndarray) -> float:
    """-1/(N D) |X w* - sum_k t_k Z_k|_F^2 at the given t, w* by least squares (standardised X and Z)."""
    x = standardise(features)
    mix = sum(t * standardise(z) for t, z in zip(weights, targets))
    n, width = mix.shape
    return -float(np.sum(ols_residual(x, mix) ** 2)) / (n * width)


def blobs(per_class: int, n_classes: int, d: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    return spread * rng.normal(size=(n_classes, d))[labels] + rng.normal(size=(len(labels), d)), labels


# ------------------------------------------------------------------------------------ the reference's loop


def sparsemax(z: np.ndarray) -> np.ndarray:
    """Euclidean projection of z onto the probability simplex (Martins and Astudillo 2016)."""
    ordered = np.sort(z)[::-1]
    cumulative = np.cumsum(ordered)
    k = np.arange(1, len(z) + 1)
    support = k[1 + k * ordered > cumulative][-1]
    return np.maximum(z - (cumulative[support - 1] - 1) / support, 0.0)


def reference_emms(features: np.ndarray, stacked: np.ndarray) -> float:
    """The reference's EMMS(Z, Y), re-implemented: Y (N, D2, K) stacked encoder targets.

    Its steps: standardise with std + 1e-8; t = 1/K; ONE round of w = lstsq(x, Y t), then
    t = sparsemax(lstsq(Y as (N D2, K), x w)); residual between that first w and the new t;
    `np.sum(...) / N*D2`, which is (sum / N) * D2.
    """
    y = stacked.astype(np.float64).copy()
    n, width, k = y.shape
    for i in range(k):
        y[:, :, i] = (y[:, :, i] - y[:, :, i].mean(axis=0)) / (y[:, :, i].std(axis=0) + 1e-8)
    x = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-8)
    t = np.full(k, 1.0 / k)
    w = np.linalg.lstsq(x, y @ t, rcond=None)[0]
    t = np.linalg.lstsq(y.reshape(n * width, k), (x @ w).reshape(n * width), rcond=None)[0]
    t = sparsemax(t)
    residual = np.sum((x @ w - y @ t) ** 2)
    return -(residual / n * width)


def alternating(features: np.ndarray, targets: list[np.ndarray], exact: bool, rounds: int = 2000) -> tuple[float, np.ndarray]:
    """Alternating minimisation run until the objective stops moving: w by least squares, then t by
    projected gradient to the simplex-constrained optimum (exact) or by sparsemax of the
    unconstrained least squares (the reference's step). Returns (-objective / (N D), t)."""
    x = standardise(features)
    zs = np.stack([standardise(z) for z in targets], axis=2)
    n, width, k = zs.shape
    flat = zs.reshape(n * width, k)
    t = np.full(k, 1.0 / k)
    previous = np.inf
    for _ in range(rounds):
        fitted = (x @ np.linalg.lstsq(x, zs @ t, rcond=None)[0]).reshape(n * width)
        if exact:
            hessian, linear = flat.T @ flat, flat.T @ fitted
            step = 1.0 / np.linalg.eigvalsh(hessian)[-1]
            for _ in range(5000):
                t = sparsemax(t - step * (hessian @ t - linear))
        else:
            t = sparsemax(np.linalg.lstsq(flat, fitted, rcond=None)[0])
        value = float(np.sum(ols_residual(x, zs @ t) ** 2)) / (n * width)
        if previous - value <= 1e-15:
            break
        previous = value
    return -value, t


def three_encoders(seed: int, n: int = 240, d: int = 12, n_classes: int = 6, width: int = 5):
    """Classes in features (weak signal), three random encoders of one width."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    features = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(n_classes, d))[labels]
    embeddings = tuple(rng.normal(size=(n_classes, width)) for _ in range(3))
    return features, labels, embeddings


# ------------------------------------------------------------------------------------ registry


def test_registered_for_every_target_kind() -> None:
    component = hubindex.plugins.metrics()["emms"].component
    assert component is EMMS
    assert component.version == "1" and component.higher_is_better
    # The core passes label embeddings for classification and multi-label tasks, none for regression.
    assert component.needs == {"label-embeddings"}
    assert component.targets == {"classification", "multi-label", "regression"}


# ------------------------------------------------------------------------------------ the formula


def test_one_encoder_is_ordinary_least_squares_on_a_hand_made_case() -> None:
    # 8 rows, 2 features, 3 classes, one 2-wide label encoder: t = 1, so EMMS is the residual of
    # an OLS fit with intercept of the standardised class embeddings, per entry.
    features = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 2.0], [0.5, 3.0],
                         [3.0, 1.0], [1.5, 2.5], [2.5, 0.0], [1.0, 1.0]])
    labels = np.array([0, 0, 1, 1, 2, 2, 1, 0])
    embedding = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    targets = embedding[labels]
    # Standardise by hand, with an explicit intercept instead of centring the features.
    z = np.empty_like(targets)
    for j in range(2):
        mean = sum(targets[i, j] for i in range(8)) / 8
        sd = np.sqrt(sum((targets[i, j] - mean) ** 2 for i in range(8)) / 8)
        z[:, j] = (targets[:, j] - mean) / sd
    design = np.column_stack([np.ones(8), features])
    w, *_ = np.linalg.lstsq(design, z, rcond=None)
    residual = sum((z[i, j] - design[i] @ w[:, j]) ** 2 for i in range(8) for j in range(2))
    expected = -residual / (8 * 2)
    assert score(features, labels, (embedding,)) == pytest.approx(expected, rel=1e-10)
    assert -1 < expected < 0
    # The same from standardised features (the reference's form).
    assert direct_emms(features, [targets], np.ones(1)) == pytest.approx(expected, rel=1e-10)


def test_two_encoders_take_the_closed_form_simplex_weights() -> None:
    # K = 2: t = (s, 1 - s), objective s^2 g11 + 2 s (1 - s) g12 + (1 - s)^2 g22, minimised on [0, 1]
    # at s = clip((g22 - g12) / (g11 + g22 - 2 g12), 0, 1).
    features, labels, embeddings = three_encoders(seed=3)
    pair = embeddings[:2]
    x = standardise(features)
    r = [ols_residual(x, standardise(e[labels])) for e in pair]
    g = np.array([[np.sum(a * b) for b in r] for a in r]) / (len(labels) * 5)
    s = float(np.clip((g[1, 1] - g[0, 1]) / (g[0, 0] + g[1, 1] - 2 * g[0, 1]), 0.0, 1.0))
    assert 0.05 < s < 0.95  # an interior optimum here
    result = fit(features, labels, pair)
    np.testing.assert_allclose(result.gram, g, rtol=1e-9)
    np.testing.assert_allclose(result.weights, [s, 1 - s], rtol=1e-8)
    assert result.score == pytest.approx(direct_emms(features, [e[labels] for e in pair], np.array([s, 1 - s])), rel=1e-9)
    # Any other weights leave a larger residual (a lower score).
    for other in (0.0, 0.5, 1.0, s + 0.05, s - 0.05):
        assert direct_emms(features, [e[labels] for e in pair], np.array([other, 1 - other])) < result.score


def test_features_that_predict_one_encoder_put_all_weight_on_it() -> None:
    # Encoder 0's embedding of the class is itself the features: its targets lie in their span
    # (residual 0), so t = (1, 0) and the score is the maximum, 0.
    # (6 classes, 3 columns: the features do not span every function of the class.)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 60)
    first, second = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    features = np.column_stack([first[labels], rng.normal(size=(60, 2))])
    result = fit(features, labels, (first, second))
    np.testing.assert_allclose(result.weights, [1.0, 0.0], atol=1e-12)
    assert result.score == pytest.approx(0.0, abs=1e-12)
    assert fit(features, labels, (second, first)).weights == pytest.approx([0.0, 1.0], abs=1e-12)


def test_simplex_minimum_of_hand_made_quadratics() -> None:
    # Independent residuals: t_k proportional to 1 / g_k, minimum 1 / sum(1 / g_k).
    g = np.diag([1.0, 2.0, 4.0])
    t = simplex_minimum(g)
    np.testing.assert_allclose(t, np.array([4.0, 2.0, 1.0]) / 7, rtol=1e-12)
    assert t @ g @ t == pytest.approx(4.0 / 7)
    # g12 > g11: the unconstrained optimum s = (g22 - g12) / (g11 + g22 - 2 g12) = 2 lies outside [0, 1].
    np.testing.assert_allclose(simplex_minimum(np.array([[1.0, 2.0], [2.0, 5.0]])), [1.0, 0.0], atol=1e-12)
    # Identical encoders (singular G): every t is optimal; the sparsest wins.
    np.testing.assert_allclose(simplex_minimum(np.ones((3, 3))), [1.0, 0.0, 0.0])
    # Against a fine grid of the 2-simplex on a random PSD matrix.
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    g = a @ a.T
    grid = [(i / 300, j / 300, 1 - (i + j) / 300) for i in range(301) for j in range(301 - i)]
    best = min(np.array(p) @ g @ np.array(p) for p in grid)
    t = simplex_minimum(g)
    assert t.min() >= 0 and t.sum() == pytest.approx(1.0)
    assert best - 1e-3 <= t @ g @ t <= best + 1e-12


# ------------------------------------------------------------------------------------ the reference


def test_one_encoder_matches_the_reference_up_to_its_d2_squared_factor() -> None:
    # With K = 1 sparsemax returns t = 1 and the reference's residual is the OLS one; it divides by
    # N and then multiplies by D2 (`/ N*D2`), so its value is D2^2 = 25 times this one: -11.5854500501
    # against 25 x -0.4634180128. The remaining 2e-8 (relative) is its std + 1e-8, which shrinks
    # targets of standard deviation ~1 by 1e-8.
    features, labels, embeddings = three_encoders(seed=5)
    ours = score(features, labels, embeddings[:1])
    theirs = reference_emms(features, embeddings[0][labels][:, :, None])
    assert theirs == pytest.approx(25 * ours, rel=1e-7)
    assert theirs != pytest.approx(25 * ours, rel=1e-9)
    # Identical encoders too: every t gives the same targets.
    stacked = np.stack([embeddings[0][labels]] * 3, axis=2)
    assert reference_emms(features, stacked) == pytest.approx(25 * score(features, labels, embeddings[:1] * 3), rel=1e-7)


def test_three_encoders_differ_from_the_reference_one_round() -> None:
    features, labels, embeddings = three_encoders(seed=7)
    targets = [e[labels] for e in embeddings]
    result = fit(features, labels, embeddings)
    theirs = reference_emms(features, np.stack(targets, axis=2)) / 25  # its D2 factor removed
    # The reference stops after one round and scores the first w against the second t: a residual
    # above the minimum. Here -0.10912 (t = 0.356, 0.365, 0.278) against -0.11142 (its raw value:
    # -2.7856, 25 times that).
    assert result.score == pytest.approx(-0.10912, abs=1e-5) and theirs == pytest.approx(-0.11142, abs=1e-5)
    np.testing.assert_allclose(result.weights, [0.3563, 0.3652, 0.2784], atol=1e-4)
    # Alternating minimisation with exact steps, run to convergence, reaches the exact minimum.
    value, t = alternating(features, targets, exact=True)
    assert value == pytest.approx(result.score, rel=1e-7)
    np.testing.assert_allclose(t, result.weights, atol=1e-5)
    # With the reference's t-step (sparsemax of the unconstrained fit, which need not sum to 1)
    # iterated to its fixed point it still stops short: -0.11134 at t = (0.359, 0.320, 0.321).
    value, t = alternating(features, targets, exact=False)
    assert value == pytest.approx(-0.11134, abs=1e-5)
    assert value < result.score - 0.002


def test_reference_interpolates_when_rows_do_not_exceed_dimensions() -> None:
    # N <= d: lstsq fits any target exactly and the reference scores 0 for every checkpoint.
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 20)
    embedding = rng.normal(size=(3, 4))
    for features in (rng.normal(size=(20, 30)), np.eye(3)[labels] @ rng.normal(size=(3, 30)) + rng.normal(size=(20, 30))):
        assert reference_emms(features, embedding[labels][:, :, None]) == pytest.approx(0.0, abs=1e-12)
        with pytest.raises(MetricNotApplicable, match="emms: the features .* fit any target"):
            score(features, labels, (embedding,))


# ------------------------------------------------------------------------------------ behaviour


def test_features_that_encode_the_labels_score_higher_than_noise() -> None:
    features, labels = blobs(per_class=40, n_classes=5, d=16, spread=2.0, seed=0)
    noise = np.random.default_rng(1).normal(size=features.shape)
    embeddings = tuple(np.random.default_rng(s).normal(size=(5, 8)) for s in (10, 11))
    good, bad = score(features, labels, embeddings), score(noise, labels, embeddings)
    assert -1 <= bad < good <= 0
    assert good > -0.1
    # Noise features fit 16 of 199 directions: about -(1 - 16 / 199) per encoder, less once mixed.
    assert bad < -0.4


def test_invariances() -> None:
    features, labels, embeddings = three_encoders(seed=11)
    base = score(features, labels, embeddings)
    # Class ids permuted together with the embedding rows.
    perm = np.array([3, 0, 5, 1, 4, 2])
    inverse = np.argsort(perm)
    assert score(features, perm[labels], tuple(e[inverse] for e in embeddings)) == pytest.approx(base, rel=1e-10)
    # Feature units and offsets (per column), and an invertible mixing of the features.
    rng = np.random.default_rng(0)
    scaled = features * rng.uniform(0.001, 1000, size=features.shape[1]) + rng.normal(size=features.shape[1]) * 50
    assert score(scaled, labels, embeddings) == pytest.approx(base, rel=1e-9)
    mixed = features @ rng.normal(size=(12, 12))
    assert score(mixed, labels, embeddings) == pytest.approx(base, rel=1e-8)
    # Embedding units and origin, per encoder and per column; row order; a dead feature column.
    moved = tuple(e * rng.uniform(0.01, 100, size=e.shape[1]) + 7.0 for e in embeddings)
    assert score(features, labels, moved) == pytest.approx(base, rel=1e-9)
    order = rng.permutation(len(labels))
    assert score(features[order], labels[order], embeddings) == pytest.approx(base, rel=1e-10)
    dead = np.column_stack([features, np.full(len(labels), 3.0)])
    assert score(dead, labels, embeddings) == pytest.approx(base, rel=1e-10)


def test_duplicate_and_low_rank_features_match_least_squares() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 30)
    embedding = rng.normal(size=(4, 3))
    # N >= d with a repeated column (pivoted Cholesky path).
    base = rng.normal(size=(30, 5)) + np.eye(4, 5)[labels]
    duplicated = np.column_stack([base, base[:, 0] * 2.0, base[:, 1] + base[:, 2]])
    expected = direct_emms(base, [embedding[labels]], np.ones(1))
    assert score(duplicated, labels, (embedding,)) == pytest.approx(expected, rel=1e-8)
    # N < d, rank 4 (pivoted QR path).
    wide = (base[:, :4]) @ rng.normal(size=(4, 40))
    expected = direct_emms(wide, [embedding[labels]], np.ones(1))
    assert fit(wide, labels, (embedding,)).rank == 4
    assert score(wide, labels, (embedding,)) == pytest.approx(expected, rel=1e-8)


def test_only_train_rows_count() -> None:
    features, labels, embeddings = three_encoders(seed=13)
    train = np.arange(len(labels)) % 3 != 0
    assert score(features, labels, embeddings, train=train) == pytest.approx(
        score(features[train], labels[train], embeddings), rel=1e-12)


def test_encoders_of_different_widths_are_projected_with_the_seed() -> None:
    features, labels, _ = three_encoders(seed=17)
    rng = np.random.default_rng(0)
    embeddings = (rng.normal(size=(6, 4)), rng.normal(size=(6, 9)), rng.normal(size=(6, 7)))
    first = fit(features, labels, embeddings, seed=1)
    assert first.width == 4
    assert fit(features, labels, embeddings, seed=1).score == first.score
    assert fit(features, labels, embeddings, seed=2).score != first.score
    # What the projection is: encoders wider than 4 times a Gaussian drawn in encoder order.
    draw = np.random.default_rng(1)
    projected = [embeddings[0], embeddings[1] @ draw.standard_normal((9, 4)), embeddings[2] @ draw.standard_normal((7, 4))]
    assert first.score == pytest.approx(direct_emms(features, [e[labels] for e in projected], first.weights), rel=1e-9)
    # Equal widths: no randomness, the seed does not matter.
    same = (embeddings[0], embeddings[1][:, :4])
    assert fit(features, labels, same, seed=1).score == fit(features, labels, same, seed=9).score


def test_regression_targets_are_the_labels() -> None:
    rng = np.random.default_rng(6)
    features = rng.normal(size=(80, 5))
    targets = np.column_stack([features @ rng.normal(size=5) + 0.5 * rng.normal(size=80), rng.normal(size=80),
                               np.full(80, 2.0)])  # a constant column: standardised to 0, residual 0
    data = dict(features=features, labels=targets, train=np.ones(80, dtype=bool), target=TARGET_REGRESSION)
    value = EMMS().score(MetricInput(**data))
    # -(1 - mean R^2) over the 3 columns, R^2 of OLS with intercept; the constant column adds 0.
    design = np.column_stack([np.ones(80), features])
    fractions = []
    for j in range(2):
        y = targets[:, j]
        residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        fractions.append(np.sum(residual**2) / np.sum((y - y.mean()) ** 2))
    assert value == pytest.approx(-sum(fractions) / 3, rel=1e-9)
    # Label units do not matter; label embeddings, if any are given, are ignored.
    scaled = MetricInput(**{**data, "labels": targets * [1e-6, 1e6, 3.0]})
    assert EMMS().score(scaled) == pytest.approx(value, rel=1e-9)
    assert EMMS().score(MetricInput(**data, label_embeddings=(np.eye(3),))) == value


def test_multi_label_targets_average_the_positive_classes() -> None:
    rng = np.random.default_rng(8)
    n, n_classes = 90, 4
    labels = (rng.random((n, n_classes)) < 0.35).astype(np.int64)
    labels[:5] = 0  # rows with no positive class get the mean of all class embeddings
    features = rng.normal(size=(n, 6)) + labels @ rng.normal(size=(n_classes, 6))
    embeddings = (rng.normal(size=(n_classes, 3)), rng.normal(size=(n_classes, 3)))
    targets = []
    for e in embeddings:
        rows = np.empty((n, 3))
        for i in range(n):
            positive = [c for c in range(n_classes) if labels[i, c]]
            rows[i] = np.mean([e[c] for c in (positive or range(n_classes))], axis=0)
        targets.append(rows)
    data = MetricInput(features=features, labels=labels, train=np.ones(n, dtype=bool), target=TARGET_MULTI_LABEL,
                       label_embeddings=embeddings)
    result = emms_fit(*emms_inputs(data))
    assert result.score == pytest.approx(direct_emms(features, targets, result.weights), rel=1e-9)
    assert EMMS().score(data) == result.score
    # The same t is optimal for the direct form: nearby weights do worse.
    for shift in (-0.02, 0.02):
        t = np.clip(result.weights + [shift, -shift], 0, 1)
        assert direct_emms(features, targets, t) <= result.score + 1e-12
    # Moving the embeddings' origin changes nothing (not even for the rows with no positive class).
    moved = MetricInput(features=features, labels=labels, train=np.ones(n, dtype=bool), target=TARGET_MULTI_LABEL,
                        label_embeddings=tuple(e + 5.0 for e in embeddings))
    assert EMMS().score(moved) == pytest.approx(result.score, rel=1e-9)
    # Boolean indicators are accepted.
    assert EMMS().score(MetricInput(features=features, labels=labels.astype(bool), train=np.ones(n, dtype=bool),
                                    target=TARGET_MULTI_LABEL, label_embeddings=embeddings)) == result.score


def test_missing_label_embeddings_are_not_applicable() -> None:
    features, labels = blobs(per_class=10, n_classes=3, d=4, spread=1.0, seed=0)
    with pytest.raises(MetricNotApplicable) as raised:
        score(features, labels, ())
    assert str(raised.value) == MISSING_EMBEDDINGS == \
        "emms: needs label embeddings (score with --label-encoder CHECKPOINT)"
    multi = np.eye(3, dtype=np.int64)[labels]
    with pytest.raises(MetricNotApplicable, match="needs label embeddings"):
        EMMS().score(MetricInput(features=features, labels=multi, train=np.ones(30, dtype=bool),
                                 target=TARGET_MULTI_LABEL))


def test_not_applicable_and_malformed_inputs() -> None:
    features, labels = blobs(per_class=10, n_classes=3, d=4, spread=1.0, seed=0)
    embedding = np.random.default_rng(0).normal(size=(3, 5))
    with pytest.raises(MetricNotApplicable, match="at least 2 classes"):
        score(features, np.zeros(30, dtype=np.int64), (embedding,))
    with pytest.raises(MetricNotApplicable, match="at least 3 train rows"):
        score(features[:2], np.array([0, 1]), (embedding,))
    with pytest.raises(MetricNotApplicable, match="do not vary"):
        score(features, labels, (np.ones((3, 5)),))  # every class has the same embedding
    with pytest.raises(MetricNotApplicable, match="at most 12 label encoders"):
        score(features, labels, (embedding,) * 13)
    with pytest.raises(ValueError, match="one row per class"):
        score(features, labels, (embedding[:2],))
    with pytest.raises(ValueError, match="one row per class"):
        score(features, labels, (embedding, np.ones((4, 5))))
    with pytest.raises(ValueError, match="NaN"):
        score(features, labels, (np.full((3, 5), np.nan),))
    with pytest.raises(ValueError, match="0/1 matrix"):
        EMMS().score(MetricInput(features=features, labels=np.full((30, 3), 2), train=np.ones(30, dtype=bool),
                                 target=TARGET_MULTI_LABEL, label_embeddings=(embedding,)))
    with pytest.raises(ValueError, match="real \\(n=30, t\\) matrix"):
        EMMS().score(MetricInput(features=features, labels=np.ones(30), train=np.ones(30, dtype=bool),
                                 target=TARGET_REGRESSION))
    # More embedding rows than the classes seen (a class with no examples at all) is fine.
    assert score(features, labels, (np.vstack([embedding, embedding[:1] * 3]),)) == pytest.approx(
        score(features, labels, (embedding,)), rel=1e-12)


def test_deterministic() -> None:
    features, labels, embeddings = three_encoders(seed=19)
    assert score(features, labels, embeddings, seed=4) == score(features, labels, embeddings, seed=4)
