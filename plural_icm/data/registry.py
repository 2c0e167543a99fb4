"""``load_claimset(dataset)``: the one entry point from a dataset config to a :class:`ClaimSet`.

Every loader has one signature, ``load(dataset, data_dir) -> ClaimSet``, and one options dataclass
(the typed schema of ``dataset.options``), declared by its own module ``plural_icm/data/<name>.py``
(:func:`register_loader`, imported on first use of the name). ``dataset`` is a
frozen :class:`~plural_icm.data.settings.DatasetSettings` whose ``options`` is an instance of that
dataclass, validated once here (:func:`validated_options`: an unknown key, a wrong type or a value
outside an enumeration is an error naming ``dataset.options.<key>``, the value and what is
expected) with the dataclass's defaults filled in. Loaders read attributes; they repeat no default
and check no option.

:func:`dataset_settings` is the one boundary from a config (the DictConfig Hydra composes, a
:class:`~plural_icm.data.settings.DatasetConfig`, a mapping) to those settings; every public
function here accepts either and converts there.

A loader may return its own folds (OvertonBench's fixed search/test split; a claims file that
carries folds); otherwise folds are assigned here on the *full* dataset, before the persona filter,
so a run restricted to some personas sees the same split as a run on all of them
(:func:`plural_icm.data.folds.assign_folds` with ``dataset.n_folds`` and ``dataset.split_seed``).

Adding a dataset: a module ``plural_icm/data/x.py`` with ``load_x(dataset, data_dir)``, an
``XOptions`` dataclass and a ``register_loader("x", load_x, XOptions, ...)`` call, and
``conf/dataset/x.yaml`` (``loader: x``, ``score_metric``,
``options``). OT's loader brings its fixed search/test split
(:func:`plural_icm.data.ot.search_test_split`): test questions are fold 0, search questions -1, so
``ClaimSet.split(0)`` returns (search, test) and 0 is its only fold.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from plural_icm.data.folds import assign_folds
from plural_icm.data.records import ClaimSet
from plural_icm.data.settings import DatasetConfig, DatasetSettings
from plural_icm.errors import ConfigError
from plural_icm.utils.plugins import import_plugin_module, import_plugin_modules

log = logging.getLogger(__name__)


class LoaderSpec(NamedTuple):
    """What a dataset loader is, declared by its module (:func:`register_loader`)."""

    load: Callable[..., ClaimSet]
    """``load(dataset: DatasetSettings, data_dir) -> ClaimSet``."""
    options: type
    """The dataclass that types and validates ``dataset.options``."""
    kfold: bool = False
    """Its questions are split here into ``dataset.n_folds`` >= 2 folds, so the config check
    refuses ``fold >= n_folds`` before a job runs (:func:`plural_icm.config.checks.validate_config`).
    False: the loader brings its own split (OT). The demo and claim files are k-fold too: with one
    fold a cell would search on nothing and score its test fold against no examples."""
    stats: Callable[..., str] | None = None
    """``stats(dataset: DatasetSettings, data_dir) -> str``: what ``stage=data_stats`` prints for
    this dataset after the common table (:func:`plural_icm.data.stats.data_stats_report`)."""
    folds: Callable[..., int] | None = None
    """``folds(dataset: DatasetSettings) -> int``: how many folds the loader itself brings (a fixed
    split, folds carried by the files). None: ``dataset.n_folds`` (at least 2 for a ``kfold``
    loader: one fold must be left to search)."""


_REGISTERED: dict[str, LoaderSpec] = {}
#: Modules of this package that are not loaders (never imported to look for one).
_NOT_LOADERS = {"folds", "reading", "records", "registry", "settings", "sources", "stats"}


def register_loader(name: str, load: Callable[..., ClaimSet], options: type, *, kfold: bool = False,
                    stats: Callable[..., str] | None = None,
                    folds: Callable[..., int] | None = None) -> LoaderSpec:
    """Declare the loader ``name`` (``dataset.loader=<name>``): called once at the end of its
    module ``plural_icm/data/<name>.py``, which is imported on first use of the name, so nothing
    lists loaders by hand."""
    spec = LoaderSpec(load, options, kfold, stats, folds)
    old = _REGISTERED.get(name)
    if old is not None and old.load.__qualname__ != load.__qualname__:  # (a module run as
        # __main__ and imported again declares the same loader twice: not a conflict)
        raise ValueError(f"dataset loader {name!r} is registered twice")
    _REGISTERED[name] = spec
    return spec


def available_loaders() -> list[str]:
    """Every loader the package defines (imports each loader module once)."""
    import_plugin_modules("plural_icm.data", _NOT_LOADERS)
    return sorted(_REGISTERED)


def loader_spec(name: str) -> LoaderSpec:
    """The declaration of loader ``name`` (its module imported on first use); a ConfigError
    listing the valid loaders for an unknown name."""
    if name not in _REGISTERED:
        import_plugin_module("plural_icm.data", name, _NOT_LOADERS)
    if name not in _REGISTERED:
        raise ConfigError(f"dataset.loader={name!r} is unknown; valid loaders: "
                          f"{available_loaders()}")
    return _REGISTERED[name]


class _Loaders(Mapping):
    """Read-only view of every registered loader (name -> :class:`LoaderSpec`)."""

    def __getitem__(self, name: str) -> LoaderSpec:
        available_loaders()
        return _REGISTERED[name]

    def __iter__(self):
        return iter(available_loaders())

    def __len__(self) -> int:
        return len(available_loaders())


#: Every loader, as its module declares it (:func:`register_loader`).
LOADERS: Mapping[str, LoaderSpec] = _Loaders()


def _loader(name: str) -> tuple[Callable[..., ClaimSet], type]:
    spec = loader_spec(name)
    return spec.load, spec.options


_EXPECTED = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


def declares_kfold(loader: str) -> bool:
    """Whether ``loader`` declares a k-fold split of ``dataset.n_folds`` (:attr:`LoaderSpec.kfold`);
    False for an unknown loader (refused, listing the valid ones, when its folds are checked)."""
    try:
        return loader_spec(loader).kfold
    except ConfigError:
        return False


def _expected(options_class: type, key: str) -> str:
    """What a field of a loader's options dataclass takes, in words (for error messages)."""
    t = typing.get_type_hints(options_class).get(key)
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) is typing.Union and len(args) == 1:  # Optional[X]
        t = args[0]
    if isinstance(t, type) and issubclass(t, Enum):
        values = [m.value for m in t]
        words = " or ".join(filter(None, [", ".join(values[:-1]), values[-1]]))
        return f"{words} (one of {values})"
    if t in _EXPECTED:
        return _EXPECTED[t]
    return "a list" if typing.get_origin(t) is list else f"a value of type {t or 'unknown'}"


def _container(node: Any) -> Any:
    """An OmegaConf node as plain Python containers, interpolations resolved against its root."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def options_of(loader: str, raw: Mapping[str, Any] | None) -> Any:
    """``raw`` (``dataset.options``) as an instance of ``loader``'s (frozen) options dataclass: the one
    validation of a dataset's options. An unknown (or renamed) key, a value of the wrong type, a
    value outside an enumeration or a range (the dataclass's ``__post_init__``) is a
    :class:`ConfigError` naming ``dataset.options.<key>``, the value and what is expected."""
    _, options_class = _loader(loader)
    raw = dict(raw or {})
    valid = [f.name for f in dataclasses.fields(options_class)]
    for old, new in getattr(options_class, "RENAMED", {}).items():
        if old in raw:
            default = getattr(options_class(), new)
            raise ConfigError(f"{loader}: dataset.options.{old} is now dataset.options.{new} "
                              f"(e.g. {new}={[raw[old]]!r}; the default is {default!r})")
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"dataset.options.{unknown[0]} is not an option of loader {loader!r}"
                         + (f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else "")
                         + f"; valid options: {', '.join(valid) or 'none'}")
    try:
        schema = OmegaConf.structured(options_class)
        OmegaConf.set_readonly(schema, False)  # a frozen dataclass's node is read-only
        merged = OmegaConf.merge(schema, raw)
    except OmegaConfBaseException as e:
        key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "?")
        raise ConfigError(f"dataset.options.{key}={raw.get(key)!r} (loader {loader!r}) is not "
                          f"accepted; expected {_expected(options_class, key)}") from None
    return OmegaConf.to_object(merged)


def validated_options(cfg: Any) -> Any:
    """The typed options of a dataset config (its loader's options dataclass instance, defaults
    filled in), validated by :func:`options_of`. ``cfg``: anything with ``loader`` and
    ``options`` (the DictConfig Hydra composes, a DatasetConfig, DatasetSettings)."""
    if isinstance(cfg, DatasetSettings):
        return cfg.options
    options = _container(cfg.options)
    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    return options_of(str(cfg.loader or ""), options)


def dataset_settings(cfg: Any) -> DatasetSettings:
    """THE boundary from a dataset config to typed settings: ``cfg`` (the DictConfig Hydra
    composes, a :class:`DatasetConfig`, or a mapping of its keys) checked against
    :class:`DatasetConfig`, its options against the loader's dataclass, as a frozen
    :class:`DatasetSettings`. Settings already typed are returned as they are."""
    if isinstance(cfg, DatasetSettings):
        return cfg
    if isinstance(cfg, DatasetConfig):
        config = cfg
    else:
        raw = _container(cfg)
        try:
            config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), raw))
        except OmegaConfBaseException as e:
            key = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "?")
            raise ConfigError(f"dataset.{key} is not accepted ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]})") from None
    n_folds = config.n_folds
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1:
        raise ConfigError(f"dataset.n_folds={n_folds!r} is not accepted; expected an integer >= 1")
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(DatasetSettings)}
    return DatasetSettings(**{**values, "personas": tuple(str(p) for p in config.personas),
                              "options": validated_options(config)})


def loader_stats_text(cfg: Any, data_dir: str | Path | None = None) -> str | None:
    """The dataset's own statistics text (:attr:`LoaderSpec.stats`), None when it declares none."""
    dataset = dataset_settings(cfg)
    spec = loader_spec(dataset.loader)
    return None if spec.stats is None else spec.stats(dataset, data_dir)


def declared_folds(cfg: Any) -> int:
    """How many folds the dataset of ``cfg`` has, by what its loader declares (no data is read):
    the loader's own ``folds`` function when it brings its folds, else ``dataset.n_folds``.
    Raises :class:`ConfigError` when a k-fold split is asked for fewer than 2 folds."""
    dataset = dataset_settings(cfg)  # an unknown loader: the error listing the valid ones
    spec = loader_spec(dataset.loader)
    if spec.folds is not None:
        return int(spec.folds(dataset))
    n = dataset.n_folds
    least = 2 if spec.kfold else 1
    if n < least:
        raise ConfigError(f"dataset.n_folds={n!r} is not accepted for loader {dataset.loader!r}; "
                          f"expected an integer >= {least}" + (" (a k-fold split)" if spec.kfold else ""))
    return n


def check_fold(cfg: Any, fold: int) -> None:
    """``fold`` is one of the folds the dataset declares (:func:`declared_folds`); else a
    :class:`ConfigError` naming the dataset's folds."""
    dataset = dataset_settings(cfg)
    n = declared_folds(dataset)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n:
        raise ConfigError(f"config: fold={fold!r} is not accepted; dataset {dataset.name!r} declares "
                          f"{n} fold(s): expected " + ("0" if n == 1 else f"one of 0..{n - 1}"))


def load_claimset(cfg: Any, data_dir: str | Path | None = None) -> ClaimSet:
    """Load, split and persona-filter the dataset of ``cfg`` (:class:`DatasetSettings`, or a
    config :func:`dataset_settings` converts)."""
    dataset = dataset_settings(cfg)
    load, _ = _loader(dataset.loader)
    claimset = load(dataset, data_dir)
    if not claimset.claims:
        raise ConfigError(f"dataset {dataset.name!r} (loader {dataset.loader}) produced no "
                         f"claims: {claimset.description}")
    if not claimset.folds:
        claimset.folds = assign_folds(claimset.claims, dataset.n_folds, dataset.split_seed)
    missing = {c.question_id for c in claimset.claims} - set(claimset.folds)
    if missing:
        raise ConfigError(f"dataset {claimset.name!r}: {len(missing)} question id(s) have no fold, "
                         f"e.g. {sorted(missing)[:3]}")
    return filter_personas(claimset, list(dataset.personas))


def filter_personas(claimset: ClaimSet, wanted: list[str]) -> ClaimSet:
    """Keep only ``wanted`` personas (all when empty); unknown ids: an error listing valid ones."""
    if not wanted:
        return claimset
    valid = sorted(claimset.personas)
    unknown = [p for p in wanted if p not in claimset.personas]
    if unknown:
        raise ConfigError(f"dataset {claimset.name!r}: unknown persona(s) {unknown} in "
                         f"dataset.personas; valid persona ids: {valid}")
    keep = set(wanted)
    claims = [c for c in claimset.claims if c.persona_id in keep]
    questions = {c.question_id for c in claims}
    return ClaimSet(name=claimset.name,
                    personas={p: v for p, v in claimset.personas.items() if p in keep},
                    claims=claims, rule=claimset.rule,
                    folds={q: f for q, f in claimset.folds.items() if q in questions},
                    description=claimset.description)
