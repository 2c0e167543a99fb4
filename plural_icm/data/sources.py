"""Where a dataset's files come from: a local copy, or the public hub when the network works.

Resolution order, the same for every loader:

1. ``dataset.path`` when set. It must exist; a missing path is an error (never a silent fallback to
   a download of possibly different data).
2. ``paths.data_dir`` (``data_dir`` argument) when set: the first existing conventional sub-folder
   (``opinionqa``, ``persona_tailoring``, ...).
3. A download from the Hugging Face hub (``huggingface_hub`` / ``datasets``) when the dataset is on
   the hub, unless ``dataset.options.download=false`` or ``HF_HUB_OFFLINE=1``.

When nothing works, :func:`missing` builds a :class:`FileNotFoundError` that names what is missing
and the exact config key or command that fixes it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from plural_icm.errors import UserError

if TYPE_CHECKING:
    from plural_icm.data.settings import DatasetSettings

log = logging.getLogger(__name__)


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset (or one of its files) is not where the config says; the message says how to
    fix it."""


def missing(what: str, fixes: Sequence[str]) -> FileNotFoundError:
    """A FileNotFoundError (:class:`DataNotFoundError`) naming what is missing and how to fix it."""
    lines = [f"{what}. Fix it with one of:"] + [f"  - {fix}" for fix in fixes]
    return DataNotFoundError("\n".join(lines))


def configured_path(settings: DatasetSettings, dataset: str, fixes: Sequence[str]) -> Path | None:
    """``dataset.path`` as an existing Path, None when unset; an error when set but missing."""
    raw = settings.path
    if raw in (None, ""):
        return None
    path = Path(str(raw)).expanduser()
    if not path.exists():
        raise missing(f"{dataset}: dataset.path={raw} does not exist", fixes)
    check_file_or_dir(path, f"{dataset}: dataset.path")
    return path


def check_file_or_dir(path: Path, what: str) -> None:
    """A regular file or a directory (following links); anything else is refused."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataFormatError(f"{what}={path} cannot be read ({exc.strerror})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if (
            stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "a socket" if stat.S_ISSOCK(mode) \
            else "not a regular file"
        raise DataFormatError(f"{what}={path} is {kind}; expected a regular file or a directory")


def data_dir_path(data_dir: str | Path | None, subdirs: Iterable[str]) -> Path | None:
    """The first existing ``data_dir/<subdir>``, or None."""
    if not data_dir:
        return None
    root = Path(str(data_dir)).expanduser()
    for sub in subdirs:
        candidate = root / sub
        if candidate.exists():
            return candidate
    return None


def download_allowed(settings: DatasetSettings) -> bool:
    """Whether a loader may fetch from the hub: its ``dataset.options.download`` unless
    ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}:
        return False
    return bool(settings.options.download)


def hub_file(repo_id: str, filename: str, what: str, fixes: Sequence[str]) -> Path:
    """Download one file of a hub dataset repository (cached by huggingface_hub)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise missing(f"{what}: no local copy and huggingface_hub is not installed ({exc})",
                      ["pip install 'plural_icm[hub]'", *fixes]) from exc
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset"))
    except Exception as exc:  # network errors, gated repos, offline mode
        raise missing(f"{what}: no local copy and the download of {repo_id}/{filename} failed "
                      f"({type(exc).__name__}: {exc})", fixes) from exc


def hub_table(repo_id: str, config: str | None, split: str, what: str,
              fixes: Sequence[str]):
    """One split of a hub dataset as a pandas DataFrame (via ``datasets.load_dataset``)."""
    try:
        import datasets
    except ImportError as exc:
        raise missing(f"{what}: no local copy and the `datasets` package is not installed ({exc})",
                      ["pip install 'plural_icm[hub]'", *fixes]) from exc
    try:
        ds = datasets.load_dataset(repo_id, config, split=split)
    except Exception as exc:
        raise missing(f"{what}: no local copy and loading {repo_id} (config={config!r}, "
                      f"split={split!r}) from the hub failed ({type(exc).__name__}: {exc})",
                      fixes) from exc
    return ds.to_pandas()


class DataFormatError(UserError, ValueError):
    """A row of a dataset file does not have the expected form."""


class BadRows:
    """Bad-row policy: raise on the first bad row, or (``skip_bad_rows=True``) skip and count.

    Skipped rows are never silent: :meth:`finish` logs how many were skipped with the first few
    reasons, and :attr:`count` is reported in the dataset description.
    """

    def __init__(self, dataset: str, skip: bool):
        self.dataset = dataset
        self.skip = bool(skip)
        self.count = 0
        self.examples: list[str] = []
        #: reason -> number of rows skipped for it (``malformed`` when the caller names none)
        self.reasons: dict[str, int] = {}

    def bad(self, text: str, reason: str = "malformed") -> None:
        """``text`` names the file, the row and what was expected; ``reason`` is a short tag
        under which the skip is counted (``duplicate_options``, ``bad_share_sum``, ...)."""
        if not self.skip:
            raise DataFormatError(text + " (set dataset.skip_bad_rows=true to skip such rows)")
        self.count += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(text)

    def summary(self) -> str:
        """``skipped 3 bad row(s) (duplicate_options 1, malformed 2)``."""
        if not self.count:
            return "skipped 0 bad row(s)"
        parts = ", ".join(f"{r} {n}" for r, n in sorted(self.reasons.items()))
        return f"skipped {self.count} bad row(s) ({parts})"

    def finish(self) -> None:
        if self.count:
            log.warning("%s: %s (dataset.skip_bad_rows=true); first: %s",
                        self.dataset, self.summary(), " | ".join(self.examples))


def require_columns(columns: Iterable[str], required: Iterable[str], where: str) -> None:
    """Raise naming the file and the missing columns."""
    have = set(columns)
    lacking = [c for c in required if c not in have]
    if lacking:
        raise DataFormatError(f"{where}: missing column(s) {lacking}; expected at least "
                              f"{list(required)}, found {sorted(have)}")
