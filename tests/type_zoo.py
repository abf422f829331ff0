"""The type zoo: tiny random-initialised checkpoints of many real architectures, built offline.

The Hugging Face Hub holds thousands of architectures, each with its own tokenizer pipeline,
image processor, config and card conventions; this machine reaches no model hub. The type zoo
stands in for that variety in tests and in the coverage benchmark: every member is a plain
checkpoint folder `OUT/<name>/` laid out as `save_pretrained` (or timm's `save_for_hf`) writes it
and as a Hub repo holds it, so that `hubindex crawl local OUT` indexes it and a probe loads it
with `AutoTokenizer` / `AutoImageProcessor` / `AutoModel.from_pretrained(folder)` or with timm.

Members:

- text (transformers): 32 members of 30 model types, covering the four tokenizer kinds
  (WordPiece, byte-level BPE, SentencePiece-style BPE with byte fallback, Unigram). Each
  tokenizer is trained on BBC News articles (a vocabulary of about 1,000 tokens) and saved with
  the `tokenizer.json` pipeline (normalizer, pre-tokenizer, model, post-processor, decoder,
  added tokens) and the `tokenizer_config.json` (tokenizer class, special tokens) that a real
  Hub repo of the family has, including the variants that probes trip over: Llama-3's generic
  `PreTrainedTokenizerFast` with a Split regex before a regex-free ByteLevel, Qwen2's
  digit-splitting regex, Llama-2's Metaspace and its older Prepend/Replace normalizer, Gemma's
  Replace normalizer without Metaspace, and Unigram families with a Precompiled normalizer;
- vision (transformers): 15 members, image classifiers and bare backbones with their image
  processors, plus the dual encoders CLIP and SigLIP (text tokenizer and image processor);
- timm: 5 of timm's tiny `test_*` architectures in timm's Hub format;
- members no probe should take: a wav2vec2 audio model, and an `acme-custom` repo whose
  `auto_map` points at a `modeling_acme.py` that must never run (importing it writes `CODE_RAN`
  beside it).

Model cards vary as they do on the Hub (see CARD_CONVENTIONS). Weights come from a fixed torch
seed and tokenizers from a fixed slice of the corpus, so two builds give identical files. Each
member is built in a staging folder and renamed into place, so a member folder is either
complete or absent; a build skips members already there.

Run `python tests/type_zoo.py OUT [NAME ...]` to build the zoo and print its build time and size.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubindex.torch_compat import import_timm
from hubindex_plugins.corpora import bbc_news_folder, read_text_file
from hubindex_plugins.model_loading import quiet_transformers

SEED = 0
# Every 5th article, in sorted path order: all five BBC topics, and the same text on every build.
ARTICLE_STEP = 5
TRAINING_ARTICLES = 300
VOCAB_SIZE = 1000
STAGING_DIR = ".type-zoo-staging"
LABELS = ("business", "politics", "sport")  # three BBC News topics, for the classifier heads
SENTENCE = "Shares rose 76% in 2004, and he couldn't stop"

WORDPIECE, BYTE_BPE, SENTENCEPIECE_BPE, UNIGRAM = "wordpiece", "byte-bpe", "sentencepiece-bpe", "unigram"
TEXT, IMAGE = "text", "image"

# How the members' model cards (README.md) are written, as found on the Hub.
CARD_CONVENTIONS = {
    "full": "YAML front matter with the correct pipeline_tag and library_name (and license)",
    "no-pipeline-tag": "front matter with library_name and license but no pipeline_tag (the Hub infers it)",
    "lineage": "front matter with base_model, license, tags, pipeline_tag and library_name",
    "prose-only": "a README.md without front matter",
    "none": "no README.md at all",
}


@dataclass(frozen=True)
class TypeMember:
    """One checkpoint folder of the type zoo, and what a probe should make of it."""

    name: str
    library: str
    family: str
    modalities: tuple[str, ...]
    tokenizer_kind: str | None
    tokenizer_style: str | None
    card: str


# ------------------------------------------------------------------------------ corpus


@functools.cache
def corpus_texts() -> tuple[str, ...]:
    """The first TRAINING_ARTICLES of every ARTICLE_STEP-th BBC News article, in sorted path order."""
    folder = bbc_news_folder()
    files = sorted(folder.glob("*/*.txt"), key=lambda p: p.relative_to(folder).as_posix())
    return tuple(read_text_file(path) for path in files[::ARTICLE_STEP][:TRAINING_ARTICLES])


# ------------------------------------------------------------------------------ Precompiled normalizer


def nfkc_mapping() -> dict[str, str]:
    """The characters of a few blocks that NFKC changes (Latin-1, punctuation, ligatures, full-width)."""
    blocks = [range(0xA0, 0x180), range(0x2000, 0x2070), range(0xFB00, 0xFB07), range(0xFF01, 0xFF5F), [0x3000]]
    chars = (chr(code) for block in blocks for code in block)
    return {c: unicodedata.normalize("NFKC", c) for c in chars if unicodedata.normalize("NFKC", c) != c}


@functools.cache
def precompiled_charsmap() -> bytes:
    """A SentencePiece `precompiled_charsmap` (darts-clone double array + targets) for nfkc_mapping.

    Real SentencePiece Unigram tokenizers carry their nmt_nfkc rules in this form; building one
    gives the zoo's tokenizer.json files the same `Precompiled` normalizer (a subset of the rules).
    """
    targets = bytearray()
    trie: dict[Any, Any] = {}
    for source, target in sorted(nfkc_mapping().items()):
        node = trie
        for byte in source.encode():
            node = node.setdefault(byte, {})
        node[None] = len(targets)  # the key ends here: its value is the target's offset
        targets += target.encode() + b"\0"
    # Unit layout (darts-clone): label in bits 0-7, has-leaf in bit 8, offset from bit 10 on;
    # a leaf unit has bit 31 set and the value below it. A node's children sit at base ^ label.
    units: dict[int, int] = {}
    used_bases: set[int] = set()
    pending = [(trie, 0, 0)]
    while pending:
        node, position, label = pending.pop(0)
        labels = sorted(key for key in node if key is not None)
        slots = ([0] if None in node else []) + labels
        base = 1
        while base in used_bases or any((base ^ slot) in units or base ^ slot == 0 for slot in slots):
            base += 1
        used_bases.add(base)
        units[position] = ((position ^ base) << 10) | ((None in node) << 8) | label
        if None in node:
            units[base] = (1 << 31) | node[None]
        for child in labels:
            units[base ^ child] = 0  # reserved now, filled when the child is placed
            pending.append((node[child], base ^ child, child))
    # Every first byte is looked up at the root's base ^ byte: the array needs 256 units at least.
    array = [units.get(i, 0) for i in range(max(256, max(units) + 1))]
    blob = struct.pack(f"<{len(array)}I", *array)
    return struct.pack("<I", len(blob)) + blob + bytes(targets)


# ------------------------------------------------------------------------------ tokenizers

# Llama-3 keeps runs of up to three digits together; Qwen2 splits every digit off.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BLOOM_REGEX = r" ?[^(\s|[.,!?…。，、।۔،])]+"
CLIP_REGEX = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
# What transformers writes as model_max_length when a tokenizer declares no limit.
NO_LENGTH_LIMIT = int(1e30)
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
T5_EXTRA_IDS = tuple(f"<extra_id_{i}>" for i in range(100))
LLAMA3_SPECIALS = (
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_4|>", "<|eot_id|>",
)
FALCON_SPECIALS = (
    ">>TITLE<<", ">>ABSTRACT<<", ">>INTRODUCTION<<", ">>SUMMARY<<", ">>COMMENT<<", ">>ANSWER<<",
    ">>QUESTION<<", ">>DOMAIN<<", ">>PREFIX<<", ">>SUFFIX<<", ">>MIDDLE<<", "<|endoftext|>",
)
# ModernBERT's vocabulary (from OLMo) has these as added tokens that are not special.
MODERNBERT_PLAIN_ADDED = ("|||IP_ADDRESS|||", "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||")


def _tokenizers() -> Any:
    """The tokenizers library, imported when first needed."""
    import tokenizers

    return tokenizers


def byte_level(use_regex: bool = True) -> Any:
    """The ByteLevel pre-tokenizer as GPT-2-derived tokenizer.json files write it."""
    return _tokenizers().pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)


def split_then_byte_level(regex: str) -> Any:
    """A Split regex pre-tokenizer followed by a ByteLevel without its own regex (Llama-3, Qwen2)."""
    tk = _tokenizers()
    return tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(regex), behavior="isolated", invert=False),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])


def falcon_pre_tokenizer() -> Any:
    """Falcon's pre-tokenizer: punctuation runs, ByteLevel, digit runs cut into groups of three."""
    tk = _tokenizers()
    return tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Punctuation(behavior="contiguous"),
        byte_level(),
        tk.pre_tokenizers.Digits(individual_digits=False),
        tk.pre_tokenizers.Split(tk.Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False),
    ])


def clip_normalizer() -> Any:
    """CLIP's normalizer: NFC, whitespace runs to one space, lowercase."""
    tk = _tokenizers()
    return tk.normalizers.Sequence([
        tk.normalizers.NFC(), tk.normalizers.Replace(tk.Regex(r"\s+"), " "), tk.normalizers.Lowercase()
    ])


def clip_pre_tokenizer() -> Any:
    """CLIP's pre-tokenizer: its word regex (matches kept), then ByteLevel."""
    tk = _tokenizers()
    return tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(CLIP_REGEX), behavior="removed", invert=True),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])


def metaspace_unigram_pre_tokenizer() -> Any:
    """Metaspace as the SentencePiece converters of transformers 4.x wrote it (prefix on every word)."""
    return _tokenizers().pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)


def albert_normalizer(lowercase: bool, precompiled: bool) -> Any:
    """The normalizer of ALBERT (lowercase) and XLNet (cased): quote fixes, NFKD, no accents."""
    tk = _tokenizers()
    steps = [tk.normalizers.Replace("``", '"'), tk.normalizers.Replace("''", '"'), tk.normalizers.NFKD(),
             tk.normalizers.StripAccents()]
    if lowercase:
        steps.append(tk.normalizers.Lowercase())
    if precompiled:
        steps.append(tk.normalizers.Precompiled(precompiled_charsmap()))
    steps.append(tk.normalizers.Replace(tk.Regex(" {2,}"), " "))
    return tk.normalizers.Sequence(steps)


def train_bpe(texts: Iterable[str], pre_tokenizer: Any, vocab_size: int = VOCAB_SIZE, normalizer: Any = None,
              alphabet: Iterable[str] = ()) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Train a BPE vocabulary: (tokens in id order, merges in rank order).

    Deterministic as long as neither a prefix nor a suffix marks subwords: the trainer numbers
    the characters in sorted order and breaks ties between merges by those numbers, whereas it
    numbers prefixed or suffixed characters in hash order (the WordPiece trainer, CLIP's "</w>").
    With `alphabet`, only those characters are kept (the others are left to byte fallback).
    """
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    alphabet = list(alphabet)
    limit = {"limit_alphabet": len(alphabet)} if alphabet else {}
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, initial_alphabet=alphabet, **limit)
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = model["vocab"]
    return tuple(sorted(vocab, key=vocab.__getitem__)), tuple(tuple(merge) for merge in model["merges"])


def word_start_pre_tokenizer(words: Any) -> Any:
    """Split into words, then mark each word's start with "▁" (SentencePiece's convention)."""
    pre = _tokenizers().pre_tokenizers
    return pre.Sequence([words, pre.Metaspace(replacement="▁", prepend_scheme="always", split=True)])


def frequent_characters(texts: Iterable[str], count: int) -> list[str]:
    """The `count` most frequent characters, spaces counted as "▁"; ties go to the smaller character."""
    counts = Counter(c for text in texts for c in text.replace(" ", "▁") if not c.isspace())
    return sorted(sorted(counts), key=lambda c: -counts[c])[:count]


# CLIP's BPE starts from words whose last character carries "</w>". While its merges are learnt,
# each such character is stood in for by a private-use character of its own, so that the
# trainer numbers it (and breaks ties) in sorted order like any other character.
WORD_END_OFFSET = 0xE000


def clip_training_texts() -> Iterator[str]:
    """The corpus cut into CLIP's byte-level words, each last character replaced by its stand-in."""
    normalizer, pre_tokenizer = clip_normalizer(), clip_pre_tokenizer()
    for text in corpus_texts():
        words = [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        yield " ".join(word[:-1] + chr(WORD_END_OFFSET + ord(word[-1])) for word in words)


def clip_token(trained: str) -> str:
    """A token learnt on clip_training_texts, written as CLIP writes it ("...c</w>" at a word end)."""
    last = ord(trained[-1])
    return trained[:-1] + chr(last - WORD_END_OFFSET) + "</w>" if last >= WORD_END_OFFSET else trained


@functools.cache
def trained_bpe(recipe: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """A BPE vocabulary trained on BBC News the way `recipe` needs it."""
    tk = _tokenizers()
    pre = tk.pre_tokenizers
    texts = corpus_texts()
    byte_alphabet = pre.ByteLevel.alphabet()
    if recipe == "wordpiece":
        return train_bpe(texts, word_start_pre_tokenizer(pre.BertPreTokenizer()),
                         normalizer=tk.normalizers.BertNormalizer(lowercase=True))
    if recipe == "byte-bpe-clip":
        word_ends = [chr(WORD_END_OFFSET + ord(c)) for c in byte_alphabet]
        return train_bpe(clip_training_texts(), pre.WhitespaceSplit(), alphabet=byte_alphabet + word_ends)
    if recipe.startswith("byte-bpe-"):
        pre_tokenizer = {
            "gpt2": byte_level, "llama3": lambda: split_then_byte_level(LLAMA3_REGEX),
            "qwen2": lambda: split_then_byte_level(QWEN2_REGEX), "bloom": lambda: split_then_byte_level(BLOOM_REGEX),
            "falcon": falcon_pre_tokenizer,
        }[recipe.removeprefix("byte-bpe-")]()
        return train_bpe(texts, pre_tokenizer, alphabet=byte_alphabet)
    if recipe == "sentencepiece-bpe":
        # Llama, Mistral and Gemma were trained with split_digits: no piece holds two digits.
        # A small alphabet leaves the rarer characters to the 256 byte tokens, as in the real ones.
        pre_tokenizer = pre.Sequence([
            pre.Metaspace(replacement="▁", prepend_scheme="always", split=True), pre.Digits(individual_digits=True)
        ])
        return train_bpe(texts, pre_tokenizer, VOCAB_SIZE - len(BYTE_TOKENS), alphabet=frequent_characters(texts, 100))
    if recipe == "metaspace-cased":
        return train_bpe(texts, word_start_pre_tokenizer(pre.WhitespaceSplit()))
    if recipe == "metaspace-uncased":
        return train_bpe(texts, word_start_pre_tokenizer(pre.WhitespaceSplit()),
                         normalizer=albert_normalizer(lowercase=True, precompiled=False))
    raise ValueError(f"unknown training recipe {recipe!r}")


def wordpiece_vocabulary() -> list[str]:
    """WordPiece tokens from the word-start-marked BPE: "▁word" is "word", any other piece "##piece"."""
    tokens, _ = trained_bpe("wordpiece")
    chars = sorted(token for token in tokens if len(token) == 1 and token != "▁")
    pieces = [token[1:] if token.startswith("▁") else "##" + token for token in tokens if len(token) > 1]
    return chars + ["##" + c for c in chars] + pieces


def clip_vocabulary() -> tuple[list[str], list[tuple[str, str]]]:
    """CLIP's merged tokens (single characters aside) and merges, with "</w>" word ends."""
    tokens, merges = trained_bpe("byte-bpe-clip")
    return [clip_token(t) for t in tokens if len(t) > 1], [(clip_token(a), clip_token(b)) for a, b in merges]


def unigram_pieces(recipe: str) -> list[tuple[str, float]]:
    """Unigram pieces and scores: the BPE vocabulary, scored by log frequency in its own segmentation.

    One hard EM step from the BPE pieces, in place of the library's Unigram trainer, whose
    scores differ in the last digits from run to run (it sums floats in hash order).
    """
    tk = _tokenizers()
    tokens, merges = trained_bpe(recipe)
    tokenizer = tk.Tokenizer(tk.models.BPE({t: i for i, t in enumerate(tokens)}, list(merges)))
    if recipe == "metaspace-uncased":
        tokenizer.normalizer = albert_normalizer(lowercase=True, precompiled=False)
    tokenizer.pre_tokenizer = word_start_pre_tokenizer(tk.pre_tokenizers.WhitespaceSplit())
    counts = Counter(token for encoding in tokenizer.encode_batch(list(corpus_texts())) for token in encoding.tokens)
    total = sum(counts.values())
    scores = {token: math.log(counts[token] / total) for token in counts}
    unseen = min(scores.values()) - 1.0  # as SentencePiece scores pieces it never used
    return sorted(((token, scores.get(token, unseen)) for token in tokens), key=lambda item: (-item[1], item[0]))


def ordered_vocab(*parts: Iterable[str]) -> dict[str, int]:
    """Token -> id over the parts in order; a token already placed keeps its first id."""
    vocab: dict[str, int] = {}
    for part in parts:
        for token in part:
            vocab.setdefault(token, len(vocab))
    return vocab


@dataclass
class TokenizerFiles:
    """What a tokenizer style produces: the backend tokenizer and its tokenizer_config.json entries."""

    tokenizer: Any
    roles: dict[str, str | None]  # bos_token, eos_token, ... as tokenizer_config.json names them
    settings: dict[str, Any] = field(default_factory=dict)
    extra_special: tuple[str, ...] = ()  # additional_special_tokens


def added(tokenizer: Any, tokens: Iterable[str], special: bool = True, lstrip: Iterable[str] = ()) -> None:
    """Register tokens (already in the vocabulary) as added tokens, as tokenizer.json lists them."""
    AddedToken = _tokenizers().AddedToken
    lstrip = set(lstrip)
    entries = [AddedToken(t, special=special, normalized=not special, lstrip=t in lstrip) for t in tokens]
    if special:
        tokenizer.add_special_tokens(entries)
    else:
        tokenizer.add_tokens(entries)


def template(tokenizer: Any, single: str, pair: str) -> Any:
    """A TemplateProcessing post-processor; the special tokens' ids come from the vocabulary."""
    specials = {piece.split(":")[0] for piece in (single + " " + pair).split() if not piece.startswith("$")}
    return _tokenizers().processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, tokenizer.token_to_id(t)) for t in sorted(specials)]
    )


def wordpiece_tokenizer(head: Iterable[str], tail: Iterable[str], unk: str) -> Any:
    """An uncased BERT-style WordPiece tokenizer over the trained vocabulary."""
    tk = _tokenizers()
    vocab = ordered_vocab(head, wordpiece_vocabulary(), tail)
    tokenizer = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tokenizer.normalizer = tk.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tk.decoders.WordPiece(prefix="##", cleanup=True)
    return tokenizer


def byte_bpe_tokenizer(variant: str, head: Iterable[str] = (), tail: Iterable[str] = (), **model: Any) -> Any:
    """A byte-level BPE tokenizer over a trained vocabulary, with ByteLevel decoding."""
    tk = _tokenizers()
    tokens, merges = trained_bpe(f"byte-bpe-{variant}")
    tokenizer = tk.Tokenizer(tk.models.BPE(
        ordered_vocab(head, tokens, tail), list(merges), dropout=None, continuing_subword_prefix="",
        end_of_word_suffix="", fuse_unk=False, byte_fallback=False, **model,
    ))
    tokenizer.decoder = tk.decoders.ByteLevel()
    return tokenizer


def style_bert() -> TokenizerFiles:
    """bert-base-uncased: lowercasing WordPiece, [CLS] ... [SEP]."""
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    tokenizer = wordpiece_tokenizer(specials, (), "[UNK]")
    added(tokenizer, specials)
    tokenizer.post_processor = template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    roles = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
             "mask_token": "[MASK]"}
    settings = {"do_lower_case": True, "strip_accents": None, "tokenize_chinese_chars": True, "model_max_length": 512,
                "clean_up_tokenization_spaces": True}
    return TokenizerFiles(tokenizer, roles, settings)


def style_funnel() -> TokenizerFiles:
    """funnel-transformer: BERT's pipeline with <cls>/<sep> and <cls> of token type 2."""
    specials = ("<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "<s>", "</s>")
    tokenizer = wordpiece_tokenizer(specials, (), "<unk>")
    added(tokenizer, specials)
    # Funnel gives the <cls> token its own token type, 2.
    tokenizer.post_processor = template(tokenizer, "<cls>:2 $A:0 <sep>:0", "<cls>:2 $A:0 <sep>:0 $B:1 <sep>:1")
    roles = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<cls>", "sep_token": "<sep>", "pad_token": "<pad>",
             "unk_token": "<unk>", "mask_token": "<mask>"}
    return TokenizerFiles(tokenizer, roles, {"do_lower_case": True, "model_max_length": 512,
                                             "clean_up_tokenization_spaces": True})


def style_mpnet() -> TokenizerFiles:
    """microsoft/mpnet-base: BERT's WordPiece with RoBERTa's <s> ... </s> tokens."""
    specials = ("<s>", "<pad>", "</s>", "[UNK]")
    tokenizer = wordpiece_tokenizer(specials, ("<mask>",), "[UNK]")
    added(tokenizer, specials + ("<mask>",), lstrip=("<mask>",))
    tokenizer.post_processor = template(tokenizer, "<s>:0 $A:0 </s>:0", "<s>:0 $A:0 </s>:0 </s>:0 $B:1 </s>:1")
    roles = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
             "unk_token": "[UNK]", "mask_token": "<mask>"}
    return TokenizerFiles(tokenizer, roles, {"do_lower_case": True, "model_max_length": 512,
                                             "clean_up_tokenization_spaces": True})


def style_gpt2_class() -> TokenizerFiles:
    """gpt2: byte-level BPE with <|endoftext|> and no special tokens added to sequences."""
    tk = _tokenizers()
    tokenizer = byte_bpe_tokenizer("gpt2", tail=("<|endoftext|>",))
    tokenizer.pre_tokenizer = byte_level()
    tokenizer.post_processor = tk.processors.ByteLevel(trim_offsets=False)
    added(tokenizer, ["<|endoftext|>"])
    roles = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    return TokenizerFiles(tokenizer, roles, {"add_prefix_space": False, "model_max_length": 1024,
                                             "clean_up_tokenization_spaces": False})


def style_opt() -> TokenizerFiles:
    """facebook/opt-*: GPT-2's pipeline with a </s> put before every sequence."""
    specials = ("<s>", "<pad>", "</s>", "<unk>")
    tokenizer = byte_bpe_tokenizer("gpt2", head=specials)
    tokenizer.pre_tokenizer = byte_level()
    added(tokenizer, specials)
    # OPT starts every sequence with </s>, its bos token.
    tokenizer.post_processor = template(tokenizer, "</s>:0 $A:0", "</s>:0 $A:0 $B:1")
    roles = {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"}
    return TokenizerFiles(tokenizer, roles, {"add_bos_token": True, "add_prefix_space": False, "errors": "replace",
                                             "model_max_length": NO_LENGTH_LIMIT, "clean_up_tokenization_spaces": False})


def style_roberta_class() -> TokenizerFiles:
    """roberta-base: GPT-2's pipeline, RobertaProcessing with <s> ... </s>, <mask> last."""
    tk = _tokenizers()
    specials = ("<s>", "<pad>", "</s>", "<unk>")
    tokenizer = byte_bpe_tokenizer("gpt2", head=specials, tail=("<mask>",))
    tokenizer.pre_tokenizer = byte_level()
    added(tokenizer, specials + ("<mask>",), lstrip=("<mask>",))
    tokenizer.post_processor = tk.processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")),
        trim_offsets=True, add_prefix_space=False,
    )
    roles = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
             "unk_token": "<unk>", "mask_token": "<mask>"}
    return TokenizerFiles(tokenizer, roles, {"add_prefix_space": False, "trim_offsets": True, "errors": "replace",
                                             "model_max_length": 512, "clean_up_tokenization_spaces": True})


def style_deberta() -> TokenizerFiles:
    """microsoft/deberta-base: GPT-2's pipeline with [CLS] ... [SEP]."""
    specials = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
    tokenizer = byte_bpe_tokenizer("gpt2", head=specials, tail=("[MASK]",))
    tokenizer.pre_tokenizer = byte_level()
    added(tokenizer, specials + ("[MASK]",), lstrip=("[MASK]",))
    tokenizer.post_processor = template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    roles = {"bos_token": "[CLS]", "eos_token": "[SEP]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    return TokenizerFiles(tokenizer, roles, {"add_prefix_space": False, "do_lower_case": False, "errors": "replace",
                                             "model_max_length": 512, "clean_up_tokenization_spaces": True})


def style_gpt_neox() -> TokenizerFiles:
    """EleutherAI/pythia (GPT-NeoX-20B tokenizer): NFC, then GPT-2's pipeline."""
    tk = _tokenizers()
    specials = ("<|endoftext|>", "<|padding|>")
    tokenizer = byte_bpe_tokenizer("gpt2", head=specials)
    tokenizer.normalizer = tk.normalizers.NFC()
    tokenizer.pre_tokenizer = byte_level()
    tokenizer.post_processor = tk.processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    added(tokenizer, specials)
    roles = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
             "pad_token": "<|padding|>"}
    return TokenizerFiles(tokenizer, roles, {"add_prefix_space": False, "model_max_length": 2048,
                                             "clean_up_tokenization_spaces": True})


def style_generic_fast_llama3() -> TokenizerFiles:
    """Meta-Llama-3: Split regex, regex-free ByteLevel, <|begin_of_text|>; generic class."""
    tk = _tokenizers()
    tokenizer = byte_bpe_tokenizer("llama3", tail=LLAMA3_SPECIALS, ignore_merges=True)
    tokenizer.pre_tokenizer = split_then_byte_level(LLAMA3_REGEX)
    added(tokenizer, LLAMA3_SPECIALS)
    tokenizer.post_processor = tk.processors.Sequence([
        tk.processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        template(tokenizer, "<|begin_of_text|>:0 $A:0", "<|begin_of_text|>:0 $A:0 <|begin_of_text|>:1 $B:1"),
    ])
    roles = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    return TokenizerFiles(tokenizer, roles, {"model_max_length": 8192, "clean_up_tokenization_spaces": True,
                                             "model_input_names": ["input_ids", "attention_mask"]})


def style_falcon() -> TokenizerFiles:
    """tiiuae/falcon: punctuation, ByteLevel and digit splits; generic class."""
    tk = _tokenizers()
    tokenizer = byte_bpe_tokenizer("falcon", head=FALCON_SPECIALS)
    tokenizer.pre_tokenizer = falcon_pre_tokenizer()
    tokenizer.post_processor = tk.processors.ByteLevel(trim_offsets=False)
    added(tokenizer, FALCON_SPECIALS)
    return TokenizerFiles(tokenizer, {"eos_token": "<|endoftext|>"}, {
        "add_prefix_space": False, "model_max_length": 2048, "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
    })


def style_bloom() -> TokenizerFiles:
    """bigscience/bloom: its own Split regex before a regex-free ByteLevel."""
    tk = _tokenizers()
    specials = ("<unk>", "<s>", "</s>", "<pad>")
    tokenizer = byte_bpe_tokenizer("bloom", head=specials)
    tokenizer.pre_tokenizer = split_then_byte_level(BLOOM_REGEX)
    tokenizer.post_processor = tk.processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=False)
    added(tokenizer, specials)
    roles = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    return TokenizerFiles(tokenizer, roles, {"add_prefix_space": False, "padding_side": "left",
                                             "model_max_length": NO_LENGTH_LIMIT, "clean_up_tokenization_spaces": False})


def style_modernbert() -> TokenizerFiles:
    """answerdotai/ModernBERT: OLMo's byte-level BPE with [CLS] ... [SEP]; generic class."""
    tk = _tokenizers()
    specials = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
    head = ("<|endoftext|>", "<|padding|>")
    tokenizer = byte_bpe_tokenizer("gpt2", head=head, tail=MODERNBERT_PLAIN_ADDED + specials)
    tokenizer.normalizer = tk.normalizers.NFC()
    tokenizer.pre_tokenizer = byte_level()
    added(tokenizer, head)
    added(tokenizer, MODERNBERT_PLAIN_ADDED, special=False)
    added(tokenizer, specials, lstrip=("[MASK]",))
    tokenizer.post_processor = template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    roles = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
             "mask_token": "[MASK]"}
    return TokenizerFiles(tokenizer, roles, {"model_max_length": 8192, "clean_up_tokenization_spaces": True,
                                             "model_input_names": ["input_ids", "attention_mask"]})


def style_qwen2_regex() -> TokenizerFiles:
    """Qwen/Qwen2: NFC, a Split regex that isolates every digit, regex-free ByteLevel."""
    tk = _tokenizers()
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    tokenizer = byte_bpe_tokenizer("qwen2", tail=specials)
    tokenizer.normalizer = tk.normalizers.NFC()
    tokenizer.pre_tokenizer = split_then_byte_level(QWEN2_REGEX)
    tokenizer.post_processor = tk.processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    added(tokenizer, specials)
    roles = {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None}
    return TokenizerFiles(tokenizer, roles, {"errors": "replace", "split_special_tokens": False,
                                             "model_max_length": 32768, "clean_up_tokenization_spaces": False},
                          extra_special=("<|im_start|>", "<|im_end|>"))


def style_clip() -> TokenizerFiles:
    """openai/clip-vit-*: lowercasing byte-level BPE with "</w>" word ends."""
    tk = _tokenizers()
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet()
    specials = ("<|startoftext|>", "<|endoftext|>")
    # CLIP's vocabulary opens with every byte, alone and as a word end, before the merged tokens.
    byte_tokens = sorted(alphabet) + sorted(c + "</w>" for c in alphabet)
    tokens, merges = clip_vocabulary()
    tokenizer = tk.Tokenizer(tk.models.BPE(
        ordered_vocab(byte_tokens, tokens, specials), merges, dropout=None, continuing_subword_prefix="",
        end_of_word_suffix="</w>", fuse_unk=False, unk_token="<|endoftext|>",
    ))
    tokenizer.normalizer = clip_normalizer()
    tokenizer.pre_tokenizer = clip_pre_tokenizer()
    tokenizer.decoder = tk.decoders.ByteLevel()
    added(tokenizer, specials)
    tokenizer.post_processor = tk.processors.RobertaProcessing(
        ("<|endoftext|>", tokenizer.token_to_id("<|endoftext|>")),
        ("<|startoftext|>", tokenizer.token_to_id("<|startoftext|>")), trim_offsets=False, add_prefix_space=False,
    )
    roles = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
             "pad_token": "<|endoftext|>"}
    return TokenizerFiles(tokenizer, roles, {"do_lower_case": True, "errors": "replace", "model_max_length": 77,
                                             "clean_up_tokenization_spaces": True})


def sentencepiece_bpe_tokenizer(head: Iterable[str], unk: str) -> Any:
    """A SentencePiece-style BPE (byte fallback, <0xNN> tokens) over the trained pieces."""
    tk = _tokenizers()
    tokens, merges = trained_bpe("sentencepiece-bpe")
    return tk.Tokenizer(tk.models.BPE(
        ordered_vocab(head, BYTE_TOKENS, tokens), list(merges), dropout=None, unk_token=unk, fuse_unk=True,
        byte_fallback=True,
    ))


def llama2_style(legacy_normalizer: bool) -> TokenizerFiles:
    """Llama-2's tokenizer: "▁" from a Metaspace pre-tokenizer, or (older files) from a normalizer."""
    tk = _tokenizers()
    specials = ("<unk>", "<s>", "</s>")
    tokenizer = sentencepiece_bpe_tokenizer(specials, "<unk>")
    if legacy_normalizer:
        tokenizer.normalizer = tk.normalizers.Sequence([
            tk.normalizers.Prepend("▁"), tk.normalizers.Replace(" ", "▁")
        ])
    else:
        tokenizer.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = tk.decoders.Sequence([
        tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse(),
        tk.decoders.Strip(content=" ", left=1, right=0),
    ])
    added(tokenizer, specials)
    tokenizer.post_processor = template(tokenizer, "<s>:0 $A:0", "<s>:0 $A:0 <s>:1 $B:1")
    roles = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}
    return TokenizerFiles(tokenizer, roles, {
        "add_bos_token": True, "add_eos_token": False, "legacy": legacy_normalizer, "model_max_length": 4096,
        "clean_up_tokenization_spaces": False, "spaces_between_special_tokens": False, "sp_model_kwargs": {},
        "use_default_system_prompt": False,
    })


def style_gemma_normalizer() -> TokenizerFiles:
    """google/gemma: byte-fallback BPE whose "▁" comes from a Replace normalizer."""
    tk = _tokenizers()
    specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
    tokenizer = sentencepiece_bpe_tokenizer(specials, "<unk>")
    # No Metaspace: the normalizer turns spaces into "▁", so the first word gets no "▁" of its own.
    tokenizer.normalizer = tk.normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = tk.decoders.Sequence([
        tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()
    ])
    added(tokenizer, specials)
    tokenizer.post_processor = template(tokenizer, "<bos>:0 $A:0", "<bos>:0 $A:0 <bos>:1 $B:1")
    roles = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
    return TokenizerFiles(tokenizer, roles, {
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 8192, "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False, "sp_model_kwargs": {},
    }, extra_special=("<start_of_turn>", "<end_of_turn>"))


def unigram_tokenizer(head: Iterable[str], tail: Iterable[str], unk: str, recipe: str = "metaspace-cased") -> Any:
    """A SentencePiece Unigram tokenizer over the trained pieces, with Metaspace decoding."""
    tk = _tokenizers()
    pieces = [(token, 0.0) for token in head] + unigram_pieces(recipe) + [(token, 0.0) for token in tail]
    tokenizer = tk.Tokenizer(tk.models.Unigram(pieces, unk_id=[p for p, _ in pieces].index(unk), byte_fallback=False))
    tokenizer.decoder = tk.decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return tokenizer


def style_t5() -> TokenizerFiles:
    """t5-small: Unigram with Precompiled normalizer, $A </s>, 100 sentinels."""
    tk = _tokenizers()
    specials = ("<pad>", "</s>", "<unk>")
    # T5 numbers its sentinels downwards from the end of the vocabulary.
    tokenizer = unigram_tokenizer(specials, tuple(reversed(T5_EXTRA_IDS)), "<unk>")
    tokenizer.normalizer = tk.normalizers.Precompiled(precompiled_charsmap())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.WhitespaceSplit(), metaspace_unigram_pre_tokenizer()
    ])
    added(tokenizer, specials + tuple(reversed(T5_EXTRA_IDS)))
    tokenizer.post_processor = template(tokenizer, "$A:0 </s>:0", "$A:0 </s>:0 $B:1 </s>:1")
    roles = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    return TokenizerFiles(tokenizer, roles, {"extra_ids": 100, "model_max_length": 512,
                                             "clean_up_tokenization_spaces": True}, extra_special=T5_EXTRA_IDS)


def style_albert() -> TokenizerFiles:
    """albert-base-v2: lowercasing Unigram, [CLS] ... [SEP]."""
    specials = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
    tokenizer = unigram_tokenizer(specials, (), "<unk>", recipe="metaspace-uncased")
    tokenizer.normalizer = albert_normalizer(lowercase=True, precompiled=True)
    tokenizer.pre_tokenizer = metaspace_unigram_pre_tokenizer()
    added(tokenizer, specials, lstrip=("[MASK]",))
    tokenizer.post_processor = template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    roles = {"bos_token": "[CLS]", "eos_token": "[SEP]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "[MASK]"}
    return TokenizerFiles(tokenizer, roles, {"do_lower_case": True, "keep_accents": False, "remove_space": True,
                                             "model_max_length": 512, "clean_up_tokenization_spaces": True})


def style_xlnet() -> TokenizerFiles:
    """xlnet-base-cased: Unigram with <sep> <cls> at the end, padding on the left."""
    specials = ("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>")
    tokenizer = unigram_tokenizer(specials, (), "<unk>")
    tokenizer.normalizer = albert_normalizer(lowercase=False, precompiled=True)
    tokenizer.pre_tokenizer = metaspace_unigram_pre_tokenizer()
    added(tokenizer, specials, lstrip=("<mask>",))
    # XLNet puts <sep> and <cls> at the end, and gives <cls> token type 2.
    tokenizer.post_processor = template(tokenizer, "$A:0 <sep>:0 <cls>:2", "$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2")
    roles = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<cls>", "sep_token": "<sep>",
             "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}
    return TokenizerFiles(tokenizer, roles, {
        "do_lower_case": False, "keep_accents": False, "remove_space": True, "padding_side": "left",
        "model_max_length": NO_LENGTH_LIMIT, "clean_up_tokenization_spaces": True,
    }, extra_special=("<eop>", "<eod>"))


def style_xlm_roberta() -> TokenizerFiles:
    """xlm-roberta-base: Unigram with RoBERTa's <s> ... </s> and <mask> last."""
    tk = _tokenizers()
    specials = ("<s>", "<pad>", "</s>", "<unk>")
    tokenizer = unigram_tokenizer(specials, ("<mask>",), "<unk>")
    tokenizer.normalizer = tk.normalizers.Sequence([
        tk.normalizers.Precompiled(precompiled_charsmap()), tk.normalizers.Replace(tk.Regex(" {2,}"), " ")
    ])
    tokenizer.pre_tokenizer = metaspace_unigram_pre_tokenizer()
    added(tokenizer, specials + ("<mask>",), lstrip=("<mask>",))
    tokenizer.post_processor = template(tokenizer, "<s>:0 $A:0 </s>:0", "<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0")
    roles = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
             "unk_token": "<unk>", "mask_token": "<mask>"}
    return TokenizerFiles(tokenizer, roles, {"model_max_length": 512, "clean_up_tokenization_spaces": True})


def style_deberta_v2() -> TokenizerFiles:
    """microsoft/deberta-v3: Unigram with [CLS] ... [SEP] and [MASK] last."""
    tk = _tokenizers()
    specials = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
    tokenizer = unigram_tokenizer(specials, ("[MASK]",), "[UNK]")
    tokenizer.normalizer = tk.normalizers.Sequence([
        tk.normalizers.Strip(left=True, right=True), tk.normalizers.Precompiled(precompiled_charsmap()),
        tk.normalizers.Replace(tk.Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence([metaspace_unigram_pre_tokenizer()])
    added(tokenizer, specials + ("[MASK]",))
    tokenizer.post_processor = template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1")
    roles = {"bos_token": "[CLS]", "eos_token": "[SEP]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    return TokenizerFiles(tokenizer, roles, {"do_lower_case": False, "split_by_punct": False, "vocab_type": "spm",
                                             "model_max_length": 512, "clean_up_tokenization_spaces": True})


# style -> (tokenizer kind, builder)
TOKENIZER_STYLES: dict[str, tuple[str, Callable[[], TokenizerFiles]]] = {
    "bert": (WORDPIECE, style_bert),
    "funnel": (WORDPIECE, style_funnel),
    "mpnet": (WORDPIECE, style_mpnet),
    "gpt2-class": (BYTE_BPE, style_gpt2_class),
    "opt": (BYTE_BPE, style_opt),
    "roberta-class": (BYTE_BPE, style_roberta_class),
    "deberta": (BYTE_BPE, style_deberta),
    "gpt-neox": (BYTE_BPE, style_gpt_neox),
    "generic-fast-llama3": (BYTE_BPE, style_generic_fast_llama3),
    "falcon": (BYTE_BPE, style_falcon),
    "bloom": (BYTE_BPE, style_bloom),
    "modernbert": (BYTE_BPE, style_modernbert),
    "qwen2-regex": (BYTE_BPE, style_qwen2_regex),
    "clip": (BYTE_BPE, style_clip),
    "llama2-metaspace": (SENTENCEPIECE_BPE, lambda: llama2_style(legacy_normalizer=False)),
    "llama2-legacy-normalizer": (SENTENCEPIECE_BPE, lambda: llama2_style(legacy_normalizer=True)),
    "gemma-normalizer": (SENTENCEPIECE_BPE, style_gemma_normalizer),
    "t5": (UNIGRAM, style_t5),
    "albert": (UNIGRAM, style_albert),
    "xlnet": (UNIGRAM, style_xlnet),
    "xlm-roberta": (UNIGRAM, style_xlm_roberta),
    "deberta-v2": (UNIGRAM, style_deberta_v2),
}
# The style `build_tokenizer` uses when given a tokenizer kind.
DEFAULT_STYLE = {WORDPIECE: "bert", BYTE_BPE: "gpt2-class", SENTENCEPIECE_BPE: "llama2-metaspace", UNIGRAM: "t5"}
# The tokenizer class each style's reference repo declares (members may declare another, or none).
STYLE_CLASSES = {
    "bert": "BertTokenizer", "funnel": "FunnelTokenizer", "mpnet": "MPNetTokenizer", "gpt2-class": "GPT2Tokenizer",
    "opt": "GPT2Tokenizer", "roberta-class": "RobertaTokenizer", "deberta": "DebertaTokenizer",
    "gpt-neox": "GPTNeoXTokenizer", "generic-fast-llama3": "PreTrainedTokenizerFast",
    "falcon": "PreTrainedTokenizerFast", "bloom": "BloomTokenizerFast", "modernbert": "PreTrainedTokenizerFast",
    "qwen2-regex": "Qwen2Tokenizer", "clip": "CLIPTokenizer", "llama2-metaspace": "LlamaTokenizer",
    "llama2-legacy-normalizer": "LlamaTokenizer", "gemma-normalizer": "GemmaTokenizer", "t5": "T5Tokenizer",
    "albert": "AlbertTokenizer", "xlnet": "XLNetTokenizer", "xlm-roberta": "XLMRobertaTokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
}


def write_json(path: Path, value: Any) -> None:
    """Write JSON as the zoo writes all its files: sorted keys, two-space indent."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


@functools.cache
def tokenizer_files(style: str) -> TokenizerFiles:
    """The style's tokenizer, built once per process (members sharing a style share it)."""
    return TOKENIZER_STYLES[style][1]()


def build_tokenizer(kind_or_style: str, folder: Path, tokenizer_class: str | None = None,
                    declare_class: bool = True) -> dict[str, int | None]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into folder.

    kind_or_style is a style of TOKENIZER_STYLES or a tokenizer kind (its DEFAULT_STYLE). The
    config declares tokenizer_class (the style's usual class unless given), or with
    declare_class=False none, as older repos, for which AutoTokenizer goes by the model type.
    Returns the special tokens' ids by role ({"pad_token": 0, ...}).
    """
    style = DEFAULT_STYLE.get(kind_or_style, kind_or_style)
    files = tokenizer_files(style)
    tokenizer = files.tokenizer
    tokenizer.save(str(folder / "tokenizer.json"))
    added_tokens = {
        str(index): {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                     "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}
        for index, token in sorted(tokenizer.get_added_tokens_decoder().items())
    }
    special_map: dict[str, Any] = {role: token for role, token in files.roles.items() if token is not None}
    if files.extra_special:
        special_map["additional_special_tokens"] = list(files.extra_special)
    config = {"added_tokens_decoder": added_tokens, **files.settings, **files.roles, **special_map}
    if declare_class:
        config["tokenizer_class"] = tokenizer_class or STYLE_CLASSES[style]
    write_json(folder / "tokenizer_config.json", config)
    write_json(folder / "special_tokens_map.json", special_map)
    return {role: tokenizer.token_to_id(token) if token else None for role, token in files.roles.items()}


# ------------------------------------------------------------------------------ transformers models


def labelled(config: dict[str, Any]) -> dict[str, Any]:
    """Config entries for a classifier head over LABELS."""
    return config | {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}


def save_model(folder: Path, model_type: str, architecture: str, config: dict[str, Any]) -> None:
    """Randomly initialise `architecture` with a tiny config (fixed seed) and save_pretrained it."""
    import torch
    import transformers

    model_config = transformers.AutoConfig.for_model(model_type, **config)
    torch.manual_seed(SEED)
    model = getattr(transformers, architecture)(model_config)
    model.save_pretrained(str(folder))


def token_id_config(model_type: str, token_ids: dict[str, int | None]) -> dict[str, int]:
    """The special token ids (pad_token_id, bos_token_id, ...) that this family's config declares."""
    from transformers import CONFIG_MAPPING

    declared = inspect.signature(CONFIG_MAPPING[model_type].__init__).parameters
    ids = {f"{role}_id": token_id for role, token_id in token_ids.items() if token_id is not None}
    return {name: value for name, value in ids.items() if name in declared}


def build_text(folder: Path, model_type: str, style: str, tokenizer_class: str | None, declare_class: bool,
               architecture: str, config: dict[str, Any]) -> None:
    """A text checkpoint: tokenizer files, then a model whose vocabulary is the tokenizer's."""
    token_ids = build_tokenizer(style, folder, tokenizer_class, declare_class)
    vocab_size = len(tokenizer_files(style).tokenizer.get_vocab(with_added_tokens=True))
    full_config = {"vocab_size": vocab_size, **token_id_config(model_type, token_ids), **config}
    save_model(folder, model_type, architecture, full_config)


def save_image_processor(folder: Path, processor_class: str, settings: dict[str, Any]) -> None:
    """save_pretrained an image processor of the named class (preprocessor_config.json)."""
    import transformers

    getattr(transformers, processor_class)(**settings).save_pretrained(str(folder))


def build_vision(folder: Path, model_type: str, architecture: str, config: dict[str, Any], processor_class: str,
                 processor: dict[str, Any]) -> None:
    """An image checkpoint: preprocessor_config.json with a matching small size, then the model."""
    save_image_processor(folder, processor_class, processor)
    save_model(folder, model_type, architecture, config)


def build_dual_encoder(folder: Path, model_type: str, architecture: str, style: str, text: dict[str, Any],
                       vision: dict[str, Any], processor_class: str, processor: dict[str, Any],
                       config: dict[str, Any]) -> None:
    """A CLIP-like checkpoint: text tokenizer, image processor, and a model with both towers."""
    token_ids = build_tokenizer(style, folder)
    vocab_size = len(tokenizer_files(style).tokenizer.get_vocab(with_added_tokens=True))
    text_ids = {f"{role}_id": token_id for role, token_id in token_ids.items()
                if token_id is not None and role in ("bos_token", "eos_token", "pad_token")}
    save_image_processor(folder, processor_class, processor)
    text_config = {"vocab_size": vocab_size, **text_ids, **text}
    save_model(folder, model_type, architecture, {"text_config": text_config, "vision_config": vision, **config})


def build_audio(folder: Path) -> None:
    """A wav2vec2 speech encoder with its feature extractor: a modality no probe takes."""
    import transformers

    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(str(folder))
    save_model(folder, "wav2vec2", "Wav2Vec2Model", {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
        "conv_dim": [16, 16], "conv_stride": [5, 2], "conv_kernel": [10, 3], "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2, "vocab_size": 32,
    })


ACME_MODELING = '''"""Remote code of the acme-custom checkpoint. Importing this module is the failure under test."""

from pathlib import Path

# Evidence that something imported (and so ran) this file: a loader must never do that.
Path(__file__).with_name("CODE_RAN").write_text("modeling_acme.py was imported\\n")
'''


def build_custom(folder: Path) -> None:
    """A repo of an unknown model type whose auto_map points at code in the folder (never to be run)."""
    import torch
    from safetensors.torch import save_file

    (folder / "modeling_acme.py").write_text(ACME_MODELING)
    write_json(folder / "config.json", {
        "model_type": "acme-custom",
        "architectures": ["AcmeForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_acme.AcmeConfig", "AutoModel": "modeling_acme.AcmeModel",
                     "AutoModelForCausalLM": "modeling_acme.AcmeForCausalLM"},
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "vocab_size": 64,
    })
    generator = torch.Generator().manual_seed(SEED)
    weights = {"embed.weight": torch.randn(64, 32, generator=generator),
               "layers.0.weight": torch.randn(32, 32, generator=generator),
               "layers.1.weight": torch.randn(32, 32, generator=generator)}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})


def build_timm(folder: Path, architecture: str) -> None:
    """One of timm's tiny test architectures in timm's Hub format (config.json + model.safetensors)."""
    import torch

    timm = import_timm()
    from timm.models._hub import save_for_hf

    torch.manual_seed(SEED)
    model = timm.create_model(architecture, pretrained=False, num_classes=len(LABELS))
    save_for_hf(model, str(folder), model_config={"label_names": list(LABELS)}, safe_serialization=True)


# ------------------------------------------------------------------------------ members

BERT_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
             "max_position_embeddings": 128}
# RoBERTa-like models count positions from padding_idx + 1: two more embeddings.
ROBERTA_TINY = BERT_TINY | {"max_position_embeddings": 130}
DECODER_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "intermediate_size": 64, "max_position_embeddings": 128}
VIT_TINY = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37}
SIZE_32 = {"height": 32, "width": 32}
SIZE_64 = {"height": 64, "width": 64}


@dataclass(frozen=True)
class Recipe:
    """A member, how to build its folder, and the card facts that only the builder knows."""

    member: TypeMember
    build: Callable[[Path], None]
    pipeline_tag: str
    base_model: str | None = None


def text(name: str, model_type: str, style: str, architecture: str, config: dict[str, Any], card: str,
         pipeline_tag: str = "feature-extraction", tokenizer_class: str | None = None, declare_class: bool = True,
         base_model: str | None = None) -> Recipe:
    """A text member: a tokenizer of `style` and a tiny `architecture` sized to its vocabulary."""
    member = TypeMember(name, "transformers", model_type, (TEXT,), TOKENIZER_STYLES[style][0], style, card)
    build = functools.partial(build_text, model_type=model_type, style=style, tokenizer_class=tokenizer_class,
                              declare_class=declare_class, architecture=architecture, config=config)
    return Recipe(member, build, pipeline_tag, base_model)


def vision(name: str, model_type: str, architecture: str, config: dict[str, Any], processor_class: str,
           processor: dict[str, Any], card: str, pipeline_tag: str = "image-feature-extraction",
           base_model: str | None = None) -> Recipe:
    """An image member: an image processor and a tiny `architecture`."""
    member = TypeMember(name, "transformers", model_type, (IMAGE,), None, None, card)
    build = functools.partial(build_vision, model_type=model_type, architecture=architecture, config=config,
                              processor_class=processor_class, processor=processor)
    return Recipe(member, build, pipeline_tag, base_model)


def dual(name: str, model_type: str, architecture: str, style: str, processor_class: str, processor: dict[str, Any],
         text_config: dict[str, Any], card: str, config: dict[str, Any] | None = None,
         base_model: str | None = None) -> Recipe:
    """A dual encoder member: tokenizer, image processor, and a text and a ViT-like image tower."""
    member = TypeMember(name, "transformers", model_type, (TEXT, IMAGE), TOKENIZER_STYLES[style][0], style, card)
    build = functools.partial(build_dual_encoder, model_type=model_type, architecture=architecture, style=style,
                              text=text_config, vision=VIT_TINY, processor_class=processor_class, processor=processor,
                              config=config or {})
    return Recipe(member, build, "zero-shot-image-classification", base_model)


def timm_member(architecture: str, card: str, base_model: str | None = None) -> Recipe:
    """A timm member, named timm-<architecture>."""
    member = TypeMember(f"timm-{architecture}", "timm", architecture, (IMAGE,), None, None, card)
    return Recipe(member, functools.partial(build_timm, architecture=architecture), "image-classification",
                  base_model)


RECIPES: tuple[Recipe, ...] = (
    # WordPiece
    text("text-bert", "bert", "bert", "BertForSequenceClassification", labelled(BERT_TINY), "full",
         pipeline_tag="text-classification"),
    text("text-distilbert", "distilbert", "bert", "DistilBertModel", {
        "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37, "max_position_embeddings": 128,
    }, "lineage", tokenizer_class="DistilBertTokenizer", base_model="distilbert/distilbert-base-uncased"),
    # Older repos (google/electra-*) declare no tokenizer_class: AutoTokenizer goes by model_type.
    text("text-electra", "electra", "bert", "ElectraModel", BERT_TINY | {"embedding_size": 32}, "no-pipeline-tag",
         declare_class=False),
    text("text-mobilebert", "mobilebert", "bert", "MobileBertModel", {
        "hidden_size": 32, "embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37, "num_feedforward_networks": 2,
        "max_position_embeddings": 128,
    }, "none", tokenizer_class="MobileBertTokenizer"),
    text("text-convbert", "convbert", "bert", "ConvBertModel",
         BERT_TINY | {"embedding_size": 32, "head_ratio": 2, "conv_kernel_size": 3}, "prose-only",
         tokenizer_class="ConvBertTokenizer"),
    text("text-funnel", "funnel", "funnel", "FunnelModel", {
        "block_sizes": [1, 1], "num_decoder_layers": 1, "d_model": 32, "n_head": 2, "d_head": 16, "d_inner": 37,
    }, "full"),
    text("text-mpnet", "mpnet", "mpnet", "MPNetModel", ROBERTA_TINY, "lineage",
         base_model="microsoft/mpnet-base"),
    # Byte-level BPE
    text("text-gpt2", "gpt2", "gpt2-class", "GPT2LMHeadModel", {
        "n_embd": 32, "n_layer": 2, "n_head": 2, "n_inner": 64, "n_positions": 128,
    }, "full", pipeline_tag="text-generation"),
    text("text-gpt-neo", "gpt_neo", "gpt2-class", "GPTNeoModel", {
        "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
        "attention_types": [[["global", "local"], 1]], "window_size": 16,
    }, "no-pipeline-tag"),
    text("text-phi", "phi", "gpt2-class", "PhiModel", DECODER_TINY, "none",
         tokenizer_class="CodeGenTokenizer"),
    text("text-opt", "opt", "opt", "OPTModel", {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 64,
        "word_embed_proj_dim": 32, "max_position_embeddings": 128,
    }, "full"),
    text("text-roberta", "roberta", "roberta-class", "RobertaForMaskedLM", ROBERTA_TINY, "full",
         pipeline_tag="fill-mask"),
    text("text-bart", "bart", "roberta-class", "BartModel", {
        "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 128,
    }, "no-pipeline-tag", tokenizer_class="BartTokenizer"),
    text("text-deberta", "deberta", "deberta", "DebertaModel", BERT_TINY, "prose-only"),
    text("text-gpt-neox", "gpt_neox", "gpt-neox", "GPTNeoXModel", DECODER_TINY, "lineage",
         base_model="EleutherAI/pythia-14m"),
    text("text-stablelm", "stablelm", "gpt-neox", "StableLmModel", DECODER_TINY, "none"),
    text("text-llama3", "llama", "generic-fast-llama3", "LlamaForCausalLM", DECODER_TINY, "full",
         pipeline_tag="text-generation"),
    text("text-falcon", "falcon", "falcon", "FalconModel", {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 128,
    }, "no-pipeline-tag"),
    text("text-bloom", "bloom", "bloom", "BloomModel", {"hidden_size": 32, "n_layer": 2, "n_head": 4}, "lineage",
         base_model="bigscience/bloom-560m"),
    text("text-modernbert", "modernbert", "modernbert", "ModernBertModel", {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 128, "local_attention": 16,
    }, "full"),
    text("text-qwen2", "qwen2", "qwen2-regex", "Qwen2ForCausalLM", DECODER_TINY, "lineage",
         pipeline_tag="text-generation", base_model="Qwen/Qwen2-0.5B"),
    text("text-qwen3", "qwen3", "qwen2-regex", "Qwen3Model", DECODER_TINY | {"head_dim": 8}, "none"),
    # SentencePiece BPE with byte fallback
    text("text-llama2", "llama", "llama2-metaspace", "LlamaModel", DECODER_TINY, "no-pipeline-tag"),
    text("text-llama2-legacy", "llama", "llama2-legacy-normalizer", "LlamaModel", DECODER_TINY, "prose-only"),
    text("text-mistral", "mistral", "llama2-metaspace", "MistralModel", DECODER_TINY | {"sliding_window": 64},
         "full"),
    text("text-gemma", "gemma", "gemma-normalizer", "GemmaModel", DECODER_TINY | {"head_dim": 8}, "lineage",
         base_model="google/gemma-2b"),
    text("text-gemma2", "gemma2", "gemma-normalizer", "Gemma2Model",
         DECODER_TINY | {"head_dim": 8, "sliding_window": 64}, "none"),
    # Unigram
    text("text-t5", "t5", "t5", "T5ForConditionalGeneration", {
        "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4, "decoder_start_token_id": 0,
    }, "full", pipeline_tag="text2text-generation"),
    text("text-albert", "albert", "albert", "AlbertModel", BERT_TINY | {"embedding_size": 16}, "no-pipeline-tag"),
    text("text-xlnet", "xlnet", "xlnet", "XLNetModel", {"d_model": 32, "n_layer": 2, "n_head": 2, "d_inner": 64},
         "none"),
    text("text-xlm-roberta", "xlm-roberta", "xlm-roberta", "XLMRobertaModel", ROBERTA_TINY, "lineage",
         base_model="FacebookAI/xlm-roberta-base"),
    text("text-deberta-v2", "deberta-v2", "deberta-v2", "DebertaV2Model", BERT_TINY, "full"),
    # Vision (transformers)
    vision("vision-vit", "vit", "ViTForImageClassification", labelled(VIT_TINY), "ViTImageProcessor",
           {"size": SIZE_32}, "full", pipeline_tag="image-classification"),
    vision("vision-deit", "deit", "DeiTModel", VIT_TINY, "DeiTImageProcessor",
           {"size": SIZE_32, "crop_size": SIZE_32}, "no-pipeline-tag"),
    vision("vision-beit", "beit", "BeitForImageClassification", labelled(VIT_TINY), "BeitImageProcessor",
           {"size": SIZE_32, "crop_size": SIZE_32, "do_center_crop": False}, "lineage",
           pipeline_tag="image-classification", base_model="microsoft/beit-base-patch16-224"),
    vision("vision-data2vec-vision", "data2vec-vision", "Data2VecVisionModel", VIT_TINY, "BeitImageProcessor",
           {"size": SIZE_32, "crop_size": SIZE_32, "do_center_crop": False}, "none"),
    vision("vision-dinov2", "dinov2", "Dinov2Model", VIT_TINY | {"mlp_ratio": 2}, "BitImageProcessor",
           {"size": {"shortest_edge": 32}, "crop_size": SIZE_32}, "full"),
    vision("vision-convnext", "convnext", "ConvNextForImageClassification", labelled({
        "image_size": 64, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
    }), "ConvNextImageProcessor", {"size": {"shortest_edge": 64}}, "full", pipeline_tag="image-classification"),
    vision("vision-convnextv2", "convnextv2", "ConvNextV2Model", {
        "image_size": 64, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
    }, "ConvNextImageProcessor", {"size": {"shortest_edge": 64}}, "prose-only"),
    vision("vision-swin", "swin", "SwinModel", {
        "image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2], "window_size": 4,
    }, "ViTImageProcessor", {"size": SIZE_32}, "no-pipeline-tag"),
    vision("vision-resnet", "resnet", "ResNetForImageClassification", labelled({
        "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic",
    }), "ConvNextImageProcessor", {"size": {"shortest_edge": 64}}, "lineage", pipeline_tag="image-classification",
        base_model="microsoft/resnet-50"),
    vision("vision-regnet", "regnet", "RegNetModel", {
        "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "groups_width": 8,
    }, "ConvNextImageProcessor", {"size": {"shortest_edge": 64}}, "none"),
    vision("vision-mobilevit", "mobilevit", "MobileViTModel", {
        "image_size": 64, "hidden_sizes": [16, 24, 32], "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
        "num_attention_heads": 2,
    }, "MobileViTImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": SIZE_64}, "full"),
    vision("vision-efficientnet", "efficientnet", "EfficientNetModel", {
        "image_size": 64, "width_coefficient": 0.25, "depth_coefficient": 0.25,
        # The head width: 1280 scaled by width_coefficient, as in the real B0-B7 configs.
        "hidden_dim": 320,
    }, "EfficientNetImageProcessor", {"size": SIZE_64}, "no-pipeline-tag"),
    vision("vision-levit", "levit", "LevitModel", {
        "image_size": 64, "hidden_sizes": [16, 32, 48], "num_attention_heads": [1, 2, 3], "depths": [1, 1, 1],
        "key_dim": [8, 8, 8],
    }, "LevitImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": SIZE_64}, "prose-only"),
    # Dual encoders: a text tower with its tokenizer and an image tower with its processor.
    dual("vision-clip", "clip", "CLIPModel", "clip", "CLIPImageProcessor",
         {"size": {"shortest_edge": 32}, "crop_size": SIZE_32},
         BERT_TINY | {"max_position_embeddings": 77}, "full", config={"projection_dim": 16}),
    # SigLIP 2's fixed-resolution checkpoints: model_type siglip with a Gemma tokenizer (SigLIP 1's
    # own tokenizer needs sentencepiece, which the zoo does not depend on).
    dual("vision-siglip", "siglip", "SiglipModel", "gemma-normalizer", "SiglipImageProcessor", {"size": SIZE_32},
         BERT_TINY | {"max_position_embeddings": 64}, "lineage", base_model="google/siglip2-base-patch16-224"),
    # timm
    timm_member("test_resnet", "full"),
    timm_member("test_vit", "no-pipeline-tag"),
    timm_member("test_efficientnet", "none"),
    timm_member("test_convnext", "lineage", base_model="timm/test_convnext.r160_in1k"),
    timm_member("test_byobnet", "prose-only"),
    # Members no probe should take.
    Recipe(TypeMember("audio-wav2vec2", "transformers", "wav2vec2", (), None, None, "no-pipeline-tag"), build_audio,
           "feature-extraction"),
    Recipe(TypeMember("custom-acme", "transformers", "acme-custom", (), None, None, "full"), build_custom,
           "text-generation"),
)
MEMBERS: tuple[TypeMember, ...] = tuple(recipe.member for recipe in RECIPES)


# ------------------------------------------------------------------------------ cards


def write_card(folder: Path, recipe: Recipe) -> None:
    """README.md following the member's card convention (see CARD_CONVENTIONS)."""
    member = recipe.member
    if member.card == "none":
        return
    body = (f"# {member.name}\n\nA tiny, randomly initialised `{member.family}` checkpoint of the hubindex type "
            "zoo: its weights are noise, its files have the layout of a real Hub repo.\n")
    if member.card == "prose-only":
        (folder / "README.md").write_text(body, encoding="utf-8")
        return
    from huggingface_hub import ModelCardData

    fields: dict[str, Any] = {"library_name": member.library, "license": "apache-2.0"}
    if member.card in ("full", "lineage"):
        fields["pipeline_tag"] = recipe.pipeline_tag
    if member.card == "lineage":
        fields["base_model"] = recipe.base_model
        fields["tags"] = ["hubindex-type-zoo", member.family]
    if member.family == "acme-custom":
        fields["tags"] = ["custom_code"]
    card = ModelCardData(**fields).to_yaml()
    (folder / "README.md").write_text(f"---\n{card}\n---\n\n{body}", encoding="utf-8")


# ------------------------------------------------------------------------------ building


def select_recipes(names: Iterable[str] | None) -> list[Recipe]:
    """The recipes of the named members (all when names is None), in MEMBERS order."""
    if names is None:
        return list(RECIPES)
    wanted = set(names)
    unknown = wanted - {recipe.member.name for recipe in RECIPES}
    if unknown:
        raise ValueError(f"unknown type zoo member(s) {', '.join(sorted(unknown))}; members: "
                         + ", ".join(member.name for member in MEMBERS))
    return [recipe for recipe in RECIPES if recipe.member.name in wanted]


def build_member(recipe: Recipe, out: Path) -> None:
    """Build one member in a staging folder, then rename it into place."""
    # Staging folders lie one level down, so a crawl of OUT never takes a half-built member.
    staging_root = out / STAGING_DIR
    staging_root.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{recipe.member.name}.", dir=staging_root))
    try:
        recipe.build(staging)
        write_card(staging, recipe)
        staging.chmod(0o755)  # mkdtemp's 0700 would make the member private
        try:
            os.rename(staging, out / recipe.member.name)
        except OSError:
            if not (out / recipe.member.name).is_dir():  # else a concurrent build installed it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_type_zoo(out: Path, names: Iterable[str] | None = None) -> list[TypeMember]:
    """Build the members (all, or those named) as folders OUT/<name>/; deterministic (seeded); skip members already complete."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    recipes = select_recipes(names)
    todo = [recipe for recipe in recipes if not (out / recipe.member.name).is_dir()]
    if todo:
        with quiet_transformers():
            for recipe in todo:
                build_member(recipe, out)
        with contextlib.suppress(OSError):
            (out / STAGING_DIR).rmdir()  # only when no other build is staging there
    return [recipe.member for recipe in recipes]


def folder_size(path: Path) -> int:
    """Bytes in the files under path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    """Build the zoo into argv[0] (or the members named after it); print each member, the size and time."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python tests/type_zoo.py OUT [NAME ...]", file=sys.stderr)
        return 2
    out = Path(argv[0])
    start = time.perf_counter()
    members = build_type_zoo(out, argv[1:] or None)
    seconds = time.perf_counter() - start
    for member in members:
        size = folder_size(out / member.name)
        print(f"{member.name:28} {member.library:12} {member.family:18} {','.join(member.modalities) or '-':11} "
              f"{member.tokenizer_style or '-':26} {member.card:16} {size / 1e6:6.2f} MB")
    total = sum(folder_size(out / member.name) for member in members)
    print(f"{len(members)} members in {out} ({total / 1e6:.1f} MB), built in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
