"""A zoo of small image classifiers trained here on scikit-learn's digits, shared by the experiments
"unseen tasks" (paper_unseen_tasks.py) and "kappa robustness" (paper_kappa_robustness.py).

It scales down the CIFAR-100 design of Huang, Qiu & Church (2021, Section 5.2; their
`vision/create_data_split.py`): agents (checkpoints) each learn a random subset of the classes,
an admin keeps an unlabeled probe set and a few labels per class for its own, new tasks.

Data: `sklearn.datasets.load_digits` (1,797 8x8 images, 16 grey levels, scaled to [0, 1]).
Classes 7, 8 and 9 are *unseen*: no checkpoint trains on them. Each class is split at random
(seeded) into, in this order:

- `probe`: 30 images per class (all ten classes), the unlabeled probe set kappa is computed on;
- `task_train`: 10 images per class, the pool the unseen tasks draw their few labels from;
- `task_test`: 50 images per class, the unseen tasks' test examples;
- the rest: the zoo's training images for the seen classes 0-6 (about 90 per class); for the
  unseen classes they stay unused (but they are held out, so kappa's probe-size study uses them).

Checkpoints: `n_checkpoints` (40) small networks, checkpoint i with architecture
ARCHITECTURES[i mod 7] (CNNs of one to three 3x3 conv layers of widths 8-32 with max-pooling, and
MLPs of one or two hidden layers), each followed by a 32-unit ReLU layer - the penultimate layer,
whose activations are the checkpoint's features - and a linear classifier. Checkpoint i trains on
a random subset of `min_classes` to `max_classes` of the seen classes (by default 3, as every
agent of the paper learns the same number of classes, 30 of 100; drawn with the seed), on all
their zoo training images: Adam (lr 3e-3), batch 32, 30 epochs, cross-entropy, torch seeded per
checkpoint and one CPU thread (see `one_cpu_thread`). Its accuracy on the task_test images of
its own classes is recorded as a sanity check.

The trained zoo (weights and the features of all 1,797 digits) is cached under
`<work>/small-cnn-zoo/<hash of the settings and recipe version>/`, so the second experiment and
re-runs load it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from paper_common import log

if TYPE_CHECKING:
    import torch

# Bump when a change to the data split, the architectures or the training alters the zoo.
RECIPE_VERSION = "1"
N_DIGIT_CLASSES = 10
DIGIT_GREY_LEVELS = 16.0


@dataclass(frozen=True)
class Architecture:
    """A small network: `cnn` (3x3 conv widths, max-pool after the first two) or `mlp` (hidden widths)."""

    kind: str
    widths: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.kind}-{'x'.join(str(w) for w in self.widths)}"


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("cnn", (8,)),
    Architecture("cnn", (8, 16)),
    Architecture("cnn", (16, 16)),
    Architecture("cnn", (32, 32)),
    Architecture("cnn", (16, 32, 32)),
    Architecture("mlp", (64,)),
    Architecture("mlp", (128, 64)),
)


@dataclass(frozen=True)
class ZooSettings:
    """Everything that determines the trained zoo (part of its cache key)."""

    n_checkpoints: int = 40
    unseen_classes: tuple[int, ...] = (7, 8, 9)
    probe_per_class: int = 30
    task_train_per_class: int = 10
    task_test_per_class: int = 50
    min_classes: int = 3
    max_classes: int = 3
    feature_dim: int = 32
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0

    @property
    def seen_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(N_DIGIT_CLASSES) if c not in self.unseen_classes)

    def cache_key(self) -> str:
        payload = json.dumps({"recipe": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DigitsSplit:
    """The digits (n, 8, 8) in [0, 1], their labels, and the row indices of each part of the split."""

    images: np.ndarray
    labels: np.ndarray
    zoo_train: np.ndarray
    probe: np.ndarray
    task_train: np.ndarray
    task_test: np.ndarray

    @property
    def held_out(self) -> np.ndarray:
        """Every image outside the zoo's training pool, in index order."""
        return np.setdiff1d(np.arange(len(self.labels)), self.zoo_train)


@dataclass(frozen=True)
class CheckpointSpec:
    """One member of the zoo: its name, architecture, the classes it learns and its seed."""

    name: str
    architecture: Architecture
    classes: tuple[int, ...]
    seed: int


@dataclass
class SmallZoo:
    """The trained zoo: specs, weights, the features of every digit, and how it was obtained."""

    settings: ZooSettings
    split: DigitsSplit
    specs: list[CheckpointSpec]
    states: list[dict[str, torch.Tensor]]  # one state dict per checkpoint
    digit_features: np.ndarray  # (n_checkpoints, n_digits, feature_dim) float32
    own_class_accuracy: list[float]  # each checkpoint on the task_test images of its own classes
    train_seconds: float  # training time when it was built (0 if loaded)
    loaded_from_cache: bool
    folder: Path  # the cache folder it was saved to or loaded from

    def features(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each checkpoint's features of the given digits rows."""
        return [f[rows] for f in self.digit_features]

    def features_of_images(self, images: np.ndarray) -> list[np.ndarray]:
        """Each checkpoint's features of other 8x8 images in [0, 1] (n, 8, 8)."""
        import torch

        with one_cpu_thread():
            batch = torch.as_tensor(np.asarray(images, dtype=np.float32)[:, None])
            out = []
            for spec, state in zip(self.specs, self.states):
                model = build_model(spec.architecture, len(spec.classes), self.settings.feature_dim)
                model.load_state_dict(state)
                out.append(penultimate(model, batch))
        return out


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (n, 8, 8) float32 in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / DIGIT_GREY_LEVELS).astype(np.float32), digits.target.astype(np.int64)


def split_digits(settings: ZooSettings) -> DigitsSplit:
    """The seeded per-class split into probe, task_train, task_test and zoo-training images."""
    images, labels = load_digit_images()
    rng = np.random.default_rng([settings.seed, 1])
    parts: dict[str, list[np.ndarray]] = {"probe": [], "task_train": [], "task_test": [], "zoo_train": []}
    for c in range(N_DIGIT_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == c))
        edges = np.cumsum([settings.probe_per_class, settings.task_train_per_class, settings.task_test_per_class])
        if edges[-1] >= len(rows):
            raise ValueError(f"class {c} has {len(rows)} images; the split asks for {edges[-1]} before training")
        parts["probe"].append(rows[: edges[0]])
        parts["task_train"].append(rows[edges[0] : edges[1]])
        parts["task_test"].append(rows[edges[1] : edges[2]])
        if c not in settings.unseen_classes:
            parts["zoo_train"].append(rows[edges[2] :])
    return DigitsSplit(images, labels, **{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


def zoo_specs(settings: ZooSettings) -> list[CheckpointSpec]:
    """The checkpoints: architectures in turn, each with a seeded random subset of the seen classes."""
    rng = np.random.default_rng([settings.seed, 2])
    seen = np.array(settings.seen_classes)
    specs = []
    for i in range(settings.n_checkpoints):
        architecture = ARCHITECTURES[i % len(ARCHITECTURES)]
        size = int(rng.integers(settings.min_classes, settings.max_classes + 1))
        classes = tuple(sorted(int(c) for c in rng.choice(seen, size=size, replace=False)))
        name = f"{i:02d}-{architecture.name}-c{''.join(str(c) for c in classes)}"
        specs.append(CheckpointSpec(name, architecture, classes, seed=settings.seed * 1000 + i))
    return specs


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """torch and BLAS on one thread inside the block.

    The models and matrices here are small: a second thread buys little on an idle 2-core
    machine, and with other work running on it, two spinning threads made kappa 100x and the
    image probes 3x slower (measured), besides making training results depend on the thread count.
    """
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def build_model(architecture: Architecture, n_classes: int, feature_dim: int) -> torch.nn.Sequential:
    """trunk (ending in the feature_dim ReLU layer) + head, as a torch Sequential of two parts."""
    from torch import nn

    layers: list[nn.Module] = []
    if architecture.kind == "cnn":
        channels, side = 1, 8
        for depth, width in enumerate(architecture.widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            if depth < 2:  # 8x8 -> 4x4 -> 2x2
                layers.append(nn.MaxPool2d(2))
                side //= 2
            channels = width
        layers.append(nn.Flatten())
        inputs = channels * side * side
    elif architecture.kind == "mlp":
        layers.append(nn.Flatten())
        inputs = 64
        for width in architecture.widths:
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            inputs = width
    else:
        raise ValueError(f"unknown architecture kind {architecture.kind!r}")
    layers += [nn.Linear(inputs, feature_dim), nn.ReLU()]
    return nn.Sequential(nn.Sequential(*layers), nn.Linear(feature_dim, n_classes))


def penultimate(model: torch.nn.Sequential, batch: torch.Tensor) -> np.ndarray:
    """The trunk's output (the penultimate layer) for a batch of (n, 1, 8, 8) images."""
    import torch

    model.eval()
    with torch.inference_mode():
        return model[0](batch).numpy().astype(np.float32)


def train_checkpoint(spec: CheckpointSpec, split: DigitsSplit,
                     settings: ZooSettings) -> tuple[dict[str, torch.Tensor], float]:
    """Train one checkpoint on its classes' zoo training images; (state dict, own-class test accuracy)."""
    import torch
    from torch import nn

    torch.manual_seed(spec.seed)
    remap = {c: k for k, c in enumerate(spec.classes)}
    rows = split.zoo_train[np.isin(split.labels[split.zoo_train], spec.classes)]
    x = torch.as_tensor(split.images[rows][:, None])
    y = torch.as_tensor(np.array([remap[int(c)] for c in split.labels[rows]]))
    model = build_model(spec.architecture, len(spec.classes), settings.feature_dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loss = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(spec.seed)
    model.train()
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(rows), generator=order).split(settings.batch_size):
            optimiser.zero_grad()
            loss(model(x[batch]), y[batch]).backward()
            optimiser.step()
    test = split.task_test[np.isin(split.labels[split.task_test], spec.classes)]
    model.eval()
    with torch.inference_mode():
        predicted = model(torch.as_tensor(split.images[test][:, None])).argmax(dim=1).numpy()
    truth = np.array([remap[int(c)] for c in split.labels[test]])
    return model.state_dict(), float(np.mean(predicted == truth))


def load_or_train_zoo(settings: ZooSettings, work: Path) -> SmallZoo:
    """The trained zoo from the cache under work, or trained now (about a second per checkpoint) and cached."""
    import torch

    split = split_digits(settings)
    specs = zoo_specs(settings)
    folder = Path(work) / "small-cnn-zoo" / settings.cache_key()
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        states = torch.load(folder / "states.pt", weights_only=True)
        features = np.load(folder / "digit_features.npy")
        log(f"small zoo: {len(specs)} checkpoints loaded from {folder}")
        return SmallZoo(settings, split, specs, states, features, manifest["own_class_accuracy"],
                        0.0, True, folder)

    started = time.perf_counter()
    states, accuracies, features = [], [], []
    all_digits = torch.as_tensor(split.images[:, None])
    with one_cpu_thread():
        for k, spec in enumerate(specs):
            state, accuracy = train_checkpoint(spec, split, settings)
            model = build_model(spec.architecture, len(spec.classes), settings.feature_dim)
            model.load_state_dict(state)
            states.append(state)
            accuracies.append(accuracy)
            features.append(penultimate(model, all_digits))
            log(f"small zoo: trained {k + 1}/{len(specs)} {spec.name}: own-class test accuracy {accuracy:.3f}")
    seconds = time.perf_counter() - started
    digit_features = np.stack(features)
    save_zoo(folder, settings, specs, states, digit_features, accuracies, seconds)
    return SmallZoo(settings, split, specs, states, digit_features, accuracies, seconds, False, folder)


def save_zoo(folder: Path, settings: ZooSettings, specs: list[CheckpointSpec],
             states: list[dict[str, torch.Tensor]], digit_features: np.ndarray, accuracies: list[float],
             seconds: float) -> None:
    """Write the zoo into a temporary folder and rename it into place, so a reader never sees half of one."""
    import torch

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        torch.save(states, staging / "states.pt")
        np.save(staging / "digit_features.npy", digit_features)
        manifest = {
            "recipe_version": RECIPE_VERSION,
            "settings": asdict(settings),
            "checkpoints": [{"name": s.name, "architecture": s.architecture.name, "classes": list(s.classes),
                             "seed": s.seed} for s in specs],
            "own_class_accuracy": accuracies,
            "train_seconds": round(seconds, 2),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "manifest.json").is_file():  # else another run cached the same zoo first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def rounded(value: object, digits: int = 6) -> object:
    """value with every float rounded to `digits` significant digits (nested lists and dicts too)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def write_json(path: Path, value: object) -> None:
    """Indented JSON with floats to 6 significant digits and each list of numbers on one line."""
    text = json.dumps(rounded(value), indent=1)
    # A list json.dumps spread over lines starts with "[" and a raw newline, which no JSON string holds.
    text = re.sub(r"\[\n[-0-9.eE+,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)
    path.write_text(text + "\n")


def describe_zoo(zoo: SmallZoo) -> list[dict]:
    """One JSON-able row per checkpoint: name, architecture, classes, own-class accuracy."""
    return [{"name": s.name, "architecture": s.architecture.name, "classes": list(s.classes),
             "own_class_test_accuracy": round(a, 4)} for s, a in zip(zoo.specs, zoo.own_class_accuracy)]
