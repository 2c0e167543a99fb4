"""Small value helpers shared across the package."""

from __future__ import annotations

import math
from typing import Any


def plain(v: Any) -> Any:
    """The plain value of a config entry: an Enum's ``.value``, anything else unchanged.

    Structured configs hand out Enum members (``Schedule.log``); files, hashes and comparisons
    want the string.
    """
    return v.value if hasattr(v, "value") else v


def non_finite_metrics(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every NaN or infinite number in a nested dict/list."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += non_finite_metrics(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += non_finite_metrics(v, f"{prefix}{i}.")
    elif isinstance(obj, float) and not math.isfinite(obj):
        out.append(prefix[:-1])
    elif hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        try:
            if not math.isfinite(float(obj)):
                out.append(prefix[:-1])
        except (TypeError, ValueError):
            pass
    return out
