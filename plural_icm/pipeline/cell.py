"""One cell of the grid: (model, dataset, condition, n_examples, fold, seed).

    load data -> example labels for the condition (ICM searches when needed, content-addressed and
    shared between cells) -> in-context inference on the held-out fold -> metrics -> result files.

A cell whose directory holds ``COMPLETE.json`` is skipped (no model is loaded); a cell directory
holding results of *different* settings is never overwritten (change ``run_tag``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from plural_icm.data.records import Claim, ClaimSet
from plural_icm.pipeline.layout import COMPLETE, cell_dir, is_complete
from plural_icm.utils.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from plural_icm.utils.values import plain

log = logging.getLogger(__name__)

# Keys that do not change a cell's results (paths, logging, progress display, launcher).
_NON_RESULT_KEYS = ("paths", "logger", "progress", "force", "stage", "collaborative")



def fingerprint(cfg: DictConfig) -> str:
    d = OmegaConf.to_container(cfg, resolve=True)
    for k in _NON_RESULT_KEYS:
        d.pop(k, None)
    for k in ("cpus", "mem_gb", "time_min", "gpus", "api_key_env"):
        d.get("model", {}).pop(k, None)
    d.get("icm", {}).pop("checkpoint_every", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_name(cfg: DictConfig) -> str:
    n = "all" if cfg.inference.n_examples is None else cfg.inference.n_examples
    return f"{cfg.model.name}/{cfg.dataset.name}/{plain(cfg.condition.name)}/n{n}/fold{cfg.fold}/seed{cfg.seed}"


def cell_path(cfg: DictConfig) -> Path:
    return cell_dir(cfg.paths.results_dir, cfg.run_tag, cfg.model.name, cfg.dataset.name,
                    plain(cfg.condition.name), cfg.inference.n_examples, cfg.fold, cfg.seed)


class Backends:
    """Loads each checkpoint at most once per job, and only when something must be computed.

    The base model (search) is released before a *different* instruct model is loaded, since a
    GPU job holds one engine at a time (vLLM cannot start a second engine in one process).
    """

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self._current: tuple[str, Any] | None = None

    def get(self, role: str) -> Any:
        from plural_icm.backends.registry import backend_from_model_config

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


@dataclass
class ConditionLabels:
    """The in-context examples of one persona under the cell's condition."""

    examples: list[tuple[Claim, bool]]
    info: dict = field(default_factory=dict)
    perturbations: list[list[tuple[Claim, bool]]] | None = None


def search_tasks(cfg: DictConfig, claimset: ClaimSet, backend_identity: dict,
                 personas: list[str], fold: int, fixed: dict[str, dict[str, bool]] | None = None):
    """The ICM searches a cell needs: one per persona and restart, over its training claims."""
    from plural_icm.search.engine import SearchParams
    from plural_icm.search.store import SearchTask

    params = SearchParams.from_config(cfg.icm)
    tasks = []
    for pid in personas:
        train, _ = claimset.split(fold, pid)
        train = cap_search_claims(train, cfg.dataset.max_search_claims, cfg.seed)
        for r in range(int(cfg.icm.restarts)):
            tasks.append(SearchTask(
                model=cfg.model.name, dataset=cfg.dataset.name, fold=fold, persona=pid,
                claims=train, rule=claimset.rule, params=params, seed=int(cfg.seed) * 1000 + r,
                template=cfg.icm.template, labels=tuple(cfg.icm.labels),
                model_identity=backend_identity, fixed=(fixed or {}).get(pid, {})))
    return tasks


def cap_search_claims(train: list[Claim], cap: int | None, seed: int) -> list[Claim]:
    if cap is None or len(train) <= cap:
        return train
    from plural_icm.conditions.labels import subset_for_n_examples

    return subset_for_n_examples(train, cap, seed)


def model_identity(cfg: DictConfig) -> dict:
    """What identifies the base model for search hashing, without loading it."""
    return {"backend": plain(cfg.model.backend), "model": cfg.model.base,
            "revision": cfg.model.revision, "dtype": cfg.model.dtype}


def run_searches_for(cfg: DictConfig, claimset: ClaimSet, personas: list[str], backends: Backends,
                     fixed: dict[str, dict[str, bool]] | None = None, desc: str = "ICM search",
                     wb: Any = None) -> dict[str, Any]:
    """Best-of-restarts ICM search result per persona (run, resumed or loaded)."""
    from plural_icm.search.progress import SearchProgress
    from plural_icm.search.store import best_of_restarts, run_or_load
    from plural_icm.tracking.searches import SearchTracker

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
    return {pid: best_of_restarts(ss) for pid, ss in by_persona.items()}


def coherence_fn(cfg: DictConfig, claimset: ClaimSet, claims: list[Claim], backends: Backends) -> Callable:
    """Mutual predictability of a labelling of ``claims`` under the base model."""
    from plural_icm.search.engine import SearchParams, evaluate_labelling

    params = SearchParams.from_config(cfg.icm)

    def coherence(labels: dict[str, bool]) -> float:
        backend = backends.get("base")
        return evaluate_labelling(claims, claimset.rule, backend, params, labels,
                                  cfg.icm.template, tuple(cfg.icm.labels))[1]
    return coherence


def condition_labels(cfg: DictConfig, claimset: ClaimSet, pid: str, backends: Backends,
                     searches: dict[str, Any]) -> ConditionLabels:
    from plural_icm.conditions import labels as L

    cond = plain(cfg.condition.name)
    train, _ = claimset.split(cfg.fold, pid)
    if cond in ("zero_shot", "zero_shot_base"):
        return ConditionLabels(examples=[])
    search_claims = cap_search_claims(train, cfg.dataset.max_search_claims, cfg.seed)
    chosen = L.subset_for_n_examples(search_claims, cfg.inference.n_examples, cfg.seed)
    info: dict = {}
    if cond == "gold":
        labels = L.gold_labels(chosen)
    elif cond == "random":
        labels = L.random_labels(chosen, seed=cfg.seed)
    else:
        s = searches[pid]
        icm = {c.item_id: s.labels[c.item_id] for c in chosen}
        info = {"icm_label_accuracy": s.summary.get("label_accuracy"), "icm_U": s.summary.get("U"),
                "icm_P": s.summary.get("P"), "icm_I": s.summary.get("I"), "search": str(s.path)}
        if cond == "icm":
            labels = icm
        else:  # acc_matched
            coh = coherence_fn(cfg, claimset, chosen, backends)
            perts = L.accuracy_matched_labels(
                chosen, icm, coh, n_perturbations=int(cfg.condition.n_perturbations),
                tolerance=float(cfg.condition.accuracy_tolerance), seed=int(cfg.seed),
                max_tries=int(cfg.condition.max_perturbation_tries), rule=claimset.rule)
            info["perturbations"] = [{"accuracy": p.accuracy, "coherence": p.coherence,
                                      "n_changed": p.n_changed, "tries": p.tries} for p in perts]
            info["icm_coherence"] = perts[0].reference_coherence if perts else None
            return ConditionLabels(
                examples=[(c, perts[0].labels[c.item_id]) for c in chosen], info=info,
                perturbations=[[(c, p.labels[c.item_id]) for c in chosen] for p in perts])
    return ConditionLabels(examples=[(c, labels[c.item_id]) for c in chosen], info=info)


def run_cell(cfg: DictConfig, wb: Any = None) -> dict:
    """Run (or skip) one cell and return its metrics."""
    from plural_icm.data.registry import load_claimset
    from plural_icm.inference.predict import predict
    from plural_icm.metrics.aggregate import cell_metrics

    out = cell_path(cfg)
    fp = fingerprint(cfg)
    if is_complete(out) and not cfg.force:
        done = json.loads((out / COMPLETE).read_text())
        if done.get("fingerprint") != fp:
            raise RuntimeError(
                f"{out} holds results of different settings (fingerprint {done.get('fingerprint')} "
                f"!= {fp}); they are never overwritten: set run_tag=<name> to keep both, or force=true "
                "to recompute (the old results are moved aside)")
        log.info("skip complete cell %s (%s)", cell_name(cfg), out)
        return json.loads((out / "metrics.json").read_text())
    if out.exists() and cfg.force and is_complete(out):
        aside = out.with_name(out.name + f".replaced-{int(time.time())}")
        shutil.move(str(out), aside)
        log.warning("force=true: moved the old results to %s", aside)
    out.mkdir(parents=True, exist_ok=True)
    if wb is not None:
        wb.start()  # the W&B run begins with the work (a skipped cell, above, starts none)
    t0 = time.perf_counter()
    print(f"[plural_icm] cell {cell_name(cfg)} -> {out}", flush=True)

    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    personas = sorted(claimset.personas)
    backends = Backends(cfg)
    try:
        cond = plain(cfg.condition.name)
        searches = {}
        if cond in ("icm", "acc_matched"):
            searches = run_searches_for(cfg, claimset, personas, backends, wb=wb)
        per_persona = {pid: condition_labels(cfg, claimset, pid, backends, searches) for pid in personas}
        role = cfg.condition.model_role
        backend = backends.get(role)
        rows, example_rows, info = [], [], {}
        n_claims = sum(len(claimset.split(cfg.fold, pid)[1]) * len(per_persona[pid].perturbations or [0])
                       for pid in personas)
        bar = tqdm(total=n_claims, desc="inference", unit="claim", disable=not cfg.progress)
        for pid in personas:
            _, test = claimset.split(cfg.fold, pid)
            cl = per_persona[pid]
            sets = cl.perturbations or [cl.examples]
            bar.set_postfix_str(pid)
            for k, examples in enumerate(sets):
                preds, used = predict(backend, cfg.inference, claimset.personas[pid], examples, test,
                                      progress=bar.update)
                for r in preds:
                    r.update({"perturbation": k if cl.perturbations else None})
                rows += preds
            example_rows += [{"persona_id": pid, "item_id": c.item_id, "label": y, "gold": c.gold}
                             for c, y in cl.examples]
            info[pid] = cl.info | {"n_examples": len(cl.examples)}
        bar.close()
        generations = []
        if cfg.dataset.open_ended:
            generations = _steered_generation(cfg, claimset, personas, per_persona, backend)
        meta = {"model": cfg.model.name, "dataset": cfg.dataset.name, "condition": cond,
                "fold": cfg.fold, "seed": cfg.seed, "n_examples": cfg.inference.n_examples,
                "run_tag": cfg.run_tag}
        for r in rows:
            r.update({k: meta[k] for k in ("model", "dataset", "condition", "fold", "seed")})
        df = pd.DataFrame(rows)
        if cond == "acc_matched" and len(df):
            # Average the perturbations: metrics per perturbation, then their mean.
            parts = [cell_metrics(g.drop(columns=["perturbation"]), claimset.rule)
                     for _, g in df.groupby("perturbation")]
            metrics = _mean_metrics(parts)
        else:
            metrics = cell_metrics(df, claimset.rule)
        _add_condition_info(metrics, info)
        if cfg.dataset.open_ended:
            _add_representation(metrics, generations)
            atomic_write_jsonl(out / "generations.jsonl", generations)
        metrics["meta"] = meta | {"wall_time_s": time.perf_counter() - t0,
                                  "backend_stats": backend.stats.as_dict()}
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_jsonl(out / "predictions.jsonl", rows)
        atomic_write_jsonl(out / "examples.jsonl", example_rows)
        atomic_write_json(out / "metrics.json", metrics)
        from plural_icm.pipeline.slurm import slurm_job_info

        atomic_write_json(out / COMPLETE, {"fingerprint": fp, "finished": time.time(),
                                          "wall_time_s": time.perf_counter() - t0,
                                          "slurm": slurm_job_info()})
        if wb is not None:
            from plural_icm.tracking.results import log_cell_result

            log_cell_result(wb, out, cfg.paths.results_dir, metrics, df)
        return metrics
    finally:
        backends.close()


def _steered_generation(cfg: DictConfig, claimset: ClaimSet, personas: list[str],
                        per_persona: dict[str, ConditionLabels], backend: Any) -> list[dict]:
    """Open-ended data: an answer per held-out question, steered by the condition's
    representative examples, rated 1-5 by the judge (the instruct model unless
    ``inference.judge_model`` names another checkpoint)."""
    from plural_icm.backends.registry import make_backend
    from plural_icm.inference.steered import generate_and_judge

    judge = backend
    if cfg.inference.judge_model:
        judge = make_backend(plain(cfg.model.backend), model_spec=cfg.inference.judge_model,
                             cache_dir=cfg.paths.cache_dir, dtype=cfg.model.dtype,
                             max_context=cfg.model.max_context)
    rows = []
    try:
        for pid in tqdm(personas, desc="generation + judge", unit="persona", disable=not cfg.progress):
            _, test = claimset.split(cfg.fold, pid)
            rows += generate_and_judge(backend, judge, cfg.inference, claimset.personas[pid],
                                       per_persona[pid].examples, test, int(cfg.seed))
    finally:
        if judge is not backend:
            judge.close()
    return rows


def _add_representation(metrics: dict, generations: list[dict]) -> None:
    from plural_icm.metrics.aggregate import representation_summary

    rep = representation_summary(pd.DataFrame(generations)) if generations else None
    if rep is None:
        return
    metrics["overall"].update({"representation_score": rep["overall"]["mean"],
                               "representation_se": rep["overall"]["se"],
                               "representation_missing": rep["overall"]["n_missing"]})
    for pid, r in rep["per_persona"].items():
        metrics["per_persona"].setdefault(pid, {}).update(
            {"representation_score": r["mean"], "representation_se": r["se"],
             "representation_missing": r["n_missing"]})


def _add_condition_info(metrics: dict, info: dict) -> None:
    accs, cohs = [], []
    for pid, d in info.items():
        pm = metrics["per_persona"].setdefault(pid, {})
        pm["icm_label_accuracy"] = d.get("icm_label_accuracy")
        pm["coherence"] = d.get("icm_P")
        pm["n_examples"] = d.get("n_examples")
        if "perturbations" in d:
            pm["perturbations"] = d["perturbations"]
            # ICM's labels rescored with the perturbations' own context orders: the value each
            # perturbation's coherence is below (``coherence`` above is the search's, other orders).
            pm["icm_coherence_same_orders"] = d.get("icm_coherence")
        if d.get("icm_label_accuracy") is not None:
            accs.append(d["icm_label_accuracy"])
        if d.get("icm_P") is not None:
            cohs.append(d["icm_P"])
    metrics["overall"]["icm_label_accuracy"] = sum(accs) / len(accs) if accs else None
    metrics["overall"]["coherence"] = sum(cohs) / len(cohs) if cohs else None


def _mean_metrics(parts: list[dict]) -> dict:
    """Mean of numeric metrics over acc_matched perturbations (overall and per persona)."""
    def mean_of(ds: list[dict]) -> dict:
        out = {}
        for k in ds[0]:
            vals = [d.get(k) for d in ds]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                out[k] = sum(vals) / len(vals)
            else:
                out[k] = vals[0]
        return out
    overall = mean_of([p["overall"] for p in parts])
    overall["n_perturbations"] = len(parts)
    per = {pid: mean_of([p["per_persona"][pid] for p in parts if pid in p["per_persona"]])
           for pid in parts[0]["per_persona"]}
    return {"overall": overall, "per_persona": per}
