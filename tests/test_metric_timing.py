"""`task_scores.seconds` is a metric's own work: what `score` imports lazily is declared in
`Metric.imports`, and the core imports it before the clock starts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hubindex.plugins import metrics
from hubindex.scoring import run_metric
from hubindex.types import Metric, MetricInput

# The packages whose import costs seconds; a metric importing one of them inside `score` must
# declare it.
HEAVY = ("sklearn", "faiss", "scipy", "torch", "transformers")

PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from hubindex.plugins import metrics
    from hubindex.types import MetricInput, NEEDS_HELD_OUT

    name = sys.argv[1]
    metric = metrics()[name].component()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    features = rng.normal(size=(120, 24)) + labels[:, None]
    train = np.ones(120, dtype=bool)
    if NEEDS_HELD_OUT in metric.needs:
        train[::5] = False
    head = rng.dirichlet(np.ones(6), size=120)
    reference = MetricInput(rng.normal(size=(120, 24)) + labels[:, None], labels, np.ones(120, dtype=bool))
    data = MetricInput(features, labels, train, head, reference, 0, label_embeddings=(rng.normal(size=(4, 8)),))
    import importlib
    for module in metric.imports:
        importlib.import_module(module)
    before = set(sys.modules)
    metric.score(data)
    print(json.dumps(sorted(m for m in set(sys.modules) - before)))
""")


@pytest.mark.parametrize("name", sorted(metrics()))
def test_a_metric_declares_the_heavy_modules_it_imports_lazily(name: str) -> None:
    """Run in a fresh interpreter per metric, so that no other metric's imports hide a missing one."""
    result = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    imported = [m for m in json.loads(result.stdout.splitlines()[-1]) if m.split(".")[0] in HEAVY]
    assert not imported, f"{name} imports {imported[:5]} inside score(); add them to its `imports`"


def test_declared_imports_are_not_timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "slow_to_import_for_hubindex_test.py").write_text("import time\ntime.sleep(1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class SlowImport(Metric):
        name = "test-slow-import"
        imports = ("slow_to_import_for_hubindex_test",)

        def score(self, data: MetricInput) -> float:
            import slow_to_import_for_hubindex_test  # noqa: F401 - imported before the clock by the core

            return 1.0

    labels = np.array([0, 1, 0, 1])
    value, seconds = run_metric(SlowImport(), MetricInput(np.eye(4), labels, np.ones(4, dtype=bool)))
    assert value == 1.0 and seconds < 0.5
