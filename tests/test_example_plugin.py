"""The worked example plugin (examples/hubindex-nearest-centroid), really installed and used.

Entry points are not loaded under pytest, so the example is installed into a temporary folder
and the `hubindex` command runs in a subprocess that finds it on PYTHONPATH, as a user's would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import CliResult, assert_one_line_error

from hubindex.task_targets import stratified_split

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hubindex-nearest-centroid"
HUBINDEX = Path(sys.executable).with_name("hubindex")  # the console script of this environment


@dataclass(frozen=True)
class Installed:
    site: Path  # the folder the example was installed into
    features: Path
    labels: Path
    index: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The example installed once with pip, offline, into a folder outside the project's venv."""
    root = tmp_path_factory.mktemp("example-plugin")
    # Build from a copy: pip builds local folders in place and would leave build/ in examples/.
    source = shutil.copytree(EXAMPLE, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
        check=False, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    features, labels = toy_task()
    np.save(root / "F.npy", features)
    np.save(root / "y.npy", labels)
    return Installed(site, root / "F.npy", root / "y.npy", root / "index")


def toy_task() -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes: nearest-centroid gets most, but not all, held-out rows right."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    features = rng.normal(size=(len(labels), 5))
    features[:, 0] += labels
    return features, labels


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    """The metric computed directly, with full Euclidean distances."""
    centroids = np.stack([features[train & (labels == c)].mean(axis=0) for c in range(labels.max() + 1)])
    held_out = features[~train]
    distances = np.linalg.norm(held_out[:, None, :] - centroids[None, :, :], axis=2)
    return float((distances.argmin(axis=1) == labels[~train]).mean())


def run_installed(installed: Installed, *args: str, load_plugins: str | None = None) -> CliResult:
    """Run the real `hubindex` executable with the installed example importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBINDEX_")}
    env["PYTHONPATH"] = str(installed.site)
    env["HUBINDEX_INDEX"] = str(installed.index)
    if load_plugins is not None:
        env["HUBINDEX_LOAD_PLUGINS"] = load_plugins
    done = subprocess.run([str(HUBINDEX), *args], check=False, env=env, capture_output=True, text=True, timeout=120)
    return CliResult(done.returncode, done.stdout, done.stderr)


def test_plugins_lists_the_example(installed: Installed) -> None:
    result = run_installed(installed, "plugins", "--json")
    assert result.exit_code == 0, result.stderr
    entry = next(e for e in json.loads(result.stdout) if e["name"] == "nearest_centroid")
    assert entry["builtin"] is False
    assert entry["hooks"] == ["register_metrics"]
    assert entry["metrics"] == ["nearest-centroid (v1)"]


def test_metric_value_matches_a_direct_computation(installed: Installed) -> None:
    features, labels = toy_task()
    expected = nearest_centroid_accuracy(features, labels, stratified_split(labels, 0.2, 0))
    assert 0.4 < expected < 1.0  # the task is neither trivial nor hopeless

    args = ("metric", "nearest-centroid", "--features", str(installed.features), "--labels", str(installed.labels))
    result = run_installed(installed, *args, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["metric"], out["version"], out["value"]) == ("nearest-centroid", "1", expected)

    # The allow-list names third-party plugins by entry-point name.
    only = run_installed(installed, *args, "--json", load_plugins="nearest_centroid")
    assert only.exit_code == 0, only.stderr
    assert json.loads(only.stdout)["value"] == expected


def test_metric_is_unknown_when_not_allowed(installed: Installed) -> None:
    args = ("metric", "nearest-centroid", "--features", str(installed.features), "--labels", str(installed.labels))
    result = run_installed(installed, *args, load_plugins="hubindex_plugins.crawl_timm")
    assert_one_line_error(result, "unknown metric 'nearest-centroid'", "available metrics:")

    # The error names the metrics that are available.
    result = run_installed(installed, "metric", "no-such-metric", "--features", str(installed.features),
                           "--labels", str(installed.labels), load_plugins="nearest_centroid")
    assert_one_line_error(result, "unknown metric 'no-such-metric'; available metrics: nearest-centroid")


def test_no_held_out_rows_is_not_applicable(installed: Installed, tmp_path: Path) -> None:
    """One example per class leaves nothing to evaluate on: the plugin's MetricNotApplicable."""
    np.save(tmp_path / "F.npy", np.eye(3))
    np.save(tmp_path / "y.npy", np.arange(3))
    result = run_installed(installed, "metric", "nearest-centroid", "--features", str(tmp_path / "F.npy"),
                           "--labels", str(tmp_path / "y.npy"))
    assert_one_line_error(result, "metric 'nearest-centroid' cannot score these arrays: no held-out rows")


def test_docs_show_the_example_as_it_is() -> None:
    """The walk-through in docs/metrics.md quotes the module and the pyproject.toml verbatim."""
    guide = (REPO / "docs" / "metrics.md").read_text()
    section = guide.split("\n## Writing a metric plugin\n", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"^```(python|toml)\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL))
    assert blocks["python"] == (EXAMPLE / "hubindex_nearest_centroid.py").read_text()
    assert blocks["toml"] == (EXAMPLE / "pyproject.toml").read_text()
