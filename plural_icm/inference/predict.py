"""In-context inference: an instruct model labels held-out claims given a persona description and
labelled examples.

All test claims of one (persona, condition) share one prompt prefix (system prompt, persona,
examples); prompts are built as two token segments, prefix and query, so the backend computes the
prefix once and reuses it for every test claim. Each prompt is the tokenizer's encoding of its full
text (or chat-template rendering), cut where the shared prefix ends.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

import numpy as np

from plural_icm.backends.base import ContextLengthError, LMBackend, Prompt, as_prompt, prompt_length
from plural_icm.backends.canonical import check_concatenation, encode_split, encode_text
from plural_icm.choices import ContextPolicy
from plural_icm.data.records import Claim, Persona
from plural_icm.layout import PredictionRow

log = logging.getLogger(__name__)

_MARK = "\u241eQUERY\u241e"  # a marker that cannot occur in data, replaced by the query text

#: Prompts per ``label_logprobs`` call when a progress callback is given: large enough that a
#: vLLM/GPU batch stays full, small enough that a persona of a few hundred claims ticks a few times.
PROGRESS_CHUNK = 64


class PromptBuilder:
    """Renders (persona, examples, query) prompts with the model's chat template.

    Base models (``base=True``) and models without a chat template get plain text and labels with
    a leading space, even when the tokenizer ships a template (some base checkpoints do, e.g.
    Qwen3-*-Base: a base model was never trained on it); with a template the assistant turn starts
    a fresh line and labels carry no space.
    """

    def __init__(self, backend: LMBackend, inf_cfg: Any, base: bool = False):
        self.backend = backend
        self.cfg = inf_cfg
        self.chat = not base and bool(getattr(backend.tokenizer, "chat_template", None))
        labels = list(inf_cfg.labels)
        self.labels = labels if self.chat else [" " + l.lstrip() for l in labels]

    def _user_text(self, persona: Persona, examples: Sequence[tuple[Claim, bool]]) -> str:
        text = f"{persona.description}\n\n"
        if examples:
            text += "Examples of claims about this group, labelled True or False:\n\n"
            for c, y in examples:
                text += self.cfg.example_template.format(question=c.question, claim=c.claim,
                                                         label="True" if y else "False")
        text += "Is this claim about the group True or False?\n\n" + _MARK
        return text

    def split_prompt(self, persona: Persona, examples: Sequence[tuple[Claim, bool]]) -> tuple[list[int], str, str]:
        """(leading token ids, text before the query, text after it) for this persona and examples.

        The text before ends where the shared prefix ends: before the whitespace that precedes the
        query, because tokenizers merge a trailing blank line into one token that the running text
        does not produce (plural_icm.backends.canonical); that whitespace opens the query segment.
        """
        user = self._user_text(persona, examples)
        if self.chat:
            messages = [{"role": "system", "content": self.cfg.system_prompt},
                        {"role": "user", "content": user}]
            text = self.backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                              tokenize=False)
            # The template text holds its own special tokens (BOS etc.), so no extra ones are added.
            lead: list[int] = []
        else:
            text = self.cfg.system_prompt + "\n\n" + user
            lead = list(self.backend.bos())
        before, after = text.split(_MARK)
        return lead, before, after

    def prompts(self, persona: Persona, examples: Sequence[tuple[Claim, bool]],
                targets: Sequence[Claim]) -> list[Prompt]:
        """One prompt per target: the shared prefix, then the query (the canonical encoding of the
        whole text, cut where the prefix ends; an unstable cut raises UnstableBoundaryError)."""
        lead, before, after = self.split_prompt(persona, examples)
        cut = len(before.rstrip())
        prefix_text, gap = before[:cut], before[cut:]
        tok = self.backend.tokenizer
        prefix = encode_text(tok, prefix_text)
        what = (f"inference prompt of persona {persona.id} "
                f"({'chat template' if self.chat else 'plain text'})")
        out = []
        for t in targets:
            query = self.cfg.query_template.format(question=t.question, claim=t.claim)
            _, rest = encode_split(tok, prefix_text, gap + query + after, what=what, head=prefix,
                                   hint="Change inference.query_template or the text before it.")
            if not out:  # the scored labels continue the text as the text says (once per builder call)
                for label, ids in zip(self.labels, self.backend.label_token_ids(self.labels)):
                    check_concatenation(tok, [before + query + after, label], [prefix + rest, ids],
                                        what=f"{what} followed by the label {label!r}",
                                        hint="Change inference.labels or the query template's end.")
            out.append(as_prompt(lead + prefix, rest))
        return out


def fit_examples(builder: PromptBuilder, persona: Persona, examples: list[tuple[Claim, bool]],
                 targets: Sequence[Claim], policy: ContextPolicy) -> list[tuple[Claim, bool]]:
    """Check the longest prompt fits the context; under ``drop_oldest`` drop examples from the
    front until it does (logged), else raise naming the item and the sizes."""
    limit = builder.backend.max_context
    if not limit or not targets:
        return examples
    longest = max(targets, key=lambda t: len(t.question) + len(t.claim))
    while True:
        p = builder.prompts(persona, examples, [longest])[0]
        n = prompt_length(p) + 1
        if n <= limit:
            return examples
        if policy != ContextPolicy.drop_oldest or not examples:
            raise ContextLengthError(
                f"the prompt for item {longest.item_id} (persona {persona.id}) with {len(examples)} "
                f"examples needs {n} tokens, more than the context of {limit}; set "
                "inference.n_examples=<fewer> or inference.context_policy=drop_oldest")
        drop = max(1, len(examples) // 10)
        log.warning("persona %s: prompt of %d tokens exceeds the context (%d): dropping the %d "
                    "oldest examples (context_policy=drop_oldest)", persona.id, n, limit, drop)
        examples = examples[drop:]


def predict(backend: LMBackend, inf_cfg: Any, persona: Persona,
            examples: list[tuple[Claim, bool]], targets: Sequence[Claim],
            base: bool = False, progress: Callable[[int], Any] | None = None
            ) -> tuple[list[PredictionRow], int]:
    """Label log-probabilities of every target claim; returns (rows, examples used).

    ``base``: the backend is a base model, prompted as plain text (:class:`PromptBuilder`). With
    ``progress``, the claims are scored in chunks of :data:`PROGRESS_CHUNK` and ``progress(n)`` is
    called after each (a bar advancing per batch, with a rate); all prompts of a persona share
    their prefix, so the prefix is still computed once.
    """
    return predict_groups(backend, inf_cfg, persona, [(examples, targets)], base=base,
                          progress=progress)[0]


def predict_groups(backend: LMBackend, inf_cfg: Any, persona: Persona,
                   groups: Sequence[tuple[list[tuple[Claim, bool]], Sequence[Claim]]],
                   base: bool = False, progress: Callable[[int], Any] | None = None
                   ) -> list[tuple[list[PredictionRow], int]]:
    """:func:`predict` for several (examples, targets) groups of one persona in one scoring pass;
    per group, (rows, examples used).

    A per-query selection gives each held-out question its own examples, hence its own prefix:
    scored one question at a time, every prefix was a forward pass of one row; passed together the
    backend batches the distinct prefixes (``model.batch_size`` rows per pass) and still computes
    each once. Each group's prompts are exactly those :func:`predict` builds for it alone.
    """
    builder = PromptBuilder(backend, inf_cfg, base=base)
    policy = ContextPolicy(inf_cfg.context_policy)
    prompts: list[Prompt] = []
    spans: list[tuple[int, int, int]] = []  # (first prompt, end, examples used) per group
    for examples, targets in groups:
        used = fit_examples(builder, persona, examples, targets, policy)
        start = len(prompts)
        prompts += builder.prompts(persona, used, targets)
        spans.append((start, len(prompts), len(used)))
    lp = _label_logprobs(backend, prompts, builder.labels, progress)
    return [(_rows(targets, lp[a:b]), n) for (_, targets), (a, b, n) in zip(groups, spans)]


def _label_logprobs(backend: LMBackend, prompts: Sequence[Prompt], labels: Sequence[str],
                    progress: Callable[[int], Any] | None) -> np.ndarray:
    if progress is None:
        return np.asarray(backend.label_logprobs(prompts, labels)).reshape(len(prompts), len(labels))
    parts = []
    for start in range(0, len(prompts), PROGRESS_CHUNK):
        chunk = prompts[start:start + PROGRESS_CHUNK]
        parts.append(np.asarray(backend.label_logprobs(chunk, labels)))
        progress(len(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, len(labels)))


def _rows(targets: Sequence[Claim], lp: np.ndarray) -> list[PredictionRow]:
    rows = []
    for t, (lt, lf) in zip(targets, np.asarray(lp)):
        m = max(lt, lf)
        p_true = math.exp(lt - m) / (math.exp(lt - m) + math.exp(lf - m))
        rows.append(PredictionRow(
            persona_id=t.persona_id, item_id=t.item_id, question_id=t.question_id,
            group_id=t.group_id, option_key=t.option_key,
            option_index=t.meta.get("option_index", _int_or_none(t.option_key)),
            gold=t.gold, distribution=t.meta.get("distribution"),
            logp_true=float(lt), logp_false=float(lf), p_true=float(p_true), pred=bool(p_true > 0.5)))
    return rows


def _int_or_none(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None

