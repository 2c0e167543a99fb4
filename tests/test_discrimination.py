"""analysis.discrimination: AUC and log-probability of the gold label beside accuracy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.discrimination import auc, discrimination_table, gold_logprob, main


def test_auc_counts_ranked_pairs_and_ties_half():
    assert auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    # one tie between a positive and a negative counts half: (1 + 0.5) / 2
    assert auc([0.5, 0.9, 0.5], [True, True, False]) == pytest.approx(0.75)
    assert math.isnan(auc([0.3, 0.4], [True, True]))


def test_gold_logprob_is_the_two_way_softmax_of_the_gold_label():
    preds = pd.DataFrame({"logp_true": [math.log(0.3), -5.0], "logp_false": [math.log(0.1), -5.0],
                          "gold": [True, False]})
    assert list(gold_logprob(preds)) == pytest.approx([math.log(0.75), math.log(0.5)])


def test_table_reads_each_cells_predictions_and_config(tmp_path, capsys):
    """Two cells that predict the same labels (accuracy equal) but rank differently: only AUC
    and the gold label's log-probability tell them apart; the config key comes from config.yaml."""
    for seed, order, p in ((0, "loader", [0.4, 0.3, 0.2, 0.1]), (1, "shuffled", [0.45, 0.3, 0.1, 0.2])):
        d = tmp_path / "results" / "main" / "m" / "demo" / "gold" / "nall" / "fold0" / f"seed{seed}"
        d.mkdir(parents=True)
        gold = [True, False, True, False]
        rows = [{"persona_id": "x", "item_id": f"i{j}", "gold": g, "p_true": q,
                 "logp_true": float(np.log(q)), "logp_false": float(np.log(1 - q)), "pred": q > 0.5,
                 "perturbation": None} for j, (g, q) in enumerate(zip(gold, p))]
        (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "config.yaml").write_text(f"inference:\n  example_order: {order}\n")
        (d / "metrics.json").write_text(json.dumps({"overall": {"claim_accuracy": 0.5}, "meta": {}}))
        (d / "COMPLETE.json").write_text(json.dumps({"fingerprint": "f", "finished": 0}))
    t = discrimination_table(tmp_path, ["inference.example_order"]).sort_values("seed")
    assert list(t["inference.example_order"]) == ["loader", "shuffled"]
    assert list(t.accuracy) == [0.5, 0.5] and list(t.n_claims) == [4, 4]
    assert list(t.auc) == pytest.approx([0.75, 0.5])
    assert t.mean_logp_gold.iloc[0] != pytest.approx(t.mean_logp_gold.iloc[1])
    assert main([str(tmp_path), "--config-key", "inference.example_order"]) == 0
    assert "| shuffled |" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing")]) == 1
