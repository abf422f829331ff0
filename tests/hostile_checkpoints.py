"""A factory of hostile local checkpoints: tiny real models whose folders hold what an attacker would put there.

Links that lead outside the checkpoint (in plain folders and in Hugging Face cache snapshots), files
that name files outside, timm configs whose arguments reach `timm.create_model`, and config files
that are not what they claim (nested 200,000 deep, not UTF-8, too large, integers past 64 bits).
The good checkpoints they are built from are real: a tiny BertModel with its tokenizer, and timm's
`test_resnet` saved by timm's own `save_for_hf`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubindex.torch_compat import ensure_torchvision, import_timm

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "news", "bank", "market", "rose", "fell", ",", "."]
# The card an attacker links into a checkpoint: none of it may reach the catalog.
STOLEN_CARD = ("---\nlicense: stolen\nbase_model: stolen-org/stolen-model\ntags:\n- stolen\n---\n"
               "Not this checkpoint's card.\n")
# A checkpoint's own card that routes it to the text probe even when its config.json cannot be read.
TEXT_CARD = "---\npipeline_tag: feature-extraction\n---\nA tiny BERT.\n"
DEEP_JSON = "[" * 200_000


def read_files(folder: Path) -> dict[str, bytes]:
    """Every file under a folder, by relative name."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    """A folder holding these files (relative name -> bytes)."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def link(path: Path, target: Path) -> Path:
    """Make path a symbolic link to target (replacing a file there), as an attacker's folder would hold it."""
    if path.is_symlink() or path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def tiny_bert_files(folder: Path) -> dict[str, bytes]:
    """A 2-layer BertModel (safetensors) with its WordPiece tokenizer, as save_pretrained writes them."""
    ensure_torchvision()
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(folder)
    return read_files(folder)


def tiny_timm_files(folder: Path) -> dict[str, bytes]:
    """timm's test_resnet with random weights, as timm's save_for_hf writes it (config.json + model.safetensors)."""
    import torch
    from timm.models._hub import save_for_hf

    timm = import_timm()
    torch.manual_seed(1)
    save_for_hf(timm.create_model("test_resnet", pretrained=False, num_classes=10), folder, safe_serialization=True)
    return read_files(folder)


@dataclass(frozen=True)
class Templates:
    """The files of the good checkpoints every hostile one is made from."""

    bert: dict[str, bytes]
    timm: dict[str, bytes]

    @classmethod
    def build(cls, folder: Path) -> Templates:
        return cls(tiny_bert_files(folder / "bert"), tiny_timm_files(folder / "timm"))

    # Each folder's card names it, so that no two folders share a content sha (and probed features).

    def bert_folder(self, folder: Path, card: str = TEXT_CARD) -> Path:
        return write_files(folder, {**self.bert, "README.md": f"{card}{folder.name}\n".encode()})

    def timm_folder(self, folder: Path, config_changes: dict[str, Any] | None = None) -> Path:
        """A timm folder whose config.json has these top-level keys set (or replaced)."""
        config = json.loads(self.timm["config.json"]) | (config_changes or {})
        return write_files(folder, {**self.timm, "config.json": json.dumps(config).encode(),
                                    "README.md": f"{folder.name}\n".encode()})


@dataclass(frozen=True)
class Elsewhere:
    """Files outside every checkpoint, which links and names in hostile checkpoints lead to.

    Each is a working copy of what the checkpoint would need (a real config, real weights, a real
    tokenizer), so that a loader that followed the way out would succeed - and be noticed.
    """

    root: Path

    @classmethod
    def build(cls, root: Path, templates: Templates) -> Elsewhere:
        import torch
        from safetensors.torch import load_file

        write_files(root, {
            "config.json": templates.bert["config.json"],
            "README.md": STOLEN_CARD.encode(),
            "model.safetensors": templates.bert["model.safetensors"],
            "model-00001-of-00001.safetensors": templates.bert["model.safetensors"],
            "tokenizer.4.0.0.json": templates.bert["tokenizer.json"],
            "notes.txt": b"private notes\n",
            "timm.safetensors": templates.timm["model.safetensors"],
        })
        torch.save(load_file(str(root / "timm.safetensors")), root / "weights.pth")
        return cls(root)

    def file(self, name: str) -> Path:
        return self.root / name


def link_outside(folder: Path, name: str, elsewhere: Elsewhere) -> Path:
    """folder/name becomes a link to the file of the same name outside (notes.txt for any other name)."""
    target = elsewhere.file(Path(name).name)
    return link(folder / name, target if target.exists() else elsewhere.file("notes.txt"))


def name_files_outside(folder: Path, how: str, elsewhere: Elsewhere) -> None:
    """Make a checkpoint's own JSON files name files outside it, for transformers to open.

    how: 'weight-index' - model.safetensors.index.json names its shard as ../<elsewhere>/...;
    'fast-tokenizer-files' - tokenizer_config.json names a versioned tokenizer file outside.
    """
    relative = Path(os.path.relpath(elsewhere.root, folder))
    if how == "weight-index":
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="numpy") as handle:
            names = list(handle.keys())
        (folder / "model.safetensors").unlink()
        shard = (relative / "model-00001-of-00001.safetensors").as_posix()
        index = {"metadata": {}, "weight_map": {name: shard for name in names}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    elif how == "fast-tokenizer-files":
        (folder / "tokenizer.json").unlink()
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["fast_tokenizer_files"] = [(relative / "tokenizer.4.0.0.json").as_posix()]
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        raise ValueError(how)


def bad_config(kind: str) -> bytes:
    """A config.json that no parser should be trusted with: deep, non-UTF-8, too large, or not an object."""
    if kind == "deep":
        return DEEP_JSON.encode()
    if kind == "not-utf-8":
        return b'{"architecture": "test_resnet", "num_classes": 10, "notes": "\xff\xfe"}'
    if kind == "too-large":
        return b'{"architecture": "test_resnet", "padding": "' + b"x" * (16 * 1024 * 1024) + b'"}'
    if kind == "not-an-object":
        return b'["test_resnet"]'
    raise ValueError(kind)


# ------------------------------------------------------------------------------ Hugging Face caches


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cached_repo(cache: Path, repo_id: str, files: dict[str, bytes],
                outside: dict[str, Path] | None = None) -> tuple[str, Path]:
    """A repo laid out the way huggingface_hub downloads it (refs/main, blobs/, snapshot links into blobs),
    except that the snapshot's `outside` files link (relatively) to paths outside the repo folder.
    Returns (commit, snapshot folder)."""
    outside = outside or {}
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode() + b"".join(files[n] for n in sorted(files))).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    for name in sorted(set(files) | set(outside)):
        path = snapshot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in outside:
            path.symlink_to(os.path.relpath(outside[name], path.parent))
            continue
        data = files[name]
        etag = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else _git_blob_sha1(data)
        (repo / "blobs" / etag).write_bytes(data)
        path.symlink_to(os.path.relpath(repo / "blobs" / etag, path.parent))
    return commit, snapshot

