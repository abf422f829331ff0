"""The stages of one nightly run (crawl, probe, kappa, score) and their bookkeeping in the catalog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import CatalogBusyError, HubindexError, UsageError
from hubindex.index import Index
from hubindex.nightly.config import CorpusChoice, NightlyConfig
from hubindex.nightly.errors import first_line, raise_if_fatal
from hubindex.nightly.planning import (
    Planned,
    plan_probe,
    plan_score,
    scored_keys,
    stored_keys,
)
from hubindex.nightly.report import StageResult
from hubindex.plugins import crawlers, probes

# Checkpoints handed to one probe or score call; between calls the run may publish a snapshot.
CHUNK = 32

class PatientIndex(Index):
    """An index whose catalog opens wait (up to a limit) while another process holds the file.

    A reader such as `hubindex sql` that opens the catalog between two stages holds it for at
    most its query timeout; the run waits for it instead of failing the next stage.
    """

    def __init__(self, root: Path, busy_timeout_s: float) -> None:
        super().__init__(root)
        self.busy_timeout_s = busy_timeout_s

    def open_catalog(self, read_only: bool = False) -> Catalog:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.1
        while True:
            try:
                return super().open_catalog(read_only)
            except CatalogBusyError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class Run:
    """One nightly run: its stages, snapshots and bookkeeping."""

    def __init__(self, index: PatientIndex, config: NightlyConfig, run_id: int, log: Callable[[str], None],
                 executor: Any) -> None:
        self.index = index
        self.config = config
        self.run_id = run_id
        self.log = log
        self.executor = executor
        self.last_snapshot = time.monotonic()
        self.corpus_hashes: dict[str, str] = {}  # probe corpus spec -> content hash probed this run
        self.probe_instances = [r.component(device="cpu") for r in probes().values()]  # plans only, never run

    # ------------------------------------------------------------------ bookkeeping

    def publish(self) -> None:
        with self.index.open_catalog() as catalog:
            catalog.publish_snapshot()
        self.last_snapshot = time.monotonic()

    def publish_if_due(self) -> None:
        if time.monotonic() - self.last_snapshot >= self.config.limits.snapshot_every_minutes * 60:
            self.publish()

    def record_stage(self, result: StageResult) -> None:
        with self.index.open_catalog() as catalog:
            catalog.conn.execute(
                "INSERT OR REPLACE INTO nightly_stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [self.run_id, result.stage, result.status, result.started_at, result.seconds, result.added,
                 result.changed, result.unchanged, result.failed, json.dumps(result.details(), default=str)],
            )
            catalog.publish_snapshot()
        self.last_snapshot = time.monotonic()

    def link_failures(self, stage: str, since: datetime, revisions: Mapping[str, str | None] | None = None) -> None:
        """Name this run (and the failed revision) in the failures a stage recorded."""
        with self.index.open_catalog() as catalog, catalog.transaction():
            catalog.conn.execute(
                "UPDATE failures SET nightly_run_id = ? WHERE stage = ? AND occurred_at >= ?",
                [self.run_id, stage, since],
            )
            if revisions:
                known = {k: v for k, v in revisions.items() if v is not None}
                catalog.conn.execute(
                    "UPDATE failures SET revision = r.revision FROM "
                    "(SELECT unnest(?::VARCHAR[]) AS subject, unnest(?::VARCHAR[]) AS revision) AS r "
                    "WHERE failures.subject = r.subject AND failures.stage = ? AND failures.occurred_at >= ?",
                    [list(known), list(known.values()), stage, since],
                )

    def failed_recently(self, catalog: Catalog) -> set[tuple[str, str]]:
        """(checkpoint_id, revision) of open probe and score failures young enough not to retry."""
        since = utcnow() - timedelta(days=self.config.limits.retry_failed_after_days)
        rows = catalog.conn.execute(
            "SELECT DISTINCT subject, revision FROM failures WHERE stage IN ('probe', 'score') "
            "AND resolved_at IS NULL AND revision IS NOT NULL AND occurred_at >= ?",
            [since],
        ).fetchall()
        return {(subject, revision) for subject, revision in rows}

    def checkpoint_rows(self, where: str) -> list[dict[str, Any]]:
        from hubindex.probing import select_checkpoints

        ids = select_checkpoints(self.index, where)
        with self.index.open_catalog(read_only=True) as catalog:
            return catalog.checkpoint_rows(ids)

    # ------------------------------------------------------------------ stages

    def crawl(self, result: StageResult) -> None:
        from hubindex.pipeline import run_crawl

        if not self.config.crawl:
            result.status = "skipped"
            return
        for source in self.config.crawl:
            self.log(f"crawl {source.label()}")
            crawler = crawlers()[source.source].component(**source.options)
            try:
                summary = run_crawl(self.index, crawler, show_progress=False)
            except Exception as exc:
                raise_if_fatal(exc)
                result.error(f"crawl {source.label()}", exc)
                result.part(source=source.label(), status="failed", error=first_line(exc))
                self.log(f"crawl {source.label()} failed: {first_line(exc)}")
                continue
            self.log(summary.line())
            result.part(source=source.label(), status=summary.status, crawl_run=summary.run_id,
                        seen=summary.seen, added=summary.added, changed=summary.changed,
                        unchanged=summary.unchanged, failed=summary.failed, fetched=summary.fetched)
            result.added += summary.added
            result.changed += summary.changed
            result.unchanged += summary.unchanged
            result.failed += summary.failed
        self.link_failures("crawl", result.started_at)

    def probe(self, result: StageResult) -> None:
        from hubindex.probing import make_corpus

        settings = self.config.probe
        if not settings.corpora:
            result.status = "skipped"
            return
        rows = self.checkpoint_rows(settings.where)
        budget = settings.max_checkpoints
        for choice in settings.corpora:
            try:
                data = make_corpus(choice.name, choice.max_items).load()
            except Exception as exc:
                raise_if_fatal(exc)
                result.error(f"corpus {choice.name}", exc)
                result.part(corpus=choice.name, status="failed", error=first_line(exc))
                continue
            self.corpus_hashes[choice.name] = data.content_hash
            with self.index.open_catalog(read_only=True) as catalog:
                plan = plan_probe(catalog, rows, data, self.probe_instances, self.failed_recently(catalog))
            todo = plan.todo if budget is None else plan.todo[:budget]
            if budget is not None:
                budget -= len(todo)
            part = result.part(corpus=f"{data.name} ({data.size} items, hash {data.content_hash[:12]})",
                               candidates=len(rows), up_to_date=plan.up_to_date, to_probe=len(todo),
                               deferred=len(plan.todo) - len(todo), skipped_failed=plan.skipped_failed,
                               no_probe=plan.no_probe, probed=0, reused=0, failed=0)
            self.log(f"probe {choice.name}: {len(todo)} to probe, {plan.up_to_date} up to date, "
                     f"{plan.skipped_failed} skipped after a failure, {part['deferred']} deferred")
            result.unchanged += plan.up_to_date
            self.run_in_chunks("probe", f"probe {choice.name}", todo, result, part, ("probed", "reused", "failed"),
                               lambda chunk: self._run_probe(chunk, choice))
            with self.index.open_catalog(read_only=True) as catalog:
                stored = stored_keys(catalog, data.content_hash)
            done = [t for t in todo if (t.checkpoint_id, t.revision, t.layer, t.pooling) in stored]
            result.added += sum(not t.had_features for t in done)
            result.changed += sum(t.had_features for t in done)

    def run_in_chunks(self, stage: str, label: str, todo: list[Planned], result: StageResult,
                      part: dict[str, Any], counters: tuple[str, ...],
                      run_chunk: Callable[[list[Planned]], Any]) -> None:
        """Run the planned checkpoints CHUNK at a time, adding each summary's counters to the stage's part.

        Failures are linked to this run after every chunk; an error that is not fatal to the whole run is
        recorded and ends this stage's loop. A snapshot is published between chunks when one is due.
        """
        for chunk in chunks(todo, CHUNK):
            revisions = {t.checkpoint_id: t.revision for t in chunk}
            try:
                summary = run_chunk(chunk)
            except Exception as exc:
                raise_if_fatal(exc)
                result.error(label, exc)
                part["error"] = first_line(exc)
                self.link_failures(stage, result.started_at, revisions)
                return
            self.link_failures(stage, result.started_at, revisions)
            for key in counters:
                part[key] += getattr(summary, key)
            result.failed += summary.failed
            self.log(summary.line())
            self.publish_if_due()

    def _run_probe(self, chunk: list[Planned], choice: CorpusChoice) -> Any:
        from hubindex.probing import run_probe

        return run_probe(self.index, [t.checkpoint_id for t in chunk], choice.name,
                         device=self.config.executor.device, batch_size=self.config.probe.batch_size,
                         max_items=choice.max_items, show_progress=False, executor=self.executor)

    def kappa(self, result: StageResult) -> None:
        from hubindex.fingerprints import update_fingerprints
        from hubindex.relate import DENSE_MAX, resolve_corpus, update_kappa

        settings = self.config.kappa
        # By default, exactly the corpus contents this run's probe stage loaded. A corpus it could not
        # load falls back to its name, which resolves only while the name has one probed version.
        names = list(settings.corpora) if settings.corpora is not None else [
            self.corpus_hashes.get(c.name, c.name.partition(":")[0]) for c in self.config.probe.corpora]
        if not names:
            result.status = "skipped"
            return
        for name in names:
            try:
                with self.index.open_catalog() as catalog:
                    try:
                        ref = resolve_corpus(catalog, name)
                    except HubindexError as exc:  # nothing probed on it yet: nothing to relate
                        result.part(corpus=name, status="skipped", reason=first_line(exc))
                        continue
                    update = update_kappa(catalog, self.index.root, ref, settings.centered,
                                          dense_max=settings.dense_max or DENSE_MAX, graph=settings.graph())
                    added, kept = update_fingerprints(catalog, self.index.root, ref)
            except Exception as exc:
                raise_if_fatal(exc)
                result.error(f"kappa {name}", exc)
                result.part(corpus=name, status="failed", error=first_line(exc))
                continue
            self.log(update.line() + f"; fingerprints: {added} new, {kept} kept")
            result.part(corpus=f"{ref.name} ({ref.content_hash[:12]})", checkpoints=update.checkpoints,
                        pairs_computed=update.computed, pairs_reused=update.reused,
                        fingerprints_added=added, fingerprints_kept=kept, failed=len(update.failed))
            result.added += update.computed + added
            result.unchanged += update.reused + kept
            result.failed += len(update.failed)
        self.link_failures("kappa", result.started_at)

    def score(self, result: StageResult) -> None:
        from hubindex.tasks import task_rows

        settings = self.config.score
        with self.index.open_catalog(read_only=True) as catalog:
            tasks = {row["task"]: row for row in task_rows(catalog)}
        names = list(settings.tasks) if settings.tasks is not None else sorted(tasks)
        if not names:
            result.status = "skipped"
            return
        rows = self.checkpoint_rows(settings.where or self.config.probe.where)
        budget = settings.max_checkpoints
        for name in names:
            if name not in tasks:
                result.error(f"score {name}", UsageError(f"no task named {name!r}; add it with `hubindex task add`"))
                result.part(task=name, status="failed", error="no such task")
                continue
            with self.index.open_catalog(read_only=True) as catalog:
                plan = plan_score(catalog, rows, tasks[name], self.probe_instances, self.failed_recently(catalog))
                before = scored_keys(catalog, name)
            cheap = [t for t in plan.todo if t.had_features]
            costly = [t for t in plan.todo if not t.had_features]
            allowed = costly if budget is None else costly[:budget]
            if budget is not None:
                budget -= len(allowed)
            todo = sorted(cheap + allowed, key=lambda t: t.checkpoint_id)
            part = result.part(task=name, candidates=len(rows), to_score=len(todo), deferred=len(costly) - len(allowed),
                               skipped_failed=plan.skipped_failed, no_probe=plan.no_probe, embedded=0, computed=0,
                               current=0, not_applicable=0, failed=0)
            self.log(f"score {name}: {len(todo)} checkpoints ({len(allowed)} to embed), "
                     f"{plan.skipped_failed} skipped after a failure, {part['deferred']} deferred")
            self.run_in_chunks("score", f"score {name}", todo, result, part,
                               ("embedded", "computed", "current", "not_applicable", "failed"),
                               lambda chunk: self._run_score(name, chunk))
            result.unchanged += part["current"]
            with self.index.open_catalog(read_only=True) as catalog:
                new = scored_keys(catalog, name, since=result.started_at)
            result.added += len(new - before)
            result.changed += len(new & before)

    def _run_score(self, task: str, chunk: list[Planned]) -> Any:
        from hubindex.scoring import run_score

        settings = self.config.score
        return run_score(self.index, task, settings.metrics, checkpoint_ids=[t.checkpoint_id for t in chunk],
                         reference_task=settings.reference_tasks.get(task), device=self.config.executor.device,
                         batch_size=settings.batch_size, show_progress=False, executor=self.executor,
                         label_encoders=settings.label_encoders)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


