"""The search benchmark measures real proposals for both engines and reports their ratios."""

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
