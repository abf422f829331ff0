"""Recovered lineage (hubindex.lineage_recovery) on fine-tune chains built here from tiny torch models.

A "pretrained" parent (an MLP trained from random init on a synthetic task), children fine-tuned
from it on other tasks with different seeds and step counts, grandchildren, an int8
quantise-dequantise copy, a merge (mean of two children) and an unrelated model of the same
architecture (its own init and pretraining), each saved as safetensors in its own checkpoint
folder, indexed by the real local crawler and recovered through the lineage API.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hubindex.lineage import (
    RECOVERED_MIN_CONFIDENCE,
    Edge,
    ancestors,
    edges,
    record_edges,
)
from hubindex.lineage_recovery import (
    MAX_DISTANCE,
    profile_checkpoint,
    read_signature,
    recover_edges,
    recover_lineage,
    weight_files,
)

torch = pytest.importorskip("torch")
WIDTH = 48  # 4 hidden layers: ~8k parameters, 5 weight matrices


# ------------------------------------------------------------------------ synthetic forests


@dataclass
class Forest:
    """Checkpoint folders and the truth: each child's parents and relation."""

    folder: Path
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    relation: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return self.folder / name


def mlp(width: int = WIDTH) -> Any:
    layers: list[Any] = [torch.nn.Linear(16, width), torch.nn.GELU()]
    for _ in range(3):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 8))


def teacher(task: int) -> Any:
    generator = torch.Generator().manual_seed(1000 + task)
    first, second = torch.randn(16, 32, generator=generator), torch.randn(32, 8, generator=generator) / 4
    return lambda x: torch.tanh(x @ first) @ second


def train(state: dict[str, Any] | None, task: int, steps: int, seed: int, lr: float, width: int = WIDTH,
          decay: bool = False) -> dict[str, Any]:
    """Train from `state` (None: a fresh init seeded by `seed`) on a teacher task, with Adam."""
    torch.manual_seed(seed)
    model = mlp(width)
    if state is not None:
        model.load_state_dict(state)
    target, generator = teacher(task), torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if decay else None
    for _ in range(steps):
        x = torch.randn(64, 16, generator=generator)
        loss = ((model(x) - target(x)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule:
            schedule.step()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def quantize(state: dict[str, Any], per_channel: bool = False) -> dict[str, Any]:
    """Symmetric int8 quantise-dequantise of the matrices (biases stay float), per tensor or per row."""
    out = {}
    for name, value in state.items():
        if value.dim() < 2:
            out[name] = value
            continue
        peak = value.abs().amax(dim=1, keepdim=True) if per_channel else value.abs().max()
        scale = peak / 127
        out[name] = ((value / scale).round().clamp(-127, 127) * scale).contiguous()
    return out


def save(forest: Forest, name: str, state: dict[str, Any], parents: tuple[str, ...] = (), relation: str = "") -> None:
    from safetensors.torch import save_file

    folder = forest.path(name)
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny-mlp"}))
    forest.names.append(name)
    if parents:
        forest.parents[name], forest.relation[name] = parents, relation


def build_forest(folder: Path, families: int = 1, depth: int = 2, fanout: tuple[int, int] = (3, 3), quantized: int = 1,
                 merges: int = 1, unrelated: int = 1, seed: int = 0, width: int = WIDTH, pretrain_steps: int = 300,
                 steps: tuple[int, int] = (40, 160), shared_tasks: bool = False) -> Forest:
    """Families of fine-tunes (root + `depth` levels), quantised leaves, merges of siblings and unrelated models.

    With shared_tasks, siblings are fine-tuned on one task (with their own seeds and step counts).
    """
    rng = random.Random(seed)
    forest, states = Forest(folder), {}
    task = 0
    for f in range(families):
        root = f"f{f}"
        states[root] = train(None, task=f, steps=pretrain_steps, seed=100 * seed + f, lr=3e-3, width=width, decay=True)
        save(forest, root, states[root])
        level = [root]
        for _ in range(depth):
            below = []
            for parent in level:
                task += shared_tasks
                for c in range(rng.randint(*fanout)):
                    task += not shared_tasks
                    name = f"{parent}-{c}"
                    states[name] = train(states[parent], task=50 + task, steps=rng.randint(*steps),
                                         seed=rng.randrange(1 << 30), lr=1e-3, width=width)
                    save(forest, name, states[name], (parent,), "finetune")
                    below.append(name)
            level = below
        tuned = [n for n in forest.names if n.startswith(root + "-")]
        for q in rng.sample(tuned, min(quantized, len(tuned))):
            save(forest, f"{q}-int8", quantize(states[q], per_channel=rng.random() < 0.5), (q,), "quantized")
        siblings = [(a, b) for a in tuned for b in tuned if a < b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]]
        for a, b in rng.sample(siblings, min(merges, len(siblings))):
            save(forest, f"{a}+{b.rsplit('-', 1)[1]}-merge", {k: (states[a][k] + states[b][k]) / 2 for k in states[a]},
                 (a, b), "merge")
    for u in range(unrelated):
        save(forest, f"unrelated{u}", train(None, task=0, steps=pretrain_steps, seed=7919 + 100 * seed + u, lr=3e-3,
                                            width=width, decay=True))
    return forest


def profiles_of(forest: Forest) -> list[Any]:
    return [profile_checkpoint(name, weight_files(forest.path(name))) for name in forest.names]


def scores(forest: Forest, recovered: list[Any]) -> dict[str, float]:
    """Precision and recall of recovered edges (undirected: the pair is a true edge) and of their direction."""
    truth = {(p, c) for c, ps in forest.parents.items() for p in ps}
    found = {(e.parent, e.child) for e in recovered}
    undirected = {frozenset(e) for e in truth}
    hits = [e for e in found if frozenset(e) in undirected]
    right = [e for e in found if e in truth]
    return {"precision": len(hits) / max(1, len(found)), "recall": len(hits) / max(1, len(truth)),
            "direction_precision": len(right) / max(1, len(found)), "direction_recall": len(right) / max(1, len(truth)),
            "direction_of_hits": len(right) / max(1, len(hits))}


# ------------------------------------------------------------------------ tests


def small_forest(folder: Path) -> Forest:
    """Parent, 3 children, 2 grandchildren, an int8 leaf, a merge and an unrelated model (~4 s of training)."""
    torch.set_num_threads(1)
    forest = Forest(folder)
    parent = train(None, task=0, steps=300, seed=1, lr=3e-3, decay=True)
    save(forest, "parent", parent)
    children = {}
    for i, steps in enumerate((40, 90, 160)):
        children[i] = train(parent, task=10 + i, steps=steps, seed=10 + i, lr=1e-3)
        save(forest, f"child{i}", children[i], ("parent",), "finetune")
    save(forest, "grandchild0", train(children[0], task=20, steps=80, seed=20, lr=1e-3), ("child0",), "finetune")
    save(forest, "grandchild2", train(children[2], task=21, steps=120, seed=21, lr=1e-3), ("child2",), "finetune")
    save(forest, "child1-int8", quantize(children[1]), ("child1",), "quantized")
    save(forest, "merge01", {k: (children[0][k] + children[1][k]) / 2 for k in children[0]}, ("child0", "child1"), "merge")
    save(forest, "unrelated", train(None, task=0, steps=300, seed=2, lr=3e-3, decay=True))
    return forest


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Forest:
    return small_forest(tmp_path_factory.mktemp("forest"))


def test_signature_comes_from_headers_alone(forest: Forest) -> None:
    signature = read_signature(weight_files(forest.path("parent")))
    # Five weight matrices; biases (1-D) are not weight tensors for lineage.
    assert sorted(signature.values()) == sorted([16 * WIDTH, WIDTH * 8] + [WIDTH * WIDTH] * 3)
    assert all(len(shape) == 2 for _, shape in signature)


def test_recovers_the_forest(forest: Forest) -> None:
    recovered = recover_edges(profiles_of(forest))
    found = {(e.parent, e.child): e for e in recovered}
    measured = scores(forest, recovered)
    # Measured on this forest: all 8 edges found and directed right; thresholds leave room for BLAS noise.
    assert measured["precision"] >= 0.85 and measured["recall"] >= 0.85, measured
    assert measured["direction_precision"] >= 0.75, measured
    assert found[("child1", "child1-int8")].relation == "quantized"
    assert found[("child0", "merge01")].relation == found[("child1", "merge01")].relation == "merge"
    assert {e.relation for e in recovered if e.child.startswith(("child", "grandchild")) and e.child != "child1-int8"} \
        == {"finetune"}
    assert all(e.evidence == "weights" and 0.0 <= e.confidence <= 1.0 and e.distance <= MAX_DISTANCE for e in recovered)


def test_unrelated_models_are_never_linked(forest: Forest) -> None:
    recovered = recover_edges(profiles_of(forest))
    assert not [e for e in recovered if "unrelated" in (e.parent, e.child)]
    # Two independent models alone: no edge at all, whatever the direction rule.
    pair = [profile_checkpoint(n, weight_files(forest.path(n))) for n in ("parent", "unrelated")]
    for rule in ("abs-kurtosis-falls", "kurtosis-falls", "kurtosis-rises"):
        assert recover_edges(pair, rule) == []


def test_recorded_through_the_lineage_api(forest: Forest, hubindex: Any, index: Any) -> None:
    assert hubindex("crawl", "local", str(forest.folder)).exit_code == 0
    ids = {name: f"local:{forest.path(name).resolve()}" for name in forest.names}
    with index.open_catalog() as catalog:
        # A declared edge wins: child2 documents its parent, so nothing recovered is written for it.
        record_edges(catalog, ids["child2"], [Edge(ids["parent"], "finetune", "card", 1.0)])
        report = recover_lineage(catalog)
        assert report.examined == len(forest.names) and report.profiled == len(forest.names)
        assert report.declared_children == 1 and report.agreement[ids["child2"]] == (ids["parent"], (ids["parent"],))
        stored = {(e.child, e.parent): e for e in edges(catalog) if not e.declared}
        assert stored and all(e.evidence == "weights" and not e.declared for e in stored.values())
        assert (ids["child2"], ids["parent"]) not in stored
        assert stored[(ids["child1-int8"], ids["child1"])].relation == "quantized"
        # Recovered edges enter the closure from RECOVERED_MIN_CONFIDENCE on (the merge's two, the int8 copy's).
        for (child, parent), edge in stored.items():
            direct = {r.checkpoint_id for r in ancestors(catalog, child, depth=1)}
            assert (parent in direct) == (edge.confidence >= RECOVERED_MIN_CONFIDENCE), edge
        assert {r.checkpoint_id for r in ancestors(catalog, ids["merge01"])} >= {ids["child0"], ids["child1"]}
        # Run again: the same edges, replaced rather than added.
        recover_lineage(catalog, [ids["grandchild0"]])
        again = {(e.child, e.parent) for e in edges(catalog) if not e.declared}
        assert again == set(stored)


def test_kappa_neighbour_is_a_weak_edge(forest: Forest, hubindex: Any, index: Any) -> None:
    assert hubindex("crawl", "local", str(forest.folder)).exit_code == 0
    ids = {name: f"local:{forest.path(name).resolve()}" for name in forest.names}
    with index.open_catalog() as catalog:
        conn = catalog.conn
        # A checkpoint with no local weights, functionally next to the parent, created after it.
        conn.execute("INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at, model_type, created_at) "
                     "VALUES ('hf:someone/copy', 'hf', now(), now(), 'tiny-mlp', TIMESTAMP '2030-01-01')")
        conn.execute("UPDATE checkpoints SET created_at = TIMESTAMP '2020-01-01' WHERE checkpoint_id = ?", [ids["parent"]])
        a, b = sorted([ids["parent"], "hf:someone/copy"])
        for corpus, value in (("c1", 0.995), ("c2", 0.99)):
            conn.execute("INSERT INTO kappa VALUES (?, ?, true, ?, ?, 's', 's', ?, 100, now())", [corpus, corpus, a, b, value])
        report = recover_lineage(catalog)
        kappa = [e for e in report.edges if e.evidence == "kappa"]
        assert [(e.child, e.parent, e.relation) for e in kappa] == [("hf:someone/copy", ids["parent"], "unknown")]
        assert kappa[0].confidence < RECOVERED_MIN_CONFIDENCE and "created_at" in kappa[0].detail
        assert not ancestors(catalog, "hf:someone/copy")  # a hint: kept in `lineage`, not in the closure
        assert [e.evidence for e in edges(catalog, child="hf:someone/copy")] == ["kappa"]


def test_recover_lineage_command_on_the_real_zoo(zoo: Any, hubindex: Any) -> None:
    """The zoo's children declare their parents (manifest): the weights find the same ones, and
    nothing is written over the declared edges."""
    assert hubindex("crawl", "local", str(zoo.out)).exit_code == 0
    result = hubindex("recover-lineage", "--format", "json")
    assert result.exit_code == 0, result.stderr
    found = {(row["checkpoint_id"], row["parent"], row["relation"]) for row in json.loads(result.stdout)}
    org = "hf:hubindex-zoo/"
    assert (org + "tf_efficientnet_lite0.in1k_ft_digits", org + "tf_efficientnet_lite0.in1k", "finetune") in found
    # Independent random inits and independent pretrainings share no tree.
    assert not any("random_init" in child or "random-init" in child for child, _, _ in found)
    assert "4 left to their declared parents" in result.stderr
    # Recovered edges are stored only for children that declare none.
    listed = hubindex("sql", "SELECT count(*) AS n FROM lineage WHERE NOT declared AND child IN "
                             "(SELECT child FROM lineage WHERE declared)", "--format", "json")
    assert json.loads(listed.stdout) == [{"n": 0}]
