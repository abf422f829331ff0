"""Information- and bound-based transferability metrics: TransRate, PACTran-Gaussian, ETran, PARC.

Each metric scores the frozen features F (n x d) of a task's `train` rows, in float64. TransRate,
PACTran and ETran score classification tasks (labels y in 0..C-1) and need at least two train
rows in every class (one row carries no within-class information); PARC also scores multi-label
and regression tasks. Higher is better except for PACTran, a bound on the loss.

transrate - TransRate (Huang, Huang, Rong, Yang, Wei, "Frustratingly Easy Transferability
    Estimation", ICML 2022): the coding rate of the features minus their class-conditional rate,
        TrR = R(Z) - sum_c (n_c / n) R(Z_c),    R(Z) = 1/2 logdet(I_d + Z^T Z / (n eps^2)),
    with n_c (the class's own row count) inside R(Z_c) and eps^2 = 1e-4. Z: each feature row
    scaled to unit L2 norm, the rows centred, then each row scaled to unit norm again - what the
    authors' repository (Long-Kai/TransRate, the non-projected path) does before its eigenvalues.
    1/2 logdet comes from the Cholesky factor of I + G / (n eps^2), G the smaller of Z^T Z and
    Z Z^T (Sylvester's identity), for Z and for each class's rows Z_c.
    * In the MCR^2 form R has d / (n eps^2); the paper's 10-line listing, which thuml's tllib
      `ranking/transrate.py` copies, uses 1 / (n eps) with eps = 1e-4: eps^2 here is that
      constant (in the d / (n eps^2) form it is eps^2 = 1e-4 d).
    * Scale: the listing only centres, so logdet(I + a Z^T Z) grows with the feature scale and a
      checkpoint with larger activations looks more transferable; the unit-norm rows make the
      score invariant to scale (and to rotations), which ranking checkpoints needs.
    * Class weights: the listing averages R(Z_c) with weight 1/C, not n_c / n; the two agree only
      for balanced classes. The paper's n_c / n is used here.
    * The repository's evaluation differs further: eps^2 tuned per target (1e-5 to 1e-1), both
      rates divided by rank(Z) (normalize_opt='rank'), and for most model-selection results Z
      projected onto pinv(cov f) cov(E[f|y]) ("use_proj_Z"). None of that is done here.

pactran - PACTran-Gaussian (Ding, Chen, Levinboim, Changpinyo, Soricut, "PACTran: PAC-Bayesian
    Metrics for Estimating the Transferability of Pretrained Models to Classification Tasks",
    ECCV 2022; reference google-research/pactran_metrics `compute_metrics.py`). Of the three
    instantiations, Dirichlet and Gamma need a source head's (or a mixture's) probabilities; the
    Gaussian one works on features and is the one the authors found the most consistent (their
    README), so it is the one implemented. A softmax head theta = (W, b) on the centred features,
    prior N(0, sigma0^2 I) on W (b flat), posterior N(theta, diag(s^2)), PAC-Bayes temperature beta:
        RER(theta) = (1/n) sum_i -log softmax(x_i W + b)_{y_i} + |W|^2 / (2 beta sigma0^2),
        PACTran = RER(theta*) + dC / (2 beta) * log(1 + beta sigma0^2 tr(H) / (dC)),
    theta* = argmin RER, H the Hessian of the mean cross-entropy in W at theta*, so
    tr(H) = (1/n) sum_i |x_i|^2 sum_k p_ik (1 - p_ik). This is the Gaussian bound with the
    optimal posterior variances 1/s_j^2 = beta H_jj + 1/sigma0^2 and the sum of
    log(1 + beta sigma0^2 H_jj) replaced by dC times the log of its mean (Jensen: an upper bound).
    * Setting: the reference (its 2022-07-17 release) parametrises beta sigma0^2 = lambda n and
      sigma0^2 = s / d, and reports a grid (lambda, s) in {(10, 1000), (10, 100), (1, 100), (1, 10), (0.1, 10),
      (0.1, 1)}, choosing per dataset the entry that best agrees with a held-out linear probe
      over the whole model pool - not a per-checkpoint setting. Fixed here: lambda = 0.1,
      s = 10 (sigma0^2 = 10 / d, beta = n d / 100), the grid's first entry for its smallest
      lambda (a later public benchmark runs the same fixed "PACTran-0.1-10").
    * Optimisation as the reference: L-BFGS(-B, scipy) on (W, b), W initialised N(0, 0.03^2)
      from a generator seeded with `data.seed`, b = 0; it stops when no gradient entry exceeds
      1e-9 (or RER stalls), after at most 500 iterations (the reference: tol 1e-6, 100
      iterations, where the bound still moves by ~2e-5 relative from one seed's start to
      another's; here by ~1e-9), with a RuntimeWarning if unconverged: strongly overlapping
      classes on large-scale features are ill-conditioned and can need more. The objective is
      convex: the seed only picks the start.
    * The reference's Hessian omits the 1/n of the mean loss (its log argument is about n times
      too large) and adds the bias curvature to the weights' mean; here H is that of RER's data
      term in W, as the bound's derivation needs.
    * Lower is better (a bound on the expected loss): `higher_is_better = False`. The reference
      writes the bound itself (ETran's copy negates it). It depends on the feature scale (the
      prior variance is fixed at 10 / d); the reference neither scales nor whitens, nor does this.

etran - ETran (Gholami, Akbari, Wang, Kamranian, Zhang, "ETran: Energy-Based Transferability
    Estimation", ICCV 2023; reference github mgholamikn/ETran, `metrics.py` and `tw.py`):
        ETran = S_en + S_cls     (the detection-only SVD regression score S_reg is left out).
    * S_en, the energy score: the features are taken as logits, e_i = logsumexp_j f_ij (minus the
      free energy, T = 1), and S_en is the mean of the lowest k = max(1, floor(5 n / 1000)) of
      them - the reference's Energy_Score(X, 0.5, 'bot'), the half-percent least in-distribution
      rows. The reference's k is floor(5 n / 1000) alone: an empty mean (NaN) below 200 rows.
    * S_cls, the LDA classification score: (1/n) sum_i p(y_i | x_i) with Gaussian classes sharing
      the shrunk within-class covariance S = (1 - a) S_w + a tr(S_w)/d I, S_w = sum_c pi_c cov_c
      (ML covariances, pi_c = n_c / n) and a = max(exp(-5 sigma_max(S_w)), 1e-10) (SFDA's rule, as
      the reference): log p(c | x) = x^T S^-1 mu_c - mu_c^T S^-1 mu_c / 2 + log pi_c - logsumexp.
      S^-1 mu_c by a Cholesky solve (d x d; when n < d through Woodbury's identity and the n x n
      Gram matrix); sigma_max by Lanczos to rounding (the reference: 3 power iterations).
    * The reference's LDA takes np.linalg.eigh of the non-symmetric S^-1 S_b: eigh reads one
      triangle and returns an orthonormal basis V of all d vectors, so its coef = means V V^T is
      just the class means - its "LDA" posterior is that of identity-covariance classes and the
      covariance, shrinkage and eigenvectors have no effect. The paper's LDA is computed here.
    * Combination: the reference's classification results min-max normalise each score over the
      candidate models and take 0.15 S_en + 0.85 S_cls (`tw.py`); a per-checkpoint metric has no
      pool to normalise over (and the weights mean nothing without it), so the two are added
      unweighted into one score, the paper's T_m. No random projection and no randomness: the
      seed is unused. Not scale invariant: S_en grows with the feature scale (and the
      shrinkage a depends on it).

parc - PARC (Bolya, Mittapalli, Hoffman, "Scalable Diverse Model Selection for Accessible Transfer
    Learning", NeurIPS 2021; reference github dbolya/parc `methods.py`): the Spearman correlation
    between the upper triangles (pairs i < j) of two dissimilarity matrices,
        D_F[i, j] = 1 - pearson(z_i, z_j),    D_Y[i, j] = 1 - pearson(y_i, y_j),
    z_i the row's top-32 principal component scores, each component standardised (as the
    reference's PCA(32) + StandardScaler), y_i the row's label vector: one-hot (classification),
    the 0/1 row (multi-label). The reference returns 100 rho; this returns rho in [-1, 1].
    * PCA: exact - the top eigenvectors of the smaller Gram matrix of the centred rows (dense,
      or Lanczos to rounding from a fixed start vector above 256) - with scikit-learn's sign
      convention (each component's largest loading positive), as row correlations across
      components depend on the signs. The reference uses a randomized PCA (random_state 1919,
      one power iteration), an approximation. At most rank(F) components are kept: the reference
      asks for min(32, n), and its StandardScaler then blows the rounding noise of components
      beyond the rank up to unit variance (and it fails when d < 32).
    * A constant row (a row without or with all labels, an all-zero score row) has no Pearson
      correlation: the reference gets NaN and so a NaN score. Here two constant rows with the
      same value correlate 1, any other pair with a constant row 0.
    * Regression: a row of t values has no correlation for t = 1 (the reference gives NaN) and
      compares unrelated units for t > 1, so D_Y is the Euclidean distance between rows of
      targets standardised per column (constant columns dropped). Spearman needs only its ranks.
    * Size: at n rows there are n(n-1)/2 pairs (12.5 M at n = 5,000: 100 MB per vector), built
      in row blocks without n x n matrices and ranked one side at a time (about 0.8 GB at the
      peak at 5,000 rows). Above 5,000 train rows a seeded (`data.seed`) uniform subsample of
      5,000 rows is scored; the reference's probe sets have 500 images.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import (
    TARGET_CLASSIFICATION,
    TARGET_MULTI_LABEL,
    TARGET_REGRESSION,
    Metric,
    MetricInput,
    MetricNotApplicable,
)
from hubindex_plugins.metrics import train_rows

MIN_ROWS_PER_CLASS = 2

# TransRate
TRANSRATE_EPS2 = 1e-4

# PACTran-Gaussian: beta sigma0^2 = lambda n, sigma0^2 = s / d
PACTRAN_LAMBDA = 0.1
PACTRAN_PRIOR_SCALE = 10.0
PACTRAN_INIT_STD = 0.03
PACTRAN_GTOL = 1e-9  # largest gradient entry; the reference passes tol=1e-6 (ftol = gtol = 1e-6)
PACTRAN_FTOL = 1e-15  # relative decrease of RER: a stop only for stalls
PACTRAN_MAX_ITER = 500

# ETran
ETRAN_ENERGY_PER_MILLE = 5
ETRAN_SHRINK_RATE = 5.0
ETRAN_MIN_SHRINKAGE = 1e-10

# PARC
PARC_DIMENSIONS = 32
PARC_MAX_ROWS = 5_000
PARC_BLOCK_ELEMENTS = 1 << 22  # entries of one block of pairs (32 MB in float64)

# numerics
FEW_DISTINCT = 4_096  # fewer distinct values than this are ranked by lookup, not by argsort
DENSE_EIGEN_SIZE = 256  # larger symmetric matrices get Lanczos for a few top eigenpairs


# ------------------------------------------------------------------------------------ shared helpers


def class_rows(data: MetricInput, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(train features, train labels, C) with at least MIN_ROWS_PER_CLASS train rows in every class."""
    features, labels, n_classes = train_rows(data, metric)
    counts = np.bincount(labels, minlength=n_classes)
    if counts.min() < MIN_ROWS_PER_CLASS:
        c = int(np.argmin(counts))
        raise MetricNotApplicable(f"{metric}: needs at least {MIN_ROWS_PER_CLASS} train rows in every class "
                                  f"(class {c} has {int(counts[c])})")
    return features, labels, n_classes


def smaller_gram(matrix: np.ndarray) -> np.ndarray:
    """M^T M or M M^T, whichever is smaller: both have the same nonzero eigenvalues."""
    n, d = matrix.shape
    return matrix.T @ matrix if n >= d else matrix @ matrix.T


def largest_eigen(gram: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenpairs of a symmetric PSD matrix, largest first: dense for small matrices,
    else Lanczos (ARPACK) to machine precision from a fixed start vector."""
    size = len(gram)
    if size <= DENSE_EIGEN_SIZE or 4 * k >= size:
        w, v = np.linalg.eigh(gram)
        return w[::-1][:k], v[:, ::-1][:, :k]
    from scipy.sparse.linalg import eigsh

    w, v = eigsh(gram, k=k, which="LA", v0=np.random.default_rng(0).normal(size=size))
    order = np.argsort(w)[::-1]
    return w[order], v[:, order]


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


# ------------------------------------------------------------------------------------ transrate


def transrate_rows(features: np.ndarray) -> np.ndarray:
    """Z: unit-norm rows, centred, unit-norm again (the authors' repository, non-projected path)."""
    z = unit_rows(features)
    return unit_rows(z - z.mean(axis=0))


def coding_rate(z: np.ndarray, eps2: float = TRANSRATE_EPS2) -> float:
    """R(Z) = 1/2 logdet(I + G / (n eps^2)), G the smaller Gram matrix: the sum of log diag of its Cholesky factor."""
    gram = smaller_gram(z)
    factor = np.linalg.cholesky(np.eye(len(gram)) + gram / (len(z) * eps2))
    return float(np.sum(np.log(np.diag(factor))))


def transrate(features: np.ndarray, labels: np.ndarray, n_classes: int, eps2: float = TRANSRATE_EPS2) -> float:
    """TrR = R(Z) - sum_c n_c / n R(Z_c) on the normalised rows Z."""
    z = transrate_rows(features)
    n = len(z)
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=n_classes))[:-1]
    conditional = sum(len(rows) / n * coding_rate(z[rows], eps2) for rows in np.split(order, bounds))
    return coding_rate(z, eps2) - conditional


# ------------------------------------------------------------------------------------ pactran


@dataclass(frozen=True)
class PacTranFit:
    """The PACTran-Gaussian bound and its parts at the optimised head."""

    bound: float
    risk: float  # RER(theta*): mean cross-entropy + |W|^2 / (2 beta sigma0^2)
    hessian_trace: float  # tr(H) of the mean cross-entropy in W
    weights: np.ndarray  # (d, C)
    bias: np.ndarray  # (C,)
    iterations: int
    converged: bool


def pactran_gaussian(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                     lam: float = PACTRAN_LAMBDA, prior_scale: float = PACTRAN_PRIOR_SCALE) -> PacTranFit:
    """Fit the softmax head by L-BFGS on RER, then add the Gaussian PAC-Bayes term (module docstring)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    x = features - features.mean(axis=0)
    n, d = x.shape
    k = n_classes
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0
    ridge = lam * n  # beta sigma0^2

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k:]
        log_p = log_softmax(x @ w + b, axis=1)
        gradient = (np.exp(log_p) - onehot) / n
        value = -np.mean(log_p[np.arange(n), labels]) + 0.5 * float(np.sum(w * w)) / ridge
        return value, np.concatenate([(x.T @ gradient + w / ridge).ravel(), gradient.sum(axis=0)])

    rng = np.random.default_rng(seed)
    start = np.concatenate([(PACTRAN_INIT_STD * rng.normal(size=(d, k))).ravel(), np.zeros(k)])
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": PACTRAN_MAX_ITER, "gtol": PACTRAN_GTOL, "ftol": PACTRAN_FTOL})
    if not result.success:
        warnings.warn(f"pactran: L-BFGS stopped before converging ({result.nit} iterations, at most "
                      f"{PACTRAN_MAX_ITER}: {result.message}); the bound uses the last iterate",
                      RuntimeWarning, stacklevel=3)
    w, b = result.x[: d * k].reshape(d, k), result.x[d * k:]
    risk, _ = objective(result.x)
    p = np.exp(log_softmax(x @ w + b, axis=1))
    trace = float(np.sum((x * x).sum(axis=1) * (p * (1.0 - p)).sum(axis=1)) / n)
    beta = ridge / (prior_scale / d)
    params = d * k
    bound = risk + params / (2.0 * beta) * float(np.log1p(ridge * trace / params))
    return PacTranFit(float(bound), float(risk), trace, w, b, int(result.nit), bool(result.success))


# ------------------------------------------------------------------------------------ etran


def energy_score(features: np.ndarray) -> float:
    """S_en: mean of the lowest max(1, floor(5n/1000)) row energies logsumexp_j f_ij."""
    from scipy.special import logsumexp

    energies = logsumexp(features, axis=1)
    count = max(1, ETRAN_ENERGY_PER_MILLE * len(energies) // 1000)
    return float(np.mean(np.partition(energies, count - 1)[:count]))


def lda_score(features: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """S_cls: mean posterior of the true class under shrunk shared-covariance Gaussian classes."""
    from scipy.linalg import cho_factor, cho_solve
    from scipy.special import log_softmax

    n, d = features.shape
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    means = np.eye(n_classes)[labels].T @ features / counts[:, None]
    within = features - means[labels]  # S_w = within^T within / n
    gram = smaller_gram(within)
    largest = float(largest_eigen(gram, 1)[0][0]) / n
    if largest <= 0:
        raise MetricNotApplicable("etran: every train row equals its class mean (no within-class spread)")
    shrinkage = max(float(np.exp(-ETRAN_SHRINK_RATE * largest)), ETRAN_MIN_SHRINKAGE)
    floor = shrinkage * float(np.trace(gram)) / n / d  # a tr(S_w) / d
    if n >= d:  # S = (1 - a) S_w + floor I, d x d
        coef = cho_solve(cho_factor((1.0 - shrinkage) / n * gram + floor * np.eye(d)), means.T)
    else:  # Woodbury through the n x n Gram matrix: S^-1 = (I - c W^T (I + c W W^T)^-1 W) / floor
        c = (1.0 - shrinkage) / (n * floor)
        inner = cho_solve(cho_factor(np.eye(n) + c * gram), within @ means.T)
        coef = (means.T - c * (within.T @ inner)) / floor  # S^-1 mu_c, (d, C)
    logits = features @ coef - 0.5 * np.sum(means.T * coef, axis=0) + np.log(counts / n)
    return float(np.mean(np.exp(log_softmax(logits, axis=1)[np.arange(n), labels])))


# ------------------------------------------------------------------------------------ parc


def parc_components(features: np.ndarray) -> np.ndarray:
    """The rows' top-32 principal component scores, each component scaled to unit variance."""
    x = features - features.mean(axis=0)
    n, d = x.shape
    gram = smaller_gram(x)
    values, vectors = largest_eigen(gram, min(PARC_DIMENSIONS, len(gram)))
    if values[0] <= 0:
        raise MetricNotApplicable("parc: the train features are constant")
    keep = values > values[0] * max(n, d) * np.finfo(np.float64).eps  # the rank of x
    values, vectors = values[keep], vectors[:, keep]
    if n < d:
        vectors = x.T @ vectors / np.sqrt(values)  # right singular vectors from the left ones
    largest = np.argmax(np.abs(vectors), axis=0)
    vectors = vectors * np.sign(vectors[largest, np.arange(vectors.shape[1])])  # scikit-learn's signs
    scores = x @ vectors
    return scores / scores.std(axis=0)


def parc_labels(data: MetricInput, rows: np.ndarray) -> np.ndarray:
    """The train rows' label vectors: one-hot, 0/1 rows, or per-column standardised targets."""
    labels = np.asarray(data.labels)
    n = len(data.features)
    if data.target == TARGET_CLASSIFICATION:
        n_classes = train_rows(data, "parc")[2]  # checks the class indices
        return np.eye(n_classes)[labels[rows]]
    if labels.ndim != 2 or labels.shape[0] != n or labels.shape[1] < 1 or labels.dtype.kind not in "fiub":
        raise ValueError(f"parc: {data.target} labels must be an (n={n}, k) matrix, got {labels.dtype} {labels.shape}")
    values = labels[rows].astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("parc: labels hold NaN or infinite values")
    if data.target == TARGET_MULTI_LABEL:
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError("parc: multi-label labels must be 0/1")
        return values
    spread = values.std(axis=0)
    if not np.any(spread > 0):
        raise MetricNotApplicable("parc: every regression target is constant over the train rows")
    keep = spread > 0
    return (values[:, keep] - values[:, keep].mean(axis=0)) / spread[keep]


def pair_dissimilarities(rows: np.ndarray, kind: str) -> np.ndarray:
    """D[i, j] for i < j in row-major order: 1 - pearson(rows i, j), or the squared Euclidean distance."""
    n, width = rows.shape
    if kind == "pearson":
        centred = rows - rows.mean(axis=1, keepdims=True)
        flat = np.abs(centred).max(axis=1) <= 1e-12 * np.abs(rows).max(axis=1)
        unit = unit_rows(np.where(flat[:, None], 0.0, centred))
        # Constant rows correlate 1 with constant rows of the same value, 0 with anything else.
        constant = np.full(n, -1)
        if flat.any():
            constant[flat] = np.unique(rows[flat, 0], return_inverse=True)[1]
    out = np.empty(n * (n - 1) // 2)
    block = max(1, PARC_BLOCK_ELEMENTS // max(1, n * (width if kind == "euclidean" else 1)))
    position = 0
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        if kind == "pearson":
            part = 1.0 - unit[start:stop] @ unit[start:].T
            tied = (constant[start:stop, None] >= 0) & (constant[start:stop, None] == constant[None, start:])
            part[tied] = 0.0
        else:
            part = ((rows[start:stop, None, :] - rows[None, start:, :]) ** 2).sum(axis=2)
        for r in range(stop - start):
            length = n - start - r - 1
            out[position:position + length] = part[r, r + 1:]
            position += length
    return out


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy's rankdata 'average'), with less sorting."""
    n = len(values)
    ordered = np.sort(values)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    averages = starts + (np.diff(np.r_[starts, n]) + 1) / 2.0
    if len(starts) <= FEW_DISTINCT:  # e.g. class labels: look each value up among the distinct ones
        return averages[np.searchsorted(ordered[starts], values)]
    del ordered
    order = np.argsort(values)
    ranks = np.empty(n)
    if len(starts) == n:
        ranks[order] = np.arange(1.0, n + 1.0)
    else:
        group = np.zeros(n, dtype=np.int64)
        group[starts[1:]] = 1
        ranks[order] = averages[np.cumsum(group)]
    return ranks


def parc(data: MetricInput) -> float:
    """PARC's rho on the train rows (a seeded subsample of PARC_MAX_ROWS above that)."""
    features = np.asarray(data.features)
    train = np.asarray(data.train)
    if features.ndim != 2 or features.dtype.kind not in "fiu" or train.shape != (len(features),) or train.dtype != bool:
        raise ValueError(f"parc: needs real (n, d) features and an (n,) boolean train mask, "
                         f"got {features.dtype} {features.shape} and {train.dtype} {train.shape}")
    rows = np.flatnonzero(train)
    if len(rows) > PARC_MAX_ROWS:
        rows = np.sort(np.random.default_rng(data.seed).choice(rows, PARC_MAX_ROWS, replace=False))
    if len(rows) < 3:
        raise MetricNotApplicable(f"parc: needs at least 3 train rows, got {len(rows)}")
    labels = parc_labels(data, rows)
    x = features[rows].astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("parc: features hold NaN or infinite values")
    ranks = []  # one vector of n(n-1)/2 pairs at a time: its dissimilarities are dropped once ranked
    for name, rows_of, kind in (("label", labels, "euclidean" if data.target == TARGET_REGRESSION else "pearson"),
                                ("feature", parc_components(x), "pearson")):
        pairs = pair_dissimilarities(rows_of, kind)
        if np.all(pairs == pairs[0]):
            raise MetricNotApplicable(f"parc: every pair of train rows has the same {name} dissimilarity")
        rank = average_ranks(pairs)
        del pairs
        rank -= rank.mean()
        ranks.append(rank)
    return float(ranks[0] @ ranks[1] / np.sqrt((ranks[0] @ ranks[0]) * (ranks[1] @ ranks[1])))


# ------------------------------------------------------------------------------------ metrics


class TransRate(Metric):
    """Coding rate of the normalised features minus their class-conditional coding rate."""

    name = "transrate"
    version = "1"
    description = "TransRate: coding rate R(Z) minus class-conditional R(Z|Y), unit-norm centred rows, eps^2 1e-4"

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = class_rows(data, self.name)
        return transrate(features, labels, n_classes)


class PacTran(Metric):
    """PACTran-Gaussian bound of a softmax head on the centred features; lower is better."""

    name = "pactran"
    version = "1"
    description = "PACTran-Gaussian: PAC-Bayes bound of an L-BFGS softmax head (lambda 0.1, sigma0^2 10/d); lower is better"
    higher_is_better = False
    imports = ("scipy.optimize", "scipy.special")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = class_rows(data, self.name)
        return pactran_gaussian(features, labels, n_classes, data.seed).bound


class ETran(Metric):
    """Energy score of the features plus the LDA classification score."""

    name = "etran"
    version = "1"
    description = "ETran: energy score (lowest 0.5% logsumexp) plus shrunk-LDA classification score"
    imports = ("scipy.linalg", "scipy.sparse.linalg", "scipy.special")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = class_rows(data, self.name)
        return energy_score(features) + lda_score(features, labels, n_classes)


class Parc(Metric):
    """Spearman correlation of the feature and label dissimilarity matrices' upper triangles."""

    name = "parc"
    version = "1"
    description = "PARC: Spearman rho of 1-Pearson dissimilarities of PCA-32 features and of label vectors"
    targets = frozenset({TARGET_CLASSIFICATION, TARGET_MULTI_LABEL, TARGET_REGRESSION})
    imports = ("scipy.sparse.linalg",)

    def score(self, data: MetricInput) -> float:
        return parc(data)


METRICS: tuple[type[Metric], ...] = (TransRate, PacTran, ETran, Parc)


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in METRICS:
        register(metric)
