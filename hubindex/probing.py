"""Orchestration: run probes on checkpoints over a corpus into the embedding store, computing nothing twice.

A feature matrix is keyed by (checkpoint sha, corpus hash, layer, pooling, dtype). When the catalog's
`embeddings` table has the key and the file in the store is exactly the one registered, the
checkpoint is reused without loading its model. Otherwise the probe runs, the matrix is written
to the store (atomically) and then registered in the catalog, in one transaction per checkpoint;
an interrupted run keeps every checkpoint it finished. A checkpoint that cannot be loaded or gives
non-finite features is recorded in `failures` (stage 'probe') and the run goes on; so is one that
no installed probe takes (kind `unsupported`, with the reason) and one too large for the memory
at hand (kind `too-large`, before anything is loaded).

A run has three steps: the driver plans (reads the catalog: what is stored, what must run), an
executor computes (`probe_checkpoint`, a pure function of a picklable `ProbeWork`: in this process
or as a Ray task) and the driver commits each result as it arrives (store file, then catalog rows).
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import Interrupted, NothingDone, QueryError, QueryTimeout, UsageError
from hubindex.executors import local_executor
from hubindex.index import Index
from hubindex.interrupts import stop_on_signals, was_interrupted
from hubindex.memory import available_memory_bytes
from hubindex.plugins import corpora, known_names, probes
from hubindex.store import EmbeddingStore, embedding_key
from hubindex.types import (
    FLOAT32,
    Corpus,
    CorpusData,
    Executor,
    Probe,
    ProbeError,
    TaskResources,
)
from hubindex.user_sql import run_readonly_query

STAGE = "probe"
DEVICES = ("auto", "cpu", "cuda")
MAX_MESSAGE_CHARS = 500
# --where selects at most this many checkpoints (the query's row cap).
MAX_SELECTED = 10_000_000


@dataclass
class RunFailure:
    """A checkpoint a probe or score run could not process; also a row of the failures table."""

    subject: str
    kind: str
    message: str


def record_run_failure(catalog: Catalog, stage: str, failures: list[RunFailure], subject: str, kind: str,
                       message: str) -> None:
    """Record a failure in the catalog (message on one line, shortened) and in the run's list."""
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    catalog.record_failure(None, stage, subject, kind, message)
    failures.append(RunFailure(subject, kind, message))


@dataclass
class ProbeSummary:
    corpora: list[str] = field(default_factory=list)  # "name (N items, hash ...)" of each corpus used
    selected: int = 0
    probed: int = 0  # model loaded and run
    reused: int = 0  # already stored: no model loaded
    no_probe: int = 0  # only probes of another modality take the checkpoint (e.g. a text model, images)
    seconds: float = 0.0
    failures: list[RunFailure] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        used = ", ".join(self.corpora) or "no corpus loaded"
        return (
            f"probe on {used}: {self.selected} checkpoints; {self.probed} probed, {self.reused} reused, "
            f"{self.failed} failed, {self.no_probe} without a matching probe in {self.seconds:.1f} s"
        )


# ------------------------------------------------------------------------------------ choices


def resolve_device(device: str, executor: Executor | None = None) -> str:
    """auto -> cuda when a CUDA device is available (where the executor runs work), else cpu;
    cuda without one is an error."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if executor is not None:
        available = executor.cuda_available()
    else:
        import torch

        available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return "cuda" if available else "cpu"


def make_corpus(spec: str, max_items: int | None = None) -> Corpus:
    """A corpus from `NAME` or `NAME:ARGUMENT` (e.g. `images:/photos`)."""
    name, colon, argument = spec.partition(":")
    registered = corpora()
    registration = registered.get(name)
    if registration is None:
        known = known_names(registered)
        raise UsageError(f"unknown corpus {name!r}; available corpora: {known}")
    corpus_cls = registration.component
    if colon and not corpus_cls.takes_argument:
        raise UsageError(f"corpus {name!r} takes no argument (got {spec!r})")
    if corpus_cls.takes_argument and not argument:
        raise UsageError(f"corpus {name!r} needs an argument: --corpus {name}:VALUE")
    if max_items is not None and max_items < 1:
        raise UsageError(f"--max-items must be at least 1 (got {max_items})")
    return corpus_cls(argument=argument or None, max_items=max_items)


def default_corpus(modality: str, max_items: int | None = None) -> Corpus:
    """The corpus a probe of this modality uses when none is named."""
    for registration in corpora().values():
        component = registration.component
        if component.default and component.modality == modality:
            return component(max_items=max_items)
    raise UsageError(f"no default {modality} corpus is installed; name one with --corpus")


WHERE_EXAMPLE = "e.g. --where \"library_name = 'timm' AND params_total < 30e6\""


def checked_condition(where: str) -> str:
    """`where` if it is exactly one SQL condition on checkpoints rows, else a UsageError saying why.

    DuckDB's own parser reads `SELECT checkpoint_id FROM checkpoints WHERE <where>`: the result must
    be that one plain SELECT - no second statement, no UNION, ORDER BY, LIMIT or GROUP BY that the
    text could smuggle in. The condition then goes into the query on lines of its own, so a
    trailing `--` comment cannot swallow what follows it.
    """
    import duckdb

    if not where.strip():
        raise UsageError(f"--where needs a condition on checkpoints columns, {WHERE_EXAMPLE}")
    if ";" in where:
        raise UsageError("--where takes one SQL condition; ';' is not allowed")
    with duckdb.connect() as conn:
        parsed = json.loads(conn.execute("SELECT json_serialize_sql(?::VARCHAR)",
                                         [f"SELECT checkpoint_id FROM checkpoints WHERE\n{where}\n"]).fetchone()[0])
    if parsed.get("error"):
        reason = " ".join(str(parsed.get("error_message", "")).split())
        raise UsageError(f"--where {where!r} is not a valid SQL condition ({reason}); {WHERE_EXAMPLE}")
    statements = parsed.get("statements") or []
    node = statements[0].get("node", {}) if len(statements) == 1 else {}
    plain = (
        node.get("type") == "SELECT_NODE"
        and (node.get("from_table") or {}).get("table_name") == "checkpoints"
        and not node.get("modifiers") and not node.get("group_expressions") and not node.get("having")
        and not node.get("qualify") and not node.get("sample") and not (node.get("cte_map") or {}).get("map")
    )
    if not plain:
        raise UsageError("--where takes one condition on checkpoints rows, not a query of its own "
                         f"(UNION, ORDER BY, LIMIT, GROUP BY ... are not allowed); {WHERE_EXAMPLE}")
    return where


def nothing_selected(where: str | None) -> NothingDone:
    """The error of a run whose --where matched no checkpoint (exit 4: nothing done)."""
    if where is None or where.strip().lower() == "true":
        return NothingDone("the catalog has no checkpoints yet; run `hubindex crawl` first")
    return NothingDone(f"no checkpoint matches --where {where!r}")


def matching_checkpoints(index: Index, where: str, snapshot_fallback: bool = False) -> list[str]:
    """The ids of the checkpoints matching a user's --where condition, read-only, in id order.

    A condition that does not parse, or parses but names a column, type or function the
    checkpoints table cannot have, is a UsageError quoting the condition as the user typed it.
    """
    try:
        result = run_readonly_query(
            index.catalog_path,
            f"SELECT checkpoint_id FROM checkpoints WHERE\n{checked_condition(where)}\nORDER BY checkpoint_id",
            row_cap=MAX_SELECTED, snapshot_fallback=snapshot_fallback,
        )
    except QueryTimeout as exc:
        raise QueryTimeout(exc.limit_s, "the --where condition is too slow: simplify it") from None
    except QueryError as exc:
        if not str(exc).startswith(("Binder Error", "Conversion Error", "Catalog Error")):
            raise
        raise UsageError(f"--where {where!r} cannot run: {exc}; the columns: "
                         "`hubindex sql \"DESCRIBE checkpoints\"`") from None
    return [row[0] for row in result.rows]


def select_checkpoints(index: Index, where: str | None = None, checkpoint_ids: Sequence[str] = ()) -> list[str]:
    """Checkpoint ids named on the command line, or those matching a read-only SQL condition.

    The condition runs as `SELECT checkpoint_id FROM checkpoints WHERE (<condition>)` through the
    read-only query path (read-only file, single SELECT, no external access, timeout).
    """
    if where is not None and checkpoint_ids:
        raise UsageError("give either --where CONDITION or checkpoint ids, not both")
    if where is None and not checkpoint_ids:
        raise UsageError("say which checkpoints to probe: checkpoint ids, or --where CONDITION (--where true for all)")
    if where is not None:
        return matching_checkpoints(index, where)
    ids = list(dict.fromkeys(checkpoint_ids))
    with index.open_catalog(read_only=True) as catalog:
        known = {row["checkpoint_id"] for row in catalog.checkpoint_rows(ids)}
    missing = [cid for cid in ids if cid not in known]
    if missing:
        raise UsageError(f"not in the catalog: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return ids


# ------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class ProbeWork:
    """One checkpoint to probe: everything a worker needs, picklable (the corpus is shared)."""

    probe: Probe
    checkpoint: dict[str, Any]
    sha: str
    dtype: str = FLOAT32


@dataclass
class ProbeResult:
    """What a worker sends back: the feature matrix (NaN rows = dropped items), or why there is none."""

    features: np.ndarray | None
    seconds: float = 0.0
    failure_kind: str = ""
    failure_message: str = ""


def _failed(kind: str, message: str, seconds: float = 0.0) -> ProbeResult:
    return ProbeResult(None, seconds, kind, message)


def probe_checkpoint(work: ProbeWork, corpora: dict[str, CorpusData]) -> ProbeResult:
    """The compute step: load the checkpoint, embed the corpus of its probe's modality, check the rows."""
    probe = work.probe
    corpus = corpora[probe.modality]
    started = time.monotonic()
    try:
        output = probe.embed(work.checkpoint, corpus)
    except ProbeError as exc:
        return _failed(exc.kind, f"{probe.name} on {corpus.name}: {exc}")
    except MemoryError as exc:
        return _failed("out-of-memory", f"{probe.name} on {corpus.name}: {exc or 'MemoryError'}")
    except Exception as exc:  # a plugin's bug must not end the run for every other checkpoint
        return _failed("probe-error", f"{probe.name} on {corpus.name}: {type(exc).__name__}: {exc}")
    seconds = time.monotonic() - started

    features = np.asarray(output.features, dtype=np.float32)
    dropped = np.asarray(output.dropped, dtype=bool)
    if features.ndim != 2 or features.shape[0] != corpus.size or dropped.shape != (corpus.size,):
        return _failed("probe-error",
                       f"{probe.name} returned features of shape {features.shape} for {corpus.size} items")
    bad = int((~np.isfinite(features[~dropped]).all(axis=1)).sum())
    if bad:
        return _failed("non-finite",
                       f"{probe.name} on {corpus.name}: {bad} of {int((~dropped).sum())} feature rows hold NaN or inf")
    if dropped.all():
        return _failed("no-features", f"{probe.name} on {corpus.name}: every item was dropped")
    features = features.copy()
    features[dropped] = np.nan
    return ProbeResult(features, seconds)


# What planning a checkpoint can end in besides work to do.
SETTLED = "settled"  # reused, or recorded as failed: nothing to run
DEFERRED = "deferred"  # another checkpoint of this run has the same weights: plan it again after that one


def plan_in_rounds(
    rows: list[dict[str, Any]],
    claimed: set[Any],
    summary: Any,
    bar: Any,
    pick: Callable[[dict[str, Any]], Probe | str | None],
    plan: Callable[[Probe, dict[str, Any]], Any],
    compute: Callable[[list[Any]], None],
) -> None:
    """Plan every row and hand the planned work to the executor; rows DEFERRED behind a twin wait a round.

    `pick` gives a row's probe, None when only probes of another modality take it, or SETTLED when
    it recorded why no probe does.
    """
    todo = rows
    while todo:  # a second round only for checkpoints that share weights with one of the first
        claimed.clear()
        work, deferred = [], []
        for row in todo:
            probe = pick(row)
            if probe is None or probe == SETTLED:
                summary.no_probe += probe is None
                bar.update(1)
                continue
            planned = plan(probe, row)
            if planned == DEFERRED:
                deferred.append(row)
            elif planned == SETTLED:
                bar.update(1)
            else:
                work.append(planned)
        if work:
            compute(work)
        todo = deferred


class _Run:
    """Plans what to probe, and stores and commits each finished checkpoint at once."""

    def __init__(self, catalog: Catalog, store: EmbeddingStore, summary: ProbeSummary, limit: SizeLimit) -> None:
        self.catalog = catalog
        self.store = store
        self.summary = summary
        self.limit = limit
        self.claimed: set[str] = set()  # embedding keys this round computes

    def fail(self, subject: str, kind: str, message: str) -> None:
        record_run_failure(self.catalog, STAGE, self.summary.failures, subject, kind, message)

    def pick(self, instances: list[Probe], checkpoint: dict[str, Any], modality: str | None) -> Probe | str | None:
        """The checkpoint's probe; None if only probes of another modality take it; SETTLED if none
        does (recorded as an `unsupported` failure, with the reason)."""
        probe = pick_probe(instances, checkpoint, modality)
        if probe is not None:
            return probe
        reason = unsupported_reason(instances, checkpoint)
        if reason is None:
            return None
        self.fail(checkpoint["checkpoint_id"], "unsupported", reason)
        return SETTLED

    def plan(self, probe: Probe, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeWork | str:
        """The work to do for a checkpoint, SETTLED (reused, failed) or DEFERRED (its twin runs first)."""
        checkpoint_id = checkpoint["checkpoint_id"]
        sha = probe.revision(checkpoint)
        if not sha:
            self.fail(checkpoint_id, "no-revision", "the catalog has no sha for this checkpoint; crawl it again")
            return SETTLED
        dtype = probe.dtype_for(checkpoint)
        too_large = self.limit.refusal(checkpoint, dtype)
        if too_large:
            self.fail(checkpoint_id, "too-large", too_large)
            return SETTLED
        stored = self.catalog.embedding(sha, corpus.content_hash, probe.layer, probe.pooling, checkpoint_id, dtype)
        if (
            stored is not None
            and stored["n_items"] == corpus.size
            and self.store.is_valid(stored["path"], stored["file_sha256"])
        ):
            with self.catalog.transaction():
                if stored["checkpoint_id"] != checkpoint_id:  # same files under another id: share them
                    self.catalog.register_embedding({**stored, "checkpoint_id": checkpoint_id, "created_at": utcnow()})
                self.catalog.resolve_failures(STAGE, [checkpoint_id])
            self.summary.reused += 1
            return SETTLED
        key = embedding_key(sha, corpus.content_hash, probe.layer, probe.pooling, dtype)
        if key in self.claimed:
            return DEFERRED
        self.claimed.add(key)
        return ProbeWork(probe, checkpoint, sha, dtype)

    def commit(self, work: ProbeWork, result: ProbeResult, corpus: CorpusData) -> None:
        """Store a worker's features, then register them in one transaction (or record its failure)."""
        checkpoint_id = work.checkpoint["checkpoint_id"]
        if result.features is None:
            self.fail(checkpoint_id, result.failure_kind, result.failure_message)
            return
        probe = work.probe
        key = embedding_key(work.sha, corpus.content_hash, probe.layer, probe.pooling, work.dtype)
        matrix = self.store.write(key, result.features)  # in place (atomically) before the catalog names it
        with self.catalog.transaction():
            self.catalog.register_embedding({
                "checkpoint_id": checkpoint_id, "checkpoint_sha": work.sha,
                "corpus": corpus.name, "corpus_hash": corpus.content_hash,
                "layer": probe.layer, "pooling": probe.pooling, "dtype": work.dtype,
                "probe": probe.name, "probe_version": probe.version,
                "n_items": matrix.n_items, "n_kept": matrix.n_kept, "dim": matrix.dim,
                "path": matrix.path, "file_sha256": matrix.sha256,
                "seconds": result.seconds, "created_at": utcnow(),
            })
            self.catalog.resolve_failures(STAGE, [checkpoint_id])
        self.summary.probed += 1

    def compute(self, executor: Executor, work: list[ProbeWork], resources: TaskResources,
                corpora: dict[str, CorpusData], bar: tqdm) -> None:
        """Run the work on the executor; commit each checkpoint as it finishes."""
        finished = executor.map(probe_checkpoint, work, resources, shared=corpora)
        with closing(finished):  # an interrupt stops what the executor still runs
            for done in finished:
                item = done.item
                corpus = corpora[item.probe.modality]
                result = done.result if done.error is None else _failed(
                    done.error_kind, f"{item.probe.name} on {corpus.name}: {done.error}")
                self.commit(item, result, corpus)
                bar.set_postfix_str(item.checkpoint["checkpoint_id"][-40:], refresh=False)
                bar.update(1)


def pick_probe(instances: list[Probe], checkpoint: dict[str, Any], modality: str | None) -> Probe | None:
    """The first installed probe (of the corpus' modality, if one is named) that accepts the checkpoint."""
    for probe in instances:
        if (modality is None or probe.modality == modality) and probe.accepts(checkpoint):
            return probe
    return None


def unsupported_reason(instances: list[Probe], checkpoint: dict[str, Any]) -> str | None:
    """Why no installed probe, of any modality, takes the checkpoint; None when one does."""
    if any(probe.accepts(checkpoint) for probe in instances):
        return None
    said = next((reason for probe in instances if (reason := probe.why_not(checkpoint))), "")
    facts = ", ".join(
        f"{column} {checkpoint.get(column)!r}" for column in ("library_name", "model_type", "architectures", "pipeline_tag")
        if checkpoint.get(column)
    )
    probes_named = ", ".join(probe.name for probe in instances) or "none"
    return f"no installed probe takes it ({said or 'no probe recognises it'}; {facts or 'no metadata'}); probes: {probes_named}"


# Bytes per parameter in each precision a probe runs in.
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
# Share of the memory at hand that a checkpoint's weights may take (activations need the rest).
MEMORY_SHARE = 0.6


def memory_at_hand(device: str) -> int:
    """Bytes a model may use: the GPU's memory on CUDA, else the memory available now."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return available_memory_bytes()


@dataclass(frozen=True)
class SizeLimit:
    """Checkpoints too large to probe: over max_params, or (by default) weights over a share of memory."""

    max_params: int | None = None
    memory_bytes: int | None = None

    @classmethod
    def for_device(cls, device: str, max_params: int | None = None) -> SizeLimit:
        """--max-params when given, else what MEMORY_SHARE of the device's memory holds."""
        return cls(max_params=max_params, memory_bytes=None if max_params else memory_at_hand(device))

    def refusal(self, checkpoint: dict[str, Any], dtype: str) -> str:
        """Why the checkpoint is too large to load ('' if it is not, or its size is unknown)."""
        params = checkpoint.get("params_total")
        if not isinstance(params, int) or params <= 0:
            return ""
        if self.max_params is not None and params > self.max_params:
            return f"{params:,} parameters, over the limit of {self.max_params:,} (--max-params)"
        weights = params * BYTES_PER_PARAM.get(dtype, 4)
        if self.memory_bytes is not None and weights > MEMORY_SHARE * self.memory_bytes:
            return (f"{params:,} parameters need {weights / 2**30:.1f} GiB in {dtype}, over "
                    f"{MEMORY_SHARE:.0%} of the {self.memory_bytes / 2**30:.1f} GiB of memory at hand "
                    "(probe it on a larger machine, or raise the limit with --max-params)")
        return ""


def probe_resources(device: str) -> TaskResources:
    """What one checkpoint's probe task takes: a GPU on CUDA, else a CPU."""
    return TaskResources(cpus=1, gpus=1 if device == "cuda" else 0)


def run_probe(
    index: Index,
    checkpoint_ids: Sequence[str],
    corpus: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    max_items: int | None = None,
    show_progress: bool | None = None,
    executor: Executor | None = None,
    max_params: int | None = None,
) -> ProbeSummary:
    """Probe the checkpoints on the named corpus (or each probe's default corpus) into the store.

    The driver plans (what is stored already) and commits; `executor` (default: in-process) runs
    the models. Checkpoints over `max_params` parameters (default: whatever would not fit in
    memory) are recorded as `too-large` and not loaded.
    """
    started = time.monotonic()
    summary = ProbeSummary()
    named = make_corpus(corpus, max_items) if corpus else None
    executor = executor if executor is not None else local_executor()
    device = resolve_device(device, executor)
    instances = [r.component(device=device, batch_size=batch_size) for r in probes().values()]
    loaded: dict[str, CorpusData] = {}

    def corpus_for(modality: str) -> CorpusData:
        if modality not in loaded:
            source = named if named is not None else default_corpus(modality, max_items)
            data = source.load()
            loaded[modality] = data
            summary.corpora.append(f"{data.name} ({data.size} items, hash {data.content_hash[:12]})")
        return loaded[modality]

    if named is not None:
        corpus_for(named.modality)  # a bad corpus (e.g. a missing folder) fails before any work
    store = EmbeddingStore(index.root)
    with index.open_catalog() as catalog:
        run = _Run(catalog, store, summary, SizeLimit.for_device(device, max_params))
        rows = catalog.checkpoint_rows(list(checkpoint_ids))
        summary.selected = len(rows)
        with tqdm(total=len(rows), desc="probe", unit=" ckpt",
                  disable=None if show_progress is None else not show_progress) as bar:
            try:
                with stop_on_signals():
                    modality = named.modality if named is not None else None
                    plan_in_rounds(
                        rows, run.claimed, summary, bar,
                        pick=lambda row: run.pick(instances, row, modality),
                        plan=lambda probe, row: run.plan(probe, row, corpus_for(probe.modality)),
                        compute=lambda work: run.compute(executor, work, probe_resources(device), loaded, bar),
                    )
            except BaseException as exc:
                if not was_interrupted(exc):
                    raise
                raise Interrupted(
                    f"probe interrupted; {summary.probed} checkpoints probed and saved. "
                    "Run the same command again to continue (finished ones are reused)."
                ) from None
    summary.seconds = time.monotonic() - started
    return summary
