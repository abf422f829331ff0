"""Built-in search strategies (Renggli et al., "Which Model to Transfer?", CVPR 2022; Huang, Qiu &
Church, NeurIPS 2021).

| strategy | ranks the pool by | uses |
|---|---|---|
| `agnostic` | ImageNet-1k top-1 when known, then upstream data size, then parameter count | - |
| `aware` | a metric's scores on the user's task (`task_scores`), in the metric's direction | a task |
| `hybrid` | the top-1 of `agnostic`, then the top of `aware` (skipping that one) | a task |
| `random` | a seeded random order: the baseline | - |
| `mmi` | greedy maximum mutual information over kappa (hubindex.selection) | kappa |

Task-agnostic (Renggli et al. section 4): one ranking for every task - "the model with the
highest ImageNet accuracy if known, else the one trained on the largest upstream data, ties to
the larger model". Checkpoints without a top-1 come after those with one; upstream data size
comes from the `upstream_data` column through UPSTREAM_IMAGES below (unknown sizes last); ties
after all three keys go to the lower checkpoint_id, so the ranking is deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import USES_KAPPA, USES_TASK, Pick, Query, QueryContext

# Images in the pretraining data named by `upstream_data` prefixes (timm's pretrain tags):
# ImageNet-1k 1.28M, ImageNet-12k 12M, ImageNet-21k/22k 14.2M, YFCC100M, Instagram 1B / 3.5B
# (Mahajan et al. 2018), JFT-300M, LVD-142M (DINOv2), LAION-400M, OpenAI CLIP's 400M, LAION-2B.
# The longest matching prefix wins ('in1k-dist' is in1k).
UPSTREAM_IMAGES: dict[str, float] = {
    "in1k": 1.28e6,
    "in12k": 12e6,
    "in21k": 14.2e6,
    "in22k": 14.2e6,
    "yfc": 100e6,
    "lvd142m": 142e6,
    "jft300m": 300e6,
    "laion400m": 400e6,
    "openai": 400e6,
    "ig1b": 1e9,
    "laion2b": 2.3e9,
    "ig3.5b": 3.5e9,
}


def upstream_images(upstream_data: str | None) -> float | None:
    """Images in the named pretraining data, or None when unknown."""
    if not upstream_data:
        return None
    name = upstream_data.lower()
    matches = [prefix for prefix in UPSTREAM_IMAGES if name.startswith(prefix)]
    return UPSTREAM_IMAGES[max(matches, key=len)] if matches else None


def agnostic_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: known top-1 first and highest, then larger upstream data, then more parameters."""
    top1 = row.get("in1k_top1")
    images = upstream_images(row.get("upstream_data"))
    params = row.get("params_total")
    return (top1 is None, -(top1 or 0.0), images is None, -(images or 0.0), params is None, -(params or 0),
            row["checkpoint_id"])


def agnostic_reason(row: dict[str, Any]) -> str:
    parts = []
    if row.get("in1k_top1") is not None:
        parts.append(f"in1k top-1 {row['in1k_top1']:.2f}")
    if upstream_images(row.get("upstream_data")) is not None:
        parts.append(f"upstream {row['upstream_data']}")
    if row.get("params_total") is not None:
        parts.append(f"{row['params_total'] / 1e6:.1f}M params")
    return ", ".join(parts) or "nothing known: ordered by id"


def agnostic_ranking(pool: list[dict[str, Any]]) -> list[Pick]:
    """The whole pool in task-agnostic order."""
    return [Pick(row["checkpoint_id"], row.get("in1k_top1"), agnostic_reason(row))
            for row in sorted(pool, key=agnostic_key)]


def aware_ranking(context: QueryContext) -> list[Pick]:
    """The pool's checkpoints that have a score, best first (ties to the lower checkpoint_id)."""
    scores = context.task_scores()
    sign = -1.0 if context.metric_higher_is_better else 1.0
    ranked = sorted(scores.items(), key=lambda item: (sign * item[1], item[0]))
    return [Pick(cid, value, f"{context.metric} = {value:.4g}") for cid, value in ranked]


class Agnostic(Query):
    """Task-agnostic: ImageNet top-1, then upstream data size, then parameter count."""

    name = "agnostic"
    version = "1"
    description = "task-agnostic: ImageNet top-1, then upstream data size, then size"

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        return agnostic_ranking(context.pool)[:budget]


class Aware(Query):
    """Task-aware: the best scores of one metric on the user's task."""

    name = "aware"
    version = "1"
    description = "task-aware: best scores of a metric on the task"
    uses = frozenset({USES_TASK})

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        return aware_ranking(context)[:budget]


class Hybrid(Query):
    """The top-1 task-agnostic checkpoint plus the top-(B-1) task-aware ones (skipping it)."""

    name = "hybrid"
    version = "1"
    description = "top-1 task-agnostic + top-(B-1) task-aware"
    uses = frozenset({USES_TASK})

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        picks = agnostic_ranking(context.pool)[:1]
        chosen = {pick.checkpoint_id for pick in picks}
        for pick in aware_ranking(context):
            if len(picks) >= budget:
                break
            if pick.checkpoint_id not in chosen:
                picks.append(pick)
                chosen.add(pick.checkpoint_id)
        return picks


class Random(Query):
    """A seeded random choice: the baseline every other strategy must beat."""

    name = "random"
    version = "1"
    description = "seeded random choice (baseline)"

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        ids = sorted(row["checkpoint_id"] for row in context.pool)
        order = np.random.default_rng(context.seed).permutation(len(ids))[:budget]
        return [Pick(ids[i], None, f"random (seed {context.seed})") for i in order]


class MaximumMutualInformation(Query):
    """Greedy MMI over kappa: K checkpoints that cover the task space, before any task is known."""

    name = "mmi"
    version = "1"
    description = "greedy maximum mutual information over kappa (Huang et al. 2021, Algorithm 1)"
    uses = frozenset({USES_KAPPA})

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        from hubindex.selection import mmi_select, mmi_select_lowrank

        if context.kappa is not None:
            ids, kappa = context.kappa
            selection = mmi_select(kappa, min(budget, len(ids)))
        else:
            assert context.kappa_lowrank is not None  # the core provides one of them (uses = kappa)
            ids, factors, diagonal = context.kappa_lowrank
            selection = mmi_select_lowrank(factors, diagonal, min(budget, len(ids)))
        return [Pick(ids[i], gain, f"gain {nats_text(gain)} nats", mi)
                for i, gain, mi in zip(selection.indices, selection.gains, selection.mi_nats)]


def nats_text(value: float) -> str:
    """A gain or an MI in nats to 4 decimals, or to 3 significant digits where 4 decimals would show 0.

    A gain can be slightly negative (see `hubindex select mmi --help`); -0.0000 would hide its
    sign and size, and a negative zero prints as 0.
    """
    if value == 0 or not np.isfinite(value):
        return f"{value + 0.0:g}"
    return f"{value:.4f}" if abs(value) >= 5e-5 else f"{value:.3g}"


@hookimpl
def register_queries(register: Any) -> None:
    for query in (Agnostic, Aware, Hybrid, Random, MaximumMutualInformation):
        register(query)
