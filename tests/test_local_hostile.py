"""Hostile local checkpoints through the real CLI: `hubindex crawl local` and `hubindex probe`.

Every case ends in a recorded failure (or the hostile file ignored) while the other checkpoints of
the same crawl or probe are indexed and probed: nothing outside a checkpoint is read through it,
nothing a config asks for reaches timm unchecked, and no parser error stops a crawl.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile_checkpoints import (
    TEXT_CARD, Elsewhere, Templates, bad_config, cached_repo, link, link_outside, name_files_outside, write_files,
)

from hubindex.torch_compat import import_timm

SUMMARY = re.compile(r"(?P<seen>\d+) seen, (?P<added>\d+) added, (?P<changed>\d+) changed, "
                     r"(?P<unchanged>\d+) unchanged, (?P<failed>\d+) failed")
PROBE_SUMMARY = re.compile(r"(?P<total>\d+) checkpoints; (?P<probed>\d+) probed, (?P<reused>\d+) reused, "
                           r"(?P<failed>\d+) failed")
PROBE_ARGS = ("--where", "true", "--device", "cpu", "--max-items", "12")


def counts(pattern: re.Pattern[str], stdout: str) -> dict[str, int]:
    match = pattern.search(stdout)
    assert match, stdout
    return {k: int(v) for k, v in match.groupdict().items()}


def sql(hubindex: Any, query: str) -> list[dict[str, Any]]:
    result = hubindex("sql", query, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def checkpoint(hubindex: Any, checkpoint_id: str) -> dict[str, Any]:
    rows = sql(hubindex, f"SELECT * FROM checkpoints WHERE checkpoint_id = '{checkpoint_id}'")
    assert len(rows) == 1, (checkpoint_id, sql(hubindex, "SELECT checkpoint_id FROM checkpoints"))
    return rows[0]


def open_failures(hubindex: Any) -> dict[str, dict[str, Any]]:
    return {row["subject"]: row for row in sql(hubindex, "SELECT subject, stage, kind, message FROM open_failures")}


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates.build(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def elsewhere(tmp_path: Path, templates: Templates) -> Elsewhere:
    return Elsewhere.build(tmp_path / "elsewhere", templates)


@dataclass
class Loads:
    """What the loaders were asked to open: from_pretrained sources, timm.create_model calls, torch.load paths."""

    pretrained: list[str] = field(default_factory=list)
    timm_models: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    torch_files: list[str] = field(default_factory=list)

    def touched(self, path: Path) -> bool:
        """Whether any loader was pointed at path or anything under it."""
        named = self.pretrained + self.torch_files
        for _, kwargs in self.timm_models:
            named += [str(v) for v in [*kwargs.values(), *kwargs.get("pretrained_cfg_overlay", {}).values()]]
        return any(str(path) in name for name in named)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Loads:
    """Records every model load; a timm model with an absurd head is refused here, before it allocates."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    timm = import_timm()
    seen = Loads()

    def recording(original: Any) -> Any:
        def from_pretrained(source: Any, *args: Any, **kwargs: Any) -> Any:
            seen.pretrained.append(str(source))
            return original(source, *args, **kwargs)
        return staticmethod(from_pretrained)

    def create_model(name: str, **kwargs: Any) -> Any:
        seen.timm_models.append((name, kwargs))
        if isinstance(kwargs.get("num_classes"), int) and kwargs["num_classes"] > 1_000_000:
            raise RuntimeError("the test refused to allocate a classifier this large")
        return original_create_model(name, **kwargs)

    def torch_load(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.torch_files.append(str(path))
        return original_torch_load(path, *args, **kwargs)

    original_create_model, original_torch_load = timm.create_model, torch.load
    monkeypatch.setattr(AutoModel, "from_pretrained", recording(AutoModel.from_pretrained))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording(AutoTokenizer.from_pretrained))
    monkeypatch.setattr(timm, "create_model", create_model)
    monkeypatch.setattr(torch, "load", torch_load)
    return seen


def crawl(hubindex: Any, path: Path) -> dict[str, int]:
    result = hubindex("crawl", "local", str(path))
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return counts(SUMMARY, result.stdout)


def probe(hubindex: Any) -> dict[str, int]:
    result = hubindex("probe", *PROBE_ARGS)
    assert result.exit_code == 0, result.stderr
    return counts(PROBE_SUMMARY, result.stdout)


# ------------------------------------------------------------------------------ links leading outside


@pytest.mark.parametrize("linked", ["config.json", "README.md", "model.safetensors", "nested/notes.txt"])
def test_a_link_outside_a_plain_folder_is_never_read(
    hubindex: Any, tmp_path: Path, templates: Templates, elsewhere: Elsewhere, loads: Loads, linked: str
) -> None:
    root = tmp_path / "ckpts"
    good = [templates.bert_folder(root / name) for name in ("a-bert", "z-bert")]
    hostile = templates.bert_folder(root / "m-hostile")
    link_outside(hostile, linked, elsewhere)

    assert crawl(hubindex, root) == {"seen": 3, "added": 3, "changed": 0, "unchanged": 0, "failed": 0}
    row = checkpoint(hubindex, f"local:{hostile}")
    # Nothing of the outside file reaches the catalog: not its card, not its config, not its weights.
    assert (row["license"], row["base_models"], row["tags"]) == (None, None, None)
    assert row["model_type"] == (None if linked == "config.json" else "bert")
    assert linked not in [w["name"] for w in row["weight_files"] or []]
    if linked == "model.safetensors":
        assert row["params_total"] is None

    # The sha covers only the folder's own files: the outside file changing, or the link going, changes nothing.
    elsewhere.file(Path(linked).name).write_bytes(b"changed outside")
    assert crawl(hubindex, root)["changed"] == 0
    (hostile / linked).unlink()
    assert crawl(hubindex, root)["changed"] == 0
    assert checkpoint(hubindex, f"local:{hostile}")["sha"] == row["sha"]
    link_outside(hostile, linked, elsewhere)

    # The probe refuses the folder before any loader sees it; the good ones are probed.
    assert probe(hubindex) == {"total": 3, "probed": 2, "reused": 0, "failed": 1}
    failure = open_failures(hubindex)[f"local:{hostile}"]
    assert (failure["stage"], failure["kind"]) == ("probe", "unsafe-path")
    assert linked in failure["message"]
    assert not loads.touched(hostile) and not loads.touched(elsewhere.root)
    assert all(str(folder) in loads.pretrained for folder in good)


@pytest.mark.parametrize("linked", ["config.json", "README.md", "model.safetensors"])
def test_a_link_outside_a_cache_snapshot_is_never_read(
    hubindex: Any, tmp_path: Path, templates: Templates, elsewhere: Elsewhere, loads: Loads, linked: str
) -> None:
    cache = tmp_path / "hub"
    files = {**templates.bert, "README.md": TEXT_CARD.encode()}
    _, good = cached_repo(cache, "tiny-org/good", files)
    commit, hostile = cached_repo(cache, "tiny-org/hostile", files, outside={linked: elsewhere.file(linked)})
    assert (hostile / linked).resolve() == elsewhere.file(linked)

    assert crawl(hubindex, cache) == {"seen": 2, "added": 2, "changed": 0, "unchanged": 0, "failed": 0}
    row = checkpoint(hubindex, "hf:tiny-org/hostile")
    assert (row["license"], row["base_models"], row["tags"]) == (None, None, None)
    assert row["model_type"] == (None if linked == "config.json" else "bert")
    assert linked not in [w["name"] for w in row["weight_files"] or []]
    assert row["sha"] == row["local_sha"] == commit  # the commit, whatever lies outside
    # The normal snapshot, whose files all link into the repo's blobs/, is read in full.
    normal = checkpoint(hubindex, "hf:tiny-org/good")
    assert (normal["model_type"], normal["pipeline_tag"]) == ("bert", "feature-extraction")
    assert normal["params_total"] > 0

    assert probe(hubindex) == {"total": 2, "probed": 1, "reused": 0, "failed": 1}
    failure = open_failures(hubindex)["hf:tiny-org/hostile"]
    assert (failure["stage"], failure["kind"]) == ("probe", "unsafe-path")
    assert linked in failure["message"]
    assert str(good) in loads.pretrained
    assert not loads.touched(hostile) and not loads.touched(elsewhere.root)


def test_a_cache_ref_leading_outside_is_never_read(
    hubindex: Any, tmp_path: Path, templates: Templates, elsewhere: Elsewhere
) -> None:
    cache = tmp_path / "hub"
    cached_repo(cache, "tiny-org/good", templates.bert)
    _, hostile = cached_repo(cache, "tiny-org/hostile", templates.bert)
    link(hostile.parent.parent / "refs" / "main", elsewhere.file("README.md"))

    assert crawl(hubindex, cache)["added"] == 1
    assert [r["checkpoint_id"] for r in sql(hubindex, "SELECT checkpoint_id FROM checkpoints")] == ["hf:tiny-org/good"]
    (failure,) = open_failures(hubindex).values()
    assert (failure["subject"], failure["kind"]) == (str(hostile.parent.parent.resolve()), "unsafe-path")
    assert "refs/main" in failure["message"] and "stolen" not in json.dumps(sql(hubindex, "SELECT * FROM failures"))


@pytest.mark.parametrize("how", ["weight-index", "fast-tokenizer-files"])
def test_file_names_in_a_folders_json_must_stay_inside(
    hubindex: Any, tmp_path: Path, templates: Templates, elsewhere: Elsewhere, loads: Loads, how: str
) -> None:
    root = tmp_path / "ckpts"
    good = templates.bert_folder(root / "a-bert")
    hostile = templates.bert_folder(root / "m-hostile")
    name_files_outside(hostile, how, elsewhere)
    assert crawl(hubindex, root)["added"] == 2

    assert probe(hubindex) == {"total": 2, "probed": 1, "reused": 0, "failed": 1}
    failure = open_failures(hubindex)[f"local:{hostile}"]
    assert failure["kind"] == "unsafe-path"
    assert ("model.safetensors.index.json" if how == "weight-index" else "tokenizer_config.json") in failure["message"]
    assert loads.pretrained == [str(good), str(good)]  # tokenizer and model of the good one only


def test_a_special_file_in_a_folder_is_refused(hubindex: Any, tmp_path: Path, templates: Templates,
                                               loads: Loads) -> None:
    root = tmp_path / "ckpts"
    good = templates.bert_folder(root / "a-bert")
    hostile = templates.bert_folder(root / "m-hostile")
    (hostile / "extras").mkdir()
    os.mkfifo(hostile / "extras" / "pipe")  # opening it would block a reader forever
    assert crawl(hubindex, root)["added"] == 2
    assert probe(hubindex)["failed"] == 1
    failure = open_failures(hubindex)[f"local:{hostile}"]
    assert failure["kind"] == "unsafe-path" and "extras/pipe" in failure["message"]
    assert loads.pretrained == [str(good), str(good)]


# ------------------------------------------------------------------------------ timm arguments from config.json


@pytest.mark.parametrize("case", ["checkpoint_path", "huge-num_classes", "unknown-key", "pretrained_cfg_overlay",
                                  "huge-img_size", "architecture-source"])
def test_timm_arguments_from_a_config_are_checked(
    hubindex: Any, tmp_path: Path, templates: Templates, elsewhere: Elsewhere, loads: Loads, case: str
) -> None:
    outside_weights = elsewhere.file("weights.pth")
    changes, key = {
        "checkpoint_path": ({"model_args": {"checkpoint_path": str(outside_weights)}}, "checkpoint_path"),
        "huge-num_classes": ({"model_args": {"num_classes": 80_000_000}}, "num_classes"),
        "unknown-key": ({"model_args": {"no_such_argument": 1}}, "no_such_argument"),
        "pretrained_cfg_overlay": ({"model_args": {"pretrained_cfg_overlay": {"file": str(outside_weights)}}},
                                   "pretrained_cfg_overlay"),
        "huge-img_size": ({"model_args": {"img_size": [100_000, 100_000]}}, "img_size"),
        "architecture-source": ({"architecture": f"local-dir:{elsewhere.root}"}, "architecture"),
    }[case]
    root = tmp_path / "ckpts"
    good = templates.timm_folder(root / "a-resnet")
    hostile = templates.timm_folder(root / "m-hostile", changes)
    assert crawl(hubindex, root)["added"] == 2

    assert probe(hubindex) == {"total": 2, "probed": 1, "reused": 0, "failed": 1}
    failure = open_failures(hubindex)[f"local:{hostile}"]
    assert failure["kind"] == "unsafe-config", failure
    assert key in failure["message"]
    # timm was asked for the good model only; nothing outside was unpickled, nothing huge allocated.
    assert [Path(kwargs["pretrained_cfg_overlay"]["file"]).resolve() for _, kwargs in loads.timm_models] == [
        (good / "model.safetensors").resolve()
    ]
    assert not loads.touched(elsewhere.root)


def test_timm_preprocessing_from_a_config_is_bounded(templates: Templates, tmp_path: Path) -> None:
    from hubindex.types import ProbeError
    from hubindex_plugins.probe_image import TimmImageProbe

    folder = templates.timm_folder(tmp_path / "huge-input")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, 100_000, 100_000]  # resizing every image to 30 GB
    (folder / "config.json").write_text(json.dumps(config))
    row = {"checkpoint_id": f"local:{folder}", "local_path": str(folder), "library_name": "timm"}
    with pytest.raises(ProbeError) as refused:
        TimmImageProbe(device="cpu").model_spec(row, import_timm())
    assert refused.value.kind == "unsafe-config" and "input_size" in str(refused.value)


# ------------------------------------------------------------------------------ config files no parser should trust


@pytest.mark.parametrize("kind", ["deep", "not-utf-8", "too-large", "not-an-object"])
def test_a_bad_config_is_a_failure_and_the_crawl_goes_on(
    hubindex: Any, tmp_path: Path, templates: Templates, kind: str
) -> None:
    root = tmp_path / "ckpts"
    names = ("a-resnet", "m-bad", "z-resnet")  # the bad one sorts between the good ones
    for name in names:
        templates.timm_folder(root / name)
    (root / "m-bad" / "config.json").write_bytes(bad_config(kind))

    for _ in range(2):  # the second crawl gets as far as the first: nothing is stuck behind the bad folder
        summary = crawl(hubindex, root)
        assert (summary["seen"], summary["added"] + summary["unchanged"], summary["failed"]) == (3, 2, 1)
        indexed = [r["checkpoint_id"] for r in sql(hubindex, "SELECT checkpoint_id FROM checkpoints ORDER BY 1")]
        assert indexed == [f"local:{root / 'a-resnet'}", f"local:{root / 'z-resnet'}"]
        failure = open_failures(hubindex)[f"local:{root / 'm-bad'}"]
        assert (failure["stage"], failure["kind"]) == ("crawl", "bad-config")
        assert "config.json" in failure["message"]


def test_integers_past_the_catalog_columns_are_null(hubindex: Any, tmp_path: Path, templates: Templates,
                                                    loads: Loads) -> None:
    root = tmp_path / "ckpts"
    for name in ("a-resnet", "z-resnet"):
        templates.timm_folder(root / name)
    huge = templates.timm_folder(root / "m-huge", {"num_classes": 10**30, "num_features": 2**40})

    assert crawl(hubindex, root) == {"seen": 3, "added": 3, "changed": 0, "unchanged": 0, "failed": 0}
    rows = {r["checkpoint_id"]: r for r in sql(hubindex, "SELECT * FROM checkpoints")}
    assert len(rows) == 3  # the batch holding the huge integers is kept whole
    row = rows[f"local:{huge}"]
    assert (row["num_classes"], row["num_features"]) == (None, None)
    assert (row["library_name"], row["model_type"]) == ("timm", "test_resnet") and row["params_total"] > 0
    assert rows[f"local:{root / 'a-resnet'}"]["num_classes"] == 10

    assert probe(hubindex)["failed"] == 1
    failure = open_failures(hubindex)[f"local:{huge}"]
    assert failure["kind"] == "unsafe-config" and "num_classes" in failure["message"]
    assert len(loads.timm_models) == 2


def test_a_folder_name_that_is_not_utf8_is_a_failure(hubindex: Any, tmp_path: Path, templates: Templates) -> None:
    root = tmp_path / "ckpts"
    for name in ("a-resnet", "z-resnet"):
        templates.timm_folder(root / name)
    write_files(Path(os.fsdecode(bytes(root) + b"/m-\xff")), templates.timm)

    summary = crawl(hubindex, root)
    assert (summary["seen"], summary["added"], summary["failed"]) == (3, 2, 1)
    assert len(sql(hubindex, "SELECT checkpoint_id FROM checkpoints")) == 2
    (failure,) = open_failures(hubindex).values()
    assert failure["kind"] == "invalid-path" and "m-\\xff" in failure["subject"]
