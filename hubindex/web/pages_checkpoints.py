"""Pages about checkpoints: the overview, the faceted list, one checkpoint's card, its family graph."""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hubindex.cards import checkpoint_card, resolve_checkpoint
from hubindex.catalog import fetch_dicts
from hubindex.errors import UsageError
from hubindex.web.serving import reading
from hubindex.web.params import BadParameter, NotFound, Redirect, choice, integer, named_in_path, only, text
from hubindex.web.render import checkpoint_url, lineage_url, respond, wants_json, with_query

# Facet parameter -> catalog column. A facet value "(none)" selects the rows where it is not known.
FACETS = {"source": "source", "library": "library_name", "pipeline": "pipeline_tag", "license": "license",
          "upstream": "upstream_data"}
NONE_VALUE = "(none)"
FACET_VALUES = 15  # values listed per facet, most frequent first
# Sort parameter -> column; missing values sort last in either order, ties by checkpoint id.
SORTS = {"downloads": "downloads", "likes": "likes", "id": "checkpoint_id", "modified": "last_modified",
         "params": "params_total", "top1": "in1k_top1", "crawled": "crawled_at"}
LIST_COLUMNS = ("checkpoint_id", "source", "pipeline_tag", "library_name", "license", "upstream_data",
                "params_total", "downloads", "likes", "in1k_top1", "last_modified", "crawled_at")
PER_PAGE = 50
PER_PAGE_MAX = 200
PAGE_MAX = 100_000
LINEAGE_NODES_MAX = 500


def page_routes(path: str, endpoint: Any, name: str) -> list[Route]:
    """A page and its JSON form (`path.json`), both GET only."""
    json_path = "/index.json" if path == "/" else f"{path}.json"
    return [Route(path, endpoint, methods=["GET"], name=name),
            Route(json_path, endpoint, methods=["GET"], name=f"{name}_json")]


# ------------------------------------------------------------------------------------ overview


def overview(request: Request) -> Response:
    only(request)
    with reading(request) as catalog:
        data = {
            "checkpoints": catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0],
            "by_source": fetch_dicts(catalog.conn, "SELECT source, count(*) AS checkpoints FROM checkpoints "
                                       "GROUP BY source ORDER BY checkpoints DESC, source"),
            "corpora": catalog.conn.execute("SELECT count(DISTINCT corpus_hash) FROM embeddings").fetchone()[0],
            "probed_checkpoints": catalog.conn.execute(
                "SELECT count(DISTINCT checkpoint_id) FROM embeddings").fetchone()[0],
            "tasks": catalog.conn.execute("SELECT count(*) FROM tasks").fetchone()[0],
            "task_scores": catalog.conn.execute("SELECT count(*) FROM task_scores").fetchone()[0],
            "lineage_edges": catalog.conn.execute("SELECT count(*) FROM lineage").fetchone()[0],
            "open_failures": catalog.conn.execute(
                "SELECT count(*) FROM failures WHERE resolved_at IS NULL").fetchone()[0],
            "last_nightly": (fetch_dicts(catalog.conn, "SELECT run_id, status, started_at, finished_at FROM nightly_runs "
                                           "ORDER BY run_id DESC LIMIT 1") or [None])[0],
            "last_crawl": (fetch_dicts(catalog.conn, "SELECT run_id, crawler, status, started_at, finished_at FROM crawl_runs "
                                         "ORDER BY run_id DESC LIMIT 1") or [None])[0],
        }
    return respond(request, "overview.html", data)


# ------------------------------------------------------------------------------------ the list


def _searched(catalog: Any, q: str | None) -> str:
    """The table the list reads: the catalog, or, with a search, the rows matching it, found once
    (a temp table of this request's connection) rather than by each of the page's seven queries."""
    if not q:
        return "checkpoints"
    columns = sorted({*LIST_COLUMNS, *FACETS.values(), *SORTS.values()})
    catalog.conn.execute(f"CREATE TEMP TABLE search_matches AS SELECT {', '.join(columns)} FROM checkpoints "
                         "WHERE contains(lower(checkpoint_id), lower(?))", [q])
    return "search_matches"


def _conditions(filters: dict[str, str], skip: str | None = None) -> tuple[str, list[Any]]:
    parts, params = ["true"], []
    for name, value in filters.items():
        if name == skip:
            continue
        if value == NONE_VALUE:
            parts.append(f"{FACETS[name]} IS NULL")
        else:
            parts.append(f"{FACETS[name]} = ?")
            params.append(value)
    return " AND ".join(parts), params


def checkpoint_list(request: Request) -> Response:
    only(request, "q", *FACETS, "sort", "order", "page", "per_page")
    args = request.query_params
    q = text("q", args.get("q"))
    filters = {name: value for name in FACETS if (value := text(name, args.get(name))) is not None}
    sort = choice("sort", args.get("sort"), tuple(SORTS), "downloads")
    order = choice("order", args.get("order"), ("desc", "asc"), "asc" if sort == "id" else "desc")
    per_page = integer("per_page", args.get("per_page"), PER_PAGE, 1, PER_PAGE_MAX)
    page = integer("page", args.get("page"), 1, 1, PAGE_MAX)
    # What the links keep: everything but the page (a new filter starts at page 1).
    state = {"q": q, **filters, "sort": sort if sort != "downloads" else None,
             "order": order if order != ("asc" if sort == "id" else "desc") else None,
             "per_page": per_page if per_page != PER_PAGE else None}
    with reading(request) as catalog:
        source = _searched(catalog, q)
        where, params = _conditions(filters)
        total = catalog.conn.execute(f"SELECT count(*) FROM {source} WHERE {where}", params).fetchone()[0]
        pages = max(1, math.ceil(total / per_page))
        if page > pages:
            raise BadParameter(f"parameter 'page' is {page:,}; this list has {pages:,} page{'s' * (pages != 1)} "
                               f"of {per_page} ({total:,} checkpoints)")
        listed = fetch_dicts(catalog.conn, f"SELECT {', '.join(LIST_COLUMNS)} FROM {source} WHERE {where} "
                               f"ORDER BY {SORTS[sort]} {order.upper()} NULLS LAST, checkpoint_id "
                               f"LIMIT {per_page} OFFSET {(page - 1) * per_page}", params)
        facets = {}
        for name, column in FACETS.items():
            facet_where, facet_params = _conditions(filters, skip=name)
            facets[name] = [_facet_value(name, NONE_VALUE if value is None else value, count, state)
                            for value, count in catalog.conn.execute(
                                f"SELECT {column}, count(*) AS n FROM {source} WHERE {facet_where} "
                                f"GROUP BY {column} ORDER BY n DESC, {column} NULLS LAST LIMIT {FACET_VALUES}",
                                facet_params).fetchall()]
    data = {"total": total, "page": page, "pages": pages, "per_page": per_page, "sort": sort, "order": order,
            "q": q, "filters": filters, "facets": facets, "checkpoints": listed,
            "sorts": list(SORTS), "columns": _columns(SORTS[sort]),
            "previous": _list_url(state, page=page - 1) if page > 1 else None,
            "next": _list_url(state, page=page + 1) if page < pages else None}
    return respond(request, "checkpoints.html", data)


def _columns(sorted_by: str) -> list[str]:
    """The list's columns, the one it is sorted by right after the id (so it is never off-screen)."""
    rest = [c for c in LIST_COLUMNS if c not in ("checkpoint_id", sorted_by)]
    return ["checkpoint_id", *([sorted_by] if sorted_by != "checkpoint_id" else []), *rest]


def _list_url(state: dict[str, Any], **changes: Any) -> str:
    return with_query("/checkpoints", **(state | changes))


def _facet_value(name: str, value: str, count: int, state: dict[str, Any]) -> dict[str, Any]:
    """A facet value with the link that selects it (or, when selected, removes it)."""
    selected = state.get(name) == value
    return {"value": value, "checkpoints": count, "selected": selected,
            "href": _list_url(state, **{name: None if selected else value})}


# ------------------------------------------------------------------------------------ one checkpoint


def _checkpoint_named(request: Request, catalog: Any) -> str:
    """The checkpoint the URL path names. An empty name is the list, a repo id or a name without
    `hf:` its canonical URL (Redirect, 301); an unknown one a 404 with close ids."""
    name = named_in_path(request, "checkpoint_id", "checkpoint", "/checkpoints")
    as_json = ".json" if request.url.path.endswith(".json") else ""
    if catalog.conn.execute("SELECT 1 FROM checkpoints WHERE checkpoint_id = ?", [name]).fetchone():
        return name
    try:
        resolved = resolve_checkpoint(catalog, name)
    except UsageError as exc:
        hint = str(exc).split("; `hubindex sql", 1)[0]
        raise NotFound(f"{hint}; search the list at /checkpoints?q=...") from None
    raise Redirect(_canonical(request, resolved, as_json))


def _canonical(request: Request, checkpoint_id: str, as_json: str) -> str:
    """The page's own URL for checkpoint_id (the lineage page stays a lineage page)."""
    page = lineage_url if request.url.path.startswith("/lineage/") else checkpoint_url
    return page(checkpoint_id) + as_json


def checkpoint_page(request: Request) -> Response:
    only(request)
    with reading(request) as catalog:
        found = _checkpoint_named(request, catalog)
        card = checkpoint_card(catalog, found, exact=True)
        hub_url = catalog.conn.execute("SELECT hub_url(?)", [found]).fetchone()[0]
        card["hub_url"] = hub_url if hub_url and hub_url.startswith("https://") else None
        roots = card["lineage"]["roots"]
        card["lineage"]["roots_in_catalog"] = [cid for (cid,) in catalog.conn.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE list_contains(?, checkpoint_id)", [roots]).fetchall()]
    return respond(request, "checkpoint.html", card)


def lineage_page(request: Request) -> Response:
    """The checkpoint's family as a layered graph (parents above children), drawn as SVG."""
    from hubindex.lineage_tree import family, has_lineage
    from hubindex.web.lineage_svg import family_drawing

    only(request, "nodes")
    nodes = integer("nodes", request.query_params.get("nodes"), 200, 2, LINEAGE_NODES_MAX)
    with reading(request) as catalog:
        found = _checkpoint_named(request, catalog)
        if not has_lineage(catalog):
            raise NotFound("this catalog predates lineage; open it once with a current hubindex to upgrade it")
        drawn = family(catalog, found, limit=nodes)
    data = {
        "checkpoint_id": found, "total": drawn.total, "left_out": drawn.left_out, "nodes": nodes,
        "members": [{"checkpoint_id": m, "role": drawn.roles[m], "in_catalog": m in drawn.in_catalog,
                     "hidden_children": drawn.hidden_children.get(m, 0)} for m in drawn.members],
        "edges": [e.record(e.parent, e.parent in drawn.in_catalog) | {"child": e.child} for e in drawn.edges],
    }
    if not wants_json(request):
        data["drawing"] = family_drawing(drawn)
    return respond(request, "lineage.html", data)


def routes() -> list[Route]:
    return [*page_routes("/", overview, "overview"),
            *page_routes("/checkpoints", checkpoint_list, "checkpoints"),
            Route("/checkpoints/{checkpoint_id:path}", checkpoint_page, methods=["GET"], name="checkpoint"),
            Route("/lineage/{checkpoint_id:path}", lineage_page, methods=["GET"], name="lineage")]
