"""Cells end to end: tiny random model for plumbing, the packaged model for the real default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from plural_icm.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
register_configs()

TINY_ICM = ["icm.max_iters=8", "icm.patience=4", "icm.num_seed=2", "icm.checkpoint_every=2"]


def tiny_cfg(tmp_path, tiny_model_dir, overrides=()):
    os.environ["PLURAL_ICM_OUTPUT"] = str(tmp_path / "out")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}", "model.name=tiny",
            "logger=none", "progress=false", *TINY_ICM, *overrides])


@pytest.mark.parametrize("condition", ["zero_shot", "zero_shot_base", "random", "gold", "icm", "acc_matched"])
def test_cell_writes_complete_results(tmp_path, tiny_model_dir, condition):
    from plural_icm.pipeline.cell import cell_path, run_cell

    cfg = tiny_cfg(tmp_path, tiny_model_dir, [f"condition={condition}", "condition.n_perturbations=2"])
    metrics = run_cell(cfg)
    out = cell_path(cfg)
    assert out == tmp_path / "out" / "results" / "main" / "tiny" / "demo" / condition / "nall" / "fold0" / "seed0"
    for f in ("config.yaml", "predictions.jsonl", "examples.jsonl", "metrics.json", "COMPLETE.json"):
        assert (out / f).is_file(), f
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    # fold 0 of the demo: 2 questions x 2 options x 3 personas (x perturbations for acc_matched)
    assert len(rows) == 12 * (2 if condition == "acc_matched" else 1)
    assert set(metrics["per_persona"]) == {"libertarian", "progressive", "traditional"}
    assert 0 <= metrics["overall"]["accuracy"] <= 1
    examples = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
    if condition.startswith("zero_shot"):
        assert examples == []
    else:  # 6 training questions x 2 options per persona
        assert len(examples) == 36
    if condition in ("icm", "acc_matched"):
        assert metrics["overall"]["icm_label_accuracy"] is not None
        searches = list((tmp_path / "out" / "searches" / "tiny" / "demo" / "fold0").glob("*/*/COMPLETE.json"))
        assert len(searches) == 3
    if condition == "acc_matched":
        pm = metrics["per_persona"]["progressive"]
        perts = pm["perturbations"]
        assert len(perts) == 2
        assert all(p["coherence"] < pm["icm_coherence_same_orders"] for p in perts)
        assert all(abs(p["accuracy"] - pm["icm_label_accuracy"]) <= 0.005 for p in perts)


def test_relaunch_skips_without_loading_a_model(tmp_path, tiny_model_dir, monkeypatch):
    from plural_icm.pipeline import cell

    cfg = tiny_cfg(tmp_path, tiny_model_dir, ["condition=icm"])
    first = cell.run_cell(cfg)
    mtime = (cell.cell_path(cfg) / "metrics.json").stat().st_mtime_ns

    def no_model(self, role):
        raise AssertionError("a complete cell must not load a model")

    monkeypatch.setattr(cell.Backends, "get", no_model)
    assert cell.run_cell(cfg) == first
    assert (cell.cell_path(cfg) / "metrics.json").stat().st_mtime_ns == mtime
    # the gold cell of the same fold reuses nothing it does not need, and icm's searches are shared:
    monkeypatch.undo()
    cfg2 = tiny_cfg(tmp_path, tiny_model_dir, ["condition=acc_matched", "condition.n_perturbations=1"])
    calls = []
    from plural_icm.search import store
    real = store.ICMSearch

    class Spy(real):
        def __init__(self, *a, **k):
            calls.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(store, "ICMSearch", Spy)
    cell.run_cell(cfg2)
    assert calls == [], "the acc_matched cell re-ran searches the icm cell had finished"


def test_different_settings_never_overwrite(tmp_path, tiny_model_dir):
    from plural_icm.pipeline.cell import run_cell

    run_cell(tiny_cfg(tmp_path, tiny_model_dir, ["condition=gold"]))
    with pytest.raises(RuntimeError, match="run_tag"):
        run_cell(tiny_cfg(tmp_path, tiny_model_dir, ["condition=gold", "inference.system_prompt=other"]))
    run_cell(tiny_cfg(tmp_path, tiny_model_dir, ["condition=gold", "inference.system_prompt=other", "run_tag=v2"]))


def test_collaborative_stage(tmp_path, tiny_model_dir):
    from plural_icm.pipeline.collaborative import run_collaborative

    cfg = tiny_cfg(tmp_path, tiny_model_dir, ["experiment=collaborative", "dataset.personas=[progressive]"])
    res = run_collaborative(cfg)
    assert set(res) == {"progressive"}  # persona filter honoured
    for method in ("confidence", "random", "active"):
        r = res["progressive"][method]
        assert r["k"] == 1 and len(r["asked"]) == 1
        d = tmp_path / "out" / "collaborative" / "tiny" / "demo" / "progressive" / method / "fold0"
        answers = [json.loads(x) for x in (d / "answers.jsonl").read_text().splitlines()]
        assert answers[0]["source"] == "simulated_gold"
        assert (d / "questions.jsonl").is_file() and (d / "summary.json").is_file()
        assert r["before"]["test_accuracy"] is not None and r["test_accuracy"] is not None
    # the asked question is fixed to its gold answer in the new search
    conf = res["progressive"]["confidence"]
    searches = list((tmp_path / "out" / "searches" / "tiny" / "demo" / "fold0" / "progressive").glob("*/spec.json"))
    fixed = [json.loads(p.read_text())["fixed"] for p in searches]
    assert any(f for f in fixed)
    asked = conf["asked"][0]  # a group id, "progressive/q<k>"; its claims are "demo/progressive/q<k>/o<j>"
    assert any(k.startswith(f"demo/{asked}/") for f in fixed for k in f)
    # the report reads what the stage wrote (it once globbed a layout without the fold level)
    from analysis.load import load_collaborative
    from analysis.tables import collaborative_table

    t = collaborative_table(load_collaborative(tmp_path / "out"))
    assert sorted(t.method) == ["active", "confidence", "random"]
    row = t[t.method == "confidence"].iloc[0]
    assert (row.persona, row.k, row.n_folds) == ("progressive", 1, 1)
    assert row.test_accuracy == pytest.approx(conf["test_accuracy"])
    assert row.before_coherence == pytest.approx(conf["before"]["coherence"])
    # a relaunch with other settings never reuses (nor overwrites) these summaries
    from plural_icm.errors import ResultsConflictError

    assert (conf["k_per_fold"], conf["rounds"], conf["run_tag"]) == (1, 1, "main")
    assert run_collaborative(cfg)["progressive"]["confidence"]["fingerprint"] == conf["fingerprint"]
    cfg2 = tiny_cfg(tmp_path, tiny_model_dir, ["experiment=collaborative",
                                               "dataset.personas=[progressive]",
                                               "collaborative.k_per_fold=2"])
    with pytest.raises(ResultsConflictError, match="k_per_fold"):
        run_collaborative(cfg2)


def _launch(args, tmp_path, timeout=900):
    env = dict(os.environ, PLURAL_ICM_OUTPUT=str(tmp_path / "out"), HYDRA_FULL_ERROR="1")
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_multirun_writes_one_directory_per_cell(tmp_path, tiny_model_dir):
    args = ["-m", "condition=zero_shot,gold", "fold=0,1", f"model.base={tiny_model_dir}",
            f"model.instruct={tiny_model_dir}", "model.name=tiny", "logger=none"]
    r = _launch(args, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = sorted((tmp_path / "out" / "results").glob("main/tiny/demo/*/nall/fold*/seed0/COMPLETE.json"))
    assert len(cells) == 4
    r2 = _launch(args, tmp_path)
    assert r2.returncode == 0 and r2.stdout.count("[plural_icm] cell") == 0  # nothing recomputed


@pytest.mark.slow
def test_embedded_default_end_to_end(tmp_path):
    """`python launch.py` with the packaged model (search budget trimmed for the test)."""
    r = _launch(["logger=none", "icm.max_iters=6", "icm.patience=3"], tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out" / "results" / "main" / "smollm2" / "demo" / "icm" / "nall" / "fold0" / "seed0"
    assert (out / "COMPLETE.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n_questions"] == 6
    assert "== smollm2/demo/icm/nall/fold0/seed0 ==" in r.stdout and "ALL" in r.stdout
    labels = list((tmp_path / "out" / "searches" / "smollm2" / "demo" / "fold0").glob("*/*/labels.jsonl"))
    assert len(labels) == 3


def test_parse_rating():
    from plural_icm.inference.steered import parse_rating

    assert parse_rating("4") == 4
    assert parse_rating("Rating: 5/5") == 5
    assert parse_rating("I would say 3.") == 3
    assert parse_rating("10 out of 10") is None  # not a 1-5 digit standing alone
    assert parse_rating("no idea") is None


def test_open_ended_cell_generates_and_judges(tmp_path, tiny_model_dir):
    """OvertonBench: steered answers from the ICM-selected examples, rated by the judge."""
    from plural_icm.pipeline.cell import cell_path, run_cell

    fixture = ROOT / "tests" / "fixtures" / "datasets" / "ot"
    cfg = tiny_cfg(tmp_path, tiny_model_dir, ["dataset=ot", f"dataset.path={fixture}", "condition=icm",
                                              "inference.max_new_tokens=8"])
    metrics = run_cell(cfg)
    rows = [json.loads(x) for x in (cell_path(cfg) / "generations.jsonl").read_text().splitlines()]
    _, test = __import__("plural_icm.data.registry", fromlist=["x"]).load_claimset(cfg.dataset).split(0)
    assert len(rows) == len({(c.persona_id, c.question_id) for c in test})
    assert all("judge_reply" in r and "answer" in r for r in rows)
    assert "representation_score" in metrics["overall"]
    n_missing = metrics["overall"]["representation_missing"]
    assert n_missing == sum(r["score"] is None for r in rows)


def test_collaborative_asks_only_within_the_capped_search_set(tmp_path, tiny_model_dir, monkeypatch):
    """With dataset.max_search_claims, questions are asked from the searched claims only (a question
    outside them cannot become a hard constraint), and the active-learning confidences never show
    an item its own label."""
    import plural_icm.inference.predict as predict_mod
    from plural_icm.pipeline.cell import cap_search_claims
    from plural_icm.pipeline.collaborative import run_collaborative
    from plural_icm.data.registry import load_claimset

    seen = []
    real_predict = predict_mod.predict

    def spy(backend, inf_cfg, persona, examples, targets):
        seen.append(({c.group_id for c, _ in examples}, {t.group_id for t in targets}))
        return real_predict(backend, inf_cfg, persona, examples, targets)

    monkeypatch.setattr(predict_mod, "predict", spy)
    cfg = tiny_cfg(tmp_path, tiny_model_dir, ["experiment=collaborative", "dataset.personas=[traditional]",
                                              "dataset.max_search_claims=6"])
    res = run_collaborative(cfg)["traditional"]
    cs = load_claimset(cfg.dataset, None)
    train, _ = cs.split(0, "traditional")
    searched = {c.group_id for c in cap_search_claims(train, 6, 0)}
    assert len(searched) < len({c.group_id for c in train})
    for method in ("confidence", "random", "active"):
        assert set(res[method]["asked"]) <= searched, method
    loo = [(ex, tg) for ex, tg in seen if tg <= searched and len(tg) == 1]
    assert len(loo) == len(searched) and all(not (ex & tg) for ex, tg in loo)
