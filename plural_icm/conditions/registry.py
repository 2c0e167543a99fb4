"""Conditions by name: ``conditions/<name>.py`` defines and registers the condition ``<name>``."""

from __future__ import annotations

import importlib
import pkgutil

from plural_icm.conditions.base import Condition

_REGISTRY: dict[str, type[Condition]] = {}
_NOT_CONDITIONS = {"base", "registry", "labels"}


def register(cls: type[Condition]) -> type[Condition]:
    """Class decorator: make ``cls`` available as ``condition=<cls.name>``."""
    if getattr(cls, "name", None) in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"condition {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Every condition the package defines (imports each condition module once)."""
    import plural_icm.conditions as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in _NOT_CONDITIONS and not m.name.startswith("_"):
            importlib.import_module(f"plural_icm.conditions.{m.name}")
    return sorted(_REGISTRY)


def get_condition(name: str) -> Condition:
    """The condition registered as ``name`` (its module is imported on first use)."""
    if name not in _REGISTRY and name not in _NOT_CONDITIONS and name.isidentifier():
        try:
            importlib.import_module(f"plural_icm.conditions.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"plural_icm.conditions.{name}":
                raise
    if name not in _REGISTRY:
        raise ValueError(f"unknown condition {name!r}; registered conditions: {', '.join(available())}")
    return _REGISTRY[name]()
