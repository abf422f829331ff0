"""`hubindex nightly --check`: everything that would fail at 2 am fails now, one line per problem naming the key.

The checks run against real indexes: an empty one (no catalog yet), one with a registered task,
and the embedded index's layout after `hubindex zoo build` for the shipped example.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Zoo, assert_one_line_error

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "nightly" / "nightly.toml"
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def write_config(folder: Path, text: str) -> Path:
    config = folder / "nightly.toml"
    config.write_text(text)
    return config


def check(hubindex: Any, config: Path, *args: str) -> Any:
    return hubindex("nightly", "--check", "--config", str(config), *args)


def problem_lines(result: Any) -> list[str]:
    """The `hubindex: error:` lines of a refused check; nothing else may be printed."""
    assert result.exit_code == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("hubindex: error: ") for line in lines), result.stderr
    return lines


def add_news_task(hubindex: Any, folder: Path, name: str = "news") -> None:
    """A small labeled text task registered in the test's index (made if it does not exist yet)."""
    index = Path(os.environ["HUBINDEX_INDEX"])
    index.mkdir(parents=True, exist_ok=True)
    rows = ["text,label"] + [f"{'market shares profit' if i % 2 else 'match team goal'} {i},{'business' if i % 2 else 'sport'}"
                             for i in range(20)]
    csv = folder / f"{name}.csv"
    csv.write_text("\n".join(rows) + "\n")
    result = hubindex("task", "add", name, "--csv", str(csv), "--text-col", "text", "--label-col", "label")
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------------------------- SQL conditions


@pytest.mark.parametrize("section", ["probe", "score"])
def test_a_where_that_is_not_sql_fails_the_check_without_a_catalog(hubindex: Any, tmp_path: Path, section: str) -> None:
    config = write_config(tmp_path, f'[{section}]\nwhere = "params_total <"\n')
    assert_one_line_error(check(hubindex, config), str(config), f"[{section}] where: ", "params_total <", exit_code=2)


def test_a_where_naming_an_unknown_column_fails_the_check_against_the_catalog(
        hubindex: Any, tmp_path: Path) -> None:
    add_news_task(hubindex, tmp_path)  # creates the catalog
    config = write_config(tmp_path, '[probe]\nwhere = "no_such_column > 3"\n')
    assert_one_line_error(check(hubindex, config), "[probe] where: ", "no_such_column", exit_code=2)


def test_a_where_that_reads_a_file_fails_the_check_as_it_would_fail_the_run(hubindex: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("checkpoint_id\nx\n")
    config = write_config(tmp_path, f'[probe]\nwhere = "checkpoint_id IN (SELECT * FROM read_csv(\'{secret}\'))"\n')
    assert_one_line_error(check(hubindex, config), "[probe] where: ", exit_code=2)


def test_a_where_that_smuggles_a_second_query_fails_the_check(hubindex: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[probe]\nwhere = "true UNION SELECT checkpoint_id FROM checkpoints"\n')
    assert_one_line_error(check(hubindex, config), "[probe] where: ", exit_code=2)


def test_a_valid_where_passes(hubindex: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[probe]\nwhere = "params_total < 30e6 AND local_path IS NOT NULL"\n')
    result = check(hubindex, config)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["probe"]["where"] == "params_total < 30e6 AND local_path IS NOT NULL"


# ---------------------------------------------------------------------------------- tasks, paths, corpora


def test_unknown_tasks_fail_the_check(hubindex: Any, tmp_path: Path) -> None:
    add_news_task(hubindex, tmp_path)
    config = write_config(tmp_path, '[score]\ntasks = ["news", "no-such-task"]\n'
                                    'reference_tasks = { news = "no-such-reference" }\n')
    lines = problem_lines(check(hubindex, config))
    assert len(lines) == 2, lines
    assert "[score] tasks: no task named 'no-such-task'" in lines[0]
    assert "[score] reference_tasks: no task named 'no-such-reference'" in lines[1]
    assert all("hubindex task add" in line for line in lines)


def test_unknown_label_encoders_fail_the_check(hubindex: Any, tmp_path: Path) -> None:
    add_news_task(hubindex, tmp_path)
    config = write_config(tmp_path, '[score]\ntasks = ["news"]\nlabel_encoders = ["hf:nobody/encoder"]\n')
    lines = problem_lines(check(hubindex, config))
    assert len(lines) == 1, lines
    assert "[score] label_encoders: no checkpoint 'hf:nobody/encoder' in the catalog; crawl it first" in lines[0]


def test_registered_tasks_pass(hubindex: Any, tmp_path: Path) -> None:
    add_news_task(hubindex, tmp_path)
    add_news_task(hubindex, tmp_path, "news-again")
    config = write_config(tmp_path, '[score]\ntasks = ["news"]\nreference_tasks = { news = "news-again" }\n')
    result = check(hubindex, config)
    assert result.exit_code == 0, result.stderr


def test_a_missing_crawl_path_fails_the_check(hubindex: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[crawl]]\nsource = "local"\npath = "no-such-cache"\n')
    assert_one_line_error(check(hubindex, config), "[[crawl]] #1 (local) path: ", str(tmp_path / "no-such-cache"),
                          "does not exist", exit_code=2)


def test_an_unknown_kappa_corpus_fails_the_check(hubindex: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[kappa]\ncorpora = ["bbc-news", "no-such-corpus"]\n')
    assert_one_line_error(check(hubindex, config), "[kappa] corpora: ", "no-such-corpus", exit_code=2)


def test_every_problem_is_reported_each_on_one_line(hubindex: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[crawl]]\nsource = "local"\npath = "gone"\n'
                                    '[probe]\nwhere = "params_total <"\n[score]\ntasks = ["nope"]\n')
    lines = problem_lines(check(hubindex, config))
    assert [line.split(": ")[3] for line in lines] == ["[[crawl]] #1 (local) path", "[probe] where", "[score] tasks"]


# ---------------------------------------------------------------------------------- the JSON it prints


def toml_value(value: Any) -> str:
    """A JSON value written as TOML (inline tables and arrays; JSON has no dates)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict), value
    return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def as_toml(settings: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in settings.items())


FULL_CONFIG = """
[[crawl]]
source = "hf"
author = "google"
filter = ["image-classification", "timm"]
sort = "lastModified"
limit = 500

[[crawl]]
source = "timm"
filter = "efficientnet*"

[probe]
corpora = [{ name = "bbc-news", max_items = 300 }, "sample-images"]
where = "local_path IS NOT NULL"
max_checkpoints = 20
batch_size = 8

[kappa]
corpora = ["bbc-news"]
centered = false
dense_max = 500
graph_neighbors = 8

[score]
metrics = ["logme", "knn"]
max_checkpoints = 10

[limits]
retry_failed_after_days = 2.5
busy_timeout_seconds = 30

[executor]
kind = "local"
device = "cpu"
"""


def test_check_prints_the_toml_keys_and_its_json_parses_back_to_the_same_config(
        hubindex: Any, tmp_path: Path) -> None:
    from hubindex.nightly import parse_config

    config = write_config(tmp_path, FULL_CONFIG)
    result = check(hubindex, config)
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert list(printed) == ["crawl", "probe", "kappa", "score", "limits", "executor"]
    hf, timm = printed["crawl"]
    assert hf["source"] == "hf" and hf["filter"] == ["image-classification", "timm"] and hf["limit"] == 500
    assert timm == {"source": "timm", "filter": "efficientnet*"}
    assert printed["probe"]["corpora"] == [{"name": "bbc-news", "max_items": 300}, {"name": "sample-images"}]
    assert printed["kappa"]["graph_neighbors"] == 8 and "graph_candidates" not in printed["kappa"]

    again = tmp_path / "again.toml"
    again.write_text(as_toml(printed))
    assert parse_config(again.read_text()).as_json() == parse_config(FULL_CONFIG).as_json()
    assert parse_config(again.read_text()) == parse_config(FULL_CONFIG)
    reprinted = check(hubindex, again)
    assert reprinted.exit_code == 0, reprinted.stderr
    assert json.loads(reprinted.stdout) == printed


def test_check_of_the_defaults_round_trips_too(hubindex: Any, tmp_path: Path) -> None:
    from hubindex.nightly import parse_config

    result = hubindex("nightly", "--check")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert parse_config(as_toml(printed)).as_json() == printed


# ---------------------------------------------------------------------------------- the shipped example


def test_the_shipped_example_passes_the_check_on_the_embedded_index_after_zoo_build(
        hubindex: Any, index_dir: Path, zoo: Zoo, tmp_path: Path) -> None:
    # The repository's layout, without writing into it: examples/nightly/nightly.toml next to an
    # index_data/ whose zoo is the one `hubindex zoo build` assembles.
    repo = tmp_path / "repo"
    (repo / "examples" / "nightly").mkdir(parents=True)
    shutil.copy(EXAMPLE_CONFIG, repo / "examples" / "nightly" / "nightly.toml")
    (repo / "index_data").mkdir()
    (repo / "index_data" / "zoo").symlink_to(zoo.out, target_is_directory=True)
    config = repo / "examples" / "nightly" / "nightly.toml"
    assert hubindex("crawl", "local", str(repo / "index_data" / "zoo")).exit_code == 0
    result = check(hubindex, config)
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert {c["source"] for c in printed["crawl"]} <= {"timm", "local"}  # offline sources only
