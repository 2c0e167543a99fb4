"""Whether a job's existing results are reused, recomputed or refused: the skip/force protocol.

Results on disk are reused only when they hold the same settings (their fingerprint). Results of
different settings are never overwritten: an error names the way out (``run_tag``, ``force=true``),
and ``force=true`` moves the old results aside (``<name>.replaced-<seconds>``) before they are
recomputed. Used by a cell (its directory, complete once ``COMPLETE.json`` is written) and by
collaborative elicitation (a ``summary.json`` per persona, method and fold).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from omegaconf import OmegaConf

from plural_icm.conditions.registry import get_condition
from plural_icm.config.settings import Settings
from plural_icm.errors import ResultsConflictError
from plural_icm.layout import (CELL_FILES, COMPLETE, CONFIG, METRICS, CompleteRecord, cell_name,
                               fingerprint, is_complete)

log = logging.getLogger(__name__)

__all__ = ["cell_fingerprint", "holds_same_results", "load_if_complete", "prepare_cell_dir",
           "reusable_summary"]


def cell_fingerprint(s: Settings) -> str:
    """The fingerprint of the cell ``s`` describes: its composed config without the keys its
    condition never reads (``Condition.ignores``)."""
    return fingerprint(s.composed, get_condition(s.condition.name).ignores)


def holds_same_results(s: Settings, out: Path, stored_fp: str, fp: str) -> bool:
    """Whether the complete cell in ``out`` (fingerprint ``stored_fp``) computed what ``s`` asks
    (fingerprint ``fp``). A cell written before its condition declared ``ignores`` carries a
    fingerprint over every key; its ``config.yaml`` (the resolved config it ran) decides then."""
    if stored_fp == fp:
        return True
    ignores = get_condition(s.condition.name).ignores
    if not ignores:
        return False
    try:
        return fingerprint(OmegaConf.load(out / CONFIG), ignores) == fp
    except (OSError, ValueError) as exc:
        log.warning("%s: its config.yaml could not be read (%s); comparing fingerprints only", out, exc)
        return False


def move_aside(path: Path) -> Path:
    """Move ``path`` (a cell's directory, a summary file) to ``<name>.replaced-<seconds>``."""
    aside = path.with_name(f"{path.name}.replaced-{int(time.time())}")
    shutil.move(str(path), aside)
    return aside


def load_if_complete(s: Settings, out: Path, fp: str) -> dict | None:
    """The stored metrics of a complete cell of the same settings (None: compute it). Raises when
    the complete cell holds results of different settings and ``force`` is off."""
    if not is_complete(out, CELL_FILES) or s.force:
        return None
    done = CompleteRecord.read(out)
    if not holds_same_results(s, out, done.fingerprint, fp):
        raise ResultsConflictError(
            f"{out} holds results of different settings (fingerprint {done.fingerprint} != {fp}); "
            "they are never overwritten: set run_tag=<name> to keep both, or force=true to "
            "recompute (the old results are moved aside)")
    log.info("skip complete cell %s (%s)", cell_name(s), out)
    return json.loads((out / METRICS).read_text(encoding="utf-8"))


def prepare_cell_dir(s: Settings, out: Path) -> None:
    """Create the cell's directory; under ``force``, move complete old results aside first."""
    if s.force and is_complete(out, CELL_FILES):
        aside = move_aside(out)
        log.warning("force=true: moved the old results to %s", aside)
    if (out / COMPLETE).exists() and not is_complete(out, CELL_FILES):
        log.warning("%s: COMPLETE.json without its results; recomputing the cell", out)
        (out / COMPLETE).unlink()
    out.mkdir(parents=True, exist_ok=True)


def reusable_summary(path: Path, fp: str, force: bool) -> bool:
    """True when ``path`` holds the collaborative summary of these settings. A summary of other
    settings (another k_per_fold, rounds, run_tag, ...) is never reused and never overwritten
    silently: an error, or with ``force`` it is moved aside and recomputed. An unreadable summary
    is recomputed."""
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("%s is not readable JSON; recomputing it", path)
        return False
    if isinstance(old, dict) and old.get("fingerprint") == fp and not force:
        return True
    if not force:
        was = {k: old.get(k) for k in ("run_tag", "k_per_fold", "rounds")} \
            if isinstance(old, dict) else {}
        raise ResultsConflictError(
            f"{path} holds a collaborative summary of different settings ({was}, fingerprint "
            f"{old.get('fingerprint') if isinstance(old, dict) else None} != {fp}); it is never "
            f"overwritten: force=true recomputes it (the old one is moved aside), or use another "
            f"paths.output_dir")
    aside = move_aside(path)
    log.warning("force=true: moved the old summary to %s", aside)
    return False
