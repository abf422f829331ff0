"""What every paper experiment script shares: its command-line options and its results folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from hubindex.errors import HubindexError, UsageError

HERE = Path(__file__).resolve().parent


def experiment_arguments(description: str, quick_help: str, seed_help: str) -> argparse.ArgumentParser:
    """The options every experiment takes: --quick, --out, --work and --seed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="results folder [default: benchmarks/results, quick: .../quick]")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="working files [default: benchmarks/work]")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    return parser


def output_folder(out: Path | None, quick: bool, experiment: str) -> Path:
    """<out>/<experiment>, created; a clear error when it cannot be."""
    base = out or (HERE / "results" / "quick" if quick else HERE / "results")
    folder = base / experiment
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the results folder {folder}: {exc.strerror or exc}") from None
    return folder


def log(message: str) -> None:
    """Progress to stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


def exit_code_of(script: str, run: Callable[[], object]) -> int:
    """0 when run() finishes; a one-line error and hubindex's exit code when it raises a HubindexError."""
    try:
        run()
    except HubindexError as exc:
        log(f"{script}: error: {exc}")
        return exc.exit_code
    return 0
