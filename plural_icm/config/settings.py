"""The composed config, resolved once into frozen, typed settings.

:func:`resolve_settings` is THE place where a job's configuration is checked and typed: every stage
entry (:func:`plural_icm.pipeline.task.run_task`: cell, search, collaborative, data_stats, plan)
calls it once on the config Hydra composed, and hands the resulting :class:`Settings` down. The
layers below read typed attributes of their own part (``settings.icm`` an ``ICMConfig``,
``settings.model`` a ``ModelConfig``, ...): enumerations are the enum members of
:mod:`plural_icm.choices`, the ``model.vllm`` section a ``VLLMEngineArgs``.

``Settings.composed`` keeps the composed ``DictConfig``: it is the record of a run, read only
where the record is made (the cell's ``config.yaml`` and fingerprint, :mod:`plural_icm.layout`;
the config logged to W&B; the child process's copy of the job). Every layer reads typed parts.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from plural_icm.config.schema import (ClusterConfig, CollaborativeConfig, ConditionConfig, Config,
                                      DatasetConfig, ICMConfig, InferenceConfig, LoggerConfig,
                                      ModelConfig, PathsConfig, SelectionConfig, Stage)
from plural_icm.errors import ConfigError

__all__ = ["Settings", "resolve_settings", "as_settings", "expect_settings", "require_icm_preset"]


@dataclass(frozen=True)
class Settings:
    """One job's settings, typed (the fields of :class:`plural_icm.config.schema.Config`) and
    frozen at this level: a layer cannot swap another layer's part."""

    composed: DictConfig
    """The config as Hydra composed it (the record written beside results)."""
    model: ModelConfig
    dataset: DatasetConfig
    condition: ConditionConfig
    icm: Optional[ICMConfig]
    """None only where no ICM preset was chosen (refused by :func:`resolve_settings`)."""
    inference: InferenceConfig
    selection: SelectionConfig
    logger: LoggerConfig
    paths: PathsConfig
    collaborative: CollaborativeConfig
    cluster: ClusterConfig
    stage: Stage
    fold: int
    seed: int
    run_tag: str
    force: bool
    progress: bool


def require_icm_preset(cfg: DictConfig) -> None:
    """A model config of one's own may not name an ICM preset: never fall back to the demo one."""
    if OmegaConf.is_missing(cfg, "icm"):
        raise SystemExit(f"plural_icm: no ICM preset for model {cfg.model.name}: choose one with "
                         "icm=paper (the paper's settings), icm=fork or icm=demo (12-claim laptop demo), "
                         "or add `- /icm@_global_.icm: paper` to the model config's defaults")


def validate(cfg: DictConfig) -> Settings:
    """Every check of a composed config, in one place, before anything is loaded or written: the
    ICM preset is chosen, what the schema cannot check (``config.schema.check_config``: the
    ``model.vllm`` keys, ``dataset.options``), the composed tree's leaves
    (``config.checks``: finite numbers, paths), then the typed settings' values
    (``config.checks.check_settings``) and the fold against what the dataset's loader declares.
    Returns the typed settings."""
    from plural_icm.config.checks import check_dataset_options, check_finite_numbers, check_paths, check_settings
    from plural_icm.config.schema import check_config
    from plural_icm.data.registry import check_fold

    require_icm_preset(cfg)
    check_config(cfg)
    check_finite_numbers(cfg)
    check_paths(cfg)
    check_dataset_options(cfg)
    s = typed(cfg)
    check_settings(s)
    check_fold(s.dataset, s.fold)
    return s


def resolve_settings(cfg: DictConfig) -> Settings:
    """THE place a composed config is validated (:func:`validate`) and typed; every stage entry
    calls it once and passes the result down."""
    return validate(cfg)


def typed(cfg: DictConfig) -> Settings:
    """``cfg`` as :class:`Settings`, without the checks (:func:`as_settings`)."""
    if not OmegaConf.is_config(cfg):
        raise TypeError(f"expected a composed DictConfig, not {type(cfg).__name__}")
    source = cfg
    if OmegaConf.get_type(cfg) is not Config:  # assembled without the schema's type (the sweep
        # launcher's jobs, a hand-made config): typed through the schema; ``composed`` stays as given
        source = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    values: dict[str, Any] = {}
    for f in fields(Config):
        if OmegaConf.is_missing(source, f.name):
            values[f.name] = None  # only ``icm`` (refused by validate); the others fail below
            continue
        try:
            node = source[f.name]
            values[f.name] = OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
        except Exception as e:  # a value still missing (???) or an interpolation that cannot resolve
            raise ConfigError(f"config: cannot resolve {f.name}: {e}") from e
    return Settings(composed=cfg, **values)


def as_settings(cfg: Any) -> Settings:
    """``cfg`` if it is already :class:`Settings`, else the composed ``DictConfig`` typed (not
    validated again). For the boundaries that compose a config of their own and type it once
    (bench scripts); the pipeline's entries take :class:`Settings` only (:func:`expect_settings`)."""
    return cfg if isinstance(cfg, Settings) else typed(cfg)


def expect_settings(value: Any, where: str) -> Settings:
    """``value``, which must be :class:`Settings`: the pipeline's public entries (``run_cell``,
    ``run_collaborative``, ``build_plan``, ``Backends``, ...) take the typed settings only. A
    composed ``DictConfig`` read as settings would mostly work (its nodes have the same attribute
    names) and fail, or differ, somewhere deep: it is refused here, naming what to do instead."""
    if isinstance(value, Settings):
        return value
    raise TypeError(f"{where}: expected {Settings.__module__}.Settings, got {type(value).__name__}; "
                    "a composed config is typed once where it is composed "
                    "(plural_icm.config.settings.resolve_settings, or typed() for one validated already)")
