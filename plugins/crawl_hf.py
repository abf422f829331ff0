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
- Concurrency: `--concurrency N` model_info requests run side by side on worker threads (one
  HubClient, which is thread-safe). Their results are used in listing order, so the catalog and
  the events do not depend on N; retries are decided on the crawl's thread in that order, and a
  wait the Hub asks for holds every request until it is over. Ctrl-C shuts the connections of
  requests in flight, so it takes effect at once.
- Listing items are checked one by one (an object with a valid id; sha and dates strings, dates
  that parse): a bad item is a `failures` row and the crawl goes on. Other fields of an odd type
  are stored as NULL.
- Repo ids must match `namespace/name` in full (ASCII letters, digits, '-', '_', '.'; no '..', no
  trailing newline); text from the Hub that is stored or printed is made one line.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import threading
import time
import urllib.request
import weakref
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
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
# model_info requests in flight at once: a few hide the Hub's latency (300 ms each is 7 days of
# waiting for 2M models one at a time). The Hub's limits are per client however many requests
# run at once (500 API calls per 5 minutes anonymous, 1,000 with a free token): a crawl that
# reaches them is paced by their 429 answers, which hold every worker.
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
# adapter_config.json is read (from /resolve) only for repos that list it; real ones are ~1 KB.
ADAPTER_CONFIG = "adapter_config.json"
MAX_ADAPTER_CONFIG_BYTES = 256 * 1024
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Listing items read ahead of the oldest unfinished model_info request; their events wait for it.
MAX_READ_AHEAD = 1000
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

    def __init__(self, stream: Any, backend: _DeadlineBackend) -> None:
        self._stream = stream
        self._backend = backend

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
        return self._backend.opened(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


# httpx bounds each socket operation (a timeout per read); these bound their sum, so that a server
# sending one byte a second, in the headers or the body, cannot hold a request past its deadline.
class _DeadlineBackend:
    """An httpcore network backend whose connections end at the request's deadline."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._streams: weakref.WeakSet[_DeadlineStream] = weakref.WeakSet()
        self._lock = threading.Lock()  # connections open on several threads at once

    def opened(self, stream: Any) -> _DeadlineStream:
        """Wrap a new connection, and keep it in reach of abort()."""
        wrapped = _DeadlineStream(stream, self)
        with self._lock:
            self._streams.add(wrapped)
        return wrapped

    def abort(self) -> None:
        """Shut down every open connection: a request blocked reading one, on another thread, ends at once."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            try:
                stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):  # already closed, or not a socket
                pass

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Any = None,
    ) -> _DeadlineStream:
        timeout = _time_left(timeout, "ConnectTimeout")
        return self.opened(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> _DeadlineStream:
        timeout = _time_left(timeout, "ConnectTimeout")
        return self.opened(self._backend.connect_unix_socket(path, timeout, socket_options))

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
    """The one bounded request path to the Hub: a deadline per whole request, a size cap per answer.

    Safe to use from several threads at once: httpx's client and connection pool are, and each
    request's deadline is a context variable, which every thread holds for itself.
    """

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
        self._backend = _DeadlineBackend(transport._pool._network_backend)
        transport._pool._network_backend = self._backend
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

    def abort(self) -> None:
        """End the requests in progress at once, as failed (used when the crawl is interrupted)."""
        self._backend.abort()

    def get_json(self, url: str, params: Any = None, max_bytes: int | None = None) -> tuple[Any, str, str | None]:
        """GET url within --timeout and the size cap (or a smaller one): (JSON answer, URL answered, next page URL or None)."""
        import httpx2 as httpx
        from huggingface_hub.utils import hf_raise_for_status

        deadline = _REQUEST_DEADLINE.set(time.monotonic() + self.timeout_s)
        try:
            with self._http.stream("GET", url, params=params) as response:
                body = _read_capped(response, min(self.max_bytes, max_bytes or self.max_bytes))
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
    """Retries transient Hub errors (408/429/5xx, network, timeouts); past its wait limits, stops the crawl.

    Its waits are taken on one thread, the crawl's; while it waits because the Hub asked (a rate
    limit), `open` is cleared, and requests on other threads wait for it before they are sent.
    """

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
        self.open = threading.Event()
        self.open.set()

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
                if not self.pause(exc, attempt):
                    raise
                attempt += 1

    def pause(self, exc: BaseException, attempt: int, failed_at: float | None = None) -> bool:
        """Wait before retrying a request that failed with exc after `attempt` retries; False: do not retry.

        failed_at (time.monotonic()) is when an answer that asks for a wait came: a request that ran
        beside others may be read late, and the time since then counts towards its wait. Raises
        HubindexError, stopping the crawl, when a wait is past --max-wait or --max-total-wait.
        """
        decision = self.wait_for(exc, attempt)
        if decision is None or attempt >= self.max_retries:
            return False
        wait, asked_by_hub = decision
        if asked_by_hub and wait > self.max_wait_s:
            why = f"it asks to wait {wait:.0f} s, more than --max-wait {self.max_wait_s:g} s"
            raise self._stop(exc, why) from None
        wait = min(wait, self.max_wait_s)  # a backoff step never outgrows --max-wait
        if asked_by_hub and failed_at is not None:
            # Whole seconds, as the Hub asks them: the retry is never sent early.
            wait = max(0.0, float(math.ceil(wait - (time.monotonic() - failed_at))))
        if self.waited + wait > self.max_total_wait_s:
            why = (f"this crawl has waited {self.waited:.0f} s to retry requests, and the next wait "
                   f"would pass --max-total-wait {self.max_total_wait_s:g} s")
            raise self._stop(exc, why) from None
        self.waited += wait
        if wait > 0:
            self.on_wait(f"{describe_error(exc)[0]}: retry {attempt + 1}/{self.max_retries} in {wait:.0f} s")
            if asked_by_hub:
                self.open.clear()  # the Hub's limit is per client: hold every request
            try:
                self.sleep(wait)
            finally:
                self.open.set()
        return True

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


# ------------------------------------------------------------------------------ concurrent model_info


@dataclass
class Fetch:
    """A repo whose model_info the crawl needs, with what its listing said (None under --repo)."""

    repo_id: str
    checkpoint_id: str
    listed: Any | None


@dataclass
class RepoAnswer:
    """What the Hub answered for one repo: model_info's JSON, and its adapter_config.json if read."""

    info: dict[str, Any]
    adapter_config: Any = None
    adapter_read: bool = False  # whether an adapter_config.json the repo lists could be read


@dataclass
class Outcome:
    """What one repo's requests came back with: the answers or the error, and when (time.monotonic())."""

    data: RepoAnswer | None = None
    error: BaseException | None = None
    at: float = 0.0


class _Stopped(Exception):
    """A request not sent: the crawl is stopping."""


@dataclass
class _InFlight:
    fetch: Fetch
    future: Future[Outcome]
    attempt: int = 0


class ModelInfoFetches:
    """model_info requests on a few threads, handed back in the order the crawl asked for them.

    The order keeps the catalog and the crawl's events the same at any concurrency. Retries, and
    their waits, are decided on the crawl's thread as each request comes up in that order: a rate
    limit holds every thread (RetryPolicy.open) and is waited for once, not once per thread.
    """

    def __init__(
        self, get: Callable[[str], RepoAnswer], retry: RetryPolicy, abort: Callable[[], None], workers: int
    ) -> None:
        self._get = get
        self._retry = retry
        self._abort = abort
        self.workers = workers
        # Requests started beyond the oldest one not handed back yet. One worker starts nothing
        # ahead: requests, listing pages included, go one after the other as in a sequential crawl.
        self.window = 1 if workers == 1 else 2 * workers
        self._stopping = threading.Event()

    def run(self, work: Iterator[CrawlEvent | Fetch]) -> Iterator[tuple[CrawlEvent | Fetch, Outcome | None]]:
        """Each entry of work in order, a Fetch with its final outcome (retries done), an event with None.

        If work fails (the listing), the fetches it gave are finished first. If a retry stops the
        crawl (HubindexError), the answers already in are handed back first; the rest is left to
        the next run.
        """
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="hubindex-model-info")
        queue: deque[CrawlEvent | _InFlight] = deque()
        finished = False
        try:
            try:
                listing_error: HubindexError | None = None
                in_flight = 0
                while True:
                    try:
                        entry = next(work)
                    except StopIteration:
                        break
                    except HubindexError as exc:
                        listing_error = exc
                        break
                    if isinstance(entry, Fetch):
                        queue.append(_InFlight(entry, pool.submit(self._request, entry.repo_id)))
                        in_flight += 1
                    else:
                        queue.append(entry)
                    while queue and self._due(queue[0], in_flight, len(queue)):
                        head = queue.popleft()
                        in_flight -= isinstance(head, _InFlight)
                        yield self._take(pool, head)
                while queue:
                    yield self._take(pool, queue.popleft())
                if listing_error is not None:
                    raise listing_error
            except HubindexError:
                self._stopping.set()
                yield from self._answered(queue)
                raise
            finished = True
        finally:
            self._stopping.set()
            self._retry.open.set()
            for entry in queue:
                if isinstance(entry, _InFlight):
                    entry.future.cancel()
            if not finished:
                self._abort()  # Ctrl-C: requests still running end now, not at --timeout
            pool.shutdown(wait=finished, cancel_futures=True)

    def _due(self, head: CrawlEvent | _InFlight, in_flight: int, queued: int) -> bool:
        """Whether to hand back the oldest entry now, waiting for its request if need be."""
        if not isinstance(head, _InFlight):
            return True
        return head.future.done() or in_flight >= self.window or queued >= MAX_READ_AHEAD

    def _take(self, pool: ThreadPoolExecutor, entry: CrawlEvent | _InFlight) -> tuple[CrawlEvent | Fetch, Outcome | None]:
        """An entry with its outcome: a request's answer, after the retries it is due."""
        if not isinstance(entry, _InFlight):
            return entry, None
        while True:
            outcome = entry.future.result()
            if outcome.error is None or not self._retry.pause(outcome.error, entry.attempt, outcome.at):
                return entry.fetch, outcome
            entry.attempt += 1
            entry.future = pool.submit(self._request, entry.fetch.repo_id)

    def _answered(self, queue: deque[CrawlEvent | _InFlight]) -> Iterator[tuple[CrawlEvent | Fetch, Outcome | None]]:
        """What is worth keeping when the crawl stops: events, and requests that succeeded."""
        for entry in queue:
            if not isinstance(entry, _InFlight):
                yield entry, None
            elif not entry.future.cancel():
                outcome = entry.future.result()  # running: it ends within --timeout
                if outcome.error is None:
                    yield entry.fetch, outcome
        queue.clear()

    def _request(self, repo_id: str) -> Outcome:
        """One repo's requests (model_info, maybe its adapter config), on a worker thread; it never raises."""
        self._retry.open.wait()
        if self._stopping.is_set():
            return Outcome(error=_Stopped(), at=time.monotonic())
        try:
            return Outcome(data=self._get(repo_id), at=time.monotonic())
        except Exception as exc:  # this repo's failure, or a retry: the crawl's thread decides
            return Outcome(error=exc, at=time.monotonic())


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
    --concurrency N sends up to N model_info requests at once; the catalog gets the same rows.
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
            click.Option(["--concurrency"], type=click.IntRange(1, MAX_CONCURRENCY), default=DEFAULT_CONCURRENCY,
                         show_default=True, metavar="N",
                         help="model_info requests in flight at once (1 to 64). The catalog sees the "
                              "repos in listing order whatever N is; a rate limit holds them all."),
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
        """The Hub token: from the variable --token-env names, else huggingface_hub's own lookup.

        That lookup is $HF_TOKEN, then the token file `hf auth login` writes (in $HF_HOME); none
        found, or HF_HUB_DISABLE_IMPLICIT_TOKEN set, means anonymous requests. The token only goes
        into the Authorization header, never into output or the catalog.
        """
        name = self.options.get("token_env")
        if name:
            token = os.environ.get(name)
            if not token:
                raise UsageError(f"--token-env {name}: the environment variable {name} is not set")
            return token
        if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").upper() in ("1", "ON", "YES", "TRUE"):
            return False
        from huggingface_hub import get_token

        return get_token() or False

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
        concurrency = self.options.get("concurrency", DEFAULT_CONCURRENCY)
        if not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {concurrency!r}")

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
        fetches = ModelInfoFetches(
            partial(self._get_repo, client), retry, client.abort,
            self.options.get("concurrency", DEFAULT_CONCURRENCY),
        )
        try:
            yield from self._crawl(ctx, client, retry, fetches)
        finally:
            client.close()

    def _crawl(
        self, ctx: Any, client: HubClient, retry: RetryPolicy, fetches: ModelInfoFetches
    ) -> Iterator[CrawlEvent]:
        self._preflight(client, retry)
        fetched_at = ctx.stored("metadata_sha", "hf:")
        sort = self.options.get("sort") or "downloads"
        stop_before = ctx.previous_watermark if sort == "lastModified" else None
        if stop_before is not None:
            # A repo whose metadata fetch failed is retried by the next crawl, but under a newer
            # watermark it would never be listed again: list back to the oldest such repo.
            # (Disabled repos fail every time; they do not hold the watermark back.)
            owed = ctx.stored_values(
                "last_modified",
                "starts_with(checkpoint_id, 'hf:') AND sha IS DISTINCT FROM metadata_sha "
                "AND disabled IS NOT TRUE AND last_modified IS NOT NULL",
            )
            stop_before = min([stop_before, *owed.values()])
        ctx.progress.total = self.options.get("limit")

        if self.options.get("repos"):
            ctx.progress.total = len(self.options["repos"])
            work: Iterator[CrawlEvent | Fetch] = (
                Fetch(repo, f"hf:{repo}", listed=None) for repo in dict.fromkeys(self.options["repos"])
            )
        else:
            work = self._listed_work(client, retry, sort, fetched_at, stop_before)
        for entry, outcome in fetches.run(work):
            if outcome is None:
                yield entry  # an event of the listing itself
            elif outcome.error is None:
                yield from self._fetched(entry, outcome)
            else:
                yield from self._failed(entry, outcome.error)

    def _listed_work(
        self, client: HubClient, retry: RetryPolicy, sort: str, fetched_at: dict[str, Any],
        stop_before: datetime | None,
    ) -> Iterator[CrawlEvent | Fetch]:
        """The listing as events (unchanged repos, bad items) and the model_info fetches it needs."""
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
            yield Fetch(listed.id, checkpoint_id, listed)

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

    def _failed(self, fetch: Fetch, exc: BaseException) -> Iterator[CrawlEvent]:
        """A repo whose model_info failed: keep what the listing said and record why."""
        kind, message = describe_error(exc)
        if fetch.listed is not None and kind != "not-found":
            # metadata_sha stays behind the listed sha, so the next crawl retries this repo.
            columns = listing_columns(fetch.listed)
            if kind == "disabled":
                columns["disabled"] = True
            yield CheckpointRecord(fetch.checkpoint_id, columns)
        yield _failure(fetch.checkpoint_id, kind, message)

    def _fetched(self, fetch: Fetch, outcome: Outcome) -> Iterator[CrawlEvent]:
        """A repo's full record from its model_info answer, checked as untrusted input."""
        from huggingface_hub.hf_api import ModelInfo

        from hubindex_plugins.lineage_declared import hub_edge_set  # it imports this module

        answer = outcome.data or RepoAnswer({})
        data = answer.info
        try:
            card = data.get("cardData") if isinstance(data.get("cardData"), dict) else {}
            info = ModelInfo(**{**data, "cardData": None})
            columns = full_columns(info, card) if info.id == fetch.repo_id else None
            files = [s.rfilename for s in info.siblings or [] if isinstance(s.rfilename, str)]
            edges = hub_edge_set(
                card, info.tags if isinstance(info.tags, list) else [], info.config, files, fetch.repo_id,
                answer.adapter_config, answer.adapter_read, (columns or {}).get("base_models") or [],
            )
        except Exception as exc:  # malformed metadata from an untrusted source
            if fetch.listed is not None:
                yield CheckpointRecord(fetch.checkpoint_id, listing_columns(fetch.listed))
            yield _failure(fetch.checkpoint_id, "bad-metadata", f"{type(exc).__name__}: {exc}")
            return
        if columns is None:
            yield _failure(fetch.checkpoint_id, "invalid-repo-id", f"model_info answered for {info.id!r}")
            return
        yield CheckpointRecord(fetch.checkpoint_id, columns, fetched=True, edges=edges)

    @staticmethod
    def _get_repo(client: HubClient, repo_id: str) -> RepoAnswer:
        """model_info, then the repo's adapter_config.json when it lists one (an adapter's base model)."""
        info = HfCrawler._get_model_info(client, repo_id)
        siblings = info.get("siblings")
        listed = isinstance(siblings, list) and any(
            isinstance(s, dict) and s.get("rfilename") == ADAPTER_CONFIG for s in siblings)
        if not listed:
            return RepoAnswer(info)
        sha = info.get("sha")
        revision = sha if isinstance(sha, str) and COMMIT_SHA.fullmatch(sha) else "main"
        try:
            adapter_config, _, _ = client.get_json(
                f"{client.endpoint}/{repo_id}/resolve/{revision}/{ADAPTER_CONFIG}", max_bytes=MAX_ADAPTER_CONFIG_BYTES)
        except Exception as exc:
            from huggingface_hub.errors import HfHubHTTPError

            # Gated (403), gone (404), too large, not JSON: the card's edges still stand. An error
            # worth retrying (429, 5xx, timeouts) retries the repo's requests as a whole.
            refused = isinstance(exc, BadAnswer) or (
                isinstance(exc, HfHubHTTPError) and exc.response is not None
                and exc.response.status_code not in RETRY_STATUS)
            if refused:
                return RepoAnswer(info)
            raise
        return RepoAnswer(info, adapter_config, adapter_read=True)

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
