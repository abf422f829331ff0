"""Benchmark: concurrent model_info and the cost of a 1%-changed re-crawl, against the Hub imitation.

    .venv/bin/python benchmarks/bench_crawl.py [--repos 40] [--latency 0.05 0.3] [--recrawl 2000]

1. A first crawl of --repos repos from `tests/hub_imitation.py` serving every `model_info` after
   a set latency, with --concurrency 1, 4, 8 and 16: wall seconds and the speed-up over 1.
2. A crawl of --recrawl repos, then re-crawls with nothing changed and with 1% of the repos given a
   new sha (three of each): catalog writes to `checkpoints` and all statements (DuckDB's query
   log), and the median wall time of each kind, with their ratio.

Takes about a minute at the defaults. The load average is printed, since other work skews timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import run_hubindex  # noqa: E402
from hub_imitation import MODEL_INFO, HubImitation, HubServer  # noqa: E402
from test_crawl_scale import catalog_statements, checkpoint_writes  # noqa: E402


def crawl(hub: HubImitation, index_dir: Path, *options: str) -> float:
    started = time.perf_counter()
    result = run_hubindex("crawl", "hf", "--endpoint", hub.url, *options, index_dir=index_dir)
    if result.exit_code != 0:
        raise SystemExit(f"crawl failed: {result.stderr}")
    return time.perf_counter() - started


def concurrency(server: HubServer, work: Path, repos: int, latency: float) -> None:
    with server.serve(HubImitation(page_size=100)) as hub:
        for rank in range(repos):
            hub.add_repo(f"org/model-{rank:03d}", downloads=10**6 - rank)
        hub.latency(MODEL_INFO, latency)
        cells = []
        first = None
        for workers in (1, 4, 8, 16):
            seconds = crawl(hub, work / f"latency-{latency}-{workers}", "--concurrency", str(workers))
            first = first or seconds
            cells.append(f"{seconds:.2f} s" + ("" if workers == 1 else f" ({first / seconds:.1f}x)"))
        print(f"| {latency * 1000:.0f} ms | " + " | ".join(cells) + " |")


def recrawl(server: HubServer, work: Path, repos: int) -> None:
    with server.serve(HubImitation(page_size=1000)) as hub:
        names = [f"org/model-{i:05d}" for i in range(repos)]
        for rank, name in enumerate(names):
            hub.add_repo(name, downloads=10**7 - rank)
        index_dir = work / "recrawl"
        crawl(hub, index_dir)
        seconds: dict[str, list[float]] = {"unchanged": [], "1% changed": []}
        counts = {}
        for repeat in range(3):
            for kind in seconds:
                if kind == "1% changed":
                    for i in range(repeat, repos, 100):
                        hub.update_repo(names[i])
                with catalog_statements(work / f"log-{kind}-{repeat}") as statements:
                    seconds[kind].append(crawl(hub, index_dir))
                counts[kind] = (checkpoint_writes(statements), len(statements))
        print("| re-crawl | checkpoint writes | statements | median s |")
        print("|---|---:|---:|---:|")
        for kind, times in seconds.items():
            print(f"| {kind} | {counts[kind][0]} | {counts[kind][1]} | {statistics.median(times):.2f} |")
        ratio = statistics.median(seconds["1% changed"]) / statistics.median(seconds["unchanged"])
        print(f"\n1%-changed / unchanged: {counts['1% changed'][0] / counts['unchanged'][0]:.2f}x in writes, "
              f"{ratio:.2f}x in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=40)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.05, 0.3])
    parser.add_argument("--recrawl", type=int, default=2000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    server = HubServer()
    try:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            print(f"\n## 1. First crawl of {args.repos} repos, model_info answered after a latency\n")
            print("| latency | --concurrency 1 | 4 | 8 | 16 |")
            print("|---|---:|---:|---:|---:|")
            for latency in args.latency:
                concurrency(server, work, args.repos, latency)
            print(f"\n## 2. Re-crawls of {args.recrawl} repos\n")
            recrawl(server, work, args.recrawl)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
