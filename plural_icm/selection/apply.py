"""The cell's selection step: from the condition's labelled examples of each persona to the
examples of each held-out question (``selection`` other than ``all``).

Called by the cell between the condition and inference; knows the condition only through what it
returned (``examples``, ``perturbations``, ``confidence``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from plural_icm.data.records import Claim, ClaimSet
from plural_icm.selection import GROUP_SOURCES, PROMPTS, SELECTIONS, selection_name
from plural_icm.selection.group_terms import composite_distance, terms_from_moments
from plural_icm.selection.retrieve import (Examples, by_question, dev_split, fit_spica, gold_ratings, gold_variance,
                                           icm_ratings, option_order, population_means, random_order,
                                           retrieval_error, take_k)

log = logging.getLogger(__name__)


@dataclass
class PersonaQueries:
    """One persona's examples per held-out question, per example set of its condition."""

    sets: list[dict[str, Examples]]
    """One mapping per example set (the condition's perturbations, or one): question id -> examples."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Scalars reported per persona and averaged (retrieval error, fitted weights, ...)."""
    retrieved: dict[str, list[str]] = field(default_factory=dict)
    """held-out question id -> the training questions shown (first example set)."""


def check_selection(cfg: Any) -> None:
    """Refuse settings the selection cannot honour, naming the option."""
    sel = cfg.selection
    name = selection_name(cfg)
    for key, value, valid in (("name", name, SELECTIONS), ("prompt", sel.prompt, PROMPTS),
                              ("group_source", sel.group_source, GROUP_SOURCES)):
        if value not in valid:
            raise ValueError(f"selection.{key}={value!r} is not one of {', '.join(valid)}")
    if name == "all":
        return
    if cfg.inference.n_examples is None:
        raise ValueError(f"selection={name} shows inference.n_examples examples per held-out "
                         "question: set inference.n_examples=<k>")


def group_source(cfg: Any, condition_has_search: bool) -> str:
    """``gold`` or ``icm``: what SPICA's group terms read (``auto``: icm when the condition has an
    ICM search, so ``icm x spica`` reads no human label)."""
    src = cfg.selection.group_source
    if src == "auto":
        return "icm" if condition_has_search else "gold"
    return src


def reads_gold(cfg: Any, condition_has_search: bool) -> bool:
    """Whether the selection itself reads gold labels (``spica`` with the gold group source):
    such cells are marked supervised in the report."""
    return selection_name(cfg) == "spica" and group_source(cfg, condition_has_search) == "gold"


def needs_embeddings(cfg: Any) -> bool:
    return selection_name(cfg) in ("nearest", "spica")


def question_texts(claimset: ClaimSet, fold: int, personas: list[str]) -> dict[str, str]:
    """question id -> the text that is embedded (the question), over training and held-out claims."""
    out: dict[str, str] = {}
    for pid in personas:
        for c in claimset.for_persona(pid):
            out.setdefault(c.question_id, c.question)
    return out


def select_for_cell(cfg: Any, claimset: ClaimSet, labelled: Mapping[str, Any],
                    embedder: Callable[[], Any] | None, condition_has_search: bool
                    ) -> dict[str, PersonaQueries]:
    """Per persona, the examples of each held-out question under ``cfg.selection``."""
    check_selection(cfg)
    name, seed, k = selection_name(cfg), int(cfg.seed), int(cfg.inference.n_examples)
    prompt = cfg.selection.prompt
    personas = sorted(labelled)
    source = group_source(cfg, condition_has_search)
    # a condition without examples (zero-shot) has nothing to rank: no embedding model is loaded
    has_pool = any(labelled[p].examples for p in personas)
    sims = (_similarities(cfg, claimset, personas, embedder)
            if needs_embeddings(cfg) and has_pool else None)

    # ratings of every persona's training questions (the bank), from the group source
    ratings: dict[str, dict[str, np.ndarray]] = {}
    gold_bank: dict[str, dict[str, np.ndarray]] = {}
    variances: dict[str, dict[str, np.ndarray]] = {}
    for pid in personas:
        bank = by_question(c for c, _ in labelled[pid].examples)
        labels = {c.item_id: y for c, y in labelled[pid].examples}
        conf = getattr(labelled[pid], "confidence", {}) or {}
        gold_bank[pid] = {q: r for q, cs in bank.items() if (r := gold_ratings(cs)) is not None}
        if source == "icm":
            ratings[pid] = {q: r for q, cs in bank.items() if (r := icm_ratings(cs, labels, conf)) is not None}
            # ICM's P(True) read as a share: a member's 0/1 answer has variance p (1 - p)
            variances[pid] = {q: r * (1 - r) for q, r in ratings[pid].items()}
        else:
            ratings[pid] = gold_bank[pid]
            variances[pid] = {q: gold_variance(bank[q], r) for q, r in ratings[pid].items()}
    if source == "gold":  # the population: every persona of the dataset on that question
        pop = population_means(
            (q, r) for q, cs in by_question(claimset.claims).items() for r in _per_persona_gold(cs))
    else:  # label-free: every persona of the cell, ICM's ratings
        pop = population_means((q, r) for pid in personas for q, r in ratings[pid].items())

    out = {}
    for pid in personas:
        t0 = time.perf_counter()
        cl = labelled[pid]
        bank = by_question(c for c, _ in cl.examples)
        _, test = claimset.split(cfg.fold, pid)
        queries = by_question(test)
        metrics: dict[str, Any] = {"selection_group_source": source if name == "spica" else None}
        if name == "spica":
            terms = {q: _terms(r, variances[pid][q], pop.get(q), cfg.selection.contrast_mean)
                     for q, r in ratings[pid].items()}
            dev, rest = dev_split(list(bank), float(cfg.selection.dev_fraction), seed, pid)
            fit = fit_spica(dev, rest, ratings[pid], terms, sims)
            metrics.update(fit.as_metrics())
            log.info("SPICA weights of %s (%s source, %d dev pairs): w_sim=%.3f w_stab=%.3f "
                     "w_con=%.3f c=%.3f R2=%s", pid, source, fit.n_pairs, *fit.weights,
                     "n/a" if fit.r2 is None else f"{fit.r2:.3f}")
        order: dict[str, list[str]] = {}
        for q in queries:
            cands = sorted(bank)
            if name == "random":
                order[q] = random_order(cands, seed, pid, q)
            elif name == "nearest":
                s = np.array([sims(q, o) for o in cands])
                order[q] = [cands[i] for i in np.argsort(-s, kind="stable")]
            else:
                s = np.array([sims(q, o) for o in cands])
                st = np.array([terms.get(o, (0.0, 0.0))[0] for o in cands])
                co = np.array([terms.get(o, (0.0, 0.0))[1] for o in cands])
                d = composite_distance(fit.weights, s, st, co)
                order[q] = [cands[i] for i in np.argsort(d, kind="stable")]
        sets = []
        retrieved: dict[str, list[str]] = {}
        errors = []
        for n_set, examples in enumerate(cl.perturbations or [cl.examples]):
            labels = {c.item_id: y for c, y in examples}
            per_q = {}
            for q, test_claims in queries.items():
                ex, used = take_k(order[q], bank, labels, k, prompt)
                per_q[q] = ex
                if n_set == 0:
                    retrieved[q] = used
                    e = retrieval_error(gold_ratings(test_claims), used, gold_bank[pid])
                    if e is not None:
                        errors.append(e)
            sets.append(per_q)
        metrics["retrieval_error"] = float(np.mean(errors)) if errors else None
        metrics["selection_examples_per_query"] = (float(np.mean([len(v) for v in sets[0].values()]))
                                                   if sets[0] else None)
        metrics["selection_time_s"] = time.perf_counter() - t0
        out[pid] = PersonaQueries(sets, metrics, retrieved)
    return out


def _per_persona_gold(claims: list[Claim]) -> list[np.ndarray]:
    by_p: dict[str, list[Claim]] = {}
    for c in claims:
        by_p.setdefault(c.persona_id, []).append(c)
    rs = [gold_ratings(option_order(cs)) for cs in by_p.values()]
    return [r for r in rs if r is not None]


def _terms(r: np.ndarray, var: np.ndarray, pop: np.ndarray | None, contrast_mean: str) -> tuple[float, float]:
    t = terms_from_moments(r, var, r if pop is None else _pad(pop, r.size), contrast_mean)
    return (t.g_stability, t.g_contrast)


def _pad(v: np.ndarray, n: int) -> np.ndarray:
    return v[:n] if v.size >= n else np.pad(v, (0, n - v.size))


def _similarities(cfg: Any, claimset: ClaimSet, personas: list[str],
                  embedder: Callable[[], Any] | None) -> Callable[[str, str], float]:
    """Cosine similarity of two question ids' texts (one embedding call for all of them)."""
    if embedder is None:
        raise ValueError(f"selection={selection_name(cfg)} needs an embedding model")
    texts = question_texts(claimset, cfg.fold, personas)
    ids = sorted(texts)
    emb = embedder()  # loading the model is logged by the backend, not timed here
    t0 = time.perf_counter()
    vecs = emb.embed([texts[q] for q in ids])
    log.info("embedded %d question texts in %.1f s (%d computed, %d from the cache)", len(ids),
             time.perf_counter() - t0, getattr(emb, "texts_computed", -1), getattr(emb, "texts_cached", -1))
    index = {q: i for i, q in enumerate(ids)}
    gram = vecs @ vecs.T
    return lambda a, b: float(gram[index[a], index[b]])


def embedder_from_config(cfg: Any) -> Any:
    """The embedding model of ``cfg.selection`` (behind the on-disk cache in
    ``<paths.cache_dir>/embeddings``)."""
    from plural_icm.backends.embeddings import make_embedder

    sel = cfg.selection
    kind = sel.embedding_backend
    kwargs: dict[str, Any] = {"batch_size": int(sel.embedding_batch_size)}
    if kind == "openai":
        kwargs |= {"api_base": sel.embedding_api_base, "api_key_env": sel.embedding_api_key_env}
    else:
        kwargs["device"] = sel.embedding_device
    return make_embedder(kind, str(sel.embedding_model), cfg.paths.cache_dir, **kwargs)


def selection_rows(queries: Mapping[str, PersonaQueries]) -> list[dict]:
    """``selection.jsonl``: per persona and held-out question, the training questions shown."""
    return [{"persona_id": pid, "question_id": q, "retrieved": used}
            for pid, pq in sorted(queries.items()) for q, used in sorted(pq.retrieved.items())]
