"""Crawler for the Hugging Face Hub, through huggingface_hub, incremental on each repo's sha."""

from __future__ import annotations

import os
import random
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterator, TypeVar

import click

from hubindex import hookimpl
from hubindex.errors import HubindexError, UsageError
from hubindex.types import CheckpointRecord, Crawler, CrawlEvent, CrawlFailure

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 5
MAX_WAIT_S = 300.0
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack")
# What the listing returns per repo: enough to decide whether model_info is needed at all.
LIST_EXPAND = [
    "sha", "lastModified", "createdAt", "downloads", "likes", "tags", "pipeline_tag",
    "library_name", "private", "gated", "disabled", "author",
]
# Hub repo ids: 'name' or 'namespace/name', each part of word characters, '-' and '.', no '..'.
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
T = TypeVar("T")


def valid_repo_id(repo_id: Any) -> bool:
    """Whether a repo id from the Hub (untrusted input) is well formed and path-safe."""
    return (
        isinstance(repo_id, str)
        and bool(REPO_ID.match(repo_id))
        and ".." not in repo_id
        and not repo_id.endswith((".git", ".ipynb"))
    )


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return None


def _tag_values(tags: list[str] | None, prefix: str) -> list[str]:
    return [t[len(prefix):] for t in tags or [] if isinstance(t, str) and t.startswith(prefix)]


# Hub metadata is untrusted: a value of an unexpected type must become NULL here, since one odd
# value in a batch makes the whole batch fail to load into its typed catalog column.
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _http_modules() -> tuple[Any, tuple[type[BaseException], ...]]:
    """The HTTP client huggingface_hub uses (httpx2 in 2.x, httpx earlier) and its transient errors."""
    try:
        import httpx2 as httpx  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx  # type: ignore[no-redef]
    return httpx, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# ------------------------------------------------------------------------------ retries


class RetryPolicy:
    """Retries transient Hub errors: 408/429/5xx and network errors, honouring RateLimit/Retry-After."""

    def __init__(
        self,
        max_retries: int = DEFAULT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.max_retries = max_retries
        self.sleep = sleep
        self.on_wait = on_wait
        self.waited = 0.0

    def wait_for(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retrying after `exc`, or None if it is not worth retrying."""
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import parse_ratelimit_headers

        _, transient = _http_modules()
        backoff = min(2.0**attempt, 8.0) * (1 + 0.1 * random.random())
        if isinstance(exc, transient):
            return backoff
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status not in RETRY_STATUS:
                return None
            headers = exc.response.headers
            if status == 429:
                limit = parse_ratelimit_headers(headers)
                # The Hub sends RateLimit on every answer: it is the reason for this 429 only when
                # no request is left (as huggingface_hub's own backoff reads it).
                if limit is not None and limit.remaining == 0:
                    return min(limit.reset_in_seconds + 1.0, MAX_WAIT_S)
            retry_after = headers.get("Retry-After")
            if retry_after is not None and retry_after.strip().isdigit():
                return min(float(retry_after), MAX_WAIT_S)
            return backoff
        return None

    def call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                wait = self.wait_for(exc, attempt)
                if wait is None or attempt >= self.max_retries:
                    raise
                attempt += 1
                self.waited += wait
                self.on_wait(f"{describe_error(exc)[0]}: retry {attempt}/{self.max_retries} in {wait:.0f} s")
                self.sleep(wait)


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for a failed Hub call, for the failures table."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    _, transient = _http_modules()
    if isinstance(exc, DisabledRepoError):
        return "disabled", "access to this repository is disabled on the Hub"
    if isinstance(exc, GatedRepoError):
        return "gated", "gated repository: accept its conditions on the Hub and pass --token-env"
    if isinstance(exc, RepositoryNotFoundError):
        return "not-found", "repository not found (deleted, renamed or private)"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return f"http-{exc.response.status_code}", str(exc).strip().splitlines()[0][:300]
    if isinstance(exc, transient):
        kind = "timeout" if "Timeout" in type(exc).__name__ else "network"
        return kind, f"{type(exc).__name__}: {str(exc)[:300]}"
    return "error", f"{type(exc).__name__}: {str(exc)[:300]}"


# ------------------------------------------------------------------------------ records


def listing_columns(info: Any) -> dict[str, Any]:
    """Columns that a listing item (with LIST_EXPAND) already carries: no model_info needed."""
    gated = getattr(info, "gated", None)
    return {
        "repo_id": info.id,
        "sha": _text(info.sha),
        "last_modified": _naive_utc(info.last_modified),
        "created_at": _naive_utc(info.created_at),
        "author": _text(info.author) or (info.id.split("/")[0] if "/" in info.id else None),
        "private": _flag(info.private),
        "gated": bool(gated) if gated is not None else None,
        "gated_mode": gated if isinstance(gated, str) else None,
        "disabled": _flag(info.disabled),
        "pipeline_tag": _text(info.pipeline_tag),
        "library_name": _text(info.library_name),
        "tags": _as_list(info.tags) if isinstance(info.tags, list) else None,
        "downloads": _int(info.downloads),
        "likes": _int(info.likes),
    }


def full_columns(info: Any, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every catalog column that model_info(files_metadata=True) gives.

    card: the card data as the Hub sent it (see HfCrawler._get_model_info); by default the one
    huggingface_hub parsed into info.card_data.
    """
    columns = listing_columns(info)
    tags = info.tags or []
    if card is None:
        card = info.card_data.to_dict() if info.card_data is not None else {}
    config = info.config if isinstance(info.config, dict) else {}
    license_ = card.get("license") or next(iter(_tag_values(tags, "license:")), None)
    base_models = _as_list(card.get("base_model")) or [
        t.split(":", 1)[-1] for t in _tag_values(tags, "base_model:") if ":" in t
    ] or None
    weights = [
        {
            "name": s.rfilename,
            "size": _int(s.size) if s.size is not None else (_int(s.lfs.size) if s.lfs else None),
            "sha256": _text(s.lfs.sha256) if s.lfs else None,
        }
        for s in info.siblings or []
        if isinstance(s.rfilename, str) and s.rfilename.endswith(WEIGHT_SUFFIXES)
    ]
    safetensors = info.safetensors
    by_dtype = safetensors.parameters if safetensors and isinstance(safetensors.parameters, dict) else {}
    timm_cfg = config.get("pretrained_cfg") if info.library_name == "timm" else None
    columns.update({
        "metadata_sha": columns["sha"],
        "model_type": _text(config.get("model_type")) or _text(config.get("architecture")),
        "architectures": _as_list(config.get("architectures") or config.get("architecture")),
        "license": str(license_) if license_ else None,
        "datasets": _as_list(card.get("datasets")) or _tag_values(tags, "dataset:") or None,
        "arxiv_ids": _tag_values(tags, "arxiv:") or None,
        "base_models": base_models,
        "params_total": _int(safetensors.total) if safetensors else None,
        "params_by_dtype": {str(k): v for k, v in by_dtype.items() if _int(v) is not None} or None,
        "weight_files": weights or None,
        "eval_results": flatten_model_index(card.get("model-index")),
        "num_classes": config.get("num_classes") if isinstance(config.get("num_classes"), int) else None,
        "num_features": config.get("num_features") if isinstance(config.get("num_features"), int) else None,
        "pretrained_cfg": timm_cfg if isinstance(timm_cfg, dict) else None,
        "input_size": _as_int_list(timm_cfg.get("input_size")) if isinstance(timm_cfg, dict) else None,
    })
    return columns


def _as_int_list(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def flatten_model_index(model_index: Any) -> list[dict[str, Any]] | None:
    """The card's model-index as rows of (task, dataset, split, metric, value); junk is skipped."""
    rows = []
    for entry in model_index if isinstance(model_index, list) else []:
        for result in entry.get("results", []) if isinstance(entry, dict) else []:
            if not isinstance(result, dict):
                continue
            task = result.get("task") if isinstance(result.get("task"), dict) else {}
            dataset = result.get("dataset") if isinstance(result.get("dataset"), dict) else {}
            for metric in result.get("metrics") or []:
                if not isinstance(metric, dict):
                    continue
                try:
                    value = float(metric.get("value"))
                except (TypeError, ValueError):
                    continue
                rows.append({
                    "task": _text(task.get("type")),
                    "dataset": _text(dataset.get("type")) or _text(dataset.get("name")),
                    "split": _text(dataset.get("split")),
                    "metric": _text(metric.get("type")) or _text(metric.get("name")),
                    "value": value,
                })
    return rows or None


def _get_json(api: Any, path: str, params: dict[str, Any], timeout: float) -> Any:
    """GET a Hub API path with the client's session, headers and error mapping; the JSON answer."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    response = get_session().get(f"{api.endpoint}{path}", params=params, headers=api._build_hf_headers(),
                                 timeout=timeout)
    hf_raise_for_status(response)
    return response.json()


# ------------------------------------------------------------------------------ crawler


class HfCrawler(Crawler):
    """Index models of the Hugging Face Hub (or any server speaking its API).

    Lists models with huggingface_hub and calls model_info(files_metadata=True) only for repos
    that are new or whose sha changed since the last crawl; the others cost nothing beyond the
    listing. Rate limits (429), server errors and timeouts are retried; gated, disabled and
    vanished repos are recorded and skipped. An interrupted crawl resumes where it stopped.
    """

    name = "hf"
    version = "1"
    description = "Hugging Face Hub models, incremental on sha"
    owned_columns: ClassVar[frozenset[str]] = frozenset({
        "repo_id", "sha", "metadata_sha", "last_modified", "created_at", "author", "private", "gated",
        "gated_mode", "disabled", "pipeline_tag", "library_name", "model_type", "architectures",
        "tags", "license", "datasets", "arxiv_ids", "base_models", "params_total", "params_by_dtype",
        "weight_files", "eval_results", "downloads", "likes",
    })

    @classmethod
    def cli_params(cls) -> list[click.Parameter]:
        return [
            click.Option(["--search"], metavar="S", help="Only repos whose id contains S."),
            click.Option(["--author"], metavar="A", help="Only repos of this user or organisation."),
            click.Option(["--filter", "filters"], metavar="TAG", multiple=True,
                         help="Only repos with this tag (repeatable; all must match)."),
            click.Option(["--pipeline-tag"], metavar="T", help="Only repos of this task, e.g. image-classification."),
            click.Option(["--sort"], type=click.Choice(["downloads", "likes", "lastModified"]),
                         default="downloads", show_default=True,
                         help="Listing order (descending). With lastModified, a repeat crawl stops "
                              "at the previous crawl's newest change."),
            click.Option(["--limit"], type=click.IntRange(min=1), help="At most N repos."),
            click.Option(["--repo", "repos"], metavar="ID", multiple=True,
                         help="Crawl exactly these repos (namespace/name, repeatable) instead of a listing."),
            click.Option(["--endpoint"], metavar="URL", default=None,
                         help=f"Hub API endpoint [default: $HF_ENDPOINT or {DEFAULT_ENDPOINT}]."),
            click.Option(["--token-env"], metavar="NAME", default=None,
                         help="Name of the environment variable holding a Hub token (never the token itself)."),
            click.Option(["--timeout"], type=click.FloatRange(0.1, 600), default=DEFAULT_TIMEOUT_S,
                         show_default=True, help="Seconds before one HTTP request is given up."),
            click.Option(["--retries"], type=click.IntRange(0, 20), default=DEFAULT_RETRIES,
                         show_default=True, help="Retries of a request on 429, 5xx and network errors."),
        ]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sleep: Callable[[float], None] = time.sleep

    def query_key(self) -> str:
        # The listing, not transport settings, decides what "the same crawl" is.
        keys = ("search", "author", "filters", "pipeline_tag", "sort", "limit", "repos", "endpoint")
        return f"hf:{sorted((k, repr(self.options.get(k))) for k in keys)}"

    def _endpoint(self) -> str:
        endpoint = (self.options.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise UsageError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        return endpoint

    def _token(self) -> str | bool:
        name = self.options.get("token_env")
        if not name:
            return False  # anonymous: never pick up a token the user did not ask for
        token = os.environ.get(name)
        if not token:
            raise UsageError(f"--token-env {name}: the environment variable {name} is not set")
        return token

    def validate(self) -> None:
        """Reject malformed ids and names before any request is made."""
        for repo in self.options.get("repos") or ():
            if not valid_repo_id(repo):
                raise UsageError(
                    f"malformed repo id {repo!r}: expected 'namespace/name' made of letters, digits, "
                    "'-', '_' and '.'"
                )
        author = self.options.get("author")
        if author is not None and not re.match(r"^[A-Za-z0-9][\w.-]{0,95}$", author):
            raise UsageError(f"malformed --author {author!r}: expected a user or organisation name")

    def crawl(self, ctx: Any) -> Iterator[CrawlEvent]:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import logging as hf_logging

        # Retries are reported on the progress bar and failures in the catalog, not as log spam.
        hf_logging.set_verbosity_error()
        endpoint = self._endpoint()
        self._use_timeout(float(self.options.get("timeout") or DEFAULT_TIMEOUT_S))
        api = HfApi(endpoint=endpoint, token=self._token())
        retry = RetryPolicy(
            int(self.options.get("retries", DEFAULT_RETRIES)), sleep=self.sleep, on_wait=ctx.progress.set_postfix_str
        )
        self._preflight(api, endpoint, retry)
        fetched_at = ctx.stored("metadata_sha", "hf:")
        sort = self.options.get("sort") or "downloads"
        stop_before = ctx.previous_watermark if sort == "lastModified" else None
        if stop_before is not None:
            # A repo whose metadata fetch failed is retried by the next crawl, but under a newer
            # watermark it would never be listed again: list back to the oldest such repo.
            # (Disabled repos fail every time; they do not hold the watermark back.)
            owed = ctx.catalog.stored_values(
                "last_modified",
                "starts_with(checkpoint_id, 'hf:') AND sha IS DISTINCT FROM metadata_sha "
                "AND disabled IS NOT TRUE AND last_modified IS NOT NULL",
            )
            stop_before = min([stop_before, *owed.values()])
        ctx.progress.total = self.options.get("limit")

        if self.options.get("repos"):
            ctx.progress.total = len(self.options["repos"])
            for repo in dict.fromkeys(self.options["repos"]):
                yield from self._fetch(api, retry, repo, f"hf:{repo}", listed=None)
            return

        listing = api.list_models(
            search=self.options.get("search"),
            author=self.options.get("author"),
            filter=list(self.options.get("filters") or []) or None,
            pipeline_tag=self.options.get("pipeline_tag"),
            sort=sort,
            limit=self.options.get("limit"),
            expand=LIST_EXPAND,
        )
        # huggingface_hub already retries listing pages (429 with RateLimit, 5xx, network); a page
        # that still fails ends the run as failed, and the next run resumes it.
        items = iter(listing)
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as exc:
                kind, message = describe_error(exc)
                raise HubindexError(f"listing models from {endpoint} failed ({kind}): {message}") from None
            if not valid_repo_id(item.id):
                yield CrawlFailure(str(item.id)[:200], "invalid-repo-id", "the Hub listed a malformed repo id")
                continue
            last_modified = _naive_utc(item.last_modified)
            if stop_before is not None and last_modified is not None and last_modified < stop_before:
                return  # everything older was seen by the previous completed crawl
            checkpoint_id = f"hf:{item.id}"
            if item.sha is not None and fetched_at.get(checkpoint_id) == item.sha:
                yield CheckpointRecord(checkpoint_id, listing_columns(item))
                continue
            yield from self._fetch(api, retry, item.id, checkpoint_id, listed=item)

    def _fetch(
        self, api: Any, retry: RetryPolicy, repo_id: str, checkpoint_id: str, listed: Any | None
    ) -> Iterator[CrawlEvent]:
        """model_info for one repo; on failure keep what the listing said and record why."""
        from huggingface_hub.hf_api import ModelInfo

        timeout = float(self.options.get("timeout") or DEFAULT_TIMEOUT_S)
        try:
            data = retry.call(lambda: self._get_model_info(api, repo_id, timeout))
        except Exception as exc:
            kind, message = describe_error(exc)
            if listed is not None and kind != "not-found":
                # metadata_sha stays behind the listed sha, so the next crawl retries this repo.
                columns = listing_columns(listed)
                if kind == "disabled":
                    columns["disabled"] = True
                yield CheckpointRecord(checkpoint_id, columns)
            yield CrawlFailure(checkpoint_id, kind, message)
            return
        try:
            card = data.get("cardData")
            info = ModelInfo(**{**data, "cardData": None})
            columns = full_columns(info, card if isinstance(card, dict) else {}) if info.id == repo_id else None
        except Exception as exc:  # malformed metadata from an untrusted source
            if listed is not None:
                yield CheckpointRecord(checkpoint_id, listing_columns(listed))
            yield CrawlFailure(checkpoint_id, "bad-metadata", f"{type(exc).__name__}: {str(exc)[:300]}")
            return
        if columns is None:
            yield CrawlFailure(checkpoint_id, "invalid-repo-id", f"model_info answered for {str(info.id)[:200]!r}")
            return
        yield CheckpointRecord(checkpoint_id, columns, fetched=True)

    @staticmethod
    def _get_model_info(api: Any, repo_id: str, timeout: float) -> dict[str, Any]:
        """The JSON of `api.model_info(repo_id, files_metadata=True)`: the same request, unparsed.

        huggingface_hub turns cardData into ModelCardData, which drops a whole model-index it
        cannot parse (a dataset without a name, a metric without a type) and raises ValueError on
        one that is not a list; the raw card keeps every row flatten_model_index can use.
        """
        data = _get_json(api, f"/api/models/{repo_id}", {"blobs": True}, timeout)
        if not isinstance(data, dict):
            raise ValueError(f"model_info answered a {type(data).__name__}, not an object")
        return data

    def _preflight(self, api: Any, endpoint: str, retry: RetryPolicy) -> None:
        """One small request with our retry policy: fail fast and clearly on a bad endpoint."""
        timeout = float(self.options.get("timeout") or DEFAULT_TIMEOUT_S)
        try:
            answer = retry.call(lambda: _get_json(api, "/api/models", {"limit": 1}, timeout))
        except Exception as exc:
            kind, message = describe_error(exc)
            raise HubindexError(f"cannot reach the Hub API at {endpoint} ({kind}): {message}") from None
        if not isinstance(answer, list):
            raise HubindexError(f"{endpoint}/api/models did not answer with a model list; is it a Hub endpoint?")

    @staticmethod
    def _use_timeout(seconds: float) -> None:
        """huggingface_hub sets no HTTP timeout by default: give its shared client one."""
        from huggingface_hub import utils as hf_utils

        httpx, _ = _http_modules()
        from huggingface_hub.utils._http import hf_request_event_hook

        def factory() -> Any:
            return httpx.Client(
                event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=seconds
            )

        hf_utils.set_client_factory(factory)


@hookimpl
def register_crawlers(register):  # noqa: ANN001, ANN201 - hook signature
    register(HfCrawler)
