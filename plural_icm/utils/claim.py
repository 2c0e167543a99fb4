"""An exclusive claim on a directory that works on cluster file systems (NFS, Lustre, GPFS).

``fcntl.flock`` fails with ENOSYS on Lustre mounted without ``flock`` and can be node-local on NFS,
so the claim is a file created with ``O_CREAT | O_EXCL`` (atomic on every POSIX and NFSv3+ file
system) holding who took it. While held, a daemon thread touches it every ``heartbeat_s``.

A waiter takes over a claim whose holder is gone:

* at once when the holder ran on this host and its process no longer exists, or when the holder
  was an earlier run of this same SLURM job (a requeued job keeps its job id);
* otherwise when the claim's modification time has not changed for ``stale_s`` seconds of the
  waiter's own clock (so clock skew between nodes does not matter).

Taking over is serialised by a second exclusive-create file (``<claim>.break``), so two successors
never both break the same claim; a breaker killed in that instant leaves a ``.break`` file that is
itself taken over after ``stale_s``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

HEARTBEAT_S = float(os.environ.get("PLURAL_ICM_CLAIM_HEARTBEAT_S", "30"))
STALE_S = float(os.environ.get("PLURAL_ICM_CLAIM_STALE_S", "300"))


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "taken": time.time()}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or garbage: judged by its age only


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_exclusive(path: Path, content: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return True


class Claim:
    """``with Claim(dir / ".claim"):`` - exclusive across processes and nodes (module docstring)."""

    def __init__(self, path: str | Path, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 poll_s: float = 1.0, on_wait: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.heartbeat_s = heartbeat_s
        self.stale_s = max(stale_s, 2 * heartbeat_s)
        self.poll_s = poll_s
        self.on_wait = on_wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None
        """The holder whose stale claim this one replaced (None when the claim was free)."""

    # -- acquiring -------------------------------------------------------------------------------
    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seen: tuple | None = None   # (mtime_ns, size) of the claim when first seen unchanged
        since = time.monotonic()
        waited = False
        while True:
            if _create_exclusive(self.path, _holder()):
                break
            holder = _read(self.path)
            if holder is None:      # released between our create and read
                continue
            if not waited:
                waited = True
                log.info("waiting for %s (held by %s)", self.path, _describe(holder))
                if self.on_wait:
                    self.on_wait(holder)
            stamp = _stamp(self.path)
            if stamp != seen:
                seen, since = stamp, time.monotonic()
            if self._holder_gone(holder) or time.monotonic() - since >= self.stale_s:
                if self._break(stamp, holder):
                    continue
            time.sleep(self.poll_s)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"claim-heartbeat {self.path}", daemon=True)
        self._thread.start()

    def _holder_gone(self, holder: dict) -> bool:
        if not holder:
            return False
        job = os.environ.get("SLURM_JOB_ID")
        if job and holder.get("slurm_job_id") == job and holder.get("pid") != os.getpid():
            return True  # an earlier run of this requeued job
        return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1)))

    def _break(self, stamp: tuple | None, holder: dict) -> bool:
        """Remove the stale claim (still the one we judged) under the ``.break`` lock."""
        brk = self.path.with_name(self.path.name + ".break")
        if not _create_exclusive(brk, _holder()):
            b = _stamp(brk)
            if b is not None and time.time() - b[0] / 1e9 > self.stale_s:
                _unlink(brk)   # a breaker died in the instant between its two steps
            return False
        try:
            if _stamp(self.path) != stamp:
                return False   # renewed or replaced meanwhile: not stale after all
            log.warning("taking over %s from %s (gone)", self.path, _describe(holder))
            _unlink(self.path)
            self.took_over = holder
            return True
        finally:
            _unlink(brk)

    # -- holding ---------------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                log.error("claim %s vanished while held (taken over as stale?)", self.path)
                return
            except OSError as e:
                log.warning("heartbeat of %s failed: %s", self.path, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        holder = _read(self.path)
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            _unlink(self.path)

    def __enter__(self) -> "Claim":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _describe(holder: dict) -> str:
    if not holder:
        return "an unreadable claim"
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"
