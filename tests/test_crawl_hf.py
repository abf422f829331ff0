"""The Hugging Face crawler, through the real CLI, against a Hub imitation served on 127.0.0.1.

The imitation (tests/hub_imitation.py) answers what huggingface_hub sends; the first tests check
that huggingface_hub's own HfApi, hf_hub_download and snapshot_download work against it, so the
crawler tests below meet the Hub as the real client does (pagination, error headers). The crawler
paginates and retries by itself and maps errors with huggingface_hub's hf_raise_for_status.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    BadRequestError,
    DisabledRepoError,
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import get_session, hf_raise_for_status

from hub_imitation import (  # noqa: F401 - hub and hub_server are fixtures
    LIST, MODEL_INFO, TREE, Fault, HubImitation, closed_port, hub, hub_server,
)
from hubindex.errors import UsageError
from hubindex.index import Index
from hubindex_plugins.crawl_hf import HfCrawler, HubClient

MODEL_INDEX = [{
    "name": "vit-small",
    "results": [
        {
            "task": {"type": "image-classification"},
            "dataset": {"type": "imagenet-1k", "name": "ImageNet", "split": "validation"},
            "metrics": [{"type": "accuracy", "value": 0.81}, {"type": "top-5", "value": "0.95"},
                        {"type": "junk", "value": "n/a"}],
        },
        {"task": {"type": "image-classification"}, "dataset": {"name": "CIFAR-10"},
         "metrics": [{"name": "Accuracy", "value": 0.97}]},
    ],
}]
TIMM_CONFIG = {
    "architecture": "resnet50",
    "num_classes": 1000,
    "num_features": 2048,
    "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224], "crop_pct": 0.95, "license": "apache-2.0"},
}


# ---------------------------------------------------------------------------------- helpers


@dataclass
class Waits:
    """Seconds the crawler's RetryPolicy and huggingface_hub's http_backoff asked to sleep."""

    crawler: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)


REAL_INIT = HfCrawler.__init__


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    """The crawler records its retry waits instead of sleeping (HfCrawler.sleep is the hook)."""
    recorded = Waits()
    original_init = HfCrawler.__init__

    def init(self: HfCrawler, **options: Any) -> None:
        original_init(self, **options)
        self.sleep = recorded.crawler.append

    monkeypatch.setattr(HfCrawler, "__init__", init)
    return recorded


class _RecordingTime:
    """Stands in for the `time` module inside huggingface_hub.utils._http: sleep() only records."""

    def __init__(self, log: list[float]) -> None:
        self._log = log

    def sleep(self, seconds: float) -> None:
        self._log.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def client_waits(monkeypatch: pytest.MonkeyPatch, waits: Waits) -> Waits:
    """Also record (not sleep) the waits of huggingface_hub's own backoff on listing pages."""
    monkeypatch.setattr(hf_http, "time", _RecordingTime(waits.client))
    return waits


def populate(hub: HubImitation) -> None:
    """Six listed models across two pages of three, plus one private model that is never listed."""
    hub.add_repo(
        "acme/vit-small", model_type="vit", architectures=["ViTForImageClassification"],
        datasets=["imagenet-1k"], base_model="google/vit-base-patch16-224", arxiv=["2010.11929"],
        model_index=MODEL_INDEX, params={"F32": 22_050_664, "F16": 1000}, downloads=5000, likes=50,
        files={"config.json": b'{"model_type": "vit"}', "model.safetensors": b"\x01" * 64,
               "pytorch_model.bin": b"\x02" * 48, "README.md": b"# vit\n"},
    )
    hub.add_repo("acme/bert-tiny", pipeline_tag="fill-mask", model_type="bert", license="mit",
                 params={"F32": 4_400_000}, downloads=4000, likes=40)
    hub.add_repo("timm/resnet50.a1_in1k", library_name="timm", config=TIMM_CONFIG, params={"F32": 25_557_032},
                 downloads=3000, likes=30)
    hub.add_repo("other/gated-model", gated="manual", pipeline_tag="text-generation", model_type="llama",
                 downloads=2000, likes=20)
    hub.add_repo("other/auto-gated", gated="auto", license=None, pipeline_tag=None, library_name=None,
                 model_type=None, downloads=1000, likes=10)
    hub.add_repo("solo-model", library_name="timm", pipeline_tag="image-classification", downloads=500, likes=5)
    hub.add_repo("acme/private-model", private=True, downloads=9999)


LISTED = ["acme/vit-small", "acme/bert-tiny", "timm/resnet50.a1_in1k", "other/gated-model",
          "other/auto-gated", "solo-model"]


def crawl(hubindex: Any, hub: HubImitation, *args: str) -> Any:
    return hubindex("crawl", "hf", "--endpoint", hub.url, *args)


def query(index: Index, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with index.open_catalog(read_only=True) as catalog:
        cur = catalog.conn.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def checkpoints(index: Index) -> dict[str, dict[str, Any]]:
    return {r["checkpoint_id"]: r for r in query(index, "SELECT * FROM checkpoints")}


def runs(index: Index) -> list[dict[str, Any]]:
    return query(index, "SELECT * FROM crawl_runs ORDER BY run_id")


def failures(index: Index) -> list[dict[str, Any]]:
    return query(index, "SELECT * FROM failures ORDER BY failure_id")


def naive(value: datetime) -> datetime:
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


# ------------------------------------------------------------- the imitation is faithful


def test_list_models_against_imitation(hub: HubImitation) -> None:
    populate(hub)
    api = HfApi(endpoint=hub.url)

    plain = list(api.list_models(sort="downloads"))
    assert [m.id for m in plain] == LISTED  # private repo hidden, descending downloads
    assert all(m.sha is None and m.last_modified is None for m in plain)  # a plain item has neither
    assert plain[0].downloads == 5000 and plain[0].likes == 50 and plain[0].created_at is not None
    assert plain[0].pipeline_tag == "image-classification" and plain[0].library_name == "transformers"
    # Six items in pages of three: the client followed one Link.
    pages = hub.requests(LIST)
    assert len(pages) == 2 and "cursor" in pages[1].query and pages[1].param("sort") == "downloads"

    expanded = list(api.list_models(sort="lastModified", expand=["sha", "lastModified"]))
    assert [m.id for m in expanded] == list(reversed(LISTED))
    for m in expanded:
        assert m.sha == hub.repos[m.id].sha
        assert m.last_modified == hub.repos[m.id].last_modified
        assert m.downloads is None and m.tags is None  # only the expanded properties come back

    full = list(api.list_models(author="acme", full=True, cardData=True, fetch_config=True))
    assert {m.id for m in full} == {"acme/vit-small", "acme/bert-tiny"}
    vit = next(m for m in full if m.id == "acme/vit-small")
    assert vit.sha == hub.repos["acme/vit-small"].sha and vit.card_data["license"] == "apache-2.0"
    assert vit.config["model_type"] == "vit" and "model.safetensors" in [s.rfilename for s in vit.siblings]

    # limit caps the total (not a page size); the client stops after the second page.
    hub.clear_log()
    assert [m.id for m in api.list_models(sort="likes", limit=4)] == LISTED[:4]
    assert [r.param("limit") for r in hub.requests(LIST)] == ["4", "4"]

    assert [m.id for m in api.list_models(filter=["timm", "image-classification"])] == [
        "timm/resnet50.a1_in1k", "solo-model"]
    assert [m.id for m in api.list_models(search="GATED", sort="likes")] == ["other/gated-model", "other/auto-gated"]
    assert [m.id for m in api.list_models(pipeline_tag="fill-mask")] == ["acme/bert-tiny"]


def test_listing_link_header_and_bad_requests(hub: HubImitation) -> None:
    populate(hub)
    session = get_session()
    first = session.get(f"{hub.url}/api/models", params=[("sort", "likes"), ("expand", "sha"), ("expand", "likes")])
    next_url = first.links["next"]["url"]
    assert next_url.startswith(f"{hub.url}/api/models?") and "cursor=" in next_url
    assert "expand=sha&expand=likes" in next_url  # the query is carried over
    second = session.get(next_url)
    assert "next" not in second.links  # last page
    assert [m["id"] for m in first.json() + second.json()] == LISTED
    assert set(first.json()[0]) == {"_id", "id", "sha", "likes"}

    plain = session.get(f"{hub.url}/api/models", params={"limit": 1}).json()
    assert len(plain) == 1 and set(plain[0]) == {
        "_id", "id", "modelId", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
        "library_name", "createdAt"}
    full = session.get(f"{hub.url}/api/models", params={"limit": 1, "full": "True"}).json()  # True or true
    assert full[0]["sha"] == hub.repos[full[0]["id"]].sha and "lastModified" in full[0]

    for params in ([("expand", "sha"), ("full", "True")], [("expand", "sha"), ("cardData", "true")],
                   [("expand", "nonsense")], [("sort", "name")]):
        response = session.get(f"{hub.url}/api/models", params=params)
        with pytest.raises(BadRequestError):
            hf_raise_for_status(response)


def test_model_info_against_imitation(hub: HubImitation) -> None:
    populate(hub)
    api = HfApi(endpoint=hub.url)
    repo = hub.repos["acme/vit-small"]

    info = api.model_info("acme/vit-small", files_metadata=True)
    assert hub.requests(MODEL_INFO)[-1].param("blobs") == "true"
    assert info.sha == repo.sha and info.last_modified == repo.last_modified and info.created_at is not None
    assert info.private is False and info.gated is False and info.disabled is False
    assert info.tags == repo.tags and "license:apache-2.0" in info.tags and "dataset:imagenet-1k" in info.tags
    assert info.config["architectures"] == ["ViTForImageClassification"]
    card = info.card_data.to_dict()
    assert card["license"] == "apache-2.0" and card["datasets"] == ["imagenet-1k"]
    assert card["base_model"] == "google/vit-base-patch16-224"
    # The Hub sends the card's model-index as is; huggingface_hub drops all of it when one result
    # does not fit its schema (here a dataset with no type): why the crawler reads the raw card.
    raw = get_session().get(f"{hub.url}/api/models/acme/vit-small", params={"blobs": "true"}).json()
    assert raw["cardData"]["model-index"] == MODEL_INDEX and raw["sha"] == repo.sha
    assert "model-index" not in card and info.card_data.eval_results is None
    assert info.safetensors.total == 22_051_664 and info.safetensors.parameters["F16"] == 1000
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["config.json"].size == len(b'{"model_type": "vit"}') and siblings["config.json"].lfs is None
    lfs = siblings["model.safetensors"].lfs
    assert lfs.size == 64 and len(lfs.sha256) == 64 and lfs.pointer_size > 0

    assert all(s.size is None for s in api.model_info("acme/vit-small").siblings)  # no blobs, no sizes
    assert api.model_info("other/gated-model").gated == "manual"  # gated repos show their metadata

    old_sha = repo.sha
    hub.update_repo("acme/vit-small")
    assert api.model_info("acme/vit-small").sha != old_sha
    assert api.model_info("acme/vit-small", revision=old_sha).sha == old_sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/vit-small", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RepositoryNotFoundError):  # a 401 for private repos reads as not found
        api.model_info("acme/private-model")
    assert hub.requests(MODEL_INFO)[-1].status == 401
    hub.update_repo("acme/bert-tiny", disabled=True)
    with pytest.raises(DisabledRepoError):
        api.model_info("acme/bert-tiny")


def test_downloads_against_imitation(hub: HubImitation, tmp_path: Any) -> None:
    populate(hub)
    repo = hub.repos["acme/vit-small"]
    cache = tmp_path / "cache"

    path = hf_hub_download("acme/vit-small", "config.json", endpoint=hub.url, cache_dir=cache)
    assert open(path, "rb").read() == b'{"model_type": "vit"}'
    storage = cache / "models--acme--vit-small"
    assert (storage / "refs" / "main").read_text() == repo.sha
    assert path == str(storage / "snapshots" / repo.sha / "config.json")
    weights = hf_hub_download("acme/vit-small", "model.safetensors", endpoint=hub.url, cache_dir=cache)
    assert open(weights, "rb").read() == b"\x01" * 64
    assert (storage / "blobs" / repo.files["model.safetensors"].sha256).exists()  # LFS blob named by sha256

    folder = snapshot_download("acme/vit-small", endpoint=hub.url, cache_dir=cache)
    assert sorted(p.name for p in (cache / folder).iterdir()) == sorted(repo.files)
    tree = hub.requests(TREE)
    assert len(tree) == 1 and tree[0].path.endswith(f"/tree/{repo.sha}") and tree[0].param("recursive") == "true"

    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/vit-small", "missing.txt", endpoint=hub.url, cache_dir=cache)
    with pytest.raises(GatedRepoError):
        hf_hub_download("other/gated-model", "config.json", endpoint=hub.url, cache_dir=cache)
    assert [r.status for r in hub.requests("resolve", "other/gated-model")] == [403]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nothing-here", "config.json", endpoint=hub.url, cache_dir=cache)


def test_client_backoff_against_imitation(hub: HubImitation, client_waits: Waits) -> None:
    """huggingface_hub retries listing pages itself, honouring RateLimit (t+1 s) and Retry-After."""
    populate(hub)
    hub.rate_limit("list_page", reset=4)
    hub.retry_after("list_page", 3)
    hub.server_error("list_page", 503)
    assert [m.id for m in HfApi(endpoint=hub.url).list_models(sort="downloads")] == LISTED
    # RateLimit t+1; Retry-After +1 too; then the backoff, which doubled at every retry (1, 2, 4).
    assert client_waits.client == [5.0, 4.0, 4]
    assert [r.status for r in hub.requests(LIST)] == [200, 429, 429, 503, 200]


# ------------------------------------------------------------------------ crawling: basics


def test_first_crawl_indexes_listed_models(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    result = ok(crawl(hubindex, hub))
    assert result.stdout.startswith("crawl hf run 1: completed; 6 seen, 6 added, 0 changed, 0 unchanged, "
                                    "0 failed, 6 metadata fetches")
    assert result.stderr == ""

    rows = checkpoints(index)
    assert sorted(rows) == sorted(f"hf:{r}" for r in LISTED)  # never the private repo
    vit, repo = rows["hf:acme/vit-small"], hub.repos["acme/vit-small"]
    assert vit["source"] == "hf" and vit["repo_id"] == "acme/vit-small" and vit["author"] == "acme"
    assert vit["sha"] == vit["metadata_sha"] == repo.sha
    assert vit["last_modified"] == naive(repo.last_modified) and vit["created_at"] == naive(repo.created_at)
    assert vit["private"] is False and vit["gated"] is False and vit["gated_mode"] is None
    assert vit["disabled"] is False
    assert vit["pipeline_tag"] == "image-classification" and vit["library_name"] == "transformers"
    assert vit["model_type"] == "vit" and vit["architectures"] == ["ViTForImageClassification"]
    assert vit["tags"] == repo.tags and vit["license"] == "apache-2.0"
    assert vit["datasets"] == ["imagenet-1k"] and vit["arxiv_ids"] == ["2010.11929"]
    assert vit["base_models"] == ["google/vit-base-patch16-224"]
    assert vit["params_total"] == 22_051_664 and vit["params_by_dtype"] == {"F32": 22_050_664, "F16": 1000}
    assert sorted(vit["weight_files"], key=lambda w: w["name"]) == [
        {"name": "model.safetensors", "size": 64, "sha256": repo.files["model.safetensors"].sha256},
        {"name": "pytorch_model.bin", "size": 48, "sha256": repo.files["pytorch_model.bin"].sha256},
    ]
    assert vit["eval_results"] == [
        {"task": "image-classification", "dataset": "imagenet-1k", "split": "validation",
         "metric": "accuracy", "value": 0.81},
        {"task": "image-classification", "dataset": "imagenet-1k", "split": "validation",
         "metric": "top-5", "value": 0.95},
        {"task": "image-classification", "dataset": "CIFAR-10", "split": None, "metric": "Accuracy", "value": 0.97},
    ]
    assert vit["downloads"] == 5000 and vit["likes"] == 50

    bert = rows["hf:acme/bert-tiny"]
    assert bert["license"] == "mit" and bert["pipeline_tag"] == "fill-mask" and bert["eval_results"] is None
    assert bert["base_models"] is None and bert["datasets"] is None

    timm = rows["hf:timm/resnet50.a1_in1k"]
    assert timm["library_name"] == "timm" and timm["model_type"] == "resnet50"
    assert timm["architectures"] == ["resnet50"] and timm["num_classes"] == 1000 and timm["num_features"] == 2048
    assert timm["input_size"] == [3, 224, 224]
    assert json.loads(timm["pretrained_cfg"]) == TIMM_CONFIG["pretrained_cfg"]

    gated = rows["hf:other/gated-model"]
    assert gated["gated"] is True and gated["gated_mode"] == "manual" and gated["metadata_sha"] is not None
    auto = rows["hf:other/auto-gated"]
    assert auto["gated"] is True and auto["gated_mode"] == "auto" and auto["license"] is None
    assert rows["hf:solo-model"]["author"] is None

    (run,) = runs(index)
    assert run["crawler"] == "hf" and run["status"] == "completed" and run["resumed_from"] is None
    assert (run["seen"], run["added"], run["changed"], run["unchanged"], run["failed"], run["fetched"]) == (
        6, 6, 0, 0, 0, 6)
    assert run["watermark"] == max(naive(hub.repos[r].last_modified) for r in LISTED)
    assert run["finished_at"] is not None and run["error"] is None
    assert failures(index) == []

    # What went over the wire: sha and lastModified asked in the listing, model_info with blobs,
    # one call per listed repo, nothing for the private one.
    pages = hub.listing_pages()
    assert len(pages) == 2
    assert {"sha", "lastModified", "downloads", "likes", "gated"} <= set(pages[0].query["expand"])
    assert pages[0].param("sort") == "downloads"
    assert sorted(hub.model_info_ids()) == sorted(LISTED)
    assert all(r.param("blobs") == "true" for r in hub.requests(MODEL_INFO))
    assert hub.count(MODEL_INFO, "acme/private-model") == 0


def test_unchanged_recrawl_makes_no_model_info_calls(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    ok(crawl(hubindex, hub))
    first = checkpoints(index)
    hub.set_stats("acme/bert-tiny", downloads=123_456, likes=777)  # no commit: sha unchanged
    hub.clear_log()

    result = ok(crawl(hubindex, hub))
    assert "6 seen, 0 added, 0 changed, 6 unchanged, 0 failed, 0 metadata fetches" in result.stdout
    assert hub.count(MODEL_INFO) == 0
    assert len(hub.listing_pages()) == 2

    rows = checkpoints(index)
    assert rows["hf:acme/bert-tiny"]["downloads"] == 123_456 and rows["hf:acme/bert-tiny"]["likes"] == 777
    for cid, row in rows.items():  # full metadata kept, crawled_at refreshed
        for column in ("metadata_sha", "license", "params_total", "weight_files", "eval_results", "model_type"):
            assert row[column] == first[cid][column], (cid, column)
        assert row["crawled_at"] > first[cid]["crawled_at"]
    second = runs(index)[1]
    assert (second["seen"], second["unchanged"], second["fetched"], second["resumed_from"]) == (6, 6, 0, None)


def test_changed_sha_refetches_only_that_repo(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    ok(crawl(hubindex, hub))
    before = checkpoints(index)
    hub.update_repo("timm/resnet50.a1_in1k", files={"model.safetensors": b"\x07" * 80},
                    safetensors={"parameters": {"F32": 26_000_000}, "total": 26_000_000})
    hub.clear_log()

    result = ok(crawl(hubindex, hub))
    assert "6 seen, 0 added, 1 changed, 5 unchanged, 0 failed, 1 metadata fetches" in result.stdout
    assert hub.model_info_ids() == ["timm/resnet50.a1_in1k"]

    rows = checkpoints(index)
    timm, repo = rows["hf:timm/resnet50.a1_in1k"], hub.repos["timm/resnet50.a1_in1k"]
    assert timm["sha"] == timm["metadata_sha"] == repo.sha != before["hf:timm/resnet50.a1_in1k"]["sha"]
    assert timm["last_modified"] == naive(repo.last_modified)
    assert timm["params_total"] == 26_000_000
    assert timm["weight_files"] == [{"name": "model.safetensors", "size": 80,
                                     "sha256": repo.files["model.safetensors"].sha256}]
    # The unchanged repos, committed in the same batch as the refetched one, keep their metadata.
    for cid in rows.keys() - {"hf:timm/resnet50.a1_in1k"}:
        for column in ("metadata_sha", "license", "params_total", "weight_files", "model_type", "tags"):
            assert rows[cid][column] == before[cid][column], (cid, column)

    hub.clear_log()
    ok(crawl(hubindex, hub))  # so the next crawl again fetches nothing
    assert hub.count(MODEL_INFO) == 0
    assert [r["changed"] for r in runs(index)] == [0, 1, 0]


def test_new_and_deleted_repos(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    ok(crawl(hubindex, hub))
    hub.add_repo("acme/new-model", downloads=10)
    hub.delete_repo("solo-model")
    hub.clear_log()
    result = ok(crawl(hubindex, hub))
    assert "6 seen, 1 added, 0 changed, 5 unchanged" in result.stdout
    assert hub.model_info_ids() == ["acme/new-model"]
    assert "hf:acme/new-model" in checkpoints(index)
    assert "hf:solo-model" in checkpoints(index)  # the catalog keeps what it saw


# ----------------------------------------------------------------- interruption and resume


@pytest.mark.parametrize("outage", [Fault(500, body={"error": "Internal Error"}), Fault(drop=True)],
                         ids=["http-500", "dropped-connections"])
def test_interrupted_crawl_resumes(
    hub: HubImitation, hubindex: Any, index: Index, outage: Fault
) -> None:
    for i in range(8):
        hub.add_repo(f"org/model-{i}", downloads=100 - i)
    order = [f"org/model-{i}" for i in range(8)]
    # After four model_info answers the Hub goes down: the next model_info calls and the listing's
    # third page fail; the crawler gives up on the page after its one retry (--retries 1).
    # One request at a time, so that which requests come after the fourth answer is fixed.
    hub.fail_after_model_info(4, fault=outage)

    result = crawl(hubindex, hub, "--retries", "1", "--concurrency", "1")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("hubindex: error: listing models from")
    assert [r.status for r in hub.listing_pages()][:2] == [200, 200]
    assert len(hub.listing_pages()) == 4  # the third page, then its one retry
    first = runs(index)[0]
    assert first["status"] == "failed" and "listing models" in first["error"]
    stored = checkpoints(index)
    assert sorted(stored) == sorted(f"hf:{r}" for r in order[:6])  # two pages were listed
    assert sorted(cid for cid, row in stored.items() if row["metadata_sha"] is not None) == [
        f"hf:{r}" for r in order[:4]]
    kind = "http-500" if outage.status == 500 else "network"
    assert [(f["subject"], f["kind"]) for f in failures(index)] == [
        ("hf:org/model-4", kind), ("hf:org/model-5", kind)]
    fetched_before = hub.model_info_ids()
    assert fetched_before == order[:4]

    hub.recover()
    hub.clear_log()
    result = ok(crawl(hubindex, hub, "--retries", "1", "--concurrency", "1"))
    assert "(resumed run 1)" in result.stdout
    assert "8 seen, 2 added, 0 changed, 6 unchanged, 0 failed, 4 metadata fetches" in result.stdout
    # Nothing fetched in the first run is fetched again; the rest is.
    assert hub.model_info_ids() == order[4:]
    second = runs(index)[1]
    assert second["status"] == "completed" and second["resumed_from"] == first["run_id"]
    ids = query(index, "SELECT checkpoint_id, count(*) AS n FROM checkpoints GROUP BY 1")
    assert len(ids) == 8 and all(r["n"] == 1 for r in ids)
    assert all(row["metadata_sha"] == row["sha"] for row in checkpoints(index).values())
    assert all(f["resolved_at"] is not None for f in failures(index))


# ------------------------------------------------------------------- transient failures


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_model_info_rate_limit_honoured(
    hub: HubImitation, hubindex: Any, index: Index, waits: Waits, concurrency: str
) -> None:
    populate(hub)
    hub.rate_limit("/api/models/acme/bert-tiny", reset=7)
    hub.retry_after("/api/models/timm/resnet50.a1_in1k", 3)
    result = ok(crawl(hubindex, hub, "--concurrency", concurrency))
    assert "6 added" in result.stdout and "0 failed" in result.stdout
    # RateLimit t=7 plus one second; Retry-After 3. The Retry-After answer also carries the
    # Hub's usual RateLimit header with requests left (r=499;t=55): not the reason, not obeyed.
    # Side by side, both 429s come back at once; they are waited for in listing order.
    assert waits.crawler == [8.0, 3.0]
    assert [r.status for r in hub.requests(MODEL_INFO, "acme/bert-tiny")] == [429, 200]
    assert checkpoints(index)["hf:acme/bert-tiny"]["metadata_sha"] == hub.repos["acme/bert-tiny"].sha
    assert failures(index) == []


def test_listing_rate_limit_waits_for_real(
    hub: HubImitation, hubindex: Any, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One real wait: the crawler sleeps RateLimit t+1 s before asking for a listing page again."""
    monkeypatch.setattr(HfCrawler, "__init__", REAL_INIT)  # time.sleep, not the recording one
    populate(hub)
    hub.rate_limit("list_page", reset=0)
    started = time.monotonic()
    ok(crawl(hubindex, hub))
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in hub.listing_pages()] == [200, 429, 200]
    assert len(checkpoints(index)) == 6


def test_first_listing_page_is_retried(hub: HubImitation, hubindex: Any, index: Index, waits: Waits) -> None:
    populate(hub)
    hub.retry_after(re.compile(r"^/api/models\?(?!.*cursor=).*expand="), 2)
    hub.server_error(re.compile(r"^/api/models\?(?!.*cursor=).*expand="), 502)
    ok(crawl(hubindex, hub))
    # Retry-After, then the second backoff step (2 s and up to 10% more).
    assert waits.crawler[0] == 2.0 and 2.0 <= waits.crawler[1] <= 2.2 and len(waits.crawler) == 2
    assert [r.status for r in hub.listing_pages()] == [429, 502, 200, 200]
    assert len(checkpoints(index)) == 6


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_retried_then_success(
    hub: HubImitation, hubindex: Any, index: Index, waits: Waits, status: int
) -> None:
    populate(hub)
    hub.server_error("/api/models/acme/vit-small", status, times=2)
    result = ok(crawl(hubindex, hub))
    assert "6 added" in result.stdout and "0 failed" in result.stdout
    assert [r.status for r in hub.requests(MODEL_INFO, "acme/vit-small")] == [status, status, 200]
    assert len(waits.crawler) == 2 and 1.0 <= waits.crawler[0] <= 1.1 and 2.0 <= waits.crawler[1] <= 2.2
    assert checkpoints(index)["hf:acme/vit-small"]["license"] == "apache-2.0"
    assert failures(index) == []


def test_persistent_server_error_recorded_and_retried_next_run(
    hub: HubImitation, hubindex: Any, index: Index, waits: Waits
) -> None:
    populate(hub)
    hub.server_error("/api/models/acme/bert-tiny", 503, times=None)
    result = ok(crawl(hubindex, hub, "--retries", "2"))
    assert "6 seen, 6 added, 0 changed, 0 unchanged, 1 failed, 5 metadata fetches" in result.stdout
    assert "failed hf:acme/bert-tiny: http-503" in result.stderr
    assert hub.count(MODEL_INFO, "acme/bert-tiny") == 3 and len(waits.crawler) == 2
    assert runs(index)[0]["status"] == "completed" and runs(index)[0]["failed"] == 1
    (failure,) = failures(index)
    assert (failure["subject"], failure["kind"], failure["stage"]) == ("hf:acme/bert-tiny", "http-503", "crawl")
    assert failure["resolved_at"] is None and failure["run_id"] == 1
    bert = checkpoints(index)["hf:acme/bert-tiny"]
    # What the listing said is kept; metadata_sha stays empty so the next crawl retries it.
    assert bert["sha"] == hub.repos["acme/bert-tiny"].sha and bert["downloads"] == 4000
    assert bert["metadata_sha"] is None and bert["license"] is None

    hub.recover()
    hub.clear_log()
    ok(crawl(hubindex, hub))
    assert hub.model_info_ids() == ["acme/bert-tiny"]
    assert checkpoints(index)["hf:acme/bert-tiny"]["license"] == "mit"
    assert failures(index)[0]["resolved_at"] is not None


def test_timeout_recorded_not_fatal(hub: HubImitation, hubindex: Any, index: Index, waits: Waits) -> None:
    populate(hub)
    hub.slow("/api/models/acme/bert-tiny", 1.5, times=None)  # never answers within --timeout
    hub.slow("/api/models/solo-model", 1.5, times=1)  # too slow once, then fine
    started = time.monotonic()
    result = ok(crawl(hubindex, hub, "--timeout", "0.5", "--retries", "1"))
    assert time.monotonic() - started < 5
    assert "6 seen, 6 added, 0 changed, 0 unchanged, 1 failed, 5 metadata fetches" in result.stdout
    (failure,) = failures(index)
    assert failure["subject"] == "hf:acme/bert-tiny" and failure["kind"] == "timeout"
    assert "Timeout" in failure["message"]
    assert hub.count(MODEL_INFO, "acme/bert-tiny") == 2 and hub.count(MODEL_INFO, "solo-model") == 2
    assert checkpoints(index)["hf:solo-model"]["metadata_sha"] == hub.repos["solo-model"].sha
    assert checkpoints(index)["hf:acme/bert-tiny"]["metadata_sha"] is None


def test_repo_gone_between_listing_and_model_info(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    hub.inject("/api/models/other/auto-gated", Fault(404, {"X-Error-Code": "RepoNotFound",
                                                           "X-Error-Message": "Repository not found"}))
    result = ok(crawl(hubindex, hub))
    assert "5 added" in result.stdout and "1 failed" in result.stdout
    assert "hf:other/auto-gated" not in checkpoints(index)
    assert [(f["subject"], f["kind"]) for f in failures(index)] == [("hf:other/auto-gated", "not-found")]


# ------------------------------------------------------------ gated, disabled, malformed


def test_gated_and_disabled_repos(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    hub.add_repo("acme/disabled-model", disabled=True, downloads=50)
    result = ok(crawl(hubindex, hub))
    assert "7 seen, 7 added" in result.stdout and "1 failed" in result.stdout
    rows = checkpoints(index)
    assert rows["hf:other/gated-model"]["gated"] is True and rows["hf:other/gated-model"]["gated_mode"] == "manual"
    assert rows["hf:other/gated-model"]["license"] == "apache-2.0"  # metadata of gated repos is public
    disabled = rows["hf:acme/disabled-model"]
    assert disabled["disabled"] is True and disabled["metadata_sha"] is None and disabled["downloads"] == 50
    assert [(f["subject"], f["kind"]) for f in failures(index)] == [("hf:acme/disabled-model", "disabled")]
    assert [r.status for r in hub.requests(MODEL_INFO, "acme/disabled-model")] == [403]  # not retried
    assert runs(index)[0]["status"] == "completed"


@pytest.mark.parametrize("bad_id", ["../evil", "acme/../../evil", "acme/evil/extra", "acme/evil.git", "-evil/x"])
def test_malformed_repo_id_in_listing_never_requested(
    hub: HubImitation, hubindex: Any, index: Index, bad_id: str
) -> None:
    hub.add_repo("acme/fine", downloads=10)
    hub.add_repo(bad_id, downloads=20)
    result = ok(crawl(hubindex, hub))
    assert "2 seen, 1 added" in result.stdout and "1 failed" in result.stdout
    assert list(checkpoints(index)) == ["hf:acme/fine"]
    assert [(f["subject"], f["kind"]) for f in failures(index)] == [(bad_id, "invalid-repo-id")]
    assert [r.kind for r in hub.log if "evil" in r.path] == []
    assert hub.model_info_ids() == ["acme/fine"]


def test_repo_option_fetches_exactly_those(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    result = ok(crawl(hubindex, hub, "--repo", "solo-model", "--repo", "acme/bert-tiny", "--repo", "acme/missing"))
    assert "3 seen, 2 added" in result.stdout and "1 failed" in result.stdout
    assert sorted(checkpoints(index)) == ["hf:acme/bert-tiny", "hf:solo-model"]
    assert [(f["subject"], f["kind"]) for f in failures(index)] == [("hf:acme/missing", "not-found")]
    assert hub.listing_pages() == []
    assert hub.model_info_ids() == ["solo-model", "acme/bert-tiny"]


@pytest.mark.parametrize("bad_id", ["../evil", "acme/evil/x", "acme/ev il", "acme/..", ""])
def test_repo_option_rejects_malformed_id(hub: HubImitation, hubindex: Any, index: Index, bad_id: str) -> None:
    populate(hub)
    ok(crawl(hubindex, hub))
    before = checkpoints(index)
    hub.clear_log()
    result = crawl(hubindex, hub, "--repo", bad_id)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubindex: error: malformed repo id")
    assert hub.log == []  # rejected before any request
    assert checkpoints(index) == before


def test_unreachable_endpoint_one_line_error(hub: HubImitation, hubindex: Any, index: Index) -> None:
    populate(hub)
    ok(crawl(hubindex, hub))
    before = checkpoints(index)
    result = hubindex("crawl", "hf", "--endpoint", f"http://127.0.0.1:{closed_port()}", "--retries", "1")
    assert result.exit_code != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubindex: error: cannot reach the Hub API at http://127.0.0.1:")
    assert checkpoints(index) == before
    assert runs(index)[-1]["status"] == "failed"


def test_endpoint_that_is_not_a_hub(hub: HubImitation, hubindex: Any, index: Index) -> None:
    result = hubindex("crawl", "hf", "--endpoint", f"{hub.url}/not-a-hub", "--retries", "0")
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubindex: error: cannot reach the Hub API")
    bad = hubindex("crawl", "hf", "--endpoint", "ftp://example.org")
    assert bad.exit_code == 2 and bad.stderr.startswith("hubindex: error: --endpoint must be an http(s) URL")


def test_malformed_metadata_does_not_break_the_crawl(hub: HubImitation, hubindex: Any, index: Index) -> None:
    """Hub metadata is untrusted: odd types become NULL, a model-index that is not a list is ignored."""
    populate(hub)
    hub.update_repo("acme/bert-tiny", card_data={"license": "mit", "datasets": "wikipedia", "model-index": "oops"})
    hub.update_repo(
        "solo-model",
        tags=["timm", 7, None, {"odd": True}],
        pipeline_tag=["image-classification"],
        config={"model_type": ["odd"], "architectures": "OddNet", "num_classes": "1000"},
        card_data={"base_model": ["a/b", "c/d"], "model-index": [
            {"results": [{"task": {"type": 3}, "dataset": {"name": ["x"], "split": "test"},
                          "metrics": [{"type": {"a": 1}, "value": "0.5"}, {"value": None}, "junk"]}, "junk"]},
            "junk",
        ]},
        safetensors={"parameters": {"F32": "many", "BF16": 12}, "total": "lots"},
    )
    result = ok(crawl(hubindex, hub))
    assert "6 seen, 6 added, 0 changed, 0 unchanged, 0 failed, 6 metadata fetches" in result.stdout
    rows = checkpoints(index)
    bert = rows["hf:acme/bert-tiny"]
    assert bert["license"] == "mit" and bert["datasets"] == ["wikipedia"] and bert["eval_results"] is None
    assert bert["metadata_sha"] == hub.repos["acme/bert-tiny"].sha
    solo = rows["hf:solo-model"]
    assert solo["tags"] == ["timm", "7", "{'odd': True}"] and solo["pipeline_tag"] is None
    assert solo["model_type"] is None and solo["architectures"] == ["OddNet"] and solo["num_classes"] is None
    assert solo["base_models"] == ["a/b", "c/d"]
    assert solo["eval_results"] == [{"task": None, "dataset": None, "split": "test", "metric": None, "value": 0.5}]
    assert solo["params_total"] is None and solo["params_by_dtype"] == {"BF16": 12}
    assert rows["hf:acme/vit-small"]["license"] == "apache-2.0"  # the rest of the batch is intact


# ------------------------------------------------------------------ incremental by date


def test_sort_last_modified_stops_at_watermark(hub: HubImitation, hubindex: Any, index: Index) -> None:
    for i in range(8):
        hub.add_repo(f"org/model-{i}")
    result = ok(crawl(hubindex, hub, "--sort", "lastModified"))
    assert "8 seen, 8 added" in result.stdout
    assert len(hub.listing_pages()) == 3  # 3 + 3 + 2
    assert all(r.param("sort") == "lastModified" for r in hub.listing_pages())
    newest = max(naive(r.last_modified) for r in hub.repos.values())
    assert runs(index)[0]["watermark"] == newest

    hub.update_repo("org/model-2")  # becomes the newest
    hub.clear_log()
    result = ok(crawl(hubindex, hub, "--sort", "lastModified"))
    # model-2 (changed), model-7 (the old watermark itself), then model-6 is older: stop.
    assert "2 seen, 0 added, 1 changed, 1 unchanged, 0 failed, 1 metadata fetches" in result.stdout
    assert len(hub.listing_pages()) == 1
    assert hub.model_info_ids() == ["org/model-2"]
    assert runs(index)[1]["watermark"] == naive(hub.repos["org/model-2"].last_modified)
    assert len(checkpoints(index)) == 8

    hub.clear_log()  # other orders list everything (and still fetch nothing new)
    ok(crawl(hubindex, hub, "--sort", "downloads"))
    assert len(hub.listing_pages()) == 3 and hub.count(MODEL_INFO) == 0


def test_sort_last_modified_retries_failed_older_repo(hub: HubImitation, hubindex: Any, index: Index) -> None:
    for i in range(6):
        hub.add_repo(f"org/model-{i}")
    hub.server_error("/api/models/org/model-1", 500, times=None)
    ok(crawl(hubindex, hub, "--sort", "lastModified", "--retries", "0"))
    assert [f["subject"] for f in failures(index)] == ["hf:org/model-1"]

    hub.recover()
    hub.clear_log()
    ok(crawl(hubindex, hub, "--sort", "lastModified", "--retries", "0"))
    # model-1 is older than the watermark, but its metadata is still missing: it is fetched.
    assert hub.model_info_ids() == ["org/model-1"]
    assert checkpoints(index)["hf:org/model-1"]["metadata_sha"] == hub.repos["org/model-1"].sha
    assert failures(index)[0]["resolved_at"] is not None


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("args", "params", "expected"),
    [
        (["--author", "acme"], {"author": ["acme"]}, ["acme/vit-small", "acme/bert-tiny"]),
        (["--search", "resnet"], {"search": ["resnet"]}, ["timm/resnet50.a1_in1k"]),
        (["--filter", "timm"], {"filter": ["timm"]}, ["timm/resnet50.a1_in1k", "solo-model"]),
        (["--filter", "transformers", "--filter", "license:mit"], {"filter": ["transformers", "license:mit"]},
         ["acme/bert-tiny"]),
        (["--pipeline-tag", "text-generation"], {"pipeline_tag": ["text-generation"]}, ["other/gated-model"]),
        (["--limit", "4"], {"limit": ["4"]}, LISTED[:4]),
        (["--sort", "likes", "--limit", "2"], {"sort": ["likes"], "limit": ["2"]}, LISTED[:2]),
    ],
    ids=["author", "search", "filter", "filters", "pipeline-tag", "limit", "sort-likes"],
)
def test_listing_filters_reach_the_hub(
    hub: HubImitation, hubindex: Any, index: Index, args: list[str], params: dict[str, list[str]],
    expected: list[str],
) -> None:
    populate(hub)
    result = ok(crawl(hubindex, hub, *args))
    assert f"{len(expected)} seen, {len(expected)} added" in result.stdout
    assert sorted(checkpoints(index)) == sorted(f"hf:{r}" for r in expected)
    first = hub.listing_pages()[0]
    for name, values in params.items():
        assert first.query[name] == values
    assert sorted(hub.model_info_ids()) == sorted(expected)
    # A limit caps the total: no page is asked for beyond it.
    assert len(hub.listing_pages()) == max(1, -(-len(expected) // hub.page_size))


def test_malformed_author_rejected(hub: HubImitation, hubindex: Any) -> None:
    result = crawl(hubindex, hub, "--author", "../x")
    assert result.exit_code == 2 and result.stderr.startswith("hubindex: error: malformed --author")
    assert hub.log == []


# ---------------------------------------------------------------------------------- the token


def test_token_comes_from_huggingface_hub_lookup_without_token_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """$HF_TOKEN, then the token file huggingface_hub writes; --token-env names another variable."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    assert HfCrawler()._token() is False  # nothing anywhere: anonymous
    token_file.write_text("hf_from_the_file\n")
    assert HfCrawler()._token() == "hf_from_the_file"
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert HfCrawler()._token() == "hf_from_the_environment"
    client = HubClient("http://127.0.0.1:9", HfCrawler()._token(), 1.0)
    try:
        assert client._http.headers["authorization"] == "Bearer hf_from_the_environment"
    finally:
        client.close()
    monkeypatch.setenv("MY_HUB_TOKEN", "hf_named")
    assert HfCrawler(token_env="MY_HUB_TOKEN")._token() == "hf_named"
    with pytest.raises(UsageError, match="--token-env UNSET_VARIABLE"):
        HfCrawler(token_env="UNSET_VARIABLE")._token()
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    assert HfCrawler()._token() is False


def test_the_token_is_never_printed_or_stored(
    hub: HubImitation, hubindex: Any, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hf_secretvalue1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    populate(hub)
    result = ok(crawl(hubindex, hub, "--limit", "2"))
    assert secret not in result.stdout + result.stderr
    assert all(secret not in json.dumps(run, default=str) for run in runs(index))
