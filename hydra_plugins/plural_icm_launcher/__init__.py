"""Hydra launcher plugin of plural_icm: per-model resources, search jobs before cells, sweep reports.

A namespace package (``hydra_plugins``, no ``__init__`` at that level) so Hydra's plugin discovery
finds it next to hydra-submitit-launcher. Selected by ``conf/hydra/launcher/*.yaml`` through
``_target_``; see :mod:`.launcher`.
"""
