"""N-LEEP: LEEP with a Gaussian mixture fitted to the features in place of the checkpoint's head.

nleep - N-LEEP (Li, Jia, Sang, Zhu, Green, Wang and Gong, "Ranking Neural Checkpoints", CVPR 2021).
    A Gaussian mixture fitted to the train features plays LEEP's source head. With theta_T its
    posterior over the K components at temperature T,
        theta_T(x)_z = softmax_z( log( pi_z N(x; mu_z, Sigma_z) ) / T ),
        P(y, z) = (1/n) sum_{j: y_j = y} theta_T(x_j)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),
        N-LEEP = (1/n) sum_j log( sum_z P(y_j | z) theta_T(x_j)_z )        (`leep` of metrics.py).
    It needs no head; classification tasks only. N-LEEP <= 0; features whose mixture tells
    nothing about the labels (T = infinity, a uniform posterior) score -H(Y), minus the entropy
    of the train labels.

Settings (version 2)
* PCA (scikit-learn's, fitted on the train rows; eigenvectors of the covariance when n >= d,
  else the SVD of the centred rows): the leading components that explain 80% of the variance,
  as in the paper, but at most p = 32.
* K = 5C components, as in the paper. K = 5C needs about two train rows per component, so
  K = C x min(5, floor(n / 2C)), and under 2C train rows the metric is not applicable (with a
  component per row the posterior is one-hot and N-LEEP tends to 0 whatever the features).
* Diagonal covariances; k-means initialisation seeded with `data.seed`; at most 1,000 EM
  iterations, tol 1e-3 (scikit-learn's, on the per-row lower bound), a RuntimeWarning if EM
  does not converge; reg_covar = 1e-6 times the mean variance of the PCA scores (scikit-learn's
  default is an absolute 1e-6), so that the score does not depend on the feature scale.
* T: of 2^(k/2) for k = -4..28 (1/4 to 16,384) and infinity, the one with the highest held-out
  LEEP, the lowest on a tie. The train rows of each class alternate between two folds, in a
  seeded random order (one key per row, so renaming the classes changes nothing); P(y | z) from
  one fold's posteriors scores the other fold's rows, and the reverse; rows of a class that the
  other fold lacks are left out of this criterion. The mixture is fitted once, on all the train
  rows: the folds only choose T, then N-LEEP is the formula above on all the train rows. This is
  temperature scaling (Guo, Pleiss, Sun and Weinberger, ICML 2017) with LEEP's own likelihood.

Why version 2. Version 1 was the same without the cap (p = 42 to 436 on the features below) and
at T = 1. Measured with `nice -n 10 .venv/bin/python benchmarks/nleep_posterior.py` (`--sweep`
for the cap, `--covariances` for the covariance types): synthetic class-structured features
with decaying spectra, and the zoo's real ones - MiniLM-L6 (pretrained and randomly
initialised) on BBC News topics, EfficientNet-Lite0 (ImageNet and random) on the scikit-learn
digits; noise is Gaussian with the features' per-dimension variance; all rows are train rows.

    features (n, d, C)              mean max posterior   N-LEEP v1 / v2    noise v1 / v2    -H(Y)
    synthetic (2,000, 512, 10)          0.996 / 0.869    -0.628 / -0.593   -2.176 / -2.301  -2.303
    synthetic (2,000, 512, 20)          0.999 / 0.856    -1.019 / -0.971   -2.539 / -2.996  -2.996
    synthetic (5,000, 2,048, 100)       1.000 / 0.630    -1.676 / -1.985   -3.031 / -4.605  -4.605
    MiniLM-L6, BBC (2,225, 384, 5)      0.990 / 0.878    -0.355 / -0.290   -1.577 / -1.599  -1.602
      random-init                       0.971 / 0.737    -1.386 / -1.373   -1.581 / -1.602
    Lite0, digits (1,797, 1,280, 10)    0.989 / 0.882    -0.572 / -0.562   -2.172 / -2.302  -2.302
      random-init                       0.999 / 0.916    -0.494 / -0.574   -2.168 / -2.302

* One-hot posteriors. Log-likelihood differences between components are sums over the p
  coordinates, and each component's mean and variances come from n / K rows (40 at n = 2,000,
  C = 10; 10 at n = 5,000, C = 100): at p in the hundreds the estimation noise alone puts the
  components many nats apart, and version 1's posterior was one-hot for features and noise
  alike. No covariance type avoids it, only a lower p does: on the synthetic (2,000, 512, 10)
  features the mean max posterior at p = 64 / 32 / 8 is 1.000 / 1.000 / 0.932 with full
  covariances (the public references' choice), 0.942 / 0.859 / 0.693 tied, 0.976 / 0.931 /
  0.761 diagonal, 0.967 / 0.914 / 0.732 spherical.
* Noise above its floor. With hard clusters N-LEEP is -H(Y | cluster) with P(y | z) fitted to
  the rows it scores, which lifts pure noise: by 0.13 nats at C = 10 and 0.46 at C = 20 (close
  to the K (C - 1) / 2n of a plug-in entropy), by 1.57 at C = 100, where noise scored -3.03 and
  class-structured features -1.68.
* The cap. The held-out LEEP of the calibrated posterior against p (4, 8, 16, 32, 64, 80%) is
  best at p = 16 or 32 on the synthetic and BBC features and at the 80% dimension on the digits
  (42 and 114 there). p = 32 is within 0.09 nats of each setting's best; the 80% dimension
  loses 0.02 to 0.09 on the other four, and 1.57 against p = 32 at n = 5,000, C = 100 (-4.28,
  hardly above the floor -4.61, against -2.71): 436 dimensions from 10 rows a component give a
  mixture fitted to noise, whatever its temperature.
* The temperature. At p = 32 the mixture's own posterior is still near one-hot (0.93 on the
  synthetic C = 10 features, above) and noise still scores above its floor. The calibrated T
  is 1.4 to 4 on features (mean max posterior 0.63 to 0.92) and 4 to infinity on noise, which
  then scores its floor within 0.003. Features lose the in-sample lift too (-1.68 to -1.99 at
  C = 100). The pretrained MiniLM stays far above its random initialisation; on the digits the
  randomly initialised EfficientNet, 0.08 ahead in version 1, falls 0.01 behind the pretrained.
* Diagonal covariances, as in version 1: once p is capped and T calibrated the type matters
  little, and diagonal ones are estimable from n / K rows and cost O(n K p) an EM step (full
  ones O(n K p^2), and one-hot down to p = 8).

References. The paper (as far as its text could be checked) gives the PCA to 80% and K = 5C, and
no covariance type. TencentARC/SFDA (`metrics.NLEEP`) and google-research stable_transfer
(`pca_reduction` 0.8, then `nleep.get_nleep_score`) call scikit-learn's GaussianMixture with its
defaults: full covariances, an absolute reg_covar of 1e-6, 100 EM iterations; SFDA unseeded and
returning the mean expected probability without the log (the LEEP pitfall of METHODS.md),
stable_transfer seeded with 123 and with the log. Neither caps p nor calibrates the posterior. At
n = 600, d = 64, C = 6 (p = 26, 20 rows a component; tests/test_nleep.py) their posterior is
one-hot (mean max 1.000) and noise scores -1.66 against its floor -1.79; here -1.79, and the
class-structured features -1.08 (stable_transfer -1.02).

Cost at n = 5,000, d = 2,048, C = 100: 37 s for version 2 and 45 s for version 1, on a shared
2-core machine at a load average of 8.5 (twice each, interleaved); the exact PCA (the
2,048 x 2,048 covariance and its eigendecomposition) took 24 s of it, the temperature search
(34 posteriors of 5,000 x 500 and their fold LEEPs) a few seconds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import Metric, MetricInput, MetricNotApplicable
from hubindex_plugins.metrics import leep, train_rows

NLEEP_VARIANCE = 0.8  # PCA keeps the components that explain this share of the variance ...
NLEEP_MAX_DIMENSIONS = 32  # ... and at most this many of them
NLEEP_COMPONENTS_PER_CLASS = 5
NLEEP_ROWS_PER_COMPONENT = 2
NLEEP_COVARIANCE = "diag"
NLEEP_MAX_ITER = 1_000
NLEEP_REG_COVAR = 1e-6  # relative to the mean variance of the PCA scores
# Candidate temperatures of the posterior: 2^(k/2) from 1/4 to 16,384, then infinity (uniform).
NLEEP_TEMPERATURES: tuple[float, ...] = (*(2.0 ** (k / 2) for k in range(-4, 29)), math.inf)


@dataclass(frozen=True)
class NLeepFit:
    """N-LEEP's pieces: the score, the calibrated posterior (n, K), its held-out LEEP and the settings."""

    score: float
    posterior: np.ndarray
    temperature: float
    heldout: float  # the two-fold held-out LEEP at that temperature
    dimensions: int
    components: int
    converged: bool


def nleep_components(n_train: int, n_classes: int) -> int:
    """Number of mixture components: 5C, fewer (a multiple of C) when there are under 2 rows per component."""
    per_class = min(NLEEP_COMPONENTS_PER_CLASS, n_train // (NLEEP_ROWS_PER_COMPONENT * n_classes))
    if per_class < 1:
        raise MetricNotApplicable(
            f"nleep: needs at least {NLEEP_ROWS_PER_COMPONENT * n_classes} train rows for {n_classes} classes "
            f"({NLEEP_ROWS_PER_COMPONENT} per mixture component), got {n_train}")
    return per_class * n_classes


def pca_scores(features: np.ndarray, max_dimensions: int | None) -> np.ndarray:
    """PCA scores of the rows: the components explaining 80% of the variance, at most max_dimensions."""
    from sklearn.decomposition import PCA

    # Eigenvectors of the d x d covariance are much cheaper than an SVD of the rows when n >= d.
    solver = "covariance_eigh" if features.shape[0] >= features.shape[1] else "full"
    scores = PCA(n_components=NLEEP_VARIANCE, svd_solver=solver).fit_transform(features)
    return scores if max_dimensions is None else scores[:, :max_dimensions]


def diagonal_log_weights(mixture: Any, scores: np.ndarray) -> np.ndarray:
    """log( pi_k N(x_j; mu_k, diag(var_k)) ), (n, K), from a fitted diagonal-covariance mixture."""
    precisions = 1.0 / mixture.covariances_  # (K, p)
    means = mixture.means_
    # sum_i (x_i - mu_ki)^2 / var_ki expanded into products: an (n, K, p) array would not fit at 5C = 500.
    squared = (scores**2 @ precisions.T - 2.0 * scores @ (means * precisions).T
               + np.sum(means**2 * precisions, axis=1))
    log_det = -np.log(precisions).sum(axis=1)
    return np.log(mixture.weights_) - 0.5 * (squared + log_det + scores.shape[1] * math.log(2 * math.pi))


def tempered_posterior(log_weights: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log_weights / T) over the components; T = infinity gives the uniform posterior."""
    if math.isinf(temperature):
        return np.full(log_weights.shape, 1.0 / log_weights.shape[1])
    scaled = log_weights / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    posterior = np.exp(scaled)
    return posterior / posterior.sum(axis=1, keepdims=True)


def two_folds(labels: np.ndarray, seed: int) -> np.ndarray:
    """A fold mark (True/False) per row: each class's rows alternate between the folds in a seeded order.

    The order comes from one random key per row, so renaming the classes does not change the folds.
    """
    keys = np.random.default_rng(seed).permutation(len(labels))
    order = np.lexsort((keys, labels))  # rows by class, then by key
    rank = np.empty(len(labels), dtype=np.int64)
    starts = np.searchsorted(labels[order], labels[order])  # first position of each row's class
    rank[order] = np.arange(len(labels)) - starts
    return rank % 2 == 1


def label_given_component(posterior: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """P(y | z) (C, K) of LEEP from the rows' posteriors; 0 for a component that holds no mass."""
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    joint = np.zeros((n_classes, posterior.shape[1]))
    joint[present] = np.add.reduceat(posterior[order], starts, axis=0)  # np.add.at is ten times slower
    marginal = joint.sum(axis=0)
    return np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)


def heldout_leep(posterior: np.ndarray, labels: np.ndarray, n_classes: int, fold: np.ndarray) -> float:
    """LEEP of each fold's rows with P(y | z) taken from the other fold, over the rows whose class both folds hold."""
    total, rows = 0.0, 0
    for held in (fold, ~fold):
        conditional = label_given_component(posterior[~held], labels[~held], n_classes)
        scored = held & np.isin(labels, labels[~held])
        expected = np.einsum("jz,jz->j", posterior[scored], conditional[labels[scored]])
        with np.errstate(divide="ignore"):
            total += float(np.sum(np.log(expected)))
        rows += int(scored.sum())
    return total / rows if rows else -math.inf


def calibrated_temperature(log_weights: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
                           temperatures: tuple[float, ...]) -> tuple[float, float]:
    """(T, held-out LEEP at T): the candidate with the highest two-fold held-out LEEP, the lowest on a tie."""
    fold = two_folds(labels, seed)
    values = [heldout_leep(tempered_posterior(log_weights, t), labels, n_classes, fold) for t in temperatures]
    best = int(np.argmax(values))
    return temperatures[best], values[best]


def nleep_fit(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int,
              max_dimensions: int | None = NLEEP_MAX_DIMENSIONS,
              temperatures: tuple[float, ...] = NLEEP_TEMPERATURES) -> NLeepFit:
    """N-LEEP of train features and labels (see the module docstring).

    max_dimensions=None and temperatures=(1.0,) give version 1 of the metric: every component up
    to 80% of the variance and the mixture's own posterior.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    n_components = nleep_components(len(labels), n_classes)
    if not np.any(features.var(axis=0) > 0):
        raise MetricNotApplicable("nleep: the train features are constant")
    scores = pca_scores(features, max_dimensions)
    mixture = GaussianMixture(
        n_components=n_components,
        covariance_type=NLEEP_COVARIANCE,
        reg_covar=NLEEP_REG_COVAR * float(scores.var(axis=0).mean()),
        max_iter=NLEEP_MAX_ITER,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported by the caller, with the metric's name
        mixture.fit(scores)
    log_weights = diagonal_log_weights(mixture, scores)
    temperature, heldout = calibrated_temperature(log_weights, labels, n_classes, seed, temperatures)
    posterior = tempered_posterior(log_weights, temperature)
    return NLeepFit(leep(posterior, labels, n_classes), posterior, temperature, heldout, scores.shape[1],
                    n_components, bool(mixture.converged_))


class NLeep(Metric):
    """LEEP with a seeded Gaussian mixture on PCA features, its posterior calibrated by a temperature, as head."""

    name = "nleep"
    version = "2"
    description = ("N-LEEP: LEEP with a Gaussian mixture posterior (PCA 80% up to 32 dimensions, 5 x C "
                   "components, temperature calibrated on held-out rows) as head")
    imports = ("sklearn.decomposition", "sklearn.exceptions", "sklearn.mixture")

    def score(self, data: MetricInput) -> float:
        features, labels, n_classes = train_rows(data, self.name)
        fit = nleep_fit(features, labels, n_classes, data.seed)
        if not fit.converged:
            warnings.warn(f"{self.name}: the Gaussian mixture did not converge in {NLEEP_MAX_ITER} EM iterations; "
                          "the score uses the last iterate", RuntimeWarning, stacklevel=2)
        return fit.score


METRICS: tuple[type[Metric], ...] = (NLeep,)


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in METRICS:
        register(metric)
