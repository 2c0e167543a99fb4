"""What a sweep will run, before anything runs: jobs, shared searches, cost and memory estimates.

A sweep's cells are planned in two phases:

1. the distinct ICM searches the cells need (one ``stage=search`` job per base model, dataset,
   fold and search settings: every persona's search of that fold), sized by the model config;
2. the cells, each depending (SLURM ``afterok``) on the search job it reads.

Two cells share a search job when every input of the searches' content addresses
(:meth:`plural_icm.search.store.SearchTask.hash`) that comes from the config is equal: the base
model's identity, the dataset config, fold, seed and ICM settings. Nothing is loaded to plan, so
``stage=plan`` prints the plan of the paper's whole grid in seconds on a laptop; its token and
GPU-hour figures are ESTIMATES from the engine's cost model (:mod:`plural_icm.search.cost`), the
dataset configs' ``size`` and the model configs' ``throughput_tok_s``.

The memory check is the one that decides whether vLLM can start: the weights plus the KV cache of
one ``max_context`` sequence plus a per-GPU overhead must fit in ``tensor_parallel_size`` x
``cluster.gpu_memory_gb`` x ``gpu_memory_utilization``. A configuration that fails it is refused
(:class:`PlanError`, naming the keys to change) before any job is submitted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from omegaconf import OmegaConf

from plural_icm.backends.registry import backend_info
from plural_icm.config.settings import Settings, expect_settings
from plural_icm.conditions.registry import condition_settings, get_condition
from plural_icm.layout import CELL_FILES, COMPLETE, cell_path, condition_part, is_complete
from plural_icm.pipeline.existing_results import cell_fingerprint, holds_same_results
from plural_icm.pipeline.searches import model_identity
from plural_icm.selection import per_query
from plural_icm.selection.apply import needs_embeddings

GIB = 1024 ** 3
# Paper: "4-6 h per search" on RTX PRO 6000s; our figures come from the cost model instead.
PAPER_HOURS_PER_SEARCH = "4-6 h"


class PlanError(ValueError):
    """A configuration of the sweep cannot start (the message names the keys to change)."""


@dataclass(frozen=True)
class Resources:
    """What one SLURM job asks for."""

    gpus: int
    cpus: int
    mem_gb: int
    time_min: int

    @classmethod
    def of_model(cls, model: Any) -> "Resources":
        return cls(gpus=int(model.gpus or 0), cpus=int(model.cpus), mem_gb=int(model.mem_gb),
                   time_min=int(model.time_min))


def planned_stage(settings: Settings) -> str:
    """The stage a job will run: under ``stage=plan`` the jobs are planned as cells."""
    stage = settings.stage.value
    return "cell" if stage == "plan" else stage


def needs_search(settings: Settings) -> bool:
    """Whether the job reads ICM searches (so it runs after the search job of its fold): the
    collaborative stage always does; a cell when its condition declares ``needs_search``."""
    s = settings
    if planned_stage(s) == "collaborative":
        return True
    return get_condition(s.condition.name).needs_search


def search_key(settings: Settings) -> str:
    """Equal for two configs whose searches have equal content addresses (config-level inputs)."""
    s = settings
    cfg = s.composed  # the key of launches already recorded: computed from the composed config
    icm = OmegaConf.to_container(cfg.icm, resolve=True)
    icm.pop("checkpoint_every", None)
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("size", None)
    spec = {"model": model_identity(s), "name": s.model.name, "max_context": s.model.max_context,
            "dataset": dataset, "fold": s.fold, "seed": s.seed, "icm": icm}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cell_key(settings: Settings) -> str:
    """The identity of a cell job across launches (its result directory and stage)."""
    s = settings
    return f"{planned_stage(s)}:{cell_path(s)}"


@dataclass
class PlannedJob:
    stage: str                 # search | cell | collaborative
    overrides: list[str]
    settings: Settings
    resources: Resources
    key: str                   # identity across launches (registry of running jobs)
    search: str | None = None  # search key: the one it runs (stage=search) or reads (cells)
    complete: bool = False     # already done: not submitted
    prompt_tokens: float = 0.0
    gpu_hours: float = 0.0
    embed: str | None = None   # (dataset, embedding model) whose question texts it embeds, if any
    problems: list[str] = field(default_factory=list)  # why it cannot start, with what to change

    @property
    def label(self) -> str:
        c = self.settings
        if self.stage == "search":
            return f"search {c.model.name}/{c.dataset.name}/fold{c.fold}"
        n = "all" if c.inference.n_examples is None else c.inference.n_examples
        cond = "collaborative" if self.stage == "collaborative" else condition_part(c)
        return f"{c.model.name}/{c.dataset.name}/{cond}/n{n}/fold{c.fold}/seed{c.seed}"


@dataclass
class MemoryCheck:
    model: str
    ok: bool
    line: str
    fix: str = ""


@dataclass
class Plan:
    searches: list[PlannedJob] = field(default_factory=list)
    cells: list[PlannedJob] = field(default_factory=list)
    memory: list[MemoryCheck] = field(default_factory=list)
    shared_by: dict[str, int] = field(default_factory=dict)

    @property
    def jobs(self) -> list[PlannedJob]:
        return self.searches + self.cells

    def to_submit(self) -> list[PlannedJob]:
        return [j for j in self.jobs if not j.complete]

    def gpu_hours(self) -> float:
        return sum(j.gpu_hours for j in self.to_submit())

    def cannot_start(self) -> list[PlannedJob]:
        """Jobs that would fail at their start (a fold the dataset does not have, a prompt longer
        than the model's context)."""
        return [j for j in self.jobs if j.problems and not j.complete]

    def refuse_if_infeasible(self) -> None:
        bad = [m for m in self.memory if not m.ok]
        lines = [f"  {m.line}\n    change: {m.fix}" for m in bad]
        lines += problem_lines(self.cannot_start())
        if lines:
            raise PlanError("cannot start (nothing was submitted):\n" + "\n".join(lines))


def problem_lines(jobs: Sequence[PlannedJob]) -> list[str]:
    """One entry per distinct problem: how many jobs it stops, a few of their labels, and the
    message (which names the keys to change)."""
    by: dict[str, list[str]] = {}
    for j in jobs:
        for p in j.problems:
            by.setdefault(p, []).append(j.label)
    out = []
    for p, labels in by.items():
        more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
        out.append(f"  {len(labels)} job(s), e.g. {', '.join(labels[:3])}{more}:\n    {p}")
    return out


# -- estimates ------------------------------------------------------------------------------------
def _bytes_per_value(dtype: str, gpu: bool) -> int:
    dtype = str(dtype).lower()
    if dtype in ("float32", "fp32"):
        return 4
    if dtype == "auto":
        return 2 if gpu else 4
    return 2


def memory_check(model: Any, cluster: Any) -> MemoryCheck:
    """Weights + KV cache of one ``max_context`` sequence against the GPUs (or RAM) of a job
    (``model``, ``cluster``: the typed ``ModelConfig`` and ``ClusterConfig``)."""
    name = model.name
    sizes = [getattr(model, k) for k in ("params_b", "layers", "kv_heads", "head_dim")]
    if any(v is None for v in sizes):
        return MemoryCheck(name, True, f"{name}: no params_b/layers/kv_heads/head_dim in its config: not checked")
    params_b, layers, kv_heads, head_dim = sizes
    gpus = int(model.gpus or 0)
    on_gpu = gpus > 0 and backend_info(model.backend).reserves_gpu_memory
    b = _bytes_per_value(model.dtype, on_gpu)
    weights = params_b * 1e9 * b / GIB
    kv = 2 * layers * kv_heads * head_dim * b * int(model.max_context) / GIB
    if not on_gpu:
        need = weights + kv
        ok = need <= float(model.mem_gb)
        line = (f"{name}: weights {weights:.1f} GiB + KV {kv:.1f} GiB ({model.max_context} tokens) = "
                f"{need:.1f} GiB {'<=' if ok else '>'} model.mem_gb {model.mem_gb} (CPU)")
        return MemoryCheck(name, ok, line + ("  ok" if ok else "  DOES NOT FIT"),
                           "" if ok else f"model.mem_gb={math.ceil(need * 1.5)} or a smaller model.max_context")
    tp = int(model.tensor_parallel_size)
    per_gpu = float(cluster.gpu_memory_gb)
    util = float(model.gpu_memory_utilization)
    overhead = float(cluster.gpu_overhead_gb)
    need = weights + kv + tp * overhead
    have = tp * per_gpu * util
    ok = need <= have and gpus >= tp
    line = (f"{name}: weights {weights:.1f} GiB + KV {kv:.1f} GiB ({model.max_context} tokens) + "
            f"overhead {tp * overhead:.1f} GiB = {need:.1f} GiB {'<=' if need <= have else '>'} "
            f"{tp} x {per_gpu:g} GiB x {util:g} = {have:.1f} GiB")
    if gpus < tp:
        return MemoryCheck(name, False, line + f"; but model.gpus={gpus} < model.tensor_parallel_size={tp}",
                           f"model.gpus={tp} (vLLM needs one GPU per tensor-parallel rank)")
    if ok:
        return MemoryCheck(name, True, line + "  ok")
    fit = next((t for t in (1, 2, 4, 8) if weights + kv + t * overhead <= t * per_gpu * util), None)
    fixes = []
    if fit is not None and fit > tp:
        fixes.append(f"model.tensor_parallel_size={fit} model.gpus={fit}")
    fixes.append(f"cluster.gpu_memory_gb=<your GPUs' memory> (now {per_gpu:g})")
    fixes.append("a smaller model.max_context")
    return MemoryCheck(name, False, line + "  DOES NOT FIT", ", or ".join(fixes))


def _train_fraction(s: Settings) -> float:
    """Share of a persona's claims its searches see: (k-1)/k for k folds, else the loader's split."""
    k = s.dataset.n_folds
    if k > 1:
        return (k - 1) / k
    return float((s.dataset.options or {}).get("search_fraction", 0.5))


def _train_claims(s: Settings) -> int:
    size = s.dataset.size
    n = int(size.claims_per_persona * _train_fraction(s))
    cap = s.dataset.max_search_claims
    return min(n, cap) if cap is not None else n


def _personas(s: Settings) -> int:
    return len(s.dataset.personas) if s.dataset.personas else s.dataset.size.personas


def _n_sets(s: Settings) -> int:
    """Search sets per persona of one fold's job: its training parts under icm.search_unit=part."""
    n_train = _train_claims(s)
    n_set = _search_set_claims(s, n_train)
    return math.ceil(n_train / n_set) if n_set else 1


def search_job_tokens(settings: Settings) -> float:
    """Prompt tokens of one stage=search job: every persona x restart of its fold (estimate)."""
    from plural_icm.search.cost import cost_mode, search_tokens

    s = settings
    n_train = _train_claims(s)
    n_set = _search_set_claims(s, n_train)
    mode = cost_mode(s.icm.engine.value, s.icm.context_order.value)
    per = search_tokens(n_set, s.dataset.size.tokens_per_claim, s.icm.max_iters, mode)
    # under icm.search_unit=part a fold's job runs one search per training part (a part's search
    # is shared by the other folds' jobs through the store: the sum over folds counts it k-1 times)
    return per * _n_sets(s) * _personas(s) * s.icm.restarts


def cell_tokens(settings: Settings) -> float:
    """Prompt tokens of a cell's inference (estimate): per persona, its in-context examples once
    (the engines' prefix cache shares them) plus every test claim; acc_matched once per perturbation."""
    s = expect_settings(settings, "cell_tokens")
    size = s.dataset.size
    L = size.tokens_per_claim
    n_train = _train_claims(s)
    n_test = int(size.claims_per_persona * (1 - _train_fraction(s)))
    condition = get_condition(s.condition.name)
    n_ex = n_train if condition.uses_examples else 0
    if s.inference.n_examples is not None and n_ex:
        n_ex = min(n_ex, s.inference.n_examples)
    sets = condition.n_example_sets(condition_settings(condition, s.condition), s.dataset)
    if per_query(s) and n_ex:
        # each held-out question has its own examples (one prefix per question, ~2 claims each)
        per_persona = sets * (max(1, n_test // 2) * n_ex * L + n_test * (L + 60))
    else:
        per_persona = sets * (n_ex * L + n_test * (L + 60))
    tokens = per_persona * _personas(s)
    if planned_stage(s) == "collaborative":  # a constrained search per selection method and round
        tokens += search_job_tokens(s) * len(s.collaborative.selection) * s.collaborative.rounds
    return tokens


# -- can every job start? -------------------------------------------------------------------------
#: Tokens an inference prompt adds to its examples and query: the system prompt and the chat
#: template's turns (inference.system_prompt is ~25 tokens; Llama-3.1's template adds ~30 with its
#: date header), plus the generated answer of an open-ended cell (its max_new_tokens, added
#: separately). A stated allowance, not a measurement of every template.
PROMPT_OVERHEAD_TOKENS = 96


def _max_persona_claims(s: Settings) -> int:
    size = s.dataset.size
    return size.max_claims_per_persona or size.claims_per_persona


def _max_claim_tokens(s: Settings) -> int:
    size = s.dataset.size
    return size.max_tokens_per_claim or size.tokens_per_claim


def _largest_train_claims(s: Settings) -> int:
    n = int(_max_persona_claims(s) * _train_fraction(s))
    cap = s.dataset.max_search_claims
    return min(n, cap) if cap is not None else n


def _search_set_claims(s: Settings, n_train: int) -> int:
    """Claims of the largest single search: one part under ``icm.search_unit=part``."""
    k = s.dataset.n_folds
    if s.icm.search_unit.value == "part" and k > 1:
        return math.ceil(n_train / (k - 1))
    return n_train


def search_prompt_tokens(settings: Settings) -> int:
    """Tokens of the longest prompt of a search (estimate): every other claim of the largest search
    set as an example, then the longest claim as the query (leave-one-out)."""
    s = settings
    n = _search_set_claims(s, _largest_train_claims(s))
    return max(n - 1, 0) * s.dataset.size.tokens_per_claim + _max_claim_tokens(s) + 1


def inference_prompt_tokens(settings: Settings) -> int:
    """Tokens of the longest inference prompt of a cell (estimate): the largest persona's
    examples, the longest query, the template allowance and, for open-ended data, the answer."""
    s = settings
    condition = get_condition(s.condition.name)
    n_ex = _largest_train_claims(s) if condition.uses_examples else 0
    if s.inference.n_examples is not None:
        n_ex = min(n_ex, s.inference.n_examples)
    extra = s.inference.max_new_tokens if s.dataset.open_ended else 0
    return n_ex * s.dataset.size.tokens_per_claim + _max_claim_tokens(s) + \
        PROMPT_OVERHEAD_TOKENS + extra


def _fitting_claims(s: Settings, budget: int) -> int:
    return max((budget - _max_claim_tokens(s) - PROMPT_OVERHEAD_TOKENS)
               // max(s.dataset.size.tokens_per_claim, 1), 0)


def start_problems(settings: Settings, search: bool = False) -> list[str]:
    """Why the job of ``settings`` would fail at its start, each with the keys to change (empty:
    it can start). ``search``: the job is the stage=search job of this config."""
    from plural_icm.data.registry import check_fold
    from plural_icm.errors import ConfigError

    s = settings
    out = []
    try:
        check_fold(s.dataset, s.fold)
    except ConfigError as e:
        out.append(f"{e}; change: fold, or sweep each dataset over its own folds (the sweeper "
                   "drops a swept fold its dataset does not have)")
    ctx = s.model.max_context
    size = (f"dataset.size of {s.dataset.name}: {_max_persona_claims(s)} claims in its largest "
            f"persona, {s.dataset.size.tokens_per_claim} tokens per claim, "
            f"{_max_claim_tokens(s)} the longest")
    if search or needs_search(s):
        n = search_prompt_tokens(s)
        if n > ctx:
            unit = s.icm.search_unit.value
            fit = _fitting_claims(s, ctx) + 1
            k = s.dataset.n_folds
            cap = fit * (k - 1) if unit == "part" and k > 1 else fit
            out.append(f"search prompts of about {n} tokens (icm.search_unit={unit}; {size}) > "
                       f"model.max_context={ctx} of {s.model.name}; change: "
                       f"dataset.max_search_claims={cap}, or model.max_context={n} where the "
                       "checkpoint supports it" + ("" if unit == "part" else ", or icm.search_unit=part"))
    if not search and s.inference.context_policy.value == "error":
        n = inference_prompt_tokens(s)
        if n > ctx:
            fit = _fitting_claims(s, ctx - (s.inference.max_new_tokens if s.dataset.open_ended else 0))
            out.append(f"inference prompts of about {n} tokens ({size}) > model.max_context={ctx} "
                       f"of {s.model.name}; change: inference.n_examples={fit}, or "
                       f"dataset.max_search_claims={fit}, or inference.context_policy=drop_oldest")
    return out


def _gpu_hours(tokens: float, model: Any) -> float:
    rate = model.throughput_tok_s
    if not rate:
        return 0.0
    return tokens / float(rate) / 3600 * max(int(model.gpus or 0), 1 if int(model.gpus or 0) else 0)


def wall_hours(job: PlannedJob) -> float:
    """Estimated wall time of one job (one engine over its GPUs); 0 when the model states no
    ``throughput_tok_s``."""
    gpus = max(int(job.resources.gpus or 0), 1)
    return job.gpu_hours / gpus


def time_limit_notes(plan: Plan, max_num_timeout: int | None) -> list[str]:
    """Searches whose estimated wall time exceeds their job's ``model.time_min``. Such a job
    checkpoints at the limit and SLURM requeues it, at most ``max_num_timeout`` times (the
    launcher's setting): past that it fails, so say which setting to raise."""
    notes = []
    for s in plan.searches:
        hours, limit_h = wall_hours(s), s.resources.time_min / 60
        if s.complete or not hours or not limit_h or hours <= limit_h:
            continue
        runs = math.ceil(hours / limit_h)
        line = (f"{s.settings.model.name}/{s.settings.dataset.name}/fold{s.settings.fold}: estimated {hours:.1f} h "
                f"(upper bound) > model.time_min={s.resources.time_min} min: about {runs} runs of "
                f"the time limit, resumed from its checkpoint after each requeue")
        if max_num_timeout is not None and runs - 1 > max_num_timeout:
            # the requeue bound first: a cluster's wall-time limit often caps time_min
            line += (f"; more than hydra.launcher.max_num_timeout={max_num_timeout} requeues: raise "
                     f"it to {runs - 1}, or model.time_min to {math.ceil(hours * 60)}")
        notes.append(line)
    return notes


# -- building -------------------------------------------------------------------------------------
def _is_complete_cell(s: Settings) -> bool:
    """Complete with the same settings: such a cell is not submitted (a cell of different settings
    is, so that its job stops with the message saying so)."""
    if planned_stage(s) != "cell":
        return False
    out = cell_path(s)
    if not is_complete(out, CELL_FILES):
        return False
    try:
        stored = json.loads((out / COMPLETE).read_text()).get("fingerprint")
    except (OSError, ValueError):
        return False
    return holds_same_results(s, out, stored, cell_fingerprint(s))


def build_plan(jobs: Iterable[tuple[Sequence[str], Settings]]) -> Plan:
    """Plan the sweep whose jobs are given as (overrides, typed settings of the job)."""
    plan = Plan()
    searches: dict[str, PlannedJob] = {}
    models: dict[str, Any] = {}
    for overrides, job in jobs:
        st = expect_settings(job, "build_plan")
        stage = planned_stage(st)
        models.setdefault(st.model.name, (st.model, st.cluster))
        res = Resources.of_model(st.model)
        cell = PlannedJob(stage=stage, overrides=list(overrides), settings=st, resources=res,
                          key=cell_key(st), complete=_is_complete_cell(st))
        cell.prompt_tokens = cell_tokens(st)
        if stage == "cell" and needs_embeddings(st):
            cell.embed = f"{st.dataset.name} x {st.selection.embedding_model}"
        cell.gpu_hours = _gpu_hours(cell.prompt_tokens, st.model)
        cell.problems = start_problems(st)
        if needs_search(st):
            sk = search_key(st)
            cell.search = sk
            if sk not in searches:
                s_over = [o for o in overrides if not o.startswith("stage=")] + ["stage=search"]
                s = PlannedJob(stage="search", overrides=s_over, settings=st, resources=res,
                               key=f"search:{sk}", search=sk)
                s.problems = start_problems(st, search=True)
                s.prompt_tokens = search_job_tokens(st)
                s.gpu_hours = _gpu_hours(s.prompt_tokens, st.model)
                searches[sk] = s
                plan.searches.append(s)
            plan.shared_by[sk] = plan.shared_by.get(sk, 0) + 1
        plan.cells.append(cell)
    # A search whose every reader is complete is not needed.
    for s in plan.searches:
        s.complete = all(c.complete for c in plan.cells if c.search == s.search)
    plan.memory = [memory_check(m, cl) for m, cl in models.values()]
    return plan


def assumption_lines(plan: Plan) -> list[str]:
    """What the search GPU-hours assume, per distinct ICM setting, beside the paper's figure: the
    paper's "4-6 h per search" is one search of one persona-fold part of 12-28 claims, K = 500
    (its fork's scripts) on 96 GB RTX PRO 6000s; ours is every persona, part and restart of a
    fold at max_iters iterations, an upper bound (every iteration counted as label-changing)."""
    out = []
    seen = set()
    for s in plan.searches:
        c = s.settings
        key = (c.model.name, c.dataset.name, c.icm.search_unit.value, c.icm.restarts, c.icm.max_iters)
        if key in seen:
            continue
        seen.add(key)
        unit = key[2]
        k = c.dataset.n_folds
        n_train = _train_claims(c)
        per_search = _search_set_claims(c, n_train)
        n_searches = _personas(c) * c.icm.restarts * ((k - 1) if unit == "part" and k > 1 else 1)
        per = s.gpu_hours / max(n_searches, 1)
        out.append(f"  {c.model.name}/{c.dataset.name}: a search job = {_personas(c)} personas x "
                   f"{(k - 1) if unit == 'part' and k > 1 else 1} search set(s) "
                   f"(icm.search_unit={unit}) x {c.icm.restarts} restart(s) = {n_searches} searches "
                   f"of ~{per_search} claims, <= {c.icm.max_iters} iterations each: {per:.1f} GPU-h "
                   f"per search (the paper: {PAPER_HOURS_PER_SEARCH} per search of 12-28 claims, "
                   "500 iterations, 70B on RTX PRO 6000s)")
        if unit == "part" and k > 2:
            out.append(f"    icm.search_unit=part: a part's search is the same in every fold's job that "
                       f"needs it (content-addressed): the {k} fold jobs of a dataset count each part "
                       f"{k - 1} times, so the searches' distinct work is about 1/{k - 1} of their sum "
                       "when the jobs run one after another")
    return out


# -- printing -------------------------------------------------------------------------------------
def embedding_work(plan: Plan) -> dict[str, tuple[int, int]]:
    """(dataset x embedding model) -> (texts to embed at most, cells reading them), for the cells
    to run: the question texts of every persona (at most ``size.claims_per_persona`` x personas;
    questions shared by personas are embedded once)."""
    out: dict[str, tuple[int, int]] = {}
    for j in plan.to_submit():
        if j.embed:
            n = j.settings.dataset.size.claims_per_persona * _personas(j.settings)
            out[j.embed] = (max(n, out.get(j.embed, (0, 0))[0]), out.get(j.embed, (0, 0))[1] + 1)
    return out


def _fmt_tokens(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def format_plan(plan: Plan, max_num_timeout: int | None = None) -> str:
    """The table printed by stage=plan (and by every launch before it submits);
    ``max_num_timeout``: the launcher's requeue bound, when it has one (SLURM)."""
    ids = {s.search: f"S{i + 1}" for i, s in enumerate(plan.searches)}
    head = ("id", "stage", "model", "dataset", "fold", "condition", "n", "GPUs", "CPUs", "mem_GB",
            "time_min", "after", "state")
    rows = []
    for j in plan.jobs:
        c = j.settings
        search = j.stage == "search"
        n = "-" if search else ("all" if c.inference.n_examples is None else str(c.inference.n_examples))
        cond = "-" if search else ("collaborative" if j.stage == "collaborative" else condition_part(c))
        rows.append((ids[j.search] if search else "-", j.stage, c.model.name, c.dataset.name, str(c.fold),
                     cond, n, str(j.resources.gpus), str(j.resources.cpus), str(j.resources.mem_gb),
                     str(j.resources.time_min), ids[j.search] if (j.search and not search) else "-",
                     "complete" if j.complete else "to-run"))
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(head)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
    out = [line(head)] + [line(r) for r in rows]
    out.append("")
    out.append(f"distinct searches ({len(plan.searches)}; estimated prompt tokens from the engine's cost model, max_iters as an upper bound):")
    for s in plan.searches:
        c = s.settings
        out.append(f"  {ids[s.search]}  {c.model.name}/{c.dataset.name}/fold{c.fold} [{s.search}]: "
                   f"{_personas(c)} personas x {_n_sets(c)} search set(s) x {c.icm.restarts} restart(s), "
                   f"{_search_set_claims(c, _train_claims(c))} claims x "
                   f"{c.dataset.size.tokens_per_claim} tokens, <= {c.icm.max_iters} iterations "
                   f"({c.icm.engine.value} engine, {c.icm.context_order.value} order, icm preset {c.icm.preset}): "
                   f"{_fmt_tokens(s.prompt_tokens)} tokens, {s.gpu_hours:.1f} GPU-h; "
                   f"read by {plan.shared_by.get(s.search, 0)} cell(s)"
                   + ("  [complete]" if s.complete else ""))
    out.append("")
    out.append("memory (weights + KV cache of one max_context sequence + per-GPU overhead vs "
               "tensor_parallel_size x cluster.gpu_memory_gb x gpu_memory_utilization):")
    out += [f"  {m.line}" + (f"\n    change: {m.fix}" if m.fix else "") for m in plan.memory]
    embeds = embedding_work(plan)
    if embeds:
        out.append("")
        out.append("embeddings (selection=nearest|spica; each question text once per embedding model, "
                   "cached on disk under paths.cache_dir/embeddings):")
        out += [f"  {key}: <= {n} texts, read by {cells} cell(s)" for key, (n, cells) in embeds.items()]
    out.append("")
    out.append("context (estimated longest prompt vs model.max_context, from dataset.size: tokens per "
               "claim calibrated with SmolLM2's tokenizer on the data, see conf/dataset/*.yaml; "
               f"inference adds {PROMPT_OVERHEAD_TOKENS} tokens of template):")
    seen = set()
    for j in plan.jobs:
        c = j.settings
        if j.stage == "search":
            key = ("search", c.model.name, c.dataset.name, c.icm.search_unit.value,
                   c.dataset.max_search_claims)
            what = f"search ({c.icm.search_unit.value})"
            n = search_prompt_tokens(c)
        else:
            uses_examples = get_condition(c.condition.name).uses_examples
            key = ("cell", c.model.name, c.dataset.name, c.inference.n_examples,
                   c.dataset.max_search_claims, uses_examples)
            if not uses_examples and ("cell0", c.model.name, c.dataset.name) in seen:
                continue
            seen.add(("cell0", c.model.name, c.dataset.name))
            ex = "all" if c.inference.n_examples is None else c.inference.n_examples
            what = f"inference, {ex} examples" if uses_examples else "inference, zero-shot"
            n = inference_prompt_tokens(c)
        if key in seen:
            continue
        seen.add(key)
        ctx = c.model.max_context
        out.append(f"  {c.model.name}/{c.dataset.name} {what}: ~{n} tokens "
                   f"{'<=' if n <= ctx else '>'} {ctx}" + ("" if n <= ctx else "  DOES NOT FIT"))
    bad = plan.cannot_start()
    out.append("")
    out.append(f"can every job start (fold of its dataset, prompts within the context): "
               + ("yes" if not bad else f"NO, {len(bad)} job(s) cannot start:"))
    out += problem_lines(bad)
    limits = time_limit_notes(plan, max_num_timeout)
    if limits:
        out.append("")
        out.append("time limits (searches estimated to outlast their job's time limit):")
        out += [f"  {line}" for line in limits]
    todo = plan.to_submit()
    s_h = sum(j.gpu_hours for j in todo if j.stage == "search")
    c_h = sum(j.gpu_hours for j in todo if j.stage != "search")
    out.append("")
    out.append(f"GPU-hours (estimate = prompt tokens / model.throughput_tok_s x GPUs): searches "
               f"{s_h:.1f}, cells {c_h:.1f}")
    out += assumption_lines(plan)
    n_s = len([s for s in plan.searches if not s.complete])
    skipped = len(plan.jobs) - len(todo)
    if skipped:
        out.append(f"{skipped} job(s) already complete: not submitted")
    out.append(f"plan: {len(todo)} jobs, {n_s} distinct searches, {plan.gpu_hours():.1f} GPU-hours (estimate)")
    return "\n".join(out)
