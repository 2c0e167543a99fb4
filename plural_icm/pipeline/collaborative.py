"""Collaborative elicitation (the paper's Section 6): ask a person only where the model is least
certain, fix those answers as hard constraints, and search again.

Per persona and fold: an ICM search labels the training questions; ``k_per_fold`` questions are
selected (``confidence``: lowest ICM label confidence; ``random``; ``active``: where the few-shot
instruct model is least confident on the training items); their answers become fixed labels and
ICM runs again, for ``rounds`` rounds. Before/after: test accuracy (ICM-labelled examples), ICM
label accuracy, ``U`` (the paper's "coherence", alpha * P - I), ``mutual_predictability`` (P) and
``inconsistencies`` (I); the record is :class:`plural_icm.layout.CollaborativeSummary`.

The person is reached through files a real annotator can take over:
``.../questions.jsonl`` lists what to answer; an answers file (``group_id``, ``option_key`` per
line; ``collaborative.answers_file``, e.g. exported from a web study of
:mod:`plural_icm.elicitation`) is read back; its rows for the asked questions are kept beside the
summary as ``answers_used.jsonl`` and the summary goes under ``<method>-answers``. With no answers
file, the gold label answers (simulated human, ``"source": "simulated_gold"`` in
``.../answers.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from plural_icm.conditions.labels import cap_search_claims
from plural_icm.config.settings import Settings, expect_settings
from plural_icm.data.records import Claim, ClaimSet
from plural_icm.data.registry import load_claimset
from plural_icm.inference.predict import predict
from plural_icm.layout import (CollaborativeSummary, LabellingScore, collaborative_dir,
                               collaborative_root, fingerprint)
from plural_icm.metrics.aggregate import cell_metrics
from plural_icm.pipeline.existing_results import reusable_summary
from plural_icm.pipeline.models import Backends
from plural_icm.pipeline.searches import run_searches_for
from plural_icm.choices import QuestionsFrom, SearchUnit
from plural_icm.search.records import SearchSummary
from plural_icm.search.units import search_sets
from plural_icm.errors import ConfigError
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl, read_jsonl

log = logging.getLogger(__name__)


def question_confidence(claims: list[Claim], confidence: dict[str, float]) -> dict[str, float]:
    """A question's confidence: the lowest confidence among its claims' labels."""
    out: dict[str, float] = {}
    for c in claims:
        out[c.group_id] = min(out.get(c.group_id, 1.0), confidence.get(c.item_id, 0.0))
    return out


def select_questions(method: str, claims: list[Claim], k: int, seed: int, confidence: dict[str, float],
                     fewshot_confidence: dict[str, float] | None, exclude: set[str]) -> list[str]:
    groups = sorted({c.group_id for c in claims} - exclude)
    if method == "confidence":
        qc = question_confidence(claims, confidence)
        return sorted(groups, key=lambda g: (qc[g], g))[:k]
    if method == "random":
        return random.Random(seed).sample(groups, min(k, len(groups)))
    if method == "active":
        if fewshot_confidence is None:
            raise ValueError("active selection needs the few-shot model's confidences")
        qc = question_confidence(claims, fewshot_confidence)
        return sorted(groups, key=lambda g: (qc[g], g))[:k]
    raise ValueError(f"unknown selection method {method!r}: use confidence, random or active")


def round_questions(method: str, train: list[Claim], k: int, seed: int, round_index: int,
                    confidence: dict[str, float], fixed: dict[str, bool],
                    fewshot_confidence: dict[str, float] | None, asked: list[str],
                    folds: Mapping[str, int] | None = None) -> list[str]:
    """The questions round ``round_index`` asks (already-fixed labels' confidences read 0.0; their
    groups are excluded through ``asked``; the seed differs per round). One function, so a study
    of real people (:mod:`plural_icm.elicitation`) asks exactly what this stage would ask.

    ``folds`` (question id -> fold; ``collaborative.questions_from=per_training_fold``): ``k``
    questions from each training fold, ranked within it, in fold order; the seed of ``random``
    depends on the fold, not on the held-out fold, so a fold asks the same in every job."""
    conf = {j: 0.0 if j in fixed else v for j, v in confidence.items()}
    if folds is None:
        return select_questions(method, train, k, seed * 7919 + round_index, conf,
                                fewshot_confidence, set(asked))
    out: list[str] = []
    for part, claims in search_sets(train, folds, SearchUnit.part):
        out += select_questions(method, claims, k, (seed * 7919 + round_index) * 31 + int(part), conf,
                                fewshot_confidence, set(asked))
    return out


def question_folds(cfg: Any, claimset: ClaimSet) -> Mapping[str, int] | None:
    """``claimset.folds`` when ``collaborative.questions_from`` is ``per_training_fold``, else None."""
    return (claimset.folds if QuestionsFrom(cfg.collaborative.questions_from)
            is QuestionsFrom.per_training_fold else None)


def answers_for(groups: list[str], claims: list[Claim], directory: Path,
                answers_file: str | None) -> dict[str, bool]:
    """Fixed labels from the person's answers (or gold, simulated), via the files."""
    by_group: dict[str, list[Claim]] = {}
    for c in claims:
        by_group.setdefault(c.group_id, []).append(c)
    atomic_write_jsonl(directory / "questions.jsonl", [
        {"group_id": g, "question_id": by_group[g][0].question_id, "question": by_group[g][0].question,
         "options": [c.claim for c in by_group[g]], "option_keys": [c.option_key for c in by_group[g]]}
        for g in groups])
    path = Path(answers_file) if answers_file else directory / "answers.jsonl"
    answers: dict[str, str] = {}
    rows: dict[str, dict] = {}
    if path.is_file():
        for i, row in enumerate(read_jsonl(path), start=1):
            if "group_id" not in row or "option_key" not in row:
                raise ConfigError(f"{path}:{i}: expected keys group_id and option_key, got {sorted(row)}")
            answers[row["group_id"]] = str(row["option_key"])
            rows[row["group_id"]] = row
    missing = [g for g in groups if g not in answers]
    if answers_file and not missing:
        # what was used, with its provenance (source, annotators, agreement), beside the summary:
        # the report reads it (a separate name, so a later simulated run never takes it as input)
        atomic_write_jsonl(directory / "answers_used.jsonl", [rows[g] for g in groups])
    if missing:
        if answers_file:
            raise ConfigError(f"{path} has no answer for {missing}; answer them (option_key of the "
                             "persona's answer) or remove collaborative.answers_file to simulate")
        for g in missing:
            gold = [c for c in by_group[g] if c.gold]
            answers[g] = gold[0].option_key if gold else by_group[g][0].option_key
        atomic_write_jsonl(path, [{"group_id": g, "option_key": answers[g],
                                   "source": "simulated_gold"} for g in groups])
    fixed = {}
    for g in groups:
        keys = [c.option_key for c in by_group[g]]
        if answers[g] not in keys:
            raise ConfigError(f"{path}: the answer to {g} is option_key {answers[g]!r}, which is not "
                              f"one of that question's options {keys}")
        for c in by_group[g]:
            fixed[c.item_id] = c.option_key == answers[g]
    return fixed


def _evaluate(s: Settings, claimset: ClaimSet, pid: str, labels: dict[str, bool],
              summary: SearchSummary, backends: Backends) -> dict:
    train, test = claimset.split(s.fold, pid)
    examples = [(c, labels[c.item_id]) for c in train if c.item_id in labels]
    rows, _ = predict(backends.get("instruct"), s.inference, claimset.personas[pid], examples, test)
    m = cell_metrics(pd.DataFrame([r.as_dict() for r in rows]), claimset.rule)["overall"]
    gold = [labels[c.item_id] == c.gold for c in train if c.item_id in labels and c.gold is not None]
    return LabellingScore(test_accuracy=m.get("claim_accuracy"),
                          test_question_accuracy=m.get("question_accuracy"),
                          label_accuracy=float(np.mean(gold)) if gold else None,
                          U=summary.U, mutual_predictability=summary.P,
                          inconsistencies=summary.I,
                          context_order=summary.context_order).as_dict()


def fewshot_confidence(settings, claimset, pid, train: list[Claim], labels, backends) -> dict[str, float]:
    """Confidence of the few-shot instruct model on each searched training item, with the ICM
    labels of the OTHER questions as examples (the item's own label is never in its context)."""
    s = settings
    by_question: dict[str, list[Claim]] = {}
    for c in train:
        by_question.setdefault(c.group_id, []).append(c)
    out: dict[str, float] = {}
    for g, members in by_question.items():
        examples = [(c, labels[c.item_id]) for c in train if c.group_id != g]
        rows, _ = predict(backends.get("instruct"), s.inference, claimset.personas[pid], examples, members)
        out.update({r.item_id: max(r.p_true, 1 - r.p_true) for r in rows})
    return out


def search_set(settings: Settings, claimset: ClaimSet, pid: str) -> list[Claim]:
    """The training claims the search labels (capped by dataset.max_search_claims, as in cells)."""
    s = settings
    train, _ = claimset.split(s.fold, pid)
    return cap_search_claims(train, s.dataset.max_search_claims, s.seed)


def method_dir(s: Settings, method: str) -> str:
    """The summary's method directory: ``<method>`` with simulated (gold) answers,
    ``<method>-answers`` with an answers file (people's answers), so both sit side by side in one
    output tree and the report shows them together (the summary's ``method`` stays ``<method>``)."""
    return f"{method}-answers" if s.collaborative.answers_file else method


def collaborative_fingerprint(s: Settings, method: str) -> str:
    """What determines one summary: the cell settings (run_tag included), the method, k, rounds
    and the answers file (by content)."""
    answers = s.collaborative.answers_file
    digest = hashlib.sha256(Path(answers).read_bytes()).hexdigest()[:16] \
        if answers and Path(answers).is_file() else None
    settings = [fingerprint(s.composed), method, s.collaborative.k_per_fold,
                s.collaborative.rounds, answers, digest]
    questions_from = QuestionsFrom(s.collaborative.questions_from)
    if questions_from is not QuestionsFrom.pooled:  # appended only then: pooled keeps its old hashes
        settings.append(questions_from.value)
    blob = json.dumps(settings)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_collaborative(settings: Settings, wb: Any = None) -> dict:
    """Stage ``collaborative`` on the job's settings: per persona and selection method, ICM
    before and after answers to the questions the method asks (Section 6 of the paper)."""
    s = expect_settings(settings, "run_collaborative")
    claimset = load_claimset(s.dataset, s.paths.data_dir)
    personas = sorted(claimset.personas)
    root = collaborative_root(s.paths.output_dir, s.model.name, s.dataset.name)
    backends = Backends(s)
    results: dict[str, dict] = {}
    try:
        base = run_searches_for(s, claimset, personas, backends, desc="ICM search (before)", wb=wb)
        for pid in personas:
            train = search_set(s, claimset, pid)  # questions are asked from this set only
            s0 = base[pid]
            before = _evaluate(s, claimset, pid, s0.labels, s0.summary, backends)
            fewshot = None
            for method in s.collaborative.selection:
                d = collaborative_dir(s.paths.output_dir, s.model.name, s.dataset.name, pid,
                                      method_dir(s, method), s.fold)
                done = d / "summary.json"
                fp = collaborative_fingerprint(s, method)
                if reusable_summary(done, fp, s.force):
                    results.setdefault(pid, {})[method] = json.loads(done.read_text())
                    log.info("skip complete %s", done)
                    continue
                if method == "active" and fewshot is None:
                    fewshot = fewshot_confidence(s, claimset, pid, train, s0.labels, backends)
                fixed: dict[str, bool] = {}
                labels, summary, asked = s0.labels, s0.summary, []
                current = s0  # the latest search: round r > 1 asks where the re-run is unsure
                for r in range(s.collaborative.rounds):
                    groups = round_questions(method, train, s.collaborative.k_per_fold,
                                             s.seed, r, current.confidence, fixed, fewshot,
                                             asked, question_folds(s, claimset))
                    asked += groups
                    fixed.update(answers_for(asked, train, d, s.collaborative.answers_file))
                    after = run_searches_for(s, claimset, [pid], backends, fixed={pid: fixed},
                                             desc=f"ICM search ({method}, round {r + 1})", wb=wb)[pid]
                    labels, summary, current = after.labels, after.summary, after
                res = CollaborativeSummary(
                    persona=pid, method=method, fold=s.fold, k=len(asked), asked=asked,
                    before=before, **_evaluate(s, claimset, pid, labels, summary, backends),
                    fingerprint=fp, run_tag=s.run_tag, k_per_fold=s.collaborative.k_per_fold,
                    rounds=s.collaborative.rounds).as_dict()
                atomic_write_json(done, res)
                results.setdefault(pid, {})[method] = res
    finally:
        backends.close()
    rows = [{"persona": pid, "method": m, "before_test": r["before"]["test_accuracy"],
             "test": r["test_accuracy"], "before_label": r["before"]["label_accuracy"],
             "label": r["label_accuracy"], "before_U": r["before"]["U"], "U": r["U"]}
            for pid, ms in results.items() for m, r in ms.items()]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"results: {root}")
    if wb is not None:
        wb.log_table("collaborative", pd.DataFrame(rows))
        wb.log_files_artifact(  # the before/after summaries of this fold, named by their paths
            f"collaborative-{s.model.name}-{s.dataset.name}-fold{s.fold}", "collaborative",
            [collaborative_dir(s.paths.output_dir, s.model.name, s.dataset.name, pid,
                               method_dir(s, m), s.fold) / "summary.json" for pid, ms in results.items() for m in ms],
            root=root)
    return results
