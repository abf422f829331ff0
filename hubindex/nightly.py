"""`hubindex nightly`: the scheduled run that keeps an index current, safe to start every night.

A run takes the index's nightly lock, marks a run that died before it `interrupted`, then runs
its stages in order - crawl (the configured sources) -> probe (checkpoints without features at
their current revision) -> kappa (missing pairs and fingerprints) -> score (registered tasks) ->
report - and records each finished stage in `nightly_stages`. Every stage is incremental, so a
run after a night without changes downloads nothing and runs no model. A stage that fails is
recorded and the later stages still run; a checkpoint that fails is recorded in `failures` and
not retried until its revision changes (or `retry_failed_after_days` pass). A full disk or a
permission error stops the run with one line saying what could not be written.

DuckDB lets one process write a catalog file and no other process read it meanwhile, so after
each stage (and every few minutes inside long ones) the run publishes a read snapshot
(catalog.snapshot.duckdb) that `hubindex sql` answers from while the catalog is locked.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import socket
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import click

from hubindex.catalog import Catalog, utcnow
from hubindex.errors import CatalogBusyError, HubindexError, Interrupted, UsageError
from hubindex.index import Index
from hubindex.interrupts import stop_on_signals, stop_requested
from hubindex.plugins import corpora, crawlers, executors, known_names, probes
from hubindex.store import STORE_DIR, atomic_write_bytes

LOCK_FILENAME = "nightly.lock"
REPORTS_DIR = "reports"
DEFAULTS = "defaults"
# Without a configuration, probe and score only checkpoints whose weights are already on disk:
# a default run never downloads models.
DEFAULT_WHERE = "local_path IS NOT NULL"
# Checkpoints handed to one probe or score call; between calls the run may publish a snapshot.
CHUNK = 32
STAGES = ("crawl", "probe", "kappa", "score")
# Errors that no retry fixes: the run stops and says what could not be written.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied")


class NightlyLockedError(CatalogBusyError):
    """Another nightly run holds the index's lock."""


class NightlyInterrupted(Interrupted):
    """The run was stopped by SIGINT or SIGTERM; the next run completes its work."""


class StorageError(HubindexError):
    """The disk is full or a file cannot be written: the run stops."""


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class CrawlSource:
    """One `[[crawl]]` entry: a registered crawler and its options, as `hubindex crawl SOURCE` gives them."""

    source: str
    options: dict[str, Any]
    given: dict[str, Any] = field(default_factory=dict)  # what the configuration said, for labels

    def label(self) -> str:
        said = " ".join(f"{k}={_plain(v)}" for k, v in self.given.items())
        return f"{self.source} {said}".strip()


@dataclass(frozen=True)
class CorpusChoice:
    """A probing corpus (`NAME` or `NAME:ARGUMENT`) and its size."""

    spec: str
    max_items: int | None = None


@dataclass(frozen=True)
class ProbeSettings:
    corpora: tuple[CorpusChoice, ...] = ()
    where: str = DEFAULT_WHERE
    max_checkpoints: int | None = None  # probed per night, over all corpora; the rest wait
    batch_size: int | None = None


@dataclass(frozen=True)
class KappaSettings:
    corpora: tuple[str, ...] | None = None  # None: the probe stage's corpora
    centered: bool = True
    dense_max: int | None = None  # None: hubindex.relate.DENSE_MAX; above it, a sparse kappa graph
    graph_neighbors: int | None = None  # None: GraphSettings' defaults
    graph_candidates: int | None = None

    def graph(self) -> Any:
        """The sparse graph's hubindex.relate.GraphSettings, defaults where not given."""
        from hubindex.relate import GraphSettings

        default = GraphSettings()
        return GraphSettings(self.graph_neighbors or default.neighbors, self.graph_candidates or default.candidates)


@dataclass(frozen=True)
class ScoreSettings:
    tasks: tuple[str, ...] | None = None  # None: every registered task
    metrics: tuple[str, ...] = ()  # (): every installed metric
    where: str | None = None  # None: the probe stage's
    reference_tasks: dict[str, str] = field(default_factory=dict)
    max_checkpoints: int | None = None  # embedded per night, over all tasks; the rest wait
    batch_size: int | None = None


@dataclass(frozen=True)
class LimitSettings:
    retry_failed_after_days: float = 7.0
    snapshot_every_minutes: float = 5.0
    busy_timeout_seconds: float = 120.0  # how long to wait for a reader or writer to let go of the catalog


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    device: str = "auto"


@dataclass(frozen=True)
class NightlyConfig:
    """What a nightly run does; see examples/nightly/nightly.toml."""

    source: str = DEFAULTS  # the configuration file, or 'defaults'
    crawl: tuple[CrawlSource, ...] = ()
    probe: ProbeSettings = ProbeSettings()
    kappa: KappaSettings = KappaSettings()
    score: ScoreSettings = ScoreSettings()
    limits: LimitSettings = LimitSettings()
    executor: ExecutorSettings = ExecutorSettings()

    def as_json(self) -> dict[str, Any]:
        """The settings as plain JSON data (what `nightly_runs.config` stores)."""
        data = asdict(self)
        data["crawl"] = [{"source": c.source, "options": c.options} for c in self.crawl]
        return json.loads(json.dumps(data, default=_plain))

    def with_overrides(self, executor: str | None = None, address: str | None = None, workers: int | None = None,
                       device: str | None = None, max_checkpoints: int | None = None) -> NightlyConfig:
        """The settings with command-line flags applied over the file's."""
        chosen = self.executor
        if executor is not None:
            chosen = replace(chosen, kind=executor)
        if address is not None:
            chosen = replace(chosen, address=address)
        if workers is not None:
            chosen = replace(chosen, workers=workers)
        if device is not None:
            chosen = replace(chosen, device=device)
        _check_executor_kind(chosen.kind, "--executor")
        probe, score = self.probe, self.score
        if max_checkpoints is not None:
            probe = replace(probe, max_checkpoints=max_checkpoints)
            score = replace(score, max_checkpoints=max_checkpoints)
        return replace(self, executor=chosen, probe=probe, score=score)


def _plain(value: Any) -> Any:
    """A setting value as JSON-friendly data (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ reading TOML


class _Table:
    """One TOML table being read: typed getters that name the key, and no unknown keys."""

    def __init__(self, where: str, table: Any, known: Sequence[str]) -> None:
        if not isinstance(table, dict):
            raise UsageError(f"{where}: expected a table, got {_kind(table)}")
        unknown = [key for key in table if key not in known]
        if unknown:
            raise UsageError(f"{where}: unknown key {unknown[0]!r}; expected one of: {', '.join(known)}")
        self.where = where
        self.table = table

    def fail(self, key: str, expected: str) -> UsageError:
        return UsageError(f"{self.where} {key}: expected {expected}, got {_kind(self.table[key])}")

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.table.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.fail(key, "a non-empty string")
        return value

    def integer(self, key: str, default: int | None = None, minimum: int = 1) -> int | None:
        value = self.table.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise self.fail(key, f"an integer of at least {minimum}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise self.fail(key, "a finite number of at least 0")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        if key not in self.table:
            return None
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, "a list of strings")
        return tuple(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def load_config(path: Path) -> NightlyConfig:
    """Read and validate a nightly configuration file; every problem is one UsageError naming the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    return parse_config(text, str(path), base_dir=path.resolve().parent)


def parse_config(text: str, source: str = "nightly.toml", base_dir: Path | None = None) -> NightlyConfig:
    """Settings from TOML text. Relative paths in [[crawl]] are relative to base_dir."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML: {exc}") from None
    _Table(source, data, ("crawl", "probe", "kappa", "score", "limits", "executor"))  # no unknown sections
    crawl = data.get("crawl", [])
    if not isinstance(crawl, list):
        raise UsageError(f"{source}: crawl must be [[crawl]] tables (one per source), got {_kind(crawl)}")
    sources = tuple(_crawl_source(f"{source}: [[crawl]] #{i}", entry, base_dir) for i, entry in enumerate(crawl, 1))
    return NightlyConfig(
        source=source,
        crawl=sources,
        probe=_probe_settings(f"{source}: [probe]", data.get("probe", {})),
        kappa=_kappa_settings(f"{source}: [kappa]", data.get("kappa", {})),
        score=_score_settings(f"{source}: [score]", data.get("score", {})),
        limits=_limit_settings(f"{source}: [limits]", data.get("limits", {})),
        executor=_executor_settings(f"{source}: [executor]", data.get("executor", {})),
    )


def _crawl_source(where: str, entry: Any, base_dir: Path | None) -> CrawlSource:
    if not isinstance(entry, dict):
        raise UsageError(f"{where}: expected a table, got {_kind(entry)}")
    source = entry.get("source")
    if not isinstance(source, str) or not source:
        raise UsageError(f"{where}: needs `source`, the crawler's name ({known_names(crawlers())})")
    given = {k: v for k, v in entry.items() if k != "source"}
    return CrawlSource(source, crawler_options(source, given, f"{where} ({source})", base_dir), given)


def _config_key(param: click.Parameter) -> str:
    """The key naming a crawler option in the configuration: its long flag, '-' as '_' (or the argument's name)."""
    if isinstance(param, click.Option):
        longest = max(param.opts, key=len)
        return longest.lstrip("-").replace("-", "_")
    return str(param.name)


def crawler_options(source: str, given: Mapping[str, Any], where: str, base_dir: Path | None = None) -> dict[str, Any]:
    """The keyword arguments `hubindex crawl SOURCE ...` would give the crawler, from configuration keys.

    The values go through the crawler's own click parameters, so defaults, types and checks
    are exactly those of the command line.
    """
    registration = crawlers().get(source)
    if registration is None:
        raise UsageError(f"{where}: unknown crawl source {source!r}; available sources: {known_names(crawlers())}")
    params = registration.component.cli_params()
    by_key = {_config_key(p): p for p in params}
    options: list[str] = []
    arguments: list[str] = []
    for key, value in given.items():
        param = by_key.get(key)
        if param is None:
            raise UsageError(f"{where}: unknown key {key!r}; expected one of: {', '.join(sorted(by_key)) or 'none'}")
        values = value if isinstance(value, list) and param.multiple else [value]
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            many = "a value or a list of values" if param.multiple else "a single value"
            raise UsageError(f"{where} {key}: expected {many}, got {_kind(value)}")
        if isinstance(param.type, click.Path) and base_dir is not None:
            values = [str(base_dir / Path(str(v)).expanduser()) for v in values]
        if isinstance(param, click.Argument):
            arguments += [str(v) for v in values]
        elif isinstance(param, click.Option) and param.is_flag:
            if value is not True and value is not False:
                raise UsageError(f"{where} {key}: expected true or false, got {_kind(value)}")
            if value:
                options.append(max(param.opts, key=len))
        else:
            flag = max(param.opts, key=len)
            options += [f"{flag}={str(v).lower() if isinstance(v, bool) else v}" for v in values]
    command = click.Command(source, params=params)
    try:
        context = command.make_context(source, options + (["--", *arguments] if arguments else []))
    except click.MissingParameter as exc:
        raise UsageError(f"{where}: needs `{exc.param.name if exc.param else 'a value'}`") from None
    except click.ClickException as exc:
        raise UsageError(f"{where}: {exc.format_message()}") from None
    return dict(context.params)


def _corpus_choices(where: str, value: Any) -> tuple[CorpusChoice, ...]:
    from hubindex.probing import make_corpus

    if not isinstance(value, list):
        raise UsageError(f"{where} corpora: expected a list of corpus names or {{name, max_items}} tables, got {_kind(value)}")
    choices = []
    for item in value:
        if isinstance(item, str):
            choice = CorpusChoice(item)
        else:
            entry = _Table(f"{where} corpora", item, ("name", "max_items"))
            name = entry.string("name")
            if name is None:
                raise UsageError(f"{where} corpora: each table needs `name`")
            choice = CorpusChoice(name, entry.integer("max_items"))
        try:
            make_corpus(choice.spec, choice.max_items)  # an unknown corpus fails here, not at night
        except UsageError as exc:
            raise UsageError(f"{where} corpora: {exc}") from None
        choices.append(choice)
    return tuple(choices)


def _probe_settings(where: str, table: Any) -> ProbeSettings:
    entry = _Table(where, table, ("corpora", "where", "max_checkpoints", "batch_size"))
    return ProbeSettings(
        corpora=_corpus_choices(where, table.get("corpora", [])),
        where=_condition(where, entry.string("where", DEFAULT_WHERE)),
        max_checkpoints=entry.integer("max_checkpoints"),
        batch_size=entry.integer("batch_size"),
    )


def _condition(where: str, condition: str | None) -> str | None:
    if condition is not None and ";" in condition:
        raise UsageError(f"{where} where: one SQL condition on the checkpoints table; ';' is not allowed")
    return condition


def _kappa_settings(where: str, table: Any) -> KappaSettings:
    entry = _Table(where, table, ("corpora", "centered", "dense_max", "graph_neighbors", "graph_candidates"))
    settings = KappaSettings(corpora=entry.strings("corpora"), centered=entry.flag("centered", True),
                             dense_max=entry.integer("dense_max", minimum=2),
                             graph_neighbors=entry.integer("graph_neighbors"),
                             graph_candidates=entry.integer("graph_candidates"))
    graph = settings.graph()
    if graph.neighbors > graph.candidates:
        raise UsageError(f"{where} graph_neighbors ({graph.neighbors}) exceeds graph_candidates "
                         f"({graph.candidates}); neighbours are chosen among the candidates")
    return settings


def _score_settings(where: str, table: Any) -> ScoreSettings:
    from hubindex.scoring import metric_classes

    entry = _Table(where, table, ("tasks", "metrics", "where", "reference_tasks", "max_checkpoints", "batch_size"))
    metric_names = entry.strings("metrics") or ()
    try:
        metric_classes(metric_names)
    except UsageError as exc:
        raise UsageError(f"{where} metrics: {exc}") from None
    references = table.get("reference_tasks", {})
    if not isinstance(references, dict) or not all(
            isinstance(v, str) and v.strip() for v in references.values()):
        raise entry.fail("reference_tasks", 'a table of task = "reference task"')
    return ScoreSettings(
        tasks=entry.strings("tasks"),
        metrics=metric_names,
        where=_condition(where, entry.string("where")),
        reference_tasks=dict(references),
        max_checkpoints=entry.integer("max_checkpoints"),
        batch_size=entry.integer("batch_size"),
    )


def _limit_settings(where: str, table: Any) -> LimitSettings:
    entry = _Table(where, table, ("retry_failed_after_days", "snapshot_every_minutes", "busy_timeout_seconds"))
    defaults = LimitSettings()
    return LimitSettings(
        retry_failed_after_days=entry.number("retry_failed_after_days", defaults.retry_failed_after_days),
        snapshot_every_minutes=entry.number("snapshot_every_minutes", defaults.snapshot_every_minutes),
        busy_timeout_seconds=entry.number("busy_timeout_seconds", defaults.busy_timeout_seconds),
    )


def _executor_settings(where: str, table: Any) -> ExecutorSettings:
    from hubindex.probing import DEVICES

    entry = _Table(where, table, ("kind", "address", "workers", "device"))
    kind = entry.string("kind", "local")
    _check_executor_kind(kind, f"{where} kind")
    device = entry.string("device", "auto")
    if device not in DEVICES:
        raise UsageError(f"{where} device: expected one of {', '.join(DEVICES)}, got {device!r}")
    return ExecutorSettings(kind, entry.string("address"), entry.integer("workers"), device)


def _check_executor_kind(kind: str, where: str) -> None:
    registered = executors()
    if kind not in registered:
        raise UsageError(f"{where}: unknown executor {kind!r}; available executors: {known_names(registered)}")


# ------------------------------------------------------------------------------------ defaults


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
        names = {p.name: _config_key(p) for p in registration.component.cli_params()}
        recorded = json.loads(params) if isinstance(params, str) else params
        given = {names[k]: v for k, v in recorded.items() if k in names and v not in (None, [], ())}
        sources.append(CrawlSource(crawler, crawler_options(crawler, given, f"crawl {crawler}"), given))
    registered = corpora()
    # A corpus that needs an argument (images:PATH) cannot be named again from its stored name.
    choices = tuple(CorpusChoice(name, n_items) for name, n_items in probed
                    if name in registered and not registered[name].component.takes_argument)
    return NightlyConfig(source=DEFAULTS, crawl=tuple(sources), probe=ProbeSettings(corpora=choices))


# ------------------------------------------------------------------------------------ the lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds the nightly lock, as written in the lock file."""

    pid: int
    host: str
    started_at: str  # 'YYYY-MM-DD HH:MM UTC'
    run_id: int | None = None

    def describe(self) -> str:
        run = f"nightly run {self.run_id}" if self.run_id is not None else "nightly run"
        return f"{run} (pid {self.pid} on {self.host}, started {self.started_at})"


def read_lock_holder(index_root: Path) -> LockHolder | None:
    """The holder written in <index>/nightly.lock, or None when there is none or it cannot be read."""
    try:
        data = json.loads((index_root / LOCK_FILENAME).read_text())
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started_at"]), data.get("run_id"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_writer(index_root: Path, writer_pid: int | None) -> str:
    """Who writes the catalog, in words: the nightly run when it is the lock's holder, else the process id."""
    holder = read_lock_holder(index_root)
    if holder is not None and holder.pid == writer_pid and holder.host == socket.gethostname():
        return holder.describe()
    return f"process {writer_pid}" if writer_pid is not None else "another process"


class NightlyLock:
    """An exclusive flock on <index>/nightly.lock. The kernel releases it when the process ends,
    however it ends (SIGKILL included), so a crashed run never leaves the index locked."""

    def __init__(self, index_root: Path) -> None:
        self.path = index_root / LOCK_FILENAME
        self.handle: int | None = None
        self.holder: LockHolder | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot create the nightly lock {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            holder = read_lock_holder(self.path.parent)
            who = holder.describe() if holder is not None else "nightly run"
            raise NightlyLockedError(f"another {who} holds {self.path}; wait for it to finish") from None
        self.handle = handle
        self.holder = LockHolder(os.getpid(), socket.gethostname(), utcnow().strftime("%Y-%m-%d %H:%M UTC"))
        self._write_holder()

    def name_run(self, run_id: int) -> None:
        """Write the run's id into the lock file, for messages about who holds it."""
        assert self.holder is not None
        self.holder = replace(self.holder, run_id=run_id)
        self._write_holder()

    def _write_holder(self) -> None:
        assert self.handle is not None and self.holder is not None
        data = json.dumps(asdict(self.holder)).encode()
        try:
            os.ftruncate(self.handle, 0)
            os.pwrite(self.handle, data, 0)
        except OSError as exc:
            self.release()
            raise StorageError(f"cannot write the nightly lock {self.path}: {exc.strerror or exc}") from None

    def release(self) -> None:
        if self.handle is not None:
            # The file stays: removing it would let two runs lock two different files.
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            os.close(self.handle)
            self.handle = None


# ------------------------------------------------------------------------------------ running


class PatientIndex(Index):
    """An index whose catalog opens wait (up to a limit) while another process holds the file.

    A reader such as `hubindex sql` that opens the catalog between two stages holds it for at
    most its query timeout; the run waits for it instead of failing the next stage.
    """

    def __init__(self, root: Path, busy_timeout_s: float) -> None:
        super().__init__(root)
        self.busy_timeout_s = busy_timeout_s

    def open_catalog(self, read_only: bool = False) -> Catalog:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.1
        while True:
            try:
                return super().open_catalog(read_only)
            except CatalogBusyError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


@dataclass
class StageResult:
    """What one stage did; a row of `nightly_stages`."""

    stage: str
    started_at: datetime
    status: str = "completed"  # completed | failed | skipped
    seconds: float = 0.0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)  # per source, corpus or task
    errors: list[str] = field(default_factory=list)

    def part(self, **details: Any) -> dict[str, Any]:
        self.parts.append(details)
        return details

    def error(self, what: str, exc: BaseException) -> None:
        self.status = "failed"
        self.errors.append(f"{what}: {exc}" if isinstance(exc, HubindexError) else f"{what}: {type(exc).__name__}: {exc}")

    def details(self) -> dict[str, Any]:
        return {"parts": self.parts, "errors": self.errors}


@dataclass
class NightlyReport:
    run_id: int
    status: str  # completed | failed
    summary: str
    report_path: Path
    stages: list[StageResult]
    error: str | None = None


def storage_problem(exc: BaseException) -> str | None:
    """The reason, when an error (or one it was raised from) is a full disk or a write refused."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return str(seen.strerror or seen)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return next((marker for marker in STORAGE_MESSAGES if marker in text), None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _Run:
    """One nightly run: its stages, snapshots and bookkeeping."""

    def __init__(self, index: PatientIndex, config: NightlyConfig, run_id: int, log: Callable[[str], None],
                 executor: Any) -> None:
        self.index = index
        self.config = config
        self.run_id = run_id
        self.log = log
        self.executor = executor
        self.last_snapshot = time.monotonic()
        self.corpus_hashes: dict[str, str] = {}  # probe corpus spec -> content hash probed this run
        self.probe_instances = [r.component(device="cpu") for r in probes().values()]  # plans only, never run

    # ------------------------------------------------------------------ bookkeeping

    def publish(self) -> None:
        with self.index.open_catalog() as catalog:
            catalog.publish_snapshot()
        self.last_snapshot = time.monotonic()

    def publish_if_due(self) -> None:
        if time.monotonic() - self.last_snapshot >= self.config.limits.snapshot_every_minutes * 60:
            self.publish()

    def record_stage(self, result: StageResult) -> None:
        with self.index.open_catalog() as catalog:
            catalog.conn.execute(
                "INSERT OR REPLACE INTO nightly_stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [self.run_id, result.stage, result.status, result.started_at, result.seconds, result.added,
                 result.changed, result.unchanged, result.failed, json.dumps(result.details(), default=str)],
            )
            catalog.publish_snapshot()
        self.last_snapshot = time.monotonic()

    def link_failures(self, stage: str, since: datetime, revisions: Mapping[str, str | None] | None = None) -> None:
        """Name this run (and the failed revision) in the failures a stage recorded."""
        with self.index.open_catalog() as catalog, catalog.transaction():
            catalog.conn.execute(
                "UPDATE failures SET nightly_run_id = ? WHERE stage = ? AND occurred_at >= ?",
                [self.run_id, stage, since],
            )
            if revisions:
                known = {k: v for k, v in revisions.items() if v is not None}
                catalog.conn.execute(
                    "UPDATE failures SET revision = r.revision FROM "
                    "(SELECT unnest(?::VARCHAR[]) AS subject, unnest(?::VARCHAR[]) AS revision) AS r "
                    "WHERE failures.subject = r.subject AND failures.stage = ? AND failures.occurred_at >= ?",
                    [list(known), list(known.values()), stage, since],
                )

    def failed_recently(self, catalog: Catalog) -> set[tuple[str, str]]:
        """(checkpoint_id, revision) of open probe and score failures young enough not to retry."""
        since = utcnow() - timedelta(days=self.config.limits.retry_failed_after_days)
        rows = catalog.conn.execute(
            "SELECT DISTINCT subject, revision FROM failures WHERE stage IN ('probe', 'score') "
            "AND resolved_at IS NULL AND revision IS NOT NULL AND occurred_at >= ?",
            [since],
        ).fetchall()
        return {(subject, revision) for subject, revision in rows}

    def checkpoint_rows(self, where: str) -> list[dict[str, Any]]:
        from hubindex.probing import select_checkpoints

        ids = select_checkpoints(self.index, where)
        with self.index.open_catalog(read_only=True) as catalog:
            return catalog.checkpoint_rows(ids)

    # ------------------------------------------------------------------ stages

    def crawl(self, result: StageResult) -> None:
        from hubindex.pipeline import run_crawl

        if not self.config.crawl:
            result.status = "skipped"
            return
        for source in self.config.crawl:
            self.log(f"crawl {source.label()}")
            crawler = crawlers()[source.source].component(**source.options)
            try:
                summary = run_crawl(self.index, crawler, show_progress=False)
            except Exception as exc:
                _raise_if_fatal(exc)
                result.error(f"crawl {source.label()}", exc)
                result.part(source=source.label(), status="failed", error=_first_line(exc))
                self.log(f"crawl {source.label()} failed: {_first_line(exc)}")
                continue
            self.log(summary.line())
            result.part(source=source.label(), status=summary.status, crawl_run=summary.run_id,
                        seen=summary.seen, added=summary.added, changed=summary.changed,
                        unchanged=summary.unchanged, failed=summary.failed, fetched=summary.fetched)
            result.added += summary.added
            result.changed += summary.changed
            result.unchanged += summary.unchanged
            result.failed += summary.failed
        self.link_failures("crawl", result.started_at)

    def probe(self, result: StageResult) -> None:
        from hubindex.probing import make_corpus

        settings = self.config.probe
        if not settings.corpora:
            result.status = "skipped"
            return
        rows = self.checkpoint_rows(settings.where)
        budget = settings.max_checkpoints
        for choice in settings.corpora:
            try:
                data = make_corpus(choice.spec, choice.max_items).load()
            except Exception as exc:
                _raise_if_fatal(exc)
                result.error(f"corpus {choice.spec}", exc)
                result.part(corpus=choice.spec, status="failed", error=_first_line(exc))
                continue
            self.corpus_hashes[choice.spec] = data.content_hash
            with self.index.open_catalog(read_only=True) as catalog:
                plan = _plan_probe(catalog, rows, data, self.probe_instances, self.failed_recently(catalog))
            todo = plan.todo if budget is None else plan.todo[:budget]
            if budget is not None:
                budget -= len(todo)
            part = result.part(corpus=f"{data.name} ({data.size} items, hash {data.content_hash[:12]})",
                               candidates=len(rows), up_to_date=plan.up_to_date, to_probe=len(todo),
                               deferred=len(plan.todo) - len(todo), skipped_failed=plan.skipped_failed,
                               no_probe=plan.no_probe, probed=0, reused=0, failed=0)
            self.log(f"probe {choice.spec}: {len(todo)} to probe, {plan.up_to_date} up to date, "
                     f"{plan.skipped_failed} skipped after a failure, {part['deferred']} deferred")
            result.unchanged += plan.up_to_date
            self.run_in_chunks("probe", f"probe {choice.spec}", todo, result, part, ("probed", "reused", "failed"),
                               lambda chunk: self._run_probe(chunk, choice))
            with self.index.open_catalog(read_only=True) as catalog:
                stored = _stored_keys(catalog, data.content_hash)
            done = [t for t in todo if (t.checkpoint_id, t.revision, t.layer, t.pooling) in stored]
            result.added += sum(not t.had_features for t in done)
            result.changed += sum(t.had_features for t in done)

    def run_in_chunks(self, stage: str, label: str, todo: list[_Planned], result: StageResult,
                      part: dict[str, Any], counters: tuple[str, ...],
                      run_chunk: Callable[[list[_Planned]], Any]) -> None:
        """Run the planned checkpoints CHUNK at a time, adding each summary's counters to the stage's part.

        Failures are linked to this run after every chunk; an error that is not fatal to the whole run is
        recorded and ends this stage's loop. A snapshot is published between chunks when one is due.
        """
        for chunk in _chunks(todo, CHUNK):
            revisions = {t.checkpoint_id: t.revision for t in chunk}
            try:
                summary = run_chunk(chunk)
            except Exception as exc:
                _raise_if_fatal(exc)
                result.error(label, exc)
                part["error"] = _first_line(exc)
                self.link_failures(stage, result.started_at, revisions)
                return
            self.link_failures(stage, result.started_at, revisions)
            for key in counters:
                part[key] += getattr(summary, key)
            result.failed += summary.failed
            self.log(summary.line())
            self.publish_if_due()

    def _run_probe(self, chunk: list[_Planned], choice: CorpusChoice) -> Any:
        from hubindex.probing import run_probe

        return run_probe(self.index, [t.checkpoint_id for t in chunk], choice.spec,
                         device=self.config.executor.device, batch_size=self.config.probe.batch_size,
                         max_items=choice.max_items, show_progress=False, executor=self.executor)

    def kappa(self, result: StageResult) -> None:
        from hubindex.fingerprints import update_fingerprints
        from hubindex.relate import DENSE_MAX, resolve_corpus, update_kappa

        settings = self.config.kappa
        # By default, exactly the corpus contents this run probed (a name alone means its newest content).
        names = list(settings.corpora) if settings.corpora is not None else [
            self.corpus_hashes.get(c.spec, c.spec.partition(":")[0]) for c in self.config.probe.corpora]
        if not names:
            result.status = "skipped"
            return
        for name in names:
            try:
                with self.index.open_catalog() as catalog:
                    try:
                        ref = resolve_corpus(catalog, name)
                    except HubindexError as exc:  # nothing probed on it yet: nothing to relate
                        result.part(corpus=name, status="skipped", reason=_first_line(exc))
                        continue
                    update = update_kappa(catalog, self.index.root, ref, settings.centered,
                                          dense_max=settings.dense_max or DENSE_MAX, graph=settings.graph())
                    added, kept = update_fingerprints(catalog, self.index.root, ref)
            except Exception as exc:
                _raise_if_fatal(exc)
                result.error(f"kappa {name}", exc)
                result.part(corpus=name, status="failed", error=_first_line(exc))
                continue
            self.log(update.line() + f"; fingerprints: {added} new, {kept} kept")
            result.part(corpus=f"{ref.name} ({ref.content_hash[:12]})", checkpoints=update.checkpoints,
                        pairs_computed=update.computed, pairs_reused=update.reused,
                        fingerprints_added=added, fingerprints_kept=kept, failed=len(update.failed))
            result.added += update.computed + added
            result.unchanged += update.reused + kept
            result.failed += len(update.failed)
        self.link_failures("kappa", result.started_at)

    def score(self, result: StageResult) -> None:
        from hubindex.tasks import task_rows

        settings = self.config.score
        with self.index.open_catalog(read_only=True) as catalog:
            tasks = {row["task"]: row for row in task_rows(catalog)}
        names = list(settings.tasks) if settings.tasks is not None else sorted(tasks)
        if not names:
            result.status = "skipped"
            return
        rows = self.checkpoint_rows(settings.where or self.config.probe.where)
        budget = settings.max_checkpoints
        for name in names:
            if name not in tasks:
                result.error(f"score {name}", UsageError(f"no task named {name!r}; add it with `hubindex task add`"))
                result.part(task=name, status="failed", error="no such task")
                continue
            with self.index.open_catalog(read_only=True) as catalog:
                plan = _plan_score(catalog, rows, tasks[name], self.probe_instances, self.failed_recently(catalog))
                before = _scored_keys(catalog, name)
            cheap = [t for t in plan.todo if t.had_features]
            costly = [t for t in plan.todo if not t.had_features]
            allowed = costly if budget is None else costly[:budget]
            if budget is not None:
                budget -= len(allowed)
            todo = sorted(cheap + allowed, key=lambda t: t.checkpoint_id)
            part = result.part(task=name, candidates=len(rows), to_score=len(todo), deferred=len(costly) - len(allowed),
                               skipped_failed=plan.skipped_failed, no_probe=plan.no_probe, embedded=0, computed=0,
                               current=0, not_applicable=0, failed=0)
            self.log(f"score {name}: {len(todo)} checkpoints ({len(allowed)} to embed), "
                     f"{plan.skipped_failed} skipped after a failure, {part['deferred']} deferred")
            self.run_in_chunks("score", f"score {name}", todo, result, part,
                               ("embedded", "computed", "current", "not_applicable", "failed"),
                               lambda chunk: self._run_score(name, chunk))
            result.unchanged += part["current"]
            with self.index.open_catalog(read_only=True) as catalog:
                new = _scored_keys(catalog, name, since=result.started_at)
            result.added += len(new - before)
            result.changed += len(new & before)

    def _run_score(self, task: str, chunk: list[_Planned]) -> Any:
        from hubindex.scoring import run_score

        settings = self.config.score
        return run_score(self.index, task, settings.metrics, checkpoint_ids=[t.checkpoint_id for t in chunk],
                         reference_task=settings.reference_tasks.get(task), device=self.config.executor.device,
                         batch_size=settings.batch_size, show_progress=False, executor=self.executor)


def _fatal(exc: BaseException) -> StorageError | NightlyInterrupted | None:
    """The error that stops the whole run, if exc is one: a signal, a full disk or a refused write."""
    if isinstance(exc, (StorageError, NightlyInterrupted)):
        return exc
    if stop_requested.is_set():
        # Probing and crawling turn Ctrl-C into their own error; the run still stops.
        return NightlyInterrupted("interrupted by a signal")
    problem = storage_problem(exc)
    if problem is not None:
        return StorageError(_first_line(exc) if problem in str(exc) else f"{_first_line(exc)}: {problem}")
    return None


def _raise_if_fatal(exc: BaseException) -> None:
    """Signals, full disks and refused writes stop the run; every other error only fails its stage."""
    fatal = _fatal(exc)
    if fatal is exc:
        raise exc
    if fatal is not None:
        raise fatal from exc


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class _Planned:
    """A checkpoint a stage will hand to probing or scoring, with the revision it will use."""

    checkpoint_id: str
    revision: str | None
    layer: str
    pooling: str
    had_features: bool  # probe: features on this corpus at another revision; score: task features stored


@dataclass
class _Plan:
    todo: list[_Planned] = field(default_factory=list)
    up_to_date: int = 0
    skipped_failed: int = 0
    no_probe: int = 0


def _stored_keys(catalog: Catalog, corpus_hash: str) -> set[tuple[str, str, str, str]]:
    """(checkpoint_id, sha, layer, pooling) of the features stored for a corpus content."""
    rows = catalog.conn.execute(
        "SELECT checkpoint_id, checkpoint_sha, layer, pooling FROM embeddings WHERE corpus_hash = ?", [corpus_hash]
    ).fetchall()
    return {tuple(row) for row in rows}


def _plan_probe(catalog: Catalog, rows: list[dict[str, Any]], data: Any, instances: list[Any],
                failed: set[tuple[str, str]]) -> _Plan:
    """Which checkpoints need features on the corpus: those without features at their current revision."""
    from hubindex.probing import pick_probe, unsupported_reason

    stored = {
        (cid, sha, layer, pooling, dtype): path
        for cid, sha, layer, pooling, dtype, path in catalog.conn.execute(
            "SELECT checkpoint_id, checkpoint_sha, layer, pooling, dtype, path FROM embeddings "
            "WHERE corpus_hash = ? AND n_items = ?", [data.content_hash, data.size]).fetchall()
    }
    before = {cid for (cid,) in catalog.conn.execute(
        "SELECT DISTINCT checkpoint_id FROM embeddings WHERE corpus = ?", [data.name]).fetchall()}
    root = catalog.path.parent
    plan = _Plan()
    for row in rows:
        probe = pick_probe(instances, row, data.modality)
        cid = row["checkpoint_id"]
        if probe is None and unsupported_reason(instances, row) is not None:
            # No probe takes it at all: the probe run records why (once per revision, as failures are).
            if (cid, row.get("sha")) in failed:
                plan.skipped_failed += 1
            else:
                plan.todo.append(_Planned(cid, row.get("sha"), "", "", False))
            continue
        if probe is None:
            plan.no_probe += 1
            continue
        revision = probe.revision(row)
        path = stored.get((cid, revision, probe.layer, probe.pooling, probe.dtype_for(row)))
        if path is not None and (root / path).is_file():
            plan.up_to_date += 1
        elif (cid, revision) in failed:
            plan.skipped_failed += 1
        else:
            plan.todo.append(_Planned(cid, revision, probe.layer, probe.pooling, cid in before))
    return plan


def _plan_score(catalog: Catalog, rows: list[dict[str, Any]], task: dict[str, Any], instances: list[Any],
                failed: set[tuple[str, str]]) -> _Plan:
    """Checkpoints to score on a task; had_features marks those whose task features are stored (no model run)."""
    from hubindex.probing import pick_probe

    embedded = {tuple(r) for r in catalog.conn.execute(
        "SELECT checkpoint_sha, pooling, dtype FROM task_features WHERE task_hash = ? AND kind = 'features'",
        [task["content_hash"]]).fetchall()}
    plan = _Plan()
    for row in rows:
        probe = pick_probe(instances, row, task["modality"])
        if probe is None:
            plan.no_probe += 1
            continue
        cid, revision = row["checkpoint_id"], probe.revision(row)
        if (cid, revision) in failed:
            plan.skipped_failed += 1
            continue
        plan.todo.append(_Planned(cid, revision, probe.layer, probe.example_pooling,
                                  (revision, probe.example_pooling, probe.dtype_for(row)) in embedded))
    return plan


def _scored_keys(catalog: Catalog, task: str, since: datetime | None = None) -> set[tuple[str, str]]:
    """(checkpoint_id, metric) of a task's stored scores (computed since a time, if given)."""
    rows = catalog.conn.execute(
        "SELECT checkpoint_id, metric FROM task_scores WHERE task = ? AND computed_at >= ?",
        [task, since or datetime(1970, 1, 1)],
    ).fetchall()
    return {tuple(row) for row in rows}


# ------------------------------------------------------------------------------------ the run


def remove_stale_temporaries(index_root: Path) -> int:
    """Delete temporary files that a killed process left in the store and reports; return how many.

    Only called while this process holds the catalog for writing: every writer of these files
    holds it too, so none of them is being written now.
    """
    removed = 0
    for folder in (index_root / STORE_DIR, index_root / REPORTS_DIR):
        if folder.is_dir():
            for path in folder.rglob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _start(index: PatientIndex, config: NightlyConfig, config_json: str) -> tuple[int, int, int]:
    """Record a new run; return (run_id, runs marked interrupted, temporaries removed)."""
    with index.open_catalog() as catalog:
        with catalog.transaction():
            # This process holds the nightly lock, so a run still 'running' died without finishing.
            interrupted = catalog.conn.execute(
                "UPDATE nightly_runs SET status = 'interrupted', finished_at = ?, "
                "error = 'stopped before it finished (killed, or the machine went down)' "
                "WHERE status = 'running' RETURNING run_id", [utcnow()]).fetchall()
            run_id = catalog.conn.execute(
                "INSERT INTO nightly_runs (started_at, status, host, pid, config_source, config, config_sha256) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?) RETURNING run_id",
                [utcnow(), socket.gethostname(), os.getpid(), config.source, config_json,
                 hashlib.sha256(config_json.encode()).hexdigest()],
            ).fetchone()[0]
        removed = remove_stale_temporaries(index.root)
        catalog.publish_snapshot()
    return run_id, len(interrupted), removed


def _finish(index: PatientIndex, run_id: int, status: str, summary: str | None, error: str | None) -> None:
    with index.open_catalog() as catalog:
        catalog.conn.execute(
            "UPDATE nightly_runs SET status = ?, finished_at = ?, summary = ?, error = ? WHERE run_id = ?",
            [status, utcnow(), summary, error, run_id],
        )
        catalog.publish_snapshot()


def _make_executor(settings: ExecutorSettings) -> Any:
    from hubindex.executors import make_executor

    return make_executor(settings.kind, settings.address, settings.workers)


def run_nightly(index: Index, config: NightlyConfig | None = None, log: Callable[[str], None] = lambda line: None,
                overrides: Mapping[str, Any] | None = None) -> NightlyReport:
    """Run every stage once under the nightly lock; config None means the defaults derived from the index."""
    lock = NightlyLock(index.root)
    lock.acquire()
    try:
        with stop_on_signals():
            config = (config or default_config(index)).with_overrides(**(overrides or {}))
            patient = PatientIndex(index.root, config.limits.busy_timeout_seconds)
            return _run_locked(patient, config, lock, log)
    finally:
        lock.release()


def _run_locked(index: PatientIndex, config: NightlyConfig, lock: NightlyLock, log: Callable[[str], None]) -> NightlyReport:
    # A bad executor choice (Ray missing, --workers without ray) fails before a run is recorded.
    with _make_executor(config.executor) as executor:
        return _run_stages(index, config, lock, log, executor)


def _run_stages(index: PatientIndex, config: NightlyConfig, lock: NightlyLock, log: Callable[[str], None],
                executor: Any) -> NightlyReport:
    config_json = json.dumps(config.as_json(), sort_keys=True)
    try:
        run_id, interrupted, removed = _start(index, config, config_json)
    except Exception as exc:
        _raise_if_fatal(exc)
        raise
    lock.name_run(run_id)
    started = time.monotonic()
    log(f"run {run_id} started (pid {os.getpid()} on {socket.gethostname()}; configuration: {config.source})")
    if interrupted:
        log(f"marked {interrupted} earlier run(s) interrupted; removed {removed} temporary file(s) they left")
    stages: list[StageResult] = []
    current = STAGES[0]
    try:
        run = _Run(index, config, run_id, log, executor)
        for current in STAGES:
            stages.append(_run_stage(run, current, log))
        current = "report"
        status = "failed" if any(s.status == "failed" for s in stages) else "completed"
        error = "; ".join(e for s in stages for e in s.errors) or None
        report_path = index.root / REPORTS_DIR / f"nightly-{run_id}.txt"
        summary = render_summary(run_id, status, time.monotonic() - started, config, stages, report_path)
        atomic_write_bytes(report_path, summary.encode())
        _finish(index, run_id, status, summary, error)
    except KeyboardInterrupt:
        raise _stopped(index, run_id, current, NightlyInterrupted("interrupted")) from None
    except Exception as exc:
        fatal = _fatal(exc)
        if fatal is not None:
            raise _stopped(index, run_id, current, fatal) from None
        _give_up(index, run_id, "failed", f"stage {current}: {_first_line(exc)}")
        raise
    return NightlyReport(run_id, status, summary, report_path, stages, error)


def _run_stage(run: _Run, stage: str, log: Callable[[str], None]) -> StageResult:
    """Run one stage and record it; its errors fail the stage, not the run (unless they are fatal)."""
    result = StageResult(stage, utcnow())
    started = time.monotonic()
    log(f"stage {stage}")
    try:
        getattr(run, stage)(result)
    except Exception as exc:
        _raise_if_fatal(exc)
        result.error(stage, exc)
    result.seconds = time.monotonic() - started
    run.record_stage(result)
    log(f"stage {stage} {result.status} in {result.seconds:.1f} s")
    return result


def _stopped(index: PatientIndex, run_id: int, stage: str, fatal: HubindexError) -> HubindexError:
    """Record why the run stopped; return the one-line error to raise."""
    if isinstance(fatal, NightlyInterrupted):
        stopped: HubindexError = NightlyInterrupted(
            f"nightly run {run_id} interrupted in stage {stage}; the next run completes its work")
        _give_up(index, run_id, "interrupted", str(stopped))
    else:
        stopped = StorageError(f"nightly run {run_id} stopped in stage {stage}: {fatal}; free space or fix "
                               f"permissions under {index.root}, then run it again (finished work is kept)")
        _give_up(index, run_id, "failed", str(stopped))
    return stopped


def _give_up(index: PatientIndex, run_id: int, status: str, error: str) -> None:
    """Mark the run as stopped, if the catalog can still be written (a full disk may refuse even that)."""
    try:
        _finish(index, run_id, status, None, error)
    except Exception:  # noqa: BLE001 - the next run marks it interrupted instead
        pass


# ------------------------------------------------------------------------------------ the report


def render_summary(run_id: int, status: str, seconds: float, config: NightlyConfig, stages: list[StageResult],
                   report_path: Path) -> str:
    """The run's short text report: one table of stages, then a line per source, corpus and task."""
    from tabulate import tabulate

    lines = [f"hubindex nightly run {run_id}: {status} in {seconds:.1f} s "
             f"(pid {os.getpid()} on {socket.gethostname()}; configuration: {config.source})", ""]
    table = [[s.stage, s.status, f"{s.seconds:.1f}", s.added, s.changed, s.unchanged, s.failed] for s in stages]
    lines += tabulate(table, headers=["stage", "status", "seconds", "added", "changed", "unchanged", "failed"],
                      disable_numparse=True).splitlines()
    lines.append("")
    for stage in stages:
        for part in stage.parts:
            lines.append(f"{stage.stage}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in part.items()))
        for error in stage.errors:
            lines.append(f"{stage.stage} error: {error}")
    lines.append(f"report: {report_path}")
    return "\n".join(lines) + "\n"
