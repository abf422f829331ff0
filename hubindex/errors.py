"""Errors that the command line reports as one line (`hubindex: error: ...`) and exit code."""

from __future__ import annotations

# The exit codes of every command (documented in `hubindex --help` and the CLI reference).
EXIT_CODES = {
    0: "success",
    1: "error (a bad file, a damaged catalog, a failed download, an internal error)",
    2: "usage: a bad option, name, id or SQL condition",
    3: "busy: another process holds the index for writing",
    4: "nothing done: every checkpoint failed, or nothing matched",
    130: "interrupted (Ctrl-C, SIGTERM); finished work is kept",
}



class HubindexError(Exception):
    """A problem the user can act on. The message names the thing and what to do."""

    exit_code = 1


class UsageError(HubindexError):
    """Bad arguments: an unknown name, a malformed id, an option out of range."""

    exit_code = 2


class CatalogBusyError(HubindexError):
    """Another process holds the catalog for writing."""

    exit_code = 3


class NothingDone(HubindexError):
    """The command ran but did nothing: every unit failed or nothing matched (exit 4, as documented)."""

    exit_code = 4


class Interrupted(HubindexError):
    """Stopped by the user (Ctrl-C, SIGINT) or by SIGTERM; what was committed is kept."""

    exit_code = 130


class QueryError(HubindexError):
    """User SQL that is invalid, not read-only, too slow or too large."""


class QueryTimeout(QueryError):
    """User SQL stopped at its time limit."""

    def __init__(self, limit_s: float, hint: str = "raise it with --timeout") -> None:
        super().__init__(f"query stopped after the {limit_s:g} s time limit ({hint})")
        self.limit_s = limit_s
