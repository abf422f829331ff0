"""The root `hubindex` group and the entry point that turns errors into one line and an exit code."""

from __future__ import annotations

import warnings
from typing import Any

import click
import duckdb

from hubindex import __version__
from hubindex.cli.common import HubindexGroup
from hubindex.errors import HubindexError
from hubindex.index import INDEX_ENV, Index, resolve_index_dir


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



# ------------------------------------------------------------------------------------ entry


def _one_line_warning(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> str:
    return f"hubindex: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every expected failure is one line on stderr and a non-zero exit code."""
    warnings.formatwarning = _one_line_warning  # a plugin's warning is one line too, not a source dump
    try:
        cli.main(args=argv, prog_name="hubindex", standalone_mode=False)
    except HubindexError as exc:
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
        first = " ".join(str(exc).split())[:300]
        click.echo(f"hubindex: error: the catalog could not be read ({first}); `hubindex check` says what is "
                   "damaged and `hubindex check --repair` mends what can be recomputed", err=True)
        return 1
    return 0

