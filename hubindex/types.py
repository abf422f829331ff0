"""The small typed base classes that plugins implement, and the records they exchange with the core."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Iterable,
    Iterator,
    Protocol,
    Sequence,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click
    import numpy as np

    from hubindex.lineage import EdgeSet

PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class CrawlContext(Protocol):
    """What a crawler may use while it runs (the crawl pipeline provides it)."""

    run_id: int
    resumed_from: int | None
    # Newest last_modified seen by the last completed run of the same query, if any.
    previous_watermark: datetime | None
    progress: Any  # a tqdm bar; crawlers may set .total and call .set_postfix_str

    def stored(self, column: str, id_prefix: str) -> dict[str, Any]:
        """{checkpoint_id: value of column} for stored checkpoints whose id starts with id_prefix."""

    def stored_values(self, column: str, condition: str, params: Sequence[Any] = ()) -> dict[str, Any]:
        """{checkpoint_id: value of column} for stored checkpoints matching a SQL condition."""


class Component:
    """What every registered component has: a short name, a version and a one-line description."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""

    @classmethod
    def validate_class(cls) -> None:
        """Raise ValueError if the class cannot be registered (bad name, missing version)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not PLUGIN_NAME.match(name):
            raise ValueError(
                f"{cls.__module__}.{cls.__qualname__}: a {cls.kind} needs a `name` of lowercase "
                f"letters, digits, '-' or '_' (got {name!r})"
            )
        if not isinstance(cls.version, str) or not cls.version:
            raise ValueError(f"{cls.kind} {name!r}: `version` must be a non-empty string")


# --------------------------------------------------------------------------------------------
# Crawlers


@dataclass
class CheckpointRecord:
    """One checkpoint as a crawler saw it: catalog columns (see hubindex.migrations) to upsert.

    Columns the crawler owns (Crawler.owned_columns) overwrite stored values even with NULL;
    other columns only fill in values the catalog does not have yet.
    """

    checkpoint_id: str
    columns: dict[str, Any]
    # True when the crawler fetched full metadata for this record (an expensive call).
    fetched: bool = False
    # Columns this record is the authority for; None means the crawler's owned_columns.
    owned_columns: frozenset[str] | None = None
    # The parents the checkpoint's files state (hubindex.lineage), written with the row in one
    # transaction; None leaves its stored lineage as it is.
    edges: EdgeSet | None = None


@dataclass
class CrawlFailure:
    """Something the crawler could not index; recorded in the `failures` table, never fatal."""

    subject: str  # a checkpoint_id, or a repo id / path when no id could be formed
    kind: str  # short machine-readable reason, e.g. "gated", "disabled", "http-503", "timeout"
    message: str


CrawlEvent = CheckpointRecord | CrawlFailure


class Crawler(Component):
    """Pulls checkpoint metadata from one source. Subclasses set the ClassVars and `crawl`."""

    kind: ClassVar[str] = "crawler"
    # Columns this crawler is the authority for (written even when the value is NULL).
    owned_columns: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def cli_params(cls) -> list[click.Parameter]:
        """Options and arguments of `hubindex crawl NAME`; their values reach __init__ as kwargs."""
        return []

    def __init__(self, **options: Any) -> None:
        self.options = options

    def validate(self) -> None:
        """Raise UsageError for bad options; called before a crawl run is recorded."""

    def query_key(self) -> str:
        """Identifies 'the same crawl' across runs, so that an interrupted one can be resumed."""
        items = sorted((k, repr(v)) for k, v in self.options.items())
        return f"{self.name}:{items}"

    def crawl(self, ctx: CrawlContext) -> Iterator[CrawlEvent]:
        """Yield a CheckpointRecord per checkpoint found and a CrawlFailure per one that failed."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Probing corpora and probes

TEXT = "text"
IMAGE = "image"
MODALITIES = (TEXT, IMAGE)


def _check_known(cls: type[Component], attribute: str, values: frozenset[str], known: frozenset[str]) -> None:
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{cls.kind} {cls.name!r}: unknown {attribute} {sorted(unknown)}; known: {sorted(known)}")


def _check_modality(cls: type[Component]) -> None:
    modality = getattr(cls, "modality", None)
    if modality not in MODALITIES:
        raise ValueError(f"{cls.kind} {cls.name!r}: `modality` must be one of {MODALITIES} (got {modality!r})")


@dataclass(frozen=True)
class CorpusData:
    """A loaded probing corpus. Its name, content hash and size identify it.

    Text corpora hold words: `items` are the words in order and `lines` the same words grouped
    into the lines they came from (a probe runs a model on whole lines and keeps one row per
    word). Image corpora hold RGB `PIL.Image`s and have no lines.
    """

    name: str
    modality: str
    items: list[Any]
    content_hash: str  # sha256 of the items in order (and of the line breaks, for text)
    source: str  # where the data comes from, in words
    license: str  # its license or terms of use
    lines: list[list[str]] | None = None

    @property
    def size(self) -> int:
        return len(self.items)


def text_content_hash(lines: list[list[str]]) -> str:
    """sha256 over the words in order; a line break is part of the content (it changes contexts)."""
    digest = hashlib.sha256(b"hubindex-text-corpus-v1\n")
    for line in lines:
        for word in line:
            digest.update(word.encode("utf-8") + b"\x1f")
        digest.update(b"\x1e")
    return digest.hexdigest()


def image_content_hash(images: list[Any]) -> str:
    """sha256 over the decoded pixels of the images in order (not their file encoding)."""
    digest = hashlib.sha256(b"hubindex-image-corpus-v1\n")
    for image in images:
        digest.update(f"{image.mode}:{image.width}x{image.height}\x1f".encode())
        digest.update(image.tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()


class Corpus(Component):
    """Unlabeled probing data (text or images). Subclasses set the ClassVars and `load`.

    A corpus is chosen on the command line as `NAME` or `NAME:ARGUMENT` (e.g. `images:/photos`);
    `takes_argument` says whether the ARGUMENT is needed. `max_items` caps the size (words for
    text, images for image corpora); None means `default_max_items`, which None means all.
    """

    kind: ClassVar[str] = "corpus"
    modality: ClassVar[str] = TEXT
    # The corpus a probe of this modality uses when none is named (one per modality).
    default: ClassVar[bool] = False
    default_max_items: ClassVar[int | None] = None
    takes_argument: ClassVar[bool] = False
    # True when load() needs the network (e.g. a dataset on the Hugging Face Hub).
    online: ClassVar[bool] = False

    @classmethod
    def validate_class(cls) -> None:
        super().validate_class()
        _check_modality(cls)

    def __init__(self, argument: str | None = None, max_items: int | None = None) -> None:
        self.argument = argument
        self.max_items = max_items if max_items is not None else self.default_max_items

    def load(self) -> CorpusData:
        """Read the corpus: deterministic, the same items in the same order on every machine."""
        raise NotImplementedError


@dataclass
class ProbeOutput:
    """Features of one checkpoint on a corpus: one row per corpus item.

    `dropped` marks the items the probe could not represent by design (a word lost to
    truncation); their rows are ignored. Non-finite values anywhere else mean the model failed.
    """

    features: np.ndarray  # (n_items, dim)
    dropped: np.ndarray  # (n_items,) bool


class ProbeError(Exception):
    """A checkpoint could not be probed (recorded in `failures`; the run goes on)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # e.g. "load-error", "unsupported", "non-finite"


FLOAT32 = "float32"
# Names of half-precision parameter types in safetensors headers and torch, and the torch dtype.
HALF_PRECISIONS = {"BF16": "bfloat16", "BFLOAT16": "bfloat16", "F16": "float16", "FLOAT16": "float16"}


class Probe(Component):
    """Runs one checkpoint on a corpus and returns one feature row per corpus item.

    (layer, pooling, dtype_for(checkpoint)) name what the features are; with the checkpoint's
    sha and the corpus hash they key the stored matrix, so nothing is computed twice. Features
    must not depend on the batch size (it is not part of the key). A probe loads weights only inside
    `embed`, never in `accepts` or `revision`.
    """

    kind: ClassVar[str] = "probe"
    modality: ClassVar[str] = TEXT
    layer: ClassVar[str] = "last"
    pooling: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 32

    @classmethod
    def validate_class(cls) -> None:
        super().validate_class()
        _check_modality(cls)

    def __init__(self, device: str = "cpu", batch_size: int | None = None) -> None:
        self.device = device
        self.batch_size = batch_size or self.default_batch_size

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        """Whether this probe can run the checkpoint described by a catalog row."""
        raise NotImplementedError

    def why_not(self, checkpoint: dict[str, Any]) -> str:
        """Why `accepts` refuses a checkpoint, in words, when the probe can tell ('' otherwise)."""
        return ""

    def dtype_for(self, checkpoint: dict[str, Any]) -> str:
        """The precision `embed` runs the checkpoint in (part of the stored features' key).

        float32, except on CUDA for a checkpoint stored in half precision (most of its
        parameters bf16 or fp16): then that precision, as the checkpoint was trained and published.
        """
        if not self.device.startswith("cuda"):
            return FLOAT32
        counts = checkpoint.get("params_by_dtype") or {}
        own = max(counts, key=lambda name: counts[name] or 0) if counts else ""
        return HALF_PRECISIONS.get(str(own).upper(), FLOAT32)

    def revision(self, checkpoint: dict[str, Any]) -> str | None:
        """The sha of the weights `embed` would load: the local copy's if there is one."""
        if checkpoint.get("local_path") and checkpoint.get("local_sha"):
            return checkpoint["local_sha"]
        return checkpoint.get("sha")

    def embed(self, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeOutput:
        """Load the checkpoint and compute its features on the corpus; raise ProbeError if it cannot."""
        raise NotImplementedError

    # How embed_examples pools a whole example into one row (part of the stored features' key).
    example_pooling: ClassVar[str] = ""

    def embed_examples(self, checkpoint: dict[str, Any], items: list[Any]) -> ExampleOutput:
        """One feature row per labeled example (a text or an image), plus the checkpoint's own
        head's softmax when it has a classification head. Raise ProbeError if it cannot."""
        raise ProbeError("unsupported", f"probe {self.name!r} does not embed labeled examples")


# --------------------------------------------------------------------------------------------
# Labeled tasks, metrics and queries


@dataclass(frozen=True)
class ExampleOutput:
    """Features of one checkpoint on a labeled task's examples: one row per example.

    `head_probs` is the softmax of the checkpoint's own classification head over its source
    classes (what LEEP and NCE need), or None when the checkpoint has no head.
    """

    features: np.ndarray  # (n_examples, dim)
    head_probs: np.ndarray | None = None  # (n_examples, n_source_classes)


# Rows of head probabilities may deviate this much from summing to 1 (float32 softmax rounding).
PROBABILITY_TOLERANCE = 1e-3

# What a metric may need beyond features and labels (Metric.needs).
NEEDS_HELD_OUT = "held-out"  # trains on the `train` rows and evaluates on the others
NEEDS_HEAD = "head"  # the checkpoint's own classifier: MetricInput.head_probs
NEEDS_REFERENCE = "reference"  # a labeled reference task embedded by the same checkpoint
# Embeddings of the task's class names by one or more text checkpoints (EMMS's label embeddings).
NEEDS_LABEL_EMBEDDINGS = "label-embeddings"
METRIC_NEEDS = frozenset({NEEDS_HELD_OUT, NEEDS_HEAD, NEEDS_REFERENCE, NEEDS_LABEL_EMBEDDINGS})

# What a task's labels are (Task.target, MetricInput.target) and the shape MetricInput.labels has.
TARGET_CLASSIFICATION = "classification"  # (n,) integer class indices 0..C-1, one class per example
TARGET_REGRESSION = "regression"  # (n, t) float values, t >= 1 targets per example
TARGET_MULTI_LABEL = "multi-label"  # (n, C) 0/1 indicators, any number of the C classes per example
TARGET_KINDS = (TARGET_CLASSIFICATION, TARGET_REGRESSION, TARGET_MULTI_LABEL)


@dataclass(frozen=True)
class MetricInput:
    """What a metric scores: one checkpoint's frozen features of a labeled task.

    Rows are examples. `labels` depend on `target` (see TARGET_KINDS): class indices 0..C-1
    for classification, an (n, t) float matrix for regression, an (n, C) 0/1 matrix for
    multi-label. `train` marks the rows a metric may fit on; metrics that need held-out data
    (Metric.needs has "held-out") evaluate on the other rows, every other metric uses the
    `train` rows only. `seed` makes randomised metrics repeatable. `label_embeddings` holds, per
    label encoder, one row per class name (C, e_k), in class order (metrics that need
    "label-embeddings").
    """

    features: np.ndarray  # (n, d) float
    labels: np.ndarray  # classification (n,) int64; regression (n, t) float64; multi-label (n, C) 0/1
    train: np.ndarray  # (n,) bool
    head_probs: np.ndarray | None = None  # (n, Z) softmax of the checkpoint's own head
    reference: MetricInput | None = None  # reference task (task-relatedness), same checkpoint
    seed: int = 0
    target: str = TARGET_CLASSIFICATION
    label_embeddings: tuple[np.ndarray, ...] = ()  # per label encoder: (C, e_k)

    @property
    def n_classes(self) -> int:
        """C: classes of a classification or multi-label task; 0 for regression."""
        if self.target == TARGET_MULTI_LABEL:
            return int(self.labels.shape[1])
        if self.target == TARGET_REGRESSION:
            return 0
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def train_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of the rows a metric fits on."""
        return self.features[self.train], self.labels[self.train]

    def held_out_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of the held-out rows."""
        return self.features[~self.train], self.labels[~self.train]


class MetricNotApplicable(Exception):
    """The metric cannot score this input by design (e.g. LEEP on a checkpoint without a head)."""


class Metric(Component):
    """A task-aware transferability score of frozen features; higher is better unless
    `higher_is_better` is False. Subclasses set the ClassVars and `score`.

    `needs` names what `score` uses beyond features and labels (see METRIC_NEEDS); the core only
    calls `score` when those are present. Bump `version` whenever a change alters the values:
    stored scores of another version are recomputed.

    `targets` names the task kinds (TARGET_KINDS) the metric defines a score for; the core
    treats other tasks as not applicable. `imports` names the modules `score` imports lazily:
    the core imports them before it starts the clock, so `seconds` is the metric's own work.
    """

    kind: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()
    targets: ClassVar[frozenset[str]] = frozenset({TARGET_CLASSIFICATION})
    imports: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def validate_class(cls) -> None:
        super().validate_class()
        _check_known(cls, "needs", cls.needs, METRIC_NEEDS)
        _check_known(cls, "targets", cls.targets, frozenset(TARGET_KINDS))
        if not cls.targets:
            raise ValueError(f"metric {cls.name!r}: `targets` must name at least one of {TARGET_KINDS}")

    def score(self, data: MetricInput) -> float:
        """The score of the features for the task; raise MetricNotApplicable if it has none."""
        raise NotImplementedError


# What a query may use (Query.uses).
USES_TASK = "task"  # a labeled task's scores in task_scores (hubindex search --task)
USES_KAPPA = "kappa"  # the task-space covariance kappa of the pool (hubindex select)
QUERY_USES = frozenset({USES_TASK, USES_KAPPA})


@dataclass(frozen=True)
class Pick:
    """One selected checkpoint: its id, the value it was ranked by and why, in words."""

    checkpoint_id: str
    value: float | None
    reason: str
    mi_nats: float | None = None  # cumulative mutual information after this pick (MMI)


@dataclass
class QueryContext:
    """What a query sees: the candidate pool (catalog rows) and what the command line gave it.

    `pool` holds the catalog rows of the candidates (all checkpoints, or those matching
    --where), ordered by checkpoint_id. `catalog` is open read-only. For queries that use kappa,
    one of two is set: `kappa`, (checkpoint ids, n x n matrix) of the pool's checkpoints on one
    corpus; or, where n x n would not fit or kappa is a sparse graph, `kappa_lowrank`, (checkpoint
    ids, F, d) with kappa ~= F F^T + diag(d) (n x r and n) from the checkpoints' fingerprints.
    """

    catalog: Any
    pool: list[dict[str, Any]]
    task: str | None = None
    metric: str | None = None
    metric_higher_is_better: bool = True
    seed: int = 0
    kappa: tuple[list[str], np.ndarray] | None = None
    kappa_lowrank: tuple[list[str], np.ndarray, np.ndarray] | None = None

    def task_scores(self) -> dict[str, float]:
        """{checkpoint_id: value} of the task's scores for the metric, over the pool."""
        ids = [row["checkpoint_id"] for row in self.pool]
        rows = self.catalog.conn.execute(
            "SELECT checkpoint_id, value FROM task_scores WHERE task = ? AND metric = ? "
            "AND list_contains(?, checkpoint_id)",
            [self.task, self.metric, ids],
        ).fetchall()
        return dict(rows)


class Query(Component):
    """A search strategy: selects up to `budget` checkpoints of the pool, best first.

    `uses` names what it needs (USES_TASK: a task and a metric's scores; USES_KAPPA: kappa); the
    core provides those in the QueryContext before calling `select`.
    """

    kind: ClassVar[str] = "query"
    uses: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def validate_class(cls) -> None:
        super().validate_class()
        _check_known(cls, "uses", cls.uses, QUERY_USES)

    def select(self, context: QueryContext, budget: int) -> list[Pick]:
        """Up to `budget` picks from context.pool, best first."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Executors


@dataclass(frozen=True)
class TaskResources:
    """What one unit of work needs while it runs (a Ray task's num_cpus / num_gpus)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class WorkDone:
    """One finished unit of work: the item as given, and fn's result or what stopped it.

    `error` (with a short `error_kind`) is set only when the executor could not finish the item:
    a remote task that raised, a worker process that died. fn's own failures travel in `result`.
    """

    item: Any
    result: Any = None
    error: str | None = None
    error_kind: str = "executor-error"


class Executor(Component):
    """Runs the compute step of probing and scoring: `map(fn, items)` on this machine or a cluster.

    `fn(item, shared)` must be a picklable, module-level function; `shared` is large read-only
    data (a corpus, a task's examples) that every item needs: an executor sends it once. Results
    come back in completion order; the driver writes the store and the catalog.
    """

    kind: ClassVar[str] = "executor"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers

    def cuda_available(self) -> bool:
        """Whether the machines that run the work have a CUDA device (for --device auto)."""
        import torch

        return torch.cuda.is_available()

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], resources: TaskResources,
            shared: Any = None) -> Iterator[WorkDone]:
        """Run fn(item, shared) for every item; yield a WorkDone per item as each finishes."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (a local Ray instance); idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
