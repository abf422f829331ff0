"""A stateful imitation of the Hugging Face Hub API, served over real HTTP on 127.0.0.1.

It answers what `huggingface_hub` (2.x) sends, as the real client sees it (see shared/HUB_API.md):

- `GET /api/models` with search, author, filter (repeated), pipeline_tag, sort (always descending),
  limit (caps the total, it is not a page size), full / cardData / config and expand (repeated),
  paginated by the server with a `Link: <absolute URL with cursor>; rel="next"` header;
- `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{rev}` (`?blobs=true` adds
  sizes and LFS metadata to the siblings);
- `GET /api/models/{repo_id}/tree/{rev}[/{path}]?recursive=true`;
- `HEAD`/`GET /{repo_id}/resolve/{rev}/{filename}` with X-Repo-Commit, ETag and Content-Length;
- errors with the headers that `hf_raise_for_status` reads: X-Error-Code RepoNotFound (404, and
  401 for private repos), GatedRepo (403 on /resolve), RevisionNotFound, EntryNotFound, and
  `X-Error-Message: Access to this resource is disabled.` (403) for disabled repos.

Lineage as the Hub shows it: `add_repo` takes a card's `base_model` (one or a list) and
`base_model_relation` (also put in the tags, `base_model:<relation>:<id>`), an `adapter_config`
(served as adapter_config.json through /resolve, in the siblings) and a config `name_or_path`
(`_name_or_path` in config.json and in model_info's config).

Tests change its state (add, update, delete repos, change download counts), inject faults
(429 with RateLimit or Retry-After, 5xx, slow answers, dropped connections, "everything fails after
N model_info calls"), give every request of a kind a latency (`latency`, as the real Hub's
~300 ms; requests are served concurrently) and read back a log of the requests it answered.

Hostile mode: a Hub whose content and behaviour are untrusted. `hostile_item` lists a repo with
raw field values (garbage dates, wrong types) or as some other JSON value; `self_link` and
`link_to` send a `Link` header back to the same page or to another host; `huge_body` streams an
answer of any size without holding it in memory; `dribble` sends the real answer one byte at a
time; `retry_after` takes any number of seconds; `add_repo` takes any id, a newline included.

Use: `from hub_imitation import hub, hub_server` in a test module (pytest puts tests/ on sys.path),
then take the `hub` fixture: a fresh, empty HubImitation whose `.url` is the endpoint to pass to
`HfApi(endpoint=...)` or `hubindex crawl hf --endpoint ...`. One server is shared by the session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlencode

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

# The client asks `expand=` for any of these (ExpandModelProperty_T in huggingface_hub); the Hub
# answers 400 for anything else.
EXPAND_PROPERTIES = frozenset({
    "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
    "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
    "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token",
    "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings",
    "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData",
})
SORT_KEYS = ("downloads", "likes", "lastModified", "createdAt", "trendingScore")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".gguf", ".msgpack")
DISABLED_MESSAGE = "Access to this resource is disabled."
START_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)

# Request kinds, as the log and the fault matchers name them.
LIST, MODEL_INFO, TREE, RESOLVE, OTHER = "list", "model_info", "tree", "resolve", "other"

_API_REPO = re.compile(
    r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)??)"
    r"(?:/(?P<action>revision|tree)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$"
)
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def iso(value: datetime) -> str:
    """The Hub's timestamp format: '2024-02-19T11:06:12.000Z'."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(content: bytes) -> bytes:
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(content).hexdigest()}\nsize {len(content)}\n"
    ).encode()


def _bool_param(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


@dataclass
class RepoFile:
    path: str
    content: bytes

    @property
    def is_lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return _lfs_pointer(self.content)

    @property
    def oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        return _git_blob_oid(self.pointer if self.is_lfs else self.content)

    @property
    def etag(self) -> str:
        return self.sha256 if self.is_lfs else self.oid


@dataclass
class Repo:
    """One model repository, as the Hub stores it."""

    id: str
    object_id: str
    sha: str
    created_at: datetime
    last_modified: datetime
    files: dict[str, RepoFile]
    # Older commits stay resolvable: {sha: files at that commit}.
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    private: bool = False
    gated: bool | str = False  # False, "auto" or "manual"
    disabled: bool = False
    downloads: int = 0
    downloads_all_time: int = 0
    likes: int = 0
    trending_score: int = 0
    pipeline_tag: str | None = None
    library_name: str | None = None
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    card_data: dict[str, Any] | None = None
    safetensors: dict[str, Any] | None = None

    @property
    def author(self) -> str | None:
        return self.id.split("/")[0] if "/" in self.id else None


@dataclass
class Fault:
    """What to do instead of (or before) answering a request."""

    status: int | None = None  # answer with this status instead of the real answer
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0  # wait this long before answering (the real answer unless status is set)
    drop: bool = False  # close the connection without answering
    link: str | None = None  # add `Link: <link>; rel="next"`; "self" is the request's own URL
    # Send this instead of the answer's body: given the real body, the chunks to stream.
    stream: Callable[[bytes], Iterator[bytes]] | None = None


@dataclass
class _Injected:
    match: Callable[[str, str, str], bool]  # (kind, path, query) -> bool
    fault: Fault
    remaining: int | None  # None: forever


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    kind: str
    repo_id: str | None
    status: int | None = None  # None when the connection was dropped

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class HubImitation:
    """The Hub's state and its HTTP behaviour. `handle` is the werkzeug handler."""

    def __init__(self, page_size: int = 3) -> None:
        self.page_size = page_size
        self.url = ""  # set once served
        self.repos: dict[str, Repo] = {}
        self.log: list[LoggedRequest] = []
        self._faults: list[_Injected] = []
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._clock = START_TIME
        self._counter = 0
        self._fail_after: tuple[int, frozenset[str], Fault] | None = None
        self._model_info_answered = 0
        # Hostile listing items: {repo id: a whole replacement item, or raw field values}.
        self._hostile_items: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._latency: dict[str, float] = {}

    # ------------------------------------------------------------------ state

    def _tick(self) -> datetime:
        """A strictly increasing clock, one minute per change, so orders are deterministic."""
        self._clock += timedelta(minutes=1, milliseconds=123)
        return self._clock

    def _new_sha(self, repo_id: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{repo_id}:{self._counter}".encode()).hexdigest()

    def add_repo(
        self,
        repo_id: str,
        *,
        pipeline_tag: str | None = "image-classification",
        library_name: str | None = "transformers",
        model_type: str | None = "vit",
        architectures: list[str] | None = None,
        license: str | None = "apache-2.0",
        datasets: list[str] | None = None,
        base_model: str | list[str] | None = None,
        base_model_relation: str | None = None,
        adapter_config: dict[str, Any] | None = None,
        name_or_path: str | None = None,
        arxiv: list[str] | None = None,
        model_index: list[dict[str, Any]] | None = None,
        params: dict[str, int] | None = None,
        files: dict[str, bytes] | None = None,
        extra_tags: list[str] | None = None,
        config: dict[str, Any] | None = None,
        gated: bool | str = False,
        disabled: bool = False,
        private: bool = False,
        downloads: int = 0,
        likes: int = 0,
        trending_score: int = 0,
    ) -> Repo:
        """Create a repo with consistent tags, card data, config and files, like the Hub derives them.

        Lineage: `base_model` and `base_model_relation` go into the card (and the Hub's tags
        `base_model:<id>`, plus `base_model:<relation>:<id>` when the relation is stated);
        `adapter_config` makes an adapter repo (adapter_config.json and adapter weights instead of a
        model); `name_or_path` is config.json's `_name_or_path`.
        """
        with self._lock:
            if config is None:
                config = {}
                if model_type:
                    config["model_type"] = model_type
                if architectures or model_type:
                    config["architectures"] = architectures or [f"{model_type.capitalize()}Model"]
            if name_or_path is not None:
                config = {**config, "_name_or_path": name_or_path}
            card: dict[str, Any] = {}
            if license:
                card["license"] = license
            if datasets:
                card["datasets"] = list(datasets)
            if base_model:
                card["base_model"] = base_model
            if base_model_relation:
                card["base_model_relation"] = base_model_relation
            if library_name:
                card["library_name"] = library_name
            if pipeline_tag:
                card["pipeline_tag"] = pipeline_tag
            if model_index is not None:
                card["model-index"] = model_index
            if files is None and adapter_config is not None:
                files = {
                    "adapter_config.json": json.dumps(adapter_config).encode(),
                    "README.md": b"---\nlibrary_name: peft\n---\n# Adapter\n",
                    "adapter_model.safetensors": hashlib.sha256(repo_id.encode()).digest() * 2,
                }
            elif files is None:
                files = {
                    "config.json": json.dumps(config).encode(),
                    "README.md": b"---\nlicense: " + (license or "other").encode() + b"\n---\n# Model\n",
                    "model.safetensors": hashlib.sha256(repo_id.encode()).digest() * 4,
                }
            elif adapter_config is not None:
                files = {**files, "adapter_config.json": json.dumps(adapter_config).encode()}
            files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", **files}
            tags: list[str] = []
            if library_name:
                tags.append(library_name)
            if any(name.endswith(".safetensors") for name in files):
                tags.append("safetensors")
            if config.get("model_type"):
                tags.append(config["model_type"])
            if pipeline_tag:
                tags.append(pipeline_tag)
            tags += [f"dataset:{d}" for d in datasets or []]
            tags += [f"arxiv:{a}" for a in arxiv or []]
            if license:
                tags.append(f"license:{license}")
            for base in [base_model] if isinstance(base_model, str) else base_model or []:
                tags.append(f"base_model:{base}")
                if base_model_relation:
                    tags.append(f"base_model:{base_model_relation}:{base}")
            tags += list(extra_tags or [])
            tags.append("region:us")
            now = self._tick()
            sha = self._new_sha(repo_id)
            repo_files = {name: RepoFile(name, content) for name, content in files.items()}
            repo = Repo(
                id=repo_id,
                object_id=hashlib.md5(repo_id.encode()).hexdigest()[:24],
                sha=sha,
                created_at=now,
                last_modified=now,
                files=repo_files,
                commits={sha: repo_files},
                private=private,
                gated=gated,
                disabled=disabled,
                downloads=downloads,
                downloads_all_time=downloads * 10,
                likes=likes,
                trending_score=trending_score,
                pipeline_tag=pipeline_tag,
                library_name=library_name,
                tags=tags,
                config=config or None,
                card_data=card or None,
                safetensors=(
                    {"parameters": dict(params), "total": sum(params.values())} if params else None
                ),
            )
            self.repos[repo_id] = repo
            return repo

    def update_repo(self, repo_id: str, files: dict[str, bytes] | None = None, **changes: Any) -> Repo:
        """A new commit: the sha and lastModified change; `changes` set other attributes."""
        with self._lock:
            repo = self.repos[repo_id]
            new_files = dict(repo.files)
            for name, content in (files or {"README.md": f"# commit {self._counter}\n".encode()}).items():
                new_files[name] = RepoFile(name, content)
            repo.files = new_files
            repo.sha = self._new_sha(repo_id)
            repo.commits[repo.sha] = new_files
            repo.last_modified = self._tick()
            for name, value in changes.items():
                if not hasattr(repo, name):
                    raise AttributeError(f"Repo has no attribute {name!r}")
                setattr(repo, name, value)
            return repo

    def set_stats(self, repo_id: str, **stats: int) -> None:
        """Change downloads/likes/trending_score: no commit, so sha and lastModified stay."""
        with self._lock:
            for name, value in stats.items():
                setattr(self.repos[repo_id], name, value)

    def delete_repo(self, repo_id: str) -> None:
        with self._lock:
            del self.repos[repo_id]

    # ------------------------------------------------------------------ faults

    def inject(self, target: str | re.Pattern[str], fault: Fault, times: int | None = 1) -> None:
        """Answer the next `times` matching requests (None: all of them) with `fault`.

        target: a request kind ('list', 'list_page' for pages after the first, 'model_info',
        'tree', 'resolve', 'any'), an exact path ('/api/models/org/name'), or a regex searched in
        'PATH?QUERY'. Faults of one target form a queue, consumed in order.
        """
        if isinstance(target, re.Pattern):
            pattern = target

            def match(kind: str, path: str, query: str) -> bool:
                return bool(pattern.search(f"{path}?{query}"))
        elif target.startswith("/"):

            def match(kind: str, path: str, query: str) -> bool:
                return path == target
        elif target == "list_page":

            def match(kind: str, path: str, query: str) -> bool:
                return kind == LIST and "cursor=" in query
        elif target in (LIST, MODEL_INFO, TREE, RESOLVE, "any"):

            def match(kind: str, path: str, query: str) -> bool:
                return target == "any" or kind == target
        else:
            raise ValueError(f"unknown fault target {target!r}")
        with self._lock:
            self._faults.append(_Injected(match, fault, times))

    def rate_limit(self, target: str | re.Pattern[str], reset: int = 0, times: int | None = 1) -> None:
        """429 with the Hub's RateLimit headers: 0 requests left, window resets in `reset` s."""
        self.inject(target, Fault(429, {
            "RateLimit": f'"api";r=0;t={reset}',
            "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
        }, body={"error": "You have exceeded our hourly quotas for action 'api'."}), times)

    def retry_after(self, target: str | re.Pattern[str], seconds: int, times: int | None = 1) -> None:
        """429 with only a Retry-After header."""
        self.inject(target, Fault(429, {"Retry-After": str(seconds)}, body={"error": "Too Many Requests"}), times)

    def server_error(self, target: str | re.Pattern[str], status: int = 500, times: int | None = 1) -> None:
        self.inject(target, Fault(status, body={"error": "Internal Error - We're working hard to fix this"}), times)

    def slow(self, target: str | re.Pattern[str], delay: float, times: int | None = 1) -> None:
        """Answer normally, but only after `delay` seconds."""
        self.inject(target, Fault(delay=delay), times)

    def drop(self, target: str | re.Pattern[str], times: int | None = 1) -> None:
        """Close the connection without an answer."""
        self.inject(target, Fault(drop=True), times)

    def latency(self, kind: str, seconds: float) -> None:
        """Answer every request of this kind ('list', 'model_info', 'tree', 'resolve') `seconds` late.

        Unlike `slow`, it is no fault: it applies on top of injected faults, to every request, and
        requests wait out their latency side by side.
        """
        if kind not in (LIST, MODEL_INFO, TREE, RESOLVE):
            raise ValueError(f"unknown request kind {kind!r}")
        with self._lock:
            self._latency[kind] = seconds

    def fail_after_model_info(
        self, calls: int, kinds: tuple[str, ...] = (LIST, MODEL_INFO), fault: Fault | None = None
    ) -> None:
        """After `calls` answered model_info requests, fail every request of `kinds` (an outage)."""
        with self._lock:
            self._fail_after = (calls, frozenset(kinds), fault or Fault(500, body={"error": "Internal Error"}))
            self._model_info_answered = 0

    def recover(self) -> None:
        """End every injected fault, outage and hostile listing item."""
        with self._lock:
            self._faults.clear()
            self._fail_after = None
            self._hostile_items.clear()

    # ------------------------------------------------------------------ hostile mode

    def hostile_item(self, repo_id: str, replacement: Any = None, **fields: Any) -> None:
        """List this repo with raw field values (`lastModified="garbage"`, `sha=42`), or as `replacement`."""
        with self._lock:
            self._hostile_items[repo_id] = (replacement, fields)

    def self_link(self, target: str | re.Pattern[str], times: int | None = None) -> None:
        """Answer normally, but with a `Link` to the very page asked for: a pagination loop."""
        self.inject(target, Fault(link="self"), times)

    def link_to(self, target: str | re.Pattern[str], url: str, times: int | None = None) -> None:
        """Answer normally, but with a `Link` to `url` as the next page."""
        self.inject(target, Fault(link=url), times)

    def huge_body(self, target: str | re.Pattern[str], size: int = 1 << 30, times: int | None = None) -> None:
        """Answer 200 with `size` bytes of JSON that never ends ('[' and spaces), 1 MiB at a time."""
        chunk = b" " * (1 << 20)  # the only buffer: any size costs the server 1 MiB

        def stream(real_body: bytes) -> Iterator[bytes]:
            yield b"["
            left = size - 1
            while left > 0 and not self._closing.is_set():
                yield chunk[:left]
                left -= len(chunk)

        self.inject(target, Fault(stream=stream), times)

    def dribble(
        self, target: str | re.Pattern[str], interval: float = 1.0, give_up_after: float = 10.0,
        times: int | None = None,
    ) -> None:
        """Send the real answer one byte every `interval` seconds, cut short after `give_up_after` seconds."""
        # The cut: a client with no overall deadline is held that long, not for the whole answer.

        def stream(real_body: bytes) -> Iterator[bytes]:
            started = time.monotonic()
            for i in range(len(real_body)):
                yield real_body[i:i + 1]
                if time.monotonic() - started >= give_up_after or self._closing.wait(interval):
                    return

        self.inject(target, Fault(stream=stream), times)

    def _take_fault(self, kind: str, path: str, query: str) -> Fault | None:
        with self._lock:
            if self._fail_after is not None:
                calls, kinds, fault = self._fail_after
                if kind in kinds and self._model_info_answered >= calls:
                    return fault
            for injected in self._faults:
                if injected.match(kind, path, query):
                    if injected.remaining is not None:
                        injected.remaining -= 1
                        if injected.remaining <= 0:
                            self._faults.remove(injected)
                    return injected.fault
        return None

    # ------------------------------------------------------------------ log

    def requests(self, kind: str | None = None, repo_id: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [
                r for r in self.log
                if (kind is None or r.kind == kind) and (repo_id is None or r.repo_id == repo_id)
            ]

    def count(self, kind: str, repo_id: str | None = None) -> int:
        return len(self.requests(kind, repo_id))

    def model_info_ids(self) -> list[str]:
        """Repo ids of the model_info requests answered with 200, in order."""
        return [r.repo_id for r in self.requests(MODEL_INFO) if r.status == 200 and r.repo_id]

    def listing_pages(self) -> list[LoggedRequest]:
        """Listing requests that carried `expand` (the crawler's pages, not a `limit=1` probe)."""
        return [r for r in self.requests(LIST) if "expand" in r.query or "cursor" in r.query]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def close(self) -> None:
        """Wake handlers that are waiting in a slow fault."""
        self._closing.set()

    # ------------------------------------------------------------------ HTTP

    def handle(self, request: Request) -> Response:
        raw_path = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
        raw_path = raw_path.split("?", 1)[0]
        query = request.query_string.decode()
        kind, repo_id, route = self._route(raw_path)
        entry = LoggedRequest(
            request.method, unquote(raw_path), {k: request.args.getlist(k) for k in request.args}, kind, repo_id
        )
        with self._lock:
            self.log.append(entry)

        latency = self._latency.get(kind, 0.0)
        if latency:
            self._closing.wait(latency)
        fault = self._take_fault(kind, entry.path, query)
        if fault is not None and fault.delay:
            self._closing.wait(fault.delay)
        if fault is not None and fault.drop:
            sock = request.environ.get("werkzeug.socket")
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return Response(b"", status=500)
        if fault is not None and fault.status is not None:
            response = self._json(fault.body, fault.status, fault.headers)
        else:
            try:
                response = route(request)
            except _HubError as error:
                response = error.response()
        if fault is not None and fault.link is not None:
            own_url = f"{request.host_url.rstrip('/')}{raw_path}" + (f"?{query}" if query else "")
            response.headers["Link"] = f'<{own_url if fault.link == "self" else fault.link}>; rel="next"'
        if fault is not None and fault.stream is not None:
            # No Content-Length: werkzeug sends the generator with chunked transfer encoding.
            streamed = Response(fault.stream(response.get_data()), status=200, headers=response.headers)
            streamed.headers.pop("Content-Length", None)
            response = streamed
        entry.status = response.status_code
        if kind == MODEL_INFO and response.status_code == 200:
            with self._lock:
                self._model_info_answered += 1
        if kind in (LIST, MODEL_INFO, TREE) and "RateLimit" not in response.headers:
            response.headers["RateLimit"] = '"api";r=499;t=55'
            response.headers["RateLimit-Policy"] = '"fixed window";"api";q=500;w=300'
        response.headers.setdefault("X-Request-Id", f"Root=1-{len(self.log):08x}")
        return response

    def _route(self, raw_path: str) -> tuple[str, str | None, Callable[[Request], Response]]:
        if raw_path == "/api/models":
            return LIST, None, self._list_models
        match = _API_REPO.match(raw_path)
        if match:
            repo_id = unquote(match["repo"])
            rev = unquote(match["rev"]) if match["rev"] else None
            if match["action"] == "tree":
                path = unquote(match["path"] or "")
                return TREE, repo_id, lambda request: self._tree(request, repo_id, rev or "main", path)
            if match["path"] is not None:
                return OTHER, repo_id, self._not_found
            return MODEL_INFO, repo_id, lambda request: self._model_info(request, repo_id, rev)
        match = _RESOLVE.match(raw_path)
        if match:
            repo_id, rev, path = unquote(match["repo"]), unquote(match["rev"]), unquote(match["path"])
            return RESOLVE, repo_id, lambda request: self._resolve(request, repo_id, rev, path)
        return OTHER, None, self._not_found

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(body).encode() if body is not None else b""
        response = Response(data, status=status, content_type="application/json; charset=utf-8")
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def _not_found(self, request: Request) -> Response:
        return Response("Not Found", status=404)

    # ---------------------------------------------------------------- /api/models

    def _list_models(self, request: Request) -> Response:
        args = request.args
        expand = args.getlist("expand")
        full, card, config = (_bool_param(args.get(name)) for name in ("full", "cardData", "config"))
        if expand and (full or card or config):
            raise _HubError(400, "expand cannot be combined with full, cardData or config")
        unknown = [e for e in expand if e not in EXPAND_PROPERTIES]
        if unknown:
            raise _HubError(400, f'"expand" must be one of {sorted(EXPAND_PROPERTIES)}, got {unknown}')
        sort = args.get("sort")
        if sort is not None and sort not in SORT_KEYS:
            raise _HubError(400, f'Invalid sort "{sort}"')
        try:
            limit = int(args["limit"]) if "limit" in args else None
        except ValueError:
            raise _HubError(400, '"limit" must be an integer') from None
        try:
            cursor = json.loads(base64.urlsafe_b64decode(args["cursor"])) if "cursor" in args else None
        except ValueError:
            raise _HubError(400, "Invalid cursor") from None

        with self._lock:
            repos = [r for r in self.repos.values() if self._listed(r, args)]
            ordered = sorted(repos, key=lambda r: self._order_key(r, sort))
            served = 0
            if cursor is not None:
                after = tuple(cursor["after"])
                served = cursor["served"]
                # Keyset pagination: resume strictly after the last item served, so repos that
                # change between two pages do not shift the remaining ones.
                ordered = [r for r in ordered if tuple(self._order_key(r, sort)) > after]
            room = self.page_size if limit is None else min(self.page_size, limit - served)
            page = ordered[: max(room, 0)]
            items = [self._list_item(r, expand, full, card, config) for r in page]
        served += len(page)
        response = self._json(items)
        more = len(ordered) > len(page) and (limit is None or served < limit)
        if more and page:
            params = [(k, v) for k in args for v in args.getlist(k) if k != "cursor"]
            token = json.dumps({"after": list(self._order_key(page[-1], sort)), "served": served})
            params.append(("cursor", base64.urlsafe_b64encode(token.encode()).decode()))
            next_url = f"{request.host_url.rstrip('/')}/api/models?{urlencode(params)}"
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return response

    @staticmethod
    def _listed(repo: Repo, args: Any) -> bool:
        if repo.private:
            return False  # anonymous listing
        search = args.get("search")
        if search and search.lower() not in repo.id.lower():
            return False
        author = args.get("author")
        if author and (repo.author or "").lower() != author.lower():
            return False
        if any(f not in repo.tags for f in args.getlist("filter")):
            return False
        pipeline_tag = args.get("pipeline_tag")
        if pipeline_tag and repo.pipeline_tag != pipeline_tag:
            return False
        return True

    @staticmethod
    def _order_key(repo: Repo, sort: str | None) -> tuple[Any, ...]:
        value: Any = {
            None: 0,
            "downloads": repo.downloads,
            "likes": repo.likes,
            "trendingScore": repo.trending_score,
            "lastModified": repo.last_modified.timestamp(),
            "createdAt": repo.created_at.timestamp(),
        }[sort]
        return (-value, repo.object_id)  # descending, ties in a fixed order

    def _properties(self, repo: Repo, files_metadata: bool = False, files: dict[str, RepoFile] | None = None,
                    sha: str | None = None) -> dict[str, Any]:
        """Every property the Hub can return for a model (the expand vocabulary)."""
        files = repo.files if files is None else files
        siblings = []
        for f in files.values():
            sibling: dict[str, Any] = {"rfilename": f.path}
            if files_metadata:
                sibling["blobId"] = f.oid
                sibling["size"] = len(f.content)
                if f.is_lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": len(f.content), "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        card = dict(repo.card_data) if repo.card_data else None
        return {
            "author": repo.author,
            "cardData": card,
            "config": repo.config,
            "createdAt": iso(repo.created_at),
            "disabled": repo.disabled,
            "downloads": repo.downloads,
            "downloadsAllTime": repo.downloads_all_time,
            "gated": repo.gated,
            "lastModified": iso(repo.last_modified),
            "library_name": repo.library_name,
            "likes": repo.likes,
            "model-index": (card or {}).get("model-index"),
            "pipeline_tag": repo.pipeline_tag,
            "private": repo.private,
            "safetensors": repo.safetensors,
            "sha": sha or repo.sha,
            "siblings": siblings,
            "spaces": [],
            "tags": list(repo.tags),
            "trendingScore": repo.trending_score,
            "usedStorage": sum(len(f.content) for f in files.values()),
            "widgetData": None,
        }

    def _list_item(self, repo: Repo, expand: list[str], full: bool, card: bool, config: bool) -> Any:
        item = self._honest_list_item(repo, expand, full, card, config)
        if repo.id in self._hostile_items:
            replacement, fields = self._hostile_items[repo.id]
            return replacement if replacement is not None else {**item, **fields}
        return item

    def _honest_list_item(
        self, repo: Repo, expand: list[str], full: bool, card: bool, config: bool
    ) -> dict[str, Any]:
        props = self._properties(repo)
        item: dict[str, Any] = {"_id": repo.object_id, "id": repo.id}
        if expand:
            for name in expand:
                if name in props:
                    item[name] = props[name]
            return item
        item.update({
            "likes": repo.likes,
            "trendingScore": repo.trending_score,
            "private": repo.private,
            "downloads": repo.downloads,
            "tags": list(repo.tags),
            "createdAt": props["createdAt"],
            "modelId": repo.id,
        })
        if repo.pipeline_tag:
            item["pipeline_tag"] = repo.pipeline_tag
        if repo.library_name:
            item["library_name"] = repo.library_name
        if full:
            item.update({k: props[k] for k in ("author", "sha", "lastModified", "gated", "disabled", "siblings")})
        if card and repo.card_data:
            item["cardData"] = props["cardData"]
        if config and repo.config:
            item["config"] = repo.config
        return item

    # ---------------------------------------------------------------- one repo

    def _visible_repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if repo.private:
            # Anonymous requests for private repos look like missing ones, with a 401.
            raise _HubError(401, "Invalid username or password.", "RepoNotFound")
        if repo.disabled:
            raise _HubError(403, DISABLED_MESSAGE)
        return repo

    @staticmethod
    def _commit(repo: Repo, rev: str | None) -> tuple[str, dict[str, RepoFile]]:
        if rev is None or rev == "main":
            return repo.sha, repo.files
        if rev in repo.commits:
            return rev, repo.commits[rev]
        raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _model_info(self, request: Request, repo_id: str, rev: str | None) -> Response:
        with self._lock:
            repo = self._visible_repo(repo_id)
            sha, files = self._commit(repo, rev)
            props = self._properties(repo, _bool_param(request.args.get("blobs")), files, sha)
            expand = request.args.getlist("expand")
            if expand:
                body = {"_id": repo.object_id, "id": repo.id, **{k: props[k] for k in expand if k in props}}
                return self._json(body)
            body = {"_id": repo.object_id, "id": repo.id, "modelId": repo.id, **props}
            del body["downloadsAllTime"], body["model-index"]
            for key in ("cardData", "config", "safetensors", "pipeline_tag", "library_name", "widgetData"):
                if body[key] is None:
                    del body[key]
            return self._json(body)

    def _tree(self, request: Request, repo_id: str, rev: str, path: str) -> Response:
        recursive = _bool_param(request.args.get("recursive"))
        with self._lock:
            repo = self._visible_repo(repo_id)
            _, files = self._commit(repo, rev)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            if prefix and not any(name.startswith(prefix) for name in files):
                raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
            entries: dict[str, dict[str, Any]] = {}
            for f in sorted(files.values(), key=lambda f: f.path):
                if not f.path.startswith(prefix):
                    continue
                rest = f.path[len(prefix):]
                parts = rest.split("/")
                # Folders on the way to the file.
                for depth in range(1, len(parts)):
                    if not recursive and depth > 1:
                        break
                    folder = prefix + "/".join(parts[:depth])
                    entries.setdefault(folder, {"type": "directory", "oid": _git_blob_oid(folder.encode()),
                                                "size": 0, "path": folder})
                if not recursive and len(parts) > 1:
                    continue
                entry: dict[str, Any] = {"type": "file", "oid": f.oid, "size": len(f.content), "path": f.path}
                if f.is_lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": len(f.content), "pointerSize": len(f.pointer)}
                entries[f.path] = entry
            return self._json(list(entries.values()))

    def _resolve(self, request: Request, repo_id: str, rev: str, path: str) -> Response:
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is not None and repo.gated and not repo.private and not repo.disabled:
                raise _HubError(
                    403,
                    f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                    f"Visit {self.url}/{repo_id} to ask for access.",
                    "GatedRepo",
                )
            repo = self._visible_repo(repo_id)
            sha, files = self._commit(repo, rev)
            f = files.get(path)
            if f is None:
                raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            headers = {
                "X-Repo-Commit": sha,
                "ETag": f'"{f.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";',
            }
            if f.is_lfs:
                headers["X-Linked-Etag"] = f'"{f.sha256}"'
                headers["X-Linked-Size"] = str(len(f.content))
            content = f.content
        status = 200
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if byte_range and request.method == "GET":
            start = int(byte_range[1])
            end = int(byte_range[2]) if byte_range[2] else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start:end + 1], 206
        response = Response(content, status=status, content_type="application/octet-stream")
        response.headers.update(headers)
        response.headers["Content-Length"] = str(len(content))
        return response


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return HubImitation._json({"error": self.message}, self.status, headers)


class HubServer:
    """One HTTP server on 127.0.0.1 (a free port) that answers for whichever imitation is current.

    Starting and stopping a werkzeug server costs about half a second, so tests share one server
    and each gets a fresh HubImitation behind it.
    """

    def __init__(self) -> None:
        # werkzeug logs every request; keep that out of the CLI's captured stderr (errors still
        # reach pytest's log capture through the root logger).
        werkzeug_logger = logging.getLogger("werkzeug")
        werkzeug_logger.setLevel(logging.ERROR)
        if not any(isinstance(h, logging.NullHandler) for h in werkzeug_logger.handlers):
            werkzeug_logger.addHandler(logging.NullHandler())
        self.current: HubImitation | None = None
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request(re.compile(".*")).respond_with_handler(self._dispatch)
        self.server.start()
        self.url = self.server.url_for("/").rstrip("/")

    def _dispatch(self, request: Request) -> Response:
        current = self.current
        if current is None:
            return Response("no Hub imitation is being served", status=503)
        return current.handle(request)

    @contextmanager
    def serve(self, imitation: HubImitation) -> Iterator[HubImitation]:
        imitation.url = self.url
        self.current = imitation
        try:
            yield imitation
        finally:
            self.current = None
            imitation.close()

    def stop(self) -> None:
        self.server.clear()
        self.server.stop()


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    server = HubServer()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server: HubServer) -> Iterator[HubImitation]:
    """An empty Hub imitation on 127.0.0.1, three models per listing page."""
    with hub_server.serve(HubImitation(page_size=3)) as imitation:
        yield imitation


def closed_port() -> int:
    """A local port nobody listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
