"""Label scoring as next-token queries: shared by the backends that cannot score a continuation
in one call (in-process vLLM and the OpenAI-compatible client).

The label rule is in :mod:`plural_icm.backends.base`. A label of tokens ``t1..tm`` after a prompt is
scored as ``m`` next-token queries (``prompt``, ``prompt+t1``, ..., ``prompt+t1..t(m-1)``) whose
log-probabilities of ``t1..tm`` are summed: the exact continuation log-probability. Labels sharing
a first token share its query, so one-token labels need one query per prompt.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .base import LMBackend, Prompt, flatten

DEFAULT_TOP_LOGPROBS = 20
"""How many top next tokens to ask for when a server cannot return exactly the label tokens."""


class LabelNotInTopKError(RuntimeError):
    """A label token is not among the log-probabilities a server or engine returned."""


def checked_label_ids(backend: LMBackend, prompts: Sequence[Prompt], labels: Sequence[str]
                      ) -> list[list[int]]:
    """The labels' token ids, after checking every prompt leaves room for the longest label.

    A query never feeds the last label token: ``prompt + (longest - 1)`` tokens plus the one
    predicted, so ``extra=longest``. Raises :class:`~plural_icm.backends.base.ContextLengthError`
    naming the prompt before any request is sent.
    """
    label_ids = backend.label_token_ids(labels)
    longest = max((len(t) for t in label_ids), default=1)
    for i, p in enumerate(prompts):
        backend.check_length(p, what=f"prompt {i}", extra=longest)
    return label_ids


class ContinuationPlan:
    """The next-token queries that score every label after every prompt.

    ``queries[q]`` is the flat token-id list of one query and ``wanted[q]`` the token ids whose
    next-token log-probability is needed from it. :meth:`assemble` sums the answers into the
    ``(n_prompts, n_labels)`` matrix.
    """

    def __init__(self, prompts: Sequence[Prompt], label_ids: Sequence[Sequence[int]]):
        self.n_prompts, self.n_labels = len(prompts), len(label_ids)
        self.queries: list[list[int]] = []
        self.wanted: list[set[int]] = []
        self.prompt_of: list[int] = []
        # terms[i][j] = list of (query index, token id) whose logprobs sum to entry (i, j)
        self.terms: list[list[list[tuple[int, int]]]] = []
        for i, prompt in enumerate(prompts):
            base = flatten(prompt)
            index: dict[tuple[int, ...], int] = {}
            row = []
            for toks in label_ids:
                term = []
                for k, tok in enumerate(toks):
                    key = tuple(toks[:k])
                    q = index.get(key)
                    if q is None:
                        q = index[key] = len(self.queries)
                        self.queries.append(base + list(key))
                        self.wanted.append(set())
                        self.prompt_of.append(i)
                    self.wanted[q].add(int(tok))
                    term.append((q, int(tok)))
                row.append(term)
            self.terms.append(row)

    def assemble(self, answers: Sequence[dict[int, float]]) -> np.ndarray:
        """The ``(n_prompts, n_labels)`` log-probabilities from ``{token id: logprob}`` per query."""
        out = np.zeros((self.n_prompts, self.n_labels), dtype=np.float64)
        for i, row in enumerate(self.terms):
            for j, term in enumerate(row):
                out[i, j] = sum(answers[q][tok] for q, tok in term)
        return out
