"""Read the result tree (plural_icm.layout: paths and records) into pandas DataFrames.

The disk is the record (W&B is only a view). Every loader works on a partial grid: cells that are
absent are simply not rows, incomplete cells (no ``COMPLETE.json``) are skipped unless asked for,
and metrics that a cell did not compute are NaN, never 0.

    <outputs>/results/<run_tag>/<model>/<dataset>/<condition>/n<n|all>/fold<k>/seed<s>/
    <outputs>/searches/<model>/<dataset>/fold<k>/<persona>/<hash>/
    <outputs>/collaborative/<model>/<dataset>/<persona>/<method>/fold<k>/summary.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from plural_icm.layout import (CELL_GLOB, COLLABORATIVE, COLLABORATIVE_GLOB, COMPLETE, EXAMPLES,
                               METRICS, PREDICTIONS, RESULTS, SEARCH_GLOB, SEARCHES, SUMMARY,
                               CellResult, CollaborativeSummary, ExampleRow, PredictionRow,
                               RecordError, parse_cell_dir, parse_search_dir)
from plural_icm.layout import CELL_KEYS as _CELL_KEYS
from plural_icm.layout import OVERALL_METRIC_KEYS
from plural_icm.search.records import TRAJECTORY, SearchSummary, read_trajectory
from plural_icm.utils.io import read_jsonl

#: The ICM protocol a cell's examples came from (``meta`` of metrics.json; plural_icm.search.units).
PROTOCOL_KEYS = ("icm_preset", "search_unit", "seed_labels", "context_order")
CELL_KEYS = list(_CELL_KEYS)
METRIC_KEYS = list(OVERALL_METRIC_KEYS)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _frame(rows: list[dict], record: Any) -> pd.DataFrame:
    """Rows of a record file as a frame with at least the record's columns (NaN where absent)."""
    df = pd.DataFrame(rows)
    return df.reindex(columns=list(dict.fromkeys(record.columns() + list(df.columns))))


def _num(v: Any) -> float:
    """JSON value -> float; None/missing/non-numeric -> NaN (never 0)."""
    if v is None:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def iter_cell_dirs(outputs: str | Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """(keys, path) of every cell directory under ``<outputs>/results`` (complete or not)."""
    root = Path(outputs) / RESULTS
    if not root.is_dir():
        return
    for seed_dir in sorted(root.glob(CELL_GLOB)):
        keys = parse_cell_dir(root, seed_dir) if seed_dir.is_dir() else None
        if keys is not None:
            yield keys, seed_dir


#: Keys of result files written before the two accuracies were named (``accuracy`` was the
#: question-level one), read as their new names.
_OLD_KEYS = {"question_accuracy": "accuracy", "question_accuracy_se": "accuracy_se"}


def _metric(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    if v is None and key in _OLD_KEYS:
        v = d.get(_OLD_KEYS[key])
    return _num(v)


def declared_metric(path: Path, meta: dict[str, Any]) -> str | None:
    """The score metric the cell's dataset declared (``dataset.score_metric``): from the cell's
    ``metrics.json`` meta, else from its ``config.yaml``; None for cells that predate it."""
    if meta.get("score_metric"):
        return str(meta["score_metric"])
    cfg_file = path / "config.yaml"
    if cfg_file.is_file():
        try:
            cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, OSError):
            return None
        metric = (cfg.get("dataset") or {}).get("score_metric") if isinstance(cfg, dict) else None
        return str(metric) if metric else None
    return None


def main_score(metric: str | None, overall: dict[str, Any]) -> tuple[float, float, str]:
    """(score, its SE, metric name) by the metric the cell's dataset declared (claim accuracy, the
    paper's metric, for the survey datasets; the representation score for OvertonBench). Without
    a declaration (older cells): claim accuracy, or the representation score when only that is
    present."""
    if not metric:
        metric = "claim_accuracy"
        if np.isnan(_num(overall.get(metric))) and overall.get("representation_score") is not None:
            metric = "representation_score"
    se_key = "representation_se" if metric == "representation_score" else f"{metric}_se"
    return _metric(overall, metric), _metric(overall, se_key), metric


def _used_examples(mfile: Path) -> float:
    """Mean over personas of the in-context examples a cell used (NaN when none recorded)."""
    try:
        per = CellResult.read(mfile.parent).per_persona
    except (RecordError, OSError):
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
        mfile = path / METRICS
        overall, meta = {}, {}
        if mfile.is_file():
            try:
                m = CellResult.read(path)
                overall, meta = m.overall, m.meta or {}
            except (RecordError, OSError):
                row["complete"] = False
        for k in METRIC_KEYS:
            row[k] = _metric(overall, k)
        row["score"], row["score_se"], row["score_metric"] = main_score(declared_metric(path, meta), overall)
        row["n_examples"] = _num(meta.get("n_examples"))
        if np.isnan(row["n_examples"]) and mfile.is_file() and overall:
            # n = all: meta holds the setting (null); the personas record how many were used
            row["n_examples"] = _used_examples(mfile)
        row["wall_time_s"] = _num(meta.get("wall_time_s"))
        for k in PROTOCOL_KEYS:  # absent for conditions without a search (and older cells)
            row[k] = meta.get(k)
        judged = overall.get("judge_is_model_under_test")  # OvertonBench cells only
        row["judge_is_model_under_test"] = judged if isinstance(judged, bool) else None
        row["judge_validation"] = overall.get("judge_validation") or None
        rows.append(row)
    cols = CELL_KEYS + ["complete", "path"] + METRIC_KEYS + ["score", "score_se", "score_metric",
                                                             "n_examples", "wall_time_s",
                                                             "judge_is_model_under_test",
                                                             "judge_validation"] \
        + list(PROTOCOL_KEYS)
    return pd.DataFrame(rows, columns=cols)


def load_per_persona(outputs: str | Path) -> pd.DataFrame:
    """One row per (complete cell, persona): keys, ``persona_id``, metrics, ``score``."""
    rows = []
    for keys, path in iter_cell_dirs(outputs):
        if not (path / COMPLETE).is_file() or not (path / METRICS).is_file():
            continue
        m = CellResult.read(path)
        per, metric = m.per_persona, declared_metric(path, m.meta or {})
        for persona, vals in per.items():
            vals = vals or {}
            row = {**keys, "persona_id": str(persona)}
            for k in METRIC_KEYS:
                row[k] = _metric(vals, k)
            row["score"], row["score_se"], row["score_metric"] = main_score(metric, vals)
            rows.append(row)
    return pd.DataFrame(rows, columns=CELL_KEYS + ["persona_id"] + METRIC_KEYS
                        + ["score", "score_se", "score_metric"])


#: The label sets a cell records (``per_persona[p]["label_sets"]``: acc_matched, acc_matched_swap,
#: bootstrap cells): gold, random, icm, acc_matched_<k> (one per seed/perturbation), bootstrap.
LABEL_SET_COLUMNS = ["accuracy", "coherence_P", "violations", "n_labels"]


def load_label_sets(outputs: str | Path) -> pd.DataFrame:
    """One row per (complete cell, persona, label set): ``label_set`` (``acc_matched_3`` becomes
    ``acc_matched`` with ``index`` 3), accuracy, coherence P, consistency violations."""
    rows = []
    for keys, path in iter_cell_dirs(outputs):
        if not (path / COMPLETE).is_file() or not (path / METRICS).is_file():
            continue
        per = _read_json(path / METRICS).get("per_persona") or {}
        for persona, vals in per.items():
            for name, v in ((vals or {}).get("label_sets") or {}).items():
                base, _, k = str(name).rpartition("_")
                kind, index = (base, int(k)) if k.isdigit() else (str(name), 0)
                rows.append({**keys, "persona_id": str(persona), "label_set": kind, "index": index,
                             **{c: v.get(c) for c in LABEL_SET_COLUMNS}})
    return pd.DataFrame(rows, columns=CELL_KEYS + ["persona_id", "label_set", "index"]
                        + LABEL_SET_COLUMNS)


def load_predictions(outputs: str | Path, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """All ``predictions.jsonl`` rows of complete cells (or of the given ``cells`` rows), with the
    cell keys ``run_tag`` and ``n`` added (the file carries model/dataset/condition/fold/seed)."""
    frames = []
    if cells is None:
        it = ((k, p) for k, p in iter_cell_dirs(outputs) if (p / COMPLETE).is_file())
    else:
        it = ((dict(r[CELL_KEYS]), Path(r["path"])) for _, r in cells.iterrows())
    for keys, path in it:
        f = path / PREDICTIONS
        if not f.is_file():
            continue
        df = _frame(read_jsonl(f), PredictionRow)
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
        f = path / EXAMPLES
        if (path / COMPLETE).is_file() and f.is_file():
            df = _frame(read_jsonl(f), ExampleRow)
            for k, v in keys.items():
                df[k] = v
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _iter_search_dirs(outputs: str | Path) -> Iterator[tuple[dict[str, Any], Path]]:
    root = Path(outputs) / SEARCHES
    if not root.is_dir():
        return
    for d in sorted(root.glob(SEARCH_GLOB)):
        keys = parse_search_dir(root, d) if d.is_dir() else None
        if keys is not None:
            yield keys, d


def load_searches(outputs: str | Path) -> pd.DataFrame:
    """One row per search with a ``summary.json``: keys + U, P, I, iterations, accepted,
    wall_time_s, label_accuracy, n_claims, n_predicted_unlabelled (claims the budget never reached),
    complete, and the protocol: search_unit, part, seed_labels, context_order (None in older
    summaries)."""
    rows = []
    fields = ["U", "P", "I", "iterations", "accepted", "wall_time_s", "label_accuracy", "n_claims",
              "n_predicted_unlabelled"]
    text_fields = ["search_unit", "part", "seed_labels", "context_order", "warning"]
    for keys, d in _iter_search_dirs(outputs):
        if not (d / SUMMARY).is_file():
            continue
        s = SearchSummary.read(d)
        row = {**keys, "complete": (d / COMPLETE).is_file(), "path": str(d)}
        for k in fields:
            row[k] = _num(getattr(s, k))
        for k in text_fields:
            row[k] = getattr(s, k)
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "fold", "persona", "hash", "complete",
                                       "path"] + fields + text_fields)


def load_trajectories(outputs: str | Path) -> pd.DataFrame:
    """All ``trajectory.jsonl`` rows with search keys."""
    frames = []
    for keys, d in _iter_search_dirs(outputs):
        if (d / TRAJECTORY).is_file():
            df = pd.DataFrame(read_trajectory(d))
            for k, v in keys.items():
                df[k] = v
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_collaborative(outputs: str | Path) -> pd.DataFrame:
    """One row per collaborative-elicitation summary (one persona, method and fold): model,
    dataset, persona, method, fold, k (labels asked in that fold), test_accuracy, label_accuracy,
    U (the paper's "coherence"), and ``before_*`` of the same three."""
    root = Path(outputs)
    rows = []
    vals = list(CollaborativeSummary.LABELLING_KEYS)
    for f in sorted(root.glob(COLLABORATIVE_GLOB)):
        model, dataset, persona, method, fold = f.parent.relative_to(root / COLLABORATIVE).parts
        s = _read_json(f)
        row = {"model": model, "dataset": dataset, "persona": str(s.get("persona", persona)),
               "method": str(s.get("method", method)),
               "fold": int(s.get("fold", fold.removeprefix("fold"))), "k": _num(s.get("k"))}
        for k in vals:
            row[k] = _num(s.get(k))
        before = s.get("before") or {}
        for k in vals:
            row[f"before_{k}"] = _num(before.get(k))
        row.update(answers_provenance(f.parent))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "persona", "method", "fold", "k"] + vals
                        + [f"before_{k}" for k in vals] + list(ANSWER_COLUMNS))


ANSWER_COLUMNS = ("answers", "annotators", "majority_share", "fleiss_kappa", "answers_match_gold")
"""Where a collaborative run's answers came from (``human``: an answers file exported from a web
study; ``simulated_gold``: the gold option), the mean annotators per question, the mean share of
the majority, the persona's Fleiss' kappa, and the share of answers equal to the gold option that
the simulated run uses (1.0 for the simulated run itself)."""


def answers_provenance(directory: Path) -> dict:
    """:data:`ANSWER_COLUMNS` of one collaborative run directory (NaN where unknown)."""
    path = directory / "answers_used.jsonl"
    if not path.is_file():
        path = directory / "answers.jsonl"
    out = {c: np.nan for c in ANSWER_COLUMNS}
    out["answers"] = None
    if not path.is_file():
        return out
    rows = read_jsonl(path)
    if not rows:
        return out
    sources = sorted({str(r.get("source", "file")) for r in rows})
    out["answers"] = "+".join(sources)
    if sources == ["simulated_gold"]:
        out["answers_match_gold"] = 1.0
    for col, key in (("annotators", "n_annotators"), ("majority_share", "majority_share"),
                     ("fleiss_kappa", "fleiss_kappa"), ("answers_match_gold", "matches_gold")):
        vals = [_num(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            out[col] = float(np.mean(vals))
    return out
