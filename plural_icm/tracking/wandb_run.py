"""One Weights & Biases run per Hydra job (per cell), as a view of the results on disk.

The result files under ``<output_dir>/results`` and ``<output_dir>/searches`` are the record; W&B
is a convenience view. Hence the rules of this module:

* **W&B never fails an experiment.** Any error of W&B itself (import, ``init`` timeout, service
  crash, a failing ``log``) is caught, warned about once, and the run continues with a no-op
  logger. Exceptions of the *experiment* inside ``with cell_run(...)`` are re-raised unchanged.
* **Always finished.** The run is finished on success (``exit_code=0``) and on failure
  (``exit_code=1`` and summary keys ``status="failed"``, ``error``, ``error_type``), so Hydra
  multiruns never merge or hang on an open run.
* **Deterministic id, ``resume="allow"``.** The id is a hash of the cell identity (project,
  output dir, run tag, job type, name, tags), so a requeued SLURM job continues the same run.
* **Offline by default** (no account, no network; ``wandb sync <dir>/wandb/offline-run-*``
  uploads later), ``online`` or ``disabled``. ``logger.name: none`` or ``logger.mode: disabled``
  (or ``WANDB_MODE=disabled`` in the environment) never imports wandb and writes nothing.
* **No secrets.** Config keys that look secret (:func:`plural_icm.config.secrets.is_secret_key`:
  whole words ``key``, ``token``, ``secret``, ``password``, ...) are dropped before logging.

Usage (inside the Hydra task function)::

    with cell_run(cfg, job_type="cell", name="llama70b/gqa/icm/fold0",
                  tags={"model": "llama70b", "dataset": "gqa", "condition": "icm", "fold": 0},
                  hydra_choices=HydraConfig.get().runtime.choices) as wb:
        wb.log_trajectory("Brazil", trajectory_rows)     # one step metric per persona
        wb.log_metrics(metrics)                           # nested dict -> summary "overall/accuracy"
        wb.log_table("predictions", predictions_df)

:func:`read_offline_run` parses an offline run's ``.wandb`` file (W&B 0.31 ships no Python reader
for it; the public ``wandb.Api`` needs a server) and is what the tests use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import struct
import time
import traceback
from contextlib import contextmanager
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


def _cfg_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b`` tolerant of missing keys, unresolvable values and plain dicts."""
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part] if isinstance(node, Mapping) else getattr(node, part)
        except Exception:
            return default
        if node is None:
            return default
    return node


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

class NullCellRun:
    """The no-op logger: same interface, does nothing. Used for ``disabled`` and after errors."""

    enabled = False
    run_id: str | None = None
    dir: Path | None = None

    def __init__(self, reason: str = "disabled") -> None:
        self.reason = reason

    def log_trajectory(self, persona: str, rows: Iterable[Mapping[str, Any]],
                       prefix: str = "search") -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "") -> None:
        pass

    def log_table(self, name: str, dataframe: Any, max_rows: int = MAX_TABLE_ROWS) -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log(self, data: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0, error: BaseException | None = None) -> None:
        pass


class CellRun(NullCellRun):
    """A live W&B run. Every method swallows W&B errors (warn once, then become a no-op)."""

    enabled = True

    def __init__(self, run: Any, run_id: str, run_dir: Path) -> None:
        super().__init__("live")
        self._run = run
        self.run_id = run_id
        self.dir = run_dir
        self._defined: set[str] = set()
        self._finished = False

    # -- error handling: W&B problems never reach the experiment --
    def _fail(self, what: str, exc: BaseException) -> None:
        _warn_once(f"call:{what}", f"W&B {what} failed ({type(exc).__name__}: {exc}); "
                                   "continuing without W&B for this run")
        self.enabled = False

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if not self.enabled:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            self._fail(what, exc)

    # -- public API --
    def log_trajectory(self, persona: str, rows: Iterable[Mapping[str, Any]],
                       prefix: str = "search") -> None:
        """Log an ICM search trajectory as ``<prefix>/<persona>/<key>`` against its own step
        metric ``<prefix>/<persona>/iteration`` (so personas do not share an x axis)."""
        self._guard("log_trajectory", self._log_trajectory, persona, list(rows), prefix)

    def _log_trajectory(self, persona: str, rows: list[Mapping[str, Any]], prefix: str) -> None:
        if not rows:
            return
        base = f"{prefix}/{_metric_safe(persona)}"
        step_key = f"{base}/iteration"
        if base not in self._defined:
            self._run.define_metric(step_key)
            self._run.define_metric(f"{base}/*", step_metric=step_key)
            self._defined.add(base)
        if len(rows) > MAX_TRAJECTORY_POINTS:
            idx = sorted({round(i * (len(rows) - 1) / (MAX_TRAJECTORY_POINTS - 1))
                          for i in range(MAX_TRAJECTORY_POINTS)})
            rows = [rows[i] for i in idx]
        for i, row in enumerate(rows):
            data = {f"{base}/{k}": _loggable(v) for k, v in row.items() if k != "iteration"}
            data[step_key] = row.get("iteration", i)
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

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Add keys to the run config (secrets scrubbed)."""
        self._guard("log_config", self._run.config.update, scrub_secrets(dict(config)),
                    allow_val_change=True)

    def log(self, data: Mapping[str, Any]) -> None:
        """Plain history row."""
        self._guard("log", self._run.log, {k: _loggable(v) for k, v in flatten(data).items()})

    def finish(self, exit_code: int = 0, error: BaseException | None = None) -> None:
        """Finish the run; on failure record ``status``, ``error``, ``error_type`` first."""
        if self._finished:
            return
        self._finished = True
        if error is not None:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            summary = {"status": "failed", "error_type": type(error).__name__,
                       "error": f"{type(error).__name__}: {error}"[:2000],
                       "error_traceback": tb[-4000:]}
        else:
            summary = {"status": "finished"}
        self._guard("log_metrics", self._log_metrics, summary, "")
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


# --------------------------------------------------------------------------------------------
# start / context manager
# --------------------------------------------------------------------------------------------

def _mode(cfg: Any) -> str:
    name = str(_cfg_get(cfg, "logger.name", "wandb") or "none").lower()
    mode = str(_cfg_get(cfg, "logger.mode", "offline") or "offline").lower()
    if name == "none" or os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return "disabled"
    if mode not in ("offline", "online", "disabled"):
        _warn_once(f"mode:{mode}", f"logger.mode={mode!r} is not offline|online|disabled; "
                                   "using offline")
        mode = "offline"
    return mode


def start_cell_run(cfg: Any, job_type: str, name: str, tags: Mapping[str, Any] | None = None,
                   hydra_choices: Mapping[str, Any] | None = None,
                   identity: Any = None) -> NullCellRun:
    """Start the W&B run of one job; a :class:`NullCellRun` when disabled or when W&B fails.

    ``identity`` (default: project, output dir, run tag, job type, name, tags) is hashed into the
    run id; pass the cell's result path for a stable id across code changes of the name.
    """
    global _PROCESS_DISABLED_REASON
    mode = _mode(cfg)
    if mode == "disabled":
        return NullCellRun("disabled")
    if _PROCESS_DISABLED_REASON is not None:
        return NullCellRun(_PROCESS_DISABLED_REASON)

    tags = dict(tags or {})
    choices = dict(hydra_choices) if hydra_choices is not None else _current_hydra_choices()
    project = str(_cfg_get(cfg, "logger.project", "plural_icm"))
    entity = _cfg_get(cfg, "logger.entity")
    run_tag = _cfg_get(cfg, "run_tag", "main")
    group = (_cfg_get(cfg, "logger.group") or choices.get("experiment") or run_tag)
    wb_dir = _cfg_get(cfg, "logger.dir") or _cfg_get(cfg, "paths.output_dir") or "."
    if "${" in str(wb_dir):  # unresolvable outside Hydra
        wb_dir = "."
    if identity is None:
        identity = [project, str(Path(str(_cfg_get(cfg, "paths.output_dir", ""))).resolve()
                                 if _cfg_get(cfg, "paths.output_dir") else ""),
                    run_tag, job_type, name, {k: str(v) for k, v in sorted(tags.items())}]
    run_id = deterministic_run_id(identity)

    config = scrub_secrets(config_to_dict(cfg))
    config["hydra_choices"] = scrub_secrets({k: v for k, v in choices.items()})
    config["cell"] = {k: v for k, v in tags.items()}
    tag_list = [f"{k}:{v}"[:64] for k, v in tags.items() if v is not None]

    # Start-up: WANDB_START_METHOD=thread fixed start-up hangs in old wandb (< 0.18, before the
    # wandb-core service); 0.19+ ignore it. Set only if unset, never override the user.
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    try:
        Path(wb_dir).mkdir(parents=True, exist_ok=True)
        import wandb

        settings_kwargs = dict(init_timeout=INIT_TIMEOUT_S, console="off", save_code=False,
                               finish_timeout=120.0)
        settings = _make_settings(wandb, settings_kwargs)
        run = wandb.init(project=project, entity=entity, group=str(group)[:128],
                         job_type=job_type, name=name, tags=tag_list, config=config,
                         id=run_id, resume="allow", dir=str(wb_dir), mode=mode,
                         reinit="finish_previous", settings=settings)
        if run is None:
            raise RuntimeError("wandb.init returned None")
        run_dir = Path(getattr(run, "dir", "") or wb_dir).parent
        return CellRun(run, run_id, run_dir)
    except Exception as exc:  # W&B must never fail the experiment
        _PROCESS_DISABLED_REASON = f"{type(exc).__name__}: {exc}"
        _warn_once("init", f"W&B could not start ({_PROCESS_DISABLED_REASON}); results are still "
                           "written to disk; W&B is off for the rest of this process")
        return NullCellRun(_PROCESS_DISABLED_REASON)


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
def cell_run(cfg: Any, job_type: str, name: str, tags: Mapping[str, Any] | None = None,
             hydra_choices: Mapping[str, Any] | None = None,
             identity: Any = None) -> Iterator[NullCellRun]:
    """Context manager around :func:`start_cell_run`: the run is always finished; an exception
    inside the block marks the run failed (``exit_code=1``, ``error`` in the summary) and is
    re-raised unchanged."""
    run = start_cell_run(cfg, job_type, name, tags, hydra_choices, identity)
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


# --------------------------------------------------------------------------------------------
# reading offline runs back (tests, debugging)
# --------------------------------------------------------------------------------------------

_BLOCK = 32768
_REC_HEADER = 7  # crc32 (4) + length (2) + type (1)


def _iter_wandb_records(path: Path) -> Iterator[bytes]:
    """Raw protobuf records of a ``.wandb`` file (leveldb-log framing, W&B header)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, buf = 7, b""
    while pos + _REC_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _REC_HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _REC_HEADER])
        pos += _REC_HEADER
        chunk = data[pos:pos + length]
        if len(chunk) < length:  # record still being written
            break
        pos += length
        if kind == 0 and length == 0:
            break
        if kind == 1:      # full
            yield chunk
        elif kind == 2:    # first
            buf = chunk
        elif kind == 3:    # middle
            buf += chunk
        elif kind == 4:    # last
            yield buf + chunk
            buf = b""


def find_offline_runs(wandb_parent_dir: str | Path) -> list[Path]:
    """Offline run directories under ``<dir>/wandb/`` (oldest first)."""
    return sorted(Path(wandb_parent_dir).glob("wandb/offline-run-*"))


def read_offline_run(run_dir: str | Path, wait_s: float = 15.0) -> dict[str, Any]:
    """Parse an offline run directory into ``{"run": {...}, "config", "summary", "history",
    "metrics", "exit_code"}`` (summary = last value of every key, as W&B shows it).

    ``run.finish()`` returns before the wandb-core service has flushed the transaction log (0.31),
    so this polls up to ``wait_s`` seconds for the exit record; a run still open (or crashed
    hard) comes back with ``exit_code=None``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_offline_run_once(Path(run_dir))
        if out["exit_code"] is not None or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def _read_offline_run_once(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out: dict[str, Any] = {"run": {}, "config": {}, "summary": {}, "history": [], "metrics": [],
                           "exit_code": None}

    def key_of(item: Any) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for raw in _iter_wandb_records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "group": r.run_group,
                          "job_type": r.job_type, "name": r.display_name, "tags": list(r.tags)}
            for u in r.config.update:
                out["config"][key_of(u)] = json.loads(u.value_json)
        elif kind == "config":
            for u in rec.config.update:
                out["config"][key_of(u)] = json.loads(u.value_json)
        elif kind == "summary":
            for u in rec.summary.update:
                out["summary"][key_of(u)] = json.loads(u.value_json)
        elif kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "metric":
            m = rec.metric
            out["metrics"].append({"name": m.name, "glob_name": m.glob_name,
                                   "step_metric": m.step_metric})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    out["config"].pop("_wandb", None)
    return out


__all__ = ["cell_run", "start_cell_run", "CellRun", "NullCellRun", "scrub_secrets",
           "config_to_dict", "deterministic_run_id", "read_offline_run", "find_offline_runs",
           "reset_process_state", "is_secret_key"]
