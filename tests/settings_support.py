"""The tests' boundary between a composed config and the pipeline: the pipeline's entries take
typed :class:`~plural_icm.config.settings.Settings` only, so a test that composes a ``DictConfig``
(``tiny_cfg``, ``compose_config``, a file's own ``compose``) types it here, as ``launch.py`` does
once per job."""

from __future__ import annotations

from typing import Any

from plural_icm.config.settings import Settings, typed


def typed_settings(cfg: Any) -> Settings:
    """``cfg`` (a composed config) as the pipeline's typed settings, not validated again (the
    tests that check validation call ``resolve_settings`` or ``run_task`` themselves)."""
    return typed(cfg)
