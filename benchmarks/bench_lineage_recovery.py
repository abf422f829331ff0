"""Benchmark: recovering undocumented lineage from weights (hubindex.lineage_recovery).

    nice -n 10 .venv/bin/python benchmarks/bench_lineage_recovery.py [--quick] [--seeds 3] [--zoo DIR]

(a) Synthetic forests, built with the builders of tests/test_lineage_recovery.py (tiny MLPs,
    ~8k parameters, trained here on synthetic regression tasks): the tests' forest (a parent, 3
    children, 2 grandchildren, an int8 leaf, a merge, an unrelated model) and, per seed, 3 families
    of depth 3 (root, children, grandchildren) with fan-out 2-4, 2 quantised leaves (int8 per
    tensor or per row) and 1 merge of two siblings per family, and 2 unrelated models pretrained
    on family 0's task from their own inits.
(b) The local zoo (`hubindex zoo build`, default benchmarks/work/zoo) when it is there: its manifests
    (hubindex_lineage.json) give the truth.

Every recovery runs with each direction rule, on the same profiles. Precision and recall are
micro-averaged over the forests: undirected (the pair is a true edge), directed (and the
direction is right), per relation of the true edge (recall: found, directed and labelled right;
precision: edges given that label that are true edges with that label), and for the edges of
confidence >= RECOVERED_MIN_CONFIDENCE (the ones the closure uses).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hubindex.lineage import RECOVERED_MIN_CONFIDENCE
from hubindex.lineage_recovery import (
    DIRECTION_RULE,
    DIRECTION_RULES,
    _pair,
    comparable,
    profile_checkpoint,
    recover_edges,
    recover_lineage,
    weight_files,
)

RESULTS = ROOT / "benchmarks" / "results" / "lineage-recovery"
ZOO = ROOT / "benchmarks" / "work" / "zoo"
MAIN = "3 families x depth 3 x fan-out 2-4"
HIDDEN = "same, family roots missing from the catalog"
ZOO_RELATIONS = {"finetuned": "finetune", "truncated": "unknown"}  # the zoo's words -> lineage relations


def count(truth: dict[str, tuple[tuple[str, ...], str]], names: list[str], recovered: list[Any]) -> Counter:
    """Counts for precision and recall: truth is {child: (parents, relation)}."""
    edges = {(p, c): rel for c, (ps, rel) in truth.items() for p in ps}
    pairs = {frozenset(e) for e in edges}
    roots = [n for n in names if n not in truth]
    out: Counter = Counter(true=len(edges), found=len(recovered), roots=len(roots))
    for e in recovered:
        key = (e.parent, e.child)
        out["undirected"] += frozenset(key) in pairs
        out["directed"] += key in edges
        out[f"labelled {e.relation}"] += 1
        out[f"labelled right {e.relation}"] += edges.get(key) == e.relation
        if e.confidence >= RECOVERED_MIN_CONFIDENCE:
            out["strong"] += 1
            out["strong directed"] += key in edges
    for key, rel in edges.items():
        out[f"true {rel}"] += 1
        out[f"found {rel}"] += any(e.parent == key[0] and e.child == key[1] and e.relation == rel for e in recovered)
    out["roots left alone"] = sum(not any(e.child == r for e in recovered) for r in roots)
    return out


def separation(truth: dict[str, tuple[tuple[str, ...], str]], profiles: list[Any]) -> dict[str, float]:
    """The largest distance D of a true edge, and the smallest between checkpoints of different true trees."""
    import networkx as nx

    by_id = {p.checkpoint_id: p for p in profiles}
    trees = nx.Graph([(p, c) for c, (ps, _) in truth.items() for p in ps if p in by_id and c in by_id])
    trees.add_nodes_from(by_id)
    tree_of = {n: i for i, group in enumerate(nx.connected_components(trees)) for n in group}
    signature = {i: {k: t.numel for k, t in p.tensors.items()} for i, p in by_id.items()}
    related, unrelated = [0.0], [float("inf")]
    for x, px in by_id.items():
        for y, py in by_id.items():
            if x < y and comparable(signature[x], signature[y]):
                d = _pair(px, py, DIRECTION_RULE).distance
                if tree_of[x] != tree_of[y]:
                    unrelated.append(d)
                elif trees.has_edge(x, y):
                    related.append(d)
    return {"max D of a true edge": max(related), "min D across trees": min(unrelated)}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def summary_row(name: str, c: Counter) -> str:
    return (f"| {name} | {c['true']} | {c['found']} | {ratio(c['undirected'], c['found'])} | "
            f"{ratio(c['undirected'], c['true'])} | {ratio(c['directed'], c['found'])} | {ratio(c['directed'], c['true'])} | "
            f"{c['strong']} | {ratio(c['strong directed'], c['strong'])} | {c['roots left alone']}/{c['roots']} |")


SUMMARY_HEAD = ("| forests, rule | true edges | recovered | precision | recall | directed precision | directed recall | "
                "conf >= 0.8 | their directed precision | roots left without parent |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def relation_rows(c: Counter) -> list[str]:
    rows = [("| relation of the true edge | true | recall (directed, right label) | recovered with this label | "
             "precision of the label |"), "|---|---:|---:|---:|---:|"]
    for rel in ("finetune", "quantized", "merge", "unknown"):
        if c[f"true {rel}"] or c[f"labelled {rel}"]:
            rows.append(f"| {rel} | {c[f'true {rel}']} | {ratio(c[f'found {rel}'], c[f'true {rel}'])} | "
                        f"{c[f'labelled {rel}']} | {ratio(c[f'labelled right {rel}'], c[f'labelled {rel}'])} |")
    return rows


def synthetic(seeds: int, quick: bool) -> dict[str, Any]:
    import test_lineage_recovery as forests
    import torch

    torch.set_num_threads(1)
    seed_list = list(range(1 if quick else seeds))
    main: dict[str, Any] = {"families": 3, "depth": 2, "fanout": (2, 4), "quantized": 2, "merges": 1, "unrelated": 2}
    configs = [("tests' forest", lambda folder, seed: forests.small_forest(folder), [0]),
               (MAIN, lambda folder, seed: forests.build_forest(folder, seed=seed, **main), seed_list)]
    if not quick:
        configs += [
            ("same, siblings tuned on one task", lambda folder, seed: forests.build_forest(
                folder, seed=seed, shared_tasks=True, **main), seed_list),
            ("same, light fine-tunes (5-20 steps)", lambda folder, seed: forests.build_forest(
                folder, seed=seed, steps=(5, 20), **main), seed_list)]
    out: dict[str, Any] = {}
    for label, build, seed_list in configs:
        variants = [label] + ([HIDDEN] if label == MAIN else [])
        totals = {(v, rule): Counter() for v in variants for rule in DIRECTION_RULES}
        times = Counter()
        for seed in seed_list:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                forest = build(Path(tmp), seed)
                times["build"] += time.perf_counter() - started
                started = time.perf_counter()
                profiles = [profile_checkpoint(n, weight_files(forest.path(n))) for n in forest.names]
                times["profile"] += time.perf_counter() - started
                times["checkpoints"] += len(profiles)
                truth = {c: (ps, forest.relation[c]) for c, ps in forest.parents.items()}
                for key, value in separation(truth, profiles).items():
                    times[key] = max(times[key], value) if key.startswith("max") else min(times.get(key, value), value)
                for rule in DIRECTION_RULES:
                    started = time.perf_counter()
                    recovered = recover_edges(profiles, rule)
                    times[f"recover {rule}"] += time.perf_counter() - started
                    totals[(label, rule)] += count(truth, forest.names, recovered)
                    if HIDDEN in variants:  # the family roots missing: their children have no true parent here
                        roots = {n for n in forest.names if n not in forest.parents and not n.startswith("unrelated")}
                        kept = [n for n in forest.names if n not in roots]
                        hidden = {c: v for c, v in truth.items() if not set(v[0]) & roots}
                        recovered = recover_edges([p for p in profiles if p.checkpoint_id in kept], rule)
                        totals[(HIDDEN, rule)] += count(hidden, kept, recovered)
        for v in variants:
            out[v] = {"seeds": seed_list, "counts": {r: dict(totals[(v, r)]) for r in DIRECTION_RULES},
                      "seconds": dict(times)}
    return out


def zoo(folder: Path) -> dict[str, Any] | None:
    snapshots = {}
    for repo in sorted(folder.glob("models--*")):
        found = sorted((repo / "snapshots").glob("*"))
        if found:
            snapshots[repo.name.split("--", 2)[2]] = found[-1]
    if not snapshots:
        return None
    truth, times = {}, Counter()
    for name, snapshot in snapshots.items():
        manifest = json.loads((snapshot / "hubindex_lineage.json").read_text())
        if manifest.get("parent"):
            truth[name] = ((manifest["parent"].split("/", 1)[1],), ZOO_RELATIONS.get(manifest["relation"], "unknown"))
    profiles = []
    for name, snapshot in snapshots.items():
        started = time.perf_counter()
        profiles.append(profile_checkpoint(name, weight_files(snapshot)))
        times[f"profile {name}"] = time.perf_counter() - started
    counts, edges = {}, {}
    for rule in DIRECTION_RULES:
        started = time.perf_counter()
        recovered = recover_edges(profiles, rule)
        times[f"recover {rule}"] = time.perf_counter() - started
        counts[rule] = dict(count(truth, list(snapshots), recovered))
        edges[rule] = [(e.parent, e.child, e.relation, e.confidence, e.detail) for e in recovered]
    return {"truth": {c: [list(ps), rel] for c, (ps, rel) in truth.items()}, "counts": counts, "edges": edges,
            "seconds": dict(times), "params": {p.checkpoint_id: p.params for p in profiles},
            "separation": separation(truth, profiles)}


def end_to_end(folder: Path) -> dict[str, Any]:
    """`hubindex crawl local` of the zoo, then recover_lineage on that catalog: its manifests are declared edges."""
    from conftest import run_hubindex

    from hubindex.index import Index

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "index"
        crawled = run_hubindex("crawl", "local", str(folder), index_dir=index_dir)
        assert crawled.exit_code == 0, crawled.stderr
        with Index(index_dir).open_catalog() as catalog:
            found = recover_lineage(catalog)
    return {"seconds": found.seconds, "examined": found.examined, "profiled": found.profiled, "written": found.written,
            "agreement": found.agreement, "failures": found.failures}


def report(results: dict[str, Any]) -> str:
    lines = []
    for label, data in results["synthetic"].items():
        seconds = data["seconds"]
        lines += [f"**{label}** (seeds {data['seeds']}): {seconds['checkpoints']} checkpoints; training "
                  f"{seconds['build']:.1f} s, profiles {seconds['profile']:.2f} s, recovery "
                  + ", ".join(f"{rule} {seconds[f'recover {rule}']:.2f} s" for rule in DIRECTION_RULES)
                  + f". Largest D of a true edge {seconds['max D of a true edge']:.3f}, smallest D between "
                  f"different trees {seconds['min D across trees']:.3f}.", "", SUMMARY_HEAD]
        lines += [summary_row(rule + (" (default)" if rule == DIRECTION_RULE else ""), Counter(data["counts"][rule]))
                  for rule in DIRECTION_RULES]
        lines += ["", f"Per relation, rule {DIRECTION_RULE}:", ""] + relation_rows(Counter(data["counts"][DIRECTION_RULE]))
        lines.append("")
    if results.get("zoo"):
        data = results["zoo"]
        lines += ["**local zoo**: " + ", ".join(f"{c} <- {ps[0]} ({rel})" for c, (ps, rel) in data["truth"].items()),
                  "", SUMMARY_HEAD]
        lines += [summary_row(rule, Counter(data["counts"][rule])) for rule in DIRECTION_RULES]
        lines += ["", f"Edges recovered (rule {DIRECTION_RULE}):", ""]
        lines += [f"- {p} -> {c}: {rel}, confidence {conf}; {detail}" for p, c, rel, conf, detail in data["edges"][DIRECTION_RULE]]
        profile_s = {k[8:]: v for k, v in data["seconds"].items() if k.startswith("profile ")}
        lines += ["", "Profile time per checkpoint: " + ", ".join(
            f"{name} ({data['params'][name] / 1e6:.1f} M weights) {s:.1f} s" for name, s in profile_s.items()),
            "Recovery: " + ", ".join(f"{rule} {data['seconds'][f'recover {rule}']:.2f} s" for rule in DIRECTION_RULES),
            "Largest D of a true edge {:.4f}, smallest D between different trees {:.4f}.".format(
                *data["separation"].values())]
    if results.get("end_to_end"):
        data = results["end_to_end"]
        agree = sum(recovered in declared for recovered, declared in data["agreement"].values())
        unfound = sum(recovered is None for recovered, _ in data["agreement"].values())
        lines += ["", (f"**recover_lineage on the crawled zoo**: {data['seconds']:.1f} s for {data['examined']} "
                       f"checkpoints ({data['profiled']} read in full); {len(data['agreement'])} documented children "
                       f"compared, not written: the recovered parent is the declared one for {agree}, "
                       f"none was recovered for {unfound}; "
                       f"{data['written']} undocumented checkpoints written.")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, no zoo")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--zoo", type=Path, default=ZOO, help="a zoo built by `hubindex zoo build`")
    args = parser.parse_args()
    results: dict[str, Any] = {"synthetic": synthetic(args.seeds, args.quick)}
    if not args.quick:
        results["zoo"] = zoo(args.zoo) if args.zoo.is_dir() else None
        results["end_to_end"] = end_to_end(args.zoo) if results["zoo"] else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(report(results))


if __name__ == "__main__":
    main()
