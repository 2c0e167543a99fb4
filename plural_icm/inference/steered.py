"""Steered generation with an LM judge, for open-ended data (OvertonBench).

The answers a condition labels as representative of the persona (ICM: the answers ICM labelled
True) are the in-context steering examples; the instruct model writes an answer to each held-out
question; a judge model rates on a 1-5 scale how well it represents the group (the prompt is
``inference.judge_prompt``). Every generated answer and the judge's raw reply are kept, so the
scores can be audited and recomputed.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from plural_icm.backends.base import GenerationParams, LMBackend, as_prompt
from plural_icm.data.records import Claim, Persona

_RATING = re.compile(r"\b([1-5])\b")


def parse_rating(reply: str) -> int | None:
    """The first digit 1-5 standing alone in the judge's reply, or None (counted as missing)."""
    m = _RATING.search(reply)
    return int(m.group(1)) if m else None


def steering_messages(persona: Persona, examples: Sequence[tuple[Claim, bool]], question: str,
                      system_prompt: str, contrastive: bool = False) -> list[dict[str, str]]:
    """The steering prompt: the examples labelled True as answers that represent the group
    (SPICA's P-R); ``contrastive``: then those labelled False, marked as answers that do not
    (SPICA's C-R: a representative and a non-representative response)."""
    text = f"{persona.description}\n\n"
    for label, heading in ((True, "Answers that represent this group's views:"),
                           (False, "Answers that do NOT represent this group's views:")):
        shown = [c for c, y in examples if y == label]
        if shown and (label or contrastive):
            text += heading + "\n\n"
            text += "".join(f"Question: {c.question}\nAnswer: {c.meta.get('answer', c.claim)}\n\n"
                            for c in shown)
    text += f"Answer the following question as this group would.\nQuestion: {question}\nAnswer:"
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]


def generate_and_judge(generator: LMBackend, judge: LMBackend, inf_cfg: Any, persona: Persona,
                       examples: Sequence[tuple[Claim, bool]], test: Sequence[Claim],
                       seed: int, contrastive: bool = False) -> list[dict]:
    """One generated answer per held-out question, with the judge's rating (``contrastive``:
    :func:`steering_messages`)."""
    questions: dict[str, str] = {}
    for c in test:
        questions.setdefault(c.question_id, c.question)
    qids = sorted(questions)
    gen_params = GenerationParams(max_new_tokens=int(inf_cfg.max_new_tokens), temperature=0.0, seed=seed)
    system = "You write short answers to opinion questions, in the voice of the group described."
    prompts = [as_prompt(generator.chat_prompt(
        steering_messages(persona, examples, questions[q], system, contrastive))) for q in qids]
    answers = generator.generate(prompts, gen_params)
    judge_prompts = [as_prompt(judge.chat_prompt([{"role": "user", "content": inf_cfg.judge_prompt.format(
        persona=persona.description, question=questions[q], answer=a.strip())}]))
        for q, a in zip(qids, answers)]
    replies = judge.generate(judge_prompts, GenerationParams(max_new_tokens=8, temperature=0.0, seed=seed))
    return [{"persona_id": persona.id, "question_id": q, "question": questions[q], "answer": a.strip(),
             "judge_reply": r, "score": parse_rating(r), "n_steering_examples": sum(1 for _, y in examples if y)}
            for q, a, r in zip(qids, answers, replies)]
