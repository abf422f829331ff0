"""End to end on the real zoo: crawl local -> probe -> kappa -> neighbors, as the README's main command."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import CliResult, Zoo, run_hubindex
from test_relate import kappa_rows_matrix

ORG = "hf:hubindex-zoo/"
TEXT_CORPUS = ("bbc-news", "1500")
IMAGE_CORPUS = ("sample-images", "48")


@pytest.fixture(scope="module")
def flow(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One index: the zoo crawled, every member probed on its default corpus, kappa computed."""
    index_dir = tmp_path_factory.mktemp("flow-index")

    def run(*args: str) -> CliResult:
        result = run_hubindex(*args, index_dir=index_dir)
        assert result.exit_code == 0, (args, result.stderr)
        return result

    run("crawl", "local", str(zoo.out))
    probes = {}
    for corpus, size in (TEXT_CORPUS, IMAGE_CORPUS):
        where = f"starts_with(checkpoint_id, '{ORG}')"
        started = time.perf_counter()
        first = run("probe", "--where", where, "--corpus", corpus, "--max-items", size)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = run("probe", "--where", where, "--corpus", corpus, "--max-items", size)
        probes[corpus] = (first.stdout, first_s, second.stdout, time.perf_counter() - started)
    kappa = {}
    for corpus, _ in (TEXT_CORPUS, IMAGE_CORPUS):
        ids, values = kappa_rows_matrix(json.loads(run("kappa", "--corpus", corpus, "--json").stdout))
        kappa[corpus] = {(a, b): values[i, j] for i, a in enumerate(ids) for j, b in enumerate(ids)}
    return {"index_dir": index_dir, "run": run, "probes": probes, "kappa": kappa}


def k(flow: dict[str, Any], corpus: str, a: str, b: str) -> float:
    return flow["kappa"][corpus][(ORG + a, ORG + b)]


def test_every_member_is_probed_then_reused_without_forward(flow: dict[str, Any]) -> None:
    for corpus, (first, first_s, second, second_s) in flow["probes"].items():
        assert "10 checkpoints; 5 probed, 0 reused, 0 failed, 5 without a matching probe" in first, first
        assert "10 checkpoints; 0 probed, 5 reused, 0 failed" in second, second
        # No model is loaded the second time: reading five stored matrices is far cheaper.
        assert second_s < first_s / 3, (corpus, first_s, second_s)
        print(f"{corpus}: first probe {first_s:.1f} s, second {second_s:.2f} s")


def test_text_children_are_closer_than_unrelated_checkpoints(flow: dict[str, Any]) -> None:
    text = TEXT_CORPUS[0]
    parent = "all-MiniLM-L6-v2"
    unrelated = k(flow, text, parent, "all-MiniLM-L6-v2-random-init")
    for child in ("all-MiniLM-L6-v2-first3", "all-MiniLM-L6-v2-bbc-topics"):
        assert k(flow, text, parent, child) > unrelated, child
    assert k(flow, text, parent, "all-MiniLM-L6-v2-bbc-topics") > k(
        flow, text, "paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2-random-init")


def test_image_children_are_closer_than_unrelated_checkpoints(flow: dict[str, Any]) -> None:
    images = IMAGE_CORPUS[0]
    parent = "tf_efficientnet_lite0.in1k"
    assert k(flow, images, parent, "tf_efficientnet_lite0.in1k_ft_digits") > k(
        flow, images, parent, "tf_efficientnet_lite0.random_init")
    # Pretrained siblings share more of the task space than a pretrained and a random network.
    assert k(flow, images, parent, "tf_efficientnet_lite1.in1k") > k(
        flow, images, "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite0.random_init")


def test_kappa_table_is_a_valid_covariance(flow: dict[str, Any]) -> None:
    import numpy as np

    for table in flow["kappa"].values():
        ids = sorted({a for a, _ in table})
        matrix = np.array([[table[(a, b)] for b in ids] for a in ids])
        assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
        assert (matrix >= 0).all() and (matrix <= 1 + 1e-9).all()
        assert np.linalg.eigvalsh(matrix).min() > -1e-6


def test_neighbors_of_the_parent_include_its_child(flow: dict[str, Any]) -> None:
    result = flow["run"]("neighbors", ORG + "tf_efficientnet_lite0.in1k", "-k", "2", "--corpus", "sample-images",
                         "--json")
    found = [entry["checkpoint_id"] for entry in json.loads(result.stdout)]
    assert ORG + "tf_efficientnet_lite0.in1k_ft_digits" in found


def test_the_readme_neighbours_example_returns_the_exact_top_1(flow: dict[str, Any]) -> None:
    """`hubindex neighbors hf:hubindex-zoo/all-MiniLM-L6-v2 --corpus bbc-news -k 3`: fingerprint
    candidates re-ranked by exact kappa, so the order and the values are the kappa table's."""
    parent = ORG + "all-MiniLM-L6-v2"
    found = json.loads(flow["run"]("neighbors", parent, "--corpus", "bbc-news", "-k", "3", "--json").stdout)
    table = flow["kappa"][TEXT_CORPUS[0]]
    exact = sorted((b for a, b in table if a == parent and b != parent), key=lambda b: -table[(parent, b)])
    assert [entry["checkpoint_id"] for entry in found] == exact[:3]
    for entry in found:
        assert entry["kappa"] == pytest.approx(table[(parent, entry["checkpoint_id"])], abs=1e-6)


def test_plot_of_the_zoo(flow: dict[str, Any], tmp_path: Any) -> None:
    out = tmp_path / "kappa.png"
    flow["run"]("plot", "kappa", "--corpus", "bbc-news", "--out", str(out))
    assert out.stat().st_size > 10_000
