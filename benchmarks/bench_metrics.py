"""Benchmark: time of each task-aware metric on synthetic features, beside its public reference, and how it scales with n and d.

    .venv/bin/python benchmarks/bench_metrics.py [--quick] [--metric NAME ...] [--threads N]
        [--skip-scaling] [--skip-references] [--skip-cold]

Synthetic tasks of C = 100 balanced classes: class means plus Gaussian noise, both with a
decaying spectrum (variance of coordinate i proportional to 1 / i, as in real features, so that
PCA at 80% of the variance keeps a few hundred dimensions, not nearly all), seeded. The head of
leep and nce is a softmax over 1,000 source classes of a random linear map of the features;
task-relatedness gets a reference task of the same size drawn with another seed; emms gets three
label encoders of width 1,024, each a seeded random linear map of the class means plus as much
independent noise (so the label embeddings are related to the classes as text embeddings of class
names are). linear and knn hold out 20% of each class (hubindex.task_targets.stratified_split);
every other metric uses all n rows as train rows, as `hubindex metric` does. One run per cell;
the value is printed too, and a warning a metric raised (e.g. no convergence) is noted.

What is timed is the metric's own work, as `hubindex score` times it
(hubindex.scoring.run_metric): before any clock starts, every selected metric's declared
`imports` are imported and each metric is called once, untimed, on a tiny input (n = 200,
d = 16, C = 10), so lazy imports inside `score` (scikit-learn, FAISS) are not timed either. The
"import + first use" column is what that leaves out: in a fresh interpreter (after
`import hubindex` and the plugin registry), the first tiny call including the declared imports
minus a second identical call (--skip-cold leaves it out).

Threads: --threads N (default 1) fixes the BLAS and OpenMP pools for the whole run with
threadpoolctl.threadpool_limits(N) and faiss.omp_set_num_threads(N), applied after every library
is loaded (after the warm-up calls); the header lists each pool and its thread count, and a line
says whether a pool loaded during the run escaped the limit.

References: the public implementations as re-implemented in this project's tests
(tests/test_metrics_discriminant.py, tests/test_metrics_information.py, tests/test_metric_emms.py,
imported from there), each timed right after the metric it mirrors, on the same input, also after
a warm-up call. Several compute a different value by design (the plugin docstrings give each
difference); the note column says which.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.plugins import metrics
from hubindex.task_targets import stratified_split
from hubindex.types import NEEDS_HELD_OUT, MetricInput

SOURCE_CLASSES = 1_000
ENCODERS = 3
WARM_UP = (200, 16, 10)  # n, d, C of the untimed first call
REFERENCE_WARM_UP = (300, 64, 5)  # the references' PCA(64) and PARC's 32 components need d >= 64
REFERENCE_DIMENSIONS = 64  # PCA size of the NCTI and GBC references (their published settings)
TESTS = Path(__file__).resolve().parent.parent / "tests"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------------ inputs


def synthetic(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features n x d, labels, class means C x d)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)
    scales = 1.0 / np.sqrt(np.arange(1, d + 1))
    means = 0.1 * rng.normal(size=(n_classes, d)) * scales
    return means[labels] + rng.normal(size=(n, d)) * scales, labels.astype(np.int64), means


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def head(features: np.ndarray, seed: int) -> np.ndarray:
    logits = features @ np.random.default_rng(seed).normal(size=(features.shape[1], SOURCE_CLASSES))
    return softmax_rows(3.0 * logits / logits.std())


def label_encoders(means: np.ndarray, width: int, seed: int) -> tuple[np.ndarray, ...]:
    """ENCODERS (C, width) label embeddings: a seeded random linear map of the standardised class
    means plus independent noise of the same variance."""
    rng = np.random.default_rng(seed + 1_000)
    standard = (means - means.mean(axis=0)) / means.std(axis=0)
    d = means.shape[1]
    return tuple(standard @ rng.normal(size=(d, width)) / math.sqrt(d) + rng.normal(size=(len(means), width))
                 for _ in range(ENCODERS))


def inputs(n: int, d: int, n_classes: int, width: int, seed: int = 0) -> tuple[MetricInput, MetricInput]:
    """(input with all rows as train rows, the same with 20% of each class held out)."""
    features, labels, means = synthetic(n, d, n_classes, seed)
    reference_features, reference_labels, _ = synthetic(n, d, n_classes, seed + 1)
    reference = MetricInput(reference_features, reference_labels, np.ones(n, dtype=bool))
    probs = head(features, seed)
    embeddings = label_encoders(means, width, seed)
    everything = MetricInput(features, labels, np.ones(n, dtype=bool), probs, reference, seed,
                             label_embeddings=embeddings)
    held_out = MetricInput(features, labels, stratified_split(labels, 0.2, seed), probs, reference, seed,
                           label_embeddings=embeddings)
    return everything, held_out


def metric_input(metric_cls: type, pair: tuple[MetricInput, MetricInput]) -> MetricInput:
    return pair[1] if NEEDS_HELD_OUT in metric_cls.needs else pair[0]


# ------------------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Timing:
    seconds: float
    value: Any  # a float, or text (NCTI's raw terms)
    note: str


def timed(call: Callable[[], Any]) -> Timing:
    """One run of `call`: seconds, value and the warnings it raised (an exception is noted, value NaN)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        try:
            value, error = call(), ""
        except Exception as exc:  # noqa: BLE001 - a metric that fails is reported, not fatal
            value, error = math.nan, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
    notes = sorted({str(w.message).split(";")[0].split("\n")[0][:120] for w in caught})
    return Timing(seconds, value, "; ".join(([error] if error else []) + notes))


def untimed(call: Callable[[], Any]) -> None:
    """A warm-up call: its result, warnings and failures do not matter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception:  # noqa: BLE001, S110 - not applicable to a tiny input is fine
            pass


def score(metric_cls: type, data: MetricInput) -> float:
    return float(metric_cls().score(data))


def prepare(metric_cls: type, warm: tuple[MetricInput, MetricInput]) -> None:
    """What hubindex.scoring.run_metric does before its clock, and one untimed tiny call."""
    for module in metric_cls.imports:
        importlib.import_module(module)
    untimed(lambda: metric_cls().score(metric_input(metric_cls, warm)))


def cold_probe(name: str) -> None:
    """(In a fresh interpreter) print the seconds of the declared imports plus a first tiny call, and of a second call."""
    metric_cls = metrics()[name].component
    data = metric_input(metric_cls, inputs(*WARM_UP, width=WARM_UP[1]))
    started = time.perf_counter()
    for module in metric_cls.imports:
        importlib.import_module(module)
    untimed(lambda: metric_cls().score(data))
    first = time.perf_counter() - started
    started = time.perf_counter()
    untimed(lambda: metric_cls().score(data))
    print(first, time.perf_counter() - started)


def cold_overhead(name: str, threads: int) -> float:
    """Import + first-use seconds of a metric, from a fresh interpreter (NaN if the probe fails)."""
    env = dict(os.environ, **{variable: str(threads) for variable in THREAD_VARIABLES})
    done = subprocess.run([sys.executable, __file__, "--cold-probe", name], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    try:
        first, second = (float(x) for x in done.stdout.split()[-2:])
    except ValueError:
        return math.nan
    return first - second


# ------------------------------------------------------------------------------------ references


@dataclass(frozen=True)
class Reference:
    metric: str
    label: str
    run: Callable[[MetricInput], Any]
    note: Callable[[Any, Any, MetricInput], str]  # (hubindex value, reference value, input) -> note


def ratio_note(text: str, ratio: Callable[[float, float], float]) -> Callable[[Any, Any, MetricInput], str]:
    """A note with a ratio of the two values, ratio(hubindex value, reference value), in it."""
    def note(ours: Any, theirs: Any, _: MetricInput) -> str:
        finite = all(isinstance(v, float) and math.isfinite(v) and v for v in (ours, theirs))
        return text.format(ratio=ratio(ours, theirs) if finite else math.nan)
    return note


def fixed_note(text: str) -> Callable[[Any, Any, MetricInput], str]:
    return lambda ours, theirs, data: text


def references() -> list[Reference]:
    """The tests' re-implementations of the public code, with what differs by design."""
    sys.path.insert(0, str(TESTS))
    import test_metric_emms as emms_tests
    import test_metrics_discriminant as discriminant_tests
    import test_metrics_information as information_tests
    from hubindex_plugins.metrics_discriminant import ncti_terms

    def ncti_reference(data: MetricInput) -> str:
        seli, ncc, vc = discriminant_tests.reference_ncti_terms(data.features, data.labels, REFERENCE_DIMENSIONS)
        return f"terms {seli:.6g}, {ncc:.6g}, {vc:.6g}"

    def ncti_note(ours: Any, theirs: Any, data: MetricInput) -> str:
        terms = ncti_terms(data.features, data.labels, data.n_classes)  # untimed: the raw terms, compared
        same = theirs == f"terms {terms.seli_nuclear:.6g}, {terms.ncc:.6g}, {terms.vc_log_nuclear:.6g}"
        return ("raw terms (nuclear norm of Z, ncc, log of the summed class nuclear norms) "
                + ("identical to 6 digits" if same else
                f"differ: ours {terms.seli_nuclear:.6g}, {terms.ncc:.6g}, {terms.vc_log_nuclear:.6g}")
                + "; the reference's score is a min-max over a pool of models, ours scales each term by task constants")

    def emms_reference(data: MetricInput) -> float:
        return emms_tests.reference_emms(data.features, data.stacked)  # type: ignore[attr-defined]

    def emms_note(ours: Any, theirs: Any, data: MetricInput) -> str:
        width = data.label_embeddings[0].shape[1]
        return (f"reference / D^2 = {theirs / width**2:.4g} (D = {width:,}: its `/ N*D2` multiplies by D); "
                "one round of alternating minimisation + sparsemax, ours the exact simplex minimum (<= after /D^2)")

    return [
        Reference("sfda", "TencentARC/SFDA", lambda x: discriminant_tests.reference_sfda(x.features, x.labels)[0],
                  fixed_note("same classifier (V V^T = W^-1); its lambda from 3 power steps, ours exact sigma_1: "
                             "equal at the lambda floor")),
        Reference("ncti", "BUserName/NCTI (exact PCA)", ncti_reference, ncti_note),
        Reference("gbc", "stable_transfer gbc.py (spherical)",
                  lambda x: discriminant_tests.reference_gbc(x.features, x.labels, "spherical", REFERENCE_DIMENSIONS),
                  fixed_note("differs by design: its spherical log-det counts log sigma^2 once, not p times; "
                             "absolute variance floor 1e-4")),
        Reference("transrate", "paper listing / tllib",
                  lambda x: information_tests.listing_transrate(x.features, x.labels),
                  fixed_note("differs by design: centring only (scale-dependent), 1/C class weights")),
        Reference("transrate", "Long-Kai/TransRate repository",
                  lambda x: information_tests.repository_transrate(x.features, x.labels, 1e-4),
                  ratio_note("same rows and rates, but both divided by rank(Z): ours / reference = {ratio:.6g}",
                             lambda ours, theirs: ours / theirs)),
        Reference("pactran", "google-research/pactran_metrics (0.1, 10)",
                  lambda x: information_tests.reference_pac_gauss(x.features, x.labels, 0.1, 10.0, x.seed)[0],
                  fixed_note("differs by design: its Hessian lacks the 1/n (log argument ~n times larger) and adds "
                             "the bias curvature; tol 1e-6, 100 iterations")),
        Reference("etran", "mgholamikn/ETran (S_en + S_cls)",
                  lambda x: float(sum(information_tests.reference_etran(x.features, x.labels))),
                  fixed_note("differs by design: its eigh of a non-symmetric matrix makes its LDA the "
                             "identity-covariance posterior; same S_en")),
        Reference("parc", "dbolya/parc (randomized PCA)",
                  lambda x: float(information_tests.reference_parc(x.features, x.labels)),
                  ratio_note("100 rho, randomized PCA (1 power iteration), ours exact: reference / (100 x ours) = {ratio:.4f}",
                             lambda ours, theirs: theirs / (100 * ours))),
        Reference("emms", "OpenGVLab/Multitask-Model-Selector", emms_reference, emms_note),
    ]


@dataclass(frozen=True)
class StackedInput(MetricInput):
    """An input with the reference EMMS's (N, D, K) stacked targets, built (as the test does) before the clock."""

    stacked: np.ndarray | None = None


def with_stacked(data: MetricInput) -> StackedInput:
    stacked = np.stack([e[data.labels] for e in data.label_embeddings], axis=2) if data.label_embeddings else None
    fields = {name: getattr(data, name) for name in MetricInput.__dataclass_fields__}
    return StackedInput(**fields, stacked=stacked)


# ------------------------------------------------------------------------------------ output


def sec(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds >= 0.1 else f"{seconds:.3f}"


def show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return f"{value:.6g}" if isinstance(value, float) and abs(value) >= 1e4 else f"{value:.4g}"


def pools() -> list[tuple[str, str, int]]:
    from threadpoolctl import threadpool_info

    return [(pool["internal_api"], pool.get("prefix", ""), pool["num_threads"]) for pool in threadpool_info()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME", help="a metric to time (repeatable)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="BLAS / OpenMP threads (default 1)")
    parser.add_argument("--skip-scaling", action="store_true", help="leave out the time-vs-n and time-vs-d sections")
    parser.add_argument("--skip-references", action="store_true", help="leave out the public references")
    parser.add_argument("--skip-cold", action="store_true", help="leave out the import + first-use column")
    parser.add_argument("--cold-probe", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_probe:
        cold_probe(args.cold_probe)
        return
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    registered = metrics()
    unknown = [name for name in args.metric if name not in registered]
    if unknown:
        parser.error(f"unknown metric {unknown[0]!r}; available: {', '.join(sorted(registered))}")
    names = args.metric or sorted(registered)
    if args.quick:
        n_classes, full, ns, ds, width = 10, (600, 128), (300, 600), (64, 128), 64
    else:
        n_classes, full, ns, ds, width = 100, (5_000, 2_048), (1_000, 2_000, 5_000), (256, 512, 1_024, 2_048), 1_024
    started = time.perf_counter()
    load_before = os.getloadavg()

    # Everything loaded and called once before the thread limit and before any clock.
    import faiss
    from threadpoolctl import threadpool_limits

    warm = inputs(*WARM_UP, width=WARM_UP[1])
    for name in names:
        prepare(registered[name].component, warm)
    chosen = [] if args.skip_references else [r for r in references() if r.metric in names]
    reference_warm = with_stacked(inputs(*REFERENCE_WARM_UP, width=16)[0])
    for reference in chosen:
        untimed(partial(reference.run, reference_warm))
    threadpool_limits(args.threads)  # holds until the process ends (only a `with` block or restore undoes it)
    faiss.omp_set_num_threads(args.threads)
    threads_at_start = pools()

    cold = {} if args.skip_cold else {name: cold_overhead(name, args.threads) for name in names}
    main_title = f"Each metric at n = {full[0]:,}, d = {full[1]:,}, C = {n_classes}"
    scaling = [] if args.skip_scaling else [
        (f"Time vs n (d = {full[1]:,})", [(n, full[1]) for n in ns]),
        (f"Time vs d (n = {full[0]:,})", [(full[0], d) for d in ds]),
    ]
    results: dict[tuple[str, int, int], Timing] = {}
    reference_results: list[tuple[Reference, Timing, Timing, str]] = []
    pair = inputs(*full, n_classes, width)
    stacked = with_stacked(pair[0]) if any(r.metric == "emms" for r in chosen) else pair[0]
    for name in names:
        metric_cls = registered[name].component
        print(f"{name} n={full[0]} d={full[1]}", file=sys.stderr, flush=True)
        results[(name, *full)] = timing = timed(partial(score, metric_cls, metric_input(metric_cls, pair)))
        for reference in (r for r in chosen if r.metric == name):
            print(f"  reference {reference.label}", file=sys.stderr, flush=True)
            theirs = timed(partial(reference.run, stacked))
            note = reference.note(timing.value, theirs.value, pair[0])  # after the clock (NCTI's raw terms)
            reference_results.append((reference, timing, theirs, note))
    load_mid = os.getloadavg()
    for _, sizes in scaling:
        for n, d in sizes:
            if all((name, n, d) in results for name in names):
                continue
            pair = inputs(n, d, n_classes, width)
            for name in names:
                metric_cls = registered[name].component
                print(f"{name} n={n} d={d}", file=sys.stderr, flush=True)
                results[(name, n, d)] = timed(partial(score, metric_cls, metric_input(metric_cls, pair)))
    load_after = os.getloadavg()
    threads_at_end = pools()
    elapsed = time.perf_counter() - started

    print(f"{os.cpu_count()} CPU cores; --threads {args.threads}: threadpoolctl.threadpool_limits({args.threads}) "
          f"and faiss.omp_set_num_threads({args.threads}); pools: "
          + ", ".join(f"{api} {prefix} {threads}" for api, prefix, threads in threads_at_start))
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in load_before)} before; "
          f"{', '.join(f'{x:.1f}' for x in load_mid)} after the first section"
          + (f"; {', '.join(f'{x:.1f}' for x in load_after)} after the scaling sections" if scaling else "")
          + f"; {elapsed / 60:.1f} min in all (warm-ups and import probes included)")
    escaped = sorted(set(threads_at_end) - set(threads_at_start))
    print("every thread pool kept its limit to the end" if not escaped else
          f"pools that escaped the limit (loaded later): {escaped}")
    print("Timing excludes imports: declared `imports` imported and one untimed warm-up call "
          f"(n = {WARM_UP[0]}, d = {WARM_UP[1]}, C = {WARM_UP[2]}) per metric before any clock; one run per cell.")

    print(f"\n{main_title}\n")
    if cold:
        print("| metric | n | d | C | seconds | import + first use s | value | note |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
    else:
        print("| metric | n | d | C | seconds | value | note |")
        print("|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        n, d = full
        timing = results[(name, n, d)]
        extra = f" {cold[name]:.2f} |" if cold else ""
        print(f"| {name} | {n:,} | {d:,} | {n_classes} | {sec(timing.seconds)} |{extra} {show(timing.value)} | {timing.note} |")
    if cold:
        print("\n(import + first use: a fresh interpreter's first tiny call with the declared imports, minus a second "
              "call - what the warm-up keeps out of `seconds`.)")

    if reference_results:
        print(f"\nEach metric vs its public reference at n = {full[0]:,}, d = {full[1]:,}, C = {n_classes}\n")
        print("(the references as re-implemented in tests/; each timed right after its metric, same input; "
              "ratio = reference s / hubindex s)\n")
        print("| metric | reference | hubindex s | reference s | ratio | hubindex value | reference value | note |")
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for reference, ours, theirs, note in reference_results:
            if theirs.note:
                note += f"; reference raised: {theirs.note}"
            if ours.note:
                note += f"; hubindex raised: {ours.note}"
            print(f"| {reference.metric} | {reference.label} | {sec(ours.seconds)} | {sec(theirs.seconds)} | "
                  f"{theirs.seconds / ours.seconds:.1f} | {show(ours.value)} | {show(theirs.value)} | {note} |")

    for title, sizes in scaling:
        print(f"\n{title}\n")
        print("| metric | n | d | C | seconds | value | note |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name in names:
            for n, d in sizes:
                timing = results[(name, n, d)]
                print(f"| {name} | {n:,} | {d:,} | {n_classes} | {sec(timing.seconds)} | {show(timing.value)} | {timing.note} |")


if __name__ == "__main__":
    main()
