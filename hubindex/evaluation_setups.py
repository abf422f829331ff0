"""How well metrics rank checkpoints across many setups of the same tasks, with the spread.

Results on a transferability metric vary with the experimental setup (Agostinelli et al., "How
stable are transferability metrics evaluations?", ECCV 2022): which examples the metric sees,
which checkpoints are in the pool. A ground-truth file describes setups with two optional
columns beside `task,checkpoint_id,accuracy`:

- `setup`: rows of the same task and setup are one setup, and the checkpoints they list are its
  pool (a pool variant: a subset of the checkpoints, evaluated on the task's own scores);
- `base_task`: the task whose setup this is. A task derived from a base task (its examples
  subsampled, another seed) is scored as a task of its own; its rows name the base task here so
  that its setups are aggregated with the base task's. Without the column a task is its own base.

A setup is thus one (task, setup) pair of the file; its scores are the `task`'s, its pool the
checkpoints that have both a score and an accuracy in that setup (at least 2), measured as
`hubindex.evaluation` measures one task. Score rows of checkpoints with no accuracy in any setup
of their task are left out and counted; tasks of the file without scores are ignored.

Aggregation, per metric: for every base task and over all setups of all tasks ("mean"), the
mean of every measure over the setups where it is defined, and for the headline measures
(`SPREAD_MEASURES`: weighted tau, Recall@1, relative regret) the sample standard deviation
(NaN from a single setup) and the 10th and 90th percentiles (numpy's linear interpolation)
across setups. Every setup weighs the same, so in the overall row a task weighs by its number
of setups: give every task as many. A setup whose scores are constant (`CONSTANT_SCORES`) is
undefined, counted in `n_undefined` and left out of these statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hubindex.errors import UsageError
from hubindex.evaluation import (
    MEASURES,
    ScoreRow,
    TruthRow,
    check_budget,
    json_value,
    measure_pool,
    metric_directions,
    undefined_note,
)

SPREAD_MEASURES: tuple[str, ...] = ("weighted_tau", "recall@1", "relative_regret")
SPREAD_STATS: tuple[str, ...] = ("std", "p10", "p90")
SPREAD_COLUMNS: tuple[str, ...] = tuple(f"{m}_{s}" for m in SPREAD_MEASURES for s in SPREAD_STATS)


def spread(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std", "p10", "p90"} of the values that are not NaN (all NaN when none is)."""
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if not len(finite):
        return {"mean": math.nan, "std": math.nan, "p10": math.nan, "p90": math.nan}
    p10, p90 = np.percentile(finite, [10, 90])
    return {"mean": float(finite.mean()), "std": float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
            "p10": float(p10), "p90": float(p90)}


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """n_setups, n_undefined, the mean of every measure and the spread of SPREAD_MEASURES over setup rows."""
    defined = [row for row in rows if not row["undefined"]]
    out: dict[str, Any] = {"n_setups": len(defined), "n_undefined": len(rows) - len(defined)}
    stats = {name: spread([row[name] for row in defined]) for name in MEASURES}
    out.update({name: stats[name]["mean"] for name in MEASURES})
    out.update({f"{m}_{s}": stats[m][s] for m in SPREAD_MEASURES for s in SPREAD_STATS})
    return out


def _summary(row: Mapping[str, Any], name: str) -> str | None:
    """'mean +- std [p10, p90]' of one measure, for the table."""
    if math.isnan(row[name]):
        return None
    std = row[f"{name}_std"]
    deviation = "" if math.isnan(std) else f" ± {std:.3f}"
    return f"{row[name]:.3f}{deviation} [{row[f'{name}_p10']:.3f}, {row[f'{name}_p90']:.3f}]"


@dataclass(frozen=True)
class SetupReport:
    """Measures per setup, their aggregates per base task and overall, and what was left out."""

    per_setup: list[dict[str, Any]]  # task (base), scored_task, setup, metric, n_checkpoints, ties, *MEASURES, undefined
    per_task: list[dict[str, Any]]  # task (base), metric, aggregate(); by (task, metric)
    mean: list[dict[str, Any]]  # metric, n_tasks, aggregate() over every setup of every task; by metric
    left_out: int  # score rows whose checkpoint has no accuracy in any setup of its task
    budget: int
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """{"per_setup", "per_task", "mean", "notes"} with NaN as None (null)."""
        return {key: [{k: json_value(v) for k, v in row.items()} for row in getattr(self, key)]
                for key in ("per_setup", "per_task", "mean")} | {"notes": list(self.notes)}

    def export_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Every list as one set of rows: `scope` is 'setup', 'task' or 'mean'; `n` the checkpoints or setups."""
        columns = ["scope", "task", "scored_task", "setup", "metric", "n", "ties", "n_undefined", *MEASURES,
                   *SPREAD_COLUMNS, "undefined"]
        spare = [None] * len(SPREAD_COLUMNS)
        rows = [["setup", r["task"], r["scored_task"], r["setup"], r["metric"], r["n_checkpoints"], r["ties"], None,
                 *(json_value(r[m]) for m in MEASURES), *spare, r["undefined"]] for r in self.per_setup]
        for scope, table in (("task", self.per_task), ("mean", self.mean)):
            rows += [[scope, r.get("task"), None, None, r["metric"], r["n_setups"], None, r["n_undefined"],
                      *(json_value(r[m]) for m in (*MEASURES, *SPREAD_COLUMNS)), None] for r in table]
        return columns, rows

    def table(self) -> str:
        """The aggregates as text tables: 'mean ± std [p10, p90]' across setups of SPREAD_MEASURES."""
        from tabulate import tabulate

        def render(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
            cells = [[*(row[k] for k in keys), row["n_setups"], row["n_undefined"],
                      *(_summary(row, m) for m in SPREAD_MEASURES)] for row in rows]
            return tabulate(cells, headers=[*keys, "n_setups", "n_undefined", *SPREAD_MEASURES], missingval="-",
                            disable_numparse=True)

        parts = [f"per task, across setups: mean ± std [10th, 90th percentile] (regret at budget {self.budget})",
                 render(self.per_task, ("task", "metric")), "",
                 "all setups of all tasks", render(self.mean, ("metric", "n_tasks")), "",
                 f"{len(self.per_setup)} rows per setup and every measure's mean: --format json|csv|ndjson"]
        if self.notes:
            parts += ["", *self.notes]
        if self.left_out:
            rows = "row" if self.left_out == 1 else "rows"
            parts += ["", (f"{self.left_out} score {rows} left out: their checkpoints have no ground truth in any "
                           "setup of their task")]
        return "\n".join(parts) + "\n"

    def tie_notes(self) -> list[str]:
        """One line per metric with setups whose ranking ties across the budget."""
        out = []
        for metric in sorted({row["metric"] for row in self.per_setup}):
            rows = [row for row in self.per_setup if row["metric"] == metric]
            tied = [row for row in rows if row["ties"]]
            if tied:
                out.append(f"metric {metric!r}: {len(tied)} of {len(rows)} setups have checkpoints tied on the score "
                           f"at the budget boundary (B = {self.budget}); the lower checkpoint_id goes first, so "
                           "their regret depends on that order")
        return out


def evaluate_setups(scores: Sequence[ScoreRow], truth: Sequence[TruthRow], budget: int = 1,
                    higher_is_better: Mapping[str, bool] | None = None) -> SetupReport:
    """Measure every (task, setup) of the ground truth and aggregate the measures over setups."""
    check_budget(budget)
    if not scores:
        raise UsageError("no score rows to evaluate")
    directions = metric_directions() if higher_is_better is None else dict(higher_is_better)
    setups: dict[tuple[str, str], dict[str, float]] = {}  # (task, setup) -> {checkpoint_id: accuracy}
    base: dict[str, str] = {}
    for row in truth:
        setups.setdefault((row.task, row.setup or ""), {})[row.checkpoint_id] = row.accuracy
        base[row.task] = row.base_task or row.task
    scored: dict[tuple[str, str], dict[str, float]] = {}  # (task, metric) -> {checkpoint_id: score}
    for row in scores:
        if row.task not in base:
            raise UsageError(f"task {row.task!r} has scores but no ground truth; add its accuracies to the "
                             "ground-truth file or drop its score rows")
        pool = scored.setdefault((row.task, row.metric), {})
        if row.checkpoint_id in pool:
            raise UsageError(f"task {row.task!r}, checkpoint {row.checkpoint_id!r}, metric {row.metric!r} has "
                             "two scores; keep one")
        pool[row.checkpoint_id] = row.value
    with_truth = {(task, c) for (task, _), accuracy in setups.items() for c in accuracy}
    left_out = sum(1 for row in scores if (row.task, row.checkpoint_id) not in with_truth)
    per_setup = []
    for (task, metric), values in sorted(scored.items()):
        for (truth_task, setup), accuracy in sorted(setups.items()):
            if truth_task != task:
                continue
            pool = {c: v for c, v in values.items() if c in accuracy}
            row = measure_pool(task, metric, pool, accuracy, int(budget), directions.get(metric, True), setup)
            per_setup.append({"task": base[task], "scored_task": task, "setup": setup,
                              **{k: v for k, v in row.items() if k != "task"}})
    per_task, mean, notes = [], [], []
    for metric in sorted({row["metric"] for row in per_setup}):
        rows = [row for row in per_setup if row["metric"] == metric]
        tasks = sorted({row["task"] for row in rows})
        for task in tasks:
            per_task.append({"task": task, "metric": metric, **aggregate([r for r in rows if r["task"] == task])})
        mean.append({"metric": metric, "n_tasks": len(tasks), **aggregate(rows)})
        undefined = [f"{row['scored_task']}/{row['setup']}" if row["setup"] else row["scored_task"]
                     for row in rows if row["undefined"]]
        if undefined:
            notes.append(undefined_note(metric, undefined, len(rows), "setups"))
    per_task.sort(key=lambda row: (row["task"], row["metric"]))
    return SetupReport(per_setup, per_task, mean, left_out, int(budget), notes)
