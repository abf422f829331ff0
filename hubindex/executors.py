"""Choosing an executor: where the compute step of probing and scoring runs.

A probe or score run is split in three: the driver plans (reads the catalog: what is stale, what
is reused), an executor computes (loads models, embeds, runs metrics; a pure function of a
picklable work item) and the driver commits (writes the store and the catalog). Executors are
plugins (`register_executors`); the built-ins are `local` (in-process, one checkpoint at a time)
and `ray` (one Ray task per checkpoint, on a local Ray instance or a cluster).
"""

from __future__ import annotations

from hubindex.errors import UsageError
from hubindex.plugins import executors, known_names
from hubindex.types import Executor

DEFAULT_EXECUTOR = "local"


def make_executor(kind: str = DEFAULT_EXECUTOR, address: str | None = None, workers: int | None = None) -> Executor:
    """The registered executor named `kind`, or a UsageError naming the ones there are."""
    registered = executors()
    registration = registered.get(kind)
    if registration is None:
        raise UsageError(f"unknown executor {kind!r}; available executors: {known_names(registered)}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {workers})")
    if address is not None and not address.strip():
        raise UsageError("--address is empty; give a Ray address such as ray://head:10001 or auto")
    return registration.component(address=address, workers=workers)


def local_executor() -> Executor:
    """The in-process executor that runs use when none is given."""
    return make_executor(DEFAULT_EXECUTOR)
