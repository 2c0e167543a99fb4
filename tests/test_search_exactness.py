"""The fast scorer is exact, and the fast and plain engines take the same decisions.

Exactness: every log-probability the search obtained through the prefix-sharing backend equals
running that query's full prompt (same context order) alone through the model, within 1e-4.
Equivalence: same seed, same context orders, prefix reuse on vs off: same decisions, same labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from plural_icm.backends.base import flatten
from plural_icm.data.demo import load_demo
from plural_icm.data.records import ConsistencyRule
from plural_icm.search.engine import ICMSearch, SearchParams, run_searches
from plural_icm.search.prompts import ClaimRenderer

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")


class Recorder:
    """Wraps a backend and records every (prompt, logprobs) pair the search received."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def label_logprobs(self, prompts, labels):
        out = self.inner.label_logprobs(prompts, labels)
        self.seen += list(zip(prompts, out))
        return out


def _claims(n_questions=6):
    cs = load_demo()
    claims = [c for c in cs.claims if c.persona_id == "progressive"][: 2 * n_questions]
    return cs, claims


def _search(backend, claims, iters, seed=0, order="published"):
    r = ClaimRenderer(backend, TEMPLATE, LABELS)
    p = SearchParams(alpha=50, num_seed=4, max_iters=iters, patience=10**6, max_tail=3,
                     context_order=order)
    return ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, r, p, seed=seed, max_context=backend.max_context)


def _full_prompt_logprobs(backend, prompts):
    """Each prompt alone, as one segment, with the prefix cache off."""
    backend.prefix_cache = False
    try:
        return np.array([backend.label_logprobs([(tuple(flatten(p)),)], LABELS)[0] for p in prompts])
    finally:
        backend.prefix_cache = True


def _check_exact(backend, iters, order="published"):
    _, claims = _claims()
    rec = Recorder(backend)
    run_searches([_search(rec, claims, iters, order=order)], rec, LABELS)
    assert backend.stats.prompt_tokens_cached > 0, "the fast path reused no prefix"
    prompts = [p for p, _ in rec.seen]
    got = np.array([v for _, v in rec.seen])
    # a sample keeps the check affordable on the real model
    idx = np.linspace(0, len(prompts) - 1, min(len(prompts), 40)).astype(int)
    want = _full_prompt_logprobs(backend, [prompts[i] for i in idx])
    diff = np.abs(got[idx] - want).max()
    assert diff < 1e-4, diff
    return diff


@pytest.mark.parametrize("order", ["published", "halving_tail"])
def test_fast_scorer_is_exact_on_tiny_model(tiny_model_dir, order):
    from plural_icm.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    _check_exact(backend, iters=25, order=order)


@pytest.mark.slow
def test_fast_scorer_is_exact_on_packaged_model():
    from plural_icm.backends.hf import HFBackend

    backend = HFBackend("packaged:smollm2", dtype="float32")
    _check_exact(backend, iters=6)


@pytest.mark.parametrize("order", ["published", "halving_tail"])
def test_fast_and_plain_engines_take_the_same_decisions(tiny_model_dir, order):
    from plural_icm.backends.hf import HFBackend

    _, claims = _claims()
    fast_b = HFBackend(str(tiny_model_dir), dtype="float32", prefix_cache=True)
    plain_b = HFBackend(str(tiny_model_dir), dtype="float32", prefix_cache=False)
    fast = run_searches([_search(fast_b, claims, 60, seed=5, order=order)], fast_b, LABELS)[0]
    plain_s = _search(plain_b, claims, 60, seed=5, order=order)
    plain_s.p.memo = False  # every query scored from its full prompt
    plain = run_searches([plain_s], plain_b, LABELS)[0]
    assert fast.iterations == plain.iterations == 60
    assert [r["accepted"] for r in fast.trajectory] == [r["accepted"] for r in plain.trajectory]
    assert fast.labels == plain.labels
    assert fast_b.stats.prompt_tokens_computed < plain_b.stats.prompt_tokens_computed
    assert sum(r["accepted"] for r in fast.trajectory) >= 3  # the test exercised real changes
