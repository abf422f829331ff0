"""Commands over the catalog itself: plugins, check, sql."""
from __future__ import annotations

import json

import click

from hubindex.catalog import DEFAULT_ROW_CAP, DEFAULT_TIMEOUT_S, run_readonly_query
from hubindex.cli.output import format_rows
from hubindex.cli.root import cli
from hubindex.errors import HubindexError
from hubindex.index import Index
from hubindex.options import FiniteFloatRange
from hubindex.plugins import REGISTRIES, describe_plugins

# ------------------------------------------------------------------------------------ plugins


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins, the hooks they implement and what they register."""
    described = describe_plugins()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    from tabulate import tabulate

    rows = []
    for entry in described:
        registers = "; ".join(f"{k}: {', '.join(entry[k])}" for k in REGISTRIES if k in entry)
        rows.append([entry["name"], "built-in" if entry["builtin"] else "third-party",
                     ", ".join(entry["hooks"]), registers])
    click.echo(tabulate(rows, headers=["plugin", "kind", "hooks", "registers"]))



# ------------------------------------------------------------------------------------ check


@cli.command("check")
@click.option("--repair", is_flag=True,
              help="Remove what can be recomputed: rows whose stored files are missing or changed, orphan "
                   "files and rows; replace an unreadable catalog by its readable snapshot.")
@click.pass_obj
def check_command(index: Index, repair: bool) -> None:
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
    for problem in report.problems:
        click.echo(f"problem: {problem.line()}")
    for done in report.repaired:
        click.echo(f"repaired: {done}")
    checked = ", ".join(f"{count:,} {what}" for what, count in report.checked.items())
    left = report.unrepaired
    if left:
        raise HubindexError(f"{len(left)} problem(s) in {index.root}" + (f" (checked {checked})" if checked else "")
                            + ("; `hubindex check --repair` removes what can be recomputed"
                               if not repair and any(p.repair for p in left) else ""))
    click.echo(f"index {index.root} is sound: checked {checked}" if not report.problems else
               f"index {index.root} repaired: {len(report.repaired)} repair(s)")


# ------------------------------------------------------------------------------------ sql


@cli.command("sql")
@click.argument("query")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="Named parameter, used in the query as $NAME (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=DEFAULT_ROW_CAP, show_default=True,
              help="Return at most this many rows.")
@click.option("--timeout", type=FiniteFloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Stop the query after this many seconds.")
@click.pass_obj
def sql_command(index: Index, query: str, params: tuple[tuple[str, str], ...], fmt: str,
                max_rows: int, timeout: float) -> None:
    """Run a read-only SQL query on the catalog.

    \b
    Tables: checkpoints, crawl_runs, failures, schema_migrations (see README).
    Writes, ATTACH, COPY, file readers and INSTALL/LOAD are refused.

    \b
    Example:
      hubindex sql "SELECT checkpoint_id, in1k_top1 FROM checkpoints
                    WHERE params_total < \\$max ORDER BY in1k_top1 DESC LIMIT 5" -p max 30000000
    """
    result = run_readonly_query(index.catalog_path, query, dict(params), row_cap=max_rows, timeout_s=timeout,
                                snapshot_fallback=True)
    if result.snapshot is not None:
        from hubindex.nightly import describe_writer

        writer = describe_writer(index.root, result.snapshot.writer_pid)
        click.echo(f"hubindex: the catalog is being written by {writer}; answering from its read snapshot of "
                   f"{result.snapshot.taken_at:%Y-%m-%d %H:%M:%S} UTC", err=True)
    click.echo(format_rows(result.columns, result.rows, fmt), nl=False)
    if result.truncated:
        click.echo(f"hubindex: showing the first {max_rows} rows; raise --max-rows for more", err=True)

