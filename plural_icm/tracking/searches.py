"""The W&B view of ICM searches: live trajectories, final labels as a Table, and the search's
files as an Artifact named by its content address.

A job (a ``stage=search`` job, a cell or a collaborative job) hands every iteration of the
searches it runs to :meth:`SearchTracker.on_iteration` as it happens, so a search can be watched
while it runs (and a search killed midway has its rows in W&B up to the kill). When the searches
end, :meth:`SearchTracker.finished` logs what each produced, or, for a search another job
computed, declares its Artifact as an input of this run (``use_artifact``): a W&B user walks from
a cell's headline number to the labels behind it.

Works on duck-typed search tasks (``persona``, ``seed``, ``fixed``, ``hash()``,
``directory(searches_dir)``) and stored searches (``task``, ``path``, ``summary``, ``computed``),
so tracking imports of the search layer only its records (file names and readers,
:mod:`plural_icm.search.records`), never the engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from plural_icm.search.records import (CHECKPOINT, LABELS, SEARCH_SUMMARY, SPEC, TRAJECTORY,
                                       read_checkpoint, read_labels, read_trajectory)
from plural_icm.tracking.wandb_run import NullJobRun

log = logging.getLogger(__name__)

#: Files of a search directory that make up its Artifact (all written before ``COMPLETE.json``,
#: never changed after: the same files give the same digest in every run that logs or uses it).
SEARCH_ARTIFACT_FILES = (LABELS, SEARCH_SUMMARY, TRAJECTORY, SPEC)

#: Summary keys of a finished search copied into the run summary.
SEARCH_SUMMARY_KEYS = ("U", "P", "I", "context_order", "iterations", "accepted", "label_accuracy", "n_claims",
                       "wall_time_s")


def search_artifact_name(task: Any) -> str:
    """``search-<content address>``: the same name in every run that logs or uses it."""
    return f"search-{task.hash()}"


def search_label(task: Any) -> str:
    """A readable, unique name for a search inside one run: the persona, ``-r<k>`` for restart
    k > 0, ``-fixed<n>-<hash6>`` for a search with n fixed (elicited) labels."""
    label = str(task.persona)
    restart = int(task.seed) % 1000
    if restart:
        label += f"-r{restart}"
    if task.fixed:
        label += f"-fixed{len(task.fixed)}-{task.hash()[:6]}"
    return label


class SearchTracker:
    """Feeds one job's searches into its W&B run (a no-op when ``wb`` is None or disabled)."""

    def __init__(self, wb: NullJobRun | None, searches_dir: str | Path) -> None:
        self.wb = wb if wb is not None else NullJobRun()
        self.searches_dir = Path(searches_dir)
        self._seen: set[str] = set()

    def on_iteration(self, task: Any, row: dict) -> None:
        """Log one iteration now. The first row of a resumed search is preceded by the rows its
        checkpoint holds (an offline attempt starts a fresh run file that must hold them all)."""
        if not self.wb.enabled:
            return
        key = task.hash()
        if key not in self._seen:
            self._seen.add(key)
            if int(row.get("iteration", 1)) > 1:
                self._replay_checkpoint(task, int(row["iteration"]))
        self.wb.log_search_row(search_label(task), row)

    def _replay_checkpoint(self, task: Any, first_new: int) -> None:
        if not self.wb.start() or self.wb.continues_earlier:  # online resume: W&B has them
            return
        ck = task.directory(self.searches_dir) / CHECKPOINT
        try:
            state = read_checkpoint(ck)
            if state is None:
                raise FileNotFoundError(f"no {CHECKPOINT}")
            rows = state.get("trajectory", [])
        except (OSError, ValueError) as exc:
            log.warning("W&B: cannot replay the trajectory of resumed search %s (%s)", ck, exc)
            return
        for r in rows:
            if int(r.get("iteration", 0)) < first_new:
                self.wb.log_search_row(search_label(task), r)

    def finished(self, stored: Iterable[Any]) -> None:
        """After the searches: each search this job computed -> its labels Table, summary keys
        and output Artifact; each search it loaded -> declared as an input Artifact (not in a
        ``search`` job, which only produces searches). An attempt that replaced an earlier
        offline attempt of the same run re-logs the loaded searches' trajectories too (the
        earlier attempt may be the one that logged them)."""
        if not self.wb.enabled:
            return
        stored = list(stored)
        producer = self.wb.job_type == "search"
        for s in stored:
            if not s.computed and not producer:
                self._use(s)
        for s in stored:
            relog = self.wb.started and self.wb.superseded_earlier and not s.computed
            if s.computed or (relog and producer):
                self._log_output(s, replay_trajectory=not s.computed)
            elif relog:
                self._log_trajectory(s)

    def _files(self, s: Any) -> list[Path]:
        return [Path(s.path) / f for f in SEARCH_ARTIFACT_FILES if (Path(s.path) / f).is_file()]

    def _metadata(self, s: Any) -> dict:
        return {k: v for k, v in s.summary.as_dict().items() if not isinstance(v, (list, dict))} | {
            "label": search_label(s.task), "hash": s.task.hash()}

    def _use(self, s: Any) -> None:
        self.wb.use_files_artifact(search_artifact_name(s.task), "search", self._files(s),
                                   self._metadata(s))

    def _log_trajectory(self, s: Any) -> None:
        if (Path(s.path) / TRAJECTORY).is_file():
            self.wb.log_trajectory(search_label(s.task), read_trajectory(s.path))

    def _log_output(self, s: Any, replay_trajectory: bool) -> None:
        import pandas as pd

        label = search_label(s.task)
        if replay_trajectory:
            self._log_trajectory(s)
        labels = pd.DataFrame([r.as_dict() for r in read_labels(s.path)])
        self.wb.log_table(f"search_labels/{label}", labels)
        self.wb.log_metrics({k: getattr(s.summary, k) for k in SEARCH_SUMMARY_KEYS}
                            | {"hash": s.task.hash()}, prefix=f"searches/{label}")
        self.wb.log_files_artifact(search_artifact_name(s.task), "search", self._files(s),
                                   self._metadata(s))
