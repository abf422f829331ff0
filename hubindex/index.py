"""Where an index lives: a folder holding the catalog (and, later, the embedding store)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hubindex.catalog import CATALOG_FILENAME, Catalog
from hubindex.errors import UsageError

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

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILENAME

    def open_catalog(self, read_only: bool = False) -> Catalog:
        return Catalog(self.catalog_path, read_only=read_only)
