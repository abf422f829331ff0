"""Ranking checkpoints (Li et al., "Ranking Neural Checkpoints", CVPR 2021, NeuCRaB) - one command:

    .venv/bin/python benchmarks/paper_ranking.py [--quick] [--out DIR] [--work DIR] [--seed N]

For 9 image and 9 text checkpoints (real ones from the zoo and children derived from them) and 4
target tasks (2 image, 2 text; benchmarks/paper_pool.py describes pools, tasks and splits), every
installed metric scores every checkpoint of the task's modality (`hubindex score`), and each
checkpoint is fine-tuned on the task (benchmarks/finetune.py: learning-rate sweep, best
validation accuracy, test accuracy reported) for the ground truth. `hubindex evaluate` then
measures each metric's ranking against it - Recall@1, Recall@3, Rel@1, Rel@3, Pearson, Kendall's
tau-b and weighted tau - per task and averaged over tasks (all four, the image ones, the text
ones), the layout of Li et al.'s Tables 1-3. `seconds` is the metric's own mean time per
(checkpoint, task) with the features already computed (`task_scores.seconds`); the forward pass
that computes the features, shared by every metric, and the fine-tuning that gives the ground
truth are timed beside it.

Metrics that need what a checkpoint lacks are not applicable and `hubindex score` skips them: LEEP
and NCE need a classification head, which no text checkpoint has here (plain BertModel
encoders), so they are averaged over the image tasks only (the `tasks` column says over how
many). task-relatedness gets each task's reference task (`--reference-task`); lower is better,
and `hubindex evaluate` ranks it so.

Writes `<out>/ranking/`: results.json (every number, the settings and wall seconds), table.md
(the tables of benchmarks/RESULTS.md section 2), weighted_tau.png (per metric and task) and
scatter.png (linear probe and LogME against fine-tuned accuracy). Default --out:
benchmarks/results (full) or benchmarks/results/quick (--quick).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules paper_pool, finetune
from paper_common import experiment_arguments, exit_code_of, output_folder  # noqa: E402
from paper_pool import Pool, hubindex, log, plot_label, prepare_pool, short_name  # noqa: E402


EXPERIMENT = "ranking"
MEASURES = ("recall@1", "recall@3", "rel@1", "rel@3", "pearson", "kendall", "weighted_tau")
HEADERS = ("Recall@1", "Recall@3", "Rel@1", "Rel@3", "Pearson", "Kendall", "w. tau")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    return experiment_arguments(__doc__.splitlines()[0], "the reduced version (a few minutes)",
                                "seed of the task draws, splits and fine-tuning").parse_args(argv)


# ------------------------------------------------------------------------------------ evaluation


def filtered_csv(source: Path, target: Path, tasks: set[str]) -> Path:
    """The rows of a CSV whose `task` is one of `tasks`."""
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["task"] in tasks]
        fields = reader.fieldnames or []
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


def evaluate_scope(pool: Pool, scope: str, tasks: set[str]) -> dict[str, Any]:
    """`hubindex evaluate --json` on the scores and ground truth of some tasks."""
    scores = filtered_csv(pool.scores_csv, pool.run_dir / f"scores-{scope}.csv", tasks)
    truth = filtered_csv(pool.truth_csv, pool.run_dir / f"truth-{scope}.csv", tasks)
    return json.loads(hubindex(pool.index_dir, "evaluate", "--scores", str(scores), "--truth", str(truth), "--json",
                               capture=True))


def sql_rows(pool: Pool, query: str) -> list[dict[str, str]]:
    """`hubindex sql QUERY` as CSV rows."""
    return list(csv.DictReader(io.StringIO(hubindex(pool.index_dir, "sql", query, "--format", "csv",
                                                    "--max-rows", "1000000", capture=True))))


def metric_seconds(pool: Pool, tasks: set[str]) -> dict[str, float]:
    """{metric: mean seconds per (checkpoint, task)}: the mean over tasks of each task's mean."""
    per_task: dict[str, dict[str, list[float]]] = {}
    for row in sql_rows(pool, "SELECT task, metric, seconds FROM task_scores"):
        if row["task"] in tasks:
            per_task.setdefault(row["metric"], {}).setdefault(row["task"], []).append(float(row["seconds"]))
    return {metric: mean([mean(values) for values in by_task.values()]) for metric, by_task in per_task.items()}


def embedding_seconds(pool: Pool, tasks: set[str]) -> float:
    """Mean seconds of the forward pass over a task's examples, per (checkpoint, task)."""
    rows = sql_rows(pool, "SELECT task, seconds FROM task_features WHERE kind = 'features'")
    return mean([float(r["seconds"]) for r in rows if r["task"] in tasks])


def finetune_seconds(pool: Pool, tasks: set[str]) -> float:
    """Mean seconds of a whole learning-rate sweep, per (checkpoint, task)."""
    return mean([r.seconds for task in tasks for r in pool.truth[task].values()])


def mean(values: list[float]) -> float:
    """The mean of the finite values (NaN when there are none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


# ------------------------------------------------------------------------------------ tables


def cell(value: Any, digits: int = 3) -> str:
    """A table cell: the value rounded, '-' when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def measures_table(evaluation: dict[str, Any], seconds: dict[str, float]) -> str:
    """One row per metric: the means over tasks of each measure, tasks counted, seconds."""
    lines = [f"| metric | {' | '.join(HEADERS)} | seconds | tasks |", "|---" + "|---:" * (len(HEADERS) + 2) + "|"]
    for row in sorted(evaluation["mean"], key=lambda r: -(r["weighted_tau"] if r["weighted_tau"] is not None else -9)):
        values = " | ".join(cell(row[m]) for m in MEASURES)
        lines.append(f"| {row['metric']} | {values} | {cell(seconds.get(row['metric']), 4)} | {row['n_tasks']} |")
    return "\n".join(lines)


def per_task_table(evaluation: dict[str, Any], measure: str, tasks: list[str]) -> str:
    """One row per metric, one column per task: one measure."""
    values = {(r["metric"], r["task"]): r[measure] for r in evaluation["per_task"]}
    metrics = sorted({r["metric"] for r in evaluation["per_task"]})
    lines = [f"| metric | {' | '.join(tasks)} |", "|---" + "|---:" * len(tasks) + "|"]
    for metric in metrics:
        lines.append(f"| {metric} | {' | '.join(cell(values.get((metric, t))) for t in tasks)} |")
    return "\n".join(lines)


def truth_table(pool: Pool) -> str:
    """Fine-tuned test accuracy (and the chosen learning rate) of every checkpoint on every task."""
    lines = []
    for modality in ("image", "text"):
        tasks = [t.name for t in pool.targets if t.modality == modality]
        lines += ["", f"| {modality} checkpoint | {' | '.join(tasks)} |", "|---" + "|---:" * len(tasks) + "|"]
        for checkpoint_id in sorted({c for t in tasks for c in pool.truth[t]}, key=short_name):
            cells = []
            for task in tasks:
                result = pool.truth[task].get(checkpoint_id)
                cells.append("-" if result is None else f"{result.test_accuracy:.3f} ({result.chosen_learning_rate:g})")
            lines.append(f"| {short_name(checkpoint_id)} | {' | '.join(cells)} |")
    return "\n".join(lines[1:])


def sizes_line(pool: Pool) -> str:
    """task / validation / test sizes of every target."""
    parts = []
    for task in pool.targets:
        assert task.validation is not None and task.test is not None
        parts.append(f"{task.name} {len(task.labels)}/{len(task.validation[1])}/{len(task.test[1])}")
    return "; ".join(parts)


def build_tables(pool: Pool, evaluations: dict[str, dict[str, Any]], seconds: dict[str, dict[str, float]],
                 timing: dict[str, float]) -> str:
    """Every table of table.md, with the settings line."""
    settings = pool.settings
    ft = settings.finetune
    tasks = [t.name for t in pool.targets]
    out = [
        f"Mode `{settings.mode}`, seed {settings.seed}. Pools: {len(pool.pools[tasks[0]])} image / "
        f"{len(pool.pools[tasks[-1]])} text checkpoints. Examples (task / validation / test): {sizes_line(pool)}. "
        f"Fine-tuning (all weights but BERT's token embeddings, AdamW, batch {ft.batch_size}, head learning rate "
        f"x{ft.head_lr_factor:g}): images at {ft.image_size} px, {ft.image_epochs} epochs, learning rates "
        f"{', '.join(f'{r:g}' for r in ft.image_learning_rates)}; texts (first {settings.lead_words} words) up to "
        f"{ft.max_length} tokens, {ft.text_epochs} epochs, learning rates "
        f"{', '.join(f'{r:g}' for r in ft.text_learning_rates)}.",
        "",
        "**Table 2a - mean over the four tasks** (sorted by weighted tau; `seconds`: the metric's own time per "
        "(checkpoint, task), features given)",
        "",
        measures_table(evaluations["all"], seconds["all"]),
        "",
        f"Shared by every metric: the forward pass over a task's examples, {timing['embedding_all']:.2f} s per "
        f"(checkpoint, task). The ground truth: {timing['finetune_all']:.1f} s per (checkpoint, task) for the "
        "learning-rate sweep.",
        "",
        f"**Table 2b - image tasks** ({', '.join(t.name for t in pool.targets if t.modality == 'image')})",
        "",
        measures_table(evaluations["image"], seconds["image"]),
        "",
        f"**Table 2c - text tasks** ({', '.join(t.name for t in pool.targets if t.modality == 'text')})",
        "",
        measures_table(evaluations["text"], seconds["text"]),
        "",
        "**Table 2d - weighted tau per task**",
        "",
        per_task_table(evaluations["all"], "weighted_tau", tasks),
        "",
        "**Table 2e - Rel@1 per task**",
        "",
        per_task_table(evaluations["all"], "rel@1", tasks),
        "",
        "**Table 2f - ground truth: fine-tuned test accuracy (chosen learning rate)**; `*` marks the "
        "children derived by benchmarks/paper_pool.py",
        "",
        truth_table(pool),
    ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ plots


def plot_weighted_tau(evaluation: dict[str, Any], tasks: list[str], path: Path) -> None:
    """weighted_tau.png: grouped bars, one group per metric, one bar per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = sorted({r["metric"] for r in evaluation["per_task"]})
    values = {(r["metric"], r["task"]): r["weighted_tau"] for r in evaluation["per_task"]}
    width = 0.8 / len(tasks)
    figure, axes = plt.subplots(figsize=(10, 4))
    for i, task in enumerate(tasks):
        heights = [values.get((m, task)) for m in metrics]
        axes.bar([j + i * width for j in range(len(metrics))], [h if h is not None else 0.0 for h in heights],
                 width, label=task)
    axes.set_xticks([j + width * (len(tasks) - 1) / 2 for j in range(len(metrics))], metrics, rotation=30, ha="right")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_ylabel("weighted tau vs fine-tuned accuracy")
    axes.set_title("How well each metric ranks the pool, per task (missing bar: not applicable)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_scatter(pool: Pool, path: Path, metrics: tuple[str, ...] = ("linear", "logme")) -> None:
    """scatter.png: one panel per (metric, task), fine-tuned accuracy against the score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores: dict[tuple[str, str, str], float] = {}
    with pool.scores_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            scores[(row["task"], row["metric"], row["checkpoint_id"])] = float(row["value"])
    tasks = [t.name for t in pool.targets]
    figure, axes = plt.subplots(len(metrics), len(tasks), figsize=(4 * len(tasks), 3.4 * len(metrics)), squeeze=False)
    for i, metric in enumerate(metrics):
        for j, task in enumerate(tasks):
            axis = axes[i][j]
            ids = [c for c in pool.truth[task] if (task, metric, c) in scores]
            xs = [scores[(task, metric, c)] for c in ids]
            ys = [pool.accuracy(task, c) for c in ids]
            axis.scatter(xs, ys, s=18)
            for x, y, c in zip(xs, ys, ids):
                axis.annotate(plot_label(c), (x, y), fontsize=6)
            axis.set_title(f"{task}", fontsize=9)
            axis.set_xlabel(metric, fontsize=8)
            axis.set_ylabel("fine-tuned test accuracy", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; 0 on success, a one-line error and hubindex's exit code otherwise."""
    args = parse_args(argv)
    return exit_code_of("paper_ranking", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """The experiment itself (errors propagate to main)."""
    started = time.perf_counter()
    out_dir = output_folder(args.out, args.quick, EXPERIMENT)
    pool = prepare_pool(args.work, args.quick, args.seed)
    scopes = {"all": {t.name for t in pool.targets}}
    for modality in ("image", "text"):
        scopes[modality] = {t.name for t in pool.targets if t.modality == modality}
    evaluations = {scope: evaluate_scope(pool, scope, tasks) for scope, tasks in scopes.items()}
    seconds = {scope: metric_seconds(pool, tasks) for scope, tasks in scopes.items()}
    timing = {"embedding_all": embedding_seconds(pool, scopes["all"]),
              "finetune_all": finetune_seconds(pool, scopes["all"])}
    tables = build_tables(pool, evaluations, seconds, timing)
    task_names = [t.name for t in pool.targets]
    plot_weighted_tau(evaluations["all"], task_names, out_dir / "weighted_tau.png")
    plot_scatter(pool, out_dir / "scatter.png")
    wall = time.perf_counter() - started
    results = {
        "experiment": EXPERIMENT,
        "command": "benchmarks/paper_ranking.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}",
        "settings": pool.settings_json(),
        "wall_seconds": round(wall, 1),
        "stage_seconds": pool.stage_seconds,
        "evaluation": evaluations,
        "metric_seconds": seconds,
        "embedding_seconds_per_checkpoint_task": timing["embedding_all"],
        "finetune_seconds_per_checkpoint_task": timing["finetune_all"],
        "pools": pool.pools,
        "ground_truth": {task: {c: r.as_json() for c, r in results.items()} for task, results in pool.truth.items()},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "table.md").write_text(tables)
    print(tables)
    log(f"ranking: wrote {out_dir} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
