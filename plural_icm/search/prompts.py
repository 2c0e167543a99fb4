"""Token blocks of claims for the ICM search prompts.

Every claim is tokenised once, as three separate blocks: the query block (template with no label)
and the example blocks with each label. A context is the concatenation of example blocks, so the
same claim always contributes the same tokens wherever it appears; that is what lets a backend
reuse cached prefixes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from plural_icm.backends.base import LMBackend, Prompt, Segment
from plural_icm.data.records import Claim


@dataclass(frozen=True)
class ClaimBlocks:
    query: Segment
    """``Question: ...\\nClaim: ...\\nI think this claim is`` (scored for the next label token)."""
    true_example: Segment
    """The claim labelled True, followed by a blank line."""
    false_example: Segment

    def example(self, label: bool) -> Segment:
        return self.true_example if label else self.false_example


class ClaimRenderer:
    """Renders claims as token blocks with the search template and label strings.

    ``labels`` is ``(true_label, false_label)``, e.g. ``(" True", " False")``: the query ends
    without a trailing space and the label carries it (see plural_icm.backends.base).
    """

    def __init__(self, backend: LMBackend, template: str, labels: Sequence[str]):
        if len(labels) != 2:
            raise ValueError(f"icm.labels must be two strings (True, False), got {list(labels)}")
        self.backend = backend
        self.template = template
        self.labels = tuple(labels)
        self.bos: Segment = tuple(backend.bos())
        self._cache: dict[str, ClaimBlocks] = {}

    def blocks(self, claim: Claim) -> ClaimBlocks:
        got = self._cache.get(claim.item_id)
        if got is None:
            text = self.template.format(question=claim.question, claim=claim.claim)
            got = ClaimBlocks(
                query=tuple(self.backend.encode(text)),
                true_example=tuple(self.backend.encode(text + self.labels[0] + "\n\n")),
                false_example=tuple(self.backend.encode(text + self.labels[1] + "\n\n")),
            )
            self._cache[claim.item_id] = got
        return got

    def prompt(self, context: Sequence[tuple[Claim, bool]], target: Claim) -> Prompt:
        """BOS, then every (claim, label) example block in order, then the target's query block."""
        segs = [self.bos] if self.bos else []
        segs += [self.blocks(c).example(y) for c, y in context]
        segs.append(self.blocks(target).query)
        return tuple(segs)

    def mean_block_tokens(self, claims: Sequence[Claim]) -> float:
        if not claims:
            return 0.0
        return sum(len(self.blocks(c).true_example) for c in claims) / len(claims)
