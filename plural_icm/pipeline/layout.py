"""Where results live. Directories are named from the choices, never from timestamps, so a
relaunch finds finished cells and skips them, and never overwrites them.

    <output_dir>/results/<run_tag>/<model>/<dataset>/<condition>/n<n_examples|all>/fold<k>/seed<s>/
        config.yaml         resolved config of the cell (plus Hydra choices)
        predictions.jsonl   one row per test claim (see plural_icm.inference)
        metrics.json        {"overall": {...}, "per_persona": {persona: {...}}, "meta": {...}}
        examples.jsonl      the in-context example labels used, per persona
        COMPLETE.json       written last: fingerprint, wall time; a cell is complete iff present

    <output_dir>/searches/<model>/<dataset>/fold<k>/<persona>/<search_hash>/
        spec.json           everything that determines the search (content-addressed by its hash)
        checkpoint.json     latest resumable state (atomic)
        trajectory.jsonl    one row per iteration
        labels.jsonl        final labels with per-label confidence
        summary.json        U, P, I, iterations, time, label accuracy vs gold
        COMPLETE.json       written last

    <output_dir>/collaborative/<model>/<dataset>/<persona>/<method>/fold<k>/
        questions.jsonl     the questions put to the annotator
        answers.jsonl       their answers (simulated from gold unless a file of answers is given)
        summary.json        asked, and test / label accuracy and coherence before and after
"""

from __future__ import annotations

import json
from pathlib import Path

COMPLETE = "COMPLETE.json"


def cell_dir(results_dir: str | Path, run_tag: str, model: str, dataset: str, condition: str,
             n_examples: int | None, fold: int, seed: int) -> Path:
    n = "all" if n_examples is None else str(n_examples)
    return Path(results_dir) / run_tag / model / dataset / condition / f"n{n}" / f"fold{fold}" / f"seed{seed}"


def search_dir(searches_dir: str | Path, model: str, dataset: str, fold: int, persona: str,
               search_hash: str) -> Path:
    return Path(searches_dir) / model / dataset / f"fold{fold}" / persona / search_hash


def collaborative_dir(output_dir: str | Path, model: str, dataset: str, persona: str, method: str,
                      fold: int) -> Path:
    return Path(output_dir) / "collaborative" / model / dataset / persona / method / f"fold{fold}"


COLLABORATIVE_GLOB = "collaborative/*/*/*/*/fold*/summary.json"
"""The collaborative summaries under an output directory (parts as in ``collaborative_dir``)."""


#: What a complete cell / search directory holds besides ``COMPLETE.json``: a ``COMPLETE.json``
#: without its results (a copy that lost files, a hand edit) is not complete.
CELL_FILES = ("metrics.json", "predictions.jsonl")
SEARCH_FILES = ("labels.jsonl", "summary.json")


def is_complete(path: str | Path, required: tuple[str, ...] = ()) -> bool:
    """``COMPLETE.json`` is a JSON object and every file of ``required`` is present."""
    path = Path(path)
    marker = path / COMPLETE
    if not marker.is_file() or not all((path / f).is_file() for f in required):
        return False
    try:
        return isinstance(json.loads(marker.read_text(encoding="utf-8")), dict)
    except (ValueError, OSError, RecursionError):
        return False
