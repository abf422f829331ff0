"""Benchmark: hubindex at task-space scale, against today's code (commit 56db861) in the same run.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--sizes 100,300,1000,3000] [--baseline-max-n 100]
        [--fingerprint-sizes 10000,100000,1000000] [--mmi-sizes 10000,100000] [--queries 100]
        [--skip SECTION ...] [--work benchmarks/work/scale] [--keep]

Task spaces are synthetic but imported through the real command line (`hubindex features import`):
a text corpus of m = 2,000 words (`text:PATH`, 200 lines of 10 distinct words; the items of a text
corpus are its words) and n checkpoints of d = 384 features in families with known structure,
F_i = B_f W_i + s_i N_i + o_i: B_f a family's latent basis (m x 32, decaying spectrum, shared in
part by the four families of a superfamily), W_i random (32 x 384), graded noise s_i and a per-column
offset o_i. Exact top-10 neighbours are mostly in the family, with close values inside it. Spaces are
nested (the first 1,000 checkpoints of n = 3,000 are n = 1,000) and each kappa run works on its own
copy of a fresh index (store files hard-linked, catalog copied).

Sections (`--skip` takes their names; the task spaces are built whenever a later section needs them):
1. import        the task spaces: `features import` time and peak memory per size.
2. kappa         full catalog kappa (`relate.update_kappa`, the kappa step of `hubindex kappa`) on fresh
                 indexes; today's code up to --baseline-max-n (and at a third of it, for its growth
                 exponent), extrapolated beyond from that exponent; the new code at its sizes too.
3. incremental   10 new checkpoints imported into each index after its full run, then the kappa update;
                 today's code at its largest size, projected beyond linearly in the new pairs.
4. noop          a run with everything stored, at the largest n: both codes' `update_kappa`, and a
                 second `hubindex kappa` command.
5. fingerprints  the fingerprint index (`hubindex.fingerprints.FingerprintIndex`) at 10^4, 10^5, 10^6
                 synthetic clustered vectors: bulk build, adding one, first and warm queries; today's
                 index is one flat FAISS file read whole per query and rewritten whole per add (up to 10^5).
6. recall        neighbour recall@10 against exact kappa from the dense `kappa` table at n >= 1,000 (quick: 100):
                 `nearest_checkpoints` (fingerprint candidates, exact re-rank), its fingerprint estimate
                 alone, and today's `nearest_checkpoints` (its own 4,096-number fingerprints, no re-rank).
7. mmi           MMI, K = 50, through `choose_mmi_path` (exact or low-rank), against today's `mmi_select`
                 (up to 10^4); the mutual information the low-rank path keeps against exact MMI at n = 5,000.

Every measurement runs in a child process (this script with --child) that reports its seconds and
its peak RSS (VmHWM of the child's own address space: ru_maxrss as well, unless exec inherited a
larger high-water mark from this process; both are in the JSON). Today's code runs from
`git archive 56db861` under the work folder, imported as `hubindex` and `hubindex_plugins` (its
plugins/ folder, as pyproject maps it) ahead of the installed tree; its schema check is relaxed, since
the new code's migrations add tables it never reads. Features are imported with the new code (today's
has no `features import`); both codes then read the same index folders.

Output: markdown tables with the load (`uptime`) before and after each section, a summary of the
issue's targets, and every figure in benchmarks/results/scale.json (quick: benchmarks/results/quick/).

Time on this project's 2-core machine: --quick (n = 30, 60, 100, today's kappa at 6 and 20,
fingerprints 10^3 and 10^4, MMI 2,000 and 10^4, 5 recall queries) about 6 minutes at load 4. The full
run with --queries 30 took 97 minutes at load 2-5, most of it n = 3,000 (4.5 M pairs over ~10 GB of
store: 54 minutes); each re-ranked neighbour query reads and compares 100 candidates' features
(seconds each), so the default 100 queries at n = 1,000 and 3,000 add about half an hour.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parent.parent
BASELINE_COMMIT = "56db861"
SECTIONS = ("import", "kappa", "incremental", "noop", "fingerprints", "recall", "mmi")

# The synthetic task space.
ITEMS = 2000
WIDTH = 384
LATENT = 32
WORDS_PER_LINE = 10
SEED = 20261207
NEW_CHECKPOINTS = 10
IMPORT_BATCH = 250  # .npy files written, imported and deleted per batch (about 0.8 GB on disk)

# Neighbours and MMI.
NEIGHBOURS = 10
QUERIES = 100
BUDGET = 50
INFORMATION_N = 5000

# The fingerprint index: today's is dimension 4,096; read whole per query, so only up to 10^5.
OLD_FINGERPRINT_DIM = 4096
OLD_FINGERPRINT_MAX = 100_000
FP_CLUSTERS = 1000
FP_BLOCK = 4096
WARM_QUERIES = 20
# Today's mmi_select copies n x n matrices several times; 10^5 needs 18+ GB (the issue).
OLD_MMI_MAX = 10_000

TARGETS = {"kappa_full_s": 600.0, "incremental_s": 60.0, "fp_query_ms": 100.0, "fp_add_s": 1.0,
           "fp_memory_bytes": 8e9, "recall": 0.9, "mmi_s": 300.0, "mmi_memory_bytes": 8e9}


# ---------------------------------------------------------------------------------- synthetic data


def checkpoint_id(i: int) -> str:
    return f"synthetic:zoo/c{i:05d}"


def new_checkpoint_id(k: int) -> str:
    return f"synthetic:zoo/new{k:02d}"


def corpus_words() -> list[str]:
    """2,000 distinct words, 10 to a line (a text corpus keeps lines of 10 or more words)."""
    return [f"w{k:04d}" for k in range(ITEMS)]


def families(count: int) -> np.ndarray:
    """The family of each of the first `count` checkpoints: runs of 12 to 39, the same for any count."""
    rng = np.random.default_rng([SEED, 1])
    sizes: list[int] = []
    while sum(sizes) < count:
        sizes.append(int(rng.integers(12, 40)))
    return np.repeat(np.arange(len(sizes)), sizes)[:count]


def family_basis(family: int) -> np.ndarray:
    """m x 32: part shared by the 4 families of a superfamily, part the family's own; decaying spectrum."""
    shared = np.random.default_rng([SEED, 2, family // 4]).standard_normal((ITEMS, LATENT))
    own = np.random.default_rng([SEED, 3, family]).standard_normal((ITEMS, LATENT))
    return (0.6 * shared + 0.8 * own) * np.arange(1, LATENT + 1) ** -0.5


def features(family: int, stream: list[int]) -> np.ndarray:
    """One checkpoint's m x d float32 features: B_f W + s N + per-column offset, s from 0.05 to 1.0."""
    rng = np.random.default_rng([SEED, *stream])
    mixing = rng.standard_normal((LATENT, WIDTH)) / np.sqrt(LATENT)
    noise = rng.uniform(0.05, 1.0)
    matrix = family_basis(family) @ mixing + noise * rng.standard_normal((ITEMS, WIDTH)) + 2.0 * rng.normal(size=WIDTH)
    return matrix.astype(np.float32)


def cluster_vectors(start: int, count: int, dim: int) -> np.ndarray:
    """Rows start..start+count of a clustered float32 point set (unit-ish norms); any slicing gives the same rows."""
    centres = np.random.default_rng([SEED, 7, dim]).standard_normal((FP_CLUSTERS, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((count, dim), dtype=np.float32)
    first_block, last_block = start // FP_BLOCK, (start + count - 1) // FP_BLOCK
    for block in range(first_block, last_block + 1):
        rng = np.random.default_rng([SEED, 8, dim, block])
        cluster = rng.integers(0, FP_CLUSTERS, size=FP_BLOCK)
        rows = 0.8 * centres[cluster] + (0.6 / np.sqrt(dim)) * rng.standard_normal((FP_BLOCK, dim), dtype=np.float32)
        low, high = max(start, block * FP_BLOCK), min(start + count, (block + 1) * FP_BLOCK)
        out[low - start:high - start] = rows[low - block * FP_BLOCK:high - block * FP_BLOCK]
    return out


# ---------------------------------------------------------------------------------- child processes


def _peak_rss() -> dict[str, int]:
    """VmHWM of this process's own address space, and ru_maxrss (which also counts what exec inherited)."""
    hwm = 0
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_rss_bytes": hwm or ru_maxrss, "ru_maxrss_bytes": ru_maxrss}


def _open_catalog(index: str, read_only: bool = False) -> Any:
    from hubindex.index import Index

    return Index(Path(index)).open_catalog(read_only=read_only)


def task_generate(folder: str, first: int = 0, stop: int = 0, new: int = 0) -> dict:
    """Write checkpoints first..stop (or the `new` extra ones) as .npy files with a features.csv manifest."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if new:
        family_of = families(new * 3)  # in the families of the first checkpoints, present in every space
        members = [(new_checkpoint_id(k), int(family_of[k * 3]), [5, k]) for k in range(new)]
    else:
        family_of = families(stop)
        members = [(checkpoint_id(i), int(family_of[i]), [4, i]) for i in range(first, stop)]
    started = time.perf_counter()
    with (out / "features.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["checkpoint_id", "file", "sha"])
        for name, family, stream in members:
            file = name.rsplit("/", 1)[1] + ".npy"
            np.save(out / file, features(family, stream))
            writer.writerow([name, file, hashlib.sha1(f"{SEED}/{name}".encode()).hexdigest()])
    return {"seconds": time.perf_counter() - started, "checkpoints": len(members)}


def task_cli(argv: list[str]) -> dict:
    """The hubindex command line, in this process (so its time and memory are this child's)."""
    from hubindex.cli import main

    started = time.perf_counter()
    rc = main(argv)
    return {"seconds": time.perf_counter() - started, "rc": rc}


def task_kappa(index: str) -> dict:
    """The kappa step of `hubindex kappa`: update_kappa on the only corpus (both trees have this API)."""
    from hubindex.relate import resolve_corpus, update_kappa

    opened = time.perf_counter()
    with _open_catalog(index) as catalog:
        started = time.perf_counter()
        corpus = resolve_corpus(catalog, None)
        update = update_kappa(catalog, Path(index), corpus)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "with_catalog_open_close_s": time.perf_counter() - opened,
            "checkpoints": update.checkpoints, "computed": update.computed, "reused": update.reused,
            "failed": len(update.failed)}


def task_fingerprints(index: str) -> dict:
    """The new code's fingerprints of every checkpoint, as `hubindex kappa` brings them up to date."""
    from hubindex.fingerprints import update_fingerprints
    from hubindex.relate import resolve_corpus

    with _open_catalog(index) as catalog:
        started = time.perf_counter()
        added, kept = update_fingerprints(catalog, Path(index), resolve_corpus(catalog, None))
    return {"seconds": time.perf_counter() - started, "added": added, "kept": kept}


def task_recall(index: str, queries: int, k: int, exact_out: str) -> dict:
    """Recall@k of nearest_checkpoints (re-ranked) and of the fingerprint estimate alone, against the dense table.

    The queries and their exact top k go to `exact_out`, for today's code (`task_recall_today`).
    """
    from hubindex.fingerprints import fingerprint_candidates, nearest_checkpoints
    from hubindex.relate import probed_checkpoints, resolve_corpus

    with _open_catalog(index, read_only=True) as catalog:
        corpus = resolve_corpus(catalog, None)
        ids = [p.checkpoint_id for p in probed_checkpoints(catalog, corpus)]
        position = {c: i for i, c in enumerate(ids)}
        pairs = catalog.conn.execute("SELECT checkpoint_a, checkpoint_b, value FROM kappa WHERE corpus_hash = ? "
                                     "AND centered", [corpus.content_hash]).fetchnumpy()
        kappa = np.full((len(ids), len(ids)), -np.inf)
        a = np.array([position.get(c, -1) for c in pairs["checkpoint_a"]])
        b = np.array([position.get(c, -1) for c in pairs["checkpoint_b"]])
        keep = (a >= 0) & (b >= 0)
        kappa[a[keep], b[keep]] = kappa[b[keep], a[keep]] = pairs["value"][keep]
        missing = int(np.isneginf(kappa).sum()) - len(ids)
        chosen = np.random.default_rng([SEED, 9]).choice(len(ids), size=min(queries, len(ids)), replace=False)
        exact = {ids[q]: [ids[j] for j in np.argsort(-kappa[q], kind="stable")[:k]] for q in chosen.tolist()}
        # How hard the task space is: exact neighbours in the query's family, kappa inside and across families.
        family_of = families(len(ids))
        family = np.array([family_of[int(c.rsplit("c", 1)[1])] for c in ids])
        same = family[:, None] == family[None, :]
        finite = np.isfinite(kappa)

        def gap(query: str) -> float:
            """kappa of the k-th exact neighbour minus the (k+1)-th's."""
            row = np.sort(kappa[position[query]][finite[position[query]]])[::-1]
            return float(row[k - 1] - row[k]) if len(row) > k else float("nan")

        structure = {"top_k_same_family": float(np.mean([family[position[c]] == family[position[q]]
                                                          for q, best in exact.items() for c in best])),
                     "kappa_same_family_median": float(np.median(kappa[same & finite])),
                     "kappa_other_family_median": float(np.median(kappa[~same & finite])),
                     "gap_kth_median": float(np.median([gap(q) for q in exact]))}
        reranked, estimated, reranked_s, estimated_s = [], [], [], []
        for query, best in exact.items():
            started = time.perf_counter()
            found = nearest_checkpoints(catalog, Path(index), corpus, query, k)
            reranked_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            candidates = fingerprint_candidates(catalog, Path(index), corpus, [query], k)[query]
            estimated_s.append(time.perf_counter() - started)
            reranked.append(len(set(best) & {c for c, *_ in found}) / k)
            estimated.append(len(set(best) & set(candidates)) / k)
    Path(exact_out).write_text(json.dumps(exact))
    return {"queries": len(chosen), "missing_pairs": missing, **structure, "recall_reranked": float(np.mean(reranked)),
            "recall_estimate": float(np.mean(estimated)), "min_recall_reranked": float(np.min(reranked)),
            "query_s_median": statistics.median(reranked_s), "estimate_s_median": statistics.median(estimated_s)}


def task_recall_today(index: str, exact_in: str, k: int) -> dict:
    """Today's neighbours (4,096-number TensorSketch in one flat FAISS file, no re-rank) on a fresh copy."""
    from hubindex.relate import nearest_checkpoints, resolve_corpus, update_fingerprints

    exact = json.loads(Path(exact_in).read_text())
    with _open_catalog(index) as catalog:
        corpus = resolve_corpus(catalog, None)
        started = time.perf_counter()
        update_fingerprints(catalog, Path(index), corpus)
        built_s = time.perf_counter() - started
        recall, seconds = [], []
        for query, best in exact.items():
            started = time.perf_counter()
            found = nearest_checkpoints(catalog, Path(index), corpus, query, k)
            seconds.append(time.perf_counter() - started)
            recall.append(len(set(best) & {c for c, _ in found}) / k)
    return {"seconds": built_s, "recall": float(np.mean(recall)), "query_s_median": statistics.median(seconds)}


def task_fp_build(tree: str, folder: str, n: int, dim: int) -> dict:
    """Bulk build: n clustered vectors appended in batches (new) or one flat file written once (today's)."""
    batch = 65_536
    generate_s = 0.0
    started = time.perf_counter()
    if tree == "new":
        from hubindex.fingerprints import FingerprintIndex

        index = FingerprintIndex.open(Path(folder), dim=dim, writable=True)
        for start in range(0, n, batch):
            tick = time.perf_counter()
            vectors = cluster_vectors(start, min(batch, n - start), dim)
            generate_s += time.perf_counter() - tick
            index.append(vectors)
    else:
        import faiss

        from hubindex.store import atomic_write_bytes

        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        for start in range(0, n, batch):
            tick = time.perf_counter()
            vectors = cluster_vectors(start, min(batch, n - start), dim)
            generate_s += time.perf_counter() - tick
            index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
        atomic_write_bytes(Path(folder) / "fingerprints.faiss", faiss.serialize_index(index).tobytes())
    disk = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    return {"seconds": time.perf_counter() - started - generate_s, "generate_s": generate_s, "disk_bytes": disk}


def task_fp_ops(tree: str, folder: str, n: int, dim: int, k: int) -> dict:
    """A later command on the built index: add one vector, then a first query and WARM_QUERIES warm ones."""
    vectors = cluster_vectors(n, 2 + WARM_QUERIES, dim)  # rows after the index's: one to add, the rest queries
    added, queries = vectors[:1], vectors[1:]
    result: dict[str, Any] = {}
    if tree == "new":
        from hubindex.fingerprints import FingerprintIndex

        started = time.perf_counter()
        index = FingerprintIndex.open(Path(folder), dim=dim, writable=True)
        index.append(added)
        result["add_s"] = time.perf_counter() - started
        started = time.perf_counter()
        index = FingerprintIndex.open(Path(folder), dim=dim)
        index.search(queries[:1], k)
        result["first_query_s"] = time.perf_counter() - started
        warm = []
        for query in queries[1:]:
            started = time.perf_counter()
            index.search(query[None, :], k)
            warm.append(time.perf_counter() - started)
        result["warm_query_s"] = statistics.median(warm)
        _, approximate = index.search(queries, k)
        _, exact = index.search(queries, k, exact=True)
        result["search_recall"] = float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approximate, exact)]))
        result["approximate"] = index.n_rows >= index.approximate_above
    else:
        import faiss

        from hubindex.relate import _load_fingerprint_index
        from hubindex.store import atomic_write_bytes

        root, relative = Path(folder), "fingerprints.faiss"
        started = time.perf_counter()  # today's update_fingerprints for one new checkpoint
        index = _load_fingerprint_index(root, relative, dim)
        keep = set(range(n))
        present = faiss.vector_to_array(index.id_map).astype(np.int64)
        stale = np.array([i for i in present if i not in keep], dtype=np.int64)
        if stale.size:
            index.remove_ids(stale)
        index.add_with_ids(added, np.array([n], dtype=np.int64))
        atomic_write_bytes(root / relative, faiss.serialize_index(index).tobytes())
        result["add_s"] = time.perf_counter() - started
        del index
        times = []
        budget_s = 60.0
        for number in range(1 + WARM_QUERIES):  # today's nearest_checkpoints: read the file, search
            started = time.perf_counter()
            index = _load_fingerprint_index(root, relative, dim)
            query = index.reconstruct(number * (n // (1 + WARM_QUERIES)))[None, :]
            index.search(query, k + 1)
            times.append(time.perf_counter() - started)
            del index
            if number >= 3 and sum(times) > budget_s:
                break
        result["first_query_s"] = times[0]
        result["warm_query_s"] = statistics.median(times[1:])
        result["warm_queries"] = len(times) - 1
    return result


def task_mmi_kappa(path: str, n: int) -> dict:
    from bench_mmi import synthetic_kappa

    started = time.perf_counter()
    np.save(path, synthetic_kappa(n))
    return {"seconds": time.perf_counter() - started}


def task_mmi(tree: str, n: int, budget: int, kappa_path: str | None) -> dict:
    """One MMI selection; the input (kappa from .npy, or fingerprints) is made before the clock starts."""
    if tree == "old" or kappa_path:
        from hubindex.selection import mmi_select

        kappa = np.load(kappa_path)
        started = time.perf_counter()
        selection = mmi_select(kappa, budget)
        return {"seconds": time.perf_counter() - started, "path": "exact", "input_bytes": kappa.nbytes,
                "picks": selection.indices}
    from bench_mmi import synthetic_fingerprints

    from hubindex.selection import lowrank_factor_from_features, mmi_select_lowrank

    fingerprints = synthetic_fingerprints(n)
    started = time.perf_counter()
    factors, noise = lowrank_factor_from_features(fingerprints, diagonal=1.0)
    factor_s = time.perf_counter() - started
    selection = mmi_select_lowrank(factors, noise, budget)
    return {"seconds": time.perf_counter() - started, "factor_s": factor_s, "path": "lowrank",
            "input_bytes": fingerprints.nbytes, "picks": selection.indices}


def task_information(n: int, budget: int) -> dict:
    """I(S; Z \\ S) under the true kappa of the low-rank path's picks against exact MMI's (bench_mmi section 4)."""
    from bench_mmi import (
        logdet,
        measured,
        mutual_information,
        synthetic_fingerprints,
        synthetic_kappa,
    )

    from hubindex.selection import (
        LOWRANK_RANK,
        lowrank_factor_from_features,
        mmi_select,
        mmi_select_lowrank,
    )

    kappa = synthetic_kappa(n)
    exact, exact_s, _ = measured(mmi_select, kappa, budget)
    logdet_all = logdet(kappa.copy())
    (factors, noise), factor_s, _ = measured(lowrank_factor_from_features, synthetic_fingerprints(n))
    low, low_s, _ = measured(mmi_select_lowrank, factors, noise, budget)
    return {"seconds": exact_s + factor_s + low_s, "rank": LOWRANK_RANK, "exact_s": exact_s,
            "lowrank_s": factor_s + low_s, "exact_mi": mutual_information(kappa, exact.indices, logdet_all),
            "lowrank_mi": mutual_information(kappa, low.indices, logdet_all),
            "common": len(set(exact.indices) & set(low.indices))}


TASKS: dict[str, Callable[..., dict]] = {
    "generate": task_generate, "cli": task_cli, "kappa": task_kappa, "fingerprints": task_fingerprints,
    "recall": task_recall, "recall-today": task_recall_today, "fp-build": task_fp_build, "fp-ops": task_fp_ops,
    "mmi-kappa": task_mmi_kappa, "mmi": task_mmi, "information": task_information,
}


def child_main(task: str, params: dict, result_path: str, tree_root: str | None) -> None:
    if tree_root:
        import hubindex

        if not Path(hubindex.__file__).resolve().is_relative_to((Path(tree_root) / "hubindex").resolve()):
            raise SystemExit(f"today's code was not imported: hubindex is {hubindex.__file__}")
        _accept_newer_schema()
    result = TASKS[task](**params)
    result.update(_peak_rss())
    Path(result_path).write_text(json.dumps(result))


def _accept_newer_schema() -> None:
    """Let today's code open a catalog the new code has migrated further (it ignores the tables it lacks)."""
    import hubindex.catalog

    hubindex.catalog.LATEST_VERSION = 1 << 30


# ---------------------------------------------------------------------------------- the parent


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        from bench_mmi import load

        return f"load average {load()}"


def note(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def gb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Growth exponent b of time ~ n^b between the last two sizes."""
    if len(sizes) < 2 or min(seconds[-2:]) <= 0:
        return None
    return math.log(seconds[-1] / seconds[-2]) / math.log(sizes[-1] / sizes[-2])


def growth_line(sizes: list[int], seconds: list[float]) -> str:
    from bench_mmi import growth

    return growth(sizes, seconds) if len(sizes) > 1 else "one size only"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.results: dict[str, Any] = {"config": {}, "load": {}}
        self.old_path: Path | None = None
        self.corpus = self.work / "corpus.txt"
        self.full: dict[tuple[str, int], dict] = {}  # (tree, n) -> full kappa run

    # -------------------------------------------------------------- processes

    def child(self, task: str, code: str = "new", **params: Any) -> dict:
        """Run one measurement in its own process; {'error': ...} if it fails (the run goes on)."""
        result_path = self.work / "child-result.json"
        result_path.unlink(missing_ok=True)
        env = dict(os.environ)
        command = [sys.executable, str(SCRIPT), "--child", task, "--params", json.dumps(params),
                   "--result", str(result_path)]
        if code == "old":
            paths = [str(self.baseline_path()), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            command += ["--tree-root", str(self.baseline_path())]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0 or not result_path.is_file():
            lines = (done.stderr or done.stdout).strip().splitlines()
            error = lines[-1] if lines else f"exit {done.returncode}"
            note(f"{task} ({code}) failed: {error}")
            return {"error": error, "rc": done.returncode, "process_s": wall}
        result = json.loads(result_path.read_text())
        result["process_s"] = wall
        if task == "cli" and result.get("rc"):
            note(f"hubindex {' '.join(params['argv'])} exited {result['rc']}: {done.stderr.strip()[-300:]}")
            result["error"] = f"hubindex exited {result['rc']}"
        return result

    def baseline_path(self) -> Path:
        """A folder to put first on PYTHONPATH: today's hubindex and its plugins as hubindex_plugins."""
        if self.old_path is not None:
            return self.old_path
        root = self.work / f"baseline-{BASELINE_COMMIT}"
        tree, path = root / "tree", root / "path"
        if not (tree / "hubindex" / "__init__.py").is_file():
            shutil.rmtree(root, ignore_errors=True)
            tree.mkdir(parents=True)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_COMMIT], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        if not path.is_dir():
            path.mkdir()
            # pyproject maps plugins/ to hubindex_plugins; the same mapping, by links.
            (path / "hubindex").symlink_to(tree / "hubindex")
            (path / "hubindex_plugins").symlink_to(tree / "plugins")
        self.old_path = path
        return path

    # -------------------------------------------------------------- index folders

    def template(self, n: int) -> Path:
        return self.work / "spaces" / f"n{n}"

    def copy_index(self, source: Path, target: Path) -> Path:
        """A copy whose store files are hard links (they are only ever replaced, never written in place)."""
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name == "DONE.json":
                continue
            if entry.is_dir():
                shutil.copytree(entry, target / entry.name, copy_function=os.link)
            else:
                shutil.copy2(entry, target / entry.name)
        return target

    def import_folder(self, index: Path, folder: Path) -> dict:
        return self.child("cli", argv=["--index", str(index), "features", "import", "--from", str(folder),
                                       "--corpus", f"text:{self.corpus}", "--register-new"])

    def import_new(self, index: Path) -> dict:
        """Import the NEW_CHECKPOINTS extra checkpoints (kept as .npy for every index)."""
        folder = self.work / "new-checkpoints"
        if not (folder / "features.csv").is_file():
            self.child("generate", folder=str(folder), new=NEW_CHECKPOINTS)
        return self.import_folder(index, folder)

    # -------------------------------------------------------------- section 1

    def build_spaces(self, sizes: list[int]) -> None:
        """Nested task spaces: each size copies the previous one and imports the checkpoints it adds."""
        self.results["load"]["import"] = [uptime()]
        if not self.corpus.is_file():
            words = corpus_words()
            self.corpus.parent.mkdir(parents=True, exist_ok=True)
            self.corpus.write_text("\n".join(" ".join(words[k:k + WORDS_PER_LINE])
                                             for k in range(0, len(words), WORDS_PER_LINE)) + "\n")
        rows = []
        previous = 0
        marker = {"items": ITEMS, "width": WIDTH, "seed": SEED, "version": 1}
        for n in sizes:
            target = self.template(n)
            done = target / "DONE.json"
            if done.is_file() and json.loads(done.read_text()).get("marker") == marker:
                rows.append(json.loads(done.read_text())["row"] | {"reused": True})
                previous = n
                continue
            if previous:
                self.copy_index(self.template(previous), target)
            else:
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
            seconds, peak, generate_s = 0.0, 0, 0.0
            for first in range(previous, n, IMPORT_BATCH):
                folder = self.work / "npy"
                shutil.rmtree(folder, ignore_errors=True)
                made = self.child("generate", folder=str(folder), first=first, stop=min(n, first + IMPORT_BATCH))
                generate_s += made.get("seconds", 0.0)
                imported = self.import_folder(target, folder)
                shutil.rmtree(folder, ignore_errors=True)
                if "error" in imported:
                    raise SystemExit(f"import into {target} failed: {imported['error']}")
                seconds += imported["seconds"]
                peak = max(peak, imported["peak_rss_bytes"])
            store = sum(p.stat().st_size for p in (target / "store").rglob("*") if p.is_file())
            row = {"n": n, "added": n - previous, "seconds": seconds, "generate_s": generate_s,
                   "peak_rss_bytes": peak, "store_bytes": store}
            done.write_text(json.dumps({"marker": marker, "row": row}))
            note(f"space n = {n}: {n - previous} imported in {seconds:.1f} s")
            rows.append(row)
            previous = n
        self.results["load"]["import"].append(uptime())
        self.results["import"] = rows

    def print_import(self) -> None:
        rows = self.results.get("import", [])
        print("\n## 1. Synthetic task spaces, imported with `hubindex features import`\n")
        print(f"m = {ITEMS:,} words (text:PATH), d = {WIDTH}, families of 12-39 checkpoints (latent 32, 4 per "
              f"superfamily), noise s 0.05-1.0; each size adds to the previous one. {self._load('import')}\n")
        print("| n | checkpoints added | import s | ms per checkpoint | import peak RSS GB | store GB | generate s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            reused = " (reused)" if r.get("reused") else ""
            print(f"| {r['n']:,}{reused} | {r['added']:,} | {r['seconds']:.1f} "
                  f"| {1000 * r['seconds'] / r['added']:.1f} | {gb(r['peak_rss_bytes'])} | {gb(r['store_bytes'])} "
                  f"| {r['generate_s']:.1f} |")

    # -------------------------------------------------------------- sections 2, 3, 4, 6

    def full_run(self, tree: str, n: int) -> dict:
        """Full kappa on a fresh copy of the n-space (memoised: later steps reuse its index)."""
        key = (tree, n)
        if key not in self.full:
            index = self.copy_index(self.template(n), self.work / "runs" / f"{tree}-n{n}")
            code = "new" if tree == "new" else "today's"
            note(f"full kappa, {code} code, n = {n} ...")
            result = self.child("kappa", tree, index=str(index))
            result["index"] = str(index)
            note(f"  {result.get('seconds', float('nan')):.1f} s")
            self.full[key] = result
        return self.full[key]

    def run_spaces(self, sizes: list[int], baseline: list[int], recall_sizes: list[int], skip: set[str]) -> None:
        self.results["load"]["kappa"] = [uptime()]
        largest = sizes[-1]
        out: dict[str, list] = {"kappa": [], "incremental": [], "noop": [], "recall": []}
        # The new code also runs at today's sizes, for ratios measured side by side.
        for n in sorted(set(sizes) | set(baseline)):
            full = self.full_run("new", n)
            out["kappa"].append({"n": n, "tree": "new", **full})
            index = Path(full["index"])
            if n == largest and "noop" not in skip:
                for tree in ("new", "old"):
                    result = self.child("kappa", tree, index=str(index))
                    out["noop"].append({"n": n, "tree": tree, "what": "update_kappa", **result})
            if n in recall_sizes and "recall" not in skip:
                built = self.child("fingerprints", index=str(index))
                note(f"fingerprints for n = {n}: {built.get('seconds', float('nan')):.1f} s; recall ...")
                exact = self.work / "runs" / f"exact-top-n{n}.json"
                found = self.child("recall", index=str(index), queries=self.args.queries, k=NEIGHBOURS,
                                   exact_out=str(exact))
                today: dict[str, Any] = {"error": "no exact neighbours"}
                if "error" not in found:
                    copy = self.copy_index(self.template(n), self.work / "runs" / f"today-fingerprints-n{n}")
                    today = self.child("recall-today", "old", index=str(copy), exact_in=str(exact), k=NEIGHBOURS)
                    shutil.rmtree(copy, ignore_errors=True)
                out["recall"].append({"n": n, "fingerprints": built, "today": today, **found})
            if n == largest and "noop" not in skip:
                argv = ["--index", str(index), "kappa"]
                first = self.child("cli", argv=argv)
                second = self.child("cli", argv=argv)
                out["noop"].append({"n": n, "tree": "new", "what": "cli-first", **first})
                out["noop"].append({"n": n, "tree": "new", "what": "cli", **second})
            if "incremental" not in skip:
                out["incremental"].append(self.incremental("new", n))
        if "kappa" not in skip or "incremental" not in skip:
            for n in baseline:
                full = self.full_run("old", n)
                out["kappa"].append({"n": n, "tree": "old", **full})
                if "incremental" not in skip and n == baseline[-1]:
                    out["incremental"].append(self.incremental("old", n))
        self.results["load"]["kappa"].append(uptime())
        self.results.update(out)

    def incremental(self, tree: str, n: int) -> dict:
        index = Path(self.full_run(tree, n)["index"])
        imported = self.import_new(index)
        result = self.child("kappa", tree, index=str(index))
        note(f"incremental, {tree}, n = {n}: {result.get('seconds', float('nan')):.1f} s")
        return {"n": n, "tree": tree, "import_s": imported.get("seconds"), **result}

    def _rows(self, section: str, tree: str, what: str | None = None) -> dict[int, dict]:
        return {r["n"]: r for r in self.results.get(section, [])
                if r["tree"] == tree and "error" not in r and (what is None or r.get("what") == what)}

    def print_kappa(self, sizes: list[int], baseline: list[int], target_n: int) -> None:
        new, old = self._rows("kappa", "new"), self._rows("kappa", "old")
        print("\n## 2. Full catalog kappa on a fresh index (`update_kappa`: pairs only, no fingerprints)\n")
        print(f"Today's code (56db861) pair by pair up to n = {max(baseline, default=0):,}; beyond, its time is "
              f"**extrapolated** from its own growth exponent. {self._load('kappa')}\n")
        print("| n | pairs | new s | new peak RSS GB | new pairs/s | today s | today peak RSS GB | today / new |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        old_sizes = sorted(old)
        old_exp = exponent(old_sizes, [old[n]["seconds"] for n in old_sizes])
        extrapolated = {}
        for n in sorted(set(new) | set(old) | ({target_n} if old_exp is not None else set())):
            r, o = new.get(n), old.get(n)
            pairs = n * (n - 1) // 2
            old_cells = [cell(o["seconds"]), gb(o["peak_rss_bytes"])] if o else ["-", "-"]
            if o is None and old_exp is not None and old_sizes:
                base = old_sizes[-1]
                extrapolated[n] = old[base]["seconds"] * (n / base) ** old_exp
                old_cells = [f"{extrapolated[n]:,.0f} (extrapolated)", "-"]
            today_s = o["seconds"] if o else extrapolated.get(n)
            ratio = f"{today_s / r['seconds']:.1f}" + ("" if o else " (extrapolated)") if r and today_s else "-"
            new_cells = [cell(r["seconds"]), gb(r["peak_rss_bytes"]), f"{pairs / r['seconds']:,.0f}"] if r else \
                ["-", "-", "-"]
            print(f"| {n:,} | {pairs:,} | " + " | ".join(new_cells + old_cells) + f" | {ratio} |")
        new_sizes = sorted(new)
        print(f"\ngrowth exponent, new: {growth_line(new_sizes, [new[n]['seconds'] for n in new_sizes])}; "
              f"today's: {growth_line(old_sizes, [old[n]['seconds'] for n in old_sizes])}")
        self.results["kappa_extrapolated_today_s"] = extrapolated

    def print_incremental(self, target_n: int) -> None:
        new, old = self._rows("incremental", "new"), self._rows("incremental", "old")
        print(f"\n## 3. Incremental: {NEW_CHECKPOINTS} new checkpoints imported after the full run, then kappa\n")
        print(f"New pairs: {NEW_CHECKPOINTS} n + {NEW_CHECKPOINTS * (NEW_CHECKPOINTS - 1) // 2}. Today's code beyond "
              f"its sizes is **projected** linearly in its new pairs. {self._load('kappa')}\n")
        print("| n | new pairs | import s | new s | new peak RSS GB | today s | today peak RSS GB | today / new |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        old_sizes = sorted(old)
        projected = {}
        for n in sorted(set(new) | set(old) | ({target_n} if old_sizes else set())):
            r, o = new.get(n), old.get(n)
            pairs = NEW_CHECKPOINTS * n + NEW_CHECKPOINTS * (NEW_CHECKPOINTS - 1) // 2
            old_cells = [cell(o["seconds"]), gb(o["peak_rss_bytes"])] if o else ["-", "-"]
            if o is None and old_sizes:
                base = old_sizes[-1]
                base_pairs = NEW_CHECKPOINTS * base + NEW_CHECKPOINTS * (NEW_CHECKPOINTS - 1) // 2
                projected[n] = old[base]["seconds"] * pairs / base_pairs
                old_cells = [f"{projected[n]:,.0f} (projected)", "-"]
            today_s = o["seconds"] if o else projected.get(n)
            ratio = f"{today_s / r['seconds']:.1f}" + ("" if o else " (projected)") if r and today_s else "-"
            import_s = (r or o or {}).get("import_s")
            new_cells = [cell(r["seconds"]), gb(r["peak_rss_bytes"])] if r else ["-", "-"]
            print(f"| {n:,} | {pairs:,} | {cell(import_s)} | " + " | ".join(new_cells + old_cells) + f" | {ratio} |")
        new_sizes = sorted(new)
        print(f"\ngrowth exponent, new: {growth_line(new_sizes, [new[n]['seconds'] for n in new_sizes])}")
        self.results["incremental_projected_today_s"] = projected

    def print_noop(self) -> None:
        rows = [r for r in self.results.get("noop", []) if r.get("what") != "cli-first"]
        if not rows:
            return
        n = rows[0]["n"]
        print(f"\n## 4. No-op run at n = {n:,} (every pair stored)\n")
        print(f"`update_kappa` in a fresh process for each code, and a second `hubindex kappa` command (the first, "
              f"which also brought the fingerprints up to date, is in the JSON). {self._load('kappa')}\n")
        print("| code | what | s | peak RSS GB | pairs computed |")
        print("|---|---|---:|---:|---:|")
        for r in rows:
            what = "`update_kappa`" if r["what"] == "update_kappa" else "`hubindex kappa` (whole command)"
            code = "new" if r["tree"] == "new" else "today's (56db861)"
            if "error" in r:
                print(f"| {code} | {what} | failed: {r['error']} | - | - |")
                continue
            print(f"| {code} | {what} | {r['seconds']:.2f} | {gb(r['peak_rss_bytes'])} | {r.get('computed', '-')} |")

    def print_recall(self) -> None:
        from hubindex.fingerprints import FINGERPRINT_DIM, default_candidates

        rows = self.results.get("recall", [])
        if not rows:
            return
        print(f"\n## 6. Neighbour recall@{NEIGHBOURS} against exact kappa (the dense `kappa` table)\n")
        print(f"{self.args.queries} random query checkpoints (all if n is smaller), the same for each method. New: "
              f"`fingerprints.nearest_checkpoints` ({FINGERPRINT_DIM}-number sketches, the top "
              f"{default_candidates(NEIGHBOURS)} candidates re-ranked by exact kappa), and its fingerprint estimate "
              f"alone (`fingerprint_candidates`). Today's: its `nearest_checkpoints` (4,096-number sketches in one "
              f"flat FAISS file, no re-rank), fingerprints built by its own `update_fingerprints` on a fresh copy. "
              f"{self._load('kappa')}\n")
        for r in rows:
            if "top_k_same_family" in r:
                print(f"n = {r['n']:,}: {100 * r['top_k_same_family']:.0f}% of the exact top 10 are in the query's "
                      f"family; median kappa {r['kappa_same_family_median']:.3f} inside a family, "
                      f"{r['kappa_other_family_median']:.3f} across; median gap between the 10th and 11th exact "
                      f"neighbour {r['gap_kth_median']:.4f}.")
        print()
        print("| n | method | queries | recall@10 | query s (median) | fingerprints built s "
              "| fingerprints peak RSS GB |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for r in rows:
            if "error" in r:
                print(f"| {r['n']:,} | failed: {r['error']} | | | | | |")
                continue
            built, today = r["fingerprints"], r["today"]
            print(f"| {r['n']:,} | new, re-ranked | {r['queries']} | {r['recall_reranked']:.3f} "
                  f"(min {r['min_recall_reranked']:.1f}) | {r['query_s_median']:.3f} | {cell(built.get('seconds'))} "
                  f"| {gb(built.get('peak_rss_bytes'))} |")
            print(f"| {r['n']:,} | new, estimate alone | {r['queries']} | {r['recall_estimate']:.3f} "
                  f"| {r['estimate_s_median']:.4f} | | |")
            if "error" in today:
                print(f"| {r['n']:,} | today's | failed: {today['error']} | | | | |")
            else:
                print(f"| {r['n']:,} | today's | {r['queries']} | {today['recall']:.3f} "
                      f"| {today['query_s_median']:.4f} | {today['seconds']:.1f} | {gb(today['peak_rss_bytes'])} |")

    # -------------------------------------------------------------- section 5

    def run_fingerprints(self, sizes: list[int]) -> None:
        from hubindex.fingerprints import FINGERPRINT_DIM

        self.results["load"]["fingerprints"] = [uptime()]
        rows = []
        for n in sizes:
            for tree, dim in (("new", FINGERPRINT_DIM), ("old", OLD_FINGERPRINT_DIM)):
                if tree == "old" and n > OLD_FINGERPRINT_MAX:
                    rows.append({"n": n, "tree": tree, "dim": dim, "skipped": "not run: out of memory (the issue's "
                                 "measurement: the flat file is read whole per query and rewritten whole per add)"})
                    continue
                folder = self.work / "fingerprints" / f"{tree}-{n}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                note(f"fingerprint index, {tree}, {n:,} x {dim} ...")
                build = self.child("fp-build", tree, tree=tree, folder=str(folder), n=n, dim=dim)
                ops = self.child("fp-ops", tree, tree=tree, folder=str(folder), n=n, dim=dim, k=NEIGHBOURS) \
                    if "error" not in build else {"error": "no index"}
                rows.append({"n": n, "tree": tree, "dim": dim, "build": build, "ops": ops})
                if not self.args.keep:
                    shutil.rmtree(folder, ignore_errors=True)
        self.results["load"]["fingerprints"].append(uptime())
        self.results["fingerprints"] = rows

    def print_fingerprints(self) -> None:
        rows = self.results.get("fingerprints", [])
        if not rows:
            return
        print("\n## 5. Fingerprint index: synthetic clustered vectors (float32 in)\n")
        print("New: `FingerprintIndex` (float16 shards, IVF per closed shard above its threshold), bulk `append` "
              "in batches of 65,536; add one = open writable + `append` of one row; queries on a freshly opened "
              "index, k = 10, warm = median of 20. Today's: one `IndexIDMap2(IndexFlatIP(4096))` file, read whole "
              "per query and rewritten whole per add. Peak RSS of the build and of the later command (add + "
              f"queries) are separate processes. {self._load('fingerprints')}\n")
        print("| n | code | dim | build s | add one s | first query ms | warm query ms | search recall@10 "
              "| build peak RSS GB | add+query peak RSS GB | on disk GB |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            code = "new" if r["tree"] == "new" else "today's"
            if "skipped" in r:
                print(f"| {r['n']:,} | {code} | {r['dim']} | {r['skipped']} | | | | | | | |")
                continue
            b, o = r["build"], r["ops"]
            if "error" in b or "error" in o:
                error = b.get("error") or o.get("error")
                print(f"| {r['n']:,} | {code} | {r['dim']} | failed: {error} | | | | | | | |")
                continue
            recall = f"{o['search_recall']:.3f}" + ("" if o.get("approximate") else " (exact scan)") \
                if "search_recall" in o else "exact"
            print(f"| {r['n']:,} | {code} | {r['dim']} | {b['seconds']:.1f} | {o['add_s']:.3f} "
                  f"| {1000 * o['first_query_s']:.1f} | {1000 * o['warm_query_s']:.1f} | {recall} "
                  f"| {gb(b['peak_rss_bytes'])} | {gb(o['peak_rss_bytes'])} | {gb(b['disk_bytes'])} |")
        new = {r["n"]: r for r in rows if r["tree"] == "new" and "error" not in r["ops"]}
        sizes = sorted(new)
        print(f"\ngrowth exponent of the new warm query: "
              f"{growth_line(sizes, [new[n]['ops']['warm_query_s'] for n in sizes])}; of its build: "
              f"{growth_line(sizes, [new[n]['build']['seconds'] for n in sizes])}")

    # -------------------------------------------------------------- section 7

    def run_mmi(self, sizes: list[int], information_n: int) -> None:
        from hubindex.selection import choose_mmi_path

        self.results["load"]["mmi"] = [uptime()]
        rows = []
        for n in sizes:
            k = min(BUDGET, n)
            path = choose_mmi_path(n, k, in_place=True)
            kappa_file = self.work / "mmi" / f"kappa-{n}.npy"
            if path == "exact" or n <= OLD_MMI_MAX:
                kappa_file.parent.mkdir(parents=True, exist_ok=True)
                note(f"MMI: synthetic kappa n = {n:,} ...")
                self.child("mmi-kappa", path=str(kappa_file), n=n)
            note(f"MMI n = {n:,}, new ({path}) ...")
            new = self.child("mmi", "new", tree="new", n=n, budget=k,
                             kappa_path=str(kappa_file) if path == "exact" else None)
            rows.append({"n": n, "tree": "new", "k": k, **new})
            if n <= OLD_MMI_MAX:
                note(f"MMI n = {n:,}, today's ...")
                old = self.child("mmi", "old", tree="old", n=n, budget=k, kappa_path=str(kappa_file))
                rows.append({"n": n, "tree": "old", "k": k, **old})
            else:
                rows.append({"n": n, "tree": "old", "k": k, "skipped": "not run: needs ~18+ GB (the issue's "
                             "measurement)"})
            kappa_file.unlink(missing_ok=True)
        note(f"MMI information, n = {information_n:,} ...")
        self.results["mmi_information"] = {"n": information_n, **self.child("information", n=information_n,
                                                                             budget=min(BUDGET, information_n))}
        self.results["load"]["mmi"].append(uptime())
        self.results["mmi"] = rows

    def print_mmi(self) -> None:
        rows = self.results.get("mmi", [])
        if not rows:
            return
        print(f"\n## 7. MMI, K = {BUDGET}: `choose_mmi_path` (exact `mmi_select`, or `mmi_select_lowrank` on "
              "`lowrank_factor_from_features(synthetic_fingerprints(n))`) against today's `mmi_select`\n")
        print("kappa is bench_mmi's `synthetic_kappa`, loaded from .npy by both codes before the clock starts (its "
              f"8 n^2 bytes are in both peak RSS); the low-rank path's input is `synthetic_fingerprints`. "
              f"{self._load('mmi')}\n")
        print("| n | K | new path | new s | new peak RSS GB | input GB | today s | today peak RSS GB | today / new "
              "| same picks |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
        new = {r["n"]: r for r in rows if r["tree"] == "new"}
        old = {r["n"]: r for r in rows if r["tree"] == "old"}
        for n in sorted(new):
            r, o = new[n], old.get(n, {})
            if "error" in r:
                print(f"| {n:,} | {r['k']} | failed: {r['error']} | | | | | | | |")
                continue
            if "seconds" in o:
                common = len(set(o["picks"]) & set(r["picks"]))
                old_cells = [f"{o['seconds']:.1f}", gb(o["peak_rss_bytes"]), f"{o['seconds'] / r['seconds']:.1f}",
                             "yes" if o["picks"] == r["picks"] else f"{common} of {r['k']}"]
            else:
                old_cells = [o.get("skipped") or f"failed: {o.get('error')}", "-", "-", "-"]
            print(f"| {n:,} | {r['k']} | {r['path']} | {r['seconds']:.1f} | {gb(r['peak_rss_bytes'])} "
                  f"| {gb(r['input_bytes'])} | " + " | ".join(old_cells) + " |")
        sizes = [n for n in sorted(new) if "seconds" in new[n]]
        print(f"\ngrowth exponent, new: {growth_line(sizes, [new[n]['seconds'] for n in sizes])} "
              "(the path may change between sizes)")
        info = self.results.get("mmi_information", {})
        if "exact_mi" in info:
            loss = info["exact_mi"] - info["lowrank_mi"]
            print(f"\nInformation kept at n = {info['n']:,}, K = {min(BUDGET, info['n'])}, under the true kappa: exact "
                  f"MMI I = {info['exact_mi']:.4f} nats ({info['exact_s']:.1f} s); low-rank path (rank {info['rank']}, "
                  f"from fingerprints) I = {info['lowrank_mi']:.4f} nats ({info['lowrank_s']:.1f} s): loss "
                  f"{loss:.4f} nats = {100 * loss / info['exact_mi']:.2f}%, {info['common']} of "
                  f"{min(BUDGET, info['n'])} picks in common.")

    # -------------------------------------------------------------- summary

    def _load(self, section: str) -> str:
        lines = self.results["load"].get(section, [])
        return f"Load: before `{lines[0]}`; after `{lines[-1]}`." if lines else ""

    def summary(self, full_target: int, fp_target: int, mmi_target: int) -> list[dict]:
        """Each of the issue's targets: the value at its size, or at the largest size measured (marked)."""
        rows: list[dict] = []

        def shown(value: float | None, unit: str) -> str:
            if value is None:
                return "-"
            return f"{value / 1e9:.2f} GB" if unit == "GB" else f"{value:,.3f}" + (f" {unit}" if unit else "")

        def add(what: str, measures: dict[int, float], target_n: int, limit: float | None, unit: str,
                today: Callable[[int], str] = lambda n: "-", higher_is_better: bool = False) -> None:
            if not measures:
                rows.append({"target": what, "shown": "not measured", "status": "-", "today": "-"})
                return
            n = target_n if target_n in measures else max(measures)
            value = measures[n]
            if limit is None:
                status = "(no target)"
            elif n != target_n:
                status = f"- (n = {n:,} only)"
            else:
                status = "pass" if (value >= limit if higher_is_better else value <= limit) else "MISS"
            rows.append({"target": what, "n": n, "value": value, "shown": f"{shown(value, unit)} at n = {n:,}",
                         "status": status, "today": today(n)})

        old_kappa = self._rows("kappa", "old")
        extrapolated = self.results.get("kappa_extrapolated_today_s", {})
        add(f"full kappa, {full_target:,} checkpoints < 10 min",
            {n: r["seconds"] for n, r in self._rows("kappa", "new").items()}, full_target, TARGETS["kappa_full_s"], "s",
            lambda n: shown(old_kappa[n]["seconds"], "s") if n in old_kappa else
            f"{shown(extrapolated[n], 's')} (extrapolated)" if n in extrapolated else "-")
        old_incremental = self._rows("incremental", "old")
        projected = self.results.get("incremental_projected_today_s", {})
        add(f"incremental {NEW_CHECKPOINTS} new vs {full_target:,} < 1 min",
            {n: r["seconds"] for n, r in self._rows("incremental", "new").items()}, full_target,
            TARGETS["incremental_s"], "s",
            lambda n: shown(old_incremental[n]["seconds"], "s") if n in old_incremental else
            f"{shown(projected[n], 's')} (projected)" if n in projected else "-")
        noop = {r["tree"]: r for r in self.results.get("noop", [])
                if r.get("what") == "update_kappa" and "error" not in r}
        if "new" in noop:
            add("no-op kappa run, time", {noop["new"]["n"]: noop["new"]["seconds"]}, noop["new"]["n"], None, "s",
                lambda n: shown(noop["old"]["seconds"], "s") if "old" in noop else "-")
            add("no-op kappa run, peak RSS", {noop["new"]["n"]: noop["new"]["peak_rss_bytes"]}, noop["new"]["n"], None,
                "GB", lambda n: shown(noop["old"]["peak_rss_bytes"], "GB") if "old" in noop else "-")
        fingerprints = self.results.get("fingerprints", [])
        fp = {r["n"]: r for r in fingerprints
              if r["tree"] == "new" and "error" not in r["build"] and "error" not in r["ops"]}
        old_fp = {r["n"]: r for r in fingerprints if r["tree"] == "old"}

        def today_fp(n: int, value: Callable[[dict], str]) -> str:
            r = old_fp.get(n)
            if r is None:
                return "-"
            if "skipped" in r:
                return "not run: out of memory"
            return "failed" if "error" in r["build"] or "error" in r["ops"] else value(r)

        add(f"fingerprint warm query at {fp_target:,} < 100 ms",
            {n: r["ops"]["warm_query_s"] * 1000 for n, r in fp.items()}, fp_target, TARGETS["fp_query_ms"], "ms",
            lambda n: today_fp(n, lambda r: shown(1000 * r["ops"]["warm_query_s"], "ms")))
        add(f"fingerprint add one at {fp_target:,} < 1 s", {n: r["ops"]["add_s"] for n, r in fp.items()}, fp_target,
            TARGETS["fp_add_s"], "s", lambda n: today_fp(n, lambda r: shown(r["ops"]["add_s"], "s")))
        add(f"fingerprint memory at {fp_target:,} < 8 GB",
            {n: max(r["build"]["peak_rss_bytes"], r["ops"]["peak_rss_bytes"]) for n, r in fp.items()}, fp_target,
            TARGETS["fp_memory_bytes"], "GB",
            lambda n: today_fp(n, lambda r: shown(max(r["build"]["peak_rss_bytes"], r["ops"]["peak_rss_bytes"]), "GB")))
        for r in self.results.get("recall", []):
            if "error" not in r:
                add(f"recall@10 after re-rank at n = {r['n']:,} >= 0.9", {r["n"]: r["recall_reranked"]},
                    max(r["n"], 1000), TARGETS["recall"], "",
                    lambda n, r=r: f"{r['today']['recall']:.3f}" if "recall" in r["today"] else "-",
                    higher_is_better=True)
        mmi = {r["n"]: r for r in self.results.get("mmi", []) if r["tree"] == "new" and "seconds" in r}
        old_mmi = {r["n"]: r for r in self.results.get("mmi", []) if r["tree"] == "old"}

        def today_mmi(n: int, key: str, unit: str) -> str:
            r = old_mmi.get(n, {})
            return shown(r[key], unit) if key in r else "not run: needs 18+ GB" if "skipped" in r else "-"

        add(f"MMI {mmi_target:,}, K = {BUDGET} < 5 min", {n: r["seconds"] for n, r in mmi.items()}, mmi_target,
            TARGETS["mmi_s"], "s", lambda n: today_mmi(n, "seconds", "s"))
        add(f"MMI {mmi_target:,}, K = {BUDGET} < 8 GB", {n: r["peak_rss_bytes"] for n, r in mmi.items()}, mmi_target,
            TARGETS["mmi_memory_bytes"], "GB", lambda n: today_mmi(n, "peak_rss_bytes", "GB"))
        print("\n## Summary: the issue's targets\n")
        print("A target is judged only at its own size; at other sizes (quick mode) the value is shown and marked.\n")
        print("| target | new code | today's code (56db861) | pass/miss |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['target']} | {r['shown']} | {r['today']} | {r['status']} |")
        return rows


def parse_sizes(text: str) -> list[int]:
    return sorted({int(float(part)) for part in text.split(",") if part.strip()})


def main() -> None:
    if "--child" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--child", required=True, choices=sorted(TASKS))
        parser.add_argument("--params", required=True)
        parser.add_argument("--result", required=True)
        parser.add_argument("--tree-root")
        args = parser.parse_args()
        child_main(args.child, json.loads(args.params), args.result, args.tree_root)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--sizes", help="task-space sizes n [default: 100,300,1000,3000; quick 30,60,100]")
    parser.add_argument("--baseline-max-n", type=int, help="largest n for today's kappa [default: 100; quick 20]")
    parser.add_argument("--fingerprint-sizes", help="fingerprint index sizes [default: 1e4,1e5,1e6; quick 1e3,1e4]")
    parser.add_argument("--mmi-sizes", help="MMI sizes [default: 1e4,1e5; quick 2000,1e4]")
    parser.add_argument("--queries", type=int, help=f"recall query checkpoints [default: {QUERIES}; quick 5]")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, metavar="SECTION",
                        help=f"sections to leave out: {', '.join(SECTIONS)}")
    parser.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "scale"),
                        help="working folder (indexes, today's code) [default: benchmarks/work/scale]")
    parser.add_argument("--keep", action="store_true",
                        help="keep the indexes (a later run reuses the imported task spaces)")
    args = parser.parse_args()
    quick = args.quick
    sizes = parse_sizes(args.sizes or ("30,60,100" if quick else "100,300,1000,3000"))
    baseline_max = args.baseline_max_n if args.baseline_max_n is not None else (20 if quick else 100)
    fingerprint_sizes = parse_sizes(args.fingerprint_sizes or ("1e3,1e4" if quick else "1e4,1e5,1e6"))
    mmi_sizes = parse_sizes(args.mmi_sizes or ("2000,1e4" if quick else "1e4,1e5"))
    skip = set(args.skip)
    args.queries = args.queries or (5 if quick else QUERIES)
    # Today's code at the sizes up to its maximum, and at the maximum itself; two sizes at least, for
    # its growth exponent (a third of the maximum if needed).
    baseline = sorted({n for n in sizes if n <= baseline_max} | {baseline_max})
    if len(baseline) == 1 and baseline[0] >= 6:
        baseline = [baseline[0] // 3, baseline[0]]
    recall_sizes = [n for n in sizes if n >= 1000] or sizes[-1:]
    full_target, fp_target, mmi_target = 1000, 1_000_000, 100_000
    information_n = 2000 if quick else INFORMATION_N
    output = REPO / "benchmarks" / "results" / ("quick" if quick else "") / "scale.json"

    bench = Bench(args)
    bench.work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(bench.work / "runs", ignore_errors=True)
    bench.results["config"] = {"quick": quick, "sizes": sizes, "baseline_sizes": baseline,
                               "fingerprint_sizes": fingerprint_sizes, "mmi_sizes": mmi_sizes,
                               "recall_sizes": recall_sizes, "queries": args.queries, "items": ITEMS, "width": WIDTH,
                               "latent": LATENT,
                               "seed": SEED, "baseline_commit": BASELINE_COMMIT, "cpus": os.cpu_count(),
                               "python": sys.version.split()[0], "skip": sorted(skip)}
    started = time.perf_counter()
    print(f"bench_scale: n = {sizes}, today's code at n = {baseline}, fingerprints {fingerprint_sizes}, "
          f"MMI {mmi_sizes}; {os.cpu_count()} CPUs; `{uptime()}`")
    spaces_needed = {"import", "kappa", "incremental", "noop", "recall"} - skip
    try:
        if spaces_needed:
            needed = sorted(set(sizes) | set(baseline))
            free = shutil.disk_usage(bench.work).free
            need = max(needed) * (ITEMS * (4 * WIDTH + 8))
            if free < 1.3 * need:
                raise SystemExit(f"{bench.work}: {free / 1e9:.1f} GB free, the task spaces need about "
                                 f"{need / 1e9:.1f} GB")
            bench.build_spaces(needed)
            if "import" not in skip:
                bench.print_import()
        if spaces_needed - {"import"}:
            bench.run_spaces(sizes, baseline, recall_sizes, skip)
            if "kappa" not in skip:
                bench.print_kappa(sizes, baseline, full_target)
            if "incremental" not in skip:
                bench.print_incremental(full_target)
            if "noop" not in skip:
                bench.print_noop()
        if "fingerprints" not in skip:
            bench.run_fingerprints(fingerprint_sizes)
            bench.print_fingerprints()
        if "recall" not in skip:
            bench.print_recall()
        if "mmi" not in skip:
            bench.run_mmi(mmi_sizes, information_n)
            bench.print_mmi()
        bench.results["summary"] = bench.summary(full_target, fp_target, mmi_target)
    finally:
        bench.results["seconds"] = time.perf_counter() - started
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(bench.results, indent=1, default=str))
        if not args.keep:
            made = ("runs", "spaces", "fingerprints", "mmi", "npy", "new-checkpoints", f"baseline-{BASELINE_COMMIT}")
            for name in made:
                shutil.rmtree(bench.work / name, ignore_errors=True)
            for name in ("corpus.txt", "child-result.json"):
                (bench.work / name).unlink(missing_ok=True)
    print(f"\nwhole run {bench.results['seconds'] / 60:.1f} min; figures in {output.relative_to(REPO)}; "
          f"`{uptime()}`")


if __name__ == "__main__":
    main()
