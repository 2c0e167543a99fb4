"""Content-addressed ICM searches: never run the same search twice, never read a half-written one.

A search is identified by the hash of everything that determines it: the base model's identity
(backend, checkpoint, revision, dtype), the claims (ids and texts, in order), the consistency rule,
the algorithm's parameters, the seed and the fixed labels. Its directory is
``<searches_dir>/<model>/<dataset>/fold<k>/<persona>/<hash>/``.

Concurrency: a process runs a search only while holding the exclusive claim ``.claim`` in its
directory (:class:`plural_icm.utils.claim.Claim`: an exclusive-create file with a heartbeat, which
works on NFS and Lustre where ``flock`` does not). A second process wanting the same search waits,
then finds ``COMPLETE.json`` and loads the result; if the holder died (killed, node lost), the
waiter takes the claim over and resumes from the last checkpoint. Claims are taken in sorted path
order, so jobs never deadlock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.layout import SEARCH_FILES, is_complete, search_dir
from plural_icm.search.engine import ICMSearch, SearchParams, SearchResult, run_searches
from plural_icm.search.prompts import PROMPT_ENCODING, ClaimRenderer
from plural_icm.search.records import (CHECKPOINT, CHECKPOINT_KEYS, LabelRow, SearchComplete,
                                       SearchRecordError, SearchSpec, SearchSummary,
                                       checkpoint_problem, read_checkpoint, read_labels,
                                       write_checkpoint, write_labels, write_trajectory)

# CHECKPOINT_KEYS and checkpoint_problem live with the records; kept importable from here.
__all__ = ["SearchTask", "StoredSearch", "StopRequest", "load_search", "load_checkpoint",
           "all_on_disk", "run_or_load", "best_of_restarts", "CHECKPOINT_KEYS",
           "checkpoint_problem", "SearchRecordError"]

log = logging.getLogger(__name__)


@dataclass
class SearchTask:
    """One search to run or load."""

    model: str
    dataset: str
    fold: int
    persona: str
    claims: list[Claim]
    rule: ConsistencyRule
    params: SearchParams
    seed: int
    template: str
    labels: tuple[str, str]
    model_identity: dict
    fixed: dict[str, bool] = field(default_factory=dict)
    search_unit: str = "training_folds"
    """What the search covers (plural_icm.search.units): the training folds of held-out ``fold``,
    or, for ``part``, the single fold part ``part`` (then ``fold`` = ``part``)."""
    part: int | None = None

    def search_spec(self) -> SearchSpec:
        """The typed ``spec.json`` of this search."""
        return SearchSpec(
            model=self.model_identity,
            claims=[[c.item_id, c.group_id, c.question, c.claim] for c in self.claims],
            rule=ConsistencyRule(self.rule).value,
            # repair_rule at its default is left out: searches stored before it existed keep
            # their addresses
            params={k: v for k, v in asdict(self.params).items() if k != "checkpoint_every"
                    and not (k == "repair_rule" and v == "improve")},
            seed=self.seed, template=self.template, labels=list(self.labels),
            prompt_encoding=PROMPT_ENCODING,
            fixed=dict(sorted(self.fixed.items())),
            search_unit=self.search_unit, part=self.part)

    def spec(self) -> dict:
        return self.search_spec().as_dict()

    def hash(self) -> str:
        blob = json.dumps(self.spec(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def directory(self, searches_dir: str | Path) -> Path:
        return search_dir(searches_dir, self.model, self.dataset, self.fold, self.persona, self.hash())


@dataclass
class StoredSearch:
    task: SearchTask
    path: Path
    labels: dict[str, bool]
    confidence: dict[str, float]
    summary: SearchSummary
    computed: bool
    """True when this process ran (or finished) the search, False when it was loaded."""


class StopRequest:
    """Turns SIGTERM/SIGUSR2 into a flag polled at iteration boundaries.

    After the search saved its checkpoint, :meth:`reraise` restores the previous handler and sends
    the signal again, so submitit's own handler (requeue on timeout/preemption) or the default
    action still happens.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("signal %d received: checkpointing at the next iteration boundary", signum)
        self.received = signum

    def __call__(self) -> bool:
        return self.received is not None

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)

    def reraise(self) -> None:
        if self.received is None:
            return
        sig = self.received
        prev = self._previous.get(sig, signal.SIG_DFL)
        signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        os.kill(os.getpid(), sig)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    from plural_icm.utils.claim import Claim

    path.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    claim = Claim(path / ".claim",
                  on_wait=lambda h: log.info("waiting for %s (another job is running this search)", path))
    with claim:
        if time.time() - t0 > 1:
            log.info("got %s after %.0f s", path, time.time() - t0)
        yield


def load_search(task: SearchTask, path: Path) -> StoredSearch:
    rows = read_labels(path)
    return StoredSearch(task=task, path=path, labels={r.item_id: r.label for r in rows},
                        confidence={r.item_id: r.confidence for r in rows},
                        summary=SearchSummary.read(path), computed=False)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint to resume from, or None. A corrupt or wrong-shape one (a disk filled up,
    another version's file) is moved aside with a warning, and the search restarts from scratch."""
    try:
        return read_checkpoint(path)
    except SearchRecordError as exc:
        problem = str(exc).removeprefix(f"{path}: ")
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    os.replace(path, aside)
    log.warning("%s cannot be resumed from (%s): moved to %s; the search restarts from scratch",
                path, problem, aside.name)
    return None


def all_on_disk(tasks: Sequence[SearchTask], searches_dir: str | Path) -> bool:
    """Whether every task's search is complete on disk (loading them needs no model)."""
    return all(is_complete(t.directory(searches_dir), SEARCH_FILES) for t in tasks)


def run_or_load(tasks: Sequence[SearchTask], searches_dir: str | Path,
                backend_factory: Callable[[], Any],
                on_iteration: Callable[[SearchTask, dict], None] | None = None) -> list[StoredSearch]:
    """Results of ``tasks`` (in order): loaded when complete, else run (resuming checkpoints).

    ``backend_factory`` is called only if something has to be computed, so a relaunch of finished
    work never loads a model.
    """
    paths = [t.directory(searches_dir) for t in tasks]
    out: dict[int, StoredSearch] = {}
    for k, (t, p) in enumerate(zip(tasks, paths)):
        if is_complete(p, SEARCH_FILES):
            out[k] = load_search(t, p)
    todo = [k for k in range(len(tasks)) if k not in out]
    if not todo:
        return [out[k] for k in range(len(tasks))]
    with ExitStack() as stack:
        for k in sorted(todo, key=lambda k: str(paths[k])):
            stack.enter_context(_locked(paths[k]))
        # Another job may have finished some while we waited for the locks.
        for k in list(todo):
            if is_complete(paths[k], SEARCH_FILES):
                out[k] = load_search(tasks[k], paths[k])
                todo.remove(k)
        if todo:
            backend = backend_factory()
            renderer_cache: dict = {}
            stop = stack.enter_context(StopRequest())
            searches = []
            for k in todo:
                t, p = tasks[k], paths[k]
                t.search_spec().write(p)
                ck = p / CHECKPOINT
                state = load_checkpoint(ck)
                key = (t.template, t.labels)
                renderer = renderer_cache.setdefault(key, ClaimRenderer(backend, t.template, t.labels))
                searches.append(ICMSearch(
                    t.claims, t.rule, renderer, t.params, seed=t.seed, fixed=t.fixed,
                    max_context=backend.max_context, resume_state=state,
                    checkpoint=(lambda st, ck=ck: write_checkpoint(ck, st)),
                    should_stop=stop,
                    on_iteration=(lambda row, t=t: on_iteration(t, row)) if on_iteration else None))
            try:
                results = run_searches(searches, backend, list(tasks[todo[0]].labels))
            except Exception:
                if stop.received is not None:
                    stop.reraise()
                raise
            for k, res in zip(todo, results):
                _write_result(tasks[k], paths[k], res, backend)
                out[k] = load_search(tasks[k], paths[k])
                out[k].computed = True
    return [out[k] for k in range(len(tasks))]


def _write_result(task: SearchTask, path: Path, res: SearchResult, backend: Any) -> None:
    gold = {c.item_id: c.gold for c in task.claims}
    write_labels(path, [LabelRow(item_id=j, label=y, confidence=res.confidence[j], gold=gold[j])
                        for j, y in res.labels.items()])
    write_trajectory(path, res.trajectory)
    SearchSummary(**res.summary(), persona=task.persona, fold=task.fold, model=task.model,
                  dataset=task.dataset, hash=path.name, search_unit=task.search_unit,
                  part=task.part, seed_labels=task.params.seed_labels).write(path)
    SearchComplete(hash=path.name, finished=time.time()).write(path)
    ck = path / CHECKPOINT
    if ck.exists():
        ck.unlink()


def best_of_restarts(results: Sequence[StoredSearch]) -> StoredSearch:
    """The highest-U assignment among restarts of one search set."""
    return max(results, key=lambda r: r.summary.U)
