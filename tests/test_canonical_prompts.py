"""The prompts the model sees are the prompts the text says.

Every prompt the search and the inference send to a backend is decoded and re-encoded with the
tokenizer: the token ids must equal the tokenizer's encoding of the prompt's own text (chat-template
renderings included), with the segment boundaries used for prefix reuse left in place. Checked for
the tiny test tokenizer and for two real families: SmolLM2 (GPT-2 style byte-level BPE) and Gemma-3
(SentencePiece-style BPE), whose tokenizers load from the packaged GGUF files without the weights.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
from omegaconf import OmegaConf

from fake_lm import FakeLM
from plural_icm.backends.base import LMBackend, flatten
from plural_icm.backends.canonical import UnstableBoundaryError, encode_split
from plural_icm.data.demo import load_demo
from plural_icm.data.records import ConsistencyRule
from plural_icm.inference.predict import PromptBuilder
from plural_icm.search.engine import ICMSearch, SearchParams, run_searches
from plural_icm.search.prompts import ClaimRenderer

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")
INFERENCE_CFG = "conf/inference/default.yaml"


class TokenizerOnlyLM(LMBackend):
    """A real tokenizer with made-up scores (a hash of the prompt): records every prompt."""

    name = "tokenizer-only"

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.model_id = str(getattr(tokenizer, "name_or_path", "tokenizer"))
        self.seen = []

    def label_logprobs(self, prompts, labels):
        self.seen += list(prompts)
        out = []
        for p in prompts:
            h = int(hashlib.sha1(str(flatten(p)).encode()).hexdigest()[:8], 16) / 2 ** 32
            out.append((np.log(h + 1e-3), np.log(1 - h + 1e-3)))
        return np.array(out)

    def generate(self, prompts, params):
        return ["True"] * len(prompts)


def non_canonical(backend, prompts) -> list[int]:
    """Indices of prompts whose ids differ from the tokenizer's encoding of their decoded text."""
    tok, bos = backend.tokenizer, list(backend.bos())
    bad = []
    for k, p in enumerate(prompts):
        ids = flatten(p)
        body = ids[len(bos):] if bos and ids[:len(bos)] == bos else ids
        if bos + tok.encode(tok.decode(body), add_special_tokens=False) != ids:
            bad.append(k)
    return bad


def search_prompts(backend, n_questions=8, iters=40):
    """The prompts of a fast-engine and a reference-engine search over demo claims."""
    claims = [c for c in load_demo().claims if c.persona_id == "progressive"][: 2 * n_questions]
    backend.seen = []
    for order in ("halving_tail", "published"):
        p = SearchParams(alpha=50, num_seed=4, max_iters=iters, patience=10 ** 6, max_tail=3,
                         context_order=order, memo=(order == "halving_tail"))
        r = ClaimRenderer(backend, TEMPLATE, LABELS)
        run_searches([ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, r, p, seed=1)], backend, LABELS)
    return list(backend.seen)


def inference_prompts(backend, n_examples=10, n_targets=6):
    cs = load_demo()
    claims = [c for c in cs.claims if c.persona_id == "progressive"]
    cfg = OmegaConf.load(INFERENCE_CFG)
    cfg.pop("defaults", None)
    builder = PromptBuilder(backend, cfg)
    examples = [(c, bool(c.gold)) for c in claims[:n_examples]]
    prompts = builder.prompts(cs.personas["progressive"], examples, claims[n_examples:n_examples + n_targets])
    return builder, prompts


def check_all_prompts(backend):
    prompts = search_prompts(backend)
    assert len(prompts) > 50
    assert non_canonical(backend, prompts) == []
    # prefix reuse survives: many prompts share their first segments
    firsts = {p[:2] for p in prompts}
    assert len(firsts) < len(prompts) / 2
    builder, inf = inference_prompts(backend)
    assert non_canonical(backend, inf) == []
    assert len({p[0] for p in inf}) == 1, "the inference prompts of one persona share one prefix"
    assert all(len(p) == 2 for p in inf)
    return len(prompts), len(inf), builder.chat


def test_prompts_are_canonical_with_the_tiny_tokenizer():
    from tiny_models import build_tokenizer

    n_search, n_inf, _ = check_all_prompts(TokenizerOnlyLM(build_tokenizer()))
    assert n_search > 50 and n_inf == 6


def test_search_refuses_unstable_boundaries():
    # The published template ends in a space and its labels carry none: "is " + "True" encodes
    # differently from "is True" as running text.
    backend = FakeLM()
    claims = [c for c in load_demo().claims if c.persona_id == "progressive"][:4]
    r = ClaimRenderer(backend, TEMPLATE + " ", ("True", "False"))
    with pytest.raises(UnstableBoundaryError) as err:
        ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, r, SearchParams(num_seed=2), seed=0)
    msg = str(err.value)
    assert "ICM search query of claim" in msg and "'LineTokenizer'" in msg  # names the tokenizer
    assert "I think this claim is " in msg and "'True'" in msg


def test_encode_split_refuses_a_cut_inside_a_token():
    tok = FakeLM().tokenizer  # one token per line: "abc" + "def" is one token "abcdef"
    with pytest.raises(UnstableBoundaryError, match=r"'abc' \| 'def'"):
        encode_split(tok, "abc", "def", what="a test prompt")
    head, rest = encode_split(tok, "abc", "\ndef", what="a test prompt")
    assert tok.decode(head) == "abc" and tok.decode(rest) == "\ndef"


def _packaged_tokenizer(name):
    from plural_icm.backends.loading import ModelNotFoundError, load_packaged_tokenizer

    try:
        return load_packaged_tokenizer(name)
    except ModelNotFoundError as e:
        pytest.skip(f"packaged:{name} is not installed: {e}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3-270m"])
def test_prompts_are_canonical_with_packaged_tokenizers(name):
    tok = _packaged_tokenizer(name)
    backend = TokenizerOnlyLM(tok)
    n_search, n_inf, chat = check_all_prompts(backend)
    if chat:  # the same model used as a base model: plain-text inference prompts too
        plain = copy.deepcopy(tok)
        plain.chat_template = None
        _, inf = inference_prompts(TokenizerOnlyLM(plain))
        assert non_canonical(backend, inf) == []
    print(f"{name}: {n_search} search prompts and {n_inf} inference prompts (chat={chat}) canonical")
    # The self-check refuses the published template's trailing space with this tokenizer too.
    claims = [c for c in load_demo().claims if c.persona_id == "progressive"][:4]
    r = ClaimRenderer(backend, TEMPLATE + " ", ("True", "False"))
    with pytest.raises(UnstableBoundaryError, match="I think this claim is "):
        ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, r, SearchParams(num_seed=2), seed=0)


@pytest.mark.slow
def test_blank_line_at_the_end_of_a_block_is_not_canonical_for_smollm2():
    """Why blocks start with the separator: SmolLM2 encodes a block-final "\\n\\n" as one token
    that the running text does not contain (the check above would catch a regression)."""
    tok = _packaged_tokenizer("smollm2")
    a = "Question: q\nClaim: c\nI think this claim is"
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    assert enc(a + " True\n\n") + enc(a) != enc(a + " True\n\n" + a)
    assert enc(a + " True") + enc("\n\n" + a) == enc(a + " True\n\n" + a)
