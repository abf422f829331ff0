"""Orchestration: run a crawler into the catalog in small committed batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from tqdm.auto import tqdm

from hubindex.catalog import Catalog
from hubindex.errors import HubindexError, Interrupted
from hubindex.index import Index
from hubindex.interrupts import stop_on_signals, was_interrupted
from hubindex.lineage import record_edge_sets
from hubindex.types import CheckpointRecord, Crawler, CrawlFailure

# A batch is committed when it holds this many records or is this old, whichever comes first:
# a crash loses at most one batch of work, and the next run redoes only that.
BATCH_RECORDS = 200
BATCH_SECONDS = 10.0


@dataclass
class CatalogCrawlContext:
    """The CrawlContext a crawl run hands its crawler: the run's bookkeeping and reads of the catalog."""

    catalog: Catalog
    run_id: int
    resumed_from: int | None
    previous_watermark: datetime | None
    progress: Any

    def stored(self, column: str, id_prefix: str) -> dict[str, Any]:
        return self.catalog.stored_values(column, "starts_with(checkpoint_id, ?)", [id_prefix])

    def stored_values(self, column: str, condition: str, params: Sequence[Any] = ()) -> dict[str, Any]:
        return self.catalog.stored_values(column, condition, list(params))


@dataclass
class CrawlSummary:
    run_id: int
    crawler: str
    status: str
    seen: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    fetched: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None
    error: str | None = None
    failures: list[CrawlFailure] = field(default_factory=list)

    def line(self) -> str:
        resumed = f" (resumed run {self.resumed_from})" if self.resumed_from else ""
        return (
            f"crawl {self.crawler} run {self.run_id}{resumed}: {self.status}; {self.seen} seen, "
            f"{self.added} added, {self.changed} changed, {self.unchanged} unchanged, "
            f"{self.failed} failed, {self.fetched} metadata fetches in {self.seconds:.1f} s"
        )


class _Batcher:
    """Collects crawl events and commits them, with the run's counters, in one transaction."""

    def __init__(self, catalog: Catalog, crawler: Crawler, summary: CrawlSummary) -> None:
        self.catalog = catalog
        self.crawler = crawler
        self.summary = summary
        self.records: list[CheckpointRecord] = []
        self.failures: list[CrawlFailure] = []
        self.started = time.monotonic()

    def add(self, event: CheckpointRecord | CrawlFailure) -> None:
        if isinstance(event, CheckpointRecord):
            self.records.append(event)
        elif isinstance(event, CrawlFailure):
            self.failures.append(event)
        else:
            raise TypeError(f"crawler {self.crawler.name!r} yielded {type(event).__name__}")
        if len(self.records) + len(self.failures) >= BATCH_RECORDS or (
            time.monotonic() - self.started > BATCH_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if not self.records and not self.failures:
            return
        run_id = self.summary.run_id
        with self.catalog.transaction():
            # One statement for the whole batch, whatever mix of columns its records carry.
            result = self.catalog.upsert_checkpoints(
                self.records, source=self.crawler.name, owned_columns=self.crawler.owned_columns
            )
            self.failures += [CrawlFailure(cid, "bad-metadata", why) for cid, why in result.rejected]
            rejected = {cid for cid, _ in result.rejected}
            # The edges a record states go with its row: the same transaction, and not without it.
            record_edge_sets(self.catalog, {r.checkpoint_id: r.edges for r in self.records
                                            if r.edges is not None and r.checkpoint_id not in rejected})
            for failure in self.failures:
                self.catalog.record_failure(run_id, "crawl", failure.subject, failure.kind, failure.message)
            failed_subjects = {f.subject for f in self.failures}
            self.catalog.resolve_failures(
                "crawl", [r.checkpoint_id for r in self.records if r.checkpoint_id not in failed_subjects]
            )
            counts = dict(
                seen=len({r.checkpoint_id for r in self.records} | failed_subjects),
                added=len(result.added),
                changed=len(result.changed),
                unchanged=len(result.unchanged),
                failed=len(self.failures),
                fetched=sum(r.fetched for r in self.records),
            )
            self.catalog.add_run_counts(run_id, **counts)
            modified = [r.columns.get("last_modified") for r in self.records]
            self.catalog.set_watermark(run_id, max((m for m in modified if m is not None), default=None))
        for name, value in counts.items():
            setattr(self.summary, name, getattr(self.summary, name) + value)
        self.summary.failures.extend(self.failures)
        self.records, self.failures = [], []
        self.started = time.monotonic()


def run_crawl(index: Index, crawler: Crawler, show_progress: bool | None = None) -> CrawlSummary:
    """Run one crawler to completion; an interrupted or failed run is resumed by the next one."""
    started = time.monotonic()
    crawler.validate()  # bad options fail before a run is recorded
    with index.open_catalog() as catalog:
        query_key = crawler.query_key()
        watermark = catalog.last_completed_watermark(query_key)
        run_id, resumed_from = catalog.start_crawl_run(
            crawler.name, crawler.version, crawler.options, query_key
        )
        summary = CrawlSummary(run_id=run_id, crawler=crawler.name, status="running", resumed_from=resumed_from)
        batcher = _Batcher(catalog, crawler, summary)
        # disable=None: a bar on a terminal, silence in logs and pipes.
        with tqdm(
            desc=f"crawl {crawler.name}", unit=" ckpt", disable=None if show_progress is None else not show_progress
        ) as bar:
            ctx = CatalogCrawlContext(catalog, run_id, resumed_from, watermark, bar)
            try:
                with stop_on_signals():
                    for event in crawler.crawl(ctx):
                        batcher.add(event)
                        bar.update(1)
                    batcher.flush()
            except BaseException as exc:
                if not was_interrupted(exc):
                    _close_run(catalog, batcher, summary, "failed", _failure_text(exc))
                    raise
                _close_run(catalog, batcher, summary, "interrupted", "interrupted by the user")
                raise Interrupted(
                    f"crawl interrupted; {summary.seen} checkpoints are saved. "
                    "Run the same command again to resume."
                ) from None
        summary.status = "completed"
        catalog.finish_crawl_run(run_id, "completed")
    summary.seconds = time.monotonic() - started
    return summary


def _close_run(catalog: Catalog, batcher: _Batcher, summary: CrawlSummary, status: str, error: str) -> None:
    """Keep what was crawled before the failure, then mark the run so the next one resumes it."""
    try:
        batcher.flush()
    finally:
        summary.status = status
        summary.error = error
        catalog.finish_crawl_run(summary.run_id, status, error)


def _failure_text(exc: BaseException) -> str:
    """What a failed crawl run records: a hubindex error's own message, else the exception's type too."""
    return str(exc) if isinstance(exc, HubindexError) else f"{type(exc).__name__}: {exc}"
