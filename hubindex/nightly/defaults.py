"""The nightly settings without a configuration file: keep current what the index already holds."""

from __future__ import annotations

import json

from hubindex.index import Index
from hubindex.nightly.config import CorpusChoice, NightlyConfig, ProbeSettings
from hubindex.nightly.crawl_sources import CrawlSource, config_key, crawler_options
from hubindex.plugins import corpora, crawlers


def default_config(index: Index) -> NightlyConfig:
    """Without --config: keep current what the index already holds.

    Repeat every crawl that has completed before (same source, same options), probe the corpora
    already probed (same size), compute kappa on them and score every registered task - probing
    and scoring only checkpoints whose weights are on disk (`local_path IS NOT NULL`).
    """
    if not index.catalog_path.exists():
        return NightlyConfig()
    with index.open_catalog(read_only=True) as catalog:
        crawled = catalog.conn.execute(
            "SELECT crawler, params FROM crawl_runs WHERE run_id IN ("
            " SELECT max(run_id) FROM crawl_runs WHERE status = 'completed' GROUP BY query_key) ORDER BY run_id"
        ).fetchall()
        probed = catalog.conn.execute(
            "SELECT corpus, arg_max(n_items, created_at) FROM embeddings GROUP BY corpus ORDER BY corpus"
        ).fetchall()
    sources = []
    for crawler, params in crawled:
        registration = crawlers().get(crawler)
        if registration is None:
            continue  # its plugin is gone
        names = {p.name: config_key(p) for p in registration.component.cli_params()}
        recorded = json.loads(params) if isinstance(params, str) else params
        given = {names[k]: v for k, v in recorded.items() if k in names and v not in (None, [], ())}
        sources.append(CrawlSource(crawler, crawler_options(crawler, given, f"crawl {crawler}"), given))
    registered = corpora()
    # A corpus that needs an argument (images:PATH) cannot be named again from its stored name.
    choices = tuple(CorpusChoice(name=name, max_items=n_items) for name, n_items in probed
                    if name in registered and not registered[name].component.takes_argument)
    return NightlyConfig(probe=ProbeSettings(corpora=choices)).model_copy(update={"crawl": tuple(sources)})

