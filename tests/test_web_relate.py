"""The web explorer's task-space and task pages (hubindex/web/pages_relate.py), over HTTP against a
real `hubindex serve`: every number a page shows is checked against the catalog it read (opened
read-only after the requests), the heatmap's order against scipy's ward dendrogram, parameters
outside their domain are 400s that name the parameter, and catalog text is escaped."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import WebServer, served

from hubindex.catalog import CATALOG_FILENAME, Catalog
from hubindex.corpus_versions import corpus_versions

HOSTILE_SCRIPT = "<script>alert('x')"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is answered as it is, to be checked


OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(url: str, accept: str | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET, without following redirects."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with OPENER.open(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def get_json(url: str, status: int = 200) -> dict[str, Any]:
    code, headers, body = fetch(url)
    assert code == status, (url, code, body[:2000])
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


def get_html(url: str, status: int = 200) -> str:
    code, headers, body = fetch(url)
    assert code == status, (url, code, body[:2000])
    assert headers["content-type"].startswith("text/html")
    return body


def catalog_of(server_or_dir: WebServer | Path) -> Catalog:
    folder = server_or_dir.index_dir if isinstance(server_or_dir, WebServer) else server_or_dir
    return Catalog(folder / CATALOG_FILENAME, read_only=True)


def rows_of(catalog: Catalog, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = catalog.conn.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def stable(name: str, content_hash: str) -> str:
    return f"{name}@{content_hash[:12]}"


def corpus_specs(server: WebServer) -> list[str]:
    listed = get_json(f"{server.url}/corpora.json")["corpora"]
    return [c["stable_spec"] for c in listed]


# ------------------------------------------------------------------------------------ corpora


def test_corpora_list_is_every_probed_version(web_server: WebServer) -> None:
    listed = get_json(f"{web_server.url}/corpora.json")
    html = get_html(f"{web_server.url}/corpora")
    with catalog_of(web_server) as catalog:
        versions = corpus_versions(catalog)
        pairs = dict(catalog.conn.execute("SELECT corpus_hash, count(*) FROM kappa WHERE centered GROUP BY 1").fetchall())
        mmi = dict(catalog.conn.execute("SELECT corpus_hash, count(*) FROM selections WHERE strategy = 'mmi' "
                                        "GROUP BY 1").fetchall())
    assert listed["total"] == len(versions) == 2
    names = {web_server.names["text_corpus"], web_server.names["image_corpus"]}
    assert {c["name"] for c in listed["corpora"]} == names
    for record, version in zip(listed["corpora"], versions):
        spec = stable(version.name, version.content_hash)
        assert record == {"spec": version.spec, "stable_spec": spec, "name": version.name,
                          "content_hash": version.content_hash, "n_items": version.n_items,
                          "checkpoints": version.checkpoints, "first_probed": version.first_probed.isoformat(),
                          "last_probed": version.last_probed.isoformat(),
                          "kappa_pairs": pairs[version.content_hash], "mmi_selections": mmi[version.content_hash],
                          "url": f"/corpora/{spec}"}
        assert f'href="/corpora/{spec}"' in html


def stored_kappa(catalog: Catalog, content_hash: str) -> dict[frozenset[str], tuple[float, int]]:
    found = catalog.conn.execute("SELECT checkpoint_a, checkpoint_b, value, n_items FROM kappa "
                                 "WHERE corpus_hash = ? AND centered", [content_hash]).fetchall()
    return {frozenset((a, b)): (value, items) for a, b, value, items in found}


def test_corpus_matrix_is_the_stored_kappa_in_dendrogram_order(web_server: WebServer) -> None:
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    pages = {spec: get_json(f"{web_server.url}/corpora/{spec}.json") for spec in corpus_specs(web_server)}
    with catalog_of(web_server) as catalog:
        stored = {spec: stored_kappa(catalog, page["corpus"]["content_hash"]) for spec, page in pages.items()}
    for spec, page in pages.items():
        ids, order, n = page["ids"], page["order"], page["shown"]
        assert n == len(ids) == page["probed"] >= 5 and not page["capped"] and page["without_kappa"] == 0
        assert ids == sorted(ids) and sorted(order) == list(range(n))
        assert page["ordered_ids"] == [ids[i] for i in order]
        matrix = np.array(page["matrix"], dtype=float)
        assert matrix.shape == (n, n)
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_array_equal(np.diag(matrix), np.ones(n))
        for a, first in enumerate(page["ordered_ids"]):
            for b, second in enumerate(page["ordered_ids"]):
                if a != b:
                    value, items = stored[spec][frozenset((first, second))]
                    assert matrix[a, b] == value and page["n_items"][a][b] == items, (spec, first, second)
        # The order of `hubindex plot kappa`: scipy's leaves of ward linkage on 1 - kappa (catalog order).
        by_id = np.empty((n, n))
        by_id[np.ix_(order, order)] = matrix
        distance = np.clip(1.0 - by_id, 0.0, None)
        np.fill_diagonal(distance, 0.0)
        tree = dendrogram(linkage(squareform((distance + distance.T) / 2, checks=False), method="ward"),
                          no_plot=True, color_threshold=0.9)
        assert order == tree["leaves"]
        assert page["dendrogram"] == {"icoord": tree["icoord"], "dcoord": tree["dcoord"],
                                      "colors": tree["color_list"]}
        assert len(page["neighbors"]) == n


def test_plot_kappa_and_the_page_share_one_dendrogram(web_server: WebServer, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    """plot_kappa draws the tree kappa_dendrogram computes, the one the page serves."""
    from hubindex import plots

    spec = corpus_specs(web_server)[0]
    page = get_json(f"{web_server.url}/corpora/{spec}.json")
    n, order = page["shown"], page["order"]
    values = np.empty((n, n))
    values[np.ix_(order, order)] = np.array(page["matrix"], dtype=float)
    seen = []
    real = plots.kappa_dendrogram
    monkeypatch.setattr(plots, "kappa_dendrogram", lambda v: seen.append(real(v)) or seen[-1])
    plots.plot_kappa(page["ids"], values, tmp_path / "kappa.png")
    assert (tmp_path / "kappa.png").stat().st_size > 0
    assert seen[0].order == order and seen[0].icoord == page["dendrogram"]["icoord"]


def test_corpus_mmi_selections_are_the_stored_rows(web_server: WebServer) -> None:
    pages = {spec: get_json(f"{web_server.url}/corpora/{spec}.json") for spec in corpus_specs(web_server)}
    for page in pages.values():
        with catalog_of(web_server) as catalog:
            stored = rows_of(catalog, "SELECT * FROM selections WHERE strategy = 'mmi' AND corpus_hash = ? "
                                      "ORDER BY created_at DESC, selection_id DESC", [page["corpus"]["content_hash"]])
            picks = {s["selection_id"]: rows_of(catalog, "SELECT rank, checkpoint_id, value, mi_nats, reason "
                                                         "FROM selection_items WHERE selection_id = ? ORDER BY rank",
                                                [s["selection_id"]]) for s in stored}
        assert stored, "the web index stores an MMI selection on each corpus"
        assert page["selections_total"] == len(stored)
        assert [s["selection_id"] for s in page["selections"]] == [s["selection_id"] for s in stored][:20]
        for shown, row in zip(page["selections"], stored):
            assert shown["budget"] == row["budget"] and shown["created_at"] == row["created_at"].isoformat()
            assert shown["picks"] == picks[row["selection_id"]]
        assert page["highlight"] == [p["checkpoint_id"] for p in picks[stored[0]["selection_id"]]]
        assert set(page["highlight"]) <= set(page["ids"])


def test_corpus_page_html_links_picks_and_loads_only_its_script(web_server: WebServer) -> None:
    spec = corpus_specs(web_server)[0]
    html = get_html(f"{web_server.url}/corpora/{spec}")
    page = get_json(f"{web_server.url}/corpora/{spec}.json")
    assert f'data-json="/corpora/{spec}.json"' in html
    # One script, the server's; the heatmap's data rides in a JSON block (not executed), equal to the
    # page's JSON form, with every "<" escaped so that no id can close the block.
    assert re.findall(r"<script[^>]*>", html) == ['<script type="application/json" id="heatmap-data">',
                                                  '<script src="/static/heatmap.js" defer>']
    block = html.split('<script type="application/json" id="heatmap-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and json.loads(block) == page
    assert 'id="kappa-matrix"' in html  # the table without JavaScript (few checkpoints: the matrix)
    for pick in page["selections"][0]["picks"]:
        if "<" not in pick["checkpoint_id"]:
            assert f'href="/checkpoints/{pick["checkpoint_id"]}"' in html
    code, headers, script = fetch(f"{web_server.url}/static/heatmap.js")
    assert code == 200 and "javascript" in headers["content-type"]
    assert "innerHTML" not in script and "data-rendered" in script and "textContent" in script


def test_corpus_spec_forms_redirect_to_the_stable_url(web_server: WebServer) -> None:
    listed = get_json(f"{web_server.url}/corpora.json")["corpora"]
    for record in listed:
        for other in (record["spec"], record["name"], f"{record['name']}@{record['content_hash'][:8]}"):
            code, headers, _ = fetch(f"{web_server.url}/corpora/{other}")
            assert code == 301 and headers["location"].endswith(record["url"]), (other, code)
            code, headers, _ = fetch(f"{web_server.url}/corpora/{other}.json")
            assert code == 301 and headers["location"].endswith(record["url"] + ".json")


def test_corpus_errors(web_server: WebServer) -> None:
    missing = get_json(f"{web_server.url}/corpora/no-such-corpus.json", status=404)
    assert "no-such-corpus" in missing["error"] and web_server.names["text_corpus"] in missing["error"]
    spec = corpus_specs(web_server)[0]
    for path, name in ((f"/corpora/{spec}.json?order=x", "order"), ("/corpora.json?page=2", "page"),
                       ("/tasks.json?q=x", "q")):
        error = get_json(f"{web_server.url}{path}", status=400)["error"]
        assert f"unknown parameter {name!r}" in error
    assert fetch(f"{web_server.url}/corpora/no-such-corpus")[0] == 404


# ------------------------------------------------------------------------------------ tasks


def test_tasks_list_matches_the_catalog(web_server: WebServer) -> None:
    listed = get_json(f"{web_server.url}/tasks.json")
    html = get_html(f"{web_server.url}/tasks")
    with catalog_of(web_server) as catalog:
        tasks = rows_of(catalog, "SELECT * FROM tasks ORDER BY task")
        counts = {t: (n, m) for t, n, m in catalog.conn.execute(
            "SELECT task, count(*), count(DISTINCT metric) FROM task_scores GROUP BY task").fetchall()}
    assert [t["task"] for t in listed["tasks"]] == [t["task"] for t in tasks] == ["bbc", "digits"]
    for shown, row in zip(listed["tasks"], tasks):
        for key in ("modality", "target", "n_examples", "n_train", "n_classes"):
            assert shown[key] == row[key]
        assert shown["created_at"] == row["created_at"].isoformat()
        assert (shown["scores"], shown["metrics"]) == counts[row["task"]]
        assert shown["selections"] == 1 and shown["url"] == f"/tasks/{row['task']}"
        assert f'href="/tasks/{row["task"]}"' in html


def test_task_scores_are_the_stored_rows(web_server: WebServer) -> None:
    for task in ("bbc", "digits"):
        page = get_json(f"{web_server.url}/tasks/{task}.json")
        with catalog_of(web_server) as catalog:
            stored = rows_of(catalog, "SELECT checkpoint_id, metric, value, higher_is_better FROM task_scores "
                                      "WHERE task = ?", [task])
            row = rows_of(catalog, "SELECT * FROM tasks WHERE task = ?", [task])[0]
        assert page["task"]["task"] == task and page["task"]["content_hash"] == row["content_hash"]
        shown = {(r["checkpoint_id"], metric, value) for r in page["rows"] for metric, value in r["scores"].items()}
        assert shown == {(s["checkpoint_id"], s["metric"], s["value"]) for s in stored}
        assert page["scored_checkpoints"] == len(page["rows"]) == len({s["checkpoint_id"] for s in stored})
        directions = {s["metric"]: s["higher_is_better"] for s in stored}
        assert {m["metric"]: m["higher_is_better"] for m in page["metrics"]} == directions
        assert [m["metric"] for m in page["metrics"]] == sorted(directions)


def sorted_values(page: dict[str, Any]) -> list[float]:
    return [r["scores"][page["metric"]] for r in page["rows"] if page["metric"] in r["scores"]]


def test_task_sort_respects_higher_is_better(web_server: WebServer) -> None:
    base = f"{web_server.url}/tasks/digits"
    metrics = get_json(f"{base}.json")["metrics"]
    assert {m["higher_is_better"] for m in metrics} == {True, False}  # pactran is lower-is-better
    for metric in metrics:
        page = get_json(f"{base}.json?metric={metric['metric']}")
        best_first = "desc" if metric["higher_is_better"] else "asc"
        assert page["metric"] == metric["metric"] and page["order"] == best_first
        values = sorted_values(page)
        assert values == sorted(values, reverse=metric["higher_is_better"]) and len(values) == metric["checkpoints"]
        # Checkpoints without this metric's score come last, in either order.
        assert all(page["metric"] in r["scores"] for r in page["rows"][:len(values)])
        other = "asc" if best_first == "desc" else "desc"
        flipped = get_json(f"{base}.json?metric={metric['metric']}&order={other}")
        assert sorted_values(flipped) == sorted(values, reverse=other == "desc")
    html = get_html(f"{base}?metric=pactran")
    assert 'aria-sort="ascending"' in html and 'href="/tasks/digits?metric=pactran&amp;order=desc"' in html


def test_task_selections_are_the_stored_searches(web_server: WebServer) -> None:
    for task in ("bbc", "digits"):
        page = get_json(f"{web_server.url}/tasks/{task}.json")
        with catalog_of(web_server) as catalog:
            stored = rows_of(catalog, "SELECT * FROM selections WHERE task = ? ORDER BY created_at DESC", [task])
            picks = rows_of(catalog, "SELECT rank, checkpoint_id, value, mi_nats, reason FROM selection_items "
                                     "WHERE selection_id = ? ORDER BY rank", [stored[0]["selection_id"]])
        assert page["selections_total"] == len(stored) == 1
        shown = page["selections"][0]
        assert (shown["strategy"], shown["metric"], shown["budget"], shown["pool_condition"]) == (
            "hybrid", "logme", 2, stored[0]["pool_condition"])
        assert shown["picks"] == picks


def test_task_parameters_outside_their_domain_are_400(web_server: WebServer) -> None:
    base = f"{web_server.url}/tasks/digits.json"
    error = get_json(f"{base}?metric=no-such-metric", status=400)["error"]
    assert "'metric'" in error and "no-such-metric" in error and "logme" in error and "pactran" in error
    error = get_json(f"{base}?order=up", status=400)["error"]
    assert "'order'" in error and "desc, asc" in error
    assert "'limit'" in get_json(f"{base}?limit=0", status=400)["error"]
    assert "unknown parameter 'sort'" in get_json(f"{base}?sort=logme", status=400)["error"]
    assert fetch(f"{web_server.url}/tasks/digits?metric=no-such-metric")[0] == 400
    limited = get_json(f"{base}?limit=2&metric=logme")
    assert len(limited["rows"]) == 2 and limited["scored_checkpoints"] == 5


def test_unknown_task_is_404_with_close_names(web_server: WebServer) -> None:
    error = get_json(f"{web_server.url}/tasks/digitz.json", status=404)["error"]
    assert "'digitz'" in error and "digits" in error
    assert fetch(f"{web_server.url}/tasks/nothing-like-it")[0] == 404


# ------------------------------------------------------------------------------------ safety


def test_pages_escape_hostile_ids_and_never_write(web_server: WebServer) -> None:
    catalog_file = web_server.index_dir / CATALOG_FILENAME
    before = hashlib.sha256(catalog_file.read_bytes()).hexdigest()
    text_spec = next(s for s in corpus_specs(web_server) if s.startswith(web_server.names["text_corpus"]))
    page = get_json(f"{web_server.url}/corpora/{text_spec}.json")
    hostile = [i for i in page["ids"] if web_server.names["hostile_folder"] in i]
    assert hostile, "the hostile checkpoint is probed on the text corpus"
    html = get_html(f"{web_server.url}/corpora/{text_spec}")
    assert HOSTILE_SCRIPT not in html
    assert "evil&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&lt;b&gt;" in html
    for path in ("/corpora", "/tasks", "/tasks/bbc", "/tasks/digits?metric=knn&order=asc"):
        assert HOSTILE_SCRIPT not in get_html(f"{web_server.url}{path}")
    assert hashlib.sha256(catalog_file.read_bytes()).hexdigest() == before


# ------------------------------------------------------------------------------------ other catalogs


def test_pages_of_a_catalog_without_probes_or_tasks(tmp_path: Path) -> None:
    Catalog(tmp_path / CATALOG_FILENAME).close()
    with served(tmp_path) as (url, _):
        assert get_json(f"{url}/corpora.json") == {"corpora": [], "total": 0}
        assert "No corpus has been probed yet" in get_html(f"{url}/corpora")
        assert get_json(f"{url}/tasks.json") == {"tasks": [], "total": 0}
        assert "No labeled task is stored yet" in get_html(f"{url}/tasks")
        assert "no corpus has been probed yet" in get_json(f"{url}/corpora/bbc-news.json", status=404)["error"]
        assert "no task is stored yet" in get_json(f"{url}/tasks/digits.json", status=404)["error"]


SYNTHETIC = 302  # checkpoints probed on one version: two more than the heatmap holds


def synthetic_catalog(folder: Path) -> None:
    """A catalog with SYNTHETIC checkpoints probed on corpus 'syn' (hash aaaa...) with every kappa
    pair stored, downloads = their number (one unknown), and a second version of 'syn' (bbbb...)."""
    with Catalog(folder / CATALOG_FILENAME) as catalog:
        catalog.conn.execute(
            "INSERT INTO checkpoints (checkpoint_id, source, first_seen_at, crawled_at, downloads) "
            "SELECT 'local:syn/ck' || lpad(i::VARCHAR, 4, '0'), 'local', now()::TIMESTAMP, now()::TIMESTAMP, "
            f"CASE WHEN i = {SYNTHETIC - 1} THEN NULL ELSE i END FROM range({SYNTHETIC}) t(i)")
        catalog.conn.execute(
            "INSERT INTO embeddings SELECT checkpoint_id, 'sha-' || checkpoint_id, 'syn', repeat(h, 64), 'last', "
            "'mean', 'float32', 'test', '1', n, n, 8, 'none', 'none', NULL, now()::TIMESTAMP "
            "FROM (SELECT checkpoint_id, 'a' AS h, 50 AS n FROM checkpoints UNION ALL "
            "SELECT checkpoint_id, 'b', 40 FROM checkpoints WHERE checkpoint_id < 'local:syn/ck0002')")
        catalog.conn.execute(
            "INSERT INTO kappa SELECT 'syn', repeat('a', 64), true, a.checkpoint_id, b.checkpoint_id, "
            "a.checkpoint_sha, b.checkpoint_sha, 0.05 + 0.9 * (hash(a.checkpoint_id || b.checkpoint_id) % 1000) / 1000.0, "
            "50, now()::TIMESTAMP FROM embeddings a JOIN embeddings b ON a.checkpoint_id < b.checkpoint_id "
            "WHERE a.corpus_hash = repeat('a', 64) AND b.corpus_hash = repeat('a', 64)")


def test_heatmap_holds_the_most_downloaded_and_versions_are_told_apart(tmp_path: Path) -> None:
    from hubindex.web.pages_relate import HEATMAP_MAX

    synthetic_catalog(tmp_path)
    spec = "syn@" + "a" * 12
    with served(tmp_path) as (url, _):
        page = get_json(f"{url}/corpora/{spec}.json")
        html = get_html(f"{url}/corpora/{spec}")
        ambiguous = get_json(f"{url}/corpora/syn.json", status=400)["error"]
        sized = fetch(f"{url}/corpora/syn@40")
    assert (page["probed"], page["shown"], page["capped"]) == (SYNTHETIC, HEATMAP_MAX, True)
    # The most downloaded: all but the one with the fewest and the one whose downloads are unknown.
    assert page["ids"] == [f"local:syn/ck{i:04d}" for i in range(1, SYNTHETIC - 1)]
    assert f"Showing {HEATMAP_MAX} of {SYNTHETIC} probed checkpoints" in html
    assert 'id="kappa-neighbors"' in html and 'id="kappa-matrix"' not in html
    assert len(page["matrix"]) == HEATMAP_MAX and all(len(row) == HEATMAP_MAX for row in page["matrix"])
    assert "2 probed versions" in ambiguous and "syn@50" in ambiguous and "syn@40" in ambiguous
    assert sized[0] == 301 and sized[1]["location"].endswith("/corpora/syn@" + "b" * 12)
