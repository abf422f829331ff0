"""Image probe for transformers vision models and the vision towers of dual encoders.

Images are prepared by the checkpoint's own image processor (`AutoImageProcessor`: its resize,
crop, rescale and normalisation). A checkpoint's features are its family's own image
representation (pooling `family-pooled`):

| the model gives | features | families (examples) |
|---|---|---|
| a pooler output, from a pooler without a dense layer | the pooler output | BEiT, data2vec-vision (mean of patch tokens + layer norm); ConvNeXt, Swin, LeViT (mean of tokens or of the feature map, normalised); ResNet, RegNet, EfficientNet, MobileViT (global average pool); DINOv2 (CLS after the final layer norm); CLIP (CLS after post-layer norm) and SigLIP (attention-pooling head) vision towers |
| token states and a class token, with a dense pooler or none | the CLS token of the last hidden state | ViT, DeiT (their pooler is a dense layer that their classifiers do not read and that fine-tuned checkpoints do not have) |
| token states without a class token | the mean over tokens | |
| a feature map | the mean over its positions | |

Dual encoders (CLIP, SigLIP, ...) are probed through their vision model; their text side goes to
the text probe. For task scoring, a checkpoint with an image-classification head also gives the
softmax of that head (for LEEP and NCE).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import IMAGE, CorpusData, ExampleOutput, Probe, ProbeError, ProbeOutput
from hubindex_plugins.model_inputs import has_hub_or_local_copy, transformers_inputs
from hubindex_plugins.model_loading import free_device_memory, load_with_preprocessor


def has_image_classification_head(checkpoint: dict[str, Any]) -> bool:
    """Whether the checkpoint's config names an image-classification architecture."""
    return any(str(a).endswith("ForImageClassification") for a in checkpoint.get("architectures") or [])


def vision_tower(model: Any) -> Any:
    """The part of a model that reads images: a dual encoder's vision model, else the model itself."""
    if hasattr(model, "text_model") and hasattr(model, "vision_model"):
        return model.vision_model
    return model


def _has_dense_pooler(model: Any) -> bool:
    import torch

    pooler = getattr(model, "pooler", None)
    return isinstance(pooler, torch.nn.Module) and any(isinstance(m, torch.nn.Linear) for m in pooler.modules())


def _has_class_token(model: Any) -> bool:
    return getattr(getattr(model, "embeddings", None), "cls_token", None) is not None


def family_pooled(model: Any, output: Any) -> Any:
    """(batch, dim) features from a vision model's output, as the module docstring's table says."""
    pooler_output = getattr(output, "pooler_output", None)
    if pooler_output is not None and not _has_dense_pooler(model):
        return pooler_output.flatten(1)
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        raise ProbeError("unsupported", f"{type(model).__name__} returns neither a pooler output nor hidden states")
    if hidden.dim() == 3:
        return hidden[:, 0] if _has_class_token(model) else hidden.mean(dim=1)
    if hidden.dim() == 4:
        return hidden.mean(dim=(2, 3))
    raise ProbeError("unsupported", f"{type(model).__name__} gives hidden states of shape {tuple(hidden.shape)}")


class TransformersImageProbe(Probe):
    """Image features of transformers vision models and dual encoders' vision towers, as each family pools them."""

    name = "transformers-image"
    version = "1"
    description = "transformers vision models and vision towers: the family's pooled image features"
    modality = IMAGE
    layer = "last"
    pooling = "family-pooled"
    example_pooling = "family-pooled"
    default_batch_size = 32

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        return IMAGE in transformers_inputs(checkpoint).modalities and has_hub_or_local_copy(checkpoint)

    def why_not(self, checkpoint: dict[str, Any]) -> str:
        return transformers_inputs(checkpoint).reason

    def load(self, checkpoint: dict[str, Any], with_head: bool = False) -> tuple[Any, Any]:
        """(model in eval mode on the device, image processor); ProbeError('load-error') if they cannot load."""
        auto = "AutoModelForImageClassification" if with_head else "AutoModel"
        return load_with_preprocessor("AutoImageProcessor", auto, checkpoint, self.dtype_for(checkpoint), self.device)

    def embed(self, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeOutput:
        model, processor = self.load(checkpoint)
        try:
            features, _ = self.features(vision_tower(model), None, processor, corpus.items)
        finally:
            del model
            free_device_memory(self.device)
        return ProbeOutput(features, np.zeros(len(features), dtype=bool))

    def embed_examples(self, checkpoint: dict[str, Any], items: list[Any]) -> ExampleOutput:
        """The family's pooled features of each image, and the softmax of its classifier when it has one."""
        with_head = has_image_classification_head(checkpoint)
        model, processor = self.load(checkpoint, with_head=with_head)
        try:
            if with_head:
                features, probs = self.features(model.base_model, model, processor, items)
            else:
                features, probs = self.features(vision_tower(model), None, processor, items)
        finally:
            del model
            free_device_memory(self.device)
        return ExampleOutput(features, probs)

    def features(self, tower: Any, classifier: Any, processor: Any,
                 images: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """(pooled features of the images in order, softmax of the classifier's logits or None)."""
        import torch

        dtype = next(tower.parameters()).dtype
        rows, probs = [], []
        for start in range(0, len(images), self.batch_size):
            try:
                pixels = processor(images=images[start : start + self.batch_size], return_tensors="pt")["pixel_values"]
                pixels = pixels.to(self.device, dtype=dtype)
                with torch.inference_mode():
                    rows.append(family_pooled(tower, tower(pixel_values=pixels)).float().cpu().numpy())
                    if classifier is not None:
                        logits = classifier(pixel_values=pixels).logits.float()
                        probs.append(torch.softmax(logits, dim=-1).cpu().numpy())
            except ProbeError:
                raise
            except Exception as exc:
                raise ProbeError("forward-error", f"{type(exc).__name__}: {exc}") from exc
        if not rows:
            raise ProbeError("unsupported", "no images to embed")
        features = np.concatenate(rows).astype(np.float32, copy=False)
        return features, (np.concatenate(probs) if classifier is not None else None)


@hookimpl
def register_probes(register):  # noqa: ANN001, ANN201 - hook signature
    register(TransformersImageProbe)
