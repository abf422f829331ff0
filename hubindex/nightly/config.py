"""The nightly configuration: a TOML file read into typed settings (see examples/nightly/nightly.toml).

The sections are pydantic models, so types, ranges and unknown keys are checked by one library;
its errors are turned into one line naming the TOML key and what it takes. `[[crawl]]` tables go
through each crawler's own click parameters instead, so their options are exactly those of
`hubindex crawl SOURCE`. `NightlyConfig.as_json()` writes the settings back with the TOML keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails

from hubindex.errors import UsageError
from hubindex.nightly.crawl_sources import CrawlSource, crawl_source, describe_kind
from hubindex.plugins import executors, known_names

DEFAULTS = "defaults"
# Without a configuration, probe and score only checkpoints whose weights are already on disk:
# a default run never downloads models.
DEFAULT_WHERE = "local_path IS NOT NULL"


@dataclass(frozen=True)
class Expected:
    """What a setting takes, in words: the `expected ...` of its error message."""

    words: str


PositiveInt = Annotated[int, Strict(), Field(ge=1), Expected("an integer of at least 1")]
Text = Annotated[str, Strict(), Field(pattern=r"\S"), Expected("a non-empty string")]
Texts = Annotated[tuple[Annotated[str, Strict(), Field(pattern=r"\S")], ...], Expected("a list of strings")]
Flag = Annotated[bool, Strict(), Expected("true or false")]
Amount = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), Expected("a finite number of at least 0")]
TaskPairs = Annotated[dict[Annotated[str, Strict()], Annotated[str, Strict(), Field(pattern=r"\S")]],
                      Expected('a table of task = "reference task"')]


class Section(BaseModel):
    """A TOML table: unknown keys are errors, and settings never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_condition(condition: str | None) -> str | None:
    # The condition goes into a larger query: a second statement must not ride along.
    if condition is not None and ";" in condition:
        raise ValueError("one SQL condition on the checkpoints table; ';' is not allowed")
    return condition


class CorpusChoice(Section):
    """A probing corpus (`NAME` or `NAME:ARGUMENT`) and how many of its items to use."""

    name: Text
    max_items: PositiveInt | None = None


class ProbeSettings(Section):
    corpora: Annotated[tuple[CorpusChoice, ...], Expected("a list of corpus names or {name, max_items} tables")] = ()
    where: Text = DEFAULT_WHERE
    max_checkpoints: PositiveInt | None = None  # probed per night, over all corpora; the rest wait
    batch_size: PositiveInt | None = None

    @field_validator("corpora", mode="before")
    @classmethod
    def _names_as_tables(cls, value: Any) -> Any:
        # A corpus is written as its name alone or as a {name, max_items} table.
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("corpora")
    @classmethod
    def _known_corpora(cls, choices: tuple[CorpusChoice, ...]) -> tuple[CorpusChoice, ...]:
        from hubindex.probing import make_corpus

        for choice in choices:
            try:
                make_corpus(choice.name, choice.max_items)  # an unknown corpus fails here, not at night
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return choices

    @field_validator("where")
    @classmethod
    def _where_is_one_condition(cls, condition: str) -> str:
        return _one_condition(condition)


class KappaSettings(Section):
    corpora: Texts | None = None  # None: the probe stage's corpora
    centered: Flag = True
    # None: hubindex.relate.DENSE_MAX; above it, a sparse kappa graph
    dense_max: Annotated[int, Strict(), Field(ge=2), Expected("an integer of at least 2")] | None = None
    graph_neighbors: PositiveInt | None = None  # None: GraphSettings' defaults
    graph_candidates: PositiveInt | None = None

    def graph(self) -> Any:
        """The sparse graph's hubindex.relate.GraphSettings, defaults where not given."""
        from hubindex.relate import GraphSettings

        default = GraphSettings()
        return GraphSettings(self.graph_neighbors or default.neighbors, self.graph_candidates or default.candidates)

    @field_validator("graph_candidates")
    @classmethod
    def _room_for_the_neighbours(cls, candidates: int | None, info: Any) -> int | None:
        from hubindex.relate import GraphSettings

        neighbors = info.data.get("graph_neighbors") or GraphSettings().neighbors
        if candidates is not None and neighbors > candidates:
            raise ValueError(f"{candidates} is fewer than graph_neighbors ({neighbors}); "
                             "neighbours are chosen among the candidates")
        return candidates

    @field_validator("graph_neighbors")
    @classmethod
    def _within_the_default_candidates(cls, neighbors: int | None) -> int | None:
        from hubindex.relate import GraphSettings

        # Checked here too: without graph_candidates, the candidates field is never validated.
        candidates = GraphSettings().candidates
        if neighbors is not None and neighbors > candidates:
            raise ValueError(f"{neighbors} exceeds the default graph_candidates ({candidates}); "
                             "raise graph_candidates too, neighbours are chosen among the candidates")
        return neighbors


class ScoreSettings(Section):
    tasks: Texts | None = None  # None: every registered task
    metrics: Texts = ()  # (): every installed metric
    where: Text | None = None  # None: the probe stage's
    reference_tasks: TaskPairs = Field(default_factory=dict)
    label_encoders: Texts = ()  # text checkpoints that embed class names (metrics that need label embeddings)
    max_checkpoints: PositiveInt | None = None  # embedded per night, over all tasks; the rest wait
    batch_size: PositiveInt | None = None

    @field_validator("metrics")
    @classmethod
    def _installed_metrics(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from hubindex.scoring import metric_classes

        try:
            metric_classes(names)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return names

    @field_validator("where")
    @classmethod
    def _where_is_one_condition(cls, condition: str | None) -> str | None:
        return _one_condition(condition)


class LimitSettings(Section):
    # A failed checkpoint is retried when its revision changes, or after this many days.
    retry_failed_after_days: Amount = 7.0
    snapshot_every_minutes: Amount = 5.0
    busy_timeout_seconds: Amount = 120.0  # how long to wait for a reader or writer to let go of the catalog


class ExecutorSettings(Section):
    kind: Text = "local"
    address: Text | None = None
    workers: PositiveInt | None = None
    device: Text = "auto"

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        problem = unknown_executor(kind)
        if problem is not None:
            raise ValueError(problem)
        return kind

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        from hubindex.probing import DEVICES

        if device not in DEVICES:
            raise ValueError(f"expected one of {', '.join(DEVICES)}, got {device!r}")
        return device


def unknown_executor(kind: str) -> str | None:
    """What is wrong with an executor kind, in words, when none of that kind is registered."""
    registered = executors()
    if kind not in registered:
        return f"unknown executor {kind!r}; available executors: {known_names(registered)}"
    return None


class NightlyConfig(Section):
    """What a nightly run does; see examples/nightly/nightly.toml."""

    crawl: tuple[CrawlSource, ...] = ()
    probe: ProbeSettings = ProbeSettings()
    kappa: KappaSettings = KappaSettings()
    score: ScoreSettings = ScoreSettings()
    limits: LimitSettings = LimitSettings()
    executor: ExecutorSettings = ExecutorSettings()
    _source: str = PrivateAttr(DEFAULTS)  # the configuration file, or 'defaults'; not a TOML key

    @property
    def source(self) -> str:
        return self._source

    def from_source(self, source: str) -> NightlyConfig:
        """The same settings, saying which file (or 'defaults') they came from."""
        named = self.model_copy()
        named._source = source
        return named

    def as_json(self) -> dict[str, Any]:
        """The settings as plain JSON data under their TOML keys (what `--check` prints and `nightly_runs.config` stores)."""
        sections = self.model_dump(mode="json", exclude_none=True, exclude={"crawl"})
        return {"crawl": [source.as_toml() for source in self.crawl], **sections}

    def with_overrides(self, executor: str | None = None, address: str | None = None, workers: int | None = None,
                       device: str | None = None, max_checkpoints: int | None = None) -> NightlyConfig:
        """The settings with command-line flags applied over the file's."""
        flags = {"kind": executor, "address": address, "workers": workers, "device": device}
        chosen = self.executor.model_copy(update={k: v for k, v in flags.items() if v is not None})
        problem = unknown_executor(chosen.kind)
        if problem is not None:
            raise UsageError(f"--executor: {problem}")
        update: dict[str, Any] = {"executor": chosen}
        if max_checkpoints is not None:
            update["probe"] = self.probe.model_copy(update={"max_checkpoints": max_checkpoints})
            update["score"] = self.score.model_copy(update={"max_checkpoints": max_checkpoints})
        return self.model_copy(update=update)


# ------------------------------------------------------------------------------------ reading TOML


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
    crawl = data.pop("crawl", [])
    try:
        config = NightlyConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{source}: {describe_error(exc.errors()[0])}") from None
    if not isinstance(crawl, list):
        raise UsageError(f"{source}: crawl must be [[crawl]] tables (one per source), got {describe_kind(crawl)}")
    sources = tuple(crawl_source(f"{source}: [[crawl]] #{i}", entry, base_dir) for i, entry in enumerate(crawl, 1))
    return config.model_copy(update={"crawl": sources}).from_source(source)


def describe_error(error: ErrorDetails) -> str:
    """One pydantic error as one line: the TOML key, then what it takes and what it got."""
    loc = list(error["loc"])
    words = [f"[{loc[0]}]", *(str(p) if isinstance(p, str) else f"#{p + 1}" for p in loc[1:])] if loc else []
    label = " ".join(words)
    if error["type"] == "extra_forbidden":
        table = words[:-1]
        known = ", ".join(_model_at(loc[:-1]).model_fields)
        return f"{' '.join(table) + ': ' if table else ''}unknown key {loc[-1]!r}; expected one of: {known}"
    if error["type"] == "missing":
        return f"{' '.join(words[:-1])}: needs `{loc[-1]}`"
    if error["type"] == "value_error":
        return f"{label}: {error.get('ctx', {}).get('error', error['msg'])}"
    if error["type"] in ("model_type", "model_attributes_type"):
        return f"{label}: expected a table, got {describe_kind(error['input'])}"
    expected = _expected_at(loc)
    if expected is None:
        return f"{label}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    return f"{label}: expected {expected}, got {describe_kind(error['input'])}"


def _model_at(loc: list[Any]) -> type[BaseModel]:
    """The model of the table at a location (the whole configuration for [])."""
    model: type[BaseModel] = NightlyConfig
    for part in loc:
        if isinstance(part, str):
            model = _inner_model(model.model_fields[part].annotation) or model
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_inner_model, get_args(annotation)) if m is not None), None)


def _expected_at(loc: list[Any]) -> str | None:
    """The words of the Expected marker on the setting at a location (an item's or a table key's names its setting)."""
    for i in reversed(range(len(loc))):
        setting = _model_at(loc[:i]).model_fields.get(loc[i]) if isinstance(loc[i], str) else None
        if setting is not None:
            # pydantic keeps a plain Annotated field's markers in metadata, an optional one's in the annotation.
            marked = next((part.words for part in setting.metadata if isinstance(part, Expected)), None)
            return marked or _expected(setting.annotation)
    return None


def _expected(annotation: Any) -> str | None:
    for part in getattr(annotation, "__metadata__", ()):
        if isinstance(part, Expected):
            return part.words
    return next((w for w in map(_expected, get_args(annotation)) if w is not None), None)
