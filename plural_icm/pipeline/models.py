"""The models of one job: each checkpoint loaded at most once, and only when something must be
computed (a relaunch of finished work loads none). Used by every stage (cell, search,
collaborative)."""

from __future__ import annotations

import logging
import time
from typing import Any

from plural_icm.backends.registry import backend_from_model_config
from plural_icm.config.settings import Settings, expect_settings

log = logging.getLogger(__name__)

__all__ = ["Backends"]


class Backends:
    """Loads each checkpoint at most once per job, and only when something must be computed.

    The base model (search) is released before a *different* instruct model is loaded, since a
    GPU job holds one engine at a time (vLLM cannot start a second engine in one process).
    """

    def __init__(self, settings: Settings):
        s = expect_settings(settings, "Backends")
        self.model, self.cache_dir = s.model, s.paths.cache_dir
        self._current: tuple[str, Any] | None = None

    def get(self, role: str) -> Any:
        spec = self.model.base if role == "base" else self.model.instruct
        if self._current and self._current[0] == spec:
            return self._current[1]
        self.close()
        log.info("loading %s model %s (%s backend) ...", role, spec, self.model.backend.value)
        t0 = time.perf_counter()
        backend = backend_from_model_config(self.model, role, self.cache_dir)
        log.info("loaded %s model %s in %.1f s", role, spec, time.perf_counter() - t0)
        self._current = (spec, backend)
        return backend

    def close(self) -> None:
        if self._current:
            self._current[1].close()
            self._current = None
