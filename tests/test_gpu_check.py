"""The prepared GPU check runs end to end on the CPU with a scaled-down architecture (CI smoke)."""

import json

import pytest

from plural_icm.bench import gpu_check


@pytest.mark.slow
def test_gpu_check_cpu_smoke(capsys):
    assert gpu_check.main(["--cpu-smoke", "--n", "8", "--paper-n", "10", "--exact-n", "8"]) == 0
    out = capsys.readouterr().out
    results = json.loads(out.split("RESULTS ", 1)[1])
    # fp32: the cached scorer equals the prompts computed from scratch (bf16 only rounds)
    # in both context orders (the presets' published one and halving_tail)
    for order in ("published", "halving_tail"):
        assert results[f"exact_{order}_float32"]["max_abs_diff"] < 1e-4
        assert results[f"exact_{order}_float32"]["prompts"] == 8
    assert all(results[e]["proposals"] == 1 for e in ("published", "fast", "reference"))
    # the published cost model recomputes every context; ours reuses prefixes, in either order
    assert results["reference"]["proposal_tokens"] > results["published"]["proposal_tokens"] \
        > results["fast"]["proposal_tokens"]
    assert "projected paper-size search (n=10, 3000 iterations, published engine" in out
    assert "projected paper-size search (n=10, 3000 iterations, fast engine" in out


def test_architecture_is_llama_3_1_8b_unless_scaled():
    full = gpu_check.architecture(cpu_smoke=False)
    assert (full["hidden_size"], full["num_hidden_layers"], full["num_key_value_heads"]) == (4096, 32, 8)
    small = gpu_check.architecture(cpu_smoke=True)
    assert small["num_hidden_layers"] < full["num_hidden_layers"] and small["vocab_size"] == 128256
