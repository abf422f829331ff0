"""`[[crawl]]` tables: a registered crawler and its options, read through the crawler's own click parameters.

So a configuration takes exactly the options of `hubindex crawl SOURCE`, with the same defaults,
types and checks, and writes them back under the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from hubindex.errors import UsageError
from hubindex.plugins import crawlers, known_names


@dataclass(frozen=True)
class CrawlSource:
    """One `[[crawl]]` entry: a registered crawler and its options, as `hubindex crawl SOURCE` gives them."""

    source: str
    options: dict[str, Any]
    # What the configuration said, for labels; two sources with the same options are the same source.
    given: dict[str, Any] = field(default_factory=dict, compare=False)

    def label(self) -> str:
        said = " ".join(f"{k}={plain_value(v)}" for k, v in self.given.items())
        return f"{self.source} {said}".strip()

    def as_toml(self) -> dict[str, Any]:
        """The `[[crawl]]` table that gives these options again (unset options left out)."""
        params = crawlers()[self.source].component.cli_params()
        table: dict[str, Any] = {"source": self.source}
        for param in params:
            value = self.options.get(str(param.name))
            if value is not None and value != () and value != []:
                table[config_key(param)] = plain_value(value)
        return table



def crawl_source(where: str, entry: Any, base_dir: Path | None) -> CrawlSource:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a table, got {describe_kind(entry)}")
    source = entry.get("source")
    if not isinstance(source, str) or not source:
        raise UsageError(f"{where}: needs `source`, the crawler's name ({known_names(crawlers())})")
    given = {k: v for k, v in entry.items() if k != "source"}
    return CrawlSource(source, crawler_options(source, given, f"{where} ({source})", base_dir), given)


def config_key(param: click.Parameter) -> str:
    """The key naming a crawler option in the configuration: its long flag, '-' as '_' (or the argument's name)."""
    if isinstance(param, click.Option):
        longest = max(param.opts, key=len)
        return longest.lstrip("-").replace("-", "_")
    return str(param.name)


def crawler_options(source: str, given: Mapping[str, Any], where: str, base_dir: Path | None = None) -> dict[str, Any]:
    """The keyword arguments `hubindex crawl SOURCE ...` would give the crawler, from configuration keys.

    The values go through the crawler's own click parameters, so defaults, types and checks
    are exactly those of the command line.
    """
    registration = crawlers().get(source)
    if registration is None:
        raise UsageError(f"{where}: unknown crawl source {source!r}; available sources: {known_names(crawlers())}")
    params = registration.component.cli_params()
    by_key = {config_key(p): p for p in params}
    options: list[str] = []
    arguments: list[str] = []
    for key, value in given.items():
        param = by_key.get(key)
        if param is None:
            raise UsageError(f"{where}: unknown key {key!r}; expected one of: {', '.join(sorted(by_key)) or 'none'}")
        values = value if isinstance(value, list) and param.multiple else [value]
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            many = "a value or a list of values" if param.multiple else "a single value"
            raise UsageError(f"{where} {key}: expected {many}, got {describe_kind(value)}")
        if isinstance(param.type, click.Path) and base_dir is not None:
            values = [str(base_dir / Path(str(v)).expanduser()) for v in values]
        if isinstance(param, click.Argument):
            arguments += [str(v) for v in values]
        elif isinstance(param, click.Option) and param.is_flag:
            if value is not True and value is not False:
                raise UsageError(f"{where} {key}: expected true or false, got {describe_kind(value)}")
            if value:
                options.append(max(param.opts, key=len))
        else:
            flag = max(param.opts, key=len)
            options += [f"{flag}={str(v).lower() if isinstance(v, bool) else v}" for v in values]
    command = click.Command(source, params=params)
    try:
        context = command.make_context(source, options + (["--", *arguments] if arguments else []))
    except click.MissingParameter as exc:
        raise UsageError(f"{where}: needs `{exc.param.name if exc.param else 'a value'}`") from None
    except click.ClickException as exc:
        raise UsageError(f"{where}: {exc.format_message()}") from None
    return dict(context.params)


def plain_value(value: Any) -> Any:
    """A setting value as JSON-friendly data (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [plain_value(v) for v in value]
    return value


def describe_kind(value: Any) -> str:
    """A TOML value in words, for "got ..." in error messages."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
