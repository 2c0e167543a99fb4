"""The ICM engine's cost model: prompt tokens of one search, without running it.

Fitted to the measured token counts of ``python -m plural_icm.bench.search`` (docs/benchmark.md,
n = 32..256 claims of L ~ 48 tokens):

* ``reference`` engine (every other claim in one fixed order, full rescoring): a full evaluation
  computes n (n - 1) L tokens; a label-changing proposal (predict, repair, rescore) ~2.6x that.
* ``fast`` engine in the ``published`` order (one global order, prefix cache, memo; the presets'):
  prompts share their prefix up to the left-out claim, so a full evaluation ~0.55 n (n - 1) L and a
  proposal ~0.7 n (n - 1) L (measured at n = 32 only: docs/benchmark.md).
* ``fast`` engine in the ``halving_tail`` order (recursive halving + tail layout, prefix cache,
  memo): a full evaluation ~1.15 n L log2(n) tokens; a proposal ~9 n L (the tail's rescoring plus
  repairs and periodic merges).

:func:`cost_mode` names the mode of an (engine, context order) pair.

Iterations are ``max_iters`` of the preset: an upper bound, since a search stops early when every
claim is labelled and nothing was accepted for ``patience`` iterations.
"""

from __future__ import annotations

import math

FAST_FULL_EVAL = 1.15       # x n L log2 n
FAST_PROPOSAL = 9.0         # x n L
REFERENCE_PROPOSAL = 2.6    # x n (n - 1) L
PUBLISHED_FULL_EVAL = 0.55  # x n (n - 1) L
PUBLISHED_PROPOSAL = 0.7    # x n (n - 1) L


def cost_mode(engine: str, context_order: str = "published") -> str:
    """``reference``, ``published`` (the fast engine in the published order) or ``fast`` (halving)."""
    if engine == "reference":
        return "reference"
    return "published" if context_order == "published" else "fast"


def full_evaluation_tokens(n_claims: int, tokens_per_claim: int, engine: str = "fast") -> float:
    """Prompt tokens of one evaluation of P(D) over ``n_claims`` claims from a cold cache."""
    n, L = max(int(n_claims), 1), max(int(tokens_per_claim), 1)
    if engine == "reference":
        return float(n * (n - 1) * L)
    if engine == "published":
        return PUBLISHED_FULL_EVAL * n * (n - 1) * L
    return FAST_FULL_EVAL * n * L * max(math.log2(n), 1.0)


def proposal_tokens(n_claims: int, tokens_per_claim: int, engine: str = "fast") -> float:
    """Mean prompt tokens of one label-changing iteration."""
    n, L = max(int(n_claims), 1), max(int(tokens_per_claim), 1)
    if engine == "reference":
        return REFERENCE_PROPOSAL * n * (n - 1) * L
    if engine == "published":
        return PUBLISHED_PROPOSAL * n * (n - 1) * L
    return FAST_PROPOSAL * n * L


def search_tokens(n_claims: int, tokens_per_claim: int, iterations: int, engine: str = "fast") -> float:
    """Prompt tokens of one search: the initial evaluation plus ``iterations`` proposals (at most)."""
    return (full_evaluation_tokens(n_claims, tokens_per_claim, engine)
            + int(iterations) * proposal_tokens(n_claims, tokens_per_claim, engine))
