"""Scoring: metric plugins applied to a checkpoint's frozen features of a labeled task.

`run_score` embeds a task's examples with each selected checkpoint (through the probe of the
task's modality), keeps those features in the store (table `task_features`), runs the metrics
and writes one `task_scores` row per (task, checkpoint, metric). It is incremental: a score is
recomputed only when its inputs change - the task's data, the checkpoint's sha, the reference
task - or the metric's version does; and a checkpoint whose scores are all current loads no
model. Each checkpoint is committed on its own, so an interrupted run keeps what it finished.
A checkpoint that cannot be embedded, or a metric that fails on it, is recorded in `failures`
(stage 'score') and the run goes on.

`score_arrays` is the array mode: a metric on features and labels given as .npy files.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.plugins import known_names, metrics, probes
from hubindex.probing import RunFailure, pick_probe, record_run_failure, resolve_device, select_checkpoints
from hubindex.store import STORE_DIR, EmbeddingStore, StoreError
from hubindex.tasks import Task, encode_labels, load_task, stratified_split
from hubindex.types import (
    NEEDS_HEAD,
    NEEDS_HELD_OUT,
    NEEDS_REFERENCE,
    PROBABILITY_TOLERANCE,
    ExampleOutput,
    Metric,
    MetricInput,
    MetricNotApplicable,
    Probe,
    ProbeError,
)

STAGE = "score"
FEATURES = "features"
HEAD = "head"


# ------------------------------------------------------------------------------------ metrics


def metric_classes(names: Sequence[str] = ()) -> list[type[Metric]]:
    """The named metrics (all installed ones when none are named), in the order given."""
    registered = metrics()
    if not names:
        return [registered[name].component for name in sorted(registered)]
    unknown = [name for name in names if name not in registered]
    if unknown:
        known = known_names(registered)
        raise UsageError(f"unknown metric {unknown[0]!r}; available metrics: {known}")
    return [registered[name].component for name in dict.fromkeys(names)]


def run_metric(metric: Metric, data: MetricInput) -> tuple[float, float]:
    """(value, seconds) of one metric; a non-finite value is an error, not a score."""
    started = time.perf_counter()
    value = float(metric.score(data))
    seconds = time.perf_counter() - started
    if not math.isfinite(value):
        raise ValueError(f"metric {metric.name!r} returned {value}")
    return value, seconds


# ------------------------------------------------------------------------------------ array mode


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


def check_labels(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    """Class indices 0..C-1 from integer or string labels, one per feature row."""
    if labels.ndim != 1:
        raise UsageError(f"{what}: labels must be a 1-D array, got shape {labels.shape}")
    if labels.dtype.kind not in "iuUf":
        raise UsageError(f"{what}: labels must be integers or strings (got dtype {labels.dtype})")
    if len(labels) != n:
        raise UsageError(f"{what}: {len(labels)} labels for {n} feature rows; they must have the same length")
    codes, _ = encode_labels(labels.tolist(), what)
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
                 validation_fraction: float = 0.2, seed: int = 0) -> ArrayScore:
    """One metric on given arrays. Metrics that need held-out rows get a seeded stratified split."""
    (metric_cls,) = metric_classes([name])
    features = check_features(features, "--features")
    codes = check_labels(labels, len(features), "--labels")
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
    if NEEDS_HELD_OUT in metric_cls.needs:
        train = stratified_split(codes, validation_fraction, seed)
    else:
        train = np.ones(len(codes), dtype=bool)
    data = MetricInput(features, codes, train, head_probs, reference_input, seed)
    try:
        value, seconds = run_metric(metric_cls(), data)
    except MetricNotApplicable as exc:
        raise UsageError(f"metric {name!r} cannot score these arrays: {exc}") from None
    except ValueError as exc:
        raise UsageError(f"metric {name!r}: {exc}") from None
    return ArrayScore(name, metric_cls.version, value, seconds)


# ------------------------------------------------------------------------------------ task features


def task_feature_key(checkpoint_sha: str, task_hash: str, kind: str, pooling: str) -> str:
    """Relative path of a task's feature (or head) matrix in the store."""
    digest = hashlib.sha256("\0".join((checkpoint_sha, task_hash, kind, pooling)).encode()).hexdigest()
    return f"{STORE_DIR}/tasks/{task_hash[:16]}/{digest[:32]}.faiss"


def _stored_task_features(catalog: Catalog, store: EmbeddingStore, sha: str, task: Task,
                          pooling: str) -> ExampleOutput | None:
    rows = catalog.conn.execute(
        "SELECT kind, has_head, n_examples, path, file_sha256 FROM task_features "
        "WHERE checkpoint_sha = ? AND task_hash = ? AND pooling = ? ORDER BY created_at DESC",
        [sha, task.content_hash, pooling],
    ).fetchall()
    found = {}
    for kind, has_head, n_examples, path, file_sha in rows:
        if kind not in found and n_examples == task.size and store.is_valid(path, file_sha):
            found[kind] = (has_head, path, file_sha)
    if FEATURES not in found:
        return None
    has_head = found[FEATURES][0]
    if has_head and HEAD not in found:
        return None
    try:
        features = store.read(found[FEATURES][1], task.size, found[FEATURES][2])
        head = store.read(found[HEAD][1], task.size, found[HEAD][2]) if has_head else None
    except StoreError:
        return None
    return ExampleOutput(features, head)


def _check_output(output: ExampleOutput, task: Task, probe: Probe) -> ExampleOutput:
    features = np.asarray(output.features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != task.size:
        raise ProbeError("probe-error", f"{probe.name} returned features of shape {features.shape} for {task.size} examples")
    bad = int((~np.isfinite(features).all(axis=1)).sum())
    if bad:
        raise ProbeError("non-finite", f"{probe.name}: {bad} of {task.size} feature rows hold NaN or inf")
    head = output.head_probs
    if head is not None:
        head = np.asarray(head, dtype=np.float32)
        if head.shape[0] != task.size or not np.isfinite(head).all():
            raise ProbeError("probe-error", f"{probe.name} returned a head output of shape {head.shape} or non-finite")
    return ExampleOutput(features, head)


def task_features(catalog: Catalog, store: EmbeddingStore, probe: Probe, checkpoint: dict[str, Any], sha: str,
                  task: Task) -> tuple[ExampleOutput, bool]:
    """(features of the task's examples, whether the model ran): stored ones when valid, else embedded and stored."""
    stored = _stored_task_features(catalog, store, sha, task, probe.example_pooling)
    if stored is not None:
        return stored, False
    started = time.monotonic()
    output = _check_output(probe.embed_examples(checkpoint, task.items), task, probe)
    seconds = time.monotonic() - started
    matrices = {FEATURES: output.features}
    if output.head_probs is not None:
        matrices[HEAD] = output.head_probs
    written = {kind: store.write(task_feature_key(sha, task.content_hash, kind, probe.example_pooling), matrix)
               for kind, matrix in matrices.items()}
    with catalog.transaction():
        for kind, matrix in written.items():
            catalog.conn.execute(
                "INSERT OR REPLACE INTO task_features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [checkpoint["checkpoint_id"], sha, task.content_hash, kind, probe.example_pooling, task.name,
                 probe.name, probe.version, HEAD in written, matrix.n_items, matrix.dim, matrix.path,
                 matrix.sha256, seconds, utcnow()],
            )
    return output, True


# ------------------------------------------------------------------------------------ score runs


@dataclass
class ScoreSummary:
    task: str = ""
    metrics: list[str] = field(default_factory=list)
    checkpoint_ids: list[str] = field(default_factory=list)  # the checkpoints selected for scoring
    selected: int = 0
    embedded: int = 0  # model loaded and run on the task's examples
    computed: int = 0  # scores written
    current: int = 0  # scores already up to date
    not_applicable: int = 0  # (checkpoint, metric) pairs the metric cannot score by design
    no_probe: int = 0
    seconds: float = 0.0
    failures: list[RunFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why metrics were not applicable, once each

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        return (
            f"score task {self.task!r} with {', '.join(self.metrics)}: {self.selected} checkpoints, "
            f"{self.embedded} embedded; {self.computed} scores computed, {self.current} up to date, "
            f"{self.not_applicable} not applicable, {self.failed} failed, {self.no_probe} without a "
            f"matching probe in {self.seconds:.1f} s"
        )


def inputs_hash(task: Task, sha: str, pooling: str, reference: Task | None) -> str:
    """What a score depends on besides the metric's version."""
    parts = (task.content_hash, sha, pooling, reference.content_hash if reference else "", str(task.seed))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class _ScoreRun:
    def __init__(self, catalog: Catalog, store: EmbeddingStore, task: Task, reference: Task | None,
                 metric_list: list[Metric], summary: ScoreSummary) -> None:
        self.catalog = catalog
        self.store = store
        self.task = task
        self.reference = reference
        self.metrics = metric_list
        self.summary = summary

    def fail(self, subject: str, kind: str, message: str) -> None:
        record_run_failure(self.catalog, STAGE, self.summary.failures, subject, kind, message)

    def note(self, text: str) -> None:
        if text not in self.summary.notes:
            self.summary.notes.append(text)

    def stale_metrics(self, checkpoint_id: str, hashes: dict[bool, str]) -> list[Metric]:
        stored = dict(
            ((metric, (version, inputs)) for metric, version, inputs in self.catalog.conn.execute(
                "SELECT metric, metric_version, inputs_hash FROM task_scores WHERE task = ? AND checkpoint_id = ?",
                [self.task.name, checkpoint_id],
            ).fetchall())
        )
        stale = []
        for metric in self.metrics:
            wanted = (metric.version, hashes[NEEDS_REFERENCE in metric.needs])
            if stored.get(metric.name) == wanted:
                self.summary.current += 1
            else:
                stale.append(metric)
        return stale

    def score(self, probe: Probe, checkpoint: dict[str, Any]) -> None:
        checkpoint_id = checkpoint["checkpoint_id"]
        sha = probe.revision(checkpoint)
        if not sha:
            self.fail(checkpoint_id, "no-revision", "the catalog has no sha for this checkpoint; crawl it again")
            return
        pooling = probe.example_pooling
        hashes = {False: inputs_hash(self.task, sha, pooling, None),
                  True: inputs_hash(self.task, sha, pooling, self.reference)}
        stale = self.stale_metrics(checkpoint_id, hashes)
        if not stale:
            return
        try:
            output, ran = task_features(self.catalog, self.store, probe, checkpoint, sha, self.task)
            reference_output = None
            if self.reference is not None and any(NEEDS_REFERENCE in m.needs for m in stale):
                reference_output, ran_reference = task_features(
                    self.catalog, self.store, probe, checkpoint, sha, self.reference)
                ran = ran or ran_reference
        except ProbeError as exc:
            self.fail(checkpoint_id, exc.kind, f"{probe.name} on task {self.task.name}: {exc}")
            return
        except MemoryError as exc:
            self.fail(checkpoint_id, "out-of-memory", f"{probe.name} on task {self.task.name}: {exc}")
            return
        except StoreError:
            raise
        except Exception as exc:  # a plugin's bug must not end the run for every other checkpoint
            self.fail(checkpoint_id, "probe-error",
                      f"{probe.name} on task {self.task.name}: {type(exc).__name__}: {exc}")
            return
        self.summary.embedded += int(ran)
        rows = []
        metric_failed = False
        for metric in stale:
            data = self.metric_input(metric, output, reference_output)
            if data is None:
                self.summary.not_applicable += 1
                continue
            try:
                value, seconds = run_metric(metric, data)
            except MetricNotApplicable as exc:
                self.summary.not_applicable += 1
                self.note(f"{metric.name}: {exc}")
                continue
            except Exception as exc:  # one metric's failure leaves the others' scores
                self.fail(checkpoint_id, "metric-error", f"{metric.name} on task {self.task.name}: "
                                                         f"{type(exc).__name__}: {exc}")
                metric_failed = True
                continue
            rows.append([self.task.name, checkpoint_id, metric.name, metric.version, value, metric.higher_is_better,
                         seconds, utcnow(), sha, self.task.content_hash,
                         self.reference.name if self.reference and NEEDS_REFERENCE in metric.needs else None,
                         hashes[NEEDS_REFERENCE in metric.needs]])
        with self.catalog.transaction():
            for row in rows:
                self.catalog.conn.execute(
                    "INSERT OR REPLACE INTO task_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            if not metric_failed:
                self.catalog.resolve_failures(STAGE, [checkpoint_id])
        self.summary.computed += len(rows)

    def metric_input(self, metric: Metric, output: ExampleOutput,
                     reference_output: ExampleOutput | None) -> MetricInput | None:
        """The metric's input, or None (with a note) when the checkpoint lacks what it needs."""
        task = self.task
        if NEEDS_HEAD in metric.needs and output.head_probs is None:
            self.note(f"{metric.name}: needs a checkpoint with a classification head")
            return None
        reference = None
        if NEEDS_REFERENCE in metric.needs:
            if self.reference is None or reference_output is None:
                self.note(f"{metric.name}: needs a reference task (--reference-task NAME)")
                return None
            reference = MetricInput(reference_output.features.astype(np.float64), self.reference.labels,
                                    self.reference.train, seed=task.seed)
        head = output.head_probs.astype(np.float64) if output.head_probs is not None else None
        return MetricInput(output.features.astype(np.float64), task.labels, task.train, head, reference, task.seed)


def run_score(
    index: Index,
    task_name: str,
    metric_names: Sequence[str] = (),
    where: str | None = None,
    checkpoint_ids: Sequence[str] = (),
    reference_task: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> ScoreSummary:
    """Score the selected checkpoints (all by default) on a task with the named metrics (all by default)."""
    started = time.monotonic()
    metric_list = [cls() for cls in metric_classes(metric_names)]
    summary = ScoreSummary(task=task_name, metrics=[m.name for m in metric_list])
    if where is None and not checkpoint_ids:
        where = "true"
    selected = summary.checkpoint_ids = select_checkpoints(index, where, checkpoint_ids)
    device = resolve_device(device)
    with index.open_catalog() as catalog:
        task = load_task(index, catalog, task_name)
        reference = None
        if reference_task is not None:
            if reference_task == task_name:
                raise UsageError("--reference-task must be another task than --task")
            reference = load_task(index, catalog, reference_task)
            if reference.modality != task.modality:
                raise UsageError(f"reference task {reference_task!r} holds {reference.modality} examples and task "
                                 f"{task_name!r} {task.modality}; they must be embedded by the same checkpoints")
        instances = [r.component(device=device, batch_size=batch_size) for r in probes().values()]
        run = _ScoreRun(catalog, EmbeddingStore(index.root), task, reference, metric_list, summary)
        rows = catalog.checkpoint_rows(selected)
        summary.selected = len(rows)
        with tqdm(total=len(rows), desc="score", unit=" ckpt",
                  disable=None if show_progress is None else not show_progress) as bar:
            try:
                for row in rows:
                    bar.set_postfix_str(row["checkpoint_id"][-40:], refresh=False)
                    probe = pick_probe(instances, row, task.modality)
                    if probe is None:
                        summary.no_probe += 1
                    else:
                        run.score(probe, row)
                    bar.update(1)
            except KeyboardInterrupt:
                raise HubindexError(
                    f"score interrupted; {summary.computed} scores saved. "
                    "Run the same command again to continue (saved scores are kept)."
                ) from None
    summary.seconds = time.monotonic() - started
    return summary


def score_table(catalog: Catalog, task: str, metric_names: Sequence[str], checkpoint_ids: Sequence[str]
                ) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): one row per checkpoint, one column per metric, from `task_scores`."""
    found = catalog.conn.execute(
        "SELECT checkpoint_id, metric, value FROM task_scores WHERE task = ? AND list_contains(?, metric) "
        "AND list_contains(?, checkpoint_id)",
        [task, list(metric_names), list(checkpoint_ids)],
    ).fetchall()
    values: dict[str, dict[str, float]] = {}
    for checkpoint_id, metric, value in found:
        values.setdefault(checkpoint_id, {})[metric] = value
    header = ["checkpoint_id", *metric_names]
    rows = [[cid, *(values[cid].get(m) for m in metric_names)] for cid in sorted(values)]
    return header, rows
