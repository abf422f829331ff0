"""The `hubindex` command line. Plugins add commands through the `register_commands` hook."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

import click

from hubindex import __version__
from hubindex.catalog import DEFAULT_ROW_CAP, DEFAULT_TIMEOUT_S, run_readonly_query
from hubindex.errors import HubindexError, UsageError
from hubindex.index import INDEX_ENV, Index, resolve_index_dir
from hubindex.plugins import crawlers, describe_plugins, pm


class HubindexGroup(click.Group):
    """Lists commands in the order they were added (the order of the workflow)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=HubindexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubindex")
@click.option(
    "--index",
    "index_dir",
    metavar="DIR",
    envvar=INDEX_ENV,
    help=f"Index folder holding catalog.duckdb [env {INDEX_ENV}; default: the embedded index_data/].",
)
@click.pass_context
def cli(ctx: click.Context, index_dir: str | None) -> None:
    """Index public model hubs and answer which checkpoints to use.

    \b
    Typical flow:
      hubindex crawl timm                  # timm registry + ImageNet results
      hubindex crawl hf --limit 500        # Hugging Face models, incrementally
      hubindex sql "SELECT checkpoint_id, in1k_top1 FROM checkpoints ORDER BY 2 DESC LIMIT 5"
    """
    ctx.obj = Index(resolve_index_dir(index_dir))


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

    keys = ("crawlers", "corpora", "probes", "metrics", "queries")
    rows = []
    for entry in described:
        registers = "; ".join(f"{k}: {', '.join(entry[k])}" for k in keys if k in entry)
        rows.append([entry["name"], "built-in" if entry["builtin"] else "third-party",
                     ", ".join(entry["hooks"]), registers])
    click.echo(tabulate(rows, headers=["plugin", "kind", "hooks", "registers"]))


# ------------------------------------------------------------------------------------ crawl


class CrawlGroup(HubindexGroup):
    """One subcommand per registered crawler, built from the crawler's own CLI parameters."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(crawlers())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        registration = crawlers().get(name)
        if registration is None:
            return None
        crawler_cls = registration.component

        @click.pass_obj
        def run(index: Index, **options: Any) -> None:
            from hubindex.pipeline import run_crawl

            summary = run_crawl(index, crawler_cls(**options))
            click.echo(summary.line())
            for failure in summary.failures[:10]:
                click.echo(f"  failed {failure.subject}: {failure.kind}: {failure.message}", err=True)
            if len(summary.failures) > 10:
                click.echo(f"  ... {len(summary.failures) - 10} more in the failures table", err=True)

        return click.Command(
            name,
            callback=run,
            params=crawler_cls.cli_params(),
            help=crawler_cls.__doc__,
            short_help=crawler_cls.description,
        )

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if not name.startswith("-") and self.get_command(ctx, name) is None:
            known = ", ".join(self.list_commands(ctx)) or "none installed"
            raise UsageError(f"unknown crawl source {name!r}; available sources: {known}")
        return super().resolve_command(ctx, args)


@cli.group("crawl", cls=CrawlGroup)
def crawl_group() -> None:
    """Pull checkpoint metadata from a source into the catalog (incremental, resumable)."""


# ------------------------------------------------------------------------------------ sql


@cli.command("sql")
@click.argument("query")
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="Named parameter, used in the query as $NAME (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=DEFAULT_ROW_CAP, show_default=True,
              help="Return at most this many rows.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=DEFAULT_TIMEOUT_S, show_default=True,
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
    result = run_readonly_query(index.catalog_path, query, dict(params), row_cap=max_rows, timeout_s=timeout)
    click.echo(format_rows(result.columns, result.rows, fmt), nl=False)
    if result.truncated:
        click.echo(f"hubindex: showing the first {max_rows} rows; raise --max-rows for more", err=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render rows as an aligned table, CSV or a JSON list of objects."""
    if fmt == "json":
        return json.dumps([dict(zip(columns, map(_jsonable, row))) for row in rows], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([json.dumps(_jsonable(v)) if isinstance(v, (list, dict)) else v for v in row]
                         for row in rows)
        return buffer.getvalue()
    from tabulate import tabulate

    return tabulate(rows, headers=columns, tablefmt="simple", disable_numparse=True) + "\n"


# ------------------------------------------------------------------------------------ entry


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every expected failure is one line on stderr and a non-zero exit code."""
    try:
        cli.main(args=argv, prog_name="hubindex", standalone_mode=False)
    except HubindexError as exc:
        click.echo(f"hubindex: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("hubindex: aborted", err=True)
        return 130
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"hubindex: error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except BrokenPipeError:
        return 0
    return 0


pm.hook.register_commands(cli=cli)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
