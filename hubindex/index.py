"""Where an index lives: a folder holding the catalog (and, later, the embedding store)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hubindex.catalog import CATALOG_FILENAME, Catalog
from hubindex.errors import HubindexError, UsageError

INDEX_ENV = "HUBINDEX_INDEX"
# The embedded default index of a checkout: <repo>/index_data, beside the hubindex package.
EMBEDDED_INDEX = Path(__file__).resolve().parent.parent / "index_data"
# Data shipped with the project (not generated): the timm ImageNet results tables.
SHIPPED_TIMM_RESULTS = EMBEDDED_INDEX / "timm"


def resolve_index_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """--index DIR, else $HUBINDEX_INDEX, else the embedded default index."""
    chosen = option if option is not None else os.environ.get(INDEX_ENV)
    if chosen is None:
        return EMBEDDED_INDEX
    if not str(chosen).strip():
        # `--index "$UNSET"` must not fall back to the embedded index and write there.
        raise UsageError(f"--index (or ${INDEX_ENV}) is empty; give an index folder")
    return Path(chosen).expanduser().resolve()


@dataclass
class Index:
    """The context object passed around: the index folder and how to open its catalog."""

    root: Path
    # The command line sets this False: there, only commands that start an index (crawl, zoo build,
    # nightly) make a missing folder, so a typo in --index is an error, not a new empty index.
    may_create: bool = True

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILENAME

    def open_catalog(self, read_only: bool = False) -> Catalog:
        if not read_only and not self.may_create and not self.root.is_dir():
            # A typo in --index must not start a new, empty index behind the user's back.
            raise UsageError(f"no index folder {self.root}; check --index (or ${INDEX_ENV}), or start a new index "
                             "with `hubindex crawl ...` or `hubindex zoo build`")
        if read_only:
            return Catalog(self.catalog_path, read_only=True)
        from hubindex.waiting_writers import open_past_server

        # A `hubindex serve` holding the file lets go when asked (hubindex.waiting_writers); others fail at once.
        return open_past_server(lambda: Catalog(self.catalog_path), self.root)

    def create(self) -> bool:
        """Make the index folder where it is missing (only commands that start an index do); True if made."""
        if self.root.is_dir():
            return False
        try:
            self.root.mkdir(parents=True)
        except OSError as exc:
            raise HubindexError(f"cannot create index folder {self.root}: {exc.strerror}") from None
        return True
