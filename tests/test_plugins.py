"""The plugin system: built-ins and third parties through the same hooks, listed by `hubindex plugins`."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import run_hubindex

from hubindex import hookimpl, hookspecs
from hubindex.pipeline import run_crawl
from hubindex.plugins import DEFAULT_PLUGINS, crawlers, describe_plugins, pm
from hubindex.types import CheckpointRecord, Corpus, Crawler, Metric, Probe, Query

REPO = Path(__file__).resolve().parent.parent
HOOK_NAMES = sorted(name for name, obj in inspect.getmembers(hookspecs) if hasattr(obj, "hubindex_spec"))


@pytest.fixture
def register_plugin() -> Iterator[Any]:
    """Register plugin objects under a name for one test; unregister them afterwards."""
    names: list[str] = []

    def register(plugin: object, name: str) -> None:
        pm.register(plugin, name=name)
        names.append(name)

    yield register
    for name in names:
        pm.unregister(name=name)


class ToyCrawler(Crawler):
    """Two fixed checkpoints."""

    name = "toy"
    version = "3"
    description = "two toy checkpoints"
    owned_columns = frozenset({"repo_id", "sha", "license"})

    def crawl(self, ctx: Any) -> Iterator[CheckpointRecord]:
        yield CheckpointRecord("toy:a", {"repo_id": "a", "sha": "1", "license": "mit"})
        yield CheckpointRecord("toy:b", {"repo_id": "b", "sha": "2", "license": None})


class ToyMetric(Metric):
    name = "toy-metric"
    version = "0.1"

    def score(self, data: Any) -> float:
        return float(len(data.labels))


class ToyProbe(Probe):
    name = "toy-probe"


class ToyQuery(Query):
    name = "toy-query"


class ToyCorpus(Corpus):
    name = "toy-corpus"


class ToyPlugin:
    @hookimpl
    def register_corpora(self, register: Any) -> None:
        register(ToyCorpus)

    @hookimpl
    def register_crawlers(self, register: Any) -> None:
        register(ToyCrawler)

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register(ToyMetric)

    @hookimpl
    def register_probes(self, register: Any) -> None:
        register(ToyProbe)

    @hookimpl
    def register_queries(self, register: Any) -> None:
        register(ToyQuery)


def test_hookspecs_are_the_documented_set() -> None:
    assert HOOK_NAMES == [
        "prepare_catalog", "register_commands", "register_corpora", "register_crawlers",
        "register_executors", "register_metrics", "register_probes", "register_queries", "register_web_pages",
    ]
    for name in HOOK_NAMES:
        assert getattr(hookspecs, name).__doc__, f"hook {name} needs a docstring"


def test_every_hook_is_documented() -> None:
    guide = (REPO / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^#+\s+`?(\w+)\(", guide, flags=re.M))
    missing = [name for name in HOOK_NAMES if name not in headings]
    assert not missing, f"docs/plugins.md lacks a heading for hooks {missing}"


def test_every_hook_has_a_test() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    untested = [name for name in HOOK_NAMES if f"def {name}(" not in source]
    assert not untested, f"no test implements hooks {untested}"


def test_builtins_register_through_hooks() -> None:
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(DEFAULT_PLUGINS) <= names
    assert {"hf", "timm", "local"} <= set(crawlers())
    assert crawlers()["hf"].plugin == "hubindex_plugins.crawl_hf"


def test_plugins_command_lists_builtins(hubindex: Any) -> None:
    result = hubindex("plugins", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["hubindex_plugins.crawl_timm"]["crawlers"] == ["timm (v1)"]
    assert listed["hubindex_plugins.crawl_timm"]["hooks"] == ["register_crawlers"]
    assert listed["hubindex_plugins.catalog_views"]["hooks"] == ["prepare_catalog"]
    assert all(entry["builtin"] for entry in listed.values())

    table = hubindex("plugins")
    assert table.exit_code == 0
    assert "crawlers: hf (v1)" in table.stdout


def test_third_party_plugin_registers_every_kind(register_plugin: Any, hubindex: Any) -> None:
    register_plugin(ToyPlugin(), "toy-plugin")
    entry = next(e for e in describe_plugins() if e["name"] == "toy-plugin")
    assert entry["builtin"] is False
    assert entry["crawlers"] == ["toy (v3)"]
    assert entry["metrics"] == ["toy-metric (v0.1)"]
    assert entry["probes"] == ["toy-probe (v1)"]
    assert entry["queries"] == ["toy-query (v1)"]
    assert entry["corpora"] == ["toy-corpus (v1)"]

    # A third-party crawler gets its own `hubindex crawl NAME` command and writes the catalog.
    result = hubindex("crawl", "toy")
    assert result.exit_code == 0, result.stderr
    assert "2 added" in result.stdout
    rows = hubindex("sql", "SELECT checkpoint_id, source, license FROM checkpoints ORDER BY 1", "--format", "json")
    assert json.loads(rows.stdout) == [
        {"checkpoint_id": "toy:a", "source": "toy", "license": "mit"},
        {"checkpoint_id": "toy:b", "source": "toy", "license": None},
    ]


def test_third_party_plugin_is_gone_after_unregister() -> None:
    assert "toy" not in crawlers()


def test_bad_registrations_are_refused(register_plugin: Any) -> None:
    class Nameless(Crawler):
        name = "Bad Name"

    class NotACrawler:
        name = "x"

    class BadPlugin:
        @hookimpl
        def register_crawlers(self, register: Any) -> None:
            register(Nameless)

    class WrongType:
        @hookimpl
        def register_crawlers(self, register: Any) -> None:
            register(NotACrawler)

    register_plugin(BadPlugin(), "bad-plugin")
    with pytest.raises(ValueError, match="lowercase"):
        crawlers()
    pm.unregister(name="bad-plugin")
    register_plugin(WrongType(), "wrong-type")
    with pytest.raises(TypeError, match="not a Crawler subclass"):
        crawlers()


def test_repeated_name_warns_and_later_plugin_wins(register_plugin: Any) -> None:
    class OtherTimm(Crawler):
        name = "timm"

    class Shadow:
        @hookimpl
        def register_crawlers(self, register: Any) -> None:
            register(OtherTimm)

    register_plugin(Shadow(), "shadow")
    with pytest.warns(UserWarning, match="'timm' from plugin 'shadow' replaces"):
        found = crawlers()
    assert found["timm"].component is OtherTimm
    assert found["timm"].plugin == "shadow"


def test_register_commands_adds_cli_command(register_plugin: Any) -> None:
    import click

    from hubindex.cli import cli

    class Commands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("hello-toy")
            def hello_toy() -> None:
                click.echo("hello from a plugin")

    register_plugin(Commands(), "commands-plugin")
    pm.hook.register_commands(cli=cli)  # what hubindex.cli does at import for installed plugins
    try:
        result = run_hubindex("hello-toy")
        assert result.exit_code == 0
        assert result.stdout.strip() == "hello from a plugin"
    finally:
        cli.commands.pop("hello-toy", None)


def test_prepare_catalog_runs_on_every_connection(register_plugin: Any, index: Any, hubindex: Any) -> None:
    class Views:
        @hookimpl
        def prepare_catalog(self, conn: Any) -> None:
            conn.execute("CREATE OR REPLACE TEMP VIEW toy_view AS SELECT 42 AS answer")

    register_plugin(Views(), "views-plugin")
    with index.open_catalog() as catalog:  # creates the catalog
        assert catalog.conn.execute("SELECT answer FROM toy_view").fetchone() == (42,)
    result = hubindex("sql", "SELECT answer FROM toy_view", "--format", "csv")
    assert result.stdout.splitlines() == ["answer", "42"]


def test_register_web_pages_adds_a_page_and_refuses_write_routes(register_plugin: Any, index: Any) -> None:
    import threading
    import urllib.request

    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from hubindex.web.app import create_app
    from hubindex.web.params import only
    from hubindex.web.render import json_response
    from hubindex.web.serving import ServeSettings, reading

    def answer(request: Request) -> Response:
        only(request)
        with reading(request) as catalog:
            return json_response({"checkpoints": catalog.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]})

    class Pages:
        @hookimpl
        def register_web_pages(self, register: Any) -> None:
            register(Route("/toy-count", answer, methods=["GET"]))

    with index.open_catalog():  # a catalog to serve
        pass
    register_plugin(Pages(), "pages-plugin")
    server = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(index.root)), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/toy-count?") as response:
            assert json.loads(response.read()) == {"checkpoints": 0}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/checkpoints.json") as response:  # built-ins too
            assert json.loads(response.read())["total"] == 0
    finally:
        server.should_exit = True
        thread.join(10)

    class Writer:
        @hookimpl
        def register_web_pages(self, register: Any) -> None:
            register(Route("/toy-delete", answer, methods=["POST"]))

    register_plugin(Writer(), "writer-plugin")
    with pytest.raises(TypeError, match="writer-plugin.*GET routes only"):
        create_app(ServeSettings(index.root))


def test_crawl_run_of_plugin_through_pipeline(register_plugin: Any, index: Any) -> None:
    register_plugin(ToyPlugin(), "toy-plugin")
    first = run_crawl(index, ToyCrawler(), show_progress=False)
    second = run_crawl(index, ToyCrawler(), show_progress=False)
    assert (first.added, first.unchanged) == (2, 0)
    assert (second.added, second.unchanged, second.changed) == (0, 2, 0)


def test_entry_point_plugins_load_outside_tests(tmp_path: Path) -> None:
    """A package with an entry point in group `hubindex` is loaded; HUBINDEX_LOAD_PLUGINS filters."""
    dist = tmp_path / "site"
    pkg = dist / "hubindex_toy_ep"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from hubindex import hookimpl
        from hubindex.types import Crawler

        class EpCrawler(Crawler):
            name = "ep-toy"

        @hookimpl
        def register_crawlers(register):
            register(EpCrawler)
    """))
    info = dist / "hubindex_toy_ep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hubindex-toy-ep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hubindex]\nep_toy = hubindex_toy_ep\n")
    script = "from hubindex.plugins import crawlers; print(sorted(crawlers()))"
    env_base = {"PYTHONPATH": str(dist), "PATH": "/usr/bin:/bin"}
    loaded = subprocess.run([sys.executable, "-c", script], env=env_base, capture_output=True, text=True, check=True)
    assert "ep-toy" in loaded.stdout
    filtered = subprocess.run(
        [sys.executable, "-c", script],
        env={**env_base, "HUBINDEX_LOAD_PLUGINS": "hubindex_plugins.crawl_timm"},
        capture_output=True, text=True, check=True,
    )
    assert filtered.stdout.strip() == "['timm']"
