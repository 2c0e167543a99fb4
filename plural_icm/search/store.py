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
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.errors import UserError
from plural_icm.layout import COMPLETE, SEARCH_FILES, SUMMARY, is_complete, search_dir
from plural_icm.search.engine import (ICMSearch, SearchInterrupted, SearchParams, SearchResult,
                                      run_searches)
from plural_icm.search.prompts import PROMPT_ENCODING, ClaimRenderer
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl
from plural_icm.utils.stop import StopRequest, report_stop

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

    def spec(self) -> dict:
        return {
            "model": self.model_identity,
            "claims": [[c.item_id, c.group_id, c.question, c.claim] for c in self.claims],
            "rule": ConsistencyRule(self.rule).value,
            "params": {k: v for k, v in asdict(self.params).items() if k != "checkpoint_every"},
            "seed": self.seed, "template": self.template, "labels": list(self.labels),
            "prompt_encoding": PROMPT_ENCODING,
            "fixed": dict(sorted(self.fixed.items())),
            "search_unit": self.search_unit, "part": self.part,
        }

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
    summary: dict
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


class SearchStateError(UserError):
    """A finished search's files on disk are not what the search wrote (a hand edit, a copy
    that lost rows, another version's file); the message names the file and what is wrong."""


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SearchStateError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise SearchStateError(f"{path}: not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise SearchStateError(f"{path}: not readable JSON ({type(exc).__name__}: "
                               f"{str(exc)[:80]})") from None
    except OSError as exc:
        raise SearchStateError(f"{path}: cannot be read ({exc.strerror})") from None


def read_search_labels(path: Path, item_ids: Sequence[str]) -> tuple[dict[str, bool],
                                                                       dict[str, float]]:
    """(labels, confidence) of ``labels.jsonl``, checked row by row: a JSON object per line, a
    string ``item_id`` of this search's claims, a boolean ``label`` (``"false"`` is not one),
    a finite ``confidence``; every claim exactly once."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SearchStateError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise SearchStateError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    expected = set(item_ids)
    labels: dict[str, bool] = {}
    confidence: dict[str, float] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise SearchStateError(f"{where}: not a JSON line") from None
        if not isinstance(row, dict):
            raise SearchStateError(f"{where}: expected a JSON object, got {type(row).__name__}")
        j, y, c = row.get("item_id"), row.get("label"), row.get("confidence")
        if not isinstance(j, str) or j not in expected:
            raise SearchStateError(f"{where}: item_id {str(j)[:80]!r} is not a claim of this "
                                   f"search")
        if j in labels:
            raise SearchStateError(f"{where}: item_id {j!r} appears twice")
        if not isinstance(y, bool):
            raise SearchStateError(f"{where}: label {str(y)[:40]!r} ({type(y).__name__}) for "
                                   f"{j!r}; expected true or false")
        if not _finite(c):
            raise SearchStateError(f"{where}: confidence {str(c)[:40]!r} for {j!r}; expected a "
                                   f"finite number")
        labels[j], confidence[j] = y, float(c)
    missing = [j for j in item_ids if j not in labels]
    if missing:
        raise SearchStateError(f"{path}: {len(missing)} of {len(expected)} claims have no label "
                               f"(first: {missing[0]!r})" if lines else f"{path}: empty file")
    return labels, confidence


def read_search_summary(path: Path) -> dict:
    """``summary.json``, checked: a JSON object with a finite ``U`` (and finite ``P``/``I`` where
    present) and the search's own hash where it names one."""
    summary = _read_json_file(path)
    if not isinstance(summary, dict):
        raise SearchStateError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    if not _finite(summary.get("U")):
        raise SearchStateError(f"{path}: 'U' is {str(summary.get('U'))[:40]!r}; expected a "
                               f"finite number" if "U" in summary else f"{path}: no 'U'")
    for key in ("P", "I", "mutual_predictability", "inconsistencies"):
        if key in summary and summary[key] is not None and not _finite(summary[key]):
            raise SearchStateError(f"{path}: {key!r} is {str(summary[key])[:40]!r}; expected a "
                                   f"finite number")
    if "hash" in summary and summary["hash"] != path.parent.name:
        raise SearchStateError(f"{path}: belongs to search {str(summary['hash'])[:40]!r}, not "
                               f"{path.parent.name!r}")
    return summary


def load_search(task: SearchTask, path: Path) -> StoredSearch:
    """A finished search from disk, every file checked (:class:`SearchStateError` names the first
    problem)."""
    marker = _read_json_file(path / COMPLETE)
    if not isinstance(marker, dict) or marker.get("hash", path.name) != path.name:
        raise SearchStateError(f"{path / COMPLETE}: not this search's marker (expected a JSON "
                               f"object with hash {path.name!r})")
    labels, confidence = read_search_labels(path / "labels.jsonl",
                                            [c.item_id for c in task.claims])
    summary = read_search_summary(path / SUMMARY)
    return StoredSearch(task=task, path=path, labels=labels, confidence=confidence,
                        summary=summary, computed=False)


def set_aside(path: Path, problem: str) -> None:
    """Move a finished search's result files aside (``<name>.corrupt-<time>``), so it is
    recomputed; the warning names the file and what was wrong."""
    stamp = int(time.time())
    moved = []
    for name in (COMPLETE, "labels.jsonl", SUMMARY):
        f = path / name
        if f.exists():
            os.replace(f, f.with_name(f"{name}.corrupt-{stamp}"))
            moved.append(name)
    log.warning("%s; set aside (%s -> *.corrupt-%d): the search is computed again", problem,
                ", ".join(moved), stamp)


def _load_or_set_aside(task: SearchTask, path: Path) -> StoredSearch | None:
    """The finished search at ``path``, or None after setting aside files that do not hold up."""
    if not is_complete(path, SEARCH_FILES):
        if (path / COMPLETE).exists():
            set_aside(path, f"{path / COMPLETE}: not a JSON object or its results are missing")
        return None
    try:
        return load_search(task, path)
    except SearchStateError as exc:
        set_aside(path, str(exc))
        return None


#: Keys of a checkpoint (:meth:`ICMSearch._save`) and the type of each.
CHECKPOINT_KEYS = {"rng": dict, "labels": dict, "layout": dict, "scores": dict, "iteration": int,
                   "accepted": int, "since_accept": int, "trajectory": list}


def checkpoint_problem(state: Any, item_ids: Sequence[str] | None = None) -> str | None:
    """Why ``state`` cannot be resumed from (None when it can). With ``item_ids`` (the search's
    claims), its labels must be booleans of those claims and its scores finite pairs for them."""
    import numpy as np

    from plural_icm.search.layout import layout_from_dict

    if not isinstance(state, dict):
        return f"expected a JSON object, got {type(state).__name__}"
    for key, kind in CHECKPOINT_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            return f"key {key!r} is missing or not a {kind.__name__}"
    try:
        np.random.default_rng().bit_generator.state = state["rng"]
        layout_from_dict(state["layout"])
        for v in state["scores"].values():
            if len(v) != 2 or not all(isinstance(x, (int, float)) for x in v):
                return "scores must be pairs of numbers"
        if state["iteration"] < 0 or state["accepted"] < 0 or state["since_accept"] < 0:
            return "negative counters"
        bad = next((j for j, y in state["labels"].items() if not isinstance(y, bool)), None)
        if bad is not None:
            return f"label of {bad!r} is {state['labels'][bad]!r}, not true or false"
        if item_ids is not None:
            ids = set(item_ids)
            other = next((j for j in [*state["labels"], *state["scores"]] if j not in ids), None)
            if other is not None:
                return f"item {str(other)[:60]!r} is not a claim of this search"
            if not all(_finite(x) for v in state["scores"].values() for x in v):
                return "scores must be finite"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:100]}"
    return None


def load_checkpoint(path: Path, item_ids: Sequence[str] | None = None) -> dict | None:
    """The checkpoint to resume from, or None. A corrupt or wrong-shape one (a disk filled up,
    another version's file, labels of other claims) is moved aside with a warning, and the
    search restarts from scratch."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        problem = checkpoint_problem(state, item_ids)
    except (ValueError, RecursionError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError
        state, problem = None, f"not readable JSON ({type(exc).__name__})"
    if problem is None:
        return state
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
                atomic_write_json(p / "spec.json", t.spec())
                ck = p / "checkpoint.json"
                state = load_checkpoint(ck, [c.item_id for c in t.claims])
                key = (t.template, t.labels)
                renderer = renderer_cache.setdefault(key, ClaimRenderer(backend, t.template, t.labels))
                searches.append(ICMSearch(
                    t.claims, t.rule, renderer, t.params, seed=t.seed, fixed=t.fixed,
                    max_context=backend.max_context, resume_state=state,
                    checkpoint=(lambda st, ck=ck: atomic_write_json(ck, st)),
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
        report_stop(int(stop.received), [(str(paths[k] / "checkpoint.json"), i)
                                          for k, i in zip(todo, kept)],
                    finished=sum(r is not None for r in interrupted.finished))
        stop.reraise()
        raise interrupted
    return [out[k] for k in range(len(tasks))]


def _write_result(task: SearchTask, path: Path, res: SearchResult, backend: Any) -> None:
    gold = {c.item_id: c.gold for c in task.claims}
    atomic_write_jsonl(path / "labels.jsonl", [
        {"item_id": j, "label": y, "confidence": res.confidence[j], "gold": gold[j]}
        for j, y in res.labels.items()])
    atomic_write_jsonl(path / "trajectory.jsonl", res.trajectory)
    summary = res.summary() | {"persona": task.persona, "fold": task.fold, "model": task.model,
                               "dataset": task.dataset, "hash": path.name,
                               "search_unit": task.search_unit, "part": task.part,
                               "seed_labels": task.params.seed_labels}
    atomic_write_json(path / "summary.json", summary)
    atomic_write_json(path / COMPLETE, {"hash": path.name, "finished": time.time()})
    ck = path / "checkpoint.json"
    if ck.exists():
        ck.unlink()


def best_of_restarts(results: Sequence[StoredSearch]) -> StoredSearch:
    """The highest-U assignment among restarts of one search set (each summary's U was checked
    finite when it was read)."""
    return max(results, key=lambda r: r.summary["U"])
