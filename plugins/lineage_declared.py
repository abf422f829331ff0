"""Declared lineage: the parent edges that a checkpoint's own files state, for the crawlers to record.

What each source states, and the relation given to it:

- card `base_model` (a name or a list) with `base_model_relation` (adapter, merge, quantized,
  finetune): evidence `card`. With no (valid) relation in the card, the Hub's own tag
  `base_model:<relation>:<name>` gives it; else it is inferred (infer_relation), in this order:
  several base models -> merge; a quantization tag (gguf, awq, gptq, bitsandbytes, 4-bit, 8-bit,
  exl2, hqq), a `quantization_config` in the config or a .gguf file -> quantized; an
  adapter_config.json beside it -> adapter; else finetune.
- adapter_config.json `base_model_name_or_path`: evidence `adapter-config`, relation adapter.
- config.json `_name_or_path`, only when it names another repo (not a local path, not the repo
  itself): evidence `config`, relation inferred as for a card with one base model, confidence 0.6.
- a timm pretrained tag that fine-tunes another tag of the same architecture in the registry
  (`convnext_small.in12k_ft_in1k` from `convnext_small.in12k`): evidence `timm-tag`, finetune.
- a zoo manifest (hubindex_lineage.json, written by `hubindex zoo build`): evidence `manifest`;
  its `relation` maps by MANIFEST_RELATIONS (a truncated copy is neither a fine-tune nor a
  distillation - nothing was trained - so it is `unknown`, with the zoo's word in `detail`).

A name that is a well-formed Hub repo id becomes `hf:<id>` (resolved, whether or not it is crawled
yet); anything else (a local path, a URL) is kept as written, unresolved. Every value here comes from
untrusted files: a value of the wrong type states nothing.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from typing import Any

from hubindex.lineage import DECLARED_CONFIDENCE, Edge, EdgeSet
from hubindex_plugins.checkpoint_files import printable
from hubindex_plugins.crawl_hf import valid_repo_id

ADAPTER_CONFIG = "adapter_config.json"
CARD_RELATIONS = ("adapter", "merge", "quantized", "finetune")  # the Hub's base_model_relation values
QUANTIZED_TAGS = frozenset({"gguf", "awq", "gptq", "bitsandbytes", "4-bit", "8-bit", "exl2", "hqq"})
MANIFEST_RELATIONS = {
    "finetuned": "finetune", "finetune": "finetune", "adapter": "adapter", "quantized": "quantized",
    "merged": "merge", "merge": "merge", "distilled": "distillation", "distillation": "distillation",
}
# Names that look like `namespace/name` but are a training run's local folder.
LOCAL_CHECKPOINT = re.compile(r"(?:^|/)checkpoint-\d+$")
# The evidence kinds a Hub repo's files give (the Hub crawler's), beside the zoo's manifest.
HUB_EVIDENCE = frozenset({"card", "config", "adapter-config"})
MAX_NAMES = 64  # base models one card may name; a longer list is cut (no real merge has more)


def hub_parent(name: str) -> tuple[str, bool]:
    """(parent, resolved): `hf:<repo id>` for a well-formed Hub repo id, else the name as written (one line)."""
    if valid_repo_id(name) and not LOCAL_CHECKPOINT.search(name):
        return f"hf:{name}", True
    return printable(name)[:300], False


def names(value: Any) -> list[str]:
    """A card field that holds a name or a list of names, as the non-empty strings in it."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v.strip() for v in values[:MAX_NAMES] if isinstance(v, str) and v.strip()]


def infer_relation(n_parents: int, tags: Iterable[Any], config: Any, files: Iterable[str]) -> tuple[str, str]:
    """(relation, why) for base models a card names without saying how it was made from them."""
    files = list(files)
    if n_parents > 1:
        return "merge", f"inferred: {n_parents} base models"
    quant_tags = sorted(QUANTIZED_TAGS.intersection(t for t in tags if isinstance(t, str)))
    if quant_tags:
        return "quantized", f"inferred: tag {quant_tags[0]}"
    if isinstance(config, dict) and isinstance(config.get("quantization_config"), dict):
        return "quantized", "inferred: config quantization_config"
    if any(f.endswith(".gguf") for f in files):
        return "quantized", "inferred: a .gguf file"
    if ADAPTER_CONFIG in files:
        return "adapter", f"inferred: {ADAPTER_CONFIG}"
    return "finetune", "inferred: default"


def card_edges(card: Any, tags: Iterable[Any], config: Any, files: Iterable[str],
               fallback_names: Iterable[str] = ()) -> list[Edge]:
    """Edges of the card's base_model (else `fallback_names`, e.g. from the Hub's base_model tags)."""
    card = card if isinstance(card, dict) else {}
    tags = [t for t in tags if isinstance(t, str)]
    files = list(files)
    bases = names(card.get("base_model")) or list(fallback_names)
    stated = card.get("base_model_relation")
    edges = []
    for name in bases:
        parent, resolved = hub_parent(name)
        tagged = [r for r in CARD_RELATIONS if f"base_model:{r}:{name}" in tags]
        if isinstance(stated, str) and stated in CARD_RELATIONS:
            relation, why = stated, f"card base_model_relation: {stated}"
        elif tagged:
            relation, why = tagged[0], f"Hub tag base_model:{tagged[0]}"
        else:
            relation, why = infer_relation(len(bases), tags, config, files)
            if stated is not None:
                why += f" (card base_model_relation {printable(str(stated))[:40]!r} is not one of {CARD_RELATIONS})"
        edges.append(Edge(parent, relation, "card", DECLARED_CONFIDENCE["card"], resolved, why))
    return edges


def adapter_config_edges(adapter_config: Any) -> list[Edge]:
    """The edge adapter_config.json's base_model_name_or_path states (local paths stay unresolved)."""
    if not isinstance(adapter_config, dict):
        return []
    name = adapter_config.get("base_model_name_or_path")
    if not isinstance(name, str) or not name.strip():
        return []
    parent, resolved = hub_parent(name.strip())
    peft_type = adapter_config.get("peft_type")
    detail = f"{ADAPTER_CONFIG} base_model_name_or_path" + (
        f" ({printable(peft_type)[:40]})" if isinstance(peft_type, str) else "")
    return [Edge(parent, "adapter", "adapter-config", DECLARED_CONFIDENCE["adapter-config"], resolved, detail)]


def config_edges(config: Any, own_repo_id: str | None, tags: Iterable[Any], files: Iterable[str]) -> list[Edge]:
    """The edge config.json's `_name_or_path` suggests, when it names another Hub repo."""
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    if not isinstance(name, str):
        return []
    name = name.strip()
    parent, resolved = hub_parent(name)
    if not resolved or (own_repo_id is not None and name.lower() == own_repo_id.lower()):
        return []  # a local path or the repo itself says nothing about a parent
    relation, why = infer_relation(1, tags, config, files)
    return [Edge(parent, relation, "config", DECLARED_CONFIDENCE["config"], True,
                 f"config.json _name_or_path; relation {why}")]


def hub_edge_set(card: Any, tags: Iterable[Any], config: Any, files: Iterable[str], own_repo_id: str,
                 adapter_config: Any = None, adapter_read: bool = False, fallback_names: Iterable[str] = ()) -> EdgeSet:
    """All the declared edges of a Hub repo (or a copy of one), as the set its crawler records.

    adapter_read says whether an adapter_config.json was read: when the repo has one that could not
    be read, its stored adapter-config edges are left as they were.
    """
    tags, files = list(tags), list(files)
    edges = card_edges(card, tags, config, files, fallback_names)
    edges += config_edges(config, own_repo_id, tags, files)
    kinds = {"card", "config"}
    if adapter_read or ADAPTER_CONFIG not in files:
        edges += adapter_config_edges(adapter_config)
        kinds.add("adapter-config")
    return EdgeSet.of(edges, kinds)


def timm_parent(name: str, registry: Container[str]) -> str | None:
    """The registry name whose weights a timm tag says this one was fine-tuned from, or None.

    A tag reads as training stages: `mim_in22k_ft_in22k_in1k` is MIM on in22k, fine-tuned on in22k,
    then on in1k. The parent is the stages before the last one (`mim_in22k_ft_in22k`), else what came
    before `_ft_` (`mim_in22k`), when the registry holds that tag for the same architecture; a
    resolution suffix (`_384`) is not a stage.
    """
    architecture, _, tag = name.partition(".")
    base = re.sub(r"_\d+$", "", tag)
    if "_ft_" not in base:
        return None
    upstream, _, finetunes = base.rpartition("_ft_")
    stages = finetunes.split("_")
    candidates = ([f"{upstream}_ft_{'_'.join(stages[:-1])}"] if len(stages) > 1 else []) + [upstream]
    for candidate in candidates:
        parent = f"{architecture}.{candidate}"
        if candidate != tag and parent in registry:
            return parent
    return None


def timm_edge_set(name: str, registry: Container[str]) -> EdgeSet:
    """The timm-tag edge of a registry name (none when its tag fine-tunes nothing in the registry)."""
    parent = timm_parent(name, registry)
    edges = [] if parent is None else [Edge(
        f"timm:{parent}", "finetune", "timm-tag", DECLARED_CONFIDENCE["timm-tag"], True,
        f"tag {name.partition('.')[2]} fine-tunes {parent.partition('.')[2]}")]
    return EdgeSet.of(edges, ["timm-tag"])


def manifest_edges(manifest: Any) -> list[Edge]:
    """The edge a zoo manifest (hubindex_lineage.json) states: its parent and how the member was made."""
    if not isinstance(manifest, dict):
        return []
    parent_name = manifest.get("parent")
    made = manifest.get("relation")
    if not isinstance(parent_name, str) or not parent_name.strip():
        return []
    parent, resolved = hub_parent(parent_name.strip())
    made = made if isinstance(made, str) else "unstated"
    relation = MANIFEST_RELATIONS.get(made, "unknown")
    return [Edge(parent, relation, "manifest", DECLARED_CONFIDENCE["manifest"], resolved,
                 f"zoo manifest relation: {printable(made)[:40]}")]
