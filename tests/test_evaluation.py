"""Evaluation of metric rankings against fine-tuned accuracies, on pools computed by hand."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubindex.errors import UsageError
from hubindex.evaluation import (
    MEASURES,
    EvaluationReport,
    ScoreRow,
    evaluate,
    load_scores,
    load_truth,
    ranking_measures,
)

# Two tasks, two metrics. "logme" is higher-is-better, "relate" lower-is-better (injected, so the
# tests do not depend on the installed plugins).
DIRECTIONS = {"logme": True, "relate": False}

TRUTH_CSV = """task,checkpoint_id,accuracy,notes
cifar,a,0.95,x
cifar,b,0.90,
cifar,c,0.80,
cifar,d,0.70,
pets,a,0.6,
pets,b,0.8,
pets,c,0.7,
flowers,a,0.5,
"""

SCORES_CSV = """task,checkpoint_id,metric,value,seconds
cifar,a,logme,1,0.1
cifar,b,logme,3,0.1
cifar,c,logme,2,0.1
cifar,d,logme,0,0.1
cifar,a,relate,0.1,0.1
cifar,b,relate,0.2,0.1
cifar,c,relate,0.3,0.1
cifar,d,relate,0.4,0.1
pets,a,logme,5,0.1
pets,b,logme,5,0.1
pets,c,logme,1,0.1
pets,x,logme,9,0.1
pets,a,relate,0.5,0.1
pets,b,relate,0.5,0.1
pets,c,relate,0.5,0.1
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def weighted_tau_by_pairs(x: list[float], y: list[float]) -> float:
    """Vigna's weighted tau for tie-free data, rank=True, hyperbolic weigher, pair by pair."""
    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
    n = len(x_arr)

    def one(order: np.ndarray) -> float:
        rank = np.empty(n)
        rank[order] = np.arange(n)
        w = 1.0 / (rank + 1.0)
        num = den = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                num += (w[i] + w[j]) * np.sign(x_arr[i] - x_arr[j]) * np.sign(y_arr[i] - y_arr[j])
                den += w[i] + w[j]
        return num / den

    return (one(np.argsort(-x_arr)) + one(np.argsort(-y_arr))) / 2


@pytest.fixture
def report(tmp_path: Path) -> EvaluationReport:
    scores = load_scores(write(tmp_path, "S.csv", SCORES_CSV))
    truth = load_truth(write(tmp_path, "T.csv", TRUTH_CSV))
    return evaluate(scores, truth, budget=2, higher_is_better=DIRECTIONS)


def row(report: EvaluationReport, task: str, metric: str) -> dict:
    (found,) = [r for r in report.per_task if r["task"] == task and r["metric"] == metric]
    return found


def test_higher_is_better_metric_by_hand(report: EvaluationReport) -> None:
    r = row(report, "cifar", "logme")
    assert r["n_checkpoints"] == 4
    # Ranking by score: b (3), c (2), a (1), d (0); accuracies 0.90, 0.80, 0.95, 0.70.
    assert r["recall@1"] == 0.0  # top-scored b is only second best
    assert r["recall@3"] == 1.0  # a, the best, is third
    assert r["rel@1"] == pytest.approx(0.90 / 0.95)
    assert r["rel@3"] == pytest.approx(1.0)
    # Budget 2: b and c, s = 0.90; regret = 0.95 - 0.90; relative = 0.05 / (1 - 0.90) = 0.5.
    assert r["regret"] == pytest.approx(0.05)
    assert r["relative_regret"] == pytest.approx(0.5)
    # Pearson: score deviations (-0.5, 1.5, 0.5, -1.5), accuracy deviations (0.1125, 0.0625,
    # -0.0375, -0.1375): 0.225 / sqrt(5 * 0.036875) = 0.52400.
    assert r["pearson"] == pytest.approx(0.225 / math.sqrt(5 * 0.036875))
    assert r["pearson"] == pytest.approx(np.corrcoef([1, 3, 2, 0], [0.95, 0.9, 0.8, 0.7])[0, 1])
    # Kendall: pairs (a,b) and (a,c) discordant, the other 4 concordant: (4 - 2) / 6.
    assert r["kendall"] == pytest.approx(1 / 3)
    # Weighted tau: by accuracy rank, weights 1, 1/2, 1/3, 1/4 give 0.5833 / 6.25 = 0.0933; by score
    # rank 1.9167 / 6.25 = 0.3067; the mean is 0.2.
    assert r["weighted_tau"] == pytest.approx(0.2)
    assert r["weighted_tau"] == pytest.approx(weighted_tau_by_pairs([0.95, 0.9, 0.8, 0.7], [1, 3, 2, 0]))


def test_lower_is_better_metric_ranks_ascending(report: EvaluationReport) -> None:
    r = row(report, "cifar", "relate")
    # Lowest value first: a, b, c, d, exactly the accuracy order.
    assert (r["recall@1"], r["recall@3"], r["rel@1"], r["rel@3"]) == (1.0, 1.0, 1.0, 1.0)
    assert (r["regret"], r["relative_regret"]) == (0.0, 0.0)
    assert r["kendall"] == pytest.approx(1.0)
    assert r["weighted_tau"] == pytest.approx(1.0)
    # Goodness = -value, deviations (0.15, 0.05, -0.05, -0.15): 0.0425 / sqrt(0.05 * 0.036875).
    assert r["pearson"] == pytest.approx(0.0425 / math.sqrt(0.05 * 0.036875))
    # The same values read as higher-is-better rank the worst first.
    flipped = ranking_measures([0.95, 0.9, 0.8, 0.7], [0.1, 0.2, 0.3, 0.4], budget=2, higher_is_better=True)
    assert flipped["recall@1"] == 0.0 and flipped["kendall"] == pytest.approx(-1.0)
    assert flipped["regret"] == pytest.approx(0.95 - 0.8)


def test_ties_in_score_go_to_the_smaller_checkpoint_id(report: EvaluationReport) -> None:
    r = row(report, "pets", "logme")
    # x has no ground truth and is left out; a and b tie at 5, a first: ranking a, b, c with
    # accuracies 0.6, 0.8, 0.7.
    assert r["n_checkpoints"] == 3
    assert report.left_out == 1
    assert r["recall@1"] == 0.0 and r["recall@3"] == 1.0
    assert r["rel@1"] == pytest.approx(0.6 / 0.8)
    assert r["regret"] == 0.0  # budget 2 takes a and b
    # Score deviations (4/3, 4/3, -8/3) against accuracy deviations (-0.1, 0.1, 0): r = 0.
    assert r["pearson"] == pytest.approx(0.0, abs=1e-12)
    # (a,b) tied in score, (a,c) discordant, (b,c) concordant: tau-b numerator 0.
    assert r["kendall"] == pytest.approx(0.0, abs=1e-12)
    # All scores equal: the order is only the tie-break, so every measure is undefined.
    const = row(report, "pets", "relate")
    assert const["undefined"] == "constant scores"
    assert all(math.isnan(const[k]) for k in MEASURES)


def test_means_skip_undefined_correlations(report: EvaluationReport) -> None:
    means = {m["metric"]: m for m in report.mean}
    assert [m["metric"] for m in report.mean] == ["logme", "relate"]
    logme, relate = means["logme"], means["relate"]
    assert logme["n_tasks"] == 2 and logme["n_undefined"] == 0
    assert (relate["n_tasks"], relate["n_undefined"]) == (1, 1)  # pets/relate scores are constant
    assert logme["recall@1"] == 0.0 and logme["recall@3"] == 1.0
    assert logme["rel@1"] == pytest.approx((0.90 / 0.95 + 0.75) / 2)
    assert logme["pearson"] == pytest.approx(0.52400 / 2, abs=1e-5)
    assert relate["recall@1"] == 1.0
    # pets/relate is undefined: only cifar contributes.
    assert relate["pearson"] == pytest.approx(row(report, "cifar", "relate")["pearson"])
    assert relate["kendall"] == pytest.approx(1.0)


def test_as_json_shape_and_table(report: EvaluationReport) -> None:
    data = report.as_json()
    assert list(data) == ["per_task", "mean", "notes"]
    assert len(data["per_task"]) == 4
    for r in data["per_task"]:
        assert list(r) == ["task", "metric", "n_checkpoints", "ties", *MEASURES, "undefined"]
    for m in data["mean"]:
        assert list(m) == ["metric", "n_tasks", "n_undefined", *MEASURES]
    assert MEASURES == ("recall@1", "recall@3", "rel@1", "rel@3", "pearson", "kendall", "weighted_tau",
                        "regret", "relative_regret")
    text = json.dumps(data, allow_nan=False)  # NaN became null
    assert json.loads(text)["per_task"][3]["pearson"] is None  # pets/relate
    table = report.table()
    assert "weighted_tau" in table and "relative_regret" in table and "n_tasks" in table
    assert "1 score row left out" in table
    pets_relate = [line for line in table.splitlines() if line.startswith("pets") and "relate" in line]
    assert pets_relate and " - " in pets_relate[0] and "undefined (constant scores)" in pets_relate[0]


def test_percent_truth_reads_as_fractions(tmp_path: Path) -> None:
    fractions = load_truth(write(tmp_path, "f.csv", "task,checkpoint_id,accuracy\nt,a,0.5\nt,b,1\nt,c,0\n"))
    assert fractions == {("t", "a"): 0.5, ("t", "b"): 1.0, ("t", "c"): 0.0}
    # One value above 1 makes the whole file percent, 0.5 included (0.5 %).
    percent = load_truth(write(tmp_path, "p.csv", "task,checkpoint_id,accuracy\nt,a,95\nt,b,90.5\nt,c,0.5\n"))
    assert percent == pytest.approx({("t", "a"): 0.95, ("t", "b"): 0.905, ("t", "c"): 0.005})
    scores = [ScoreRow("t", c, "m", v) for c, v in (("a", 1.0), ("b", 2.0), ("c", 0.0))]
    result = evaluate(scores, percent, higher_is_better={}).per_task[0]  # unknown metric: higher is better
    assert result["rel@1"] == pytest.approx(0.905 / 0.95)


def test_relative_regret_edges() -> None:
    # Oracle 1 and selected 1: 0 / 0 is defined as 0.
    perfect = ranking_measures([1.0, 1.0, 0.5], [0.0, 2.0, 1.0])
    assert perfect["recall@1"] == 1.0 and perfect["relative_regret"] == 0.0
    # Oracle 1, selected 0.9: 0.1 / (1 - 0.9) = 1.
    worst = ranking_measures([1.0, 0.9], [0.0, 1.0])
    assert worst["regret"] == pytest.approx(0.1) and worst["relative_regret"] == pytest.approx(1.0)
    # A budget beyond the pool takes the whole pool.
    assert ranking_measures([1.0, 0.9], [0.0, 1.0], budget=5)["regret"] == 0.0
    with pytest.raises(ValueError, match="fractions"):
        ranking_measures([95, 90], [1, 2])
    with pytest.raises(ValueError, match="budget"):
        ranking_measures([0.9, 0.8], [1, 2], budget=0)


def test_no_warnings_on_constant_input() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ranking_measures([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert math.isnan(out["pearson"]) and out["rel@1"] == 1.0 and out["recall@1"] == 1.0


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("S.csv", "task,checkpoint_id,metric\nt,a,m\n", ["no column 'value'"]),
        ("S.csv", "task,checkpoint_id,metric,value\nt,a,m,high\n", ["line 2", "'high' is not a number"]),
        ("S.csv", "task,checkpoint_id,metric,value\nt,a,m,nan\n", ["line 2", "not a finite number"]),
        ("S.csv", "task,checkpoint_id,metric,value\nt,a,m,1\nt,b,m,2\nt,a,m,3\n",
         ["line 4 repeats", "'a'", "line 2"]),
        ("S.csv", "task,checkpoint_id,metric,value\nt,,m,1\n", ["line 2", "empty 'checkpoint_id'"]),
        ("S.csv", "task,checkpoint_id,metric,value\n", ["a header and no rows"]),
        ("S.csv", "", ["empty"]),
        ("T.csv", "task,checkpoint_id,accuracy\nt,a,0.9\nt,a,0.8\n", ["line 3 repeats", "line 2"]),
        ("T.csv", "task,checkpoint_id,accuracy\nt,a,0.9\nt,b,101\n", ["line 3", "'101'", "[0, 100]"]),
        ("T.csv", "task,checkpoint_id,accuracy\nt,a,-0.1\n", ["line 2", "'-0.1'"]),
        ("T.csv", "task,checkpoint_id,accuracy\nt,a,ninety\n", ["line 2", "not a number"]),
        ("T.csv", "task,checkpoint_id,accuracy\nt,a,NaN\n", ["line 2", "not a finite number"]),
        ("T.csv", "task,checkpoint,accuracy\nt,a,0.9\n", ["no column 'checkpoint_id'"]),
    ],
)
def test_csv_errors(tmp_path: Path, name: str, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, name, text)
    load = load_scores if name == "S.csv" else load_truth
    with pytest.raises(UsageError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_scores(tmp_path / "absent.csv")
    with pytest.raises(UsageError, match="no such file"):
        load_truth(tmp_path / "absent.csv")


def test_evaluate_errors() -> None:
    truth = {("t", "a"): 0.9, ("t", "b"): 0.8}
    scores = [ScoreRow("t", "a", "m", 1.0), ScoreRow("t", "b", "m", 2.0)]
    with pytest.raises(UsageError, match="task 'u' has scores but no ground truth"):
        evaluate([*scores, ScoreRow("u", "a", "m", 1.0)], truth, higher_is_better={})
    with pytest.raises(UsageError, match=r"task 't', metric 'k': 1 scored checkpoint\(s\)"):
        evaluate([*scores, ScoreRow("t", "a", "k", 1.0), ScoreRow("t", "z", "k", 1.0)], truth, higher_is_better={})
    with pytest.raises(UsageError, match="two scores"):
        evaluate([*scores, ScoreRow("t", "a", "m", 3.0)], truth, higher_is_better={})
    for budget in (0, -1, True, 1.5):
        with pytest.raises(UsageError, match="budget must be an integer >= 1"):
            evaluate(scores, truth, budget=budget, higher_is_better={})


def test_evaluate_command_prints_json_and_one_line_errors(tmp_path: Path, hubindex: Any) -> None:
    import json

    from conftest import assert_one_line_error

    scores = tmp_path / "s.csv"
    truth = tmp_path / "t.csv"
    scores.write_text("task,checkpoint_id,metric,value\nt,a,m,0.9\nt,b,m,0.5\nt,c,m,0.1\n")
    truth.write_text("task,checkpoint_id,accuracy\nt,a,70\nt,b,90\nt,c,60\n")
    result = hubindex("evaluate", "--scores", str(scores), "--truth", str(truth), "--budget", "2", "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert set(found) == {"per_task", "mean", "notes"}
    (row,) = found["per_task"]
    # The top-scored a (0.70) is not the best b (0.90); b is second, inside the budget of 2.
    assert (row["recall@1"], row["recall@3"], row["rel@1"], row["regret"]) == (0.0, 1.0, pytest.approx(0.7 / 0.9), 0.0)
    table = hubindex("evaluate", "--scores", str(scores), "--truth", str(truth))
    assert "relative_regret" in table.stdout and "mean over tasks" in table.stdout
    assert_one_line_error(hubindex("evaluate", "--scores", str(tmp_path / "none.csv"), "--truth", str(truth)),
                          "none.csv")


# ------------------------------------------------------------------ constant scores and ties


def test_constant_scores_are_undefined_not_a_recall_of_zero(tmp_path: Path, hubindex: Any) -> None:
    """H-score's C - 1 on separable features: equal up to float noise for every checkpoint."""
    truth = {("t", "a"): 0.6, ("t", "b"): 0.9, ("t", "c"): 0.7, ("u", "a"): 0.5, ("u", "b"): 0.8, ("u", "c"): 0.6}
    noise = [0.9999999999999998, 1.0, 1.0000000000000002]
    scores = [ScoreRow("t", c, "hscore", v) for c, v in zip("abc", noise)]
    scores += [ScoreRow("u", c, "hscore", v) for c, v in zip("abc", (1.0, 3.0, 2.0))]
    found = evaluate(scores, truth, higher_is_better={})
    (t_row,) = [r for r in found.per_task if r["task"] == "t"]
    assert t_row["undefined"] == "constant scores"
    assert all(math.isnan(t_row[m]) for m in MEASURES)  # not recall@1 = 0 from the tie-break
    (mean,) = found.mean
    assert (mean["n_tasks"], mean["n_undefined"]) == (1, 1)
    assert mean["recall@1"] == 1.0  # u alone: b, the best, has the highest score
    data = json.loads(json.dumps(found.as_json(), allow_nan=False))
    assert data["per_task"][0]["recall@1"] is None and data["per_task"][0]["undefined"] == "constant scores"
    assert len(data["notes"]) == 1 and "'hscore'" in data["notes"][0] and "left out of its mean" in data["notes"][0]
    assert "undefined (constant scores)" in found.table()
    # Through the command: null in JSON, 'undefined (constant scores)' in the table.
    s_csv = write(tmp_path, "s.csv", "task,checkpoint_id,metric,value\n" + "".join(
        f"{r.task},{r.checkpoint_id},{r.metric},{r.value!r}\n" for r in scores))
    t_csv = write(tmp_path, "t.csv", "task,checkpoint_id,accuracy\n" + "".join(
        f"{task},{cid},{acc}\n" for (task, cid), acc in truth.items()))
    result = hubindex("evaluate", "--scores", str(s_csv), "--truth", str(t_csv), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["per_task"][0]["recall@1"] is None
    table = hubindex("evaluate", "--scores", str(s_csv), "--truth", str(t_csv)).stdout
    (t_line,) = [line for line in table.splitlines() if line.startswith("t ")]
    assert "undefined (constant scores)" in t_line


def test_ties_across_the_budget_are_counted_and_noted(tmp_path: Path, hubindex: Any) -> None:
    # b and c tie at 2 for the second place of a budget of 2: c is left out by its id alone.
    s_csv = write(tmp_path, "s.csv", "task,checkpoint_id,metric,value\nt,a,m,3\nt,b,m,2\nt,c,m,2\nt,d,m,1\n")
    t_csv = write(tmp_path, "t.csv", "task,checkpoint_id,accuracy\nt,a,0.5\nt,b,0.6\nt,c,0.9\nt,d,0.4\n")
    found = evaluate(load_scores(s_csv), load_truth(t_csv), budget=2, higher_is_better={})
    assert found.per_task[0]["ties"] == 2
    assert evaluate(load_scores(s_csv), load_truth(t_csv), budget=3, higher_is_better={}).per_task[0]["ties"] == 0
    result = hubindex("evaluate", "--scores", str(s_csv), "--truth", str(t_csv), "--budget", "2")
    assert result.exit_code == 0, result.stderr
    assert "2 checkpoints tie on the score at the budget boundary" in result.stderr
    assert "ties" in result.stdout.splitlines()[1]
    exported = hubindex("evaluate", "--scores", str(s_csv), "--truth", str(t_csv), "--budget", "2",
                        "--format", "ndjson")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["scope"], r["ties"]) for r in rows] == [("task", 2), ("mean", None)]
    csv_out = hubindex("evaluate", "--scores", str(s_csv), "--truth", str(t_csv), "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("scope,task,metric,n,ties")


# ------------------------------------------------------------------ the index's task_scores


def store_scores(index_dir: Path, rows: list[tuple[str, str, str, str, float, bool]]) -> None:
    """task_scores rows (task, checkpoint_id, metric, metric_version, value, higher_is_better) in a real catalog."""
    from hubindex.catalog import utcnow
    from hubindex.index import Index

    with Index(index_dir).open_catalog() as catalog:
        for task, cid, metric, version, value, higher in rows:
            catalog.conn.execute("INSERT INTO task_scores VALUES (?, ?, ?, ?, ?, ?, 0.0, ?, '1', 'h', NULL, 'x')",
                                 [task, cid, metric, version, value, higher, utcnow()])


def installed_version(metric: str) -> str:
    from hubindex.plugins import metrics

    return str(metrics()[metric].component.version)


@pytest.fixture
def scored_index(index_dir: Path) -> Path:
    """cifar and pets of SCORES_CSV in task_scores (logme and task-relatedness at their installed versions),
    plus a stale logme score, an uninstalled metric and a task with no ground truth."""
    logme, related = installed_version("logme"), installed_version("task-relatedness")
    rows = []
    for line in SCORES_CSV.splitlines()[1:]:
        task, cid, metric, value, _ = line.split(",")
        name, version, higher = ("logme", logme, True) if metric == "logme" else ("task-relatedness", related, False)
        rows.append((task, cid, name, version, float(value), higher))
    rows.append(("cifar", "e", "logme", f"{logme}-old", 99.0, True))  # another version: left out
    rows += [("cifar", c, "mystery", "7", v, False) for c, v in zip("abcd", (1.0, 2.0, 3.0, 4.0))]
    rows += [("flowers-x", c, "logme", logme, v, True) for c, v in zip("ab", (1.0, 2.0))]  # no ground truth
    store_scores(index_dir, rows)
    return index_dir


def evaluated(hubindex: Any, *args: str) -> dict[str, Any]:
    result = hubindex("evaluate", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_evaluate_reads_the_index_task_scores(scored_index: Path, hubindex: Any, tmp_path: Path) -> None:
    truth = write(tmp_path, "T.csv", TRUTH_CSV)
    result = hubindex("evaluate", "--truth", str(truth), "--budget", "2", "--format", "json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    # The same numbers as the CSV of the same scores, metric renamed to its installed name.
    scores_csv = write(tmp_path, "S.csv", SCORES_CSV.replace(",relate,", ",task-relatedness,"))
    from_csv = evaluated(hubindex, "--scores", str(scores_csv), "--truth", str(truth), "--budget", "2")
    assert [r for r in found["per_task"] if r["metric"] != "mystery"] == from_csv["per_task"]
    # task-relatedness is lower-is-better (its plugin says so): cifar ranks perfectly.
    (related,) = [r for r in found["per_task"] if (r["task"], r["metric"]) == ("cifar", "task-relatedness")]
    assert related["kendall"] == pytest.approx(1.0)
    # The uninstalled metric keeps its stored direction (lower is better): 1, 2, 3, 4 is the accuracy order.
    (mystery,) = [r for r in found["per_task"] if r["metric"] == "mystery"]
    assert mystery["recall@1"] == 1.0 and mystery["kendall"] == pytest.approx(1.0)
    assert "another version than the installed" in result.stderr and "1 score(s)" in result.stderr
    assert "metric 'mystery' is not installed" in result.stderr
    assert "1 scored task(s) without ground truth left out: flowers-x" in result.stderr
    # pets/x has no ground truth: left out and counted, as from a CSV.
    table = hubindex("evaluate", "--truth", str(truth)).stdout
    assert "1 score row left out" in table


def test_evaluate_filters_metrics_and_tasks(scored_index: Path, hubindex: Any, tmp_path: Path) -> None:
    truth = str(write(tmp_path, "T.csv", TRUTH_CSV))
    found = evaluated(hubindex, "--truth", truth, "--metric", "logme", "--metric", "mystery", "--task", "cifar")
    assert sorted((r["task"], r["metric"]) for r in found["per_task"]) == [("cifar", "logme"), ("cifar", "mystery")]
    assert [m["metric"] for m in found["mean"]] == ["logme", "mystery"]
    # The filters work on a scores CSV too.
    scores = str(write(tmp_path, "S.csv", SCORES_CSV))
    found = evaluated(hubindex, "--scores", scores, "--truth", truth, "--task", "pets", "--metric", "logme")
    assert [(r["task"], r["metric"]) for r in found["per_task"]] == [("pets", "logme")]


def test_evaluate_index_errors_are_one_line(scored_index: Path, hubindex: Any, tmp_path: Path) -> None:
    from conftest import assert_one_line_error

    truth = str(write(tmp_path, "T.csv", TRUTH_CSV))
    other = str(write(tmp_path, "other.csv", "task,checkpoint_id,accuracy\nimagenet,a,0.5\nimagenet,b,0.6\n"))
    for args, fragments in [
        (("--truth", other), ["the ground truth names no scored task", "imagenet", "cifar, flowers-x, pets"]),
        (("--truth", truth, "--metric", "nope"), ["--metric 'nope' has no scores", "logme, mystery"]),
        (("--truth", truth, "--task", "nope"), ["--task 'nope' has no scores", "cifar"]),
        (("--truth", str(tmp_path / "absent.csv")), ["absent.csv", "no such file"]),
    ]:
        result = hubindex("evaluate", *args)
        assert result.exit_code == 2, result.stderr
        assert_one_line_error(result, *fragments)


def test_evaluate_an_index_without_scores(index: Any, hubindex: Any, tmp_path: Path) -> None:
    from conftest import assert_one_line_error

    index.open_catalog().close()  # an empty catalog
    result = hubindex("evaluate", "--truth", str(write(tmp_path, "T.csv", TRUTH_CSV)))
    assert result.exit_code == 2
    assert_one_line_error(result, "holds no scores", "hubindex score")


# ------------------------------------------------------------------ setups

# Base task t: its own scores (pools "all" and "abc") and a derived task t-half (base t) with other
# scores on the whole pool; task u (one setup). Metric m, higher is better.
SETUP_TRUTH = """task,checkpoint_id,accuracy,setup,base_task
t,a,0.9,all,t
t,b,0.8,all,t
t,c,0.7,all,t
t,d,0.6,all,t
t,a,0.9,bcd,t
t,b,0.8,bcd,t
t,c,0.7,bcd,t
t,d,0.6,bcd,t-dup
"""


def setup_files(tmp_path: Path) -> tuple[Path, Path]:
    truth = SETUP_TRUTH.replace("t,a,0.9,bcd,t\n", "t,d,0.6,bcd,t\n").replace("t,d,0.6,bcd,t-dup\n", "")
    truth += "".join(f"t-half,{c},{acc},all,t\n" for c, acc in zip("abcd", (0.9, 0.8, 0.7, 0.6)))
    truth += "".join(f"u,{c},{acc},all,u\n" for c, acc in zip("abc", (0.5, 0.6, 0.7)))
    scores = "task,checkpoint_id,metric,value\n"
    scores += "".join(f"t,{c},m,{v}\n" for c, v in zip("abcd", (4, 3, 1, 2)))  # all: a b d c; bcd: b d c
    scores += "".join(f"t-half,{c},m,{v}\n" for c, v in zip("abcd", (1, 4, 3, 2)))  # b c d a
    scores += "".join(f"u,{c},m,{v}\n" for c, v in zip("abc", (1, 2, 3)))  # c b a: perfect
    return write(tmp_path, "S.csv", scores), write(tmp_path, "T.csv", truth)


def test_setups_are_measured_and_aggregated_with_their_spread(tmp_path: Path, hubindex: Any) -> None:
    from hubindex.evaluation import load_truth_rows
    from hubindex.evaluation_setups import SPREAD_COLUMNS, evaluate_setups

    scores, truth = setup_files(tmp_path)
    report = evaluate_setups(load_scores(scores), load_truth_rows(truth), higher_is_better={"m": True})
    setups = {(r["scored_task"], r["setup"]): r for r in report.per_setup}
    assert sorted(setups) == [("t", "all"), ("t", "bcd"), ("t-half", "all"), ("u", "all")]
    assert {r["task"] for r in report.per_setup if r["scored_task"] == "t-half"} == {"t"}  # its base task
    assert setups[("t", "bcd")]["n_checkpoints"] == 3  # the pool variant's checkpoints only
    # Recall@1: t/all picks a (best), t/bcd picks b (best of b, c, d), t-half picks b (not a).
    assert [setups[k]["recall@1"] for k in (("t", "all"), ("t", "bcd"), ("t-half", "all"))] == [1.0, 1.0, 0.0]
    # Relative regret at B = 1: t-half picks b: (0.9 - 0.8) / (1 - 0.8) = 0.5.
    assert setups[("t-half", "all")]["relative_regret"] == pytest.approx(0.5)
    taus = [setups[k]["weighted_tau"] for k in (("t", "all"), ("t", "bcd"), ("t-half", "all"))]
    assert taus[0] == pytest.approx(weighted_tau_by_pairs([0.9, 0.8, 0.7, 0.6], [4, 3, 1, 2]))
    (t_row,) = [r for r in report.per_task if r["task"] == "t"]
    assert (t_row["n_setups"], t_row["n_undefined"]) == (3, 0)
    assert t_row["recall@1"] == pytest.approx(2 / 3)
    assert t_row["recall@1_std"] == pytest.approx(np.std([1, 1, 0], ddof=1))
    assert t_row["weighted_tau"] == pytest.approx(np.mean(taus))
    assert t_row["weighted_tau_std"] == pytest.approx(np.std(taus, ddof=1))
    assert (t_row["weighted_tau_p10"], t_row["weighted_tau_p90"]) == pytest.approx(tuple(np.percentile(taus, [10, 90])))
    assert t_row["relative_regret_p90"] == pytest.approx(np.percentile([0, 0, 0.5], 90))
    (u_row,) = [r for r in report.per_task if r["task"] == "u"]
    assert u_row["n_setups"] == 1 and math.isnan(u_row["weighted_tau_std"])  # one setup: no spread
    (mean,) = report.mean
    assert (mean["n_tasks"], mean["n_setups"]) == (2, 4)
    assert mean["recall@1"] == pytest.approx(3 / 4)  # every setup weighs the same
    # Through the command: JSON, the table's 'mean ± std [p10, p90]', and export rows by scope.
    found = evaluated(hubindex, "--scores", str(scores), "--truth", str(truth))
    assert list(found) == ["per_setup", "per_task", "mean", "notes"]
    assert found["per_task"][1]["weighted_tau_std"] is None  # u
    table = hubindex("evaluate", "--scores", str(scores), "--truth", str(truth)).stdout
    assert "across setups" in table and "±" in table and "4 rows per setup" in table
    rows = [json.loads(line) for line in hubindex("evaluate", "--scores", str(scores), "--truth", str(truth),
                                                  "--format", "ndjson").stdout.splitlines()]
    assert [r["scope"] for r in rows] == ["setup"] * 4 + ["task"] * 2 + ["mean"]
    assert set(SPREAD_COLUMNS) <= set(rows[0])
    header = hubindex("evaluate", "--scores", str(scores), "--truth", str(truth), "--format", "csv").stdout
    assert header.splitlines()[0].startswith("scope,task,scored_task,setup,metric,n,")
    # --task names a base task: its derived tasks come along.
    only_t = evaluated(hubindex, "--scores", str(scores), "--truth", str(truth), "--task", "t")
    assert {r["scored_task"] for r in only_t["per_setup"]} == {"t", "t-half"}


def test_setups_of_an_index(scored_index: Path, hubindex: Any, tmp_path: Path) -> None:
    # Two pool variants of cifar, from the index's own scores.
    truth = "task,checkpoint_id,accuracy,setup\n" + "".join(
        f"cifar,{c},{acc},{setup}\n" for setup, ids in (("abcd", "abcd"), ("bcd", "bcd"))
        for c, acc in zip("abcd", (0.95, 0.9, 0.8, 0.7)) if c in ids)
    found = evaluated(hubindex, "--truth", str(write(tmp_path, "T.csv", truth)), "--metric", "logme")
    assert [(r["setup"], r["n_checkpoints"], r["recall@1"]) for r in found["per_setup"]] == [
        ("abcd", 4, 0.0), ("bcd", 3, 1.0)]  # logme ranks b first: not the best of a-d, the best of b-d
    assert found["per_task"][0]["recall@1"] == 0.5 and found["mean"][0]["n_setups"] == 2


def test_setup_errors(tmp_path: Path, hubindex: Any) -> None:
    from conftest import assert_one_line_error

    from hubindex.evaluation import load_truth_rows

    scores, good = setup_files(tmp_path)
    with pytest.raises(UsageError, match=r"line 9 gives task 't' the base task 't-dup', line 2 gave it 't'"):
        load_truth_rows(write(tmp_path, "bad.csv", SETUP_TRUTH))
    with pytest.raises(UsageError, match=r"line 8 repeats task 't', setup 'bcd', checkpoint 'a' of line 6"):
        load_truth_rows(write(tmp_path, "dup.csv", SETUP_TRUTH.replace("t,c,0.7,bcd", "t,a,0.7,bcd")))
    with pytest.raises(UsageError, match="has a setup or base_task column; evaluate it by setups"):
        load_truth(good)
    lonely = write(tmp_path, "lonely.csv", "task,checkpoint_id,accuracy,setup\nt,a,0.9,one\nt,b,0.8,two\n")
    result = hubindex("evaluate", "--scores", str(scores), "--truth", str(lonely), "--task", "t")
    assert result.exit_code == 2
    assert_one_line_error(result, "task 't', setup 'one', metric 'm': 1 scored checkpoint(s)")
    empty_setup = write(tmp_path, "empty.csv", "task,checkpoint_id,accuracy,setup\nt,a,0.9,\n")
    assert_one_line_error(hubindex("evaluate", "--scores", str(scores), "--truth", str(empty_setup)),
                          "line 2 has an empty 'setup'")
