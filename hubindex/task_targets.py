"""What a task's labels are, read into the arrays metrics score, and the train/validation split.

Three kinds of target (`hubindex task add --target`), as hubindex.types.TARGET_KINDS:

| target | raw label of an example | stored labels | classes |
|---|---|---|---|
| classification | one integer or string class | (n,) int64 in 0..C-1 | the C class names |
| multi-label | any number of classes: a list, or a string joined by the separator (default `|`); or a 0/1 row | (n, C) int8 0/1 | the C class names |
| regression | a number, or a row of t numbers | (n, t) float64 | the t target names |

Classification splits by a seeded, stratified draw (each class keeps at least one training
example); the other kinds by a seeded shuffle of all rows, at least one kept for training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hubindex.errors import UsageError
from hubindex.types import TARGET_CLASSIFICATION, TARGET_KINDS, TARGET_MULTI_LABEL, TARGET_REGRESSION

DEFAULT_LABEL_SEPARATOR = "|"


def check_target(target: str) -> str:
    if target not in TARGET_KINDS:
        raise UsageError(f"--target {target!r}: choose one of {', '.join(TARGET_KINDS)}")
    return target


def encode_targets(raw: Sequence[Any], target: str, where: str, class_names: list[str] | None = None,
                   separator: str = DEFAULT_LABEL_SEPARATOR) -> tuple[np.ndarray, list[str]]:
    """(labels as stored, class or target names) for a task of the given target kind."""
    check_target(target)
    if target == TARGET_REGRESSION:
        return encode_regression(raw, where, class_names)
    if target == TARGET_MULTI_LABEL:
        return encode_multi_label(raw, where, class_names, separator)
    return encode_labels(raw, where, class_names)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def encode_labels(raw: Sequence[Any], where: str, class_names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class indices 0..C-1 and class names from integer or string labels.

    Integers are ordered numerically, strings alphabetically. Floats with a fraction, booleans,
    missing values and mixtures are refused: a task needs class labels.
    """
    if len(raw) == 0:
        raise UsageError(f"{where}: no labels")
    kinds = set()
    values: list[Any] = []
    for position, value in enumerate(raw):
        value = _class_value(_plain(value), position, where)
        kinds.add(type(value))
        values.append(value)
    if len(kinds) > 1:
        raise UsageError(f"{where}: labels mix integers and strings; use one kind")
    classes = sorted(set(values))
    if class_names is not None:
        unknown = [c for c in classes if not 0 <= c < len(class_names)]
        if unknown:
            raise UsageError(f"{where}: label {unknown[0]} is outside the {len(class_names)} named classes")
    if len(classes) < 2:
        raise UsageError(f"{where}: only one class ({classes[0]!r}); a task needs at least two classes")
    position_of = {value: i for i, value in enumerate(classes)}
    codes = np.array([position_of[v] for v in values], dtype=np.int64)
    names = [class_names[c] if class_names is not None else str(c) for c in classes]
    return codes, names


def _class_value(value: Any, position: int, where: str) -> int | str:
    """One class label as an int or a stripped string; anything else is refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise UsageError(f"{where}: label {position} is missing")
    if isinstance(value, bool):
        raise UsageError(f"{where}: labels are booleans; give integer or string class labels")
    if isinstance(value, float):
        if not value.is_integer():
            raise UsageError(f"{where}: label {position} is {value!r}, not a class; labels must be integers or "
                             "strings (numbers to predict: --target regression)")
        return int(value)
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise UsageError(f"{where}: label {position} is empty")
        return value
    if not isinstance(value, int):
        raise UsageError(f"{where}: label {position} is a {type(value).__name__}; labels must be integers or strings")
    return value


def encode_multi_label(raw: Sequence[Any], where: str, class_names: list[str] | None = None,
                       separator: str = DEFAULT_LABEL_SEPARATOR) -> tuple[np.ndarray, list[str]]:
    """An (n, C) 0/1 matrix and the C class names from each example's set of classes.

    An example's classes are a list, a string joined by `separator` (an empty string: no
    class), or a 0/1 row (a 2-D array of indicators; its columns are the classes). Classes are
    ordered as `encode_labels` orders them.
    """
    if len(raw) == 0:
        raise UsageError(f"{where}: no labels")
    if isinstance(raw, np.ndarray) and raw.ndim == 2 and raw.dtype.kind in "biuf":
        values = raw.astype(np.float64)
        if not np.all((values == 0) | (values == 1)):
            raise UsageError(f"{where}: a multi-label matrix must hold 0/1 indicators (one column per class)")
        names = class_names or [str(c) for c in range(values.shape[1])]
        if len(names) != values.shape[1]:
            raise UsageError(f"{where}: {values.shape[1]} label columns but {len(names)} class names")
        return _checked_indicators(values.astype(np.int8), names, where)
    sets: list[list[int | str]] = []
    for position, value in enumerate(raw):
        value = _plain(value)
        if isinstance(value, str):
            parts = [part for part in value.split(separator) if part.strip()]
        elif isinstance(value, (list, tuple, np.ndarray)):
            parts = list(value)
        elif value is None:
            parts = []
        else:
            parts = [value]
        sets.append([_class_value(_plain(part), position, where) for part in parts])
    kinds = {type(v) for labels in sets for v in labels}
    if len(kinds) > 1:
        raise UsageError(f"{where}: labels mix integers and strings; use one kind")
    classes = sorted({v for labels in sets for v in labels})
    if not classes:
        raise UsageError(f"{where}: no example has a class")
    if class_names is not None:
        unknown = [c for c in classes if not isinstance(c, int) or not 0 <= c < len(class_names)]
        if unknown:
            raise UsageError(f"{where}: label {unknown[0]!r} is outside the {len(class_names)} named classes")
    column_of = {value: i for i, value in enumerate(classes)}
    indicators = np.zeros((len(sets), len(classes)), dtype=np.int8)
    for row, labels in enumerate(sets):
        indicators[row, [column_of[v] for v in labels]] = 1
    names = [class_names[c] if class_names is not None else str(c) for c in classes]
    return _checked_indicators(indicators, names, where)


def _checked_indicators(indicators: np.ndarray, names: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    always = [names[c] for c in np.flatnonzero(indicators.all(axis=0))]
    if always and len(always) == indicators.shape[1]:
        raise UsageError(f"{where}: every example has every class ({', '.join(always[:3])}); nothing to predict")
    if not indicators.any(axis=0).any():
        raise UsageError(f"{where}: no example has a class")
    return indicators, names


def encode_regression(raw: Sequence[Any], where: str, target_names: list[str] | None = None
                      ) -> tuple[np.ndarray, list[str]]:
    """An (n, t) float64 matrix of the values to predict and the t target names."""
    if len(raw) == 0:
        raise UsageError(f"{where}: no labels")
    rows = []
    for position, value in enumerate(raw):
        value = _plain(value)
        cells = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        row = []
        for cell in cells:
            cell = _plain(cell)
            if isinstance(cell, str):
                try:
                    cell = float(cell)
                except ValueError:
                    raise UsageError(f"{where}: label {position} is {cell!r}, not a number "
                                     "(--target regression predicts numbers)") from None
            if isinstance(cell, bool) or not isinstance(cell, (int, float)) or not math.isfinite(cell):
                raise UsageError(f"{where}: label {position} is {cell!r}; regression targets must be finite numbers")
            row.append(float(cell))
        rows.append(row)
    widths = {len(row) for row in rows}
    if len(widths) != 1 or 0 in widths:
        raise UsageError(f"{where}: every example needs the same number of target values (found {sorted(widths)})")
    values = np.array(rows, dtype=np.float64)
    constant = np.flatnonzero(np.ptp(values, axis=0) == 0)
    if constant.size == values.shape[1]:
        raise UsageError(f"{where}: every example has the same target value; nothing to predict")
    names = target_names or (["value"] if values.shape[1] == 1 else [f"value{i}" for i in range(values.shape[1])])
    if len(names) != values.shape[1]:
        raise UsageError(f"{where}: {values.shape[1]} target values per example but {len(names)} target names")
    return values, list(names)


def stratified_split(labels: np.ndarray, validation_fraction: float, seed: int) -> np.ndarray:
    """A boolean train mask: per class, a seeded shuffle; round(fraction * n) held out, >= 1 kept."""
    _check_fraction(validation_fraction)
    rng = np.random.default_rng(seed)
    train = np.ones(len(labels), dtype=bool)
    for label in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == label)
        held_out = min(int(round(validation_fraction * len(members))), len(members) - 1)
        train[rng.permutation(members)[:held_out]] = False
    return train


def _check_fraction(validation_fraction: float) -> None:
    if not 0.0 < validation_fraction < 1.0:
        raise UsageError(f"--validation-fraction must be between 0 and 1 (got {validation_fraction})")


def split_targets(labels: np.ndarray, target: str, validation_fraction: float, seed: int) -> np.ndarray:
    """The train mask of a task: stratified by class for classification, else a seeded shuffle."""
    if target == TARGET_CLASSIFICATION:
        return stratified_split(labels, validation_fraction, seed)
    _check_fraction(validation_fraction)
    n = len(labels)
    held_out = min(int(round(validation_fraction * n)), n - 1)
    train = np.ones(n, dtype=bool)
    train[np.random.default_rng(seed).permutation(n)[:held_out]] = False
    return train


def label_text(labels: np.ndarray, row: int, target: str, classes: list[str]) -> str:
    """The label of one example as the content hash records it."""
    if target == TARGET_MULTI_LABEL:
        return "|".join(classes[c] for c in np.flatnonzero(labels[row]))
    if target == TARGET_REGRESSION:
        return ",".join(repr(float(v)) for v in labels[row])
    return classes[int(labels[row])]
