"""Conditions by name: ``conditions/<name>.py`` defines and registers the condition ``<name>``."""

from __future__ import annotations

import dataclasses
from typing import Any

from plural_icm.conditions.base import Condition, ConditionSettings
from plural_icm.utils.plugins import import_plugin_module, import_plugin_modules

_REGISTRY: dict[str, type[Condition]] = {}
_NOT_CONDITIONS = {"base", "registry", "labels"}


def register(cls: type[Condition]) -> type[Condition]:
    """Class decorator: make ``cls`` available as ``condition=<cls.name>``. The condition declares
    what the planner reads of it (``uses_examples``, ``n_example_sets``: a default would give a
    wrong plan without an error) and its settings (a frozen :class:`ConditionSettings`)."""
    missing = [what for what, ok in (
        ("uses_examples", hasattr(cls, "uses_examples")),
        ("n_example_sets", cls.n_example_sets is not Condition.n_example_sets)) if not ok]
    if missing:
        raise TypeError(f"condition {getattr(cls, 'name', cls.__name__)!r} must declare "
                        f"{' and '.join(missing)} (the planner's cost of its cells; "
                        "docs/extending.md, 'A condition')")
    settings_class = cls.settings_class
    if not (dataclasses.is_dataclass(settings_class) and issubclass(settings_class, ConditionSettings)
            and settings_class.__dataclass_params__.frozen):
        raise TypeError(f"condition {cls.name!r}: settings_class must be a frozen dataclass "
                        "subclassing ConditionSettings")
    if getattr(cls, "name", None) in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"condition {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Every condition the package defines (imports each condition module once)."""
    import_plugin_modules("plural_icm.conditions", _NOT_CONDITIONS)
    return sorted(_REGISTRY)


def get_condition(name: str) -> Condition:
    """The condition registered as ``name`` (its module is imported on first use)."""
    if name not in _REGISTRY:
        import_plugin_module("plural_icm.conditions", name, _NOT_CONDITIONS)
    if name not in _REGISTRY:
        raise ValueError(f"unknown condition {name!r}; registered conditions: {', '.join(available())}")
    return _REGISTRY[name]()


def condition_settings(condition: Condition, section: Any) -> ConditionSettings:
    """The condition's own settings (its ``settings_class``) from the typed ``condition`` section
    of the job's settings (or any object with those attributes): each declared key is read, none
    other is handed to the condition."""
    cls = condition.settings_class
    try:
        return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls)})
    except AttributeError as e:
        raise ValueError(f"condition {condition.name!r} declares a key the config has no value for: "
                         f"{e}") from e
