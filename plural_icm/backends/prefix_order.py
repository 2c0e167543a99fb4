"""The order in which to hand prompts to an engine with an automatic prefix cache (vLLM).

vLLM reuses a prefix only once its key/value blocks have been *computed* by an earlier request:
prompts that share a new prefix and are scheduled in the same engine step each compute it. Our
ICM contexts are trees (recursive halving: every prompt of one half starts with the whole other
half), so a batch sent all at once recomputes each new shared prefix once per prompt that needs it.

:func:`prefix_waves` splits a batch into waves that are submitted one after another: wave ``d``
holds one real prompt (a *representative*) for every prefix of ``d + 1`` segments that two or more
prompts of the batch share and that no earlier representative has computed; the last wave holds the
rest, sorted so that prompts sharing a prefix arrive next to each other. Every prompt is still sent
exactly once and scored on its own full token sequence, so the results do not change; only which
request pays for a shared prefix does.
"""

from __future__ import annotations

from typing import Sequence

from .base import Prompt, prompt_length


def prefix_waves(prompts: Sequence[Prompt], min_shared_tokens: int = 1) -> list[list[int]]:
    """Indices of ``prompts`` in submission waves (see the module docstring).

    ``min_shared_tokens``: shared prefixes shorter than this are not worth a wave (vLLM caches
    whole blocks only: pass its block size). Waves are never empty; their union is every index once.
    """
    remaining = set(range(len(prompts)))
    computed: set[Prompt] = set()  # prefixes (segment tuples) some representative has covered
    waves: list[list[int]] = []
    depth = 1
    max_depth = max((len(p) for p in prompts), default=0)
    while depth < max_depth:
        groups: dict[Prompt, list[int]] = {}
        for i in sorted(remaining):
            if len(prompts[i]) > depth:
                groups.setdefault(prompts[i][:depth], []).append(i)
        wave = []
        for key, members in groups.items():
            if len(members) < 2 or key in computed or prompt_length(key) < min_shared_tokens:
                continue
            rep = members[0]
            wave.append(rep)
            remaining.discard(rep)
            p = prompts[rep]
            computed.update(p[:d] for d in range(1, len(p) + 1))
        if wave:
            waves.append(wave)
        depth += 1
    if remaining:
        waves.append(sorted(remaining, key=lambda i: prompts[i]))
    return waves
