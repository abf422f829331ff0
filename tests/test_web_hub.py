"""`hubindex serve` over an index crawled from the Hub imitation: the card conventions, access states
and lineage shapes the Hub has (gated, disabled and private repos, model-index results, parameters by
dtype, missing licenses and pipelines, adapters, quantised leaves, merges, self-references, cycles,
parents outside the catalog, a disabled repo recorded as a failure), every page reachable from `/`
answering, and the lineage pages drawing what the lineage table holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import run_hubindex, served
from hub_imitation import HubImitation, hub, hub_server  # noqa: F401 - hub and hub_server are fixtures
from test_crawl_hf import populate
from test_lineage import populate_family
from test_web_safety import crawl, get

from hubindex.catalog import Catalog
from hubindex.index import Index


def populate_odd_cards(hub: HubImitation) -> None:
    """Cards as people write them: markup in the license, odd relations, no metadata, many datasets."""
    hub.add_repo("wild/markup-card", license="<b>custom</b> & \"quoted\"", pipeline_tag="text-generation",
                 model_type="llama", datasets=[f"org/data-{i}" for i in range(40)], extra_tags=["<i>tag</i>"])
    hub.add_repo("wild/bare", pipeline_tag=None, library_name=None, model_type=None, license=None)
    hub.add_repo("wild/parent-elsewhere", base_model="elsewhere/not-crawled", base_model_relation="adapter")
    hub.add_repo("wild/unicode-名前", pipeline_tag="feature-extraction", license="other")


@pytest.fixture
def hub_index(hub: HubImitation, tmp_path: Path) -> Index:
    populate(hub)
    populate_family(hub)
    populate_odd_cards(hub)
    index = Index(tmp_path / "index")
    assert run_hubindex("crawl", "hf", "--endpoint", hub.url, index_dir=index.root).exit_code == 0
    hub.update_repo("acme/bert-tiny", disabled=True)  # the next crawl cannot read it: a failure row
    run_hubindex("crawl", "hf", "--endpoint", hub.url, "--full", index_dir=index.root)
    return index


def table(index: Index, sql: str) -> list[tuple[Any, ...]]:
    with Catalog(index.catalog_path, read_only=True) as catalog:
        return catalog.conn.execute(sql).fetchall()


def test_every_page_of_a_hub_crawled_index_answers(hub_index: Index) -> None:
    checkpoints = [cid for (cid,) in table(hub_index, "SELECT checkpoint_id FROM checkpoints ORDER BY 1")]
    assert len(checkpoints) >= 20
    with served(hub_index.root) as (url, _):
        found = crawl(url)
        statuses = {target: reply.status for target, reply in found.replies.items()}
        assert statuses and all(status in (200, 301) for status in statuses.values()), \
            {t: s for t, s in statuses.items() if s not in (200, 301)}
        # Every checkpoint's page and family graph answers, whatever its card held.
        for checkpoint_id in checkpoints:
            for page in ("checkpoints", "lineage"):
                reply = get(url, f"/{page}/{checkpoint_id}.json")
                assert reply.status == 200, (page, checkpoint_id, reply.text[:300])
                assert reply.json()["checkpoint_id"] == checkpoint_id
        markup = get(url, "/checkpoints/hf:wild/markup-card")
        assert "&lt;b&gt;custom&lt;/b&gt; &amp; &#34;quoted&#34;" in markup.text and "<b>custom</b>" not in markup.text
        # A repo id the Hub would not accept (not ASCII) is a failure row, and the search finds no checkpoint.
        assert get(url, "/checkpoints.json?q=" + quote("名前")).json()["total"] == 0
        # Facet values that are unknown on some rows: `(none)` selects exactly those.
        bare = get(url, "/checkpoints.json?license=(none)&per_page=200").json()
        assert {row["checkpoint_id"] for row in bare["checkpoints"]} == {
            cid for (cid,) in table(hub_index, "SELECT checkpoint_id FROM checkpoints WHERE license IS NULL")}
        # The failures page shows the failure rows the crawl recorded.
        failures = get(url, "/failures.json?state=all").json()
        assert failures["total"] == table(hub_index, "SELECT count(*) FROM failures")[0][0] >= 1
        shown = {(f["subject"], f["kind"]) for f in failures["failures"]}
        assert shown == set(table(hub_index, "SELECT subject, kind FROM failures"))
        assert ("wild/unicode-名前", "invalid-repo-id") in shown


def test_lineage_pages_draw_the_lineage_table(hub_index: Index) -> None:
    with served(hub_index.root) as (url, _):
        merged = get(url, "/lineage/hf:acme/merged.json").json()
        parents = {e["checkpoint_id"] for e in merged["edges"] if e["child"] == "hf:acme/merged"}
        assert parents == {"hf:acme/ft1", "hf:acme/ft2"}
        assert {e["relation"] for e in merged["edges"] if e["child"] == "hf:acme/merged"} == {"merge"}
        # A 2-cycle: both edges drawn, marked as a cycle, neither followed.
        ping = get(url, "/lineage/hf:acme/ping.json").json()
        assert {(e["child"], e["checkpoint_id"], e["status"]) for e in ping["edges"]} == {
            ("hf:acme/ping", "hf:acme/pong", "cycle"), ("hf:acme/pong", "hf:acme/ping", "cycle")}
        drawing = get(url, "/lineage/hf:acme/ping").text
        assert drawing.count('stroke-dasharray="2,3"') == 2  # the dotted cycle edges
        # A parent that is not crawled is named, drawn hollow, and not linked.
        adapter = get(url, "/checkpoints/hf:wild/parent-elsewhere")
        assert "hf:elsewhere/not-crawled" in adapter.text
        assert 'href="/checkpoints/hf:elsewhere/not-crawled"' not in adapter.text
        family = get(url, "/lineage/hf:wild/parent-elsewhere").text
        assert re.search(r'data-checkpoint="hf:elsewhere/not-crawled">\s*<circle[^>]*fill="#ffffff"', family)
        # The base's card counts what the closure holds.
        base = get(url, "/checkpoints/hf:acme/base.json").json()
        (descendants,) = table(hub_index, "SELECT count(*) FROM lineage_closure WHERE ancestor = 'hf:acme/base'")[0]
        assert base["lineage"]["descendants_total"] == descendants >= 7
