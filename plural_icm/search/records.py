"""The files of one ICM search directory, as typed records shared by their writer and readers.

Each record has one writer (temp file then rename: :mod:`plural_icm.utils.io`) and one reader,
used by the search store, the pipeline, the tracking and the analysis alike, so a renamed field
breaks a test, not a reader. A reader refuses a file of the wrong shape with
:class:`SearchRecordError`, naming the file and what was expected.

    spec.json           :class:`SearchSpec`: everything that determines the search (its hash)
    checkpoint.json     the resumable state (:func:`write_checkpoint`, :func:`read_checkpoint`)
    trajectory.jsonl    one row per iteration (:func:`write_trajectory`, :func:`read_trajectory`)
    labels.jsonl        :class:`LabelRow` per claim: the final label and its confidence
    summary.json        :class:`SearchSummary`: U, P, I, iterations, time, label accuracy vs gold
    COMPLETE.json       :class:`SearchComplete`, written last

This module sits below the config layer: it imports nothing of Hydra.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Optional

from plural_icm.layout import COMPLETE, SEARCH_FILES, SUMMARY, RecordError
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl, read_jsonl

SPEC = "spec.json"
CHECKPOINT = "checkpoint.json"
TRAJECTORY = "trajectory.jsonl"
LABELS = "labels.jsonl"
SEARCH_COMPLETE = COMPLETE
SEARCH_SUMMARY = SUMMARY  # "summary.json" (plural_icm.layout.SUMMARY)

assert SEARCH_FILES == (LABELS, SEARCH_SUMMARY)  # what a complete search holds (plural_icm.layout)


class SearchRecordError(RecordError):
    """A search file that cannot be read as its record: names the file and what was expected."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SearchRecordError(f"{path}: not readable JSON ({type(exc).__name__})") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_fields(d: Any, cls: type, source: str, types: dict[str, tuple[type, ...]],
                  required: tuple[str, ...], finite: tuple[str, ...] = ()) -> dict:
    """``d`` as keyword arguments of ``cls``: a JSON object with only ``cls``'s keys, the
    ``required`` ones present, each of ``types`` of its type (or None), ``finite`` ones finite."""
    if not isinstance(d, dict):
        raise SearchRecordError(f"{source}: expected a JSON object for a {cls.__name__}, "
                                f"got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise SearchRecordError(f"{source}: unexpected keys {sorted(unknown)} for a {cls.__name__} "
                                f"(expected {sorted(names)})")
    missing = [k for k in required if k not in d]
    if missing:
        raise SearchRecordError(f"{source}: a {cls.__name__} needs the keys {missing}")
    for k, kinds in types.items():
        v = d.get(k)
        if v is None:
            continue
        ok = (_is_number(v) if kinds == (float,) else
              isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds))
        if not ok:
            raise SearchRecordError(f"{source}: {k} = {v!r} is not a "
                                    f"{' or '.join(t.__name__ for t in kinds)}")
        if k in finite and not math.isfinite(float(v)):
            raise SearchRecordError(f"{source}: {k} = {v!r} is not a finite number")
    return d


# -- spec.json ---------------------------------------------------------------------------------

@dataclass
class SearchSpec:
    """``spec.json``: everything that determines a search; its hash names the directory
    (:meth:`plural_icm.search.store.SearchTask.hash`). The key order is the file's."""

    model: dict
    claims: list
    """``[item_id, group_id, question, claim]`` per claim, in search order."""
    rule: str
    params: dict
    seed: int
    template: str
    labels: list
    prompt_encoding: str
    fixed: dict
    search_unit: str
    part: Optional[int]

    def as_dict(self) -> dict:
        return asdict(self)

    def write(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / SPEC, self.as_dict())

    @classmethod
    def read(cls, directory: str | Path) -> "SearchSpec":
        path = Path(directory) / SPEC
        d = _check_fields(_read_json(path), cls, str(path),
                          {"model": (dict,), "claims": (list,), "rule": (str,), "params": (dict,),
                           "seed": (int,), "template": (str,), "labels": (list,),
                           "prompt_encoding": (str,), "fixed": (dict,), "search_unit": (str,),
                           "part": (int,)},
                          required=tuple(f.name for f in fields(cls)))
        return cls(**d)


# -- summary.json ------------------------------------------------------------------------------

@dataclass
class SearchSummary:
    """``summary.json`` of one search (the store writes it), or the merged summary of a persona's
    search parts (:func:`plural_icm.search.units.merge_parts`, in memory only: it has ``parts``
    and no ``accepted``, ``seed``, ``wall_time_s``, ``fold``, ``model``, ``dataset``, ``hash``).

    ``U`` is ``alpha * P - I`` (the paper's "coherence"); ``P`` the mutual predictability; ``I``
    the inconsistencies, all of the labels handed out. The field order is the file's key order.
    Read-only ``summary["U"]``/``summary.get("U")`` are kept for readers written against the
    former plain dict.
    """

    U: float
    P: Optional[float]
    I: int
    iterations: int = 0
    accepted: Optional[int] = None
    seed: Optional[int] = None
    wall_time_s: Optional[float] = None
    label_accuracy: Optional[float] = None
    n_claims: int = 0
    n_predicted_unlabelled: int = 0
    searched: Optional[dict] = None
    """U, P, I and size of the labelled set the search itself reached (only when claims were
    labelled by a final prediction: see ``n_predicted_unlabelled``)."""
    warning: Optional[str] = None
    persona: Optional[str] = None
    fold: Optional[int] = None
    model: Optional[str] = None
    dataset: Optional[str] = None
    hash: Optional[str] = None
    search_unit: Optional[str] = None
    part: Optional[int] = None
    seed_labels: Optional[str] = None
    parts: Optional[list] = None
    """Merged summaries only: each part's summary (with its ``path``)."""
    context_order: Optional[str] = None
    """``icm.context_order`` U and P were scored in (None: a search from before it was recorded)."""
    nearest_example: Optional[dict] = None
    """Counts of the last example before each scored query: ``queries``, ``same_group``,
    ``recently_changed`` (:attr:`plural_icm.search.engine.SearchResult.nearest_example`)."""

    #: Keys written only when set (the file of a search without them has none).
    OPTIONAL_KEYS = ("searched", "warning", "parts", "context_order", "nearest_example")
    #: The scalar fields' types, checked by :meth:`read` (None is allowed for every one but U, I).
    TYPES = {"U": (float,), "P": (float,), "I": (int,), "iterations": (int,), "accepted": (int,),
             "seed": (int,), "wall_time_s": (float,), "label_accuracy": (float,),
             "n_claims": (int,), "n_predicted_unlabelled": (int,), "searched": (dict,),
             "warning": (str,), "persona": (str,), "fold": (int,), "model": (str,),
             "dataset": (str,), "hash": (str,), "search_unit": (str,), "part": (int,),
             "seed_labels": (str,), "parts": (list,), "context_order": (str,),
             "nearest_example": (dict,)}
    FINITE = ("U", "P", "wall_time_s", "label_accuracy")

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in self.OPTIONAL_KEYS:
            if d[k] is None:
                del d[k]
        return d

    def write(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / SEARCH_SUMMARY, self.as_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> "SearchSummary":
        d = _check_fields(d, cls, source or cls.__name__, cls.TYPES, required=("U", "I"),
                          finite=cls.FINITE)
        if d.get("U") is None or d.get("I") is None:
            raise SearchRecordError(f"{source or cls.__name__}: U and I must be numbers, "
                                    f"got U={d.get('U')!r}, I={d.get('I')!r}")
        return cls(**d)

    @classmethod
    def read(cls, directory: str | Path) -> "SearchSummary":
        path = Path(directory) / SEARCH_SUMMARY
        return cls.from_dict(_read_json(path), str(path))

    # read-only mapping access for readers of the former dict
    def __getitem__(self, key: str) -> Any:
        if key not in self.as_dict():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.as_dict().items())


# -- labels.jsonl ------------------------------------------------------------------------------

@dataclass
class LabelRow:
    """A line of ``labels.jsonl``: the search's final label of a claim, the confidence of the
    final scores in it, and the gold label (None where the data has none)."""

    item_id: str
    label: bool
    confidence: float
    gold: Optional[bool]

    def as_dict(self) -> dict:
        return asdict(self)


def write_labels(directory: str | Path, rows: list[LabelRow]) -> None:
    atomic_write_jsonl(Path(directory) / LABELS, (r.as_dict() for r in rows))


def read_labels(directory: str | Path) -> list[LabelRow]:
    """The rows of ``labels.jsonl``; :class:`SearchRecordError` names the line of a bad row."""
    path = Path(directory) / LABELS
    try:
        rows = read_jsonl(path)
    except (ValueError, OSError) as exc:
        raise SearchRecordError(f"{path}: {exc}") from None
    out = []
    for i, r in enumerate(rows, start=1):
        where = f"{path}:{i}"
        _check_fields(r, LabelRow, where, {"item_id": (str,), "confidence": (float,),
                                           "label": (bool,), "gold": (bool,)},
                      required=("item_id", "label", "confidence"), finite=("confidence",))
        if not isinstance(r.get("label"), bool):
            raise SearchRecordError(f"{where}: label = {r.get('label')!r} is not a bool")
        out.append(LabelRow(item_id=r["item_id"], label=r["label"],
                            confidence=float(r["confidence"]), gold=r.get("gold")))
    return out


# -- trajectory.jsonl --------------------------------------------------------------------------

def write_trajectory(directory: str | Path, rows: list[dict]) -> None:
    """One row per iteration, as the engine produced them (:meth:`ICMSearch.run`)."""
    atomic_write_jsonl(Path(directory) / TRAJECTORY, rows)


def read_trajectory(directory: str | Path) -> list[dict]:
    path = Path(directory) / TRAJECTORY
    try:
        return read_jsonl(path)
    except (ValueError, OSError) as exc:
        raise SearchRecordError(f"{path}: {exc}") from None


# -- checkpoint.json ---------------------------------------------------------------------------

#: Keys of a checkpoint (:meth:`plural_icm.search.engine.SearchState.to_checkpoint`) and the type
#: of each.
CHECKPOINT_KEYS = {"rng": dict, "labels": dict, "layout": dict, "scores": dict, "iteration": int,
                   "accepted": int, "since_accept": int, "trajectory": list}


def checkpoint_problem(state: Any, item_ids: Any = None) -> str | None:
    """Why ``state`` cannot be resumed from (None when it can). With ``item_ids`` (the search's
    claims), its labels must be booleans of those claims and its scores finite pairs for them."""
    import numpy as np

    from plural_icm.search.context_order import layout_from_dict

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
            if not all(math.isfinite(x) for v in state["scores"].values() for x in v):
                return "scores must be finite"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:100]}"
    return None


def write_checkpoint(path: str | Path, state: dict) -> None:
    """The engine's state (``path``: the search's ``checkpoint.json``)."""
    atomic_write_json(path, state)


def read_checkpoint(path: str | Path, item_ids: Any = None) -> dict | None:
    """The resumable state in ``path`` (None when there is none); :class:`SearchRecordError`
    when it cannot be resumed from (unreadable JSON, wrong shape: :func:`checkpoint_problem`)."""
    path = Path(path)
    if not path.is_file():
        return None
    state = _read_json(path)
    problem = checkpoint_problem(state, item_ids)
    if problem is not None:
        raise SearchRecordError(f"{path}: {problem}")
    return state


# -- COMPLETE.json -----------------------------------------------------------------------------

@dataclass
class SearchComplete:
    """``COMPLETE.json`` of a search: written last."""

    hash: str
    finished: float

    def write(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / SEARCH_COMPLETE, asdict(self))


__all__ = ["SPEC", "CHECKPOINT", "TRAJECTORY", "LABELS", "SEARCH_SUMMARY", "SEARCH_COMPLETE",
           "SEARCH_FILES", "SearchRecordError", "SearchSpec", "SearchSummary", "LabelRow",
           "SearchComplete", "write_labels", "read_labels", "write_trajectory", "read_trajectory",
           "CHECKPOINT_KEYS", "checkpoint_problem", "write_checkpoint", "read_checkpoint"]
