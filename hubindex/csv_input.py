"""User CSV files (tasks, scores, ground truth): read whole, checked, with one-line errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from hubindex.errors import UsageError

# A field may hold a whole document; the csv module's default limit is 128 KiB.
FIELD_LIMIT = 64 * 1024 * 1024


def read_csv_rows(path: Path, columns: Sequence[str], option: str = "") -> list[tuple[int, dict[str, str]]]:
    """(line number, cells) of a UTF-8 CSV file whose header holds `columns`; every cell non-empty.

    Cells are stripped of surrounding spaces; `option` (e.g. "--csv") prefixes the path in errors.
    """
    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise UsageError(f"{where}: the file is empty; expected a header with columns {','.join(columns)}")
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [name for name in columns if name not in header]
    if missing:
        raise UsageError(f"{where}: no column {missing[0]!r}; the header must name {','.join(columns)} "
                         f"(found: {','.join(header)})")
    rows = []
    try:
        for row in reader:
            line = reader.line_num
            cells = {}
            for name in columns:
                cell = (row.get(name) or "").strip()
                if not cell:
                    raise UsageError(f"{where}: line {line} has an empty {name!r}")
                cells[name] = cell
            rows.append((line, cells))
    except csv.Error as exc:
        raise UsageError(f"{where}: malformed CSV near line {reader.line_num} ({exc})") from None
    if not rows:
        raise UsageError(f"{where}: a header and no rows")
    return rows
