"""A nightly run from start to finish: the lock, the run's record, its stages in order, and how it stops."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hubindex.catalog import utcnow
from hubindex.errors import HubindexError
from hubindex.index import Index
from hubindex.interrupts import stop_on_signals
from hubindex.nightly.config import ExecutorSettings, NightlyConfig
from hubindex.nightly.defaults import default_config
from hubindex.nightly.errors import (
    NightlyInterrupted,
    StorageError,
    fatal_error,
    first_line,
    raise_if_fatal,
)
from hubindex.nightly.lock import NightlyLock
from hubindex.nightly.report import (
    REPORTS_DIR,
    NightlyReport,
    StageResult,
    render_summary,
)
from hubindex.nightly.stages import PatientIndex, Run
from hubindex.store import STORE_DIR, atomic_write_bytes

STAGES = ("crawl", "probe", "kappa", "score")

def remove_stale_temporaries(index_root: Path) -> int:
    """Delete temporary files that a killed process left in the store and reports; return how many.

    Only called while this process holds the catalog for writing: every writer of these files
    holds it too, so none of them is being written now.
    """
    removed = 0
    for folder in (index_root / STORE_DIR, index_root / REPORTS_DIR):
        if folder.is_dir():
            for path in folder.rglob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _start(index: PatientIndex, config: NightlyConfig, config_json: str) -> tuple[int, int, int]:
    """Record a new run; return (run_id, runs marked interrupted, temporaries removed)."""
    with index.open_catalog() as catalog:
        with catalog.transaction():
            # This process holds the nightly lock, so a run still 'running' died without finishing.
            interrupted = catalog.conn.execute(
                "UPDATE nightly_runs SET status = 'interrupted', finished_at = ?, "
                "error = 'stopped before it finished (killed, or the machine went down)' "
                "WHERE status = 'running' RETURNING run_id", [utcnow()]).fetchall()
            run_id = catalog.conn.execute(
                "INSERT INTO nightly_runs (started_at, status, host, pid, config_source, config, config_sha256) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?) RETURNING run_id",
                [utcnow(), socket.gethostname(), os.getpid(), config.source, config_json,
                 hashlib.sha256(config_json.encode()).hexdigest()],
            ).fetchone()[0]
        removed = remove_stale_temporaries(index.root)
        catalog.publish_snapshot()
    return run_id, len(interrupted), removed


def _finish(index: PatientIndex, run_id: int, status: str, summary: str | None, error: str | None) -> None:
    with index.open_catalog() as catalog:
        catalog.conn.execute(
            "UPDATE nightly_runs SET status = ?, finished_at = ?, summary = ?, error = ? WHERE run_id = ?",
            [status, utcnow(), summary, error, run_id],
        )
        catalog.publish_snapshot()


def _make_executor(settings: ExecutorSettings) -> Any:
    from hubindex.executors import make_executor

    return make_executor(settings.kind, settings.address, settings.workers)


def run_nightly(index: Index, config: NightlyConfig | None = None, log: Callable[[str], None] = lambda line: None,
                overrides: Mapping[str, Any] | None = None) -> NightlyReport:
    """Run every stage once under the nightly lock; config None means the defaults derived from the index."""
    lock = NightlyLock(index.root)
    lock.acquire()
    try:
        with stop_on_signals():
            config = (config or default_config(index)).with_overrides(**(overrides or {}))
            patient = PatientIndex(index.root, config.limits.busy_timeout_seconds)
            return _run_locked(patient, config, lock, log)
    finally:
        lock.release()


def _run_locked(index: PatientIndex, config: NightlyConfig, lock: NightlyLock, log: Callable[[str], None]) -> NightlyReport:
    # A bad executor choice (Ray missing, --workers without ray) fails before a run is recorded.
    with _make_executor(config.executor) as executor:
        return _run_stages(index, config, lock, log, executor)


def _run_stages(index: PatientIndex, config: NightlyConfig, lock: NightlyLock, log: Callable[[str], None],
                executor: Any) -> NightlyReport:
    config_json = json.dumps(config.as_json(), sort_keys=True)
    try:
        run_id, interrupted, removed = _start(index, config, config_json)
    except Exception as exc:
        raise_if_fatal(exc)
        raise
    lock.name_run(run_id)
    started = time.monotonic()
    log(f"run {run_id} started (pid {os.getpid()} on {socket.gethostname()}; configuration: {config.source})")
    if interrupted:
        log(f"marked {interrupted} earlier run(s) interrupted; removed {removed} temporary file(s) they left")
    stages: list[StageResult] = []
    current = STAGES[0]
    try:
        run = Run(index, config, run_id, log, executor)
        for current in STAGES:
            stages.append(_run_stage(run, current, log))
        current = "report"
        status = "failed" if any(s.status == "failed" for s in stages) else "completed"
        error = "; ".join(e for s in stages for e in s.errors) or None
        report_path = index.root / REPORTS_DIR / f"nightly-{run_id}.txt"
        summary = render_summary(run_id, status, time.monotonic() - started, config, stages, report_path)
        atomic_write_bytes(report_path, summary.encode())
        _finish(index, run_id, status, summary, error)
    except KeyboardInterrupt:
        raise _stopped(index, run_id, current, NightlyInterrupted("interrupted")) from None
    except Exception as exc:
        fatal = fatal_error(exc)
        if fatal is not None:
            raise _stopped(index, run_id, current, fatal) from None
        _give_up(index, run_id, "failed", f"stage {current}: {first_line(exc)}")
        raise
    return NightlyReport(run_id, status, summary, report_path, stages, error)


def _run_stage(run: Run, stage: str, log: Callable[[str], None]) -> StageResult:
    """Run one stage and record it; its errors fail the stage, not the run (unless they are fatal)."""
    result = StageResult(stage, utcnow())
    started = time.monotonic()
    log(f"stage {stage}")
    try:
        getattr(run, stage)(result)
    except Exception as exc:
        raise_if_fatal(exc)
        result.error(stage, exc)
    result.seconds = time.monotonic() - started
    run.record_stage(result)
    log(f"stage {stage} {result.status} in {result.seconds:.1f} s")
    return result


def _stopped(index: PatientIndex, run_id: int, stage: str, fatal: HubindexError) -> HubindexError:
    """Record why the run stopped; return the one-line error to raise."""
    if isinstance(fatal, NightlyInterrupted):
        stopped: HubindexError = NightlyInterrupted(
            f"nightly run {run_id} interrupted in stage {stage}; the next run completes its work")
        _give_up(index, run_id, "interrupted", str(stopped))
    else:
        stopped = StorageError(f"nightly run {run_id} stopped in stage {stage}: {fatal}; free space or fix "
                               f"permissions under {index.root}, then run it again (finished work is kept)")
        _give_up(index, run_id, "failed", str(stopped))
    return stopped


def _give_up(index: PatientIndex, run_id: int, status: str, error: str) -> None:
    """Mark the run as stopped, if the catalog can still be written (a full disk may refuse even that)."""
    try:
        _finish(index, run_id, status, None, error)
    except Exception:  # noqa: BLE001 - the next run marks it interrupted instead
        pass


