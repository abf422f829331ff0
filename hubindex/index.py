"""Where an index lives: a folder holding the catalog (and, later, the embedding store)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hubindex.catalog import CATALOG_FILENAME, Catalog

INDEX_ENV = "HUBINDEX_INDEX"
# The embedded default index of a checkout: <repo>/index_data, beside the hubindex package.
EMBEDDED_INDEX = Path(__file__).resolve().parent.parent / "index_data"
# Data shipped with the project (not generated): the timm ImageNet results tables.
SHIPPED_TIMM_RESULTS = EMBEDDED_INDEX / "timm"


def resolve_index_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """--index DIR, else $HUBINDEX_INDEX, else the embedded default index."""
    chosen = option or os.environ.get(INDEX_ENV)
    return Path(chosen).expanduser().resolve() if chosen else EMBEDDED_INDEX


@dataclass
class Index:
    """The context object passed around: the index folder and how to open its catalog."""

    root: Path

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_FILENAME

    def open_catalog(self, read_only: bool = False) -> Catalog:
        return Catalog(self.catalog_path, read_only=read_only)
