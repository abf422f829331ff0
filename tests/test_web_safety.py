"""`hubindex serve` is read-only and refuses what it must, checked over HTTP (no browser):

- every route leaves the index folder byte for byte as it was (a crawl of every page reachable from
  /, their JSON forms, HEAD, and POST/PUT/DELETE/PATCH, which are 405);
- the SQL page refuses what `hubindex sql` refuses (writes, several statements, files, settings),
  each with a 400 and a message, and the other parameters carry no SQL;
- the SQL page's row cap and time limit hold on the server;
- a parameter outside its domain is a 400 whose message names it, an unknown name a 404;
- every response has the Content-Security-Policy, a foreign Host header is refused, hostile text
  is escaped, and the JSON form of a page is JSON whether asked by `.json` or by Accept;
- `hubindex serve` itself: a taken port, a missing catalog, a public address, and a writer that
  still gets the catalog while the server answers requests.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import pytest
from conftest import CliResult, assert_one_line_error, run_hubindex, served

TIMEOUT_S = 30.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)

    def error_message(self) -> str:
        """The one-line message of an error: `#error-message` of the HTML page, "error" of the JSON form."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return self.json()["error"]
        found = re.search(r'<p class="error" id="error-message">(.*?)</p>', self.text, re.DOTALL)
        assert found, self.text[:2000]
        return html.unescape(found.group(1))


def request(base: str, target: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> Reply:
    """One request to the server at base (http://host:port); target is a path with its query."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def get(base: str, target: str, **headers: str) -> Reply:
    return request(base, target, headers={k.replace("_", "-"): v for k, v in headers.items()})


def index_files(root: Path) -> dict[str, str]:
    """Every file under root (the WAL and snapshot included) -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ (a) read-only

MAX_URLS = 400
MAX_PER_PATTERN = 15  # URLs of one route with the same parameter names
MAX_PER_ROUTE = 30  # URLs of one route (the 1,800 timm checkpoints and the list's facets must not fill the crawl)
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


class Links(HTMLParser):
    """The URLs a page points at: links, stylesheets, scripts, images and GET forms."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("href", "src"):
            if values.get(name):
                self.urls.append(values[name])
        if tag == "form" and (values.get("method") or "get").lower() == "get" and values.get("action"):
            self.urls.append(values["action"])


def route_pattern(target: str) -> tuple[str, bool, tuple[str, ...]]:
    """What stands for one route: its first path segment (and whether deeper), JSON or not, the query's names."""
    parts = urlsplit(target)
    segments = parts.path.strip("/").split("/")
    head = segments[0].removesuffix(".json") or "/"
    key = head if len(segments) == 1 else f"{head}/*"
    names = tuple(sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}))
    return key + ("(json)" if parts.path.endswith(".json") else ""), len(segments) > 1, names


@dataclass
class Crawl:
    replies: dict[str, Reply] = field(default_factory=dict)  # target -> reply
    first_of_pattern: dict[tuple, str] = field(default_factory=dict)


def crawl(base: str) -> Crawl:
    """Breadth first from /, same server only, at most MAX_PER_PATTERN URLs per route pattern."""
    host = urlsplit(base).netloc
    result = Crawl()
    queue, seen, per_pattern, per_route = ["/"], {"/"}, Counter(), Counter()
    while queue and len(result.replies) < MAX_URLS:
        target = queue.pop(0)
        reply = get(base, target)
        result.replies[target] = reply
        result.first_of_pattern.setdefault(route_pattern(target), target)
        found: list[str] = []
        if reply.status in (301, 302, 303, 307, 308):
            found.append(reply.headers["location"])
        elif reply.headers.get("content-type", "").startswith("text/html"):
            parser = Links()
            parser.feed(reply.text)
            found += parser.urls
        for url in found:
            absolute = urlsplit(urljoin(base + target, url))
            if absolute.scheme != "http" or absolute.netloc != host:
                continue  # the Hub's pages, other sites: not this server
            next_target = absolute.path + (f"?{absolute.query}" if absolute.query else "")
            pattern = route_pattern(next_target)
            if next_target in seen or per_pattern[pattern] >= MAX_PER_PATTERN or per_route[pattern[0]] >= MAX_PER_ROUTE:
                continue
            seen.add(next_target)
            per_pattern[pattern] += 1
            per_route[pattern[0]] += 1
            queue.append(next_target)
    return result


@pytest.fixture(scope="module")
def index_at_start(web_server) -> dict[str, str]:
    """The served index's files when this module's first test began."""
    return index_files(web_server.index_dir)


def test_every_route_is_read_only(web_server, index_at_start) -> None:
    base, root = web_server.url, web_server.index_dir
    before = index_files(root)
    started = time.perf_counter()
    result = crawl(base)
    patterns = {pattern[0] for pattern in result.first_of_pattern}
    # What the crawl reached: every page of the navigation, their JSON forms, and the pages they link.
    for expected in ("/", "index(json)", "checkpoints", "checkpoints/*", "checkpoints(json)", "checkpoints/*(json)",
                     "lineage/*", "lineage/*(json)", "corpora", "corpora/*", "corpora/*(json)", "tasks", "tasks/*",
                     "tasks/*(json)", "runs", "runs/*", "failures", "sql", "sql(json)", "static/*"):
        assert expected in patterns, sorted(patterns)
    broken = {target: reply.status for target, reply in result.replies.items() if reply.status not in (200, 301)}
    assert not broken, broken  # every link a page shows leads somewhere
    for target, reply in result.replies.items():
        assert "content-security-policy" in reply.headers, target
        if reply.status == 200 and route_pattern(target)[0].endswith("(json)"):
            reply.json()  # the JSON forms parse
    # HEAD answers like GET without a body; anything that could write is refused, and changes nothing.
    for target in result.first_of_pattern.values():
        head = request(base, target, "HEAD")
        assert head.status == result.replies[target].status and head.body == b"", target
        for method in WRITE_METHODS:
            refused = request(base, target, method, body=b"sql=DROP+TABLE+checkpoints",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert refused.status == 405, (method, target, refused.status)
            if not target.startswith("/static/"):
                assert f"{method} is not allowed" in refused.error_message()
    after = index_files(root)
    assert sorted(after) == sorted(before), "files appeared or went in the index folder"
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, changed
    print(f"crawled {len(result.replies)} URLs in {time.perf_counter() - started:.1f} s "
          f"over {len(result.first_of_pattern)} route patterns")


# ------------------------------------------------------------------------------------ (b) SQL refusals

REFUSED_SQL = {
    "insert": "INSERT INTO checkpoints (checkpoint_id) VALUES ('x')",
    "update": "UPDATE checkpoints SET likes = 0",
    "delete": "DELETE FROM checkpoints",
    "drop": "DROP TABLE checkpoints",
    "create": "CREATE TABLE stolen AS SELECT * FROM checkpoints",
    "create-view": "CREATE TEMP VIEW v AS SELECT 1",
    "alter": "ALTER TABLE checkpoints ADD COLUMN x INTEGER",
    "attach": "ATTACH '/tmp/hubindex-web-attack.duckdb' AS attack",
    "detach": "DETACH catalog",
    "copy-out": "COPY checkpoints TO '/tmp/hubindex-web-attack.csv'",
    "copy-in": "COPY checkpoints FROM '/etc/passwd'",
    "export": "EXPORT DATABASE '/tmp/hubindex-web-attack'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "set": "SET enable_external_access = true",
    "set-global": "SET GLOBAL threads = 1",
    "reset": "RESET lock_configuration",
    "pragma": "PRAGMA enable_profiling",
    "call": "CALL pragma_version()",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "two-statements": "SELECT 1; DROP TABLE checkpoints",
    "trailing-statement": "SELECT checkpoint_id FROM checkpoints LIMIT 1; SELECT 2",
    "read-csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read-text": "SELECT * FROM read_text('/etc/passwd')",
    "read-blob": "SELECT * FROM read_blob('/etc/hostname')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "read-parquet": "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "read-json": "SELECT * FROM read_json_auto('/etc/os-release')",
    "file-scan": "SELECT * FROM '/etc/passwd'",
    "http": "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "not-sql": "SELEKT everything",
}


@pytest.mark.parametrize("name", list(REFUSED_SQL))
def test_sql_page_refuses_what_the_cli_refuses(web_server, name: str) -> None:
    sql = REFUSED_SQL[name]
    page = get(web_server.url, "/sql?" + urlencode({"sql": sql}))
    assert page.status == 400, (sql, page.status, page.text[:500])
    message = page.error_message()
    assert message, sql
    as_json = get(web_server.url, "/sql.json?" + urlencode({"sql": sql}))
    assert as_json.status == 400
    assert as_json.json()["error"] == message
    cli = run_hubindex("sql", sql, index_dir=web_server.index_dir)
    line = assert_one_line_error(cli)
    assert line == f"hubindex: error: {message}"  # the same refusal, word for word


def test_sql_page_quotes_stay_inside_literals(web_server) -> None:
    """A quote that closes a literal in a careless concatenation is only text in a real statement."""
    sql = "SELECT 'x''; DROP TABLE checkpoints; --' AS s, (SELECT count(*) FROM checkpoints) AS n"
    reply = get(web_server.url, "/sql.json?" + urlencode({"sql": sql}))
    assert reply.status == 200, reply.text[:500]
    data = reply.json()
    assert data["rows"] == [["x'; DROP TABLE checkpoints; --", data["rows"][0][1]]]
    assert data["rows"][0][1] > 1000


INJECTIONS = [
    ("/checkpoints.json?" + urlencode({"q": "' OR 1=1 --"}), "q"),
    ("/checkpoints.json?" + urlencode({"q": "%' OR '1'='1"}), "q"),
    ("/checkpoints.json?" + urlencode({"source": "timm' OR '1'='1"}), "source"),
    ("/checkpoints.json?" + urlencode({"license": "x') OR true --"}), "license"),
    ("/checkpoints.json?" + urlencode({"pipeline": '" OR ""="'}), "pipeline"),
    ("/failures.json?" + urlencode({"stage": "' OR 1=1 --"}), "stage"),
    ("/failures.json?" + urlencode({"kind": "x' UNION SELECT * FROM checkpoints --"}), "kind"),
]


@pytest.mark.parametrize(("target", "parameter"), INJECTIONS)
def test_injection_through_filters_matches_nothing(web_server, target: str, parameter: str) -> None:
    reply = get(web_server.url, target)
    assert reply.status == 200, reply.text[:500]
    assert reply.json()["total"] == 0


@pytest.mark.parametrize("target", [
    "/checkpoints/" + quote("x' OR '1'='1", safe=""),
    "/checkpoints/" + quote("timm:x'; DROP TABLE checkpoints; --", safe=":"),
    "/checkpoints/" + quote("hf:a/b\" OR \"\"=\"", safe=":/"),
    "/lineage/" + quote("'; DROP TABLE lineage; --", safe=""),
    "/corpora/" + quote("'; DROP TABLE kappa; --", safe=""),
    "/corpora/" + quote("bbc-news@' OR '1'='1", safe="@"),
    "/tasks/" + quote("' OR 1=1 --", safe=""),
    "/tasks/" + quote("digits' --", safe="") + ".json",
    "/checkpoints/" + quote("x' OR '1'='1", safe="") + ".json",
])
def test_injection_through_ids_is_not_found(web_server, target: str) -> None:
    reply = get(web_server.url, target)
    assert reply.status == 404, (target, reply.status, reply.text[:500])
    assert reply.error_message()


def test_sql_row_cap_and_time_limit_hold_on_the_server(web_index) -> None:
    index_dir, _ = web_index
    with served(index_dir, "--sql-row-cap", "5", "--sql-timeout", "0.5") as (base, _process):
        capped = get(base, "/sql.json?" + urlencode({"sql": "SELECT range AS i FROM range(100)"}))
        assert capped.status == 200, capped.text[:500]
        data = capped.json()
        assert data["rows"] == [[i] for i in range(5)]
        assert data["truncated"] is True
        page = get(base, "/sql?" + urlencode({"sql": "SELECT range AS i FROM range(100)"}))
        assert page.status == 200
        assert re.search(r"first 5 rows|5 rows shown|truncated", page.text, re.IGNORECASE), page.text[-3000:]
        for slow in ("SELECT count(*) FROM range(1000000000000)",
                     "SELECT count(*) FROM checkpoints a, checkpoints b, checkpoints c, checkpoints d"):
            started = time.perf_counter()
            refused = get(base, "/sql.json?" + urlencode({"sql": slow}))
            elapsed = time.perf_counter() - started
            assert refused.status == 400, (slow, refused.status, refused.text[:500])
            assert "0.5 s time limit" in refused.json()["error"], refused.json()
            assert elapsed < 5, elapsed
        # The server is still there, and answers the next query at once.
        assert get(base, "/sql.json?" + urlencode({"sql": "SELECT 42 AS answer"})).json()["rows"] == [[42]]


# ------------------------------------------------------------------------------------ (c) parameters

LONG = "x" * 10_000
OUT_OF_DOMAIN = [
    ("/checkpoints?page=0", "page"),
    ("/checkpoints?page=-1", "page"),
    ("/checkpoints?page=abc", "page"),
    ("/checkpoints?page=1.5", "page"),
    ("/checkpoints?page=99999999999999999999", "page"),
    ("/checkpoints?page=999", "page"),  # past the last page
    ("/checkpoints?q=MiniLM&page=2", "page"),
    ("/checkpoints?per_page=0", "per_page"),
    ("/checkpoints?per_page=100000", "per_page"),
    ("/checkpoints?sort=bogus", "sort"),
    ("/checkpoints?sort=downloads%3B+DROP+TABLE+checkpoints", "sort"),
    ("/checkpoints?order=up", "order"),
    ("/checkpoints?colour=red", "colour"),
    ("/checkpoints?page=1&page=2", "page"),
    ("/checkpoints?source=timm&source=local", "source"),
    (f"/checkpoints?q={LONG}", "q"),
    ("/checkpoints?q=a%00b", "q"),
    ("/checkpoints?q=a%0Ab", "q"),
    ("/checkpoints?license=%1B%5B31m", "license"),
    ("/?x=1", "x"),
    ("/lineage/hf:hubindex-zoo/all-MiniLM-L6-v2?nodes=1", "nodes"),
    ("/lineage/hf:hubindex-zoo/all-MiniLM-L6-v2?nodes=100000", "nodes"),
    ("/runs?limit=0", "limit"),
    ("/runs?limit=many", "limit"),
    ("/runs/nightly/abc", "run_id"),
    ("/runs/nightly/-1", "run_id"),
    ("/failures?state=closed", "state"),
    ("/failures?page=0", "page"),
    ("/failures?page=99", "page"),
    (f"/failures?stage={LONG}", "stage"),
    ("/corpora?sort=name", "sort"),
    ("/corpora/bbc-news@200?x=1", "x"),
    ("/tasks?page=2", "page"),
    ("/tasks/digits?metric=bogus", "metric"),
    ("/tasks/digits?metric=logme%27%20OR%201%3D1", "metric"),
    ("/tasks/digits?order=up", "order"),
    ("/tasks/digits?limit=0", "limit"),
    ("/tasks/digits?limit=1e9", "limit"),
    ("/tasks/digits?metric=logme&metric=knn", "metric"),
    ("/sql?sql=" + "x" * 20_001, "sql"),
    ("/sql?query=SELECT+1", "query"),
    ("/sql?sql=SELECT+1&sql=SELECT+2", "sql"),
]


@pytest.mark.parametrize(("target", "parameter"), OUT_OF_DOMAIN, ids=[t[:60] for t, _ in OUT_OF_DOMAIN])
def test_parameter_outside_its_domain_is_a_400_that_names_it(web_server, target: str, parameter: str) -> None:
    page = get(web_server.url, target)
    assert page.status == 400, (target, page.status, page.text[:500])
    assert parameter in page.error_message(), page.error_message()
    path, _, query = target.partition("?")
    json_target = ("/index.json" if path == "/" else f"{path}.json") + (f"?{query}" if query else "")
    if path.startswith("/runs/nightly/"):
        json_target = target  # no .json form of a run's path parameter; Accept asks instead
    as_json = get(web_server.url, json_target, Accept="application/json")
    assert as_json.status == 400
    assert as_json.json()["error"] == page.error_message()


def test_control_characters_in_a_path_are_400(web_server) -> None:
    reply = get(web_server.url, "/checkpoints/timm:a%01b")
    assert reply.status == 400, reply.status
    assert "checkpoint" in reply.error_message()
    reply = get(web_server.url, "/checkpoints/" + "x" * 400)
    assert reply.status == 400, reply.status


@pytest.mark.parametrize("target", [
    "/checkpoints/hf:nobody/nothing",
    "/checkpoints/timm:no_such_model.x",
    "/checkpoints/hf:nobody/nothing.json",
    "/lineage/hf:nobody/nothing",
    "/runs/nightly/999999",
    "/corpora/no-such-corpus",
    "/corpora/bbc-news@0123456789ab",
    "/tasks/no-such-task",
    "/no-such-page",
    "/static/no-such-file.js",
])
def test_unknown_ids_are_404(web_server, target: str) -> None:
    reply = get(web_server.url, target)
    assert reply.status == 404, (target, reply.status, reply.text[:300])
    assert "content-security-policy" in reply.headers
    if not target.startswith("/static/"):
        assert reply.error_message()


EXOTIC_SQL = ("SELECT [1, 2] AS l, {'a': 1} AS s, 'nan'::DOUBLE AS n, 'infinity'::DOUBLE AS i, '<b>x</b>' AS h, "
              "'\\x00'::BLOB AS b, INTERVAL 1 DAY AS d, 1::HUGEINT AS hi, [NULL] AS ln, map([1], [2]) AS m, "
              "'2024-01-01'::DATE AS dt, '12:00'::TIME AS t, 1.5::DECIMAL(4, 2) AS dec, NULL AS nothing, "
              "'{\"k\": [1]}'::JSON AS j")


@pytest.mark.parametrize(("target", "status"), [
    ("/checkpoints.json?q=%FF", 200),
    ("/checkpoints/%FF", 404),
    ("/corpora/%FF%FE", 404),
    ("/tasks/%C0%AF", 404),
    ("/checkpoints?%FF=1", 400),
    ("/checkpoints?q=%ZZ", 200),
    ("/static/../catalog.duckdb", 404),
    ("/static/%2e%2e/%2e%2e/catalog.duckdb", 404),
    ("/static/..%2fcatalog.duckdb", 404),
    ("/sql.json?" + urlencode({"sql": EXOTIC_SQL}), 200),
    ("/sql?" + urlencode({"sql": EXOTIC_SQL}), 200),
])
def test_odd_input_is_never_a_500(web_server, target: str, status: int) -> None:
    reply = get(web_server.url, target)
    assert reply.status == status, (target, reply.status, reply.text[:500])
    assert b"DUCK" not in reply.body[:64]  # never the catalog file itself
    if target.startswith("/sql.json"):
        row = reply.json()["rows"][0]
        assert row[:5] == [[1, 2], {"a": 1}, None, None, "<b>x</b>"]  # NaN and infinity as null: valid JSON
    elif target.startswith("/sql?"):
        assert "&lt;b&gt;x&lt;/b&gt;" in reply.text and "<b>x</b>" not in reply.text


# ------------------------------------------------------------------------------------ (d) headers, escaping


def test_foreign_host_header_is_refused(web_server) -> None:
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
        reply = get(web_server.url, "/", Host=host)
        assert reply.status == 400, (host, reply.status)
        assert b"<h1>The index</h1>" not in reply.body
    port = urlsplit(web_server.url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert get(web_server.url, "/", Host=host).status == 200, host


def test_security_headers_on_pages_errors_and_assets(web_server) -> None:
    for target in ("/", "/checkpoints", "/checkpoints.json", "/no-such-page", "/checkpoints?page=0",
                   "/static/style.css"):
        reply = get(web_server.url, target)
        csp = reply.headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, (target, csp)
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert reply.headers.get("x-content-type-options") == "nosniff"


def hostile_id(web_server) -> str:
    found = get(web_server.url, "/checkpoints.json?" + urlencode({"q": "evil"})).json()["checkpoints"]
    (row,) = [r for r in found if web_server.names["hostile_folder"] in r["checkpoint_id"]]
    return row["checkpoint_id"]


def test_hostile_checkpoint_is_escaped(web_server) -> None:
    checkpoint_id = hostile_id(web_server)
    assert checkpoint_id.endswith("evil<script>alert('x')</script>&<b>")
    listing = get(web_server.url, "/checkpoints?" + urlencode({"q": "evil"}))
    assert listing.status == 200
    page = get(web_server.url, "/checkpoints/" + quote(checkpoint_id, safe="/:@"))
    assert page.status == 200, page.status
    lineage = get(web_server.url, "/lineage/" + quote(checkpoint_id, safe="/:@"))
    assert lineage.status == 200, lineage.status
    for reply in (listing, page, lineage):
        assert "evil&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&lt;b&gt;" in reply.text
        assert "<script>alert(" not in reply.text
        assert "onerror=alert" not in reply.text.replace("onerror=alert(&#39;lic&#39;)", "")
        assert "<img src=x" not in reply.text
        assert "<b>" not in reply.text
    assert "&lt;img src=x onerror=alert(&#39;lic&#39;)&gt;" in page.text  # the card's license, as text
    # The JSON form holds the id as it is (JSON is not HTML; the browser never renders it).
    as_json = get(web_server.url, "/checkpoints/" + quote(checkpoint_id, safe="/:@") + ".json")
    assert as_json.json()["checkpoint_id"] == checkpoint_id
    assert as_json.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("target", ["/", "/checkpoints?q=MiniLM&sort=id", "/checkpoints/hf:hubindex-zoo/all-MiniLM-L6-v2",
                                    "/runs", "/failures", "/sql?sql=SELECT+1+AS+one", "/checkpoints?page=0"])
def test_json_form_by_suffix_and_by_accept_agree(web_server, target: str) -> None:
    path, _, query = target.partition("?")
    suffixed = ("/index.json" if path == "/" else f"{path}.json") + (f"?{query}" if query else "")
    by_suffix = get(web_server.url, suffixed)
    by_accept = get(web_server.url, target, Accept="application/json")
    html = get(web_server.url, target, Accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert by_suffix.status == by_accept.status == html.status
    timing = {"seconds"}  # the SQL page's own run time differs between two runs
    assert ({k: v for k, v in by_suffix.json().items() if k not in timing}
            == {k: v for k, v in by_accept.json().items() if k not in timing})
    assert html.headers["content-type"].startswith("text/html")
    assert f'href="{suffixed.replace("&", "&amp;")}"' in html.text  # the page names its JSON form


# ------------------------------------------------------------------------------------ `hubindex serve`


def serve_once(*args: str, timeout_s: float = 60) -> CliResult:
    """`hubindex ARGS` in its own process (a serve that wrongly starts is stopped by the timeout)."""
    done = subprocess.run([sys.executable, "-m", "hubindex.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_serve_on_a_taken_port_is_one_line(web_index) -> None:
    index_dir, _ = web_index
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = serve_once("--index", str(index_dir), "serve", "--port", str(port))
    assert_one_line_error(result, f"port {port}", "in use", exit_code=2)


def test_serve_without_a_catalog_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-index"
    empty.mkdir()
    result = serve_once("--index", str(empty), "serve", "--port", "0")
    assert_one_line_error(result, "no catalog")
    assert list(empty.iterdir()) == []  # serving never creates a catalog
    result = serve_once("--index", str(tmp_path / "missing"), "serve", "--port", "0")
    assert_one_line_error(result)
    assert not (tmp_path / "missing").exists()


def test_serve_on_a_public_address_warns(web_index) -> None:
    index_dir, _ = web_index
    with served(index_dir, "--host", "0.0.0.0") as (base, process):
        port = urlsplit(base).port
        reply = get(f"http://127.0.0.1:{port}", "/", Host=f"some-name.example:{port}")
        assert reply.status == 200  # not loopback-only: the warning says anyone may read it
    warning = process.stderr.read()
    assert "warning: listening on 0.0.0.0" in warning, warning
    assert "anyone" in warning


def test_a_writer_gets_the_catalog_while_the_server_answers(web_index, tmp_path: Path) -> None:
    index_dir, _ = web_index
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    statuses: Counter = Counter()
    stop = threading.Event()

    def browse(base: str) -> None:
        targets = ["/", "/checkpoints?sort=id&page=3", "/checkpoints.json?source=timm", "/failures", "/runs"]
        i = 0
        while not stop.is_set():
            reply = get(base, targets[i % len(targets)])
            statuses[reply.status] += 1
            if reply.status == 200 and b'id="snapshot-notice"' in reply.body:
                statuses["snapshot"] += 1
            i += 1

    with served(copy) as (base, process):
        browser = threading.Thread(target=browse, args=(base,), daemon=True)
        browser.start()
        time.sleep(1.0)  # requests in flight before the writer starts
        try:
            started = time.perf_counter()
            result = run_hubindex("crawl", "timm", index_dir=copy)
            crawl_s = time.perf_counter() - started
            time.sleep(0.5)
        finally:
            stop.set()
            browser.join(timeout=60)
        assert result.exit_code == 0, result.stderr[-2000:]
        assert "completed" in result.stdout + result.stderr
        assert get(base, "/").status == 200  # still serving, and the catalog opens again
        assert process.poll() is None
        assert not list(copy.glob("catalog.writer-waiting.*"))  # the writer's marker is gone
    print(f"crawl took {crawl_s:.1f} s while the server answered {dict(statuses)}")
    assert statuses[200] > 10, statuses
    assert set(statuses) <= {200, 503, "snapshot"}, statuses


def test_the_served_index_is_unchanged_after_this_module(web_server, index_at_start) -> None:
    """Nothing above (the refused queries through the page and the CLI included) changed a byte."""
    assert index_files(web_server.index_dir) == index_at_start
