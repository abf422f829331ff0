"""Loading checkpoints safely (transformers and timm), and running token sequences through them in batches.

Shared by the text and the image probe. Weights load from the checkpoint's local copy when it has
one, else from the Hub by id at the catalog's commit; remote code is never run
(`trust_remote_code=False`), safetensors are preferred and pickled weights are read with
`weights_only=True`.

Batches are right-padded and ordered by length, so little is padded. Some models' outputs change
with padding (Funnel's pooling attention, for one) - then a row's features would depend on which
other rows share its batch, i.e. on `--batch-size`. `each_hidden_state` checks this on the first
batch that needs padding (the shortest row run alone against its row in the batch); a model that
fails the check runs the rest in batches of equal-length rows, which need no padding at all.

A local copy is loaded only once `checkpoint_files.check_loadable` passed it.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hubindex.types import ProbeError
from hubindex_plugins.checkpoint_files import check_loadable

# How far a row's features may move when run with padding before the model counts as not
# padding invariant (float32 kernels differ by ~1e-6 between batch shapes; half precision more).
PADDING_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def model_source(checkpoint: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what from_pretrained loads, extra kwargs): the local copy once `check_loadable` passed it, else
    the Hub repo at its commit."""
    local = checkpoint.get("local_path")
    if local:
        if not Path(local).is_dir():
            raise ProbeError("not-found", f"local copy {local} is gone; run `hubindex crawl local` again")
        check_loadable(Path(local))
        return local, {}
    checkpoint_id = checkpoint["checkpoint_id"]
    if checkpoint_id.startswith("hf:"):
        revision = checkpoint.get("sha")
        return checkpoint_id[3:], ({"revision": revision} if revision else {})
    raise ProbeError("not-found", f"{checkpoint_id} has no local copy and no Hub repo to load from")


def has_safetensors(checkpoint: dict[str, Any], source: str) -> bool | None:
    """True/False when it is known whether safetensors weights exist; None lets transformers choose."""
    folder = Path(source)
    if checkpoint.get("local_path") and folder.is_dir():
        return any(folder.glob("*.safetensors"))
    names = [w["name"] for w in checkpoint.get("weight_files") or [] if w and w.get("name")]
    return any(n.endswith(".safetensors") for n in names) if names else None


@contextmanager
def quiet_transformers() -> Iterator[Any]:
    """transformers imported, with its load reports (heads newly initialised, ...) and progress bars
    off inside the block (hubindex shows its own progress); both restored afterwards."""
    from hubindex.torch_compat import ensure_torchvision

    ensure_torchvision()  # transformers imports torchvision for its image utilities
    import transformers
    from transformers.utils import logging as transformers_logging

    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def load_with_preprocessor(preprocessor: str, auto_model: str, checkpoint: dict[str, Any], dtype: str,
                           device: str) -> tuple[Any, Any]:
    """(model in eval mode on the device, its preprocessor): transformers' `preprocessor` Auto class
    (AutoTokenizer, AutoImageProcessor) and `auto_model`; a ProbeError if either cannot load."""
    with quiet_transformers() as transformers:
        source, extra = model_source(checkpoint)
        try:
            processor = getattr(transformers, preprocessor).from_pretrained(source, trust_remote_code=False, **extra)
            model = load_pretrained(getattr(transformers, auto_model), checkpoint, dtype, source, extra)
        except ProbeError:
            raise
        except Exception as exc:
            raise load_error(exc) from exc
    return model.to(device).eval(), processor


def load_pretrained(auto_class: Any, checkpoint: dict[str, Any], dtype: str, source: str, extra: dict[str, Any]) -> Any:
    """auto_class.from_pretrained on the checkpoint's `model_source`: no remote code, safetensors or weights_only."""
    import torch

    return auto_class.from_pretrained(
        source, trust_remote_code=False, use_safetensors=has_safetensors(checkpoint, source),
        weights_only=True, dtype=getattr(torch, dtype), **extra,
    )


def load_error(exc: Exception) -> ProbeError:
    """A loading failure as a recorded failure: out of memory, or a load error with the cause."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text:
        return ProbeError("out-of-memory", text)
    return ProbeError("load-error", text)


def free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def accepted_inputs(model: Any) -> set[str]:
    """The keyword arguments the model's forward takes (a tokenizer may give more, e.g. token_type_ids)."""
    return set(inspect.signature(model.forward).parameters)


def _batches(order: list[int], lengths: Sequence[int], size: int, equal_lengths: bool) -> list[list[int]]:
    """Consecutive batches of the ordered rows; with equal_lengths, a batch never mixes lengths."""
    batches: list[list[int]] = []
    for row in order:
        last = batches[-1] if batches else None
        if last is None or len(last) >= size or (equal_lengths and lengths[last[0]] != lengths[row]):
            batches.append([row])
        else:
            last.append(row)
    return batches


def _pad(rows: list[dict[str, list[int]]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded tensors of a batch of encodings, with the attention mask."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    tensors: dict[str, Any] = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else 0
        tensors[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows], dtype=torch.long)
    tensors["attention_mask"] = torch.tensor(
        [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows], dtype=torch.long)
    return {k: v.to(device) for k, v in tensors.items()}


Forward = Callable[[dict[str, Any]], tuple[Any, Any]]


def each_hidden_state(
    forward: Forward,
    encodings: list[dict[str, list[int]]],
    batch_size: int,
    pad_id: int,
    device: str,
    dtype: str,
    take: Callable[[int, np.ndarray, np.ndarray | None], None],
) -> bool:
    """Run every encoding through the model; take(i, hidden states (length_i, dim), per-row extra or None).

    `forward(inputs)` returns (hidden states (batch, length, dim), per-row extra such as logits, or
    None). Rows run longest first in right-padded batches; the result does not depend on
    batch_size (see the module docstring). Returns whether the model was padding invariant.
    """
    import torch

    lengths = [len(e["input_ids"]) for e in encodings]
    order = sorted(range(len(encodings)), key=lambda i: (-lengths[i], i))

    def run(rows: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            with torch.inference_mode():
                hidden, extra = forward(_pad([encodings[i] for i in rows], pad_id, device))
        except ProbeError:
            raise
        except Exception as exc:
            raise ProbeError("forward-error", f"{type(exc).__name__}: {exc}") from exc
        return hidden.float().cpu().numpy(), (None if extra is None else extra.float().cpu().numpy())

    invariant: bool | None = None  # unknown until a batch needs padding
    pending = _batches(order, lengths, batch_size, equal_lengths=False)
    while pending:
        rows = pending.pop(0)
        hidden, extra = run(rows)
        shortest = rows[-1]
        if invariant is None and lengths[shortest] < lengths[rows[0]]:
            alone, alone_extra = run([shortest])
            position = len(rows) - 1
            scale = 1.0 + float(np.abs(alone).max())
            moved = float(np.abs(hidden[position, : lengths[shortest]] - alone[0]).max())
            if alone_extra is not None and extra is not None:
                moved = max(moved, float(np.abs(extra[position] - alone_extra[0]).max()))
            invariant = moved <= PADDING_TOLERANCE.get(dtype, 1e-4) * scale
            if not invariant:  # this batch and the rest again, without padding
                remaining = rows + [r for batch in pending for r in batch]
                pending = _batches(remaining, lengths, batch_size, equal_lengths=True)
                continue
        for position, row in enumerate(rows):
            take(row, hidden[position, : lengths[row]], None if extra is None else extra[position])
    return invariant is not False
