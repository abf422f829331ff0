"""Rendering result rows: an aligned table, CSV or JSON."""
from __future__ import annotations

import csv
import decimal
import io
import json
import math
from typing import Any


def _jsonable(value: Any) -> Any:
    """A query value as plain JSON data: nested lists/structs/maps kept, the rest as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # NaN/Infinity are not JSON
    if isinstance(value, decimal.Decimal):
        return _jsonable(float(value))  # DuckDB reads 1.5 as DECIMAL(2,1)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)  # dates, times, UUIDs, ...


def _cell(value: Any) -> Any:
    """A value for one table or CSV cell: nested values written as JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render rows as an aligned table, CSV or a JSON list of objects."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_jsonable, row))) for row in rows], indent=2,
                          ensure_ascii=False, allow_nan=False) + "\n"
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buffer.getvalue()
    from tabulate import tabulate

    return tabulate(cells, headers=columns, tablefmt="simple", disable_numparse=True) + "\n"




def rounded(value: Any) -> Any:
    """A float shown to 4 decimals in tables."""
    return round(value, 4) if isinstance(value, float) else value
