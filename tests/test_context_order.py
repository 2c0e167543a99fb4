"""``icm.context_order``: the order of the other claims in a leave-one-out context is part of the
objective. The fast engine in the ``published`` order computes the reference engine's scores; two
orders never share a search; the halving layout puts no claim's own group next to its query by
construction."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_packaged
from plural_icm.data.demo import load_demo
from plural_icm.data.records import ConsistencyRule
from plural_icm.search.engine import SearchParams, evaluate_labelling, labelling_scores
from plural_icm.search.context_order import FixedLayout, TreeTailLayout
from plural_icm.search.store import SearchTask

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"
LABELS = (" True", " False")
PAPER = Path(os.environ.get("PLURAL_ICM_GQA_CLAIMS")
             or Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gqa_paper_claims")


def demo_claims(n_questions=8):
    return [c for c in load_demo().claims if c.persona_id == "progressive"][: 2 * n_questions]


def published_vs_reference(backend_spec, claims, labels):
    """(fast engine's scores, reference engine's scores) of ``labels`` in the published order."""
    from plural_icm.backends.hf import HFBackend

    fast_b = HFBackend(str(backend_spec), dtype="float32", prefix_cache=True)
    ref_b = HFBackend(str(backend_spec), dtype="float32", prefix_cache=False)
    fast_p = SearchParams(context_order="published")
    ref_p = SearchParams(context_order="published", memo=False)
    fast = labelling_scores(claims, ConsistencyRule.EXACTLY_ONE, fast_b, fast_p, labels, TEMPLATE, LABELS)
    ref = labelling_scores(claims, ConsistencyRule.EXACTLY_ONE, ref_b, ref_p, labels, TEMPLATE, LABELS)
    assert fast_b.stats.prompt_tokens_cached > 0 and ref_b.stats.prompt_tokens_cached == 0
    return fast, ref, fast_b


def mean_log_odds(scores, labels):
    return float(np.mean([(scores[j][0] - scores[j][1]) * (1 if y else -1) for j, y in labels.items()]))


def test_published_order_in_the_fast_engine_equals_the_reference_engine(tiny_model_dir):
    claims = demo_claims(8)
    gold = {c.item_id: bool(c.gold) for c in claims}
    fast, ref, backend = published_vs_reference(tiny_model_dir, claims, gold)
    assert len(fast) == 16
    assert max(abs(fast[j][k] - ref[j][k]) for j in fast for k in (0, 1)) < 1e-4
    assert abs(mean_log_odds(fast, gold) - mean_log_odds(ref, gold)) < 1e-4
    # The order matters: the halving order scores the same labels differently on this model.
    halving = labelling_scores(claims, ConsistencyRule.EXACTLY_ONE, backend,
                               SearchParams(context_order="halving_tail"), gold, TEMPLATE, LABELS)
    assert max(abs(halving[j][0] - fast[j][0]) for j in fast) > 1e-3


def test_evaluate_labelling_scores_in_the_configured_order(tiny_model_dir):
    from plural_icm.backends.hf import HFBackend

    claims = demo_claims(4)
    labels = {c.item_id: bool(c.gold) for c in claims}
    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    got = {o: evaluate_labelling(claims, ConsistencyRule.EXACTLY_ONE, backend,
                                 SearchParams(context_order=o), labels, TEMPLATE, LABELS)
           for o in ("published", "halving_tail")}
    assert got["published"][2] == got["halving_tail"][2] == 0  # the same labels: same I
    assert abs(got["published"][1] - got["halving_tail"][1]) > 1e-4  # P depends on the order


def _task(order, engine_memo=True):
    claims = demo_claims(2)
    return SearchTask(model="m", dataset="d", fold=0, persona="p", claims=claims,
                      rule=ConsistencyRule.EXACTLY_ONE,
                      params=SearchParams(context_order=order, memo=engine_memo), seed=0,
                      template=TEMPLATE, labels=LABELS, model_identity={"model": "m"})


def test_cost_model_knows_the_published_order():
    from plural_icm.search.cost import cost_mode, full_evaluation_tokens, proposal_tokens

    assert cost_mode("fast", "published") == "published" and cost_mode("fast", "halving_tail") == "fast"
    assert cost_mode("reference", "published") == "reference"
    n, L = 32, 48
    assert (full_evaluation_tokens(n, L, "fast") < full_evaluation_tokens(n, L, "published")
            < full_evaluation_tokens(n, L, "reference"))
    assert proposal_tokens(n, L, "published") < proposal_tokens(n, L, "reference")


def test_two_orders_never_share_a_search():
    assert _task("published").hash() != _task("halving_tail").hash()
    assert _task("published").spec()["params"]["context_order"] == "published"


def test_presets_declare_the_published_order(compose_config):
    for preset in ("paper", "fork"):
        cfg = compose_config([f"icm={preset}"])
        assert cfg.icm.context_order.value == "published", preset
        assert SearchParams.from_settings(cfg.icm).context_order == "published"
    # the CPU demo declares the faster layout under its own name (conf/icm/demo.yaml says why)
    cfg = compose_config(["icm=demo"])
    assert SearchParams.from_settings(cfg.icm).context_order == "halving_tail"
    cfg = compose_config(["icm=paper", "icm.context_order=halving_tail"])
    assert SearchParams.from_settings(cfg.icm).context_order == "halving_tail"
    with pytest.raises(ValueError, match="icm.engine=reference scores the published"):
        SearchParams.from_settings(cfg.icm, engine="reference")
    with pytest.raises(ValueError, match="icm.context_order must be one of"):
        SearchParams(context_order="tree")


def nearest_sibling_rate(layout, group_of) -> float:
    ctx = layout.contexts()
    return float(np.mean([group_of[c[-1]] == group_of[j] for j, c in ctx.items()]))


def test_shuffled_halving_puts_no_group_next_to_its_query_by_construction():
    claims = demo_claims(8)  # loader order: each question's two claims side by side
    ids = [c.item_id for c in claims]
    group_of = {c.item_id: c.group_id for c in claims}
    # Unshuffled, halving makes every claim's own group-mate its last example: the bias.
    assert nearest_sibling_rate(TreeTailLayout(slots=list(ids)), group_of) == 1.0
    # Published: only the last group's claims see their group-mate last (2 of 16).
    assert nearest_sibling_rate(FixedLayout(order=list(ids)), group_of) == 2 / 16
    # Shuffled per seed: by chance, at about 1 / (n - 1) of the claims, never systematically.
    rates = [nearest_sibling_rate(TreeTailLayout(max_tail=8, seed=s).with_changes(ids, set(ids))
                                  .compacted(), group_of) for s in range(200)]
    assert np.mean(rates) == pytest.approx(1 / 15, abs=0.03)
    assert max(rates) < 1.0 and np.median(rates) <= 2 / 16
    # Deterministic per seed (a resumed search rebuilds the same tree); rebuilds reshuffle.
    a = TreeTailLayout(seed=3).with_changes(ids, set(ids)).compacted()
    assert a.slots == TreeTailLayout(seed=3).with_changes(ids, set(ids)).compacted().slots
    assert a.compacted().slots != a.slots and sorted(a.compacted().slots) == sorted(ids)


def test_search_summary_records_order_and_nearest_examples(tiny_model_dir):
    from plural_icm.backends.hf import HFBackend
    from plural_icm.search.engine import ICMSearch, run_searches
    from plural_icm.search.prompts import ClaimRenderer

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    claims = demo_claims(6)
    out = {}
    for order in ("published", "halving_tail"):
        p = SearchParams(alpha=50, num_seed=4, max_iters=30, patience=None, max_tail=4,
                         context_order=order)
        s = ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, ClaimRenderer(backend, TEMPLATE, LABELS),
                      p, seed=2)
        out[order] = run_searches([s], backend, list(LABELS))[0].summary()
    for order, summ in out.items():
        assert summ["context_order"] == order
        ne = summ["nearest_example"]
        assert ne["queries"] > 0 and 0 <= ne["same_group"] <= ne["queries"]
    assert out["published"]["nearest_example"]["recently_changed"] == 0  # no tail
    assert out["halving_tail"]["nearest_example"]["recently_changed"] > 0


@pytest.mark.data
@pytest.mark.slow
@needs_packaged("smollm2")
def test_published_order_equals_reference_on_paper_gqa_claims():
    """The authors' GQA claims (Britain, held-out fold 0, the first 16 claims of its first training
    part) with the packaged SmolLM2: P of the gold labels, fast engine vs reference, to 1e-4."""
    from plural_icm.data.registry import load_claimset
    from plural_icm.search.units import search_sets
    from hydra import compose, initialize_config_dir

    from plural_icm.config.schema import register_configs

    if not PAPER.is_dir():
        pytest.skip(f"no research copy at {PAPER}")
    register_configs()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
        cfg = compose("config", overrides=["dataset=gqa_claims", f"dataset.path={PAPER}"])
    cs = load_claimset(cfg.dataset)
    train, _ = cs.split(0, "Britain")
    (_, part), *_ = search_sets(train, cs.folds, "part")
    claims = part[:16]
    gold = {c.item_id: bool(c.gold) for c in claims}
    fast, ref, _ = published_vs_reference("packaged:smollm2", claims, gold)
    p_fast, p_ref = mean_log_odds(fast, gold), mean_log_odds(ref, gold)
    print(f"P(gold) published: fast engine {p_fast:.6f}, reference {p_ref:.6f}")
    assert abs(p_fast - p_ref) < 1e-4


def test_order_benchmark_cell_reports_both_orders_and_progress(tiny_model_dir, capsys):
    """``python -m plural_icm.bench.order``'s unit of work on the tiny model: both orders' searches
    (same seeds), P of gold/random/ICM labels under each order, agreement, and a progress line with
    rate and time left while the searches run."""
    from plural_icm.backends.hf import HFBackend
    from plural_icm.bench import order as bench

    claims = demo_claims(4)
    backend = HFBackend(str(tiny_model_dir), dtype="float32", prefix_cache=True)
    out = bench.run_cell(backend, claims, seeds=[0, 1], max_iters=2, prog=bench.Progress(6))
    gold = {c.item_id: bool(c.gold) for c in claims}
    published = labelling_scores(claims, ConsistencyRule.EXACTLY_ONE, backend,
                                 SearchParams(context_order="published"), gold, TEMPLATE, LABELS)
    assert out["orders"]["published"]["P_gold"] == pytest.approx(mean_log_odds(published, gold), abs=1e-6)
    assert out["orders"]["published"]["P_gold"] != pytest.approx(out["orders"]["halving_tail"]["P_gold"])
    for order in bench.ORDERS:
        o = out["orders"][order]
        assert len(o["labels"]) == len(o["accuracy"]) == 2 and all(0 <= a <= 1 for a in o["accuracy"])
    assert len(out["agreement"]) == 2 and all(0 <= a <= 1 for a in out["agreement"])
    printed = capsys.readouterr().out
    assert "2 searches, published: 4/4 iterations" in printed and "min left" in printed
    assert "| model |" in bench.table([{"model": "tiny", "persona": "progressive", "unit": "part", **out}])


def test_repair_benchmark_runs_both_rules_from_the_same_seeds(tiny_model_dir, capsys):
    """``python -m plural_icm.bench.repair``'s unit of work on the tiny model: both repair rules'
    searches in the published order from the same seeds, their agreement, the paired accuracy
    difference and a table; each search's parameters carry its rule."""
    from plural_icm.backends.hf import HFBackend
    from plural_icm.bench import repair as bench

    assert bench.RULES == ("improve", "first")
    assert bench.rule_params("first", 5).repair_rule == "first"
    assert bench.rule_params("first", 5).context_order == "published"
    claims = demo_claims(4)
    backend = HFBackend(str(tiny_model_dir), dtype="float32", prefix_cache=True)
    out = bench.run_rules(backend, claims, seeds=[0, 1], max_iters=3, prog=bench.Progress(2))
    for rule in bench.RULES:
        o = out["rules"][rule]
        assert len(o["labels"]) == len(o["U"]) == len(o["I"]) == 2
        assert all(0 <= a <= 1 for a in o["accuracy"])
    acc = out["rules"]
    assert out["accuracy_difference"] == pytest.approx(
        [x - y for x, y in zip(acc["improve"]["accuracy"], acc["first"]["accuracy"])])
    assert len(out["agreement"]) == 2 and all(0 <= a <= 1 for a in out["agreement"])
    printed = capsys.readouterr().out
    assert "2 searches, repair_rule=first: 6/6 iterations" in printed
    table = bench.table([{"model": "tiny", "persona": "progressive", **out}])
    assert f"| tiny | progressive | {len(claims)} | published | first |" in table
