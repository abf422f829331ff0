"""The timm crawler: the offline registry joined with the shipped ImageNet results tables.

The full crawl (~1,800 models, a few seconds) runs twice per module, in a module-scoped index;
the other tests crawl a handful of models with --filter.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from click.testing import CliRunner

from hubindex.cli import main
from hubindex.index import SHIPPED_TIMM_RESULTS, Index
from hubindex.torch_compat import import_timm

RESULTS_CSV = SHIPPED_TIMM_RESULTS / "results-imagenet.csv"
SUMMARY = re.compile(
    r"crawl timm run (?P<run>\d+).*: completed; (?P<seen>\d+) seen, (?P<added>\d+) added, "
    r"(?P<changed>\d+) changed, (?P<unchanged>\d+) unchanged, (?P<failed>\d+) failed"
)


def run_cli(index_dir: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(["--index", str(index_dir), *args])
    return code, out.getvalue().decode(), err.getvalue().decode()


def summary(stdout: str) -> dict[str, int]:
    match = SUMMARY.search(stdout)
    assert match, stdout
    return {k: int(v) for k, v in match.groupdict().items()}




def rows(index_dir: Path, sql: str, params: list | None = None) -> list[tuple]:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        return catalog.conn.execute(sql, params or []).fetchall()


def csv_rows(model: str) -> list[dict[str, str]]:
    """The shipped results table, read with the csv module (not with the crawler's code)."""
    with RESULTS_CSV.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["model"] == model]


@pytest.fixture(scope="module")
def timm():
    return import_timm()


@pytest.fixture(scope="module")
def crawled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One index, crawled in full twice; the rows are captured after each crawl."""
    index_dir = tmp_path_factory.mktemp("timm") / "index"
    first = run_cli(index_dir, "crawl", "timm")
    assert first[0] == 0, first
    before = rows(index_dir, "SELECT * EXCLUDE (crawled_at) FROM checkpoints ORDER BY checkpoint_id")
    second = run_cli(index_dir, "crawl", "timm")
    assert second[0] == 0, second
    after = rows(index_dir, "SELECT * EXCLUDE (crawled_at) FROM checkpoints ORDER BY checkpoint_id")
    return {"dir": index_dir, "first": first, "second": second, "before": before, "after": after}


def test_full_crawl_indexes_every_pretrained_model(crawled: dict, timm) -> None:
    names = timm.list_pretrained()
    first = summary(crawled["first"][1])
    assert first["seen"] == first["added"] == len(names) >= 1800
    assert first["failed"] == 0
    ids = [r[0] for r in rows(crawled["dir"], "SELECT checkpoint_id FROM checkpoints WHERE source = 'timm'")]
    assert len(ids) == len(names) >= 1800
    assert set(ids) == {f"timm:{n}" for n in names}


def test_resnet50_a1_row_matches_the_shipped_results_table(crawled: dict, timm) -> None:
    cfg = timm.models.get_pretrained_cfg("resnet50.a1_in1k").to_dict()
    test_size = cfg["test_input_size"][-1]
    assert test_size == 288
    # The table has this model at two sizes; the crawler must take the test size, 288.
    table = {int(r["img_size"]): r for r in csv_rows("resnet50.a1_in1k")}
    assert set(table) >= {224, 288}
    expected = table[test_size]

    (row,) = rows(
        crawled["dir"],
        "SELECT in1k_top1, in1k_top5, in1k_img_size, params_total, upstream_data, hf_hub_id, "
        "pretrained_cfg, license, arxiv_ids, library_name, architectures, tags, num_classes, "
        "input_size, pipeline_tag, repo_id, source FROM checkpoints WHERE checkpoint_id = 'timm:resnet50.a1_in1k'",
    )
    (top1, top5, img_size, params, upstream, hub_id, cfg_json, license_, arxiv, library,
     architectures, tags, num_classes, input_size, pipeline_tag, repo_id, source) = row
    assert top1 == float(expected["top1"]) == 81.24
    assert top1 != float(table[224]["top1"])
    assert top5 == float(expected["top5"])
    assert img_size == 288
    assert params == round(float(expected["param_count"]) * 1e6)
    assert 25_000_000 < params < 26_000_000
    assert upstream == "in1k"
    assert hub_id == "timm/resnet50.a1_in1k" == cfg["hf_hub_id"]
    stored_cfg = json.loads(cfg_json)
    assert stored_cfg == json.loads(json.dumps(cfg))  # timm's pretrained_cfg, verbatim (tuples as lists)
    assert stored_cfg["test_input_size"] == [3, 288, 288]
    assert license_ == cfg["license"] == "apache-2.0"
    assert arxiv == ["2110.00476"]
    assert (library, architectures, num_classes, input_size) == ("timm", ["resnet50"], 1000, [3, 224, 224])
    assert tags == ["timm", "resnet50", "a1_in1k"]
    assert (pipeline_tag, repo_id, source) == ("image-classification", "resnet50.a1_in1k", "timm")


def test_every_model_in_the_results_table_gets_its_accuracy(crawled: dict, timm) -> None:
    with RESULTS_CSV.open(newline="") as handle:
        table_models = {row["model"] for row in csv.DictReader(handle)}
    known = table_models & set(timm.list_pretrained())
    assert len(known) > 1000
    with_top1 = {
        r[0].removeprefix("timm:")
        for r in rows(crawled["dir"], "SELECT checkpoint_id FROM checkpoints WHERE in1k_top1 IS NOT NULL")
    }
    assert with_top1 == known
    # Values are percentages, and top-5 >= top-1 wherever both exist.
    (bad,) = rows(
        crawled["dir"],
        "SELECT count(*) FROM checkpoints WHERE in1k_top1 IS NOT NULL AND "
        "NOT (in1k_top1 BETWEEN 1 AND 100 AND in1k_top5 >= in1k_top1)",
    )[0]
    assert bad == 0


def test_model_without_test_size_takes_its_listed_size(crawled: dict, timm) -> None:
    # resnet50.a1h_in1k trains at 176 and tests at 224; the table has both sizes.
    cfg = timm.models.get_pretrained_cfg("resnet50.a1h_in1k").to_dict()
    size = (cfg.get("test_input_size") or cfg["input_size"])[-1]
    expected = next(r for r in csv_rows("resnet50.a1h_in1k") if int(r["img_size"]) == size)
    (row,) = rows(crawled["dir"], "SELECT in1k_top1, in1k_img_size FROM checkpoints "
                                  "WHERE checkpoint_id = 'timm:resnet50.a1h_in1k'")
    assert row == (float(expected["top1"]), size)


def test_param_counts_with_thousands_separators(crawled: dict) -> None:
    # A few rows of the table write param_count as "1,014.45" (millions).
    expected = csv_rows("eva_giant_patch14_560.m30m_ft_in22k_in1k")
    assert expected and "," in expected[0]["param_count"]
    millions = float(expected[0]["param_count"].replace(",", ""))
    (row,) = rows(crawled["dir"], "SELECT params_total, upstream_data FROM checkpoints "
                                  "WHERE checkpoint_id = 'timm:eva_giant_patch14_560.m30m_ft_in22k_in1k'")
    assert row[0] == round(millions * 1e6)
    assert row[1] == "m30m"


@pytest.mark.parametrize(
    ("name", "upstream"),
    [
        ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "in21k"),
        ("convnext_base.fb_in22k_ft_in1k", "in22k"),
        ("vit_huge_patch14_clip_224.laion2b_ft_in12k_in1k", "laion2b"),
        ("vit_giant_patch14_dinov2.lvd142m", "lvd142m"),
        # Old names of the metadata table (tf_efficientnet_b7_ns) reach the current names.
        ("tf_efficientnet_b7.ns_jft_in1k", "jft300m-ns"),
        ("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", "ig1b-wsl"),
        ("resnet50.fb_ssl_yfcc100m_ft_in1k", "yfc-semisl"),
        # A tag with no dataset in it does not inherit the architecture's default-tag entry.
        ("vit_base_patch16_224.mae", None),
    ],
)
def test_upstream_data(crawled: dict, name: str, upstream: str | None) -> None:
    (row,) = rows(crawled["dir"], "SELECT upstream_data FROM checkpoints WHERE checkpoint_id = ?", [f"timm:{name}"])
    assert row[0] == upstream


def test_second_crawl_adds_and_changes_nothing(crawled: dict) -> None:
    second = summary(crawled["second"][1])
    first = summary(crawled["first"][1])
    assert (second["added"], second["changed"], second["failed"]) == (0, 0, 0)
    assert second["unchanged"] == second["seen"] == first["seen"]
    assert crawled["after"] == crawled["before"]
    runs = rows(crawled["dir"], "SELECT status, seen, added, changed, unchanged FROM crawl_runs ORDER BY run_id")
    assert runs == [
        ("completed", first["seen"], first["seen"], 0, 0),
        ("completed", first["seen"], 0, 0, first["seen"]),
    ]


def test_filter_and_limit(hubindex, index_dir: Path, timm) -> None:
    result = hubindex("crawl", "timm", "--filter", "resnet50.*", "--limit", "3")
    assert result.exit_code == 0, result.stderr
    counts = summary(result.stdout)
    assert (counts["seen"], counts["added"]) == (3, 3)
    ids = [r[0] for r in rows(index_dir, "SELECT checkpoint_id FROM checkpoints ORDER BY checkpoint_id")]
    assert ids == sorted(f"timm:{n}" for n in timm.list_pretrained("resnet50.*")[:3])
    assert all(i.startswith("timm:resnet50.") for i in ids)


def test_filter_matching_nothing_indexes_nothing(hubindex, index_dir: Path) -> None:
    result = hubindex("crawl", "timm", "--filter", "no_such_model_*")
    assert result.exit_code == 0, result.stderr
    assert summary(result.stdout)["seen"] == 0
    assert rows(index_dir, "SELECT count(*) FROM checkpoints") == [(0,)]


def test_results_option_reads_another_table(hubindex, index_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "results-imagenet.csv").write_text(
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
        "resnet18.a1_in1k,288,12.5,87.5,30.25,69.75,11.69,1.000,bicubic\n"
    )
    result = hubindex("crawl", "timm", "--filter", "resnet18.a1_in1k", "--results", str(results))
    assert result.exit_code == 0, result.stderr
    assert rows(index_dir, "SELECT in1k_top1, in1k_top5, params_total, upstream_data FROM checkpoints") == [
        (12.5, 30.25, 11_690_000, "in1k")  # no metadata table there: upstream from the tag
    ]


def test_missing_results_folder_is_a_one_line_error(hubindex, index_dir: Path, tmp_path: Path) -> None:
    assert hubindex("crawl", "timm", "--filter", "resnet18.a1_in1k").exit_code == 0
    before = rows(index_dir, "SELECT * FROM checkpoints")

    missing = tmp_path / "no-such-folder"
    result = hubindex("crawl", "timm", "--results", str(missing))
    assert_one_line_error(result)
    assert str(missing) in result.stderr and "results-imagenet.csv" in result.stderr
    assert result.stdout == ""
    assert rows(index_dir, "SELECT * FROM checkpoints") == before
    # Bad options fail before a run is recorded: no failed run that a later crawl would "resume".
    assert rows(index_dir, "SELECT status FROM crawl_runs ORDER BY run_id") == [("completed",)]


def test_results_folder_without_the_table_is_a_one_line_error(hubindex, index_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(SHIPPED_TIMM_RESULTS / "model_metadata-in1k.csv", folder)  # but no results-imagenet.csv
    result = hubindex("crawl", "timm", "--results", str(folder))
    assert_one_line_error(result)
    assert "results-imagenet.csv" in result.stderr
    assert not (index_dir / "catalog.duckdb").exists()  # refused before anything was written
