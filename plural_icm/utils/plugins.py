"""How a registry finds its plug-ins: each plug-in declares itself in its own module (a condition
``@register``, a dataset ``register_loader(...)``, a backend ``@register_backend``), and the
registry imports that module by the plug-in's name on first use, or every module of its package
to list them all. Nothing lists plug-ins by hand."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Container


def import_plugin_module(package: str, name: str, not_plugins: Container[str] = ()) -> None:
    """Import ``<package>.<name>``, where the plug-in ``name`` declares itself, if there is such a
    module; a name that is none is left to the registry's error (which lists the valid ones)."""
    if not isinstance(name, str) or not name.isidentifier() or name in not_plugins:
        return
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.{name}":
            raise  # the plug-in's module exists and misses a dependency: say which


def import_plugin_modules(package: str, not_plugins: Container[str] = ()) -> None:
    """Import every module of ``package`` but ``not_plugins`` (and private ones), so that every
    plug-in it defines has declared itself."""
    pkg = importlib.import_module(package)
    for m in pkgutil.iter_modules(pkg.__path__):
        if not m.ispkg and m.name not in not_plugins and not m.name.startswith("_"):
            importlib.import_module(f"{package}.{m.name}")
