"""The files of a checkpoint folder, which are untrusted: listed, contained and read with limits.

A local copy is untrusted: before anything in it is read or loaded, its files are listed
(`list_folder`) and each one's resolved path must lie inside the folder - or, for a Hugging Face
cache snapshot (`models--ORG--NAME/snapshots/<commit>/`), inside that repo's `blobs/`. The crawler
reads a folder only through its listing; the probes load a folder only after `check_loadable`
found no entry leading outside, no special file, and no file name in the JSON files transformers
reads names from (weight indexes, `fast_tokenizer_files`, `configuration_files`) leading outside.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hubindex.types import ProbeError

# Limits on the untrusted content of a checkpoint folder.
MAX_FOLDER_ENTRIES = 10_000  # files and folders under one checkpoint, recursively
MAX_JSON_BYTES = 16 * 1024 * 1024  # one config, tokenizer config or weight index (large real indexes take ~10 MB)
MAX_JSON_DEPTH = 64  # arrays and objects inside each other; real configs stay under 10
# The JSON files at a folder's top level that transformers reads other files' names from, and the fields
# that name them: a weight index's shards, versioned tokenizer files, versioned config files.
NAMING_FILES = ("config.json", "tokenizer_config.json")
NAMING_SUFFIX = ".index.json"
NAMING_FIELDS = ("weight_map", "fast_tokenizer_files", "configuration_files")


class UntrustedContent(Exception):
    """Content of a checkpoint folder that is refused rather than read; kind says why (unsafe-path, bad-config, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def containment_roots(folder: Path) -> tuple[Path, ...]:
    """The resolved folders a checkpoint folder's files may lead into: the folder itself, and for a
    Hugging Face cache snapshot its repo's blobs/ (where huggingface_hub's snapshot links point)."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        repo = folder.parent.parent.resolve()
        return repo / "snapshots" / folder.name, repo / "blobs"
    return (folder.resolve(),)


@dataclass(frozen=True)
class FolderListing:
    """A checkpoint folder's entries: the regular files that may be opened, and those refused, with why."""

    folder: Path
    roots: tuple[Path, ...]
    files: tuple[Path, ...]  # in the folder, hidden ones included; a folder's files before its sub-folders'
    refused: tuple[str, ...]  # "relative/name: why" for links leading outside and special files

    def name(self, path: Path) -> str:
        """path relative to the folder, as text that can always be stored and printed."""
        return printable(path.relative_to(self.folder).as_posix())

    def top_level(self, name: str) -> Path | None:
        """The file `name` at the folder's top level, if it is one that may be opened."""
        path = self.folder / name
        return path if path in self.files else None

    def target(self, path: Path) -> Path:
        """The resolved file a listed path leads to, checked again now: the folder may have changed since."""
        target = path.resolve()
        if not any(target.is_relative_to(root) for root in self.roots):
            raise UntrustedContent("unsafe-path", f"{self.name(path)} now leads outside the checkpoint")
        return target

    def open(self, path: Path) -> BinaryIO:
        """A listed file opened for reading, at its checked target."""
        return self.target(path).open("rb")

    def read_text(self, path: Path, limit: int, encoding: str = "utf-8") -> str:
        """A listed file's text: UntrustedContent('bad-config') when over `limit` bytes or not in the encoding."""
        with self.open(path) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise UntrustedContent("bad-config", f"{self.name(path)} is larger than {limit:,} bytes")
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise UntrustedContent("bad-config", f"{self.name(path)} is not UTF-8 text ({exc.reason} "
                                                 f"at byte {exc.start})") from exc

    def read_json(self, path: Path) -> Any:
        """A listed JSON file, parsed: UntrustedContent('bad-config') when too large, not UTF-8, not JSON
        or nested deeper than MAX_JSON_DEPTH."""
        text = self.read_text(path, MAX_JSON_BYTES)
        try:
            value = json.loads(text)
        except RecursionError as exc:  # the parser's own limit, far past MAX_JSON_DEPTH
            raise UntrustedContent("bad-config", f"{self.name(path)} is nested deeper than "
                                                 f"{MAX_JSON_DEPTH} levels") from exc
        except ValueError as exc:
            raise UntrustedContent("bad-config", f"{self.name(path)} is not JSON ({exc})") from exc
        if json_depth(value) > MAX_JSON_DEPTH:
            raise UntrustedContent("bad-config", f"{self.name(path)} is nested deeper than {MAX_JSON_DEPTH} levels")
        return value


def printable(text: str) -> str:
    """text with the undecodable bytes of a file name (surrogate escapes) written as \\xNN: storable UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _refusal(path: Path, roots: tuple[Path, ...]) -> tuple[str | None, int]:
    """(why the entry may not be opened or None, its st_mode - 0 for a link to nothing)."""
    if path.is_symlink():
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a loop of links
            return "a link that cannot be resolved", 0
        if not any(target.is_relative_to(root) for root in roots):
            return "a link leading outside the checkpoint", 0
        try:
            mode = target.stat().st_mode
        except FileNotFoundError:
            return None, 0  # a link to nothing: nothing can be read through it
        if stat.S_ISDIR(mode) and not target.is_relative_to(roots[0]):
            return "a link to a folder outside the checkpoint folder", 0
    else:
        mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file (reading it could block or never end)", mode
    return None, mode


def list_folder(folder: Path) -> FolderListing:
    """Every entry under a checkpoint folder, hidden ones included, sorted into files that may be opened and
    entries that may not: links whose targets lie outside `containment_roots`, and special files.

    Linked folders are not descended into (what they lead to inside the folder is listed where it
    is). Files come in the order `os.walk` gives them, each folder's names sorted, so content
    hashes over them stay what they were. UntrustedContent('too-many-files') past MAX_FOLDER_ENTRIES.
    """
    roots = containment_roots(folder)
    files: list[Path] = []
    refused: list[str] = []
    entries = 0
    pending = [folder]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as scan:
            names = sorted(entry.name for entry in scan)
        entries += len(names)
        if entries > MAX_FOLDER_ENTRIES:
            raise UntrustedContent("too-many-files", f"more than {MAX_FOLDER_ENTRIES:,} files and folders")
        folders = []
        for name in names:
            path = directory / name
            why, mode = _refusal(path, roots)
            if why is not None:
                refused.append(f"{printable(path.relative_to(folder).as_posix())}: {why}")
            elif stat.S_ISREG(mode):
                files.append(path)
            elif stat.S_ISDIR(mode) and not path.is_symlink():
                folders.append(path)
        pending.extend(reversed(folders))  # depth first, in name order, as os.walk goes
    return FolderListing(folder, roots, tuple(files), tuple(refused))


def _named_files(value: Any) -> list[Any]:
    """The file names a parsed naming file gives in its NAMING_FIELDS."""
    if not isinstance(value, dict):
        return []
    names: list[Any] = []
    for field in NAMING_FIELDS:
        named = value.get(field)
        names += list(named.values()) if isinstance(named, dict) else named if isinstance(named, list) else [named]
    return [name for name in names if name is not None]


def check_loadable(folder: Path) -> FolderListing:
    """The folder's listing, once nothing a loader could open through it leads outside the checkpoint.

    Refused (ProbeError 'unsafe-path'): an entry anywhere in the folder that is a link leading
    outside or a special file, and a file name given by a weight index, a tokenizer config or a
    config that leads outside. A naming file that cannot be parsed safely is 'bad-config'.
    """
    try:
        listing = list_folder(folder)
        if listing.refused:
            more = len(listing.refused) - 3
            shown = "; ".join(listing.refused[:3]) + (f"; and {more} more" if more > 0 else "")
            raise UntrustedContent("unsafe-path", f"not loaded: {shown}")
        for path in listing.files:
            if path.parent != folder or not (path.name in NAMING_FILES or path.name.endswith(NAMING_SUFFIX)):
                continue
            for name in _named_files(listing.read_json(path)):
                if not isinstance(name, str) or not _leads_inside(folder / name, listing.roots):
                    raise UntrustedContent("unsafe-path", f"not loaded: {listing.name(path)} names "
                                                          f"{printable(str(name))[:200]!r}, outside the checkpoint")
    except UntrustedContent as exc:
        raise ProbeError(exc.kind, str(exc)) from exc
    except OSError as exc:
        raise ProbeError("load-error", f"cannot read {folder}: {exc.strerror or exc}") from exc
    return listing


def _leads_inside(path: Path, roots: tuple[Path, ...]) -> bool:
    """Whether path, with its links resolved, lies inside one of the roots."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL in the name
        return False
    return any(target.is_relative_to(root) for root in roots)
