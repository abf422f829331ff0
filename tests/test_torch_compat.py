"""hubindex.torch_compat: timm importable with CPU torch and the CUDA-only torchvision wheel.

Each check runs in a fresh interpreter: what is imported, and which operators are defined,
cannot be undone inside this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

NMS_ERROR = "torchvision::nms does not exist"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def plain_import() -> subprocess.CompletedProcess[str]:
    """`import timm` with nothing done first."""
    return run_python("import timm")


def test_plain_import_fails_on_this_stack(plain_import: subprocess.CompletedProcess[str]) -> None:
    if plain_import.returncode == 0:
        pytest.skip("plain `import timm` works here (torch and torchvision builds match); nothing to patch")
    assert NMS_ERROR in plain_import.stderr


def test_import_timm_works_and_runs_a_model(plain_import: subprocess.CompletedProcess[str]) -> None:
    result = run_python("""
        import json, sys
        from hubindex import torch_compat
        before = torch_compat.needs_patch()
        timm = torch_compat.import_timm()
        import torch, torchvision
        model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, 64, 64))
        from transformers import AutoModel  # noqa: F401 - its vision utilities import torchvision
        print(json.dumps({
            "before": before,
            "after": torch_compat.needs_patch(),
            "again": torch_compat.ensure_torchvision(),
            "shape": list(out.shape),
            "finite": bool(torch.isfinite(out).all()),
            "torchvision_loaded": "torchvision" in sys.modules,
        }))
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [2, 7] and report["finite"]
    assert report["torchvision_loaded"]
    assert report["after"] is False  # torchvision is imported: nothing left to patch
    assert report["again"] is False  # applied at most once
    # The patch is needed exactly where a plain import fails.
    assert report["before"] is (plain_import.returncode != 0)


def test_import_timm_recovers_after_a_failed_plain_import(plain_import: subprocess.CompletedProcess[str]) -> None:
    if plain_import.returncode == 0:
        pytest.skip("plain `import timm` works here; no failed import to recover from")
    result = run_python(f"""
        try:
            import timm
        except RuntimeError as exc:
            assert {NMS_ERROR!r} in str(exc), exc
        else:
            raise SystemExit("plain import unexpectedly worked")
        from hubindex.torch_compat import import_timm
        timm = import_timm()
        print(timm.create_model("resnet18").num_features)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "512"
