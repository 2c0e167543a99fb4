"""One cell of the grid: (model, dataset, condition, n_examples, fold, seed).

    prepare (skip a complete cell) -> compute (ICM searches if the condition needs them, the
    condition's examples, in-context inference on the held-out fold, metrics) -> write the result
    files -> log to W&B.

The cell knows conditions only through :class:`plural_icm.conditions.base.Condition`; it never
names one. A cell whose directory holds ``COMPLETE.json`` is skipped (no model is loaded); a cell
directory holding results of *different* settings is never overwritten (change ``run_tag``):
pipeline/existing_results.py. The base model's work may run in a child process
(pipeline/child_process.py); the files are written by :func:`plural_icm.layout.write_cell_files`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from plural_icm.backends.registry import make_judge
from plural_icm.conditions.base import (
    CellInputs,
    Condition,
    ConditionLabels,
    ordered_examples,
)
from plural_icm.conditions.labels import cap_search_claims, label_accuracy
from plural_icm.conditions.registry import condition_settings, get_condition
from plural_icm.config.settings import Settings, expect_settings
from plural_icm.data.records import ClaimSet
from plural_icm.data.registry import load_claimset
from plural_icm.inference.predict import predict, predict_groups
from plural_icm.inference.steered import SteeringJob, generate_and_judge_all
from plural_icm.layout import (
    CellMeta,
    CellOutput,
    CellResult,
    ExampleRow,
    GenerationRow,
    PredictionRow,
    cell_name,
    cell_path,
    condition_part,
    fingerprint,
    selection_tag,
    write_cell_files,
)
from plural_icm.metrics.aggregate import (
    add_persona_values,
    add_representation,
    perturbation_mean_metrics,
)
from plural_icm.metrics.finite import check_metrics_finite
from plural_icm.pipeline.child_process import (
    base_model_work_due,
    base_work_in_child_process,
    run_in_child_process,
)
from plural_icm.pipeline.existing_results import cell_fingerprint, load_if_complete, prepare_cell_dir
from plural_icm.pipeline.models import Backends
from plural_icm.pipeline.searches import (
    icm_protocol,
    model_identity,
    run_searches_for,
    search_tasks,
)
from plural_icm.pipeline.slurm import slurm_job_info
from plural_icm.selection import per_query
from plural_icm.selection.apply import (
    PersonaQueries,
    check_selection,
    embedder_from_config,
    needs_embeddings,
    reads_gold,
    select_for_cell,
    selection_rows,
)
from plural_icm.tracking.results import log_cell_result

log = logging.getLogger(__name__)

# Backends, run_searches_for, search_tasks and model_identity live in pipeline/models.py and
# pipeline/searches.py (every stage uses them); add_representation in metrics/aggregate.py; the
# skip/force protocol in pipeline/existing_results.py; the child process in
# pipeline/child_process.py; the writing of the cell's files beside their records in layout.py.
# They stay importable from here for code written against the former cell module.
__all__ = [
    "Backends",
    "add_representation",
    "base_model_work_due",
    "base_work_in_child_process",
    "cap_search_claims",
    "cell_name",
    "cell_path",
    "fingerprint",
    "model_identity",
    "run_cell",
    "run_searches_for",
    "search_tasks",
]


# -- the cell as named steps ------------------------------------------------------------------

def run_cell(settings: Settings, wb: Any = None) -> dict:
    """Run (or skip) one cell and return its metrics (the content of ``metrics.json``).
    ``settings``: the job's typed :class:`~plural_icm.config.settings.Settings`."""
    s = expect_settings(settings, "run_cell")
    out, fp = cell_path(s), cell_fingerprint(s)  # the fingerprint hashes the record
    done = load_if_complete(s, out, fp)
    if done is not None:
        return done
    # the data and the fold are checked before the W&B run exists: an error that needs no model
    # (fold=7, a dataset without its data) leaves no failed run behind
    data = cell_data(s)
    if wb is not None:
        wb.start()  # the W&B run begins with the work (a skipped cell, above, starts none)
    t0 = time.perf_counter()
    print(f"[plural_icm] cell {cell_name(s)} -> {out}", flush=True)
    result = compute_cell(s, get_condition(s.condition.name), wb, data=data)
    result.metrics["meta"]["wall_time_s"] = time.perf_counter() - t0
    # a NaN fails the cell, never completes it; checked before the directory exists, so a failed
    # (or invalid, e.g. fold=7) cell leaves nothing behind
    check_metrics_finite(result.metrics, where=str(out))
    prepare_cell_dir(s, out)
    write_cell_files(out, s.composed, result, open_ended=s.dataset.open_ended, fp=fp, started=t0,
                     slurm=slurm_job_info())
    log_cell(wb, out, s, result)
    return result.metrics


def compute_cell(settings: Settings, condition: Condition, wb: Any = None,
                 data: tuple[ClaimSet, list[str]] | None = None) -> CellOutput:
    """Searches (if the condition needs them), the condition's examples, inference, metrics
    (``data``: :func:`cell_data`, when the caller loaded it already)."""
    s = settings
    claimset, personas = data or cell_data(s)
    check_selection(s)  # before any model work: a bad selection setting fails at once
    role = condition.model_role(condition_settings(condition, s.condition))
    backends = Backends(s)
    queries: dict[str, PersonaQueries] | None = None
    try:
        if base_work_in_child_process(s, role) and base_model_work_due(s, condition, claimset,
                                                                        personas):
            labelled = examples_in_child_process(s)
            if condition.needs_search and wb is not None:  # log them: on disk now, no engine loaded
                run_searches_for(s, claimset, personas, backends, wb=wb)
        else:
            labelled = condition_examples(s, condition, claimset, personas, backends, wb)
        if per_query(s):
            queries = select_queries(s, claimset, labelled, condition)
        backend = backends.get(role)
        rows = predict_personas(s, claimset, labelled, backend, base=role == "base", queries=queries)
        generations = (steered_generation(s, claimset, labelled, backend, queries)
                       if s.dataset.open_ended else [])
        stats = backend.stats.as_dict()
    finally:
        backends.close()
    metrics = perturbation_mean_metrics(pd.DataFrame([r.as_dict() for r in rows]), claimset.rule)
    add_condition_metrics(metrics, labelled)
    if queries is not None:
        add_selection_metrics(metrics, queries)
    if s.dataset.open_ended:
        add_representation(metrics, [g.as_dict() for g in generations])
        metrics["overall"].update(judge_info(s.inference, s.model))
    meta = CellMeta(model=s.model.name, dataset=s.dataset.name,
                    condition=s.condition.name, fold=s.fold, seed=s.seed,
                    n_examples=s.inference.n_examples, run_tag=s.run_tag,
                    score_metric=s.dataset.score_metric.value, backend_stats=stats,
                    # which search protocol produced the examples (the report marks it)
                    **(icm_protocol(s) if condition.needs_search else {}),
                    **selection_meta(s, condition))
    metrics = CellResult(metrics["overall"], metrics["per_persona"], meta.as_dict()).as_dict()
    examples = [ExampleRow(persona_id=pid, item_id=c.item_id, label=y, gold=c.gold)
                for pid, cl in labelled.items() for c, y in cl.examples]
    return CellOutput(rows, examples, metrics, generations,
                      selection_rows(queries) if queries is not None else [])


def select_queries(cfg: Settings, claimset: ClaimSet, labelled: dict[str, ConditionLabels],
                   condition: Condition) -> dict[str, PersonaQueries]:
    """The examples of each held-out question (``selection`` other than ``all``); the embedding
    model, when one is needed, is loaded here and released before inference."""
    holder: list[Any] = []

    def embedder():
        if not holder:
            holder.append(embedder_from_config(cfg))
        return holder[0]

    try:
        return select_for_cell(cfg, claimset, labelled, embedder if needs_embeddings(cfg) else None,
                               condition.needs_search)
    finally:
        for e in holder:
            log.info("embeddings: %d model call(s), %d text(s) computed, %d from the cache",
                     e.calls, e.texts_computed, e.texts_cached)
            e.close()


def selection_meta(cfg: Settings, condition: Condition) -> dict:
    """The selection behind a cell's examples, for its meta (absent under ``selection=all``):
    its path tag and whether it read gold (``spica`` with the gold group source)."""
    tag = selection_tag(cfg)
    if tag is None:
        return {}
    return {"selection": tag, "selection_supervised": reads_gold(cfg, condition.needs_search)}


def add_selection_metrics(metrics: dict, queries: dict[str, PersonaQueries]) -> None:
    """Per persona: the selection's scalars (retrieval error, fitted weights); overall: the mean
    over the personas that have each numeric one."""
    scalars: dict[str, list[float]] = {}
    for pid, pq in queries.items():
        metrics["per_persona"].setdefault(pid, {}).update(pq.metrics)
        for key, v in pq.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                scalars.setdefault(key, []).append(float(v))
    for key, vs in scalars.items():
        metrics["overall"][key] = sum(vs) / len(vs)


def cell_data(settings: Settings) -> tuple[ClaimSet, list[str]]:
    """The cell's dataset and its personas (sorted), the fold checked against the data."""
    s = expect_settings(settings, "cell_data")
    claimset = load_claimset(s.dataset, s.paths.data_dir)
    claimset.split(s.fold)  # the fold must be one of the data's (valid folds follow from the data)
    return claimset, sorted(claimset.personas)


def condition_examples(settings: Settings, condition: Condition, claimset: ClaimSet,
                       personas: list[str], backends: Backends,
                       wb: Any = None) -> dict[str, ConditionLabels]:
    """The condition's examples per persona, with the searches they need: all of a cell's base
    model work (the base model is loaded only if a search or the condition asks for it)."""
    s = settings
    searches = run_searches_for(s, claimset, personas, backends, wb=wb) if condition.needs_search else {}
    inputs = CellInputs(condition_settings(condition, s.condition), claimset,
                        lambda: backends.get("base"), searches, icm=s.icm, dataset=s.dataset,
                        fold=s.fold, seed=s.seed,
                        # under a per-query selection every search claim is labelled
                        n_examples=None if per_query(s) else s.inference.n_examples,
                        progress=s.progress)

    def examples(pid: str) -> ConditionLabels:
        if not inputs.search_claims(pid):
            # every item of the persona is in the held-out fold (small personas, small data): no
            # search ran for it (pipeline/searches.py), so no condition has examples to show
            log.warning("%s fold %s: persona %r has no training claims; its queries get no "
                        "examples under every condition", s.dataset.name, s.fold, pid)
            return ConditionLabels(examples=[], details={"no_training_claims": True})
        return condition.examples(inputs, pid)

    return {pid: ordered_examples(examples(pid), s, pid) for pid in personas}


def examples_in_child_process(s: Settings) -> dict[str, ConditionLabels]:
    """:func:`condition_examples` in a fresh process (pipeline/child_process.py), whose exit frees
    every byte its engine held. Searches it computes are on disk for the parent."""
    log.info("base model work of this cell in a child process (model.engine_per_process)")
    return run_in_child_process(base_model_examples, s)


def base_model_examples(s: Settings) -> dict[str, ConditionLabels]:
    """The child process's job: the cell's data, its base model and the condition's examples."""
    claimset, personas = cell_data(s)
    backends = Backends(s)
    try:
        return condition_examples(s, get_condition(s.condition.name), claimset, personas, backends)
    finally:
        backends.close()


def predict_personas(s: Settings, claimset: ClaimSet, labelled: dict[str, ConditionLabels],
                     backend: Any, base: bool = False,
                     queries: dict[str, PersonaQueries] | None = None) -> list[PredictionRow]:
    """Every persona's held-out claims, once per example set of its condition (``base``: the
    backend is the base model, always prompted as plain text). With ``queries`` (a per-query
    selection) each held-out question is prompted with its own examples."""
    rows: list[PredictionRow] = []
    cell = {"model": s.model.name, "dataset": s.dataset.name,
            "condition": condition_part(s), "fold": s.fold, "seed": s.seed}
    n_claims = sum(len(claimset.split(s.fold, pid)[1]) * len(cl.perturbations or [0])
                   for pid, cl in labelled.items())
    bar = tqdm(total=n_claims, desc="inference", unit="claim", disable=not s.progress)
    for pid in sorted(labelled):
        _, test = claimset.split(s.fold, pid)
        cl = labelled[pid]
        bar.set_postfix_str(pid)
        for k, examples in enumerate(cl.perturbations or [cl.examples]):
            if queries is None:
                preds, _ = predict(backend, s.inference, claimset.personas[pid], examples, test,
                                   base=base, progress=bar.update)
            else:
                preds = predict_per_question(s, claimset, pid, queries[pid].sets[k], test, backend,
                                             base, bar.update)
            for r in preds:
                r.perturbation = k if cl.perturbations else None
                for key, v in cell.items():
                    setattr(r, key, v)
            rows += preds
    bar.close()
    return rows


def predict_per_question(s: Settings, claimset: ClaimSet, pid: str, per_question: dict,
                         test: list, backend: Any, base: bool, progress: Any) -> list[PredictionRow]:
    """The held-out claims of each question with that question's examples (one prompt prefix per
    question, the questions' prompts scored together so the backend batches their prefixes), in
    the order of ``test``."""
    by_q: dict[str, list] = {}
    for c in test:
        by_q.setdefault(c.question_id, []).append(c)
    groups = [(per_question[q], claims) for q, claims in by_q.items()]
    got: dict[str, PredictionRow] = {}
    for preds, _ in predict_groups(backend, s.inference, claimset.personas[pid], groups,
                                   base=base, progress=progress):
        got.update({r.item_id: r for r in preds})
    return [got[c.item_id] for c in test]


def add_condition_metrics(metrics: dict, labelled: dict[str, ConditionLabels]) -> None:
    """Per persona: the condition's scalar metrics and details, the number of examples and their
    label accuracy vs gold; overall: the mean of each scalar over the personas that have it."""
    values = {pid: {**cl.metrics, "n_examples": len(cl.examples),
                    "example_label_accuracy": label_accuracy([c for c, _ in cl.examples],
                                                             {c.item_id: y for c, y in cl.examples})}
              for pid, cl in labelled.items()}
    add_persona_values(metrics, values, {pid: cl.details for pid, cl in labelled.items()},
                       not_averaged=("n_examples",))


def steered_generation(s: Settings, claimset: ClaimSet, labelled: dict[str, ConditionLabels],
                       backend: Any, queries: dict[str, PersonaQueries] | None = None
                       ) -> list[GenerationRow]:
    """Open-ended data: an answer per held-out question, steered by the condition's
    representative examples, rated 1-5 by the judge (:func:`judge_backend`). ``acc_matched``
    generates and judges with every perturbation (rows carry ``perturbation``), as its claim
    metrics average them all."""
    judge = judge_backend(s, backend)
    # selection.prompt=contrastive_response: SPICA's C-R, the non-representative answers shown too
    contrastive = queries is not None and s.selection.prompt == "contrastive_response"
    jobs = []
    for pid in sorted(labelled):
        _, test = claimset.split(s.fold, pid)
        cl = labelled[pid]
        persona = claimset.personas[pid]
        for k, examples in enumerate(cl.perturbations or [cl.examples]):
            extra = {"perturbation": k if cl.perturbations else None}
            if queries is None:
                jobs.append(SteeringJob(persona, examples, test, extra))
            else:  # a per-query selection: each held-out question steered by its own examples
                jobs += [SteeringJob(persona, ex, [c for c in test if c.question_id == q], extra,
                                     contrastive=contrastive)
                         for q, ex in sorted(queries[pid].sets[k].items())]
    try:
        # every answer, then every rating: each phase has its own bar, rate and time left
        return [GenerationRow(**r) for r in
                generate_and_judge_all(backend, judge, s.inference, jobs, s.seed, show=s.progress)]
    finally:
        if judge is not backend:
            judge.close()


def judge_backend(s: Settings, backend: Any) -> Any:
    """The OvertonBench judge: the model under test unless ``inference.judge_model`` names another
    checkpoint (loaded with ``inference.judge_backend``, default the model's backend) or, with
    ``judge_backend=openai``, a model behind an OpenAI-compatible ``inference.judge_api_base``
    (key from the env var ``inference.judge_api_key_env``). The paper used OvertonBench's
    validated judge; a self-judged score is marked as not comparable in the report."""
    inf, model = s.inference, s.model
    if not inf.judge_model:
        return backend
    return make_judge(inf.judge_backend or model.backend, inf.judge_model,
                      cache_dir=s.paths.cache_dir, max_context=model.max_context,
                      dtype=model.dtype, api_base=inf.judge_api_base,
                      api_key_env=inf.judge_api_key_env)


def judge_info(inference: Any, model: Any) -> dict:
    """Which judge rated the answers (the typed ``inference`` and ``model`` settings), and whether
    it is the model under test (then the scores are not comparable with the paper's, judged by
    OvertonBench's validated judge)."""
    judge = inference.judge_model
    self_judged = not judge or str(judge) in (str(model.instruct), str(model.base))
    validation = inference.judge_validation
    return {"judge_model": str(judge or model.instruct), "judge_is_model_under_test": self_judged,
            # the report calls OT scores comparable with the paper's only with a stated validation
            "judge_validation": str(validation) if validation and not self_judged else None}


def log_cell(wb: Any, out: Path, s: Settings, result: CellOutput) -> None:
    """Metrics, predictions table and the result files as an Artifact (tracking/results.py)."""
    if wb is not None:
        log_cell_result(wb, out, s.paths.results_dir, result.metrics,
                        pd.DataFrame([r.as_dict() for r in result.predictions]))
