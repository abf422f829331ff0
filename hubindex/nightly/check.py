"""`hubindex nightly --check`: what would fail at 2 am, found now, each problem one line naming its TOML key.

Reading the file already checks types, ranges, unknown keys, crawlers, corpora, metrics and
executors. These checks need the index or the disk: the SQL conditions (bound by DuckDB against
the catalog's schema), the tasks named, the corpora kappa relates, and the paths crawlers read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import duckdb

from hubindex.catalog import Catalog
from hubindex.errors import CatalogBusyError, UsageError
from hubindex.index import Index
from hubindex.nightly.config import NightlyConfig
from hubindex.nightly.crawl_sources import config_key
from hubindex.plugins import corpora, crawlers

WHERE_EXAMPLE = "e.g. \"local_path IS NOT NULL AND params_total < 30e6\""


def config_problems(index: Index, config: NightlyConfig) -> list[str]:
    """Every problem of the configuration on this index, one line each, in the order of the file."""
    problems = list(_crawl_problems(config))
    with _schema_catalog(index) as catalog:
        problems += _condition_problems(catalog, "[probe] where", config.probe.where)
        problems += _kappa_problems(catalog, config)
        if config.score.where is not None:
            problems += _condition_problems(catalog, "[score] where", config.score.where)
        problems += _task_problems(catalog, config)
    return problems


def _schema_catalog(index: Index) -> Catalog:
    """The catalog read-only; without one yet (or while a run writes it), an empty one of the same schema."""
    if index.catalog_path.exists():
        try:
            return index.open_catalog(read_only=True)
        except CatalogBusyError:
            pass  # a writer holds it: its schema is this hubindex's, as in memory
    return Catalog(":memory:")


def _crawl_problems(config: NightlyConfig) -> Iterator[str]:
    for number, source in enumerate(config.crawl, 1):
        where = f"[[crawl]] #{number} ({source.source})"
        params = crawlers()[source.source].component.cli_params()
        missing = False
        for param in params:
            value = source.options.get(str(param.name))
            if not isinstance(param.type, click.Path) or value is None:
                continue
            for path in value if isinstance(value, (tuple, list)) else [value]:
                if not Path(path).expanduser().exists():
                    missing = True
                    yield f"{where} {config_key(param)}: {path} does not exist; create it or correct the path"
        if missing:
            continue  # the crawler's own check would only say the same again
        try:
            crawlers()[source.source].component(**source.options).validate()
        except UsageError as exc:
            yield f"{where}: {exc}"


def _condition_problems(catalog: Catalog, key: str, condition: str) -> Iterator[str]:
    from hubindex.probing import checked_condition

    # First the fences a run puts up (one condition, nothing smuggled), so that only a single
    # condition ever reaches the catalog connection; then, with file access off as in a run,
    # EXPLAIN binds it (columns, types, functions) without running it.
    try:
        checked_condition(condition)
    except UsageError as exc:
        yield f"{key}: {str(exc).removeprefix('--where ')}"
        return
    try:
        catalog.conn.execute("SET enable_external_access = false")
        catalog.conn.execute(f"EXPLAIN SELECT checkpoint_id FROM checkpoints WHERE\n{condition}\n")
    except duckdb.Error as exc:
        reason = " ".join(str(exc).split("\n")[0].split())
        yield f"{key}: {condition!r} is not a valid condition on the checkpoints table ({reason}); {WHERE_EXAMPLE}"


def _kappa_problems(catalog: Catalog, config: NightlyConfig) -> Iterator[str]:
    from hubindex.relate import resolve_corpus

    registered = corpora()
    for name in config.kappa.corpora or ():
        if name.partition(":")[0] in registered:
            continue
        try:
            resolve_corpus(catalog, name)  # a content hash (or its prefix) of a probed corpus
        except Exception:  # noqa: BLE001 - any refusal means the name is unknown here
            yield (f"[kappa] corpora: unknown corpus {name!r}; give a corpus name ({', '.join(sorted(registered))}) "
                   "or the content hash of a probed one")


def _task_problems(catalog: Catalog, config: NightlyConfig) -> Iterator[str]:
    from hubindex.tasks import task_rows

    known = {row["task"] for row in task_rows(catalog)}
    settings = config.score
    for name in settings.tasks or ():
        if name not in known:
            yield f"[score] tasks: {_no_task(name, known)}"
    for name in [*settings.reference_tasks, *settings.reference_tasks.values()]:
        if name not in known:
            yield f"[score] reference_tasks: {_no_task(name, known)}"
    found = {row["checkpoint_id"] for row in catalog.checkpoint_rows(list(settings.label_encoders))}
    for encoder in settings.label_encoders:
        if encoder not in found:
            yield (f"[score] label_encoders: no checkpoint {encoder!r} in the catalog; crawl it first "
                   "(a text checkpoint that embeds the class names) or remove it")


def _no_task(name: str, known: set[str]) -> str:
    registered = f"registered: {', '.join(sorted(known))}" if known else "none is registered yet"
    return f"no task named {name!r} ({registered}); add it with `hubindex task add {name} ...` or remove it"
