"""Request parameters: every one is checked against its domain, and a value outside it is a 400
that says which parameter, what it got and what it takes. Unknown parameters are refused too, so a
misspelt filter cannot silently show everything."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from hubindex.errors import HubindexError

# Longest text a parameter may carry (a checkpoint id, a search box, a facet value), and the SQL page's query.
TEXT_MAX = 300
SQL_MAX = 20_000
JSON_SUFFIX = ".json"  # a page's JSON form: its URL with this added to the path
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadParameter(HubindexError):
    """A parameter outside its domain (HTTP 400)."""

    status = 400


class NotFound(HubindexError):
    """A checkpoint, corpus, task or run that the catalog does not hold (HTTP 404)."""

    status = 404


class Redirect(Exception):
    """The page lives at another URL (HTTP 301): a non-canonical name of a checkpoint, corpus or list."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def only(request: Request, *allowed: str) -> None:
    """Refuse query parameters this page does not take, and repeated ones."""
    for name in request.query_params.keys():
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            raise BadParameter(f"unknown parameter {name!r}; this page takes {takes}")
        if len(request.query_params.getlist(name)) > 1:
            raise BadParameter(f"parameter {name!r} is given more than once; give it once")


def text(name: str, value: str | None, max_length: int = TEXT_MAX) -> str | None:
    """A free-text parameter: at most max_length characters and no control characters; '' is None."""
    if value is None or value == "":
        return None
    if len(value) > max_length:
        raise BadParameter(f"parameter {name!r} is {len(value):,} characters long; at most {max_length:,} are taken")
    if _CONTROL.search(value) and name != "sql":
        raise BadParameter(f"parameter {name!r} holds a control character; give plain text")
    return value


def choice(name: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value not in allowed:
        raise BadParameter(f"parameter {name!r} is {value!r}; it takes one of {', '.join(allowed)}")
    return value


def integer(name: str, value: str | None, default: int, low: int, high: int) -> int:
    """A whole number in [low, high]."""
    if value is None or value == "":
        return default
    try:
        number = int(value, 10)
    except ValueError:
        raise BadParameter(f"parameter {name!r} is {value[:40]!r}; it takes a whole number from {low} to {high:,}") from None
    if not low <= number <= high:
        raise BadParameter(f"parameter {name!r} is {number:,}; it takes a whole number from {low} to {high:,}")
    return number


def strip_json_suffix(value: str) -> str:
    """A path parameter without the `.json` that asks for the JSON form."""
    return value[: -len(JSON_SUFFIX)] if value.endswith(JSON_SUFFIX) else value


def named_in_path(request: Request, key: str, kind: str, list_path: str) -> str:
    """The name in the path parameter `key` (its `.json` form too), checked by path_name; an empty
    one is the list of such things (a Redirect to list_path, keeping the JSON form)."""
    name = strip_json_suffix(request.path_params[key])
    if not name:
        raise Redirect(list_path + (JSON_SUFFIX if request.url.path.endswith(JSON_SUFFIX) else ""))
    return path_name(kind, name)


def path_name(kind: str, value: str) -> str:
    """A name taken from the URL path (a checkpoint id, corpus, task): bounded, printable."""
    if not value or len(value) > TEXT_MAX or _CONTROL.search(value):
        raise BadParameter(f"{kind} {value[:60]!r} is not a valid {kind} name (1 to {TEXT_MAX} printable characters)")
    return value


def query_values(request: Request) -> dict[str, Any]:
    """The query string as a plain dict (single values: `only` refused repeats)."""
    return dict(request.query_params.items())
