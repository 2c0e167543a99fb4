"""Atomic file writes: results are written to a temporary name and renamed, so a reader (another
SLURM job, a relaunch, the analysis) never sees a half-written file."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc), else set and
    restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Errors of the file system rather than of the program: a full disk or quota, a read-only or
#: forbidden folder. They become a :class:`WriteError` naming the file.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                   errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _write_error(path: Path, exc: OSError) -> Exception:
    from plural_icm.errors import WriteError

    return WriteError(f"cannot write {path}: {exc.strerror or exc} (errno {exc.errno}); nothing "
                      f"half-written was left (the file, if it existed, is unchanged)")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _STORAGE_ERRNOS or isinstance(exc, FileExistsError):
            raise _write_error(path, exc) from None
        raise
    try:
        # mkstemp creates 0600 whatever the umask; results shared by a group must be readable
        # as any file the user creates would be.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            raise _write_error(path, exc) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n"
                                    for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: invalid JSON line ({exc.msg})") from exc
    return out


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths, enums
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value"):
        return obj.value
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
