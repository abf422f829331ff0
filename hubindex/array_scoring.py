"""Array mode (`hubindex metric NAME --features F.npy --labels y.npy`): one metric on given arrays,
no catalog. The arrays are checked here, with errors that name the option they came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hubindex.errors import UsageError
from hubindex.scoring import metric_classes, run_metric
from hubindex.task_targets import encode_targets, split_targets
from hubindex.types import (
    NEEDS_HEAD,
    NEEDS_HELD_OUT,
    NEEDS_LABEL_EMBEDDINGS,
    NEEDS_REFERENCE,
    PROBABILITY_TOLERANCE,
    TARGET_CLASSIFICATION,
    TARGET_REGRESSION,
    MetricInput,
    MetricNotApplicable,
)


@dataclass(frozen=True)
class ArrayScore:
    metric: str
    version: str
    value: float
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "version": self.version, "value": self.value, "seconds": self.seconds}


def check_features(features: np.ndarray, what: str) -> np.ndarray:
    """A finite numeric (n, d) matrix as float64, or a UsageError naming the problem."""
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number) or features.dtype.kind == "c":
        raise UsageError(f"{what}: expected a real (examples x features) matrix, got {features.dtype} of shape {features.shape}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise UsageError(f"{what}: the matrix is empty (shape {features.shape})")
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:
        raise UsageError(f"{what}: {bad.size} rows hold NaN or infinite values (first: row {bad[0]})")
    return features.astype(np.float64, copy=False)


def check_labels(labels: np.ndarray, n: int, what: str, target: str = TARGET_CLASSIFICATION) -> np.ndarray:
    """One label per feature row, as MetricInput holds them for the target kind: class indices
    0..C-1 from integers or strings, a 0/1 matrix (multi-label) or a float matrix (regression)."""
    if labels.ndim != 1 and not (labels.ndim == 2 and target != TARGET_CLASSIFICATION):
        shapes = "a 1-D array" if target == TARGET_CLASSIFICATION else "an (n,) or (n, columns) array"
        raise UsageError(f"{what}: labels must be {shapes}, got shape {labels.shape}")
    if labels.dtype.kind not in "biuUf":
        raise UsageError(f"{what}: labels must be integers or strings (got dtype {labels.dtype})")
    if len(labels) != n:
        raise UsageError(f"{what}: {len(labels)} labels for {n} feature rows; they must have the same length")
    codes, _ = encode_targets(labels if labels.ndim == 2 else labels.tolist(), target, what)
    return codes


def check_probs(probs: np.ndarray, n: int, what: str) -> np.ndarray:
    """A source-class probability matrix (n, Z); 1-D integer source labels become one-hot rows."""
    if probs.ndim == 1:
        if probs.dtype.kind not in "iu" or (probs.size and probs.min() < 0):
            raise UsageError(f"{what}: a 1-D array must hold source class indices (integers >= 0)")
        one_hot = np.zeros((len(probs), int(probs.max()) + 1 if probs.size else 0))
        one_hot[np.arange(len(probs)), probs] = 1.0
        probs = one_hot
    probs = check_features(probs, what)
    if len(probs) != n:
        raise UsageError(f"{what}: {len(probs)} rows for {n} feature rows; they must have the same length")
    if probs.min() < 0 or np.abs(probs.sum(axis=1) - 1.0).max() > PROBABILITY_TOLERANCE:
        raise UsageError(f"{what}: each row must be probabilities over the source classes (>= 0, summing to 1)")
    return probs


def score_arrays(name: str, features: np.ndarray, labels: np.ndarray, probs: np.ndarray | None = None,
                 reference: tuple[np.ndarray, np.ndarray] | None = None,
                 validation_fraction: float = 0.2, seed: int = 0, target: str = TARGET_CLASSIFICATION,
                 label_embeddings: tuple[np.ndarray, ...] = ()) -> ArrayScore:
    """One metric on given arrays. Metrics that need held-out rows get a seeded split (stratified
    for classification)."""
    (metric_cls,) = metric_classes([name])
    if target not in metric_cls.targets:
        raise UsageError(f"metric {name!r} scores {', '.join(sorted(metric_cls.targets))} targets, not {target}")
    features = check_features(features, "--features")
    codes = check_labels(labels, len(features), "--labels", target)
    if NEEDS_HEAD in metric_cls.needs and probs is None:
        raise UsageError(f"metric {name!r} needs --probs P.npy: the checkpoint's softmax over its source classes "
                         "(or, for nce, the source class index of each example)")
    if NEEDS_REFERENCE in metric_cls.needs and reference is None:
        raise UsageError(f"metric {name!r} needs a reference task: --reference-features R.npy --reference-labels yR.npy")
    head_probs = check_probs(probs, len(features), "--probs") if probs is not None else None
    reference_input = None
    if reference is not None:
        ref_features = check_features(reference[0], "--reference-features")
        ref_codes = check_labels(reference[1], len(ref_features), "--reference-labels")
        if ref_features.shape[1] != features.shape[1]:
            raise UsageError(f"--reference-features has {ref_features.shape[1]} columns, --features "
                             f"{features.shape[1]}; both must come from the same checkpoint")
        reference_input = MetricInput(ref_features, ref_codes, np.ones(len(ref_codes), dtype=bool), seed=seed)
    if NEEDS_LABEL_EMBEDDINGS in metric_cls.needs and target != TARGET_REGRESSION and not label_embeddings:
        raise UsageError(f"metric {name!r} needs --label-embeddings E.npy: one row per class, in the order of the "
                         "sorted class labels")
    n_classes = codes.shape[1] if target != TARGET_CLASSIFICATION else int(codes.max()) + 1
    for matrix in label_embeddings:
        if target != TARGET_REGRESSION and len(matrix) != n_classes:
            raise UsageError(f"--label-embeddings: {len(matrix)} rows for {n_classes} classes; give one row per class")
    label_embeddings = tuple(check_features(m, "--label-embeddings") for m in label_embeddings)
    if NEEDS_HELD_OUT in metric_cls.needs:
        train = split_targets(codes, target, validation_fraction, seed)
    else:
        train = np.ones(len(codes), dtype=bool)
    data = MetricInput(features, codes, train, head_probs, reference_input, seed, target, label_embeddings)
    try:
        value, seconds = run_metric(metric_cls(), data)
    except MetricNotApplicable as exc:
        raise UsageError(f"metric {name!r} cannot score these arrays: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"metric {name!r}: {exc}") from None
    return ArrayScore(name, metric_cls.version, value, seconds)
