"""Labeled tasks: read a user's examples and labels, check them, split them and keep a copy.

`hubindex task add NAME` reads one of four sources:

| source | examples | labels |
|---|---|---|
| `--images DIR` | the image files of each sub-folder | the sub-folder names |
| `--csv FILE --text-col T --label-col L` | the texts of column T | column L |
| `--arrays X.npy y.npy` | images as X (n, h, w) or (n, h, w, channels), or texts as a string array X (n,) | y (n,) |
| `--dataset DIR` (saved by `datasets`' `save_to_disk`) | an image or text column | a label column |

Labels are integers or strings (a `datasets` ClassLabel gives its names); with `--target
multi-label` each example has a set of classes, with `--target regression` numbers to predict
(hubindex/task_targets.py: how each kind is read, stored and split). The examples are copied into
the index folder (`tasks/<name>-<hash>/`: `texts.npy` or `images/*.png`, plus `labels.npy` and
`train.npy`), so a task stays scorable when its source moves. The split is a seeded, stratified
draw for classification (each class keeps at least one training example), a seeded shuffle
otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hubindex.catalog import Catalog, fetch_dicts, utcnow
from hubindex.csv_input import read_csv_rows
from hubindex.errors import HubindexError, UsageError
from hubindex.images import open_image
from hubindex.index import Index
from hubindex.task_targets import DEFAULT_LABEL_SEPARATOR, encode_targets, label_text, split_targets
from hubindex.types import IMAGE, TARGET_CLASSIFICATION, TARGET_MULTI_LABEL, TARGET_REGRESSION, TEXT

TASKS_DIR = "tasks"
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_VALIDATION_FRACTION = 0.2
DEFAULT_SEED = 0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class TaskExamples:
    """Examples read from a source, before they are checked, split and stored."""

    modality: str
    items: list[Any]  # texts (str) or RGB PIL images
    labels: list[Any]  # raw labels: ints or strings
    source_kind: str
    source: str
    class_names: list[str] | None = None  # names of integer labels 0..C-1 (a ClassLabel)


@dataclass(frozen=True)
class Task:
    """A stored task: its examples, labels (as hubindex.task_targets stores them for `target`) and split."""

    name: str
    modality: str
    items: list[Any]
    labels: np.ndarray
    train: np.ndarray
    classes: list[str]  # class names; for regression, the names of the target values
    content_hash: str
    seed: int
    target: str = TARGET_CLASSIFICATION

    @property
    def size(self) -> int:
        return len(self.items)


# ------------------------------------------------------------------------------ labels and split


def task_content_hash(modality: str, items: list[Any], labels: np.ndarray, classes: list[str], train: np.ndarray,
                      target: str = TARGET_CLASSIFICATION) -> str:
    """sha256 over the examples (texts, or decoded pixels), the label of each, the split and the target kind."""
    # Classification tasks hash as they did before target kinds existed, so their scores stay current.
    kind = "" if target == TARGET_CLASSIFICATION else f"{target}\n"
    digest = hashlib.sha256(f"hubindex-task-v1\n{modality}\n{kind}".encode())
    for row, (item, in_train) in enumerate(zip(items, train.tolist())):
        if modality == TEXT:
            digest.update(item.encode("utf-8"))
        else:
            digest.update(f"{item.mode}:{item.width}x{item.height}\x1f".encode())
            digest.update(item.tobytes())
        digest.update(f"\x1f{label_text(labels, row, target, classes)}\x1f{int(in_train)}\x1e".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ sources


def read_image_folder(folder: Path) -> TaskExamples:
    """Images in one sub-folder per class; the sub-folder name is the label."""
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: no such folder")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"--images {folder}: no class sub-folders (expected one sub-folder of images per class)")
    items, labels = [], []
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            items.append(open_image(path))
            labels.append(class_dir.name)
    if not items:
        raise UsageError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its sub-folders")
    return TaskExamples(IMAGE, items, labels, "images", str(folder.resolve()))


def read_csv(path: Path, text_col: str | None, label_col: str | None,
             target: str = TARGET_CLASSIFICATION) -> TaskExamples:
    """Texts and labels from two columns of a CSV file with a header row.

    Class labels that look like integers are integers; multi-label and regression cells stay
    text for `encode_targets` to split or parse."""
    if not text_col or not label_col:
        raise UsageError("--csv needs --text-col and --label-col")
    rows = read_csv_rows(path, (text_col, label_col), "--csv")
    items = [cells[text_col] for _, cells in rows]
    if target == TARGET_CLASSIFICATION:
        labels = [_csv_label(cells[label_col], path, line) for line, cells in rows]
    else:
        labels = [cells[label_col] for _, cells in rows]
    names = [label_col] if target == TARGET_REGRESSION else None
    return TaskExamples(TEXT, items, labels, "csv", str(path.resolve()), names)


def _csv_label(value: str, path: Path, line: int) -> Any:
    """An integer when the cell is one, else the string; a fractional number is refused."""
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|[+-]?\d+[eE][+-]?\d+", value):
        number = float(value)
        if not number.is_integer():
            raise UsageError(
                f"--csv {path}: line {line}: label {value!r} is not a class; labels must be integers or strings "
                "(numbers to predict: --target regression)"
            )
        return int(number)
    return value


def load_npy(path: Path, what: str) -> np.ndarray:
    """An array from a .npy file (no pickles); a missing or malformed file is a UsageError naming `what`."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{what} {path}: not a .npy array file ({message})") from None


def load_feature_matrix(path: Path, what: str) -> np.ndarray:
    """A numeric items x features matrix from a .npy file; a UsageError naming `what` if it is not one."""
    array = load_npy(path, what)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise UsageError(f"{what} {path}: expected a numeric 2-D matrix (items x features), got shape {array.shape}")
    return array


def images_from_array(array: np.ndarray, what: str) -> list[Any]:
    """RGB PIL images from pixel arrays (n, h, w) or (n, h, w, 1|3|4); floats in [0, 1] or [0, 255]."""
    from PIL import Image

    if array.ndim == 4 and array.shape[-1] not in (1, 3, 4):
        raise UsageError(f"{what}: images must be (n, h, w) or (n, h, w, channels) with 1, 3 or 4 channels; "
                         f"got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        if bad.size:
            raise UsageError(f"{what}: {bad.size} images hold NaN or infinite values (first: image {bad[0]})")
        high = float(array.max()) if array.size else 0.0
        low = float(array.min()) if array.size else 0.0
        if low < 0:
            raise UsageError(f"{what}: negative pixel values; give pixels in [0, 1] or [0, 255]")
        scale = 255.0 if high <= 1.0 else 1.0
        if high * scale > 255.0 + 1e-6:
            raise UsageError(f"{what}: pixel values up to {high}; give pixels in [0, 1] or [0, 255]")
        array = np.rint(array * scale).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UsageError(f"{what}: integer pixels must be in 0..255")
        array = array.astype(np.uint8)
    else:
        raise UsageError(f"{what}: images must be numeric pixel arrays (got dtype {array.dtype})")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    return [Image.fromarray(image).convert("RGB") for image in array]


def examples_from_array(array: np.ndarray, what: str) -> tuple[str, list[Any]]:
    """(modality, items) from X.npy: texts as a string array (n,), or images as pixel arrays."""
    if array.ndim == 0 or len(array) == 0:
        raise UsageError(f"{what}: no examples (the array is empty)")
    if array.dtype.kind == "U":
        if array.ndim != 1:
            raise UsageError(f"{what}: texts must be a 1-D string array, got shape {array.shape}")
        texts = [str(t) for t in array]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise UsageError(f"{what}: text {empty[0]} is empty")
        return TEXT, texts
    if array.ndim == 2 and np.issubdtype(array.dtype, np.number):
        raise UsageError(
            f"{what}: a (n, d) matrix looks like features, not examples a checkpoint can embed; give images "
            "(n, h, w[, c]) or texts, or score given features with `hubindex metric NAME --features X.npy --labels y.npy`"
        )
    if array.ndim in (3, 4):
        return IMAGE, images_from_array(array, what)
    raise UsageError(f"{what}: expected texts (n,) or images (n, h, w[, c]); got shape {array.shape}")


def read_arrays(x_path: Path, y_path: Path, target: str = TARGET_CLASSIFICATION) -> TaskExamples:
    """Examples X.npy (images or texts) and labels y.npy: integers or strings (n,); for
    multi-label a 0/1 matrix (n, C); for regression numbers (n,) or (n, t)."""
    x = load_npy(x_path, "--arrays")
    y = load_npy(y_path, "--arrays")
    if y.ndim != 1 and not (y.ndim == 2 and target != TARGET_CLASSIFICATION):
        shapes = "(n,)" if target == TARGET_CLASSIFICATION else "(n,) or (n, columns)"
        raise UsageError(f"--arrays {y_path}: labels must be a {shapes} array, got shape {y.shape}")
    if x.ndim == 0 or len(x) == 0:
        raise UsageError(f"--arrays {x_path}: no examples (the array is empty)")
    if len(x) != len(y):
        raise UsageError(
            f"--arrays: {x_path} has {len(x)} examples but {y_path} has {len(y)} labels; "
            "they must have the same length"
        )
    if y.dtype.kind not in "iuUf":
        raise UsageError(f"--arrays {y_path}: labels must be integers or strings (got dtype {y.dtype})")
    modality, items = examples_from_array(x, f"--arrays {x_path}")
    labels = y if y.ndim == 2 else y.tolist()  # a 2-D matrix stays one: rows of indicators or values
    return TaskExamples(modality, items, labels, "arrays", f"{x_path.resolve()} {y_path.resolve()}")


def read_dataset(folder: Path, text_col: str | None, image_col: str | None, label_col: str | None) -> TaskExamples:
    """A `datasets` Dataset saved with save_to_disk: an image or text column and a label column."""
    if not folder.is_dir():
        raise UsageError(f"--dataset {folder}: no such folder")
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
        from datasets import Image as ImageFeature
        from datasets import ClassLabel
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise HubindexError("--dataset needs the `datasets` package") from None
    try:
        loaded = load_from_disk(str(folder))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for non-datasets
        raise UsageError(f"--dataset {folder}: not a dataset saved with save_to_disk ({_first(exc)})") from None
    if isinstance(loaded, DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            raise UsageError(f"--dataset {folder}: holds splits {', '.join(splits)}; save the one split to use")
        loaded = loaded[splits[0]]
    assert isinstance(loaded, Dataset)
    columns = loaded.column_names
    if label_col is None:
        raise UsageError("--dataset needs --label-col")
    if label_col not in columns:
        raise UsageError(f"--dataset {folder}: no column {label_col!r}; columns: {', '.join(columns)}")
    if text_col and image_col:
        raise UsageError("--dataset takes --text-col or --image-col, not both")
    column = text_col or image_col
    if column is None:
        found = [c for c in columns if isinstance(loaded.features[c], ImageFeature)]
        if len(found) != 1:
            raise UsageError(f"--dataset {folder}: name the examples' column with --text-col or --image-col")
        column = found[0]
    if column not in columns:
        raise UsageError(f"--dataset {folder}: no column {column!r}; columns: {', '.join(columns)}")
    if len(loaded) == 0:
        raise UsageError(f"--dataset {folder}: the dataset has no rows")
    feature = loaded.features[column]
    values = loaded[column]
    if isinstance(feature, ImageFeature):
        modality, items = IMAGE, [image.convert("RGB") for image in values]
    elif getattr(feature, "dtype", None) in ("string", "large_string"):
        modality, items = TEXT, list(values)
        empty = [i for i, t in enumerate(items) if t is None or not t.strip()]
        if empty:
            raise UsageError(f"--dataset {folder}: row {empty[0]} has an empty {column!r}")
    else:
        raise UsageError(f"--dataset {folder}: column {column!r} holds {feature}; expected images or text")
    label_feature = loaded.features[label_col]
    # A Sequence(ClassLabel) column (multi-label) names its classes on the inner feature.
    inner = getattr(label_feature, "feature", label_feature)
    names = list(inner.names) if isinstance(inner, ClassLabel) else None
    return TaskExamples(modality, items, list(loaded[label_col]), "dataset", str(folder.resolve()), names)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------ storing


def validate_task_name(name: str) -> None:
    if not TASK_NAME.match(name):
        raise UsageError(
            f"task name {name!r}: use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def _write_task_files(folder: Path, examples: TaskExamples, labels: np.ndarray, train: np.ndarray) -> None:
    folder.mkdir(parents=True)
    if examples.modality == TEXT:
        np.save(folder / "texts.npy", np.array(examples.items, dtype=np.str_), allow_pickle=False)
    else:
        images = folder / "images"
        images.mkdir()
        for position, image in enumerate(examples.items):
            image.save(images / f"{position:06d}.png", format="PNG")
    np.save(folder / "labels.npy", labels, allow_pickle=False)
    np.save(folder / "train.npy", train, allow_pickle=False)


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@dataclass
class AddedTask:
    name: str
    modality: str
    n_examples: int
    n_train: int
    classes: list[str]
    content_hash: str
    unchanged: bool  # the same data was already stored under this name
    target: str = TARGET_CLASSIFICATION

    def line(self) -> str:
        if self.unchanged:
            return f"task {self.name!r} already holds these {self.n_examples} examples; nothing to do"
        labels = (f"{len(self.classes)} target values" if self.target == TARGET_REGRESSION
                  else f"{len(self.classes)} classes" + (" (multi-label)" if self.target == TARGET_MULTI_LABEL else ""))
        return (
            f"task {self.name!r}: {self.n_examples} {self.modality} examples, {labels}, "
            f"{self.n_train} train / {self.n_examples - self.n_train} validation (hash {self.content_hash[:12]})"
        )


def add_task(index: Index, name: str, examples: TaskExamples, validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
             seed: int = DEFAULT_SEED, replace: bool = False, target: str = TARGET_CLASSIFICATION,
             separator: str = DEFAULT_LABEL_SEPARATOR) -> AddedTask:
    """Check, split and store a task; the catalog names its folder only once the folder is complete."""
    validate_task_name(name)
    labels, classes = encode_targets(examples.labels, target, f"task {name!r} labels", examples.class_names, separator)
    if len(labels) != len(examples.items):
        raise UsageError(f"task {name!r}: {len(examples.items)} examples but {len(labels)} labels")
    train = split_targets(labels, target, validation_fraction, seed)
    content_hash = task_content_hash(examples.modality, examples.items, labels, classes, train, target)
    relative = f"{TASKS_DIR}/{name}-{content_hash[:12]}"
    result = AddedTask(name, examples.modality, len(labels), int(train.sum()), classes, content_hash, False, target)

    with index.open_catalog() as catalog:
        existing = _task_row(catalog, name)
        if existing is not None and existing["content_hash"] == content_hash and (index.root / existing["path"]).is_dir():
            result.unchanged = True
            return result
        if existing is not None and not replace:
            raise UsageError(
                f"task {name!r} already exists with other data ({existing['n_examples']} examples, added "
                f"{existing['created_at']:%Y-%m-%d %H:%M}); use --replace to replace it, or choose another name"
            )
        folder = index.root / relative
        tasks_root = index.root / TASKS_DIR
        tasks_root.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=tasks_root))
            try:
                _write_task_files(staging / "task", examples, labels, train)
                _fsync_tree(staging / "task")
                os.replace(staging / "task", folder)
            except OSError as exc:
                raise HubindexError(f"cannot write task {name!r} under {tasks_root}: {exc.strerror or exc}") from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        with catalog.transaction():
            catalog.conn.execute("DELETE FROM tasks WHERE task = ?", [name])
            catalog.conn.execute(
                "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, examples.modality, examples.source_kind, examples.source, len(labels), int(train.sum()),
                 0 if target == TARGET_REGRESSION else len(classes), classes, validation_fraction, seed,
                 content_hash, relative, utcnow(), target],
            )
        if existing is not None and existing["path"] != relative:
            _remove_unreferenced(index, catalog, existing["path"])
    return result


def _remove_unreferenced(index: Index, catalog: Catalog, relative: str) -> None:
    """Delete a task folder no task row names any more (after the row moved on)."""
    still_used = catalog.conn.execute("SELECT count(*) FROM tasks WHERE path = ?", [relative]).fetchone()[0]
    if not still_used:
        shutil.rmtree(index.root / relative, ignore_errors=True)


def _task_row(catalog: Catalog, name: str) -> dict[str, Any] | None:
    cur = catalog.conn.execute("SELECT * FROM tasks WHERE task = ?", [name])
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row))


def task_rows(catalog: Catalog) -> list[dict[str, Any]]:
    """Every task row, by name."""
    return fetch_dicts(catalog.conn, "SELECT * FROM tasks ORDER BY task")


def remove_task(index: Index, name: str) -> int:
    """Remove a task, its scores and its folder; returns how many scores were removed."""
    with index.open_catalog() as catalog:
        existing = _task_row(catalog, name)
        if existing is None:
            raise UsageError(f"no task named {name!r}; `hubindex task list` shows the tasks")
        with catalog.transaction():
            removed = catalog.conn.execute("SELECT count(*) FROM task_scores WHERE task = ?", [name]).fetchone()[0]
            catalog.conn.execute("DELETE FROM task_scores WHERE task = ?", [name])
            catalog.conn.execute("DELETE FROM tasks WHERE task = ?", [name])
        _remove_unreferenced(index, catalog, existing["path"])
    return int(removed)


def load_task(index: Index, catalog: Catalog, name: str) -> Task:
    """A stored task with its examples, checked against the hash it was stored with."""
    row = _task_row(catalog, name)
    if row is None:
        known = ", ".join(r["task"] for r in task_rows(catalog)) or "none yet; add one with `hubindex task add`"
        raise UsageError(f"no task named {name!r}; tasks: {known}")
    folder = index.root / row["path"]
    try:
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        train = np.load(folder / "train.npy", allow_pickle=False)
        if row["modality"] == TEXT:
            items: list[Any] = [str(t) for t in np.load(folder / "texts.npy", allow_pickle=False)]
        else:
            items = [open_image(path) for path in sorted((folder / "images").glob("*.png"))]
    except (OSError, ValueError, UsageError) as exc:
        raise HubindexError(
            f"task {name!r}: its stored examples under {folder} are missing or unreadable ({_first(exc)}); "
            f"add it again with `hubindex task add {name} ... --replace`"
        ) from None
    classes = list(row["classes"])
    target = row["target"]
    content_hash = (task_content_hash(row["modality"], items, labels, classes, train, target)
                    if len(items) == len(labels) else "")
    if content_hash != row["content_hash"]:
        raise HubindexError(
            f"task {name!r}: its stored examples under {folder} changed since they were added; "
            f"add it again with `hubindex task add {name} ... --replace`"
        )
    return Task(name, row["modality"], items, labels, train, classes, content_hash, row["seed"], target)


# What `task list` shows of each task, in this order.
TASK_COLUMNS = ("task", "modality", "target", "source_kind", "n_examples", "n_train", "n_classes", "validation_fraction",
                "seed", "source", "content_hash")


def describe_task(row: dict[str, Any]) -> dict[str, Any]:
    """A task row for printing."""
    described = {k: row[k] for k in TASK_COLUMNS}
    described["content_hash"] = row["content_hash"][:12]
    return described

