"""Make torchvision (and so timm and transformers' vision code) importable on CPU-only torch.

The only torchvision 0.28.0 build on PyPI is compiled for CUDA. With the CPU build of torch its
compiled operators fail to load, and importing torchvision then dies with "operator
torchvision::nms does not exist" because its Python side registers fake kernels for operators
that were never defined. Defining the two operator schemas first is enough for everything
hubindex uses (models and transforms; not detection ops such as nms itself).

Call `ensure_torchvision()` before importing timm or torchvision; it does nothing when the
compiled operators load (a CPU torchvision, or CUDA torch with CUDA torchvision).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

_PATCHED_OPS = ("nms", "qnms")
_done = False


def needs_patch() -> bool:
    """True when torchvision is installed but its compiled operators cannot be loaded."""
    import torch

    if "torchvision" in sys.modules or torch._C._jit_get_schemas_for_operator("torchvision::nms"):
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    libraries = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C.*"))
    if not libraries:
        return True
    try:
        torch.ops.load_library(libraries[0])
    except OSError:
        return True
    return False


def ensure_torchvision() -> bool:
    """Apply the operator-schema fix once if needed; return True if it was applied."""
    global _done
    if _done:
        return False
    if not needs_patch():
        _done = True
        return False
    import torch

    for op in _PATCHED_OPS:
        torch.library.define(
            f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    _done = True
    return True


def import_timm():  # noqa: ANN201 - returns the timm module
    """Import timm safely on any torch build."""
    ensure_torchvision()
    import timm

    return timm
