"""Token blocks of claims for the ICM search prompts.

A search prompt's text is the published one: every example ``claim + label``, separated by a blank
line, then the target claim (``...is True\\n\\nQuestion: ...\\nI think this claim is``). Every claim
is tokenised once, as blocks: the query block (template with no label) and the example blocks with
each label. A context is the concatenation of example blocks, so the same claim always contributes
the same tokens wherever it appears; that is what lets a backend reuse cached prefixes exactly.

The blank line that separates examples starts the *next* block instead of ending the previous one:
tokenizers merge a trailing "\\n\\n" into one token that running text ("\\n\\nQuestion") never
produces, while the boundary before the blank line is stable. So a claim has two forms of each
block, the first of a prompt (no separator) and any later one (separator first), and every prompt
equals the tokenizer's encoding of its full text. :meth:`ClaimRenderer.check_boundaries` verifies
that for the search's claims before a search starts (plural_icm.backends.canonical).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from plural_icm.backends.base import LMBackend, Prompt, Segment
from plural_icm.backends.canonical import check_concatenation
from plural_icm.data.records import Claim

SEPARATOR = "\n\n"
"""Between two blocks of a search prompt (the published code's ``claim + label + "\\n\\n"``)."""

PROMPT_ENCODING = "canonical-v1"
"""Names how prompts are tokenised (part of a stored search's identity): blocks carry the separator
at their start, so prompts are the tokenizer's encoding of their text. Searches stored before it
tokenised every block on its own with the separator at its end."""


@dataclass(frozen=True)
class ClaimBlocks:
    text: str
    """``Question: ...\\nClaim: ...\\nI think this claim is`` (the template, no label)."""
    query: Segment
    """``\\n\\n`` + text: scored for the next label token, after at least one example."""
    true_example: Segment
    """``\\n\\n`` + text + the True label: an example after at least one other."""
    false_example: Segment
    first_query: Segment
    """The query block of a prompt with no example (no separator)."""
    first_true_example: Segment
    """The first example block of a prompt (no separator)."""
    first_false_example: Segment

    def example(self, label: bool, first: bool = False) -> Segment:
        if first:
            return self.first_true_example if label else self.first_false_example
        return self.true_example if label else self.false_example

    def query_block(self, first: bool = False) -> Segment:
        return self.first_query if first else self.query

    def longest_example(self) -> int:
        return max(len(self.true_example), len(self.false_example),
                   len(self.first_true_example), len(self.first_false_example))


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
        self._checked: set[str] = set()

    def blocks(self, claim: Claim) -> ClaimBlocks:
        got = self._cache.get(claim.item_id)
        if got is None:
            text = self.template.format(question=claim.question, claim=claim.claim)
            enc = lambda s: tuple(self.backend.encode(s))  # noqa: E731
            t, f = text + self.labels[0], text + self.labels[1]
            got = ClaimBlocks(
                text=text,
                query=enc(SEPARATOR + text), true_example=enc(SEPARATOR + t),
                false_example=enc(SEPARATOR + f), first_query=enc(text),
                first_true_example=enc(t), first_false_example=enc(f))
            self._cache[claim.item_id] = got
        return got

    def prompt(self, context: Sequence[tuple[Claim, bool]], target: Claim) -> Prompt:
        """BOS, then every (claim, label) example block in order, then the target's query block."""
        segs = [self.bos] if self.bos else []
        segs += [self.blocks(c).example(y, first=(k == 0)) for k, (c, y) in enumerate(context)]
        segs.append(self.blocks(target).query_block(first=not context))
        return tuple(segs)

    def prompt_text(self, context: Sequence[tuple[Claim, bool]], target: Claim) -> str:
        """The text :meth:`prompt` encodes (without BOS)."""
        parts = [self.blocks(c).text + self.labels[0 if y else 1] for c, y in context]
        return SEPARATOR.join(parts + [self.blocks(target).text])

    def check_boundaries(self, claims: Sequence[Claim]) -> None:
        """Refuse a tokenizer/template/labels combination whose block boundaries are not stable.

        For every claim, in both labels and both positions (first block, later block, query), the
        separately encoded blocks of a three-block prompt must equal the tokenizer's encoding of its
        text, and each query followed by each label must encode as query tokens + label tokens (the
        scored continuation is the one the text says). Costs a few encodings per claim; claims
        checked once are not checked again. Raises
        :class:`~plural_icm.backends.canonical.UnstableBoundaryError` naming the boundary.
        """
        todo = [c for c in dict((c.item_id, c) for c in claims).values() if c.item_id not in self._checked]
        if not todo:
            return
        tok = self.backend.tokenizer
        label_ids = self.backend.label_token_ids(self.labels)
        hint = (f"Search template {self.template!r} with labels {list(self.labels)}: end the "
                "template without a trailing space and give the labels a leading one, or use a "
                "separator the tokenizer splits at.")
        n = len(todo)
        for k, c in enumerate(todo):
            nxt, last = todo[(k + 1) % n], todo[(k + 2) % n]
            b, b2, b3 = self.blocks(c), self.blocks(nxt), self.blocks(last)
            for y in (True, False):
                label, other = self.labels[0 if y else 1], self.labels[1 if y else 0]
                check_concatenation(
                    tok, [b.text + label, SEPARATOR + b2.text + other, SEPARATOR + b3.text],
                    [b.example(y, first=True), b2.example(not y), b3.query],
                    what=f"ICM search prompt blocks (claim {c.item_id} and {nxt.item_id})", hint=hint)
                for q, lead in ((b.first_query, ""), (b.query, SEPARATOR)):
                    check_concatenation(tok, [lead + b.text, label], [q, label_ids[0 if y else 1]],
                                        what=f"ICM search query of claim {c.item_id} + label {label!r}",
                                        hint=hint)
            self._checked.add(c.item_id)

    def mean_block_tokens(self, claims: Sequence[Claim]) -> float:
        if not claims:
            return 0.0
        return sum(len(self.blocks(c).true_example) for c in claims) / len(claims)
