"""Crawler for checkpoints already on disk: a Hugging Face cache or folders of checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterator

import click

from hubindex import hookimpl
from hubindex.errors import UsageError
from hubindex.types import CheckpointRecord, Crawler, CrawlEvent, CrawlFailure
from hubindex_plugins.crawl_hf import WEIGHT_SUFFIXES, valid_repo_id

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 5 * 1024 * 1024
HASH_CHUNK = 1 << 20
# State-dict entries that are statistics, not parameters: BatchNorm running stats. Counting
# them would make a local resnet disagree with timm's own parameter count.
# Stored tensors that are buffers, not parameters (BatchNorm statistics, BERT's position ids).
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked", ".position_ids")
CARD_FILE = "README.md"


def is_hf_cache(path: Path) -> bool:
    """A Hugging Face hub cache holds `models--ORG--NAME` folders."""
    return path.is_dir() and any(p.name.startswith("models--") for p in path.iterdir())


def is_checkpoint_folder(path: Path) -> bool:
    """A checkpoint folder has a config.json or weight files at its top level."""
    if not path.is_dir():
        return False
    return any(p.is_file() and (p.name == CONFIG_FILE or p.name.endswith(WEIGHT_SUFFIXES)) for p in path.iterdir())


def read_config(folder: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, or {} (absent, too large or not a JSON object)."""
    path = folder / CONFIG_FILE
    if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def safetensors_params(path: Path) -> dict[str, int]:
    """{dtype: parameter count} from a safetensors header, without loading the tensors."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    with safe_open(str(path), framework="numpy") as handle:
        for name in handle.keys():
            if name.endswith(BUFFER_SUFFIXES):
                continue
            tensor = handle.get_slice(name)
            size = 1
            for dim in tensor.get_shape():
                size *= dim
            dtype = tensor.get_dtype()
            counts[dtype] = counts.get(dtype, 0) + size
    return counts


def torch_params(path: Path) -> dict[str, int]:
    """{dtype: parameter count} of a pickled state dict, loaded with weights_only=True."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    counts: dict[str, int] = {}
    for name, value in state.items() if isinstance(state, dict) else []:
        if isinstance(value, torch.Tensor) and not str(name).endswith(BUFFER_SUFFIXES):
            dtype = str(value.dtype).replace("torch.", "").upper()
            counts[dtype] = counts.get(dtype, 0) + value.numel()
    return counts


def _inside(path: Path, root: Path) -> bool:
    """Whether path, with its links resolved, lies inside root (a resolved folder)."""
    return path.resolve().is_relative_to(root)


def folder_files(folder: Path) -> list[Path]:
    """Regular files under a checkpoint folder, sorted; links leading outside it are ignored."""
    root = folder.resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not path.is_file():
                continue
            if not _inside(path, root) and not _is_cache_blob(path, root):
                continue
            files.append(path)
    return files


def _is_cache_blob(path: Path, snapshot_root: Path) -> bool:
    # In a Hub cache, snapshots/<sha>/file links to ../../blobs/<etag>: inside the repo folder.
    repo_root = snapshot_root.parent.parent
    return snapshot_root.parent.name == "snapshots" and path.resolve().is_relative_to(repo_root / "blobs")


def content_sha(files: list[Path], folder: Path) -> str:
    """A hash of the folder's relative file names and contents: its identity when copied or moved."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            # Name and length frame each file, so moving bytes between files changes the hash.
            size = os.fstat(handle.fileno()).st_size
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + str(size).encode() + b"\0")
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:40]


def read_card(folder: Path) -> dict[str, Any]:
    """Catalog columns from the model card's front matter (README.md): lineage, license, data."""
    from huggingface_hub.repocard import metadata_load

    path = folder / CARD_FILE
    if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        return {}
    try:
        card = metadata_load(path) or {}
    except Exception:  # malformed YAML in an untrusted card: index the checkpoint without it
        return {}

    def strings(value: Any) -> list[str] | None:
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v for v in values if isinstance(v, str)] or None

    license_ = card.get("license")
    return {
        "base_models": strings(card.get("base_model")),
        "license": license_ if isinstance(license_, str) else None,
        "datasets": strings(card.get("datasets")),
        "pipeline_tag": card.get("pipeline_tag") if isinstance(card.get("pipeline_tag"), str) else None,
        "tags": strings(card.get("tags")),
    }


def describe_folder(folder: Path, files: list[Path]) -> dict[str, Any]:
    """Catalog columns read from a checkpoint folder: config, weight files and parameter counts."""
    config = read_config(folder)
    is_timm = "architecture" in config and ("pretrained_cfg" in config or "num_features" in config)
    weights = []
    weight_paths = []
    for path in files:
        name = path.relative_to(folder).as_posix()
        if not name.endswith(WEIGHT_SUFFIXES):
            continue
        blob = path.resolve()
        # In a Hub cache, an LFS file's blob is named by its sha256; elsewhere a name proves nothing.
        is_sha256 = blob.parent.name == "blobs" and len(blob.name) == 64 and all(
            c in "0123456789abcdef" for c in blob.name
        )
        weights.append({"name": name, "size": path.stat().st_size, "sha256": blob.name if is_sha256 else None})
        weight_paths.append(path)
    # Count one copy of the weights: the safetensors files if any, else the pickled state dicts
    # (repos often ship the same weights in both formats).
    safetensors = [p for p in weight_paths if p.name.endswith(".safetensors")]
    counted = safetensors or [p for p in weight_paths if p.name.endswith((".pth", ".pt", ".bin", ".ckpt"))]
    params: dict[str, int] = {}
    for path in counted:
        try:
            counts = safetensors_params(path) if safetensors else torch_params(path)
        except Exception:  # unreadable weights still get indexed; probing will report them
            counts = {}
        for dtype, count in counts.items():
            params[dtype] = params.get(dtype, 0) + count
    pretrained_cfg = config.get("pretrained_cfg") if is_timm else None
    architectures = config.get("architectures") if not is_timm else [config.get("architecture")]
    return read_card(folder) | {
        "library_name": "timm" if is_timm else ("transformers" if "model_type" in config else None),
        "model_type": config.get("architecture") if is_timm else config.get("model_type"),
        "architectures": [str(a) for a in architectures] if isinstance(architectures, list) else None,
        "num_classes": config.get("num_classes") if isinstance(config.get("num_classes"), int) else None,
        "num_features": config.get("num_features") if isinstance(config.get("num_features"), int) else None,
        "pretrained_cfg": pretrained_cfg if isinstance(pretrained_cfg, dict) else None,
        "weight_files": weights or None,
        "params_total": sum(params.values()) or None,
        "params_by_dtype": params or None,
    }


class LocalCrawler(Crawler):
    """Index checkpoints already on disk, so downloaded checkpoints join the catalog too.

    PATH is a Hugging Face cache (folders `models--ORG--NAME`, as found by scan_cache_dir), a
    folder of checkpoint folders (Hugging Face or timm format: config.json + weights), or one
    checkpoint folder. Cached repos are keyed `hf:ORG/NAME` and merge with rows from the Hub
    crawler; other folders are keyed `local:/absolute/path`.
    """

    name = "local"
    version = "1"
    description = "Hugging Face cache or folders of checkpoints on disk"
    # For cached hub repos: the local copy. Hub metadata stays the Hub crawler's.
    owned_columns: ClassVar[frozenset[str]] = frozenset({"local_path", "local_sha"})
    folder_owned: ClassVar[frozenset[str]] = frozenset({
        "repo_id", "sha", "local_path", "local_sha", "library_name", "model_type", "architectures",
        "num_classes", "num_features", "pretrained_cfg", "weight_files", "params_total", "params_by_dtype",
        "base_models", "license", "datasets", "pipeline_tag", "tags",
    })

    @classmethod
    def cli_params(cls) -> list[click.Parameter]:
        return [click.Argument(["path"], type=click.Path(path_type=Path))]

    def query_key(self) -> str:
        return f"local:{Path(self.options['path']).expanduser().resolve()}"

    def validate(self) -> None:
        path = Path(self.options["path"]).expanduser()
        if not path.exists():
            raise UsageError(f"{path}: no such folder (give a Hugging Face cache or a folder of checkpoints)")
        if not path.is_dir():
            raise UsageError(f"{path}: not a folder (give a Hugging Face cache or a folder of checkpoints)")

    def crawl(self, ctx: Any) -> Iterator[CrawlEvent]:
        self.validate()
        path = Path(self.options["path"]).expanduser().resolve()
        if (path / "hub").is_dir() and is_hf_cache(path / "hub"):
            path = path / "hub"  # HF_HOME given instead of HF_HUB_CACHE
        if is_hf_cache(path):
            yield from self.crawl_cache(ctx, path)
        elif is_checkpoint_folder(path):
            yield from self.crawl_folder(path)
        else:
            # Links to folders elsewhere are not followed: only what lies inside PATH is indexed
            # (and a link to a sibling folder is that folder, indexed once).
            folders = sorted({p.resolve() for p in path.iterdir() if _inside(p, path) and is_checkpoint_folder(p)})
            if not folders:
                raise UsageError(f"{path}: no checkpoints found (no config.json or weight files, no models--* folders)")
            ctx.progress.total = len(folders)
            for folder in folders:
                yield from self.crawl_folder(folder)

    def crawl_cache(self, ctx: Any, cache_dir: Path) -> Iterator[CrawlEvent]:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(cache_dir)
        for warning in info.warnings:
            # The message names a path inside the broken repo folder: that folder is the subject.
            folder = re.search(r"(?:models|datasets|spaces)--[^/\s]+", str(warning))
            subject = str(cache_dir / folder.group(0)) if folder else str(cache_dir)
            yield CrawlFailure(subject, "bad-cache-entry", str(warning)[:300])
        repos = sorted((r for r in info.repos if r.repo_type == "model"), key=lambda r: r.repo_id)
        ctx.progress.total = len(repos)
        for repo in repos:
            if not valid_repo_id(repo.repo_id):
                yield CrawlFailure(str(repo.repo_path)[:200], "invalid-repo-id", "malformed repo folder name")
                continue
            revisions = list(repo.revisions)
            if not revisions:
                continue
            # The revision `main` points at, else the most recently modified one.
            revision = next((r for r in revisions if "main" in r.refs), None) or max(
                revisions, key=lambda r: r.last_modified
            )
            snapshot = Path(revision.snapshot_path)
            files = folder_files(snapshot)
            columns = describe_folder(snapshot, files)
            columns.update({
                "repo_id": repo.repo_id,
                "local_path": str(snapshot),
                "local_sha": revision.commit_hash,
                # Fills sha only for repos the Hub crawler has not seen; it never overwrites it.
                "sha": revision.commit_hash,
            })
            yield CheckpointRecord(f"hf:{repo.repo_id}", columns)

    def crawl_folder(self, folder: Path) -> Iterator[CrawlEvent]:
        checkpoint_id = f"local:{folder}"
        try:
            files = folder_files(folder)
            sha = content_sha(files, folder)
            columns = describe_folder(folder, files)
        except OSError as exc:
            yield CrawlFailure(checkpoint_id, "unreadable", f"{exc.strerror or exc}: {exc.filename or folder}")
            return
        columns.update({"repo_id": folder.name, "sha": sha, "local_path": str(folder), "local_sha": sha})
        yield CheckpointRecord(checkpoint_id, columns, owned_columns=self.folder_owned)


@hookimpl
def register_crawlers(register):  # noqa: ANN001, ANN201 - hook signature
    register(LocalCrawler)
