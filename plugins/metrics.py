"""Built-in task-aware transferability metrics: how well one checkpoint's frozen features suit a
labeled task, without fine-tuning it.

Each metric scores features F (n x d) of a task with labels y in 0..C-1. `linear` and `knn` fit
on the `train` rows and score the held-out rows; every other metric uses the `train` rows only.
Everything is computed in float64 (FAISS searches in float32). Higher is better for all of them.

linear - linear probe (Li et al., "Ranking Neural Checkpoints", CVPR 2021: converged linear probes
    are a strong indicator; Kornblith et al., CVPR 2019). Multinomial logistic regression
    (scikit-learn, lbfgs, L2 with C = 1) on train features standardised per dimension with the
    train rows' mean and standard deviation; the score is the accuracy on the held-out rows.
    Convergence: lbfgs stops when the largest gradient entry of the objective (scikit-learn
    scales the loss as a mean over rows) is below tol = 1e-6, with at most 10,000 iterations. The
    default tol = 1e-4 is not enough: on hard tasks it stops after 3-5 iterations, far from the
    optimum. A fit that still does not converge (or whose line search fails) is not returned
    silently: a RuntimeWarning names the metric, and the score is that of the last iterate.

knn - 1-nearest-neighbour accuracy, Euclidean distance (Renggli et al., "Which Model to
    Transfer? Finding the Needle in the Growing Haystack", CVPR 2022; k = 3 brought nothing over
    k = 1). A FAISS IndexFlatL2 holds the train rows as float32; each held-out row takes the label
    of its nearest train row (search with k = 1); the score is the held-out accuracy. Ties: FAISS
    keeps a candidate only when its distance is strictly smaller than the best so far and scans
    the train rows in order, so among train rows at exactly the same computed distance the first
    one (lowest position among the train rows) wins - exact duplicate train rows always resolve
    this way. Distances are computed in float32 (for large batches of queries through
    |q|^2 + |x|^2 - 2<q, x>), so two different train rows at the same distance in exact
    arithmetic are compared after that rounding.

leep - LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned
    Representations", ICML 2020), from the checkpoint's own head: theta(x) = softmax over its Z
    source classes.
        P(y, z) = (1/n) sum_{j: y_j = y} theta(x_j)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),
        LEEP = (1/n) sum_j log( sum_z P(y_j | z) theta(x_j)_z ).
    With the log (a popular public implementation returns the mean probability without it).
    LEEP <= 0, and 0 exactly when a one-hot head determines the label. A source class that no
    train row gives any probability has P(. | z) = 0 (it carries no mass in any row).

nleep - N-LEEP (Li et al., "Ranking Neural Checkpoints", CVPR 2021): LEEP with a Gaussian mixture
    fitted to the features in place of the head; in hubindex_plugins.metric_nleep (its settings,
    and why version 2 differs from version 1, are in that module's docstring).

logme - LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021). For each class k, a Bayesian linear model of the 0/1 target
    y = [y_j = k]: y = F w + e, w ~ N(0, alpha^-1 I_d), e ~ N(0, beta^-1 I_n), with evidence
        L(alpha, beta) = log N(y; 0, alpha^-1 F F^T + beta^-1 I_n)
          = n/2 log beta + d/2 log alpha - n/2 log 2pi - beta/2 |F m - y|^2 - alpha/2 |m|^2
            - 1/2 log det A,        A = alpha I_d + beta F^T F,  m = beta A^-1 F^T y.
    (alpha, beta) maximise L by MacKay's fixed point: gamma = sum_i beta s_i^2 / (alpha + beta s_i^2),
    alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2, from alpha = beta = 1, all classes at
    once, until alpha and beta change by less than 1e-10 (relative) or the evidence per row
    gains less than 1e-12: where the evidence is highest at alpha -> infinity (no linear signal
    in F for that class, w -> 0) alpha grows without bound and never settles, while the evidence
    does. At most 10,000 iterations, else a RuntimeWarning. LogME = mean_k L_k / n.
    With the SVD F = U S V^T (rank r = number of singular values above s_max max(n, d) eps):
        log det A = sum_{i <= r} log(alpha + beta s_i^2) + (d - r) log alpha,
    the second term for the null space of F. The reference repository's fast version omits it
    when n < d and then returns positive nonsense (e.g. +14.8 instead of -0.30 at n = 500,
    d = 2,048); here it is always there, so the value is right for n < d and n > d. (With it,
    d/2 log alpha - 1/2 log det A = -1/2 sum_{i <= r} log(1 + s_i^2 beta / alpha): L is computed in
    that form, through t = alpha / beta, which stays finite as alpha grows; |y|^2 off the column
    space of F comes from the residual y - U U^T y, not from |y|^2 - |U^T y|^2, whose rounding
    beta would magnify.) Features are used as given: the reference implementation does not
    centre or scale them (it only casts to float64), and neither does this one.
    Targets: for classification the one-hot columns of the C classes; for multi-label the 0/1
    column of each class; for regression each target column centred on the train rows. The
    reference's `fit_regression` takes targets as given; the model y = F w + e has no intercept,
    so an offset in the targets (a mean log word count of 5.8, say) is explained best by features
    with a large common component, whatever they know: on such a task the random-init MiniLM of
    the zoo scored -0.54 and the pretrained one -2.55 uncentred, -0.45 and -0.41 centred
    (tests/test_score.py). Scaling a target shifts every checkpoint's score by the same -log s,
    so it is left as given. The score is the mean of L_k / n over the columns in every case.

hscore - H-score (Bao et al., "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP 2019): tr( cov(f)^+ cov(E[f | y]) ), with the Moore-Penrose
    pseudo-inverse (singular values of cov(f) below d eps times the largest count as zero, as
    in numpy's pinv). Both covariances are normalised by n (the factor cancels); computed from
    the SVD of the centred train features, never inverting a d x d matrix.

hscore-shrinkage - the shrinkage H-score of Ibrahim, Ponomareva and Mazumder, "Newer is not
    always better: Rethinking transferability metrics, their peculiarities, stability and
    performance" (ECML PKDD 2022, arXiv:2110.06893):
        H_alpha = tr( cov_alpha(f)^-1 (1 - alpha) cov(E[f | y]) ),
        cov_alpha(f) = (1 - alpha) cov(f) + alpha (tr cov(f) / d) I,
    where alpha is the Ledoit-Wolf shrinkage (Ledoit and Wolf 2004, as computed by
    scikit-learn's `ledoit_wolf_shrinkage` on the centred train features). This is the form in
    the paper and in public implementations (e.g. `regularized_h_score` in thuml's
    Transfer-Learning-Library): the between-class covariance is scaled by (1 - alpha) as well.
    Covariances are normalised by n, as Ledoit-Wolf's empirical covariance is.

nce - NCE (Tran, Nguyen and Hassner, "Transferability and Hardness of Supervised Classification
    Tasks", ICCV 2019): -H(Y | Z) with Z = argmax of the checkpoint's head (ties: the first
    source class), from the empirical joint of (y, z) on the train rows:
        NCE = sum_{y, z} P(y, z) log( P(y, z) / P(z) ) <= 0, and 0 when y is a function of z.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import (
    NEEDS_HEAD,
    NEEDS_HELD_OUT,
    PROBABILITY_TOLERANCE,
    TARGET_CLASSIFICATION,
    TARGET_KINDS,
    TARGET_REGRESSION,
    Metric,
    MetricInput,
    MetricNotApplicable,
)


# linear probe (and the reference classifier of task-relatedness)
PROBE_C = 1.0
PROBE_TOL = 1e-6
PROBE_MAX_ITER = 10_000

# LogME fixed point
LOGME_RTOL = 1e-10
LOGME_EVIDENCE_ATOL = 1e-12  # gain of the evidence per row
LOGME_MAX_ITER = 10_000


# ------------------------------------------------------------------------------------ input checks


def features_and_train(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(finite features as float64, the train mask) after checking their shapes."""
    features = np.asarray(data.features)
    train = np.asarray(data.train)
    if features.ndim != 2 or features.dtype.kind not in "fiu":
        raise ValueError(f"{metric}: features must be a real (n, d) matrix, got {features.dtype} {features.shape}")
    n = features.shape[0]
    if train.shape != (n,) or train.dtype != bool:
        raise ValueError(f"{metric}: train must be a boolean mask of {n} rows, got {train.dtype} {train.shape}")
    features = features.astype(np.float64, copy=False)
    if not np.isfinite(features).all():
        raise ValueError(f"{metric}: features hold NaN or infinite values")
    return features, train


def checked_features(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(features as float64, labels, C) after checking shapes, values and the train mask."""
    features, train = features_and_train(data, metric)
    labels = np.asarray(data.labels)
    n = features.shape[0]
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"{metric}: labels must be {n} integer class indices, got {labels.dtype} {labels.shape}")
    if n and labels.min() < 0:
        raise ValueError(f"{metric}: labels must be class indices 0..C-1 (found {labels.min()})")
    n_classes = data.n_classes
    if n_classes < 2:
        raise MetricNotApplicable(f"{metric}: needs at least 2 classes, the task has {n_classes}")
    counts = np.bincount(labels[train], minlength=n_classes)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        shown = ", ".join(str(c) for c in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise ValueError(f"{metric}: {missing.size} of {n_classes} classes have no train rows (class {shown}); "
                         "every class needs train rows")
    return features, labels.astype(np.int64, copy=False), n_classes


def train_rows(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(train features, train labels, C), checked."""
    features, labels, n_classes = checked_features(data, metric)
    return features[data.train], labels[data.train], n_classes


def split_rows(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train features, train labels, held-out features, held-out labels), checked."""
    features, labels, _ = checked_features(data, metric)
    train = np.asarray(data.train)
    if train.all():
        raise MetricNotApplicable(f"{metric}: needs held-out rows to evaluate on; every row is a train row")
    return features[train], labels[train], features[~train], labels[~train]


def target_rows(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(train features, train targets (n_train, t)) as float64 for a multi-label or regression task."""
    features, train = features_and_train(data, metric)
    values = np.asarray(data.labels)
    n = features.shape[0]
    if values.ndim != 2 or len(values) != n or values.dtype.kind not in "biuf":
        raise ValueError(f"{metric}: {data.target} labels must be a numeric ({n}, t) matrix, got "
                         f"{values.dtype} {values.shape}")
    values = values[train].astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{metric}: the targets hold NaN or infinite values")
    if len(values) < 2:
        raise MetricNotApplicable(f"{metric}: needs at least 2 train rows, the task has {len(values)}")
    return features[train], values


def checked_head(data: MetricInput, metric: str) -> np.ndarray:
    """The train rows of head_probs as float64 probabilities (rows renormalised to sum to 1)."""
    if data.head_probs is None:
        raise MetricNotApplicable(f"{metric}: needs the checkpoint's head (head_probs)")
    probs = np.asarray(data.head_probs)
    n = len(data.labels)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] < 1 or probs.dtype.kind not in "fiu":
        raise ValueError(f"{metric}: head_probs must be an (n={n}, Z) matrix, got {probs.dtype} {probs.shape}")
    probs = probs[data.train].astype(np.float64)
    sums = probs.sum(axis=1)
    if not np.isfinite(probs).all() or probs.min() < 0 or np.abs(sums - 1.0).max() > PROBABILITY_TOLERANCE:
        raise ValueError(f"{metric}: head_probs rows must be probabilities over the source classes (>= 0, summing to 1)")
    return probs / sums[:, None]


# ------------------------------------------------------------------------------------ formulas


def leep(theta: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """LEEP of source-class probabilities theta (n, Z) for labels in 0..n_classes-1."""
    n = len(labels)
    one_hot = np.zeros((n, n_classes))
    one_hot[np.arange(n), labels] = 1.0
    joint = one_hot.T @ theta / n  # P(y, z)
    marginal = joint.sum(axis=0)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    expected = np.einsum("jz,jz->j", theta, conditional[labels])  # sum_z P(y_j | z) theta(x_j)_z
    return float(np.mean(np.log(expected)))


def negative_conditional_entropy(source: np.ndarray, labels: np.ndarray) -> float:
    """-H(Y | Z) of the empirical joint of target labels and source labels."""
    n = len(labels)
    joint = np.zeros((int(labels.max()) + 1, int(source.max()) + 1))
    np.add.at(joint, (labels, source), 1.0 / n)
    marginal = np.broadcast_to(joint.sum(axis=0), joint.shape)
    present = joint > 0
    return float(np.sum(joint[present] * np.log(joint[present] / marginal[present])))


def fit_logistic(features: np.ndarray, labels: np.ndarray, metric: str) -> Any:
    """A standardise + multinomial logistic regression pipeline fitted to convergence (see linear)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=PROBE_C, tol=PROBE_TOL, max_iter=PROBE_MAX_ITER, solver="lbfgs"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(features, labels)
    unconverged = False
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            unconverged = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if unconverged:
        iterations = int(np.max(model[-1].n_iter_))
        warnings.warn(f"{metric}: the logistic regression did not converge (lbfgs, tol {PROBE_TOL}, "
                      f"{iterations} of at most {PROBE_MAX_ITER} iterations); the score is the last iterate's",
                      RuntimeWarning, stacklevel=3)
    return model


def svd(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, s, Vt) of the thin SVD, keeping the singular values above s_max * max(n, d) * eps."""
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0], s[:0], vt[:0]
    rank = int(np.sum(s > s[0] * max(features.shape) * np.finfo(np.float64).eps))
    return u[:, :rank], s[:rank], vt[:rank]


@dataclass(frozen=True)
class LogMEFit:
    """Per class k: the log evidence per row, L_k / n, at the fixed point (alpha_k, beta_k)."""

    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    iterations: int

    @property
    def score(self) -> float:
        return float(np.mean(self.evidence))


def logme_fit(features: np.ndarray, targets: np.ndarray) -> LogMEFit:
    """LogME's evidence maximisation for each column of targets (n, K), all columns at once."""
    n, _ = features.shape
    u, s, _ = svd(features)
    s2 = (s**2)[:, None]  # (r, 1), all > 0
    z = u.T @ targets  # (r, K): coordinates of y on the left singular vectors
    z2 = z**2
    # |y|^2 off the column space of F, from the residual itself: |y|^2 - |z|^2 would cancel, and
    # beta |F m - y|^2 magnifies the error when beta is large.
    outside = ((targets - u @ z) ** 2).sum(axis=0)

    def evidence_terms(alpha: np.ndarray, beta: np.ndarray, z2: np.ndarray,
                       outside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # Everything through t = alpha / beta: q_i = beta s_i^2 / (alpha + beta s_i^2), m_i = s_i z_i / (t + s_i^2).
        t = alpha / beta
        q = s2 / (t + s2)
        gamma = q.sum(axis=0)
        m2 = (z2 * q**2 / s2).sum(axis=0)  # |m|^2
        res2 = (z2 * (t / (t + s2)) ** 2).sum(axis=0) + outside  # |F m - y|^2 (1 - q without cancellation)
        # n/2 log beta + d/2 log alpha - 1/2 log det A with log det A = sum_{i<=r} log(alpha + beta s_i^2)
        # + (d - r) log alpha: the log alpha terms cancel to -1/2 sum_{i<=r} log(1 + s_i^2 / t).
        evidence = (n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi) - beta / 2 * res2 - alpha / 2 * m2
                    - np.log1p(s2 / t).sum(axis=0) / 2)
        return evidence / n, gamma, m2, res2

    tiny = np.finfo(np.float64).tiny
    alpha = np.ones(targets.shape[1])
    beta = np.ones(targets.shape[1])
    evidence, gamma, m2, res2 = evidence_terms(alpha, beta, z2, outside)
    active = np.ones(targets.shape[1], dtype=bool)
    iterations = 0
    while active.any() and iterations < LOGME_MAX_ITER:
        iterations += 1
        k = np.flatnonzero(active)
        new_alpha = gamma[k] / np.maximum(m2[k], tiny)
        new_beta = (n - gamma[k]) / np.maximum(res2[k], tiny)
        new_evidence, gamma[k], m2[k], res2[k] = evidence_terms(new_alpha, new_beta, z2[:, k], outside[k])
        moved = np.maximum(np.abs(new_alpha - alpha[k]) / new_alpha, np.abs(new_beta - beta[k]) / new_beta)
        # Where the evidence is highest at alpha -> infinity (no linear signal: w -> 0), alpha grows
        # without bound and never settles; the evidence does, so its gain also ends the iteration.
        gained = np.abs(new_evidence - evidence[k])
        alpha[k], beta[k], evidence[k] = new_alpha, new_beta, new_evidence
        active[k] = (moved >= LOGME_RTOL) & (gained > LOGME_EVIDENCE_ATOL)
    if active.any():
        warnings.warn(f"logme: the fixed point did not converge in {LOGME_MAX_ITER} iterations for "
                      f"{int(active.sum())} classes; their evidence is the last iterate's", RuntimeWarning, stacklevel=2)
    return LogMEFit(evidence, alpha, beta, iterations)


def _between_class(centred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """B (C, d) with B^T B = cov(E[f | y]): class means of centred rows times sqrt(class share)."""
    n = len(labels)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, centred.shape[1]))
    np.add.at(sums, labels, centred)
    return sums / counts[:, None] * np.sqrt(counts / n)[:, None]


def h_scores(features: np.ndarray, labels: np.ndarray, n_classes: int, shrink: bool) -> float:
    """H-score (pseudo-inverse) or its Ledoit-Wolf shrinkage variant, from the SVD of the centred rows."""
    n, d = features.shape
    centred = features - features.mean(axis=0)
    _, s, vt = svd(centred)
    eigen = s**2 / n  # nonzero eigenvalues of cov(f), with eigenvectors vt
    between = _between_class(centred, labels, n_classes)
    projected = ((between @ vt.T) ** 2).sum(axis=0)  # |B v_i|^2
    if not shrink:
        keep = eigen > eigen[0] * d * np.finfo(np.float64).eps if eigen.size else eigen > 0
        return float(np.sum(projected[keep] / eigen[keep]))
    from sklearn.covariance import ledoit_wolf_shrinkage

    alpha = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    mu = float(np.sum(eigen)) / d
    floor = alpha * mu
    if floor <= 0:  # no shrinkage: the plain pseudo-inverse
        keep = eigen > eigen[0] * d * np.finfo(np.float64).eps if eigen.size else eigen > 0
        return float(np.sum(projected[keep] / eigen[keep]))
    inside = np.sum(projected / ((1 - alpha) * eigen + floor))
    # The part of B outside the span of the rows (zero up to rounding) sees only alpha * mu * I.
    outside = max(float(np.sum(between**2)) - float(np.sum(projected)), 0.0) / floor
    return float((1 - alpha) * (inside + outside))


# ------------------------------------------------------------------------------------ metrics


class LinearProbe(Metric):
    """Held-out accuracy of a converged multinomial logistic regression on standardised features."""

    name = "linear"
    version = "1"
    description = "linear probe: held-out accuracy of a converged logistic regression"
    needs = frozenset({NEEDS_HELD_OUT})
    imports = ("sklearn.linear_model", "sklearn.pipeline", "sklearn.preprocessing")

    def score(self, data: MetricInput) -> float:
        x_train, y_train, x_test, y_test = split_rows(data, self.name)
        model = fit_logistic(x_train, y_train, self.name)
        return float(np.mean(model.predict(x_test) == y_test))


class NearestNeighbour(Metric):
    """Held-out accuracy of 1-nearest-neighbour (Euclidean) classification, searched with FAISS."""

    name = "knn"
    version = "1"
    description = "1-nearest-neighbour held-out accuracy (Euclidean, FAISS)"
    needs = frozenset({NEEDS_HELD_OUT})
    imports = ("faiss",)

    def score(self, data: MetricInput) -> float:
        import faiss

        x_train, y_train, x_test, y_test = split_rows(data, self.name)
        index = faiss.IndexFlatL2(x_train.shape[1])
        index.add(np.ascontiguousarray(x_train, dtype=np.float32))
        _, nearest = index.search(np.ascontiguousarray(x_test, dtype=np.float32), 1)
        return float(np.mean(y_train[nearest[:, 0]] == y_test))


class Leep(Metric):
    """LEEP of the checkpoint's own head on the train rows."""

    name = "leep"
    version = "1"
    description = "LEEP: log expected empirical prediction of the checkpoint's own head"
    needs = frozenset({NEEDS_HEAD})

    def score(self, data: MetricInput) -> float:
        _, labels, n_classes = train_rows(data, self.name)
        return leep(checked_head(data, self.name), labels, n_classes)


class LogME(Metric):
    """Mean over target columns of the maximised log evidence of a Bayesian linear model, per row."""

    name = "logme"
    version = "1"
    description = "LogME: maximised log evidence of a Bayesian linear model, averaged over target columns, per row"
    targets = frozenset(TARGET_KINDS)

    def score(self, data: MetricInput) -> float:
        if data.target != TARGET_CLASSIFICATION:
            features, values = target_rows(data, self.name)
            if data.target == TARGET_REGRESSION:
                values = values - values.mean(axis=0)  # the model has no intercept (see the docstring)
            return logme_fit(features, values).score
        features, labels, n_classes = train_rows(data, self.name)
        targets = np.zeros((len(labels), n_classes))
        targets[np.arange(len(labels)), labels] = 1.0
        return logme_fit(features, targets).score


class HScore(Metric):
    """tr(cov(f)^+ cov(E[f | y])) on the train rows."""

    name = "hscore"
    version = "1"
    description = "H-score: tr(cov(f)^+ cov(E[f|y])), pseudo-inverse"

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = train_rows(data, self.name)
        return h_scores(features, labels, n_classes, shrink=False)


class ShrinkageHScore(Metric):
    """The H-score with the Ledoit-Wolf shrunk covariance (Ibrahim et al. 2022)."""

    name = "hscore-shrinkage"
    version = "1"
    description = "shrinkage H-score: Ledoit-Wolf covariance, for d large relative to n"
    imports = ("sklearn.covariance",)

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = train_rows(data, self.name)
        return h_scores(features, labels, n_classes, shrink=True)


class Nce(Metric):
    """Negative conditional entropy of the target label given the head's top source class."""

    name = "nce"
    version = "1"
    description = "NCE: -H(target label | argmax source class of the checkpoint's head)"
    needs = frozenset({NEEDS_HEAD})

    def score(self, data: MetricInput) -> float:
        _, labels, _ = train_rows(data, self.name)
        source = np.argmax(checked_head(data, self.name), axis=1)
        return negative_conditional_entropy(source, labels)


METRICS: tuple[type[Metric], ...] = (LinearProbe, NearestNeighbour, Leep, LogME, HScore, ShrinkageHScore, Nce)


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in METRICS:
        register(metric)
