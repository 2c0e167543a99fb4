"""A content-keyed request cache in front of any backend.

Each request (one prompt's label scores, or one prompt's generation) is stored under
``sha256(JSON of {backend identity, call kind, labels or generation params, prompt tokens})``.
The backend identity (:meth:`LMBackend.cache_identity`) names the backend, model, revision, dtype and
every other output-changing setting, so one model's answers are never served for another (the bug
of lm-evaluation-harness issues #2715/#4063). Prompts are keyed by their flattened tokens: segment
boundaries do not change outputs.

Scores are deterministic and always cached; generations only when ``params.deterministic`` (greedy,
or sampled with a seed).

Storage: append-only JSONL, one file per job so parallel jobs never write the same file. Either one
file given by the caller, or (``model.request_cache: true``, :meth:`CachedBackend.in_dir`) a folder
shared by all jobs (``<paths.cache_dir>/requests``): a job reads every file there and appends to its
own new one. Each batch of new entries is appended and flushed; a truncated last line (a job killed
mid-write) is skipped on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import GenerationParams, LMBackend, Prompt, flatten

log = logging.getLogger(__name__)


def request_key(identity: dict[str, Any], kind: str, spec: Any, prompt: Prompt) -> str:
    payload = {"identity": identity, "kind": kind, "spec": spec, "prompt": flatten(prompt)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class CachedBackend(LMBackend):
    """Wraps ``inner`` and answers repeated requests from a JSONL file at ``path``."""

    def __init__(self, inner: LMBackend, path: str | Path,
                 read: Sequence[str | Path] | None = None) -> None:
        """Answers are appended to ``path``; ``read`` (default: ``[path]``) are the files loaded."""
        # No super().__init__(): the counters are the inner backend's (hits are added to them).
        self.inner = inner
        self.stats = inner.stats
        self.path = Path(path)
        self.entries: dict[str, Any] = {}
        for file in (read if read is not None else [self.path]):
            self._load(Path(file))

    @classmethod
    def in_dir(cls, inner: LMBackend, folder: str | Path) -> "CachedBackend":
        """Read every job's file in ``folder``; write this job's answers to a new file of its own."""
        folder = Path(folder)
        own = folder / f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}.jsonl"
        return cls(inner, own, read=sorted(folder.glob("*.jsonl")) if folder.is_dir() else [])

    # Attributes callers read from a backend come from the inner one.
    name = property(lambda self: self.inner.name)  # type: ignore[assignment]
    model_id = property(lambda self: self.inner.model_id)  # type: ignore[assignment]
    revision = property(lambda self: self.inner.revision)  # type: ignore[assignment]
    tokenizer = property(lambda self: self.inner.tokenizer)  # type: ignore[assignment]
    max_context = property(lambda self: self.inner.max_context)  # type: ignore[assignment]

    def __getattr__(self, item: str) -> Any:  # anything else backend-specific (model, device...)
        if item == "inner":
            raise AttributeError(item)
        return getattr(self.inner, item)

    def cache_identity(self) -> dict[str, Any]:
        return self.inner.cache_identity()

    def close(self) -> None:
        self.inner.close()

    # -- storage --------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        bad = 0
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    self.entries[rec["k"]] = rec["v"]
                except (ValueError, KeyError, TypeError):
                    bad += 1  # a truncated last line from a killed job
        if bad:
            log.warning("request cache %s: skipped %d unreadable line(s)", path, bad)
        log.info("request cache %s: %d entries in all", path, len(self.entries))

    def _append(self, new: dict[str, Any]) -> None:
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # do not glue a record onto a truncated line
                    fh.write(b"\n")
            fh.write("".join(json.dumps({"k": k, "v": v}) + "\n" for k, v in new.items()).encode())
            fh.flush()
        self.entries.update(new)

    def _fill_hits(self, keys: list[str], out: Any) -> dict[str, list[int]]:
        """Put cached answers into ``out``; return the missing keys with their positions (a key
        asked twice in one call is computed once)."""
        missing: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in self.entries:
                out[i] = self.entries[k]
                self.stats.request_cache_hits += 1
            else:
                missing.setdefault(k, []).append(i)
        return missing

    # -- the interface --------------------------------------------------------------------------
    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        ident = self.inner.cache_identity()
        keys = [request_key(ident, "label_logprobs", list(labels), p) for p in prompts]
        out = np.zeros((len(prompts), len(labels)), dtype=np.float64)
        missing = self._fill_hits(keys, out)
        if missing:
            todo = [prompts[idx[0]] for idx in missing.values()]
            scores = np.asarray(self.inner.label_logprobs(todo, labels), dtype=np.float64)
            new = {}
            for (k, idx), row in zip(missing.items(), scores):
                out[idx] = row
                new[k] = [float(x) for x in row]
            self._append(new)
        return out

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        if not params.deterministic:
            return self.inner.generate(prompts, params)
        ident = self.inner.cache_identity()
        spec = asdict(params)
        keys = [request_key(ident, "generate", spec, p) for p in prompts]
        out: list[str | None] = [None] * len(prompts)
        missing = self._fill_hits(keys, out)
        if missing:
            texts = self.inner.generate([prompts[idx[0]] for idx in missing.values()], params)
            new = {}
            for (k, idx), text in zip(missing.items(), texts):
                for i in idx:
                    out[i] = text
                new[k] = text
            self._append(new)
        return [t if t is not None else "" for t in out]
