"""One cell of the grid: (model, dataset, condition, n_examples, fold, seed).

    prepare (skip a complete cell) -> compute (ICM searches if the condition needs them, the
    condition's examples, in-context inference on the held-out fold, metrics) -> write the result
    files -> log to W&B.

The cell knows conditions only through :class:`plural_icm.conditions.base.Condition`; it never
names one. A cell whose directory holds ``COMPLETE.json`` is skipped (no model is loaded); a cell
directory holding results of *different* settings is never overwritten (change ``run_tag``).
"""

from __future__ import annotations

import json
import math
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from plural_icm.backends.registry import backend_from_model_config, make_backend
from plural_icm.backends.settings import result_engine_settings
from plural_icm.config.secrets import scrub_secrets
from plural_icm.conditions.base import CellInputs, Condition, ConditionLabels, ordered_examples
from plural_icm.conditions.labels import cap_search_claims, label_accuracy
from plural_icm.conditions.registry import get_condition
from plural_icm.data.records import ClaimSet
from plural_icm.data.registry import load_claimset
from plural_icm.inference.predict import predict
from plural_icm.errors import ResultsConflictError
from plural_icm.inference.steered import generate_and_judge
from plural_icm.layout import (CELL_FILES, COMPLETE, CONFIG, EXAMPLES, GENERATIONS, METRICS, PREDICTIONS,
                               CellMeta, CellResult, CompleteRecord, ExampleRow, PredictionRow, cell_name,
                               cell_path, fingerprint, is_complete)
from plural_icm.metrics.aggregate import perturbation_mean_metrics, representation_summary
from plural_icm.metrics.finite import check_metrics_finite
from plural_icm.pipeline.slurm import slurm_job_info
from plural_icm.search.engine import SearchParams
from plural_icm.search.store import SearchTask, all_on_disk, run_or_load
from plural_icm.search.progress import SearchProgress
from plural_icm.search.units import best_per_persona, search_sets
from plural_icm.tracking.results import log_cell_result
from plural_icm.tracking.searches import SearchTracker
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from plural_icm.utils.values import plain

log = logging.getLogger(__name__)

__all__ = ["Backends", "run_cell", "run_searches_for", "search_tasks", "cap_search_claims",
           "cell_name", "cell_path", "fingerprint"]


class Backends:
    """Loads each checkpoint at most once per job, and only when something must be computed.

    The base model (search) is released before a *different* instruct model is loaded, since a
    GPU job holds one engine at a time (vLLM cannot start a second engine in one process).
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._current: tuple[str, Any] | None = None

    def get(self, role: str) -> Any:
        spec = self.cfg.model.base if role == "base" else self.cfg.model.instruct
        if self._current and self._current[0] == spec:
            return self._current[1]
        self.close()
        log.info("loading %s model %s (%s backend) ...", role, spec, plain(self.cfg.model.backend))
        t0 = time.perf_counter()
        backend = backend_from_model_config(self.cfg.model, role, self.cfg.paths.cache_dir)
        log.info("loaded %s model %s in %.1f s", role, spec, time.perf_counter() - t0)
        self._current = (spec, backend)
        return backend

    def close(self) -> None:
        if self._current:
            self._current[1].close()
            self._current = None


# -- ICM searches -----------------------------------------------------------------------------

def search_tasks(cfg: DictConfig, claimset: ClaimSet, backend_identity: dict,
                 personas: list[str], fold: int, fixed: dict[str, dict[str, bool]] | None = None):
    """The ICM searches a cell needs: per persona, restart and search set (icm.search_unit: the
    training claims, or each training fold part of them; plural_icm.search.units)."""
    params = SearchParams.from_config(cfg.icm)
    unit = plain(cfg.icm.search_unit)
    tasks = []
    for pid in personas:
        train, _ = claimset.split(fold, pid)
        train = cap_search_claims(train, cfg.dataset.max_search_claims, cfg.seed)
        pid_fixed = (fixed or {}).get(pid, {})
        for part, claims in search_sets(train, claimset.folds, unit):
            ids = {c.item_id for c in claims}
            for r in range(int(cfg.icm.restarts)):
                tasks.append(SearchTask(
                    model=cfg.model.name, dataset=cfg.dataset.name,
                    fold=fold if part is None else part, persona=pid, claims=claims,
                    rule=claimset.rule, params=params, seed=int(cfg.seed) * 1000 + r,
                    template=cfg.icm.template, labels=tuple(cfg.icm.labels),
                    model_identity=backend_identity,
                    fixed={k: v for k, v in pid_fixed.items() if k in ids},
                    search_unit=unit, part=part))
    return tasks


def model_identity(cfg: DictConfig) -> dict:
    """What identifies the base model for search hashing, without loading it."""
    return {"backend": plain(cfg.model.backend), "model": cfg.model.base,
            "revision": cfg.model.revision, "dtype": cfg.model.dtype,
            **result_engine_settings(cfg.model)}


def run_searches_for(cfg: DictConfig, claimset: ClaimSet, personas: list[str], backends: Backends,
                     fixed: dict[str, dict[str, bool]] | None = None, desc: str = "ICM search",
                     wb: Any = None) -> dict[str, Any]:
    """Best-of-restarts ICM search result per persona (run, resumed or loaded; the parts of a
    persona merged when icm.search_unit=part)."""
    tasks = search_tasks(cfg, claimset, model_identity(cfg), personas, cfg.fold, fixed)
    progress = SearchProgress(tasks, cfg.paths.searches_dir, desc, enabled=bool(cfg.progress))
    tracker = SearchTracker(wb, cfg.paths.searches_dir)

    def on_iteration(task, row):
        progress(task, row)
        tracker.on_iteration(task, row)

    try:
        stored = run_or_load(tasks, cfg.paths.searches_dir, lambda: backends.get("base"), on_iteration)
    finally:
        progress.close()
    tracker.finished(stored)
    by_persona: dict[str, list] = {}
    for s in stored:
        by_persona.setdefault(s.task.persona, []).append(s)
    for pid, ss in by_persona.items():
        for s in ss:
            log.info("search %s fold %d seed %d: %s (%s)", pid, cfg.fold, s.task.seed,
                     "computed" if s.computed else "loaded", s.path)
            if s.summary.get("warning"):
                log.warning("search %s (%s): %s", pid, s.path, s.summary["warning"])
    return best_per_persona(stored)


def icm_protocol(cfg: DictConfig) -> dict:
    """The ICM settings a number depends on beyond the hyperparameters, for the result's meta."""
    return {"icm_preset": plain(cfg.icm.preset),
            "search_unit": plain(cfg.icm.search_unit), "seed_labels": plain(cfg.icm.seed_labels)}


# -- the cell as named steps ------------------------------------------------------------------

@dataclass
class CellOutput:
    """What a computed cell writes."""

    predictions: list[PredictionRow]
    examples: list[ExampleRow]
    metrics: dict
    generations: list[dict] = field(default_factory=list)


def run_cell(cfg: DictConfig, wb: Any = None) -> dict:
    """Run (or skip) one cell and return its metrics (the content of ``metrics.json``)."""
    out, fp = cell_path(cfg), fingerprint(cfg)
    done = load_if_complete(cfg, out, fp)
    if done is not None:
        return done
    if wb is not None:
        wb.start()  # the W&B run begins with the work (a skipped cell, above, starts none)
    t0 = time.perf_counter()
    print(f"[plural_icm] cell {cell_name(cfg)} -> {out}", flush=True)
    result = compute_cell(cfg, get_condition(plain(cfg.condition.name)), wb)
    result.metrics["meta"]["wall_time_s"] = time.perf_counter() - t0
    # a NaN fails the cell, never completes it; checked before the directory exists, so a failed
    # (or invalid, e.g. fold=7) cell leaves nothing behind
    check_metrics_finite(result.metrics, where=str(out))
    prepare_cell_dir(cfg, out)
    write_cell(cfg, out, fp, result, t0)
    log_cell(wb, out, cfg, result)
    return result.metrics


def load_if_complete(cfg: DictConfig, out: Path, fp: str) -> dict | None:
    """The stored metrics of a complete cell of the same settings (None: compute it). Raises when
    the complete cell holds results of different settings and ``force`` is off."""
    if not is_complete(out, CELL_FILES) or cfg.force:
        return None
    done = CompleteRecord.read(out)
    if done.fingerprint != fp:
        raise ResultsConflictError(
            f"{out} holds results of different settings (fingerprint {done.fingerprint} != {fp}); "
            "they are never overwritten: set run_tag=<name> to keep both, or force=true to "
            "recompute (the old results are moved aside)")
    log.info("skip complete cell %s (%s)", cell_name(cfg), out)
    return json.loads((out / METRICS).read_text(encoding="utf-8"))


def prepare_cell_dir(cfg: DictConfig, out: Path) -> None:
    """Create the cell's directory; under ``force``, move complete old results aside first."""
    if cfg.force and is_complete(out, CELL_FILES):
        aside = out.with_name(out.name + f".replaced-{int(time.time())}")
        shutil.move(str(out), aside)
        log.warning("force=true: moved the old results to %s", aside)
    if (out / COMPLETE).exists() and not is_complete(out, CELL_FILES):
        log.warning("%s: COMPLETE.json without its results; recomputing the cell", out)
        (out / COMPLETE).unlink()
    out.mkdir(parents=True, exist_ok=True)


def compute_cell(cfg: DictConfig, condition: Condition, wb: Any = None) -> CellOutput:
    """Searches (if the condition needs them), the condition's examples, inference, metrics."""
    claimset, personas = cell_data(cfg)
    role = condition.model_role(cfg)
    backends = Backends(cfg)
    try:
        if base_work_in_child_process(cfg, role) and base_model_work_due(cfg, condition, claimset,
                                                                          personas):
            labelled = examples_in_child_process(cfg)
            if condition.needs_search and wb is not None:  # log them: on disk now, no engine loaded
                run_searches_for(cfg, claimset, personas, backends, wb=wb)
        else:
            labelled = condition_examples(cfg, condition, claimset, personas, backends, wb)
        backend = backends.get(role)
        rows = predict_personas(cfg, claimset, labelled, backend, base=role == "base")
        generations = steered_generation(cfg, claimset, labelled, backend) if cfg.dataset.open_ended else []
        stats = backend.stats.as_dict()
    finally:
        backends.close()
    metrics = perturbation_mean_metrics(pd.DataFrame([r.as_dict() for r in rows]), claimset.rule)
    add_condition_metrics(metrics, labelled)
    if cfg.dataset.open_ended:
        add_representation(metrics, generations)
        metrics["overall"].update(judge_info(cfg))
    meta = CellMeta(model=cfg.model.name, dataset=cfg.dataset.name,
                    condition=plain(cfg.condition.name), fold=cfg.fold, seed=cfg.seed,
                    n_examples=cfg.inference.n_examples, run_tag=cfg.run_tag,
                    score_metric=plain(cfg.dataset.get("score_metric")), backend_stats=stats,
                    # which search protocol produced the examples (the report marks it)
                    **(icm_protocol(cfg) if condition.needs_search else {}))
    metrics = CellResult(metrics["overall"], metrics["per_persona"], meta.as_dict()).as_dict()
    examples = [ExampleRow(persona_id=pid, item_id=c.item_id, label=y, gold=c.gold)
                for pid, cl in labelled.items() for c, y in cl.examples]
    return CellOutput(rows, examples, metrics, generations)


def cell_data(cfg: DictConfig) -> tuple[ClaimSet, list[str]]:
    """The cell's dataset and its personas (sorted), the fold checked against the data."""
    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    claimset.split(cfg.fold)  # the fold must be one of the data's (valid folds follow from the data)
    return claimset, sorted(claimset.personas)


def condition_examples(cfg: DictConfig, condition: Condition, claimset: ClaimSet, personas: list[str],
                       backends: Backends, wb: Any = None) -> dict[str, ConditionLabels]:
    """The condition's examples per persona, with the searches they need: all of a cell's base
    model work (the base model is loaded only if a search or the condition asks for it)."""
    searches = run_searches_for(cfg, claimset, personas, backends, wb=wb) if condition.needs_search else {}
    inputs = CellInputs(cfg, claimset, lambda: backends.get("base"), searches)
    return {pid: ordered_examples(condition.examples(inputs, pid), cfg, pid) for pid in personas}


def base_work_in_child_process(cfg: DictConfig, role: str) -> bool:
    """Whether the base model's work runs in a child process (``model.engine_per_process``; null:
    for vLLM, which does not reliably free GPU memory when an engine is closed). Only needed when
    the cell then loads a different (instruct) checkpoint."""
    if role == "base" or str(cfg.model.base) == str(cfg.model.instruct):
        return False
    flag = cfg.model.get("engine_per_process")
    return plain(cfg.model.backend) == "vllm" if flag is None else bool(flag)


def base_model_work_due(cfg: DictConfig, condition: Condition, claimset: ClaimSet,
                        personas: list[str]) -> bool:
    """Whether the condition's examples need the base model: it says it uses it, or a search it
    needs is not complete on disk. Otherwise the cell never starts a child process for nothing."""
    if condition.uses_base_model:
        return True
    if not condition.needs_search:
        return False
    tasks = search_tasks(cfg, claimset, model_identity(cfg), personas, cfg.fold, None)
    return not all_on_disk(tasks, cfg.paths.searches_dir)


def examples_in_child_process(cfg: DictConfig) -> dict[str, ConditionLabels]:
    """:func:`condition_examples` in a fresh (spawned) process, whose exit frees every byte its
    engine held. Searches it computes are on disk for the parent; their W&B rows are not live."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    resolved = cfg.copy()
    OmegaConf.resolve(resolved)  # ${hydra:...} interpolations cannot resolve in the child
    log.info("base model work of this cell in a child process (model.engine_per_process)")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_condition_examples_job, resolved).result()


def _condition_examples_job(cfg: DictConfig) -> dict[str, ConditionLabels]:
    """Child-process entry of :func:`examples_in_child_process`."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    claimset, personas = cell_data(cfg)
    backends = Backends(cfg)
    try:
        return condition_examples(cfg, get_condition(plain(cfg.condition.name)), claimset, personas,
                                  backends)
    finally:
        backends.close()


def predict_personas(cfg: DictConfig, claimset: ClaimSet, labelled: dict[str, ConditionLabels],
                     backend: Any, base: bool = False) -> list[PredictionRow]:
    """Every persona's held-out claims, once per example set of its condition (``base``: the
    backend is the base model, always prompted as plain text)."""
    rows: list[PredictionRow] = []
    cell = {"model": cfg.model.name, "dataset": cfg.dataset.name,
            "condition": plain(cfg.condition.name), "fold": cfg.fold, "seed": cfg.seed}
    n_claims = sum(len(claimset.split(cfg.fold, pid)[1]) * len(cl.perturbations or [0])
                   for pid, cl in labelled.items())
    bar = tqdm(total=n_claims, desc="inference", unit="claim", disable=not cfg.progress)
    for pid in sorted(labelled):
        _, test = claimset.split(cfg.fold, pid)
        cl = labelled[pid]
        bar.set_postfix_str(pid)
        for k, examples in enumerate(cl.perturbations or [cl.examples]):
            preds, _ = predict(backend, cfg.inference, claimset.personas[pid], examples, test,
                               base=base, progress=bar.update)
            for r in preds:
                r.perturbation = k if cl.perturbations else None
                for key, v in cell.items():
                    setattr(r, key, v)
            rows += preds
    bar.close()
    return rows


def add_condition_metrics(metrics: dict, labelled: dict[str, ConditionLabels]) -> None:
    """Per persona: the condition's scalar metrics and details, the number of examples and their
    label accuracy vs gold; overall: the mean of each scalar over the personas that have it."""
    scalars: dict[str, list[float]] = {}
    for pid, cl in labelled.items():
        pm = metrics["per_persona"].setdefault(pid, {})
        values = {**cl.metrics, "n_examples": len(cl.examples),
                  "example_label_accuracy": label_accuracy([c for c, _ in cl.examples],
                                                           {c.item_id: y for c, y in cl.examples})}
        pm.update(values)
        pm.update(cl.details)
        for k, v in values.items():
            scalars.setdefault(k, [])
            if v is not None:
                scalars[k].append(float(v))
    for k, vs in scalars.items():
        if k != "n_examples":
            metrics["overall"][k] = sum(vs) / len(vs) if vs else None


def steered_generation(cfg: DictConfig, claimset: ClaimSet, labelled: dict[str, ConditionLabels],
                       backend: Any) -> list[dict]:
    """Open-ended data: an answer per held-out question, steered by the condition's
    representative examples, rated 1-5 by the judge (:func:`judge_backend`). ``acc_matched``
    generates and judges with every perturbation (rows carry ``perturbation``), as its claim
    metrics average them all."""
    judge = judge_backend(cfg, backend)
    rows = []
    try:
        for pid in tqdm(sorted(labelled), desc="generation + judge", unit="persona", disable=not cfg.progress):
            _, test = claimset.split(cfg.fold, pid)
            cl = labelled[pid]
            for k, examples in enumerate(cl.perturbations or [cl.examples]):
                got = generate_and_judge(backend, judge, cfg.inference, claimset.personas[pid],
                                         examples, test, int(cfg.seed))
                rows += [r | {"perturbation": k if cl.perturbations else None} for r in got]
    finally:
        if judge is not backend:
            judge.close()
    return rows


def judge_backend(cfg: DictConfig, backend: Any) -> Any:
    """The OvertonBench judge: the model under test unless ``inference.judge_model`` names another
    checkpoint (loaded with ``inference.judge_backend``, default the model's backend) or, with
    ``judge_backend=openai``, a model behind an OpenAI-compatible ``inference.judge_api_base``
    (key from the env var ``inference.judge_api_key_env``). The paper used OvertonBench's
    validated judge; a self-judged score is marked as not comparable in the report."""
    inf = cfg.inference
    if not inf.judge_model:
        return backend
    kind = plain(inf.get("judge_backend") or cfg.model.backend)
    kwargs = {"cache_dir": cfg.paths.cache_dir, "max_context": cfg.model.max_context}
    if kind != "openai":
        kwargs["dtype"] = cfg.model.dtype
    else:
        if not inf.get("judge_api_base"):
            raise ValueError("inference.judge_backend=openai needs inference.judge_api_base "
                             "(the server URL, e.g. http://host:8000/v1)")
        kwargs |= {"api_base": inf.judge_api_base,
                   "api_key_env": inf.get("judge_api_key_env") or "OPENAI_API_KEY"}
    return make_backend(kind, model_spec=inf.judge_model, **kwargs)


def judge_info(cfg: DictConfig) -> dict:
    """Which judge rated the answers, and whether it is the model under test (then the scores are
    not comparable with the paper's, judged by OvertonBench's validated judge)."""
    judge = cfg.inference.judge_model
    self_judged = not judge or str(judge) in (str(cfg.model.instruct), str(cfg.model.base))
    validation = cfg.inference.get("judge_validation")
    return {"judge_model": str(judge or cfg.model.instruct), "judge_is_model_under_test": self_judged,
            # the report calls OT scores comparable with the paper's only with a stated validation
            "judge_validation": str(validation) if validation and not self_judged else None}


def add_representation(metrics: dict, generations: list[dict]) -> None:
    """Representation score = mean of the persona means (the paper's 4.29 is the plain mean of
    its three persona values; pooling answers weights personas by their question counts), SE of
    that mean from the persona SEs; ``representation_pooled`` keeps the pooled mean. With
    perturbations (acc_matched), each is summarised and the summaries averaged."""
    if not generations:
        return
    df = pd.DataFrame(generations)
    parts = [g for _, g in df.groupby("perturbation")] if df["perturbation"].notna().any() else [df]
    reps = [representation_summary(g) for g in parts]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    def combined_se(per: dict) -> float | None:
        ses = [r["se"] for r in per.values()]
        if not ses or any(v is None for v in ses):
            return None
        return math.sqrt(sum(v * v for v in ses)) / len(ses)

    metrics["overall"].update({
        "representation_score": mean([r["overall"]["persona_mean"] for r in reps]),
        "representation_se": mean([combined_se(r["per_persona"]) for r in reps]),
        "representation_pooled": mean([r["overall"]["mean"] for r in reps]),
        "representation_missing": sum(r["overall"]["n_missing"] for r in reps),
        "representation_perturbations": len(reps)})
    for pid in reps[0]["per_persona"]:
        rs = [r["per_persona"][pid] for r in reps if pid in r["per_persona"]]
        metrics["per_persona"].setdefault(pid, {}).update(
            {"representation_score": mean([r["mean"] for r in rs]),
             "representation_se": mean([r["se"] for r in rs]),
             "representation_missing": sum(r["n_missing"] for r in rs)})


def write_cell(cfg: DictConfig, out: Path, fp: str, result: CellOutput, t0: float) -> None:
    """The result files, each atomic; ``COMPLETE.json`` last."""
    atomic_write_text(out / CONFIG, OmegaConf.to_yaml(OmegaConf.create(
        scrub_secrets(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))))
    atomic_write_jsonl(out / PREDICTIONS, (r.as_dict() for r in result.predictions))
    atomic_write_jsonl(out / EXAMPLES, (e.as_dict() for e in result.examples))
    if cfg.dataset.open_ended:
        atomic_write_jsonl(out / GENERATIONS, result.generations)
    atomic_write_json(out / METRICS, result.metrics)
    atomic_write_json(out / COMPLETE, CompleteRecord(
        fingerprint=fp, finished=time.time(), wall_time_s=time.perf_counter() - t0,
        slurm=slurm_job_info()).as_dict())


def log_cell(wb: Any, out: Path, cfg: DictConfig, result: CellOutput) -> None:
    """Metrics, predictions table and the result files as an Artifact (tracking/results.py)."""
    if wb is not None:
        log_cell_result(wb, out, cfg.paths.results_dir, result.metrics,
                        pd.DataFrame([r.as_dict() for r in result.predictions]))
