"""Steered generation with an LM judge, for open-ended data (OvertonBench).

The answers a condition labels as representative of the persona (ICM: the answers ICM labelled
True) are the in-context steering examples; the instruct model writes an answer to each held-out
question; a judge model rates on a 1-5 scale how well it represents the group (the prompt is
``inference.judge_prompt``). Every generated answer and the judge's raw reply are kept, so the
scores can be audited and recomputed.

Progress (:func:`generate_and_judge_all`): every answer is generated first, then every answer is
judged, each phase with its own bar (answers done, rate, time left at that phase's rate: a judge
reply of 8 tokens costs a fraction of an answer of ``max_new_tokens``, so one rate over both would
be wrong in both). A bar advances per batch of the backend (:func:`generate_batched`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from plural_icm.backends.base import GenerationParams, LMBackend, Prompt, as_prompt, prompt_length
from plural_icm.data.records import Claim, Persona

_RATING = re.compile(r"\b([1-5])\b")
SYSTEM = "You write short answers to opinion questions, in the voice of the group described."
JUDGE_MAX_NEW_TOKENS = 8


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


def generate_batched(backend: LMBackend, prompts: Sequence[Prompt], params: GenerationParams,
                     progress: Callable[[int], Any] | None = None) -> list[str]:
    """``backend.generate(prompts, params)``, calling ``progress(n)`` after every ``n`` outputs.

    Without ``progress`` it is one call. With it, the prompts go in chunks of the backend's
    ``batch_size``, in the order the ``hf`` backend batches one call in (by length, stably), so
    each chunk is exactly one of that call's batches and the outputs are those of one call; a
    backend without ``batch_size`` gets one call (one tick)."""
    if progress is None or not prompts:
        out = backend.generate(list(prompts), params)
        if progress is not None:
            progress(len(out))
        return out
    size = int(getattr(backend, "batch_size", 0) or 0) or len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: prompt_length(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        for i, text in zip(idx, backend.generate([prompts[i] for i in idx], params)):
            out[i] = text
        progress(len(idx))
    return out


@dataclass
class SteeringJob:
    """One generate-and-judge unit: a persona's held-out questions under one example set, and the
    fields its rows carry besides (e.g. ``perturbation``)."""
    persona: Persona
    examples: Sequence[tuple[Claim, bool]]
    test: Sequence[Claim]
    extra: dict = field(default_factory=dict)
    contrastive: bool = False
    """SPICA's C-R prompt (:func:`steering_messages`)."""

    def questions(self) -> dict[str, str]:
        """question id -> text, in sorted id order."""
        q: dict[str, str] = {}
        for c in self.test:
            q.setdefault(c.question_id, c.question)
        return {k: q[k] for k in sorted(q)}


def generate_answers(generator: LMBackend, inf_cfg: Any, job: SteeringJob, seed: int,
                     progress: Callable[[int], Any] | None = None) -> dict[str, str]:
    """question id -> the generator's answer (stripped), steered by the job's examples."""
    questions = job.questions()
    params = GenerationParams(max_new_tokens=int(inf_cfg.max_new_tokens), temperature=0.0, seed=seed)
    prompts = [as_prompt(generator.chat_prompt(
        steering_messages(job.persona, job.examples, q, SYSTEM, job.contrastive))) for q in questions.values()]
    answers = generate_batched(generator, prompts, params, progress)
    return {q: a.strip() for q, a in zip(questions, answers)}


def judge_answers(judge: LMBackend, inf_cfg: Any, job: SteeringJob, answers: dict[str, str], seed: int,
                  progress: Callable[[int], Any] | None = None) -> list[dict]:
    """One row per answer: the judge's raw reply and its 1-5 rating (None when unparseable)."""
    questions = job.questions()
    prompts = [as_prompt(judge.chat_prompt([{"role": "user", "content": inf_cfg.judge_prompt.format(
        persona=job.persona.description, question=questions[q], answer=answers[q])}]))
        for q in questions]
    params = GenerationParams(max_new_tokens=JUDGE_MAX_NEW_TOKENS, temperature=0.0, seed=seed)
    replies = generate_batched(judge, prompts, params, progress)
    n_shown = sum(1 for _, y in job.examples if y)
    return [{"persona_id": job.persona.id, "question_id": q, "question": questions[q],
             "answer": answers[q], "judge_reply": r, "score": parse_rating(r),
             "n_steering_examples": n_shown, **job.extra}
            for q, r in zip(questions, replies)]


def generate_and_judge(generator: LMBackend, judge: LMBackend, inf_cfg: Any, persona: Persona,
                       examples: Sequence[tuple[Claim, bool]], test: Sequence[Claim],
                       seed: int, contrastive: bool = False) -> list[dict]:
    """One generated answer per held-out question, with the judge's rating (``contrastive``:
    :func:`steering_messages`)."""
    job = SteeringJob(persona, examples, test, contrastive=contrastive)
    return judge_answers(judge, inf_cfg, job, generate_answers(generator, inf_cfg, job, seed), seed)


def generate_and_judge_all(generator: LMBackend, judge: LMBackend, inf_cfg: Any,
                           jobs: Sequence[SteeringJob], seed: int, show: bool = True) -> list[dict]:
    """:func:`generate_and_judge` over ``jobs``: every answer first (bar ``generation``), then
    every rating (bar ``judging``), each with its count, rate and time left (module doc). The
    rows are those of calling :func:`generate_and_judge` per job, in job order."""
    n = sum(len(j.questions()) for j in jobs)
    answers = []
    with tqdm(total=n, desc="generation", unit="answer", disable=not show, dynamic_ncols=True) as bar:
        for job in jobs:
            bar.set_postfix_str(job.persona.id)
            answers.append(generate_answers(generator, inf_cfg, job, seed, bar.update))
    rows: list[dict] = []
    with tqdm(total=n, desc="judging", unit="answer", disable=not show, dynamic_ncols=True) as bar:
        for job, got in zip(jobs, answers):
            bar.set_postfix_str(job.persona.id)
            rows += judge_answers(judge, inf_cfg, job, got, seed, bar.update)
    return rows
