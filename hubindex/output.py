"""Every command's results in one place: `--format table|csv|json|ndjson`, rendered and streamed.

Plugins' commands use it too (`output_format`, `emit_rows`, `emit_json`), so it lives outside hubindex.cli.

Exports (csv, json, ndjson) carry every row and are written as the rows arrive; only the table, which
is for reading, is capped, and it says so on stderr when it cuts.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import decimal
import functools
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from hubindex.errors import UsageError


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


FORMATS = ("table", "csv", "json", "ndjson")
# Rows a table shows unless told otherwise; exports are never cut.
TABLE_ROWS = 1000


def output_format(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--format table|csv|json|ndjson` (passed as `fmt`); `--json` stays as a hidden alias of `--format json`."""

    @functools.wraps(command)
    def wrapped(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        if as_json:
            if kwargs["fmt"] not in ("table", "json"):
                raise UsageError(f"--json and --format {kwargs['fmt']} disagree; give one of them")
            kwargs["fmt"] = "json"
        return command(*args, **kwargs)

    wrapped = click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --format json.")(wrapped)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output: an aligned table, or every row as CSV, a JSON list or JSON lines.")(wrapped)


# The same --format as a plain click.Option, for commands built at run time (each crawler's).
SUMMARY_FORMAT = click.Option(["--format", "fmt"], type=click.Choice(FORMATS), default="table", show_default=True,
                              help="Output: the summary line, or the run's summary as CSV, JSON or JSON lines.")


class RowWriter:
    """Writes rows to stdout in one format as they come; a table is collected and shown at the end."""

    def __init__(self, columns: list[str], fmt: str, table_rows: int | None = TABLE_ROWS,
                 cut_hint: str = "use --format csv|json|ndjson for every row") -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.columns, self.fmt = columns, fmt
        self.table_rows, self.cut_hint = table_rows, cut_hint
        self.count = 0
        self._table: list[list[Any]] = []
        self._out = sys.stdout
        if fmt == "csv":
            self._csv = csv.writer(self._out, lineterminator="\n")
            self._csv.writerow(columns)
        elif fmt == "json":
            self._out.write("[")

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            if self.fmt == "table":
                if self.table_rows is None or len(self._table) < self.table_rows:
                    self._table.append([_cell(v) for v in row])
            elif self.fmt == "csv":
                self._csv.writerow([_cell(v) for v in row])
            else:
                record = json.dumps(dict(zip(self.columns, map(_jsonable, row))), ensure_ascii=False,
                                    allow_nan=False)
                if self.fmt == "json":
                    record = ("\n  " if self.count == 0 else ",\n  ") + record
                else:
                    record += "\n"
                self._out.write(record)
            self.count += 1

    def close(self) -> int:
        """Finish the output; returns how many rows there were (all of them, also where a table cut)."""
        if self.fmt == "json":
            self._out.write("\n]\n" if self.count else "]\n")
        elif self.fmt == "table":
            from tabulate import tabulate

            self._out.write(tabulate(self._table, headers=self.columns, tablefmt="simple",
                                     disable_numparse=True) + "\n")
            if self.count > len(self._table):
                click.echo(f"hubindex: showing {len(self._table):,} of {self.count:,} rows; {self.cut_hint}",
                           err=True)
        self._out.flush()
        return self.count


def emit_rows(columns: list[str], rows: Iterable[Sequence[Any]], fmt: str, table_rows: int | None = None) -> int:
    """Write rows in the chosen format (a table shows every row unless table_rows says otherwise)."""
    writer = RowWriter(columns, fmt, table_rows=table_rows)
    writer.write(rows)
    return writer.close()


def emit_json(value: Any) -> None:
    """One JSON document (a card, a summary) on stdout."""
    click.echo(json.dumps(_jsonable(value), indent=2, ensure_ascii=False, allow_nan=False))


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Rows rendered as text in the chosen format (what emit_rows writes)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        emit_rows(columns, rows, fmt)
    return buffer.getvalue()


def rounded(value: Any) -> Any:
    """A float shown to 4 decimals in tables."""
    return round(value, 4) if isinstance(value, float) else value


def emit_summary(summary: Any, line: str, fmt: str) -> None:
    """A run's summary: its line in a table, else its fields (lists such as failures in JSON only)."""
    if fmt == "table":
        click.echo(line)
        return
    record = {"summary": line, **dataclasses.asdict(summary)}
    if fmt == "json":
        emit_json(record)
        return
    flat = {key: value for key, value in record.items() if not isinstance(value, (list, tuple, dict))}
    emit_rows(list(flat), [list(flat.values())], fmt)
