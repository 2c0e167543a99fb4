"""In-context example labels of the few-shot conditions."""

from __future__ import annotations

import random

import pytest

from plural_icm.conditions.labels import (AccuracyMatchError, accuracy_matched_labels,
                                          gold_labels, icm_labels, label_accuracy, random_labels,
                                          subset_for_n_examples)
from plural_icm.data.records import Claim


def make_claims(n_two: int = 8, n_three: int = 3, persona: str = "P") -> list[Claim]:
    """Survey claims: q0..q{n_two-1} two options, then three-option questions; the gold option
    is option (q index mod n_options)."""
    claims = []
    for q in range(n_two + n_three):
        k = 2 if q < n_two else 3
        for o in range(k):
            claims.append(Claim(item_id=f"{persona}-q{q}-o{o}", persona_id=persona,
                                group_id=f"{persona}-q{q}", question_id=f"q{q}", option_key=str(o),
                                question=f"Question {q}?", claim=f"option {o}",
                                gold=o == q % k, meta={"option_index": o}))
    return claims


def icm_fixture():
    """ICM labels: two-option q0..q4 right, q5..q7 wrong; three-option q8 right, q9, q10 wrong.

    Right claims: 5 groups x 2 + 3 (q8) + 1 each in q9, q10 (the untouched wrong option is
    correctly False) = 15 of 25 -> accuracy 0.6.
    """
    claims = make_claims()
    gold_opt = {f"P-q{q}": q % (2 if q < 8 else 3) for q in range(11)}
    labels = {}
    for c in claims:
        q = int(c.question_id[1:])
        k = 2 if q < 8 else 3
        chosen = gold_opt[c.group_id] if q in (0, 1, 2, 3, 4, 8) else (gold_opt[c.group_id] + 1) % k
        labels[c.item_id] = int(c.option_key) == chosen
    return claims, labels


def n_changed(a, b):
    return sum(a[k] != b[k] for k in a)


def assert_exactly_one(claims, labels):
    groups = {}
    for c in claims:
        groups.setdefault(c.group_id, []).append(labels[c.item_id])
    assert all(sum(v) == 1 for v in groups.values())


def test_fixture_accuracy_by_hand():
    claims, icm = icm_fixture()
    assert label_accuracy(claims, icm) == pytest.approx(15 / 25)


def test_acc_matched_matches_accuracy_and_lowers_coherence():
    claims, icm = icm_fixture()

    def coherence(labels):  # fewer changes from ICM = more coherent
        return -float(n_changed(labels, icm))

    perts = accuracy_matched_labels(claims, icm, coherence, n_perturbations=5, seed=1)
    assert len(perts) == 5
    for p in perts:
        assert set(p.labels) == set(icm)
        assert abs(p.accuracy - 0.6) <= 0.005 and p.accuracy == pytest.approx(0.6)
        assert label_accuracy(claims, p.labels) == pytest.approx(p.accuracy)
        assert p.coherence < p.reference_coherence == 0.0
        assert p.n_changed == n_changed(p.labels, icm) > 0
        assert p.reference_accuracy == pytest.approx(0.6) and p.tries >= 1
        assert_exactly_one(claims, p.labels)  # group structure respected
    assert len({tuple(sorted(p.labels.items())) for p in perts}) == 5  # distinct
    again = accuracy_matched_labels(claims, icm, coherence, n_perturbations=5, seed=1)
    assert [p.labels for p in again] == [p.labels for p in perts]  # seeded


def test_acc_matched_adversarial_coherence_only_one_group_helps():
    # Coherence is lower only when q3 (a right group) is changed and q6 (a wrong group) is not;
    # any other change raises it. The search must still find such candidates.
    claims, icm = icm_fixture()
    q3 = [c.item_id for c in claims if c.group_id == "P-q3"]
    q6 = [c.item_id for c in claims if c.group_id == "P-q6"]

    def coherence(labels):
        hit = any(labels[i] != icm[i] for i in q3) and all(labels[i] == icm[i] for i in q6)
        return -1.0 if hit else float(n_changed(labels, icm))

    perts = accuracy_matched_labels(claims, icm, coherence, n_perturbations=3, seed=0)
    for p in perts:
        assert p.coherence == -1.0 and p.accuracy == pytest.approx(0.6)
        assert any(p.labels[i] != icm[i] for i in q3)


def test_acc_matched_raises_when_coherence_never_lower():
    claims, icm = icm_fixture()
    # every change increases coherence: ICM is a strict minimum
    with pytest.raises(AccuracyMatchError, match="0 of 2"):
        accuracy_matched_labels(claims, icm, lambda l: float(n_changed(l, icm)),
                                n_perturbations=2, max_tries=50)
    # coherence that only measures accuracy: matched candidates tie, never strictly lower
    with pytest.raises(AccuracyMatchError):
        accuracy_matched_labels(claims, icm, lambda l: label_accuracy(claims, l),
                                n_perturbations=1, max_tries=50)
    got = accuracy_matched_labels(claims, icm, lambda l: float(n_changed(l, icm)),
                                  n_perturbations=2, max_tries=20, allow_fewer=True)
    assert got == []


def test_acc_matched_item_swaps_without_group_rule():
    # rule "none" (or incoherent ICM groups): flip one right and one wrong claim.
    claims, icm = icm_fixture()
    perts = accuracy_matched_labels(claims, icm, lambda l: -float(n_changed(l, icm)),
                                    n_perturbations=4, rule="none", seed=3)
    for p in perts:
        assert p.accuracy == pytest.approx(0.6)
        right_to_wrong = sum(p.labels[c.item_id] != icm[c.item_id] and icm[c.item_id] == c.gold
                             for c in claims)
        wrong_to_right = sum(p.labels[c.item_id] != icm[c.item_id] and icm[c.item_id] != c.gold
                             for c in claims)
        assert right_to_wrong == wrong_to_right >= 1


def test_acc_matched_incoherent_icm_groups_use_item_swaps():
    claims, icm = icm_fixture()
    icm = dict(icm)
    icm["P-q5-o0"] = icm["P-q5-o1"] = True  # q5 now has two True claims
    ref = label_accuracy(claims, icm)
    perts = accuracy_matched_labels(claims, icm, lambda l: -float(n_changed(l, icm)),
                                    n_perturbations=5, seed=2)
    assert all(p.accuracy == pytest.approx(ref) for p in perts)


def test_acc_matched_fallback_single_flips_within_tolerance():
    # ICM right on all 250 claims: no swap exists. One flip moves accuracy by 1/250 = .004,
    # within .005, so single flips are used; with 100 claims one flip is .01 -> impossible.
    def flat(n):
        return [Claim(f"i{i}", "P", f"g{i}", f"q{i}", "0", "Q", "c", gold=bool(i % 2))
                for i in range(n)]

    claims = flat(250)
    icm = {c.item_id: c.gold for c in claims}
    perts = accuracy_matched_labels(claims, icm, lambda l: -float(n_changed(l, icm)),
                                    n_perturbations=3, rule="none")
    assert all(p.n_changed == 1 and p.accuracy == pytest.approx(0.996) for p in perts)
    small = flat(100)
    icm_small = {c.item_id: c.gold for c in small}
    with pytest.raises(AccuracyMatchError, match="tolerance"):
        accuracy_matched_labels(small, icm_small, lambda l: 0.0, rule="none")


def test_acc_matched_ignores_claims_outside_icm_labels():
    # the search labelled only part of the claims (q0, q1 dropped): only those items are used
    claims, icm = icm_fixture()
    partial = {k: v for k, v in icm.items() if not k.startswith(("P-q0-", "P-q1-"))}
    perts = accuracy_matched_labels(claims, partial,
                                    lambda l: -float(n_changed(l, partial)), n_perturbations=2)
    assert all(set(p.labels) == set(partial) for p in perts)
    # 21 claims left, 11 right -> 11/21
    assert all(p.accuracy == pytest.approx(11 / 21) for p in perts)


def test_acc_matched_coherence_budget():
    # max_tries bounds the coherence calls (plus one for ICM's own labels); repeats cost none
    claims, icm = icm_fixture()
    calls = []

    def coherence(labels):
        calls.append(1)
        return float(n_changed(labels, icm))

    accuracy_matched_labels(claims, icm, coherence, n_perturbations=1, max_tries=30,
                            allow_fewer=True)
    assert 1 < len(calls) <= 31


def test_gold_random_icm_use_the_same_items():
    claims, icm = icm_fixture()
    # the ICM search covered only part of the training claims
    icm_part = icm_labels(claims, {k: v for k, v in icm.items() if "q10" not in k})
    gold = gold_labels(claims, items=icm_part)
    rnd = random_labels(claims, seed=0, items=icm_part)
    assert list(gold) == list(rnd) == list(icm_part)
    assert all(gold[c.item_id] == c.gold for c in claims if c.item_id in gold)
    with pytest.raises(ValueError, match="not among the claims"):
        gold_labels(claims, items=["nope"])
    with pytest.raises(ValueError, match="another"):
        icm_labels(claims, {"other-persona": True})


def test_random_labels_seeded_order_independent_and_balanced():
    claims = make_claims(300, 100)  # 900 claims
    a = random_labels(claims, seed=5)
    shuffled = list(claims)
    random.Random(0).shuffle(shuffled)
    assert random_labels(shuffled, seed=5) == a
    assert random_labels(claims, seed=6) != a
    assert 0.4 < sum(a.values()) / len(a) < 0.6  # uniform, not one True per group
    coherent = random_labels(claims, seed=5, coherent=True)
    assert_exactly_one(claims, coherent)


def test_gold_requires_gold():
    c = Claim("x", "P", "g", "q", "0", "Q", "c", gold=None)
    with pytest.raises(ValueError, match="no gold"):
        gold_labels([c])


def test_subset_for_n_examples():
    claims = make_claims(8, 3)  # 25 claims
    assert subset_for_n_examples(claims, None, seed=0) == claims
    sub5 = subset_for_n_examples(claims, 5, seed=0)
    sub12 = subset_for_n_examples(claims, 12, seed=0)
    n_by_q = {}
    for c in claims:
        n_by_q[c.question_id] = n_by_q.get(c.question_id, 0) + 1
    for sub, n in ((sub5, 5), (sub12, 12)):
        qs = {c.question_id for c in sub}
        assert len(sub) == sum(n_by_q[q] for q in qs)  # whole questions only
        assert n <= len(sub) < n + 3  # overshoot smaller than the last question's size
    assert {c.item_id for c in sub5} <= {c.item_id for c in sub12}  # nested
    shuffled = list(claims)
    random.Random(1).shuffle(shuffled)
    assert {c.item_id for c in subset_for_n_examples(shuffled, 5, seed=0)} == \
        {c.item_id for c in sub5}  # same for every condition / input order
    assert [c for c in sub5] == [c for c in claims if c in sub5]  # input order kept
    assert subset_for_n_examples(claims, 1000, seed=0) == claims
    with pytest.raises(ValueError):
        subset_for_n_examples(claims, 0, seed=0)


# -- conditions as plug-ins -------------------------------------------------------------------

def test_every_condition_yaml_names_a_registered_condition():
    from pathlib import Path

    from plural_icm.conditions.registry import available, get_condition

    conf = Path(__file__).resolve().parents[1] / "conf" / "condition"
    stems = sorted(p.stem for p in conf.glob("*.yaml"))
    assert stems == available()
    for stem in stems:
        text = (conf / f"{stem}.yaml").read_text()
        assert f"\nname: {stem}\n" in text, stem
        assert get_condition(stem).name == stem


def test_unknown_condition_names_the_registered_ones():
    from plural_icm.conditions.registry import get_condition

    with pytest.raises(ValueError, match=r"unknown condition 'nope'; registered conditions: .*gold.*icm"):
        get_condition("nope")
    with pytest.raises(ValueError, match="unknown condition 'labels'"):
        get_condition("labels")  # a helper module, not a condition


def test_the_pipeline_never_names_a_condition():
    """pipeline/ reaches conditions through the interface only: no condition name in its code,
    except as a config key (the ``icm`` preset group shares a word with the icm condition)
    (collaborative.py is left out: its selection methods ``random``/``confidence``/``active`` are
    another namespace that happens to share the word "random")."""
    import ast
    from pathlib import Path

    from plural_icm.conditions.registry import available

    names = set(available())
    for path in (Path(__file__).resolve().parents[1] / "plural_icm" / "pipeline").glob("*.py"):
        if path.name == "collaborative.py":
            continue
        tree = ast.parse(path.read_text())
        # a config key given to OmegaConf (``OmegaConf.is_missing(cfg, "icm")``: the ICM preset
        # group, which shares the word with the icm condition) is not a condition
        config_keys = {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call)
                       and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                       and n.func.value.id == "OmegaConf" for a in n.args[1:]}
        # ... nor a key of a dict literal that mirrors the config (``{"icm": ...}``)
        config_keys |= {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in config_keys:
                assert node.value not in names, f"{path.name} names the condition {node.value!r}"


def test_the_pipeline_never_compares_backend_or_dataset_names():
    """pipeline/ asks a backend or a dataset what it is (``BackendInfo``, ``LoaderSpec``), never
    which one it is: no comparison (``==``, ``!=``, ``in``) with a registered backend or loader
    name anywhere in its code."""
    import ast
    from pathlib import Path

    from plural_icm.backends.registry import BACKENDS
    from plural_icm.data.registry import LOADERS

    names = set(BACKENDS) | set(LOADERS)
    for path in (Path(__file__).resolve().parents[1] / "plural_icm" / "pipeline").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for operand in [node.left, *node.comparators]:
                    for c in ast.walk(operand):
                        assert not (isinstance(c, ast.Constant) and c.value in names), (
                            f"{path.name}:{node.lineno} compares with the plug-in name {c.value!r}")


# -- bootstrap --------------------------------------------------------------------------------

def _liked_claims(n_q: int = 5) -> list[Claim]:
    """Questions of 2-3 options; option (q mod k) carries ``[+]`` (the fake model's preference)
    and is gold."""
    out = []
    for q in range(n_q):
        k = 2 + q % 2
        for o in range(k):
            liked = o == q % k
            out.append(Claim(item_id=f"P-q{q}-o{o}", persona_id="P", group_id=f"P-q{q}",
                             question_id=f"q{q}", option_key=str(o), question=f"Question {q}?",
                             claim=f"option {o}" + (" [+]" if liked else ""), gold=liked))
    return out


def test_bootstrap_finds_the_preferred_consistent_labels():
    from fake_lm import FakeLM

    from plural_icm.conditions.bootstrap import bootstrap_labels
    from plural_icm.data.records import ConsistencyRule

    claims = _liked_claims()
    lm = FakeLM()
    labels, record = bootstrap_labels(lm, claims, ConsistencyRule.EXACTLY_ONE,
                                      "Question: {question}\nClaim: {claim}\nI think this claim is",
                                      (" True", " False"), passes=3, seed=1)
    assert_exactly_one(claims, labels)
    assert label_accuracy(claims, labels) == 1.0
    assert 1 <= record["passes_run"] <= 3 and len(record["changed_per_pass"]) == record["passes_run"]
    assert lm.calls == record["passes_run"]  # one batch per pass
    # each prompt holds every other claim with a label (leave-one-out), never the target itself
    seen = []

    class Recording(FakeLM):
        def label_logprobs(self, prompts, labels):
            seen.extend(self.tokenizer.decode([t for seg in p for t in seg]) for p in prompts)
            return super().label_logprobs(prompts, labels)

    bootstrap_labels(Recording(), claims, ConsistencyRule.EXACTLY_ONE,
                     "Question: {question}\nClaim: {claim}\nI think this claim is",
                     (" True", " False"), passes=1, seed=1)
    assert len(seen) == len(claims)
    for text, target in zip(seen, claims):
        blocks = text.split("\n\n")
        assert len(blocks) == len(claims)  # n - 1 examples, then the query
        me = f"Question: {target.question}\nClaim: {target.claim}\n"
        assert all(me not in b for b in blocks[:-1])
        assert blocks[-1].endswith(f"Claim: {target.claim}\nI think this claim is")
    with pytest.raises(ValueError, match="condition.passes"):
        bootstrap_labels(lm, claims, ConsistencyRule.EXACTLY_ONE, "{question}", (" T", " F"), 0, 0)


def test_most_preferred_consistent():
    from plural_icm.data.records import ConsistencyRule
    from plural_icm.search.consistency import inconsistencies, most_preferred_consistent

    groups = {"g1": ["a", "b", "c"], "g2": ["d", "e"], "g3": ["f"]}
    margins = {"a": -1.0, "b": -0.2, "c": -3.0, "d": 2.0, "e": 1.0, "f": -0.5}
    got = most_preferred_consistent(groups, margins, ConsistencyRule.EXACTLY_ONE)
    assert got == {"a": False, "b": True, "c": False, "d": True, "e": False, "f": False}
    assert inconsistencies(groups, got, ConsistencyRule.EXACTLY_ONE) == 0
    free = most_preferred_consistent(groups, margins, ConsistencyRule.NONE)
    assert free == {k: v > 0 for k, v in margins.items()}


# -- the paper fork's accuracy-matched constructions ---------------------------------------------
def test_gold_flip_has_icms_number_of_right_labels_and_breaks_groups():
    """gold_flip (the fork's persona datasets): gold labels with as many random claims flipped as
    ICM got wrong: exactly ICM's right count, seeded, different per seed, groups broken freely."""
    from plural_icm.conditions.labels import (FORK_SEEDS, consistency_violations,
                                              gold_flip_labels)
    claims, icm = icm_fixture()
    n_right = round(label_accuracy(claims, icm) * 25)
    sets = [gold_flip_labels(claims, icm, s, salt="P:fold0") for s in FORK_SEEDS]
    for labels in sets:
        assert set(labels) == set(icm)
        assert round(label_accuracy(claims, labels) * 25) == n_right
    assert gold_flip_labels(claims, icm, 42, salt="P:fold0") == sets[0]  # seeded
    assert len({tuple(sorted(k for k, v in s.items() if v)) for s in sets}) == 5
    # random flips break exactly-one groups (ICM's labels here have none broken)
    assert consistency_violations(claims, icm, "exactly_one") == 0
    assert sum(consistency_violations(claims, s, "exactly_one") for s in sets) > 0


def test_fix_break_fixes_every_icm_error_and_breaks_as_many_right_ones():
    from plural_icm.conditions.labels import fix_break_labels

    claims, icm = icm_fixture()
    gold = {c.item_id: c.gold for c in claims}
    labels = fix_break_labels(claims, icm, 42)
    wrong_icm = {k for k in icm if icm[k] != gold[k]}
    wrong_new = {k for k in labels if labels[k] != gold[k]}
    assert len(wrong_new) == len(wrong_icm) == 10 and not (wrong_new & wrong_icm)
    # below 50% ICM accuracy there are not enough right labels to break
    flipped = {k: not v for k, v in icm.items()}
    with pytest.raises(AccuracyMatchError, match="fix_break"):
        fix_break_labels(claims, flipped, 42)


def test_examples_shuffled_by_seed_and_persona_same_order_for_every_set():
    from omegaconf import OmegaConf

    from plural_icm.conditions.base import ConditionLabels, ordered_examples

    claims = make_claims()
    ex = [(c, bool(c.gold)) for c in claims]
    flipped = [(c, not y) for c, y in ex]
    cfg = OmegaConf.create({"seed": 0, "inference": {"example_order": "shuffled"}})
    out = ordered_examples(ConditionLabels(examples=ex, perturbations=[ex, flipped]), cfg, "P")
    ids = [c.item_id for c, _ in out.examples]
    assert sorted(ids) == sorted(c.item_id for c in claims) and ids != [c.item_id for c in claims]
    assert [c.item_id for c, _ in out.perturbations[1]] == ids  # the same permutation
    assert [y for _, y in out.perturbations[1]] == [not y for _, y in out.examples]
    again = ordered_examples(ConditionLabels(examples=list(reversed(ex))), cfg, "P")
    assert [c.item_id for c, _ in again.examples] == ids  # independent of the loader's order
    other = ordered_examples(ConditionLabels(examples=ex), cfg, "Q")
    assert [c.item_id for c, _ in other.examples] != ids
    cfg.inference.example_order = "loader"
    assert ordered_examples(ConditionLabels(examples=ex), cfg, "P").examples == ex


# -- each condition declares its settings and what the planner reads of it --------------------------

def test_each_condition_declares_its_own_settings_matching_the_record_schema():
    """A condition's settings_class holds its keys of ``condition.*`` (frozen, typed); each is a key
    of the schema's ConditionConfig (the record's shape) with the same default, and every key of
    the schema is some condition's."""
    import dataclasses

    from plural_icm.conditions.registry import available, get_condition
    from plural_icm.config.schema import ConditionConfig

    schema = {f.name: f for f in dataclasses.fields(ConditionConfig)}
    declared = set()
    for name in available():
        cls = get_condition(name).settings_class
        assert cls.__dataclass_params__.frozen, name
        for f in dataclasses.fields(cls):
            assert f.name in schema, (name, f.name)
            assert f.default == schema[f.name].default, (name, f.name)
            declared.add(f.name)
    assert set(schema) - {"name"} == declared


def test_a_condition_gets_only_its_own_keys(compose_config):
    from dataclasses import FrozenInstanceError, fields

    from plural_icm.conditions.registry import condition_settings, get_condition
    from plural_icm.config.settings import resolve_settings

    s = resolve_settings(compose_config(["condition=acc_matched", "condition.n_perturbations=2"]))
    cond = get_condition("acc_matched")
    got = condition_settings(cond, s.condition)
    assert {f.name for f in fields(got)} == {"model_role", "n_perturbations", "seeds"}
    assert got.n_perturbations == 2 and got.seeds == [42, 101, 202, 303, 404]
    assert cond.n_example_sets(got, s.dataset) == 2
    with pytest.raises(FrozenInstanceError):
        got.n_perturbations = 3
    boot = condition_settings(get_condition("bootstrap"),
                              resolve_settings(compose_config(["condition=bootstrap"])).condition)
    assert {f.name for f in fields(boot)} == {"model_role", "passes"} and boot.passes == 3


def test_a_condition_that_does_not_declare_its_planner_inputs_is_refused():
    """uses_examples and n_example_sets feed the planner's cost: a condition leaving either to a
    default would be planned wrong without an error, so registration refuses it."""
    from plural_icm.conditions.base import Condition, one_example_set
    from plural_icm.conditions.registry import register

    class NoUses(Condition):
        name = "test_no_uses"
        n_example_sets = one_example_set

    class NoSets(Condition):
        name = "test_no_sets"
        uses_examples = True

    with pytest.raises(TypeError, match="uses_examples"):
        register(NoUses)
    with pytest.raises(TypeError, match="n_example_sets"):
        register(NoSets)

    class BadSettings(Condition):
        name = "test_bad_settings"
        uses_examples = True
        n_example_sets = one_example_set
        settings_class = dict  # not a frozen ConditionSettings dataclass

    with pytest.raises(TypeError, match="frozen"):
        register(BadSettings)


def test_plugins_declare_themselves_where_they_are_defined():
    """Datasets, backends and conditions are found by their own modules' declarations (no table
    lists them): every dataset YAML's loader and every model YAML's backend is registered, and the
    schema's BackendName names exactly the registered backends."""
    from pathlib import Path

    import yaml

    from plural_icm.backends.registry import BACKENDS, backend_info
    from plural_icm.config.schema import BackendName
    from plural_icm.data.registry import LOADERS, loader_spec

    conf = Path(__file__).resolve().parents[1] / "conf"
    assert {m.value for m in BackendName} == set(BACKENDS)
    for path in (conf / "dataset").glob("*.yaml"):
        spec = loader_spec(yaml.safe_load(path.read_text())["loader"])
        assert callable(spec.load) and isinstance(spec.options, type), path.name
    for path in (conf / "model").glob("*.yaml"):
        backend = yaml.safe_load(path.read_text()).get("backend")
        if backend:
            assert backend_info(backend).module.startswith("plural_icm.backends."), path.name
    assert backend_info("vllm").engine_per_process and backend_info("openai").served
    assert LOADERS["gqa"].kfold and not LOADERS["ot"].kfold and LOADERS["ot"].folds is not None
