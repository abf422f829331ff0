"""Fine-tuned accuracy: the ground truth that the ranking and search benchmarks measure against.

For one checkpoint and one labeled task (train / validation / test examples), each learning rate
of a small sweep fine-tunes a fresh copy of the checkpoint for a fixed number of epochs; the
learning rate with the best validation accuracy (ties: the lower validation cross-entropy, then
the lower rate) is chosen and its test accuracy is the ground truth (Li et al. 2021, Renggli et
al. 2022). Test examples are seen only by that final evaluation.

- The checkpoint is loaded by the product's own probes (`TimmImageProbe.create_model`,
  `TransformersTextProbe.load`), from the local copy the catalog names, and pooled as they pool:
  timm pre-logits features (global average pool) and the mean of BERT's last hidden state over
  the tokens. A fresh linear head (seeded) maps that pooled vector to the task's classes.
- Everything trains except BERT's token-embedding table (as in the zoo's own fine-tune: a short
  run moves it little, and it holds half of MiniLM's weights and of AdamW's state). The head
  learns at `head_lr_factor` times the rate of the body.
- AdamW (weight decay 0.01), the rate decays linearly to 0 over the run, batches in a seeded
  order, BatchNorm in training mode while training (a randomly initialised model learns nothing
  with frozen statistics), dropout as the architecture has it. Before evaluation BatchNorm's
  running statistics are recomputed over the training images with the final weights: a short run
  leaves them a blend of ImageNet's and the first steps', and evaluation mode uses them.
- Images are resized to `image_size` x `image_size` (bilinear) and normalised with the model's
  own mean and std; texts are truncated at `max_length` tokens. The metrics see each model's own
  preprocessing (224-260 px, `hubindex score`); fine-tuning at that size would cost (224/96)^2,
  about 5 times, the CPU time of 96 px, more than this machine can give the full benchmark.

Runs go to worker processes (one per CPU core, at most MAX_WORKERS), each with one torch and one
BLAS thread: on small batches two processes use two cores better than one process with two
threads, and a fixed thread count gives the same numbers whatever the number of cores.

Results are cached as JSON, keyed by the checkpoint's sha, a hash of the task's three splits and
the settings: a rerun with the same settings reuses them, and deleting the cache folder (or
passing another --work) recomputes them from nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.errors import HubindexError
from hubindex.types import IMAGE, TEXT

CACHE_VERSION = 1
EVAL_BATCH = 64
MAX_WORKERS = 8


@dataclass(frozen=True)
class FinetuneSettings:
    """What a fine-tuning run depends on besides the checkpoint and the data."""

    image_learning_rates: tuple[float, ...]
    text_learning_rates: tuple[float, ...]
    image_epochs: int
    text_epochs: int
    batch_size: int
    image_size: int
    max_length: int
    head_lr_factor: float = 10.0
    weight_decay: float = 0.01
    seed: int = 0

    def learning_rates(self, modality: str) -> tuple[float, ...]:
        """The sweep for a modality."""
        return self.image_learning_rates if modality == IMAGE else self.text_learning_rates

    def epochs(self, modality: str) -> int:
        """The number of epochs for a modality."""
        return self.image_epochs if modality == IMAGE else self.text_epochs

    def key(self) -> str:
        """A short hash of every setting (part of each cached result's name)."""
        text = json.dumps({"cache_version": CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LabeledSplit:
    """Examples (texts, or RGB PIL images) and their class indices."""

    items: list[Any]
    labels: np.ndarray

    def digest(self) -> str:
        """sha256 over the examples' content and labels."""
        digest = hashlib.sha256()
        for item, label in zip(self.items, self.labels.tolist()):
            if isinstance(item, str):
                digest.update(item.encode())
            else:
                digest.update(f"{item.mode}{item.size}".encode())
                digest.update(item.tobytes())
            digest.update(f"\x1f{label}\x1e".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class TaskSplits:
    """A task's train (what the metrics see), validation (learning-rate choice) and test examples."""

    name: str
    modality: str
    n_classes: int
    train: LabeledSplit
    validation: LabeledSplit
    test: LabeledSplit

    def digest(self) -> str:
        """sha256 over the modality, the classes and the three splits."""
        parts = [self.modality, str(self.n_classes), self.train.digest(), self.validation.digest(), self.test.digest()]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class RateRun:
    """One learning rate's run: final train loss and validation / test accuracy."""

    learning_rate: float
    train_loss: float
    validation_accuracy: float
    validation_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class FinetuneResult:
    """The sweep of one checkpoint on one task, and the ground truth it gives."""

    checkpoint_id: str
    checkpoint_sha: str
    task: str
    runs: list[RateRun] = field(default_factory=list)
    chosen_learning_rate: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0
    seconds: float = 0.0
    cached: bool = False

    def as_json(self) -> dict[str, Any]:
        """Every field but `cached`."""
        out = asdict(self)
        out.pop("cached")
        return out


def choose_run(runs: list[RateRun]) -> RateRun:
    """Best validation accuracy; ties to the lower validation loss, then the lower learning rate."""
    return min(runs, key=lambda r: (-r.validation_accuracy, r.validation_loss, r.learning_rate))


# ------------------------------------------------------------------------------------ models


class ImageClassifier:
    """A timm checkpoint re-headed for the task, on inputs resized to the fine-tuning size."""

    def __init__(self, row: dict[str, Any], n_classes: int, settings: FinetuneSettings) -> None:
        """Load the checkpoint through the product's probe and put a fresh head on it."""
        import torch

        from hubindex_plugins.probe_image import TimmImageProbe

        self.model = TimmImageProbe(device="cpu").create_model(row)
        self.model.reset_classifier(n_classes)
        self.model = self.model.to(memory_format=torch.channels_last)  # faster CPU convolutions
        cfg = self.model.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.size = settings.image_size
        self.n_classes = n_classes
        self.initial = copy.deepcopy(self.model.state_dict())

    def reset(self, seed: int) -> tuple[list[Any], list[Any]]:
        """Restore the checkpoint's weights, draw a fresh seeded head; (body params, head params)."""
        import torch

        self.model.load_state_dict(self.initial)
        torch.manual_seed(seed)
        self.model.reset_classifier(self.n_classes)
        head = list(self.model.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        return [p for p in self.model.parameters() if id(p) not in head_ids], head

    def inputs(self, split: LabeledSplit) -> Any:
        """All images of a split as one normalised (n, 3, size, size) tensor."""
        import torch
        from PIL import Image

        pixels = np.stack([np.asarray(image.resize((self.size, self.size), resample=Image.Resampling.BILINEAR),
                                      dtype=np.float32) for image in split.items]) / 255.0
        tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        tensor = (tensor - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        return tensor.contiguous(memory_format=torch.channels_last)

    def logits(self, inputs: Any, rows: Any) -> Any:
        """Class logits of the given rows of the prepared inputs."""
        return self.model(inputs[rows])

    def train(self, mode: bool) -> None:
        """Training mode (BatchNorm on batch statistics, dropout) or evaluation mode."""
        self.model.train(mode)

    def recalibrate(self, inputs: Any, batch_size: int) -> None:
        """Recompute BatchNorm's running statistics over the training inputs with the final weights.

        A short run leaves them a blend of ImageNet's (at another resolution) and the first steps',
        which evaluation mode would use; the exact averages over the training set replace them.
        """
        import torch

        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average over the batches
        self.model.train(True)
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                self.model(inputs[start:start + batch_size])
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


class TextClassifier:
    """A transformers encoder with mean pooling (as the text probe pools) and a linear head."""

    def __init__(self, row: dict[str, Any], n_classes: int, settings: FinetuneSettings) -> None:
        """Load the checkpoint through the product's probe and put a fresh head on it."""
        import torch

        from hubindex_plugins.probe_text import TransformersTextProbe

        self.encoder, self.tokenizer = TransformersTextProbe(device="cpu").load(row)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, n_classes)
        self.max_length = settings.max_length
        self.initial = copy.deepcopy(self.encoder.state_dict())

    def reset(self, seed: int) -> tuple[list[Any], list[Any]]:
        """Restore the checkpoint's weights, draw a fresh seeded head; (trainable body params, head params)."""
        import torch

        self.encoder.load_state_dict(self.initial)
        torch.manual_seed(seed)
        self.head.reset_parameters()
        embeddings = self.encoder.get_input_embeddings()
        embeddings.requires_grad_(False)
        body = [p for p in self.encoder.parameters() if p.requires_grad]
        return body, list(self.head.parameters())

    def inputs(self, split: LabeledSplit) -> dict[str, Any]:
        """The split's texts tokenized (truncated at max_length, padded to the longest)."""
        return dict(self.tokenizer(list(split.items), truncation=True, max_length=self.max_length, padding=True,
                                   return_tensors="pt"))

    def logits(self, inputs: dict[str, Any], rows: Any) -> Any:
        """Class logits of the given rows: the head on the mean of the last hidden state over the tokens."""
        batch = {k: v[rows] for k, v in inputs.items()}
        # Trim the padding this batch does not need: shorter sequences, less compute.
        width = int(batch["attention_mask"].sum(dim=1).max())
        batch = {k: v[:, :width] for k, v in batch.items()}
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))

    def train(self, mode: bool) -> None:
        """Training mode (dropout) or evaluation mode."""
        self.encoder.train(mode)
        self.head.train(mode)


def classifier(row: dict[str, Any], modality: str, n_classes: int, settings: FinetuneSettings) -> Any:
    """The trainable model for a checkpoint of the task's modality."""
    if modality == IMAGE:
        return ImageClassifier(row, n_classes, settings)
    if modality == TEXT:
        return TextClassifier(row, n_classes, settings)
    raise HubindexError(f"cannot fine-tune on {modality!r} examples")


# ------------------------------------------------------------------------------------ training


def evaluate_split(model: Any, inputs: Any, labels: Any) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model on prepared inputs."""
    import torch

    model.train(False)
    losses, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(labels), EVAL_BATCH):
            rows = torch.arange(start, min(start + EVAL_BATCH, len(labels)))
            logits = model.logits(inputs, rows)
            losses += float(torch.nn.functional.cross_entropy(logits, labels[rows], reduction="sum"))
            correct += int((logits.argmax(dim=-1) == labels[rows]).sum())
    return correct / len(labels), losses / len(labels)


def train_one_rate(model: Any, inputs: Any, labels: Any, learning_rate: float, epochs: int,
                   settings: FinetuneSettings) -> float:
    """Fine-tune from the checkpoint's weights at one learning rate; the mean loss of the last epoch."""
    import torch

    body, head = model.reset(settings.seed)
    optimizer = torch.optim.AdamW([
        {"params": body, "lr": learning_rate},
        {"params": head, "lr": learning_rate * settings.head_lr_factor},
    ], weight_decay=settings.weight_decay)
    steps_per_epoch = -(-len(labels) // settings.batch_size)
    total = steps_per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    generator = torch.Generator().manual_seed(settings.seed)
    model.train(True)
    last_epoch: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        last_epoch = []
        for start in range(0, len(labels), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            loss = torch.nn.functional.cross_entropy(model.logits(inputs, rows), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            last_epoch.append(loss.item())
    return float(np.mean(last_epoch))


def finetune(row: dict[str, Any], sha: str, task: TaskSplits, settings: FinetuneSettings) -> FinetuneResult:
    """Sweep the learning rates for one checkpoint on one task; choose by validation accuracy."""
    import torch

    started = time.perf_counter()
    model = classifier(row, task.modality, task.n_classes, settings)
    prepared = {name: (model.inputs(split), torch.as_tensor(split.labels, dtype=torch.long))
                for name, split in (("train", task.train), ("validation", task.validation), ("test", task.test))}
    result = FinetuneResult(row["checkpoint_id"], sha, task.name)
    for rate in settings.learning_rates(task.modality):
        rate_started = time.perf_counter()
        train_loss = train_one_rate(model, *prepared["train"], rate, settings.epochs(task.modality), settings)
        if hasattr(model, "recalibrate"):
            model.recalibrate(prepared["train"][0], settings.batch_size)
        val_accuracy, val_loss = evaluate_split(model, *prepared["validation"])
        test_accuracy, _ = evaluate_split(model, *prepared["test"])
        result.runs.append(RateRun(rate, round(train_loss, 6), val_accuracy, round(val_loss, 6), test_accuracy,
                                   round(time.perf_counter() - rate_started, 2)))
    chosen = choose_run(result.runs)
    result.chosen_learning_rate = chosen.learning_rate
    result.validation_accuracy = chosen.validation_accuracy
    result.test_accuracy = chosen.test_accuracy
    result.seconds = round(time.perf_counter() - started, 2)
    return result


@dataclass(frozen=True)
class FinetuneJob:
    """One checkpoint (its catalog row and sha) to fine-tune on one task."""

    row: dict[str, Any]
    sha: str
    task: TaskSplits
    task_digest: str

    def cache_name(self, settings: FinetuneSettings) -> str:
        """The cached result's file name: checkpoint sha, task data and settings."""
        return f"{self.sha[:16]}-{self.task_digest[:16]}-{settings.key()}.json"


def load_cached(path: Path, job: FinetuneJob) -> FinetuneResult:
    """A stored result, relabelled with the job's checkpoint id and task name."""
    stored = json.loads(path.read_text())
    runs = [RateRun(**run) for run in stored.pop("runs")]
    # The id and task name are labels, not inputs: the same weights on the same data reuse the result.
    stored.update(checkpoint_id=job.row["checkpoint_id"], task=job.task.name)
    return FinetuneResult(**stored, runs=runs, cached=True)


def single_threaded() -> None:
    """Worker set-up: one torch thread and one BLAS thread."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")


def run_job(job: FinetuneJob, settings: FinetuneSettings, cache: Path) -> FinetuneResult:
    """Fine-tune (in a worker) and store the result atomically in the cache."""
    result = finetune(job.row, job.sha, job.task, settings)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / job.cache_name(settings)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    partial.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    partial.replace(path)
    return result


def finetune_all(jobs: list[FinetuneJob], settings: FinetuneSettings, cache: Path,
                 workers: int | None = None) -> list[FinetuneResult]:
    """Every job's result, in order: cached ones read back, the others computed by worker processes."""
    results: list[FinetuneResult | None] = []
    for job in jobs:
        path = cache / job.cache_name(settings)
        results.append(load_cached(path, job) if path.is_file() else None)
    pending = [i for i, result in enumerate(results) if result is None]
    if pending:
        workers = workers or max(1, min(os.cpu_count() or 1, MAX_WORKERS, len(pending)))
        print(f"finetune: {len(pending)} runs ({len(jobs) - len(pending)} cached) on {workers} worker processes",
              file=sys.stderr, flush=True)
        # spawn: the parent has torch's OpenMP threads running, which a forked child must not inherit.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded) as pool:
            futures = {pool.submit(run_job, jobs[i], settings, cache): i for i in pending}
            for done, future in enumerate(as_completed(futures), 1):
                result = future.result()
                results[futures[future]] = result
                print(f"finetune {done}/{len(pending)}: {result.checkpoint_id} on {result.task}: test "
                      f"{result.test_accuracy:.3f} (lr {result.chosen_learning_rate:g}, {result.seconds:.0f} s)",
                      file=sys.stderr, flush=True)
    return [result for result in results if result is not None]
