"""Embeddings of a task's class names by text checkpoints of the index (label encoders).

Metrics that regress features onto label embeddings (EMMS) need, for each class, a vector that
says what the class means. `hubindex score --label-encoder CHECKPOINT` names text checkpoints of
the catalog; each embeds the class names (`task.classes`) as one text per class through the
text probe that takes it, with the pooling it uses for labeled examples. The class names are few,
so they are embedded on each run rather than stored; what a score depends on is the encoders'
ids and shas (`encoders_key`, part of the score's inputs hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hubindex.catalog import Catalog
from hubindex.errors import UsageError
from hubindex.plugins import probes
from hubindex.probing import pick_probe
from hubindex.tasks import Task
from hubindex.types import TEXT, ProbeError


@dataclass(frozen=True)
class LabelEmbeddings:
    """One (C, e_k) matrix per label encoder, in the order named, and what they depend on."""

    matrices: tuple[np.ndarray, ...]
    encoders_key: str  # sha256 over the encoders' ids, shas and poolings

    @classmethod
    def none(cls) -> LabelEmbeddings:
        return cls((), "")


def embed_class_names(catalog: Catalog, task: Task, encoder_ids: Sequence[str], device: str,
                      batch_size: int | None) -> LabelEmbeddings:
    """The task's class names embedded by each named text checkpoint; a UsageError names what is wrong."""
    if not encoder_ids:
        return LabelEmbeddings.none()
    rows = {row["checkpoint_id"]: row for row in catalog.checkpoint_rows(list(encoder_ids))}
    instances = [r.component(device=device, batch_size=batch_size) for r in probes().values()]
    matrices, parts = [], []
    for encoder_id in dict.fromkeys(encoder_ids):
        row = rows.get(encoder_id)
        if row is None:
            raise UsageError(f"--label-encoder {encoder_id!r}: no such checkpoint in the catalog; crawl it first")
        probe = pick_probe(instances, row, TEXT)
        if probe is None:
            raise UsageError(f"--label-encoder {encoder_id!r}: no text probe takes this checkpoint; "
                             "name a text checkpoint (e.g. a sentence-transformers model)")
        try:
            output = probe.embed_examples(row, list(task.classes))
        except ProbeError as exc:
            raise UsageError(f"--label-encoder {encoder_id!r} could not embed the class names: {exc}") from None
        features = np.asarray(output.features, dtype=np.float64)
        if features.shape[0] != len(task.classes) or not np.isfinite(features).all():
            raise UsageError(f"--label-encoder {encoder_id!r} gave {features.shape[0]} rows (or non-finite values) "
                             f"for {len(task.classes)} class names")
        matrices.append(features)
        parts.append(f"{encoder_id}\0{probe.revision(row) or ''}\0{probe.example_pooling}")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return LabelEmbeddings(tuple(matrices), key)
