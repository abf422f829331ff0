"""Recovered lineage: parents of undocumented checkpoints, from their weights and from kappa.

Weights (evidence 'weights'), after MoTHer (Horwitz, Shul & Hoshen, "On the Origin of Llamas: Model
Tree Heritage Recovery", 2024):

1. Signatures first. A checkpoint's weight tensors are its floating tensors of two or more
   dimensions (matrices, convolution kernels, embeddings; norms and biases start equal in unrelated
   models and would make them look related). Their names and shapes come from the safetensors
   headers alone. A checkpoint can be another's parent only when it has PARENT_COVERAGE of the
   child's weight tensors (same name, same shape): a fine-tune with a new classification head still
   meets its parent, a truncated child the model it was cut from - but a truncated model is never
   the parent of a deeper one. Only checkpoints that meet another one have their tensors read.
2. One pass per checkpoint, one tensor in memory at a time (float32), gives per tensor the squared
   norm, the excess kurtosis, a digest, whether it lies on a quantisation grid, and a sketch: the
   tensor itself up to SKETCH_WIDTH values, else a CountSketch of that width seeded by the tensor's
   name and shape (the same in every checkpoint; linear, so differences and mixtures sketch too).
3. Distance: per shared tensor d_t = ||a - b|| / sqrt(||a||^2 + ||b||^2) - 0 for equal tensors, about
   1 for independent ones whatever their scale (sqrt(1 - cos) for equal norms) - and D(a, b) the
   mean over shared tensors. Pairs with D > MAX_DISTANCE are never linked: independent random inits
   and independent pretrainings of one architecture measure D ~ 1.0.
4. Direction, MoTHer's rule: training moves the kurtosis of weights monotonically. Per shared tensor
   that differs, a vote says which side the rule makes the parent; v(a->b) in [-1, 1] is the mean.
   The rule (DIRECTION_RULE) is measured rather than assumed - see benchmarks/RESULTS.md section 6:
   real fine-tunes lower the kurtosis of heavy-tailed pretrained weights (MoTHer's "specialisation");
   briefly trained small models start platykurtic and fine-tuning raises it. Both move it towards 0,
   the Gaussian value, which is the default rule: the parent has the larger |excess kurtosis|.
5. Structure: a minimum spanning arborescence (Edmonds) over cost(a->b) = D(a,b) + DIRECTION_WEIGHT *
   mean(D) * (1 - v(a->b)) / 2 (MoTHer's cost with their lambda 0.3, the vote made continuous), with
   a virtual root at cost ROOT_COST to every checkpoint, so unrelated groups become separate trees.
   Hard rules: a quantised checkpoint is never the parent of an unquantised one; a merge is
   detected before the tree (a checkpoint within MERGE_MAX_RESIDUAL of a mixture a*x + (1-a)*y of two
   neighbours, a in MERGE_MIX, closer to each than they are to each other), gets both parents, and
   may parent other checkpoints only after the tree is built, where that costs less.
6. Relation: 'quantized' when the child's tensors lie on an int8 or int4 grid - symmetric or with a
   zero point, one scale per tensor, per row or per group of 32 or 128 (QUANT_GROUPS) - and the
   parent's do not; 'merge' as above; 'unknown' when the shared tensors are identical (a truncated or
   re-headed copy: only PARENT_COVERAGE tells which was cut from which), else 'finetune'.
7. Confidence = CONFIDENCE_FLOOR + (1 - CONFIDENCE_FLOOR) * min(link, choice, direction):
   link = how far D is below MAX_DISTANCE (1 at half of it or less); choice = the margin to the best
   other possible parent (1 when that one is CHOICE_RATIO times farther or more); direction = the
   vote for the edge's direction (1 when the reverse edge is ruled out: a quantised child, a parent
   with tensors the child lacks; 0 when no tensor differs and the reverse is possible).

Kappa (evidence 'kappa'): for a checkpoint left without a weights parent, its highest-kappa
neighbour of the same model_type with kappa >= KAPPA_MIN on every corpus both were probed on, when
the weights cannot judge the pair (one has no local weights, or they share too few tensors).
Direction: the earlier created_at, else the kurtosis vote over the tensors they share, else none
(left out). Relation 'unknown', confidence at most KAPPA_CONFIDENCE, below RECOVERED_MIN_CONFIDENCE:
a hint that never enters the closure. Kappa says "functionally close", not "derived from":
independently trained ImageNet models reach 0.95-0.96 on photos (RESULTS.md section 4).

Limits: other weight formats (GPTQ, bitsandbytes, LoRA adapters) have other tensor names and shapes
and are not compared; merges of three or more are not recognised; checkpoints along one training run
look like a chain or a merge; a parent missing from the catalog makes its children each other's.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.lineage import (
    RECOVERED_MIN_CONFIDENCE,
    CatalogLike,
    Edge,
    EdgeSet,
    record_edge_sets,
)

SKETCH_WIDTH = 4096  # values kept per tensor: distances within ~2% at this width (CountSketch, 1/sqrt(w))
MIN_TENSOR_NUMEL = 16  # smaller weight tensors say little and are skipped
PARENT_COVERAGE = 0.9  # of a child's weight tensors that its parent has too (name and shape)
MAX_DISTANCE = 0.5  # D above this: never linked (independent checkpoints measure ~1.0)
DIRECTION_RULE = "abs-kurtosis-falls"  # or "kurtosis-falls" (MoTHer's specialisation), "kurtosis-rises"
DIRECTION_RULES = ("abs-kurtosis-falls", "kurtosis-falls", "kurtosis-rises")
DIRECTION_WEIGHT = 0.3  # MoTHer's lambda: the direction penalty, in units of the group's mean distance
ROOT_COST = 100.0  # an edge from the virtual root: dearer than any real edge, so each group gets one root
QUANT_BITS = (8, 4)
QUANT_GROUPS = (None, 128, 32)  # a scale per row (None) or per group of values along a row; and per tensor
QUANT_MIN_NUMEL = 256  # smaller tensors are not checked
QUANT_ROWS, QUANT_SAMPLE = 4, 4096  # rows looked at per tensor, values per row
GRID_TOLERANCE = 0.01  # of a grid step: a value "on" the grid (a float value is, by chance, 2% of the time)
GRID_SHARE = 0.99  # of the values on one grid: the tensor is quantised
QUANT_TENSOR_SHARE = 0.9  # of the checked tensors quantised: the checkpoint is
MERGE_MAX_RESIDUAL = 0.25  # distance to the best mixture, as a share of the distance to the nearer parent
MERGE_MIX = (0.1, 0.9)  # the mixing weight a merge may have
MERGE_NEIGHBOURS = 6  # a merge's parents are looked for among its nearest neighbours
CHOICE_RATIO = 1.25  # the next possible parent this much farther: the choice is certain
CONFIDENCE_FLOOR = 0.4
KAPPA_MIN = 0.98
KAPPA_CONFIDENCE = 0.5  # at kappa 1; KAPPA_CONFIDENCE - 0.2 at KAPPA_MIN
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked", ".position_ids")
SAFETENSORS, PICKLED = (".safetensors",), (".bin", ".pth", ".pt")
CHUNK = 1 << 22  # values per CountSketch chunk (bounds the index arrays' memory)

__all__ = ["RecoveredEdge", "RecoveryReport", "TensorProfile", "WeightProfile", "profile_checkpoint",
           "read_signature", "recover_edges", "recover_lineage", "weight_files"]


@dataclass(frozen=True)
class TensorProfile:
    """What one weight tensor contributes: its squared norm, kurtosis, quantisation grid test, digest and sketch."""

    numel: int
    norm_sq: float
    kurtosis: float
    on_grid: bool | None  # quantise-dequantise values; None: too small to tell
    digest: bytes
    sketch: np.ndarray  # float32, the tensor itself when it has at most SKETCH_WIDTH values


@dataclass
class WeightProfile:
    """A checkpoint's weight tensors, keyed by (name, shape)."""

    checkpoint_id: str
    tensors: dict[tuple[str, tuple[int, ...]], TensorProfile]
    params: int = field(init=False)

    def __post_init__(self) -> None:
        self.params = sum(t.numel for t in self.tensors.values())

    @property
    def quantized(self) -> bool:
        """Whether its weights lie on a quantisation grid (quantise-dequantise)."""
        checked = [t.on_grid for t in self.tensors.values() if t.on_grid is not None]
        return bool(checked) and sum(checked) >= QUANT_TENSOR_SHARE * len(checked)


@dataclass(frozen=True)
class RecoveredEdge:
    """A recovered parent -> child edge, with what it rests on."""

    child: str
    parent: str
    relation: str
    evidence: str  # 'weights' or 'kappa'
    confidence: float
    distance: float | None  # D(parent, child); kappa edges: None
    detail: str

    def edge(self) -> Edge:
        return Edge(self.parent, self.relation, self.evidence, self.confidence, detail=self.detail)


@dataclass
class RecoveryReport:
    """What recover_lineage did."""

    examined: int = 0  # checkpoints with local weights whose signature was read
    profiled: int = 0  # of those, read in full (they meet another one)
    edges: list[RecoveredEdge] = field(default_factory=list)  # all recovered, documented children included
    written: int = 0  # children whose recovered edges were replaced
    declared_children: int = 0  # children left alone: they have declared edges
    agreement: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)  # child: (recovered, declared)
    failures: dict[str, str] = field(default_factory=dict)  # checkpoint: why its weights were not read
    kappa_undirected: int = 0  # kappa pairs left out: nothing told their direction
    seconds: float = 0.0


# ------------------------------------------------------------------------------ reading weights


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint folder's weight files (safetensors if any, else pickled), each one checked to lie inside it."""
    # The folder is untrusted: it is listed and checked the way the probes do before loading.
    from hubindex_plugins.checkpoint_files import check_loadable

    listing = check_loadable(folder)
    top = [p for p in listing.files if p.parent == folder]
    for suffixes in (SAFETENSORS, PICKLED):
        found = sorted(p for p in top if p.name.endswith(suffixes))
        if found:  # each checked again now (a cache snapshot's files are links into its blobs/)
            return [path for path in found if listing.target(path)]
    return []


def _open(files: Sequence[Path]) -> Iterable[tuple[str, Any]]:
    """(name, lazy tensor source) over the files: safetensors slices, or mmapped weights_only state dicts."""
    for path in files:
        if path.name.endswith(SAFETENSORS):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    yield name, (handle, name)
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            for name, value in state.items() if isinstance(state, dict) else []:
                if isinstance(value, torch.Tensor):
                    yield str(name), value


def _shape_dtype(source: Any) -> tuple[tuple[int, ...], str]:
    if isinstance(source, tuple):
        sliced = source[0].get_slice(source[1])
        return tuple(sliced.get_shape()), sliced.get_dtype()
    names = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
    return tuple(source.shape), names.get(str(source.dtype).removeprefix("torch."), "other")


def _is_weight(name: str, shape: tuple[int, ...], dtype: str) -> bool:
    return (dtype in FLOAT_DTYPES and len(shape) >= 2 and int(np.prod(shape)) >= MIN_TENSOR_NUMEL
            and not name.endswith(BUFFER_SUFFIXES))


def read_signature(files: Sequence[Path]) -> dict[tuple[str, tuple[int, ...]], int]:
    """{(name, shape): values} of the weight tensors, from the safetensors headers (no tensor is read)."""
    signature = {}
    for name, source in _open(files):
        shape, dtype = _shape_dtype(source)
        if _is_weight(name, shape, dtype):
            signature[(name, shape)] = int(np.prod(shape))
    return signature


def _seed(name: str, shape: tuple[int, ...], chunk: int) -> int:
    return zlib.crc32(f"{name}|{shape}|{chunk}".encode())


def _sketch(name: str, shape: tuple[int, ...], flat: Any, width: int) -> np.ndarray:
    """The tensor itself when small, else its CountSketch (same buckets and signs in every checkpoint)."""
    import torch

    if flat.numel() <= width:
        return flat.numpy().astype(np.float32, copy=True)
    out = torch.zeros(width, dtype=torch.float32)
    for chunk, start in enumerate(range(0, flat.numel(), CHUNK)):
        part = flat[start:start + CHUNK]
        generator = torch.Generator().manual_seed(_seed(name, shape, chunk))
        buckets = torch.randint(0, width, (part.numel(),), generator=generator)
        flips = torch.randint(0, 2, (part.numel(),), generator=generator, dtype=torch.bool)
        out.index_add_(0, buckets, torch.where(flips, -part, part))
    return out.numpy()


def _on_grid(tensor: Any) -> bool | None:
    """Whether a few rows' values lie on one int8/int4 grid: scale per tensor, per row or per group, with or without zero point."""
    import torch

    if tensor.numel() < QUANT_MIN_NUMEL:
        return None
    rows = tensor.reshape(tensor.shape[0], -1)
    picks = torch.linspace(0, rows.shape[0] - 1, min(QUANT_ROWS, rows.shape[0])).long().unique()
    sample = rows[picks, :QUANT_SAMPLE]
    views = [(sample, tensor.max(), tensor.min())]
    for group in QUANT_GROUPS:
        width = sample.shape[1] if group is None else group
        if sample.shape[1] >= width:
            grouped = sample[:, : sample.shape[1] // width * width].reshape(-1, width)
            views.append((grouped, grouped.amax(1, keepdim=True), grouped.amin(1, keepdim=True)))
    for values, high, low in views:
        for bits in QUANT_BITS:
            symmetric = (torch.maximum(high.abs(), low.abs()) / (2 ** (bits - 1) - 1), 0.0)
            for step, offset in (symmetric, ((high - low) / (2 ** bits - 1), low)):
                steps = (values - offset) / torch.clamp(step, min=1e-30)
                if float(((steps - steps.round()).abs() < GRID_TOLERANCE).float().mean()) >= GRID_SHARE:
                    return True
    return False


def profile_checkpoint(checkpoint_id: str, files: Sequence[Path], width: int = SKETCH_WIDTH) -> WeightProfile:
    """Read a checkpoint's weight tensors once, one at a time, into its WeightProfile."""
    import torch

    tensors = {}
    for name, source in _open(files):
        shape, dtype = _shape_dtype(source)
        if not _is_weight(name, shape, dtype):
            continue
        tensor = (source[0].get_tensor(source[1]) if isinstance(source, tuple) else source).float().contiguous()
        flat = tensor.reshape(-1)
        squares = (flat - flat.mean()).square_()  # float32 sums are pairwise: ~1e-6 relative, enough for votes
        variance = float(squares.mean())
        kurtosis = float(squares.square_().mean()) / variance ** 2 - 3.0 if variance > 0 else 0.0
        del squares
        tensors[(name, shape)] = TensorProfile(
            flat.numel(), float(torch.dot(flat, flat)), kurtosis, _on_grid(tensor),
            hashlib.blake2b(flat.numpy(), digest_size=16).digest(), _sketch(name, shape, flat, width))
    return WeightProfile(checkpoint_id, tensors)


# ------------------------------------------------------------------------------ pairs


def covers(parent: dict[Any, int], child: dict[Any, int]) -> bool:
    """Whether a possible parent has PARENT_COVERAGE of the child's weight tensors (same name and shape)."""
    return bool(child) and sum(key in parent for key in child) >= PARENT_COVERAGE * len(child)


def comparable(a: dict[Any, int], b: dict[Any, int]) -> bool:
    """Whether either signature could be the other's parent."""
    return covers(a, b) or covers(b, a)


@dataclass(frozen=True)
class _Pair:
    distance: float
    vote: float  # v(first -> second): > 0 when the rule makes the first the parent
    differing: int  # shared tensors that differ


def _kurtosis_key(k: float, rule: str) -> float:
    return abs(k) if rule == "abs-kurtosis-falls" else k if rule == "kurtosis-falls" else -k


def _pair(a: WeightProfile, b: WeightProfile, rule: str) -> _Pair:
    distances, votes = [], []
    for key in sorted(a.tensors.keys() & b.tensors.keys()):
        ta, tb = a.tensors[key], b.tensors[key]
        if ta.digest == tb.digest:
            distances.append(0.0)
            continue
        diff = ta.sketch.astype(np.float64) - tb.sketch.astype(np.float64)
        distances.append(float(np.sqrt(diff @ diff / max(ta.norm_sq + tb.norm_sq, 1e-30))))
        votes.append(float(np.sign(_kurtosis_key(ta.kurtosis, rule) - _kurtosis_key(tb.kurtosis, rule))))
    return _Pair(float(np.mean(distances)), float(np.mean(votes)) if votes else 0.0, len(votes))


def _merge_fit(c: WeightProfile, a: WeightProfile, b: WeightProfile) -> tuple[float, float]:
    """(mixing weight w, residual): c ~ w*a + (1-w)*b, residual in the units of the distance D."""
    keys = [k for k in c.tensors if k in a.tensors and k in b.tensors]
    xs = [(c.tensors[k].sketch.astype(np.float64) - b.tensors[k].sketch, a.tensors[k].sketch.astype(np.float64)
           - b.tensors[k].sketch, max(c.tensors[k].norm_sq, 1e-30)) for k in keys]
    denominator = sum(y @ y / n for _, y, n in xs)
    if not keys or denominator <= 0:
        return 0.0, float("inf")
    w = sum(x @ y / n for x, y, n in xs) / denominator
    return float(w), float(np.mean([np.sqrt(max((x - w * y) @ (x - w * y), 0.0) / (2 * n)) for x, y, n in xs]))


# ------------------------------------------------------------------------------ the forest


def recover_edges(profiles: Sequence[WeightProfile], rule: str = DIRECTION_RULE) -> list[RecoveredEdge]:
    """Recovered parent edges among profiled checkpoints, by weights alone (every child, at most two parents)."""
    import networkx as nx

    if rule not in DIRECTION_RULES:
        raise ValueError(f"unknown direction rule {rule!r}; expected one of {DIRECTION_RULES}")
    by_id = {p.checkpoint_id: p for p in profiles}
    ids = sorted(by_id)
    sigs = {i: {key: t.numel for key, t in by_id[i].tensors.items()} for i in ids}
    pairs: dict[tuple[str, str], _Pair] = {}
    for x, y in itertools.combinations(ids, 2):
        if comparable(sigs[x], sigs[y]):
            found = _pair(by_id[x], by_id[y], rule)
            if found.distance <= MAX_DISTANCE:
                pairs[(x, y)] = found
                pairs[(y, x)] = _Pair(found.distance, -found.vote, found.differing)
    neighbours = {i: sorted((p for (c, p) in pairs if c == i), key=lambda p: (pairs[(i, p)].distance, p)) for i in ids}
    quantized = {i for i in ids if by_id[i].quantized}

    def allowed(parent: str, child: str) -> bool:
        return ((parent, child) in pairs and covers(sigs[parent], sigs[child])
                and not (parent in quantized and child not in quantized))

    merges = _find_merges(by_id, ids, pairs, neighbours, quantized)
    mean_distance = _component_means(ids, pairs)

    def cost(parent: str, child: str) -> float:
        pair = pairs[(parent, child)]
        return pair.distance + DIRECTION_WEIGHT * mean_distance[child] * (1 - pair.vote) / 2

    graph = nx.DiGraph()
    root = "\0root"
    for child in ids:
        if child in merges:
            continue
        graph.add_edge(root, child, weight=ROOT_COST)
        for parent in neighbours[child]:
            if parent not in merges and allowed(parent, child):
                graph.add_edge(parent, child, weight=cost(parent, child))
    tree = nx.algorithms.tree.branchings.minimum_spanning_arborescence(graph, attr="weight", preserve_attrs=False)
    parent_of = {child: parent for parent, child in tree.edges if parent != root}
    _adopt_by_merges(parent_of, merges, neighbours, allowed, cost, ids)
    parents = {child: [parent] for child, parent in parent_of.items()}
    parents.update({m: [a, b] for m, (a, b, _, _) in merges.items()})
    lineage = _lineage_graph(parent_of, merges)
    descendants = {n: nx.descendants(lineage, n) if n in lineage else set() for n in ids}
    edges = []
    for child in ids:
        for parent in parents.get(child, []):
            pair = pairs[(parent, child)]
            others = [pairs[(o, child)].distance for o in neighbours[child]
                      if o not in parents[child] and o not in descendants[child] and allowed(o, child)]
            edges.append(_edge(child, parent, pair, others, sigs, merges, quantized, allowed(child, parent)))
    return edges


def _find_merges(by_id: dict[str, WeightProfile], ids: list[str], pairs: dict[tuple[str, str], _Pair],
                 neighbours: dict[str, list[str]], quantized: set[str]) -> dict[str, tuple[str, str, float, float]]:
    """{merge: (parent a, parent b, mixing weight of a, residual ratio)} for checkpoints that are mixtures of two neighbours."""
    merges = {}
    for c in ids:
        if c in quantized:
            continue
        best = None
        for a, b in itertools.combinations(neighbours[c][:MERGE_NEIGHBOURS], 2):
            near = min(pairs[(a, c)].distance, pairs[(b, c)].distance)
            apart = pairs.get((a, b))
            if near <= 0 or (apart is not None and apart.distance <= max(pairs[(a, c)].distance, pairs[(b, c)].distance)):
                continue
            w, residual = _merge_fit(by_id[c], by_id[a], by_id[b])
            ratio = residual / near
            if MERGE_MIX[0] <= w <= MERGE_MIX[1] and ratio <= MERGE_MAX_RESIDUAL and (best is None or ratio < best[3]):
                best = (a, b, w, ratio)
        if best is not None:
            merges[c] = best
    # Two checkpoints each found a mixture involving the other: neither is taken as a merge.
    return {c: m for c, m in merges.items() if not any(c in merges.get(p, ())[:2] for p in m[:2])}


def _component_means(ids: list[str], pairs: dict[tuple[str, str], _Pair]) -> dict[str, float]:
    """Each checkpoint's mean candidate distance within its connected group (MoTHer's mean of the distance matrix)."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(ids)
    graph.add_weighted_edges_from((x, y, pair.distance) for (x, y), pair in pairs.items())
    means = {}
    for group in nx.connected_components(graph):
        distances = [d for _, _, d in graph.subgraph(group).edges(data="weight")]
        means.update({i: float(np.mean(distances)) if distances else 0.0 for i in group})
    return means


def _adopt_by_merges(parent_of: dict[str, str], merges: dict[str, Any], neighbours: dict[str, list[str]],
                     allowed: Any, cost: Any, ids: list[str]) -> None:
    """Give a checkpoint a merge as parent where that costs CHOICE_RATIO times less than its tree parent.

    A merge lies between its parents, near everything around them, so only a clear margin makes a
    checkpoint a fine-tune of the merge rather than a sibling of its parents.
    """
    import networkx as nx

    for child in ids:
        if child in merges:
            continue
        current = cost(parent_of[child], child) / CHOICE_RATIO if child in parent_of else ROOT_COST
        for m in neighbours[child]:
            if m in merges and allowed(m, child) and cost(m, child) < current:
                graph = _lineage_graph(parent_of, merges)
                if not (child in graph and m in graph and nx.has_path(graph, child, m)):  # no cycle
                    parent_of[child], current = m, cost(m, child)


def _lineage_graph(parent_of: dict[str, str], merges: dict[str, Any]) -> Any:
    """parent -> child DiGraph of tree edges and merge edges."""
    import networkx as nx

    graph = nx.DiGraph([(p, c) for c, p in parent_of.items()])
    graph.add_edges_from((p, m) for m, found in merges.items() for p in found[:2])
    return graph


def _edge(child: str, parent: str, pair: _Pair, others: list[float], sigs: dict[str, dict[Any, int]],
          merges: dict[str, Any], quantized: set[str], reversible: bool) -> RecoveredEdge:
    distance = pair.distance
    link = min(1.0, max(0.0, (MAX_DISTANCE - distance) / (MAX_DISTANCE / 2)))
    nearest_other = min(others, default=float("inf"))
    ratio = nearest_other / distance if distance > 0 else (float("inf") if nearest_other > 0 else 1.0)
    choice = min(1.0, max(0.0, (ratio - 1) / (CHOICE_RATIO - 1)))
    detail = f"D={distance:.4f}, kurtosis vote {pair.vote:+.2f} over {pair.differing} differing tensors"
    if child in merges:
        a, b, w, residual = merges[child]
        relation, direction = "merge", 1.0
        choice = min(1.0, max(0.0, 1 - residual / MERGE_MAX_RESIDUAL))
        detail = f"mixture {w:.2f}*{a} + {1 - w:.2f}*{b}, residual {residual:.3f} of D; " + detail
    elif child in quantized and parent not in quantized:
        relation, direction = "quantized", 1.0
        detail = "weights on an int8/int4 grid; " + detail
    elif pair.differing == 0:
        relation, direction = "unknown", 0.0 if reversible else 1.0
        detail = (f"shares {len(sigs[child].keys() & sigs[parent].keys())} tensors unchanged (of {len(sigs[child])} in "
                  f"the child, {len(sigs[parent])} in the parent): truncated or re-headed; direction "
                  + ("not in the weights" if reversible else "by the tensors only the parent has"))
    else:
        relation, direction = "finetune", 1.0 if not reversible else max(0.0, pair.vote)
    confidence = CONFIDENCE_FLOOR + (1 - CONFIDENCE_FLOOR) * min(link, choice, direction)
    return RecoveredEdge(child, parent, relation, "weights", round(confidence, 4), distance, detail)


# ------------------------------------------------------------------------------ the catalog


def recover_lineage(catalog: CatalogLike, checkpoint_ids: Sequence[str] | None = None,
                    rule: str = DIRECTION_RULE) -> RecoveryReport:
    """Recover parents of checkpoints with local weights (and kappa neighbours) and record them for undocumented children.

    All checkpoints with a local copy take part as possible parents; edges are written for the
    children in checkpoint_ids (default: all) that have no declared edge, replacing their stored
    'weights' and 'kappa' edges (declared = false). Documented children are compared, not written.
    """
    import networkx as nx

    started = time.perf_counter()
    report = RecoveryReport()
    conn = catalog.conn
    rows = conn.execute("SELECT checkpoint_id, local_path, model_type, created_at FROM checkpoints").fetchall()
    info = {cid: (path, model_type, created) for cid, path, model_type, created in rows}
    wanted = set(checkpoint_ids) if checkpoint_ids is not None else set(info)
    declared: dict[str, tuple[str, ...]] = {}
    for child, parent in conn.execute("SELECT DISTINCT child, parent FROM lineage WHERE declared ORDER BY ALL").fetchall():
        declared[child] = declared.get(child, ()) + (parent,)
    files, signatures = {}, {}
    for cid, path in ((cid, row[0]) for cid, row in info.items() if row[0]):
        try:
            files[cid] = weight_files(Path(path))
            signatures[cid] = read_signature(files[cid]) if files[cid] else {}
        except Exception as exc:  # noqa: BLE001 - one unreadable checkpoint does not stop the others
            report.failures[cid] = f"{type(exc).__name__}: {exc}"[:300]
    report.examined = len(signatures)
    meets = {x: {y for y in signatures if y != x and comparable(signatures[x], signatures[y])} for x in signatures}
    # Read in full only the checkpoints that meet another, and of those only the groups that hold a wanted child.
    graph = nx.Graph([(x, y) for x, ys in meets.items() for y in ys])
    needed = set().union(*(nx.node_connected_component(graph, x) for x in wanted if x in graph))
    profiles = {}
    for cid in sorted(needed):
        try:
            profiles[cid] = profile_checkpoint(cid, files[cid])
        except Exception as exc:  # noqa: BLE001 - one unreadable checkpoint does not stop the others
            report.failures[cid] = f"{type(exc).__name__}: {exc}"[:300]
    report.profiled = len(profiles)
    weight_edges = recover_edges(list(profiles.values()), rule)
    kappa_edges = _kappa_edges(catalog, info, signatures, profiles, {e.child for e in weight_edges}, rule, report)
    report.edges = weight_edges + kappa_edges
    by_child: dict[str, list[RecoveredEdge]] = {}
    for edge in report.edges:
        by_child.setdefault(edge.child, []).append(edge)
    sets = {}
    for child in sorted((set(signatures) | set(by_child)) & wanted):  # examined: stale recovered edges go
        found = by_child.get(child, [])
        if child in declared:  # compared, not written: a declared edge wins
            best = max(found, key=lambda e: e.confidence, default=None)
            report.agreement[child] = (best.parent if best else None, declared[child])
        else:
            sets[child] = EdgeSet.of([e.edge() for e in found], evidence=("weights", "kappa"))
    report.declared_children = len(report.agreement)
    record_edge_sets(catalog, sets)
    report.written = len(sets)
    report.seconds = time.perf_counter() - started
    return report


def _kappa_edges(catalog: CatalogLike, info: dict[str, tuple[Any, Any, Any]], signatures: dict[str, dict[Any, int]],
                 profiles: dict[str, WeightProfile], has_parent: set[str], rule: str,
                 report: RecoveryReport) -> list[RecoveredEdge]:
    """Weak 'kappa' edges for checkpoints without a weights parent: see the module docstring."""
    rows = catalog.conn.execute("""
        SELECT checkpoint_a, checkpoint_b, min(value), count(*) FROM kappa WHERE centered
        GROUP BY checkpoint_a, checkpoint_b HAVING min(value) >= ?
    """, [KAPPA_MIN]).fetchall()
    best: dict[str, RecoveredEdge] = {}
    for a, b, value, corpora in rows:
        if a not in info or b not in info or not info[a][1] or info[a][1] != info[b][1]:
            continue
        if a in signatures and b in signatures and comparable(signatures[a], signatures[b]):
            continue  # the weights judged this pair already
        parent, child, how = _kappa_direction(a, b, info, profiles, rule)
        if parent is None:
            report.kappa_undirected += 1
            continue
        if child in has_parent:
            continue
        confidence = round(KAPPA_CONFIDENCE - 0.2 * (1 - value) / (1 - KAPPA_MIN), 4)
        edge = RecoveredEdge(child, parent, "unknown", "kappa", max(confidence, 0.0), None,
                             f"kappa {value:.4f} (lowest of {corpora} corpora), same model_type "
                             f"{info[a][1]}; direction by {how}")
        if child not in best or confidence > best[child].confidence:
            best[child] = edge
    assert all(e.confidence < RECOVERED_MIN_CONFIDENCE for e in best.values())  # a hint, never in the closure
    return list(best.values())


def _kappa_direction(a: str, b: str, info: dict[str, tuple[Any, Any, Any]], profiles: dict[str, WeightProfile],
                     rule: str) -> tuple[str | None, str | None, str]:
    """(parent, child, how): the earlier created_at, else the kurtosis vote on the tensors both have, else (None, None)."""
    created_a, created_b = info[a][2], info[b][2]
    if created_a is not None and created_b is not None and created_a != created_b:
        return (a, b, "created_at") if created_a < created_b else (b, a, "created_at")
    if a in profiles and b in profiles:
        vote = _pair(profiles[a], profiles[b], rule).vote
        if vote != 0:
            return (a, b, "kurtosis") if vote > 0 else (b, a, "kurtosis")
    return None, None, ""
