"""Shared fixtures: every test gets its own index folder; the CLI runs in-process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubindex.cli import main
from hubindex.index import Index


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_hubindex(*args: str, index_dir: Path | None = None) -> CliResult:
    """Run `hubindex ARGS` in this process, through the same main() as the console script."""
    argv = (["--index", str(index_dir)] if index_dir is not None else []) + [str(a) for a in args]
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(argv)
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def index_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty index folder; HUBINDEX_INDEX points at it so nothing touches index_data/."""
    folder = tmp_path / "index"
    monkeypatch.setenv("HUBINDEX_INDEX", str(folder))
    return folder


@pytest.fixture
def index(index_dir: Path) -> Index:
    return Index(index_dir)


@pytest.fixture
def hubindex(index_dir: Path):  # noqa: ANN201 - returns the runner function
    """Run the CLI against the test's own index: hubindex('sql', 'SELECT 1')."""

    def run(*args: str) -> CliResult:
        return run_hubindex(*args, index_dir=index_dir)

    return run
