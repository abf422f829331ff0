"""Commands over the catalog itself: plugins, check, sql."""
from __future__ import annotations

from pathlib import Path

import click

from hubindex.cli.common import note_snapshot
from hubindex.cli.root import cli
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.options import FiniteFloatRange
from hubindex.output import (
    FORMATS,
    TABLE_ROWS,
    RowWriter,
    emit_json,
    emit_rows,
    output_format,
)
from hubindex.plugins import REGISTRIES, describe_plugins
from hubindex.user_sql import DEFAULT_TIMEOUT_S, open_readonly_query

# ------------------------------------------------------------------------------------ plugins


@cli.command("plugins")
@output_format
def plugins_command(fmt: str) -> None:
    """List installed plugins, the hooks they implement and what they register."""
    described = describe_plugins()
    if fmt == "json":
        emit_json(described)
        return
    rows = []
    for entry in described:
        registers = "; ".join(f"{k}: {', '.join(entry[k])}" for k in REGISTRIES if k in entry)
        rows.append([entry["name"], "built-in" if entry["builtin"] else "third-party",
                     ", ".join(entry["hooks"]), registers])
    emit_rows(["plugin", "kind", "hooks", "registers"], rows, fmt)


# ------------------------------------------------------------------------------------ check


@cli.command("check")
@click.option("--repair", is_flag=True,
              help="Remove what can be recomputed: rows whose stored files are missing or changed, orphan "
                   "files and rows; replace an unreadable catalog by its readable snapshot.")
@output_format
@click.pass_obj
def check_command(index: Index, repair: bool, fmt: str) -> None:
    """Verify the index: catalog integrity, stored files and their hashes, orphans, migrations.

    \b
    One line per problem on stdout; exit 0 when the index is sound (or --repair mended every
    problem), 1 otherwise. Checks read the whole catalog and hash every stored file, which takes
    a while on a large index.

    \b
    Examples:
      hubindex check
      hubindex --index /data/hub check --repair
    """
    from hubindex.check import check_index

    report = check_index(index, repair=repair)
    if fmt == "table":
        for problem in report.problems:
            click.echo(f"problem: {problem.line()}")
        for done in report.repaired:
            click.echo(f"repaired: {done}")
    else:
        rows = [["problem", p.thing, p.message, p.repair is not None] for p in report.problems]
        rows += [["repaired", done, "", True] for done in report.repaired]
        emit_rows(["kind", "thing", "message", "recomputable"], rows, fmt)
    checked = ", ".join(f"{count:,} {what}" for what, count in report.checked.items())
    left = report.unrepaired
    if left:
        raise HubindexError(f"{len(left)} problem(s) in {index.root}" + (f" (checked {checked})" if checked else "")
                            + ("; `hubindex check --repair` removes what can be recomputed"
                               if not repair and any(p.repair for p in left) else ""))
    click.echo(f"index {index.root} is sound: checked {checked}" if not report.problems else
               f"index {index.root} repaired: {len(report.repaired)} repair(s)", err=fmt != "table")


# ------------------------------------------------------------------------------------ sql


@cli.command("sql")
@click.argument("query")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="Named parameter, used in the query as $NAME (repeatable).")
@click.option("--format", "fmt", type=click.Choice([*FORMATS, "parquet"]), default="table", show_default=True,
              help="Output: an aligned table (first --max-rows rows), or every row as CSV, a JSON list, JSON "
                   "lines, or a Parquet file (with --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.parquet",
              help="File that --format parquet writes (its folder must exist).")
@click.option("--max-rows", type=click.IntRange(1, None), default=None,
              help=f"At most this many rows [default: {TABLE_ROWS} in a table, all in an export].")
@click.option("--timeout", type=FiniteFloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Stop the query (reading its rows included) after this many seconds.")
@click.pass_obj
def sql_command(index: Index, query: str, params: tuple[tuple[str, str], ...], fmt: str, out: Path | None,
                max_rows: int | None, timeout: float) -> None:
    """Run a read-only SQL query on the catalog.

    \b
    Tables are listed by `hubindex sql "SHOW TABLES"`; the SQL guide in docs/ describes each.
    Writes, ATTACH, COPY, file readers and INSTALL/LOAD are refused. While another process
    writes the catalog, the query reads its last published snapshot (and says so on stderr).

    \b
    Examples:
      hubindex sql "SELECT checkpoint_id, in1k_top1 FROM checkpoints
                    WHERE params_total < \\$max ORDER BY in1k_top1 DESC LIMIT 5" -p max 30000000
      hubindex sql "SELECT * FROM kappa" --format parquet --out kappa.parquet
    """
    if (fmt == "parquet") != (out is not None):
        raise UsageError("--format parquet writes a file: give --out FILE.parquet" if out is None
                         else "--out is for --format parquet; other formats go to stdout (redirect them)")
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    if fmt == "parquet" and max_rows is not None:
        query = f"SELECT * FROM ({query}) LIMIT {max_rows}"
    with open_readonly_query(index.catalog_path, query, dict(params), timeout_s=timeout,
                             snapshot_fallback=True) as stream:
        if stream.snapshot is not None:
            note_snapshot(index, stream.snapshot)
        if fmt == "parquet":
            count = stream.write_parquet(out)
            click.echo(f"wrote {count:,} rows to {out}", err=True)
            return
        limit = max_rows if max_rows is not None else (TABLE_ROWS if fmt == "table" else None)
        rows = RowWriter(stream.columns, fmt, table_rows=None, cut_hint="")
        for batch in stream.batches():
            if limit is not None and rows.count + len(batch) > limit:
                rows.write(batch[: limit - rows.count])
                rows.close()
                click.echo(f"hubindex: showing the first {limit:,} rows; "
                           + ("--format csv|json|ndjson gives every row" if max_rows is None
                              else "raise --max-rows for more"), err=True)
                return
            rows.write(batch)
        rows.close()
