"""Probing the Hub's variety: every family of the type zoo (tests/type_zoo.py) gets features in its
modalities, words are tokenized as in running text for every tokenizer kind, and features do not
depend on the batch size.

The zoo (tiny random-initialised checkpoints of 30+ transformers text types over the four tokenizer
kinds, 15 transformers vision types incl. CLIP and SigLIP, a timm sample, an audio model and a
custom-code repo) is built, crawled with `hubindex crawl local` and probed once per module on a
user text corpus (`text:PATH`) and on real photos.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubindex.store import EmbeddingStore
from hubindex.torch_compat import ensure_torchvision
from hubindex.types import IMAGE, TEXT
from hubindex_plugins.corpora import SampleImages
from conftest import run_hubindex
from type_zoo import BYTE_BPE, MEMBERS, SENTENCEPIECE_BPE, UNIGRAM, WORDPIECE, TypeMember, build_type_zoo

# Running text with what trips tokenizers: digits, %, commas inside numbers, apostrophes, quotes,
# currency signs, accents, abbreviations with dots.
LINES = (
    "Shares in the bank rose 76% in 2004, and he couldn't stop the sale of its U.S. unit today.",
    'The naïve café owner said: "We\'ll open again on 12 March" - after £5.2bn of losses at the group.',
    "Mr Smith's firm, which employs 1,200 people, expects profits of about $3.4m (€2.9m) this year.",
    "Analysts in London and New York expect the central bank to hold interest rates in the spring.",
)
N_IMAGES = 6
TEXT_MEMBERS = [m for m in MEMBERS if TEXT in m.modalities]
IMAGE_MEMBERS = [m for m in MEMBERS if IMAGE in m.modalities]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("type-zoo")
    build_type_zoo(out)
    return out


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("text-corpus")
    (folder / "news.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return f"text:{folder}"


def _probe_all(zoo: Path, index_dir: Path, text_corpus: str, *options: str) -> dict[str, str]:
    """Crawl the zoo into a fresh index and probe everything on both corpora; the commands' stdout."""
    crawl = run_hubindex("crawl", "local", str(zoo), index_dir=index_dir)
    assert crawl.exit_code == 0, crawl.stderr
    out = {}
    for corpus in (text_corpus, "sample-images"):
        result = run_hubindex("probe", "--where", "true", "--corpus", corpus, "--max-items", str(N_IMAGES)
                              if corpus == "sample-images" else "1000", "--device", "cpu", *options, index_dir=index_dir)
        assert result.exit_code == 0, result.stderr
        out[corpus] = result.stdout
    return out


@pytest.fixture(scope="module")
def probed(zoo: Path, text_corpus: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_dir = tmp_path_factory.mktemp("probed") / "index"
    _probe_all(zoo, index_dir, text_corpus)
    return index_dir


def _sql(index_dir: Path, query: str) -> list[dict[str, Any]]:
    result = run_hubindex("sql", query, "--format", "json", "--max-rows", "100000", index_dir=index_dir)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _features(index_dir: Path) -> dict[tuple[str, str], np.ndarray]:
    """{(member name, corpus modality): stored feature matrix}."""
    store = EmbeddingStore(index_dir)
    rows = _sql(index_dir, "SELECT checkpoint_id, corpus, path, n_items, file_sha256 FROM embeddings")
    return {
        (Path(row["checkpoint_id"]).name, IMAGE if row["corpus"] == "sample-images" else TEXT):
            store.read(row["path"], row["n_items"], row["file_sha256"])
        for row in rows
    }


def _words() -> list[list[str]]:
    return [line.split() for line in LINES]


# ------------------------------------------------------------------------------------ coverage


def test_the_zoo_is_as_varied_as_the_issue_asks() -> None:
    text_types = {m.family for m in MEMBERS if m.library == "transformers" and m.modalities == (TEXT,)}
    vision_types = {m.family for m in MEMBERS if m.library == "transformers" and IMAGE in m.modalities}
    assert len(text_types) >= 25 and len(vision_types) >= 10
    assert {"clip", "siglip"} <= vision_types
    assert {m.tokenizer_kind for m in TEXT_MEMBERS} >= {WORDPIECE, BYTE_BPE, SENTENCEPIECE_BPE, UNIGRAM}
    assert len([m for m in MEMBERS if m.library == "timm"]) >= 5
    assert [m for m in MEMBERS if not m.modalities], "members no probe should take"


def test_every_member_gets_features_in_its_modalities_and_nothing_else(probed: Path, zoo: Path) -> None:
    features = _features(probed)
    got = {name: {modality for (n, modality) in features if n == name} for name in (m.name for m in MEMBERS)}
    expected = {m.name: set(m.modalities) for m in MEMBERS}
    assert got == expected
    # Every word and every image has features (the lines are far shorter than any model's limit).
    for (name, modality), matrix in features.items():
        assert np.isfinite(matrix).all(), name
        assert matrix.shape[0] == (sum(len(line) for line in _words()) if modality == TEXT else N_IMAGES)

    # What no probe takes is in `failures`, with its reason, for SQL to find.
    unsupported = {Path(row["subject"]).name: row["message"] for row in _sql(
        probed, "SELECT subject, message FROM open_failures WHERE stage = 'probe' AND kind = 'unsupported'")}
    assert set(unsupported) == {m.name for m in MEMBERS if not m.modalities}
    assert all("no installed probe takes it" in message for message in unsupported.values())
    assert _sql(probed, "SELECT count(*) AS n FROM open_failures WHERE kind <> 'unsupported'") == [{"n": 0}]
    assert not list(zoo.rglob("CODE_RAN")), "a repo's custom code ran"


# ------------------------------------------------------------------------------------ word alignment


def _load(folder: Path) -> tuple[Any, Any]:
    """Tokenizer and the text side of the model, loaded directly with transformers."""
    ensure_torchvision()
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    if hasattr(model, "text_model") and hasattr(model, "vision_model"):
        model = model.text_model
    elif model.config.is_encoder_decoder:
        model = model.get_encoder()
    return tokenizer, model


def _running_text_last_tokens(tokenizer: Any, words: list[str]) -> tuple[Any, list[int]]:
    """The joined line's encoding and, for each word, the index of the last token that overlaps it."""
    text = " ".join(words)
    encoding = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoding.pop("offset_mapping")[0].tolist()
    last, start = [], 0
    for word in words:
        end = start + len(word)
        overlapping = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start and e <= end]
        last.append(overlapping[-1])
        start = end + 1
    return encoding, last


@pytest.mark.parametrize("member", TEXT_MEMBERS, ids=lambda m: m.name)
def test_stored_text_features_equal_a_running_text_computation(probed: Path, zoo: Path, member: TypeMember) -> None:
    import torch

    stored = _features(probed)[(member.name, TEXT)]
    tokenizer, model = _load(zoo / member.name)
    accepted = set(inspect.signature(model.forward).parameters)
    rows = []
    for words in _words():
        encoding, last = _running_text_last_tokens(tokenizer, words)
        with torch.inference_mode():
            hidden = model(**{k: v for k, v in encoding.items() if k in accepted}).last_hidden_state[0]
        rows.extend(hidden[last].numpy())
    np.testing.assert_allclose(stored, np.array(rows), atol=1e-4, rtol=1e-4)


# One member per tokenizer style; the mid-line words whose tokens carry the word-start marker.
MARKERS = {BYTE_BPE: "Ġ", SENTENCEPIECE_BPE: "▁", UNIGRAM: "▁"}
STYLES = {m.tokenizer_style: m for m in TEXT_MEMBERS}


@pytest.mark.parametrize("member", list(STYLES.values()), ids=lambda m: f"{m.tokenizer_kind}-{m.tokenizer_style}")
def test_a_pre_split_word_is_tokenized_as_inside_running_text(zoo: Path, member: TypeMember) -> None:
    """The probe's tokens of each word (from offsets) are the word's tokens in running text - with the
    word-start marker mid-line - and they cover the word exactly, for every tokenizer style."""
    from hubindex_plugins.probe_text import word_of_tokens, word_spans

    tokenizer, _ = _load(zoo / member.name)
    for words in _words():
        text, starts, ends = word_spans(words)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        owner = word_of_tokens(np.array(encoding["offset_mapping"]), starts, ends)
        tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
        assert (owner >= 0).sum() >= len(words) and set(owner[owner >= 0]) == set(range(len(words)))
        for index, word in enumerate(words):
            mine = [t for t, w in zip(encoding["input_ids"], owner) if w == index]
            # Independently: the word after some running text (mid-line), or alone (a line's first word
            # starts the text); its tokens are those ending inside it.
            context = "the " if index > 0 else ""
            alone = tokenizer(context + word, add_special_tokens=False, return_offsets_mapping=True)
            own = [t for t, (s, e) in zip(alone["input_ids"], alone["offset_mapping"]) if e > len(context) and e > s]
            assert mine == own, (word, tokenizer.convert_ids_to_tokens(mine), tokenizer.convert_ids_to_tokens(own))
            marker = MARKERS.get(member.tokenizer_kind)
            first = tokens[list(owner).index(index)]
            if index > 0 and marker and member.tokenizer_style != "clip":
                assert first.startswith(marker) or tokens[list(owner).index(index) - 1] == marker, (word, first)
            if member.tokenizer_kind == WORDPIECE:
                assert not first.startswith("##"), (word, first)


def test_pre_split_tokenization_fails_where_running_text_does_not(zoo: Path) -> None:
    """The old way (`is_split_into_words`, add_prefix_space) loses the space marker for the generic fast
    class and mis-splits digits for Qwen2-style regexes: the test above has teeth."""
    for style in ("generic-fast-llama3", "qwen2-regex"):
        tokenizer, _ = _load(zoo / STYLES[style].name)
        words = LINES[0].split()
        running = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
        try:
            tokenizer = type(tokenizer).from_pretrained(zoo / STYLES[style].name, add_prefix_space=True)
        except Exception:  # noqa: BLE001 - some classes refuse the option; the plain reload is what the old probe used
            pass
        pre_split = tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]
        assert pre_split != running, style


# ------------------------------------------------------------------------------------ batch size


def test_features_do_not_depend_on_the_batch_size(probed: Path, zoo: Path, text_corpus: str,
                                                  tmp_path: Path) -> None:
    batch_one = tmp_path / "batch-one"
    _probe_all(zoo, batch_one, text_corpus, "--batch-size", "1")
    default, single = _features(probed), _features(batch_one)
    assert set(default) == set(single)
    for key in sorted(default):
        np.testing.assert_allclose(single[key], default[key], atol=1e-4, rtol=1e-4, err_msg=str(key))


def test_a_model_that_is_not_padding_invariant_is_run_without_padding(zoo: Path) -> None:
    """Funnel's pooling attention sees padding: detected on the first padded batch, then run unpadded."""
    from hubindex_plugins.model_loading import each_hidden_state
    from hubindex_plugins.probe_text import TransformersTextProbe, _encodings, _pad_id

    probe = TransformersTextProbe(device="cpu")
    verdicts = {}
    for name in ("text-funnel", "text-bert"):
        model, tokenizer = probe.load({"checkpoint_id": f"local:{zoo / name}", "local_path": str(zoo / name)})
        forward, _ = probe._forward(model)
        encodings = _encodings(tokenizer(list(LINES)))
        rows: dict[int, np.ndarray] = {}
        verdicts[name] = each_hidden_state(forward, encodings, 4, _pad_id(tokenizer), "cpu", "float32",
                                           lambda row, hidden, _: rows.__setitem__(row, hidden))
        for row, encoding in enumerate(encodings):  # each row as if alone
            alone: dict[int, np.ndarray] = {}
            each_hidden_state(forward, [encoding], 1, _pad_id(tokenizer), "cpu", "float32",
                              lambda _row, hidden, _: alone.__setitem__(0, hidden))
            np.testing.assert_allclose(rows[row], alone[0], atol=1e-4)
    assert verdicts == {"text-funnel": False, "text-bert": True}


# ------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("name, pooling", [("vision-vit", "cls"), ("vision-deit", "cls"), ("vision-clip", "pooler"),
                                           ("vision-siglip", "pooler"), ("vision-resnet", "pooler"),
                                           ("vision-beit", "pooler"), ("vision-dinov2", "pooler")])
def test_image_features_are_the_familys_own_pooling(probed: Path, zoo: Path, name: str, pooling: str) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoModel

    ensure_torchvision()
    processor = AutoImageProcessor.from_pretrained(zoo / name)
    model = AutoModel.from_pretrained(zoo / name).eval()
    tower = model.vision_model if hasattr(model, "vision_model") else model
    with torch.inference_mode():
        output = tower(pixel_values=processor(images=SampleImages(max_items=N_IMAGES).load().items,
                                              return_tensors="pt")["pixel_values"])
    expected = output.last_hidden_state[:, 0] if pooling == "cls" else output.pooler_output.flatten(1)
    np.testing.assert_allclose(_features(probed)[(name, IMAGE)], expected.numpy(), atol=1e-4, rtol=1e-4)


def test_task_examples_of_an_image_classifier_get_the_same_features_and_its_head(zoo: Path) -> None:
    from hubindex_plugins.probe_vision import TransformersImageProbe

    classifiers = [m for m in IMAGE_MEMBERS if (zoo / m.name / "config.json").is_file() and any(
        a.endswith("ForImageClassification") for a in json.loads((zoo / m.name / "config.json").read_text())
        .get("architectures") or [])]
    assert classifiers, "the zoo has image classifiers"
    images = SampleImages(max_items=4).load()
    probe = TransformersImageProbe(device="cpu")
    for member in classifiers:
        config = json.loads((zoo / member.name / "config.json").read_text())
        row = {"checkpoint_id": f"local:{zoo / member.name}", "local_path": str(zoo / member.name),
               "architectures": config["architectures"]}
        examples = probe.embed_examples(row, images.items)
        np.testing.assert_allclose(examples.features, probe.embed(row, images).features, atol=1e-4, err_msg=member.name)
        assert examples.head_probs is not None and examples.head_probs.shape == (4, len(config["id2label"]))
        np.testing.assert_allclose(examples.head_probs.sum(axis=1), 1.0, atol=1e-5)
