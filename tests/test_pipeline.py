"""Cells end to end: tiny random model for plumbing, the packaged model for the real default."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from settings_support import typed_settings

ROOT = Path(__file__).resolve().parents[1]


def _registered_conditions() -> list[str]:
    from plural_icm.conditions.registry import available

    return available()


def test_every_registered_condition_has_its_yaml():
    """One module + one YAML per condition: the registry and conf/condition/ name the same set."""
    assert _registered_conditions() == sorted(p.stem for p in (ROOT / "conf" / "condition").glob("*.yaml"))


@pytest.mark.parametrize("condition", _registered_conditions())  # every condition the package defines
def test_cell_writes_complete_results(tmp_path, tiny_model_dir, condition, tiny_cfg):
    from plural_icm.pipeline.cell import cell_path, run_cell

    cfg = tiny_cfg([f"condition={condition}", "condition.n_perturbations=2"])
    metrics = run_cell(typed_settings(cfg))
    out = cell_path(cfg)
    assert out == tmp_path / "out" / "results" / "main" / "tiny" / "demo" / condition / "nall" / "fold0" / "seed0"
    for f in ("config.yaml", "predictions.jsonl", "examples.jsonl", "metrics.json", "COMPLETE.json"):
        assert (out / f).is_file(), f
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    # fold 0 of the demo: 2 questions x 2 options x 3 personas (x perturbations for acc_matched)
    assert len(rows) == 12 * (2 if condition.startswith("acc_matched") else 1)
    assert set(metrics["per_persona"]) == {"libertarian", "progressive", "traditional"}
    assert 0 <= metrics["overall"]["claim_accuracy"] <= 1
    examples = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
    if condition.startswith("zero_shot"):
        assert examples == []
    else:  # 6 training questions x 2 options per persona
        assert len(examples) == 36
    if condition in ("icm", "acc_matched", "acc_matched_swap"):
        assert metrics["overall"]["icm_label_accuracy"] is not None
        searches = list((tmp_path / "out" / "searches" / "tiny" / "demo" / "fold0").glob("*/*/COMPLETE.json"))
        assert len(searches) == 3
    if condition == "bootstrap":  # self-labelled, consistent, without any ICM search
        groups = {}
        for e in examples:
            groups.setdefault((e["persona_id"], e["item_id"].rsplit("/", 1)[0]), []).append(e["label"])
        assert len(groups) == 18 and all(sum(ls) == 1 for ls in groups.values())
        assert not (tmp_path / "out" / "searches").exists()
        for pm in metrics["per_persona"].values():
            assert 0 <= pm["bootstrap_label_accuracy"] <= 1 and pm["bootstrap"]["passes_run"] >= 1
    if condition.startswith("acc_matched"):  # every label set: accuracy, coherence P, violations
        sets = metrics["per_persona"]["progressive"]["label_sets"]
        assert set(sets) == {"gold", "random", "icm", "acc_matched_0", "acc_matched_1"}
        assert sets["gold"]["accuracy"] == 1.0 and sets["gold"]["violations"] == 0
        for row in sets.values():
            assert math.isfinite(row["coherence_P"]) and row["n_labels"] == 12
    if condition == "acc_matched":  # the fork's gold_flip: exactly ICM's number of right labels
        pm = metrics["per_persona"]["progressive"]
        sets = pm["label_sets"]
        assert sets["acc_matched_0"]["accuracy"] == sets["icm"]["accuracy"] == pm["icm_label_accuracy"]
        assert [sets[f"acc_matched_{k}"]["seed"] for k in (0, 1)] == [42, 101]
    if condition == "acc_matched_swap":
        pm = metrics["per_persona"]["progressive"]
        perts = pm["perturbations"]
        assert len(perts) == 2
        assert all(p["mutual_predictability"] < pm["icm_mutual_predictability_same_orders"] for p in perts)
        assert all(abs(p["accuracy"] - pm["icm_label_accuracy"]) <= 0.005 for p in perts)


def test_base_model_work_in_a_child_process_gives_the_same_cell(tmp_path, tiny_model_dir, monkeypatch,
                                                                tiny_cfg):
    """model.engine_per_process=true: the searches and acc_matched's base-model scoring run in a
    spawned child, the cell's own process loads only the instruct model, and the results are those
    of the one-process run (the key changes no result, so both land in one cell directory)."""
    import shutil

    from plural_icm.pipeline import cell, models

    instruct = tmp_path / "instruct"  # another checkpoint path: the base model must be released
    instruct.symlink_to(tiny_model_dir, target_is_directory=True)
    loaded: list[str] = []
    real_load = models.backend_from_model_config

    def recording_load(model_cfg, role, cache_dir):
        loaded.append(role)
        return real_load(model_cfg, role, cache_dir)

    monkeypatch.setattr(models, "backend_from_model_config", recording_load)
    runs = {}
    for isolated in ("true", "false"):
        cfg = tiny_cfg([f"model.instruct={instruct}", "condition=acc_matched", "condition.n_perturbations=2",
                        f"model.engine_per_process={isolated}"])
        loaded.clear()
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        metrics = cell.run_cell(typed_settings(cfg))
        out = cell.cell_path(cfg)
        runs[isolated] = (loaded[:], metrics, (out / "predictions.jsonl").read_text(),
                          (out / "examples.jsonl").read_text())
    assert runs["true"][0] == ["instruct"]  # the base model was loaded (and freed) in the child
    assert runs["false"][0] == ["base", "instruct"]
    assert runs["true"][2:] == runs["false"][2:]
    for key in ("claim_accuracy", "icm_label_accuracy", "icm_mutual_predictability"):
        assert runs["true"][1]["overall"][key] == pytest.approx(runs["false"][1]["overall"][key])
    assert cell.base_work_in_child_process(typed_settings(tiny_cfg(["model.backend=vllm"])), "instruct") is False  # one checkpoint
    assert cell.base_work_in_child_process(typed_settings(
        tiny_cfg([f"model.instruct={instruct}", "model.backend=vllm"])), "instruct") is True



def test_a_cell_starts_no_child_process_when_no_base_model_work_is_due(tmp_path, tiny_model_dir,
                                                                      monkeypatch, tiny_cfg):
    """With engine_per_process on, only cells with base-model work spawn a child: an icm cell
    whose searches are not on disk does; a gold cell and an icm cell reading finished searches
    do not (they would pay a child's imports for nothing)."""
    import shutil

    from plural_icm.conditions.registry import get_condition
    from plural_icm.pipeline import cell

    instruct = tmp_path / "instruct"
    instruct.symlink_to(tiny_model_dir, target_is_directory=True)
    spawned: list[str] = []
    real = cell.examples_in_child_process

    def recording(cfg):
        spawned.append(str(cfg.condition.name))
        return real(cfg)

    monkeypatch.setattr(cell, "examples_in_child_process", recording)
    common = [f"model.instruct={instruct}", "model.engine_per_process=true"]
    cell.run_cell(typed_settings(tiny_cfg(common + ["condition=gold"])))
    icm_cfg = tiny_cfg(common + ["condition=icm"])
    first = cell.run_cell(typed_settings(icm_cfg))
    assert spawned == ["icm"]  # its searches were computed in the child
    shutil.rmtree(cell.cell_path(icm_cfg))  # the searches stay on disk
    again = cell.run_cell(typed_settings(icm_cfg))
    assert spawned == ["icm"]  # read from disk in the cell's own process
    assert again["overall"]["claim_accuracy"] == pytest.approx(first["overall"]["claim_accuracy"])
    # acc_matched scores with the base model whatever is on disk
    claimset, personas = cell.cell_data(typed_settings(icm_cfg))
    assert cell.base_model_work_due(typed_settings(icm_cfg), get_condition("acc_matched"), claimset, personas)
    assert not cell.base_model_work_due(typed_settings(icm_cfg), get_condition("icm"), claimset, personas)


def test_relaunch_skips_without_loading_a_model(tmp_path, tiny_model_dir, monkeypatch, tiny_cfg):
    from plural_icm.pipeline import cell

    cfg = tiny_cfg(["condition=icm"])
    first = cell.run_cell(typed_settings(cfg))
    mtime = (cell.cell_path(cfg) / "metrics.json").stat().st_mtime_ns

    def no_model(self, role):
        raise AssertionError("a complete cell must not load a model")

    real_get = cell.Backends.get
    monkeypatch.setattr(cell.Backends, "get", no_model)
    assert cell.run_cell(typed_settings(cfg)) == first
    assert (cell.cell_path(cfg) / "metrics.json").stat().st_mtime_ns == mtime
    # the gold cell of the same fold reuses nothing it does not need, and icm's searches are shared:
    monkeypatch.setattr(cell.Backends, "get", real_get)
    cfg2 = tiny_cfg(["condition=acc_matched", "condition.n_perturbations=1"])
    calls = []
    from plural_icm.search import store
    real = store.ICMSearch

    class Spy(real):
        def __init__(self, *a, **k):
            calls.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(store, "ICMSearch", Spy)
    cell.run_cell(typed_settings(cfg2))
    assert calls == [], "the acc_matched cell re-ran searches the icm cell had finished"


def test_different_settings_never_overwrite(tmp_path, tiny_model_dir, tiny_cfg):
    from plural_icm.pipeline.cell import run_cell

    run_cell(typed_settings(tiny_cfg(["condition=gold"])))
    with pytest.raises(RuntimeError, match="run_tag"):
        run_cell(typed_settings(tiny_cfg(["condition=gold", "inference.system_prompt=other"])))
    run_cell(typed_settings(tiny_cfg(["condition=gold", "inference.system_prompt=other", "run_tag=v2"])))


def test_collaborative_stage(tmp_path, tiny_model_dir, tiny_cfg):
    from plural_icm.pipeline.collaborative import run_collaborative

    cfg = tiny_cfg(["experiment=collaborative", "dataset.personas=[progressive]"])
    res = run_collaborative(typed_settings(cfg))
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
    assert row.before_U == pytest.approx(conf["before"]["U"])
    # a relaunch with other settings never reuses (nor overwrites) these summaries
    from plural_icm.errors import ResultsConflictError

    assert (conf["k_per_fold"], conf["rounds"], conf["run_tag"]) == (1, 1, "main")
    assert run_collaborative(typed_settings(cfg))["progressive"]["confidence"]["fingerprint"] == conf["fingerprint"]
    cfg2 = tiny_cfg(["experiment=collaborative", "dataset.personas=[progressive]",
                    "collaborative.k_per_fold=2"])
    with pytest.raises(ResultsConflictError, match="k_per_fold"):
        run_collaborative(typed_settings(cfg2))


def test_a_zero_shot_cell_is_reused_under_other_search_settings(tmp_path, tiny_model_dir,
                                                               monkeypatch, tiny_cfg):
    """Zero-shot reads no ICM setting and no search cap (``ZeroShot.ignores``): a relaunch under
    another cap or ICM preset reuses the cell instead of refusing it as "different settings",
    also a cell written when its fingerprint still hashed those keys (its config.yaml decides); a
    few-shot cell under another cap is still refused."""
    from plural_icm.errors import ResultsConflictError
    from plural_icm.layout import COMPLETE, fingerprint
    from plural_icm.pipeline import cell, plan

    cfg = tiny_cfg(["condition=zero_shot"])
    first = cell.run_cell(typed_settings(cfg))
    out = cell.cell_path(cfg)
    real_get = cell.Backends.get
    monkeypatch.setattr(cell.Backends, "get", lambda self, role: pytest.fail("reused cells load no model"))
    other = tiny_cfg(["condition=zero_shot", "dataset.max_search_claims=3", "icm.alpha=7"])
    assert cell.run_cell(typed_settings(other)) == first
    assert plan._is_complete_cell(typed_settings(other))
    # a cell recorded with the fingerprint over every key (before ZeroShot.ignores)
    done = json.loads((out / COMPLETE).read_text())
    done["fingerprint"] = fingerprint(cfg)
    (out / COMPLETE).write_text(json.dumps(done))
    assert cell.run_cell(typed_settings(other)) == first
    assert plan._is_complete_cell(typed_settings(other))
    # ... but not when what it ran differs in a key zero-shot reads
    with pytest.raises(ResultsConflictError, match="different settings"):
        cell.run_cell(typed_settings(tiny_cfg(["condition=zero_shot", "inference.system_prompt=Other."])))
    gold = tiny_cfg(["condition=gold"])
    monkeypatch.setattr(cell.Backends, "get", real_get)  # (undo() would also drop the output dir)
    cell.run_cell(typed_settings(gold))
    assert cell.cell_path(gold).is_relative_to(tmp_path)
    with pytest.raises(ResultsConflictError, match="different settings"):
        cell.run_cell(typed_settings(tiny_cfg(["condition=gold", "dataset.max_search_claims=3"])))


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


def test_open_ended_cell_generates_and_judges(tmp_path, tiny_model_dir, tiny_cfg):
    """OvertonBench: steered answers from the ICM-selected examples, rated by the judge."""
    from plural_icm.pipeline.cell import cell_path, run_cell

    fixture = ROOT / "tests" / "fixtures" / "datasets" / "ot"
    cfg = tiny_cfg(["dataset=ot", f"dataset.path={fixture}", "condition=icm",
                                              "inference.max_new_tokens=8"])
    metrics = run_cell(typed_settings(cfg))
    rows = [json.loads(x) for x in (cell_path(cfg) / "generations.jsonl").read_text().splitlines()]
    _, test = __import__("plural_icm.data.registry", fromlist=["x"]).load_claimset(cfg.dataset).split(0)
    assert len(rows) == len({(c.persona_id, c.question_id) for c in test})
    assert all("judge_reply" in r and "answer" in r for r in rows)
    assert "representation_score" in metrics["overall"]
    n_missing = metrics["overall"]["representation_missing"]
    assert n_missing == sum(r["score"] is None for r in rows)
    # no judge_model: the model under test judged itself (the report marks it not comparable)
    assert metrics["overall"]["judge_is_model_under_test"] is True


def test_open_ended_acc_matched_generates_with_every_perturbation(tmp_path, tiny_cfg):
    from plural_icm.pipeline.cell import cell_path, run_cell

    fixture = ROOT / "tests" / "fixtures" / "datasets" / "ot"
    cfg = tiny_cfg(["dataset=ot", f"dataset.path={fixture}", "condition=acc_matched",
                    "condition.n_perturbations=2", "condition.accuracy_tolerance=0.5",
                    "inference.max_new_tokens=4"])
    metrics = run_cell(typed_settings(cfg))
    rows = [json.loads(x) for x in (cell_path(cfg) / "generations.jsonl").read_text().splitlines()]
    assert {r["perturbation"] for r in rows} == {0, 1}
    assert metrics["overall"]["representation_perturbations"] == 2


def test_representation_is_the_mean_of_persona_means():
    from plural_icm.pipeline.cell import add_representation, judge_info

    gens = [{"persona_id": "A", "score": s, "perturbation": None} for s in (5, 5, 5, 1)] + \
        [{"persona_id": "B", "score": s, "perturbation": None} for s in (2, 2)]
    m = {"overall": {}, "per_persona": {}}
    add_representation(m, gens)
    assert m["overall"]["representation_score"] == pytest.approx((4 + 2) / 2)  # not 20/6
    assert m["overall"]["representation_pooled"] == pytest.approx(20 / 6)
    se_a = (pytest.importorskip("numpy").std([5, 5, 5, 1], ddof=1) / 2)
    assert m["overall"]["representation_se"] == pytest.approx(math.sqrt(se_a ** 2 + 0) / 2)
    # two perturbations: each summarised, then averaged
    gens2 = [g | {"perturbation": 0} for g in gens] + \
        [{"persona_id": p, "score": 3, "perturbation": 1} for p in ("A", "B")] * 2
    m2 = {"overall": {}, "per_persona": {}}
    add_representation(m2, gens2)
    assert m2["overall"]["representation_score"] == pytest.approx((3 + 3) / 2)
    assert m2["per_persona"]["A"]["representation_score"] == pytest.approx((4 + 3) / 2)
    from plural_icm.config.schema import InferenceConfig, ModelConfig

    inference, model = InferenceConfig(), ModelConfig(name="m", instruct="m-instruct", base="m-base")
    assert judge_info(inference, model)["judge_is_model_under_test"] is True
    inference.judge_model = "overton-judge"
    assert judge_info(inference, model) == {"judge_model": "overton-judge", "judge_is_model_under_test": False,
                                            "judge_validation": None}
    inference.judge_validation = "Spearman 0.87 vs OvertonBench's human ratings"
    assert judge_info(inference, model)["judge_validation"].startswith("Spearman")


def test_collaborative_asks_only_within_the_capped_search_set(tmp_path, tiny_model_dir, monkeypatch, tiny_cfg):
    """With dataset.max_search_claims, questions are asked from the searched claims only (a question
    outside them cannot become a hard constraint), and the active-learning confidences never show
    an item its own label."""
    from plural_icm.conditions.labels import cap_search_claims
    from plural_icm.data.registry import load_claimset
    from plural_icm.pipeline import collaborative
    from plural_icm.pipeline.collaborative import run_collaborative

    seen = []
    real_predict = collaborative.predict

    def spy(backend, inf_cfg, persona, examples, targets):
        seen.append(({c.group_id for c, _ in examples}, {t.group_id for t in targets}))
        return real_predict(backend, inf_cfg, persona, examples, targets)

    monkeypatch.setattr(collaborative, "predict", spy)
    cfg = tiny_cfg(["experiment=collaborative", "dataset.personas=[traditional]",
                                              "dataset.max_search_claims=6"])
    res = run_collaborative(typed_settings(cfg))["traditional"]
    cs = load_claimset(cfg.dataset, None)
    train, _ = cs.split(0, "traditional")
    searched = {c.group_id for c in cap_search_claims(train, 6, 0)}
    assert len(searched) < len({c.group_id for c in train})
    for method in ("confidence", "random", "active"):
        assert set(res[method]["asked"]) <= searched, method
    loo = [(ex, tg) for ex, tg in seen if tg <= searched and len(tg) == 1]
    assert len(loo) == len(searched) and all(not (ex & tg) for ex, tg in loo)


def test_search_unit_part_searches_each_training_part_and_unions_their_labels(tmp_path, tiny_cfg):
    """icm.search_unit=part (the paper's fork): one search per training fold part over its own
    claims; the cell's examples are the union of the parts' labels; summary and cell say so."""
    from plural_icm.data.registry import load_claimset
    from plural_icm.pipeline.cell import cell_path, model_identity, run_cell, search_tasks

    cfg = tiny_cfg(["condition=icm", "icm.search_unit=part", "icm.restarts=2"])
    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    tasks = search_tasks(typed_settings(cfg), claimset, model_identity(typed_settings(cfg)), ["progressive"], fold=0)
    train, _ = claimset.split(0, "progressive")
    parts = sorted({claimset.folds[c.question_id] for c in train})
    assert 0 not in parts and len(parts) >= 2
    assert [(t.part, t.fold) for t in tasks] == [(j, j) for j in parts for _ in range(2)]
    for t in tasks:
        assert {claimset.folds[c.question_id] for c in t.claims} == {t.part}
    assert sorted(c.item_id for t in tasks[::2] for c in t.claims) == sorted(c.item_id for c in train)
    # fold 1's cell shares the searches of the parts it has in common with fold 0's
    other = search_tasks(typed_settings(cfg), claimset, model_identity(typed_settings(cfg)), ["progressive"], fold=parts[0])
    assert {t.hash() for t in tasks} & {t.hash() for t in other}

    run_cell(typed_settings(cfg))
    out = cell_path(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["search_unit"] == "part" and metrics["meta"]["seed_labels"] == "random"
    examples = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
    ex = {r["item_id"] for r in examples if r["persona_id"] == "progressive"}
    assert ex == {c.item_id for c in train}
    summaries = [json.loads(p.read_text()) for p in
                 (Path(cfg.paths.searches_dir)).glob("*/*/fold*/progressive/*/summary.json")]
    assert len(summaries) == 2 * len(parts)
    assert {s["search_unit"] for s in summaries} == {"part"}
    assert sorted({s["part"] for s in summaries}) == parts


def test_collaborative_later_rounds_use_the_constrained_reruns_confidences(tmp_path, tiny_cfg,
                                                                          monkeypatch):
    """Round r > 1 selects by the confidences of round r-1's constrained search, not the first's."""
    import plural_icm.pipeline.collaborative as collab

    seen = []
    real = collab.select_questions

    def spy(method, claims, k, seed, confidence, fewshot, exclude):
        seen.append(dict(confidence))
        return real(method, claims, k, seed, confidence, fewshot, exclude)

    monkeypatch.setattr(collab, "select_questions", spy)
    cfg = tiny_cfg(["experiment=collaborative", "dataset.personas=[progressive]",
                    "collaborative.rounds=2", "collaborative.selection=[confidence]"])
    collab.run_collaborative(typed_settings(cfg))
    assert len(seen) == 2
    sdir = tmp_path / "out" / "searches" / "tiny" / "demo" / "fold0" / "progressive"
    by_fixed = {}
    for spec in sdir.glob("*/spec.json"):
        n_fixed = len(json.loads(spec.read_text())["fixed"])
        rows = [json.loads(x) for x in (spec.parent / "labels.jsonl").read_text().splitlines()]
        by_fixed[n_fixed] = {r["item_id"]: r["confidence"] for r in rows}
    first, rerun = by_fixed[0], by_fixed[2]  # the unconstrained search; round 1's re-run (1 question)
    asked = {j for j, v in seen[1].items() if v == 0.0}
    assert seen[0] == first
    assert {j: v for j, v in seen[1].items() if j not in asked} == \
        {j: v for j, v in rerun.items() if j not in asked}
    assert seen[1] != {j: (0.0 if j in asked else v) for j, v in first.items()}


def test_collaborative_questions_per_training_fold_as_the_papers_section_6():
    """``collaborative.questions_from=per_training_fold``: k questions from EACH training fold,
    ranked within it, and a fold asks the same question whichever fold is held out (so with the
    paper's per-part searches, k = 4 over 4 folds); ``pooled`` takes k over all training claims."""
    from plural_icm.data.demo import load_demo
    from plural_icm.pipeline.collaborative import round_questions

    cs = load_demo()
    pid = "progressive"
    conf = {c.item_id: (hash(c.item_id) % 997) / 997 for c in cs.claims if c.persona_id == pid}
    group_fold = {c.group_id: cs.folds[c.question_id] for c in cs.claims if c.persona_id == pid}
    picks = {}
    for held_out in (0, 1):
        train, _ = cs.split(held_out, pid)
        for method in ("confidence", "random"):
            per_fold = round_questions(method, train, 1, 7, 0, conf, {}, None, [], folds=cs.folds)
            assert sorted(group_fold[g] for g in per_fold) == sorted({0, 1, 2, 3} - {held_out})
            picks[held_out, method] = {group_fold[g]: g for g in per_fold}
            pooled = round_questions(method, train, 1, 7, 0, conf, {}, None, [])
            assert len(pooled) == 1
        # within a fold: the least sure question of that fold
        for fold, g in picks[held_out, "confidence"].items():
            in_fold = {c.group_id: min(conf[x.item_id] for x in train if x.group_id == c.group_id)
                       for c in train if cs.folds[c.question_id] == fold}
            assert in_fold[g] == min(in_fold.values())
    for method in ("confidence", "random"):  # folds 2 and 3 are training folds of both jobs
        assert {f: picks[0, method][f] for f in (2, 3)} == {f: picks[1, method][f] for f in (2, 3)}


def test_a_persona_without_training_claims_gets_no_search_and_no_examples(tmp_path, tiny_cfg, caplog):
    """Small data: every item of a persona can fall in the held-out fold (the PT fixture's DEC and
    DMS in fold 0). The cell runs: no search for that persona, no examples under any condition,
    a warning naming it; the other personas are searched as usual."""
    import json

    from plural_icm.pipeline.cell import cell_path, run_cell

    fixtures = Path(__file__).resolve().parent / "fixtures" / "datasets"
    cfg = tiny_cfg(["condition=icm", "dataset=pt", "dataset.options.configs=[BeaverTails]",
                    "dataset.options.splits=[test]", f"paths.data_dir={fixtures}", "fold=0"])
    with caplog.at_level("WARNING"):
        metrics = run_cell(typed_settings(cfg))
    assert metrics["overall"]["n_claims"] > 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    for pid in ("DEC", "DMS"):
        assert f"persona '{pid}' has no training claims" in warned
    searched = {p.parent.parent.name for p in (tmp_path / "out" / "searches").rglob("summary.json")}
    assert searched == {"DCF", "DSN"}, searched
    examples = [json.loads(x) for x in (cell_path(cfg) / "examples.jsonl").read_text().splitlines()]
    assert {e["persona_id"] for e in examples} == {"DCF", "DSN"}
