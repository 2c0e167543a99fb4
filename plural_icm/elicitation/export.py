"""The researcher's summary of a study and its export to the answers file ``stage=collaborative``
reads (``collaborative.answers_file``: one JSON line per question, ``group_id`` and ``option_key``).

Only submitted answers count (a draft may still change). A question's answer is the majority of
its annotators; a tie has no majority: by default the export refuses (naming the questions), with
``on_tie="first"`` it takes the tied option the survey lists first and marks the row ``"tie": true``.
Each row also carries its provenance for the report: ``source: "human"``, the annotators' count,
their votes, the majority's share, the persona's Fleiss' kappa, and whether the answer equals the
gold option the simulated run (``source: "simulated_gold"``) would have used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from plural_icm.elicitation.agreement import QuestionVotes, persona_kappa
from plural_icm.elicitation.store import Question, StudyStore
from plural_icm.errors import ConfigError
from plural_icm.utils.io import atomic_write_jsonl

ON_TIE = ("error", "first")


@dataclass
class QuestionSummary:
    question: Question
    votes: QuestionVotes
    drafts: int
    """Answers saved by annotators who have not submitted yet (not counted in ``votes``)."""

    @property
    def matches_gold(self) -> bool | None:
        m = self.votes.majority
        return None if m is None or self.question.gold_key is None else m == self.question.gold_key


@dataclass
class PersonaSummary:
    persona_id: str
    description: str
    invited: int = 0
    opened: int = 0
    started: int = 0
    finished: int = 0
    questions: list[QuestionSummary] = field(default_factory=list)

    @property
    def kappa(self) -> float | None:
        return persona_kappa([q.votes for q in self.questions]) if self.finished >= 2 else None

    @property
    def mean_majority_share(self) -> float | None:
        shares = [q.votes.majority_share for q in self.questions if q.votes.n]
        return sum(shares) / len(shares) if shares else None


def summarise(store: StudyStore) -> list[PersonaSummary]:
    """Per persona: invitations opened/started/finished, votes per question, agreement."""
    personas = {pid: PersonaSummary(pid, d) for pid, d in store.personas().items()}
    for inv in store.invitations():
        p = personas[inv.persona_id]
        p.invited += 1
        p.opened += inv.opened_at is not None
        p.started += inv.started_at is not None
        p.finished += inv.finished_at is not None
    by_q: dict[int, QuestionSummary] = {}
    for q in store.questions():
        s = QuestionSummary(q, QuestionVotes(Counter(), [o.key for o in q.options]), 0)
        by_q[q.id] = s
        personas[q.persona_id].questions.append(s)
    for a in store.all_answers():
        s = by_q[a["question_id"]]
        if a["finished_at"] is None:
            s.drafts += 1
        else:
            s.votes.votes[a["option_key"]] += 1
    return list(personas.values())


def answer_rows(store: StudyStore, on_tie: str = "error", partial: bool = False) -> list[dict]:
    """The answers file's rows (see the module docstring); a clear error for ties (unless
    ``on_tie="first"``) and for questions nobody has answered yet (unless ``partial``)."""
    if on_tie not in ON_TIE:
        raise ConfigError(f"on_tie={on_tie!r}: use one of {ON_TIE}")
    meta = store.meta()
    rows, ties, unanswered = [], [], []
    for p in summarise(store):
        kappa = p.kappa
        for s in p.questions:
            v, q = s.votes, s.question
            if not v.n:
                unanswered.append(q.group_id)
                continue
            if v.tie and on_tie == "error":
                ties.append(f"{q.group_id} ({dict(v.votes)})")
                continue
            answer = v.leaders[0]
            rows.append({"group_id": q.group_id, "option_key": answer, "source": "human",
                         "persona": p.persona_id, "question_id": q.question_id, "folds": q.folds,
                         "study": meta.get("name"), "n_annotators": v.n, "votes": dict(v.votes),
                         "majority_share": v.majority_share, "tie": v.tie, "fleiss_kappa": kappa,
                         "matches_gold": None if q.gold_key is None else answer == q.gold_key})
    if ties:
        raise ConfigError(f"{len(ties)} question(s) have tied answers: {', '.join(ties)}; invite "
                          f"more annotators, or export with --on-tie first (the tied option the "
                          f"survey lists first, marked \"tie\": true)")
    if unanswered and not partial:
        raise ConfigError(f"{len(unanswered)} question(s) have no submitted answer yet: "
                          f"{', '.join(unanswered)}; wait for them, or export with --partial (the "
                          f"re-search then stops naming the missing ones)")
    return rows


def export_answers(store: StudyStore, path: str | Path, on_tie: str = "error",
                   partial: bool = False) -> list[dict]:
    """Write the answers file (temp file, then rename) and return its rows."""
    rows = answer_rows(store, on_tie, partial)
    atomic_write_jsonl(path, rows)
    return rows
