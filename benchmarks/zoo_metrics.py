"""Every metric's score per checkpoint of the real zoo, on two local tasks - one command:

    .venv/bin/python benchmarks/zoo_metrics.py [--index DIR] [--per-class N]

Builds the zoo (skipping members already built), crawls it, adds the tasks and runs
`hubindex score` for every installed metric, then prints one markdown table per task.

- digits 0-4 (image): scikit-learn's 8x8 digits of classes 0-4, N per class; the reference task
  of task-relatedness is the digits of classes 5-9 (other examples, N per class).
- BBC sports/tech (text): the first 40 words (title and lead) of BBC News articles of the topics
  sports and tech, N per class; reference: the topics business, entertainment and politics.

Re-running the command reuses the stored features and scores (nothing is recomputed).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hubindex.cli import main as hubindex
from hubindex.index import Index
from hubindex.scoring import metric_classes

LEAD_WORDS = 40


def run(index_dir: Path, *args: str) -> None:
    """`hubindex ARGS` in this process; its output goes to stderr, the tables alone to stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        code = hubindex(["--index", str(index_dir), *args])
    if code != 0:
        raise SystemExit(f"hubindex {' '.join(args)} failed with exit code {code}")


def save_task(index_dir: Path, data: Path, name: str, examples: np.ndarray, labels: np.ndarray) -> None:
    np.save(data / f"{name}-x.npy", examples)
    np.save(data / f"{name}-y.npy", labels)
    run(index_dir, "task", "add", name, "--arrays", str(data / f"{name}-x.npy"), str(data / f"{name}-y.npy"),
        "--replace")


def add_tasks(index_dir: Path, per_class: int) -> list[tuple[str, str]]:
    """(task, reference task) pairs, added to the index."""
    from sklearn.datasets import load_digits

    from hubindex_plugins.zoo import read_bbc_news

    data = Path(tempfile.mkdtemp(prefix="zoo-metrics-"))
    digits = load_digits()

    def digit_rows(classes: range) -> np.ndarray:
        return np.concatenate([np.flatnonzero(digits.target == c)[:per_class] for c in classes])

    for name, classes in (("digits-0to4", range(5)), ("digits-5to9", range(5, 10))):
        rows = digit_rows(classes)
        save_task(index_dir, data, name, digits.images[rows] / 16.0, digits.target[rows])

    topics, texts, labels = read_bbc_news()
    for name, chosen in (("bbc-sports-tech", ("sports", "tech")),
                         ("bbc-business-entertainment-politics", ("business", "entertainment", "politics"))):
        missing = set(chosen) - set(topics)
        if missing:
            raise SystemExit(f"BBC News has no topic {sorted(missing)}; its topics: {topics}")
        rows = [i for topic in chosen for i in [j for j, label in enumerate(labels) if topics[label] == topic][:per_class]]
        leads = np.array([" ".join(texts[i].split()[:LEAD_WORDS]) for i in rows])
        save_task(index_dir, data, name, leads, np.array([topics[labels[i]] for i in rows]))
    return [("digits-0to4", "digits-5to9"), ("bbc-sports-tech", "bbc-business-entertainment-politics")]


def table(index_dir: Path, task: str, metric_names: list[str]) -> str:
    with Index(index_dir).open_catalog(read_only=True) as catalog:
        rows = catalog.conn.execute(
            "SELECT checkpoint_id, metric, value, seconds FROM task_scores WHERE task = ? ORDER BY 1", [task]
        ).fetchall()
    values: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for checkpoint_id, metric, value, spent in rows:
        values.setdefault(checkpoint_id.removeprefix("hf:hubindex-zoo/"), {})[metric] = value
        seconds[metric] = seconds.get(metric, 0.0) + spent
    shown = [m for m in metric_names if m in seconds]
    out = [f"| checkpoint | {' | '.join(shown)} |", f"|---|{'---:|' * len(shown)}"]
    for checkpoint_id in sorted(values):
        cells = [f"{values[checkpoint_id][m]:.4f}" if m in values[checkpoint_id] else "n/a" for m in shown]
        out.append(f"| {checkpoint_id} | {' | '.join(cells)} |")
    out.append(f"| *metric seconds, all checkpoints* | {' | '.join(f'{seconds[m]:.2f}' for m in shown)} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index folder [default: a new temporary one]")
    parser.add_argument("--per-class", type=int, default=60, help="examples per class in every task")
    args = parser.parse_args()
    index_dir = args.index or Path(tempfile.mkdtemp(prefix="zoo-metrics-index-"))
    started = time.perf_counter()
    run(index_dir, "zoo", "build")
    run(index_dir, "crawl", "local", str(index_dir / "zoo"))
    metric_names = [cls.name for cls in metric_classes()]
    higher = {cls.name: cls.higher_is_better for cls in metric_classes()}
    sections = []
    for task, reference in add_tasks(index_dir, args.per_class):
        library = "timm" if task.startswith("digits") else "transformers"
        run(index_dir, "score", "--task", task, "--reference-task", reference,
            "--where", f"starts_with(checkpoint_id, 'hf:hubindex-zoo/') AND library_name = '{library}'")
        sections.append(f"#### {task} (reference task: {reference})\n\n{table(index_dir, task, metric_names)}")
    print(f"\nzoo metric tables ({args.per_class} examples per class, index {index_dir}, "
          f"{time.perf_counter() - started:.0f} s)\n")
    print("Higher is better except for " + ", ".join(n for n, h in higher.items() if not h) + ".\n")
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
