"""Task-relatedness (Mehra, Zhang and Hamm, "Understanding the Transferability of Representations
via Task-Relatedness", NeurIPS 2024): how far a target task T is from a reference task R (e.g.
ImageNet-like data) in one checkpoint's feature space. Lower means more related; the paper bounds
the target loss of the transferred classifier by this quantity.

The paper transforms R in three steps to match T: a class-prior change D (R -> R'), a label-set
map B from reference to target classes (R' -> R''), and an invertible linear map A of the features
(R'' -> R'''). Its efficient estimator fixes B to a permutation and D to the reference prior,
learns A, and replaces the Wasserstein distance by a mean and covariance mismatch:

    task-relatedness = reweighted reference loss + H(Y_R'' | Y_R') + Gamma(R''', T).

Both tasks are embedded by the same checkpoint; only their `train` rows fit anything. Here:

1. Units. Every feature (reference and target) is centred with the reference train mean and
   divided by one scalar, the square root of the reference train features' total variance
   (trace of their covariance), so that tr cov = 1 on the reference. A single scalar keeps the
   checkpoint's geometry (Euclidean distances, covariance shapes) and only removes its arbitrary
   scale and dimension, so that checkpoints of different widths are comparable.

2. B. Each target class t gets a distinct reference class B(t) by the Hungarian algorithm
   (scipy.optimize.linear_sum_assignment) on the class-conditional cost at A = I,
       cost(t, r) = |mu_R,r - mu_T,t|^2 + lambda |Sigma_R,r - Sigma_T,t|_F^2,
   i.e. the same mismatch Gamma is built from. This needs C_T <= C_R (otherwise the metric is
   not applicable); with C_T < C_R the unmatched reference classes drop out.

3. D and the label mismatch. D is the reference train prior restricted to the matched classes
   B(1..C_T) and renormalised (unmatched classes have no target class to go to). The label
   mismatch H(Y_R'' | Y_R') is the conditional entropy of the joint D(r) B(t | r) with B(t | r)
   the assignment as a 0/1 matrix; it is computed, and it is 0 because B is a permutation.

4. Reweighted reference loss. A reference classifier - multinomial logistic regression, exactly
   the `linear` metric's (features standardised per dimension, lbfgs, L2 with C = 1, tol 1e-6) -
   is fitted on all reference train rows. Its logits restricted to the matched classes B(1..C_T),
   renormalised by a softmax over them (the classifier the label map hands to the target),
   give a cross-entropy per reference row. The loss is sum_t D(B(t)) * (mean cross-entropy over
   the rows of class B(t)), on the reference's held-out rows of that class when it has some (an
   estimate of the loss, not of the fit), else on its train rows.

5. A and Gamma. With target prior pi_T (train rows),
       Gamma(A) = sum_t pi_T(t) [ |A mu_R,B(t) - mu_T,t|^2 + lambda |A Sigma_R,B(t) A^T - Sigma_T,t|_F^2 ],
   with lambda = 1 (both terms are in units of the reference's total variance: |mu|^2 a share of
   it, |Sigma|_F^2 <= (tr Sigma)^2) and class covariances normalised by the class count. A is
   learned along the closed-form ridge-to-identity path on the class means:
       A_rho = argmin_A sum_t pi_T(t) |A mu_R,B(t) - mu_T,t|^2 + rho |A - I|_F^2
             = I + E^T (W M M^T + rho I)^-1 W M,     M = [mu_R,B(t)]_t, E = [mu_T,t]_t - M, W = diag(pi_T),
   a rank-C_T update of the identity (no d x d matrix is formed). rho runs over
   {infinity (A = I), 1, 0.1, 0.01, 0.001} times tr(M^T W M), the weighted energy of the
   matched reference means, and A is the A_rho of smallest Gamma(A) - so A never does worse
   than the identity on the whole mismatch, means and covariances. Candidates that are not
   safely invertible (condition number of the C_T x C_T core I + (W M M^T + rho I)^-1 W M E^T
   above 1e10) are skipped. The path replaces the paper's gradient descent on A from the
   identity: the ridge keeps A near I (a small rho matches the means closely, a large one keeps
   the covariances), and it costs a few C_T x C_T solves.

   Every covariance term uses Gram matrices of class rows instead of d x d matrices: with
   P (n_r x d) the centred rows of a class over sqrt(n_r), Sigma = P^T P, and
       |P^T P - Q^T Q|_F^2 = |P P^T|_F^2 + |Q Q^T|_F^2 - 2 |P Q^T|_F^2,    A Sigma A^T = (P A^T)^T (P A^T).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import NEEDS_REFERENCE, Metric, MetricInput, MetricNotApplicable
from hubindex_plugins.metrics import checked_features, fit_logistic

NAME = "task-relatedness"
COVARIANCE_WEIGHT = 1.0  # lambda
RIDGE_FACTORS = (1.0, 0.1, 0.01, 0.001)  # rho / tr(M^T W M); A = I is always a candidate too
MAX_CORE_CONDITION = 1e10


@dataclass(frozen=True)
class ClassRows:
    """The rows of one task grouped by class: means, and centred rows over sqrt(class count)."""

    means: np.ndarray  # (C, d)
    scaled: list[np.ndarray]  # per class (n_c, d): (rows - mean) / sqrt(n_c)
    prior: np.ndarray  # (C,) class shares

    @classmethod
    def of(cls, features: np.ndarray, labels: np.ndarray, n_classes: int) -> ClassRows:
        means, scaled = [], []
        for c in range(n_classes):
            rows = features[labels == c]
            mean = rows.mean(axis=0)
            means.append(mean)
            scaled.append((rows - mean) / np.sqrt(len(rows)))
        prior = np.bincount(labels, minlength=n_classes) / len(labels)
        return cls(np.stack(means), scaled, prior)

    def gram_norms(self) -> np.ndarray:
        """|Sigma_c|_F^2 = |P_c P_c^T|_F^2 per class."""
        return np.array([np.sum((p @ p.T) ** 2) for p in self.scaled])


@dataclass(frozen=True)
class Relatedness:
    """The terms of the estimate and the choices that produced them."""

    reference_loss: float
    label_mismatch: float
    mismatch: float  # Gamma(R''', T)
    assignment: np.ndarray  # (C_T,) reference class B(t) of each target class
    ridge_factor: float  # rho / tr(M^T W M) of the chosen A; inf for A = I

    @property
    def value(self) -> float:
        return self.reference_loss + self.label_mismatch + self.mismatch


def assignment_costs(reference: ClassRows, target: ClassRows) -> np.ndarray:
    """cost[t, r] = |mu_R,r - mu_T,t|^2 + lambda |Sigma_R,r - Sigma_T,t|_F^2, from Gram blocks."""
    means = (np.sum(target.means**2, axis=1)[:, None] + np.sum(reference.means**2, axis=1)[None, :]
             - 2 * target.means @ reference.means.T)
    stacked = np.concatenate(reference.scaled)
    starts = np.cumsum([0] + [len(p) for p in reference.scaled[:-1]])
    cross = np.empty((len(target.scaled), len(reference.scaled)))
    for t, q in enumerate(target.scaled):
        cross[t] = np.add.reduceat(((stacked @ q.T) ** 2).sum(axis=1), starts)  # |P_r Q_t^T|_F^2
    covariances = reference.gram_norms()[None, :] + target.gram_norms()[:, None] - 2 * cross
    return np.maximum(means, 0.0) + COVARIANCE_WEIGHT * np.maximum(covariances, 0.0)


def label_mismatch(assignment: np.ndarray, n_reference: int, prior: np.ndarray) -> float:
    """H(Y_R'' | Y_R') for the label map B (target t <- reference assignment[t]) under the class prior D."""
    mapping = np.zeros((len(assignment), n_reference))  # B(t | r)
    mapping[np.arange(len(assignment)), assignment] = 1.0
    joint = mapping * prior[None, :]
    marginal = np.broadcast_to(joint.sum(axis=0), joint.shape)
    present = joint > 0
    return max(0.0, float(-np.sum(joint[present] * np.log(joint[present] / marginal[present]))))


def mismatch(reference: ClassRows, target: ClassRows, assignment: np.ndarray, u: np.ndarray | None,
             vt: np.ndarray | None) -> float:
    """Gamma for A = I + u vt (u (d, k), vt (k, d)), or A = I when u is None."""
    total = 0.0
    for t, r in enumerate(assignment):
        mean, p, q = reference.means[r], reference.scaled[r], target.scaled[t]
        if u is not None:
            mean = mean + u @ (vt @ mean)
            p = p + (p @ vt.T) @ u.T  # rows of P A^T
        mean_term = float(np.sum((mean - target.means[t]) ** 2))
        covariance_term = np.sum((p @ p.T) ** 2) + np.sum((q @ q.T) ** 2) - 2 * np.sum((p @ q.T) ** 2)
        total += target.prior[t] * (mean_term + COVARIANCE_WEIGHT * max(float(covariance_term), 0.0))
    return total


def reference_loss(data: MetricInput, assignment: np.ndarray, weights: np.ndarray) -> float:
    """sum_t D(B(t)) * mean cross-entropy of the reference classifier on class B(t), over the matched classes."""
    reference = data.reference
    features = np.asarray(reference.features, dtype=np.float64)
    labels = np.asarray(reference.labels)
    train = np.asarray(reference.train)
    model = fit_logistic(features[train], labels[train], NAME)
    classes = list(model[-1].classes_)
    columns = np.array([classes.index(r) for r in assignment])
    loss = 0.0
    for t, r in enumerate(assignment):
        rows = (labels == r) & ~train
        if not rows.any():
            rows = (labels == r) & train
        logits = model.decision_function(features[rows])[:, columns]
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        loss += weights[t] * float(np.mean(log_norm - logits[:, t]))
    return loss


def relatedness(data: MetricInput) -> Relatedness:
    """The task-relatedness of data's task to data.reference, term by term (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    if data.reference is None:
        raise MetricNotApplicable(f"{NAME}: needs a reference task")
    target_features, target_labels, n_target = checked_features(data, NAME)
    reference_features, reference_labels, n_reference = checked_features(data.reference, f"{NAME} (reference task)")
    if target_features.shape[1] != reference_features.shape[1]:
        raise ValueError(f"{NAME}: the target features have {target_features.shape[1]} columns and the reference "
                         f"features {reference_features.shape[1]}; both must come from the same checkpoint")
    if n_target > n_reference:
        raise MetricNotApplicable(f"{NAME}: the target task has {n_target} classes and the reference task "
                                  f"{n_reference}; each target class needs its own reference class")
    train, reference_train = np.asarray(data.train), np.asarray(data.reference.train)
    origin = reference_features[reference_train].mean(axis=0)
    scale = np.sqrt(np.sum((reference_features[reference_train] - origin) ** 2) / reference_train.sum())
    if scale == 0:
        raise MetricNotApplicable(f"{NAME}: the reference train features are constant")
    reference = ClassRows.of((reference_features[reference_train] - origin) / scale,
                             reference_labels[reference_train], n_reference)
    target = ClassRows.of((target_features[train] - origin) / scale, target_labels[train], n_target)

    _, assignment = linear_sum_assignment(assignment_costs(reference, target))
    prior = np.zeros(n_reference)
    prior[assignment] = reference.prior[assignment]
    prior /= prior.sum()  # D: the reference prior on the matched classes

    matched = reference.means[assignment]  # M
    error = target.means - matched  # E
    energy = float(np.sum(target.prior * np.sum(matched**2, axis=1)))  # tr(M^T W M)
    best_factor, best = float("inf"), mismatch(reference, target, assignment, None, None)
    if energy > 0:
        weighted = target.prior[:, None] * matched  # W M
        gram = weighted @ matched.T  # W M M^T
        for factor in RIDGE_FACTORS:
            solved = np.linalg.solve(gram + factor * energy * np.eye(n_target), weighted)  # (W M M^T + rho I)^-1 W M
            core = np.eye(n_target) + solved @ error.T
            if np.linalg.cond(core) > MAX_CORE_CONDITION:
                continue
            value = mismatch(reference, target, assignment, error.T, solved)
            if value < best:
                best_factor, best = factor, value

    return Relatedness(
        reference_loss=reference_loss(data, assignment, prior[assignment]),
        label_mismatch=label_mismatch(assignment, n_reference, prior),
        mismatch=best,
        assignment=assignment,
        ridge_factor=best_factor,
    )


class TaskRelatedness(Metric):
    """Reweighted reference loss + label mismatch + mean/covariance mismatch after a learned linear map."""

    name = NAME
    version = "1"
    description = "task-relatedness to a reference task: reference loss + label and feature mismatch (lower is better)"
    higher_is_better = False
    needs = frozenset({NEEDS_REFERENCE})
    imports = ("scipy.optimize", "sklearn.linear_model", "sklearn.pipeline", "sklearn.preprocessing")

    def score(self, data: MetricInput) -> float:
        return float(relatedness(data).value)


@hookimpl
def register_metrics(register: Any) -> None:
    register(TaskRelatedness)
