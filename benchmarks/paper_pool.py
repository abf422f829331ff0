"""The checkpoint pools, target tasks, metric scores and fine-tuned ground truth shared by the
ranking (Li et al.) and search (Renggli et al.) benchmarks.

`prepare_pool(work, quick, seed)` goes through the product as a user would: `hubindex zoo build`,
eight more children derived from the zoo into a second Hugging Face cache, `hubindex crawl local`
of both, `hubindex task add` of every task, `hubindex score --task T --reference-task R` (every
installed metric) and `hubindex sql` for the scores; then it fine-tunes every checkpoint on every
task of its modality (benchmarks/finetune.py) for the ground truth. Everything is cached under
`--work`: a rerun with the same settings reuses the index, the scores and the fine-tuning results.

Pools (ranked per task within the checkpoints of the task's modality):

- image (9): tf_efficientnet_lite{0,1,2}.in1k, lite0.in1k_ft_digits and lite0.random_init from the
  zoo; derived here (org `paper-pool`): lite1.in1k_noise and lite0.in1k_noise (Gaussian noise of
  0.5 and 1.0 times each weight tensor's standard deviation), lite2.in1k_reinit_top (its last two
  stages and head convolution re-initialised), lite1.in1k_ft_photos (top layers briefly
  fine-tuned to tell the two sample photos apart, on tiles of the photo-regions task split only).
- text (9): all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2, MiniLM first3, bbc-topics and random-init
  from the zoo; derived: MiniLM first1, paraphrase-MiniLM-L3-v2 first1, MiniLM with noise (0.5 x
  std) and MiniLM with its top three layers re-initialised.

Tasks and splits. Every task has three disjoint parts: the hubindex task (what the metrics see;
`task add` splits it 80/20 for linear and knn; fine-tuning trains on all of it), a validation
set (the learning-rate choice) and a test set (the ground truth; seen by nothing else):

- digits (image, 10 classes): scikit-learn's 8x8 digits. Test: the 200 digits the zoo's
  lite0.in1k_ft_digits held out of its own fine-tuning (so no checkpoint saw a test digit);
  task, validation and reference digits are drawn per class from the rest.
- photo-regions (image, 8 classes): 32x32 tiles of scikit-learn's two sample photos; the class
  is the photo and the quadrant the tile lies in. The tiles of the grid are assigned to task
  (60%), validation (15%) and test (25%) by one fixed draw, so test tiles are interleaved with,
  but never overlap, the tiles any model trains on (the ft_photos child included). (A rotation
  task on patches of these photos was tried first: a linear probe on ImageNet features did not
  beat chance on patches from other parts of the photos, so it ranked nothing.)
- bbc-topics (text, 5 classes) and bbc-business-politics-tech (text, 3 classes): the first 32
  words (16 quick; title and lead) of BBC News articles. Test: the articles the zoo's MiniLM
  bbc-topics child held out of its fine-tuning (those of the three topics for the second task).
- References for task-relatedness (Mehra et al.; it needs one with at least as many classes as
  the target): digits-reference (other digits) for both image tasks, bbc-reference (the five
  topics, other articles) for both text tasks.

Sizes (task / validation / test), full: digits 200/100/200, photo-regions 200/78/130 (every
validation and test tile), bbc-topics 160/80/200, bbc-business-politics-tech 162/81/~120;
references 100 digits and 150 articles. Quick: about a quarter (`pool_settings`). Each run lives
in `<work>/paper-pool/<mode>-seed<N>-<hash of the settings>/` (index, data, scores.csv,
truth.csv); the zoo in `<work>/zoo`, the children in `<work>/paper-pool/derived`, fine-tuning
results in `<work>/paper-pool/finetune`.

Models run with OMP_WAIT_POLICY=PASSIVE (unless set): waiting OpenMP threads sleep rather than
spin, which on a 2-core machine that also runs other work made torch 3-10x faster in our
measurements; metrics run with one BLAS thread (see `score_tasks`).

Agnostic search ranks by ImageNet top-1, then upstream data, then parameter count; `crawl local`
records neither of the first two for these checkpoints, so it ranks by size, and ties go to the
lower id - the original checkpoint before its `paper-pool` children of the same size.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Read when torch loads its OpenMP runtime, so before anything imports torch (see the docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module finetune.py
from paper_common import log
from finetune import FinetuneJob, FinetuneResult, FinetuneSettings, LabeledSplit, TaskSplits, finetune_all
from hubindex.cli import main as hubindex_main
from hubindex.errors import HubindexError
from hubindex.index import Index
from hubindex.tasks import images_from_array
from hubindex.types import IMAGE, TEXT
from hubindex_plugins import zoo

DERIVED_ORG = "paper-pool"
# Bump when a derived recipe changes what a child holds: children of another version are rebuilt.
DERIVED_VERSION = 3
# Bump when the tasks' data or the pool's recipe changes: the run folder's name changes with it.
POOL_VERSION = 1
TILE = 32  # side of a photo tile, in pixels
TILE_SPLIT = {"task": 0.60, "validation": 0.15, "test": 0.25}  # shares of the tiles
BPT_TOPICS = ("business", "politics", "tech")


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class PoolSettings:
    """Example counts per task and the fine-tuning settings; quick and full differ only here."""

    mode: str
    seed: int
    digits_per_class: tuple[int, int, int]  # task, validation, reference
    regions_counts: tuple[int, int]  # photo-regions task, validation tiles
    topics_per_class: tuple[int, int, int]  # bbc-topics task, validation, bbc-reference
    bpt_per_class: tuple[int, int]  # bbc-business-politics-tech task, validation
    n_test: int  # test examples per task (the 3-topic task keeps those of its topics)
    lead_words: int  # words of each BBC article kept (title and lead)
    finetune: FinetuneSettings

    def key(self) -> str:
        """A short hash of every setting: part of the run folder's name."""
        text = json.dumps({"pool_version": POOL_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def pool_settings(quick: bool, seed: int) -> PoolSettings:
    """Full: about 200 examples per task, 3 learning rates. Quick: about 50, 2 learning rates, fewer epochs."""
    if quick:
        return PoolSettings("quick", seed, (5, 3, 4), (48, 24), (10, 5, 8), (14, 7), 60, 16, FinetuneSettings(
            image_learning_rates=(1e-3, 3e-3), text_learning_rates=(1e-4, 3e-4), image_epochs=4, text_epochs=2,
            batch_size=16, image_size=32, max_length=24, seed=seed))
    return PoolSettings("full", seed, (20, 10, 10), (200, 78), (32, 16, 30), (54, 27), 200, 32, FinetuneSettings(
        image_learning_rates=(3e-4, 1e-3, 3e-3), text_learning_rates=(3e-5, 1e-4, 3e-4), image_epochs=4,
        text_epochs=3, batch_size=16, image_size=96, max_length=48, seed=seed))


# ------------------------------------------------------------------------------------ derived checkpoints


@dataclass(frozen=True)
class DerivedMember(zoo.Member):
    """A child of a zoo member, published under the benchmark's own organisation."""

    @property
    def repo_id(self) -> str:
        """paper-pool/NAME."""
        return f"{DERIVED_ORG}/{self.name}"


def noised_state(state: dict[str, Any], scale: float, seed: int) -> dict[str, Any]:
    """Every weight matrix or kernel plus Gaussian noise of `scale` times its own standard deviation."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.ndim >= 2:
            tensor = tensor + torch.randn(tensor.shape, generator=generator) * tensor.std() * scale
        out[name] = tensor
    return out


def recipe_bert_noise(folder: Path, member: zoo.Member, progress: bool, scale: float) -> dict[str, Any]:
    """all-MiniLM-L6-v2 with noise on every weight matrix (embeddings included)."""
    parent = zoo.load_bert(zoo.minilm_folder())
    params = zoo.save_bert(folder, parent.config, noised_state(parent.state_dict(), scale, zoo.SEED))
    zoo.copy_text_files(folder)
    zoo.write_card(folder, member, f"""
{zoo.ORG}/{member.parent} with Gaussian noise added to every weight matrix: {scale} times the
matrix's own standard deviation (seed {zoo.SEED}). Built by benchmarks/paper_pool.py.
""", **zoo.TEXT_CARD)
    return {"recipe": {"noise_scale": scale, "seed": zoo.SEED}, "params": params}


def recipe_bert_reinit_top(folder: Path, member: zoo.Member, progress: bool, keep: int) -> dict[str, Any]:
    """all-MiniLM-L6-v2 with every layer from `keep` on (and the pooler) freshly initialised."""
    with zoo.quiet_transformers():
        from transformers import BertModel

        parent = zoo.load_bert(zoo.minilm_folder())
        zoo.seeded()
        fresh = BertModel(parent.config).state_dict()
    state = {
        name: fresh[name] if name.startswith("pooler.") or (
            name.startswith("encoder.layer.") and int(name.split(".")[2]) >= keep) else tensor
        for name, tensor in parent.state_dict().items()
    }
    params = zoo.save_bert(folder, parent.config, state)
    zoo.copy_text_files(folder)
    layers = parent.config.num_hidden_layers
    zoo.write_card(folder, member, f"""
{zoo.ORG}/{member.parent} with its transformer layers {keep + 1}-{layers} and pooler re-initialised
(seed {zoo.SEED}); the embeddings and first {keep} layers are kept. Built by benchmarks/paper_pool.py.
""", **zoo.TEXT_CARD)
    return {"recipe": {"layers_kept": keep, "of_layers": layers, "seed": zoo.SEED}, "params": params}


def snapshot_of(zoo_out: Path, name: str) -> Path:
    """The snapshot folder of a built zoo member."""
    repo = zoo.repo_folder(zoo_out, f"{zoo.ORG}/{name}")
    commit = zoo.read_commit(repo)
    if commit is None:
        raise HubindexError(f"zoo member {name} is not built in {zoo_out}; run `hubindex zoo build --out {zoo_out}`")
    return repo / "snapshots" / commit


def recipe_paraphrase_first(folder: Path, member: zoo.Member, progress: bool, zoo_out: Path,
                            layers: int) -> dict[str, Any]:
    """The first `layers` layers of paraphrase-MiniLM-L3-v2 (read from the built zoo)."""
    import copy

    parent = zoo.load_bert(snapshot_of(zoo_out, member.parent))
    config = copy.deepcopy(parent.config)
    config.num_hidden_layers = layers
    state = {name: tensor for name, tensor in parent.state_dict().items()
             if not name.startswith(("encoder.layer.", "pooler.")) or (
                 name.startswith("encoder.layer.") and int(name.split(".")[2]) < layers)}
    params = zoo.save_bert(folder, config, state, add_pooling_layer=False)
    zoo.copy_text_files(folder, zoo.TOKENIZER_FILES)
    zoo.write_card(folder, member, f"""
The first {layers} of the {parent.config.num_hidden_layers} transformer layers of {zoo.ORG}/{member.parent}
with its embeddings; nothing retrained. Built by benchmarks/paper_pool.py.
""", **zoo.TEXT_CARD)
    return {"recipe": {"layers_kept": layers, "of_layers": parent.config.num_hidden_layers}, "params": params}


def recipe_lite_noise(folder: Path, member: zoo.Member, progress: bool, index: int, scale: float) -> dict[str, Any]:
    """tf_efficientnet_lite{index} with noise on every convolution kernel and the classifier."""
    model = zoo.load_lite(index)
    model.load_state_dict(noised_state(model.state_dict(), scale, zoo.SEED))
    params = zoo.save_timm(folder, member, model)
    zoo.write_card(folder, member, f"""
{zoo.ORG}/{member.parent} with Gaussian noise added to every convolution kernel and the classifier
matrix: {scale} times the tensor's own standard deviation (seed {zoo.SEED}); BatchNorm untouched.
Built by benchmarks/paper_pool.py.
""", **zoo.IMAGE_CARD)
    return {"recipe": {"noise_scale": scale, "seed": zoo.SEED}, "params": params}


REINIT_TOP = ("blocks.5", "blocks.6", "conv_head", "bn2")


def recipe_lite_reinit_top(folder: Path, member: zoo.Member, progress: bool, index: int) -> dict[str, Any]:
    """tf_efficientnet_lite{index} with its last two stages and head convolution freshly initialised."""
    from hubindex.torch_compat import import_timm

    model = zoo.load_lite(index)
    zoo.seeded()
    fresh = import_timm().create_model(f"tf_efficientnet_lite{index}", pretrained=False).state_dict()
    model.load_state_dict({name: fresh[name] if name.startswith(REINIT_TOP) else tensor
                           for name, tensor in model.state_dict().items()})
    params = zoo.save_timm(folder, member, model)
    zoo.write_card(folder, member, f"""
{zoo.ORG}/{member.parent} with {', '.join(REINIT_TOP)} re-initialised (timm's initialisation, seed
{zoo.SEED}); the stem, first five stages and the classifier are kept. Built by benchmarks/paper_pool.py.
""", **zoo.IMAGE_CARD)
    return {"recipe": {"reinitialised": list(REINIT_TOP), "seed": zoo.SEED},
            "params": params}


def recipe_lite_ft_photos(folder: Path, member: zoo.Member, progress: bool, index: int, steps: int = 12,
                          batch_size: int = 16, lr_body: float = 1e-4, lr_head: float = 1e-2) -> dict[str, Any]:
    """tf_efficientnet_lite{index} re-headed for 2 classes, its top fine-tuned to tell china.jpg from flower.jpg."""
    import torch

    model = zoo.load_lite(index)
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    photos, tiles = photo_tiles()
    task_tiles = [t for t in tiles if t.split == "task"]
    chosen = [task_tiles[i] for i in np.random.default_rng(zoo.SEED).permutation(len(task_tiles))[:steps * batch_size]]
    images = torch.from_numpy(tile_pixels(photos, chosen)).float().div(255.0).permute(0, 3, 1, 2)
    targets = torch.tensor([t.photo for t in chosen])
    zoo.seeded()
    model.reset_classifier(2)
    trainable = [p for n, p in model.named_parameters() if n.startswith(zoo.DIGITS_TRAINABLE)]
    head = set(map(id, model.get_classifier().parameters()))
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(zoo.DIGITS_TRAINABLE))
    optimizer = torch.optim.AdamW([
        {"params": [p for p in trainable if id(p) not in head], "lr": lr_body},
        {"params": [p for p in trainable if id(p) in head], "lr": lr_head},
    ])
    model.eval()  # BatchNorm statistics frozen over these few small batches, as the zoo's digits child
    losses = []
    for step in range(steps):
        rows = slice(step * batch_size, (step + 1) * batch_size)
        batch = zoo.digits_batch(images[rows], size, cfg["mean"], cfg["std"])
        loss = torch.nn.functional.cross_entropy(model(batch), targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = zoo.save_timm(folder, member, model, label_names=["china", "flower"])
    training = {"task": "sample-photo identity (china vs flower), task tiles", "steps": steps,
                "batch_size": batch_size, "image_size": size, "trained": list(zoo.DIGITS_TRAINABLE),
                "lr_body": lr_body, "lr_head": lr_head, "seed": zoo.SEED,
                "final_train_loss": round(sum(losses[-3:]) / 3, 4)}
    zoo.write_card(folder, member, f"""
{zoo.ORG}/{member.parent} with a new 2-class head; its last two stages, head convolution and
classifier fine-tuned for {steps} steps (batch {batch_size}, seed {zoo.SEED}) to tell {TILE}x{TILE}
tiles of scikit-learn's china.jpg from tiles of flower.jpg (tiles of the photo-regions task split only).
Built by benchmarks/paper_pool.py.
""", base_model_relation="finetune", **zoo.IMAGE_CARD)
    return {"training": training, "params": params}


def versioned(recipe: Callable[..., dict[str, Any]], **arguments: Any) -> Callable[..., dict[str, Any]]:
    """A recipe whose lineage also records DERIVED_VERSION (so that a changed recipe is rebuilt)."""

    def build(folder: Path, member: zoo.Member, progress: bool) -> dict[str, Any]:
        """The recipe's lineage details, plus DERIVED_VERSION."""
        return {**recipe(folder, member, progress, **arguments), "derived_version": DERIVED_VERSION}

    return build


def derived_members(zoo_out: Path) -> tuple[DerivedMember, ...]:
    """The eight children: four text, four image."""
    minilm, paraphrase = zoo.MINILM, "paraphrase-MiniLM-L3-v2"
    lite = {i: f"tf_efficientnet_lite{i}.in1k" for i in range(3)}
    text, image = (zoo.MINILM_PACKAGE,), lambda i: (zoo.LITE_PACKAGES[i],)
    return (
        DerivedMember(f"{minilm}-first1", "text", "truncated", minilm, text,
                      versioned(zoo.recipe_truncated, layers=1)),
        DerivedMember(f"{paraphrase}-first1", "text", "truncated", paraphrase, text,
                      versioned(recipe_paraphrase_first, zoo_out=zoo_out, layers=1)),
        DerivedMember(f"{minilm}-noise", "text", "noised", minilm, text,
                      versioned(recipe_bert_noise, scale=0.5)),
        DerivedMember(f"{minilm}-reinit-top3", "text", "partial-reinit", minilm, text,
                      versioned(recipe_bert_reinit_top, keep=3)),
        DerivedMember(f"{lite[1]}_noise", "image", "noised", lite[1], image(1),
                      versioned(recipe_lite_noise, index=1, scale=0.5)),
        DerivedMember(f"{lite[0]}_noise", "image", "noised", lite[0], image(0),
                      versioned(recipe_lite_noise, index=0, scale=1.0)),
        DerivedMember(f"{lite[2]}_reinit_top", "image", "partial-reinit", lite[2], image(2),
                      versioned(recipe_lite_reinit_top, index=2)),
        DerivedMember(f"{lite[1]}_ft_photos", "image", "finetuned", lite[1], (*image(1), "scikit-learn"),
                      versioned(recipe_lite_ft_photos, index=1)),
    )


def derived_is_complete(out: Path, member: DerivedMember) -> bool:
    """Complete (every link resolves) and built by the current derived recipes."""
    repo = zoo.repo_folder(out, member.repo_id)
    if not zoo.is_complete(repo):
        return False
    lineage = json.loads((repo / "snapshots" / str(zoo.read_commit(repo)) / zoo.LINEAGE_FILE).read_text())
    return lineage.get("derived_version") == DERIVED_VERSION


def build_derived(out: Path, zoo_out: Path) -> list[str]:
    """Build the children that are missing into the cache folder `out`; the names built."""
    members = derived_members(zoo_out)
    todo = [m for m in members if not derived_is_complete(out, m)]
    if todo:
        staging = zoo.prepare_out(out)
        zoo.require_packages(p for m in todo for p in m.packages)
        for member in todo:
            result = zoo.build_member(member, out, staging, progress=False)
            log(f"paper-pool: built {result.repo_id} in {result.seconds:.1f} s")
    return [m.name for m in todo]


# ------------------------------------------------------------------------------------ task data


@dataclass
class TaskData:
    """A target or reference task: the hubindex task's examples, and for targets validation and test."""

    name: str
    modality: str
    examples: np.ndarray  # texts (n,) or images (n, h, w[, 3]) as `task add --arrays` takes them
    labels: np.ndarray  # class names or integers, as given to `task add`
    reference: str | None = None  # the reference task's name (targets only)
    validation: tuple[np.ndarray, np.ndarray] | None = None
    test: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def is_target(self) -> bool:
        """Whether this is a target task (with validation and test sets) rather than a reference."""
        return self.test is not None


def zoo_heldout(n: int, lineage: dict[str, Any]) -> np.ndarray:
    """The rows a zoo child held out of its fine-tuning: the first ones of its seeded permutation.

    Mirrors the zoo's recipes (`seeded()`, then `randperm(n, generator)`); the count is read from the
    child's own lineage file.
    """
    import torch

    heldout = int(lineage["training"]["heldout_examples"])
    return torch.randperm(n, generator=torch.Generator().manual_seed(zoo.SEED))[:heldout].numpy()


def read_lineage(zoo_out: Path, name: str) -> dict[str, Any]:
    """The hubindex_lineage.json of a built zoo member."""
    return json.loads((snapshot_of(zoo_out, name) / zoo.LINEAGE_FILE).read_text())


def per_class_draw(labels: np.ndarray, excluded: np.ndarray, counts: tuple[int, ...],
                   rng: np.random.Generator, classes: Any = None) -> list[np.ndarray]:
    """Disjoint row sets, one per count: `count` rows of each class (not in `excluded`), seeded."""
    chosen: list[list[int]] = [[] for _ in counts]
    blocked = set(excluded.tolist())
    for label in (np.unique(labels) if classes is None else classes):
        rows = rng.permutation([r for r in np.flatnonzero(labels == label) if r not in blocked])
        if len(rows) < sum(counts):
            raise HubindexError(f"class {label!r} has {len(rows)} free rows, {sum(counts)} needed")
        start = 0
        for part, count in zip(chosen, counts):
            part.extend(rows[start:start + count].tolist())
            start += count
    return [np.array(sorted(part)) for part in chosen]


def digits_tasks(settings: PoolSettings, zoo_out: Path, rng: np.random.Generator) -> list[TaskData]:
    """The digits target (test: the zoo child's held-out digits) and its reference task."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    test = zoo_heldout(len(labels), read_lineage(zoo_out, "tf_efficientnet_lite0.in1k_ft_digits"))[:settings.n_test]
    task, validation, reference = per_class_draw(labels, test, settings.digits_per_class, rng)
    return [
        TaskData("digits", IMAGE, images[task], labels[task], "digits-reference",
                 (images[validation], labels[validation]), (images[test], labels[test])),
        TaskData("digits-reference", IMAGE, images[reference], labels[reference]),
    ]


@dataclass(frozen=True)
class PhotoTile:
    """One TILE x TILE square of a sample photo, its region class and its split."""

    photo: int  # 0 china.jpg, 1 flower.jpg
    y: int
    x: int
    region: int  # photo * 4 + quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)
    split: str  # "task", "validation" or "test"


def photo_tiles() -> tuple[list[np.ndarray], list[PhotoTile]]:
    """The two sample photos and every tile of their grid, assigned to a split by a fixed draw.

    The assignment does not depend on the benchmark's seed: the ft_photos child, built once,
    trains on task tiles only, whatever seed the tasks are drawn with.
    """
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    tiles = []
    for index, photo in enumerate(photos):
        height, width = photo.shape[:2]
        for y in range(0, height - TILE + 1, TILE):
            for x in range(0, width - TILE + 1, TILE):
                quadrant = 2 * int(y + TILE / 2 >= height / 2) + int(x + TILE / 2 >= width / 2)
                tiles.append((index, y, x, 4 * index + quadrant))
    order = np.random.default_rng(zoo.SEED).permutation(len(tiles))
    bounds = np.cumsum([int(round(share * len(tiles))) for share in TILE_SPLIT.values()])
    split_of_position = np.searchsorted(bounds, np.arange(len(tiles)), side="right")
    names = list(TILE_SPLIT)
    assigned = [PhotoTile(*tiles[i], names[min(split_of_position[rank], len(names) - 1)])
                for rank, i in enumerate(order)]
    return list(photos), sorted(assigned, key=lambda t: (t.photo, t.y, t.x))


def tile_pixels(photos: list[np.ndarray], tiles: list[PhotoTile]) -> np.ndarray:
    """The tiles' pixels, (n, TILE, TILE, 3) uint8."""
    return np.stack([photos[t.photo][t.y:t.y + TILE, t.x:t.x + TILE] for t in tiles]).astype(np.uint8)


def regions_task(settings: PoolSettings, rng: np.random.Generator) -> TaskData:
    """photo-regions: which photo and quadrant a tile comes from; task tiles drawn with the seed."""
    photos, tiles = photo_tiles()
    by_split = {name: [t for t in tiles if t.split == name] for name in TILE_SPLIT}
    n_task, n_validation = settings.regions_counts
    task = [by_split["task"][i] for i in sorted(rng.permutation(len(by_split["task"]))[:n_task])]
    validation = [by_split["validation"][i] for i in sorted(rng.permutation(len(by_split["validation"]))[:n_validation])]
    test = [by_split["test"][i] for i in sorted(rng.permutation(len(by_split["test"]))[:settings.n_test])]

    def labelled(chosen: list[PhotoTile]) -> tuple[np.ndarray, np.ndarray]:
        """The tiles' pixels and region classes."""
        return tile_pixels(photos, chosen), np.array([t.region for t in chosen])

    return TaskData("photo-regions", IMAGE, *labelled(task), "digits-reference", labelled(validation), labelled(test))


def bbc_tasks(settings: PoolSettings, zoo_out: Path, rng: np.random.Generator) -> list[TaskData]:
    """The two BBC targets (test: the zoo child's held-out articles) and their reference task."""
    topics, texts, labels_list = zoo.read_bbc_news()
    leads = np.array([" ".join(text.split()[:settings.lead_words]) for text in texts])
    names = np.array([topics[label] for label in labels_list])
    missing = set(BPT_TOPICS) - set(topics)
    if missing:
        raise HubindexError(f"BBC News has no topic {sorted(missing)}; its topics: {topics}")
    test = zoo_heldout(len(leads), read_lineage(zoo_out, f"{zoo.MINILM}-bbc-topics"))[:settings.n_test]
    task, validation, reference = per_class_draw(names, test, settings.topics_per_class, rng)
    bpt_task, bpt_validation = per_class_draw(names, np.concatenate([test, task, validation, reference]),
                                              settings.bpt_per_class, rng, BPT_TOPICS)
    bpt_test = np.array([row for row in test if names[row] in BPT_TOPICS])
    return [
        TaskData("bbc-topics", TEXT, leads[task], names[task], "bbc-reference",
                 (leads[validation], names[validation]), (leads[test], names[test])),
        TaskData("bbc-business-politics-tech", TEXT, leads[bpt_task], names[bpt_task], "bbc-reference",
                 (leads[bpt_validation], names[bpt_validation]), (leads[bpt_test], names[bpt_test])),
        TaskData("bbc-reference", TEXT, leads[reference], names[reference]),
    ]


def make_tasks(settings: PoolSettings, zoo_out: Path) -> list[TaskData]:
    """Every task, target and reference, drawn with the settings' seed."""
    rng = np.random.default_rng(settings.seed)
    return [*digits_tasks(settings, zoo_out, rng), regions_task(settings, rng), *bbc_tasks(settings, zoo_out, rng)]


def split_of(examples: np.ndarray, labels: np.ndarray, modality: str, classes: list[str]) -> LabeledSplit:
    """Examples as the fine-tuning code takes them: texts or RGB images, labels as class indices."""
    items = [str(t) for t in examples] if modality == TEXT else images_from_array(examples, "fine-tuning split")
    position = {name: i for i, name in enumerate(classes)}
    return LabeledSplit(items, np.array([position[str(label)] for label in labels]))


def task_splits(task: TaskData) -> TaskSplits:
    """The target's train (its hubindex task), validation and test examples, classes in `task add`'s order."""
    assert task.validation is not None and task.test is not None
    raw = np.unique(task.labels)  # task add orders integers numerically and strings alphabetically
    classes = [str(c) for c in raw]
    return TaskSplits(task.name, task.modality, len(classes),
                      split_of(task.examples, task.labels, task.modality, classes),
                      split_of(*task.validation, task.modality, classes),
                      split_of(*task.test, task.modality, classes))


# ------------------------------------------------------------------------------------ the product


def hubindex(index_dir: Path, *args: str, capture: bool = False) -> str:
    """`hubindex --index DIR ARGS` in this process; its output goes to stderr unless captured."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out if capture else sys.stderr):
        code = hubindex_main(["--index", str(index_dir), *args])
    if code != 0:
        raise HubindexError(f"hubindex {' '.join(args)} failed with exit code {code}")
    return out.getvalue()


@dataclass
class Pool:
    """What both benchmarks read: the index, the tasks, scores and ground truth."""

    settings: PoolSettings
    run_dir: Path
    index_dir: Path
    targets: list[TaskData]
    pools: dict[str, list[str]]  # task -> checkpoint ids ranked on it
    scores_csv: Path
    truth_csv: Path
    truth: dict[str, dict[str, FinetuneResult]]  # task -> checkpoint id -> sweep
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def settings_json(self) -> dict[str, Any]:
        """The settings as JSON, with the run folder's name."""
        return {**asdict(self.settings), "run_folder": self.run_dir.name}

    def accuracy(self, task: str, checkpoint_id: str) -> float:
        """The ground truth: the fine-tuned test accuracy of a checkpoint on a task."""
        return self.truth[task][checkpoint_id].test_accuracy


def timed(stages: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    """Run one stage, log and record its seconds; its return value."""
    started = time.perf_counter()
    value = action()
    stages[name] = round(time.perf_counter() - started, 1)
    log(f"paper-pool: {name}: {stages[name]:.1f} s")
    return value


def add_tasks(index_dir: Path, data_dir: Path, tasks: list[TaskData], seed: int) -> None:
    """`hubindex task add` every task from .npy files (replacing other data under the same name)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        x, y = data_dir / f"{task.name}-x.npy", data_dir / f"{task.name}-y.npy"
        np.save(x, task.examples)
        np.save(y, task.labels)
        hubindex(index_dir, "task", "add", task.name, "--arrays", str(x), str(y), "--seed", str(seed), "--replace")


def score_tasks(index_dir: Path, targets: list[TaskData]) -> None:
    """`hubindex score` with every installed metric, BLAS on one thread.

    The metrics' matrices are small (a few hundred rows): a second BLAS thread saves little, and when
    another process holds the cores its spinning threads turn a one-second logistic regression
    into a minute. The models' forward passes (torch) keep their threads.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        for task in targets:
            hubindex(index_dir, "score", "--task", task.name, "--reference-task", str(task.reference))


def export_scores(index_dir: Path, path: Path) -> dict[str, list[str]]:
    """Write task_scores as the CSV `hubindex evaluate` reads; {task: checkpoint ids with a score}."""
    text = hubindex(index_dir, "sql", "SELECT task, checkpoint_id, metric, value FROM task_scores ORDER BY ALL",
                    "--format", "csv", "--max-rows", "1000000", capture=True)
    path.write_text(text)
    pools: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        pools.setdefault(row["task"], set()).add(row["checkpoint_id"])
    return {task: sorted(ids) for task, ids in pools.items()}


def ground_truth(pool_index: Path, targets: list[TaskData], pools: dict[str, list[str]], cache: Path,
                 settings: FinetuneSettings) -> dict[str, dict[str, FinetuneResult]]:
    """Fine-tune every checkpoint of each task's pool on it (cached)."""
    with Index(pool_index).open_catalog(read_only=True) as catalog:
        rows = {row["checkpoint_id"]: row for row in catalog.checkpoint_rows(sorted({c for p in pools.values() for c in p}))}
    jobs = []
    for task in targets:
        splits = task_splits(task)
        digest = splits.digest()
        for checkpoint_id in pools[task.name]:
            row = rows[checkpoint_id]
            jobs.append(FinetuneJob(row, row.get("local_sha") or row["sha"], splits, digest))
    truth: dict[str, dict[str, FinetuneResult]] = {task.name: {} for task in targets}
    for result in finetune_all(jobs, settings, cache):
        truth[result.task][result.checkpoint_id] = result
    return truth


def write_truth(truth: dict[str, dict[str, FinetuneResult]], path: Path) -> None:
    """The `task,checkpoint_id,accuracy` CSV `hubindex evaluate` reads (test accuracy, a fraction)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "checkpoint_id", "accuracy"])
        for task, results in sorted(truth.items()):
            for checkpoint_id, result in sorted(results.items()):
                writer.writerow([task, checkpoint_id, f"{result.test_accuracy:.6f}"])


def prepare_pool(work: Path, quick: bool, seed: int) -> Pool:
    """Build, index, score and fine-tune what the benchmarks need; reuse whatever is already there."""
    settings = pool_settings(quick, seed)
    work = work.resolve()
    zoo_out, derived_out = work / "zoo", work / "paper-pool" / "derived"
    run_dir = work / "paper-pool" / f"{settings.mode}-seed{seed}-{settings.key()}"
    index_dir = run_dir / "index"
    stages: dict[str, float] = {}
    timed(stages, "zoo build", lambda: hubindex(index_dir, "zoo", "build", "--out", str(zoo_out)))
    timed(stages, "derived checkpoints", lambda: build_derived(derived_out, zoo_out))
    timed(stages, "crawl", lambda: [hubindex(index_dir, "crawl", "local", str(folder))
                                    for folder in (zoo_out, derived_out)])
    tasks = make_tasks(settings, zoo_out)
    targets = [t for t in tasks if t.is_target]
    timed(stages, "task add", lambda: add_tasks(index_dir, run_dir / "data", tasks, seed))
    timed(stages, "score", lambda: score_tasks(index_dir, targets))
    scores_csv = run_dir / "scores.csv"
    pools = export_scores(index_dir, scores_csv)
    missing = [t.name for t in targets if len(pools.get(t.name, [])) < 8]
    if missing:
        raise HubindexError(f"tasks {missing} have fewer than 8 scored checkpoints; see `hubindex sql "
                            f"\"SELECT * FROM open_failures\"` in {index_dir}")
    truth = timed(stages, "fine-tune", lambda: ground_truth(index_dir, targets, pools, work / "paper-pool" / "finetune",
                                                             settings.finetune))
    truth_csv = run_dir / "truth.csv"
    write_truth(truth, truth_csv)
    return Pool(settings, run_dir, index_dir, targets, pools, scores_csv, truth_csv, truth, stages)


def short_name(checkpoint_id: str) -> str:
    """hf:ORG/NAME -> NAME, with `paper-pool` children marked by a '*'."""
    org, _, name = checkpoint_id.removeprefix("hf:").partition("/")
    return f"{name}*" if org == DERIVED_ORG else name


def plot_label(checkpoint_id: str) -> str:
    """A short label for plots: short_name without the architecture families' long prefixes."""
    name = short_name(checkpoint_id)
    for long, short in (("tf_efficientnet_", ""), ("all-MiniLM-L6-v2", "L6"), ("paraphrase-MiniLM-L3-v2", "para-L3")):
        name = name.replace(long, short)
    return name
