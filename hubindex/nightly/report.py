"""What a nightly run did: each stage's counts, and the short text report."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubindex.errors import HubindexError

if TYPE_CHECKING:
    from hubindex.nightly.config import NightlyConfig

REPORTS_DIR = "reports"


@dataclass
class StageResult:
    """What one stage did; a row of `nightly_stages`."""

    stage: str
    started_at: datetime
    status: str = "completed"  # completed | failed | skipped
    seconds: float = 0.0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)  # per source, corpus or task
    errors: list[str] = field(default_factory=list)

    def part(self, **details: Any) -> dict[str, Any]:
        self.parts.append(details)
        return details

    def error(self, what: str, exc: BaseException) -> None:
        self.status = "failed"
        self.errors.append(f"{what}: {exc}" if isinstance(exc, HubindexError) else f"{what}: {type(exc).__name__}: {exc}")

    def details(self) -> dict[str, Any]:
        return {"parts": self.parts, "errors": self.errors}


@dataclass
class NightlyReport:
    run_id: int
    status: str  # completed | failed
    summary: str
    report_path: Path
    stages: list[StageResult]
    error: str | None = None



def render_summary(run_id: int, status: str, seconds: float, config: NightlyConfig, stages: list[StageResult],
                   report_path: Path) -> str:
    """The run's short text report: one table of stages, then a line per source, corpus and task."""
    from tabulate import tabulate

    lines = [f"hubindex nightly run {run_id}: {status} in {seconds:.1f} s "
             f"(pid {os.getpid()} on {socket.gethostname()}; configuration: {config.source})", ""]
    table = [[s.stage, s.status, f"{s.seconds:.1f}", s.added, s.changed, s.unchanged, s.failed] for s in stages]
    lines += tabulate(table, headers=["stage", "status", "seconds", "added", "changed", "unchanged", "failed"],
                      disable_numparse=True).splitlines()
    lines.append("")
    for stage in stages:
        for part in stage.parts:
            lines.append(f"{stage.stage}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in part.items()))
        for error in stage.errors:
            lines.append(f"{stage.stage} error: {error}")
    lines.append(f"report: {report_path}")
    return "\n".join(lines) + "\n"
