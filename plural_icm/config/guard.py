"""The command line, checked before Hydra writes anything.

Hydra lets ``+key=value`` add keys the schemas do not have, so a typo (``+icm.alpah=1``) would be
ignored silently; and every override is written to ``.hydra/overrides.yaml``, the run's
``config.yaml`` and W&B's argv record. :func:`check_overrides` refuses:

* a key added with ``+``/``++`` inside the project's own config (a group such as ``icm.`` or a
  top-level key) that the schema does not have, naming the closest valid key;
* any key that looks like a secret (:func:`plural_icm.config.secrets.is_secret_key`), Hydra's own
  ``hydra.*`` keys included, a secret-looking key inside a value (``{HF_TOKEN: ...}``), and a
  value that holds a secret (:func:`plural_icm.config.secrets.secret_in_text`): secrets come
  from environment variables (``model.api_key_env`` names the one for the OpenAI backend);
* an empty ``paths.*`` value (it would put results at the file system's root).

``launch.py`` calls :func:`command_line_error` and :func:`output_folder_error` (the output folder
is not the root, a file, unwritable or full) before Hydra starts, so nothing is written for a
refused command line. :class:`GuardCallback` (a Hydra callback registered in ``conf/config.yaml``)
scrubs the ``.hydra/`` files of each job with :func:`plural_icm.config.secrets.scrub_secrets` (a
secret set in a local config file, e.g. under ``hydra.job.env_set``, is not kept there either).

:func:`explain_parse_error` turns Hydra's ``LexerNoViableAltException`` for a value with spaces
or non-ASCII characters into the quoting that works.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from pathlib import Path
from typing import Any, Sequence

from plural_icm.config.secrets import (is_secret_key, scrub_overrides, scrub_secrets,
                                       secret_in_text, secret_key_in)
from plural_icm.errors import ConfigError

log = logging.getLogger(__name__)

#: Config groups selected by name (``+experiment=collaborative`` is a choice, not a key).
GROUP_NAMES = ("model", "dataset", "condition", "icm", "inference", "logger", "experiment",
               "local")


def _schema_fields(cls: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap(tp: Any) -> Any:
    """``Optional[X]`` -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def unknown_key(key: str) -> tuple[str, list[str]] | None:
    """(first unknown dotted prefix, valid keys at that level) of ``key`` against the schema, or
    None when the key exists (or lies inside a free-form dict such as ``dataset.options``)."""
    from plural_icm.config.schema import Config

    node: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            origin = typing.get_origin(node) or node
            return None if origin in (dict, list, typing.Any) or node is typing.Any else \
                (".".join(parts[:i + 1]), [])
        fields = _schema_fields(node)
        if part not in fields:
            return ".".join(parts[:i + 1]), sorted(fields)
        node = _unwrap(fields[part])
    return None


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


#: The project's config directory (the groups' choices are its YAML files).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The choices of a config group: the names of its YAML files."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def _suggest(bad: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(bad, list(valid), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _choice_values(o: Any) -> list[str]:
    """The choice(s) an override of a group selects (each value of a ``a,b`` sweep); [] for what
    cannot be listed (ranges, globs, null)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = o.value()
    if isinstance(value, ChoiceSweep):
        return [str(v) for v in value.list]
    if o.is_sweep_override() or value is None:
        return []
    return [str(value)]


def check_group_choice(text: str, o: Any, conf_dirs: Sequence[Path] | None = (CONF_DIR,)) -> None:
    """A choice of one of the project's groups (``model=llama7b``) that has no YAML file in any of
    ``conf_dirs`` (the project's and those a ``hydra.searchpath``/``--config-dir`` adds): an error
    naming the valid choices and the closest one (Hydra's own message offers no guess). None:
    a search path this check cannot read (``pkg://``) may add choices, so Hydra decides."""
    if conf_dirs is None:
        return
    group = o.key_or_group
    valid = sorted({c for d in conf_dirs for c in group_choices(group, Path(d))})
    if not valid:
        return
    for v in _choice_values(o):
        if v not in valid:
            raise ConfigError(f"command line: {text!r}: {group} has no choice {v!r} (choices: "
                              f"{', '.join(valid)}){_suggest(v, valid)}")


def config_dirs(parsed: Sequence[Any], config_dir: str | None = None) -> list[Path] | None:
    """The folders whose YAML files are group choices: the project's ``conf/``, ``--config-dir``
    and every ``file://`` entry of a ``hydra.searchpath`` override (None when an entry is of
    another kind, e.g. ``pkg://``, whose choices cannot be listed here)."""
    dirs = [CONF_DIR] + ([Path(config_dir)] if config_dir else [])
    for o in parsed:
        if o.key_or_group != "hydra.searchpath" or o.is_delete():
            continue
        value = _override_value(o)
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if not entry.startswith("file://"):
                return None
            dirs.append(Path(entry[len("file://"):]))
    return dirs


def check_key(text: str, key: str) -> None:
    """A key set without ``+`` that the schema does not have (``icm.alpah=1``): an error naming
    the closest key (Hydra's own message suggests adding it with ``+``, which is wrong here)."""
    found = unknown_key(key)
    if found is None:
        return
    bad, valid = found
    parent = bad.rsplit(".", 1)[0] + "." if "." in bad else ""
    close = difflib.get_close_matches(bad.rsplit(".", 1)[-1], valid, n=2, cutoff=0.6)
    hint = f"; did you mean {' or '.join(parent + c for c in close)}?" if close else ""
    raise ConfigError(f"command line: {text!r} sets {bad}, which the config schema does not "
                      f"have (valid keys there: {valid}){hint}")


def check_overrides(overrides: Sequence[str], config_dir: str | None = None) -> None:
    """Raise :class:`ConfigError` for an unknown ``+`` key, a secret or an empty path setting,
    an unknown choice of a group or an unknown key set without ``+`` (with the closest valid
    one; ``config_dir``: ``--config-dir``, whose YAML files are choices too)."""
    parsed = _parse(overrides)
    dirs = config_dirs(parsed, config_dir)
    for text, o in zip(overrides, parsed):
        key = o.key_or_group
        check_no_secret(text, key, _override_value(o))
        if key.startswith("hydra/") or key.startswith("hydra."):
            continue
        if key in GROUP_NAMES and not o.is_delete():
            check_group_choice(text, o, dirs)
            continue
        if (o.is_add() or o.is_force_add()) and key not in GROUP_NAMES and "/" not in key:
            found = unknown_key(key)
            if found is not None:
                bad, valid = found
                close = difflib.get_close_matches(bad.rsplit(".", 1)[-1], valid, n=1)
                hint = f"; did you mean {bad.rsplit('.', 1)[0] + '.' if '.' in bad else ''}" \
                       f"{close[0]}?" if close else ""
                raise ConfigError(f"command line: {text!r} adds the key {bad}, which the config "
                                  f"schema does not have (valid keys there: {valid}){hint}")
        if not (o.is_add() or o.is_force_add() or o.is_delete()) and "/" not in key:
            check_key(text, key)
        if key.startswith("paths.") and not o.is_sweep_override() and \
                not str(o.get_value_element_as_str()).strip().strip("'\""):
            raise ConfigError(f"command line: {key} is empty; expected a directory (leave it out "
                              f"to use the default)")


SECRET_ADVICE = ("secrets are never passed as overrides (Hydra writes every override, its own "
                 "hydra.* keys included, to .hydra/ and W&B records the command line). Put it in "
                 "an environment variable (model.api_key_env names the one the OpenAI backend "
                 "reads; HF_TOKEN and WANDB_API_KEY are read from the environment as they are)")


def _override_value(o: Any) -> Any:
    """The parsed value of an override (a dict for ``{HF_TOKEN: x}``; a sweep's choices)."""
    try:
        value = o.value()
    except Exception:  # noqa: BLE001 - a value the parser keeps as text
        return None
    choices = getattr(value, "list", None)
    return list(choices) if isinstance(choices, list) else value


def check_no_secret(text: str, key: str, value: Any = None) -> None:
    """Refuse an override whose key, any key inside its value, or its text looks like a secret.

    Every key counts, ``hydra.*`` included: ``+hydra.job.env_set={HF_TOKEN: ...}`` would
    otherwise be written to ``.hydra/hydra.yaml`` and the W&B run's files.
    """
    if is_secret_key(key):
        raise ConfigError(f"command line: {key} looks like a secret; {SECRET_ADVICE}")
    inner = secret_key_in(value, key) if isinstance(value, (dict, list)) else None
    if inner:
        raise ConfigError(f"command line: {inner} (inside the value of {key}) looks like a "
                          f"secret; {SECRET_ADVICE}")
    why = secret_in_text(text)
    if why:
        raise ConfigError(f"command line: the value of {key} looks like a secret ({why}); "
                          f"{SECRET_ADVICE}")


def explain_parse_error(argv: Sequence[str]) -> str | None:
    """A hint for the first override Hydra's lexer rejects (None when all parse)."""
    from hydra.errors import OverrideParseException

    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            _parse([arg])
        except OverrideParseException as exc:
            key, value = arg.split("=", 1)
            return (f"command line: Hydra cannot parse {arg!r} ({str(exc).splitlines()[0]}). "
                    f"A value with spaces, non-ASCII letters or characters such as ()[]{{}},:= "
                    f"must be quoted for Hydra inside the shell's quotes, e.g. "
                    f"'{key}=\"{value}\"' (README, 'Paths with spaces or accents').")
    return None


def _scrub_yaml(path: Path) -> None:
    from omegaconf import OmegaConf

    from plural_icm.utils.io import atomic_write_text

    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = scrub_overrides(data) if isinstance(data, list) else scrub_secrets(data)
    if isinstance(clean, dict) and isinstance(clean.get("hydra"), dict):
        task = clean["hydra"].get("overrides", {}).get("task")
        if isinstance(task, list):
            clean["hydra"]["overrides"]["task"] = scrub_overrides(task)
    if clean != data:
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(clean)))


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra < 1.1
    _HydraCallback = object  # type: ignore[assignment,misc]


class GuardCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback scrubbing each job's ``.hydra/`` files of secret-looking keys.

    (Hydra turns exceptions raised in callbacks into warnings, so the checks that must stop a
    run live in :func:`command_line_error`, called by ``launch.py`` before Hydra starts, and in
    :func:`plural_icm.pipeline.task.run_task`.)
    """

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        out = Path(config.hydra.runtime.output_dir) / str(subdir)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            _scrub_yaml(out / name)


def hydra_overrides(argv: Sequence[str]) -> list[str]:
    """The overrides of a ``launch.py`` command line (Hydra's own argument parser)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    return list(args.overrides or [])


def command_line_error(argv: Sequence[str]) -> str | None:
    """The message for the first bad override of ``argv`` (None when all are fine): one Hydra
    cannot parse (with the quoting that works), an unknown ``+`` key, a secret, an empty path."""
    from hydra._internal.utils import get_args_parser

    overrides = hydra_overrides(argv)
    hint = explain_parse_error(overrides)
    if hint:
        return hint
    args, _ = get_args_parser().parse_known_args(list(argv))
    try:
        check_overrides(overrides, getattr(args, "config_dir", None))
    except ConfigError as exc:
        return str(exc)
    return None


#: Below this many free bytes the output folder's file system counts as full.
MIN_FREE_BYTES = 1 << 20


def output_folders(argv: Sequence[str], environ: Any = None) -> list[tuple[str, str]]:
    """(where it comes from, folder) of every folder a launch writes into, as far as they are
    known before Hydra composes the config: ``paths.output_dir`` and ``hydra.run.dir`` /
    ``hydra.sweep.dir`` from the command line, else ``PLURAL_ICM_OUTPUT``, ``PLURAL_ICM_ROOT``
    or the current folder (``conf/config.yaml``'s defaults). Values with interpolations are left
    to the config's own checks."""
    import os

    env = os.environ if environ is None else environ
    overrides = hydra_overrides(argv)
    found: list[tuple[str, str]] = []
    for o in _parse(overrides):
        key = o.key_or_group
        if key in ("paths.output_dir", "hydra.run.dir", "hydra.sweep.dir") and \
                not o.is_sweep_override() and not o.is_delete():
            value = str(o.get_value_element_as_str()).strip().strip("'\"")
            if value and "${" not in value:
                found.append((key, value))
    if not any(k == "paths.output_dir" for k, _ in found):
        if env.get("PLURAL_ICM_OUTPUT", "").strip():
            found.append(("PLURAL_ICM_OUTPUT", env["PLURAL_ICM_OUTPUT"]))
        else:
            root = env.get("PLURAL_ICM_ROOT", "").strip() or os.getcwd()
            found.append(("the default output folder", str(Path(root) / "outputs")))
    return found


def folder_problem(folder: str | Path) -> str | None:
    """Why results cannot be written under ``folder`` (None when they can): the file system's
    root, a file, a folder (or the nearest existing parent) that cannot be written, a full disk.
    Writability is probed with a temporary file (removed), so it holds for root and ACLs too."""
    import errno
    import os
    import shutil
    import tempfile

    path = Path(os.path.expanduser(str(folder))).absolute()
    if Path(os.path.normpath(path)) == Path(path.anchor):
        return "is the file system's root; results go in a folder of their own"
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"{existing} is a broken symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is below {existing}, which is a file"
        return f"{what}, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".plural_icm-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "read-only" if exc.errno == errno.EROFS else (exc.strerror or str(exc))
        where = "" if existing == path else f" (its nearest existing parent {existing})"
        return f"cannot be written{where}: {reason}"
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return None
    if free < MIN_FREE_BYTES:
        return f"is on a full file system ({free} bytes free)"
    return None


def output_folder_error(argv: Sequence[str] | None = None) -> str | None:
    """The message for the first output folder of ``argv`` that cannot take results (None when
    all can); ``launch.py`` asks before Hydra creates its run folder there."""
    import sys

    for source, folder in output_folders(sys.argv[1:] if argv is None else argv):
        problem = folder_problem(folder)
        if problem:
            return (f"output folder {folder} ({source}) {problem}; set PLURAL_ICM_OUTPUT or "
                    f"paths.output_dir to a folder that can be written")
    return None


__all__ = ["check_overrides", "check_group_choice", "check_key", "group_choices", "output_folders", "folder_problem", "output_folder_error", "unknown_key", "explain_parse_error", "command_line_error",
           "hydra_overrides", "GuardCallback"]
