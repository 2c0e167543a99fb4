"""Context orders for leave-one-out scoring (``icm.context_order``).

Mutual predictability scores every labelled claim given ALL other labelled claims. Leave-one-out
does not fix the order of the others, but a language model's log-probabilities depend on it, so the
order is part of the objective:

* ``published`` (:class:`FixedLayout` with the canonical order): every query sees the others in one
  global order, by uid grouped by consistency group, as the published code. Prompts share their
  prefix up to the left-out claim, which the backends' prefix caches reuse exactly.
* ``halving_tail`` (:class:`TreeTailLayout`): orders chosen per query so that prompts share longer
  prefixes, described below. Fewer tokens, different scores.

The halving layout:

* a *tree* part, laid out by recursive halving over a list of slots: for claims in the left half,
  the context starts with the whole right half, and vice versa, recursively. Prompts of one half
  share the other half as a prefix, so one full evaluation computes about n*L*log2(n) tokens
  instead of n^2*L;
* a short *tail* of recently changed or newly labelled claims, appended after the tree part of
  every context. Changing a tail claim invalidates only what follows it, about n*L tokens per
  evaluation; adding a new claim costs about 2*n*L.

A claim leaving the tree leaves an empty slot (``None``): the split points never move, so only the
prefixes that contained it are invalidated. When the tail is full, tail and tree are merged into a
new tree (one full evaluation).

Every (re)built tree is a seeded shuffle of its claims (``seed``; the k-th build uses
``(seed, k)``). Claims arrive grouped (loader order, a repair moving a group to the tail), and
halving an unshuffled list makes a claim's own group-mate the last example before its query for
nearly every claim; shuffled, that happens at about the rate of the published order (the claims of
its last group), by chance rather than construction. The tail is different by design: while it
holds claims, the last example before every tree claim's query is the most recently changed claim
(:attr:`plural_icm.search.engine.SearchResult.nearest_example` counts both).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Hashable, Iterable, Sequence

import numpy as np

Item = Hashable


@dataclass
class TreeTailLayout:
    slots: list = field(default_factory=list)
    tail: list = field(default_factory=list)
    max_tail: int = 8
    seed: int | None = None
    """Shuffles every rebuilt tree (None: claims keep their order, for tests and old checkpoints)."""
    builds: int = 0
    """Trees built so far: the k-th shuffle is seeded by ``(seed, k)``."""

    def _tree(self, items: list, tail: list | None = None) -> "TreeTailLayout":
        """A new tree over ``items`` (shuffled when seeded) with ``tail``."""
        return TreeTailLayout(slots=shuffled(items, self.seed, self.builds), tail=list(tail or []),
                              max_tail=self.max_tail, seed=self.seed, builds=self.builds + 1)

    # -- structure --------------------------------------------------------------------------
    def items(self) -> list:
        """Every claim in the layout, in the order of the full context (tree then tail)."""
        return [s for s in self.slots if s is not None] + list(self.tail)

    def __contains__(self, item: Item) -> bool:
        return item in self.tail or item in self.slots

    def with_changes(self, changed: Iterable[Item], present: set) -> "TreeTailLayout":
        """The layout to use for a proposal changing ``changed`` claims.

        Changed claims move to the end of the tail (new claims are appended there); claims no longer
        labelled (``present`` excludes them) are dropped. When the tail would exceed ``max_tail``,
        tree and old tail are merged into a new tree first.
        """
        changed = [c for c in dict.fromkeys(changed)]
        slots = [s if (s is not None and s in present and s not in changed) else None for s in self.slots]
        tail = [t for t in self.tail if t in present and t not in changed]
        moved = [c for c in changed if c in present]
        if len(tail) + len(moved) > self.max_tail:
            merged = self._tree([s for s in slots if s is not None] + tail)
            new = replace(merged, tail=moved)
        else:
            new = replace(self, slots=slots, tail=tail + moved)
        if len(new.tail) > self.max_tail:  # more changes at once than the tail holds
            new = new._tree(new.items())
        return new

    def compacted(self) -> "TreeTailLayout":
        return self._tree(self.items())

    # -- contexts ---------------------------------------------------------------------------
    def contexts(self) -> dict:
        """Leave-one-out context order of every claim in the layout."""
        out: dict = {}
        tail = list(self.tail)
        _halving(self.slots, 0, len(self.slots), [], out)
        for item, ctx in out.items():
            ctx.extend(tail)
        tree_all = [s for s in self.slots if s is not None]
        for t in tail:
            out[t] = tree_all + [u for u in tail if u != t]
        return out

    def full_context(self) -> list:
        """Context of a claim outside the layout (prediction for an unlabelled claim)."""
        return self.items()

    def to_dict(self) -> dict:
        return {"kind": "tree_tail", "slots": list(self.slots), "tail": list(self.tail),
                "max_tail": self.max_tail, "seed": self.seed, "builds": self.builds}


def shuffled(items: Sequence, seed: int | None, k: int) -> list:
    """``items`` in the seeded order of the ``k``-th tree build (unchanged when ``seed`` is None)."""
    items = list(items)
    if seed is None:
        return items
    perm = np.random.default_rng([int(seed), int(k)]).permutation(len(items))
    return [items[i] for i in perm]


def _halving(slots: Sequence, lo: int, hi: int, prefix: list, out: dict) -> None:
    if hi - lo <= 0:
        return
    if hi - lo == 1:
        if slots[lo] is not None:
            out[slots[lo]] = list(prefix)
        return
    mid = (lo + hi) // 2
    left = [s for s in slots[lo:mid] if s is not None]
    right = [s for s in slots[mid:hi] if s is not None]
    _halving(slots, lo, mid, prefix + right, out)
    _halving(slots, mid, hi, prefix + left, out)


@dataclass
class FixedLayout:
    """The published order: every other labelled claim in one fixed order.

    With ``canonical`` (the published code's order: by uid, grouped by consistency group) a newly
    labelled claim takes its canonical position; without it, it is appended (order of labelling).
    """

    order: list = field(default_factory=list)
    canonical: list | None = None

    def items(self) -> list:
        return list(self.order)

    def __contains__(self, item: Item) -> bool:
        return item in self.order

    def with_changes(self, changed: Iterable[Item], present: set) -> "FixedLayout":
        order = [o for o in self.order if o in present]
        order += [c for c in dict.fromkeys(changed) if c in present and c not in order]
        if self.canonical is not None:
            keep = set(order)
            order = [c for c in self.canonical if c in keep]
        return FixedLayout(order=order, canonical=self.canonical)

    def compacted(self) -> "FixedLayout":
        return FixedLayout(order=list(self.order), canonical=self.canonical)

    def contexts(self) -> dict:
        return {j: [o for o in self.order if o != j] for j in self.order}

    def full_context(self) -> list:
        return list(self.order)

    def to_dict(self) -> dict:
        d = {"kind": "fixed", "order": list(self.order)}
        if self.canonical is not None:
            d["canonical"] = list(self.canonical)
        return d


def layout_from_dict(d: dict):
    if d["kind"] == "tree_tail":
        return TreeTailLayout(slots=list(d["slots"]), tail=list(d["tail"]), max_tail=d["max_tail"],
                              seed=d.get("seed"), builds=int(d.get("builds", 0)))
    if d["kind"] == "fixed":
        canonical = d.get("canonical")
        return FixedLayout(order=list(d["order"]), canonical=None if canonical is None else list(canonical))
    raise ValueError(f"unknown layout kind {d['kind']!r}")
