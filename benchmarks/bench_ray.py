"""Benchmark: probing throughput with the local executor, Ray with 1 worker and Ray with 2 workers.

    .venv/bin/python benchmarks/bench_ray.py [--zoo DIR] [--max-words N] [--max-images N] [--runs N]

Every real zoo checkpoint (built by `hubindex zoo build` if --zoo is not given) is probed on its
modality's default corpus (bbc-news words for the text models, sample-images for the image models)
through `run_probe`, on a fresh copy of a crawled index each time, so every checkpoint really runs.
The executors are measured side by side in one run, plus the local executor with torch limited to
one thread (what a Ray task with one CPU gets) as a control. Ray uses a fresh local instance per
worker count (`num_cpus` = workers; its start time is reported apart). The first run on an
instance is cold (its worker processes start and import torch, transformers and timm); later runs
reuse those workers. It prints a markdown table of checkpoints/s and items/s (words + images), and
the mean model time (load + forward) per checkpoint by corpus from the `embeddings` table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

CORPORA = ("bbc-news", "sample-images")


def probe_all(index_dir: Path, ids: list[str], sizes: dict[str, int], executor: Any) -> tuple[float, int, int]:
    """(seconds, checkpoints probed, items embedded) of probing every checkpoint on both corpora."""
    from hubindex.index import Index
    from hubindex.probing import run_probe

    started = time.perf_counter()
    probed = items = 0
    for corpus in CORPORA:
        summary = run_probe(Index(index_dir), ids, corpus, device="cpu", max_items=sizes[corpus],
                            show_progress=False, executor=executor)
        assert summary.failed == 0 and summary.reused == 0, summary.line()
        probed += summary.probed
        items += summary.probed * sizes[corpus]
    return time.perf_counter() - started, probed, items


def model_seconds(index_dir: Path) -> dict[str, float]:
    """Mean seconds of the model step (load + forward) per checkpoint, by corpus."""
    from hubindex.index import Index

    with Index(index_dir).open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute("SELECT corpus, avg(seconds) FROM embeddings GROUP BY corpus").fetchall()
    return dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="an existing zoo folder (default: build one in a temp folder)")
    parser.add_argument("--max-words", type=int, default=10_000, help="bbc-news words (default: its default size)")
    parser.add_argument("--max-images", type=int, default=312, help="sample-images images (default: all)")
    parser.add_argument("--runs", type=int, default=2, help="runs per executor; the first on Ray is cold")
    args = parser.parse_args()

    import ray
    import torch

    from hubindex.executors import make_executor
    from hubindex.index import Index
    from hubindex.pipeline import run_crawl
    from hubindex.plugins import corpora, crawlers
    from hubindex_plugins.zoo import build_zoo

    workdir = Path(tempfile.mkdtemp(prefix="hubindex-bench-ray-"))
    zoo = args.zoo or workdir / "zoo"
    if args.zoo is None:
        build_zoo(zoo, progress=False)
    base = workdir / "crawled"
    run_crawl(Index(base), crawlers()["local"].component(path=zoo), show_progress=False)
    with Index(base).open_catalog(read_only=True) as catalog:
        ids = [row[0] for row in catalog.conn.execute("SELECT checkpoint_id FROM checkpoints ORDER BY 1").fetchall()]
    sizes = {"bbc-news": args.max_words, "sample-images": args.max_images}
    for name, size in sizes.items():  # load once so that no run pays for reading the files first
        corpora()[name].component(max_items=size).load()

    fresh = iter(range(1_000_000))

    def fresh_index() -> Path:
        target = workdir / f"index-{next(fresh)}"
        shutil.copytree(base, target)
        return target

    print(f"{len(ids)} zoo checkpoints; bbc-news {args.max_words} words, sample-images {args.max_images} images; "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    print()
    print("| executor | run | Ray start s | probe s | checkpoints | checkpoints/s | items/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    per_checkpoint: dict[str, dict[str, float]] = {}
    default_threads = torch.get_num_threads()
    configurations = (("local", None, default_threads), ("local, 1 torch thread", None, 1),
                      ("ray, 1 worker", 1, default_threads), ("ray, 2 workers", 2, default_threads))
    for label, workers, threads in configurations:
        # The second local row is a control: torch with one thread, as in a Ray task with one CPU.
        torch.set_num_threads(threads)
        start_s = 0.0
        if workers is not None:
            started = time.perf_counter()
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            start_s = time.perf_counter() - started
        executor = make_executor("local" if workers is None else "ray", workers=workers)
        try:
            for run in range(args.runs):
                index_dir = fresh_index()
                seconds, probed, items = probe_all(index_dir, ids, sizes, executor)
                cold = run == 0 and workers is not None
                start = f"{start_s:.1f}" if cold else "-"
                print(f"| {label} | {run + 1}{' (cold)' if cold else ''} | {start} | {seconds:.1f} | {probed} "
                      f"| {probed / seconds:.2f} | {items / seconds:.0f} |", flush=True)
                per_checkpoint[label] = model_seconds(index_dir)
        finally:
            executor.close()
            if workers is not None:
                ray.shutdown()
    print()
    print("Mean model seconds per checkpoint (load + forward, the `embeddings.seconds` column), last run:")
    print()
    print("| executor | " + " | ".join(f"{corpus} s/ckpt" for corpus in CORPORA) + " |")
    print("|---|" + "---:|" * len(CORPORA))
    for label, means in per_checkpoint.items():
        print(f"| {label} | " + " | ".join(f"{means.get(corpus, float('nan')):.2f}" for corpus in CORPORA) + " |")
    print()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
