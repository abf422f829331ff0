"""Discriminant transferability metrics: how well the classes of a task separate in a checkpoint's
frozen features, measured with Fisher discriminants, neural-collapse proxies, Bhattacharyya overlap
and leave-one-out nearest neighbours.

All four score the `train` rows of a classification task (labels 0..C-1; no held-out split is
needed), in float64, with no randomness (`seed` is not used): the PCA of `ncti` and `gbc` is exact
(a dense eigensolver, or Lanczos from a fixed start vector when the matrix is larger than 512).
Higher is better for all of them. `sfda`, `ncti` and `gbc` need at least 2 train rows in every class.

sfda - SFDA (Shao, Zhao, Ge, Zhang, Yang, Wang, Shan and Luo, "Not All Models Are Equal: Predicting
    Model Transferability in a Self-challenging Fisher Space", ECCV 2022; reference TencentARC/SFDA,
    `metrics.py`, `SFDA_Score`). Two stages of one regularised Fisher / Bayes classifier:
        S_W = (1/n) sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T            (within-class scatter)
        lambda = max(exp(-5 sigma_1(S_W)), 1e-10)    (sigma_1: largest eigenvalue; the reference's a = 5)
        W = (1 - lambda) S_W + lambda (tr S_W / d) I
        p(c | x) = softmax_c( x^T W^-1 mu_c - 1/2 mu_c^T W^-1 mu_c + log pi_c ),  pi_c = n_c / n.
    ConfMix (the self-challenge): q_i = softmax_c(p(c | x_i))[y_i] - the reference "softens" the
    probabilities with a second softmax, so q_i <= e / (e + C - 1) - and every row moves towards the
    mean of the other classes' means, x~_i = q_i x_i + (1 - q_i) mean_{c != y_i} mu_c (unweighted).
    The second stage refits the classifier on the x~ with the first stage's lambda, and
        SFDA = (1/n) sum_i p~(y_i | x~_i)
    - the mean probability of the correct class, without a log (the reference drops it "in case of
    instability"; a LEEP-style log would reward different things, so this code follows the code).
    * The Fisher projection cancels out. The reference solves the generalised eigenproblem
      S_B' v = e W v (S_B' = its shrunk total covariance minus W) but then keeps all d eigenvectors,
      coef = M V V^T with V^T W V = I, i.e. V V^T = W^-1: the classifier is exactly shrinkage LDA
      and S_B plays no part. This code solves W Z = M^T by Cholesky (d <= n; symmetric indefinite
      LDL^T if rounding makes W indefinite), or through the SVD of the within-class residuals plus
      the null space of S_W (d > n) - about a tenth of the generalised eigenproblem's cost.
    * sigma_1 is the exact largest eigenvalue (Lanczos); the reference estimates it with 3 double
      steps of the power method (`iterative_A`, the estimate x^T A y <= sigma_1), so its lambda is
      >= this one (0.60335 against 0.60278 in the tests, moving SFDA by 1.4e-5); given the same
      lambda the two agree to 1e-15.
    * Scale: lambda depends on the scale of the features (exp(-5 sigma_1)); once sigma_1 > 4.6 it is
      at its floor 1e-10 and SFDA is invariant to scaling the features, below that it is not. That is
      the reference's definition; it is kept as is.
    * Saturation: the classifier is fitted and scored on the same rows. When d >= n - C (S_W
      singular, or nearly) and lambda is at its floor, the train rows are separated perfectly
      whatever the features and SFDA = 1 even for pure noise (so does the reference's; tests). The
      metric is therefore not applicable when d >= n - C (a score of 1 for noise would rank it
      first); SFDA ranks checkpoints on tasks with clearly more train rows than d + C.
    * The reference overwrites the caller's feature array with the mixed rows (and truncates if it is
      an integer array); this code works on a float64 copy. A task whose classes are each a single
      point (S_W = 0) has no Fisher space: not applicable.

ncti - NCTI (Wang, Luo, Zheng, Huang and Baktashmotlagh, "How Far Pre-trained Models Are from Neural
    Collapse on the Target Dataset Informs their Transferability", ICCV 2023 - not CVPR; reference
    github.com/BUserName/NCTI, `metrics.py`, `NCTI_Score`, combined in `evaluate_metric_group1_cpu.py`).
    Features are reduced by PCA to p = min(64, d, n - 1) dimensions (H, centred), then a linear
    discriminant (scikit-learn's LinearDiscriminantAnalysis) is fitted to H:
        lambda = max(exp(-sum of the 32 largest PCA variances (ddof 1)), 1e-10);
        lambda = 1e-10: solver "svd", no shrinkage; else solver "eigen" with shrinkage lambda.
    Three terms, with Z = the centred LDA projection of H (n x k, k = min(C - 1, p)) and
    P = the LDA posteriors (n x C), P_c its rows of class c:
        seli = ||Z||_*           (SELI / simplex-ETF geometry: the rank of the features)
        ncc  = (1/n) sum_i P[i, y_i]   (nearest-centre / Bayes classifier)
        vc   = log sum_c ||P_c||_*   (within-class variability; collapse makes it small)
    The reference then min-max normalises each term across the pool of models being compared and
    scores NCTI = seli' + ncc' - vc' (`ncti_pool` here reproduces that exactly from `ncti_terms`).
    A per-checkpoint metric cannot see the pool, so the score stored here maps each raw term to
    [0, 1] with constants that depend on the task only (n, n_c, C, k) - the DIFFERENCE FROM THE
    PAPER'S NUMBERS:
        NCTI = seli01 + ncc - vc01, in [-1, 2] (the pool score's range), with
        seli01 = 1 - k sqrt(n) / ||Z||_*,
        vc01 = (sum_c ||P_c||_* - L) / (U - L),  L = sum_c sqrt(n_c / C),  U = sum_c sqrt(n_c min(n_c, C)).
    With the "svd" solver Z is whitened by S_W / n, so ||Z||_* = sum_i sqrt(n (1 + e_i)) with e_i
    the discriminant eigenvalues of S_W^-1 S_B: seli01 = 0 when the class means coincide and tends
    to 1 as they separate (with shrinkage it can dip slightly below 0). L and U bound ||P_c||_*
    for rows on the simplex (uniform posteriors; one-hot rows spread evenly over min(n_c, C)
    classes). Each scaled term is an increasing function of the reference's raw term, so ranking a
    pool by any one term agrees with the reference; the sum weighs the terms by these fixed ranges
    where the reference weighs them by the pool's spread, so the two rankings can differ.
    * PCA: exact (eigenvectors of the smaller of the covariance and the Gram matrix). The reference
      calls scikit-learn's PCA(64) with the default solver, which is the unseeded randomized SVD for
      inputs larger than 500 x 500: its scores change from run to run. NCTI depends on the PCA
      subspace only, not on the basis or signs (LDA is invariant to rotations of its input).
    * Scale: lambda depends on the feature scale (like SFDA's); at the floor (the 32 largest PCA
      variances summing to more than 23) NCTI is invariant to scaling the features.
    * The within-class term is computed on the LDA posteriors, as in the reference.

gbc - GBC (Pandy, Agostinelli, Uijlings, Ferrari and Mensink, "Transferability Estimation using
    Bhattacharyya Class Separability", CVPR 2022; reference google-research `stable_transfer/
    transferability/gbc.py`, configured in `config_transferability_*_selection.py`).
    PCA of the train features to p = min(64, d, n - 1) dimensions (the reference configs:
    `pca_reduction = 64`, exact "full" PCA), one Gaussian per class with the class mean mu_c and a
    spherical covariance sigma_c^2 I_p (the configs' `gaussian_type = 'spherical'`; "diagonal" is
    available through `gbc(..., covariance="diagonal")`), population variances (ddof 0):
        D_B(c, c') = 1/8 (mu_c - mu_c')^T S^-1 (mu_c - mu_c') + 1/2 ln( det S / sqrt(det S_c det S_c') ),
        S = (S_c + S_c') / 2,   BC = exp(-D_B),   GBC = - sum_c sum_{c' != c} BC(c, c')
    (ordered pairs, as the reference: each pair counts twice).
    GBC <= 0; 0 when no two classes overlap.
    * The reference's spherical case drops the dimension from the log-determinant: it passes the
      scalar sigma^2 and sums log(sigma^2) once, where det(sigma^2 I_p) gives p log(sigma^2). Its
      covariance (log-determinant) term is thus 1/p of the Bhattacharyya distance's (1/64 with the
      configs): classes that differ in spread overlap more for it (-7.69 against -4.89 in the
      tests). This code uses the Bhattacharyya distance of the two Gaussians; the diagonal case
      matches the reference to 1e-15 (tests).
    * Variance floor: the reference raises every per-dimension class variance to at least 1e-4
      (before averaging, for spherical), an absolute value that makes GBC depend on the feature
      scale; here the floor is 1e-4 times the mean variance of the PCA scores (the same when that is
      1), so GBC is invariant to scaling the features. The reference also runs in float32.

knn-loo - leave-one-out k-nearest-neighbour accuracy on all train rows (the 1-NN proxy of Renggli
    et al., "Which Model to Transfer?", CVPR 2022, without a held-out split), k = 1, Euclidean.
    Each train row is classified by its k nearest other train rows (majority vote; a tie between
    classes goes to the class of the nearest neighbour among them); the score is the fraction right.
    * Distances are computed in float64 (not FAISS's float32) in blocks of 512 rows as
      |x|^2 + |y|^2 - 2 <x, y> on centred rows, clipped at 0 (O(n^2 d) time by BLAS; an n x n matrix
      is never held). Two distinct rows whose distances differ by less than the rounding
      (~1e-16 |x|^2) may come in either order.
    * A row is never its own neighbour: it is excluded by position, not by distance.
    * Duplicates: rows with bitwise-equal features (-0.0 = 0.0) are other rows, and each is nearer
      to the others than any distinct row is (they are ranked before every computed distance, even
      one rounded to 0). So a duplicated row with the same label is always right
      (duplicates inflate the score; deduplicating a task is the caller's business), and one with a
      different label always wrong when k = 1.
    * Ties: among rows at the same computed distance the lowest row position wins (argmin / a
      stable sort); with k = 1 that is the only tie rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import Metric, MetricInput, MetricNotApplicable
from hubindex_plugins.metrics import svd, train_rows

MIN_ROWS_PER_CLASS = 2

# Below this size a dense eigensolver is cheap; above, Lanczos (ARPACK) finds the few eigenpairs needed.
DENSE_EIGEN_SIZE = 512

# SFDA: lambda = max(exp(-rate * sigma_1(S_W)), floor)
SFDA_SHRINKAGE_RATE = 5.0
SFDA_MIN_SHRINKAGE = 1e-10

# NCTI
NCTI_DIMENSIONS = 64
NCTI_SHRINKAGE_COMPONENTS = 32
NCTI_MIN_SHRINKAGE = 1e-10

# GBC
GBC_DIMENSIONS = 64
GBC_COVARIANCE = "spherical"
GBC_VARIANCE_FLOOR = 1e-4  # times the mean variance of the PCA scores

# kNN leave-one-out
KNN_LOO_K = 1
KNN_LOO_BLOCK = 512  # rows of the distance matrix computed at once


# ------------------------------------------------------------------------------------ shared helpers


def checked_classes(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(train features, train labels, C) with at least MIN_ROWS_PER_CLASS train rows in every class."""
    features, labels, n_classes = train_rows(data, metric)
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < MIN_ROWS_PER_CLASS:
        few = np.flatnonzero(counts < MIN_ROWS_PER_CLASS)
        raise MetricNotApplicable(f"{metric}: needs at least {MIN_ROWS_PER_CLASS} train rows in every class; "
                                  f"{few.size} of {n_classes} classes have fewer (class {few[0]})")
    return features, labels, n_classes


def class_means(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, d), class counts (C,))."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    one_hot = np.zeros((len(labels), n_classes))
    one_hot[np.arange(len(labels)), labels] = 1.0
    return one_hot.T @ features / counts[:, None], counts


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_eigen(matrix: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors) of the `count` largest eigenvalues of a symmetric matrix, ascending.

    Lanczos starts from a fixed pseudo-random vector, so results repeat exactly.
    """
    from scipy.linalg import eigh
    from scipy.sparse.linalg import eigsh

    size = matrix.shape[0]
    if size <= DENSE_EIGEN_SIZE or 2 * count >= size:
        return eigh(matrix, subset_by_index=[size - count, size - 1])
    start = np.random.default_rng(0).standard_normal(size)
    values, vectors = eigsh(matrix, k=count, which="LA", v0=start)
    order = np.argsort(values)
    return values[order], vectors[:, order]


def principal_scores(features: np.ndarray, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n, p), variances (p,), ddof 1) of the exact PCA of the rows, largest variance first.

    Eigenvectors of the d x d covariance when n >= d, else of the n x n Gram matrix of the centred
    rows; the signs of the components are arbitrary (neither GBC nor NCTI depends on them).
    """
    n, d = features.shape
    centred = features - features.mean(axis=0)
    if n >= d:
        values, vectors = top_eigen(centred.T @ centred, dimensions)
        scores = centred @ vectors[:, ::-1]
    else:
        values, vectors = top_eigen(centred @ centred.T, dimensions)
        scores = vectors[:, ::-1] * np.sqrt(np.maximum(values[::-1], 0.0))
    return scores, np.maximum(values[::-1], 0.0) / (n - 1)


# ------------------------------------------------------------------------------------ sfda


def sfda_shrinkage(largest: float) -> float:
    """lambda = max(exp(-5 sigma_1(S_W)), 1e-10)."""
    return max(math.exp(-SFDA_SHRINKAGE_RATE * largest), SFDA_MIN_SHRINKAGE)


def shrinkage_lda_posteriors(features: np.ndarray, labels: np.ndarray, n_classes: int,
                             shrinkage: float | None) -> tuple[np.ndarray, float, np.ndarray]:
    """(p(c | x_i) (n, C), lambda, class means) of SFDA's shrinkage LDA; lambda from S_W when None."""
    from scipy.linalg import LinAlgError, solve

    n, d = features.shape
    means, counts = class_means(features, labels, n_classes)
    within = features - means[labels]
    if d <= n:
        scatter = within.T @ within / n
        scale = float(np.trace(scatter)) / d  # tr(S_W) / d
        if scale <= 0:
            raise MetricNotApplicable("sfda: every class is a single point (no within-class scatter)")
        if shrinkage is None:
            shrinkage = sfda_shrinkage(float(top_eigen(scatter, 1)[0][0]))
        regularised = (1.0 - shrinkage) * scatter
        regularised.flat[:: d + 1] += shrinkage * scale
        try:  # M W^-1 by Cholesky; W is positive definite unless rounding breaks it at lambda ~ 1e-10
            coef = solve(regularised, means.T, assume_a="pos").T
        except LinAlgError:
            coef = solve(regularised, means.T, assume_a="sym").T
    else:  # S_W = V diag(s^2 / n) V^T on the row space of the residuals, 0 on its complement
        _, s, vt = svd(within)
        eigen = s**2 / n
        scale = float(eigen.sum()) / d
        if scale <= 0:
            raise MetricNotApplicable("sfda: every class is a single point (no within-class scatter)")
        if shrinkage is None:
            shrinkage = sfda_shrinkage(float(eigen.max()))
        along = means @ vt.T
        coef = (along / ((1.0 - shrinkage) * eigen + shrinkage * scale)) @ vt
        coef += (means - along @ vt) / (shrinkage * scale)  # the null space, where W = lambda tr(S_W)/d I
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(counts / n)
    return softmax(features @ coef.T + intercept), shrinkage, means


def sfda(features: np.ndarray, labels: np.ndarray, n_classes: int, shrinkage: float | None = None) -> float:
    """SFDA: mean correct-class probability of shrinkage LDA after ConfMix (see the module docstring)."""
    rows = np.arange(len(labels))
    probs, shrinkage, means = shrinkage_lda_posteriors(features, labels, n_classes, shrinkage)
    confidence = softmax(probs)[rows, labels][:, None]  # the reference's second, "softening" softmax
    outer = (means.sum(axis=0) - means) / (n_classes - 1)  # mean of the other classes' means
    mixed = confidence * features + (1.0 - confidence) * outer[labels]
    probs, _, _ = shrinkage_lda_posteriors(mixed, labels, n_classes, shrinkage)
    return float(np.mean(probs[rows, labels]))


# ------------------------------------------------------------------------------------ ncti


def nuclear_norm(matrix: np.ndarray) -> float:
    return float(np.sum(np.linalg.svd(matrix, compute_uv=False)))


@dataclass(frozen=True)
class NctiTerms:
    """NCTI's terms for one checkpoint: the reference's raw values and their [0, 1] scalings scored here."""

    seli_nuclear: float  # ||Z||_*
    ncc: float  # mean LDA posterior of the correct class
    vc_log_nuclear: float  # log sum_c ||P_c||_*
    seli01: float  # 1 - k sqrt(n) / ||Z||_*
    vc01: float  # sum_c ||P_c||_* scaled by its bounds

    @property
    def score(self) -> float:
        return self.seli01 + self.ncc - self.vc01


def ncti_terms(features: np.ndarray, labels: np.ndarray, n_classes: int) -> NctiTerms:
    """The terms of NCTI after PCA and the (shrinkage) LDA of the reference."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n, d = features.shape
    scores, variances = principal_scores(features, min(NCTI_DIMENSIONS, d, n - 1))
    shrinkage = max(math.exp(-float(variances[:NCTI_SHRINKAGE_COMPONENTS].sum())), NCTI_MIN_SHRINKAGE)
    if shrinkage == NCTI_MIN_SHRINKAGE:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Variables are collinear")  # a rank-deficient S_W is fine
        projected = lda.fit_transform(scores, labels)
        posteriors = lda.predict_proba(scores)
    seli = nuclear_norm(projected - projected.mean(axis=0))
    class_nuclear = sum(nuclear_norm(posteriors[labels == c]) for c in range(n_classes))
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    lower = float(np.sum(np.sqrt(counts / n_classes)))
    upper = float(np.sum(np.sqrt(counts * np.minimum(counts, n_classes))))
    return NctiTerms(
        seli_nuclear=seli,
        ncc=float(np.mean(posteriors[np.arange(n), labels])),
        vc_log_nuclear=math.log(class_nuclear),
        seli01=1.0 - projected.shape[1] * math.sqrt(n) / seli,
        vc01=(class_nuclear - lower) / (upper - lower),
    )


def ncti_pool(terms: Sequence[NctiTerms]) -> np.ndarray:
    """The reference's NCTI of a pool of models: each raw term min-max normalised over the pool,
    seli' + ncc' - vc'. A term equal for every model contributes 0 (the reference divides by 0)."""

    def normalised(values: list[float]) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        spread = array.max() - array.min()
        return (array - array.min()) / spread if spread > 0 else np.zeros_like(array)

    return (normalised([t.seli_nuclear for t in terms]) + normalised([t.ncc for t in terms])
            - normalised([t.vc_log_nuclear for t in terms]))


# ------------------------------------------------------------------------------------ gbc


def gbc(features: np.ndarray, labels: np.ndarray, n_classes: int, covariance: str = GBC_COVARIANCE) -> float:
    """GBC: minus the summed Bhattacharyya coefficients of all ordered pairs of class Gaussians."""
    if covariance not in ("spherical", "diagonal"):
        raise ValueError(f"gbc: covariance must be 'spherical' or 'diagonal', got {covariance!r}")
    n, d = features.shape
    p = min(GBC_DIMENSIONS, d, n - 1)
    scores, _ = principal_scores(features, p)
    total = float(scores.var(axis=0).mean())
    if total <= 0:
        raise MetricNotApplicable("gbc: the train features are constant")
    means, _ = class_means(scores, labels, n_classes)
    variances, _ = class_means((scores - means[labels]) ** 2, labels, n_classes)
    variances = np.maximum(variances, GBC_VARIANCE_FLOOR * total)
    if covariance == "spherical":  # sigma_c^2 I_p
        variances = np.repeat(variances.mean(axis=1, keepdims=True), p, axis=1)
    log_det = np.log(variances).sum(axis=1)  # ln det S_c
    value = 0.0
    for c in range(n_classes):  # one class against all, O(C p) memory
        average = (variances[c] + variances) / 2
        distance = (np.sum((means[c] - means) ** 2 / average, axis=1) / 8
                    + 0.5 * (np.log(average).sum(axis=1) - 0.5 * log_det[c] - 0.5 * log_det))
        coefficient = np.exp(-distance)
        coefficient[c] = 0.0
        value -= float(coefficient.sum())
    return value


# ------------------------------------------------------------------------------------ knn-loo


def knn_loo(features: np.ndarray, labels: np.ndarray, k: int = KNN_LOO_K) -> float:
    """Leave-one-out k-NN accuracy (Euclidean, exact float64 distances, blocked)."""
    n, d = features.shape
    if n < k + 1:
        raise MetricNotApplicable(f"knn-loo: needs at least {k + 1} train rows for k = {k}, got {n}")
    centred = features - features.mean(axis=0) + 0.0  # + 0.0 turns -0.0 into 0.0 for the row keys
    keys = np.ascontiguousarray(centred).view(np.dtype((np.void, 8 * d))).ravel()
    _, group = np.unique(keys, return_inverse=True)  # equal ids = bitwise-equal rows
    group = group.ravel()
    norms = np.einsum("ij,ij->i", centred, centred)
    predicted = np.empty(n, dtype=labels.dtype)
    for start in range(0, n, KNN_LOO_BLOCK):
        stop = min(start + KNN_LOO_BLOCK, n)
        rows = np.arange(stop - start)
        distances = norms[start:stop, None] + norms[None, :] - 2.0 * (centred[start:stop] @ centred.T)
        np.maximum(distances, 0.0, out=distances)
        distances[group[start:stop, None] == group[None, :]] = -1.0  # duplicates: nearer than any other row
        distances[rows, start + rows] = np.inf  # never its own neighbour
        if k == 1:
            predicted[start:stop] = labels[np.argmin(distances, axis=1)]
            continue
        neighbours = labels[np.argsort(distances, axis=1, kind="stable")[:, :k]]  # nearest first
        votes = np.zeros((stop - start, int(labels.max()) + 1))
        np.add.at(votes, (np.repeat(rows, k), neighbours.ravel()), 1.0)
        tied = votes[rows[:, None], neighbours] == votes.max(axis=1, keepdims=True)
        predicted[start:stop] = neighbours[rows, np.argmax(tied, axis=1)]  # nearest of the tied classes
    return float(np.mean(predicted == labels))


# ------------------------------------------------------------------------------------ metrics


class Sfda(Metric):
    """Self-challenging Fisher discriminant analysis (Shao et al., ECCV 2022)."""

    name = "sfda"
    version = "1"
    description = "SFDA: correct-class probability of shrinkage LDA after self-challenging ConfMix"
    imports = ("scipy.linalg", "scipy.sparse.linalg")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = checked_classes(data, self.name)
        n, d = features.shape
        if d >= n - n_classes:
            raise MetricNotApplicable(
                f"{self.name}: {d} feature dimensions for {n} train rows of {n_classes} classes; fitted and scored "
                f"on the same rows the classifier separates them whatever the features (needs d < n - C)")
        return sfda(features, labels, n_classes)


class Ncti(Metric):
    """Neural collapse transferability index (Wang et al., ICCV 2023), per checkpoint."""

    name = "ncti"
    version = "1"
    description = "NCTI: neural-collapse proxies (rank, Bayes classifier, class collapse) after PCA-64 LDA"
    imports = ("sklearn.discriminant_analysis", "scipy.linalg", "scipy.sparse.linalg")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = checked_classes(data, self.name)
        return ncti_terms(features, labels, n_classes).score


class Gbc(Metric):
    """Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022)."""

    name = "gbc"
    version = "1"
    description = "GBC: minus the Bhattacharyya overlap of spherical class Gaussians after PCA-64"
    imports = ("scipy.linalg", "scipy.sparse.linalg")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = checked_classes(data, self.name)
        return gbc(features, labels, n_classes)


class KnnLeaveOneOut(Metric):
    """Leave-one-out 1-NN accuracy on the train rows."""

    name = "knn-loo"
    version = "1"
    description = "leave-one-out 1-nearest-neighbour accuracy on the train rows (Euclidean)"

    def score(self, data: MetricInput) -> float:
        features, labels, _ = train_rows(data, self.name)
        return knn_loo(features, labels)


METRICS: tuple[type[Metric], ...] = (Sfda, Ncti, Gbc, KnnLeaveOneOut)


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in METRICS:
        register(metric)
