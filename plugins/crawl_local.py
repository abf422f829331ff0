"""Crawler for checkpoints already on disk: a Hugging Face cache or folders of checkpoints.

Folders on disk are untrusted. Every file is read through the folder's listing
(`checkpoint_files.list_folder`): a link whose target lies outside the checkpoint folder (outside the
repo's blobs/ for a cache snapshot) is never opened, hashed or listed, and special files are
skipped. Config files are parsed within limits; a folder whose config.json cannot be (or any other
surprise while reading one folder) becomes a recorded failure for that folder, and the crawl goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

import click

from hubindex import hookimpl
from hubindex.errors import UsageError
from hubindex.lineage import EdgeSet
from hubindex.types import CheckpointRecord, Crawler, CrawlEvent, CrawlFailure
from hubindex_plugins.checkpoint_files import FolderListing, UntrustedContent, list_folder, printable
from hubindex_plugins.crawl_hf import WEIGHT_SUFFIXES, valid_repo_id
from hubindex_plugins.lineage_declared import ADAPTER_CONFIG, HUB_EVIDENCE, hub_edge_set, manifest_edges

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
# Where `hubindex zoo build` says what a member was made from (plugins/zoo.py LINEAGE_FILE).
MANIFEST_FILE = "hubindex_lineage.json"
MAX_CARD_BYTES = 5 * 1024 * 1024
HASH_CHUNK = 1 << 20
# Stored tensors that are buffers, not parameters (BatchNorm statistics, BERT's position ids).
# Counting them would make a local resnet disagree with timm's own parameter count.
BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked", ".position_ids")
# The largest values of the catalog's INTEGER (num_classes, num_features) and BIGINT (params) columns.
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
COMMIT = re.compile(r"[0-9a-f]{40}")


def is_hf_cache(path: Path) -> bool:
    """A Hugging Face hub cache holds `models--ORG--NAME` folders."""
    return path.is_dir() and any(p.name.startswith("models--") for p in path.iterdir())


def is_checkpoint_folder(path: Path) -> bool:
    """A checkpoint folder has a config.json or weight files at its top level."""
    if not path.is_dir():
        return False
    return any(p.is_file() and (p.name == CONFIG_FILE or p.name.endswith(WEIGHT_SUFFIXES)) for p in path.iterdir())


def catalog_integer(value: Any, maximum: int) -> int | None:
    """value if it is a whole number in 0..maximum (what its catalog column holds and means), else None."""
    return value if type(value) is int and 0 <= value <= maximum else None


def storable_json(value: Any) -> bool:
    """Whether a parsed value can go into a JSON column: NaN and Infinity are not JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def read_config(listing: FolderListing) -> dict[str, Any]:
    """config.json of a checkpoint folder, {} without one; UntrustedContent('bad-config') if it is not a
    JSON object within the limits (size, UTF-8, nesting)."""
    path = listing.top_level(CONFIG_FILE)
    if path is None:
        return {}
    config = listing.read_json(path)
    if not isinstance(config, dict):
        raise UntrustedContent("bad-config", f"{CONFIG_FILE} is not a JSON object")
    return config


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
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a loop of links
        return False


def checkpoint_files(listing: FolderListing) -> list[Path]:
    """The files that make up a checkpoint: the listing's files, less hidden ones and those in hidden folders (.git)."""
    return [p for p in listing.files if not any(part.startswith(".") for part in p.relative_to(listing.folder).parts)]


def content_sha(files: list[Path], listing: FolderListing) -> str:
    """A hash of the folder's relative file names and contents: its identity when copied or moved."""
    digest = hashlib.sha256()
    for path in files:
        with listing.open(path) as handle:
            # Name and length frame each file, so moving bytes between files changes the hash.
            size = os.fstat(handle.fileno()).st_size
            digest.update(os.fsencode(path.relative_to(listing.folder).as_posix()) + b"\0" + str(size).encode() + b"\0")
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:40]


def read_card(listing: FolderListing) -> dict[str, Any]:
    """The model card's front matter (README.md), {} without a readable one."""
    import yaml
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    path = listing.top_level(CARD_FILE)
    if path is None:
        return {}
    try:
        match = REGEX_YAML_BLOCK.search(listing.read_text(path, MAX_CARD_BYTES, encoding="utf-8-sig"))
        card = yaml.safe_load(match.group(2)) if match else None
    except Exception:  # too large, not UTF-8, malformed or nested too deep: index the checkpoint without its card
        return {}
    return card if isinstance(card, dict) else {}


def card_columns(card: dict[str, Any]) -> dict[str, Any]:
    """Catalog columns from the model card's front matter: lineage, license, data."""

    def strings(value: Any) -> list[str] | None:
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v for v in values if isinstance(v, str)] or None

    return {
        "base_models": strings(card.get("base_model")),
        "license": text(card.get("license")),
        "datasets": strings(card.get("datasets")),
        "pipeline_tag": text(card.get("pipeline_tag")),
        "tags": strings(card.get("tags")),
    }


def text(value: Any) -> str | None:
    """value if it is a string, else None (a config or card field of the wrong type is not indexed)."""
    return value if isinstance(value, str) else None


def folder_edges(listing: FolderListing, config: dict[str, Any], card: dict[str, Any], repo_id: str | None,
                 fill_only: Iterable[str] = ()) -> EdgeSet:
    """The parents a checkpoint folder's files state: card, config.json, adapter_config.json, zoo manifest.

    An adapter config or manifest that cannot be read (too large, not JSON) states nothing, and the
    kind's stored edges stay; the folder is indexed all the same. Kinds in fill_only are only filled in.
    """
    read: dict[str, Any] = {}
    for name in (ADAPTER_CONFIG, MANIFEST_FILE):
        path = listing.top_level(name)
        if path is not None:
            try:
                read[name] = listing.read_json(path)
            except (UntrustedContent, OSError):
                pass
    top_level = [listing.name(p) for p in listing.files if p.parent == listing.folder]
    edges = hub_edge_set(card, card_columns(card).get("tags") or [], config, top_level, repo_id or "",
                         read.get(ADAPTER_CONFIG), ADAPTER_CONFIG in read)
    manifest_read = MANIFEST_FILE in read or listing.top_level(MANIFEST_FILE) is None
    kinds = edges.evidence | ({"manifest"} if manifest_read else set())
    return EdgeSet.of([*edges.edges, *manifest_edges(read.get(MANIFEST_FILE))], kinds, fill_only)


def describe_folder(listing: FolderListing, files: list[Path], config: dict[str, Any] | None = None,
                    card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Catalog columns read from a checkpoint folder: config, weight files and parameter counts."""
    config = read_config(listing) if config is None else config
    is_timm = "architecture" in config and ("pretrained_cfg" in config or "num_features" in config)
    weights = []
    weight_paths = []
    for path in files:
        name = listing.name(path)
        if not name.endswith(WEIGHT_SUFFIXES):
            continue
        blob = listing.target(path)
        # In a Hub cache, an LFS file's blob is named by its sha256; elsewhere a name proves nothing.
        is_sha256 = blob.parent.name == "blobs" and len(blob.name) == 64 and all(
            c in "0123456789abcdef" for c in blob.name
        )
        weights.append({"name": name, "size": blob.stat().st_size, "sha256": blob.name if is_sha256 else None})
        weight_paths.append(path)
    # Count one copy of the weights: the safetensors files if any, else the pickled state dicts
    # (repos often ship the same weights in both formats).
    safetensors = [p for p in weight_paths if p.name.endswith(".safetensors")]
    counted = safetensors or [p for p in weight_paths if p.name.endswith((".pth", ".pt", ".bin", ".ckpt"))]
    params: dict[str, int] = {}
    for path in counted:
        try:
            target = listing.target(path)
            counts = safetensors_params(target) if safetensors else torch_params(target)
        except Exception:  # unreadable weights still get indexed; probing will report them
            counts = {}
        for dtype, count in counts.items():
            params[dtype] = params.get(dtype, 0) + count
    if sum(params.values()) > BIGINT_MAX:  # no real checkpoint; a header that lies about its shapes
        params = {}
    pretrained_cfg = config.get("pretrained_cfg") if is_timm else None
    if not (isinstance(pretrained_cfg, dict) and storable_json(pretrained_cfg)):
        pretrained_cfg = None
    architectures = config.get("architectures") if not is_timm else [config.get("architecture")]
    return card_columns(read_card(listing) if card is None else card) | {
        "library_name": "timm" if is_timm else ("transformers" if "model_type" in config else None),
        "model_type": text(config.get("architecture") if is_timm else config.get("model_type")),
        "architectures": [str(a) for a in architectures] if isinstance(architectures, list) else None,
        "num_classes": catalog_integer(config.get("num_classes"), INTEGER_MAX),
        "num_features": catalog_integer(config.get("num_features"), INTEGER_MAX),
        "pretrained_cfg": pretrained_cfg,
        "weight_files": weights or None,
        "params_total": sum(params.values()) or None,
        "params_by_dtype": params or None,
    }


def folder_failure(subject: str, exc: Exception) -> CrawlFailure:
    """What went wrong reading one folder, as its recorded failure: one folder never stops the crawl of the others."""
    if isinstance(exc, UntrustedContent):
        kind, message = exc.kind, str(exc)
    elif isinstance(exc, OSError):
        kind, message = "unreadable", f"{exc.strerror or exc}: {exc.filename or subject}"
    else:
        kind, message = "crawl-error", f"{type(exc).__name__}: {exc}"
    return CrawlFailure(printable(subject), kind, printable(message)[:300])


def main_ref(repo: Path) -> str | None:
    """The commit a cached repo's refs/main names, None without one; UntrustedContent if it leads outside
    the repo's refs/ or holds no commit hash."""
    refs = repo / "refs"
    if not refs.is_dir():
        return None
    listing = list_folder(refs)
    main = listing.top_level("main")
    if main is None:
        refused = [why for why in listing.refused if why.startswith("main: ")]
        if refused:
            raise UntrustedContent("unsafe-path", f"refs/{refused[0]}")
        return None
    with listing.open(main) as handle:
        commit = handle.read(64).decode("ascii", "replace").strip()
    if not COMMIT.fullmatch(commit):
        raise UntrustedContent("bad-cache-entry", "refs/main does not hold a commit hash")
    return commit


def last_modified(snapshot: Path) -> float:
    """When a snapshot last changed: its newest file, else the folder itself (as huggingface_hub's scan says)."""
    listing = list_folder(snapshot)
    return max((listing.target(p).stat().st_mtime for p in listing.files), default=snapshot.stat().st_mtime)


def cached_snapshot(repo: Path) -> tuple[str, Path] | None:
    """(commit, snapshot folder) of a cached repo: the revision refs/main names, else the most recently
    modified one; None without any. UntrustedContent('bad-cache-entry') for a repo folder that is no cache entry."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        raise UntrustedContent("bad-cache-entry", f"no snapshots/ folder in {repo.name}")
    commit = main_ref(repo)
    if commit is not None:
        if not (snapshots / commit).is_dir():
            raise UntrustedContent("bad-cache-entry", f"refs/main names commit {commit}, which has no snapshot")
        return commit, snapshots / commit
    revisions = [p for p in snapshots.iterdir() if COMMIT.fullmatch(p.name) and p.is_dir()]
    if not revisions:
        return None
    latest = max(revisions, key=last_modified)
    return latest.name, latest


class LocalCrawler(Crawler):
    """Index checkpoints already on disk, so downloaded checkpoints join the catalog too.

    PATH is a Hugging Face cache (folders `models--ORG--NAME`, laid out as huggingface_hub
    downloads them), a folder of checkpoint folders (Hugging Face or timm format: config.json +
    weights), or one checkpoint folder. Cached repos are keyed `hf:ORG/NAME` and merge with rows
    from the Hub crawler; other folders are keyed `local:/absolute/path`.
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
            yield from self.crawl_folders(ctx, path)

    def crawl_folders(self, ctx: Any, path: Path) -> Iterator[CrawlEvent]:
        """Each checkpoint folder inside PATH, in name order."""
        # Links to folders elsewhere are not followed: only what lies inside PATH is indexed
        # (and a link to a sibling folder is that folder, indexed once).
        folders: set[Path] = set()
        unreadable: list[CrawlFailure] = []
        for entry in path.iterdir():
            try:
                if _inside(entry, path) and is_checkpoint_folder(entry):
                    folders.add(entry.resolve())
            except OSError as exc:  # a folder that cannot be listed may be a checkpoint: say so
                unreadable.append(folder_failure(f"local:{entry}", exc))
        if not folders and not unreadable:
            raise UsageError(f"{path}: no checkpoints found (no config.json or weight files, no models--* folders)")
        ctx.progress.total = len(folders) + len(unreadable)
        yield from unreadable
        for folder in sorted(folders):
            yield from self.crawl_folder(folder)

    def crawl_cache(self, ctx: Any, cache_dir: Path) -> Iterator[CrawlEvent]:
        """Each cached model repo: the snapshot refs/main names, read like any checkpoint folder."""
        repos = sorted(p for p in cache_dir.iterdir() if p.name.startswith("models--") and _inside(p, cache_dir))
        ctx.progress.total = len(repos)
        for repo in repos:
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            if not valid_repo_id(repo_id):
                yield CrawlFailure(printable(str(repo))[:200], "invalid-repo-id", "malformed repo folder name")
                continue
            try:
                found = cached_snapshot(repo)
            except Exception as exc:  # noqa: BLE001 - a broken cache entry is its failure, the crawl goes on
                yield folder_failure(str(repo), exc)
                continue
            if found is None:
                continue
            commit, snapshot = found
            try:
                listing = list_folder(snapshot)
                config, card = read_config(listing), read_card(listing)
                columns = describe_folder(listing, checkpoint_files(listing), config, card)
                # What the Hub states too only fills in: the Hub crawler's edges of the repo stay its own.
                edges = folder_edges(listing, config, card, repo_id, fill_only=HUB_EVIDENCE)
            except Exception as exc:  # noqa: BLE001 - one repo's error is its failure, the crawl goes on
                yield folder_failure(f"hf:{repo_id}", exc)
                continue
            columns.update({
                "repo_id": repo_id,
                "local_path": str(snapshot),
                "local_sha": commit,
                # Fills sha only for repos the Hub crawler has not seen; it never overwrites it.
                "sha": commit,
            })
            yield CheckpointRecord(f"hf:{repo_id}", columns, edges=edges)

    def crawl_folder(self, folder: Path) -> Iterator[CrawlEvent]:
        checkpoint_id = f"local:{folder}"
        if printable(checkpoint_id) != checkpoint_id:
            yield CrawlFailure(printable(checkpoint_id), "invalid-path", "the folder's path is not UTF-8, "
                               "so it cannot name a catalog row; rename the folder")
            return
        try:
            listing = list_folder(folder)
            files = checkpoint_files(listing)
            sha = content_sha(files, listing)
            config, card = read_config(listing), read_card(listing)
            columns = describe_folder(listing, files, config, card)
            edges = folder_edges(listing, config, card, None)
        except Exception as exc:  # noqa: BLE001 - one folder's error is its failure, the crawl goes on
            yield folder_failure(checkpoint_id, exc)
            return
        columns.update({"repo_id": folder.name, "sha": sha, "local_path": str(folder), "local_sha": sha})
        yield CheckpointRecord(checkpoint_id, columns, owned_columns=self.folder_owned, edges=edges)


@hookimpl
def register_crawlers(register):  # noqa: ANN001, ANN201 - hook signature
    register(LocalCrawler)
