"""Probes and `hubindex probe`: real tiny models on disk, a real DuckDB catalog, real FAISS files.

The zoo, built once per module in a temporary folder:
  bert-tiny      random 2-layer BertModel + WordPiece tokenizer (16 positions: lines get truncated)
  bert-nan       the same with a NaN in its embedding LayerNorm: every feature is NaN
  bert-wide      random 2-layer BertModel of width 256 and 512 positions (a slow probe to interrupt)
  resnet-tiny    timm test_resnet, random weights, timm folder format, non-default preprocessing
  resnet-nan     the same with a NaN in its first convolution
  resnet-broken  timm config.json with a corrupt model.safetensors
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubindex.catalog import Catalog
from hubindex.store import EmbeddingStore
from hubindex.torch_compat import ensure_torchvision, import_timm
from hubindex.types import TEXT, CorpusData, text_content_hash
from hubindex_plugins.corpora import SampleImages
from hubindex_plugins.probe_image import TimmImageProbe
from hubindex_plugins.probe_text import TransformersTextProbe

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "news", "bank", "play", "##ing", "##er",
    "un", "##believ", "##able", "market", "rose", "fell", "today", ",", ".", "and", "of", "to", "in",
]
MAX_POSITIONS = 16
# The good resnet's preprocessing differs from timm's defaults for test_resnet, so features only
# match the reference if the probe used the model's own pretrained_cfg.
PREPROCESSING = {"input_size": [3, 96, 96], "interpolation": "bicubic", "crop_pct": 1.0,
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
GOOD = ("bert-tiny", "resnet-tiny")
N_ITEMS = 120  # words of bbc-news for the text models, images of sample-images for the others


def _bert(folder: Path, poison: bool = False, hidden: int = 32, positions: int = MAX_POSITIONS) -> None:
    ensure_torchvision()
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=positions)
    model = BertModel(config)
    if poison:
        with torch.no_grad():
            model.embeddings.LayerNorm.weight[0] = math.nan
    model.save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(folder)


def _resnet(folder: Path, poison: bool = False) -> None:
    import torch
    from timm.models._hub import save_for_hf

    timm = import_timm()
    torch.manual_seed(1)
    model = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    if poison:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = math.nan
    save_for_hf(model, folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(PREPROCESSING)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    _bert(root / "bert-tiny")
    _bert(root / "bert-nan", poison=True)
    _bert(root / "bert-wide", hidden=256, positions=512)  # slow enough on a long corpus to be interrupted
    _resnet(root / "resnet-tiny")
    _resnet(root / "resnet-nan", poison=True)
    (root / "resnet-broken").mkdir()
    shutil.copy(root / "resnet-tiny" / "config.json", root / "resnet-broken" / "config.json")
    (root / "resnet-broken" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    return root


@pytest.fixture
def crawled(zoo: Path, hubindex: Any) -> Path:
    result = hubindex("crawl", "local", str(zoo))
    assert result.exit_code == 0, result.stderr
    return zoo


def cid(zoo: Path, name: str) -> str:
    return f"local:{zoo / name}"


def _row(zoo: Path, name: str) -> dict[str, Any]:
    return {"checkpoint_id": cid(zoo, name), "local_path": str(zoo / name), "library_name": "transformers"}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts model loads and forward passes (any torch module called), however a probe gets there."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    timm = import_timm()
    counts = {"forward": 0, "load": 0}

    def counting(original: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch.nn.Module, "__call__", counting(torch.nn.Module.__call__, "forward"))
    monkeypatch.setattr(AutoModel, "from_pretrained", staticmethod(counting(AutoModel.from_pretrained, "load")))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", staticmethod(counting(AutoTokenizer.from_pretrained, "load")))
    monkeypatch.setattr(timm, "create_model", counting(timm.create_model, "load"))
    return counts


def _text_corpus(lines: list[list[str]]) -> CorpusData:
    items = [w for line in lines for w in line]
    return CorpusData("toy-lines", TEXT, items, text_content_hash(lines), "test", "none", lines=lines)


def _direct_hidden(folder: Path, words: list[str]) -> tuple[np.ndarray, list[str]]:
    """The model's last hidden state on one line, unbatched, and its tokens."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_POSITIONS,
                         return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoding).last_hidden_state[0].numpy()
    return hidden, tokenizer.convert_ids_to_tokens(encoding["input_ids"][0])


# ------------------------------------------------------------------------------------ text


def test_word_row_is_the_hidden_state_of_its_last_subword(zoo: Path) -> None:
    line = ["Playing", "the", "unbelievable", "market", "today"]
    corpus = _text_corpus([["news", "rose"], line])
    output = TransformersTextProbe(device="cpu", batch_size=2).embed(_row(zoo, "bert-tiny"), corpus)
    assert output.features.shape == (7, 32) and not output.dropped.any()

    hidden, tokens = _direct_hidden(zoo / "bert-tiny", line)
    assert tokens == ["[CLS]", "play", "##ing", "the", "un", "##believ", "##able", "market", "today", "[SEP]"]
    rows = output.features[2:]
    for word, last in enumerate([2, 3, 6, 7, 8]):  # positions of each word's last sub-word
        np.testing.assert_allclose(rows[word], hidden[last], atol=1e-5)
    assert not np.allclose(rows[0], hidden[1], atol=1e-3)  # not the first sub-word ("play")
    assert not np.allclose(rows[2], hidden[4], atol=1e-3)  # not "un"


def test_words_lost_to_truncation_are_nan_rows(zoo: Path) -> None:
    # 16 positions = [CLS] + 14 tokens + [SEP]. Line 1: 20 one-token words, the last 6 are lost.
    # Line 2: 13 one-token words, then "playing" of which only "play" fits: it is dropped too.
    words = ["the", "news", "bank", "market", "rose", "fell", "today", "a", "and", "of"]
    long_line = (words * 2)[:20]
    cut_word = words + ["to", "in", "a", "playing", "news"]
    corpus = _text_corpus([long_line, cut_word, ["news", "rose"]])
    output = TransformersTextProbe(device="cpu").embed(_row(zoo, "bert-tiny"), corpus)

    expected = [False] * 14 + [True] * 6 + [False] * 13 + [True, True] + [False, False]
    assert output.dropped.tolist() == expected
    assert np.isnan(output.features[output.dropped]).all()
    assert np.isfinite(output.features[~output.dropped]).all()
    hidden, _ = _direct_hidden(zoo / "bert-tiny", long_line)
    np.testing.assert_allclose(output.features[:14], hidden[1:15], atol=1e-5)


def test_probes_accept_their_checkpoints() -> None:
    text, image = TransformersTextProbe(), TimmImageProbe()
    assert text.accepts({"checkpoint_id": "hf:org/bert", "library_name": "transformers", "pipeline_tag": "fill-mask"})
    assert not text.accepts({"checkpoint_id": "hf:org/vit", "library_name": "transformers",
                             "pipeline_tag": "image-classification"})
    assert not text.accepts({"checkpoint_id": "timm:resnet18.a1_in1k", "library_name": "timm"})
    assert image.accepts({"checkpoint_id": "timm:resnet18.a1_in1k", "library_name": "timm"})
    assert image.accepts({"checkpoint_id": "local:/x", "library_name": "timm", "local_path": "/x"})
    assert not image.accepts({"checkpoint_id": "hf:org/bert", "library_name": "transformers"})
    row = {"checkpoint_id": "hf:org/m", "sha": "hub", "local_path": "/cache/snap", "local_sha": "local"}
    assert text.revision(row) == "local"
    assert text.revision({**row, "local_path": None}) == "hub"


# ------------------------------------------------------------------------------------ command


def _embeddings(index_dir: Path) -> dict[str, dict[str, Any]]:
    with Catalog(index_dir / "catalog.duckdb", read_only=True) as catalog:
        cur = catalog.conn.execute("SELECT * FROM embeddings")
        names = [d[0] for d in cur.description]
        return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def _reference_image_features(folder: Path) -> np.ndarray:
    """A direct timm forward: the saved weights, the model's preprocessing, pre-logits features."""
    import torch
    from safetensors.torch import load_file

    timm = import_timm()
    config = json.loads((folder / "config.json").read_text())
    model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"])
    model.load_state_dict(load_file(folder / "model.safetensors"))
    model.eval()
    cfg = config["pretrained_cfg"]
    transform = timm.data.create_transform(
        input_size=tuple(cfg["input_size"]), interpolation=cfg["interpolation"], mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]), crop_pct=cfg["crop_pct"], crop_mode=cfg["crop_mode"],
    )
    images = SampleImages(max_items=N_ITEMS).load().items
    with torch.inference_mode():
        batch = torch.stack([transform(image) for image in images])
        return model.forward_head(model.forward_features(batch), pre_logits=True).numpy()


def test_probe_stores_features_and_a_second_run_reuses_them(
    crawled: Path, hubindex: Any, index_dir: Path, calls: dict[str, int]
) -> None:
    ids = [cid(crawled, name) for name in GOOD]
    args = ["probe", *ids, "--device", "cpu", "--max-items", str(N_ITEMS)]
    first = hubindex(*args)
    assert first.exit_code == 0, first.stderr
    assert "2 checkpoints; 2 probed, 0 reused, 0 failed" in first.stdout
    assert calls["forward"] > 0 and calls["load"] == 3  # tokenizer + model, timm model

    stored = _embeddings(index_dir)
    text, image = stored[ids[0]], stored[ids[1]]
    assert (text["corpus"], text["n_items"], text["dim"], text["pooling"]) == ("bbc-news", N_ITEMS, 32, "last-subword")
    assert 0 < text["n_kept"] < N_ITEMS  # 16 positions: most of each line is truncated away
    assert (image["corpus"], image["n_items"], image["n_kept"], image["dim"]) == ("sample-images", N_ITEMS, N_ITEMS, 96)

    # Stored matrices round-trip, and the image features are exactly a direct timm forward.
    store = EmbeddingStore(index_dir)
    features = store.read(text["path"], text["n_items"], text["file_sha256"])
    assert np.isnan(features).all(axis=1).sum() == N_ITEMS - text["n_kept"]
    assert np.isfinite(features[~np.isnan(features).all(axis=1)]).all()
    np.testing.assert_allclose(store.read(image["path"], N_ITEMS, image["file_sha256"]),
                               _reference_image_features(crawled / "resnet-tiny"), rtol=1e-5, atol=1e-5)

    # The second identical run loads no model and runs no forward pass.
    calls.update(forward=0, load=0)
    again = hubindex(*args)
    assert again.exit_code == 0, again.stderr
    assert "2 checkpoints; 0 probed, 2 reused, 0 failed" in again.stdout
    assert calls == {"forward": 0, "load": 0}
    assert _embeddings(index_dir)[ids[0]]["file_sha256"] == text["file_sha256"]

    # A stored file that changed on disk is not trusted: that checkpoint alone is probed again.
    (index_dir / text["path"]).write_bytes(b"garbage")
    third = hubindex(*args)
    assert "1 probed, 1 reused" in third.stdout
    assert store.is_valid(text["path"], text["file_sha256"])


def test_a_copy_of_a_probed_checkpoint_shares_its_features(
    crawled: Path, hubindex: Any, index_dir: Path, tmp_path: Path, calls: dict[str, int]
) -> None:
    original = cid(crawled, "bert-tiny")
    assert hubindex("probe", original, "--max-items", "30").exit_code == 0
    copy = tmp_path / "copies" / "bert-tiny"
    shutil.copytree(crawled / "bert-tiny", copy)
    assert hubindex("crawl", "local", str(copy)).exit_code == 0  # same files: same sha

    calls.update(forward=0, load=0)
    result = hubindex("probe", f"local:{copy}", "--max-items", "30")
    assert "1 checkpoints; 0 probed, 1 reused" in result.stdout
    assert calls == {"forward": 0, "load": 0}
    stored = _embeddings(index_dir)
    assert stored[f"local:{copy}"]["path"] == stored[original]["path"]
    assert stored[f"local:{copy}"]["checkpoint_sha"] == stored[original]["checkpoint_sha"]


def test_probes_and_corpora_are_builtin_plugins(hubindex: Any) -> None:
    listed = {entry["name"]: entry for entry in json.loads(hubindex("plugins", "--json").stdout)}
    assert listed["hubindex_plugins.probe_text"]["probes"] == ["transformers-text (v2)"]
    assert listed["hubindex_plugins.probe_image"]["probes"] == ["timm-image (v1)"]
    assert listed["hubindex_plugins.probe_vision"]["probes"] == ["transformers-image (v1)"]
    assert {"bbc-news (v1)", "text (v1)", "images (v1)"} <= set(listed["hubindex_plugins.corpora"]["corpora"])


def test_broken_and_nan_checkpoints_are_recorded_and_the_run_goes_on(
    crawled: Path, hubindex: Any, index_dir: Path
) -> None:
    result = hubindex("probe", "--where", "true", "--device", "cpu", "--max-items", "40")
    assert result.exit_code == 0, result.stderr
    assert "6 checkpoints; 3 probed, 0 reused, 3 failed, 0 without a matching probe" in result.stdout
    assert set(_embeddings(index_dir)) == {cid(crawled, name) for name in (*GOOD, "bert-wide")}

    failures = hubindex("sql", "SELECT subject, stage, kind, message FROM open_failures ORDER BY subject",
                        "--format", "json")
    rows = {row["subject"].rsplit("/", 1)[-1]: row for row in json.loads(failures.stdout)}
    assert set(rows) == {"bert-nan", "resnet-broken", "resnet-nan"}
    assert {row["stage"] for row in rows.values()} == {"probe"}
    assert rows["resnet-broken"]["kind"] == "load-error"
    assert "SafetensorError" in rows["resnet-broken"]["message"]
    assert rows["bert-nan"]["kind"] == rows["resnet-nan"]["kind"] == "non-finite"
    assert "NaN or inf" in rows["bert-nan"]["message"]
    assert "failed " + cid(crawled, "resnet-broken") in result.stderr

    # A text corpus for every checkpoint: the image models have no matching probe.
    text_only = hubindex("probe", "--where", "library_name = 'timm'", "--corpus", "bbc-news", "--max-items", "40")
    assert "3 checkpoints; 0 probed, 0 reused, 0 failed, 3 without a matching probe" in text_only.stdout
    assert text_only.exit_code == 4, "nothing probed is exit 4, not success"
    assert "no checkpoint was probed" in text_only.stderr


def test_a_probe_where_every_checkpoint_fails_exits_4(crawled: Path, hubindex: Any) -> None:
    broken = hubindex("probe", "--where", "checkpoint_id LIKE '%-nan' OR checkpoint_id LIKE '%-broken'",
                      "--device", "cpu", "--max-items", "20")
    assert broken.exit_code == 4, broken.stderr
    assert "3 checkpoints; 0 probed, 0 reused, 3 failed" in broken.stdout
    assert broken.stderr.splitlines()[-1].startswith("hubindex: error: no checkpoint was probed: 3 failed")


def test_a_where_that_matches_nothing_exits_4(crawled: Path, hubindex: Any) -> None:
    result = hubindex("probe", "--where", "params_total > 1e15")
    assert result.exit_code == 4
    assert result.stderr == "hubindex: error: no checkpoint matches --where 'params_total > 1e15'\n"


def test_where_is_a_read_only_condition(crawled: Path, hubindex: Any) -> None:
    selected = hubindex("probe", "--where", "checkpoint_id LIKE '%bert-tiny'", "--device", "cpu", "--max-items", "20")
    assert selected.exit_code == 0 and "1 checkpoints; 1 probed" in selected.stdout

    refused = hubindex("probe", "--where", "true; DELETE FROM checkpoints")
    assert refused.exit_code == 2 and "';' is not allowed" in refused.stderr
    external = hubindex("probe", "--where", "checkpoint_id IN (SELECT * FROM read_csv('/etc/passwd'))")
    assert external.exit_code == 1 and "hubindex: error:" in external.stderr
    bad = hubindex("probe", "--where", "no_such_column = 1")
    assert bad.exit_code == 2 and "--where 'no_such_column = 1' cannot run" in bad.stderr
    for condition in ("params_total <", "(params_total > 3", "library_name = 'timm' AND"):
        unfinished = hubindex("probe", "--where", condition)
        assert unfinished.exit_code == 2, unfinished.stderr
        assert unfinished.stderr.startswith(f"hubindex: error: --where {condition!r} is not a valid SQL condition")
    count = hubindex("sql", "SELECT count(*) AS n FROM checkpoints", "--format", "csv")
    assert count.stdout.splitlines() == ["n", "6"]


def test_probe_arguments_are_checked(crawled: Path, hubindex: Any) -> None:
    nothing = hubindex("probe")
    assert nothing.exit_code == 2 and "--where" in nothing.stderr
    both = hubindex("probe", cid(crawled, "bert-tiny"), "--where", "true")
    assert both.exit_code == 2 and "not both" in both.stderr
    unknown = hubindex("probe", "local:/nowhere")
    assert unknown.exit_code == 2 and "not in the catalog: local:/nowhere" in unknown.stderr


def test_cuda_without_a_gpu_is_refused(crawled: Path, hubindex: Any) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    result = hubindex("probe", cid(crawled, "bert-tiny"), "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr


@pytest.mark.gpu
def test_cuda_features_match_cpu(zoo: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    corpus = _text_corpus([["Playing", "the", "unbelievable", "market", "today"], ["news", "rose"]])
    row = _row(zoo, "bert-tiny")
    cpu = TransformersTextProbe(device="cpu").embed(row, corpus).features
    np.testing.assert_allclose(TransformersTextProbe(device="cuda").embed(row, corpus).features, cpu, atol=1e-4)
    images = SampleImages(max_items=8).load()
    timm_row = {"checkpoint_id": cid(zoo, "resnet-tiny"), "local_path": str(zoo / "resnet-tiny"), "library_name": "timm"}
    cpu = TimmImageProbe(device="cpu").embed(timm_row, images).features
    np.testing.assert_allclose(TimmImageProbe(device="cuda").embed(timm_row, images).features, cpu, atol=1e-4)


# ------------------------------------------------------------------------------------ limits, signals


def test_checkpoints_over_the_size_limit_are_recorded_not_loaded(
    crawled: Path, hubindex: Any, calls: dict[str, int]
) -> None:
    ids = [cid(crawled, "bert-tiny"), cid(crawled, "bert-wide")]
    sizes = json.loads(hubindex("sql", "SELECT checkpoint_id, params_total FROM checkpoints WHERE "
                                "checkpoint_id LIKE '%bert-%' ORDER BY 1", "--format", "json").stdout)
    wide = next(row["params_total"] for row in sizes if row["checkpoint_id"] == ids[1])
    tiny = next(row["params_total"] for row in sizes if row["checkpoint_id"] == ids[0])
    assert tiny < 100_000 < wide

    result = hubindex("probe", *ids, "--max-items", "30", "--max-params", "100K")
    assert "2 checkpoints; 1 probed, 0 reused, 1 failed" in result.stdout
    assert calls["load"] == 2  # the small one's tokenizer and model; nothing of the large one
    failure = json.loads(hubindex("sql", "SELECT subject, kind, message FROM open_failures", "--format", "json").stdout)
    assert [(f["subject"], f["kind"]) for f in failure] == [(ids[1], "too-large")]
    assert f"{wide:,} parameters, over the limit of 100,000 (--max-params)" in failure[0]["message"]

    # Without --max-params the limit is what memory holds: this machine holds both.
    again = hubindex("probe", *ids, "--max-items", "30")
    assert "1 probed, 1 reused, 0 failed" in again.stdout
    assert json.loads(hubindex("sql", "SELECT count(*) AS n FROM open_failures", "--format", "json").stdout) == [{"n": 0}]


@pytest.mark.parametrize("text, expected", [("350M", 350_000_000), ("7B", 7_000_000_000), ("3.5e8", 350_000_000),
                                            ("1_000", 1000)])
def test_parameter_counts_are_read_with_suffixes(text: str, expected: int) -> None:
    from hubindex.options import ParameterCount

    assert ParameterCount().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["nan", "inf", "-5", "0", "lots", "7X"])
def test_bad_parameter_counts_are_usage_errors(crawled: Path, hubindex: Any, text: str) -> None:
    result = hubindex("probe", cid(crawled, "bert-tiny"), "--max-params", text)
    assert result.exit_code == 2 and "--max-params" in result.stderr, result


def test_sigint_stops_a_probe_within_seconds_and_keeps_what_was_committed(
    crawled: Path, hubindex: Any, index_dir: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    ids = [cid(crawled, "bert-tiny"), cid(crawled, "bert-wide")]  # the first is fast, the second slow
    command = [sys.executable, "-m", "hubindex.cli", "--index", str(index_dir), "probe", *ids,
               "--corpus", "bbc-news", "--max-items", "50000", "--batch-size", "1", "--device", "cpu"]
    # Started as a script would start it in the background: SIGINT ignored on entry. One thread keeps
    # the wide model busy for many seconds on any machine.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not list(index_dir.glob("store/embeddings/*/*.faiss")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # the first checkpoint's file is in place; its catalog row follows
    assert process.poll() is None, "the slow checkpoint should still be running"
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert process.returncode == 130, (out, err)
    assert waited < 5, f"took {waited:.1f} s to stop"
    last = err.strip().splitlines()[-1]
    assert last.startswith("hubindex: error: probe interrupted; "), last
    saved = int(last.split("; ")[1].split()[0])  # 1, unless the signal came during its commit (rolled back)

    # What the message says was saved is exactly what the catalog holds, and the next run completes it.
    stored = _embeddings(index_dir)
    assert set(stored) == set(ids[:saved]) and saved in (0, 1)
    resumed = hubindex("probe", *ids, "--corpus", "bbc-news", "--max-items", "50000", "--device", "cpu")
    assert f"2 checkpoints; {2 - saved} probed, {saved} reused, 0 failed" in resumed.stdout, resumed
    assert hubindex("check").exit_code == 0


def test_half_precision_checkpoints_run_in_their_precision_on_cuda_only() -> None:
    bf16 = {"checkpoint_id": "hf:o/m", "params_by_dtype": {"BF16": 7_000, "F32": 10}}
    fp16 = {"checkpoint_id": "hf:o/m", "params_by_dtype": {"FLOAT16": 500}}  # a pickled state dict's names
    fp32 = {"checkpoint_id": "hf:o/m", "params_by_dtype": {"F32": 7_000, "BF16": 10}}
    for probe_cls in (TransformersTextProbe, TimmImageProbe):
        cpu, cuda = probe_cls(device="cpu"), probe_cls(device="cuda")
        assert [cpu.dtype_for(row) for row in (bf16, fp16, fp32, {})] == ["float32"] * 4
        assert [cuda.dtype_for(row) for row in (bf16, fp16, fp32, {})] == ["bfloat16", "float16", "float32", "float32"]


@pytest.mark.gpu
def test_a_bf16_checkpoint_is_probed_in_bf16_on_cuda(zoo: Path, tmp_path: Path, hubindex: Any, index_dir: Path) -> None:
    import torch
    from transformers import AutoModel

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    folder = tmp_path / "bert-bf16"
    shutil.copytree(zoo / "bert-wide", folder)
    AutoModel.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    assert hubindex("crawl", "local", str(folder)).exit_code == 0
    for device in ("cpu", "cuda"):
        result = hubindex("probe", f"local:{folder}", "--device", device, "--max-items", "200")
        assert "1 probed" in result.stdout, result
    rows = {row["dtype"]: row for row in json.loads(hubindex(
        "sql", "SELECT dtype, path, n_items, file_sha256 FROM embeddings", "--format", "json").stdout)}
    assert set(rows) == {"float32", "bfloat16"}
    store = EmbeddingStore(index_dir)
    cpu, gpu = (store.read(rows[d]["path"], rows[d]["n_items"], rows[d]["file_sha256"]) for d in ("float32", "bfloat16"))
    kept = ~np.isnan(cpu).all(axis=1)
    assert np.corrcoef(cpu[kept].ravel(), gpu[kept].ravel())[0, 1] > 0.99


@pytest.mark.parametrize("condition", [
    "false) UNION ALL SELECT 'x' FROM range(10000000) --",
    "false UNION ALL SELECT 'x' FROM range(10000000) --",
    "true ORDER BY 1 LIMIT 1",
    "true GROUP BY checkpoint_id",
    "params_total <",
    "true /* unterminated",
    "true -- a comment\n) UNION ALL SELECT 'x' FROM range(10) --",
])
def test_where_is_parsed_as_one_condition_and_cannot_escape(crawled: Path, hubindex: Any, condition: str) -> None:
    import time

    started = time.monotonic()
    for command in (["probe", "--where", condition], ["select", "mmi", "--budget", "2", "--where", condition],
                    ["search", "--strategy", "random", "--budget", "2", "--where", condition]):
        result = hubindex(*command)
        assert result.exit_code == 2, (command, result)
        line = result.stderr.strip()
        assert line.count("\n") == 0 and line.startswith("hubindex: error: --where"), line
        if ")" not in condition:  # the error is about what the user typed, not a parenthesis added around it
            assert 'near ")"' not in line, line
    assert time.monotonic() - started < 10


def test_a_condition_with_a_trailing_comment_still_selects(crawled: Path, hubindex: Any) -> None:
    result = hubindex("probe", "--where", "checkpoint_id LIKE '%bert-tiny' -- the small one", "--max-items", "20")
    assert result.exit_code == 0 and "1 checkpoints; 1 probed" in result.stdout, result
