"""The four paper experiments in quick mode, end to end (slow: several minutes; run with -m slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("unseen-tasks", "ranking", "search-regret", "kappa-robustness")
QUICK_LIMIT_SECONDS = 600  # the promise for `--quick` on a 2-core CPU


def finite_numbers(value: object) -> list[float]:
    """Every float in a JSON value (nested dicts and lists)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in finite_numbers(v)]
    return []


@pytest.mark.slow
def test_quick_mode_runs_all_four_experiments_within_ten_minutes(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reproduce_papers.py"), "--quick", "--out", str(out),
         "--work", str(work)],
        capture_output=True, text=True, timeout=2 * QUICK_LIMIT_SECONDS,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    timings = json.loads((out / "timings.json").read_text())
    assert [row["experiment"] for row in timings["experiments"]] == list(EXPERIMENTS)
    assert all(row["exit_code"] == 0 for row in timings["experiments"])
    assert timings["total_seconds"] < QUICK_LIMIT_SECONDS, timings

    for name in EXPERIMENTS:
        folder = out / name
        results = json.loads((folder / "results.json").read_text())
        numbers = finite_numbers(results)
        assert numbers and not any(math.isinf(x) for x in numbers), name
        assert results["experiment"] == name
        table = (folder / "table.md").read_text()
        assert table.count("\n|") >= 3, f"{name}: table.md holds no table"
        assert list(folder.glob("*.png")), f"{name}: no plot"
