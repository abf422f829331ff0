"""Pages about what the index did and what anyone may ask it: nightly and crawl runs, failures, and
the SQL page (one read-only SELECT, under the limits of `hubindex sql`, enforced here)."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import duckdb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hubindex.catalog import fetch_dicts
from hubindex.errors import QueryTimeout
from hubindex.user_sql import check_read_statement, decode_json_columns, query_errors
from hubindex.web.serving import reading, settings_of
from hubindex.web.pages_checkpoints import page_routes
from hubindex.web.params import SQL_MAX, BadParameter, NotFound, choice, integer, only, strip_json_suffix, text
from hubindex.web.render import respond, with_query

RUNS_SHOWN = 50
FAILURES_PER_PAGE = 50
FAILURE_STATES = {"open": "resolved_at IS NULL", "resolved": "resolved_at IS NOT NULL", "all": "true"}
# The SQL page's first example: what the catalog holds, table by table.
SQL_EXAMPLES = (
    "SELECT source, count(*) AS checkpoints FROM checkpoints GROUP BY source ORDER BY checkpoints DESC",
    "SELECT checkpoint_id, in1k_top1, params_total FROM checkpoints WHERE in1k_top1 IS NOT NULL "
    "ORDER BY in1k_top1 DESC LIMIT 10",
    "SELECT task, metric, checkpoint_id, value FROM task_scores ORDER BY task, metric, value DESC",
)


# ------------------------------------------------------------------------------------ runs


def runs_page(request: Request) -> Response:
    only(request, "limit")
    limit = integer("limit", request.query_params.get("limit"), RUNS_SHOWN, 1, 1000)
    with reading(request) as catalog:
        nightly = fetch_dicts(catalog.conn, f"""
            SELECT r.run_id, r.status, r.started_at, r.finished_at, r.host, r.config_source, r.error,
                   (SELECT count(*) FROM failures f WHERE f.nightly_run_id = r.run_id) AS failures,
                   (SELECT list({{'stage': s.stage, 'status': s.status, 'seconds': s.seconds}} ORDER BY s.started_at)
                    FROM nightly_stages s WHERE s.run_id = r.run_id) AS stages
            FROM nightly_runs r ORDER BY r.run_id DESC LIMIT {limit}""")
        crawls = fetch_dicts(catalog.conn, f"""
            SELECT run_id, crawler, status, started_at, finished_at, seen, added, changed, unchanged, failed, error
            FROM crawl_runs ORDER BY run_id DESC LIMIT {limit}""")
    return respond(request, "runs.html", {"limit": limit, "nightly_runs": nightly, "crawl_runs": crawls})


def nightly_run_page(request: Request) -> Response:
    only(request)
    raw = strip_json_suffix(request.path_params["run_id"])
    run_id = integer("run_id", raw, 0, 1, 2**62)
    with reading(request) as catalog:
        found = fetch_dicts(catalog.conn, "SELECT * FROM nightly_runs WHERE run_id = ?", [run_id])
        if not found:
            raise NotFound(f"no nightly run {run_id}; the runs are listed at /runs")
        stages = fetch_dicts(catalog.conn, "SELECT stage, status, started_at, seconds, added, changed, unchanged, failed, details "
                               "FROM nightly_stages WHERE run_id = ? ORDER BY started_at", [run_id])
        failures = fetch_dicts(catalog.conn, "SELECT failure_id, stage, subject, kind, message, occurred_at, resolved_at "
                                 "FROM failures WHERE nightly_run_id = ? ORDER BY occurred_at, failure_id", [run_id])
    for stage in stages:
        stage["details"] = _json_value(stage["details"])
    found[0]["config"] = _json_value(found[0].get("config"))
    return respond(request, "nightly_run.html", {"run": found[0], "stages": stages, "failures": failures})


def _json_value(value: Any) -> Any:
    """A JSON column's text as its value (DuckDB hands JSON columns over as text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ------------------------------------------------------------------------------------ failures


def failures_page(request: Request) -> Response:
    only(request, "stage", "kind", "state", "page")
    args = request.query_params
    state = choice("state", args.get("state"), tuple(FAILURE_STATES), "open")
    stage, kind = text("stage", args.get("stage")), text("kind", args.get("kind"))
    page = integer("page", args.get("page"), 1, 1, 1_000_000)
    where = [FAILURE_STATES[state]]
    params: list[Any] = []
    for column, value in (("stage", stage), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    condition = " AND ".join(where)
    with reading(request) as catalog:
        total = catalog.conn.execute(f"SELECT count(*) FROM failures WHERE {condition}", params).fetchone()[0]
        pages = max(1, math.ceil(total / FAILURES_PER_PAGE))
        if page > pages:
            raise BadParameter(f"parameter 'page' is {page:,}; these failures fill {pages:,} page{'s' * (pages != 1)}")
        listed = fetch_dicts(catalog.conn, f"SELECT failure_id, run_id, nightly_run_id, stage, subject, kind, message, "
                               f"occurred_at, resolved_at FROM failures WHERE {condition} "
                               f"ORDER BY occurred_at DESC, failure_id DESC "
                               f"LIMIT {FAILURES_PER_PAGE} OFFSET {(page - 1) * FAILURES_PER_PAGE}", params)
        counts = fetch_dicts(catalog.conn, f"SELECT stage, kind, count(*) AS failures FROM failures "
                               f"WHERE {FAILURE_STATES[state]} GROUP BY stage, kind ORDER BY failures DESC, stage, kind")
    for count in counts:
        count["href"] = with_query("/failures", state=state if state != "open" else None, stage=count["stage"],
                                   kind=count["kind"])
    keep = {"state": state if state != "open" else None, "stage": stage, "kind": kind}
    data = {"state": state, "stage": stage, "kind": kind, "total": total, "page": page, "pages": pages,
            "failures": listed, "by_kind": counts, "states": list(FAILURE_STATES),
            "previous": with_query("/failures", **keep, page=page - 1) if page > 1 else None,
            "next": with_query("/failures", **keep, page=page + 1) if page < pages else None}
    return respond(request, "failures.html", data)


# ------------------------------------------------------------------------------------ SQL


def sql_page(request: Request) -> Response:
    """GET /sql?sql=SELECT...: the form, and the query's first rows under the server's limits."""
    only(request, "sql")
    settings = settings_of(request)
    sql = text("sql", request.query_params.get("sql"), max_length=SQL_MAX)
    data: dict[str, Any] = {"sql": sql, "row_cap": settings.sql_row_cap, "timeout_s": settings.sql_timeout_s,
                            "examples": list(SQL_EXAMPLES)}
    with reading(request) as catalog:
        data["tables"] = fetch_dicts(catalog.conn, "SELECT table_name AS name, list(column_name ORDER BY ordinal_position) AS columns "
                                       "FROM information_schema.columns WHERE table_schema = 'main' "
                                       "GROUP BY table_name ORDER BY table_name")
        if sql is not None:
            data |= _run_query(catalog.conn, sql, settings.sql_row_cap, settings.sql_timeout_s)
    return respond(request, "sql.html", data)


def _run_query(conn: duckdb.DuckDBPyConnection, sql: str, row_cap: int, timeout_s: float) -> dict[str, Any]:
    """One user SELECT on the request's fenced connection: the statement checked as `hubindex sql`
    checks it, stopped at timeout_s, at most row_cap rows read."""
    check_read_statement(conn, sql)
    timer = threading.Timer(timeout_s, conn.interrupt)
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    try:
        with query_errors(timeout_s):
            cursor = conn.execute(sql)
            description = cursor.description or []
            fetched = cursor.fetchmany(row_cap + 1)
    except QueryTimeout:
        raise QueryTimeout(timeout_s, hint="the server's limit: `hubindex serve --sql-timeout`; add a LIMIT or "
                                           "narrow the query") from None
    finally:
        timer.cancel()
    types = [str(d[1]) for d in description]
    return {"columns": [d[0] for d in description], "types": types,
            "rows": [list(row) for row in decode_json_columns(fetched[:row_cap], types)],
            "truncated": len(fetched) > row_cap, "seconds": round(time.perf_counter() - started, 4)}


def routes() -> list[Route]:
    return [*page_routes("/runs", runs_page, "runs"),
            Route("/runs/nightly/{run_id}", nightly_run_page, methods=["GET"], name="nightly_run"),
            *page_routes("/failures", failures_page, "failures"),
            *page_routes("/sql", sql_page, "sql")]
