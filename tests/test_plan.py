"""stage=plan, the paper presets and the ICM preset that follows the model (no SLURM, no model)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from settings_support import typed_settings

from plural_icm.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]


def _launch(args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PLURAL_ICM_OUTPUT=str(tmp_path / "out"), WANDB_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides + [f"paths.root_dir={ROOT}"])


# -- the ICM preset follows the model -----------------------------------------------------------
@pytest.mark.parametrize("model,preset", [("smollm2", "demo"), ("gemma270m", "demo"), ("llama8b", "paper"),
                                          ("llama70b", "paper"), ("qwen30b", "paper"), ("olmo7b", "paper")])
def test_default_icm_preset_follows_the_model(model, preset):
    cfg = _compose([f"model={model}"])
    assert cfg.icm.preset == preset


def test_paper_model_with_collaborative_experiment_gets_the_paper_search():
    cfg = _compose(["model=llama8b", "dataset=gqa", "experiment=collaborative"])
    assert (cfg.icm.preset, cfg.icm.num_seed, cfg.icm.max_iters) == ("paper", 8, 3000)


def test_explicit_icm_choice_wins():
    assert _compose(["model=llama8b", "icm=demo"]).icm.max_iters == 40  # the demo preset (#29: was 25)
    assert _compose(["icm=fork"]).icm.preset == "fork"
    # the paper presets force the paper's settings, also for a demo model
    assert _compose(["experiment=paper", "model=smollm2"]).icm.preset == "paper"


@pytest.mark.parametrize("experiment", ["paper", "paper_scaling", "paper_collaborative", "paper_sample_efficiency"])
def test_paper_presets_compose_with_the_paper_icm(experiment):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", f"paths.root_dir={ROOT}"],
                      return_hydra_config=True)
    assert cfg.icm.preset == "paper" and cfg.icm.max_iters == 3000
    params = cfg.hydra.sweeper.params
    assert params["fold"] == "0,1,2,3"
    if experiment == "paper_collaborative":
        assert cfg.seed == 27565976 and list(cfg.dataset.personas) == ["Britain", "Indonesia", "Nigeria"]
        assert cfg.collaborative.k_per_fold == 1
    if experiment == "paper_scaling":
        assert params["model"].split(",") == ["llama8b", "llama70b", "qwen14b", "qwen30b", "olmo7b", "olmo32b"]


def test_cfg_hydra_resolve_does_not_crash(tmp_path):
    for extra in ([], ["hydra/launcher=slurm_gpu", "model=llama70b"]):
        r = _launch(["--cfg", "hydra", "--resolve", *extra], tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "sweep:" in r.stdout


# -- memory check -------------------------------------------------------------------------------
def test_memory_check_of_llama70b_on_80gb_gpus():
    from plural_icm.pipeline.plan import memory_check

    m = _compose(["model=llama70b"])
    assert memory_check(m.model, m.cluster).ok                         # default: tensor parallel 4
    tp2 = _compose(["model=llama70b", "model.tensor_parallel_size=2", "model.gpus=2"])
    bad = memory_check(tp2.model, tp2.cluster)
    assert not bad.ok and "model.tensor_parallel_size=4" in bad.fix
    on96 = _compose(["model=llama70b", "model.tensor_parallel_size=2", "model.gpus=2", "cluster.gpu_memory_gb=96"])
    assert memory_check(on96.model, on96.cluster).ok                   # the paper's RTX PRO 6000s
    fewer = _compose(["model=llama70b", "model.gpus=2"])
    assert "model.gpus=4" in memory_check(fewer.model, fewer.cluster).fix


def test_search_cost_model_matches_the_benchmark_order_of_magnitude():
    from plural_icm.search.cost import full_evaluation_tokens, proposal_tokens

    # docs/benchmark.md, n = 64, L = 48: full evaluation 194,944 (reference) / 21,208 (fast);
    # proposal 525,814 / 31,689.
    assert full_evaluation_tokens(64, 48, "reference") == pytest.approx(194_944, rel=0.01)
    assert full_evaluation_tokens(64, 48, "fast") == pytest.approx(21_208, rel=0.1)
    assert proposal_tokens(64, 48, "reference") == pytest.approx(525_814, rel=0.1)
    assert proposal_tokens(64, 48, "fast") == pytest.approx(31_689, rel=0.2)


# -- stage=plan through launch.py ---------------------------------------------------------------
def test_plan_refuses_llama70b_on_two_80gb_gpus(tmp_path):
    r = _launch(["stage=plan", "model=llama70b", "model.tensor_parallel_size=2"], tmp_path)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "model.tensor_parallel_size" in text and "DOES NOT FIT" in text, text[-3000:]
    print("\n" + "\n".join(l for l in text.splitlines() if "fit" in l.lower() or "change:" in l))


def test_plan_of_the_scaling_grid(tmp_path):
    t0 = time.perf_counter()
    proc = _launch(["-m", "experiment=paper_scaling", "stage=plan"], tmp_path)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = proc.stdout.strip().splitlines()
    # 6 models x (3 datasets x 4 folds + OvertonBench's one fold) x 4 conditions = 312 cells (the
    # sweeper drops OT's folds 1-3: 72 jobs); icm and acc_matched of one (model, dataset, fold)
    # share one search: 6 x 13 = 78 searches
    m = re.fullmatch(r"plan: (\d+) jobs, (\d+) distinct searches, ([\d.]+) GPU-hours \(estimate\)", lines[-1])
    assert m and (int(m[1]), int(m[2])) == (390, 78), lines[-1]
    assert float(m[3]) > 0
    assert "sweep: 72 of 384 job(s) dropped" in proc.stdout
    rows = [l.split() for l in lines if l.startswith(("S", "- ")) and len(l.split()) == 13]
    cells = [r for r in rows if r[1] == "cell"]
    assert len(cells) == 312 and len([r for r in rows if r[1] == "search"]) == 78
    # every job carries its own model's resources
    want = {n: _compose([f"model={n}"]).model for n in ("llama8b", "llama70b", "qwen14b", "qwen30b", "olmo7b", "olmo32b")}
    for r in rows:
        mc = want[r[2]]
        assert (int(r[7]), int(r[8]), int(r[9]), int(r[10])) == (mc.gpus, mc.cpus, mc.mem_gb, mc.time_min), r
    # icm and acc_matched cells name the search they read; zero_shot and gold read none
    assert {r[11] != "-" for r in cells if r[5] in ("icm", "acc_matched")} == {True}
    assert {r[11] for r in cells if r[5] in ("zero_shot", "gold")} == {"-"}
    assert "read by 2 cell(s)" in proc.stdout
    print(f"\nplan of experiment=paper_scaling: {wall:.1f} s wall\n" + "\n".join(lines[-12:]))


def test_a_model_without_an_icm_preset_stops_naming_icm():
    from omegaconf import MISSING, OmegaConf

    from plural_icm.config.settings import require_icm_preset as _require_icm_preset

    cfg = OmegaConf.create({"model": {"name": "mine"}, "icm": MISSING})
    with pytest.raises(SystemExit, match="icm=paper"):
        _require_icm_preset(cfg)
    _require_icm_preset(_compose(["model=llama8b"]))   # a packaged model config names its preset


def test_plan_says_which_searches_outlast_their_time_limit():
    """A search estimated to run longer than ``model.time_min`` is named with how many runs of the
    limit it needs; past the launcher's requeue bound the note says what to raise."""
    from plural_icm.pipeline.plan import build_plan, format_plan, time_limit_notes, wall_hours

    cfg = _compose(["model=llama8b", "dataset=oqa", "condition=icm", "model.time_min=10"])
    plan = build_plan([([], typed_settings(cfg))])
    (search,) = plan.searches
    hours = wall_hours(search)
    assert hours > 10 / 60, hours  # the paper-size OpinionQA search takes longer than 10 minutes
    runs = math.ceil(hours / (10 / 60))
    (note,) = time_limit_notes(plan, max_num_timeout=3)
    assert "llama8b/oqa/fold0" in note and "model.time_min=10 min" in note and f"about {runs} runs" in note
    assert (f"max_num_timeout=3 requeues: raise it to {runs - 1}, or model.time_min to "
            f"{math.ceil(hours * 60)}") in note
    assert "time limits (searches estimated to outlast" in format_plan(plan, max_num_timeout=3)
    # a limit the estimate fits in: no note
    roomy = _compose(["model=llama8b", "dataset=oqa", "condition=icm",
                      f"model.time_min={math.ceil(hours * 60) + 1}"])
    assert time_limit_notes(build_plan([([], typed_settings(roomy))]), max_num_timeout=3) == []


# -- every planned job can start ------------------------------------------------------------------
def test_fold_is_checked_by_what_each_dataset_declares():
    """OvertonBench declares one fold whatever n_folds says; claim files in halves two; a k-fold
    dataset its n_folds (>= 2). The config check refuses fold >= dataset.n_folds for every dataset."""
    from plural_icm.config.checks import validate_config
    from plural_icm.data.registry import check_fold, declared_folds
    from plural_icm.errors import ConfigError

    ot = _compose(["dataset=ot"]).dataset
    assert declared_folds(ot) == 1
    check_fold(ot, 0)
    with pytest.raises(ConfigError, match="declares 1 fold"):
        check_fold(ot, 1)
    with pytest.raises(ConfigError, match="n_folds=1"):
        validate_config(_compose(["dataset=ot", "fold=1"]))
    claims = _compose(["dataset=gqa_claims", "dataset.options.folds=halves"]).dataset
    assert declared_folds(claims) == 2
    assert declared_folds(_compose(["dataset=oqa_paper", "dataset.n_folds=7"]).dataset) == 4
    with pytest.raises(ConfigError, match=">= 2"):
        declared_folds(_compose(["dataset=gqa", "dataset.n_folds=1"]).dataset)


def test_plan_lists_what_cannot_start_with_the_keys_to_change():
    """A PT search over a whole training fold does not fit 32k tokens: the plan names the job,
    the estimate and the keys to change, and refuses (the paper presets cap PT at 128 claims)."""
    from plural_icm.pipeline.plan import PlanError, build_plan, format_plan

    cfg = _compose(["model=llama70b", "dataset=pt", "condition=icm", "dataset.max_search_claims=null",
                    "icm.search_unit=training_folds"])
    plan = build_plan([([], typed_settings(cfg))])
    text = format_plan(plan)
    assert "NO, 2 job(s) cannot start" in text, text
    assert "search prompts of about" in text and "dataset.max_search_claims=" in text
    assert "inference prompts of about" in text and "inference.n_examples=" in text
    with pytest.raises(PlanError, match="cannot start"):
        plan.refuse_if_infeasible()
    ok = build_plan([([], typed_settings(_compose(["model=llama70b", "dataset=pt", "condition=icm"])))])
    assert not ok.cannot_start() and "can every job start (fold of its dataset, prompts within " \
        "the context): yes" in format_plan(ok)


def test_paper_grid_drops_overtonbench_folds_1_to_3_and_every_job_can_start(tmp_path):
    proc = _launch(["-m", "experiment=paper", "stage=plan"], tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = proc.stdout
    assert "sweep: 18 of 96 job(s) dropped" in out and "ot declares 1 fold(s), dropped fold(s) 1,2,3" in out
    assert "can every job start (fold of its dataset, prompts within the context): yes" in out
    rows = [l.split() for l in out.splitlines() if l.startswith(("S", "- ")) and len(l.split()) == 13]
    assert {r[3] for r in rows} == {"gqa_claims", "oqa_paper", "pt", "ot"}
    assert {r[4] for r in rows if r[3] == "ot"} == {"0"}
    assert "the paper: 4-6 h per search" in out
