"""Routing checkpoints to probes by what they are: config, architectures, library, then card."""

from __future__ import annotations

from typing import Any

import pytest

from hubindex.probing import pick_probe, unsupported_reason
from hubindex.types import IMAGE, TEXT
from hubindex_plugins.model_inputs import transformers_inputs
from hubindex_plugins.probe_image import TimmImageProbe
from hubindex_plugins.probe_text import TransformersTextProbe
from hubindex_plugins.probe_vision import TransformersImageProbe


def _row(**columns: Any) -> dict[str, Any]:
    return {"checkpoint_id": "hf:org/model", "library_name": "transformers", **columns}


@pytest.mark.parametrize("row, modalities", [
    (_row(model_type="bert", pipeline_tag="fill-mask"), {TEXT}),
    (_row(model_type="llama", architectures=["LlamaForCausalLM"]), {TEXT}),
    (_row(model_type="t5"), {TEXT}),
    (_row(model_type="modernbert", library_name="sentence-transformers"), {TEXT}),
    (_row(model_type="vit", pipeline_tag="image-classification"), {IMAGE}),
    # The card says nothing, or something wrong: the config decides.
    (_row(model_type="dinov2"), {IMAGE}),
    (_row(model_type="convnext", pipeline_tag="feature-extraction"), {IMAGE}),
    (_row(model_type="swin", library_name=None), {IMAGE}),
    # Dual encoders take both; their card names one use.
    (_row(model_type="clip", pipeline_tag="zero-shot-image-classification"), {TEXT, IMAGE}),
    (_row(model_type="siglip"), {TEXT, IMAGE}),
    # No model_type: the architectures' classes, then the card.
    (_row(architectures=["ViTForImageClassification"]), {IMAGE}),
    (_row(architectures=["RobertaForMaskedLM"]), {TEXT}),
    (_row(pipeline_tag="image-feature-extraction"), {IMAGE}),
    (_row(pipeline_tag="sentence-similarity"), {TEXT}),
    (_row(pipeline_tag="zero-shot-image-classification"), {TEXT, IMAGE}),
])
def test_transformers_checkpoints_are_routed_by_what_they_are(row: dict[str, Any], modalities: set[str]) -> None:
    found = transformers_inputs(row)
    assert found.modalities == modalities and found.reason == ""


@pytest.mark.parametrize("row, reason", [
    (_row(model_type="whisper", pipeline_tag="automatic-speech-recognition"), "takes audio"),
    (_row(model_type="wav2vec2"), "takes audio"),
    (_row(model_type="llava"), "vision-language generator"),
    (_row(model_type="acme-custom", architectures=["AcmeModel"]), "not part of transformers"),
    (_row(library_name="diffusers", pipeline_tag="text-to-image"), "library 'diffusers'"),
    (_row(library_name=None), "no config.json model_type"),
    (_row(pipeline_tag="text-to-speech"), "takes no text or images"),
])
def test_what_no_probe_takes_comes_with_a_reason(row: dict[str, Any], reason: str) -> None:
    found = transformers_inputs(row)
    assert found.modalities == frozenset() and reason in found.reason


def test_each_modality_gets_its_probe_and_the_rest_a_recorded_reason() -> None:
    probes = [TransformersTextProbe(), TimmImageProbe(), TransformersImageProbe()]
    clip = _row(model_type="clip", local_path="/x")
    assert isinstance(pick_probe(probes, clip, TEXT), TransformersTextProbe)
    assert isinstance(pick_probe(probes, clip, IMAGE), TransformersImageProbe)
    timm_row = {"checkpoint_id": "timm:resnet18.a1_in1k", "library_name": "timm", "model_type": "resnet18"}
    assert isinstance(pick_probe(probes, timm_row, IMAGE), TimmImageProbe)
    assert pick_probe(probes, timm_row, TEXT) is None and unsupported_reason(probes, timm_row) is None

    whisper = _row(model_type="whisper", architectures=["WhisperForConditionalGeneration"])
    assert pick_probe(probes, whisper, TEXT) is None and pick_probe(probes, whisper, IMAGE) is None
    reason = unsupported_reason(probes, whisper)
    assert reason is not None and "takes audio" in reason and "model_type 'whisper'" in reason
    assert "transformers-text, timm-image, transformers-image" in reason
