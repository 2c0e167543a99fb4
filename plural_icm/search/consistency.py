"""Logical consistency of a labelling: I(D) and the repair options.

Rules come from item structure only (the group a claim belongs to), never from gold labels.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from plural_icm.data.records import ConsistencyRule


def group_inconsistencies(members: Sequence[Hashable], labels: Mapping, rule: ConsistencyRule) -> int:
    """Inconsistent pairs in one group under ``labels`` (unlabelled members are ignored).

    EXACTLY_ONE: every pair of members both True is one inconsistency (two options cannot both be
    the plurality; A>B and B>A cannot both hold); a group whose members are all labelled False is
    one more (some option must be the plurality).
    """
    if rule is ConsistencyRule.NONE:
        return 0
    labelled = [labels[m] for m in members if m in labels]
    t = sum(1 for y in labelled if y)
    bad = t * (t - 1) // 2
    if len(labelled) == len(members) and len(members) > 1 and t == 0:
        bad += 1
    return bad


def inconsistencies(groups: Mapping[Hashable, Sequence[Hashable]], labels: Mapping,
                    rule: ConsistencyRule) -> int:
    return sum(group_inconsistencies(m, labels, rule) for m in groups.values())


def repair_options(members: Sequence[Hashable], labels: Mapping, rule: ConsistencyRule,
                   fixed: Mapping) -> list[dict]:
    """Consistent relabellings of an inconsistent group: each labelled member as the single True.

    Options that would change a fixed (hard-constraint) label, or that equal the current labels,
    are not offered, so the repair never asks the model to score something pointless.
    """
    if rule is ConsistencyRule.NONE or group_inconsistencies(members, labels, rule) == 0:
        return []
    labelled = [m for m in members if m in labels]
    out = []
    for winner in labelled:
        option = {m: (m == winner) for m in labelled}
        if any(m in fixed and fixed[m] != y for m, y in option.items()):
            continue
        if all(labels[m] == y for m, y in option.items()):
            continue
        out.append(option)
    return out


def most_preferred_consistent(groups: Mapping[Hashable, Sequence[Hashable]],
                              margins: Mapping[Hashable, float], rule: ConsistencyRule) -> dict:
    """The consistent labelling closest to the model's preferences.

    ``margins[j]`` is the model's ``ln P(True) - ln P(False)`` for item ``j``. Under EXACTLY_ONE
    each group's member with the largest margin is True and the others False (the assignment
    with one True per group that maximises the summed signed margins); ties go to the first
    member. Under NONE every item follows the sign of its margin (nothing to repair).
    """
    out: dict = {}
    for members in groups.values():
        if rule is ConsistencyRule.NONE or len(members) < 2:
            out.update({m: margins[m] > 0 for m in members})
            continue
        winner = max(members, key=lambda m: margins[m])  # max keeps the first of equal margins
        out.update({m: m == winner for m in members})
    return out
