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
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.layout import SEARCH_FILES, is_complete, search_dir
from plural_icm.search.engine import (ICMSearch, SearchInterrupted, SearchParams, SearchResult,
                                      run_searches)
from plural_icm.search.prompts import PROMPT_ENCODING, ClaimRenderer
from plural_icm.search.records import (CHECKPOINT, CHECKPOINT_KEYS, LABELS, SEARCH_COMPLETE,
                                       SEARCH_SUMMARY, LabelRow, SearchComplete,
                                       SearchRecordError, SearchSpec, SearchSummary,
                                       checkpoint_problem, read_checkpoint, read_labels,
                                       write_checkpoint, write_labels, write_trajectory)
from plural_icm.utils.stop import StopRequest, report_stop

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
    """A finished search from disk through its records, checked against the task as well: the
    marker and summary name this search's hash, every claim has exactly one label and no other
    item has one (:class:`SearchRecordError` names the file and the first problem)."""
    marker = path / SEARCH_COMPLETE
    try:
        stamp = json.loads(marker.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError):
        stamp = None
    if not isinstance(stamp, dict) or stamp.get("hash", path.name) != path.name:
        raise SearchRecordError(f"{marker}: not this search's marker (expected a JSON object with "
                                f"hash {path.name!r})")
    rows = read_labels(path)
    expected = [c.item_id for c in task.claims]
    known, seen = set(expected), set()
    labels_file = path / LABELS
    if not rows:
        raise SearchRecordError(f"{labels_file}: empty file")
    for n, r in enumerate(rows, start=1):
        if r.item_id not in known:
            raise SearchRecordError(f"{labels_file}:{n}: item_id {r.item_id[:80]!r} is not a "
                                    f"claim of this search")
        if r.item_id in seen:
            raise SearchRecordError(f"{labels_file}:{n}: item_id {r.item_id!r} appears twice")
        seen.add(r.item_id)
    missing = [j for j in expected if j not in seen]
    if missing:
        raise SearchRecordError(f"{labels_file}: {len(missing)} of {len(expected)} claims have no "
                                f"label (first: {missing[0]!r})")
    summary = SearchSummary.read(path)
    if summary.hash is not None and summary.hash != path.name:
        raise SearchRecordError(f"{path / SEARCH_SUMMARY}: belongs to search {summary.hash[:40]!r}, "
                                f"not {path.name!r}")
    return StoredSearch(task=task, path=path, labels={r.item_id: r.label for r in rows},
                        confidence={r.item_id: r.confidence for r in rows},
                        summary=summary, computed=False)


def set_aside(path: Path, problem: str) -> None:
    """Move a finished search's result files aside (``<name>.corrupt-<time>``), so it is
    recomputed; the warning names the file and what was wrong."""
    stamp = int(time.time())
    moved = []
    for name in (SEARCH_COMPLETE, LABELS, SEARCH_SUMMARY):
        f = path / name
        if f.exists():
            os.replace(f, f.with_name(f"{name}.corrupt-{stamp}"))
            moved.append(name)
    log.warning("%s; set aside (%s -> *.corrupt-%d): the search is computed again", problem,
                ", ".join(moved), stamp)


def _load_or_set_aside(task: SearchTask, path: Path) -> StoredSearch | None:
    """The finished search at ``path``, or None after setting aside files that do not hold up."""
    if not is_complete(path, SEARCH_FILES):
        if (path / SEARCH_COMPLETE).exists():
            set_aside(path, f"{path / SEARCH_COMPLETE}: not a JSON object or its results are "
                            f"missing")
        return None
    try:
        return load_search(task, path)
    except SearchRecordError as exc:
        set_aside(path, str(exc))
        return None


def load_checkpoint(path: Path, item_ids: Sequence[str] | None = None) -> dict | None:
    """The checkpoint to resume from, or None. A corrupt or wrong-shape one (a disk filled up,
    another version's file, labels of other claims) is moved aside with a warning, and the
    search restarts from scratch."""
    try:
        return read_checkpoint(path, item_ids)
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
            loaded = _load_or_set_aside(t, p)
            if loaded is not None:
                out[k] = loaded
    todo = [k for k in range(len(tasks)) if k not in out]
    if not todo:
        return [out[k] for k in range(len(tasks))]
    stop = StopRequest()
    interrupted: SearchInterrupted | None = None
    with ExitStack() as stack:
        for k in sorted(todo, key=lambda k: str(paths[k])):
            stack.enter_context(_locked(paths[k]))
        # Another job may have finished some while we waited for the locks.
        for k in list(todo):
            loaded = _load_or_set_aside(tasks[k], paths[k])
            if loaded is not None:
                out[k] = loaded
                todo.remove(k)
        if todo:
            backend = backend_factory()
            renderer_cache: dict = {}
            stack.enter_context(stop)
            searches = []
            for k in todo:
                t, p = tasks[k], paths[k]
                t.search_spec().write(p)
                ck = p / CHECKPOINT
                state = load_checkpoint(ck, [c.item_id for c in t.claims])
                key = (t.template, t.labels)
                renderer = renderer_cache.setdefault(key, ClaimRenderer(backend, t.template, t.labels))
                searches.append(ICMSearch(
                    t.claims, t.rule, renderer, t.params, seed=t.seed, fixed=t.fixed,
                    max_context=backend.max_context, resume_state=state,
                    checkpoint=(lambda st, ck=ck: write_checkpoint(ck, st)),
                    should_stop=stop,
                    on_iteration=(lambda row, t=t: on_iteration(t, row)) if on_iteration else None))
            try:
                results = run_searches(searches, backend, list(tasks[todo[0]].labels),
                                       should_stop=stop)
            except SearchInterrupted as exc:
                if stop.received is None:
                    raise
                interrupted = exc
                for k, res in zip(todo, exc.finished):  # finished before the stop: kept whole
                    if res is not None:
                        _write_result(tasks[k], paths[k], res, backend)
            except Exception:
                if stop.received is not None:  # the stop came while this failed: still honour it
                    stop.reraise()
                raise
            else:
                for k, res in zip(todo, results):
                    _write_result(tasks[k], paths[k], res, backend)
                    out[k] = load_search(tasks[k], paths[k])
                    out[k].computed = True
    if interrupted is not None:  # the claims are released: another job may take over at once
        kept = interrupted.kept + [None] * (len(todo) - len(interrupted.kept))
        report_stop(int(stop.received), [(str(paths[k] / CHECKPOINT), i)
                                          for k, i in zip(todo, kept)],
                    finished=sum(r is not None for r in interrupted.finished))
        stop.reraise()
        raise interrupted
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
    """The highest-U assignment among restarts of one search set (each summary's U was checked
    finite when it was read)."""
    return max(results, key=lambda r: r.summary.U)
