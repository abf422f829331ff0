"""`hubindex serve`: the read-only web explorer of an index (hubindex.web)."""
from __future__ import annotations

import socket

import click

from hubindex.cli.root import cli
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index, resolve_index_dir
from hubindex.options import FiniteFloatRange
from hubindex.user_sql import DEFAULT_ROW_CAP


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address lets other machines read the catalog.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--index", "index_dir", metavar="DIR", default=None,
              help="Index folder to serve (the same as the global --index).")
@click.option("--request-timeout", type=FiniteFloatRange(0.1, 600), default=10.0, show_default=True, metavar="S",
              help="Seconds a page may read the catalog before it is stopped (503).")
@click.option("--sql-row-cap", type=click.IntRange(1, 100_000), default=DEFAULT_ROW_CAP, show_default=True,
              metavar="N", help="Rows the SQL page shows at most.")
@click.option("--sql-timeout", type=FiniteFloatRange(0.1, 600), default=10.0, show_default=True, metavar="S",
              help="Seconds a query of the SQL page may run (at most --request-timeout).")
@click.pass_obj
def serve_command(index: Index, host: str, port: int, index_dir: str | None, request_timeout: float,
                  sql_row_cap: int, sql_timeout: float) -> None:
    """Browse the index in a web browser: checkpoints, kappa, tasks, lineage, runs and SQL.

    \b
    Read-only: the server never writes the index, opens the catalog only while a request reads
    it (a nightly run or crawl can write in between; meanwhile pages read its published snapshot),
    and every page has a JSON form (URL + .json, or Accept: application/json). Static assets ship
    with hubindex; nothing is fetched from the internet.
    """
    import uvicorn

    from hubindex.web.app import create_app
    from hubindex.web.serving import ServeSettings

    root = resolve_index_dir(index_dir) if index_dir is not None else index.root
    settings = ServeSettings(root, host=host, request_timeout_s=request_timeout, sql_row_cap=sql_row_cap,
                             sql_timeout_s=min(sql_timeout, request_timeout))
    app = create_app(settings)
    app.state.reader.check()  # a missing or foreign catalog is an error now, not on the first page
    listener = _listen(host, port)
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"hubindex serve: http://{shown}:{bound_port}/ (index {root}; read-only; Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"hubindex: warning: listening on {host}: anyone who can reach this machine can read the catalog",
                   err=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5,
                            limit_concurrency=256, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port or unknown host is one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} is not an address this machine has ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    # The protocol from getaddrinfo (TCP), not 0: the event loop sets TCP_NODELAY on accepted
    # connections only for a socket it knows is TCP; without it every response waits ~40 ms for
    # the client's delayed ACK.
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == 98:  # EADDRINUSE
            raise UsageError(f"port {port} is already in use on {host}; choose another with --port "
                             "(0 picks a free one)") from None
        raise HubindexError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener
