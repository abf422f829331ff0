"""Which checkpoints have stored features on a corpus: what kappa, the graph and fingerprints work on."""

from __future__ import annotations

from dataclasses import dataclass

from hubindex.catalog import Catalog
from hubindex.corpus_versions import CorpusRef

DEFAULT_LAYER = "last"


@dataclass(frozen=True)
class Probed:
    """A checkpoint's stored features on one corpus."""

    checkpoint_id: str
    sha: str
    path: str
    file_sha256: str
    n_items: int
    n_kept: int = 0
    dim: int = 0

    @property
    def complete(self) -> bool:
        """Kept every item: it takes the Gram route with every other complete checkpoint."""
        return self.n_kept == self.n_items


def probed_checkpoints(catalog: Catalog, corpus: CorpusRef) -> list[Probed]:
    """The newest stored features of each checkpoint on a corpus, ordered by checkpoint id."""
    rows = catalog.conn.execute(
        """
        SELECT checkpoint_id, checkpoint_sha, path, file_sha256, n_items, n_kept, dim FROM (
            SELECT *, row_number() OVER (PARTITION BY checkpoint_id ORDER BY created_at DESC) AS newest
            FROM embeddings WHERE corpus_hash = ? AND layer = ?
        ) WHERE newest = 1 ORDER BY checkpoint_id
        """,
        [corpus.content_hash, DEFAULT_LAYER],
    ).fetchall()
    return [Probed(*row) for row in rows]
