"""Benchmark: exact kappa vs TensorSketch fingerprints, for n checkpoints x m probe items.

    .venv/bin/python benchmarks/bench_kappa.py [--quick]

Synthetic features with a known family structure (shared latent factors of varying strength, so
kappa spans 0..1 like a real zoo). Reports, side by side in one run: the exact all-pairs time,
the sketch time (fingerprints + all inner products), and the sketch's error against exact kappa.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hubindex.kappa import TensorSketch, kappa_matrix


def synthetic_zoo(n: int, m: int, d: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    families = [rng.normal(size=(m, 32)) for _ in range(max(2, n // 5))]
    zoo = []
    for i in range(n):
        latent = families[i % len(families)]
        noise = rng.uniform(0.1, 2.0)
        zoo.append((latent @ rng.normal(size=(32, d)) + noise * rng.normal(size=(m, d))).astype(np.float32))
    return zoo


def run(n: int, m: int, d: int, dim: int) -> dict[str, float]:
    zoo = synthetic_zoo(n, m, d)
    started = time.perf_counter()
    exact = kappa_matrix(zoo).values
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    sketch = TensorSketch(m, dim, seed=1)
    prints = np.stack([sketch.fingerprint(f) for f in zoo])
    approx = prints @ prints.T
    sketch_s = time.perf_counter() - started
    off = ~np.eye(n, dtype=bool)
    error = np.abs(approx - exact)[off]
    top1 = np.mean([np.argmax(np.where(off[i], approx[i], -np.inf)) == np.argmax(np.where(off[i], exact[i], -np.inf))
                    for i in range(n)])
    return {"exact_s": exact_s, "sketch_s": sketch_s, "mean_abs_err": float(error.mean()),
            "max_abs_err": float(error.max()), "top1_neighbour_agreement": float(top1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--dim", type=int, default=4096, help="sketch dimension")
    args = parser.parse_args()
    d = 384
    sizes = [(10, 1000), (40, 1000)] if args.quick else [(10, 2000), (50, 2000), (100, 2000), (50, 8000)]
    print(f"features: d = {d}; sketch dim = {args.dim}")
    print("| n ckpts | m items | exact s | sketch s | exact/sketch | mean abs err | max abs err | top-1 neighbour agrees |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in sizes:
        r = run(n, m, d, args.dim)
        print(f"| {n} | {m} | {r['exact_s']:.2f} | {r['sketch_s']:.2f} | {r['exact_s'] / r['sketch_s']:.1f} "
              f"| {r['mean_abs_err']:.3f} | {r['max_abs_err']:.3f} | {r['top1_neighbour_agreement']:.0%} |")


if __name__ == "__main__":
    main()
