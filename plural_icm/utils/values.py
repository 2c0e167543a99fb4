"""Small value helpers shared across the package."""

from __future__ import annotations

from typing import Any


def plain(v: Any) -> Any:
    """The plain value of a config entry: an Enum's ``.value``, anything else unchanged.

    Structured configs hand out Enum members (``Schedule.log``); files, hashes and comparisons
    want the string.
    """
    return v.value if hasattr(v, "value") else v
