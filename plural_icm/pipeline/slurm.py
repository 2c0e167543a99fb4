"""SLURM helpers for a cell running as a submitit job (``hydra/launcher=slurm|slurm_gpu``).

How requeue works (hydra-submitit-launcher 1.2.0 + submitit 1.5, read from their source):

* The launcher submits *itself* (``BaseSubmititLauncher.__call__``) as the job's callable, and that
  class defines ``checkpoint()`` returning ``submitit.helpers.DelayedSubmission(self, *args)``: the
  same cell with the same overrides. Every job is therefore "checkpointable" for submitit.
* Jobs are submitted with ``--signal=USR2@<signal_delay_s>``. In the job submitit installs a USR2
  handler (``SignalHandler.checkpoint_and_try_requeue``): it calls ``checkpoint()``, pickles the
  resubmission, runs ``scontrol requeue <jobid>`` and exits. SIGTERM is logged and ignored.
* A USR2 that arrives before 80 % of the time limit (and before limit - 10 min) counts as a
  *preemption* and always requeues; a later one counts as a *timeout* and requeues only while the
  timeout budget ``max_num_timeout`` lasts (0, the plugin's default, means never).
* The requeued job runs the cell from the top: complete searches and cells are skipped and an
  unfinished search continues from its ``checkpoint.json``.
* ``plural_icm.utils.stop.StopRequest`` turns SIGTERM/SIGINT/SIGUSR2 into a stop flag polled
  before every scoring batch; the searches checkpoint their last iteration boundary, release their
  claims, print one line, then submitit's handler is restored and the signal re-sent, so the
  requeue above still happens (USR2) or the job ends (SIGTERM, e.g. ``scancel``), which the
  launcher reports at once.

What this module adds: a record of the job (:func:`slurm_job_info`) and a check that the job got
the resources its model needs (:func:`check_allocation`): the project's launcher
(hydra_plugins/plural_icm_launcher) gives every job its own model's request, but a launcher
config or a hand-written sbatch can still give a job less.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any, Mapping

log = logging.getLogger(__name__)


class AllocationError(RuntimeError):
    """The SLURM job has fewer GPUs than the model needs."""


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ


def slurm_job_info(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Identity of the current SLURM job, for COMPLETE.json / W&B config ({} outside SLURM).

    ``restart_count`` is how many times SLURM requeued the job (preemption, time limit).
    """
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        return {}
    keys = {
        "job_id": "SLURM_JOB_ID",
        "array_job_id": "SLURM_ARRAY_JOB_ID",
        "array_task_id": "SLURM_ARRAY_TASK_ID",
        "restart_count": "SLURM_RESTART_COUNT",
        "node": "SLURMD_NODENAME",
        "partition": "SLURM_JOB_PARTITION",
        "cpus_per_task": "SLURM_CPUS_PER_TASK",
        "mem_per_node_mb": "SLURM_MEM_PER_NODE",
        "gpus": "SLURM_GPUS_ON_NODE",
    }
    info: dict[str, Any] = {k: env[v] for k, v in keys.items() if v in env}
    for k in ("restart_count", "cpus_per_task", "mem_per_node_mb", "gpus", "array_task_id"):
        if k in info:
            try:
                info[k] = int(info[k])
            except ValueError:
                pass
    info.setdefault("restart_count", 0)
    if "SUBMITIT_FOLDER" in env:
        info["submitit_folder"] = env["SUBMITIT_FOLDER"]
    return info


def _allocated_gpus(env: Mapping[str, str]) -> int | None:
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        return int(env["SLURM_GPUS_ON_NODE"])
    if "CUDA_VISIBLE_DEVICES" in env:
        return len([d for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()])
    # No GPU variable at all: SLURM sets none when the job asked for no GPUs.
    return 0 if "SLURM_JOB_ID" in env else None


def check_allocation(model_cfg: Any, env: Mapping[str, str] | None = None) -> list[str]:
    """Compare the SLURM job's allocation with the model's ``gpus``/``cpus``/``mem_gb``.

    Outside SLURM it does nothing. Too few GPUs raises :class:`AllocationError` (the model cannot
    load, better to fail in a second than after the model download); too few CPUs or too little
    memory is logged as a warning. Returns the warnings.
    """
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        return []
    name = getattr(model_cfg, "name", "?")
    hint = ("The job's allocation comes from hydra.launcher (the project's SLURM launchers take it "
            "from each job's model config; a hydra.launcher.<key>=... override or conf/local/slurm*.yaml "
            "can lower it; docs/slurm.md).")
    need_gpus = int(getattr(model_cfg, "gpus", 0) or 0)
    got_gpus = _allocated_gpus(env)
    if got_gpus is not None and got_gpus < need_gpus:
        raise AllocationError(f"SLURM job {env['SLURM_JOB_ID']} has {got_gpus} GPU(s) but model "
                              f"{name} needs {need_gpus}. {hint}")
    warnings = []
    need_cpus = int(getattr(model_cfg, "cpus", 0) or 0)
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit() and int(env["SLURM_CPUS_PER_TASK"]) < need_cpus:
        warnings.append(f"{env['SLURM_CPUS_PER_TASK']} CPUs allocated, model {name} asks for {need_cpus}")
    need_mb = int(getattr(model_cfg, "mem_gb", 0) or 0) * 1024
    if env.get("SLURM_MEM_PER_NODE", "").isdigit() and int(env["SLURM_MEM_PER_NODE"]) < need_mb:
        warnings.append(f"{env['SLURM_MEM_PER_NODE']} MB allocated, model {name} asks for {need_mb} MB")
    need_min = int(getattr(model_cfg, "time_min", 0) or 0)
    got_min = _time_limit_min(env)
    if got_min is not None and got_min < need_min:
        warnings.append(f"time limit {got_min} min, model {name} asks for {need_min} min (searches "
                        "checkpoint and requeue at the limit, at most max_num_timeout times)")
    for w in warnings:
        log.warning("%s. %s", w, hint)
    return warnings


def parse_slurm_time(text: str) -> int | None:
    """Minutes of a SLURM time string (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", "N/A"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        h, m, sec = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            h, m, sec = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, sec = 0, parts[0], parts[1]
        else:
            h, m, sec = parts[:3]
    return days * 1440 + h * 60 + m + (1 if sec else 0)


def _time_limit_min(env: Mapping[str, str]) -> int | None:
    """The job's time limit: from SLURM_JOB_END_TIME - SLURM_JOB_START_TIME (Slurm >= 23.02), else
    ``squeue -o %l``; None when unknown."""
    start, end = env.get("SLURM_JOB_START_TIME", ""), env.get("SLURM_JOB_END_TIME", "")
    if start.isdigit() and end.isdigit():
        return (int(end) - int(start)) // 60
    if "SLURM_JOB_ID" not in env or env is not os.environ:
        return None
    try:
        r = subprocess.run(["squeue", "-h", "-j", env["SLURM_JOB_ID"], "-o", "%l"],
                           capture_output=True, text=True, timeout=20)
        return parse_slurm_time(r.stdout.splitlines()[0]) if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
