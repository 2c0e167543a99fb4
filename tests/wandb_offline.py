"""Reading offline W&B runs back (tests only): W&B 0.31 ships no Python reader for a ``.wandb``
transaction log, and the public ``wandb.Api`` needs a server.

``read_offline_run(dir)`` -> ``{"run", "config", "summary", "history", "metrics", "artifacts",
"exit_code"}``; ``artifacts`` lists ``{"name", "type", "digest", "used", "files", "metadata"}``
(``used``: declared as an input of the run, else logged as its output).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

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
    """Offline run directories under ``<dir>/wandb/`` (oldest first; superseded ones excluded)."""
    return sorted(Path(wandb_parent_dir).glob("wandb/offline-run-*"))


def read_offline_run(run_dir: str | Path, wait_s: float = 15.0) -> dict[str, Any]:
    """Parse an offline run directory (summary = last value of every key, as W&B shows it).

    ``run.finish()`` returns before the wandb-core service has flushed the transaction log (0.31),
    so this polls up to ``wait_s`` seconds for the exit record; a run still open (or killed)
    comes back with ``exit_code=None``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_offline_run_once(Path(run_dir))
        if out["exit_code"] is not None or time.monotonic() >= deadline:
            return out
        time.sleep(0.1)


def read_all_offline_runs(wandb_parent_dir: str | Path, wait_s: float = 15.0) -> list[dict]:
    return [read_offline_run(d, wait_s) | {"dir": d} for d in find_offline_runs(wandb_parent_dir)]


def _read_offline_run_once(run_dir: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out: dict[str, Any] = {"run": {}, "config": {}, "summary": {}, "history": [], "metrics": [],
                           "artifacts": [], "exit_code": None}

    def key_of(item: Any) -> str:
        return "/".join(item.nested_key) if item.nested_key else item.key

    for raw in _iter_wandb_records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out["run"] = {"id": r.run_id, "project": r.project, "entity": r.entity,
                          "group": r.run_group, "job_type": r.job_type, "name": r.display_name,
                          "tags": list(r.tags)}
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
        elif kind == "artifact":
            a = rec.artifact
            out["artifacts"].append({
                "name": a.name, "type": a.type, "digest": a.digest, "used": a.use_after_commit,
                "files": sorted(e.path for e in a.manifest.contents),
                "metadata": json.loads(a.metadata) if a.metadata else {}})
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    out["config"].pop("_wandb", None)
    return out


def search_rows(rec: dict, label: str, key: str = "U") -> list[tuple[int, Any]]:
    """(search/iteration, value) of one search's key in a run's history."""
    k = f"search/{label}/{key}"
    return [(h["search/iteration"], h[k]) for h in rec["history"] if k in h]
