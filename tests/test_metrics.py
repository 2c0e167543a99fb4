"""Metrics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from plural_icm.data.records import Claim
from plural_icm.metrics.aggregate import aggregate_folds, cell_metrics, representation_summary
from plural_icm.metrics.calibration import (claim_level_ece, expected_calibration_error,
                                            question_level_ece)
from plural_icm.metrics.classification import (accuracy_with_se, claim_accuracy, mean_with_se,
                                               p_true_from_logprobs, predictions_frame,
                                               question_accuracy, question_predictions,
                                               stable_fraction, with_distributions)
from plural_icm.metrics.distribution import js_distance, mean_js_distance
from plural_icm.metrics.significance import (mcnemar_between, mcnemar_exact,
                                             paired_question_correctness, paired_t_test)

# The hand table. Persona A: q1, q2 two options, q3 three options; persona B: q1 two options.
#
#  persona q  opt p_true gold | claim: pred conf  ok | group: argmax gold ok  stable
#  A      q1  0   0.85   T    |        T    0.85  y  | 0      0    y   yes (one > .5)
#  A      q1  1   0.30   F    |        F    0.70  y  |
#  A      q2  0   0.55   F    |        T    0.55  n  | 1      1    y   no  (both > .5)
#  A      q2  1   0.70   T    |        T    0.70  y  |
#  A      q3  0   0.10   F    |        F    0.90  y  | 2      1    n   -   (3 options)
#  A      q3  1   0.45   T    |        F    0.55  n  |
#  A      q3  2   0.62   F    |        T    0.62  n  |
#  B      q1  0   0.05   T    |        F    0.95  n  | 1      0    n   no  (none > .5)
#  B      q1  1   0.45   F    |        F    0.55  y  |
ROWS = [
    ("A", "q1", 0, 0.85, True), ("A", "q1", 1, 0.30, False),
    ("A", "q2", 0, 0.55, False), ("A", "q2", 1, 0.70, True),
    ("A", "q3", 0, 0.10, False), ("A", "q3", 1, 0.45, True), ("A", "q3", 2, 0.62, False),
    ("B", "q1", 0, 0.05, True), ("B", "q1", 1, 0.45, False),
]
# Observed distributions: A q2 [0.56, 0.44] (model: [0.44, 0.56]); B q1 [0.1, 0.9] equals the
# model's [0.05, 0.45] / 0.5; A q1 and A q3 have none.
DIST = {("A", "q2"): [0.56, 0.44], ("B", "q1"): [0.1, 0.9]}

# JS(A q2): m = [.5, .5]; KL(p||m) = .44 log2(.88) + .56 log2(1.12)
#   = .44 * -0.184425 + .56 * 0.163499 = 0.0104124 = KL(q||m) (mirror image), so
#   JSD = 0.0104124 bits and the distance is sqrt(0.0104124) = 0.102042.
JS_A_Q2 = 0.102042


def table(with_dist: bool = True) -> pd.DataFrame:
    rows = []
    for pid, q, opt, p, gold in ROWS:
        rows.append({"persona_id": pid, "group_id": f"{pid}-{q}", "question_id": q,
                     "option_index": opt, "p_true": p, "gold": gold,
                     "distribution": DIST.get((pid, q)) if with_dist else None})
    return pd.DataFrame(rows)


def test_question_predictions_hand_table():
    qdf = question_predictions(table()).set_index("group_id")
    assert qdf.loc["A-q1", "predicted_option"] == 0 and qdf.loc["A-q1", "correct"]
    assert qdf.loc["A-q2", "predicted_option"] == 1 and qdf.loc["A-q2", "correct"]
    assert qdf.loc["A-q3", "predicted_option"] == 2 and qdf.loc["A-q3", "gold_option"] == 1
    assert not qdf.loc["A-q3", "correct"]
    assert qdf.loc["B-q1", "predicted_option"] == 1 and not qdf.loc["B-q1", "correct"]
    # p_option of A q3 = [.10, .45, .62] / 1.17
    assert qdf.loc["A-q3", "p_option"] == pytest.approx([0.10 / 1.17, 0.45 / 1.17, 0.62 / 1.17])
    assert qdf.loc["A-q1", "stable"] is True and qdf.loc["A-q2", "stable"] is False
    assert qdf.loc["B-q1", "stable"] is False and qdf.loc["A-q3", "stable"] is None


def test_question_accuracy_and_se():
    qdf = question_predictions(table())
    # 2 of 4 right; SE = sqrt(.5 * .5 / 4) = 0.25
    assert question_accuracy(qdf) == pytest.approx((0.5, 0.25, 4))
    # persona A: 2/3, SE = sqrt((2/3)(1/3)/3) = sqrt(2/27) = 0.272166
    acc, se, n = question_accuracy(qdf[qdf.persona_id == "A"])
    assert (acc, n) == (pytest.approx(2 / 3), 3) and se == pytest.approx(0.272166, abs=1e-6)


def test_claim_accuracy():
    # right: rows 1, 2, 4, 5, 9 -> 5/9; SE = sqrt((5/9)(4/9)/9) = 0.165635
    acc, se, n = claim_accuracy(table())
    assert (acc, n) == (pytest.approx(5 / 9), 9) and se == pytest.approx(0.165635, abs=1e-6)


def test_accuracy_with_se_and_mean_with_se():
    # 3 of 4: p = .75, SE = sqrt(.75 * .25 / 4) = 0.216506; None entries dropped
    assert accuracy_with_se([1, 1, 0, 1, None]) == pytest.approx((0.75, 0.216506, 4), abs=1e-6)
    assert accuracy_with_se([]) == (None, None, 0)
    # [.6, .8]: mean .7, sd (ddof 1) = .141421, SE = .141421 / sqrt(2) = .1
    assert mean_with_se([0.6, 0.8]) == pytest.approx((0.7, 0.1, 2))
    assert mean_with_se([0.6]) == (0.6, None, 1)


def test_stable_fraction():
    # two-option groups: A q1 stable, A q2 not, B q1 not -> 1/3
    assert stable_fraction(question_predictions(table())) == (pytest.approx(1 / 3), 2 + 1)


def test_claim_level_ece_hand():
    # 15 bins of width 1/15 (edges .533, .600, .667, .733, .800, .867, .933, 1):
    #   (.533, .600]: conf .55, .55, .55; right 1 of 3 -> 3/9 * |1/3 - .55| = .65/9
    #   (.600, .667]: conf .62, wrong            -> 1/9 * .62
    #   (.667, .733]: conf .70, .70, both right  -> 2/9 * .30
    #   (.800, .867]: conf .85, right            -> 1/9 * .15
    #   (.867, .933]: conf .90, right            -> 1/9 * .10
    #   (.933, 1.00]: conf .95, wrong            -> 1/9 * .95
    # ECE = (.65 + .62 + .60 + .15 + .10 + .95) / 9 = 3.07 / 9 = 0.341111
    assert claim_level_ece(table()) == pytest.approx(3.07 / 9)


def test_question_level_ece_hand():
    # confidences max(p_option): A q1 .85/1.15 = .739130 right; A q2 .70/1.25 = .56 right;
    # A q3 .62/1.17 = .529915 wrong; B q1 .45/.50 = .9 wrong -- each alone in its bin:
    # ECE = (.260870 + .44 + .529915 + .9) / 4 = 0.532696
    assert question_level_ece(question_predictions(table())) == pytest.approx(0.532696, abs=1e-6)


def test_ece_bins_and_edges():
    # a perfectly calibrated bin: conf .75 with 3 of 4 right -> 0
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    # .8 is the upper edge of bin (.733, .8]: it shares the bin with .75 -> mean conf .775,
    # accuracy 1/2 -> ECE = .275. If .8 fell in the next bin: (.25 + .8) / 2 = .525.
    assert expected_calibration_error([0.75, 0.8], [1, 0]) == pytest.approx(0.275)
    assert expected_calibration_error([], []) is None


def test_js_distance_hand():
    # p = [1, 0], q = [.5, .5]: m = [.75, .25]; KL(p||m) = log2(4/3) = .415037;
    # KL(q||m) = .5 log2(2/3) + .5 log2(2) = .207519; JSD = .311278; distance sqrt = .557923
    assert js_distance([1, 0], [0.5, 0.5]) == pytest.approx(0.557923, abs=1e-6)
    # inputs are renormalised first
    assert js_distance([0.9, 0.0], [0.3, 0.3]) == pytest.approx(0.557923, abs=1e-6)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: base 2 bound
    assert js_distance([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    assert js_distance([0.5, 0.5], [0, 0]) is None
    assert js_distance([0.44, 0.56], [0.56, 0.44]) == pytest.approx(JS_A_Q2, abs=1e-5)


def test_mean_js_in_table_and_missing():
    qdf = question_predictions(table())
    # A q2 .102042, B q1 0 (identical), others without distribution -> mean .051021 over 2
    mean, n = mean_js_distance(qdf)
    assert n == 2 and mean == pytest.approx(JS_A_Q2 / 2, abs=1e-5)
    assert mean_js_distance(question_predictions(table(with_dist=False))) == (None, 0)


def test_js_restricted_options_renormalised():
    # the group covers options 0 and 2 of a 3-option distribution [.5, .2, .3]:
    # observed -> [.5, .3] / .8 = [.625, .375]; model [.5, .3] / .8 -> identical -> 0
    df = pd.DataFrame([
        {"persona_id": "A", "group_id": "g", "option_index": 0, "p_true": 0.5, "gold": True,
         "distribution": [0.5, 0.2, 0.3]},
        {"persona_id": "A", "group_id": "g", "option_index": 2, "p_true": 0.3, "gold": False,
         "distribution": [0.5, 0.2, 0.3]},
    ])
    assert question_predictions(df)["js_distance"].iloc[0] == pytest.approx(0.0, abs=1e-7)


def test_preference_pairs_use_option_key():
    # PT: claims "1>2" and "2>1" of a pair; argmax of p_true is the predicted preference.
    # pair a: [.7, .4], gold 1>2 -> right; pair b: [.30, .35], gold 1>2 -> predicts 2>1, wrong.
    df = pd.DataFrame([
        {"persona_id": "DCF", "group_id": "a", "option_key": "1>2", "p_true": 0.7, "gold": True},
        {"persona_id": "DCF", "group_id": "a", "option_key": "2>1", "p_true": 0.4, "gold": False},
        {"persona_id": "DCF", "group_id": "b", "option_key": "1>2", "p_true": 0.30, "gold": True},
        {"persona_id": "DCF", "group_id": "b", "option_key": "2>1", "p_true": 0.35, "gold": False},
    ])
    qdf = question_predictions(df)
    assert list(qdf["predicted_option"]) == ["1>2", "2>1"]
    assert question_accuracy(qdf)[0] == pytest.approx(0.5)


def test_ties_go_to_lowest_option_and_duplicates_fail():
    df = pd.DataFrame([{"persona_id": "A", "group_id": "g", "option_index": i, "p_true": 0.5,
                        "gold": i == 1} for i in (1, 0)])
    assert question_predictions(df)["predicted_option"].iloc[0] == 0
    dup = pd.DataFrame([{"persona_id": "A", "group_id": "g", "option_index": 0, "p_true": 0.5,
                         "gold": True}] * 2)
    with pytest.raises(ValueError, match="several claims"):
        question_predictions(dup)


def test_p_true_from_logprobs():
    # ln .8 vs ln .2 -> .8 / (.8 + .2) = .8 ; unnormalised ln .4 vs ln .1 -> also .8
    assert p_true_from_logprobs(math.log(0.4), math.log(0.1)) == pytest.approx(0.8)
    assert p_true_from_logprobs(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.exp(-1)))


def test_predictions_frame_from_claims():
    claims = [Claim(f"i{o}", "A", "g", "q", str(o), "Q?", "c", gold=o == 0,
                    meta={"option_index": o, "distribution": [0.7, 0.3]}) for o in (0, 1)]
    df = predictions_frame(claims, {"i0": 0.9, "i1": 0.2}, fold=2)
    assert list(df["option_index"]) == [0, 1] and list(df["fold"]) == [2, 2]
    qdf = question_predictions(df)
    # model [.9, .2] / 1.1 = [.818182, .181818] vs observed [.7, .3]
    assert qdf["correct"].iloc[0] and qdf["js_distance"].iloc[0] == pytest.approx(
        js_distance([0.9 / 1.1, 0.2 / 1.1], [0.7, 0.3]))
    # a frame written without distributions gets them back from the claims
    bare = df.drop(columns="distribution")
    assert question_predictions(bare)["js_distance"].iloc[0] is None
    js = question_predictions(with_distributions(bare, claims))["js_distance"].iloc[0]
    assert js == pytest.approx(qdf["js_distance"].iloc[0])


def test_mcnemar_hand():
    # a right & b wrong at 0, 1, 2, 6 (4); b right & a wrong at 7 (1). Exact two-sided:
    # 2 * P(X >= 4 | n=5, 1/2) = 2 * (5 + 1) / 32 = 0.375
    a = [1, 1, 1, 1, 1, 0, 1, 0]
    b = [0, 0, 0, 1, 1, 0, 0, 1]
    res = mcnemar_exact(a, b)
    assert (res.a_only, res.b_only, res.n) == (4, 1, 8) and res.p_value == pytest.approx(0.375)
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0


def test_mcnemar_between_frames_aligns_on_keys():
    qa = pd.DataFrame({"persona_id": ["A", "A", "B"], "group_id": ["g1", "g2", "g1"],
                       "correct": [True, True, False]})
    qb = pd.DataFrame({"persona_id": ["B", "A", "A"], "group_id": ["g1", "g2", "g1"],
                       "correct": [True, False, True]})  # shuffled rows
    a, b = paired_question_correctness(qa, qb)
    assert sorted(zip(a, b)) == sorted([(True, True), (True, False), (False, True)])
    res = mcnemar_between(qa, qb)
    # one discordant pair each way: 2 * P(X >= 1 | n=2) capped at 1 -> 1.0
    assert (res.a_only, res.b_only) == (1, 1) and res.p_value == pytest.approx(1.0)


def test_paired_t_hand():
    # d = [.02, .02, -.02, .02]: mean .01, sd = sqrt(12e-4 / 3) = .02, SE = .01 -> t = 1, df 3.
    # Student t, df 3: F(t) = 1/2 + (1/pi)(t / (sqrt3 (1 + t^2/3)) + atan(t / sqrt3))
    #   = .5 + (.433013 + .523599) / pi = .804499 -> p = 2 (1 - .804499) = 0.391002
    p = paired_t_test([0.70, 0.72, 0.66, 0.79], [0.68, 0.70, 0.68, 0.77])
    assert p == pytest.approx(0.391002, abs=1e-6)
    # identical differences: sd 0, t undefined (never p = 0.0 or 1.0)
    assert paired_t_test([0.5, 0.6], [0.5, 0.6]) is None
    assert paired_t_test([0.6, 0.7], [0.5, 0.6]) is None
    assert paired_t_test([0.5], [0.4]) is None


def test_cell_metrics_puts_it_together():
    m = cell_metrics(table())
    json.dumps(m, allow_nan=False)  # JSON-serialisable, no NaN
    o = m["overall"]
    assert "accuracy" not in o  # two accuracies, each named: claim (the paper's) and question
    assert o["question_accuracy"] == pytest.approx(0.5) and o["question_accuracy_se"] == pytest.approx(0.25)
    assert o["n_questions"] == 4 and o["n_claims"] == 9
    assert o["claim_accuracy"] == pytest.approx(5 / 9)
    assert o["ece"] == pytest.approx(3.07 / 9)
    assert o["stable_fraction"] == pytest.approx(1 / 3) and o["n_two_option"] == 3
    assert o["js_distance"] == pytest.approx(JS_A_Q2 / 2, abs=1e-5) and o["n_js"] == 2
    # mean over personas of question accuracy: (2/3 + 0) / 2; of claim accuracy: (4/7 + 1/2) / 2
    assert o["question_accuracy_persona_mean"] == pytest.approx(1 / 3)
    assert o["claim_accuracy_persona_mean"] == pytest.approx((4 / 7 + 1 / 2) / 2)
    b = m["per_persona"]["B"]
    assert b["question_accuracy"] == 0.0 and b["question_accuracy_se"] == 0.0 and b["js_distance"] == 0.0
    # B: one claim right of two (.45 False), ECE: .95 wrong and .55 right in their own bins
    # -> (.95 + .45) / 2 = .7
    assert b["claim_accuracy"] == 0.5 and b["ece"] == pytest.approx(0.7)
    assert m["per_persona"]["A"]["stable_fraction"] == pytest.approx(0.5)


def test_cell_metrics_without_distribution_and_with_folds():
    df = table(with_dist=False)
    df["fold"] = [0 if pid == "A" else 1 for pid in df["persona_id"]]
    m = cell_metrics(df)
    json.dumps(m, allow_nan=False)
    assert m["overall"]["js_distance"] is None and m["overall"]["n_js"] == 0
    # fold 0 = persona A (2/3), fold 1 = persona B (0): mean 1/3, SE = sd / sqrt 2 = 1/3
    assert m["overall"]["question_accuracy_fold_mean"] == pytest.approx(1 / 3)
    assert m["overall"]["question_accuracy_fold_se"] == pytest.approx(1 / 3)
    # claim accuracy: fold 0 = A (4/7), fold 1 = B (1/2)
    assert m["overall"]["claim_accuracy_fold_mean"] == pytest.approx((4 / 7 + 1 / 2) / 2)
    assert set(m["overall"]["per_fold"]) == {"0", "1"}


def test_cell_metrics_rule_none_and_empty():
    m = cell_metrics(table(), rule="none")
    assert m["overall"]["question_accuracy"] is None and m["overall"]["n_questions"] == 0
    assert m["overall"]["claim_accuracy"] == pytest.approx(5 / 9)
    empty = cell_metrics(table().iloc[0:0])
    json.dumps(empty, allow_nan=False)
    assert empty["overall"]["question_accuracy"] is None and empty["per_persona"] == {}
    assert empty["overall"]["claim_accuracy"] is None


def test_aggregate_folds():
    cells = [{"overall": {"accuracy": 0.6, "ece": None}, "per_persona": {"A": {"accuracy": 0.5}}},
             {"overall": {"accuracy": 0.8, "ece": 0.1}, "per_persona": {"A": {"accuracy": 0.7},
                                                                         "B": {"accuracy": 1.0}}}]
    agg = aggregate_folds(cells, keys=["accuracy", "ece"])
    # accuracy: mean .7, SE .1 (see test_accuracy_with_se_and_mean_with_se)
    assert agg["overall"]["accuracy"] == pytest.approx(0.7)
    assert agg["overall"]["accuracy_fold_se"] == pytest.approx(0.1)
    assert agg["overall"]["ece"] == pytest.approx(0.1) and agg["overall"]["ece_n_folds"] == 1
    assert agg["per_persona"]["A"]["accuracy"] == pytest.approx(0.6)
    assert agg["per_persona"]["B"]["accuracy_n_folds"] == 1
    json.dumps(agg, allow_nan=False)


def test_representation_summary_hand():
    df = pd.DataFrame({"persona_id": ["Democrat"] * 3 + ["Republican"] * 3,
                       "score": [5, 4, 5, 3, None, 2]})
    s = representation_summary(df)
    json.dumps(s, allow_nan=False)
    d, r, o = s["per_persona"]["Democrat"], s["per_persona"]["Republican"], s["overall"]
    # Democrat [5, 4, 5]: mean 14/3, sd sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = .577350, SE .333333
    assert d["mean"] == pytest.approx(14 / 3) and d["se"] == pytest.approx(1 / 3)
    # Republican [3, 2] (one missing): mean 2.5, sd .707107, SE .5
    assert (r["mean"], r["n"], r["n_missing"]) == (pytest.approx(2.5), 2, 1)
    assert r["se"] == pytest.approx(0.5)
    # pooled [5, 4, 5, 3, 2]: mean 3.8, sd sqrt(6.8 / 4) = 1.303840, SE / sqrt 5 = .583095
    assert o["mean"] == pytest.approx(3.8) and o["se"] == pytest.approx(0.583095, abs=1e-6)
    assert o["persona_mean"] == pytest.approx((14 / 3 + 2.5) / 2)
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        representation_summary(pd.DataFrame({"persona_id": ["x"], "score": [7]}))


def test_paired_claims_test_is_mcnemar_with_one_claim_per_question_and_clusters_otherwise():
    """OvertonBench holds one claim per question: 40 right vs 40 wrong is p ~ 2e-12 over claims
    (question-level "correctness" gave p = 1.0 there). Claims sharing a question are clustered:
    two questions each +2 and -2 cancel (p = 1), whatever the claim-level counts."""
    from scipy.stats import binomtest

    from plural_icm.metrics.significance import paired_claims_test

    r = paired_claims_test([True] * 40, [False] * 40, list(range(40)))
    assert r.p_value == pytest.approx(binomtest(40, 40, 0.5).pvalue) and "McNemar" in r.test
    r = paired_claims_test([True, True, False, False], [False, False, True, True], [0, 0, 1, 1])
    assert (r.a_only, r.b_only, r.n_clusters, r.p_value) == (2, 2, 2, 1.0)
    # 3 questions at +2 and 1 at -2 (exact enumeration over 4 signs): P(|T*| >= 4) = 10/16
    a = [True] * 6 + [False] * 2
    b = [False] * 6 + [True] * 2
    r = paired_claims_test(a, b, [0, 0, 1, 1, 2, 2, 3, 3])
    assert r.p_value == pytest.approx(10 / 16) and "exact" in r.test
    assert paired_claims_test([True], [True], [0]).p_value == 1.0
