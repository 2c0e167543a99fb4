"""Score prediction files in the paper's released format with our metric code.

    python -m analysis.parity PATH... [--dataset oqa] [--condition zero_shot]

Each PATH is a JSON file, or a folder whose ``*.json`` files are read (sorted). A file is one
fold: a JSON list of ``{"instruction", "input", "output", "generated_output"}`` rows, as the
fork of the paper (``Taslim-M/Unsupervised-Elicitation``) writes them: ``output`` is the gold
label ("True"/"False"), ``generated_output`` the model's text. The text's label is what it starts
with (stripped, lower-cased), as the fork's scorer reads it; a text that starts with neither is
counted wrong. Scoring goes through :func:`plural_icm.metrics.classification.claim_accuracy`, the
function that scores our own cells, and the fold mean through ``mean_with_se``, as the report
averages folds. The printout puts each fold's and the mean claim accuracy beside the paper's
value (Section 5.1 / Table 6, found from the dataset and condition that the path names or the
flags give). It is a check that our metric is the paper's: on the released OpinionQA zero-shot
chat files it prints 69.47, the paper's 69.5%.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import paper_numbers as paper
from plural_icm.metrics.classification import claim_accuracy, mean_with_se

REQUIRED = ("input", "output", "generated_output")
GOLD = {"true": True, "false": False}

#: Names in the released paths -> our dataset and condition names.
DATASET_ALIASES = {"opinionqa": "oqa", "opinionsqa": "oqa", "globalqa": "gqa", "gqa": "gqa",
                   "oqa": "oqa", "pt": "pt", "overton": "ot"}
CONDITION_ALIASES = {"zero_shot_chat": "zero_shot", "zero_shot_base": "zero_shot_base",
                     "few_shot_icm": "icm", "few_shot_gold": "gold", "few_shot_random": "random"}


class PredictionFileError(ValueError):
    """A prediction file that is not in the released format (the message names file and row)."""


@dataclass
class FoldScore:
    path: Path
    fold: int | None
    n_claims: int
    n_correct: int
    n_unparsed: int
    accuracy: float | None


def generated_label(text: str) -> bool | None:
    """The label a generated text gives: True/False when it starts with it, else None."""
    t = text.strip().lower()
    for word, value in GOLD.items():
        if t.startswith(word):
            return value
    return None


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions frame (``gold``, ``p_true``; NaN where the text gives no label) of one file."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PredictionFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(rows, list):
        raise PredictionFileError(f"{path}: expected a JSON list of prediction rows, got "
                                  f"{type(rows).__name__}")
    out = []
    for k, row in enumerate(rows):
        where = f"{path}, row {k}"
        if not isinstance(row, dict):
            raise PredictionFileError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [f for f in REQUIRED if f not in row]
        if missing:
            raise PredictionFileError(f"{where}: missing field(s) {missing} (expected "
                                      f"{list(REQUIRED)})")
        gold = row["output"]
        if not isinstance(gold, str) or gold.strip().lower() not in GOLD:
            raise PredictionFileError(f"{where}: 'output' (the gold label) must be 'True' or "
                                      f"'False', got {gold!r}")
        gen = row["generated_output"]
        if not isinstance(gen, str):
            raise PredictionFileError(f"{where}: 'generated_output' must be a string, got "
                                      f"{type(gen).__name__}")
        label = generated_label(gen)
        out.append({"item_id": f"{path.name}:{k}", "gold": GOLD[gold.strip().lower()],
                    "p_true": math.nan if label is None else float(label)})
    if not out:
        raise PredictionFileError(f"{path}: no prediction rows")
    return pd.DataFrame(out)


def fold_of(path: Path) -> int | None:
    m = re.search(r"fold(\d+)", path.stem)
    return int(m.group(1)) if m else None


def score_file(path: Path) -> FoldScore:
    df = read_predictions(path)
    acc, _, n = claim_accuracy(df)
    n_correct = int(round(acc * n)) if acc is not None else 0
    return FoldScore(path=path, fold=fold_of(path), n_claims=n, n_correct=n_correct,
                     n_unparsed=int(df["p_true"].isna().sum()), accuracy=acc)


def expand(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise PredictionFileError(f"{p}: folder holds no *.json prediction files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise PredictionFileError(f"{p}: no such file or folder")
    return files


def guess(paths: Sequence[Path], aliases: dict[str, str]) -> str | None:
    """The first alias that a path component names (longest alias first)."""
    for p in paths:
        for part in reversed(p.resolve().parts):
            low = part.lower()
            for alias in sorted(aliases, key=len, reverse=True):
                if alias in low:
                    return aliases[alias]
    return None


def paper_values(dataset: str | None, condition: str | None) -> tuple[float | None, tuple | None]:
    """(published mean, published per-fold values or None) for a dataset and condition."""
    if dataset is None or condition is None:
        return None, None
    if dataset == "gqa" and condition in paper.TABLE6_GQA:
        per_fold, avg = paper.TABLE6_GQA[condition]
        return paper.headline(dataset, condition) or avg, per_fold
    return paper.headline(dataset, condition), None


def _pct(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{100 * v:.2f}{unit}"


def report(scores: Sequence[FoldScore], dataset: str | None, condition: str | None) -> str:
    pub, pub_folds = paper_values(dataset, condition)
    lines = [f"claim accuracy (the paper's metric) of {len(scores)} prediction file(s); "
             f"dataset {dataset or '?'}, condition {condition or '?'}",
             f"{'fold':>4}  {'claims':>6}  {'correct':>7}  {'no label':>8}  {'accuracy %':>10}  "
             f"{'paper %':>7}  file"]
    for s in scores:
        pf = None
        if pub_folds is not None and s.fold is not None and 1 <= s.fold <= len(pub_folds):
            pf = pub_folds[s.fold - 1]
        lines.append(f"{s.fold if s.fold is not None else '?':>4}  {s.n_claims:>6}  "
                     f"{s.n_correct:>7}  {s.n_unparsed:>8}  {_pct(s.accuracy):>10}  {_pct(pf):>7}  "
                     f"{s.path.name}")
    mean, se, k = mean_with_se([s.accuracy for s in scores])
    diff = "" if pub is None or mean is None else f"  (ours - paper {100 * (mean - pub):+.2f})"
    se_txt = "" if se is None else f" ± {100 * se:.2f}"
    lines.append(f"mean over {k} folds: {_pct(mean, '%')}{se_txt}   paper: {_pct(pub, '%')}{diff}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.parity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="prediction files or folders of them (one per fold)")
    ap.add_argument("--dataset", choices=sorted(set(paper.SCORE_METRIC)), default=None,
                    help="the dataset, for the paper's value (default: from the path)")
    ap.add_argument("--condition", choices=paper.CONDITION_ORDER, default=None,
                    help="the condition, for the paper's value (default: from the path)")
    args = ap.parse_args(argv)
    try:
        files = expand(args.paths)
        scores = [score_file(f) for f in files]
    except PredictionFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dataset = args.dataset or guess(files, DATASET_ALIASES)
    condition = args.condition or guess(files, CONDITION_ALIASES)
    print(report(scores, dataset, condition))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
