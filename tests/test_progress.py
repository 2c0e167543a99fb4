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
