"""The local crawler: a real Hugging Face cache holding tiny real models, and folders of checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from hubindex.index import Index
from hubindex.torch_compat import import_timm
from hubindex.types import CheckpointRecord

BERT_REPO = "tiny-org/tiny-bert"
TIMM_REPO = "tiny-org/tiny-resnet18"
SUMMARY = re.compile(
    r": completed; (?P<seen>\d+) seen, (?P<added>\d+) added, (?P<changed>\d+) changed, "
    r"(?P<unchanged>\d+) unchanged, (?P<failed>\d+) failed"
)


def summary(stdout: str) -> dict[str, int]:
    match = SUMMARY.search(stdout)
    assert match, stdout
    return {k: int(v) for k, v in match.groupdict().items()}




def table(index: Index, sql: str = "SELECT * FROM checkpoints ORDER BY checkpoint_id",
          params: list | None = None) -> list[tuple]:
    with index.open_catalog(read_only=True) as catalog:
        return catalog.conn.execute(sql, params or []).fetchall()


def row(index: Index, checkpoint_id: str) -> dict:
    with index.open_catalog(read_only=True) as catalog:
        found = catalog.checkpoint(checkpoint_id)
    assert found is not None, checkpoint_id
    return found


# ------------------------------------------------------------------------------ a real HF cache


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> tuple[str, Path]:
    """Lay a repo out the way huggingface_hub's downloads do; return (commit, snapshot folder)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode() + b"".join(sorted(files.values()))).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        # LFS files (weights) are stored under their sha256, small git files under their git sha1.
        lfs = name.endswith(".safetensors")
        etag = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
        (repo / "blobs" / etag).write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / etag, link.parent))
    return commit, snapshot


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny BertModel and a timm resnet18, saved the way their libraries save them."""
    import torch
    from safetensors.torch import save_file

    timm = import_timm()
    import transformers

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
    )
    bert = transformers.BertModel(config)
    bert.save_pretrained(root / "bert", safe_serialization=True)

    resnet = timm.create_model("resnet18", pretrained=False, num_classes=10)
    timm_dir = root / "resnet"
    timm_dir.mkdir()
    kept = ("input_size", "mean", "std", "crop_pct", "interpolation")
    pretrained_cfg = {k: v for k, v in resnet.pretrained_cfg.items() if k in kept}
    (timm_dir / "config.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": 10, "num_features": resnet.num_features,
        "pretrained_cfg": pretrained_cfg,
    }))
    save_file({k: v.contiguous() for k, v in resnet.state_dict().items()}, str(timm_dir / "model.safetensors"))
    return {
        "bert_files": _folder_files(root / "bert"),
        "bert_params": sum(p.numel() for p in bert.parameters()),
        "timm_files": _folder_files(timm_dir),
        "timm_params": sum(p.numel() for p in resnet.parameters()),
        "timm_num_features": resnet.num_features,
        "timm_pretrained_cfg": pretrained_cfg,
    }


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory, models: dict) -> dict:
    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    cache.mkdir()
    bert_commit, bert_snapshot = add_cached_repo(cache, BERT_REPO, models["bert_files"])
    timm_commit, timm_snapshot = add_cached_repo(cache, TIMM_REPO, models["timm_files"])
    return {
        "home": home, "cache": cache,
        BERT_REPO: {"commit": bert_commit, "snapshot": bert_snapshot},
        TIMM_REPO: {"commit": timm_commit, "snapshot": timm_snapshot},
    }


def test_the_cache_is_a_real_hugging_face_cache(hf_cache: dict, models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hf_cache["cache"])
    assert info.warnings == []
    repos = {r.repo_id: r for r in info.repos}
    assert set(repos) == {BERT_REPO, TIMM_REPO}
    for repo_id, repo in repos.items():
        (revision,) = repo.revisions
        assert revision.commit_hash == hf_cache[repo_id]["commit"]
        assert "main" in revision.refs
        assert Path(revision.snapshot_path) == hf_cache[repo_id]["snapshot"]

    # transformers loads the cached repo by its hub id, offline.
    import transformers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bert = transformers.AutoModel.from_pretrained(BERT_REPO, cache_dir=str(hf_cache["cache"]))
    assert sum(p.numel() for p in bert.parameters()) == models["bert_params"]


def test_crawl_hf_cache(hubindex, index: Index, hf_cache: dict, models: dict) -> None:
    result = hubindex("crawl", "local", str(hf_cache["cache"]))
    assert result.exit_code == 0, result.stderr
    counts = summary(result.stdout)
    assert (counts["seen"], counts["added"], counts["failed"]) == (2, 2, 0)
    assert [r[0] for r in table(index, "SELECT checkpoint_id FROM checkpoints ORDER BY 1")] == [
        f"hf:{BERT_REPO}", f"hf:{TIMM_REPO}"
    ]

    bert = row(index, f"hf:{BERT_REPO}")
    commit, snapshot = hf_cache[BERT_REPO]["commit"], hf_cache[BERT_REPO]["snapshot"]
    assert bert["source"] == "local"
    assert bert["repo_id"] == BERT_REPO
    assert bert["local_path"] == str(snapshot)
    assert bert["local_sha"] == bert["sha"] == commit
    assert bert["params_total"] == models["bert_params"]
    assert bert["params_by_dtype"] == {"F32": models["bert_params"]}
    assert (bert["library_name"], bert["model_type"], bert["architectures"]) == ("transformers", "bert", ["BertModel"])
    weights = models["bert_files"]["model.safetensors"]
    assert bert["weight_files"] == [
        {"name": "model.safetensors", "size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    ]
    # ... and that sha256 is the blob the snapshot links to.
    assert (snapshot / "model.safetensors").resolve().name == bert["weight_files"][0]["sha256"]

    resnet = row(index, f"hf:{TIMM_REPO}")
    assert resnet["local_path"] == str(hf_cache[TIMM_REPO]["snapshot"])
    assert resnet["local_sha"] == hf_cache[TIMM_REPO]["commit"]
    assert (resnet["library_name"], resnet["model_type"], resnet["architectures"]) == ("timm", "resnet18", ["resnet18"])
    assert (resnet["num_classes"], resnet["num_features"]) == (10, models["timm_num_features"])
    assert json.loads(resnet["pretrained_cfg"]) == json.loads(json.dumps(models["timm_pretrained_cfg"]))
    # Parameters only: BatchNorm running statistics in the state dict are not parameters.
    assert resnet["params_total"] == models["timm_params"]
    weights = models["timm_files"]["model.safetensors"]
    assert resnet["weight_files"][0]["sha256"] == hashlib.sha256(weights).hexdigest()

    again = hubindex("crawl", "local", str(hf_cache["cache"]))
    assert again.exit_code == 0, again.stderr
    assert summary(again.stdout) == {"seen": 2, "added": 0, "changed": 0, "unchanged": 2, "failed": 0}


def test_hf_home_is_accepted_for_the_cache(hubindex, index: Index, hf_cache: dict) -> None:
    result = hubindex("crawl", "local", str(hf_cache["home"]))  # holds hub/models--*
    assert result.exit_code == 0, result.stderr
    assert [r[0] for r in table(index, "SELECT checkpoint_id FROM checkpoints ORDER BY 1")] == [
        f"hf:{BERT_REPO}", f"hf:{TIMM_REPO}"
    ]


def test_local_crawl_keeps_hub_metadata(hubindex, index: Index, hf_cache: dict, models: dict) -> None:
    hub_sha = "f" * 40  # the Hub has moved on since the cached download
    hub_columns = {
        "repo_id": BERT_REPO, "sha": hub_sha, "metadata_sha": hub_sha, "license": "apache-2.0",
        "library_name": "transformers", "params_total": 123, "downloads": 7,
    }
    with index.open_catalog() as catalog:
        catalog.upsert_checkpoints(
            [CheckpointRecord(f"hf:{BERT_REPO}", hub_columns)], source="hf", owned_columns=set(hub_columns)
        )
        before = catalog.checkpoint(f"hf:{BERT_REPO}")
    assert before["local_path"] is None

    result = hubindex("crawl", "local", str(hf_cache["cache"]))
    assert result.exit_code == 0, result.stderr

    after = row(index, f"hf:{BERT_REPO}")
    for column, value in hub_columns.items():  # the Hub crawler's values stay
        assert after[column] == value, column
    assert after["source"] == "hf"
    assert after["local_path"] == str(hf_cache[BERT_REPO]["snapshot"])
    assert after["local_sha"] == hf_cache[BERT_REPO]["commit"]
    # Columns the Hub row lacked are filled in from the local copy.
    assert after["weight_files"][0]["name"] == "model.safetensors"
    assert after["model_type"] == "bert"
    assert row(index, f"hf:{TIMM_REPO}")["source"] == "local"


def test_broken_cache_entry_is_a_failure_not_fatal(hubindex, index: Index, tmp_path: Path, models: dict) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    commit, snapshot = add_cached_repo(cache, BERT_REPO, models["bert_files"])
    (cache / "models--tiny-org--broken").mkdir()  # no refs/, no snapshots/
    result = hubindex("crawl", "local", str(cache))
    assert result.exit_code == 0, result.stderr
    counts = summary(result.stdout)
    assert (counts["added"], counts["failed"]) == (1, 1)
    assert row(index, f"hf:{BERT_REPO}")["local_sha"] == commit
    assert table(index, "SELECT subject, kind FROM failures WHERE resolved_at IS NULL") == [
        (str(cache / "models--tiny-org--broken"), "bad-cache-entry")
    ]


# ------------------------------------------------------------------------------ folders of checkpoints


@pytest.fixture
def checkpoints(tmp_path: Path, models: dict) -> Path:
    """ckpts/bert (a transformers folder), ckpts/resnet (timm folder), and a link to one outside."""
    root = tmp_path / "ckpts"
    for name, files in (("bert", models["bert_files"]), ("resnet", models["timm_files"])):
        for rel, data in files.items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (outside / "secret" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (outside / "secret" / "model.safetensors").write_bytes(models["bert_files"]["model.safetensors"])
    (outside / "private.bin").write_bytes(b"not yours")
    (root / "escape").symlink_to(outside / "secret", target_is_directory=True)
    (root / "bert" / "pytorch_model.bin").symlink_to(outside / "private.bin")
    (root / "notes").mkdir()  # not a checkpoint folder
    (root / "notes" / "README.md").write_text("hello")
    return root


def test_crawl_folder_of_checkpoints(hubindex, index: Index, checkpoints: Path, models: dict, tmp_path: Path) -> None:
    result = hubindex("crawl", "local", str(checkpoints))
    assert result.exit_code == 0, result.stderr
    assert summary(result.stdout)["added"] == 2
    bert_id, resnet_id = f"local:{checkpoints / 'bert'}", f"local:{checkpoints / 'resnet'}"
    assert [r[0] for r in table(index, "SELECT checkpoint_id FROM checkpoints ORDER BY 1")] == [bert_id, resnet_id]
    assert all(Path(i.removeprefix("local:")).is_absolute() for i in (bert_id, resnet_id))

    bert = row(index, bert_id)
    assert bert["local_path"] == str(checkpoints / "bert")
    assert re.fullmatch(r"[0-9a-f]{40}", bert["sha"]) and bert["local_sha"] == bert["sha"]
    assert bert["repo_id"] == "bert"
    assert bert["params_total"] == models["bert_params"]
    # The link to a file outside the folder is not followed: not listed, not hashed.
    assert [w["name"] for w in bert["weight_files"]] == ["model.safetensors"]
    assert bert["weight_files"][0]["sha256"] is None  # a plain file name proves nothing

    resnet = row(index, resnet_id)
    assert resnet["library_name"] == "timm" and resnet["params_total"] == models["timm_params"]

    # The same folder copied elsewhere has the same content hash.
    copy = tmp_path / "copy" / "bert"
    shutil.copytree(checkpoints / "bert", copy, symlinks=False, ignore=shutil.ignore_patterns("pytorch_model.bin"))
    assert hubindex("crawl", "local", str(copy)).exit_code == 0
    assert row(index, f"local:{copy}")["sha"] == bert["sha"]


def test_symlinked_folder_outside_is_not_followed(hubindex, index: Index, checkpoints: Path, tmp_path: Path) -> None:
    result = hubindex("crawl", "local", str(checkpoints))
    assert result.exit_code == 0, result.stderr
    ids = sorted(r[0] for r in table(index, "SELECT checkpoint_id FROM checkpoints"))
    assert ids == [f"local:{checkpoints / 'bert'}", f"local:{checkpoints / 'resnet'}"]  # no ckpts/escape
    paths = [r[0] for r in table(index, "SELECT local_path FROM checkpoints")]
    assert all(Path(p).resolve().is_relative_to(checkpoints.resolve()) for p in paths)


def test_content_sha_tracks_changes(hubindex, index: Index, checkpoints: Path, tmp_path: Path) -> None:
    assert hubindex("crawl", "local", str(checkpoints)).exit_code == 0
    bert_id, resnet_id = f"local:{checkpoints / 'bert'}", f"local:{checkpoints / 'resnet'}"
    first = {i: row(index, i)["sha"] for i in (bert_id, resnet_id)}

    # Nothing changed: the same hashes, nothing counted changed.
    again = hubindex("crawl", "local", str(checkpoints))
    assert summary(again.stdout) == {"seen": 2, "added": 0, "changed": 0, "unchanged": 2, "failed": 0}
    assert {i: row(index, i)["sha"] for i in first} == first

    # A file outside (reached only through a link) changes: still nothing changed here.
    (tmp_path / "outside" / "private.bin").write_bytes(b"changed outside")
    assert summary(hubindex("crawl", "local", str(checkpoints)).stdout)["changed"] == 0

    # One byte of one file changes: that checkpoint, and only that one, is changed.
    config = checkpoints / "resnet" / "config.json"
    config.write_text(config.read_text().replace('"num_classes": 10', '"num_classes": 11'))
    changed = hubindex("crawl", "local", str(checkpoints))
    assert summary(changed.stdout) == {"seen": 2, "added": 0, "changed": 1, "unchanged": 1, "failed": 0}
    resnet = row(index, resnet_id)
    assert resnet["sha"] != first[resnet_id] and resnet["local_sha"] == resnet["sha"]
    assert resnet["num_classes"] == 11
    assert row(index, bert_id)["sha"] == first[bert_id]

    # A new file counts too.
    (checkpoints / "bert" / "notes.txt").write_text("x")
    assert summary(hubindex("crawl", "local", str(checkpoints)).stdout)["changed"] == 1


def test_hash_frames_each_file(hubindex, index: Index, tmp_path: Path) -> None:
    # Two files, then one file holding the same bytes as names + contents laid end to end: a
    # hash of the bare stream could not tell them apart.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"x")
    (folder / "b.bin").write_bytes(b"y")
    assert hubindex("crawl", "local", str(folder)).exit_code == 0
    first = row(index, f"local:{folder}")["sha"]
    (folder / "b.bin").unlink()
    (folder / "a.bin").write_bytes(b"x" + b"b.bin\0" + b"y")
    result = hubindex("crawl", "local", str(folder))
    assert summary(result.stdout)["changed"] == 1
    assert row(index, f"local:{folder}")["sha"] != first


def test_weights_in_two_formats_are_counted_once(hubindex, index: Index, tmp_path: Path, models: dict) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "both"
    folder.mkdir()
    weights = models["timm_files"]["model.safetensors"]
    (folder / "model.safetensors").write_bytes(weights)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "model.pth")  # sorts first
    assert hubindex("crawl", "local", str(folder)).exit_code == 0
    found = row(index, f"local:{folder}")
    assert sorted(w["name"] for w in found["weight_files"]) == ["model.pth", "model.safetensors"]
    assert found["params_total"] == models["timm_params"]


def test_pickled_state_dict_is_counted(hubindex, index: Index, tmp_path: Path, models: dict) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pth"
    folder.mkdir()
    src = tmp_path / "src.safetensors"
    src.write_bytes(models["timm_files"]["model.safetensors"])
    torch.save({"state_dict": load_file(str(src))}, folder / "checkpoint.pth")
    assert hubindex("crawl", "local", str(folder)).exit_code == 0
    assert row(index, f"local:{folder}")["params_total"] == models["timm_params"]


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def populated(hubindex, index: Index, checkpoints: Path) -> list[tuple]:
    assert hubindex("crawl", "local", str(checkpoints)).exit_code == 0
    return table(index)


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_bad_path_is_a_one_line_error(
    hubindex, index: Index, populated: list[tuple], tmp_path: Path, kind: str
) -> None:
    target = {"missing": tmp_path / "nope", "file": tmp_path / "file.txt", "empty": tmp_path / "empty"}[kind]
    if kind == "file":
        target.write_text("x")
    if kind == "empty":
        target.mkdir()
    runs_before = table(index, "SELECT run_id, status FROM crawl_runs ORDER BY run_id")
    result = hubindex("crawl", "local", str(target))
    assert_one_line_error(result)
    assert str(target) in result.stderr
    assert table(index) == populated  # the catalog's rows are untouched
    runs_after = table(index, "SELECT run_id, status FROM crawl_runs ORDER BY run_id")
    if kind == "empty":  # found out while crawling: the run is recorded as failed
        assert runs_after[:-1] == runs_before and runs_after[-1][1] == "failed"
    else:  # a bad argument is refused before any run is recorded
        assert runs_after == runs_before
