"""Crawler for timm: every pretrained `architecture.tag`, joined with ImageNet results tables."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Iterator

import click

from hubindex import hookimpl
from hubindex.errors import UsageError
from hubindex.index import SHIPPED_TIMM_RESULTS
from hubindex.types import CheckpointRecord, Crawler, CrawlEvent
from hubindex_plugins.lineage_declared import timm_edge_set

RESULTS_FILE = "results-imagenet.csv"
METADATA_FILE = "model_metadata-in1k.csv"

# Upstream-data tokens that appear in timm pretrained tags, largest/most specific first.
UPSTREAM_TAG_TOKENS = (
    "lvd1689m", "sat493m", "lvd142m", "dfn5b", "dfn2b", "datacompxl", "datacomp1b", "laion2b",
    "laion400m", "merged2b", "metaclip", "openai", "webli", "ig3b", "ig1b", "jft300m", "jft",
    "m38m", "m30m", "sa1b", "yfcc100m", "yfcc15m", "yfcc", "cc12m", "in22k", "in21k", "in12k", "in1k",
)
# Tag tokens that abbreviate a dataset name (`ns_jft_in1k`: Noisy Student on JFT-300M).
UPSTREAM_TOKEN_NAMES = {"jft": "jft300m"}


def _float(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    return float(value.replace(",", ""))  # a few rows write "1,014.45"


def load_results(results_dir: Path) -> dict[str, list[dict[str, str]]]:
    """results-imagenet.csv rows grouped by model name (a model has one row per image size)."""
    path = results_dir / RESULTS_FILE
    if not path.is_file():
        raise UsageError(f"timm results table not found: {path} (pass --results DIR holding {RESULTS_FILE})")
    grouped: dict[str, list[dict[str, str]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            grouped.setdefault(row["model"], []).append(row)
    return grouped


def load_upstream(results_dir: Path, renamed: dict[str, str | None] | None = None) -> dict[str, str]:
    """model_metadata-in1k.csv: {model or architecture name: pretraining data}.

    The table uses timm's old, untagged names (`tf_efficientnet_b7_ns`); `renamed` (timm's
    deprecated-name map) adds each under its current `arch.tag` name (`tf_efficientnet_b7.ns_jft_in1k`).
    """
    path = results_dir / METADATA_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        upstream = {row["model"]: row["pretrain"] for row in csv.DictReader(handle)}
    for old_name, new_name in (renamed or {}).items():
        if old_name in upstream and new_name and "." in new_name:
            upstream.setdefault(new_name, upstream[old_name])
    return upstream


def pick_result(rows: list[dict[str, str]], cfg: dict[str, Any]) -> dict[str, str] | None:
    """The evaluation at the model's test (else train) image size; else its best top-1."""
    if not rows:
        return None
    size = (cfg.get("test_input_size") or cfg.get("input_size") or (None, None, None))[-1]
    for row in rows:
        if size is not None and row["img_size"] == str(size):
            return row
    return max(rows, key=lambda r: _float(r["top1"]) or 0.0)


def upstream_of(name: str, architecture: str, tag: str, upstream: dict[str, str],
                default_tag: bool = True) -> str | None:
    """Pretraining data: the metadata table first, else the dataset named in the tag.

    An entry for the bare architecture describes the weights that name used to load, i.e. its
    default tag; other tags of the architecture (`.mae`, `.dino`) were trained differently.
    """
    if name in upstream:
        return upstream[name]
    tokens = re.split(r"[_\-]", tag or "")
    for token in UPSTREAM_TAG_TOKENS:
        if token in tokens:
            return UPSTREAM_TOKEN_NAMES.get(token, token)
    return upstream.get(architecture) if default_tag else None


class TimmCrawler(Crawler):
    """Index every pretrained timm model (`arch.tag`) with its pretrained_cfg and ImageNet top-1/top-5.

    The ImageNet results come from the timm repository's tables, shipped under index_data/timm/.
    Works offline: nothing is downloaded.
    """

    name = "timm"
    version = "1"
    description = "timm registry + ImageNet results (offline)"
    owned_columns: ClassVar[frozenset[str]] = frozenset({
        "repo_id", "sha", "metadata_sha", "library_name", "pipeline_tag", "architectures", "tags",
        "license", "arxiv_ids", "params_total", "in1k_top1", "in1k_top5", "in1k_img_size",
        "upstream_data", "num_classes", "input_size", "hf_hub_id", "pretrained_cfg",
    })

    @classmethod
    def cli_params(cls) -> list[click.Parameter]:
        return [
            click.Option(["--filter", "pattern"], metavar="PATTERN", default=None,
                         help="Only names matching this wildcard pattern, e.g. 'resnet*'."),
            click.Option(["--limit"], type=click.IntRange(min=1), default=None, help="At most N models."),
            click.Option(["--results", "results_dir"], type=click.Path(file_okay=False, path_type=Path),
                         default=None, help="Folder with results-imagenet.csv [default: index_data/timm]."),
        ]

    def validate(self) -> None:
        load_results(Path(self.options.get("results_dir") or SHIPPED_TIMM_RESULTS))

    def crawl(self, ctx: Any) -> Iterator[CrawlEvent]:
        from hubindex.torch_compat import import_timm

        results_dir = Path(self.options.get("results_dir") or SHIPPED_TIMM_RESULTS)
        results = load_results(results_dir)
        timm = import_timm()
        upstream = load_upstream(results_dir, timm.models.get_deprecated_models())
        pattern = self.options.get("pattern")
        # A tag's parent is looked up among all pretrained names, whatever --filter keeps.
        registry = frozenset(timm.list_pretrained())
        names = timm.list_pretrained(pattern) if pattern else timm.list_pretrained()
        if self.options.get("limit"):
            names = names[: self.options["limit"]]
        ctx.progress.total = len(names)
        default_tags: dict[str, str] = {}
        for name in names:
            architecture = name.partition(".")[0]
            if architecture not in default_tags:
                default_tags[architecture] = getattr(timm.models.get_pretrained_cfg(architecture), "tag", None)
            cfg = timm.models.get_pretrained_cfg(name).to_dict()
            yield self.record(name, cfg, results, upstream, default_tag=cfg.get("tag") == default_tags[architecture],
                              registry=registry)

    def record(self, name: str, cfg: dict[str, Any], results: dict[str, list[dict[str, str]]],
               upstream: dict[str, str], default_tag: bool = True,
               registry: frozenset[str] | None = None) -> CheckpointRecord:
        architecture, _, tag = name.partition(".")
        result = pick_result(results.get(name, []), cfg)
        num_classes = cfg.get("num_classes")
        paper_ids = cfg.get("paper_ids") or ""
        arxiv = [p.split(":", 1)[1] for p in re.split(r"[,\s]+", paper_ids) if p.lower().startswith("arxiv:")]
        cfg_json = json.dumps(cfg, sort_keys=True, default=list)
        content = cfg_json + json.dumps(result, sort_keys=True)
        sha = hashlib.sha1(content.encode()).hexdigest()  # changes when timm or the tables change
        columns = {
            "repo_id": name,
            "sha": sha,
            "metadata_sha": sha,
            "library_name": "timm",
            "pipeline_tag": "image-classification" if num_classes else "image-feature-extraction",
            "architectures": [architecture],
            "tags": ["timm", architecture] + ([tag] if tag else []),
            "license": cfg.get("license"),
            "arxiv_ids": arxiv or None,
            "params_total": round(_float(result["param_count"]) * 1e6) if result else None,
            "in1k_top1": _float(result["top1"]) if result else None,
            "in1k_top5": _float(result["top5"]) if result else None,
            "in1k_img_size": int(result["img_size"]) if result else None,
            "upstream_data": upstream_of(name, architecture, tag, upstream, default_tag),
            "num_classes": num_classes,
            "input_size": list(cfg["input_size"]) if cfg.get("input_size") else None,
            "hf_hub_id": cfg.get("hf_hub_id"),
            "pretrained_cfg": json.loads(cfg_json),
        }
        edges = timm_edge_set(name, registry) if registry is not None else None
        return CheckpointRecord(f"timm:{name}", columns, fetched=False, edges=edges)


@hookimpl
def register_crawlers(register):  # noqa: ANN001, ANN201 - hook signature
    register(TimmCrawler)
