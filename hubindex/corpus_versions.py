"""Probed corpus versions, and how a command names one.

A corpus name can have several probed contents (e.g. bbc-news at its default size and at
`--max-items 1500`); kappa, neighbours and MMI are only defined within one content. A version is
named `NAME@ITEMS` (its item count), `NAME@HASHPREFIX`, or a content-hash prefix of at least 8
hex characters; a bare name stands for its version only while it has exactly one. Anything else
is a usage error that lists the versions, never a silent choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from hubindex.catalog import Catalog
from hubindex.errors import HubindexError, UsageError

# A bare hash prefix must be this long to be told from a corpus name.
HASH_PREFIX_MIN = 8
# After NAME@, a hash prefix this long is enough: the name narrows it.
NAMED_HASH_PREFIX_MIN = 4
SHOWN_HASH = 12
_HEX = re.compile(r"[0-9a-f]+")


class UnknownCorpus(UsageError):
    """No probed corpus version has that name (where several match, it is a plain UsageError)."""


@dataclass(frozen=True)
class CorpusRef:
    """One probed corpus content. Equal by (name, hash); `spec` is how a user names it."""

    name: str
    content_hash: str
    n_items: int = field(default=0, compare=False)
    spec: str = field(default="", compare=False)

    def describe(self) -> str:
        """`bbc-news@10000 (hash 1a2b3c4d5e6f)`: the line that says which version an answer is on."""
        return f"{self.spec or self.name} (hash {self.content_hash[:SHOWN_HASH]})"


@dataclass(frozen=True)
class CorpusVersion:
    """A probed (name, content) with its size and how many checkpoints have features on it."""

    name: str
    content_hash: str
    n_items: int
    checkpoints: int
    first_probed: datetime
    last_probed: datetime
    spec: str

    @property
    def ref(self) -> CorpusRef:
        return CorpusRef(self.name, self.content_hash, self.n_items, self.spec)

    def summary(self) -> str:
        return (f"{self.spec} ({self.n_items} items, hash {self.content_hash[:SHOWN_HASH]}, "
                f"{self.checkpoints} checkpoint{'s' if self.checkpoints != 1 else ''})")


def corpus_versions(catalog: Catalog) -> list[CorpusVersion]:
    """Every probed corpus version, by name, then most items first."""
    rows = catalog.conn.execute(
        "SELECT corpus, corpus_hash, max(n_items), count(DISTINCT checkpoint_id), min(created_at), max(created_at) "
        "FROM embeddings GROUP BY corpus, corpus_hash ORDER BY corpus, 3 DESC, corpus_hash"
    ).fetchall()
    sizes: dict[tuple[str, int], int] = {}
    for name, _, n_items, *_ in rows:
        sizes[(name, n_items)] = sizes.get((name, n_items), 0) + 1
    return [CorpusVersion(name, content_hash, n_items, checkpoints, first, last,
                          # Two contents of one name and size (another seed, say) are told apart by hash.
                          f"{name}@{n_items}" if sizes[(name, n_items)] == 1 else f"{name}@{content_hash[:SHOWN_HASH]}")
            for name, content_hash, n_items, checkpoints, first, last in rows]


def resolve_corpus(catalog: Catalog, corpus: str | None) -> CorpusRef:
    """The probed corpus version that `corpus` names (see the module docstring); the only one if None."""
    versions = corpus_versions(catalog)
    if not versions:
        raise HubindexError("no checkpoint has been probed yet; run `hubindex probe` first")
    if corpus is None:
        if len(versions) == 1:
            return versions[0].ref
        raise UsageError(f"{len(versions)} corpus versions are probed; choose one with --corpus: "
                         + _listing(versions))
    matches = _matching(versions, corpus.strip())
    if len(matches) == 1:
        return matches[0].ref
    if matches:
        raise UsageError(f"corpus {corpus!r} has {len(matches)} probed versions; name one: " + _listing(matches))
    raise UnknownCorpus(f"corpus {corpus!r} has not been probed; probed corpora: " + _listing(versions))


def _matching(versions: list[CorpusVersion], text: str) -> list[CorpusVersion]:
    by_name = [v for v in versions if v.name == text]
    if by_name:
        return by_name
    name, at, version = text.rpartition("@")
    if at:
        named = [v for v in versions if v.name == name]
        if version.isdigit():
            sized = [v for v in named if v.n_items == int(version)]
            if sized:
                return sized
        if len(version) >= NAMED_HASH_PREFIX_MIN and _HEX.fullmatch(version.lower()):
            return [v for v in named if v.content_hash.startswith(version.lower())]
        return []
    if len(text) >= HASH_PREFIX_MIN and _HEX.fullmatch(text.lower()):
        return [v for v in versions if v.content_hash.startswith(text.lower())]
    return []


def _listing(versions: list[CorpusVersion]) -> str:
    return ", ".join(v.summary() for v in versions)
