"""Pages about the task space and labeled tasks: the probed corpus versions, one version's kappa
heatmap (ordered by the same ward dendrogram as `hubindex plot kappa`) with its stored MMI
selections, the tasks, and one task's metric scores with its stored searches."""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hubindex.corpus_versions import SHOWN_HASH, CorpusVersion, UnknownCorpus, corpus_versions, resolve_corpus
from hubindex.catalog import fetch_dicts
from hubindex.errors import UsageError
from hubindex.web.pages_checkpoints import page_routes
from hubindex.web.params import BadParameter, NotFound, Redirect, choice, integer, named_in_path, only
from hubindex.web.render import corpus_url, respond, task_url, with_query
from hubindex.web.serving import reading

# The heatmap holds at most this many checkpoints (the most downloaded): a browser draws 300^2
# cells at once, and the page's JSON stays a few MB.
HEATMAP_MAX = 300
# Without JavaScript, the matrix itself is a table up to this many checkpoints; above, each
# checkpoint's NEIGHBORS_SHOWN highest kappa.
MATRIX_TABLE_MAX = 30
NEIGHBORS_SHOWN = 5
SELECTIONS_SHOWN = 20  # stored selections listed per corpus version or task, newest first
SCORE_ROWS = 500  # checkpoints a task page lists by default (`limit`), best first
SCORE_ROWS_MAX = 10_000
NO_PROBES = "no corpus has been probed yet; run `hubindex probe --corpus NAME` first"


def stable_spec(version: CorpusVersion) -> str:
    """`NAME@HASHPREFIX`: names one content for good (an item count can be probed again, with other items)."""
    return f"{version.name}@{version.content_hash[:SHOWN_HASH]}"


# ------------------------------------------------------------------------------------ corpora


def _version_record(version: CorpusVersion, pairs: int, selections: int) -> dict[str, Any]:
    spec = stable_spec(version)
    return {"spec": version.spec, "stable_spec": spec, "name": version.name, "content_hash": version.content_hash,
            "n_items": version.n_items, "checkpoints": version.checkpoints, "first_probed": version.first_probed,
            "last_probed": version.last_probed, "kappa_pairs": pairs, "mmi_selections": selections,
            "url": corpus_url(spec)}


def _counts_by_hash(catalog: Any, sql: str) -> dict[str, int]:
    return {h: int(n) for h, n in catalog.conn.execute(sql).fetchall()}


def corpora_page(request: Request) -> Response:
    only(request)
    with reading(request) as catalog:
        versions = corpus_versions(catalog)
        pairs = _counts_by_hash(catalog, "SELECT corpus_hash, count(*) FROM kappa WHERE centered GROUP BY 1")
        selections = _counts_by_hash(catalog, "SELECT corpus_hash, count(*) FROM selections "
                                              "WHERE strategy = 'mmi' AND corpus_hash IS NOT NULL GROUP BY 1")
    records = [_version_record(v, pairs.get(v.content_hash, 0), selections.get(v.content_hash, 0))
               for v in versions]
    return respond(request, "corpora.html", {"corpora": records, "total": len(records)})


# ------------------------------------------------------------------------------------ one corpus


def find_version(catalog: Any, spec: str) -> CorpusVersion:
    """The probed version `spec` names (as `--corpus` takes it); 404 for an unknown one, 400 for an
    ambiguous one (the message lists its versions)."""
    versions = corpus_versions(catalog)
    if not versions:
        raise NotFound(NO_PROBES)
    try:
        ref = resolve_corpus(catalog, spec)
    except UnknownCorpus as exc:
        raise NotFound(f"{exc}; the list is at /corpora") from None
    except UsageError as exc:  # several versions match: the message lists them
        raise BadParameter(str(exc)) from None
    return next(v for v in versions if v.name == ref.name and v.content_hash == ref.content_hash)


def _heatmap_only(catalog: Any, version: CorpusVersion) -> tuple[set[str] | None, int]:
    """(the checkpoints the heatmap may hold, None for all; how many are probed on this version)."""
    from hubindex.probed import probed_checkpoints

    probed = [p.checkpoint_id for p in probed_checkpoints(catalog, version.ref)]
    if len(probed) <= HEATMAP_MAX:
        return None, len(probed)
    kept = catalog.conn.execute(
        "SELECT p.checkpoint_id FROM (SELECT unnest(?::VARCHAR[]) AS checkpoint_id) p "
        "LEFT JOIN checkpoints c USING (checkpoint_id) "
        f"ORDER BY c.downloads DESC NULLS LAST, p.checkpoint_id LIMIT {HEATMAP_MAX}", [probed]).fetchall()
    return {row[0] for row in kept}, len(probed)


def _neighbors(ids: list[str], values: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
    """Each checkpoint's NEIGHBORS_SHOWN highest kappa (the page's table without JavaScript)."""
    listed = []
    for i, checkpoint in enumerate(ids):
        others = [j for j in range(len(ids)) if j != i and np.isfinite(values[i, j])]
        others.sort(key=lambda j: (-values[i, j], ids[j]))
        listed.append({"checkpoint_id": checkpoint, "neighbors": [
            {"checkpoint_id": ids[j], "kappa": float(values[i, j]), "n_items": int(counts[i, j])}
            for j in others[:NEIGHBORS_SHOWN]]})
    return listed


def heatmap_data(catalog: Any, version: CorpusVersion) -> dict[str, Any]:
    """The kappa matrix of the version's checkpoints (at most HEATMAP_MAX), in dendrogram order."""
    from hubindex.plots import kappa_dendrogram, short_name
    from hubindex.relate import kappa_matrix_from_catalog

    allowed, probed = _heatmap_only(catalog, version)
    ids, values, counts = kappa_matrix_from_catalog(catalog, version.ref, centered=True, only=allowed)
    tree = kappa_dendrogram(values)
    order = tree.order
    chosen = probed if allowed is None else len(allowed)
    return {
        "heatmap_max": HEATMAP_MAX, "probed": probed, "shown": len(ids), "capped": allowed is not None,
        # Checkpoints chosen for the heatmap but lacking kappa pairs (probed after the last `hubindex kappa`).
        "without_kappa": chosen - len(ids),
        "ids": ids, "labels": [short_name(i) for i in ids], "order": order,
        "ordered_ids": [ids[i] for i in order],
        "matrix": values[np.ix_(order, order)].tolist(), "n_items": counts[np.ix_(order, order)].tolist(),
        "dendrogram": {"icoord": tree.icoord, "dcoord": tree.dcoord, "colors": tree.colors},
        "neighbors": _neighbors(ids, values, counts),
        "matrix_table": len(ids) <= MATRIX_TABLE_MAX,
    }


def selections_where(catalog: Any, condition: str, params: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The stored selections matching `condition` (newest first, at most SELECTIONS_SHOWN), each with
    its picks in rank order; and how many match in all."""
    total = catalog.conn.execute(f"SELECT count(*) FROM selections WHERE {condition}", params).fetchone()[0]
    found = fetch_dicts(catalog.conn, f"SELECT * FROM selections WHERE {condition} "
                          f"ORDER BY created_at DESC, selection_id DESC LIMIT {SELECTIONS_SHOWN}", params)
    if not found:
        return [], int(total)
    picks: dict[int, list[dict[str, Any]]] = {s["selection_id"]: [] for s in found}
    for pick in fetch_dicts(catalog.conn, "SELECT selection_id, rank, checkpoint_id, value, mi_nats, reason FROM selection_items "
                              "WHERE list_contains(?, selection_id) ORDER BY selection_id, rank",
                     [list(picks)]):
        picks[pick.pop("selection_id")].append(pick)
    return [s | {"picks": picks[s["selection_id"]]} for s in found], int(total)


def corpus_page(request: Request) -> Response:
    only(request)
    spec = named_in_path(request, "corpus", "corpus", "/corpora")
    with reading(request) as catalog:
        version = find_version(catalog, spec)
        if spec != stable_spec(version):  # one URL per content: NAME@ITEMS and bare names move there
            suffix = ".json" if request.url.path.endswith(".json") else ""
            raise Redirect(corpus_url(stable_spec(version)) + suffix)
        heatmap = heatmap_data(catalog, version)
        selections, total = selections_where(catalog, "strategy = 'mmi' AND corpus_hash = ?",
                                             [version.content_hash])
        pairs = catalog.conn.execute("SELECT count(*) FROM kappa WHERE centered AND corpus_hash = ?",
                                     [version.content_hash]).fetchone()[0]
    data = {"corpus": _version_record(version, int(pairs), total),
            **heatmap, "selections": selections, "selections_total": total,
            # The checkpoints the newest MMI selection picked: the heatmap can mark them.
            "highlight": [p["checkpoint_id"] for p in selections[0]["picks"]] if selections else []}
    return respond(request, "corpus.html", data)


# ------------------------------------------------------------------------------------ tasks

TASK_LIST = ("SELECT t.task, t.modality, t.target, t.n_examples, t.n_train, t.n_classes, t.created_at, "
             "count(s.metric) AS scores, count(DISTINCT s.metric) AS metrics, "
             "count(DISTINCT s.checkpoint_id) AS checkpoints, "
             "(SELECT count(*) FROM selections x WHERE x.task = t.task) AS selections "
             "FROM tasks t LEFT JOIN task_scores s USING (task) GROUP BY ALL ORDER BY t.task")


def tasks_page(request: Request) -> Response:
    only(request)
    with reading(request) as catalog:
        listed = fetch_dicts(catalog.conn, TASK_LIST)
    for task in listed:
        task["url"] = task_url(task["task"])
    return respond(request, "tasks.html", {"tasks": listed, "total": len(listed)})


def _task_row(catalog: Any, name: str) -> dict[str, Any]:
    """The task's row; 404 naming the close task names when there is none."""
    found = fetch_dicts(catalog.conn, "SELECT * FROM tasks WHERE task = ?", [name])
    if found:
        return found[0]
    names = [r[0] for r in catalog.conn.execute("SELECT task FROM tasks ORDER BY task").fetchall()]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = (f"close names: {', '.join(close)}" if close
            else "no task is stored yet; add one with `hubindex task add`" if not names
            else "the tasks are listed at /tasks")
    raise NotFound(f"no task named {name!r}; {hint}")


def _task_metrics(catalog: Any, task: str) -> list[dict[str, Any]]:
    """The metrics scored on the task: direction, versions and how many checkpoints each covers."""
    return fetch_dicts(catalog.conn, "SELECT metric, bool_and(higher_is_better) AS higher_is_better, "
                         "string_agg(DISTINCT metric_version, ', ' ORDER BY metric_version) AS metric_version, "
                         "count(*) AS checkpoints, max(computed_at) AS computed_at "
                         "FROM task_scores WHERE task = ? GROUP BY metric ORDER BY metric", [task])


def _default_metric(metrics: list[dict[str, Any]]) -> str | None:
    """The metric that covers the most checkpoints (then by name): the widest ranking."""
    return min(metrics, key=lambda m: (-m["checkpoints"], m["metric"]))["metric"] if metrics else None


def _score_rows(catalog: Any, task: str, metric: str | None, order: str, limit: int) -> list[dict[str, Any]]:
    """Checkpoints with scores on the task (`limit`, sorted by `metric`), each with every metric's value."""
    if metric is None:
        return []
    ranked = catalog.conn.execute(
        "SELECT checkpoint_id FROM (SELECT DISTINCT checkpoint_id FROM task_scores WHERE task = $task) c "
        "LEFT JOIN (SELECT checkpoint_id, value FROM task_scores WHERE task = $task AND metric = $metric) s "
        f"USING (checkpoint_id) ORDER BY s.value {order.upper()} NULLS LAST, checkpoint_id LIMIT {limit}",
        {"task": task, "metric": metric}).fetchall()
    listed = {row[0]: {"checkpoint_id": row[0], "scores": {}} for row in ranked}
    for checkpoint, name, value in catalog.conn.execute(
            "SELECT checkpoint_id, metric, value FROM task_scores WHERE task = ? AND list_contains(?, checkpoint_id)",
            [task, list(listed)]).fetchall():
        listed[checkpoint]["scores"][name] = value
    return list(listed.values())


def _metric_choice(request: Request, metrics: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The `metric` and `order` parameters, checked against the metrics scored on this task."""
    names = tuple(m["metric"] for m in metrics)
    given = request.query_params.get("metric")
    if given and not names:
        raise BadParameter(f"parameter 'metric' is {given[:60]!r}; this task has no scores yet")
    metric = choice("metric", given, names, _default_metric(metrics)) if names else None
    better = next((m["higher_is_better"] for m in metrics if m["metric"] == metric), True)
    order = choice("order", request.query_params.get("order"), ("desc", "asc"), "desc" if better else "asc")
    return metric, order


def _sort_links(task: str, metrics: list[dict[str, Any]], metric: str | None, order: str,
                limit: int) -> dict[str, str]:
    """Each metric's column link: best first, or the other way round when it is the sort already."""
    links = {}
    for m in metrics:
        best = "desc" if m["higher_is_better"] else "asc"
        flipped = ("asc" if order == "desc" else "desc") if m["metric"] == metric else best
        links[m["metric"]] = with_query(task_url(task), metric=m["metric"], order=flipped,
                                        limit=limit if limit != SCORE_ROWS else None)
    return links


def task_page(request: Request) -> Response:
    only(request, "metric", "order", "limit")
    name = named_in_path(request, "task", "task", "/tasks")
    limit = integer("limit", request.query_params.get("limit"), SCORE_ROWS, 1, SCORE_ROWS_MAX)
    with reading(request) as catalog:
        task = _task_row(catalog, name)
        metrics = _task_metrics(catalog, name)
        metric, order = _metric_choice(request, metrics)
        scored = catalog.conn.execute("SELECT count(DISTINCT checkpoint_id) FROM task_scores WHERE task = ?",
                                      [name]).fetchone()[0]
        scores = _score_rows(catalog, name, metric, order, limit)
        selections, total = selections_where(catalog, "task = ?", [name])
    data = {"task": task, "metrics": metrics, "metric": metric, "order": order, "limit": limit,
            "scored_checkpoints": int(scored), "rows": scores, "selections": selections, "selections_total": total,
            "sort_links": _sort_links(name, metrics, metric, order, limit)}
    return respond(request, "task.html", data)


def routes() -> list[Route]:
    return [*page_routes("/corpora", corpora_page, "corpora"),
            Route("/corpora/{corpus:path}", corpus_page, methods=["GET"], name="corpus"),
            *page_routes("/tasks", tasks_page, "tasks"),
            Route("/tasks/{task:path}", task_page, methods=["GET"], name="task")]
