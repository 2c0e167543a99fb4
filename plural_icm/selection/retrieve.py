"""Per-query example selection: rank a persona's labelled training questions for each held-out
question, then show whole questions in that order until ``k = inference.n_examples`` claims are
shown (the framework's count of examples; a question's claims are never split, as in
:func:`plural_icm.conditions.labels.subset_for_n_examples`).

* ``random``: a seeded shuffle per held-out question (seed, persona, question id);
* ``nearest``: SPICA's BASELINE, descending cosine similarity of the question texts' embeddings;
* ``spica``: ascending ``d = w_d sim + w_s g_stability + w_c g_contrast + c``
  (:mod:`plural_icm.selection.group_terms`), the weights fitted per persona by least squares on
  an *inner dev split of the training questions* (``selection.dev_fraction`` of them, by a seeded
  hash): for every (dev question q, other training question q') the target is the observed
  mismatch ``L(r(q), r(q'))``. The held-out fold is never read for the fit.

Ratings of a question for a persona are a vector over its options in option order:

* ``gold`` source (supervised): OvertonBench's mean 1-5 rating of each answer by the persona's
  raters (answers aligned by the model that wrote them: option keys start with it), the persona's
  answer share of each option where the data has a distribution (``meta["distribution"]``), else
  the 0/1 gold label (a share of 0 or 1);
* ``icm`` source (label-free): ICM's probability that each claim is True (its label's confidence,
  or one minus it for a False label), read as the share: no human label is used.

The population mean of SPICA's contrast is the mean rating over every persona of the dataset (gold)
or every persona of the cell (icm) on the same question. Retrieval error (the metric) always reads
gold: mean ``L`` between a held-out question's gold ratings and each retrieved question's.

Prompt configurations on claim data: ``contrastive`` shows every claim of a retrieved question
(True and False), ``positive`` only its True-labelled claims.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from plural_icm.data.records import Claim
from plural_icm.selection.group_terms import (composite_distance, fit_weights, mismatch,
                                              terms_from_shares)

log = logging.getLogger(__name__)

Examples = list[tuple[Claim, bool]]


@dataclass
class PersonaRanking:
    """A persona's ranked training questions per held-out question, and what the ranking cost."""

    order: dict[str, list[str]]
    """held-out question id -> training question ids, best first."""
    metrics: dict[str, Any] = field(default_factory=dict)


def option_order(claims: Iterable[Claim]) -> list[Claim]:
    """A question's claims in option order (``meta["option_index"]``, else the option key)."""
    def key(c: Claim):
        idx = c.meta.get("option_index")
        return (0, int(idx), "") if isinstance(idx, int) else (1, 0, str(c.option_key))
    return sorted(claims, key=key)


def by_question(claims: Iterable[Claim]) -> dict[str, list[Claim]]:
    out: dict[str, list[Claim]] = {}
    for c in claims:
        out.setdefault(c.question_id, []).append(c)
    return {q: option_order(cs) for q, cs in out.items()}


def gold_ratings(claims: Sequence[Claim]) -> np.ndarray | None:
    """The persona's rating of each response: its mean rating where the data has raters
    (OvertonBench's 1-5 ``mean_rating``), its share of each option where it has a distribution,
    else the 0/1 gold label (a share of 0 or 1); None when a claim has none of them."""
    out = []
    for c in claims:
        dist, idx = c.meta.get("distribution"), c.meta.get("option_index")
        if c.meta.get("mean_rating") is not None:
            out.append(float(c.meta["mean_rating"]))
        elif isinstance(dist, (list, tuple)) and isinstance(idx, int) and 0 <= idx < len(dist):
            total = float(sum(float(v) for v in dist)) or 1.0
            out.append(float(dist[idx]) / total)
        elif c.gold is not None:
            out.append(float(bool(c.gold)))
        else:
            return None
    return np.array(out)


def gold_variance(claims: Sequence[Claim], ratings: np.ndarray) -> np.ndarray:
    """Per response, the variance of the group's members' ratings: of the raters' ratings where
    the data keeps them (``meta["ratings"]``), else of a 0/1 answer, ``p (1 - p)``."""
    out = []
    for c, r in zip(claims, ratings):
        raters = c.meta.get("ratings")
        out.append(float(np.var(np.asarray(raters, dtype=float))) if raters else float(r * (1 - r)))
    return np.array(out)


def icm_ratings(claims: Sequence[Claim], labels: Mapping[str, bool],
                confidence: Mapping[str, float]) -> np.ndarray | None:
    """ICM's probability that each claim is True (no gold read); None if a claim is unlabelled."""
    out = []
    for c in claims:
        if c.item_id not in labels:
            return None
        conf = confidence.get(c.item_id)
        p = 1.0 if conf is None else float(conf)
        out.append(p if labels[c.item_id] else 1.0 - p)
    return np.array(out)


def _stable_unit(*parts: Any) -> float:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def random_order(bank: Sequence[str], seed: int, persona: str, query: str) -> list[str]:
    order = sorted(bank)
    random.Random(f"{seed}:{persona}:{query}").shuffle(order)
    return order


def dev_split(bank: Sequence[str], fraction: float, seed: int, persona: str) -> tuple[list[str], list[str]]:
    """(dev, rest) of a persona's training questions, by a seeded hash of each question id (a
    question's side does not depend on which others are present)."""
    if not 0 < fraction < 1:
        raise ValueError(f"selection.dev_fraction must be in (0, 1), got {fraction}")
    dev = [q for q in sorted(bank) if _stable_unit(seed, persona, "dev", q) < fraction]
    rest = [q for q in sorted(bank) if q not in set(dev)]
    return dev, rest


@dataclass
class SpicaFit:
    weights: np.ndarray
    n_pairs: int
    r2: float | None

    def as_metrics(self) -> dict[str, Any]:
        w = [float(v) for v in self.weights]
        return {"spica_w_sim": w[0], "spica_w_stability": w[1], "spica_w_contrast": w[2],
                "spica_intercept": w[3], "spica_fit_pairs": self.n_pairs, "spica_fit_r2": self.r2}


def fit_spica(dev: Sequence[str], rest: Sequence[str], ratings: Mapping[str, np.ndarray],
              terms: Mapping[str, tuple[float, float]], sim: Callable[[str, str], float]) -> SpicaFit:
    """Least-squares weights from every (dev question, other training question) pair with
    ratings on both sides; with fewer than 4 pairs, similarity only (``w_d=-1``) and a warning."""
    feats, targets = [], []
    for q in dev:
        if q not in ratings:
            continue
        for o in rest:
            if o in ratings and o in terms:
                feats.append([sim(q, o), *terms[o]])
                targets.append(mismatch(ratings[q], ratings[o]))
    if len(feats) < 4:
        log.warning("SPICA: %d dev pairs, too few to fit the weights: similarity only", len(feats))
        return SpicaFit(np.array([-1.0, 0.0, 0.0, 0.0]), len(feats), None)
    x, y = np.array(feats), np.array(targets)
    w = fit_weights(x, y)
    pred = x @ w[:3] + w[3]
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else None
    return SpicaFit(w, len(feats), r2)


def population_means(rows: Iterable[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """question id -> the mean rating vector over the personas that have it."""
    acc: dict[str, list[np.ndarray]] = {}
    for q, r in rows:
        acc.setdefault(q, []).append(r)
    out = {}
    for q, rs in acc.items():
        n = max(r.size for r in rs)
        out[q] = np.mean([np.pad(r, (0, n - r.size)) for r in rs], axis=0)
    return out


def shown_claims(claims: Sequence[Claim], labels: Mapping[str, bool], prompt: str) -> Examples:
    """A retrieved question's examples: all labelled claims (contrastive) or the True ones (positive)."""
    ex = [(c, bool(labels[c.item_id])) for c in claims if c.item_id in labels]
    return [e for e in ex if e[1]] if prompt == "positive" else ex


def take_k(order: Sequence[str], bank: Mapping[str, list[Claim]], labels: Mapping[str, bool],
           k: int, prompt: str) -> tuple[Examples, list[str]]:
    """Whole questions in ``order`` until at least ``k`` claims are shown; (examples, question ids)."""
    out: Examples = []
    used: list[str] = []
    for q in order:
        if len(out) >= k:
            break
        ex = shown_claims(bank[q], labels, prompt)
        if ex:
            out += ex
            used.append(q)
    return out, used


def retrieval_error(query_ratings: np.ndarray | None, used: Sequence[str],
                    bank_gold: Mapping[str, np.ndarray]) -> float | None:
    """Mean gold mismatch L between the held-out question and each retrieved question."""
    if query_ratings is None:
        return None
    ls = [mismatch(query_ratings, bank_gold[q]) for q in used if q in bank_gold]
    return float(np.mean(ls)) if ls else None
