"""Benchmark: time of each task-aware metric on synthetic features, and how it scales with n and d.

    .venv/bin/python benchmarks/bench_metrics.py [--quick] [--metric NAME ...]

Synthetic tasks of C = 100 balanced classes: class means plus Gaussian noise, both with a
decaying spectrum (variance of coordinate i proportional to 1 / i, as in real features, so that
PCA at 80% of the variance keeps a few hundred dimensions, not nearly all), seeded. The head of
leep and nce is a softmax over 1,000 source classes of a random linear map of the features;
task-relatedness gets a reference task of the same size drawn with another seed. linear and knn
hold out 20% of each class (hubindex.tasks.stratified_split); every other metric uses all n rows
as train rows, as `hubindex metric` does. One run per cell; the value is printed too, and a
warning a metric raised (e.g. no convergence) is noted.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from scipy.special import softmax

from hubindex.plugins import metrics
from hubindex.tasks import stratified_split
from hubindex.types import NEEDS_HELD_OUT, MetricInput

SOURCE_CLASSES = 1_000


def synthetic(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    scales = 1.0 / np.sqrt(np.arange(1, d + 1))
    means = 0.1 * rng.normal(size=(n_classes, d)) * scales
    return means[labels] + rng.normal(size=(n, d)) * scales, labels.astype(np.int64)


def head(features: np.ndarray, seed: int) -> np.ndarray:
    logits = features @ np.random.default_rng(seed).normal(size=(features.shape[1], SOURCE_CLASSES))
    return softmax(3.0 * logits / logits.std(), axis=1)


def inputs(n: int, d: int, n_classes: int, seed: int = 0) -> tuple[MetricInput, MetricInput]:
    """(input with all rows as train rows, the same with 20% of each class held out)."""
    features, labels = synthetic(n, d, n_classes, seed)
    reference_features, reference_labels = synthetic(n, d, n_classes, seed + 1)
    reference = MetricInput(reference_features, reference_labels, np.ones(n, dtype=bool))
    probs = head(features, seed)
    everything = MetricInput(features, labels, np.ones(n, dtype=bool), probs, reference, seed)
    held_out = MetricInput(features, labels, stratified_split(labels, 0.2, seed), probs, reference, seed)
    return everything, held_out


def time_metric(metric_cls: type, data: MetricInput) -> tuple[float, float, str]:
    """(seconds, value, note) of one run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        value = metric_cls().score(data)
        seconds = time.perf_counter() - started
    note = "; ".join(sorted({str(w.message).split(";")[0] for w in caught}))
    return seconds, value, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME", help="a metric to time (repeatable)")
    args = parser.parse_args()
    registered = metrics()
    unknown = [name for name in args.metric if name not in registered]
    if unknown:
        parser.error(f"unknown metric {unknown[0]!r}; available: {', '.join(sorted(registered))}")
    names = args.metric or sorted(registered)
    if args.quick:
        n_classes, full, ns, ds = 10, (600, 128), (300, 600), (64, 128)
    else:
        n_classes, full, ns, ds = 100, (5_000, 2_048), (1_000, 2_000, 5_000), (256, 512, 1_024, 2_048)
    sections = [
        (f"Each metric at n = {full[0]:,}, d = {full[1]:,}, C = {n_classes}", [full]),
        (f"Time vs n (d = {full[1]:,})", [(n, full[1]) for n in ns]),
        (f"Time vs d (n = {full[0]:,})", [(full[0], d) for d in ds]),
    ]
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, int, int], tuple[float, float, str]] = {}
    for _, sizes in sections:
        for n, d in sizes:
            if all((name, n, d) in results for name in names):
                continue
            everything, held_out = inputs(n, d, n_classes)
            for name in names:
                metric_cls = registered[name].component
                data = held_out if NEEDS_HELD_OUT in metric_cls.needs else everything
                results[(name, n, d)] = time_metric(metric_cls, data)
    print(f"{os.cpu_count()} CPU cores; one run per cell; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    for title, sizes in sections:
        print(f"\n{title}\n")
        print("| metric | n | d | C | seconds | value | note |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name in names:
            for n, d in sizes:
                seconds, value, note = results[(name, n, d)]
                print(f"| {name} | {n:,} | {d:,} | {n_classes} | {seconds:.2f} | {value:.4g} | {note} |")


if __name__ == "__main__":
    main()
