"""Read the result tree (plural_icm.pipeline.layout) into pandas DataFrames.

The disk is the record (W&B is only a view). Every loader works on a partial grid: cells that are
absent are simply not rows, incomplete cells (no ``COMPLETE.json``) are skipped unless asked for,
and metrics that a cell did not compute are NaN, never 0.

    <outputs>/results/<run_tag>/<model>/<dataset>/<condition>/n<n|all>/fold<k>/seed<s>/
    <outputs>/searches/<model>/<dataset>/fold<k>/<persona>/<hash>/
    <outputs>/collaborative/<model>/<dataset>/<persona>/<method>/fold<k>/summary.json
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from analysis.paper_numbers import score_metric
from plural_icm.pipeline.layout import COLLABORATIVE_GLOB

COMPLETE = "COMPLETE.json"
CELL_KEYS = ["run_tag", "model", "dataset", "condition", "n", "fold", "seed"]
METRIC_KEYS = ["accuracy", "accuracy_se", "n_questions", "claim_accuracy", "ece",
               "stable_fraction", "js_distance", "representation_score", "icm_label_accuracy",
               "coherence"]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _num(v: Any) -> float:
    """JSON value -> float; None/missing/non-numeric -> NaN (never 0)."""
    if v is None:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _int_suffix(name: str, prefix: str) -> int | None:
    m = re.fullmatch(rf"{prefix}(\d+)", name)
    return int(m.group(1)) if m else None


def iter_cell_dirs(outputs: str | Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """(keys, path) of every cell directory under ``<outputs>/results`` (complete or not)."""
    root = Path(outputs) / "results"
    if not root.is_dir():
        return
    for seed_dir in sorted(root.glob("*/*/*/*/n*/fold*/seed*")):
        if not seed_dir.is_dir():
            continue
        rel = seed_dir.relative_to(root).parts
        run_tag, model, dataset, condition, n_part, fold_part, seed_part = rel
        fold, seed = _int_suffix(fold_part, "fold"), _int_suffix(seed_part, "seed")
        n_label = n_part[1:]
        if fold is None or seed is None or not (n_label == "all" or n_label.isdigit()):
            continue
        yield ({"run_tag": run_tag, "model": model, "dataset": dataset, "condition": condition,
                "n": n_label, "fold": fold, "seed": seed}, seed_dir)


def main_score(dataset: str, overall: dict[str, Any]) -> tuple[float, str]:
    """(score, metric name): accuracy, or the representation score for OvertonBench (or whenever
    accuracy is absent and a representation score is present)."""
    metric = score_metric(dataset)
    val = _num(overall.get(metric))
    if np.isnan(val) and metric == "accuracy" and overall.get("representation_score") is not None:
        return _num(overall["representation_score"]), "representation_score"
    return val, metric


def _used_examples(mfile: Path) -> float:
    """Mean over personas of the in-context examples a cell used (NaN when none recorded)."""
    try:
        per = _read_json(mfile).get("per_persona") or {}
    except (json.JSONDecodeError, OSError):
        return np.nan
    vals = [_num((v or {}).get("n_examples")) for v in per.values()]
    vals = [v for v in vals if not np.isnan(v)]
    return float(np.mean(vals)) if vals else np.nan


def load_cells(outputs: str | Path, include_incomplete: bool = False) -> pd.DataFrame:
    """One row per cell: keys, ``complete``, ``path``, the overall metrics (NaN when absent), the
    main ``score`` and its ``score_metric``, ``n_examples`` and ``wall_time_s`` from meta."""
    rows = []
    for keys, path in iter_cell_dirs(outputs):
        complete = (path / COMPLETE).is_file()
        if not complete and not include_incomplete:
            continue
        row: dict[str, Any] = {**keys, "complete": complete, "path": str(path)}
        mfile = path / "metrics.json"
        overall, meta = {}, {}
        if mfile.is_file():
            try:
                m = _read_json(mfile)
                overall, meta = m.get("overall") or {}, m.get("meta") or {}
            except (json.JSONDecodeError, OSError):
                row["complete"] = False
        for k in METRIC_KEYS:
            row[k] = _num(overall.get(k))
        row["score"], row["score_metric"] = main_score(keys["dataset"], overall)
        row["n_examples"] = _num(meta.get("n_examples"))
        if np.isnan(row["n_examples"]) and mfile.is_file() and overall:
            # n = all: meta holds the setting (null); the personas record how many were used
            row["n_examples"] = _used_examples(mfile)
        row["wall_time_s"] = _num(meta.get("wall_time_s"))
        judged = overall.get("judge_is_model_under_test")  # OvertonBench cells only
        row["judge_is_model_under_test"] = judged if isinstance(judged, bool) else None
        rows.append(row)
    cols = CELL_KEYS + ["complete", "path"] + METRIC_KEYS + ["score", "score_metric",
                                                             "n_examples", "wall_time_s",
                                                             "judge_is_model_under_test"]
    return pd.DataFrame(rows, columns=cols)


def load_per_persona(outputs: str | Path) -> pd.DataFrame:
    """One row per (complete cell, persona): keys, ``persona_id``, metrics, ``score``."""
    rows = []
    for keys, path in iter_cell_dirs(outputs):
        if not (path / COMPLETE).is_file() or not (path / "metrics.json").is_file():
            continue
        per = (_read_json(path / "metrics.json").get("per_persona") or {})
        for persona, vals in per.items():
            vals = vals or {}
            row = {**keys, "persona_id": str(persona)}
            for k in METRIC_KEYS:
                row[k] = _num(vals.get(k))
            row["score"], row["score_metric"] = main_score(keys["dataset"], vals)
            rows.append(row)
    return pd.DataFrame(rows, columns=CELL_KEYS + ["persona_id"] + METRIC_KEYS
                        + ["score", "score_metric"])


def load_predictions(outputs: str | Path, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """All ``predictions.jsonl`` rows of complete cells (or of the given ``cells`` rows), with the
    cell keys ``run_tag`` and ``n`` added (the file carries model/dataset/condition/fold/seed)."""
    frames = []
    if cells is None:
        it = ((k, p) for k, p in iter_cell_dirs(outputs) if (p / COMPLETE).is_file())
    else:
        it = ((dict(r[CELL_KEYS]), Path(r["path"])) for _, r in cells.iterrows())
    for keys, path in it:
        f = path / "predictions.jsonl"
        if not f.is_file():
            continue
        df = pd.DataFrame(_read_jsonl(f))
        if df.empty:
            continue
        for k, v in keys.items():  # directory keys win: they are what the analysis groups by
            df[k] = v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_examples(outputs: str | Path) -> pd.DataFrame:
    """The in-context examples (``examples.jsonl``) of every complete cell, with cell keys."""
    frames = []
    for keys, path in iter_cell_dirs(outputs):
        f = path / "examples.jsonl"
        if (path / COMPLETE).is_file() and f.is_file():
            df = pd.DataFrame(_read_jsonl(f))
            for k, v in keys.items():
                df[k] = v
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _iter_search_dirs(outputs: str | Path) -> Iterator[tuple[dict[str, Any], Path]]:
    root = Path(outputs) / "searches"
    if not root.is_dir():
        return
    for d in sorted(root.glob("*/*/fold*/*/*")):
        if not d.is_dir():
            continue
        model, dataset, fold_part, persona, h = d.relative_to(root).parts
        fold = _int_suffix(fold_part, "fold")
        if fold is None:
            continue
        yield {"model": model, "dataset": dataset, "fold": fold, "persona": persona,
               "hash": h}, d


def load_searches(outputs: str | Path) -> pd.DataFrame:
    """One row per search with a ``summary.json``: keys + U, P, I, iterations, accepted,
    wall_time_s, label_accuracy, n_claims, complete."""
    rows = []
    fields = ["U", "P", "I", "iterations", "accepted", "wall_time_s", "label_accuracy", "n_claims"]
    for keys, d in _iter_search_dirs(outputs):
        f = d / "summary.json"
        if not f.is_file():
            continue
        s = _read_json(f)
        row = {**keys, "complete": (d / COMPLETE).is_file(), "path": str(d)}
        for k in fields:
            row[k] = _num(s.get(k))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "fold", "persona", "hash", "complete",
                                       "path"] + fields)


def load_trajectories(outputs: str | Path) -> pd.DataFrame:
    """All ``trajectory.jsonl`` rows with search keys."""
    frames = []
    for keys, d in _iter_search_dirs(outputs):
        f = d / "trajectory.jsonl"
        if f.is_file():
            df = pd.DataFrame(_read_jsonl(f))
            for k, v in keys.items():
                df[k] = v
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_collaborative(outputs: str | Path) -> pd.DataFrame:
    """One row per collaborative-elicitation summary (one persona, method and fold): model,
    dataset, persona, method, fold, k (labels asked in that fold), test_accuracy, label_accuracy,
    coherence, and ``before_*`` of the same three."""
    root = Path(outputs)
    rows = []
    vals = ["test_accuracy", "label_accuracy", "coherence"]
    for f in sorted(root.glob(COLLABORATIVE_GLOB)):
        model, dataset, persona, method, fold = f.parent.relative_to(root / "collaborative").parts
        s = _read_json(f)
        row = {"model": model, "dataset": dataset, "persona": str(s.get("persona", persona)),
               "method": str(s.get("method", method)),
               "fold": int(s.get("fold", fold.removeprefix("fold"))), "k": _num(s.get("k"))}
        for k in vals:
            row[k] = _num(s.get(k))
        before = s.get("before") or {}
        for k in vals:
            row[f"before_{k}"] = _num(before.get(k))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "persona", "method", "fold", "k"] + vals
                        + [f"before_{k}" for k in vals])
