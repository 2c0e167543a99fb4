"""Labels of the in-context examples, one function per few-shot condition of the paper.

Every function takes the *training* claims of one persona (and fold) and returns
``item_id -> bool``. The zero-shot conditions need no labels. To compare conditions fairly the
labelled items must be the same: pass ``items=icm_labels.keys()`` to :func:`gold_labels` and
:func:`random_labels` when the ICM search covered only part of the training claims
(``max_search_claims``), and choose the subset for a given number of examples with
:func:`subset_for_n_examples`, which is the same for every condition.

Accuracy of a labelling is measured at claim level over labelled items with a gold label (the
quantity the paper calls ICM label accuracy, its Table 4).
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from plural_icm.data.records import Claim, ConsistencyRule

Labels = dict[str, bool]
CoherenceFn = Callable[[Labels], float]
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Gold, random, ICM
# --------------------------------------------------------------------------------------------

def _restrict(claims: Iterable[Claim], items: Iterable[str] | None) -> list[Claim]:
    claims = list(claims)
    if items is None:
        return claims
    wanted = set(items)
    known = {c.item_id for c in claims}
    missing = wanted - known
    if missing:
        raise ValueError(f"{len(missing)} requested item(s) are not among the claims, "
                         f"e.g. {sorted(missing)[:3]}")
    return [c for c in claims if c.item_id in wanted]


def gold_labels(claims: Iterable[Claim], items: Iterable[str] | None = None) -> Labels:
    """Few-shot Gold: each claim's gold label (the persona's plurality option / preferred order).

    ``items`` restricts to those item ids (use the ICM-labelled items so both conditions show the
    same examples). Raises when a selected claim has no gold label.
    """
    out: Labels = {}
    for c in _restrict(claims, items):
        if c.gold is None:
            raise ValueError(f"claim {c.item_id!r} has no gold label; the gold condition needs one")
        out[c.item_id] = bool(c.gold)
    return out


def _item_bit(seed: int, item_id: str) -> bool:
    # A per-item hash instead of one RNG stream: the label of an item does not depend on which
    # other items are present or on their order, so subsets (n examples) stay nested.
    return hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[0] & 1 == 1


def random_labels(claims: Iterable[Claim], seed: int, items: Iterable[str] | None = None,
                  coherent: bool = False) -> Labels:
    """Few-shot random labels: True/False uniformly at random per item, seeded.

    This is the paper's baseline: labels carry no information and are *not* made consistent, so
    a group may have zero or several True claims. ``coherent=True`` is an extra variant (not a
    condition of the paper) that instead picks one uniformly random option per group as True,
    i.e. random but exactly-one-shaped. Deterministic in (seed, item ids) and independent of the
    order of ``claims``.
    """
    selected = _restrict(claims, items)
    if not coherent:
        return {c.item_id: _item_bit(seed, c.item_id) for c in selected}
    out: Labels = {}
    for gid, members in _groups(selected).items():
        members = sorted(members, key=lambda c: c.item_id)
        rng = random.Random(_stable_int(seed, gid))
        winner = rng.randrange(len(members))
        out.update({c.item_id: i == winner for i, c in enumerate(members)})
    return {c.item_id: out[c.item_id] for c in selected}


def icm_labels(claims: Iterable[Claim], labels: Mapping[str, bool | None]) -> Labels:
    """Few-shot ICM: the search's labels, restricted to these claims (in claim order).

    Items the search left unlabelled (missing or None) are not examples. Raises when none of the
    claims is labelled (a search of another persona or fold was passed by mistake).
    """
    claims = list(claims)
    out = {c.item_id: bool(labels[c.item_id]) for c in claims
           if c.item_id in labels and labels[c.item_id] is not None}
    if claims and not out:
        raise ValueError("none of the claims has an ICM label: were the labels of another "
                         "persona or fold passed?")
    return out


def label_accuracy(claims: Iterable[Claim], labels: Mapping[str, bool]) -> float | None:
    """Claim-level accuracy of ``labels`` against gold over labelled claims with a gold label
    (None when there is none)."""
    pairs = [(bool(labels[c.item_id]), bool(c.gold)) for c in claims
             if c.item_id in labels and c.gold is not None]
    if not pairs:
        return None
    return sum(a == b for a, b in pairs) / len(pairs)


# --------------------------------------------------------------------------------------------
# Accuracy-matched control
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Perturbation:
    """One accuracy-matched perturbation of the ICM labels."""

    labels: Labels
    """The perturbed labels (same items as the ICM labels)."""
    accuracy: float
    """Claim-level training accuracy vs gold."""
    coherence: float
    """``coherence(labels)``; strictly below ``reference_coherence``."""
    tries: int
    """Candidates drawn since the previous accepted perturbation (including this one)."""
    n_changed: int
    """Items whose label differs from ICM's."""
    reference_accuracy: float
    """Accuracy of the ICM labels."""
    reference_coherence: float
    """Coherence of the ICM labels."""


class AccuracyMatchError(RuntimeError):
    """No (or too few) accuracy-matched perturbations with lower coherence were found."""


@dataclass
class _GroupUnit:
    """An exactly-one group labelled coherently by ICM: its state is which claim is True."""

    items: list[str]
    gold: str
    current: str


def accuracy_matched_labels(claims: Iterable[Claim], icm_labels: Mapping[str, bool],
                            coherence: CoherenceFn, n_perturbations: int = 5,
                            tolerance: float = 0.005, seed: int = 0, max_tries: int = 2000,
                            rule: ConsistencyRule | str = ConsistencyRule.EXACTLY_ONE,
                            n_moves: int | None = None,
                            allow_fewer: bool = False) -> list[Perturbation]:
    """Few-shot Accuracy-Matched: ICM's labels randomly perturbed within the persona so that the
    training accuracy equals ICM's within ``+-tolerance`` (absolute fraction: 0.005 = 0.5 points)
    while ``coherence`` is strictly lower than ICM's.

    How a candidate is drawn (``n_moves`` moves, uniformly 1..max when None; each move touches
    items no earlier move of the same candidate touched):

    * group swap (exactly-one groups that ICM labelled coherently, i.e. one True claim): one
      correct group gets its True moved to a random wrong option, one wrong group gets its True
      moved to the gold option. Each side changes two claims, so accuracy is *exactly* preserved
      and every group stays coherent;
    * wrong-to-wrong move (groups of 3+ options): move a wrong True to another wrong option
      (accuracy unchanged);
    * item swap (claims outside coherent exactly-one groups, or every claim for
      ``rule="none"``): flip one correct and one wrong claim (accuracy exactly preserved);
    * only when none of the above exists (ICM labels all right or all wrong): single changes,
      as long as the accumulated accuracy change stays within the tolerance.

    Each distinct candidate costs one ``coherence`` call (the caller's mutual predictability,
    expensive with a real model); it is accepted when its coherence is strictly lower than
    ICM's. Candidates repeating an earlier one are skipped without a call but count as tries.
    ``max_tries`` bounds the candidates drawn in total. When fewer than ``n_perturbations`` are
    found, :class:`AccuracyMatchError` is raised unless ``allow_fewer=True``, in which case the
    ones found are returned (possibly none). Claims without gold or without an ICM label are
    never changed.
    """
    if n_perturbations < 1:
        raise ValueError(f"n_perturbations must be >= 1, got {n_perturbations}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    claims = [c for c in claims if c.item_id in icm_labels]
    ref_labels: Labels = {k: bool(v) for k, v in icm_labels.items()}
    gold = {c.item_id: bool(c.gold) for c in claims if c.gold is not None}
    n_gold = len(gold)
    if n_gold == 0:
        raise AccuracyMatchError("no ICM-labelled claim has a gold label: accuracy is undefined")
    ref_acc = label_accuracy(claims, ref_labels)
    ref_coh = float(coherence(dict(ref_labels)))

    group_units, item_units = _units(claims, ref_labels, gold, ConsistencyRule(rule))
    rng = random.Random(_stable_int(seed, "acc_matched"))
    slack = tolerance * n_gold + 1e-9  # allowed change in the number of correct claims

    found: list[Perturbation] = []
    seen: set[tuple[str, ...]] = set()
    tries = since = 0
    while len(found) < n_perturbations and tries < max_tries:
        tries += 1
        since += 1
        cand = _draw_candidate(rng, ref_labels, gold, group_units, item_units, slack, n_moves)
        if cand is None:
            raise AccuracyMatchError(
                f"no label change keeps accuracy within +-{tolerance} of ICM's {ref_acc:.4f} on "
                f"{n_gold} claims (e.g. ICM labels are all right or all wrong and one change moves "
                "accuracy by more than the tolerance)")
        key = tuple(sorted(k for k, v in cand.items() if v))
        if key in seen:
            continue
        seen.add(key)
        acc = label_accuracy(claims, cand)
        if abs(acc - ref_acc) > tolerance + 1e-12:  # construction guarantees it; guard anyway
            continue
        coh = float(coherence(dict(cand)))
        if coh < ref_coh:  # NaN compares False: never accepted
            n_changed = sum(cand[k] != ref_labels[k] for k in ref_labels)
            found.append(Perturbation(cand, acc, coh, since, n_changed, ref_acc, ref_coh))
            since = 0
    if len(found) < n_perturbations and not allow_fewer:
        raise AccuracyMatchError(
            f"found {len(found)} of {n_perturbations} accuracy-matched perturbations with "
            f"coherence below ICM's ({ref_coh:.4f}) in {tries} tries ({len(seen)} distinct "
            "candidates); raise max_tries, lower n_perturbations, or pass allow_fewer=True")
    return found


def _units(claims: list[Claim], labels: Labels, gold: dict[str, bool],
           rule: ConsistencyRule) -> tuple[list[_GroupUnit], list[str]]:
    """Split labelled gold-bearing claims into coherent exactly-one groups and free items."""
    group_units: list[_GroupUnit] = []
    item_units: list[str] = []
    for _, members in sorted(_groups(claims).items()):
        ids = [c.item_id for c in members if c.item_id in gold]
        if rule == ConsistencyRule.EXACTLY_ONE and len(ids) == len(members) >= 2:
            gold_true = [i for i in ids if gold[i]]
            icm_true = [i for i in ids if labels[i]]
            if len(gold_true) == 1 and len(icm_true) == 1:
                group_units.append(_GroupUnit(sorted(ids), gold_true[0], icm_true[0]))
                continue
        # Incoherent ICM group, no single gold option, or no group rule: change items freely.
        item_units.extend(sorted(ids))
    return group_units, item_units


def _draw_candidate(rng: random.Random, ref: Labels, gold: dict[str, bool],
                    group_units: list[_GroupUnit], item_units: list[str], slack: float,
                    n_moves: int | None) -> Labels | None:
    """One random accuracy-matched candidate, or None when no move is possible at all."""
    g_right = [u for u in group_units if u.current == u.gold]
    g_wrong = [u for u in group_units if u.current != u.gold]
    g_multi = [u for u in g_wrong if len(u.items) >= 3]
    i_right = [i for i in item_units if ref[i] == gold[i]]
    i_wrong = [i for i in item_units if ref[i] != gold[i]]
    rng.shuffle(g_right), rng.shuffle(g_wrong), rng.shuffle(g_multi)
    rng.shuffle(i_right), rng.shuffle(i_wrong)
    balanced = min(len(g_right), len(g_wrong)) + len(g_multi) + min(len(i_right), len(i_wrong))
    singles = balanced == 0  # fallback: unbalanced single changes within the tolerance
    max_moves = balanced if not singles else len(group_units) + len(item_units)
    if max_moves == 0:
        return None
    k = rng.randint(1, max_moves) if n_moves is None else min(n_moves, max_moves)

    cand = dict(ref)
    used: set[int] = set()  # ids of group units already moved in this candidate
    delta = 0  # change in the number of correct claims (stays 0 unless in fallback mode)

    def move_true(u: _GroupUnit, to: str) -> None:
        cand[u.current] = False
        cand[to] = True
        used.add(id(u))

    def free(us: list[_GroupUnit]) -> list[_GroupUnit]:
        return [u for u in us if id(u) not in used]

    for _ in range(k):
        options = []
        if not singles:
            if free(g_right) and free(g_wrong):
                options.append("group_swap")
            if free(g_multi):
                options.append("wrong_to_wrong")
            if i_right and i_wrong:
                options.append("item_swap")
        else:
            if free(g_right) and abs(delta - 2) <= slack:
                options.append("group_break")
            if free(g_wrong) and abs(delta + 2) <= slack:
                options.append("group_fix")
            if i_right and abs(delta - 1) <= slack:
                options.append("item_break")
            if i_wrong and abs(delta + 1) <= slack:
                options.append("item_fix")
        if not options:
            break
        move = rng.choice(options)
        if move == "group_swap":
            a, b = free(g_right)[0], free(g_wrong)[0]
            move_true(a, rng.choice([i for i in a.items if i != a.gold]))
            move_true(b, b.gold)
        elif move == "wrong_to_wrong":
            u = free(g_multi)[0]
            move_true(u, rng.choice([i for i in u.items if i not in (u.gold, u.current)]))
        elif move == "item_swap":
            for i in (i_right.pop(), i_wrong.pop()):
                cand[i] = not cand[i]
        elif move == "group_break":
            u = free(g_right)[0]
            move_true(u, rng.choice([i for i in u.items if i != u.gold]))
            delta -= 2
        elif move == "group_fix":
            u = free(g_wrong)[0]
            move_true(u, u.gold)
            delta += 2
        elif move == "item_break":
            i = i_right.pop()
            cand[i] = not cand[i]
            delta -= 1
        else:  # item_fix
            i = i_wrong.pop()
            cand[i] = not cand[i]
            delta += 1
    if cand == ref:
        return None if singles else cand  # fallback mode with every change out of tolerance
    return cand


# --------------------------------------------------------------------------------------------
# The paper fork's accuracy-matched constructions (scripts/gen_persona_perturbed_data.py and
# scripts/gen_perturbed_data.py of Taslim-M/Unsupervised-Elicitation; ../shared/notes)
# --------------------------------------------------------------------------------------------

#: The fork's five seeds of the persona datasets' perturbed example files (OpinionQA: the first).
FORK_SEEDS = (42, 101, 202, 303, 404)
CONSTRUCTIONS = ("gold_flip", "fix_break")


def _gold_and_icm(claims: Iterable[Claim], icm: Mapping[str, bool]) -> tuple[list[str], dict[str, bool]]:
    ids = sorted(c.item_id for c in claims if c.item_id in icm and c.gold is not None)
    gold = {c.item_id: bool(c.gold) for c in claims if c.item_id in icm and c.gold is not None}
    return ids, gold


def gold_flip_labels(claims: Iterable[Claim], icm: Mapping[str, bool], seed: int,
                     salt: str = "") -> Labels:
    """The fork's control on persona datasets: start from the GOLD labels and flip as many training
    claims, chosen uniformly at random (``seed`` with ``salt``, e.g. persona and fold), as ICM got
    wrong. Same number of right labels as ICM's; no consistency is kept (random flips break
    groups freely). Claims without gold keep ICM's label (they count in no accuracy)."""
    claims = list(claims)
    ids, gold = _gold_and_icm(claims, icm)
    n_wrong = sum(bool(icm[i]) != gold[i] for i in ids)
    flip = set(random.Random(_stable_int(seed, f"gold_flip:{salt}")).sample(ids, n_wrong))
    out = {k: bool(v) for k, v in icm.items()}
    out.update({i: (not gold[i]) if i in flip else gold[i] for i in ids})
    assert sum(out[i] == gold[i] for i in ids) == sum(bool(icm[i]) == gold[i] for i in ids)
    return {c.item_id: out[c.item_id] for c in claims if c.item_id in out}


def fix_break_labels(claims: Iterable[Claim], icm: Mapping[str, bool], seed: int,
                     salt: str = "") -> Labels:
    """The fork's control on OpinionQA: ICM's labels with every ICM error fixed (set to gold) and as
    many of ICM's right claims, chosen at random, broken (set to not-gold): the same accuracy, the
    errors disjoint from ICM's. Raises :class:`AccuracyMatchError` when ICM has fewer right claims
    than errors (below 50%: nothing to break as many of)."""
    claims = list(claims)
    ids, gold = _gold_and_icm(claims, icm)
    wrong = [i for i in ids if bool(icm[i]) != gold[i]]
    right = [i for i in ids if bool(icm[i]) == gold[i]]
    if len(right) < len(wrong):
        raise AccuracyMatchError(f"fix_break: ICM has {len(wrong)} wrong and only {len(right)} right "
                                 "labels: cannot break as many right ones as it fixes (use "
                                 "dataset.acc_matched_construction=gold_flip)")
    broken = set(random.Random(_stable_int(seed, f"fix_break:{salt}")).sample(right, len(wrong)))
    out = {k: bool(v) for k, v in icm.items()}
    out.update({i: gold[i] for i in wrong})
    out.update({i: not gold[i] for i in broken})
    return {c.item_id: out[c.item_id] for c in claims if c.item_id in out}


def consistency_violations(claims: Iterable[Claim], labels: Mapping[str, bool],
                           rule: ConsistencyRule | str) -> int:
    """Inconsistent pairs of ``labels`` over the groups of ``claims`` (I(D) of the search)."""
    from plural_icm.search.consistency import inconsistencies

    groups = {g: [c.item_id for c in ms] for g, ms in _groups(claims).items()}
    return inconsistencies(groups, {k: bool(v) for k, v in labels.items()}, ConsistencyRule(rule))


# --------------------------------------------------------------------------------------------
# Number of in-context examples
# --------------------------------------------------------------------------------------------

def subset_for_n_examples(claims: Iterable[Claim], n: int | None, seed: int) -> list[Claim]:
    """The in-context examples when only ``n`` are shown, identical for every condition.

    Question ids are shuffled with ``seed`` (order-independent: sorted first) and whole questions
    are taken in that order until at least ``n`` claims are selected, so a question's claims are
    never split (the last question may take the count past ``n`` by fewer than its size).
    Subsets are nested: the subset for a smaller ``n`` is contained in that for a larger one.
    ``None`` keeps all claims. Claims are returned in their input order.
    """
    claims = list(claims)
    if n is None:
        return claims
    if n < 1:
        raise ValueError(f"n must be >= 1 or None, got {n}")
    if n > len(claims):  # said, not silent: the cell's path and record keep the n asked for
        log.warning("inference.n_examples=%d is more than the %d claims of the example pool: all "
                    "%d are shown", n, len(claims), len(claims))
    by_q: dict[str, int] = {}
    for c in claims:
        by_q[c.question_id] = by_q.get(c.question_id, 0) + 1
    order = sorted(by_q)
    random.Random(_stable_int(seed, "n_examples")).shuffle(order)
    chosen: set[str] = set()
    total = 0
    for q in order:
        if total >= n:
            break
        chosen.add(q)
        total += by_q[q]
    return [c for c in claims if c.question_id in chosen]


def cap_search_claims(train: list[Claim], cap: int | None, seed: int) -> list[Claim]:
    """The training claims one search labels: all of them, or a whole-question subset of at least
    ``cap`` claims (``dataset.max_search_claims``), the same subset in every cell and stage."""
    if cap is None or len(train) <= cap:
        return train
    return subset_for_n_examples(train, cap, seed)


# --------------------------------------------------------------------------------------------

def _groups(claims: Iterable[Claim]) -> dict[str, list[Claim]]:
    out: dict[str, list[Claim]] = {}
    for c in claims:
        out.setdefault(c.group_id, []).append(c)
    return out


def _stable_int(seed: int, text: str) -> int:
    # Python's hash() of str is salted per process; sha256 keeps runs reproducible.
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")


__all__ = ["Labels", "CoherenceFn", "gold_labels", "random_labels", "icm_labels",
           "label_accuracy", "Perturbation", "AccuracyMatchError", "accuracy_matched_labels",
           "FORK_SEEDS", "CONSTRUCTIONS", "gold_flip_labels", "fix_break_labels",
           "consistency_violations",
           "subset_for_n_examples", "cap_search_claims"]
