"""The small typed base classes that plugins implement, and the records they exchange with the core."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click
    import numpy as np

    from hubindex.pipeline import CrawlContext

PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


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

    def query_key(self) -> str:
        """Identifies 'the same crawl' across runs, so that an interrupted one can be resumed."""
        items = sorted((k, repr(v)) for k, v in self.options.items())
        return f"{self.name}:{items}"

    def crawl(self, ctx: CrawlContext) -> Iterator[CrawlEvent]:
        """Yield a CheckpointRecord per checkpoint found and a CrawlFailure per one that failed."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Probing corpora and probes


@dataclass
class Corpus(Component):
    """Unlabeled probing data: a name, a modality, the items and a content hash."""

    kind: ClassVar[str] = "corpus"
    modality: ClassVar[str] = "text"  # "text" or "image"
    items: list[Any] = field(default_factory=list)
    content_hash: str = ""


class Probe(Component):
    """Runs one checkpoint on a corpus and returns one feature row per corpus item."""

    kind: ClassVar[str] = "probe"
    modality: ClassVar[str] = "text"

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        """Whether this probe can run the checkpoint described by a catalog row."""
        raise NotImplementedError

    def embed(self, checkpoint: dict[str, Any], corpus: Corpus, device: str) -> np.ndarray:
        """Return the feature matrix (one row per corpus item, NaN rows for items dropped)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Metrics and queries


class Metric(Component):
    """A task-aware transferability score: higher is better unless `higher_is_better` is False."""

    kind: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True

    def score(self, features: np.ndarray, labels: np.ndarray, **extra: Any) -> float:
        """Score frozen features against integer labels."""
        raise NotImplementedError


class Query(Component):
    """A search strategy that selects checkpoints."""

    kind: ClassVar[str] = "query"

    def select(self, index: Any, budget: int, **options: Any) -> list[str]:
        """Return up to `budget` checkpoint ids, best first."""
        raise NotImplementedError
