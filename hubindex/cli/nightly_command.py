"""The nightly command: a full indexing pass under one lock."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hubindex.cli.root import cli
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index

if TYPE_CHECKING:
    from hubindex.nightly import NightlyConfig

# ------------------------------------------------------------------------------------ nightly


@cli.command("nightly")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="TOML configuration (see examples/nightly/nightly.toml) [default: keep current what the "
                   "index holds: repeat its crawls, probe its corpora, score its tasks, local weights only].")
@click.option("--executor", "executor_kind", metavar="local|ray", help="Where probing and scoring compute runs.")
@click.option("--address", metavar="ADDR", help="Ray cluster address for --executor ray (e.g. ray://head:10001).")
@click.option("--workers", type=click.IntRange(1, None), help="Parallel workers of the executor.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where models run [default: auto].")
@click.option("--max-checkpoints", type=click.IntRange(1, None),
              help="At most N checkpoints probed, and N embedded for scoring, this run; the rest wait.")
@click.option("--check", is_flag=True,
              help="Validate everything a run would need (SQL conditions, tasks, paths, corpora) and print the "
                   "settings as JSON under their TOML keys; run nothing. Exit 2 when a problem is found.")
@click.pass_obj
def nightly_command(index: Index, config_file: Path | None, executor_kind: str | None, address: str | None,
                    workers: int | None, device: str | None, max_checkpoints: int | None, check: bool) -> None:
    """Keep the index current: crawl -> probe -> kappa -> score -> report, safe to run every night.

    \b
    Incremental: a run after a night without changes downloads nothing and runs no model.
    One run at a time (a lock that a killed run never leaves behind); a killed run's work is
    completed by the next. Failing checkpoints are recorded and skipped. `hubindex sql` reads a
    snapshot of the catalog while a run writes it. The report goes to the nightly_runs and
    nightly_stages tables and to <index>/reports/nightly-<run_id>.txt.

    \b
    Exit codes: 0 completed; 1 a stage failed, or a full disk or a refused write stopped the run;
    2 bad configuration or arguments; 3 another nightly run holds the lock (or another process
    held the catalog too long); 130 interrupted (SIGINT, SIGTERM).

    \b
    Examples:
      hubindex nightly --config examples/nightly/nightly.toml
      hubindex nightly --config nightly.toml --executor ray --address ray://head:10001
    """
    from hubindex.nightly import default_config, load_config, run_nightly

    config = load_config(config_file) if config_file is not None else None
    overrides = dict(executor=executor_kind, address=address, workers=workers, device=device,
                     max_checkpoints=max_checkpoints)
    if check:
        _check(index, (config or default_config(index)).with_overrides(**overrides))
        return
    report = run_nightly(index, config, log=lambda line: click.echo(f"nightly: {line}", err=True),
                         overrides=overrides)
    click.echo(report.summary, nl=False)
    if report.status != "completed":
        raise HubindexError(f"nightly run {report.run_id} {report.status}: {report.error}; see {report.report_path}")


def _check(index: Index, config: NightlyConfig) -> None:
    """Print the settings, or every problem a run would meet (one `hubindex: error:` line each) and exit 2."""
    from hubindex.nightly import config_problems

    problems = config_problems(index, config)
    if not problems:
        click.echo(json.dumps(config.as_json(), indent=2))
        return
    *earlier, last = problems
    for problem in earlier:  # the last one goes out as the error the command ends with, in the same form
        click.echo(f"hubindex: error: {config.source}: {problem}", err=True)
    raise UsageError(f"{config.source}: {last}")
