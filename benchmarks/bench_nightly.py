"""`hubindex nightly` over the real zoo: a first run against a no-op second run, per stage - one command:

    .venv/bin/python benchmarks/bench_nightly.py [--zoo DIR] [--text-items N] [--image-items N]

Builds the zoo if needed (skipping members already built), makes a fresh index with two labeled
tasks (digits 0-4, images; BBC sports vs tech, text), writes a nightly configuration - crawl the
zoo, probe its ten members on bbc-news and sample-images, kappa on both, score both tasks with
logme and knn - and runs `hubindex nightly` twice as a subprocess, as cron would. The second run
finds nothing new. Prints one markdown table: wall time per stage from `nightly_stages`, what
each stage added, and each run's wall time including interpreter start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hubindex.cli import main as hubindex
from hubindex.index import EMBEDDED_INDEX, Index

PER_CLASS = 30
LEAD_WORDS = 40


def run_in_process(index_dir: Path, *args: str) -> None:
    with contextlib.redirect_stdout(sys.stderr):
        code = hubindex(["--index", str(index_dir), *args])
    if code != 0:
        raise SystemExit(f"hubindex {' '.join(args)} failed with exit code {code}")


def add_tasks(index_dir: Path, data: Path) -> None:
    """Two small labeled tasks, one per modality."""
    from sklearn.datasets import load_digits

    from hubindex_plugins.zoo import read_bbc_news

    digits = load_digits()
    rows = np.concatenate([np.flatnonzero(digits.target == c)[:PER_CLASS] for c in range(5)])
    np.save(data / "digits-x.npy", digits.images[rows] / 16.0)
    np.save(data / "digits-y.npy", digits.target[rows])
    run_in_process(index_dir, "task", "add", "digits-0to4", "--arrays", str(data / "digits-x.npy"),
                   str(data / "digits-y.npy"))
    topics, texts, labels = read_bbc_news()
    chosen = [i for topic in ("sports", "tech")
              for i in [j for j, label in enumerate(labels) if topics[label] == topic][:PER_CLASS]]
    np.save(data / "bbc-x.npy", np.array([" ".join(texts[i].split()[:LEAD_WORDS]) for i in chosen]))
    np.save(data / "bbc-y.npy", np.array([topics[labels[i]] for i in chosen]))
    run_in_process(index_dir, "task", "add", "bbc-sports-tech", "--arrays", str(data / "bbc-x.npy"),
                   str(data / "bbc-y.npy"))


def write_config(path: Path, zoo: Path, text_items: int, image_items: int) -> None:
    path.write_text(f"""
[[crawl]]
source = "local"
path = "{zoo}"

[probe]
corpora = [{{ name = "bbc-news", max_items = {text_items} }}, {{ name = "sample-images", max_items = {image_items} }}]
where = "starts_with(checkpoint_id, 'hf:hubindex-zoo/')"

[score]
metrics = ["logme", "knn"]
""")


def timed_nightly(index_dir: Path, config: Path) -> float:
    """Wall seconds of `hubindex nightly` as a new process (start-up included)."""
    started = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "hubindex"), "--index", str(index_dir), "nightly",
                             "--config", str(config)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"hubindex nightly failed ({result.returncode}): {result.stderr}")
    print(result.stdout, file=sys.stderr)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=EMBEDDED_INDEX / "zoo", help="zoo folder (built if needed)")
    parser.add_argument("--text-items", type=int, default=2000, help="bbc-news words")
    parser.add_argument("--image-items", type=int, default=64, help="sample-images images")
    args = parser.parse_args()

    from hubindex_plugins.zoo import build_zoo

    build_zoo(args.zoo, progress=False)
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    index_dir = work / "index"
    add_tasks(index_dir, work)
    config = work / "nightly.toml"
    write_config(config, args.zoo.resolve(), args.text_items, args.image_items)
    walls = [timed_nightly(index_dir, config) for _ in range(2)]

    with Index(index_dir).open_catalog(read_only=True) as catalog:
        stages = catalog.conn.execute(
            "SELECT stage, run_id, seconds, added FROM nightly_stages ORDER BY run_id").fetchall()
    by_stage: dict[str, dict[int, tuple[float, int]]] = {}
    for stage, run_id, seconds, added in stages:
        by_stage.setdefault(stage, {})[run_id] = (seconds, added)
    print(f"zoo {args.zoo}: bbc-news {args.text_items} words, sample-images {args.image_items} images, "
          f"tasks digits-0to4 and bbc-sports-tech ({PER_CLASS} per class), metrics logme and knn\n")
    print("| stage | first run s | no-op run s | first run added | no-op run added |")
    print("|---|---:|---:|---:|---:|")
    for stage in ("crawl", "probe", "kappa", "score"):
        (s1, a1), (s2, a2) = by_stage[stage][1], by_stage[stage][2]
        print(f"| {stage} | {s1:.1f} | {s2:.1f} | {a1} | {a2} |")
    print(f"| **whole run, process wall time** | {walls[0]:.1f} | {walls[1]:.1f} | | |")


if __name__ == "__main__":
    main()
