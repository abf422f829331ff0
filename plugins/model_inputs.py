"""What a checkpoint's model takes as input, read from what it is - not only from its card.

A Hub card's `pipeline_tag` is often missing (the Hub infers it) and names one use of a model,
not what it takes: CLIP's `zero-shot-image-classification` model takes text *and* images. So the
probes route a checkpoint by, in order of trust:

1. its config's `model_type`, looked up in transformers' own auto-model tables (the model types
   that `AutoModelForImageClassification`, `AutoModelForMaskedLM`, ... accept);
2. the class names in its config's `architectures` (e.g. `ViTForImageClassification`), mapped to
   a model type through the same tables;
3. the card's `pipeline_tag`, when the config says nothing.

The answer (`ModelInputs`) says which modalities the model takes (`text`, `image`, both for dual
encoders such as CLIP and SigLIP, none) and, when none, why in words. Model types transformers does
not know (custom code behind `auto_map`) take nothing here: remote code is never run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hubindex.types import IMAGE, TEXT

# Libraries whose checkpoints load with transformers' Auto classes (None: the card does not say).
TRANSFORMERS_LIBRARIES = frozenset({"transformers", "sentence-transformers", None})

# transformers' auto-model tables, by what the models in them take.
_DUAL_TABLES = ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",)
_AUDIO_TABLES = (
    "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES", "MODEL_FOR_CTC_MAPPING_NAMES", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES", "MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES",
)
_VISION_LANGUAGE_TABLES = ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES")
_IMAGE_TABLES = (
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_MAPPING_NAMES",
    "MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING_NAMES", "MODEL_FOR_BACKBONE_MAPPING_NAMES",
)
_TEXT_TABLES = (
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
    "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
)

# Card pipeline tags, for checkpoints whose config says nothing.
TEXT_PIPELINES = frozenset({
    "fill-mask", "feature-extraction", "sentence-similarity", "text-classification", "token-classification",
    "text-generation", "text2text-generation", "question-answering", "summarization", "translation",
    "zero-shot-classification", "table-question-answering", "text-ranking",
})
IMAGE_PIPELINES = frozenset({"image-classification", "image-feature-extraction"})
DUAL_PIPELINES = frozenset({"zero-shot-image-classification"})


@dataclass(frozen=True)
class ModelInputs:
    """The modalities a checkpoint's model takes, and why it takes none when it takes none."""

    modalities: frozenset[str]
    reason: str = ""


@dataclass(frozen=True)
class _Tables:
    dual: frozenset[str]
    audio: frozenset[str]
    vision_language: frozenset[str]
    image: frozenset[str]
    text: frozenset[str]
    known: frozenset[str]  # every model type transformers has a config class for
    type_of_class: dict[str, str]  # model class name -> model type


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    from hubindex.torch_compat import ensure_torchvision

    ensure_torchvision()
    from transformers.models.auto import configuration_auto, modeling_auto

    def union(names: tuple[str, ...]) -> frozenset[str]:
        return frozenset(key for name in names for key in getattr(modeling_auto, name, {}))

    type_of_class: dict[str, str] = {}
    for name in dir(modeling_auto):
        table = getattr(modeling_auto, name)
        if name.endswith("_MAPPING_NAMES") and hasattr(table, "items"):
            for model_type, classes in table.items():
                for cls in (classes,) if isinstance(classes, str) else classes:
                    type_of_class.setdefault(str(cls), model_type)
    return _Tables(
        dual=union(_DUAL_TABLES), audio=union(_AUDIO_TABLES), vision_language=union(_VISION_LANGUAGE_TABLES),
        image=union(_IMAGE_TABLES), text=union(_TEXT_TABLES),
        known=frozenset(configuration_auto.CONFIG_MAPPING_NAMES), type_of_class=type_of_class,
    )


def _model_type(checkpoint: dict[str, Any], tables: _Tables) -> str | None:
    """The transformers model type: the config's, else the one its architectures' classes belong to."""
    model_type = checkpoint.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    for cls in checkpoint.get("architectures") or []:
        if str(cls) in tables.type_of_class:
            return tables.type_of_class[str(cls)]
    return None


def _says_image(checkpoint: dict[str, Any]) -> bool:
    """Whether the config's architecture names are of an image model (for types in both tables)."""
    return any(word in str(cls) for cls in checkpoint.get("architectures") or [] for word in ("Image", "Vision"))


def transformers_inputs(checkpoint: dict[str, Any]) -> ModelInputs:
    """What a transformers checkpoint (a catalog row) takes; no modalities, with a reason, if nothing a probe runs."""
    library = checkpoint.get("library_name")
    if library not in TRANSFORMERS_LIBRARIES:
        return ModelInputs(frozenset(), f"library {library!r} is not loaded with transformers")
    tables = _tables()
    model_type = _model_type(checkpoint, tables)
    if model_type is None:
        pipeline = checkpoint.get("pipeline_tag")
        if library is None and pipeline is None:
            return ModelInputs(frozenset(), "no config.json model_type, architectures, library or pipeline tag")
        if pipeline in DUAL_PIPELINES:
            return ModelInputs(frozenset({TEXT, IMAGE}))
        if pipeline in IMAGE_PIPELINES:
            return ModelInputs(frozenset({IMAGE}))
        if pipeline in TEXT_PIPELINES:
            return ModelInputs(frozenset({TEXT}))
        return ModelInputs(frozenset(), f"no config.json model_type, and pipeline tag {pipeline!r} takes no text or images")
    if model_type not in tables.known:
        return ModelInputs(frozenset(), f"model_type {model_type!r} is not part of transformers "
                                        "(custom code, which is never run)")
    if model_type in tables.dual:
        return ModelInputs(frozenset({TEXT, IMAGE}))
    if model_type in tables.audio:
        return ModelInputs(frozenset(), f"model_type {model_type!r} takes audio; no audio probe is installed")
    if model_type in tables.vision_language:
        return ModelInputs(frozenset(), f"model_type {model_type!r} is a vision-language generator; "
                                        "no probe for it is installed")
    image, text = model_type in tables.image, model_type in tables.text
    if image and (not text or _says_image(checkpoint)):
        return ModelInputs(frozenset({IMAGE}))
    if text:
        return ModelInputs(frozenset({TEXT}))
    return ModelInputs(frozenset(), f"model_type {model_type!r} takes neither text nor images as a probe gives them")


def has_hub_or_local_copy(checkpoint: dict[str, Any]) -> bool:
    """Whether the weights can be loaded: a local copy, or a Hugging Face repo id."""
    return bool(checkpoint.get("local_path")) or str(checkpoint.get("checkpoint_id", "")).startswith("hf:")
