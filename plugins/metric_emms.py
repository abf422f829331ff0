"""EMMS (Meng, Shao, Peng, Jiang, Zhang, Qiao and Luo, "Foundation Model is Efficient Multimodal
Multitask Model Selector", NeurIPS 2023, arXiv:2308.06262; reference implementation: github
OpenGVLab/Multitask-Model-Selector, `EMMS` in metrics.py): how well a weighted linear regression
of one checkpoint's frozen features fits label embeddings.

Labels of any kind are turned into F-labels: foundation models (the paper: CLIP's text encoder,
BERT, GPT-2) embed each label as text, and their K embeddings are taken as noisy oracles of one
true label embedding z, itself a linear function of the features. The maximum-likelihood fit is a
weighted linear square regression (WLSR); the score is its negative residual:

    EMMS = - min_{w in R^{d x D}, t in simplex_K} 1/(N D) |X w - sum_k t_k Z_k|_F^2,

X (N x d) the train features and Z_k (N x D) the targets of encoder k, both standardised per
column over the N train rows; t_k >= 0, sum_k t_k = 1 weigh the encoders. The per-entry mean
makes the score a number in [-1, 0] (each target column of sum_k t_k Z_k has variance <= 1, and
X's least-squares fit leaves at most that): with K = 1 it is -(1 - mean over columns of the
in-sample R^2 of an ordinary least-squares fit with intercept). Higher is better.

Targets, per task kind (MetricInput.target):
* classification: Z_k = E_k[y], the embedding of each row's class name by encoder k
  (label_embeddings[k], C x e_k, one row per class in class order);
* multi-label: the mean of the embeddings of the row's positive classes; a row with no positive
  class gets the mean of all C class embeddings (the "no label" row must map to some point, and
  this one moves with the embeddings: the score does not depend on where their origin is);
* regression: Z = the label columns themselves (K = 1); no label embeddings are needed and any
  given are ignored.
`needs` has "label-embeddings": the core supplies them, for classification and multi-label tasks
only, when a run names `--label-encoder CHECKPOINT` (hubindex.scoring.uses_label_embeddings; a
regression task is scored without them). `score` itself also raises MetricNotApplicable when a
classification or multi-label input comes without them.

How it is computed here (every step is exact; none is randomised unless the widths differ):
* Standardisation, as in the reference: each feature column and each target column is centred
  and divided by its standard deviation (ddof 0) over the train rows. Centring the features is
  fitting an intercept. A column whose standard deviation is below n eps (features) or
  sqrt(eps) (targets) times its largest absolute value is constant and is set to zero. The
  reference divides by std + 1e-8 instead: that keeps a column of standard deviation 1e-9 but
  shrinks it, so its scores change with the units of the inputs; these do not.
* Exact minimum instead of alternating minimisation. The objective is a convex quadratic of
  (w, t) jointly, and w is unconstrained: for a given t the best w leaves the part of
  sum_k t_k Z_k outside the column space of X, so with R_k = (I - P_X) Z_k
      min_w |X w - Z t|^2 = t^T G t,   G_kl = <R_k, R_l>_F,
  and the score is -min_{t in simplex} t^T G t / (N D), a K-variable quadratic program solved
  exactly (every support of t: the equality-constrained minimiser on it, by the KKT system;
  the best feasible one wins, the sparsest among equals). This is the point the paper's
  alternating minimisation converges to; no iteration count or stopping rule is involved.
  At most 12 encoders (4,095 supports).
* The projection never forms the N x D targets' residuals: every target is a linear map of a
  small design matrix A (N x q: one-hot rows, normalised multi-hot rows, or the standardised
  regression labels), Z_k = A_c Ehat_k, so R_k = [(I - P_X) A_c] Ehat_k and
  G_kl = sum( (M Ehat_k) * Ehat_l ) with M = R_A^T R_A, q x q. (I - P_X) A_c comes from a
  rank-revealing factorisation of the standardised features: when N >= d, the Cholesky factor
  with complete pivoting (LAPACK dpstrf) of the d x d Gram matrix, tolerance max(N, d) eps (a
  column closer than sqrt(max(N, d) eps) ~ 1e-6 of unit norm to the span of the others adds no
  direction: below float32 precision, in which features are stored), and the projection done
  twice (the second pass removes what the Gram's rounding left in the span); when N < d, a
  column-pivoted QR of the features, rank at |r_ii| > |r_11| max(N, d) eps as in
  numpy.linalg.lstsq.
* Interpolation: when the features' rank reaches N - 1 (always when d >= N - 1 for generic
  features) they fit every centred target exactly, the residual is 0 whatever the labels, and
  the metric is not applicable. Close to it the score is biased upward by overfitting: for
  features unrelated to the labels its expected value is about -(1 - r / (N - 1)); compare
  checkpoints on tasks with N well above d (the paper's tasks have tens of thousands of rows).
* Encoders of different widths. The reference needs one width: it stacks the targets as
  (N, D, K) and picked three 1,024-wide encoders (bert-large-uncased, gpt2-medium's mean-pooled
  last hidden state, the text features of laion CLIP-ViT-g-14; saved "_nonorm", i.e. not
  L2-normalised: the normalisation line is commented out). Its sum_k t_k Z_k adds coordinate j
  of one encoder to coordinate j of another - unrelated coordinates, as the paper's model
  (z^k = z + noise, in shared coordinates) implies. Here, when the widths differ, each encoder
  wider than the narrowest (width D) is multiplied by a D-column Gaussian matrix drawn from
  numpy.random.default_rng(seed) in encoder order - a random coordinate system, no less related
  than the reference's - and the targets are standardised after that. Equal widths use the
  embeddings as given (no randomness). Embeddings are not L2-normalised (column
  standardisation makes a per-encoder scale irrelevant anyway).
* A property of the objective, kept as published: the residual is absolute, so mixing encoders
  whose residuals are uncorrelated shrinks it (G diagonal: min = 1 / sum_k 1/G_kk, below every
  single encoder's). Scores with different numbers of encoders are not comparable; with one set
  of encoders for a task, the ranking of checkpoints is what the score is for.

What the reference implementation does differently (numbers in tests/test_metric_emms.py):
* One round of alternating minimisation (`for k in range(1)`): w by least squares on the
  uniform mix t = 1/K; t by unconstrained least squares given that w, then sparsemax (the
  Euclidean projection onto the simplex - not the simplex-constrained least-squares minimiser,
  which weighs directions by the targets' Gram matrix); and the residual is taken between the
  first w and the second t, a point that neither step minimised. Its residual is therefore
  never below the minimum computed here, and is above it whenever the encoders disagree (three
  random 5-wide encoders, N = 240, d = 12: -0.11142 against -0.10912). Even iterated to its
  fixed point, that t-step stops short (-0.11134 there): the unconstrained t need not sum to 1,
  and projecting it is not minimising over the simplex. (The paper proves that its alternating
  algorithm converges; the value it converges to is what is computed here when each step is an
  exact minimisation.)
* `np.sum((y_pred - T)**2) / N*D2` evaluates as (sum / N) * D2: the value is D^2 times the
  per-entry mean (about 10^6 with its 1,024-wide encoders). Within one task and one set of
  encoders the factor is constant and rankings agree; across tasks values are not comparable.
  Here the sum is divided by N D.
* It scores all rows it is given (no train split), standardises its label-embedding argument
  in place, and with N <= d returns -0 (lstsq interpolates) for every checkpoint.
With one encoder (or K identical ones) and N > d its value is D^2 times this one, up to its
std + 1e-8 (2e-8 relative for targets of unit scale).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import (
    NEEDS_LABEL_EMBEDDINGS,
    TARGET_CLASSIFICATION,
    TARGET_MULTI_LABEL,
    TARGET_REGRESSION,
    Metric,
    MetricInput,
    MetricNotApplicable,
)
from hubindex_plugins.metrics import features_and_train, train_rows

NAME = "emms"
MISSING_EMBEDDINGS = f"{NAME}: needs label embeddings (score with --label-encoder CHECKPOINT)"
MAX_ENCODERS = 12
EPS = np.finfo(np.float64).eps
# A target column varying by less than this times its largest value is constant (float32 data
# cannot vary that little).
TARGET_CONSTANT = np.sqrt(EPS)
# Sparser weights win unless a larger support lowers the objective by more than this times max_k G_kk.
SIMPLEX_TIE = 1e-12


@dataclass(frozen=True)
class EMMSFit:
    """The minimised WLSR: its score, the encoder weights t and the residual Gram matrix G / (N D)."""

    score: float
    weights: np.ndarray  # (K,) on the simplex
    gram: np.ndarray  # (K, K): <R_k, R_l>_F / (N D)
    rank: int  # rank of the centred train features
    width: int  # D, columns of each encoder's targets


# ------------------------------------------------------------------------------------ linear algebra


def feature_residual(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """(targets minus their least-squares fit by the centred features, rank of those features).

    `targets` must be centred (their columns sum to 0), so the features' intercept adds nothing.
    """
    from scipy.linalg import qr, solve_triangular
    from scipy.linalg.lapack import dpstrf

    n = features.shape[0]
    centred = features - features.mean(axis=0)
    norms = np.sqrt(np.einsum("ij,ij->j", centred, centred))
    varying = norms > np.sqrt(n) * n * EPS * np.abs(features).max(axis=0, initial=0.0)
    unit = centred[:, varying] / norms[varying]
    d = unit.shape[1]
    if d == 0:
        return targets.copy(), 0
    tolerance = max(n, d) * EPS
    residual = targets
    if n >= d:
        # Complete-pivoting Cholesky of the Gram matrix (diagonal 1): P^T G P = U^T U, rank r.
        factor, pivots, rank, info = dpstrf(unit.T @ unit, tol=tolerance)
        if info < 0:  # pragma: no cover - an argument error in the LAPACK call
            raise RuntimeError(f"{NAME}: dpstrf failed (info {info})")
        upper = np.triu(factor[:rank, :rank])
        basis = unit[:, pivots[:rank] - 1]  # independent columns spanning the features
        for _ in range(2):  # the second pass removes what the Gram's rounding left in the span
            coefficients = solve_triangular(upper, basis.T @ residual, trans="T")
            residual = residual - basis @ solve_triangular(upper, coefficients)
        return residual, int(rank)
    q, r, _ = qr(unit, mode="economic", pivoting=True)
    diagonal = np.abs(np.diag(r))
    rank = int(np.sum(diagonal > diagonal[0] * tolerance)) if diagonal.size and diagonal[0] > 0 else 0
    basis = q[:, :rank]
    for _ in range(2):
        residual = residual - basis @ (basis.T @ residual)
    return residual, rank


def simplex_minimum(gram: np.ndarray) -> np.ndarray:
    """argmin of t^T G t over the probability simplex, exactly: the best KKT point over all supports."""
    k = gram.shape[0]
    best, best_value = np.full(k, 1.0 / k), np.inf
    tie = SIMPLEX_TIE * max(float(np.max(np.diag(gram))), 0.0)
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(s, s)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            weights = np.zeros(k)
            weights[s] = np.clip(solution, 0.0, None)
            total = weights.sum()
            if not total > 0:
                continue
            weights /= total
            value = float(weights @ gram @ weights)
            if value < best_value - tie or best_value == np.inf:
                best, best_value = weights, value
    return best


# ------------------------------------------------------------------------------------ the fit


def embedding_maps(design: np.ndarray, embeddings: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """Per encoder, Ehat (q x D) with A_c Ehat = the column-standardised targets A E.

    Encoders wider than the narrowest are first multiplied by a seeded Gaussian (e_k x D) matrix.
    """
    width = min(e.shape[1] for e in embeddings)
    rng = np.random.default_rng(seed)
    maps = []
    for embedding in embeddings:
        if embedding.shape[1] > width:
            embedding = embedding @ rng.standard_normal((embedding.shape[1], width))
        targets = design @ embedding  # (N, D), uncentred: its largest values say what "constant" is
        spread = targets.std(axis=0)
        varying = spread > TARGET_CONSTANT * np.abs(targets).max(axis=0, initial=0.0)
        # Design rows sum to 1, so A_c (E - 1 m^T) = A_c E: centring over classes changes nothing
        # but the rounding of the products below.
        centred = embedding - embedding.mean(axis=0)
        maps.append(np.where(varying, centred / np.where(varying, spread, 1.0), 0.0))
    return maps


def emms_fit(features: np.ndarray, design: np.ndarray, embeddings: list[np.ndarray] | None,
             seed: int = 0) -> EMMSFit:
    """EMMS of train features (N x d) for targets A E_k (A: N x q design, E_k: q x e_k per encoder).

    `embeddings` None means the design's columns are the targets themselves (regression; K = 1).
    """
    n = features.shape[0]
    if n < 3:
        raise MetricNotApplicable(f"{NAME}: needs at least 3 train rows, got {n}")
    centred_design = design - design.mean(axis=0)
    if embeddings is None:
        spread = centred_design.std(axis=0)
        varying = spread > TARGET_CONSTANT * np.abs(design).max(axis=0, initial=0.0)
        maps = [np.diag(np.where(varying, 1.0 / np.where(varying, spread, 1.0), 0.0))]
    else:
        maps = embedding_maps(design, embeddings, seed)
    if not any(np.any(m) for m in maps):
        raise MetricNotApplicable(f"{NAME}: the targets do not vary over the train rows")
    residual, rank = feature_residual(features, centred_design)
    if rank >= n - 1:
        raise MetricNotApplicable(
            f"{NAME}: the features (rank {rank}) fit any target of the {n} train rows exactly; "
            "the least-squares residual would be 0 whatever the labels (needs more train rows than feature dimensions)")
    width = maps[0].shape[1]
    inner = residual.T @ residual  # M = R_A^T R_A
    projected = [inner @ m for m in maps]
    k = len(maps)
    gram = np.empty((k, k))
    for i, j in itertools.product(range(k), repeat=2):
        gram[i, j] = np.sum(projected[i] * maps[j]) / (n * width)
    gram = (gram + gram.T) / 2
    weights = simplex_minimum(gram)
    score = -max(float(weights @ gram @ weights), 0.0)
    return EMMSFit(score=score, weights=weights, gram=gram, rank=rank, width=width)


# ------------------------------------------------------------------------------------ inputs


def checked_embeddings(data: MetricInput, n_classes: int, exact: bool) -> list[np.ndarray]:
    """The label embeddings as float64 (C, e_k) matrices with at least (exactly) n_classes rows."""
    if not data.label_embeddings:
        raise MetricNotApplicable(MISSING_EMBEDDINGS)
    if len(data.label_embeddings) > MAX_ENCODERS:
        raise MetricNotApplicable(f"{NAME}: at most {MAX_ENCODERS} label encoders, got {len(data.label_embeddings)}")
    embeddings = [np.asarray(e) for e in data.label_embeddings]
    for k, e in enumerate(embeddings):
        if e.ndim != 2 or e.dtype.kind not in "fiu" or e.shape[1] < 1:
            raise ValueError(f"{NAME}: label_embeddings[{k}] must be a real (C, e) matrix, got {e.dtype} {e.shape}")
        if not np.isfinite(e).all():
            raise ValueError(f"{NAME}: label_embeddings[{k}] holds NaN or infinite values")
    rows = [e.shape[0] for e in embeddings]
    if len(set(rows)) != 1 or (rows[0] != n_classes if exact else rows[0] < n_classes):
        raise ValueError(f"{NAME}: every label encoder needs one row per class ({n_classes}), got {rows} rows")
    return [e.astype(np.float64, copy=False) for e in embeddings]


def emms_inputs(data: MetricInput) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """(train features, design A, embeddings or None) for the task's kind of labels."""
    if data.target == TARGET_CLASSIFICATION:
        features, labels, n_classes = train_rows(data, NAME)
        embeddings = checked_embeddings(data, n_classes, exact=False)
        design = np.zeros((len(labels), embeddings[0].shape[0]))
        design[np.arange(len(labels)), labels] = 1.0
        return features, design, embeddings
    features, train = features_and_train(data, NAME)
    labels = np.asarray(data.labels)
    n = features.shape[0]
    if data.target == TARGET_MULTI_LABEL:
        if labels.ndim != 2 or labels.shape[0] != n or labels.shape[1] < 1 or labels.dtype.kind not in "biuf" \
                or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{NAME}: multi-label labels must be an (n={n}, C) 0/1 matrix, got {labels.dtype} {labels.shape}")
        embeddings = checked_embeddings(data, labels.shape[1], exact=True)
        positive = labels[train].astype(np.float64)
        counts = positive.sum(axis=1, keepdims=True)
        # Mean of the positive classes' embeddings; a row with none gets the mean of all classes.
        design = np.where(counts > 0, positive / np.maximum(counts, 1.0), 1.0 / labels.shape[1])
        return features[train], design, embeddings
    if data.target == TARGET_REGRESSION:
        if labels.ndim != 2 or labels.shape[0] != n or labels.shape[1] < 1 or labels.dtype.kind not in "fiu":
            raise ValueError(f"{NAME}: regression labels must be a real (n={n}, t) matrix, got {labels.dtype} {labels.shape}")
        targets = labels[train].astype(np.float64)
        if not np.isfinite(targets).all():
            raise ValueError(f"{NAME}: regression labels hold NaN or infinite values")
        return features[train], targets, None
    raise ValueError(f"{NAME}: unknown target kind {data.target!r}")


# ------------------------------------------------------------------------------------ metric


class EMMS(Metric):
    """Negative residual of the weighted linear regression of features onto label embeddings."""

    name = NAME
    version = "1"
    description = "EMMS: -residual of the simplex-weighted least-squares fit of label embeddings (per entry)"
    # For classification and multi-label only: the core passes none for regression (and `score` checks).
    needs = frozenset({NEEDS_LABEL_EMBEDDINGS})
    targets = frozenset({TARGET_CLASSIFICATION, TARGET_MULTI_LABEL, TARGET_REGRESSION})
    imports = ("scipy.linalg",)

    def score(self, data: MetricInput) -> float:
        features, design, embeddings = emms_inputs(data)
        return emms_fit(features, design, embeddings, data.seed).score


METRICS: tuple[type[Metric], ...] = (EMMS,)


@hookimpl
def register_metrics(register: Any) -> None:
    for metric in METRICS:
        register(metric)
