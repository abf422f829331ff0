"""Image probe: pre-logits features of timm models, through each model's own preprocessing.

Features are `model.forward_head(model.forward_features(x), pre_logits=True)`: the pooled
representation just before the classifier. Images are prepared by the transform timm derives from
the model's pretrained_cfg (`resolve_data_config` + `create_transform`, evaluation mode): its
resize, crop, interpolation, mean and std.

Weights come from the checkpoint's local copy (a timm folder: config.json + model.safetensors or
pytorch_model.bin) through `timm.create_model(arch, pretrained=True,
pretrained_cfg_overlay=dict(file=...))`, or, for `timm:` and `hf:` rows without one, from the Hub
by name. timm reads pickled weights with `torch.load(weights_only=True)`.

A local copy's config.json is untrusted, and what it asks for reaches timm only through allow-lists:
the architecture must be a plain timm model name (no `hf-hub:` or `local-dir:` source), `model_args`
may hold only the arguments in MODEL_ARGUMENTS, each within its bounds, and of its pretrained_cfg
only the preprocessing and classifier fields in PRETRAINED_CFG_FIELDS pass, bounded too (where the
weights come from is always the folder's own weight file). Anything else is a recorded
`unsafe-config` failure naming the key; the folder itself must pass `checkpoint_files.check_loadable`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hubindex import hookimpl
from hubindex.types import IMAGE, CorpusData, ExampleOutput, Probe, ProbeError, ProbeOutput
from hubindex_plugins.checkpoint_files import FolderListing, UntrustedContent, check_loadable, printable
from hubindex_plugins.model_loading import free_device_memory, load_error

# Weight files of a timm folder, in the order timm itself prefers them.
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# A timm model name with an optional pretrained tag: what timm's registry holds, and nothing that
# names a source to load from (`hf-hub:ORG/NAME`, `local-dir:/path`).
TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")
# Bounds on what a config.json may ask of timm: above every real checkpoint (timm's registry tops out
# at 115,217 classes, 1024-pixel inputs and 3 channels), far below what exhausts memory.
MAX_CLASSES = 200_000
MAX_CHANNELS = 16
MAX_IMAGE_SIDE = 2048


@dataclass(frozen=True)
class ValueRule:
    """What a value from a checkpoint's config must be: a check, and the same in words for the failure."""

    accepts: Callable[[Any], bool]
    expected: str


def _whole(low: int, high: int) -> ValueRule:
    return ValueRule(lambda v: type(v) is int and low <= v <= high, f"an integer in {low:,}..{high:,}")


def _number(low: float, high: float) -> ValueRule:
    return ValueRule(lambda v: (type(v) is int or (type(v) is float and math.isfinite(v))) and low <= v <= high,
                     f"a number in {low:g}..{high:g}")


def _choice(*options: str) -> ValueRule:
    return ValueRule(lambda v: isinstance(v, str) and v in options, "one of " + ", ".join(options))


def _each(rule: ValueRule, lengths: range) -> ValueRule:
    """A list of values that each pass rule, as many as lengths allows."""
    count = f"{lengths.start}" if len(lengths) == 1 else f"{lengths.start}..{lengths.stop - 1}"
    return ValueRule(lambda v: isinstance(v, list) and len(v) in lengths and all(rule.accepts(x) for x in v),
                     f"a list of {count} values, each {rule.expected}")


def _either(first: ValueRule, second: ValueRule) -> ValueRule:
    return ValueRule(lambda v: first.accepts(v) or second.accepts(v), f"{first.expected}, or {second.expected}")


_SIDE = _whole(1, MAX_IMAGE_SIDE)
_CHANNELS = _whole(1, MAX_CHANNELS)
_LAYER_NAME = ValueRule(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.]{1,200}", v) is not None,
                        "a layer name")
_INPUT_SIZE = ValueRule(
    lambda v: isinstance(v, list) and len(v) == 3 and _CHANNELS.accepts(v[0])
    and _SIDE.accepts(v[1]) and _SIDE.accepts(v[2]),
    f"[channels 1..{MAX_CHANNELS}, height, width] with sides in 1..{MAX_IMAGE_SIDE:,}",
)
_DROP_RATE = _number(0, 1)

# The timm.create_model arguments a checkpoint's config.json may set (in `model_args`, or num_classes at
# its top level). Not on it: checkpoint_path, pretrained_cfg(_overlay), cache_dir and every other
# argument that names a file or a source, and everything else unknown.
MODEL_ARGUMENTS: dict[str, ValueRule] = {
    "num_classes": _whole(0, MAX_CLASSES),
    "in_chans": _CHANNELS,
    "img_size": _either(_SIDE, _each(_SIDE, range(2, 3))),
    "global_pool": ValueRule(lambda v: isinstance(v, str) and re.fullmatch(r"[a-z_]{0,32}", v) is not None,
                             "a pooling name (lowercase letters and _)"),
    "drop_rate": _DROP_RATE,
    "drop_path_rate": _DROP_RATE,
    "attn_drop_rate": _DROP_RATE,
    "proj_drop_rate": _DROP_RATE,
    "pos_drop_rate": _DROP_RATE,
    "patch_drop_rate": _DROP_RATE,
    "drop_block_rate": _DROP_RATE,
}
# The pretrained_cfg fields timm is given: preprocessing and classifier layout. The others are left out:
# where weights come from (url, file, hf_hub_id, state_dict, custom_load, ...) is the folder's own weight
# file, and descriptions (license, paper, notes) change nothing.
PRETRAINED_CFG_FIELDS: dict[str, ValueRule] = {
    "input_size": _INPUT_SIZE,
    "test_input_size": _INPUT_SIZE,
    "min_input_size": _INPUT_SIZE,
    "fixed_input_size": ValueRule(lambda v: type(v) is bool, "true or false"),
    "interpolation": _choice("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming", "random"),
    # Images are resized to size / crop_pct before the crop: a small crop_pct is a huge image.
    "crop_pct": _number(0.5, 2),
    "test_crop_pct": _number(0.5, 2),
    "crop_mode": _choice("center", "squash", "border"),
    "mean": _each(_number(-1000, 1000), range(1, MAX_CHANNELS + 1)),
    "std": _each(_number(1e-6, 1000), range(1, MAX_CHANNELS + 1)),
    "num_classes": _whole(0, MAX_CLASSES),
    "label_offset": _whole(0, 16),
    "pool_size": _each(_SIDE, range(2, 3)),
    "test_pool_size": _each(_SIDE, range(2, 3)),
    "first_conv": _either(_LAYER_NAME, _each(_LAYER_NAME, range(1, 17))),
    "classifier": _either(_LAYER_NAME, _each(_LAYER_NAME, range(1, 17))),
}


def _shown(value: Any) -> str:
    """A config value in a failure message: its JSON, shortened."""
    text = json.dumps(value, default=str)
    return printable(text if len(text) <= 80 else text[:77] + "...")


def model_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """The timm.create_model arguments config.json asks for (its `model_args`, then num_classes at its top
    level), each on MODEL_ARGUMENTS and within bounds; ProbeError('unsafe-config') naming the first that is not."""
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise ProbeError("unsafe-config", f"config.json model_args is {_shown(model_args)}, not an object")
    requested = [(f"model_args {key}", key, value) for key, value in model_args.items()]
    requested.append(("num_classes", "num_classes", config.get("num_classes")))
    arguments: dict[str, Any] = {}
    for where, key, value in requested:
        if value is None:  # timm drops None arguments itself
            continue
        rule = MODEL_ARGUMENTS.get(key)
        if rule is None:
            raise ProbeError("unsafe-config", f"config.json {printable(where)} is not an argument a checkpoint may "
                                              f"give timm (allowed: {', '.join(sorted(MODEL_ARGUMENTS))})")
        if not rule.accepts(value):
            raise ProbeError("unsafe-config", f"config.json {where} is {_shown(value)}; it must be {rule.expected}")
        arguments[key] = value
    return arguments


def pretrained_cfg_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """The PRETRAINED_CFG_FIELDS of a pretrained_cfg, each within bounds; ProbeError('unsafe-config') naming the
    first that is not."""
    fields: dict[str, Any] = {}
    for key, rule in PRETRAINED_CFG_FIELDS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if not rule.accepts(value):
            raise ProbeError("unsafe-config", f"pretrained_cfg {key} is {_shown(value)}; it must be {rule.expected}")
        fields[key] = value
    return fields


def read_json(value: Any) -> dict[str, Any]:
    """A JSON object from the catalog (text) or a config file's dict; {} for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return {}
    return value if isinstance(value, dict) else {}


def weights_file(listing: FolderListing) -> Path:
    """The weight file of a timm checkpoint folder (safetensors first)."""
    for name in WEIGHT_NAMES:
        path = listing.top_level(name)
        if path is not None:
            return path
    found = sorted(p for p in listing.files if p.parent == listing.folder and p.name.endswith(WEIGHT_SUFFIXES))
    found.sort(key=lambda p: not p.name.endswith(".safetensors"))
    if not found:
        raise ProbeError("no-weights", f"no weight file ({', '.join(WEIGHT_SUFFIXES)}) in {listing.folder}")
    return found[0]


def architecture(checkpoint: dict[str, Any], config: dict[str, Any], pretrained_cfg: dict[str, Any]) -> str | None:
    """The timm architecture name: from config.json, the pretrained_cfg, or the catalog row."""
    for value in (config.get("architecture"), pretrained_cfg.get("architecture"), checkpoint.get("model_type")):
        if isinstance(value, str) and value:
            return value
    return None


class TimmImageProbe(Probe):
    """Pre-logits features of a timm model on an image corpus, with the model's own preprocessing."""

    name = "timm-image"
    version = "1"
    description = "timm models: pre-logits features, the model's own preprocessing"
    modality = IMAGE
    layer = "last"
    pooling = "pre-logits"
    example_pooling = "pre-logits"
    default_batch_size = 32

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        if checkpoint.get("library_name") != "timm":
            return False
        return bool(checkpoint.get("local_path")) or checkpoint["checkpoint_id"].startswith(("timm:", "hf:"))

    def model_spec(self, checkpoint: dict[str, Any], timm: Any) -> tuple[str, dict[str, Any]]:
        """(name, kwargs) for timm.create_model: a local timm folder's weights file, else the Hub by name."""
        checkpoint_id = checkpoint["checkpoint_id"]
        local = checkpoint.get("local_path")
        if not local:
            if checkpoint_id.startswith("timm:"):
                return checkpoint_id[len("timm:"):], {"pretrained": True}
            return f"hf-hub:{checkpoint_id[len('hf:'):]}", {"pretrained": True}
        folder = Path(local)
        if not folder.is_dir():
            raise ProbeError("not-found", f"local copy {local} is gone; run `hubindex crawl local` again")
        listing = check_loadable(folder)
        config_path = listing.top_level("config.json")
        try:
            config = read_json(listing.read_json(config_path)) if config_path else {}
        except UntrustedContent as exc:
            raise ProbeError(exc.kind, str(exc)) from exc
        cfg = read_json(config.get("pretrained_cfg")) or read_json(checkpoint.get("pretrained_cfg"))
        arch = architecture(checkpoint, config, cfg)
        if arch is None:
            raise ProbeError("unsupported", f"no timm architecture named in {folder}/config.json or the catalog")
        if not TIMM_NAME.fullmatch(arch):
            raise ProbeError("unsafe-config", f"architecture {_shown(arch)} is not a timm model name "
                                              "(a name and an optional .tag; no source or path)")
        if not timm.is_model(arch):
            raise ProbeError("unsupported", f"architecture {arch!r} is not one the installed timm has")
        kwargs = model_arguments(config)
        kwargs.update(
            pretrained=True,
            pretrained_cfg=pretrained_cfg_fields(cfg) or None,
            # `file` outranks the Hub id in the cfg; source None undoes a cfg saying 'hf-hub'.
            pretrained_cfg_overlay=dict(file=str(weights_file(listing)), source=None),
        )
        return arch, kwargs

    def create_model(self, checkpoint: dict[str, Any]) -> Any:
        """The timm model with its weights loaded, in eval mode on the device."""
        from hubindex.torch_compat import import_timm

        timm = import_timm()
        try:
            name, kwargs = self.model_spec(checkpoint, timm)
        except OSError as exc:
            raise ProbeError("load-error", f"cannot read {exc.filename}: {exc.strerror}") from exc
        try:
            model = timm.create_model(name, **kwargs)
        except Exception as exc:
            raise load_error(exc) from exc
        import torch

        return model.to(self.device, dtype=getattr(torch, self.dtype_for(checkpoint))).eval()

    def embed(self, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeOutput:
        from hubindex.torch_compat import import_timm

        timm = import_timm()
        model = self.create_model(checkpoint)
        try:
            data_config = timm.data.resolve_data_config(model=model)
            transform = timm.data.create_transform(**data_config, is_training=False)
            features, _ = self.features(model, transform, corpus.items)
        finally:
            del model
            free_device_memory(self.device)
        return ProbeOutput(features, np.zeros(len(features), dtype=bool))

    def embed_examples(self, checkpoint: dict[str, Any], items: list[Any]) -> ExampleOutput:
        """Pre-logits features of each image, and the softmax of the model's classifier when it has one."""
        from hubindex.torch_compat import import_timm

        timm = import_timm()
        model = self.create_model(checkpoint)
        try:
            data_config = timm.data.resolve_data_config(model=model)
            transform = timm.data.create_transform(**data_config, is_training=False)
            with_head = getattr(model, "num_classes", 0) > 0
            features, probs = self.features(model, transform, items, with_head=with_head)
        finally:
            del model
            free_device_memory(self.device)
        return ExampleOutput(features, probs)

    def features(self, model: Any, transform: Any, images: list[Any],
                 with_head: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(pre-logits features of the images in order, softmax of the classifier if with_head else None)."""
        import torch

        rows, probs = [], []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([transform(image) for image in images[start : start + self.batch_size]])
            try:
                with torch.inference_mode():
                    trunk = model.forward_features(batch.to(self.device, dtype=next(model.parameters()).dtype))
                    out = model.forward_head(trunk, pre_logits=True)
                    if with_head:
                        probs.append(torch.softmax(model.forward_head(trunk).float(), dim=-1).cpu().numpy())
            except Exception as exc:
                raise ProbeError("forward-error", f"{type(exc).__name__}: {exc}") from exc
            rows.append(out.flatten(1).float().cpu().numpy())
        features = np.concatenate(rows).astype(np.float32, copy=False)
        return features, (np.concatenate(probs) if with_head else None)


@hookimpl
def register_probes(register):  # noqa: ANN001, ANN201 - hook signature
    register(TimmImageProbe)
