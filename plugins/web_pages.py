"""The web explorer's built-in pages (`hubindex serve`), registered like a third party's pages.

The page modules are imported only when a server starts, so the command line does not load the
web stack.
"""

from __future__ import annotations

from typing import Any

from hubindex import hookimpl


@hookimpl
def register_web_pages(register: Any) -> None:
    from hubindex.web import pages_checkpoints, pages_relate, pages_runs

    for module in (pages_checkpoints, pages_relate, pages_runs):
        for route in module.routes():
            register(route)
