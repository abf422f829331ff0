"""Command-line value types shared by the core commands and by plugins' commands.

Numbers from the command line are checked to be finite: `nan` compares false with every bound, so
click's own ranges let it through (`--timeout nan` would remove a time limit).
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and infinities."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class ParameterCount(click.ParamType):
    """A parameter count: 350000000, 3.5e8, 350M, 7B."""

    name = "N"
    SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace("_", "").replace(",", "")
        scale = self.SUFFIXES.get(text[-1:], 1)
        try:
            number = float(text[:-1] if scale != 1 else text) * scale
        except ValueError:
            self.fail(f"{value!r} is not a parameter count (e.g. 350M, 7B, 3.5e8)", param, ctx)
        if not math.isfinite(number) or number < 1:
            self.fail(f"{value!r} is not a positive, finite parameter count", param, ctx)
        return int(number)
