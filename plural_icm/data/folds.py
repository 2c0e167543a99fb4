"""Deterministic k-fold splits stratified by persona; a question text never spans two folds."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Iterable

from plural_icm.data.records import Claim


def question_text(claim: Claim) -> str:
    """The text that identifies a question for leakage: PT's prompt (``meta["prompt"]``, as its
    ``Claim.question`` also holds the persona and the two responses), else ``Claim.question``;
    whitespace collapsed and case folded."""
    return " ".join(str(claim.meta.get("prompt", claim.question)).split()).casefold()


def _statement_options(claim: Claim) -> str | None:
    """The option list as a key when the options are statements (some option has >= 5 words):
    such a list names the question even under another stem (OpinionQA's ``MARRFAM2_W32`` and
    ``MARRFAM_W92``: "Which statement comes closer..." / "Please choose the statement...")."""
    if claim.meta.get("options_are_claims"):
        # Claim texts standing in for missing option lists (claim files without raw_choice_*)
        # share their wording across questions ("People from X would answer ... 'Agree'"): as a
        # key they would merge every Agree/Disagree question into one unit, i.e. one fold.
        return None
    options = [" ".join(str(o).split()).casefold() for o in claim.meta.get("options") or []]
    if len(options) < 2 or max(len(o.split()) for o in options) < 5:
        return None
    return "\x1e".join(sorted(options))


def question_units(claims: Iterable[Claim]) -> dict[str, str]:
    """``question_id -> unit``: ids that share a question text, or a list of statement options,
    are one unit (transitively).

    OpinionQA asks one text in several waves under different keys (``HARASS4_W32``,
    ``HARASS4_W41``); GQA can list one question twice with different options. Folding by id alone
    would put the same question in the search set and the test set.
    """
    parent: dict[str, str] = {}

    def find(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    first_by_key: dict[tuple[str, str], str] = {}
    for c in claims:
        parent.setdefault(c.question_id, c.question_id)
        keys = [("text", question_text(c))]
        statements = _statement_options(c)
        if statements is not None:
            keys.append(("options", statements))
        for key in keys:
            other = first_by_key.setdefault(key, c.question_id)
            a, b = find(other), find(c.question_id)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smallest id names the unit: order-free
    return {q: find(q) for q in parent}


def assign_folds(claims: Iterable[Claim], n_folds: int, seed: int = 0) -> dict[str, int]:
    """Map every ``question_id`` to a fold in ``0..n_folds-1``.

    Question *units* (ids sharing a question text, :func:`question_units`) are dealt to folds in
    a seeded order, larger units first, each to the fold holding the fewest of the persona's
    questions so far, persona by persona, so each persona's questions are spread evenly over the
    folds (stratified by persona). A unit shared by several personas (GQA: the same
    question for every country) gets one fold for all of them, so no question text is seen in
    both the search set and the test set, whatever the seed.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    claims = list(claims)
    unit_of = question_units(claims)
    # persona -> unit -> the persona's question ids in it
    by_persona: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for c in claims:
        by_persona[c.persona_id][unit_of[c.question_id]].add(c.question_id)
    unit_fold: dict[str, int] = {}
    for persona in sorted(by_persona):
        units = by_persona[persona]
        counts = [0] * n_folds
        # Units already placed (shared with an earlier persona) count toward this persona's load.
        for u, ids in units.items():
            if u in unit_fold:
                counts[unit_fold[u]] += len(ids)
        rng = random.Random(_stable_seed(seed, persona))
        todo = sorted(u for u in units if u not in unit_fold)
        rng.shuffle(todo)
        todo.sort(key=lambda u: -len(units[u]))  # stable: the shuffle orders equal sizes
        for u in todo:
            k = min(range(n_folds), key=lambda f: (counts[f], f))
            unit_fold[u] = k
            counts[k] += len(units[u])
    return {q: unit_fold[u] for q, u in unit_of.items()}


def _stable_seed(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")
