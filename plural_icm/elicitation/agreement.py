"""Agreement between annotators: per question the votes, the majority and ties; per persona Fleiss'
kappa (chance-corrected agreement of several annotators who each answered every question).

Fleiss' kappa, from its definition (Fleiss 1971): with ``n`` raters per item, ``N`` items and
``n_ij`` the raters putting item ``i`` in category ``j``: ``P_i = (sum_j n_ij^2 - n) / (n (n-1))``,
``P_bar`` their mean, ``p_j = sum_i n_ij / (N n)``, ``P_e = sum_j p_j^2``, and
``kappa = (P_bar - P_e) / (1 - P_e)``. Undefined (``None``) with fewer than 2 raters, no items, or
``P_e = 1`` (every vote in one category).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class QuestionVotes:
    """The finished annotators' votes on one question."""

    votes: Counter = field(default_factory=Counter)
    option_order: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(self.votes.values())

    @property
    def leaders(self) -> list[str]:
        """The option keys with the most votes (more than one: a tie), in the survey's order."""
        if not self.votes:
            return []
        top = max(self.votes.values())
        return [k for k in self.option_order if self.votes.get(k) == top]

    @property
    def majority(self) -> str | None:
        """The single most chosen option, or ``None`` (no votes, or a tie)."""
        lead = self.leaders
        return lead[0] if len(lead) == 1 else None

    @property
    def tie(self) -> bool:
        return len(self.leaders) > 1

    @property
    def majority_share(self) -> float | None:
        """Share of the votes the leading option(s) got (1.0: everyone agreed)."""
        return max(self.votes.values()) / self.n if self.votes else None


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of an items x categories table of counts (same number of raters per item)."""
    rows = [list(r) for r in table if sum(r) > 0]
    if not rows:
        return None
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        return None if n < 2 else _unequal(rows)
    big_n = len(rows)
    p_i = [(sum(x * x for x in r) - n) / (n * (n - 1)) for r in rows]
    p_bar = sum(p_i) / big_n
    p_j = [sum(r[j] for r in rows) / (big_n * n) for j in range(len(rows[0]))]
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1 - p_e)


def _unequal(rows: list[list[int]]) -> None:
    raise ValueError(f"Fleiss' kappa needs the same number of raters per item, got "
                     f"{sorted({sum(r) for r in rows})}")


def persona_kappa(questions: Sequence[QuestionVotes]) -> float | None:
    """Fleiss' kappa over a persona's questions, categories = the option keys seen in any of
    them; only meaningful when every finished annotator answered every question (the study's
    submissions are complete, so they do)."""
    keys = sorted({k for q in questions for k in q.option_order})
    table = [[q.votes.get(k, 0) for k in keys] for q in questions if q.n]
    if not table or len({sum(r) for r in table}) != 1:
        return None
    return fleiss_kappa(table)
