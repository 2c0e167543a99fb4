"""HFBackend: exact prefix reuse, counters, context errors, generation (tiny random models).

The ``slow`` tests repeat the exactness check on packaged SmolLM2 and check the label rule on the
real SmolLM2 and Gemma tokenizers (converted once into $PLURAL_ICM_CACHE).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from plural_icm.backends.base import ContextLengthError, GenerationParams, flatten  # noqa: E402
from plural_icm.backends.hf import HFBackend  # noqa: E402
from plural_icm.backends.loading import default_cache_dir  # noqa: E402
from conftest import needs_packaged  # noqa: E402
from tiny_models import make_tiny_model_dir  # noqa: E402

LABELS = [" True", " False"]


def reference_logprobs(backend: HFBackend, prompts, labels) -> np.ndarray:
    """Each prompt + label run alone through the model, no cache, no batching."""
    out = np.zeros((len(prompts), len(labels)))
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            toks = flatten(p)
            for j, label in enumerate(labels):
                ids = backend.encode(label)
                logits = backend.model(torch.tensor([toks + ids])).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1)
                out[i, j] = sum(float(lp[len(toks) - 1 + k, t]) for k, t in enumerate(ids))
    return out


def tree_prompts(backend: HFBackend, n_examples: int = 10, seed: int = 0):
    """Prompts sharing prefixes like ICM's contexts: leave-one-out, recursive halving, mixed lengths."""
    rng = random.Random(seed)
    vocab = len(backend.tokenizer)

    def seg(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(4, vocab) for _ in range(n))

    head = tuple(backend.bos()) + seg(6)
    examples = [seg(rng.randint(2, 9)) for _ in range(n_examples)]
    prompts = []
    # leave-one-out: head + all others + the held-out target
    for i in range(n_examples):
        prompts.append((head,) + tuple(e for j, e in enumerate(examples) if j != i) + (examples[i],))

    # recursive halving: the other half is the context of every claim in a half
    def halve(ctx: tuple, items: list[int]) -> None:
        if len(items) == 1:
            prompts.append(ctx + (examples[items[0]],))
            return
        mid = len(items) // 2
        left, right = items[:mid], items[mid:]
        halve(ctx + tuple(examples[j] for j in right), left)
        halve(ctx + tuple(examples[j] for j in left), right)

    halve((head,), list(range(n_examples)))
    prompts += [(head,), (head, examples[0]), prompts[3]]  # a bare prefix, a prefix of others, a duplicate
    return prompts


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tmp_path_factory) -> HFBackend:
    return HFBackend(str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"), batch_size=4)


def test_prefix_reuse_is_exact_and_saves_compute(tiny: HFBackend):
    prompts = tree_prompts(tiny)
    ref = reference_logprobs(tiny, prompts, LABELS)
    tiny.kv_cache.clear()
    before = tiny.stats.snapshot()
    cold = tiny.label_logprobs(prompts, LABELS)
    cold_stats = tiny.stats.since(before)
    warm = tiny.label_logprobs(prompts, LABELS)
    warm_stats = tiny.stats.since(before).since(cold_stats)
    assert cold.shape == (len(prompts), 2)
    assert np.abs(cold - ref).max() < 1e-4
    assert np.abs(warm - ref).max() < 1e-4
    total = sum(len(flatten(p)) for p in prompts)
    assert cold_stats.prompt_tokens_computed + cold_stats.prompt_tokens_cached == total
    assert cold_stats.prompt_tokens_computed < total  # shared segments computed once
    assert warm_stats.prompt_tokens_computed < cold_stats.prompt_tokens_computed  # only final segments
    assert cold_stats.prompts == len(prompts)


def test_results_come_back_in_input_order(tiny: HFBackend):
    prompts = tree_prompts(tiny, seed=1)
    base = tiny.label_logprobs(prompts, LABELS)
    perm = np.random.default_rng(0).permutation(len(prompts))
    tiny.kv_cache.clear()
    shuffled = tiny.label_logprobs([prompts[i] for i in perm], LABELS)
    assert np.abs(shuffled - base[perm]).max() < 1e-4


def test_no_reuse_engine_is_exact_and_computes_everything(tiny_model_dir, tmp_path):
    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=3, prefix_cache=False)
    prompts = tree_prompts(be, seed=2)
    got = be.label_logprobs(prompts, LABELS)
    assert np.abs(got - reference_logprobs(be, prompts, LABELS)).max() < 1e-4
    assert be.stats.prompt_tokens_computed == sum(len(flatten(p)) for p in prompts)
    assert be.stats.prompt_tokens_cached == 0


def test_tiny_lru_budget_stays_exact(tiny_model_dir, tmp_path):
    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=2, prefix_cache_tokens=40)
    prompts = tree_prompts(be, seed=3)
    ref = reference_logprobs(be, prompts, LABELS)
    for _ in range(2):
        assert np.abs(be.label_logprobs(prompts, LABELS) - ref).max() < 1e-4
        assert be.kv_cache.tokens <= 40


def test_tiny_byte_budget_evicts_and_equals_unbounded(tiny_model_dir, tmp_path, caplog):
    """model.prefix_cache_gb: a budget of a few segments evicts (and recomputes), never changes
    scores; the first eviction is a warning naming the setting, once."""
    unbounded = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=2, prefix_cache_gb=None)
    prompts = tree_prompts(unbounded, n_examples=12, seed=6)
    want = np.vstack([unbounded.label_logprobs(prompts, LABELS) for _ in range(2)])
    assert unbounded.kv_cache.evictions == 0
    budget_gb = 8 * 1024 / 2**30  # 8 KiB: a handful of the tiny model's segments
    small = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=2, prefix_cache_gb=budget_gb)
    got = np.vstack([small.label_logprobs(prompts, LABELS) for _ in range(2)])
    assert np.abs(got - want).max() < 1e-5
    assert small.kv_cache.evictions > 0
    assert 0 < small.kv_cache.peak_bytes <= 8 * 1024 < unbounded.kv_cache.peak_bytes
    # evicted prefixes were recomputed: more tokens went through the model than without a budget
    assert small.stats.prompt_tokens_computed > unbounded.stats.prompt_tokens_computed
    # ... and counted as what the budget cost
    assert small.kv_cache.recomputed_tokens > 0 == unbounded.kv_cache.recomputed_tokens
    full = [r for r in caplog.records if "prefix cache full" in r.getMessage()]
    assert len(full) == 1 and "model.prefix_cache_gb" in full[0].getMessage(), full


def test_multi_token_and_unspaced_labels_are_exact(tiny: HFBackend):
    labels = [" True", "False", " True False", " claim is good"]
    assert len(tiny.encode(" claim is good")) > 1
    prompts = tree_prompts(tiny, n_examples=5, seed=4)
    got = tiny.label_logprobs(prompts, labels)
    assert np.abs(got - reference_logprobs(tiny, prompts, labels)).max() < 1e-4


def test_sliding_window_model_is_exact(tmp_path):
    """Gemma-3 style windowed layers (window 16 << prompt lengths) with reused prefixes."""
    folder = make_tiny_model_dir(tmp_path / "g", arch="gemma3", sliding_window=16)
    be = HFBackend(str(folder), cache_dir=tmp_path, batch_size=4)
    prompts = tree_prompts(be, n_examples=8, seed=5)
    ref = reference_logprobs(be, prompts, LABELS)
    assert np.abs(be.label_logprobs(prompts, LABELS) - ref).max() < 1e-4
    assert np.abs(be.label_logprobs(prompts, LABELS) - ref).max() < 1e-4


def test_context_length_error_names_prompt(tiny_model_dir, tmp_path):
    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, max_context=20)
    short, long = ((1, 5, 6),), ((1,), tuple(range(5, 25)))
    with pytest.raises(ContextLengthError, match=r"prompt 1 needs 22 tokens .* context of 20"):
        be.label_logprobs([short, long], LABELS)
    assert be.stats.prompt_tokens_computed == 0  # validated before running anything


def test_dtype_and_identity(tiny: HFBackend):
    assert tiny.torch_dtype == torch.float32  # auto on CPU
    ident = tiny.cache_identity()
    assert ident["backend"] == "hf" and ident["dtype"] == "float32" and ident["model"]
    assert not tiny.model.training


# -- generation ------------------------------------------------------------------------------
def test_generate_greedy_batched_equals_single(tiny: HFBackend):
    prompts = [(tuple(tiny.bos()) + tuple(tiny.encode(t)),) for t in
               ["Question: Do you agree", " the government", " I think this claim is good and people"]]
    params = GenerationParams(max_new_tokens=6)
    before = tiny.stats.generated_tokens
    batched = tiny.generate(prompts, params)
    single = [tiny.generate([p], params)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)
    assert tiny.stats.generated_tokens - before == 2 * 3 * 6


def test_generate_stop_strings_and_seeds(tiny: HFBackend):
    prompt = (tuple(tiny.bos()) + tuple(tiny.encode("Question: Do you")),)
    free = tiny.generate([prompt], GenerationParams(max_new_tokens=8))[0]
    assert len(free) > 2
    stop = free[1:3]
    cut = tiny.generate([prompt], GenerationParams(max_new_tokens=8, stop=(stop,)))[0]
    assert stop not in cut and free.startswith(cut)
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, seed=7)
    a = tiny.generate([prompt], sampled)[0]
    b = tiny.generate([prompt, (tuple(tiny.bos()) + (9, 10, 11),)], sampled)[0]
    assert a == b  # a seeded sample does not depend on the batch
    assert isinstance(tiny.generate([prompt], GenerationParams(max_new_tokens=4, temperature=1.0))[0], str)


# -- the real small models (slow) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    return HFBackend("packaged:smollm2", cache_dir=default_cache_dir(), batch_size=8)


@pytest.mark.slow
def test_smollm2_prefix_reuse_is_exact(smollm2):
    prompts = tree_prompts(smollm2, n_examples=8, seed=6)
    labels = [" True", " False", " not sure"]
    ref = reference_logprobs(smollm2, prompts, labels)
    smollm2.kv_cache.clear()
    assert np.abs(smollm2.label_logprobs(prompts, labels) - ref).max() < 1e-4
    assert np.abs(smollm2.label_logprobs(prompts, labels) - ref).max() < 1e-4


@pytest.mark.slow
def test_smollm2_label_rule(smollm2):
    assert smollm2.label_token_ids([" True", " False"]) == [[3635], [4178]]
    assert all(len(ids) == 1 for ids in smollm2.label_token_ids(["True", "False"]))
    text = "Question: Is the sky blue?\nClaim: The sky is blue.\nI think this claim is"
    prompt = (tuple(smollm2.bos()) + tuple(smollm2.encode(text)),)
    lp = smollm2.label_logprobs([prompt], [" True", " False", "True", " True."])
    assert np.isfinite(lp).all() and lp[0, 3] < lp[0, 0]  # " True." = " True" then "."


@pytest.mark.slow
@needs_packaged("gemma3-270m")
def test_gemma_label_rule():
    from plural_icm.backends.loading import load_tokenizer, resolve_model
    tok = load_tokenizer(resolve_model("packaged:gemma3-270m", default_cache_dir()))
    assert tok.encode(" True", add_special_tokens=False) == [6288]
    assert tok.encode(" False", add_special_tokens=False) == [8450]
    assert len(tok.encode("True", add_special_tokens=False)) == 1
    assert len(tok.encode("False", add_special_tokens=False)) == 1


def test_segment_cache_lru_counts_bytes_and_evicts_least_recent():
    from plural_icm.backends.prefix_cache import SegmentKVCache, kv_nbytes

    def kv(n):  # one layer, 2 heads, n positions, head dim 4, fp32: 2 * 2 * n * 4 * 4 bytes
        return [(torch.zeros(1, 2, n, 4), torch.zeros(1, 2, n, 4))]

    assert kv_nbytes(kv(3)) == 192
    cache = SegmentKVCache(max_bytes=4 * 64)  # room for 4 positions
    cache.put(b"a", 1, kv(1))
    cache.put(b"b", 2, kv(2))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", 1, kv(1))
    assert (cache.bytes, cache.evictions) == (256, 0)
    cache.put(b"d", 1, kv(1))  # over budget: b (least recent) goes
    assert b"b" not in cache and {b"a", b"c", b"d"} <= set(cache.entries)
    assert cache.evictions == 1 and cache.bytes == 192 and cache.peak_bytes == 256
    cache.put(b"e", 5, kv(5))  # larger than the whole budget: never stored
    assert b"e" not in cache and cache.rejected == 1 and len(cache) == 3
