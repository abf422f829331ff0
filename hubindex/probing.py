"""Orchestration: run probes on checkpoints over a corpus into the embedding store, computing nothing twice.

A feature matrix is keyed by (checkpoint sha, corpus hash, layer, pooling). When the catalog's
`embeddings` table has the key and the file in the store is exactly the one registered, the
checkpoint is reused without loading its model. Otherwise the probe runs, the matrix is written
to the store (atomically) and then registered in the catalog, in one transaction per checkpoint;
an interrupted run keeps every checkpoint it finished. A checkpoint that cannot be loaded or gives
non-finite features is recorded in `failures` (stage 'probe') and the run goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from hubindex.catalog import Catalog, run_readonly_query, utcnow
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.plugins import corpora, known_names, probes
from hubindex.store import EmbeddingStore, embedding_key
from hubindex.types import Corpus, CorpusData, Probe, ProbeError

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
    no_probe: int = 0  # no installed probe accepts the checkpoint (for the corpus' modality)
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


def resolve_device(device: str) -> str:
    """auto -> cuda when a CUDA device is available, else cpu; cuda without one is an error."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
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
        if not where.strip():
            raise UsageError("--where needs a condition on checkpoints columns, e.g. \"library_name = 'timm'\"")
        if ";" in where:
            raise UsageError("--where takes one SQL condition; ';' is not allowed")
        result = run_readonly_query(
            index.catalog_path,
            f"SELECT checkpoint_id FROM checkpoints WHERE ({where}) ORDER BY checkpoint_id",
            row_cap=MAX_SELECTED,
        )
        return [row[0] for row in result.rows]
    ids = list(dict.fromkeys(checkpoint_ids))
    with index.open_catalog(read_only=True) as catalog:
        known = {row["checkpoint_id"] for row in catalog.checkpoint_rows(ids)}
    missing = [cid for cid in ids if cid not in known]
    if missing:
        raise UsageError(f"not in the catalog: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return ids


# ------------------------------------------------------------------------------------ running


class _Run:
    """Probes checkpoints one at a time; each finished one is stored and committed at once."""

    def __init__(self, catalog: Catalog, store: EmbeddingStore, summary: ProbeSummary) -> None:
        self.catalog = catalog
        self.store = store
        self.summary = summary

    def fail(self, subject: str, kind: str, message: str) -> None:
        record_run_failure(self.catalog, STAGE, self.summary.failures, subject, kind, message)

    def probe(self, probe: Probe, checkpoint: dict[str, Any], corpus: CorpusData) -> None:
        checkpoint_id = checkpoint["checkpoint_id"]
        sha = probe.revision(checkpoint)
        if not sha:
            self.fail(checkpoint_id, "no-revision", "the catalog has no sha for this checkpoint; crawl it again")
            return
        stored = self.catalog.embedding(sha, corpus.content_hash, probe.layer, probe.pooling, checkpoint_id)
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
            return

        started = time.monotonic()
        try:
            output = probe.embed(checkpoint, corpus)
        except ProbeError as exc:
            self.fail(checkpoint_id, exc.kind, f"{probe.name} on {corpus.name}: {exc}")
            return
        except MemoryError as exc:
            self.fail(checkpoint_id, "out-of-memory", f"{probe.name} on {corpus.name}: {exc}")
            return
        except Exception as exc:  # a plugin's bug must not end the run for every other checkpoint
            self.fail(checkpoint_id, "probe-error", f"{probe.name} on {corpus.name}: {type(exc).__name__}: {exc}")
            return
        seconds = time.monotonic() - started

        features = np.asarray(output.features, dtype=np.float32)
        dropped = np.asarray(output.dropped, dtype=bool)
        if features.ndim != 2 or features.shape[0] != corpus.size or dropped.shape != (corpus.size,):
            self.fail(checkpoint_id, "probe-error",
                      f"{probe.name} returned features of shape {features.shape} for {corpus.size} items")
            return
        bad = int((~np.isfinite(features[~dropped]).all(axis=1)).sum())
        if bad:
            self.fail(checkpoint_id, "non-finite",
                      f"{probe.name} on {corpus.name}: {bad} of {int((~dropped).sum())} feature rows hold NaN or inf")
            return
        if dropped.all():
            self.fail(checkpoint_id, "no-features", f"{probe.name} on {corpus.name}: every item was dropped")
            return
        features = features.copy()
        features[dropped] = np.nan

        key = embedding_key(sha, corpus.content_hash, probe.layer, probe.pooling)
        matrix = self.store.write(key, features)  # in place (atomically) before the catalog names it
        with self.catalog.transaction():
            self.catalog.register_embedding({
                "checkpoint_id": checkpoint_id, "checkpoint_sha": sha,
                "corpus": corpus.name, "corpus_hash": corpus.content_hash,
                "layer": probe.layer, "pooling": probe.pooling,
                "probe": probe.name, "probe_version": probe.version,
                "n_items": matrix.n_items, "n_kept": matrix.n_kept, "dim": matrix.dim,
                "path": matrix.path, "file_sha256": matrix.sha256,
                "seconds": seconds, "created_at": utcnow(),
            })
            self.catalog.resolve_failures(STAGE, [checkpoint_id])
        self.summary.probed += 1


def pick_probe(instances: list[Probe], checkpoint: dict[str, Any], modality: str | None) -> Probe | None:
    """The first installed probe (of the corpus' modality, if one is named) that accepts the checkpoint."""
    for probe in instances:
        if (modality is None or probe.modality == modality) and probe.accepts(checkpoint):
            return probe
    return None


def run_probe(
    index: Index,
    checkpoint_ids: Sequence[str],
    corpus: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    max_items: int | None = None,
    show_progress: bool | None = None,
) -> ProbeSummary:
    """Probe the checkpoints on the named corpus (or each probe's default corpus) into the store."""
    started = time.monotonic()
    summary = ProbeSummary()
    named = make_corpus(corpus, max_items) if corpus else None
    device = resolve_device(device)
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
        run = _Run(catalog, store, summary)
        rows = catalog.checkpoint_rows(list(checkpoint_ids))
        summary.selected = len(rows)
        with tqdm(total=len(rows), desc="probe", unit=" ckpt",
                  disable=None if show_progress is None else not show_progress) as bar:
            try:
                for row in rows:
                    bar.set_postfix_str(row["checkpoint_id"][-40:], refresh=False)
                    probe = pick_probe(instances, row, named.modality if named is not None else None)
                    if probe is None:
                        summary.no_probe += 1
                    else:
                        run.probe(probe, row, corpus_for(probe.modality))
                    bar.update(1)
            except KeyboardInterrupt:
                raise HubindexError(
                    f"probe interrupted; {summary.probed} checkpoints probed and saved. "
                    "Run the same command again to continue (finished ones are reused)."
                ) from None
    summary.seconds = time.monotonic() - started
    return summary
