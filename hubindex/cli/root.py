"""The root `hubindex` group and the entry point that turns errors into one line and an exit code."""

from __future__ import annotations

import os
import warnings
from typing import Any

import click
import duckdb

from hubindex import __version__
from hubindex.cli.common import HubindexGroup
from hubindex.errors import EXIT_CODES, HubindexError
from hubindex.index import INDEX_ENV, Index, resolve_index_dir
from hubindex.interrupts import stop_requested


def _exit_codes_epilog() -> str:
    lines = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    return f"\b\nExit codes:\n{lines}"


@click.group(cls=HubindexGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_codes_epilog())
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
    ctx.obj = Index(resolve_index_dir(index_dir), may_create=False)


# ------------------------------------------------------------------------------------ entry


# Set it to see the traceback of an internal error instead of its one-line summary.
DEBUG_ENV = "HUBINDEX_DEBUG"


def _one_line_warning(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> str:
    return f"hubindex: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every failure is one line on stderr and an exit code from EXIT_CODES."""
    warnings.formatwarning = _one_line_warning  # a plugin's warning is one line too, not a source dump
    stop_requested.clear()
    try:
        code = _run(argv)
    except Exception as exc:  # a bug, not a user's mistake: still one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        if stop_requested.is_set():
            return _interrupted()
        click.echo(f"hubindex: error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                   f"set {DEBUG_ENV}=1 for the traceback and report it", err=True)
        return 1
    if code not in (0, 130) and stop_requested.is_set():
        return _interrupted()
    return code


def _interrupted() -> int:
    # Ctrl-C or SIGTERM that landed inside a library call (DuckDB, torch) comes back as that
    # library's own error: it is still an interrupt, and what was committed is kept.
    click.echo("hubindex: interrupted; finished work is saved, run the same command again to continue", err=True)
    return 130


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="hubindex", standalone_mode=False)
    except HubindexError as exc:
        if stop_requested.is_set() and exc.exit_code != 130:
            return _interrupted()
        click.echo(f"hubindex: error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())  # `hubindex` or `hubindex crawl` alone: show the help
        return 0
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
    except duckdb.Error as exc:  # a damaged catalog file: one line and the command that says more
        if stop_requested.is_set():
            return _interrupted()
        first = " ".join(str(exc).split())[:300]
        click.echo(f"hubindex: error: the catalog could not be read ({first}); `hubindex check` says what is "
                   "damaged and `hubindex check --repair` mends what can be recomputed", err=True)
        return 1
    return 0

