"""Logic of the ICM search on a deterministic fake model (fast, no torch)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fake_lm import FakeLM
from plural_icm.backends.base import ContextLengthError
from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.consistency import group_inconsistencies, inconsistencies, repair_options
from plural_icm.search.engine import ICMSearch, SearchInterrupted, SearchParams, run_searches
from plural_icm.search.context_order import FixedLayout, TreeTailLayout
from plural_icm.search.prompts import ClaimRenderer
from plural_icm.search.schedule import temperature

TEMPLATE = "Question: {question}\nClaim: {claim}\nI think this claim is"


def make_claims(n_questions=8, n_options=2):
    claims = []
    for q in range(n_questions):
        pref = q % n_options
        for o in range(n_options):
            mark = " [+]" if o == pref else ""
            claims.append(Claim(item_id=f"q{q}o{o}", persona_id="p", group_id=f"q{q}",
                                question_id=f"q{q}", option_key=str(o), question=f"question {q}?",
                                claim=f"option {o} of {q}{mark}", gold=(o == pref)))
    return claims


def make_search(claims, backend, params, seed=0, **kw):
    renderer = ClaimRenderer(backend, TEMPLATE, (" True", " False"))
    return ICMSearch(claims, ConsistencyRule.EXACTLY_ONE, renderer, params, seed=seed,
                     max_context=backend.max_context, **kw)


def run_one(search, backend):
    return run_searches([search], backend, [" True", " False"])[0]


def test_schedules():
    assert temperature(0, "log", 10, 0.01, 0.99) == 10
    assert temperature(3000, "log", 10, 0.01, 0.99) == pytest.approx(10 / (1 + 2 * 8.00670085), rel=1e-6)
    assert temperature(5, "exp", 10, 0.01, 0.5) == pytest.approx(10 * 0.5 ** 5)
    assert temperature(10_000, "exp", 10, 0.01, 0.5) == 0.01


def test_inconsistency_counting_and_repair():
    members = ["a", "b", "c"]
    rule = ConsistencyRule.EXACTLY_ONE
    assert group_inconsistencies(members, {"a": True, "b": True, "c": True}, rule) == 3
    assert group_inconsistencies(members, {"a": False, "b": False}, rule) == 0  # c unlabelled
    assert group_inconsistencies(members, {"a": False, "b": False, "c": False}, rule) == 1
    assert inconsistencies({"g": members}, {"a": True, "c": False}, rule) == 0
    opts = repair_options(members, {"a": True, "b": True}, rule, fixed={})
    assert {"a": True, "b": False} in opts and {"a": False, "b": True} in opts and len(opts) == 2
    # never an option that changes a fixed label
    assert repair_options(members, {"a": True, "b": True}, rule, fixed={"a": True}) == [{"a": True, "b": False}]
    assert group_inconsistencies(members, {"a": True, "b": True}, ConsistencyRule.NONE) == 0


def test_tree_tail_contexts_are_leave_one_out():
    lay = TreeTailLayout(slots=list(range(10)), tail=[10, 11], max_tail=4)
    ctx = lay.contexts()
    for j, c in ctx.items():
        assert sorted(c) == [i for i in range(12) if i != j]
        assert c[-2:] == [t for t in [10, 11] if t != j][-2:] or j in (10, 11)
    # a change moves the claim to the tail; empty slot keeps split points
    lay2 = lay.with_changes([3], present=set(range(12)))
    assert lay2.slots[3] is None and lay2.tail[-1] == 3 and len(lay2.slots) == 10
    for j, c in lay2.contexts().items():
        assert sorted(c) == [i for i in range(12) if i != j]
    # overflow merges tail into the tree
    lay3 = lay2.with_changes([4, 5], present=set(range(12)))
    assert len(lay3.tail) <= 4 and sorted(lay3.items()) == list(range(12))


def test_search_finds_coherent_labels():
    backend = FakeLM()
    claims = make_claims(8)
    params = SearchParams(alpha=5, num_seed=4, max_iters=200, patience=40, schedule="exp",
                          decay=0.9, initial_temp=2)
    res = run_one(make_search(claims, backend, params), backend)
    assert len(res.labels) == len(claims)
    assert res.I == 0
    assert res.label_accuracy == 1.0
    assert res.trajectory and res.trajectory[-1]["n_labelled"] == len(claims)
    assert all(0.5 <= c <= 1 for c in res.confidence.values())


def test_layouts_take_the_same_decisions_on_an_order_free_model():
    claims = make_claims(6)
    params = SearchParams(alpha=5, num_seed=4, max_iters=80, patience=1000, context_order="halving_tail")
    a_backend = FakeLM()
    a = run_one(make_search(claims, a_backend, params), a_backend)
    fixed = SearchParams(**{**params.__dict__, "context_order": "published", "memo": False})
    b_backend = FakeLM()
    b = run_one(make_search(claims, b_backend, fixed), b_backend)
    assert a.labels == b.labels
    assert [r["accepted"] for r in a.trajectory] == [r["accepted"] for r in b.trajectory]


def test_fixed_labels_are_never_changed():
    backend = FakeLM()
    claims = make_claims(5)
    # Force the wrong option of q0: the search must keep it.
    fixed = {"q0o1": True}
    params = SearchParams(alpha=5, num_seed=2, max_iters=120, patience=30)
    res = run_one(make_search(claims, backend, params, fixed=fixed), backend)
    assert res.labels["q0o1"] is True
    assert res.labels["q0o0"] is False  # the repair adapts the group-mate instead


def test_interrupted_search_resumes_to_the_same_labels(tmp_path):
    claims = make_claims(8)
    params = SearchParams(alpha=5, num_seed=4, max_iters=90, patience=1000, checkpoint_every=5)
    ref_backend = FakeLM()
    ref = run_one(make_search(claims, ref_backend, params, seed=3), ref_backend)

    saved = {}
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 37

    backend = FakeLM()
    s = make_search(claims, backend, params, seed=3,
                    checkpoint=lambda st: saved.update(json.loads(json.dumps(st))),
                    should_stop=should_stop)
    with pytest.raises(SearchInterrupted):
        run_one(s, backend)
    assert saved["iteration"] == 37
    backend2 = FakeLM()
    resumed = run_one(make_search(claims, backend2, params, seed=3, resume_state=saved), backend2)
    assert resumed.labels == ref.labels
    assert resumed.trajectory == ref.trajectory


def test_context_too_long_fails_before_any_work():
    backend = FakeLM(max_context=20)
    with pytest.raises(ContextLengthError, match="max_search_claims"):
        make_search(make_claims(8), backend, SearchParams())
    assert backend.calls == 0


def test_the_other_inconsistent_groups_move_to_the_tail_with_a_proposal():
    """The repair tries to relabel every inconsistent group; their tree claims go to the tail with
    the proposal (cheap to relabel there), unless fixed, already there, or too many to fit."""
    claims = make_claims(4)
    params = SearchParams(alpha=5, num_seed=2, max_iters=1, max_tail=4)
    backend = FakeLM()
    search = make_search(claims, backend, params, fixed={"q2o0": True})
    proposal = {"q0o0": True, "q0o1": False, "q1o0": True, "q1o1": True,
                "q2o0": True, "q2o1": True, "q3o0": False, "q3o1": True}
    layout = TreeTailLayout(slots=[c.item_id for c in claims if c.item_id != "q3o1"], tail=["q3o1"],
                            max_tail=4)
    got = search._repair_targets(proposal, layout, exclude="q0", room=3)
    assert got == ["q1o0", "q1o1", "q2o1"]  # q2o0 is fixed; q3 is consistent
    assert search._repair_targets(proposal, layout, exclude="q0", room=2) == []  # would not fit
    assert search._repair_targets(proposal, layout, exclude="q1", room=8) == ["q2o1"]
    assert search._repair_targets(proposal, FixedLayout(order=list(proposal)), exclude="q0", room=8) == []


def test_a_search_resumed_from_its_stopping_checkpoint_stops_there():
    """A job killed after the checkpoint of the iteration that triggered the early stop, but
    before COMPLETE.json, resumes to the same result: no extra iterations."""
    claims = make_claims(6)
    params = SearchParams(alpha=5, num_seed=4, max_iters=400, patience=15, checkpoint_every=1,
                          schedule="exp", decay=0.9, initial_temp=2)
    ref_backend = FakeLM()
    checkpoints = []
    ref = run_one(make_search(claims, ref_backend, params, seed=1,
                              checkpoint=lambda st: checkpoints.append(json.loads(json.dumps(st)))),
                  ref_backend)
    assert ref.iterations < params.max_iters  # it did stop early
    last = checkpoints[-1]
    assert last["iteration"] == ref.iterations  # the checkpoint of the stopping iteration
    backend = FakeLM()
    resumed = run_one(make_search(claims, backend, params, seed=1, resume_state=last), backend)
    assert resumed.iterations == ref.iterations
    assert resumed.labels == ref.labels
    assert resumed.trajectory == ref.trajectory


def test_patience_none_runs_the_whole_budget():
    claims = make_claims(4)
    params = SearchParams(alpha=5, num_seed=4, max_iters=60, patience=None)
    backend = FakeLM()
    res = run_one(make_search(claims, backend, params), backend)
    assert res.iterations == 60


# -- the published protocol's options ----------------------------------------------------------

def _start_only(claims, seed, **kw):
    """A search of zero iterations with every claim seeded: its result is the start state."""
    params = SearchParams(alpha=5, num_seed=len(claims), max_iters=0, **kw)
    backend = FakeLM()
    return run_one(make_search(claims, backend, params, seed=seed), backend)


def test_seed_labels_are_repaired_before_the_first_iteration():
    claims = make_claims(3)
    # seeds whose balanced random labels put two Trues in one group (an inconsistency)
    seeds = [s for s in range(40) if _start_only(claims, s, repair_seed_labels=False).I > 0]
    assert seeds, "no seed drew inconsistent seed labels"
    for s in seeds[:3]:
        assert _start_only(claims, s, repair_seed_labels=True).I == 0


def test_gold_seed_labels_and_their_refusal_without_gold():
    claims = make_claims(3)
    res = _start_only(claims, 0, seed_labels="gold", repair_seed_labels=False)
    assert res.labels == {c.item_id: c.gold for c in claims}
    claims[2] = Claim(**{**claims[2].__dict__, "gold": None})
    with pytest.raises(ValueError, match="seed_labels=gold needs gold labels"):
        _start_only(claims, 0, seed_labels="gold")


def test_the_paper_text_schedule_is_indexed_by_iteration():
    import math

    claims = make_claims(4)
    params = SearchParams(alpha=5, num_seed=2, max_iters=30, patience=None, schedule="log",
                          log_schedule_constant=0.99, temperature_index="iteration")
    backend = FakeLM()
    res = run_one(make_search(claims, backend, params), backend)
    for row in res.trajectory:  # iteration n (1-based): T0 / (1 + 0.99 ln n)
        assert row["temperature"] == pytest.approx(10 / (1 + 0.99 * math.log(row["iteration"])))
    assert temperature(5, "log", 10, 0.01, 0.99) == pytest.approx(10 / (1 + 2 * math.log(6)))


def test_reference_order_is_by_uid_grouped_by_consistency_group():
    claims = make_claims(3)
    shuffled = [claims[k] for k in (0, 2, 4, 1, 3, 5)]  # q0o0 q1o0 q2o0 q0o1 q1o1 q2o1
    backend = FakeLM()
    s = make_search(shuffled, backend, SearchParams(context_order="published", memo=False))
    assert s.published_order() == ["q0o0", "q0o1", "q1o0", "q1o1", "q2o0", "q2o1"]
    lay = s._layout_new().with_changes(["q2o0", "q0o0"], {"q2o0", "q0o0"})
    assert lay.order == ["q0o0", "q2o0"]
    lay = lay.with_changes(["q1o1"], {"q2o0", "q0o0", "q1o1"})  # a new claim at its uid position
    assert lay.order == ["q0o0", "q1o1", "q2o0"]
    assert lay.contexts()["q2o0"] == ["q0o0", "q1o1"]
    from plural_icm.search.context_order import layout_from_dict
    assert layout_from_dict(lay.to_dict()) == lay
    assert FixedLayout(order=["b"]).with_changes(["a"], {"a", "b"}).order == ["b", "a"]  # no canonical: appended


def test_claims_the_budget_never_reached_are_in_U_P_I_and_warned(caplog):
    from plural_icm.search.consistency import inconsistencies as count

    claims = make_claims(8)
    params = SearchParams(alpha=5, num_seed=2, max_iters=3, patience=None)
    backend = FakeLM()
    search = make_search(claims, backend, params)
    with caplog.at_level("WARNING"):
        res = run_one(search, backend)
    assert res.n_predicted_unlabelled > 0
    summ = res.summary()
    assert summ["searched"]["n_labelled"] == len(claims) - res.n_predicted_unlabelled
    assert "never reached" in summ["warning"] and "never reached" in caplog.text
    assert res.I == count(search.groups, res.labels, search.rule)  # I of all final labels
    assert res.U == pytest.approx(5 * res.P - res.I)
    b2 = FakeLM()
    done = run_one(make_search(make_claims(2), b2, SearchParams(alpha=5, num_seed=4, max_iters=40)), b2)
    assert done.n_predicted_unlabelled == 0 and "warning" not in done.summary()



class _AlwaysTrue(FakeLM):
    """Every claim: ln P(True) - ln P(False) = 5, whatever its context."""

    def label_logprobs(self, prompts, labels):
        self.calls += 1
        return np.tile([-math.log1p(math.exp(-5.0)), -math.log1p(math.exp(5.0))], (len(prompts), 1))


def test_repair_rule_first_adopts_a_repair_that_lowers_u():
    """icm.repair_rule=first (the paper's fork) adopts an inconsistent group's best repair even
    when U drops; the default (improve) keeps the unrepaired labels then. A model that says True
    to everything: relabelling one of two True options False costs alpha * 10 / n in P, more than
    the one violation it removes."""
    from plural_icm.search.engine import drive

    claims = make_claims(n_questions=2)
    labels = {"q0o0": True, "q0o1": True, "q1o0": True, "q1o1": False}
    out = {}
    for rule in ("improve", "first"):
        backend = _AlwaysTrue()
        search = make_search(claims, backend, SearchParams(alpha=50, repair_rule=rule))
        order = [c.item_id for c in claims]
        layout = search._layout_new().with_changes(order, set(order)).compacted()
        got, scores = drive(search._repair(dict(labels), layout, layout.contexts()), backend,
                            [" True", " False"])
        out[rule] = (got, search.utility(got, scores))
    assert out["improve"][0] == labels and out["improve"][1][2] == 1
    assert sum(out["first"][0][i] for i in ("q0o0", "q0o1")) == 1 and out["first"][1][2] == 0
    assert out["first"][1][0] < out["improve"][1][0]  # U fell: adopted unconditionally
