"""What every page needs from the server: its settings and the catalog, read-only, for one request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from hubindex.catalog import CATALOG_FILENAME
from hubindex.user_sql import DEFAULT_ROW_CAP
from hubindex.web.reader import RequestCatalog

DEFAULT_REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServeSettings:
    """What `hubindex serve` was told: the index, where it listens, and its limits."""

    index_root: Path
    host: str = "127.0.0.1"
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    sql_row_cap: int = DEFAULT_ROW_CAP
    sql_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    @property
    def catalog_path(self) -> Path:
        return self.index_root / CATALOG_FILENAME


def settings_of(request: Request) -> ServeSettings:
    return request.app.state.settings


@contextmanager
def reading(request: Request) -> Iterator[RequestCatalog]:
    """The catalog for one request, read-only, interrupted at the request time limit."""
    settings = settings_of(request)
    with request.app.state.reader.reading(settings.request_timeout_s) as catalog:
        request.state.snapshot = catalog.snapshot
        yield catalog


