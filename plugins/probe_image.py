"""Image probe: pre-logits features of timm models, through each model's own preprocessing.

Features are `model.forward_head(model.forward_features(x), pre_logits=True)`: the pooled
representation just before the classifier. Images are prepared by the transform timm derives from
the model's pretrained_cfg (`resolve_data_config` + `create_transform`, evaluation mode): its
resize, crop, interpolation, mean and std.

Weights come from the checkpoint's local copy (a timm folder: config.json + model.safetensors or
pytorch_model.bin) through `timm.create_model(arch, pretrained=True,
pretrained_cfg_overlay=dict(file=...))`, or, for `timm:` and `hf:` rows without one, from the Hub
by name. timm reads pickled weights with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import IMAGE, CorpusData, ExampleOutput, Probe, ProbeError, ProbeOutput
from hubindex_plugins.model_loading import free_device_memory, load_error

# Weight files of a timm folder, in the order timm itself prefers them.
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def read_json(value: Any) -> dict[str, Any]:
    """A JSON object from the catalog (text) or a config file's dict; {} for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def weights_file(folder: Path) -> Path:
    """The weight file of a timm checkpoint folder (safetensors first)."""
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    found.sort(key=lambda p: not p.name.endswith(".safetensors"))
    if not found:
        raise ProbeError("no-weights", f"no weight file ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
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
        config = read_json((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        cfg = read_json(config.get("pretrained_cfg")) or read_json(checkpoint.get("pretrained_cfg"))
        arch = architecture(checkpoint, config, cfg)
        if arch is None:
            raise ProbeError("unsupported", f"no timm architecture named in {folder}/config.json or the catalog")
        fields = {f.name for f in dataclasses.fields(timm.models.PretrainedCfg)}
        kwargs: dict[str, Any] = dict(read_json(config.get("model_args")))
        if isinstance(config.get("num_classes"), int):
            kwargs["num_classes"] = config["num_classes"]
        kwargs.update(
            pretrained=True,
            pretrained_cfg={k: v for k, v in cfg.items() if k in fields} or None,
            # `file` outranks the Hub id in the cfg; source None undoes a cfg saying 'hf-hub'.
            pretrained_cfg_overlay=dict(file=str(weights_file(folder)), source=None),
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
