"""Benchmark: greedy MMI selection against Algorithm 1 written literally, then alone on large zoos.

    .venv/bin/python benchmarks/bench_mmi.py [--quick]

kappa is synthetic but shaped like a zoo's: checkpoints in families share latent factors, plus
private noise of varying strength; C is the correlation of their features and kappa = C * C
elementwise (PSD by the Schur product theorem, in [0, 1], unit diagonal, full rank, like linear
CKA). Both selections are timed in the same run and must agree; then `mmi_select` runs alone at
sizes the literal version could not finish. `mmi_select` is timed as the best of up to three runs
(while they take under 10 s in all), the literal version once; the load average is printed, since
other work on the machine skews timings.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from hubindex.selection import mmi_select, mmi_select_literal


def synthetic_kappa(n: int, latent: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 20), latent))
    factors = centres[rng.integers(0, len(centres), size=n)] + rng.uniform(0.2, 1.5, size=(n, 1)) * rng.normal(
        size=(n, latent))
    kappa = factors @ factors.T
    # Private noise features: orthogonal across checkpoints, so they only add to the diagonal.
    kappa[np.diag_indices(n)] += latent * rng.uniform(0.1, 2.0, size=n) ** 2
    # In place throughout: at n = 10,000 one matrix is 800 MB.
    scale = 1.0 / np.sqrt(kappa.diagonal())
    kappa *= scale[:, None]
    kappa *= scale[None, :]
    np.square(kappa, out=kappa)
    return kappa


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def best_of(function, *args, repeat: int = 3, within_s: float = 10.0):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--budget", type=int, default=50, help="K, capped at n")
    args = parser.parse_args()
    compared = [40, 80] if args.quick else [100, 200, 300]
    alone = [500, 1000] if args.quick else [1000, 3000, 10000]
    print(f"K = min({args.budget}, n); time in seconds; load average (1 min) at start: {load()}")
    print("| n | K | mmi_select s | literal s | literal/mmi_select | same picks | max abs diff mi_nats | jitter |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|")
    for n in compared:
        kappa = synthetic_kappa(n)
        budget = min(args.budget, n)
        fast, fast_s = best_of(mmi_select, kappa, budget)
        literal, literal_s = timed(mmi_select_literal, kappa, budget, fast.jitter)
        same = fast.indices == literal.indices
        diff = np.abs(np.array(fast.mi_nats) - np.array(literal.mi_nats)).max()
        print(f"| {n} | {budget} | {fast_s:.3f} | {literal_s:.2f} | {literal_s / fast_s:.0f} "
              f"| {'yes' if same else 'NO'} | {diff:.1e} | {fast.jitter:g} |")
        if not same:
            raise SystemExit(f"selections differ at n = {n}: {fast.indices} != {literal.indices}")
    for n in alone:
        kappa = synthetic_kappa(n)
        budget = min(args.budget, n)
        fast, fast_s = best_of(mmi_select, kappa, budget)
        print(f"| {n} | {budget} | {fast_s:.3f} | - | - | - | - | {fast.jitter:g} |")
        del kappa, fast
    print(f"load average (1 min) at the end: {load()}")


if __name__ == "__main__":
    main()
