"""One place renders every page: the same data as HTML (a Jinja2 template, autoescaped) or as JSON
(the `.json` form of the URL, or `Accept: application/json`)."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe
import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from hubindex import __version__
from hubindex.web.params import JSON_SUFFIX

TEMPLATES = Path(__file__).parent / "templates"

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value is escaped unless a template says otherwise (none does)
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the page, not renders as nothing
    trim_blocks=True,
    lstrip_blocks=True,
)


def wants_json(request: Request) -> bool:
    """The JSON form: a `.json` URL, or an Accept header that asks for JSON rather than HTML."""
    if request.url.path.endswith(JSON_SUFFIX):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def plain(value: Any) -> Any:
    """A value as JSON can hold it: times as ISO 8601, NaN and infinities as null, numpy as Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def json_response(data: dict[str, Any], status: int = 200) -> Response:
    body = json.dumps(plain(data), ensure_ascii=False, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json", headers={"Vary": "Accept"})


def respond(request: Request, template: str, data: dict[str, Any], status: int = 200) -> Response:
    """The page: JSON when asked for, else the template with `data` (and the page's JSON link)."""
    if wants_json(request):
        return json_response(data, status)
    html = environment.get_template(template).render(
        data=data, request=request, json_url=json_url(request), version=__version__,
        snapshot=getattr(request.state, "snapshot", None))
    return HTMLResponse(html, status_code=status, headers={"Vary": "Accept"})


def json_url(request: Request) -> str:
    """This page's JSON form: the path with `.json`, the same query string."""
    path = request.url.path.rstrip("/") or "/index"
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{path}{JSON_SUFFIX}{query}"


# ------------------------------------------------------------------ links (stable URLs) and formats


def checkpoint_url(checkpoint_id: str) -> str:
    return "/checkpoints/" + quote(checkpoint_id, safe="/:@")


def lineage_url(checkpoint_id: str) -> str:
    return "/lineage/" + quote(checkpoint_id, safe="/:@")


def corpus_url(spec: str) -> str:
    return "/corpora/" + quote(spec, safe="@")


def task_url(task: str) -> str:
    return "/tasks/" + quote(task, safe="")


def with_query(path: str, **params: Any) -> str:
    """`path?k=v...` without the parameters that are None or empty."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def number(value: Any, digits: int = 4) -> str:
    """A number as people read it: thousands separated, floats to `digits` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def when(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return "" if value is None else str(value)


def cell(value: Any) -> str:
    """Any stored value as text in a table cell (lists and maps as JSON)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value)
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(plain(value), ensure_ascii=False)
    return "" if value is None else str(value)


def script_json(value: Any) -> markupsafe.Markup:
    """Data for a `<script type="application/json">` block: JSON whose `<`, `>`, `&` and line
    separators are escaped, so no text of the catalog can close the block or start markup."""
    text = json.dumps(plain(value), ensure_ascii=False, allow_nan=False)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return markupsafe.Markup(text)


environment.globals.update(checkpoint_url=checkpoint_url, lineage_url=lineage_url, corpus_url=corpus_url,
                           task_url=task_url, with_query=with_query)
environment.filters.update(number=number, when=when, cell=cell, script_json=script_json)
