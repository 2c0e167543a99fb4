"""Deterministic k-fold splits stratified by persona; whole questions stay in one fold."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Iterable

from plural_icm.data.records import Claim


def assign_folds(claims: Iterable[Claim], n_folds: int, seed: int = 0) -> dict[str, int]:
    """Map every ``question_id`` to a fold in ``0..n_folds-1``.

    Questions are dealt round-robin to folds in a seeded order, persona by persona, so each
    persona's questions are spread evenly over the folds (stratified by persona). A question shared
    by several personas (GQA: the same question for every country) gets one fold for all of them,
    so no question text is seen in both the search set and the test set.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    by_persona: dict[str, list[str]] = defaultdict(list)
    for c in claims:
        if c.question_id not in by_persona[c.persona_id]:
            by_persona[c.persona_id].append(c.question_id)
    folds: dict[str, int] = {}
    load: dict[str, list[int]] = {}
    for persona in sorted(by_persona):
        counts = [0] * n_folds
        # Questions already placed (shared with an earlier persona) count toward this persona's load.
        for q in by_persona[persona]:
            if q in folds:
                counts[folds[q]] += 1
        rng = random.Random(_stable_seed(seed, persona))
        todo = sorted(q for q in by_persona[persona] if q not in folds)
        rng.shuffle(todo)
        for q in todo:
            k = min(range(n_folds), key=lambda f: (counts[f], f))
            folds[q] = k
            counts[k] += 1
        load[persona] = counts
    return folds


def _stable_seed(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")
