"""Text probe: the last hidden state of a transformers model, one row per corpus word, as in running text.

Word alignment (Huang, Qiu & Church 2021): a word's row is the hidden state of its LAST sub-word
token. Each corpus line is given to the model as running text - its words joined by single spaces -
and tokenized with character offsets; a token belongs to the word in which its last character
lies. So every word is tokenized exactly as inside running text, mid-sentence, for every kind of
tokenizer: WordPiece, byte-level BPE (GPT-2 and RoBERTa classes, the generic fast class of
Llama-3, Falcon, BLOOM, ModernBERT; Qwen2's digit-splitting regex), SentencePiece BPE with byte
fallback (Llama-2, Mistral, Gemma's normalizer-made `▁`) and Unigram (T5, ALBERT, XLNet, XLM-R).
Tokenizing pre-split words instead (`is_split_into_words`) reads each word as if it began a text:
byte-level BPE then loses the leading-space marker (`in` for `Ġin`) unless `add_prefix_space` is
honoured, which the generic fast class ignores, and with it a regex pre-tokenizer splits `76%` as
`Ġ7 Ġ6 Ġ%`. A line's first word is read as a text's first word is (a paragraph starts a text).

Words lost to truncation at the model's maximum length - all of their sub-words or only the last
ones - get NaN rows and are dropped. Features do not depend on the batch size: see
`model_loading.each_hidden_state`. Dual encoders (CLIP, SigLIP) are probed through their
text tower; encoder-decoders (T5, BART) through their encoder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hubindex import hookimpl
from hubindex.types import TEXT, CorpusData, ExampleOutput, Probe, ProbeError, ProbeOutput
from hubindex_plugins.model_inputs import has_hub_or_local_copy, transformers_inputs
from hubindex_plugins.model_loading import accepted_inputs, each_hidden_state, free_device_memory, load_with_preprocessor

# When neither the tokenizer nor the config states a usable maximum length.
FALLBACK_MAX_LENGTH = 512


def max_length(tokenizer: Any, config: Any, model: Any = None) -> int:
    """The longest input the model takes: the tokenizer's limit and the position table's, whichever is less.

    RoBERTa-style models number positions from padding_idx + 1, so their table holds
    padding_idx + 1 fewer positions than it has rows.
    """
    limits = []
    if isinstance(tokenizer.model_max_length, int) and 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        embeddings = getattr(model, "embeddings", None)
        offset = getattr(embeddings, "padding_idx", None) if hasattr(embeddings, "position_embeddings") else None
        limits.append(positions - offset - 1 if isinstance(offset, int) and 0 <= offset < positions - 1 else positions)
    return min(limits) if limits else FALLBACK_MAX_LENGTH


def word_spans(words: list[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """(the line as running text, each word's first character, each word's end): words joined by spaces."""
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])) if len(words) else lengths
    return " ".join(words), starts, starts + lengths


def word_of_tokens(offsets: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each token, the word its last character lies in, or -1 (special tokens, spaces, padding)."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    last_char = offsets[:, 1] - 1
    words = np.searchsorted(starts, last_char, side="right") - 1
    inside = (offsets[:, 1] > offsets[:, 0]) & (words >= 0)
    inside &= last_char < ends[np.clip(words, 0, None)]
    return np.where(inside, words, -1)


def last_token_positions(word_ids: np.ndarray, n_words: int) -> np.ndarray:
    """For each word, the position of its last token, or -1 if it has none."""
    positions = np.full(n_words, -1, dtype=np.int64)
    tokens = np.flatnonzero(word_ids >= 0)
    np.maximum.at(positions, word_ids[tokens], tokens)
    return positions


def tokens_per_word(word_ids: np.ndarray, n_words: int) -> np.ndarray:
    """How many tokens each word has in an encoding."""
    return np.bincount(word_ids[word_ids >= 0], minlength=n_words)[:n_words]


def text_tower(model: Any) -> Any:
    """The part of a model that reads text: a dual encoder's text model, an encoder-decoder's encoder."""
    if hasattr(model, "text_model") and hasattr(model, "vision_model"):
        return model.text_model
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


class TransformersTextProbe(Probe):
    """Last hidden state of a transformers model's text side, at each word's last sub-word token."""

    name = "transformers-text"
    version = "2"
    description = "transformers text models and text towers: last hidden state, last sub-word per word in running text"
    modality = TEXT
    layer = "last"
    pooling = "last-subword"
    example_pooling = "mean-tokens"
    default_batch_size = 32

    def accepts(self, checkpoint: dict[str, Any]) -> bool:
        return TEXT in transformers_inputs(checkpoint).modalities and has_hub_or_local_copy(checkpoint)

    def why_not(self, checkpoint: dict[str, Any]) -> str:
        return transformers_inputs(checkpoint).reason

    def load(self, checkpoint: dict[str, Any], with_head: bool = False) -> tuple[Any, Any]:
        """(model in eval mode on the device, fast tokenizer); ProbeError('load-error') if they cannot load.

        with_head loads the sequence-classification model (encoder + its head) instead of the bare model.
        """
        auto = "AutoModelForSequenceClassification" if with_head else "AutoModel"
        model, tokenizer = load_with_preprocessor("AutoTokenizer", auto, checkpoint, self.dtype_for(checkpoint),
                                                  self.device)
        if not getattr(tokenizer, "is_fast", False):
            raise ProbeError("unsupported", "word alignment needs a fast tokenizer (character offsets)")
        return model, tokenizer

    def embed(self, checkpoint: dict[str, Any], corpus: CorpusData) -> ProbeOutput:
        if corpus.lines is None:
            raise ProbeError("unsupported", f"corpus {corpus.name!r} has no lines of words")
        model, tokenizer = self.load(checkpoint)
        try:
            return self.features(model, tokenizer, corpus.lines, self.dtype_for(checkpoint))
        finally:
            del model
            free_device_memory(self.device)

    def embed_examples(self, checkpoint: dict[str, Any], items: list[Any]) -> ExampleOutput:
        """Mean of the last hidden state over each text's tokens (as sentence-transformers pools),
        and the softmax of the checkpoint's sequence-classification head when it has one."""
        with_head = has_classification_head(checkpoint)
        model, tokenizer = self.load(checkpoint, with_head=with_head)
        try:
            return self.example_features(model, tokenizer, items, with_head, self.dtype_for(checkpoint))
        finally:
            del model
            free_device_memory(self.device)

    def _forward(self, model: Any, with_head: bool = False) -> Any:
        """inputs -> (last hidden state, head logits or None) of the model's text side."""
        tower = model if with_head else text_tower(model)
        accepted = accepted_inputs(tower)

        def forward(inputs: dict[str, Any]) -> tuple[Any, Any]:
            given = {k: v for k, v in inputs.items() if k in accepted}
            if with_head:
                output = tower(**given, output_hidden_states=True)
                return output.hidden_states[-1], output.logits
            hidden = getattr(tower(**given), "last_hidden_state", None)
            if hidden is None:
                raise ProbeError("unsupported", f"{type(tower).__name__} returns no last_hidden_state")
            return hidden, None

        return forward, tower

    def example_features(self, model: Any, tokenizer: Any, texts: list[str], with_head: bool,
                         dtype: str = "float32") -> ExampleOutput:
        """One mean-pooled row per text (truncated at the model's maximum length), plus head softmax."""
        import torch

        if not texts:
            raise ProbeError("unsupported", "the task has no examples")
        forward, tower = self._forward(model, with_head)
        limit = max_length(tokenizer, tower.config, tower)
        encodings = _encodings(tokenizer(list(texts), truncation=True, max_length=limit))
        features: list[np.ndarray | None] = [None] * len(texts)
        probs: list[np.ndarray | None] = [None] * len(texts)

        def take(row: int, hidden: np.ndarray, logits: np.ndarray | None) -> None:
            features[row] = hidden.mean(axis=0)
            if logits is not None:
                probs[row] = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()

        each_hidden_state(forward, encodings, self.batch_size, _pad_id(tokenizer), self.device, dtype, take)
        return ExampleOutput(np.stack(features).astype(np.float32), np.stack(probs) if with_head else None)

    def features(self, model: Any, tokenizer: Any, lines: list[list[str]], dtype: str = "float32") -> ProbeOutput:
        """One row per word of the lines, in order; NaN rows (dropped) for words lost to truncation."""
        forward, tower = self._forward(model)
        limit = max_length(tokenizer, tower.config, tower)
        spans = [word_spans(line) for line in lines]
        encoded = tokenizer([text for text, _, _ in spans], truncation=True, max_length=limit,
                            return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping")
        encodings = _encodings(encoded)
        word_ids = [word_of_tokens(np.array(o), starts, ends) for o, (_, starts, ends) in zip(offsets, spans)]
        # A line that fills max_length may have lost the end of a word (some of its sub-words are
        # gone): compare each word's token count with the line's untruncated tokenization.
        full = [row for row, e in enumerate(encodings) if len(e["input_ids"]) >= limit]
        untruncated = dict(zip(full, tokenizer([spans[row][0] for row in full], add_special_tokens=False,
                                               return_offsets_mapping=True)["offset_mapping"] if full else []))
        positions = []
        for row, line in enumerate(lines):
            found = last_token_positions(word_ids[row], len(line))
            if row in untruncated:
                _, starts, ends = spans[row]
                whole = word_of_tokens(np.array(untruncated[row]), starts, ends)
                found[tokens_per_word(word_ids[row], len(line)) != tokens_per_word(whole, len(line))] = -1
            positions.append(found)
        first_word = np.concatenate(([0], np.cumsum([len(line) for line in lines])))
        n_words = int(first_word[-1])
        if n_words == 0:
            raise ProbeError("unsupported", "the corpus has no words")
        result: dict[str, np.ndarray] = {}

        def take(row: int, hidden: np.ndarray, _: Any) -> None:
            if "features" not in result:
                result["features"] = np.full((n_words, hidden.shape[-1]), np.nan, dtype=np.float32)
            kept = np.flatnonzero(positions[row] >= 0)
            result["features"][first_word[row] + kept] = hidden[positions[row][kept]]

        each_hidden_state(forward, encodings, self.batch_size, _pad_id(tokenizer), self.device, dtype, take)
        dropped = np.concatenate(positions) < 0
        return ProbeOutput(result["features"], dropped)


def _encodings(encoded: Any) -> list[dict[str, list[int]]]:
    """Per-row token lists (input_ids, and token_type_ids when the tokenizer gives them)."""
    keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
    return [{k: list(encoded[k][row]) for k in keys} for row in range(len(encoded["input_ids"]))]


def _pad_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if isinstance(token_id, int):
            return token_id
    return 0


def has_classification_head(checkpoint: dict[str, Any]) -> bool:
    """Whether the checkpoint's config names a sequence-classification architecture."""
    return any(str(a).endswith("ForSequenceClassification") for a in checkpoint.get("architectures") or [])


@hookimpl
def register_probes(register):  # noqa: ANN001, ANN201 - hook signature
    register(TransformersTextProbe)
