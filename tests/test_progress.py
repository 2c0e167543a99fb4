"""Progress that tells the truth: the search bar's total follows the work left (early stop,
resume, finished searches), the inference bar advances per batch of claims."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from fake_lm import FakeLM
from test_search_engine import TEMPLATE, make_claims
from plural_icm.data.records import ConsistencyRule, Persona
from plural_icm.search.engine import SearchParams
from plural_icm.search.progress import SearchProgress, iterations_left
from plural_icm.search.store import SearchTask, run_or_load


def task(claims, **params):
    return SearchTask(model="fake", dataset="d", fold=0, persona="p", claims=claims,
                      rule=ConsistencyRule.EXACTLY_ONE, params=SearchParams(**params), seed=0,
                      template=TEMPLATE, labels=(" True", " False"),
                      model_identity={"model": "fake"})


def test_search_total_drops_what_an_early_stop_does_not_run(tmp_path):
    t = task(make_claims(4), max_iters=300, patience=5, num_seed=2)
    progress = SearchProgress([t], tmp_path, enabled=False)
    (s,) = run_or_load([t], tmp_path, FakeLM, progress)
    ran = s.summary["iterations"]
    assert ran < 300  # it stopped early ...
    assert progress.done == ran and progress.total == ran  # ... and the bar ended full, not at ran/300


def test_search_total_counts_only_what_is_left(tmp_path):
    done, resumed, fresh = (task(make_claims(n), max_iters=50) for n in (2, 3, 4))
    (done.directory(tmp_path)).mkdir(parents=True)
    for f in ("COMPLETE.json", "summary.json", "labels.jsonl"):  # what a complete search holds
        (done.directory(tmp_path) / f).write_text("{}")
    resumed.directory(tmp_path).mkdir(parents=True)
    (resumed.directory(tmp_path) / "checkpoint.json").write_text(
        json.dumps({"iteration": 30, "since_accept": 4}))
    assert iterations_left(done, tmp_path) == (0, 0)
    assert iterations_left(resumed, tmp_path) == (20, 4)
    assert iterations_left(fresh, tmp_path) == (50, 0)
    progress = SearchProgress([done, resumed, fresh], tmp_path, enabled=False)
    progress(fresh, {"iteration": 1, "U": 0.0, "n_labelled": 2, "accepted": True})
    assert progress.total == 70 and progress.done == 1


def test_inference_progress_per_batch_same_rows():
    from plural_icm.inference import predict as P

    inf = OmegaConf.create({"labels": ["True", "False"], "context_policy": "error",
                            "system_prompt": "s", "example_template": "{question} {claim} {label}\\n",
                            "query_template": "Question: {question}\\nClaim: {claim}"})
    persona = Persona(id="p", description="A persona.")
    targets = make_claims(75)  # 150 claims
    ticks: list[int] = []
    rows, _ = P.predict(FakeLM(), inf, persona, [], targets, progress=ticks.append)
    assert ticks == [64, 64, 22]
    plain_rows, _ = P.predict(FakeLM(), inf, persona, [], targets)
    assert rows == plain_rows


# -- steered generation and judging (OvertonBench) ---------------------------------------------

class _RecordingBar:
    """Stands in for tqdm in plural_icm.inference.steered: records (desc, total, updates)."""
    log: list = []

    def __init__(self, total=None, desc="", **_kw):
        self.desc, self.total, self.n = desc, total, 0
        _RecordingBar.log.append(("open", desc, total))

    def update(self, n=1):
        self.n += n
        _RecordingBar.log.append(("update", self.desc, n))

    def set_postfix_str(self, _s):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _RecordingBar.log.append(("close", self.desc, self.n))


def _ot_jobs(claimset, fold=0):
    from plural_icm.inference.steered import SteeringJob

    jobs = []
    for pid in sorted(claimset.personas):
        train, test = claimset.split(fold, pid)
        jobs.append(SteeringJob(claimset.personas[pid], [(c, bool(c.gold)) for c in train[:3]],
                                test, {"perturbation": None}))
    return jobs


def test_generation_then_judging_each_with_its_bar(tmp_path, tiny_model_dir, tiny_cfg, monkeypatch):
    """Every answer is generated (bar ``generation``, ticking per batch of the backend), then every
    answer judged (bar ``judging``); the rows are exactly those of generating and judging each job
    in one call, as before the bars."""
    from pathlib import Path

    from plural_icm.backends.hf import HFBackend
    from plural_icm.data.registry import load_claimset
    from plural_icm.inference import steered

    fixture = Path(__file__).parent / "fixtures" / "datasets" / "ot"
    claimset = load_claimset(tiny_cfg(["dataset=ot", f"dataset.path={fixture}"]).dataset)
    jobs = _ot_jobs(claimset)
    n = sum(len(j.questions()) for j in jobs)
    assert n >= 4 and any(len(j.questions()) > 2 for j in jobs)  # some job needs several batches
    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=2)
    inf = OmegaConf.create({"max_new_tokens": 6, "judge_prompt":
                            "Group: {persona}\nQuestion: {question}\nAnswer: {answer}\nRate 1-5:"})
    _RecordingBar.log = []
    monkeypatch.setattr(steered, "tqdm", _RecordingBar)
    rows = steered.generate_and_judge_all(be, be, inf, jobs, seed=0)
    log = _RecordingBar.log
    assert [e for e in log if e[0] != "update"] == [("open", "generation", n), ("close", "generation", n),
                                                   ("open", "judging", n), ("close", "judging", n)]
    gen_ticks = [e[2] for e in log[1:log.index(("close", "generation", n))]]
    assert len(gen_ticks) > len(jobs) and max(gen_ticks) <= 2  # per batch of 2, not per persona
    expected = []
    for job in jobs:
        expected += [r | job.extra for r in steered.generate_and_judge(be, be, inf, job.persona,
                                                                       job.examples, job.test, 0)]
    assert rows == expected and len(rows) == n


def test_batched_generation_equals_one_call(tmp_path, tiny_model_dir):
    """Chunks in the hf backend's own batch order: the same batches, the same outputs."""
    from plural_icm.backends.base import GenerationParams
    from plural_icm.backends.hf import HFBackend
    from plural_icm.inference.steered import generate_batched

    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=3)
    words = be.tokenizer.encode("the a of to in and is it", add_special_tokens=False)
    prompts = [tuple([tuple(list(be.bos()) + words[: 1 + (7 * i) % len(words)] * (1 + i % 3))])
               for i in range(8)]
    params = GenerationParams(max_new_tokens=5, temperature=0.0, seed=0)
    ticks: list[int] = []
    assert generate_batched(be, prompts, params, ticks.append) == be.generate(prompts, params)
    assert ticks == [3, 3, 2]
