"""Pieces the command modules share: option sets, a group that keeps the workflow order, failure lines,
and how read-only commands open the catalog."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import click

from hubindex.catalog import Catalog
from hubindex.index import Index
from hubindex.options import FiniteFloatRange

# A share strictly between 0 and 1 (e.g. of examples held out).
FRACTION = FiniteFloatRange(0.0, 1.0, min_open=True, max_open=True)


class HubindexGroup(click.Group):
    """Lists commands in the order they were added (the order of the workflow)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def print_failures(failures: list[Any], shown: int = 10) -> None:
    """The first failures of a run on stderr; the rest are in the failures table."""
    for failure in failures[:shown]:
        click.echo(f"  failed {failure.subject}: {failure.kind}: {failure.message}", err=True)
    if len(failures) > shown:
        click.echo(f"  ... {len(failures) - shown} more in the failures table", err=True)


def executor_options(command: Any) -> Any:
    """--executor, --address and --workers: where probe and score run their models."""
    command = click.option("--workers", type=click.IntRange(1, None), default=None,
                           help="Ray: checkpoints at once [default: a local instance's CPU count, or what the "
                                "cluster fits].")(command)
    command = click.option("--address", metavar="ADDR",
                           help="Ray: join this cluster (e.g. auto, ray://head:10001) instead of starting "
                                "a local instance.")(command)
    return click.option("--executor", "executor_kind", default="local", show_default=True, metavar="NAME",
                        help="Where models run: local (this process) or ray (one task per checkpoint).")(command)


def reading_catalog(index: Index) -> AbstractContextManager[Catalog]:
    """The catalog opened read-only (`hubindex.user_sql.reading_catalog`); reading the snapshot while
    another process writes is noted on stderr, with whose write and how old the snapshot is."""
    from hubindex.user_sql import reading_catalog as read_only

    return read_only(index.catalog_path, on_snapshot=lambda snapshot: note_snapshot(index, snapshot))


def note_snapshot(index: Index, snapshot: Any) -> None:
    """Say on stderr that the answer comes from the read snapshot, and why."""
    from hubindex.nightly import describe_writer

    writer = describe_writer(index.root, snapshot.writer_pid)
    click.echo(f"hubindex: the catalog is being written by {writer}; answering from its read snapshot of "
               f"{snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", err=True)
