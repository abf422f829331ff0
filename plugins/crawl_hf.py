"""Crawler for the Hugging Face Hub, incremental on each repo's sha.

Hub content is untrusted and crawls run unattended, so every request goes through one bounded
path (HubClient.get_json), and what comes back is checked before it is used:

- Deadline: `--timeout` (30 s) bounds the whole of one request - connecting, sending, and every
  read of the headers and body - not each read: a server that dribbles bytes is cut off.
- Size: an answer is streamed and refused past MAX_RESPONSE_BYTES (16 MiB, counted after gzip
  decoding; other encodings are refused). A refused model_info answer is a `too-large` failure.
- Pagination: the crawler follows `Link: <...>; rel="next"` itself. A next page that was already
  fetched in this crawl, one on another host than the endpoint, or a page beyond
  MAX_LISTING_PAGES (10,000) ends the listing: the run fails with that reason, keeping its work.
- Waits: a 429 waits what `RateLimit` asks (else `Retry-After`, which a 408/5xx may send too);
  other 408/5xx answers, timeouts and network errors back off exponentially (1 s doubling, at
  most 8 s); up to `--retries` times. A wait the Hub asks for beyond `--max-wait` (310 s), or one
  that would take this crawl's waits past `--max-total-wait` (900 s), stops the crawl: the run
  fails with the reason, and the next run of the same command resumes it.
- Listing items are checked one by one (an object with a valid id; sha and dates strings, dates
  that parse): a bad item is a `failures` row and the crawl goes on. Other fields of an odd type
  are stored as NULL.
- Repo ids must match `namespace/name` in full (ASCII letters, digits, '-', '_', '.'; no '..', no
  trailing newline); text from the Hub that is stored or printed is made one line.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
import zlib
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, TypeVar
from urllib.parse import parse_qsl, urljoin, urlsplit

import click

from hubindex import hookimpl
from hubindex.errors import HubindexError, UsageError
from hubindex.options import FiniteFloatRange
from hubindex.types import CheckpointRecord, Crawler, CrawlEvent, CrawlFailure

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ModelInfo

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 5
DEFAULT_MAX_WAIT_S = 310.0  # rides out one of the Hub's 300 s rate-limit windows
DEFAULT_MAX_TOTAL_WAIT_S = 900.0
MAX_BACKOFF_S = 8.0
# Largest listing page or model_info answer read; the Hub's largest (repos of many thousands of
# files) are a few MB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Pages one listing may take; past this it is taken for a loop of ever-new URLs. The whole Hub
# (about 2M models) fits at 200 or more models a page.
MAX_LISTING_PAGES = 10_000
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
RESUME_HINT = "what was crawled is saved; run the same command again later to resume"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack")
# What the listing returns per repo: enough to decide whether model_info is needed at all.
LIST_EXPAND = [
    "sha", "lastModified", "createdAt", "downloads", "likes", "tags", "pipeline_tag",
    "library_name", "private", "gated", "disabled", "author",
]
# Listing fields that steer the crawl (is the repo changed? is the watermark passed?): an item
# whose one of them is not a string (or null) is a failure. Other fields of an odd type are
# stored as NULL, like odd model_info metadata.
LISTING_TEXT_FIELDS = ("sha", "lastModified", "createdAt")
# Hub repo ids: 'name' or 'namespace/name', each part of ASCII letters, digits, '_', '-' and '.'
# (no '..', checked apart). Always used with fullmatch: '$' would accept a trailing newline.
REPO_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
AUTHOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
ENDPOINT = re.compile(r"https?://[^/\s]+(?:/\S*)?")
T = TypeVar("T")


def valid_repo_id(repo_id: Any) -> bool:
    """Whether a repo id from the Hub (untrusted input) is well formed and path-safe."""
    return (
        isinstance(repo_id, str)
        and REPO_ID.fullmatch(repo_id) is not None
        and ".." not in repo_id
        and not repo_id.endswith((".git", ".ipynb"))
    )


def printable(text: str) -> str:
    """Text from the Hub as one line: line breaks and other control characters escaped (\\n, \\x00)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: Any, limit: int = 300) -> str:
    """Text from the Hub for a message or a failure row: one printable line, at most limit characters."""
    return printable(str(text)[:limit])[:limit]


def _failure(subject: Any, kind: str, message: Any) -> CrawlFailure:
    """A failure row whose subject and message are one line each, whatever the Hub sent."""
    return CrawlFailure(one_line(subject, 200), kind, one_line(message))


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


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def parse_listing_item(item: Any, position: int) -> ModelInfo | CrawlFailure:
    """The listed repo as huggingface_hub's ModelInfo, or a CrawlFailure saying why the item is unusable."""
    from huggingface_hub.hf_api import ModelInfo

    if not isinstance(item, dict):
        message = f"the item is {_json_type(item)}, not an object"
        return _failure(f"listing item {position}", "bad-listing-item", message)
    repo_id = item.get("id")
    if not valid_repo_id(repo_id):
        subject = repo_id if isinstance(repo_id, str) else f"listing item {position}"
        return _failure(subject, "invalid-repo-id", "the Hub listed a malformed repo id")
    subject = f"hf:{repo_id}"
    for name in LISTING_TEXT_FIELDS:
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            return _failure(subject, "bad-listing-item", f"{name!r} is {_json_type(value)}, not a string")
    try:
        # Only the fields the crawler reads: whatever else the item carries cannot break the parse.
        return ModelInfo(**{name: item[name] for name in ("id", *LIST_EXPAND) if name in item})
    except Exception as exc:  # a date that does not parse
        return _failure(subject, "bad-listing-item", f"{type(exc).__name__}: {exc}")


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of the HTTP client (httpx2, as huggingface_hub uses) worth retrying."""
    import httpx2 as httpx

    return (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# ------------------------------------------------------------------------------ requests


class BadAnswer(Exception):
    """An answer the crawler refuses to use: too large, in an unsupported encoding, or not JSON."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# When the request in progress must be over (time.monotonic()); every socket operation reads it.
_REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("hub_request_deadline", default=None)


def _time_left(timeout: float | None, expired: str) -> float | None:
    """One socket operation's timeout, cut to what is left of the request's deadline."""
    deadline = _REQUEST_DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        import httpcore2  # loaded: the request in progress runs on it

        # httpcore's own timeout errors, which httpx turns into its ConnectTimeout, ReadTimeout...
        raise getattr(httpcore2, expired)("the request took longer than --timeout allows")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """An httpcore network stream whose reads and writes also end at the request's deadline."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, "ReadTimeout"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, "WriteTimeout"))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        timeout = _time_left(timeout, "ConnectTimeout")
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


# httpx bounds each socket operation (a timeout per read); these bound their sum, so that a server
# sending one byte a second, in the headers or the body, cannot hold a request past its deadline.
class _DeadlineBackend:
    """An httpcore network backend whose connections end at the request's deadline."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> _DeadlineStream:
        timeout = _time_left(timeout, "ConnectTimeout")
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _DeadlineStream:
        timeout = _time_left(timeout, "ConnectTimeout")
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _environment_proxy(url: str) -> str | None:
    """The proxy that HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY name for url."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _read_capped(response: Any, max_bytes: int) -> bytearray:
    """A streamed answer's body, decoded, refused as soon as it passes max_bytes."""
    too_large = BadAnswer("too-large", f"the answer is larger than {max_bytes:,} bytes; not read further")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip"):
        raise BadAnswer("bad-answer", f"unsupported Content-Encoding {one_line(encoding, 40)!r}")
    # gzip decoded with an output bound: a small compressed answer cannot inflate past the cap.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    body = bytearray()
    for chunk in response.iter_raw():
        if inflater is not None:
            chunk = inflater.decompress(chunk, max_bytes + 1 - len(body))
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return body


class HubClient:
    """The one bounded request path to the Hub: a deadline per whole request, a size cap per answer."""

    def __init__(
        self, endpoint: str, token: str | bool, timeout_s: float, max_bytes: int = MAX_RESPONSE_BYTES
    ) -> None:
        import httpx2 as httpx
        from huggingface_hub.utils import build_hf_headers
        from huggingface_hub.utils._http import hf_request_event_hook

        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        transport = httpx.HTTPTransport(proxy=_environment_proxy(endpoint))
        # httpx has no option for a network backend; its connection pool (httpcore) takes one.
        transport._pool._network_backend = _DeadlineBackend(transport._pool._network_backend)
        headers = build_hf_headers(token=token)
        headers["Accept-Encoding"] = "gzip"  # the one encoding _read_capped decodes within its cap
        self._http = httpx.Client(
            transport=transport,
            trust_env=False,  # the proxy is in the transport, which environment proxies would bypass
            headers=headers,
            timeout=timeout_s,
            follow_redirects=True,
            # huggingface_hub's own hook: HF_HUB_OFFLINE blocks requests, each gets a request id.
            event_hooks={"request": [hf_request_event_hook]},
        )

    def close(self) -> None:
        self._http.close()

    def get_json(self, url: str, params: Any = None) -> tuple[Any, str, str | None]:
        """GET url within --timeout and the size cap: (JSON answer, URL answered, next page URL or None)."""
        import httpx2 as httpx
        from huggingface_hub.utils import hf_raise_for_status

        deadline = _REQUEST_DEADLINE.set(time.monotonic() + self.timeout_s)
        try:
            with self._http.stream("GET", url, params=params) as response:
                body = _read_capped(response, self.max_bytes)
        finally:
            _REQUEST_DEADLINE.reset(deadline)
        if response.status_code >= 400:
            # The body is decoded already: the headers must not say it is still encoded.
            headers = [(name, value) for name, value in response.headers.multi_items()
                       if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            answer = httpx.Response(response.status_code, headers=headers, content=bytes(body),
                                    request=response.request)
            hf_raise_for_status(answer)  # RepositoryNotFoundError, GatedRepoError, ... as huggingface_hub does
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BadAnswer("bad-answer", f"the answer is not JSON: {exc}") from None
        next_url = response.links.get("next", {}).get("url")
        answered = str(response.url)
        return data, answered, urljoin(answered, next_url) if next_url else None


def _listing_error(endpoint: str, kind: str, message: str) -> HubindexError:
    """The one-line error that ends a listing, and with it the run (the next run lists again)."""
    return HubindexError(f"listing models from {endpoint} failed ({kind}): {message}; "
                         "the checkpoints listed before it are saved")


def _page_key(url: str) -> tuple[Any, ...]:
    """What makes two page URLs the same page: the parameters' order and encoding do not."""
    parts = urlsplit(url)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.scheme.lower(), parts.netloc.lower(), parts.path, query


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port of url (the scheme's own port when none is written)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _same_origin(url: str, endpoint: str) -> bool:
    """Whether url is on the endpoint's scheme, host and port: where the token may be sent."""
    try:
        return _origin(url) == _origin(endpoint)
    except ValueError:  # a port that is not a number
        return False


# ------------------------------------------------------------------------------ retries


class RetryPolicy:
    """Retries transient Hub errors (408/429/5xx, network, timeouts); past its wait limits, stops the crawl."""

    def __init__(
        self,
        endpoint: str,
        max_retries: int = DEFAULT_RETRIES,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_total_wait_s: float = DEFAULT_MAX_TOTAL_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.endpoint = endpoint
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.max_total_wait_s = max_total_wait_s
        self.sleep = sleep
        self.on_wait = on_wait
        self.waited = 0.0

    def wait_for(self, exc: BaseException, attempt: int) -> tuple[float, bool] | None:
        """(seconds to wait before retrying after exc, whether the Hub asked for them), or None: no retry."""
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import parse_ratelimit_headers

        backoff = min(2.0**attempt, MAX_BACKOFF_S) * (1 + 0.1 * random.random())
        if isinstance(exc, _transient_errors()):
            return backoff, False
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
                    return limit.reset_in_seconds + 1.0, True
            retry_after = headers.get("Retry-After", "").strip()
            if re.fullmatch(r"\d+", retry_after):  # seconds; an HTTP date is taken as no advice
                return float(retry_after), True
            return backoff, False
        return None

    def call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                decision = self.wait_for(exc, attempt)
                if decision is None or attempt >= self.max_retries:
                    raise
                wait, asked_by_hub = decision
                if asked_by_hub and wait > self.max_wait_s:
                    why = f"it asks to wait {wait:.0f} s, more than --max-wait {self.max_wait_s:g} s"
                    raise self._stop(exc, why) from None
                wait = min(wait, self.max_wait_s)  # a backoff step never outgrows --max-wait
                if self.waited + wait > self.max_total_wait_s:
                    why = (f"this crawl has waited {self.waited:.0f} s to retry requests, and the next wait "
                           f"would pass --max-total-wait {self.max_total_wait_s:g} s")
                    raise self._stop(exc, why) from None
                attempt += 1
                self.waited += wait
                self.on_wait(f"{describe_error(exc)[0]}: retry {attempt}/{self.max_retries} in {wait:.0f} s")
                self.sleep(wait)

    def _stop(self, exc: BaseException, why: str) -> HubindexError:
        """The one-line error that stops the crawl instead of waiting: its cause, why, how to resume."""
        kind = describe_error(exc)[0]
        if kind == "http-429":
            cause = f"rate limited by {self.endpoint}"
        else:
            cause = f"{self.endpoint} keeps failing ({kind})"
        return HubindexError(f"{cause}: {why}; {RESUME_HINT}")


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for a failed Hub call, for the failures table."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    if isinstance(exc, DisabledRepoError):
        return "disabled", "access to this repository is disabled on the Hub"
    if isinstance(exc, GatedRepoError):
        return "gated", "gated repository: accept its conditions on the Hub and pass --token-env"
    if isinstance(exc, RepositoryNotFoundError):
        return "not-found", "repository not found (deleted, renamed or private)"
    if isinstance(exc, BadAnswer):
        return exc.kind, one_line(exc)
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return f"http-{exc.response.status_code}", one_line((str(exc).strip().splitlines() or [""])[0])
    if isinstance(exc, _transient_errors()):
        kind = "timeout" if "Timeout" in type(exc).__name__ else "network"
        return kind, one_line(f"{type(exc).__name__}: {exc}")
    return "error", one_line(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ records


def listing_columns(info: Any) -> dict[str, Any]:
    """Columns that a listing item (with LIST_EXPAND) already carries: no model_info needed."""
    gated = getattr(info, "gated", None)
    author = _text(info.author)
    return {
        "repo_id": info.id,
        "sha": _text(info.sha),
        "last_modified": _naive_utc(info.last_modified),
        "created_at": _naive_utc(info.created_at),
        "author": printable(author) if author else (info.id.split("/")[0] if "/" in info.id else None),
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
    ]
    base_models = [printable(b) for b in base_models] or None  # repo ids as the card wrote them
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


# ------------------------------------------------------------------------------ crawler


class HfCrawler(Crawler):
    """Index models of the Hugging Face Hub (or any server speaking its API).

    Lists models and calls model_info only for repos that are new or whose sha changed since the
    last crawl; the others cost nothing beyond the listing. Rate limits (429), server errors and
    timeouts are retried; gated, disabled and vanished repos and malformed listing items are
    recorded and skipped. The Hub is untrusted: each request ends within --timeout, answers over
    16 MiB are refused, and a pagination loop or a rate limit longer than --max-wait stops the
    crawl. An interrupted or stopped crawl keeps its work; the same command resumes it.
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
            click.Option(["--timeout"], type=FiniteFloatRange(0.1, 600), default=DEFAULT_TIMEOUT_S,
                         show_default=True,
                         help="Seconds one HTTP request may take in all: connecting, sending and reading "
                              f"the whole answer (at most {MAX_RESPONSE_BYTES // 2**20} MiB)."),
            click.Option(["--retries"], type=click.IntRange(0, 20), default=DEFAULT_RETRIES,
                         show_default=True,
                         help="Retries of a request on 429, 408, 5xx, timeouts and network errors."),
            click.Option(["--max-wait"], type=FiniteFloatRange(0, 86400), default=DEFAULT_MAX_WAIT_S,
                         show_default=True,
                         help="Longest wait a rate limit (RateLimit, Retry-After) may ask for; a longer one "
                              "stops the crawl, and running the same command again resumes it."),
            click.Option(["--max-total-wait"], type=FiniteFloatRange(0, 86400), default=DEFAULT_MAX_TOTAL_WAIT_S,
                         show_default=True,
                         help="Seconds a crawl may spend waiting to retry requests, in all; then it stops "
                              "(resumable, as for --max-wait)."),
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
        if not ENDPOINT.fullmatch(endpoint):
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
        if author is not None and not AUTHOR.fullmatch(author):
            raise UsageError(f"malformed --author {author!r}: expected a user or organisation name")

    def crawl(self, ctx: Any) -> Iterator[CrawlEvent]:
        endpoint = self._endpoint()
        client = HubClient(endpoint, self._token(), float(self.options.get("timeout") or DEFAULT_TIMEOUT_S))
        retry = RetryPolicy(
            endpoint,
            int(self.options.get("retries", DEFAULT_RETRIES)),
            float(self.options.get("max_wait", DEFAULT_MAX_WAIT_S)),
            float(self.options.get("max_total_wait", DEFAULT_MAX_TOTAL_WAIT_S)),
            sleep=self.sleep,
            on_wait=ctx.progress.set_postfix_str,
        )
        try:
            yield from self._crawl(ctx, client, retry)
        finally:
            client.close()

    def _crawl(self, ctx: Any, client: HubClient, retry: RetryPolicy) -> Iterator[CrawlEvent]:
        self._preflight(client, retry)
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
                yield from self._fetch(client, retry, repo, f"hf:{repo}", listed=None)
            return

        for position, item in enumerate(self._listing(client, retry, sort), start=1):
            listed = parse_listing_item(item, position)
            if isinstance(listed, CrawlFailure):
                yield listed
                continue
            last_modified = _naive_utc(listed.last_modified)
            if stop_before is not None and last_modified is not None and last_modified < stop_before:
                return  # everything older was seen by the previous completed crawl
            checkpoint_id = f"hf:{listed.id}"
            if listed.sha is not None and fetched_at.get(checkpoint_id) == listed.sha:
                yield CheckpointRecord(checkpoint_id, listing_columns(listed))
                continue
            yield from self._fetch(client, retry, listed.id, checkpoint_id, listed=listed)

    def _listing(self, client: HubClient, retry: RetryPolicy, sort: str) -> Iterator[Any]:
        """The listing's raw items, page after page (`Link: rel="next"`), within MAX_LISTING_PAGES."""
        # A page that cannot be fetched, or a next page that loops or leaves the endpoint, fails the
        # run rather than ending the listing quietly: a completed run would move the lastModified
        # watermark past the repos never listed. What was listed is kept; the next run resumes.
        limit = self.options.get("limit")
        query = {
            "search": self.options.get("search"),
            "author": self.options.get("author"),
            "filter": list(self.options.get("filters") or []) or None,
            "pipeline_tag": self.options.get("pipeline_tag"),
            "sort": sort,
            "limit": limit,
            "expand": LIST_EXPAND,
        }
        params: dict[str, Any] | None = {name: value for name, value in query.items() if value is not None}
        url = f"{client.endpoint}/api/models"
        fetched: set[tuple[Any, ...]] = set()
        items_listed = 0
        for page in range(1, MAX_LISTING_PAGES + 1):
            try:
                items, answered, next_url = retry.call(partial(client.get_json, url, params))
            except HubindexError:
                raise
            except Exception as exc:
                raise _listing_error(client.endpoint, *describe_error(exc)) from None
            if not isinstance(items, list):
                message = f"page {page} is {_json_type(items)}, not a list of models"
                raise _listing_error(client.endpoint, "bad-answer", message)
            fetched.add(_page_key(answered))
            for item in items:
                yield item
                items_listed += 1
                if limit is not None and items_listed >= limit:
                    return
            if next_url is None:
                return
            if _page_key(next_url) in fetched:
                message = f"page {page} links back to a page already fetched ({one_line(next_url, 200)})"
                raise _listing_error(client.endpoint, "pagination-loop", message)
            if not _same_origin(next_url, client.endpoint):
                message = f"page {page} links to a next page on another host ({one_line(next_url, 200)})"
                raise _listing_error(client.endpoint, "foreign-link", message)
            url, params = next_url, None  # the next page's URL carries the query
        message = f"the listing goes on past {MAX_LISTING_PAGES:,} pages"
        raise _listing_error(client.endpoint, "too-many-pages", message)

    def _fetch(
        self, client: HubClient, retry: RetryPolicy, repo_id: str, checkpoint_id: str, listed: Any | None
    ) -> Iterator[CrawlEvent]:
        """model_info for one repo; on failure keep what the listing said and record why."""
        from huggingface_hub.hf_api import ModelInfo

        try:
            data = retry.call(partial(self._get_model_info, client, repo_id))
        except HubindexError:
            raise  # the crawl stops (a rate limit past --max-wait): not this repo's failure
        except Exception as exc:
            kind, message = describe_error(exc)
            if listed is not None and kind != "not-found":
                # metadata_sha stays behind the listed sha, so the next crawl retries this repo.
                columns = listing_columns(listed)
                if kind == "disabled":
                    columns["disabled"] = True
                yield CheckpointRecord(checkpoint_id, columns)
            yield _failure(checkpoint_id, kind, message)
            return
        try:
            card = data.get("cardData")
            info = ModelInfo(**{**data, "cardData": None})
            columns = full_columns(info, card if isinstance(card, dict) else {}) if info.id == repo_id else None
        except Exception as exc:  # malformed metadata from an untrusted source
            if listed is not None:
                yield CheckpointRecord(checkpoint_id, listing_columns(listed))
            yield _failure(checkpoint_id, "bad-metadata", f"{type(exc).__name__}: {exc}")
            return
        if columns is None:
            yield _failure(checkpoint_id, "invalid-repo-id", f"model_info answered for {info.id!r}")
            return
        yield CheckpointRecord(checkpoint_id, columns, fetched=True)

    @staticmethod
    def _get_model_info(client: HubClient, repo_id: str) -> dict[str, Any]:
        """The JSON of `HfApi.model_info(repo_id, files_metadata=True)`: the same request, unparsed.

        huggingface_hub turns cardData into ModelCardData, which drops a whole model-index it
        cannot parse (a dataset without a name, a metric without a type) and raises ValueError on
        one that is not a list; the raw card keeps every row flatten_model_index can use.
        """
        data, _, _ = client.get_json(f"{client.endpoint}/api/models/{repo_id}", {"blobs": True})
        if not isinstance(data, dict):
            raise BadAnswer("bad-metadata", f"model_info answered {_json_type(data)}, not an object")
        return data

    def _preflight(self, client: HubClient, retry: RetryPolicy) -> None:
        """One small request with our retry policy: fail fast and clearly on a bad endpoint."""
        try:
            answer, _, _ = retry.call(partial(client.get_json, f"{client.endpoint}/api/models", {"limit": 1}))
        except HubindexError:
            raise
        except Exception as exc:
            kind, message = describe_error(exc)
            raise HubindexError(f"cannot reach the Hub API at {client.endpoint} ({kind}): {message}") from None
        if not isinstance(answer, list):
            raise HubindexError(
                f"{client.endpoint}/api/models did not answer with a model list; is it a Hub endpoint?"
            )


@hookimpl
def register_crawlers(register):  # noqa: ANN001, ANN201 - hook signature
    register(HfCrawler)
