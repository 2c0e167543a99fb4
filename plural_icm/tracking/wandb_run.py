"""One Weights & Biases run per Hydra job, as a view of the results on disk.

The result files under ``<output_dir>/results`` and ``<output_dir>/searches`` are the record; W&B
is a convenience view. Hence the rules of this module:

* **W&B never fails an experiment.** Any error of W&B itself (import, ``init`` timeout, service
  crash, a failing ``log``) is caught, warned about once, and the run continues with a no-op
  logger. Exceptions of the *experiment* inside ``with job_run(...)`` are re-raised unchanged.
* **Started on first use.** ``wandb.init`` runs when the job first logs something, so a relaunch
  that skips a complete cell (or a search job whose searches are all done) starts no run at all.
  A job that fails before logging anything still gets a run recording the failure.
* **Always finished.** The run is finished on success (``exit_code=0``) and on failure
  (``exit_code=1`` and summary keys ``status="failed"``, ``error``, ``error_type``), so Hydra
  multiruns never merge or hang on an open run.
* **Deterministic id, ``resume="allow"``.** The id is a hash of the job identity (project,
  output dir, run tag, job type, name, tags), so a requeued SLURM job continues the same run
  online. Offline, W&B ignores ``resume`` and writes a new ``offline-run-*-<id>`` directory per
  attempt; the new attempt re-logs everything (search trajectories are replayed from their
  checkpoints), so the earlier directories of the same id are moved to ``wandb/superseded/`` when
  it starts: ``<dir>/wandb/offline-run-*`` holds exactly one directory per run id and
  ``wandb sync <dir>/wandb/offline-run-*`` cannot overwrite a run with an older attempt.
* **Grouping**: ``group`` = the sweep (``logger.group``, else ``<experiment>-<run_tag>``, with
  ``grid`` when no experiment is chosen), ``job_type`` = the stage (search, cell, collaborative,
  report), tags ``model:…``, ``dataset:…``, ``condition:…``, ``fold:…``, ``persona:…``.
* **Offline by default** (no account, no network), ``online`` or ``disabled``.
  ``logger.name: none`` or ``logger.mode: disabled`` (or ``WANDB_MODE=disabled`` in the
  environment) never imports wandb and writes nothing.
* **No secrets.** Config keys that look secret (:func:`plural_icm.config.secrets.is_secret_key`:
  whole words ``key``, ``token``, ``secret``, ``password``, ...) are dropped before logging.

Usage (inside the Hydra task function)::

    with job_run(cfg, job_type="cell", name="llama70b/gqa/icm/fold0",
                  tags={"model": "llama70b", "dataset": "gqa", "condition": "icm", "fold": 0},
                  hydra_choices=HydraConfig.get().runtime.choices) as wb:
        wb.log_metrics(metrics)                           # nested dict -> summary "overall/accuracy"
        wb.log_table("predictions", predictions_df)
        wb.log_files_artifact("cell-…", "cell", [paths], metadata)

Search trajectories, tables and artifacts go through :mod:`plural_icm.tracking.searches`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

log = logging.getLogger(__name__)

# Config keys whose *name* looks secret are never logged: the one test and scrubber of the package.
from plural_icm.config.secrets import is_secret_key, scrub_secrets  # noqa: E402

#: Seconds W&B may take to start its service and the run before we give up and go no-op. The
#: wandb default (90 s) is long for a cell that takes seconds on the demo.
INIT_TIMEOUT_S = 60.0

#: At most this many points per persona trajectory (evenly thinned, first and last kept): W&B
#: history with 10^5 rows makes the UI slow and was a source of rate-limit errors online.
MAX_TRAJECTORY_POINTS = 5000

#: At most this many rows per logged table (W&B's own limit for ``run.log`` tables is 10 000).
MAX_TABLE_ROWS = 10000

# After W&B failed to start once in this process, later cells of a Hydra multirun skip it instead
# of waiting for another timeout each (one warning, not one per cell).
_PROCESS_DISABLED_REASON: str | None = None
_WARNED: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg)


# --------------------------------------------------------------------------------------------
# config helpers
# --------------------------------------------------------------------------------------------

def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Resolved plain-dict config (DictConfig, dataclass or mapping).

    Interpolations that cannot be resolved outside a Hydra job (``${hydra:...}``) fall back to the
    unresolved strings rather than failing the run.
    """
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return dict(cfg) if isinstance(cfg, Mapping) else {"value": repr(cfg)}
    if not isinstance(cfg, (DictConfig, ListConfig)):
        if isinstance(cfg, Mapping):
            return json.loads(json.dumps(dict(cfg), default=str))
        cfg = OmegaConf.structured(cfg)
    try:
        out = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception as exc:  # unresolvable interpolation outside Hydra
        _warn_once("resolve", f"W&B config logged unresolved: {type(exc).__name__}: {exc}")
        out = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class TrackingSettings:
    """What the tracking reads of a job's configuration, typed, made once at the boundary
    (:meth:`from_config` for a config or mapping; the pipeline builds it from its typed settings)."""

    name: str = "wandb"
    """``logger.name``: ``none`` turns W&B off."""
    mode: str = "offline"
    project: str | None = None
    entity: str | None = None
    group: str | None = None
    dir: str | None = None
    """``logger.dir`` (else ``output_dir``, else ``.``)."""
    run_tag: str = "main"
    output_dir: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    """The job's configuration as plain containers, logged as the run's config (secrets
    scrubbed when the run starts)."""

    @classmethod
    def from_config(cls, cfg: Any) -> "TrackingSettings":
        """From a composed config (DictConfig, dataclass or mapping), made a plain dict once."""
        if isinstance(cfg, TrackingSettings):
            return cfg
        plain = config_to_dict(cfg)
        logger = plain.get("logger") or {}
        paths = plain.get("paths") or {}

        def given(value: Any, default: Any = None) -> Any:
            return default if value is None else value

        return cls(name=str(given(logger.get("name"), "wandb")),
                   mode=str(given(logger.get("mode"), "offline")),
                   project=logger.get("project"), entity=logger.get("entity"),
                   group=logger.get("group"), dir=logger.get("dir"),
                   run_tag=str(given(plain.get("run_tag"), "main")),
                   output_dir=paths.get("output_dir"), config=plain)


def _current_hydra_choices() -> dict[str, Any]:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return dict(HydraConfig.get().runtime.choices)
    except Exception:
        pass
    return {}


def deterministic_run_id(*parts: Any) -> str:
    """A W&B run id from the identity of a cell: same inputs -> same id (``[0-9a-f]``, 24 chars)."""
    blob = json.dumps([str(p) if not isinstance(p, (dict, list)) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def _metric_safe(name: str) -> str:
    """A persona id usable inside a metric key (W&B treats ``/`` as a section separator)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)) or "_"


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """``{"overall": {"accuracy": .7}}`` -> ``{"overall/accuracy": .7}``; numpy scalars to Python."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
                v = v.item()
            out[key] = v
    return out


# --------------------------------------------------------------------------------------------
# the run objects
# --------------------------------------------------------------------------------------------

class NullJobRun:
    """The no-op logger: same interface, does nothing. Used for ``disabled`` and after errors."""

    enabled = False
    started = False
    run_id: str | None = None
    dir: Path | None = None
    job_type: str | None = None
    #: True when this attempt replaced earlier offline attempts of the same run id (it must then
    #: re-log what they may have held).
    superseded_earlier = False
    #: True when W&B itself continues an earlier attempt (online ``resume``): nothing to replay.
    continues_earlier = False

    def __init__(self, reason: str = "disabled") -> None:
        self.reason = reason

    def start(self) -> bool:
        return False

    def log_trajectory(self, persona: str, rows: Iterable[Mapping[str, Any]],
                       prefix: str = "search") -> None:
        pass

    def log_search_row(self, label: str, row: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        pass

    def log_table(self, name: str, dataframe: Any, max_rows: int = MAX_TABLE_ROWS) -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log(self, data: Mapping[str, Any]) -> None:
        pass

    def log_images(self, images: Mapping[str, Path]) -> None:
        pass

    def log_files_artifact(self, name: str, type: str, files: Iterable[Path],
                           metadata: Mapping[str, Any] | None = None,
                           root: Path | None = None) -> None:
        pass

    def use_files_artifact(self, name: str, type: str, files: Iterable[Path],
                           metadata: Mapping[str, Any] | None = None) -> None:
        pass

    def finish(self, exit_code: int = 0, error: BaseException | None = None) -> None:
        pass


class JobRun(NullJobRun):
    """A W&B run, started by the first call that logs something. Every method swallows W&B
    errors (warn once, then become a no-op)."""

    enabled = True

    def __init__(self, init_kwargs: dict[str, Any], run_id: str, wb_dir: Path) -> None:
        super().__init__("live")
        self._init_kwargs = init_kwargs
        self._run: Any = None
        self.run_id = run_id
        self.job_type = init_kwargs.get("job_type")
        self._wb_dir = Path(wb_dir)
        self.dir = None
        self._defined: set[str] = set()
        self._finished = False

    # -- start on first use --
    def start(self) -> bool:
        """Start the W&B run now (idempotent); False when W&B is off or failed to start."""
        global _PROCESS_DISABLED_REASON
        if self._run is not None or not self.enabled:
            return self.enabled
        if _PROCESS_DISABLED_REASON is not None:
            self.enabled = False
            return False
        try:
            self._wb_dir.mkdir(parents=True, exist_ok=True)
            if self._init_kwargs["mode"] == "offline":
                self.superseded_earlier = supersede_offline_attempts(self._wb_dir, self.run_id)
            import wandb

            run = wandb.init(**self._init_kwargs,
                             settings=_make_settings(wandb, dict(
                                 init_timeout=INIT_TIMEOUT_S, console="off", save_code=False,
                                 finish_timeout=120.0)))
            if run is None:
                raise RuntimeError("wandb.init returned None")
        except Exception as exc:  # W&B must never fail the experiment
            _PROCESS_DISABLED_REASON = f"{type(exc).__name__}: {exc}"
            _warn_once("init", f"W&B could not start ({_PROCESS_DISABLED_REASON}); results are "
                               "still written to disk; W&B is off for the rest of this process")
            self.enabled = False
            return False
        self._run = run
        self.started = True
        self.continues_earlier = bool(getattr(run, "resumed", False))
        self.dir = Path(getattr(run, "dir", "") or self._wb_dir).parent
        return True

    # -- error handling: W&B problems never reach the experiment --
    def _fail(self, what: str, exc: BaseException) -> None:
        _warn_once(f"call:{what}", f"W&B {what} failed ({type(exc).__name__}: {exc}); "
                                   "continuing without W&B for this run")
        self.enabled = False

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if not self.start():
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            self._fail(what, exc)

    # -- public API --
    def log_trajectory(self, persona: str, rows: Iterable[Mapping[str, Any]],
                       prefix: str = "search") -> None:
        """Log a whole trajectory at once (thinned to :data:`MAX_TRAJECTORY_POINTS`): the rows
        of :meth:`log_search_row`, for a trajectory read back from disk."""
        rows = list(rows)
        if len(rows) > MAX_TRAJECTORY_POINTS:
            idx = sorted({round(i * (len(rows) - 1) / (MAX_TRAJECTORY_POINTS - 1))
                          for i in range(MAX_TRAJECTORY_POINTS)})
            rows = [rows[i] for i in idx]
        for i, row in enumerate(rows):
            self.log_search_row(persona, {"iteration": i, **row}, prefix)

    def log_search_row(self, label: str, row: Mapping[str, Any], prefix: str = "search") -> None:
        """One search iteration as ``<prefix>/<label>/<key>`` against the shared step metric
        ``<prefix>/iteration`` (``define_metric("<prefix>/*", step_metric="<prefix>/iteration")``):
        every search of the run is one line over its own iterations."""
        self._guard("log_search_row", self._log_search_row, label, row, prefix)

    def _log_search_row(self, label: str, row: Mapping[str, Any], prefix: str) -> None:
        step_key = f"{prefix}/iteration"
        if prefix not in self._defined:
            self._run.define_metric(step_key)
            self._run.define_metric(f"{prefix}/*", step_metric=step_key)
            self._defined.add(prefix)
        base = f"{prefix}/{metric_safe(label)}"
        data = {f"{base}/{k}": _loggable(v) for k, v in row.items() if k != "iteration"}
        data[step_key] = row.get("iteration")
        self._run.log(data)

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Put a (nested) metrics dict into the run summary, keys joined with ``/``."""
        self._guard("log_metrics", self._log_metrics, metrics, prefix)

    def _log_metrics(self, metrics: Mapping[str, Any], prefix: str) -> None:
        for k, v in flatten(metrics, prefix).items():
            self._run.summary[k] = _loggable(v)

    def log_table(self, name: str, dataframe: Any, max_rows: int = MAX_TABLE_ROWS) -> None:
        """Log a pandas DataFrame as a W&B Table (first ``max_rows`` rows, with a warning)."""
        self._guard("log_table", self._log_table, name, dataframe, max_rows)

    def _log_table(self, name: str, df: Any, max_rows: int) -> None:
        import wandb

        if len(df) > max_rows:
            _warn_once(f"table:{name}", f"W&B table {name!r}: logging the first {max_rows} of "
                                        f"{len(df)} rows (the full table is on disk)")
            df = df.head(max_rows)
        df = df.copy()
        for c in df.columns:  # lists/dicts in cells are not valid table values
            if df[c].dtype == object:
                df[c] = df[c].map(lambda v: json.dumps(v, default=str)
                                  if isinstance(v, (list, dict, tuple)) else v)
        self._run.log({name: wandb.Table(dataframe=df)})

    def log_images(self, images: Mapping[str, Path]) -> None:
        """Log image files (figures) as ``wandb.Image`` under their keys."""
        self._guard("log_images", self._log_images, images)

    def _log_images(self, images: Mapping[str, Path]) -> None:
        import wandb

        self._run.log({k: wandb.Image(str(p)) for k, p in images.items()})

    def log_files_artifact(self, name: str, type: str, files: Iterable[Path],
                           metadata: Mapping[str, Any] | None = None,
                           root: Path | None = None) -> None:
        """Log files as an output Artifact of this run (``name`` made W&B-safe; the files named
        by their path under ``root``, else by their file name)."""
        self._guard("log_artifact", self._artifact, name, type, files, metadata, False, root)

    def use_files_artifact(self, name: str, type: str, files: Iterable[Path],
                           metadata: Mapping[str, Any] | None = None) -> None:
        """Declare files this run read as an input Artifact (same name and files as the run that
        logged them, hence the same digest: W&B links the two runs through that version)."""
        self._guard("use_artifact", self._artifact, name, type, files, metadata, True)

    def _artifact(self, name: str, type: str, files: Iterable[Path],
                  metadata: Mapping[str, Any] | None, use: bool, root: Path | None = None) -> None:
        import wandb

        art = wandb.Artifact(artifact_safe(name), type=type,
                             metadata={k: _loggable(v) for k, v in flatten(metadata or {}).items()})
        for f in files:
            if Path(f).is_file():
                art.add_file(str(f), name=(Path(f).relative_to(root).as_posix() if root
                                           else Path(f).name))
        if not use:
            self._run.log_artifact(art)
        elif self._init_kwargs["mode"] != "offline":
            self._run.use_artifact(art)
        else:
            # Offline W&B refuses use_artifact ("Cannot use artifact when in offline mode"). Online,
            # use_artifact(<draft>) sends exactly this: the artifact record with use_after_commit,
            # which `wandb sync` replays (commit, then mark used by this run).
            try:
                self._run._log_artifact(art, is_user_created=True, use_after_commit=True)
            except (AttributeError, TypeError) as exc:  # a wandb without this private method
                _warn_once("use_offline", f"W&B offline: cannot record artifact inputs with this "
                                          f"wandb ({type(exc).__name__}: {exc}); skipped")

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add keys to the run config (secrets scrubbed)."""
        self._guard("log_config", lambda c: self._run.config.update(c, allow_val_change=True),
                    scrub_secrets(dict(config)))

    def log(self, data: Mapping[str, Any]) -> None:
        """Plain history row."""
        self._guard("log", lambda d: self._run.log(d),
                    {k: _loggable(v) for k, v in flatten(data).items()})

    def finish(self, exit_code: int = 0, error: BaseException | None = None) -> None:
        """Finish the run; on failure record ``status``, ``error``, ``error_type`` first (a run
        that never started is started for that). A run that never started and did not fail
        (a skipped cell) stays unstarted: no W&B run at all; nor does one that never started and
        failed with a :class:`~plural_icm.errors.UserError` (``fold=7``, a dataset without its
        data: raised before any work, printed as its message; a failed run would only be one
        more thing for ``wandb sync`` to upload)."""
        from plural_icm.errors import UserError

        if self._finished:
            return
        self._finished = True
        if self._run is None and (error is None or isinstance(error, UserError)):
            return
        if error is not None:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            summary = {"status": "failed", "error_type": type(error).__name__,
                       "error": f"{type(error).__name__}: {error}"[:2000],
                       "error_traceback": tb[-4000:]}
        else:
            summary = {"status": "finished"}
        self._guard("log_metrics", self._log_metrics, summary, "")
        if self._run is None:
            return
        try:  # finish even when an earlier call disabled us: the service must not stay open
            self._run.finish(exit_code=exit_code)
        except Exception as exc:
            self._fail("finish", exc)


def _loggable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def metric_safe(name: str) -> str:
    """A name usable inside a metric key (W&B treats ``/`` as a section separator)."""
    return _metric_safe(name)


def artifact_safe(name: str) -> str:
    """An Artifact name: W&B allows letters, digits, ``-``, ``_`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(name)).strip("-")[:128] or "artifact"


# --------------------------------------------------------------------------------------------
# offline attempts of one run id
# --------------------------------------------------------------------------------------------

SUPERSEDED_DIR = "superseded"


def offline_attempts(wb_dir: str | Path, run_id: str) -> list[Path]:
    """The ``offline-run-*-<id>`` directories of one run id under ``<wb_dir>/wandb`` (oldest
    first: the directory names start with the start time)."""
    return sorted(Path(wb_dir, "wandb").glob(f"offline-run-*-{run_id}"))


def supersede_offline_attempts(wb_dir: str | Path, run_id: str) -> bool:
    """Move the earlier offline attempts of ``run_id`` to ``<wb_dir>/wandb/superseded/`` (kept,
    never deleted, never matched by ``wandb sync <wb_dir>/wandb/offline-run-*``). Returns whether
    there were any. Called before a new attempt starts, which then re-logs everything."""
    old = offline_attempts(wb_dir, run_id)
    if not old:
        return False
    dest = Path(wb_dir, "wandb", SUPERSEDED_DIR)
    dest.mkdir(parents=True, exist_ok=True)
    for d in old:
        target = dest / d.name
        k = 1
        while target.exists():
            target = dest / f"{d.name}.{k}"
            k += 1
        shutil.move(str(d), str(target))
        log.info("W&B: earlier offline attempt %s of run %s moved to %s (this attempt re-logs "
                 "everything it held)", d.name, run_id, target)
    return True


# --------------------------------------------------------------------------------------------
# start / context manager
# --------------------------------------------------------------------------------------------

def _mode(t: TrackingSettings) -> str:
    name = str(t.name or "none").lower()
    mode = str(t.mode or "offline").lower()
    if name == "none" or os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return "disabled"
    if mode not in ("offline", "online", "disabled"):
        _warn_once(f"mode:{mode}", f"logger.mode={mode!r} is not offline|online|disabled; "
                                   "using offline")
        mode = "offline"
    return mode


def group_name(cfg: TrackingSettings | Any, hydra_choices: Mapping[str, Any] | None = None) -> str:
    """The W&B group of a job: ``logger.group`` if set, else ``<experiment>-<run_tag>`` (the
    sweep: ``experiment=collaborative`` with ``run_tag=main`` -> ``collaborative-main``; no
    experiment -> ``grid-main``). ``python -m analysis.report --wandb`` uses the same names.
    ``cfg``: :class:`TrackingSettings`, or a config made into them."""
    t = TrackingSettings.from_config(cfg)
    if t.group:
        return str(t.group)[:128]
    choices = dict(hydra_choices) if hydra_choices is not None else _current_hydra_choices()
    experiment = choices.get("experiment") or "grid"
    return f"{experiment}-{t.run_tag}"[:128]


def start_job_run(cfg: TrackingSettings | Any, job_type: str, name: str,
                  tags: Mapping[str, Any] | None = None,
                  hydra_choices: Mapping[str, Any] | None = None,
                  identity: Any = None) -> NullJobRun:
    """The W&B run of one job (a cell, a search job, collaborative elicitation, a report), started
    on first use; a :class:`NullJobRun` when disabled. ``cfg``: :class:`TrackingSettings`, or a
    config (DictConfig, mapping) made into them once here.

    ``tags`` values may be lists (``persona: [a, b]`` -> tags ``persona:a``, ``persona:b``).
    ``identity`` (default: project, output dir, run tag, job type, name, tags) is hashed into the
    run id; pass the cell's result path for a stable id across code changes of the name.
    """
    t = TrackingSettings.from_config(cfg)
    mode = _mode(t)
    if mode == "disabled":
        return NullJobRun("disabled")
    if _PROCESS_DISABLED_REASON is not None:
        return NullJobRun(_PROCESS_DISABLED_REASON)

    tags = dict(tags or {})
    choices = dict(hydra_choices) if hydra_choices is not None else _current_hydra_choices()
    project = str(t.project or os.environ.get("WANDB_PROJECT") or "plural_icm")
    entity = t.entity or os.environ.get("WANDB_ENTITY") or None
    wb_dir = t.dir or t.output_dir or "."
    if "${" in str(wb_dir):  # unresolvable outside Hydra
        wb_dir = "."
    if identity is None:
        identity = [project, str(Path(str(t.output_dir)).resolve()) if t.output_dir else "",
                    t.run_tag, job_type, name, {k: str(v) for k, v in sorted(tags.items())}]
    run_id = deterministic_run_id(identity)

    config = scrub_secrets(dict(t.config))
    config["hydra_choices"] = scrub_secrets({k: v for k, v in choices.items()})
    config["cell"] = {k: v for k, v in tags.items()}
    tag_list = []
    for k, v in tags.items():
        for one in (v if isinstance(v, (list, tuple)) else [v]):
            if one is not None:
                tag_list.append(f"{k}:{one}"[:64])

    # Start-up: WANDB_START_METHOD=thread fixed start-up hangs in old wandb (< 0.18, before the
    # wandb-core service); 0.19+ ignore it. Set only if unset, never override the user.
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    init_kwargs = dict(project=project, entity=entity, group=group_name(t, choices),
                       job_type=job_type, name=name, tags=tag_list, config=config, id=run_id,
                       resume="allow", dir=str(wb_dir), mode=mode, reinit="finish_previous")
    return JobRun(init_kwargs, run_id, Path(wb_dir))


def _make_settings(wandb: Any, kwargs: dict[str, Any]) -> Any:
    """``wandb.Settings`` with the keys this wandb version knows (older versions lack some)."""
    for _ in range(len(kwargs) + 1):
        try:
            return wandb.Settings(**kwargs)
        except TypeError as exc:
            bad = [k for k in kwargs if k in str(exc)]
            if not bad:
                break
            kwargs = {k: v for k, v in kwargs.items() if k not in bad}
        except Exception:
            break
    return None


@contextmanager
def job_run(cfg: TrackingSettings | Any, job_type: str, name: str,
            tags: Mapping[str, Any] | None = None,
            hydra_choices: Mapping[str, Any] | None = None,
            identity: Any = None) -> Iterator[NullJobRun]:
    """Context manager around :func:`start_job_run`: the run is always finished; an exception
    inside the block marks the run failed (``exit_code=1``, ``error`` in the summary) and is
    re-raised unchanged."""
    run = start_job_run(cfg, job_type, name, tags, hydra_choices, identity)
    try:
        yield run
    except BaseException as exc:
        run.finish(exit_code=1, error=exc)
        raise
    else:
        run.finish(exit_code=0)


def reset_process_state() -> None:
    """Forget an earlier start-up failure (tests; long-lived interactive sessions)."""
    global _PROCESS_DISABLED_REASON
    _PROCESS_DISABLED_REASON = None
    _WARNED.clear()


__all__ = ["job_run", "start_job_run", "JobRun", "NullJobRun", "TrackingSettings",
           "scrub_secrets",
           "config_to_dict", "deterministic_run_id", "group_name", "offline_attempts",
           "supersede_offline_attempts", "reset_process_state", "is_secret_key"]
