"""Which transferability metric to trust: every metric over many setups of the real zoo's tasks - one command:

    .venv/bin/python benchmarks/metric_harness.py [--quick] [--out DIR] [--work DIR] [--seed N]

Results on a metric vary with the experimental setup (Agostinelli et al., "How stable are
transferability metrics evaluations?", ECCV 2022), so this measures every installed metric over
many setups and reports the spread beside the mean. It reuses benchmarks/paper_pool.py: the 9
image and 9 text checkpoints, the 4 target tasks with their splits, and the fine-tuned ground
truth (fine-tuning, the expensive part, is done once by paper_pool and cached under
`<work>/paper-pool`; the setups need none). A setup is one (examples, pool) pair:

- examples: the target task itself, or a stratified subsample of its examples (what the metric
  sees) - `SUBSAMPLE_FRACTIONS` of every class (at least 2 per class) x `SUBSAMPLE_SEEDS`
  seeds - each added as a task of its own (`hubindex task add TASK.nPCT-sSEED`, the same seed
  for its held-out split) and scored with `hubindex score --task ... --reference-task R`
  (every installed metric; R the target's reference task, for task-relatedness; the class
  names embedded by all-MiniLM-L6-v2 for the metrics that need them, EMMS);
- pool: all 9 checkpoints of the task's modality, or one of `POOL_VARIANTS` seeded random
  subsets of 5-8 of them (evaluation only: the same scores, ranked within the subset).

Examples and pools are crossed. The scores live in an index of the harness's own
(`<work>/metric-harness/<pool run>/index`, first a copy of the pool's index, so the targets'
features are not computed again), and the paper benchmarks' index is left as they built it. The
ground truth goes into a CSV with `setup` (the pool) and `base_task` (the target) columns and
`hubindex evaluate --truth T.csv --format json` reads the whole `task_scores` table, at budgets
1 and 3: per metric, weighted tau, Recall@1 and relative regret, mean, standard deviation and
10th-90th percentiles across setups, per task and over all setups. Breakdowns by modality, by
subsample size and by source of variation (examples or pool) aggregate the same per-setup rows
with the same function (`hubindex.evaluation_setups.aggregate`).

The fine-tuned ground truth carries noise of its own: where benchmarks/results/ranking/results.json
holds an earlier run of the same settings, table.md compares the two (Table 5i).

Writes `<out>/metric-harness/`: results.json (the settings, installed metrics, every aggregate,
every setup's weighted tau, the ground truth, stage and wall seconds, load averages), table.md
(the tables of benchmarks/RESULTS.md section 5), scatter.png (a metric-vs-truth panel per task: rows metrics,
columns tasks, each point a checkpoint, full-task score against fine-tuned accuracy) and
weighted_tau_box.png (weighted tau across setups per metric, image and text tasks apart).
Default --out: benchmarks/results (full) or benchmarks/results/quick (--quick).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules paper_pool, finetune
from paper_common import HERE, exit_code_of, experiment_arguments, log, output_folder
from paper_pool import (
    Pool,
    TaskData,
    add_tasks,
    hubindex,
    make_tasks,
    plot_label,
    prepare_pool,
)
from paper_ranking import cell, truth_table

from hubindex.evaluation import MEASURES
from hubindex.evaluation_setups import aggregate
from hubindex.plugins import metrics as installed_metrics

EXPERIMENT = "metric-harness"
FULL_POOL = "all"
# Full: 3 sizes x 5 seeds of examples, 20 pool variants; quick: 1 x 2 and 5.
SUBSAMPLE_FRACTIONS = {"full": (0.2, 0.4, 0.7), "quick": (0.5,)}
SUBSAMPLE_SEEDS = {"full": 5, "quick": 2}
POOL_VARIANTS = {"full": 20, "quick": 5}
POOL_SIZES = (5, 8)  # a variant keeps this many checkpoints, drawn uniformly (inclusive)
MIN_PER_CLASS = 2
# The text checkpoint that embeds the class names for EMMS (Meng et al. use language models' label embeddings).
LABEL_ENCODER = "hf:hubindex-zoo/all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None) -> Any:
    """The command line (see the module docstring)."""
    return experiment_arguments(__doc__.splitlines()[0], "the reduced version (a few minutes on a cached pool)",
                                "seed of the paper pool, the subsamples and the pool variants").parse_args(argv)


# ------------------------------------------------------------------------------------ setups


def subsample_name(task: str, fraction: float, seed: int) -> str:
    """TASK.nPCT-sSEED: the derived task of a subsample."""
    return f"{task}.n{round(fraction * 100)}-s{seed}"


def fraction_of(scored_task: str, base_task: str) -> float:
    """The share of the target's examples a scored task holds (1.0 for the target itself)."""
    if scored_task == base_task:
        return 1.0
    return int(scored_task[len(base_task) + 2:].split("-s")[0]) / 100.0


def subsample(task: TaskData, fraction: float, seed: int, base_seed: int) -> TaskData:
    """A stratified share of the task's examples (at least MIN_PER_CLASS per class), seeded."""
    rng = np.random.default_rng([base_seed, seed, round(fraction * 100), zlib.crc32(task.name.encode())])
    rows = []
    for label in np.unique(task.labels):
        members = np.flatnonzero(task.labels == label)
        keep = min(len(members), max(MIN_PER_CLASS, round(fraction * len(members))))
        rows.extend(rng.choice(members, keep, replace=False).tolist())
    rows = np.array(sorted(rows))
    return TaskData(subsample_name(task.name, fraction, seed), task.modality, task.examples[rows],
                    task.labels[rows], task.reference)


def pool_variants(checkpoints: list[str], count: int, seed: int, task: str) -> dict[str, list[str]]:
    """{"all": every checkpoint, "poolNN": a seeded random subset of POOL_SIZES checkpoints, ...}."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    ordered = sorted(checkpoints)
    variants = {FULL_POOL: ordered}
    for number in range(1, count + 1):
        size = int(rng.integers(POOL_SIZES[0], min(POOL_SIZES[1], len(ordered) - 1) + 1))
        variants[f"pool{number:02d}"] = sorted(rng.choice(ordered, size, replace=False).tolist())
    return variants


def write_truth(pool: Pool, derived: dict[str, list[str]], variants: dict[str, dict[str, list[str]]],
                path: Path) -> int:
    """The setups' ground truth: task (scored), checkpoint_id, accuracy, setup (pool), base_task; its row count."""
    rows = 0
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "checkpoint_id", "accuracy", "setup", "base_task"])
        for target in pool.targets:
            for scored in [target.name, *derived[target.name]]:
                for setup, members in variants[target.name].items():
                    for checkpoint_id in members:
                        writer.writerow([scored, checkpoint_id, f"{pool.accuracy(target.name, checkpoint_id):.6f}",
                                         setup, target.name])
                        rows += 1
    return rows


# ------------------------------------------------------------------------------------ the harness index


def harness_index(pool: Pool, work: Path, tasks: list[TaskData], derived_tasks: list[TaskData]
                  ) -> tuple[Path, dict[str, str]]:
    """The harness's own index - first a copy of the pool's (its crawl, tasks, features and scores) -
    with the subsamples added and every target and subsample scored by every installed metric; and
    why metrics were not applicable (score_all)."""
    index_dir = work / "metric-harness" / pool.run_dir.name / "index"
    if not (index_dir / "catalog.duckdb").is_file():
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.copytree(pool.index_dir, index_dir)
    add_tasks(index_dir, index_dir.parent / "data", [*tasks, *derived_tasks], pool.settings.seed)
    return index_dir, score_all(index_dir, [t for t in tasks if t.is_target] + derived_tasks)


class Tee(io.StringIO):
    """Kept in memory and passed on to the real stderr."""

    def write(self, text: str) -> int:
        sys.__stderr__.write(text)
        return super().write(text)


def score_all(index_dir: Path, targets: list[TaskData]) -> dict[str, str]:
    """`hubindex score --task T --reference-task R --label-encoder E` with every installed metric;
    {metric: why it was not applicable} from the notes of `hubindex score`, the first note of each.

    As paper_pool.score_tasks (BLAS on one thread, for the same reason), plus LABEL_ENCODER for the
    metrics that embed the class names (EMMS) where `hubindex score` takes one.
    """
    from threadpoolctl import threadpool_limits

    encoder = (["--label-encoder", LABEL_ENCODER]
               if "--label-encoder" in hubindex(index_dir, "score", "--help", capture=True) else [])
    output = Tee()
    with threadpool_limits(limits=1, user_api="blas"), contextlib.redirect_stderr(output):
        for task in targets:
            hubindex(index_dir, "score", "--task", task.name, "--reference-task", str(task.reference), *encoder)
    reasons: dict[str, str] = {}
    for line in output.getvalue().splitlines():
        if line.startswith("  not applicable: "):
            metric, _, why = line.removeprefix("  not applicable: ").partition(": ")
            reasons.setdefault(metric, why.removeprefix(f"{metric}: "))
    return reasons


def evaluate(index_dir: Path, truth: Path, budget: int) -> dict[str, Any]:
    """`hubindex evaluate --truth T.csv --budget B --format json` over the whole task_scores table."""
    return json.loads(hubindex(index_dir, "evaluate", "--truth", str(truth), "--budget", str(budget),
                               "--format", "json", capture=True))


def scores_of(index_dir: Path, tasks: list[str]) -> dict[tuple[str, str, str], float]:
    """{(task, metric, checkpoint_id): value} of the given tasks, from `hubindex sql`."""
    quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in tasks)
    text = hubindex(index_dir, "sql", f"SELECT task, metric, checkpoint_id, value FROM task_scores WHERE task IN "
                    f"({quoted})", "--format", "csv", "--max-rows", "1000000", capture=True)
    return {(r["task"], r["metric"], r["checkpoint_id"]): float(r["value"]) for r in csv.DictReader(text.splitlines())}


# ------------------------------------------------------------------------------------ breakdowns


def nan_to_none(value: Any) -> Any:
    """NaN as None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def as_float(value: Any) -> float:
    """A JSON number or null as a float (NaN for null)."""
    return math.nan if value is None else float(value)


def setup_rows(evaluation: dict[str, Any], modality: dict[str, str]) -> list[dict[str, Any]]:
    """The per-setup rows with NaN for null, their modality, example share, both together, and variation source."""
    rows = []
    for row in evaluation["per_setup"]:
        row = {k: as_float(v) if k in MEASURES else v for k, v in row.items()}
        fraction = fraction_of(row["scored_task"], row["task"])
        source = ("none" if fraction == 1.0 and row["setup"] == FULL_POOL else
                  "examples" if row["setup"] == FULL_POOL else "pool" if fraction == 1.0 else "both")
        rows.append({**row, "modality": modality[row["task"]], "fraction": fraction, "source": source,
                     "modality_fraction": f"{modality[row['task']]}|{fraction}"})
    return rows


def breakdown(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{metric: {value of `key`: aggregate over those setups}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in sorted({r["metric"] for r in rows}):
        mine = [r for r in rows if r["metric"] == metric]
        for value in sorted({r[key] for r in mine}, key=str):
            out.setdefault(metric, {})[str(value)] = aggregate([r for r in mine if r[key] == value])
    return out


def paired_with_best(rows: list[dict[str, Any]], by_modality: dict[str, dict[str, dict[str, Any]]]
                     ) -> dict[str, dict[str, Any]]:
    """Per modality, every metric against the one with the best mean weighted tau, setup by setup:
    the share of setups where it ranks better (ties count half) and the mean and std of the difference."""
    out: dict[str, dict[str, Any]] = {}
    for modality in ("image", "text"):
        means = {m: groups[modality]["weighted_tau"] for m, groups in by_modality.items()
                 if modality in groups and not math.isnan(groups[modality]["weighted_tau"])}
        if not means:
            continue
        best = max(means, key=means.__getitem__)
        taus: dict[str, dict[tuple[str, str], float]] = {}
        for r in rows:
            if r["modality"] == modality and not math.isnan(r["weighted_tau"]):
                taus.setdefault(r["metric"], {})[(r["scored_task"], r["setup"])] = r["weighted_tau"]
        out[modality] = {"best": best, "metrics": {}}
        for metric in sorted(means):
            shared = sorted(set(taus[metric]) & set(taus[best]))
            if not shared:
                continue
            differences = np.array([taus[metric][k] - taus[best][k] for k in shared])
            out[modality]["metrics"][metric] = {
                "setups": len(shared), "beats_best": float(np.mean((differences > 0) + 0.5 * (differences == 0))),
                "difference_mean": float(differences.mean()),
                "difference_std": float(differences.std(ddof=1)) if len(differences) > 1 else math.nan}
    return out


def truth_agreement(pool: Pool, earlier: Path) -> dict[str, dict[str, float]]:
    """Per task, how an earlier run's fine-tuned accuracies (paper_ranking's results.json, same settings)
    rank the pool against this run's: weighted tau, Kendall tau-b, the largest difference. {} without one."""
    if not earlier.is_file():
        return {}
    from scipy import stats

    data = json.loads(earlier.read_text())
    if data.get("settings", {}).get("run_folder") != pool.run_dir.name:
        return {}
    out = {}
    for task, results in data.get("ground_truth", {}).items():
        ids = sorted(set(results) & set(pool.truth.get(task, {})))
        if len(ids) < 2:
            continue
        now = [pool.accuracy(task, c) for c in ids]
        before = [float(results[c]["test_accuracy"]) for c in ids]
        out[task] = {"weighted_tau": float(stats.weightedtau(now, before).statistic),
                     "kendall": float(stats.kendalltau(now, before).statistic),
                     "max_abs_difference": max(abs(a - b) for a, b in zip(now, before))}
    return out


# ------------------------------------------------------------------------------------ tables


def spread_cell(row: dict[str, Any] | None, measure: str, percentiles: bool = True) -> str:
    """'mean ± std [p10, p90]' of one measure in an aggregate row."""
    if row is None or row[measure] is None or (isinstance(row[measure], float) and math.isnan(row[measure])):
        return "-"
    text = f"{row[measure]:.3f}"
    std = row.get(f"{measure}_std")
    if std is not None and not math.isnan(std):
        text += f" ± {std:.2f}"
    if percentiles:
        text += f" [{row[f'{measure}_p10']:.2f}, {row[f'{measure}_p90']:.2f}]"
    return text


def metric_order(mean: list[dict[str, Any]]) -> list[str]:
    """Metrics by their mean weighted tau over all setups, best first."""
    return [r["metric"] for r in sorted(mean, key=lambda r: -(r["weighted_tau"] if r["weighted_tau"] is not None
                                                               else -9.0))]


def headline_table(b1: dict[str, Any], b3: dict[str, Any]) -> str:
    """One row per metric over all setups of all tasks: the three measures with their spread."""
    by3 = {r["metric"]: r for r in b3["mean"]}
    lines = ["| metric | w. tau | Recall@1 | rel. regret B=1 | rel. regret B=3 | tasks | setups |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in sorted(b1["mean"], key=lambda r: metric_order(b1["mean"]).index(r["metric"])):
        lines.append(f"| {row['metric']} | {spread_cell(row, 'weighted_tau')} | "
                     f"{spread_cell(row, 'recall@1', False)} | {spread_cell(row, 'relative_regret')} | "
                     f"{spread_cell(by3[row['metric']], 'relative_regret')} | {row['n_tasks']} | "
                     f"{row['n_setups']}" + (f" ({row['n_undefined']} undefined)" if row["n_undefined"] else "") + " |")
    return "\n".join(lines)


def per_task_table(evaluation: dict[str, Any], tasks: list[str], measure: str, order: list[str]) -> str:
    """One row per metric, one column per task: mean ± std [p10, p90] of one measure across setups."""
    values = {(r["metric"], r["task"]): r for r in evaluation["per_task"]}
    lines = [f"| metric | {' | '.join(tasks)} |", "|---" + "|---:" * len(tasks) + "|"]
    for metric in order:
        lines.append(f"| {metric} | " + " | ".join(spread_cell(values.get((metric, t)), measure) for t in tasks) + " |")
    return "\n".join(lines)


def breakdown_table(groups: dict[str, dict[str, dict[str, Any]]], columns: list[tuple[str, str, str]],
                    order: list[str], percentiles: bool = False) -> str:
    """One row per metric; columns (group, measure, label): mean ± std of the measure over the group's setups."""
    lines = [f"| metric | {' | '.join(label for _, _, label in columns)} |", "|---" + "|---:" * len(columns) + "|"]
    for metric in order:
        mine = groups.get(metric, {})
        lines.append(f"| {metric} | " + " | ".join(spread_cell(mine.get(group), measure, percentiles)
                                                   for group, measure, _ in columns) + " |")
    return "\n".join(lines)


def paired_table(paired: dict[str, dict[str, Any]], order: list[str]) -> str:
    """One row per metric; per modality, its share of wins over the best metric and the mean difference."""
    modalities = list(paired)
    header = " | ".join(f"{m}: beats {paired[m]['best']} | {m}: difference" for m in modalities)
    lines = [f"| metric | {header} |", "|---" + "|---:" * (2 * len(modalities)) + "|"]
    for metric in order:
        cells = []
        for modality in modalities:
            row = paired[modality]["metrics"].get(metric)
            if row is None or metric == paired[modality]["best"]:
                cells += ["-" if row is None else "(best)", "-"]
            else:
                cells += [f"{row['beats_best']:.0%}", spread_cell({"d": row["difference_mean"],
                                                                   "d_std": row["difference_std"]}, "d", False)]
        lines.append(f"| {metric} | {' | '.join(cells)} |")
    return "\n".join(lines)


def build_tables(pool: Pool, settings: dict[str, Any], b1: dict[str, Any], b3: dict[str, Any],
                 breakdowns: dict[str, Any], metrics: dict[str, list[str]],
                 agreement: dict[str, dict[str, float]]) -> str:
    """Every table of table.md."""
    order = metric_order(b1["mean"])
    tasks = [t.name for t in pool.targets]
    fractions = [str(f) for f in [*settings["subsample_fractions"], 1.0]]
    by_modality = [(m, measure, f"{label} {m}") for measure, label in
                   (("weighted_tau", "w. tau"), ("recall@1", "Recall@1"), ("relative_regret", "rel. regret"))
                   for m in ("image", "text")]
    by_n = [(f"{m}|{f}", "weighted_tau", f"{m} {round(float(f) * 100)}%") for m in ("image", "text") for f in fractions]
    by_source = [("examples", "weighted_tau", "examples only"), ("pool", "weighted_tau", "pool only"),
                 ("both", "weighted_tau", "both")]
    missing = "; ".join(f"{m} ({metrics['not_applicable'].get(m, 'no note')})" for m in metrics["unscored"])
    missing = f" Installed but not applicable to any task here: {missing}." if missing else ""
    settings_line = (
        f"Mode `{settings['mode']}`, seed {settings['seed']}. {settings['setups_per_task']} setups per task = "
        f"{settings['example_sets_per_task']} example sets (the task, and {len(settings['subsample_fractions'])} "
        f"subsample sizes x {settings['subsample_seeds']} seeds) x {settings['pools_per_task']} pools (all 9 "
        f"checkpoints, and {settings['pool_variants']} random subsets of {POOL_SIZES[0]}-{POOL_SIZES[1]}); "
        f"{len(tasks)} tasks. Metrics: {', '.join(metrics['scored'])}.{missing}")
    out = [
        settings_line, "",
        ("**Table 5a - every setup of every task**: mean ± standard deviation [10th, 90th percentile] across "
         "setups; sorted by weighted tau"), "",
        headline_table(b1, b3), "",
        "**Table 5b - weighted tau per task** (across that task's setups)", "",
        per_task_table(b1, tasks, "weighted_tau", order), "",
        "**Table 5c - relative regret at B = 1 per task**", "",
        per_task_table(b1, tasks, "relative_regret", order), "",
        "**Table 5d - image vs text tasks** (B = 1), mean ± std across setups", "",
        breakdown_table(breakdowns["modality"], by_modality, order), "",
        ("**Table 5e - weighted tau by the share of the task's examples the metric sees** (mean ± std over "
         "seeds and pools; 100% = the task itself)"), "",
        breakdown_table(breakdowns["modality_fraction"], by_n, order), "",
        ("**Table 5f - where the spread comes from**: weighted tau across example subsamples only (all 9 "
         "checkpoints), across pool variants only (the task's own examples), across both; mean ± std [p10, p90]"), "",
        breakdown_table(breakdowns["source"], by_source, order, True), "",
        ("**Table 5g - paired against the best metric of each modality**, setup by setup (the same examples "
         "and pool): the share of setups where the metric's weighted tau beats the best one's (ties count "
         "half), and the difference in weighted tau, mean ± std"), "",
        paired_table(breakdowns["paired"], order), "",
        ("**Table 5h - the ground truth**: fine-tuned test accuracy (chosen learning rate) of this run's "
         "benchmarks/paper_pool.py; `*` marks its derived children"), "",
        truth_table(pool),
    ]
    if agreement:
        out += ["", ("**Table 5i - the ground truth's own noise**: this run's fine-tuned accuracies against those of "
                     "the run behind section 2 (benchmarks/results/ranking/results.json, the same settings)"), "",
                "| task | weighted tau | Kendall | largest difference |", "|---|---:|---:|---:|"]
        out += [f"| {task} | {cell(a['weighted_tau'])} | {cell(a['kendall'])} | {cell(a['max_abs_difference'])} |"
                for task, a in agreement.items()]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ plots


def plot_scatter(pool: Pool, scores: dict[tuple[str, str, str], float], b1: dict[str, Any], order: list[str],
                 path: Path) -> None:
    """scatter.png: rows metrics, columns tasks; each point a checkpoint, full-task score vs fine-tuned accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t.name for t in pool.targets]
    summary = {(r["metric"], r["task"]): r for r in b1["per_task"]}
    figure, axes = plt.subplots(len(order), len(tasks), figsize=(3.1 * len(tasks), 2.5 * len(order)), squeeze=False)
    for i, metric in enumerate(order):
        for j, task in enumerate(tasks):
            axis = axes[i][j]
            ids = [c for c in sorted(pool.truth[task]) if (task, metric, c) in scores]
            if not ids:
                axis.text(0.5, 0.5, "not applicable", ha="center", va="center", fontsize=8, transform=axis.transAxes)
                axis.set_xticks([])
                axis.set_yticks([])
            else:
                xs = [scores[(task, metric, c)] for c in ids]
                ys = [pool.accuracy(task, c) for c in ids]
                axis.scatter(xs, ys, s=14)
                for x, y, c in zip(xs, ys, ids):
                    axis.annotate(plot_label(c), (x, y), fontsize=5)
                axis.tick_params(labelsize=6)
            row = summary.get((metric, task))
            tau = ""
            if row is not None and row["weighted_tau"] is not None:
                std = row["weighted_tau_std"]
                tau = f": w.tau {row['weighted_tau']:.2f}" + (f" ± {std:.2f}" if std is not None else "")
            lower = "" if higher_is_better(metric) else " (lower is better)"
            axis.set_title(f"{metric}{lower}\n{task}{tau}", fontsize=7)
            if j == 0:
                axis.set_ylabel("fine-tuned acc.", fontsize=7)
    figure.suptitle("Score on the whole task (x) vs fine-tuned test accuracy (y); title: weighted tau across setups",
                    fontsize=9, y=1 - 0.1 / figure.get_figheight(), va="top")
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight()))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def higher_is_better(metric: str) -> bool:
    """The installed metric's direction (True for one that is no longer installed)."""
    registration = installed_metrics().get(metric)
    return registration is None or bool(registration.component.higher_is_better)


def plot_box(rows: list[dict[str, Any]], order: list[str], path: Path) -> None:
    """weighted_tau_box.png: weighted tau across setups per metric, image and text tasks side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(order) + 2), 4.5))
    colours = {"image": "tab:blue", "text": "tab:orange"}
    for k, modality in enumerate(("image", "text")):
        data, positions = [], []
        for i, metric in enumerate(order):
            values = [r["weighted_tau"] for r in rows if r["metric"] == metric and r["modality"] == modality
                      and not math.isnan(r["weighted_tau"])]
            if values:
                data.append(values)
                positions.append(i + (k - 0.5) * 0.38)
        if not data:
            continue
        parts = axes.boxplot(data, positions=positions, widths=0.34, patch_artist=True, showfliers=True,
                             flierprops={"markersize": 2})
        for patch in parts["boxes"]:
            patch.set_facecolor(colours[modality])
            patch.set_alpha(0.6)
        axes.plot([], [], color=colours[modality], linewidth=6, alpha=0.6, label=f"{modality} tasks")
    for i, metric in enumerate(order):
        if not any(r["metric"] == metric and not math.isnan(r["weighted_tau"]) for r in rows):
            axes.text(i, 0.05, "constant\nscores", ha="center", fontsize=7)
    axes.set_xticks(range(len(order)), order, rotation=30, ha="right")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_ylabel("weighted tau vs fine-tuned accuracy")
    axes.set_title("Weighted tau across setups (example subsamples x pool variants), per metric")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run the harness; 0 on success, a one-line error and hubindex's exit code otherwise."""
    args = parse_args(argv)
    return exit_code_of("metric_harness", lambda: run(args))


def run(args: Any) -> int:
    """The harness itself (errors propagate to main)."""
    started, load_start = time.perf_counter(), os.getloadavg()
    mode = "quick" if args.quick else "full"
    out_dir = output_folder(args.out, args.quick, EXPERIMENT)
    work = args.work.resolve()
    pool = prepare_pool(work, args.quick, args.seed)
    stages = {"paper pool (cached)": round(time.perf_counter() - started, 1)}
    tasks = make_tasks(pool.settings, work / "zoo")
    targets = {t.name: t for t in tasks if t.is_target}
    fractions, seeds = SUBSAMPLE_FRACTIONS[mode], SUBSAMPLE_SEEDS[mode]
    derived_tasks = [subsample(targets[t.name], f, s, args.seed) for t in pool.targets for f in fractions
                     for s in range(seeds)]
    derived = {t.name: [d.name for d in derived_tasks if d.name.startswith(f"{t.name}.n")] for t in pool.targets}
    step = time.perf_counter()
    index_dir, not_applicable = harness_index(pool, work, tasks, derived_tasks)
    stages["harness index: task add + score"] = round(time.perf_counter() - step, 1)
    variants = {t.name: pool_variants(list(pool.truth[t.name]), POOL_VARIANTS[mode], args.seed, t.name)
                for t in pool.targets}
    truth_csv = index_dir.parent / "truth-setups.csv"
    truth_rows = write_truth(pool, derived, variants, truth_csv)
    step = time.perf_counter()
    b1, b3 = evaluate(index_dir, truth_csv, 1), evaluate(index_dir, truth_csv, 3)
    stages["hubindex evaluate (B = 1 and 3)"] = round(time.perf_counter() - step, 1)
    modality = {t.name: t.modality for t in pool.targets}
    rows = setup_rows(b1, modality)
    breakdowns: dict[str, Any] = {key: breakdown(rows, key)
                                  for key in ("modality", "fraction", "modality_fraction", "source")}
    breakdowns["paired"] = paired_with_best(rows, breakdowns["modality"])
    scored = sorted({r["metric"] for r in b1["mean"]})
    metrics = {"installed": sorted(installed_metrics()), "scored": scored,
               "unscored": sorted(set(installed_metrics()) - set(scored)), "not_applicable": not_applicable}
    settings = {"mode": mode, "seed": args.seed, "subsample_fractions": list(fractions), "subsample_seeds": seeds,
                "pool_variants": POOL_VARIANTS[mode], "pool_sizes": list(POOL_SIZES),
                "example_sets_per_task": 1 + len(fractions) * seeds, "pools_per_task": 1 + POOL_VARIANTS[mode],
                "setups_per_task": (1 + len(fractions) * seeds) * (1 + POOL_VARIANTS[mode]),
                "truth_rows": truth_rows, "pool_settings": pool.settings_json(), "index": str(index_dir)}
    agreement = truth_agreement(pool, HERE / "results" / "ranking" / "results.json")
    tables = build_tables(pool, settings, b1, b3, nan_to_none(breakdowns), metrics, agreement)
    order = metric_order(b1["mean"])
    plot_scatter(pool, scores_of(index_dir, list(targets)), b1, order, out_dir / "scatter.png")
    plot_box(rows, order, out_dir / "weighted_tau_box.png")
    wall = time.perf_counter() - started
    results = {
        "experiment": EXPERIMENT,
        "command": "benchmarks/metric_harness.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}",
        "settings": settings,
        "metrics": metrics,
        "wall_seconds": round(wall, 1),
        "stage_seconds": stages,
        "paper_pool_stage_seconds": pool.stage_seconds,
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "pool_variants": variants,
        "derived_tasks": {t.name: len(t.labels) for t in derived_tasks},
        "budget_1": {"per_task": b1["per_task"], "mean": b1["mean"], "notes": b1["notes"]},
        "budget_3": {"per_task": b3["per_task"], "mean": b3["mean"], "notes": b3["notes"]},
        "breakdowns": nan_to_none(breakdowns),
        "ground_truth": {task: {c: r.test_accuracy for c, r in results.items()} for task, results in pool.truth.items()},
        "ground_truth_agreement_with_section_2": agreement,
        "weighted_tau_by_setup": {
            metric: {task: [None if math.isnan(r["weighted_tau"]) else round(r["weighted_tau"], 4)
                            for r in rows if r["metric"] == metric and r["task"] == task]
                     for task in targets} for metric in scored},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    (out_dir / "table.md").write_text(tables)
    print(tables)
    log(f"metric-harness: wrote {out_dir} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
