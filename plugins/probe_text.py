"""Text probe: the last hidden state of a transformers encoder, one row per corpus word.

Word alignment (Huang, Qiu & Church 2021): each corpus line, already split into words on
whitespace, is tokenized with `is_split_into_words=True`; a word's row is the hidden state of its
LAST sub-word token (`word_ids()`). Words lost to truncation at the model's maximum length - all
of their sub-words or only the last ones - get NaN rows and are dropped.

Weights load from the checkpoint's local copy when it has one, else from the Hub by id at the
catalog's commit; remote code is never run, safetensors are preferred and pickled weights are
read with `weights_only=True`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import TEXT, CorpusData, ExampleOutput, Probe, ProbeError, ProbeOutput

TEXT_LIBRARIES = frozenset({"transformers", "sentence-transformers"})
# Hub pipeline tags of models that take no text (their rows may still say library transformers).
NON_TEXT_PIPELINES = frozenset({
    "image-classification", "image-feature-extraction", "image-segmentation", "object-detection",
    "depth-estimation", "image-to-image", "unconditional-image-generation", "video-classification",
    "audio-classification", "automatic-speech-recognition", "audio-to-audio", "text-to-speech",
    "text-to-audio", "voice-activity-detection", "mask-generation", "zero-shot-object-detection",
    "keypoint-detection", "image-to-video", "text-to-image", "text-to-video",
})
# When neither the tokenizer nor the config states a usable maximum length.
FALLBACK_MAX_LENGTH = 512


def model_source(checkpoint: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what from_pretrained loads, extra kwargs): the local copy, else the Hub repo at its commit."""
    local = checkpoint.get("local_path")
    if local:
        if not Path(local).is_dir():
            raise ProbeError("not-found", f"local copy {local} is gone; run `hubindex crawl local` again")
        return local, {}
    checkpoint_id = checkpoint["checkpoint_id"]
    if checkpoint_id.startswith("hf:"):
        revision = checkpoint.get("sha")
        return checkpoint_id[3:], ({"revision": revision} if revision else {})
    raise ProbeError("not-found", f"{checkpoint_id} has no local copy and no Hub repo to load from")


def has_safetensors(checkpoint: dict[str, Any], source: str) -> bool | None:
    """True/False when it is known whether safetensors weights exist; None lets transformers choose."""
    folder = Path(source)
    if checkpoint.get("local_path") and folder.is_dir():
        return any(folder.glob("*.safetensors"))
    names = [w["name"] for w in checkpoint.get("weight_files") or [] if w and w.get("name")]
    return any(n.endswith(".safetensors") for n in names) if names else None


def max_length(tokenizer: Any, config: Any) -> int:
    """The longest input the model takes: the tokenizer's limit and the position table's, whichever is less."""
    limits = []
    if isinstance(tokenizer.model_max_length, int) and 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else FALLBACK_MAX_LENGTH


def needs_prefix_space(tokenizer: Any) -> bool:
    """Whether a fast tokenizer's pre-tokenizer is byte-level BPE without add_prefix_space."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False

    def byte_level_without_prefix(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and node.get("add_prefix_space") is False:
                return True
            return any(byte_level_without_prefix(v) for v in node.values())
        if isinstance(node, list):
            return any(byte_level_without_prefix(v) for v in node)
        return False

    return byte_level_without_prefix(json.loads(backend.to_str()).get("pre_tokenizer"))


def last_subword_positions(word_ids: list[int | None], n_words: int) -> np.ndarray:
    """For each word of a line, the position of its last sub-word token, or -1 if it was truncated."""
    positions = np.full(n_words, -1, dtype=np.int64)
    for position, word in enumerate(word_ids):
        if word is not None:
            positions[word] = position  # later tokens of the same word overwrite earlier ones
    return positions


def tokens_per_word(word_ids: list[int | None], n_words: int) -> np.ndarray:
    """How many tokens each word of a line has in an encoding."""
    words = np.array([w for w in word_ids if w is not None], dtype=np.int64)
    return np.bincount(words, minlength=n_words)[:n_words]


class TransformersTextProbe(Probe):
    """Last hidden state of a transformers text encoder, at each word's last sub-word token."""

    name = "transformers-text"
    version = "1"
    description = "transformers encoders: last hidden state, last sub-word per word"
    modality = TEXT
    layer = "last"
    pooling = "last-subword"
    example_pooling = "mean-tokens"
    default_batch_size = 32

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        if checkpoint.get("library_name") not in TEXT_LIBRARIES:
            return False
        if checkpoint.get("pipeline_tag") in NON_TEXT_PIPELINES:
            return False
        return bool(checkpoint.get("local_path")) or checkpoint["checkpoint_id"].startswith("hf:")

    def load(self, checkpoint: dict[str, Any], with_head: bool = False) -> tuple[Any, Any]:
        """(model in eval mode on the device, fast tokenizer); ProbeError('load-error') if they cannot load.

        with_head loads the sequence-classification model (encoder + its head) instead of the bare encoder.
        """
        from hubindex.torch_compat import ensure_torchvision

        ensure_torchvision()  # transformers imports torchvision for its image utilities
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # `hubindex probe` shows its own progress

        source, extra = model_source(checkpoint)
        verbosity = transformers_logging.get_verbosity()
        # Load reports (e.g. "pooler weights newly initialised") concern heads the probe never uses.
        transformers_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **extra)
            if needs_prefix_space(tokenizer):
                # Byte-level BPE (RoBERTa, GPT-2): a pre-split word must be read as " word".
                tokenizer = AutoTokenizer.from_pretrained(
                    source, trust_remote_code=False, add_prefix_space=True, **extra
                )
            model = (AutoModelForSequenceClassification if with_head else AutoModel).from_pretrained(
                source, trust_remote_code=False, use_safetensors=has_safetensors(checkpoint, source),
                weights_only=True, dtype=torch.float32, **extra,
            )
        except Exception as exc:
            raise ProbeError("load-error", f"{type(exc).__name__}: {exc}") from exc
        finally:
            transformers_logging.set_verbosity(verbosity)
        if not getattr(tokenizer, "is_fast", False):
            raise ProbeError("unsupported", "word alignment needs a fast tokenizer (word_ids)")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        return model.to(self.device).eval(), tokenizer

    def embed(self, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeOutput:
        if corpus.lines is None:
            raise ProbeError("unsupported", f"corpus {corpus.name!r} has no lines of words")
        model, tokenizer = self.load(checkpoint)
        try:
            return self.features(model, tokenizer, corpus.lines)
        finally:
            del model
            _free_device_memory(self.device)

    def embed_examples(self, checkpoint: dict[str, Any], items: list[Any]) -> ExampleOutput:
        """Mean of the last hidden state over each text's tokens (as sentence-transformers pools),
        and the softmax of the checkpoint's sequence-classification head when it has one."""
        with_head = has_classification_head(checkpoint)
        model, tokenizer = self.load(checkpoint, with_head=with_head)
        try:
            return self.example_features(model, tokenizer, items, with_head)
        finally:
            del model
            _free_device_memory(self.device)

    def example_features(self, model: Any, tokenizer: Any, texts: list[str], with_head: bool) -> ExampleOutput:
        """One mean-pooled row per text (truncated at the model's maximum length), plus head softmax."""
        import torch

        limit = max_length(tokenizer, model.config)
        accepted = set(inspect.signature(model.forward).parameters)
        rows, probs = [], []
        # Longest first: batches of similar lengths pad little; rows go back to input order below.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            encoding = tokenizer(batch, truncation=True, max_length=limit, padding=True, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in encoding.items() if k in accepted}
            try:
                with torch.inference_mode():
                    output = model(**inputs, output_hidden_states=True) if with_head else model(**inputs)
            except Exception as exc:
                raise ProbeError("forward-error", f"{type(exc).__name__}: {exc}") from exc
            hidden = output.hidden_states[-1] if with_head else getattr(output, "last_hidden_state", None)
            if hidden is None:
                raise ProbeError("unsupported", f"{type(model).__name__} returns no last hidden state")
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            rows.append(pooled.float().cpu().numpy())
            if with_head:
                probs.append(torch.softmax(output.logits.float(), dim=-1).cpu().numpy())
        if not rows:
            raise ProbeError("unsupported", "the task has no examples")
        inverse = np.argsort(np.array(order))
        features = np.concatenate(rows)[inverse]
        head = np.concatenate(probs)[inverse] if with_head else None
        return ExampleOutput(features, head)

    def features(self, model: Any, tokenizer: Any, lines: list[list[str]]) -> ProbeOutput:
        """One row per word of the lines, in order; NaN rows (dropped) for truncated words."""
        import torch

        limit = max_length(tokenizer, model.config)
        accepted = set(inspect.signature(model.forward).parameters)
        n_words = sum(len(line) for line in lines)
        features: np.ndarray | None = None
        dropped = np.zeros(n_words, dtype=bool)
        offset = 0
        for start in range(0, len(lines), self.batch_size):
            batch = lines[start : start + self.batch_size]
            encoding = tokenizer(batch, is_split_into_words=True, truncation=True, max_length=limit,
                                 padding=True, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in encoding.items() if k in accepted}
            try:
                with torch.inference_mode():
                    output = model(**inputs)
            except Exception as exc:
                raise ProbeError("forward-error", f"{type(exc).__name__}: {exc}") from exc
            hidden = getattr(output, "last_hidden_state", None)
            if hidden is None:
                raise ProbeError("unsupported", f"{type(model).__name__} returns no last_hidden_state")
            hidden = hidden.float().cpu().numpy()
            if features is None:
                features = np.full((n_words, hidden.shape[-1]), np.nan, dtype=np.float32)
            # A line that fills max_length may have lost the end of its last word (its last
            # sub-word is gone): compare with the line's untruncated tokenization.
            full = [row for row, n in enumerate(encoding["attention_mask"].sum(dim=1).tolist()) if n >= limit]
            untruncated = (
                tokenizer([batch[row] for row in full], is_split_into_words=True, add_special_tokens=False)
                if full else None
            )
            for row, line in enumerate(batch):
                word_ids = encoding.word_ids(row)
                positions = last_subword_positions(word_ids, len(line))
                if row in full:
                    complete = tokens_per_word(word_ids, len(line)) == tokens_per_word(
                        untruncated.word_ids(full.index(row)), len(line)
                    )
                    positions[~complete] = -1
                kept = positions >= 0
                words = offset + np.flatnonzero(kept)
                features[words] = hidden[row, positions[kept]]
                dropped[offset + np.flatnonzero(~kept)] = True
                offset += len(line)
        if features is None:
            raise ProbeError("unsupported", "the corpus has no words")
        return ProbeOutput(features, dropped)


def has_classification_head(checkpoint: dict[str, Any]) -> bool:
    """Whether the checkpoint's config names a sequence-classification architecture."""
    return any(str(a).endswith("ForSequenceClassification") for a in checkpoint.get("architectures") or [])


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


@hookimpl
def register_probes(register):  # noqa: ANN001, ANN201 - hook signature
    register(TransformersTextProbe)
