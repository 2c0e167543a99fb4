"""Launchers of ``python launch.py -m ...``: plan first, then searches, then cells.

hydra-submitit-launcher builds one executor per launch from the launch-time config, so a sweep over
models gives every job the resources of the model chosen outside the sweep, and it waits on jobs
in index order. :class:`PluralSlurmLauncher` extends its ``SlurmLauncher``:

* every job's config is composed first and planned (:mod:`plural_icm.pipeline.plan`): a
  configuration that cannot start (a model that does not fit its GPUs) is refused before anything
  is submitted; ``stage=plan`` prints the plan and submits nothing;
* phase 1 submits the distinct ICM searches the cells need (``stage=search``, base model only),
  phase 2 the cells with ``--dependency=afterok:<search job>``; one job array per distinct
  (resources, dependency), each with its own model's GPUs, CPUs, memory and time;
* jobs that cannot start (a fold the dataset does not have, a prompt longer than the model's
  context) are refused the same way, each problem listed with the keys to change;
* a job whose task raises exits non-zero (sacct: FAILED), not 0;
* each job's end is reported as it happens; a failed search cancels the cells that read it and
  says so; on return (or on Ctrl-C) a summary says what finished, what failed and why, and what
  is still running;
* submitted jobs are recorded under ``<output_dir>/slurm/registry/``: a relaunch attaches to a
  job of the same search or cell that is still pending or running instead of submitting it again.

:class:`PluralBasicLauncher` (the default, in-process) only adds ``stage=plan``;
:class:`PluralBasicSweeper` (the default sweeper) validates a large grid's overrides by a sample
and drops the jobs of a swept fold their dataset does not have, with a printed count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from plural_icm.errors import UserError  # light: hydra.errors only (plugins are imported at every start)

log = logging.getLogger(__name__)

_RESOURCE_KEYS = {"gpus_per_node": "gpus", "cpus_per_task": "cpus", "mem_gb": "mem_gb",
                  "timeout_min": "time_min"}
_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
           "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED"}


class SweepFailed(UserError, RuntimeError):
    """Some jobs of the sweep failed or were not run (the summary above says which and why).

    A :class:`~plural_icm.errors.UserError`: the summary and overview already said everything, so
    Hydra prints this one line and exits 1, without a stack trace of the launcher."""


def _compose(launcher: Any, job_overrides: Sequence[Sequence[str]]) -> list:
    """(overrides, composed config) of every job, as the job itself will compose it.

    Composing each of a large grid's jobs takes minutes (Hydra composes the whole tree every
    time), so jobs are assembled instead: one full composition of the first job, one per distinct
    value of every group override (``model=qwen30b``: its top-level subtrees that differ, e.g.
    ``model`` and ``icm``), then plain overrides (``fold=2``) set on top. A few jobs are composed in
    full and compared; any difference (groups that interact) falls back to composing every job.
    """
    loader = launcher.hydra_context.config_loader
    full = lambda o: loader.load_sweep_config(launcher.config, list(o))
    jobs = [list(o) for o in job_overrides]
    if len(jobs) <= 4:
        return [(o, _without_hydra(full(o))) for o in jobs]
    try:
        assembled = _assemble(loader, full, jobs)
    except _CannotAssemble as e:
        log.debug("composing every job: %s", e)
        return [(o, _without_hydra(full(o))) for o in jobs]
    for k in sorted({0, len(jobs) // 3, len(jobs) // 2, len(jobs) - 1}):
        if _job_part(assembled[k]) != _job_part(full(jobs[k])):
            log.debug("assembled config of job %d differs from its composition: composing every job", k)
            return [(o, _without_hydra(full(o))) for o in jobs]
    return list(zip(jobs, assembled))


def _without_hydra(cfg: Any) -> Any:
    """The job's own config, as its task function gets it (Hydra removes ``hydra`` there too)."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


class _CannotAssemble(Exception):
    pass


def _job_part(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=False)
    d.pop("hydra", None)
    return d


def _assemble(loader: Any, full: Any, jobs: List[List[str]]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    parser = OverridesParser.create()
    parsed = [parser.parse_overrides(o) for o in jobs]
    for ps in parsed:
        for p in ps:
            if p.is_add() or p.is_delete() or p.is_force_add() or p.is_sweep_override():
                raise _CannotAssemble(f"override {p.input_line}")
    first = {p.key_or_group: p for p in parsed[0]}
    if any({p.key_or_group for p in ps} != set(first) for ps in parsed):
        raise _CannotAssemble("jobs override different keys")
    is_group = {k: loader.repository.group_exists(k) for k in first}
    base = full(jobs[0])
    base_part = _job_part(base)
    pieces: Dict[str, dict] = {}
    for ps in parsed:
        for p in ps:
            k = p.key_or_group
            if is_group[k] and p.input_line != first[k].input_line and p.input_line not in pieces:
                o = [q.input_line if q.key_or_group != k else p.input_line for q in parsed[0]]
                piece = full(o)
                d = _job_part(piece)
                changed = [t for t in set(d) | set(base_part) if d.get(t) != base_part.get(t)]
                if any(t not in d for t in changed):
                    raise _CannotAssemble(f"{p.input_line} removes top-level keys")
                pieces[p.input_line] = {t: piece[t] for t in changed}
    import copy

    job_base = copy.deepcopy(base)
    with open_dict(job_base):
        del job_base["hydra"]   # the jobs' own hydra nodes are composed in the jobs
    out = []
    for ps in parsed:
        cfg = copy.deepcopy(job_base)
        with open_dict(cfg):
            for p in ps:
                if is_group[p.key_or_group]:
                    for top, sub in pieces.get(p.input_line, {}).items():
                        cfg[top] = sub
        for p in ps:
            if not is_group[p.key_or_group] and p.input_line != first[p.key_or_group].input_line:
                OmegaConf.update(cfg, p.key_or_group, p.value(), merge=False)
        out.append(cfg)
    return out


def _plan(launcher: Any, job_overrides: Sequence[Sequence[str]]):
    from plural_icm.config.settings import typed
    from plural_icm.pipeline.plan import build_plan

    t0 = time.perf_counter()
    # the boundary: each job's composed config typed once (each job validates its own when it runs)
    plan = build_plan((o, typed(cfg)) for o, cfg in _compose(launcher, job_overrides))
    log.debug("planned %d jobs in %.1f s", len(plan.jobs), time.perf_counter() - t0)
    return plan


def _refuse_if_infeasible(plan: Any) -> None:
    """Exit non-zero, before anything is submitted, naming the keys to change."""
    from plural_icm.pipeline.plan import PlanError

    try:
        plan.refuse_if_infeasible()
    except PlanError as e:
        log.error("%s", e)
        raise SystemExit(f"plural_icm: {e}") from None


def _is_plan_stage(config: Any) -> bool:
    return str(getattr(config.stage, "value", config.stage)) == "plan"


class PluralBasicLauncher(BasicLauncher):
    """Hydra's in-process launcher, plus ``stage=plan`` (print the plan, run nothing)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if _is_plan_stage(self.config):
            from plural_icm.pipeline.plan import format_plan

            plan = _plan(self, job_overrides)
            print(format_plan(plan), flush=True)
            _refuse_if_infeasible(plan)
            return []
        launched_at = time.time()
        returns = super().launch(job_overrides, initial_job_idx)
        try:
            print(_local_overview(returns, launched_at), flush=True)
        except Exception as e:  # the overview must never hide the sweep's own outcome
            log.warning("no sweep overview: %s: %s", type(e).__name__, e)
        return returns


def _local_overview(returns: Sequence[JobReturn], launched_at: float) -> str:
    """The sweep overview (plural_icm.pipeline.overview) of the in-process launcher's jobs."""
    from plural_icm.layout import cell_name, cell_path
    from plural_icm.pipeline.overview import SweepJob, failure_reason, format_overview, skipped_before

    jobs = []
    for ret in returns:
        cfg = ret.cfg
        stage = str(getattr(cfg.stage, "value", cfg.stage))
        is_cell = stage == "cell"
        label = cell_name(cfg) if is_cell else f"{stage} {cfg.model.name}/{cfg.dataset.name}/fold{cfg.fold}"
        out = cell_path(cfg) if is_cell else None
        if ret.status == JobStatus.COMPLETED:
            outcome = "skipped" if skipped_before(out, launched_at) else "done"
            jobs.append(SweepJob(label, outcome, cell_dir=out))
        else:
            jobs.append(SweepJob(label, "failed", failure_reason(ret._return_value), cell_dir=out))
    return format_overview(jobs)


# -- SLURM -----------------------------------------------------------------------------------------
class _Tracked:
    """A submitted (or attached) job and how it ended. A plain class: Hydra's plugin scan executes
    this module outside sys.modules, where dataclasses cannot be defined."""

    def __init__(self, planned: Any, job: Any, attached: bool = False):
        self.planned = planned          # plural_icm.pipeline.plan.PlannedJob
        self.job = job                  # submitit.SlurmJob
        self.attached = attached        # submitted by an earlier launch, still running
        self.outcome = ""               # "" while running; done | failed | not run
        self.reason = ""
        self.value: Optional[JobReturn] = None

    @property
    def label(self) -> str:
        return self.planned.label


class _Registry:
    """Job ids of submitted searches and cells, by their identity across launches."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".json")

    def get(self, key: str) -> Optional[str]:
        try:
            return json.loads(self._path(key).read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            return None

    def put(self, key: str, job_id: str, label: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self._path(key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "job_id": job_id, "label": label, "submitted": time.time()}))
        os.replace(tmp, p)


class PluralSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher with per-job resources and two phases (module doc)."""

    poll_s: float = float(os.environ.get("PLURAL_ICM_POLL_S", "5"))

    # In the job: a task that raised makes the job fail (Hydra's run_job returns it as a value).
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED:
            raise ret._return_value
        return ret

    # -- submission ----------------------------------------------------------------------------------
    def _base_params(self) -> tuple[dict, dict]:
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init = {"folder": self.params["submitit_folder"],
                "slurm_max_num_timeout": self.params.get("max_num_timeout", 0)}
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {k if k in base else f"slurm_{k}": v for k, v in self.params.items()
                  if k not in ("submitit_folder", "max_num_timeout")}
        return init, params

    def _fixed_by_user(self) -> set:
        """Resource keys given explicitly as hydra.launcher.<key>=... (they win over the models')."""
        overrides = list(self.config.hydra.overrides.get("hydra", []))
        return {k for k in _RESOURCE_KEYS if any(o.startswith(f"hydra.launcher.{k}=") for o in overrides)}

    def _submit(self, group: list, stage: str, after: Optional[str], indices: List[int]) -> list:
        import submitit
        from hydra.core.singleton import Singleton

        init, params = self._base_params()
        res = group[0].resources
        fixed = self._fixed_by_user()
        per_job = {"gpus_per_node": res.gpus, "cpus_per_task": res.cpus, "mem_gb": res.mem_gb,
                   "timeout_min": res.time_min}
        params.update({k: v for k, v in per_job.items() if k not in fixed})
        name = params.get("name") or "plural_icm"
        params["name"] = f"{name}-search" if stage == "search" else name
        extra = dict(params.get("slurm_additional_parameters") or {})
        if after:
            extra["dependency"] = f"afterok:{after}"
        params["slurm_additional_parameters"] = extra
        params["slurm_comment"] = f"plural_icm {stage}" + (f" afterok:{after}" if after else "")
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        executor.update_parameters(**params)
        args = [(list(j.overrides), "hydra.sweep.dir", i, f"job_id_for_{i}", Singleton.get_state())
                for j, i in zip(group, indices)]
        jobs = executor.map_array(self, *zip(*args))
        for j, job in zip(group, jobs):
            log.info("submitted %s: job %s (%d GPU, %d CPU, %d GB, %d min%s)", j.label, job.job_id,
                     res.gpus, res.cpus, res.mem_gb, res.time_min, f", after {after}" if after else "")
        return jobs

    def _attach(self, registry: _Registry, planned: Any) -> Optional[Any]:
        import submitit

        job_id = registry.get(planned.key)
        if job_id is None:
            return None
        job = submitit.SlurmJob(folder=self.params["submitit_folder"], job_id=job_id)
        state = job.watcher.get_state(job_id, mode="force").split()[0].upper()
        if state in _ACTIVE:
            log.info("%s: job %s of an earlier launch is %s: waiting for it instead of submitting "
                     "it again", planned.label, job_id, state)
            return job
        return None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from plural_icm.pipeline.plan import format_plan, time_limit_notes

        plan = _plan(self, job_overrides)
        requeues = int(self.params.get("max_num_timeout", 0) or 0)
        if _is_plan_stage(self.config):
            print(format_plan(plan, max_num_timeout=requeues), flush=True)
            _refuse_if_infeasible(plan)
            return []
        _refuse_if_infeasible(plan)
        for note in time_limit_notes(plan, requeues):
            log.warning("time limit: %s", note)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        registry = _Registry(Path(self.params["submitit_folder"]).parent / "registry")
        log.info("plural_icm sweep: %d cells (%d complete), %d search jobs; output dir %s",
                 len(plan.cells), sum(c.complete for c in plan.cells),
                 len([s for s in plan.searches if not s.complete]), sweep_dir)

        tracked: list[_Tracked] = []
        search_job: Dict[str, str] = {}
        next_idx = initial_job_idx + len(job_overrides)
        # Phase 1: searches.
        todo = []
        for s in plan.searches:
            if s.complete:
                continue
            job = self._attach(registry, s)
            if job is not None:
                tracked.append(_Tracked(s, job, attached=True))
                search_job[s.search] = job.job_id
            else:
                todo.append(s)
        for group in _groups(todo, lambda j: (j.resources,)):
            jobs = self._submit(group, "search", None, list(range(next_idx, next_idx + len(group))))
            next_idx += len(group)
            for s, job in zip(group, jobs):
                registry.put(s.key, job.job_id, s.label)
                search_job[s.search] = job.job_id
                tracked.append(_Tracked(s, job))
        # Phase 2: cells, each after the search job it reads.
        cell_idx = {id(c): initial_job_idx + k for k, c in enumerate(plan.cells)}
        todo = []
        for c in plan.cells:
            if c.complete:
                continue
            job = self._attach(registry, c)
            if job is not None:
                tracked.append(_Tracked(c, job, attached=True))
            else:
                todo.append(c)
        for group in _groups(todo, lambda j: (j.resources, j.stage, search_job.get(j.search))):
            after = search_job.get(group[0].search)
            jobs = self._submit(group, group[0].stage, after, [cell_idx[id(c)] for c in group])
            for c, job in zip(group, jobs):
                registry.put(c.key, job.job_id, c.label)
                tracked.append(_Tracked(c, job))
        returns = self._wait(tracked, plan)
        return returns

    # -- waiting -------------------------------------------------------------------------------------
    def _wait(self, tracked: List[_Tracked], plan: Any) -> list:
        import signal

        total = len(tracked)
        n_skipped = sum(j.complete for j in plan.jobs)
        ended = 0

        def _terminated(signum, frame):
            raise SystemExit(f"launcher stopped by signal {signum}")
        previous = signal.signal(signal.SIGTERM, _terminated)  # the summary is printed on SIGTERM too
        try:
            while any(not t.outcome for t in tracked):
                running = [t for t in tracked if not t.outcome]
                running[0].job.watcher.update()
                for t in running:
                    if t.outcome or not t.job.done():
                        continue
                    self._finish(t)
                    ended += 1
                    where = f"job {t.job.job_id}"
                    if t.outcome == "done":
                        log.info("[%d/%d] done      %s (%s)", ended, total, t.label, where)
                    else:
                        log.error("[%d/%d] FAILED    %s (%s): %s", ended, total, t.label, where, t.reason)
                        if t.planned.stage == "search":
                            ended += self._cancel_readers(t, tracked, ended, total)
                if any(not t.outcome for t in tracked):
                    time.sleep(self.poll_s)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._summary(tracked, n_skipped, [c for c in plan.cells if c.complete])
        bad = [t for t in tracked if t.outcome != "done"]
        if bad:
            raise SweepFailed(f"{len(bad)} of {total} jobs failed or were not run (see the summary above)")
        return [t.value for t in tracked if t.planned.stage != "search" and t.value is not None]

    def _finish(self, t: _Tracked) -> None:
        state = t.job.watcher.get_state(t.job.job_id, mode="cache")
        if not t.job.paths.result_pickle.exists() and state.split()[0].upper() not in ("COMPLETED",):
            t.outcome, t.reason = "failed", f"SLURM state {state} (no result: killed, cancelled, "
            t.reason += f"out of time or memory); log {t.job.paths.stderr}"
            return
        try:
            t.value = t.job.results()[0]
            t.outcome = "done"
        except Exception as e:  # the task's exception (the job exited non-zero)
            t.outcome = "failed"
            t.reason = f"{_exception_line(str(e)) or type(e).__name__}; log {t.job.paths.stderr}"

    def _cancel_readers(self, search: _Tracked, tracked: List[_Tracked], ended: int, total: int) -> int:
        readers = [t for t in tracked if not t.outcome and t.planned.stage != "search"
                   and t.planned.search == search.planned.search]
        ids = [t.job.job_id for t in readers]
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
        for k, t in enumerate(readers):
            t.outcome = "not run"
            t.reason = f"its search job {search.job.job_id} ({search.label}) failed: {search.reason}"
            log.error("[%d/%d] NOT RUN   %s (job %s cancelled): %s", ended + k + 1, total, t.label,
                      t.job.job_id, t.reason)
        return len(readers)

    def _summary(self, tracked: List[_Tracked], n_skipped: int, skipped: Sequence[Any] = ()) -> None:
        by = lambda o: [t for t in tracked if t.outcome == o]
        running = [t for t in tracked if not t.outcome]
        lines = [f"sweep summary: {len(by('done'))} done, {n_skipped} skipped (complete before the "
                 f"launch), {len(by('failed'))} failed, {len(by('not run'))} not run, "
                 f"{len(running)} still running"]
        for t in by("failed") + by("not run"):
            lines.append(f"  {t.outcome.upper():8s} {t.label} (job {t.job.job_id}): {t.reason}")
        for t in running:
            lines.append(f"  RUNNING  {t.label} (job {t.job.job_id}, {t.job.watcher.get_state(t.job.job_id, mode='cache')})")
        if running:
            lines.append("  the launcher exits but these jobs keep running (scancel them, or relaunch the "
                         "same command: it waits for them instead of submitting them again)")
        log.warning("\n".join(lines)) if (running or by("failed") or by("not run")) else log.info("\n".join(lines))
        try:
            print(_slurm_overview(tracked, skipped), flush=True)
        except Exception as e:  # the overview must never hide the sweep's own outcome
            log.warning("no sweep overview: %s: %s", type(e).__name__, e)


def _slurm_overview(tracked: Sequence[_Tracked], skipped: Sequence[Any]) -> str:
    """The sweep overview (plural_icm.pipeline.overview) of the SLURM launcher's jobs: cells
    with their scores, searches with their outcome, complete cells as skipped."""
    from plural_icm.layout import cell_path
    from plural_icm.pipeline.overview import SweepJob, format_overview

    def cell_dir(planned: Any) -> Optional[Path]:
        return cell_path(planned.settings) if planned.stage == "cell" else None

    jobs = [SweepJob(t.label, t.outcome or "running", t.reason, cell_dir(t.planned)) for t in tracked]
    jobs += [SweepJob(p.label, "skipped", cell_dir=cell_dir(p)) for p in skipped]
    return format_overview(jobs)


def _exception_line(message: str) -> str:
    """The exception line of submitit's FailedJobError text (its traceback sits between two
    ``----`` rules, followed by the log paths)."""
    lines = message.strip().splitlines()
    rules = [k for k, ln in enumerate(lines) if ln.strip() and set(ln.strip()) == {"-"}]
    if len(rules) >= 2:
        lines = lines[rules[0] + 1:rules[-1]]
    exc = [ln.strip() for ln in lines if ln.strip() and not ln.startswith((" ", "\t", "Traceback"))]
    return exc[-1] if exc else (lines[-1].strip() if lines else "")


def _groups(jobs: list, key) -> List[list]:
    """Jobs grouped by ``key`` (first-seen order): one job array per group."""
    out: Dict[Any, list] = {}
    for j in jobs:
        out.setdefault(key(j), []).append(j)
    return list(out.values())


class PluralBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper, validating a large batch by a sample instead of composing every job.

    ``BasicSweeper`` composes each job's config before launching it, only to check that the
    overrides are legal: minutes for the paper's grid, and the launchers compose (or assemble and
    check) every job again anyway. Here every distinct override value is still checked once: one
    job holding each value is composed (a dozen for a 480-job grid instead of 480).
    """

    def get_job_batch(self) -> List[List[str]]:
        return self.drop_inapplicable_folds(super().get_job_batch())

    def drop_inapplicable_folds(self, batch: List[List[str]]) -> List[List[str]]:
        """Jobs of a swept ``fold`` that their dataset does not have are dropped, with a printed
        count: a grid sweeps ``fold=0,1,2,3`` over datasets of four folds and OvertonBench, whose
        one fixed split is fold 0 (what each dataset has is what its loader declares,
        :func:`plural_icm.data.registry.declared_folds`). A fold given as a single value is left
        to the launcher, which refuses it naming the dataset's folds."""
        folds = {o for job in batch for o in job if o.startswith("fold=")}
        if len(folds) <= 1:
            return batch
        from plural_icm.data.registry import declared_folds

        loader = self.hydra_context.config_loader
        n_of: Dict[tuple, int] = {}
        keep, dropped = [], {}
        for job in batch:
            fold = next(o for o in job if o.startswith("fold="))
            key = tuple(o for o in job if o.startswith("dataset"))
            if key not in n_of:
                cfg = loader.load_sweep_config(self.config, [o for o in job if not o.startswith("fold=")])
                n_of[key] = declared_folds(cfg.dataset)
                n_of[key + ("name",)] = str(cfg.dataset.name)
            try:
                f = int(fold.split("=", 1)[1])
            except ValueError:
                keep.append(job)   # not a number: the job's own check says so
                continue
            if 0 <= f < n_of[key]:
                keep.append(job)
            else:
                name = n_of[key + ("name",)]
                dropped.setdefault((name, n_of[key]), set()).add(f)
        if dropped:
            n = len(batch) - len(keep)
            parts = [f"{name} declares {k} fold(s), dropped fold(s) {','.join(map(str, sorted(fs)))}"
                     for (name, k), fs in dropped.items()]
            msg = f"sweep: {n} of {len(batch)} job(s) dropped, their fold is not one of their dataset's ({'; '.join(parts)})"
            log.info(msg)  # Hydra's console handler shows it (a print beside it showed it twice)
        return keep

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if len(batch) <= 8:
            return super().validate_batch_is_legal(batch)
        picked: Dict[str, int] = {}
        for k, overrides in enumerate(batch):
            for o in overrides:
                picked.setdefault(o, k)
        sample = [batch[k] for k in sorted(set(picked.values()) | {len(batch) - 1})]
        return super().validate_batch_is_legal(sample)
