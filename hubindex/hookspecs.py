"""Every hook a hubindex plugin can implement, in one place.

Built-in plugins (the `hubindex_plugins` package) and third-party plugins (entry-point group
`hubindex`) implement exactly these hooks; the core has no other way in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click
    import duckdb
    from starlette.routing import BaseRoute

    from hubindex.types import Corpus, Crawler, Executor, Metric, Probe, Query

hookspec = HookspecMarker("hubindex")
hookimpl = HookimplMarker("hubindex")


@hookspec
def register_crawlers(register: Callable[[type[Crawler]], None]) -> None:
    """Register Crawler classes that pull checkpoint metadata from a source into the catalog."""


@hookspec
def register_corpora(register: Callable[[type[Corpus]], None]) -> None:
    """Register probing corpora (unlabeled text or images that checkpoints are run on)."""


@hookspec
def register_probes(register: Callable[[type[Probe]], None]) -> None:
    """Register Probe classes that turn a checkpoint and a corpus into feature matrices."""


@hookspec
def register_metrics(register: Callable[[type[Metric]], None]) -> None:
    """Register task-aware Metric classes that score a checkpoint's features on a labeled task."""


@hookspec
def register_queries(register: Callable[[type[Query]], None]) -> None:
    """Register Query classes (search strategies) that select checkpoints from the catalog."""


@hookspec
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register Executor classes that run probing and scoring work (in-process, on a Ray cluster, ...)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands or groups to the `hubindex` command line."""


@hookspec
def register_web_pages(register: Callable[[BaseRoute], None]) -> None:
    """Register routes (Starlette `Route`s, GET only) of the `hubindex serve` web explorer."""


@hookspec
def prepare_catalog(conn: duckdb.DuckDBPyConnection) -> None:
    """Prepare every catalog connection: create views or macros that queries can use."""
