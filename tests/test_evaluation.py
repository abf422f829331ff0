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
