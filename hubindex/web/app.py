"""The web explorer's application: routes of the page modules, static assets shipped in the package,
errors as pages (or JSON) with a status and a one-line message, and the safety defaults.

Safety: only GET and HEAD routes exist; every response carries a Content-Security-Policy that
allows scripts, styles and images from this server only (no CDN, no inline script); when the
server listens on a loopback address only loopback Host names are answered (a page on another
site cannot read it through DNS rebinding); every catalog read is interrupted at the request time
limit.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hubindex.errors import CatalogBusyError, HubindexError, QueryError, UsageError
from hubindex.plugins import pm
from hubindex.web.params import BadParameter, NotFound, Redirect
from hubindex.web.reader import RequestTimeout, SharedReader
from hubindex.web.serving import ServeSettings
from hubindex.web.render import respond

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
log = logging.getLogger("hubindex.web")


def status_of(exc: BaseException) -> int:
    if isinstance(exc, (BadParameter, NotFound)):
        return exc.status
    if isinstance(exc, (UsageError, QueryError)):
        return 400
    if isinstance(exc, (RequestTimeout, CatalogBusyError)):
        return 503
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, HubindexError):
        return 503  # no catalog, a foreign file: the server cannot answer until the index is fixed
    return 500


def error_page(request: Request, exc: BaseException) -> Response:
    status = status_of(exc)
    if isinstance(exc, HTTPException):
        message = {404: f"no page {request.url.path}; the checkpoint list is at /checkpoints",
                   405: f"{request.method} is not allowed: this server only reads (GET)"}.get(
            status, str(exc.detail))
    elif status == 500:
        log.exception("internal error on %s", request.url.path, exc_info=exc)
        message = f"internal error ({type(exc).__name__}); the server's log has the details"
    else:
        message = str(exc)
    response = respond(request, "error.html", {"error": message, "status": status}, status=status)
    if status == 503:
        response.headers["Retry-After"] = "5"
    return response


async def _errors(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Redirect):
        return RedirectResponse(exc.url, status_code=301)
    return error_page(request, exc)


class SecurityHeaders:
    """Adds SECURITY_HEADERS (and no-store on pages: the catalog changes under them) to every response."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def registered_routes() -> list[BaseRoute]:
    """The pages of every `register_web_pages` hook (the built-in ones first); GET routes only, and a
    path registered again replaces the earlier one, with a warning."""
    found: dict[str, tuple[BaseRoute, str]] = {}
    for impl in pm.hook.register_web_pages.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(route: BaseRoute, _plugin: str = plugin_name) -> None:
            if not isinstance(route, Route):
                raise TypeError(f"plugin {_plugin!r} registered {route!r}, which is not a starlette Route")
            if not (route.methods or set()) <= {"GET", "HEAD"}:
                raise TypeError(f"plugin {_plugin!r} registered {sorted(route.methods or ())} on {route.path}; "
                                "the web explorer only reads: GET routes only")
            previous = found.get(route.path)
            if previous is not None and previous[1] != _plugin:
                warnings.warn(f"web page {route.path!r} from plugin {_plugin!r} replaces the one from "
                              f"{previous[1]!r}", stacklevel=2)
            found[route.path] = (route, _plugin)

        impl.function(register=register)
    return [route for route, _ in found.values()]


def create_app(settings: ServeSettings) -> Starlette:
    """The application for one index; nothing is opened until a request needs the catalog."""
    routes = [*registered_routes(), Mount("/static", app=StaticFiles(directory=STATIC), name="static")]
    middleware = [Middleware(SecurityHeaders)]
    if settings.host in LOOPBACK_HOSTS:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS)))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={Exception: _errors, HTTPException: _errors, HubindexError: _errors,
                                        Redirect: _errors})
    app.state.settings = settings
    app.state.reader = SharedReader(settings.catalog_path)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("hubindex serve: %(message)s"))
        log.addHandler(handler)
    return app
