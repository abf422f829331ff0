"""The index the web explorer's tests serve: the README's main job on the real zoo (timm crawled,
the zoo crawled, probed on text and photos, kappa, MMI), plus what the other pages show - two
labeled tasks with scores and a stored search, a nightly run, lineage, failures - and hostile text
a page must escape (a local checkpoint whose folder name and card hold HTML and script)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import run_hubindex
from hostile_checkpoints import tiny_bert_files, write_files

ZOO_WHERE = "starts_with(checkpoint_id, 'hf:hubindex-zoo/')"
TEXT_CORPUS = "bbc-news"
IMAGE_CORPUS = "sample-images"
# A checkpoint folder named like markup, with a card full of it: every page must show it as text.
HOSTILE_FOLDER = "evil<script>alert('x')</script>&<b>"
HOSTILE_CARD = ("---\nlicense: \"<img src=x onerror=alert('lic')>\"\npipeline_tag: feature-extraction\n"
                "tags:\n- \"\\\"><script>alert('tag')</script>\"\n---\nA tiny BERT.\n")


def run(index_dir: Path, *args: str, expect: int | None = 0) -> str:
    result = run_hubindex(*args, index_dir=index_dir)
    if expect is not None:
        assert result.exit_code == expect, (args, result.exit_code, result.stderr[-2000:])
    return result.stdout


def build_web_index(zoo_out: Path, index_dir: Path, work: Path) -> dict[str, str]:
    """Fill index_dir (see the module docstring); returns names the tests look for."""
    from sklearn.datasets import load_digits

    from hubindex_plugins.zoo import read_bbc_news

    run(index_dir, "crawl", "timm")
    run(index_dir, "crawl", "local", str(zoo_out))
    hostile = work / HOSTILE_FOLDER
    write_files(hostile, tiny_bert_files(hostile) | {"README.md": HOSTILE_CARD.encode()})
    broken = work / "broken-bert"
    write_files(broken, tiny_bert_files(broken) | {"model.safetensors": b"not a safetensors file",
                                                    "README.md": b"---\npipeline_tag: feature-extraction\n---\n"})
    run(index_dir, "crawl", "local", str(hostile))
    run(index_dir, "crawl", "local", str(broken))
    run(index_dir, "probe", "--where", ZOO_WHERE, "--corpus", TEXT_CORPUS, "--max-items", "200")
    run(index_dir, "probe", "--where", ZOO_WHERE, "--corpus", IMAGE_CORPUS, "--max-items", "48")
    # The broken checkpoint fails (a failure row); the hostile one is probed like any other.
    run(index_dir, "probe", "--where", "source = 'local'", "--corpus", TEXT_CORPUS, "--max-items", "200",
        expect=None)
    for corpus in (TEXT_CORPUS, IMAGE_CORPUS):
        run(index_dir, "kappa", "--corpus", corpus)
        run(index_dir, "select", "mmi", "--budget", "3", "--corpus", corpus)
    digits = load_digits()
    picked = np.concatenate([np.flatnonzero(digits.target == c)[:12] for c in range(5)])
    np.save(work / "x.npy", digits.images[picked] / 16.0)
    np.save(work / "y.npy", digits.target[picked])
    run(index_dir, "task", "add", "digits", "--arrays", str(work / "x.npy"), str(work / "y.npy"))
    topics, texts, labels = read_bbc_news()
    chosen = [i for topic in range(3) for i in [j for j, label in enumerate(labels) if label == topic][:15]]
    np.save(work / "tx.npy", np.array([" ".join(texts[i].split()[:40]) for i in chosen]))
    np.save(work / "ty.npy", np.array([topics[labels[i]] for i in chosen]))
    run(index_dir, "task", "add", "bbc", "--arrays", str(work / "tx.npy"), str(work / "ty.npy"))
    for task in ("digits", "bbc"):
        run(index_dir, "score", "--task", task, "--where", ZOO_WHERE, "--metric", "logme", "--metric", "knn",
            "--metric", "leep")
        run(index_dir, "search", "--task", task, "--metric", "logme", "--budget", "2", "--strategy", "hybrid",
            "--where", ZOO_WHERE)
    run(index_dir, "nightly", expect=None)  # defaults: repeats the crawls, reuses every probe and score
    return {"hostile_folder": HOSTILE_FOLDER, "text_corpus": TEXT_CORPUS, "image_corpus": IMAGE_CORPUS}
