"""How well a metric's scores rank checkpoints against their fine-tuned accuracies.

Inputs (CSV files have a header row; extra columns are ignored):

- scores: a `task,checkpoint_id,metric,value` CSV, one row per (task, checkpoint, metric), or
  the index's `task_scores` table (`catalog_scores`: the scores of the installed metrics'
  current versions, and every score of a metric that is not installed);
- ground truth: `task,checkpoint_id,accuracy`, the accuracy after fine-tuning each checkpoint
  on the task. Optional `setup` and `base_task` columns make it a file of setups, measured and
  aggregated by `hubindex.evaluation_setups` (see there).

Accuracies are read per file: if every one lies in [0, 1] they are fractions; if some exceed 1
and all lie in [0, 100] they are percentages and are divided by 100; a negative, non-finite or
non-numeric value, or one above 100, is an error naming its line. A percent file whose values
are all <= 1 (every checkpoint below 1 %) is therefore read as fractions, and a file mixing both
scales is read as percent: write one scale per file.

For each task and metric the pool is the checkpoints that have both a score and a ground truth.
Score rows of checkpoints without a ground truth are left out and counted
(`EvaluationReport.left_out`); a scored task with no ground truth at all, or a pool of fewer
than 2 checkpoints, is an error. The oracle is the best accuracy in that pool.

Direction: checkpoints are ranked by "goodness", the value itself for a metric with
`higher_is_better = True` and minus the value for one with `higher_is_better = False` (such as
task-relatedness). The direction of each metric comes from the installed metric plugins unless
a mapping is given; a metric name that is not installed is taken as higher-is-better. Ties in
goodness are broken by checkpoint_id ascending (`ranking_measures` itself: by input order), so
every ranking is deterministic. Top-k and the budget take the whole pool when k exceeds it.

Measures, per task and metric (keys of `MEASURES`):

- `recall@1`, `recall@3`: 1.0 if a best checkpoint (any of them on ties) is among the top k by
  score, else 0.0; its mean over tasks is the fraction of tasks (Li et al.).
- `rel@1`, `rel@3`: the best accuracy among the top k over the best accuracy in the pool
  (1.0 when both are 0).
- `pearson`, `kendall` (tau-b), `weighted_tau` (scipy's weightedtau: hyperbolic weigher,
  rank=True): correlations of goodness with accuracy, so a metric that ranks well is near +1
  whatever its direction. They are NaN when the scores or the accuracies of the pool are all
  equal (the correlation is undefined).
- `regret` at budget B: oracle - s with s the best accuracy among the top B by score;
  `relative_regret` = (oracle - s) / (1 - min(oracle, s)) (Renggli et al.), 0.0 when
  oracle = s = 1 where the form is 0 / 0.

Constant scores: when a metric gives every checkpoint of a task the same score, up to float
noise (range <= SCORE_NOISE * max(1, |mean|); H-score's C - 1 on features that separate the
classes perfectly is the known case), the ranking is the tie-break order and says nothing about
the metric. Every measure of that (task, metric) is then undefined (NaN, null in JSON, marked
'undefined (constant scores)' in the table), never a recall of 0 or 1 that looks meaningful.

Ties at the budget: `ties` counts the checkpoints whose score equals (up to the same noise) the
B-th ranked one's when that group straddles the budget, some inside the top B and some not; the
regret then depends on the tie-break by checkpoint_id. 0 when the top B is unambiguous.

Means over tasks are per metric and skip NaN: the mean of a measure is over the tasks where it
is defined (the per-task rows show which; a null there is a task that did not contribute), and
NaN only when it is defined for none. `n_tasks` counts the tasks where the metric's scores are
not constant, `n_undefined` those where they are; each such metric gets a line in `notes`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hubindex.csv_input import read_csv_rows
from hubindex.errors import UsageError

MEASURES: tuple[str, ...] = (
    "recall@1", "recall@3", "rel@1", "rel@3", "pearson", "kendall", "weighted_tau", "regret", "relative_regret",
)
SCORE_COLUMNS = ("task", "checkpoint_id", "metric", "value")
TRUTH_COLUMNS = ("task", "checkpoint_id", "accuracy")
# Optional ground-truth columns that describe setups (hubindex.evaluation_setups).
SETUP_COLUMNS = ("setup", "base_task")
TOP_K = (1, 3)
# A pool needs this many checkpoints for a ranking (and a correlation) to mean anything.
MIN_POOL = 2
# Scores closer than this, relative to max(1, |mean|), are equal: float noise, not a ranking.
SCORE_NOISE = 1e-9
CONSTANT_SCORES = "constant scores"


@dataclass(frozen=True)
class ScoreRow:
    """One metric value of one checkpoint on one task."""

    task: str
    checkpoint_id: str
    metric: str
    value: float


@dataclass(frozen=True)
class TruthRow:
    """The fine-tuned accuracy (a fraction) of one checkpoint on one task, in one setup."""

    task: str  # the scored task whose scores rank this pool
    checkpoint_id: str
    accuracy: float
    setup: str | None = None  # None: the file has no `setup` column
    base_task: str | None = None  # None: the file has no `base_task` column (the base is `task`)


# ------------------------------------------------------------------------------------ one ranking


def _is_budget(budget: Any) -> bool:
    return isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget >= 1


def ranking_order(goodness: np.ndarray) -> np.ndarray:
    """Indices from the best to the worst goodness; ties keep their input order."""
    return np.lexsort((np.arange(len(goodness)), -goodness))


def _noise(values: np.ndarray) -> float:
    return SCORE_NOISE * max(1.0, abs(float(values.mean())))


def scores_are_constant(scores: Sequence[float]) -> bool:
    """Whether the scores are all equal up to float noise (range <= SCORE_NOISE * max(1, |mean|))."""
    values = np.asarray(scores, dtype=np.float64)
    return len(values) == 0 or float(np.ptp(values)) <= _noise(values)


def boundary_ties(scores: Sequence[float], budget: int, higher_is_better: bool = True) -> int:
    """How many checkpoints tie (up to float noise) with the budget-th ranked one across the budget; else 0."""
    values = np.asarray(scores, dtype=np.float64)
    goodness = values if higher_is_better else -values
    if budget >= len(goodness):
        return 0
    ranked = goodness[ranking_order(goodness)]
    tied = np.abs(ranked - ranked[budget - 1]) <= _noise(values)
    return int(tied.sum()) if tied[budget:].any() else 0


def ranking_measures(accuracies: Sequence[float], scores: Sequence[float], budget: int = 1,
                     higher_is_better: bool = True) -> dict[str, float]:
    """Every measure of `MEASURES` for one pool: accuracies (fractions) and scores, aligned.

    Ties in score are broken by input order; constant scores (up to float noise) leave every
    measure undefined (NaN). Raises ValueError on a pool of fewer than 2, a non-finite score, an
    accuracy outside [0, 1] or a budget below 1.
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    if acc.ndim != 1 or acc.shape != values.shape:
        raise ValueError(f"accuracies and scores must be 1-D and aligned, got shapes {acc.shape} and {values.shape}")
    if len(acc) < MIN_POOL:
        raise ValueError(f"a pool needs at least {MIN_POOL} checkpoints, got {len(acc)}")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite numbers")
    if not (np.isfinite(acc).all() and acc.min() >= 0 and acc.max() <= 1):
        raise ValueError("accuracies must be fractions in [0, 1]")
    if not _is_budget(budget):
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    if scores_are_constant(values):
        return {name: math.nan for name in MEASURES}
    goodness = values if higher_is_better else -values
    ranked = acc[ranking_order(goodness)]
    oracle = float(acc.max())

    def best_of_top(k: int) -> float:
        return float(ranked[:k].max())

    out: dict[str, float] = {}
    for k in TOP_K:
        out[f"recall@{k}"] = 1.0 if best_of_top(k) == oracle else 0.0
    for k in TOP_K:
        best = best_of_top(k)
        out[f"rel@{k}"] = 1.0 if best == oracle else best / oracle
    # Constant input leaves every correlation undefined (scipy would warn and return NaN).
    if np.ptp(goodness) == 0 or np.ptp(acc) == 0:
        out["pearson"] = out["kendall"] = out["weighted_tau"] = math.nan
    else:
        out["pearson"] = float(stats.pearsonr(goodness, acc).statistic)
        out["kendall"] = float(stats.kendalltau(goodness, acc).statistic)
        out["weighted_tau"] = float(stats.weightedtau(acc, goodness).statistic)
    selected = best_of_top(int(budget))
    regret = oracle - selected
    out["regret"] = regret
    # regret > 0 means min(oracle, selected) = selected < 1, so the denominator is positive.
    out["relative_regret"] = 0.0 if regret == 0 else regret / (1.0 - min(oracle, selected))
    return {name: out[name] for name in MEASURES}


# ------------------------------------------------------------------------------------ CSV files


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise UsageError(f"{path}: line {line}: {column} {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{path}: line {line}: {column} {cell!r} is not a finite number")
    return value


def load_scores(path: Path) -> list[ScoreRow]:
    """Score rows of a `task,checkpoint_id,metric,value` CSV; duplicates are an error."""
    path = Path(path)
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for line, cells in read_csv_rows(path, SCORE_COLUMNS):
        key = (cells["task"], cells["checkpoint_id"], cells["metric"])
        if key in seen:
            raise UsageError(f"{path}: line {line} repeats task {key[0]!r}, checkpoint {key[1]!r}, metric "
                             f"{key[2]!r} of line {seen[key]}; keep one value per (task, checkpoint_id, metric)")
        seen[key] = line
        out.append(ScoreRow(*key, _number(cells["value"], path, line, "value")))
    return out


def _header(path: Path) -> list[str]:
    """The column names of a CSV file's first line; [] when it cannot be read (read_csv_rows says why)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def load_truth_rows(path: Path) -> list[TruthRow]:
    """The rows of a `task,checkpoint_id,accuracy[,setup][,base_task]` CSV, accuracies as fractions.

    Fractions if every accuracy is in [0, 1]; percent (divided by 100) if some exceed 1 and all
    are in [0, 100]. A percent file whose values are all <= 1 is misread as fractions. One
    accuracy per (task, setup, checkpoint_id), and one base task per task.
    """
    path = Path(path)
    optional = [name for name in SETUP_COLUMNS if name in _header(path)]
    seen: dict[tuple[str, str | None, str], int] = {}
    bases: dict[str, tuple[str, int]] = {}
    out: list[TruthRow] = []
    for line, cells in read_csv_rows(path, (*TRUTH_COLUMNS, *optional)):
        setup, base = cells.get("setup"), cells.get("base_task")
        key = (cells["task"], setup, cells["checkpoint_id"])
        if key in seen:
            where = f", setup {setup!r}" if setup is not None else ""
            raise UsageError(f"{path}: line {line} repeats task {key[0]!r}{where}, checkpoint {key[2]!r} of line "
                             f"{seen[key]}; keep one accuracy per (task, {'setup, ' if where else ''}checkpoint_id)")
        seen[key] = line
        if base is not None:
            first = bases.setdefault(cells["task"], (base, line))
            if first[0] != base:
                raise UsageError(f"{path}: line {line} gives task {key[0]!r} the base task {base!r}, line {first[1]} "
                                 f"gave it {first[0]!r}; a task belongs to one base task")
        value = _number(cells["accuracy"], path, line, "accuracy")
        if not 0 <= value <= 100:
            raise UsageError(f"{path}: line {line}: accuracy {cells['accuracy']!r} is outside [0, 1] "
                             "(fractions) and [0, 100] (percent)")
        out.append(TruthRow(cells["task"], cells["checkpoint_id"], value, setup, base))
    if max(row.accuracy for row in out) > 1:
        out = [replace(row, accuracy=row.accuracy / 100.0) for row in out]
    return out


def has_setups(rows: Sequence[TruthRow]) -> bool:
    """Whether a ground truth describes setups (it has a `setup` or `base_task` column)."""
    return any(row.setup is not None or row.base_task is not None for row in rows)


def truth_by_task(rows: Sequence[TruthRow]) -> dict[tuple[str, str], float]:
    """{(task, checkpoint_id): accuracy} of a ground truth without setups."""
    return {(row.task, row.checkpoint_id): row.accuracy for row in rows}


def load_truth(path: Path) -> dict[tuple[str, str], float]:
    """{(task, checkpoint_id): accuracy as a fraction} of a `task,checkpoint_id,accuracy` CSV.

    Fractions if every accuracy is in [0, 1]; percent (divided by 100) if some exceed 1 and all
    are in [0, 100]. A percent file whose values are all <= 1 is misread as fractions. A file with
    setup columns is an error here: `hubindex.evaluation_setups` reads those.
    """
    rows = load_truth_rows(path)
    if has_setups(rows):
        raise UsageError(f"{path}: has a setup or base_task column; evaluate it by setups (hubindex.evaluation_setups)")
    return truth_by_task(rows)


# ------------------------------------------------------------------------------------ the catalog


def catalog_scores(catalog: Any) -> tuple[list[ScoreRow], dict[str, bool], list[str]]:
    """(score rows, {metric: higher_is_better}, notes) of the catalog's `task_scores`.

    Scores of an installed metric count only at its current version (the others are left out,
    with a note saying how many and how to recompute them); a metric that is not installed is
    taken as stored, in its stored direction, with a note.
    """
    from hubindex.plugins import metrics

    installed = {name: reg.component for name, reg in metrics().items()}
    found = catalog.conn.execute(
        "SELECT task, checkpoint_id, metric, value, metric_version, higher_is_better FROM task_scores "
        "ORDER BY task, metric, checkpoint_id").fetchall()
    rows, directions, notes = [], {}, []
    stale: dict[str, int] = {}
    for task, checkpoint_id, metric, value, version, higher in found:
        component = installed.get(metric)
        if component is not None and version != component.version:
            stale[metric] = stale.get(metric, 0) + 1
            continue
        directions.setdefault(metric, bool(component.higher_is_better if component is not None else higher))
        rows.append(ScoreRow(task, checkpoint_id, metric, float(value)))
    for metric, count in sorted(stale.items()):
        notes.append(f"metric {metric!r}: {count} score(s) of another version than the installed "
                     f"{installed[metric].version!r} left out; `hubindex score --task T --metric {metric}` "
                     "recomputes them")
    for metric in sorted(set(directions) - set(installed)):
        notes.append(f"metric {metric!r} is not installed: its stored scores are evaluated as they are")
    return rows, directions, notes


def select_scores(scores: Sequence[ScoreRow], truth: Sequence[TruthRow], tasks: Sequence[str] = (),
                  metric_names: Sequence[str] = (), whole_table: bool = False) -> tuple[list[ScoreRow], list[str]]:
    """(the score rows to evaluate, notes): those of `metric_names` and `tasks` (all when empty).

    A task name also selects the tasks whose base task it is. With `whole_table` (the scores are
    a whole `task_scores` table) scored tasks the ground truth does not name are left out with a
    note rather than an error; a ground truth that names no scored task is an error either way.
    """
    base = {row.task: row.base_task or row.task for row in truth}
    scored_metrics = sorted({row.metric for row in scores})
    for name in metric_names:
        if name not in scored_metrics:
            raise UsageError(f"--metric {name!r} has no scores; scored metrics: {', '.join(scored_metrics) or 'none'}")
    scored_tasks = {row.task for row in scores}
    for name in tasks:
        if not any(t == name or base.get(t) == name for t in scored_tasks):
            raise UsageError(f"--task {name!r} has no scores (nor does any task whose base task it is); scored "
                             f"tasks: {_names(scored_tasks)}")
    kept = [row for row in scores if (not metric_names or row.metric in metric_names)
            and (not tasks or row.task in tasks or base.get(row.task) in tasks)]
    notes = []
    if whole_table:
        unmatched = sorted({row.task for row in kept} - set(base))
        kept = [row for row in kept if row.task in base]
        if not kept:
            raise UsageError(f"the ground truth names no scored task (it names {_names(base)}; the scored tasks "
                             f"are {_names(scored_tasks)}); its `task` column must name tasks of task_scores")
        if unmatched:
            notes.append(f"{len(unmatched)} scored task(s) without ground truth left out: {_names(unmatched)}")
    return kept, notes


def _names(names: Any, shown: int = 8) -> str:
    ordered = sorted(names)
    text = ", ".join(ordered[:shown]) + (f" and {len(ordered) - shown} more" if len(ordered) > shown else "")
    return text or "none"


# ------------------------------------------------------------------------------------ evaluation


def metric_directions() -> dict[str, bool]:
    """{metric name: higher_is_better} of the installed metric plugins."""
    from hubindex.plugins import metrics

    return {name: bool(reg.component.higher_is_better) for name, reg in metrics().items()}


def _nan_mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def json_value(value: Any) -> Any:
    """NaN as None (null in JSON); anything else as it is."""
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass(frozen=True)
class EvaluationReport:
    """Measures per (task, metric), their means per metric, and the score rows left out."""

    per_task: list[dict[str, Any]]  # task, metric, n_checkpoints, ties, *MEASURES, undefined; by (task, metric)
    mean: list[dict[str, Any]]  # metric, n_tasks, n_undefined, *MEASURES (NaN-skipping means); by metric
    left_out: int  # score rows whose checkpoint has no ground truth for the task
    budget: int
    notes: list[str] = field(default_factory=list)  # metrics left out of some means, and why

    def as_json(self) -> dict[str, Any]:
        """{"per_task": [...], "mean": [...], "notes": [...]} with NaN as None (null)."""
        return {
            "per_task": [{k: json_value(v) for k, v in row.items()} for row in self.per_task],
            "mean": [{k: json_value(v) for k, v in row.items()} for row in self.mean],
            "notes": list(self.notes),
        }

    def export_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Both lists as one set of rows for CSV or JSON lines: `scope` is 'task' or 'mean', `n` its count."""
        columns = ["scope", "task", "metric", "n", "ties", "n_undefined", *MEASURES, "undefined"]
        rows = [["task", r["task"], r["metric"], r["n_checkpoints"], r["ties"], None,
                 *(json_value(r[m]) for m in MEASURES), r["undefined"]] for r in self.per_task]
        rows += [["mean", None, r["metric"], r["n_tasks"], None, r["n_undefined"],
                  *(json_value(r[m]) for m in MEASURES), None] for r in self.mean]
        return columns, rows

    def table(self) -> str:
        """Both lists as aligned text tables; an undefined value shows as '-'."""
        from tabulate import tabulate

        def render(rows: list[dict[str, Any]]) -> str:
            headers = list(rows[0])
            cells = [[None if isinstance(v, float) and math.isnan(v) else v for v in row.values()] for row in rows]
            return tabulate(cells, headers=headers, floatfmt=".4f", missingval="-")

        per_task = [{**{k: v for k, v in row.items() if k != "undefined"},
                     "note": f"undefined ({row['undefined']})" if row["undefined"] else ""} for row in self.per_task]
        parts = [f"per task (regret at budget {self.budget})", render(per_task), "",
                 "mean over tasks", render(self.mean)]
        if self.notes:
            parts += ["", *self.notes]
        if self.left_out:
            rows = "row" if self.left_out == 1 else "rows"
            parts += ["", f"{self.left_out} score {rows} left out: their checkpoints have no ground truth"]
        return "\n".join(parts) + "\n"

    def tie_notes(self) -> list[str]:
        """One line per (task, metric) whose ranking ties across the budget."""
        return [f"task {row['task']!r}, metric {row['metric']!r}: {row['ties']} checkpoints tie on the score at the "
                f"budget boundary (B = {self.budget}); the lower checkpoint_id goes first, so the regret depends on "
                "that order" for row in self.per_task if row["ties"]]


def measure_pool(task: str, metric: str, pool: Mapping[str, float], accuracy: Mapping[str, float], budget: int,
                 higher_is_better: bool, setup: str | None = None) -> dict[str, Any]:
    """One per-task row: `pool` {checkpoint_id: score} ranked against `accuracy` {checkpoint_id: fraction}."""
    if len(pool) < MIN_POOL:
        where = f", setup {setup!r}" if setup else ""
        raise UsageError(f"task {task!r}{where}, metric {metric!r}: {len(pool)} scored checkpoint(s) with a ground "
                         f"truth; at least {MIN_POOL} are needed to rank")
    ids = sorted(pool)  # ties in score go to the smaller checkpoint_id
    values = [pool[c] for c in ids]
    constant = scores_are_constant(values)
    measures = ranking_measures([accuracy[c] for c in ids], values, budget, higher_is_better)
    return {"task": task, "metric": metric, "n_checkpoints": len(ids),
            "ties": 0 if constant else boundary_ties(values, budget, higher_is_better), **measures,
            "undefined": CONSTANT_SCORES if constant else None}


def undefined_note(metric: str, names: Sequence[str], total: int, what: str = "task(s)") -> str:
    """The note on a metric whose scores are constant on some tasks (or setups)."""
    shown = ", ".join(repr(t) for t in names[:5]) + (" ..." if len(names) > 5 else "")
    return (f"metric {metric!r}: constant scores on {len(names)} of {total} {what} ({shown}); its measures are "
            "undefined there and left out of its mean")


def evaluate(scores: Sequence[ScoreRow], truth: Mapping[tuple[str, str], float], budget: int = 1,
             higher_is_better: Mapping[str, bool] | None = None) -> EvaluationReport:
    """Rank each task's checkpoints by each metric and measure the ranking against the truth."""
    check_budget(budget)
    if not scores:
        raise UsageError("no score rows to evaluate")
    directions = metric_directions() if higher_is_better is None else dict(higher_is_better)
    truth_tasks = {task for task, _ in truth}
    pools: dict[tuple[str, str], dict[str, float]] = {}
    left_out = 0
    for row in scores:
        if row.task not in truth_tasks:
            raise UsageError(f"task {row.task!r} has scores but no ground truth; add its accuracies to the "
                             "ground-truth file or drop its score rows")
        if (row.task, row.checkpoint_id) not in truth:
            left_out += 1
            continue
        pool = pools.setdefault((row.task, row.metric), {})
        if row.checkpoint_id in pool:
            raise UsageError(f"task {row.task!r}, checkpoint {row.checkpoint_id!r}, metric {row.metric!r} has "
                             "two scores; keep one")
        pool[row.checkpoint_id] = row.value
    per_task = [measure_pool(task, metric, pool, {c: truth[(task, c)] for c in pool}, int(budget),
                             directions.get(metric, True))
                for (task, metric), pool in sorted(pools.items())]
    mean, notes = [], []
    for metric in sorted({row["metric"] for row in per_task}):
        rows = [row for row in per_task if row["metric"] == metric]
        undefined = [row["task"] for row in rows if row["undefined"]]
        mean.append({"metric": metric, "n_tasks": len(rows) - len(undefined), "n_undefined": len(undefined),
                     **{name: _nan_mean([row[name] for row in rows]) for name in MEASURES}})
        if undefined:
            notes.append(undefined_note(metric, undefined, len(rows)))
    return EvaluationReport(per_task, mean, left_out, int(budget), notes)


def check_budget(budget: Any) -> None:
    """A UsageError unless the budget is an integer >= 1."""
    if not _is_budget(budget):
        raise UsageError(f"budget must be an integer >= 1 (the number of checkpoints to fine-tune), got {budget!r}")
