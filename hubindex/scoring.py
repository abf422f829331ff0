"""Scoring: metric plugins applied to a checkpoint's frozen features of a labeled task.

`run_score` embeds a task's examples with each selected checkpoint (through the probe of the
task's modality), keeps those features in the store (table `task_features`), runs the metrics
and writes one `task_scores` row per (task, checkpoint, metric). It is incremental: a score is
recomputed only when its inputs change - the task's data, the checkpoint's sha, the reference
task - or the metric's version does; and a checkpoint whose scores are all current loads no
model. Each checkpoint is committed on its own, so an interrupted run keeps what it finished.
A checkpoint that cannot be embedded, or a metric that fails on it, is recorded in `failures`
(stage 'score') and the run goes on. As for probing, the driver plans (stale scores, stored
features), an executor runs `score_checkpoint` (embedding and metrics) and the driver commits.

The array mode (a metric on features and labels given as .npy files) is hubindex/array_scoring.py.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import Interrupted, UsageError
from hubindex.executors import local_executor
from hubindex.index import Index
from hubindex.interrupts import stop_on_signals, was_interrupted
from hubindex.plugins import known_names, metrics, probes
from hubindex.probing import (
    DEFERRED,
    SETTLED,
    RunFailure,
    pick_probe,
    plan_in_rounds,
    probe_resources,
    record_run_failure,
    resolve_device,
    select_checkpoints,
)
from hubindex.label_embeddings import LabelEmbeddings, embed_class_names
from hubindex.store import STORE_DIR, EmbeddingStore, StoreError
from hubindex.tasks import Task, load_task
from hubindex.types import (
    FLOAT32,
    NEEDS_HEAD,
    NEEDS_LABEL_EMBEDDINGS,
    NEEDS_REFERENCE,
    TARGET_REGRESSION,
    ExampleOutput,
    Executor,
    Metric,
    MetricInput,
    MetricNotApplicable,
    Probe,
    ProbeError,
    TaskResources,
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
    """(value, seconds) of one metric; a non-finite value is an error, not a score.

    `seconds` is the metric's own work: the modules it declares in `imports` are imported first
    (a first call would otherwise count seconds of scikit-learn's import).
    """
    if data.target not in metric.targets:
        raise MetricNotApplicable(f"{metric.name} scores {', '.join(sorted(metric.targets))} tasks, "
                                  f"not {data.target}")
    for module in metric.imports:
        importlib.import_module(module)
    started = time.perf_counter()
    value = float(metric.score(data))
    seconds = time.perf_counter() - started
    if not math.isfinite(value):
        raise ValueError(f"metric {metric.name!r} returned {value}")
    return value, seconds


# ------------------------------------------------------------------------------------ task features


def task_feature_key(checkpoint_sha: str, task_hash: str, kind: str, pooling: str, dtype: str = FLOAT32) -> str:
    """Relative path of a task's feature (or head) matrix in the store (float32: as before dtype was in the key)."""
    parts = (checkpoint_sha, task_hash, kind, pooling) + (() if dtype == FLOAT32 else (dtype,))
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"{STORE_DIR}/tasks/{task_hash[:16]}/{digest[:32]}.faiss"


def _stored_task_features(catalog: Catalog, store: EmbeddingStore, sha: str, task: Task,
                          pooling: str, dtype: str) -> ExampleOutput | None:
    rows = catalog.conn.execute(
        "SELECT kind, has_head, n_examples, path, file_sha256 FROM task_features "
        "WHERE checkpoint_sha = ? AND task_hash = ? AND pooling = ? AND dtype = ? ORDER BY created_at DESC",
        [sha, task.content_hash, pooling, dtype],
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


def store_task_features(catalog: Catalog, store: EmbeddingStore, probe: Probe, checkpoint_id: str, sha: str,
                        task: Task, output: ExampleOutput, seconds: float, dtype: str = FLOAT32) -> None:
    """Write freshly embedded task features (and head) to the store, then register them in one transaction."""
    matrices = {FEATURES: output.features}
    if output.head_probs is not None:
        matrices[HEAD] = output.head_probs
    written = {kind: store.write(task_feature_key(sha, task.content_hash, kind, probe.example_pooling, dtype), matrix)
               for kind, matrix in matrices.items()}
    with catalog.transaction():
        for kind, matrix in written.items():
            catalog.conn.execute(
                "INSERT OR REPLACE INTO task_features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [checkpoint_id, sha, task.content_hash, kind, probe.example_pooling, dtype, task.name,
                 probe.name, probe.version, HEAD in written, matrix.n_items, matrix.dim, matrix.path,
                 matrix.sha256, seconds, utcnow()],
            )


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


def inputs_hash(task: Task, sha: str, pooling: str, reference: Task | None, encoders_key: str = "") -> str:
    """What a score depends on besides the metric's version."""
    parts = (task.content_hash, sha, pooling, reference.content_hash if reference else "", str(task.seed))
    # Scores without label encoders hash as they did before label encoders existed.
    parts += (encoders_key,) if encoders_key else ()
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def uses_label_embeddings(metric: Metric, task: Task) -> bool:
    """Regression targets are their own embeddings: only class labels need label encoders."""
    return NEEDS_LABEL_EMBEDDINGS in metric.needs and task.target != TARGET_REGRESSION


# Which labeled examples a checkpoint embeds: the task's, or the reference task's.
TASK = "task"
REFERENCE = "reference"


@dataclass(frozen=True)
class ScoreData:
    """What every checkpoint of a score run needs: the task (and reference task) examples."""

    task: Task
    reference: Task | None
    labels: LabelEmbeddings = LabelEmbeddings.none()  # the class names by each --label-encoder


@dataclass(frozen=True)
class ScoreWork:
    """One checkpoint to score: everything a worker needs, picklable (the examples are shared)."""

    probe: Probe
    checkpoint: dict[str, Any]
    sha: str
    metrics: list[Metric]  # the stale ones
    hashes: dict[str, str]  # metric name -> the inputs hash of its score
    stored: dict[str, ExampleOutput]  # features already in the store, by TASK / REFERENCE
    needs_reference: bool
    dtype: str = FLOAT32  # the precision the probe runs the checkpoint in


@dataclass
class ScoreResult:
    """What a worker sends back: newly embedded features, metric values, or why it stopped."""

    # Features embedded now, to store: TASK / REFERENCE -> (features, seconds).
    embedded: dict[str, tuple[ExampleOutput, float]] = field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (kind, message): the checkpoint could not be embedded
    values: list[tuple[str, float, float]] = field(default_factory=list)  # (metric, value, seconds)
    metric_failures: list[str] = field(default_factory=list)
    not_applicable: int = 0
    notes: list[str] = field(default_factory=list)


def metric_input(metric: Metric, data: ScoreData, output: ExampleOutput,
                 reference_output: ExampleOutput | None) -> MetricInput:
    """The metric's input; MetricNotApplicable when the checkpoint lacks what it needs."""
    task = data.task
    if NEEDS_HEAD in metric.needs and output.head_probs is None:
        raise MetricNotApplicable("needs a checkpoint with a classification head")
    reference = None
    if NEEDS_REFERENCE in metric.needs:
        if data.reference is None or reference_output is None:
            raise MetricNotApplicable("needs a reference task (--reference-task NAME)")
        reference = MetricInput(reference_output.features.astype(np.float64), data.reference.labels,
                                data.reference.train, seed=task.seed)
    label_embeddings: tuple[np.ndarray, ...] = ()
    if uses_label_embeddings(metric, task):
        if not data.labels.matrices:
            raise MetricNotApplicable("needs embeddings of the class names: score with --label-encoder CHECKPOINT "
                                      "(a text checkpoint of the catalog)")
        label_embeddings = data.labels.matrices
    head = output.head_probs.astype(np.float64) if output.head_probs is not None else None
    return MetricInput(output.features.astype(np.float64), task.labels, task.train, head, reference, task.seed,
                       task.target, label_embeddings)


def _examples_features(work: ScoreWork, which: str, task: Task, result: ScoreResult) -> ExampleOutput:
    """Stored features of the task's examples, else embedded now (and kept in the result to store)."""
    if which in work.stored:
        return work.stored[which]
    started = time.monotonic()
    output = _check_output(work.probe.embed_examples(work.checkpoint, task.items), task, work.probe)
    result.embedded[which] = (output, time.monotonic() - started)
    return output


def score_checkpoint(work: ScoreWork, data: ScoreData) -> ScoreResult:
    """The compute step: embed the examples the store lacks, then run the stale metrics."""
    result = ScoreResult()
    probe, task = work.probe, data.task
    try:
        output = _examples_features(work, TASK, task, result)
        reference_output = None
        if work.needs_reference and data.reference is not None:
            reference_output = _examples_features(work, REFERENCE, data.reference, result)
    except ProbeError as exc:
        result.failure = (exc.kind, f"{probe.name} on task {task.name}: {exc}")
        return result
    except MemoryError as exc:
        result.failure = ("out-of-memory", f"{probe.name} on task {task.name}: {exc}")
        return result
    except Exception as exc:  # a plugin's bug must not end the run for every other checkpoint
        result.failure = ("probe-error", f"{probe.name} on task {task.name}: {type(exc).__name__}: {exc}")
        return result
    for metric in work.metrics:
        try:
            value, seconds = run_metric(metric, metric_input(metric, data, output, reference_output))
        except MetricNotApplicable as exc:
            result.not_applicable += 1
            result.notes.append(f"{metric.name}: {exc}")
            continue
        except Exception as exc:  # one metric's failure leaves the others' scores
            result.metric_failures.append(f"{metric.name} on task {task.name}: {type(exc).__name__}: {exc}")
            continue
        result.values.append((metric.name, value, seconds))
    return result


class _ScoreRun:
    """Plans what to score, and stores and commits each finished checkpoint at once."""

    def __init__(self, catalog: Catalog, store: EmbeddingStore, data: ScoreData,
                 metric_list: list[Metric], summary: ScoreSummary) -> None:
        self.catalog = catalog
        self.store = store
        self.data = data
        self.task = data.task
        self.reference = data.reference
        self.metrics = metric_list
        self.summary = summary
        self.claimed: set[tuple[str, str]] = set()  # (sha, pooling and precision) this round embeds

    def fail(self, subject: str, kind: str, message: str) -> None:
        record_run_failure(self.catalog, STAGE, self.summary.failures, subject, kind, message)

    def note(self, text: str) -> None:
        if text not in self.summary.notes:
            self.summary.notes.append(text)

    def stale_metrics(self, checkpoint_id: str, hashes: dict[str, str]) -> list[Metric]:
        """The metrics whose stored score (if any) has another version or other inputs."""
        stored = dict(
            ((metric, (version, inputs)) for metric, version, inputs in self.catalog.conn.execute(
                "SELECT metric, metric_version, inputs_hash FROM task_scores WHERE task = ? AND checkpoint_id = ?",
                [self.task.name, checkpoint_id],
            ).fetchall())
        )
        return [metric for metric in self.metrics
                if stored.get(metric.name) != (metric.version, hashes[metric.name])]

    def plan(self, probe: Probe, checkpoint: dict[str, Any]) -> ScoreWork | str:
        """The work to do for a checkpoint, SETTLED (all current, failed) or DEFERRED (its twin embeds first)."""
        checkpoint_id = checkpoint["checkpoint_id"]
        sha = probe.revision(checkpoint)
        if not sha:
            self.fail(checkpoint_id, "no-revision", "the catalog has no sha for this checkpoint; crawl it again")
            return SETTLED
        pooling, dtype = probe.example_pooling, probe.dtype_for(checkpoint)
        # float32 features hash as they did before dtype was recorded, so their scores stay current.
        variant = pooling if dtype == FLOAT32 else f"{pooling}/{dtype}"
        hashes = {metric.name: inputs_hash(
            self.task, sha, variant, self.reference if NEEDS_REFERENCE in metric.needs else None,
            self.data.labels.encoders_key if uses_label_embeddings(metric, self.task) else "")
            for metric in self.metrics}
        stale = self.stale_metrics(checkpoint_id, hashes)
        if not stale:
            self.summary.current += len(self.metrics)
            return SETTLED
        needs_reference = self.reference is not None and any(NEEDS_REFERENCE in m.needs for m in stale)
        stored = {}
        for which, task in ((TASK, self.task), (REFERENCE, self.reference if needs_reference else None)):
            found = _stored_task_features(self.catalog, self.store, sha, task, pooling, dtype) if task else None
            if found is not None:
                stored[which] = found
        if len(stored) < 1 + needs_reference:  # the model must run
            if (sha, variant) in self.claimed:
                return DEFERRED
            self.claimed.add((sha, variant))
        self.summary.current += len(self.metrics) - len(stale)
        return ScoreWork(probe, checkpoint, sha, stale, hashes, stored, needs_reference, dtype)

    def commit(self, work: ScoreWork, result: ScoreResult) -> None:
        """Store new features, record failures and write the checkpoint's scores in one transaction."""
        checkpoint_id = work.checkpoint["checkpoint_id"]
        tasks = {TASK: self.task, REFERENCE: self.reference}
        for which, (output, seconds) in result.embedded.items():
            store_task_features(self.catalog, self.store, work.probe, checkpoint_id, work.sha, tasks[which],
                                output, seconds, work.dtype)
        if result.failure is not None:
            self.fail(checkpoint_id, *result.failure)
            return
        self.summary.embedded += int(bool(result.embedded))
        for message in result.metric_failures:
            self.fail(checkpoint_id, "metric-error", message)
        by_name = {metric.name: metric for metric in work.metrics}
        rows = []
        for name, value, seconds in result.values:
            metric = by_name[name]
            with_reference = NEEDS_REFERENCE in metric.needs
            rows.append([self.task.name, checkpoint_id, name, metric.version, value, metric.higher_is_better,
                         seconds, utcnow(), work.sha, self.task.content_hash,
                         self.reference.name if self.reference and with_reference else None,
                         work.hashes[name]])
        with self.catalog.transaction():
            for row in rows:
                self.catalog.conn.execute(
                    "INSERT OR REPLACE INTO task_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            if not result.metric_failures:
                self.catalog.resolve_failures(STAGE, [checkpoint_id])
        self.summary.computed += len(rows)
        self.summary.not_applicable += result.not_applicable
        for text in result.notes:
            self.note(text)

    def compute(self, executor: Executor, work: list[ScoreWork], resources: TaskResources, bar: tqdm) -> None:
        """Run the work on the executor; commit each checkpoint as it finishes."""
        finished = executor.map(score_checkpoint, work, resources, shared=self.data)
        with closing(finished):  # an interrupt stops what the executor still runs
            for done in finished:
                item = done.item
                result = done.result if done.error is None else ScoreResult(
                    failure=(done.error_kind, f"{item.probe.name} on task {self.task.name}: {done.error}"))
                self.commit(item, result)
                bar.set_postfix_str(item.checkpoint["checkpoint_id"][-40:], refresh=False)
                bar.update(1)


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
    executor: Executor | None = None,
    label_encoders: Sequence[str] = (),
) -> ScoreSummary:
    """Score the selected checkpoints (all by default) on a task with the named metrics (all by default).

    The driver plans (which scores are stale, which features are stored) and commits; `executor`
    (default: in-process) embeds and runs the metrics.
    """
    started = time.monotonic()
    metric_list = [cls() for cls in metric_classes(metric_names)]
    summary = ScoreSummary(task=task_name, metrics=[m.name for m in metric_list])
    if where is None and not checkpoint_ids:
        where = "true"
    selected = summary.checkpoint_ids = select_checkpoints(index, where, checkpoint_ids)
    executor = executor if executor is not None else local_executor()
    device = resolve_device(device, executor)
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
        labels = LabelEmbeddings.none()
        if any(uses_label_embeddings(metric, task) for metric in metric_list):
            labels = embed_class_names(catalog, task, label_encoders, device, batch_size)
        run = _ScoreRun(catalog, EmbeddingStore(index.root), ScoreData(task, reference, labels), metric_list, summary)
        rows = catalog.checkpoint_rows(selected)
        summary.selected = len(rows)
        with tqdm(total=len(rows), desc="score", unit=" ckpt",
                  disable=None if show_progress is None else not show_progress) as bar:
            try:
                with stop_on_signals():
                    plan_in_rounds(
                        rows, run.claimed, summary, bar,
                        pick=lambda row: pick_probe(instances, row, task.modality),
                        plan=run.plan,
                        compute=lambda work: run.compute(executor, work, probe_resources(device), bar),
                    )
            except BaseException as exc:
                if not was_interrupted(exc):
                    raise
                raise Interrupted(
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
