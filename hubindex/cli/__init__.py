"""The `hubindex` command line. Plugins add commands through the `register_commands` hook.

Each command module adds its commands to the root group when imported; installed plugins add theirs last.
"""

from __future__ import annotations

# Importing a module adds its commands; `hubindex --help` lists them in this order, the workflow's.
# isort: off
import hubindex.cli.catalog_commands  # noqa: F401
import hubindex.cli.show_command  # noqa: F401
import hubindex.cli.lineage_command  # noqa: F401
import hubindex.cli.collect_commands  # noqa: F401
import hubindex.cli.relate_commands  # noqa: F401
import hubindex.cli.task_commands  # noqa: F401
import hubindex.cli.select_commands  # noqa: F401
import hubindex.cli.nightly_command  # noqa: F401
import hubindex.cli.serve_command  # noqa: F401
# isort: on
from hubindex.cli.collect_commands import crawl_group
from hubindex.cli.root import cli, main
from hubindex.output import format_rows
from hubindex.plugins import pm

__all__ = ["cli", "crawl_group", "format_rows", "main"]

pm.hook.register_commands(cli=cli)
