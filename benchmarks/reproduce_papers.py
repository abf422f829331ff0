"""Run the four paper experiments one after the other - one command:

    .venv/bin/python benchmarks/reproduce_papers.py [--quick] [--out DIR] [--work DIR] [--only NAME ...]

1. paper_unseen_tasks.py      - MMI vs random vs peek on unseen tasks (Huang et al., Section 5.2)
2. paper_ranking.py           - metrics against fine-tuned accuracy (Li et al., NeuCRaB tables)
3. paper_search_regret.py     - regret of the search strategies at budgets 1-3 (Renggli et al.)
4. paper_kappa_robustness.py  - kappa against probe size and across corpora (Huang et al., Figure 2)

Each experiment runs in its own process (a crash or a memory peak in one does not take the others
with it) and writes `<out>/<experiment>/` (results.json, table.md, plots). This command adds
`<out>/timings.md` and `<out>/timings.json` with each experiment's wall time. `--quick` runs the
reduced versions that together take under ten minutes on a 2-core CPU; without it, the full
versions whose numbers benchmarks/RESULTS.md reports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENTS = {
    "unseen-tasks": "paper_unseen_tasks.py",
    "ranking": "paper_ranking.py",
    "search-regret": "paper_search_regret.py",
    "kappa-robustness": "paper_kappa_robustness.py",
}


def run_experiment(script: str, quick: bool, out: Path, work: Path) -> tuple[int, float]:
    """Run one experiment script in a child process; (exit code, wall seconds)."""
    command = [sys.executable, str(HERE / script), "--out", str(out), "--work", str(work)]
    if quick:
        command.append("--quick")
    print(f"reproduce: {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    code = subprocess.call(command)
    return code, time.monotonic() - started


def timings_table(rows: list[dict[str, object]], total: float) -> str:
    lines = ["| experiment | exit code | wall s |", "|---|---:|---:|"]
    lines += [f"| {r['experiment']} | {r['exit_code']} | {r['seconds']:.0f} |" for r in rows]
    lines.append(f"| **all** | | **{total:.0f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reduced versions (under ten minutes in all)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results[/quick])")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="working files (default benchmarks/work)")
    parser.add_argument("--only", action="append", choices=sorted(EXPERIMENTS), help="run only these experiments")
    args = parser.parse_args(argv)
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, object]] = []
    started = time.monotonic()
    for name, script in EXPERIMENTS.items():
        if args.only and name not in args.only:
            continue
        code, seconds = run_experiment(script, args.quick, out, args.work)
        rows.append({"experiment": name, "script": script, "exit_code": code, "seconds": round(seconds, 1)})
    total = time.monotonic() - started

    table = timings_table(rows, total)
    (out / "timings.md").write_text(table)
    (out / "timings.json").write_text(json.dumps(
        {"quick": args.quick, "total_seconds": round(total, 1), "experiments": rows}, indent=2) + "\n")
    print(table)
    failed = [r["experiment"] for r in rows if r["exit_code"] != 0]
    if failed:
        print(f"reproduce: failed: {', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
