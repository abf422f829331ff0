"""Benchmark: greedy MMI selection, exact against Algorithm 1 written literally, then exact against low-rank.

    .venv/bin/python benchmarks/bench_mmi.py [--quick] [--budget K] [--rank R] [--million]

kappa is synthetic but shaped like a zoo's: checkpoints in families share latent factors, plus
private noise of varying strength; C is the correlation of their features and kappa = C * C
elementwise (PSD by the Schur product theorem, in [0, 1], unit diagonal, full rank, like linear
CKA). Its off-diagonal part is exactly an inner product of "fingerprints" x_i = vec(f_i f_i^T) / s_i^2
(2,080 numbers for 64 latent factors), so kappa = X X^T + diag(1 - |x_i|^2), which gives the low-rank
path its input at sizes where kappa itself would not fit (n = 10^5 is 80 GB dense).

Sections, each a table:
1. `mmi_select` against `mmi_select_literal` on the same kappa (same picks required).
2. `mmi_select` alone, up to n = 10^4, and `mmi_select_lowrank` beside it at n = 10^4 (ratio).
3. `mmi_select_lowrank` from fingerprints at n = 10^4, 3 10^4, 10^5 (10^6 with --million).
4. The mutual information I(S; Z \\ S) of low-rank selections against the exact MMI selection at
   n = 5,000, both evaluated under the true dense kappa (log-determinants), for several ranks.

Times are wall seconds; `mmi_select` small sizes are the best of up to three runs (while they take
under 10 s in all), everything else one run. Memory is the peak of what the call allocated
(tracemalloc, which sees numpy's buffers; the input is not counted, and neither are the BLAS
threads' small work areas), and the process's peak RSS is printed after each section. The load
average is printed, since other work on the machine skews timings.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import cholesky
from threadpoolctl import threadpool_limits

from hubindex.selection import (
    _mirror_upper,
    lowrank_factor_from_features,
    lowrank_factor_from_kappa,
    mmi_select,
    mmi_select_literal,
    mmi_select_lowrank,
)


def _zoo_latents(n: int, latent: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(latent features f_i, private noise variances) of a zoo of n checkpoints in families."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 20), latent))
    factors = centres[rng.integers(0, len(centres), size=n)] + rng.uniform(0.2, 1.5, size=(n, 1)) * rng.normal(
        size=(n, latent))
    # Private noise features: orthogonal across checkpoints, so they only add to the diagonal.
    private = latent * rng.uniform(0.1, 2.0, size=n) ** 2
    return factors, private


def synthetic_kappa(n: int, latent: int = 64, seed: int = 0) -> np.ndarray:
    """The zoo's kappa = C * C, n x n, exactly symmetric (as the catalog's is)."""
    factors, private = _zoo_latents(n, latent, seed)
    kappa = factors @ factors.T
    kappa[np.diag_indices(n)] += private
    # In place throughout: at n = 10,000 one matrix is 800 MB.
    scale = 1.0 / np.sqrt(kappa.diagonal())
    kappa *= scale[:, None]
    kappa *= scale[None, :]
    np.square(kappa, out=kappa)
    # The product and the scaling round (i, j) and (j, i) differently; the catalog's kappa is symmetric to the bit.
    _mirror_upper(kappa)
    return kappa


def synthetic_fingerprints(n: int, latent: int = 64, seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    """Rows x_i with <x_i, x_j> = kappa_ij of `synthetic_kappa` off the diagonal (and |x_i| < 1 on it)."""
    factors, private = _zoo_latents(n, latent, seed)
    squared_norm = np.einsum("ij,ij->i", factors, factors) + private
    first, second = np.triu_indices(latent)
    # <f (x) f, g (x) g> = (f . g)^2, packed: f_a^2 once, and f_a f_b with weight sqrt(2) for a < b.
    weight = np.where(first == second, 1.0, np.sqrt(2.0))
    fingerprints = np.empty((n, len(first)), dtype=dtype)
    rows = 4096
    for start in range(0, n, rows):
        block = factors[start:start + rows]
        fingerprints[start:start + rows] = (block[:, first] * block[:, second] * weight
                                            / squared_norm[start:start + rows, None])
    return fingerprints


def measured(function: Callable[..., Any], *args: Any) -> tuple[Any, float, int]:
    """(result, wall seconds, peak bytes allocated during the call per tracemalloc)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = function(*args)
        return result, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def best_of(function: Callable[..., Any], *args: Any, repeat: int = 3, within_s: float = 10.0) -> tuple[Any, float]:
    result, best = timed(function, *args)
    spent = best
    for _ in range(repeat - 1):
        if spent + best > within_s:
            break
        result, seconds = timed(function, *args)
        spent += seconds
        best = min(best, seconds)
    return result, best


def load() -> str:
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def peak_rss() -> str:
    return f"process peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"


def growth(sizes: list[int], seconds: list[float]) -> str:
    """Exponent b of time ~ n^b between consecutive sizes."""
    return ", ".join(f"{a:,} -> {b:,}: {math.log(tb / ta) / math.log(b / a):.2f}"
                     for a, b, ta, tb in zip(sizes, sizes[1:], seconds, seconds[1:]))


def logdet(matrix: np.ndarray) -> float:
    """log det of a positive definite matrix (overwrites it)."""
    if matrix.size == 0:
        return 0.0
    factor = cholesky(matrix, lower=True, overwrite_a=True, check_finite=False)
    return 2.0 * float(np.log(factor.diagonal()).sum())


def mutual_information(kappa: np.ndarray, selected: list[int], logdet_all: float) -> float:
    """I(S; Z \\ S) = (log det kappa_SS + log det kappa_rest - log det kappa) / 2 under the dense kappa, in nats."""
    rest = np.ones(len(kappa), dtype=bool)
    rest[selected] = False
    return 0.5 * (logdet(kappa[np.ix_(selected, selected)]) + logdet(kappa[np.ix_(rest, rest)]) - logdet_all)


def compare_literal(sizes: list[int], budget: int) -> None:
    # One BLAS thread: the literal version solves thousands of small systems, and on a busy machine
    # BLAS threads on small matrices only contend (n = 300 took 417 s with them, about 15 s without).
    with threadpool_limits(1):
        _compare_literal(sizes, budget)


def _compare_literal(sizes: list[int], budget: int) -> None:
    print("\n## 1. mmi_select against the literal Algorithm 1 (one BLAS thread)\n")
    print("| n | K | mmi_select s | literal s | literal/mmi_select | same picks | max abs diff mi_nats | jitter |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|")
    for n in sizes:
        kappa = synthetic_kappa(n)
        k = min(budget, n)
        fast, fast_s = best_of(mmi_select, kappa, k)
        literal, literal_s = timed(mmi_select_literal, kappa, k, fast.jitter)
        same = fast.indices == literal.indices
        diff = np.abs(np.array(fast.mi_nats) - np.array(literal.mi_nats)).max()
        print(f"| {n:,} | {k} | {fast_s:.3f} | {literal_s:.2f} | {literal_s / fast_s:.0f} "
              f"| {'yes' if same else 'NO'} | {diff:.1e} | {fast.jitter:g} |")
        if not same:
            raise SystemExit(f"selections differ at n = {n}: {fast.indices} != {literal.indices}")


def exact_and_lowrank(sizes: list[int], side_by_side: int, budget: int, rank: int) -> None:
    print(f"\n## 2. mmi_select alone, and mmi_select_lowrank (rank {rank}, from fingerprints) beside it "
          f"at n = {side_by_side:,}\n")
    print("| n | K | exact s | exact peak MB | input MB | low-rank factor s | low-rank select s | low-rank peak MB "
          "| exact / low-rank select | picks in common |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    exact_seconds = []
    for n in [*sizes, side_by_side]:
        kappa = synthetic_kappa(n)
        k = min(budget, n)
        if n == side_by_side:
            exact, exact_s, exact_peak = measured(mmi_select, kappa, k)
        else:
            exact, exact_s = best_of(mmi_select, kappa, k)
            exact_peak = measured(mmi_select, kappa, k)[2]
        exact_seconds.append(exact_s)
        input_mb = kappa.nbytes / 1e6
        del kappa
        cells = ["-"] * 5
        if n == side_by_side:
            fingerprints = synthetic_fingerprints(n)
            (factors, noise), factor_s, factor_peak = measured(lowrank_factor_from_features, fingerprints, rank)
            del fingerprints
            low, low_s, low_peak = measured(mmi_select_lowrank, factors, noise, k)
            cells = [f"{factor_s:.2f}", f"{low_s:.2f}", f"{max(factor_peak, low_peak) / 1e6:.0f}",
                     f"{exact_s / low_s:.0f}", f"{len(set(low.indices) & set(exact.indices))} of {k}"]
        print(f"| {n:,} | {k} | {exact_s:.3f} | {exact_peak / 1e6:.0f} | {input_mb:.0f} | " + " | ".join(cells) + " |")
    print(f"\nexact time growth exponents: {growth([*sizes, side_by_side], exact_seconds)}; {peak_rss()}; "
          f"load {load()}")


def lowrank_scaling(sizes: list[int], budget: int, rank: int, latent: int) -> None:
    print(f"\n## 3. mmi_select_lowrank alone, rank {rank}, fingerprints of {latent * (latent + 1) // 2} float32 "
          f"numbers ({latent} latent factors)\n")
    print("| n | K | fingerprints MB | factor s | factor peak MB | select s | select peak MB | total s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    select_seconds, total_seconds = [], []
    for n in sizes:
        fingerprints = synthetic_fingerprints(n, latent=latent, dtype=np.float32)
        (factors, noise), factor_s, factor_peak = measured(lowrank_factor_from_features, fingerprints, rank)
        input_mb = fingerprints.nbytes / 1e6
        del fingerprints
        k = min(budget, n)
        _, select_s, select_peak = measured(mmi_select_lowrank, factors, noise, k)
        select_seconds.append(select_s)
        total_seconds.append(factor_s + select_s)
        print(f"| {n:,} | {k} | {input_mb:.0f} | {factor_s:.1f} | {factor_peak / 1e6:.0f} | {select_s:.2f} "
              f"| {select_peak / 1e6:.0f} | {factor_s + select_s:.1f} |")
        del factors, noise
    print(f"\nselect time growth exponents: {growth(sizes, select_seconds)}; factor + select: "
          f"{growth(sizes, total_seconds)}; {peak_rss()}; load {load()}")


def information_loss(n: int, budget: int, ranks: list[int]) -> None:
    print(f"\n## 4. I(S; Z \\ S) of low-rank selections against the exact MMI selection, n = {n:,}, K = {budget}, "
          "under the true kappa\n")
    kappa = synthetic_kappa(n)
    exact, exact_s = timed(mmi_select, kappa, budget)
    logdet_all = logdet(kappa.copy())
    exact_mi = mutual_information(kappa, exact.indices, logdet_all)
    print(f"exact: {exact_s:.1f} s, I = {exact_mi:.4f} nats (its running sum of gains: {exact.mi_nats[-1]:.4f}), "
          f"jitter {exact.jitter:g}\n")
    print("| factor from | rank | factor s | select s | I(S; Z \\ S) nats | loss nats | loss % | picks in common "
          "| median d |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    fingerprints = synthetic_fingerprints(n)
    for source in ("kappa (Nystrom)", "fingerprints (SVD)"):
        for rank in ranks:
            if source.startswith("kappa"):
                (factors, noise), factor_s = timed(lowrank_factor_from_kappa, kappa, rank)
            else:
                (factors, noise), factor_s = timed(lowrank_factor_from_features, fingerprints, rank)
            low, low_s = timed(mmi_select_lowrank, factors, noise, budget)
            mi = mutual_information(kappa, low.indices, logdet_all)
            print(f"| {source} | {rank} | {factor_s:.1f} | {low_s:.2f} | {mi:.4f} | {exact_mi - mi:.4f} "
                  f"| {100 * (exact_mi - mi) / exact_mi:.2f} | {len(set(low.indices) & set(exact.indices))} of "
                  f"{budget} | {np.median(noise):.3f} |")
    print(f"\n{peak_rss()}; load {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--budget", type=int, default=50, help="K, capped at n")
    parser.add_argument("--rank", type=int, default=256, help="rank of the low-rank factor in sections 2 and 3")
    parser.add_argument("--million", action="store_true",
                        help="also n = 10^6 in section 3 (32 latent factors: 2 GB of fingerprints, a few minutes)")
    args = parser.parse_args()
    print(f"K = min({args.budget}, n); load average (1 min) at start: {load()}")
    if args.quick:
        compare_literal([40, 80], args.budget)
        exact_and_lowrank([500], 2000, args.budget, min(args.rank, 64))
        lowrank_scaling([2000, 20_000], args.budget, min(args.rank, 64), latent=64)
        information_loss(1000, args.budget, [16, 64])
    else:
        compare_literal([100, 200, 300], args.budget)
        exact_and_lowrank([1000, 3000], 10_000, args.budget, args.rank)
        lowrank_scaling([10_000, 30_000, 100_000], args.budget, args.rank, latent=64)
        information_loss(5000, args.budget, [32, 64, 128, 256, 512])
    if args.million:
        lowrank_scaling([100_000, 1_000_000], args.budget, args.rank, latent=32)
    print(f"\nload average (1 min) at the end: {load()}")


if __name__ == "__main__":
    main()
