"""A deterministic stand-in language model for fast logic tests of the search (no torch).

Its tokenizer interns every line (and each newline and label) as one token, so prompts decode
back to the claims they hold.
Its "belief" that a target claim is True: a fixed preference per claim (``[+]`` in the claim
text means the persona likes that option) plus evidence from examples of the same question: a
groupmate labelled True pushes towards False. Scores do not depend on the order of examples,
which makes runs under different layouts comparable.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from plural_icm.backends.base import GenerationParams, LMBackend, Prompt, flatten


class LineTokenizer:
    bos_token_id = 0
    add_bos_token = True
    chat_template = None

    def __init__(self):
        self.vocab = {"<s>": 0}
        self.rev = ["<s>"]

    def _id(self, piece: str) -> int:
        if piece not in self.vocab:
            self.vocab[piece] = len(self.rev)
            self.rev.append(piece)
        return self.vocab[piece]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # Like a real pre-tokenizer, newlines and a label word with its space are pieces of their
        # own, so the search's block boundaries are stable (plural_icm.search.prompts).
        return [self._id(p) for p in re.split(r"(\n| True$| False$| True(?=\n)| False(?=\n))", text) if p]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.rev[i] for i in ids if i != 0)


class FakeLM(LMBackend):
    name = "fake"

    def __init__(self, max_context: int = 100_000):
        super().__init__()
        self.tokenizer = LineTokenizer()
        self.model_id = "fake-lm"
        self.max_context = max_context
        self.calls = 0

    def label_logprobs(self, prompts: Sequence[Prompt], labels: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(prompts), 2))
        for k, p in enumerate(prompts):
            self.stats.prompts += 1
            self.stats.prompt_tokens_computed += sum(len(s) for s in p)
            text = self.tokenizer.decode(flatten(p))
            blocks = text.split("\n\n")
            target = blocks[-1]
            q = _field(target, "Question")
            claim = _field(target, "Claim")
            s = 3.0 if "[+]" in claim else -0.5
            for b in blocks[:-1]:
                if _field(b, "Question") == q and _field(b, "Claim") != claim:
                    s += -2.0 if b.rstrip().endswith("True") else 0.7
            s += (hash(claim) % 7) * 0.01
            lt = -math.log1p(math.exp(-s))
            lf = -math.log1p(math.exp(s))
            out[k] = (lt, lf)
        return out

    def generate(self, prompts, params: GenerationParams):
        return ["True" for _ in prompts]


def _field(block: str, name: str) -> str:
    for line in block.splitlines():
        if line.startswith(name + ":"):
            return line[len(name) + 1:].strip()
    return ""
