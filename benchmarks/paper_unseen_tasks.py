"""Unseen tasks: MMI-selected checkpoints vs random picks vs "peek" (Huang et al. 2021, Section 5.2).

    .venv/bin/python benchmarks/paper_unseen_tasks.py [--quick] [--out DIR] [--work DIR] [--seed N]

Huang, Qiu & Church train 100 agents on random 30-class subsets of CIFAR-100, keep a probe set and
10 labels per class for 20 admin tasks (30-way), select K agents by MMI over kappa and train a
softmax head on the concatenated features of the K agents for each task. This is their design
scaled down to scikit-learn's digits (paper_small_zoo.py describes the zoo and the data split):

- Zoo: 40 small CNNs/MLPs, each trained on a random subset of the seen classes 0-6; classes 7-9
  are unseen by every checkpoint. Features: the 32-unit penultimate layer. Two zoo variants
  (ZOO_VARIANTS): `classes-3`, every checkpoint learns 3 classes, as every agent of the paper
  learns the same number (30 of 100) - the zoo the kappa robustness experiment shares - and
  `classes-2-5`, each learns 2 to 5, so that the checkpoints differ in how much they learnt.
  The quick mode runs `classes-3` only.
- kappa: `hubindex.kappa.kappa_matrix` (centred, linear CKA) of the checkpoints' features on the
  probe set (300 unlabeled held-out digits, 30 per class); `hubindex.selection.mmi_select` picks
  K = 1..10 (nested, so one greedy run of 10 picks).
- Replicates: the full mode repeats everything below on three independent zoos (seeds N, N+1,
  N+2 of --seed N: data split, class subsets, initialisations, tasks, random picks), since one
  zoo gives one MMI selection; the quick mode runs the zoo of seed N only.
- Unseen tasks: 16 per zoo (quick: 10) distinct 4-way classification tasks over the ten digits,
  each with at least one unseen class; 5 labelled training images per class (drawn from the 10
  per class set apart for tasks) and 50 test images per class, all held out from the zoo's
  training.
- Head: the `linear` metric of hubindex (plugins/metrics.py, `LinearProbe`) on the concatenated
  features of the chosen checkpoints: each feature dimension standardised with the task's train
  rows, then scikit-learn multinomial LogisticRegression (lbfgs, C = 1, tol 1e-6, up to 10,000
  iterations, i.e. to convergence); the score is accuracy on the task's test images.
- random: 30 (quick: 10) seeds, each a random order of the checkpoints whose first K are taken
  (nested like MMI, the same picks for every task of a zoo); the band is the 10th-90th percentile
  over seeds of the mean accuracy over tasks (random seed r of every zoo counts as one strategy).
- peek: an oracle that looks at the task's test labels: the K checkpoints with the best
  single-checkpoint test accuracy on that task (ties: the lower index), chosen per task. (The
  authors' script peeks at one task and reuses those picks for all; ours peeks at every task,
  so it is a stronger oracle. Choosing on the same labels it is scored on also makes it
  optimistic.)
- all: the head on all 40 checkpoints' features, for reference.

Outputs `<out>/unseen-tasks/`: results.json (settings, the accuracies behind every table entry,
wall seconds), table.md, accuracy_vs_k.png, gain_vs_k.png. Default --out: benchmarks/results
(quick: benchmarks/results/quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by reproduce_papers.py / a test
    sys.path.insert(0, str(HERE))

from paper_common import experiment_arguments, exit_code_of, output_folder  # noqa: E402
from paper_small_zoo import (  # noqa: E402
    DigitsSplit, SmallZoo, ZooSettings, describe_zoo, load_or_train_zoo, log, one_cpu_thread, write_json,
)

from hubindex.errors import UsageError  # noqa: E402
from hubindex.kappa import kappa_matrix  # noqa: E402
from hubindex.selection import mmi_select  # noqa: E402
from hubindex.types import MetricInput  # noqa: E402
from hubindex_plugins.metrics import LinearProbe  # noqa: E402

EXPERIMENT = "unseen-tasks"
PERCENTILES = (10, 90)
# How many of the seen classes each checkpoint learns: (min, max, description).
ZOO_VARIANTS: dict[str, tuple[int, int, str]] = {
    "classes-3": (3, 3, "every checkpoint learns 3 of the 7 seen classes (like the paper's agents: 30 of 100 each)"),
    "classes-2-5": (2, 5, "each checkpoint learns 2-5 of the 7 seen classes"),
}


@dataclass(frozen=True)
class RunSettings:
    """The experiment's settings besides the zoo's."""

    quick: bool
    seed: int
    variants: tuple[str, ...]  # names in ZOO_VARIANTS
    zoo_seeds: tuple[int, ...]  # one independent zoo (split, checkpoints, tasks, random picks) per seed
    n_tasks: int
    classes_per_task: int
    labels_per_class: int
    random_seeds: int
    max_k: int

    @classmethod
    def for_mode(cls, quick: bool, seed: int) -> RunSettings:
        return cls(quick=quick, seed=seed, variants=tuple(ZOO_VARIANTS)[:1] if quick else tuple(ZOO_VARIANTS),
                   zoo_seeds=(seed,) if quick else (seed, seed + 1, seed + 2),
                   n_tasks=10 if quick else 16, classes_per_task=4, labels_per_class=5,
                   random_seeds=10 if quick else 30, max_k=10)


@dataclass(frozen=True)
class Task:
    """An unseen task: its classes, and the digits rows of its few labelled and its test images."""

    classes: tuple[int, ...]
    train_rows: np.ndarray
    test_rows: np.ndarray


def make_tasks(split: DigitsSplit, zoo_settings: ZooSettings, settings: RunSettings) -> list[Task]:
    """Distinct seeded tasks, each with at least one class no checkpoint has seen."""
    rng = np.random.default_rng([zoo_settings.seed, 3])
    unseen = set(zoo_settings.unseen_classes)
    chosen: list[tuple[int, ...]] = []
    while len(chosen) < settings.n_tasks:
        classes = tuple(sorted(int(c) for c in rng.choice(10, settings.classes_per_task, replace=False)))
        if unseen & set(classes) and classes not in chosen:
            chosen.append(classes)
    tasks = []
    for classes in chosen:
        train = [rng.choice(split.task_train[split.labels[split.task_train] == c], settings.labels_per_class,
                            replace=False) for c in classes]
        test = split.task_test[np.isin(split.labels[split.task_test], classes)]
        tasks.append(Task(classes, np.sort(np.concatenate(train)), test))
    return tasks


def head_accuracy(zoo: SmallZoo, picks: list[int] | np.ndarray, task: Task) -> float:
    """Test accuracy of hubindex's linear probe on the concatenated features of the picked checkpoints."""
    rows = np.concatenate([task.train_rows, task.test_rows])
    features = np.hstack([zoo.digit_features[i][rows] for i in picks]).astype(np.float64)
    labels = np.searchsorted(np.array(task.classes), zoo.split.labels[rows])
    train = np.arange(len(rows)) < len(task.train_rows)
    return LinearProbe().score(MetricInput(features=features, labels=labels, train=train))


def evaluate_task(zoo: SmallZoo, task: Task, mmi_order: list[int], random_orders: np.ndarray,
                  max_k: int) -> dict:
    """Accuracy of every strategy at K = 1..max_k on one task."""
    n = len(zoo.specs)
    single = np.array([head_accuracy(zoo, [i], task) for i in range(n)])
    peek_order = np.argsort(-single, kind="stable")[:max_k]
    ks = range(1, max_k + 1)
    return {
        "classes": list(task.classes),
        "n_train": int(len(task.train_rows)),
        "n_test": int(len(task.test_rows)),
        "single": single.tolist(),
        "peek_order": peek_order.tolist(),
        "mmi": [head_accuracy(zoo, mmi_order[:k], task) for k in ks],
        "peek": [head_accuracy(zoo, peek_order[:k], task) for k in ks],
        "random": [[head_accuracy(zoo, order[:k], task) for k in ks] for order in random_orders],
        "all": head_accuracy(zoo, list(range(n)), task),
    }


def summarise(per_task: list[dict], max_k: int) -> dict:
    """Means over tasks per K, the random seeds' spread, gains and win counts."""
    mmi = np.array([t["mmi"] for t in per_task])  # tasks x K
    peek = np.array([t["peek"] for t in per_task])
    random = np.array([t["random"] for t in per_task])  # tasks x seeds x K
    seed_means = random.mean(axis=0)  # seeds x K
    random_mean = seed_means.mean(axis=0)
    low, high = np.percentile(seed_means, PERCENTILES, axis=0)
    per_task_random = random.mean(axis=1)  # tasks x K
    return {
        "k": list(range(1, max_k + 1)),
        "mmi": mmi.mean(axis=0).tolist(),
        "peek": peek.mean(axis=0).tolist(),
        "random_mean": random_mean.tolist(),
        "random_p10": low.tolist(),
        "random_p90": high.tolist(),
        "random_seed_means": seed_means.tolist(),
        "gain_mmi_over_random": (mmi.mean(axis=0) - random_mean).tolist(),
        "gain_peek_over_random": (peek.mean(axis=0) - random_mean).tolist(),
        "random_seeds_below_mmi": (seed_means < mmi.mean(axis=0)).sum(axis=0).tolist(),
        "tasks_mmi_above_random": (mmi > per_task_random).sum(axis=0).tolist(),
        "tasks_mmi_below_random": (mmi < per_task_random).sum(axis=0).tolist(),
        "all_checkpoints": float(np.mean([t["all"] for t in per_task])),
        "best_single_checkpoint": float(np.mean([max(t["single"]) for t in per_task])),
        "mean_single_checkpoint": float(np.mean([np.mean(t["single"]) for t in per_task])),
    }


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def results_table(summary: dict, n_tasks: int, n_seeds: int, n_checkpoints: int, n_zoos: int) -> str:
    """Accuracy per K of MMI, random and peek, as a markdown table (percent)."""
    zoos = "one zoo" if n_zoos == 1 else f"{n_zoos} zoos"
    lines = [
        f"Mean test accuracy (%) over {n_tasks} unseen 4-way tasks ({zoos} of {n_checkpoints} checkpoints); "
        f"random: mean and 10th-90th percentile over {n_seeds} seeds of the mean over tasks.",
        "",
        "| K | MMI | random | random p10-p90 | peek | MMI - random | random seeds below MMI | tasks MMI > / < random |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, k in enumerate(summary["k"]):
        lines.append(
            f"| {k} | {pct(summary['mmi'][i])} | {pct(summary['random_mean'][i])} "
            f"| {pct(summary['random_p10'][i])}-{pct(summary['random_p90'][i])} | {pct(summary['peek'][i])} "
            f"| {100 * summary['gain_mmi_over_random'][i]:+.1f} | {summary['random_seeds_below_mmi'][i]}/{n_seeds} "
            f"| {summary['tasks_mmi_above_random'][i]} / {summary['tasks_mmi_below_random'][i]} |")
    lines += [
        "",
        f"For reference: all {n_checkpoints} checkpoints of the zoo concatenated {pct(summary['all_checkpoints'])}; "
        f"best single checkpoint per task (an oracle) {pct(summary['best_single_checkpoint'])}; "
        f"mean single checkpoint {pct(summary['mean_single_checkpoint'])}.",
    ]
    return "\n".join(lines)


def picks_table(mmi: dict, n_checkpoints: int) -> str:
    """The MMI picks in order, with what each checkpoint is and learnt, and how good it is alone."""
    lines = ["| pick | checkpoint | architecture | classes learnt | gain (nats) | I(S; rest) (nats) "
             f"| alone: mean accuracy (rank of {n_checkpoints}) |",
             "|---:|---|---|---|---:|---:|---:|"]
    rows = zip(mmi["names"], mmi["architectures"], mmi["classes"], mmi["gains_nats"], mmi["mi_nats"],
               mmi["single_accuracy"], mmi["single_rank"])
    for pick, (name, architecture, classes, gain, total, alone, rank) in enumerate(rows, start=1):
        lines.append(f"| {pick} | {name} | {architecture} | {','.join(map(str, classes))} | {gain:.3f} | {total:.3f} "
                     f"| {pct(alone)} ({rank}) |")
    return "\n".join(lines)


def first_picks_line(replicates: list[dict]) -> str:
    """Each zoo's first MMI pick and how good it is alone."""
    n = replicates[0]["n_checkpoints"]
    picks = [f"seed {r['zoo_seed']}: {r['mmi']['names'][0]} ({pct(r['mmi']['single_accuracy'][0])}%, rank "
             f"{r['mmi']['single_rank'][0]} of {n})" for r in replicates]
    return ("First MMI pick of each zoo (its mean single-checkpoint accuracy on the zoo's tasks, and its rank "
            "among the zoo's checkpoints by it): " + "; ".join(picks) + ".")


def replicates_table(replicates: list[dict], n_seeds: int) -> str:
    """Per zoo: MMI minus the random mean (points) and how many random seeds MMI beats, per K."""
    header = " | ".join(f"zoo seed {r['zoo_seed']}" for r in replicates)
    lines = ["MMI - random mean (points), and random seeds below MMI, for each zoo separately:", "",
             f"| K | {header} |", "|---:|" + "---:|" * len(replicates)]
    for i, k in enumerate(replicates[0]["summary"]["k"]):
        cells = [f"{100 * r['summary']['gain_mmi_over_random'][i]:+.1f} ({r['summary']['random_seeds_below_mmi'][i]}"
                 f"/{n_seeds})" for r in replicates]
        lines.append(f"| {k} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot_accuracy(variants: list[dict], path: Path, n_seeds: int) -> None:
    """Accuracy vs K of MMI, random (mean and band), peek and all checkpoints; one panel per zoo variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(6.4 * len(variants), 4.4), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        summary = variant["summary"]
        k = np.array(summary["k"])
        ax.fill_between(k, 100 * np.array(summary["random_p10"]), 100 * np.array(summary["random_p90"]),
                        color="tab:grey", alpha=0.3, label=f"random, 10th-90th pct of {n_seeds} seeds")
        ax.plot(k, 100 * np.array(summary["random_mean"]), "o-", color="tab:grey", label="random, mean")
        ax.plot(k, 100 * np.array(summary["mmi"]), "o-", color="tab:blue", label="MMI")
        ax.plot(k, 100 * np.array(summary["peek"]), "s--", color="tab:orange", label="peek (oracle)")
        ax.axhline(100 * summary["all_checkpoints"], color="black", lw=0.8, ls=":", label="all checkpoints")
        ax.set_title(f"{variant['description']}\n({variant['n_tasks']} tasks, {variant['n_zoos']} zoo(s))", fontsize=9)
        ax.set_xlabel("K (checkpoints whose features are concatenated)")
        ax.set_ylabel("mean test accuracy on unseen tasks (%)")
        ax.set_xticks(k)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gain(variants: list[dict], path: Path) -> None:
    """Gain of MMI (with the random band) and of peek over the random mean vs K; one line per zoo variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for variant, colour in zip(variants, ("tab:blue", "tab:green")):
        summary = variant["summary"]
        k = np.array(summary["k"])
        mmi = 100 * np.array(summary["mmi"])
        ax.fill_between(k, mmi - 100 * np.array(summary["random_p90"]), mmi - 100 * np.array(summary["random_p10"]),
                        color=colour, alpha=0.15)
        ax.plot(k, 100 * np.array(summary["gain_mmi_over_random"]), "o-", color=colour,
                label=f"MMI - random mean, {variant['name']} (band: vs random seeds' 10th-90th pct)")
        ax.plot(k, 100 * np.array(summary["gain_peek_over_random"]), "s--", color=colour, alpha=0.6,
                label=f"peek - random mean, {variant['name']}")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("K")
    ax.set_ylabel("accuracy gain over random (points)")
    ax.set_xticks(k)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = experiment_arguments(
        __doc__.splitlines()[0],
        "fewer tasks and random seeds (about a minute)",
        "seed of the split, the zoo, the tasks and random picks",
    )
    return parser.parse_args(argv)


def run_replicate(zoo_settings: ZooSettings, settings: RunSettings, work: Path) -> dict:
    """One zoo: train (or load) it, select by MMI, evaluate every strategy on its unseen tasks."""
    zoo_seed = zoo_settings.seed
    zoo = load_or_train_zoo(zoo_settings, work)
    n = len(zoo.specs)
    kappa = kappa_matrix(zoo.features(zoo.split.probe)).values
    selection = mmi_select(kappa, settings.max_k)
    log(f"unseen tasks: zoo seed {zoo_seed}: MMI picks {selection.indices} (jitter {selection.jitter:g})")
    random_orders = np.stack([np.random.default_rng([zoo_seed, 4, r]).permutation(n)[: settings.max_k]
                              for r in range(settings.random_seeds)])
    tasks = make_tasks(zoo.split, zoo_settings, settings)
    per_task = []
    for number, task in enumerate(tasks, start=1):
        per_task.append(evaluate_task(zoo, task, selection.indices, random_orders, settings.max_k))
        log(f"unseen tasks: zoo seed {zoo_seed}, task {number}/{len(tasks)} classes {task.classes}: MMI K=10 "
            f"{per_task[-1]['mmi'][-1]:.3f}, random K=10 {np.mean(per_task[-1]['random'], axis=0)[-1]:.3f}")
    off_diagonal = kappa[~np.eye(n, dtype=bool)]
    # How good each pick is alone: its mean single-checkpoint accuracy over the tasks, and its rank.
    single = np.array([t["single"] for t in per_task]).mean(axis=0)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(-single, kind="stable")] = np.arange(1, n + 1)
    return {
        "zoo_seed": zoo_seed,
        "zoo_settings": asdict(zoo_settings),
        "zoo": {"checkpoints": describe_zoo(zoo), "loaded_from_cache": zoo.loaded_from_cache,
                "train_seconds": round(zoo.train_seconds, 2), "cache": str(zoo.folder)},
        "probe_items": int(len(zoo.split.probe)),
        "kappa": {"values": kappa.round(3).tolist(), "off_diagonal_mean": float(off_diagonal.mean()),
                  "off_diagonal_min": float(off_diagonal.min()), "off_diagonal_max": float(off_diagonal.max())},
        "mmi": {"indices": selection.indices, "names": [zoo.specs[i].name for i in selection.indices],
                "architectures": [zoo.specs[i].architecture.name for i in selection.indices],
                "classes": [list(zoo.specs[i].classes) for i in selection.indices],
                "gains_nats": selection.gains, "mi_nats": selection.mi_nats, "jitter": selection.jitter,
                "single_accuracy": [float(single[i]) for i in selection.indices],
                "single_rank": [int(rank[i]) for i in selection.indices]},
        "n_checkpoints": n,
        "random_orders": random_orders.tolist(),
        "tasks": per_task,
        "summary": summarise(per_task, settings.max_k),
    }


def run_variant(name: str, settings: RunSettings, work: Path) -> dict:
    """Every zoo seed of one zoo variant, and their tasks pooled."""
    min_classes, max_classes, description = ZOO_VARIANTS[name]
    replicates = [run_replicate(ZooSettings(seed=seed, min_classes=min_classes, max_classes=max_classes),
                                settings, work) for seed in settings.zoo_seeds]
    tasks = [t for r in replicates for t in r["tasks"]]
    # Random seed r of every zoo together is one random strategy, so the pooled band is over r.
    return {"name": name, "description": description, "min_classes": min_classes, "max_classes": max_classes,
            "n_zoos": len(replicates), "n_tasks": len(tasks), "summary": summarise(tasks, settings.max_k),
            "replicates": replicates}


def variant_tables(variant: dict, settings: RunSettings) -> str:
    """The pooled table, the per-zoo gains and the first zoo's MMI picks of one zoo variant."""
    n_checkpoints = ZooSettings().n_checkpoints
    sections = [f"**Zoo variant `{variant['name']}`: {variant['description']}.**",
                results_table(variant["summary"], variant["n_tasks"], settings.random_seeds, n_checkpoints,
                              variant["n_zoos"])]
    if variant["n_zoos"] > 1:
        sections.append(replicates_table(variant["replicates"], settings.random_seeds))
    first = variant["replicates"][0]
    sections.append(first_picks_line(variant["replicates"]))
    sections.append(f"MMI picks in the zoo of seed {first['zoo_seed']} (greedy order; K takes the first K):\n\n"
                    + picks_table(first["mmi"], first["n_checkpoints"]))
    return "\n\n".join(sections)


def without_random_draws(results: dict) -> dict:
    """results with each task's random accuracies averaged over the seeds (every reported number
    needs only those and the per-seed means in the summaries), to keep results.json small."""
    variants = []
    for variant in results["variants"]:
        replicates = []
        for replicate in variant["replicates"]:
            tasks = [{**{k: v for k, v in t.items() if k != "random"},
                      "random_mean": np.mean(t["random"], axis=0).tolist()} for t in replicate["tasks"]]
            replicates.append({**replicate, "tasks": tasks})
        variants.append({**variant, "replicates": replicates})
    return {**results, "variants": variants}


def run(args: argparse.Namespace) -> dict:
    """The whole experiment; returns what results.json holds."""
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    started = time.perf_counter()
    folder = output_folder(args.out, args.quick, EXPERIMENT)
    settings = RunSettings.for_mode(args.quick, args.seed)
    variants = [run_variant(name, settings, args.work) for name in settings.variants]
    table = "\n\n".join(variant_tables(v, settings) for v in variants)
    (folder / "table.md").write_text(table + "\n")
    plot_accuracy(variants, folder / "accuracy_vs_k.png", settings.random_seeds)
    plot_gain(variants, folder / "gain_vs_k.png")
    results = {
        "experiment": EXPERIMENT,
        "paper": "Huang, Qiu & Church 2021, Exploiting a Zoo of Checkpoints for Unseen Tasks, Section 5.2",
        "settings": asdict(settings),
        "head": "hubindex linear metric: per-dimension standardisation on train rows + sklearn "
                "LogisticRegression(lbfgs, C=1, tol=1e-6, max_iter=10000)",
        "variants": variants,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(folder / "results.json", without_random_draws(results))
    print(f"## Unseen tasks ({'quick' if args.quick else 'full'} mode, {results['wall_seconds']:.0f} s)\n")
    print(table)
    log(f"unseen tasks: wrote {folder} in {results['wall_seconds']:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with one_cpu_thread():
        return exit_code_of("paper_unseen_tasks", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
