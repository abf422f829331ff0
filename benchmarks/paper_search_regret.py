"""Search under a budget (Renggli et al., "Which Model to Transfer?", CVPR 2022) - one command:

    .venv/bin/python benchmarks/paper_search_regret.py [--quick] [--out DIR] [--work DIR] [--seed N]

On the pools, tasks and fine-tuned ground truth of the ranking benchmark (benchmarks/paper_pool.py;
what paper_ranking.py built under the same --work is reused), every strategy answers
`hubindex search --strategy S --task T --budget B --json` for B = 1, 2, 3: agnostic, aware
(linear probe, kNN), hybrid (linear probe, kNN) and random (the mean over `--random-seeds`
seeds, 20 full / 10 quick). Each answer's regret is the best fine-tuned accuracy in the pool
minus the best among the B checkpoints returned, and its relative regret (regret / (1 - min(oracle,
s))); both come from `hubindex.evaluation.ranking_measures`, given the answer as a ranking.

Writes `<out>/search-regret/`: results.json (every answer, every number, the settings and wall
seconds), table.md (the tables of benchmarks/RESULTS.md section 3) and relative_regret.png
(per task, one panel per budget). Default --out: benchmarks/results (full) or
benchmarks/results/quick (--quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules paper_pool, finetune
from paper_common import experiment_arguments, exit_code_of, output_folder  # noqa: E402
from paper_pool import Pool, hubindex, log, prepare_pool, short_name  # noqa: E402

from hubindex.errors import HubindexError  # noqa: E402
from hubindex.evaluation import ranking_measures  # noqa: E402

EXPERIMENT = "search-regret"
BUDGETS = (1, 2, 3)


@dataclass(frozen=True)
class Strategy:
    """A search strategy as `hubindex search` runs it: its name and, when task-aware, its metric."""

    strategy: str
    metric: str | None = None

    @property
    def label(self) -> str:
        """How tables and plots name the strategy."""
        return f"{self.strategy} ({self.metric})" if self.metric else self.strategy


STRATEGIES = (Strategy("agnostic"), Strategy("aware", "linear"), Strategy("aware", "knn"),
              Strategy("hybrid", "linear"), Strategy("hybrid", "knn"), Strategy("random"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = experiment_arguments(__doc__.splitlines()[0], "the reduced version (a few minutes)",
                                  "seed of the task draws, splits and fine-tuning")
    parser.add_argument("--random-seeds", type=int, help="seeds of the random strategy [default: 20, quick 10]")
    args = parser.parse_args(argv)
    if args.random_seeds is not None and args.random_seeds < 1:
        parser.error("--random-seeds must be at least 1")
    return args


def search(pool: Pool, strategy: Strategy, task: str, budget: int, seed: int = 0) -> list[str]:
    """The checkpoint ids `hubindex search` returns, best first."""
    args = ["search", "--strategy", strategy.strategy, "--task", task, "--budget", str(budget), "--json"]
    if strategy.metric:
        args += ["--metric", strategy.metric]
    if strategy.strategy == "random":
        args += ["--seed", str(seed)]
    return json.loads(hubindex(pool.index_dir, *args, capture=True))["selected"]


def regret(pool: Pool, task: str, selected: list[str], budget: int) -> tuple[float, float]:
    """(regret, relative regret) of a selection: the picks ranked first, in their order, the rest after."""
    ids = sorted(pool.truth[task])
    unknown = set(selected) - set(ids)
    if unknown:
        raise HubindexError(f"search returned checkpoints outside the pool of task {task!r}: {sorted(unknown)}")
    goodness = [len(selected) - selected.index(c) if c in selected else 0 for c in ids]
    measures = ranking_measures([pool.accuracy(task, c) for c in ids], goodness, budget=budget)
    return measures["regret"], measures["relative_regret"]


def run_searches(pool: Pool, random_seeds: int) -> list[dict[str, Any]]:
    """Every (task, strategy, budget, seed) answer with its regret."""
    rows = []
    for task in (t.name for t in pool.targets):
        for strategy in STRATEGIES:
            seeds = range(random_seeds) if strategy.strategy == "random" else (0,)
            for budget in BUDGETS:
                for seed in seeds:
                    selected = search(pool, strategy, task, budget, seed)
                    absolute, relative = regret(pool, task, selected, budget)
                    rows.append({"task": task, "strategy": strategy.label, "budget": budget, "seed": seed,
                                 "selected": selected, "regret": absolute, "relative_regret": relative})
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, strategy, budget): the mean (and spread, over random seeds) of regret and relative regret."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["strategy"], row["budget"]), []).append(row)
    out = []
    for (task, strategy, budget), members in groups.items():
        relative = [m["relative_regret"] for m in members]
        out.append({"task": task, "strategy": strategy, "budget": budget, "n": len(members),
                    "regret": statistics.fmean(m["regret"] for m in members),
                    "relative_regret": statistics.fmean(relative),
                    "relative_regret_std": statistics.pstdev(relative)})
    return out


# ------------------------------------------------------------------------------------ tables and plot


def mean_table(summary: list[dict[str, Any]], tasks: list[str]) -> str:
    """Strategy x budget: mean over tasks of regret (accuracy points) and relative regret."""
    lines = ["| strategy | " + " | ".join(f"regret B={b}" for b in BUDGETS) + " | "
             + " | ".join(f"rel. regret B={b}" for b in BUDGETS) + " |", "|---" + "|---:" * 2 * len(BUDGETS) + "|"]
    for strategy in (s.label for s in STRATEGIES):
        cells = []
        for key in ("regret", "relative_regret"):
            for budget in BUDGETS:
                values = [r[key] for r in summary if r["strategy"] == strategy and r["budget"] == budget
                          and r["task"] in tasks]
                scale = 100.0 if key == "regret" else 1.0
                cells.append(f"{scale * statistics.fmean(values):.{2 if key == 'regret' else 3}f}")
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return "\n".join(lines)


def per_task_table(summary: list[dict[str, Any]], tasks: list[str], budget: int) -> str:
    """Strategy x task: relative regret at one budget."""
    values = {(r["strategy"], r["task"]): r["relative_regret"] for r in summary if r["budget"] == budget}
    lines = [f"| strategy | {' | '.join(tasks)} |", "|---" + "|---:" * len(tasks) + "|"]
    for strategy in (s.label for s in STRATEGIES):
        lines.append(f"| {strategy} | {' | '.join(f'{values[(strategy, t)]:.3f}' for t in tasks)} |")
    return "\n".join(lines)


def picks_table(rows: list[dict[str, Any]], pool: Pool, tasks: list[str]) -> str:
    """What each deterministic strategy picks at B = 1, with its fine-tuned accuracy, and the oracle."""
    lines = [f"| strategy | {' | '.join(tasks)} |", "|---" + "|---" * len(tasks) + "|"]
    for strategy in (s.label for s in STRATEGIES if s.strategy != "random"):
        cells = []
        for task in tasks:
            (row,) = [r for r in rows if r["strategy"] == strategy and r["task"] == task and r["budget"] == 1]
            pick = row["selected"][0]
            cells.append(f"{short_name(pick)} ({pool.accuracy(task, pick):.3f})")
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    oracle = []
    for task in tasks:
        top = max(pool.accuracy(task, c) for c in pool.truth[task])
        best = sorted(short_name(c) for c in pool.truth[task] if pool.accuracy(task, c) == top)
        oracle.append(f"{', '.join(best)} ({top:.3f})")
    lines.append(f"| *oracle* (all tied) | {' | '.join(oracle)} |")
    return "\n".join(lines)


def build_tables(pool: Pool, rows: list[dict[str, Any]], summary: list[dict[str, Any]], random_seeds: int) -> str:
    """Every table of table.md, with the settings line."""
    tasks = [t.name for t in pool.targets]
    image = [t.name for t in pool.targets if t.modality == "image"]
    text = [t.name for t in pool.targets if t.modality == "text"]
    out = [
        f"Mode `{pool.settings.mode}`, seed {pool.settings.seed}; random: mean over {random_seeds} seeds. "
        "Regret in accuracy points (oracle minus the best of the B picks); relative regret = regret / "
        "(1 - min(oracle, s)).",
        "",
        "**Table 3a - mean over the four tasks**",
        "",
        mean_table(summary, tasks),
        "",
        "**Table 3b - image tasks**",
        "",
        mean_table(summary, image),
        "",
        "**Table 3c - text tasks**",
        "",
        mean_table(summary, text),
    ]
    for budget in BUDGETS:
        out += ["", f"**Table 3{chr(ord('d') + budget - 1)} - relative regret per task, B = {budget}**", "",
                per_task_table(summary, tasks, budget)]
    out += ["", "**Table 3g - the pick at B = 1 (its fine-tuned test accuracy)**; `*` marks derived children", "",
            picks_table(rows, pool, tasks)]
    return "\n".join(out) + "\n"


def plot_relative_regret(summary: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    """relative_regret.png: one panel per budget, grouped bars per task, one bar per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s.label for s in STRATEGIES]
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(1, len(BUDGETS), figsize=(5 * len(BUDGETS), 4), sharey=True)
    by_key = {(r["strategy"], r["task"], r["budget"]): r for r in summary}
    for axis, budget in zip(axes, BUDGETS):
        for i, label in enumerate(labels):
            rows = [by_key[(label, task, budget)] for task in tasks]
            errors = [r["relative_regret_std"] for r in rows] if label == "random" else None
            axis.bar([j + i * width for j in range(len(tasks))], [r["relative_regret"] for r in rows], width,
                     yerr=errors, capsize=2, label=label)
        axis.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(tasks))], tasks, rotation=20,
                        ha="right", fontsize=8)
        axis.set_title(f"B = {budget}")
    axes[0].set_ylabel("relative regret (lower is better)")
    axes[-1].legend(fontsize=7)
    figure.suptitle("Search under a budget: relative regret per task (random: mean +- std over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Run the experiment; 0 on success, a one-line error and hubindex's exit code otherwise."""
    args = parse_args(argv)
    return exit_code_of("paper_search_regret", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """The experiment itself (errors propagate to main)."""
    started = time.perf_counter()
    random_seeds = args.random_seeds or (10 if args.quick else 20)
    out_dir = output_folder(args.out, args.quick, EXPERIMENT)
    pool = prepare_pool(args.work, args.quick, args.seed)
    searched = time.perf_counter()
    rows = run_searches(pool, random_seeds)
    search_seconds = time.perf_counter() - searched
    summary = summarise(rows)
    tables = build_tables(pool, rows, summary, random_seeds)
    plot_relative_regret(summary, [t.name for t in pool.targets], out_dir / "relative_regret.png")
    wall = time.perf_counter() - started
    results = {
        "experiment": EXPERIMENT,
        "command": "benchmarks/paper_search_regret.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}",
        "settings": {**pool.settings_json(), "random_seeds": random_seeds, "budgets": list(BUDGETS),
                     "strategies": [s.label for s in STRATEGIES]},
        "wall_seconds": round(wall, 1),
        "stage_seconds": {**pool.stage_seconds, "searches": round(search_seconds, 1)},
        "searches": len(rows),
        "summary": summary,
        "answers": rows,
        "oracle": {task: max(pool.accuracy(task, c) for c in pool.truth[task]) for task in pool.truth},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "table.md").write_text(tables)
    print(tables)
    log(f"search-regret: {len(rows)} searches in {search_seconds:.0f} s; wrote {out_dir} in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
