"""Integration tests against a real SLURM cluster (`scripts/slurm_local.sh up` gives one).

They run `python launch.py -m hydra/launcher=slurm ...` exactly as a user would, with the embedded
default (smollm2 on CPU, demo dataset), outputs in a tmp dir. Everything runs under subprocess
timeouts and leftover jobs are cancelled, so nothing can hang CI.

    scripts/slurm_local.sh up && pytest -m slurm tests/test_slurm.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
# paths.root_dir is given explicitly: Hydra instantiates the launcher before HydraConfig exists,
# so a `${hydra:runtime.cwd}` reachable from the launcher config cannot be resolved there.
COMMON = ["logger=none", "progress=false", f"paths.root_dir={ROOT}"]
# smollm2 runs: one CPU per cell, so two cells share the 2-core test machine instead of queueing
ONE_CPU = ["model.cpus=1"]
# Two tiny random models (tests/fixtures/conf/model/tiny_{a,b}.yaml) that ask for different CPUs,
# memory and time, x a condition without and one with a search: 2 search jobs, then 4 cell jobs.
FIXTURE_CONF = ROOT / "tests" / "fixtures" / "conf"
MODELS = {"tiny_a": {"cpus": 1, "mem_gb": 2, "time_min": 10}, "tiny_b": {"cpus": 2, "mem_gb": 3, "time_min": 12}}
SWEEP = ["-m", "hydra/launcher=slurm", f"hydra.searchpath=[file://{FIXTURE_CONF}]", "model=tiny_a,tiny_b",
         "condition=zero_shot,icm", "icm.max_iters=10"]
# Long enough to interrupt: a checkpoint every 2 iterations, no early stop.
LONG_SEARCH = ["condition=icm", "icm.max_iters=40", "icm.checkpoint_every=2", "icm.patience=1000"]
SWEEP_TIMEOUT = 1500    # s, a sweep (jobs queue on 2 shared cores: 3.5 min idle, 12+ min under load)
FAIL_TIMEOUT = 240      # s, from scancel to the launcher's exit


def _run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _cluster_ready() -> str | None:
    """None when usable, else the reason to skip."""
    for tool in ("sinfo", "sbatch", "squeue", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return f"`{tool}` not on PATH (scripts/slurm_local.sh up)"
    try:
        nodes = _run(["sinfo", "-h", "-t", "idle,mixed,allocated", "-o", "%N"], timeout=20)
        if nodes.returncode != 0 or not nodes.stdout.strip():
            return f"no usable SLURM node (sinfo: {nodes.stdout.strip() or nodes.stderr.strip()})"
        # submitit reads job states only through sacct: without accounting a killed job hangs it.
        if _run(["sacct", "-n", "-X", "-S", "now-1hours"], timeout=20).returncode != 0:
            return "sacct does not answer (no accounting): killed jobs would hang submitit"
    except subprocess.TimeoutExpired:
        return "SLURM commands time out"
    return None


_reason = _cluster_ready()
needs_cluster = pytest.mark.skipif(_reason is not None, reason=_reason or "")


# -- helpers ---------------------------------------------------------------------------------------
def _job_ids(out: Path) -> set[str]:
    """SLURM job ids submitted for this output dir (submitit folders: <id> or <arrayid>_<task>)."""
    d = out / "slurm"
    return {p.name.split("_")[0] for p in d.iterdir() if p.is_dir() and p.name[0].isdigit()} if d.is_dir() else set()


def _cancel_all(out: Path) -> None:
    ids = sorted(_job_ids(out))
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


_TINY: list[Path] = []


def _tiny_model() -> Path:
    """A tiny random model folder for the tiny_a / tiny_b test models (built once per session)."""
    if not _TINY:
        import tempfile

        from tiny_models import make_tiny_model_dir
        _TINY.append(make_tiny_model_dir(Path(tempfile.mkdtemp(prefix="plural_icm_tiny_"))))
    return _TINY[0]


def _env(out: Path, full_error: bool = True) -> dict:
    """A launcher's environment; ``full_error``: HYDRA_FULL_ERROR=1 (stack traces, for debugging a
    failing test), off where the test checks what a user sees."""
    env = dict(os.environ, PLURAL_ICM_OUTPUT=str(out), HYDRA_FULL_ERROR="1", WANDB_MODE="disabled",
               PLURAL_ICM_TINY_MODEL=str(_tiny_model()), PLURAL_ICM_POLL_S="2",
               # one torch thread per job even with 2 CPUs allocated: on the shared 2-core test
               # machine, OpenMP threads spin-waiting against other jobs make a job many times slower
               OMP_NUM_THREADS="1")
    # The job's Python must import plural_icm even if the package is not installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if not full_error:
        env.pop("HYDRA_FULL_ERROR")
    return env


_LAUNCHERS: list[subprocess.Popen] = []


def _popen(args: list[str], out: Path, full_error: bool = True) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.launch.log", "a")
    proc = subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, env=_env(out, full_error),
                            stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _LAUNCHERS.append(proc)
    return proc


def _wait(proc: subprocess.Popen, out: Path, timeout: float) -> tuple[int, float, str]:
    """Exit code, wall time and output of a launcher; on timeout kill it and its jobs, then fail."""
    t0 = time.monotonic()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _cancel_all(out)
        pytest.fail(f"launcher did not finish within {timeout} s:\n{_launch_log(out)[-3000:]}")
    return rc, time.monotonic() - t0, _launch_log(out)


def _launch_log(out: Path) -> str:
    p = out.parent / f"{out.name}.launch.log"
    return p.read_text() if p.exists() else ""


def _launch(args: list[str], out: Path, timeout: float, full_error: bool = True) -> tuple[int, float, str]:
    t0 = time.monotonic()
    rc, _, text = _wait(_popen(args, out, full_error), out, timeout)
    return rc, time.monotonic() - t0, text


def _job_logs(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "slurm").glob("*/*_log.*")))


def _cell_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "results").rglob("COMPLETE.json"))


def _search_labels(out: Path) -> dict[str, list[dict]]:
    """labels.jsonl of every finished search, keyed by its content-addressed relative path."""
    return {str(p.parent.relative_to(out)): [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
            for p in sorted((out / "searches").rglob("labels.jsonl"))}


def _assert_same_search_results(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> None:
    """Labels must match exactly; confidences only to fp32 noise.

    A resumed search rebuilds its prefix cache, so its final leave-one-out scores are computed with
    different batch and prefix splits than an uninterrupted run's: equal in exact arithmetic,
    a few 1e-6 apart in fp32 (the exactness tolerance is 1e-4).
    """
    assert sorted(got) == sorted(want), "resumed run has different searches than the uninterrupted one"
    for key in want:
        labels = lambda rows: [(r["item_id"], r["label"], r.get("gold")) for r in rows]
        assert labels(got[key]) == labels(want[key]), f"{key}: resumed labels differ from an uninterrupted run"
        for g, w in zip(got[key], want[key]):
            assert g["confidence"] == pytest.approx(w["confidence"], abs=1e-4), f"{key}: {g['item_id']}"


def _sacct(job_ids, fields: str) -> list[dict]:
    """One dict per job (allocations, not steps) of ``sacct -o <fields>``."""
    r = _run(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(sorted(job_ids)), "-o", fields], timeout=30)
    names = fields.split(",")
    return [dict(zip(names, line.split("|"))) for line in r.stdout.splitlines() if "|" in line]


def _sacct_table(job_ids) -> str:
    r = _run(["sacct", "-X", "-D", "-j", ",".join(sorted(job_ids)), "-o",
              "JobID,JobName%18,State,ExitCode,AllocCPUS,ReqMem,Timelimit,Start,End,Comment%32"], timeout=30)
    return r.stdout


def _sacct_states(job_id: str) -> list[str]:
    r = _run(["sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "JobID,State"], timeout=30)
    return [line.split("|")[1] for line in r.stdout.splitlines() if "|" in line]


def _wait_for(pred, timeout: float, what: str, poll: float = 0.5):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def slurm_tmp(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    yield d
    for proc in _LAUNCHERS:  # launchers left running by a failed or interrupted test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    for out in d.iterdir():
        if out.is_dir():
            _cancel_all(out)


@pytest.fixture(scope="module")
def sweep(slurm_tmp):
    """The two-model x two-condition sweep, run once for the tests that inspect it."""
    out = slurm_tmp / "sweep"
    out.mkdir()
    rc, wall, text = _launch([*SWEEP, *COMMON], out, SWEEP_TIMEOUT)
    print(f"\ntwo-model SLURM sweep: {wall:.0f} s wall")
    assert rc == 0, f"sweep failed (exit {rc}):\n{text[-4000:]}\n{_job_logs(out)[-4000:]}"
    return out, wall, text


@pytest.fixture(scope="module")
def reference_labels(slurm_tmp):
    """An uninterrupted run of LONG_SEARCH (same SLURM path), started in the background."""
    out = slurm_tmp / "reference"
    out.mkdir()
    proc = _popen(["-m", "hydra/launcher=slurm", *LONG_SEARCH, *COMMON, *ONE_CPU], out)

    def get():
        rc, _, text = _wait(proc, out, SWEEP_TIMEOUT)
        assert rc == 0, f"reference run failed:\n{text[-3000:]}\n{_job_logs(out)[-3000:]}"
        labels = _search_labels(out)
        assert labels, "the reference run wrote no labels.jsonl"
        return labels
    return get


def _job_log(out: Path, job_id: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out / "slurm" / job_id).glob("*_log.*")))


# -- tests -----------------------------------------------------------------------------------------
@needs_cluster
def test_sweep_completes_every_cell(sweep):
    out, _, _ = sweep
    cells = _cell_dirs(out)
    got = {p.relative_to(out / "results").parts[1:4:2] for p in cells}
    assert got == {(m, c) for m in MODELS for c in ("zero_shot", "icm")}, cells
    for cell in cells:
        for name in ("COMPLETE.json", "metrics.json", "predictions.jsonl"):
            assert (cell / name).is_file(), f"{cell} lacks {name}"
        assert (cell / "predictions.jsonl").read_text().strip(), f"{cell}: no predictions"
    assert list((out / "searches").rglob("COMPLETE.json")), "no finished ICM search"
    for jid in _job_ids(out):
        # slurmdbd records a finished step a moment after the launcher returns: wait (bounded).
        _wait_for(lambda: set(_sacct_states(jid)) == {"COMPLETED"} or None, 60,
                  f"sacct to report job {jid} COMPLETED (last seen {_sacct_states(jid)})", poll=2)


@needs_cluster
def test_each_job_gets_its_own_models_allocation_and_cells_run_after_their_search(sweep):
    out, _, text = sweep
    ids = _job_ids(out)
    rows = _sacct(ids, "JobID,JobName,AllocCPUS,ReqMem,Timelimit,Start,End,Comment")
    print("\n" + _sacct_table(ids))
    assert len(rows) == 6, rows   # 2 searches + 4 cells
    import re
    label = {jid: lab for lab, jid in re.findall(r"submitted (?:search )?(\S+): job (\S+) ", text)}
    assert set(label) == ids, (label, ids)
    searches, cells = {}, {}
    for r in rows:
        log = _job_log(out, r["JobID"])
        model = label[r["JobID"]].split("/")[0]
        want = MODELS[model]
        assert int(r["AllocCPUS"]) == want["cpus"], (r, model)
        assert r["ReqMem"] in (f"{want['mem_gb']}G", f"{want['mem_gb'] * 1024}M"), (r, model)
        assert r["Timelimit"] == f"00:{want['time_min']:02d}:00", (r, model)
        # exactly one model loaded per job: the base model in a search job, the instruct one in a cell
        loads = [l for l in log.splitlines() if "loading " in l and " model " in l]
        if r["JobName"].endswith("-search"):
            searches[model] = r
            assert len(loads) == 1 and "loading base model" in loads[0], (r["JobID"], loads)
        else:
            cells.setdefault(model, []).append((r, log, label[r["JobID"]].split("/")[2]))
            assert len(loads) == 1 and "loading instruct model" in loads[0], (r["JobID"], loads)
    assert set(searches) == set(MODELS)
    for model, jobs in cells.items():
        s = searches[model]
        for r, log, condition in jobs:
            if condition != "icm":
                assert "afterok" not in r["Comment"], r
                continue
            # recorded dependency, and it held: the cell started after its search ended
            assert r["Comment"] == f"plural_icm cell afterok:{s['JobID']}", r
            assert r["Start"] >= s["End"], (r, s)
            assert "(computed" not in log and "loaded" in log, "a cell ran a search itself"
    # no search ran twice: one search job per model, each persona's search computed once
    computed = [l for jid in ids for l in _job_log(out, jid).splitlines() if ": computed (" in l]
    assert len(computed) == len(set(computed)) == len(list((out / "searches").rglob("COMPLETE.json")))
    assert "sweep summary: 6 done, 0 skipped (complete before the launch), 0 failed, 0 not run, 0 still running" in text


@needs_cluster
def test_relaunch_does_no_work(sweep):
    out, first_wall, _ = sweep
    before = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*") if p.is_file()}
    before_searches = sorted(str(p) for p in (out / "searches").rglob("*") if p.is_file())
    before_jobs = _job_ids(out)
    rc, wall, text = _launch([*SWEEP, *COMMON], out, SWEEP_TIMEOUT)
    assert rc == 0, text[-4000:]
    print(f"\nrelaunch of the complete sweep: {wall:.0f} s wall (first run {first_wall:.0f} s)")
    after = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*") if p.is_file()}
    assert after == before, "a relaunch rewrote result files"
    assert sorted(str(p) for p in (out / "searches").rglob("*") if p.is_file()) == before_searches
    assert _job_ids(out) == before_jobs, "a relaunch of a complete sweep submitted jobs"
    assert "0 done, 6 skipped" in text, text[-2000:]     # 4 cells and the 2 searches they read


@needs_cluster
def test_cell_that_raises_is_a_failed_job(slurm_tmp):
    out = slurm_tmp / "raises"
    out.mkdir()
    args = ["-m", "hydra/launcher=slurm", f"hydra.searchpath=[file://{FIXTURE_CONF}]", "model=tiny_a",
            "condition=zero_shot,gold", "dataset=gqa", "dataset.path=/nonexistent/global_opinions.csv",
            "dataset.options.download=false", *COMMON]
    rc, _, text = _launch(args, out, FAIL_TIMEOUT, full_error=False)  # as a user runs it
    assert rc != 0
    ids = _job_ids(out)
    assert len(ids) == 1, ids      # the two cells ask for the same resources: one job array
    _wait_for(lambda: [r["State"] for r in _sacct(ids, "JobID,State,ExitCode")] == ["FAILED", "FAILED"] or None,
              60, "sacct to show the jobs FAILED", poll=2)
    print("\n" + _sacct_table(ids))
    assert all(r["ExitCode"] != "0:0" for r in _sacct(ids, "JobID,State,ExitCode"))
    assert "0 done, 0 skipped (complete before the launch), 2 failed" in text, text[-3000:]
    assert "global_opinions.csv" in text.split("sweep summary")[-1], text[-3000:]   # the reason
    # the end is one line, not the launcher's stack trace
    assert "2 of 2 jobs failed or were not run" in text and "Traceback" not in text, text[-3000:]


@needs_cluster
def test_cancelled_search_fails_its_cells_and_relaunch_resumes(slurm_tmp, reference_labels):
    out = slurm_tmp / "killed"
    out.mkdir()
    args = ["-m", "hydra/launcher=slurm", *LONG_SEARCH, *COMMON, *ONE_CPU]
    proc = _popen(args, out)
    try:
        _wait_for(lambda: list((out / "searches").rglob("checkpoint.json")), 600, "a search checkpoint")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        _cancel_all(out)
        raise
    ids = sorted(_job_ids(out))
    names = {r["JobID"]: r["JobName"] for r in _sacct(ids, "JobID,JobName")}
    [search] = [i for i in ids if names.get(i, "").endswith("-search")]
    [cell] = [i for i in ids if i != search]
    t_kill = time.monotonic()
    subprocess.run(["scancel", search], check=True, timeout=30)
    rc, _, text = _wait(proc, out, FAIL_TIMEOUT)
    print(f"\ncancelled search reported after {time.monotonic() - t_kill:.0f} s\n" + _sacct_table(ids))
    assert rc != 0, "the launcher reported success for a cancelled search"
    assert f"FAILED    search smollm2/demo/fold0 (job {search})" in text, text[-3000:]
    assert f"NOT RUN   smollm2/demo/icm/nall/fold0/seed0 (job {cell} cancelled): its search job {search}" in text
    assert "0 done, 0 skipped (complete before the launch), 1 failed, 1 not run, 0 still running" in text
    assert not list((out / "searches").rglob("COMPLETE.json")), "the search finished before the kill"
    assert list((out / "searches").rglob("checkpoint.json")), "no checkpoint left to resume from"

    rc, wall, text = _launch(args, out, SWEEP_TIMEOUT)
    assert rc == 0, f"relaunch failed:\n{text[-3000:]}\n{_job_logs(out)[-3000:]}"
    assert "resuming search" in _job_logs(out), "the relaunched job did not resume from the checkpoint"
    _assert_same_search_results(_search_labels(out), reference_labels())


@needs_cluster
def test_relaunch_attaches_to_running_jobs_and_preempted_search_resumes(slurm_tmp, reference_labels):
    """Launcher killed mid-sweep -> its jobs keep running; the relaunch waits for them instead of
    submitting duplicates. USR2 (time limit / preemption) -> checkpoint, requeue, resume."""
    out = slurm_tmp / "preempted"
    out.mkdir()
    args = ["-m", "hydra/launcher=slurm", *LONG_SEARCH, *COMMON, *ONE_CPU]
    first = _popen(args, out)
    try:
        _wait_for(lambda: list((out / "searches").rglob("checkpoint.json")), 600, "a search checkpoint")
        os.killpg(first.pid, signal.SIGKILL)      # the launcher dies; its two jobs do not
        first.wait(timeout=30)
        ids = sorted(_job_ids(out))
        assert len(ids) == 2
        second = _popen(args, out)
        _wait_for(lambda: _launch_log(out).count("instead of submitting it again") >= 2, 120,
                  "the relaunch to attach to both running jobs")
        # submitit's own test hook (SlurmJob._interrupt) does the same: signal the job's steps.
        names = {r["JobID"]: r["JobName"] for r in _sacct(ids, "JobID,JobName")}
        [search] = [i for i in ids if names.get(i, "").endswith("-search")]
        subprocess.run(["scancel", "--signal=USR2", search], check=True, timeout=30)
    except BaseException:
        os.killpg(first.pid, signal.SIGKILL)
        _cancel_all(out)
        raise
    rc, wall, text = _wait(second, out, SWEEP_TIMEOUT)
    logs = _job_logs(out)
    assert rc == 0, f"preempted sweep failed:\n{text[-3000:]}\n{logs[-3000:]}"
    assert sorted(_job_ids(out)) == ids, "the relaunch submitted a duplicate of a running job"
    assert "Requeued job" in logs, "submitit did not requeue the job"
    assert "resuming search" in logs, "the requeued job did not resume from the checkpoint"
    print("\n" + _sacct_table(ids))
    _assert_same_search_results(_search_labels(out), reference_labels())


# -- helpers of plural_icm.pipeline.slurm (no cluster needed) --------------------------------------
class _Model:
    name, gpus, cpus, mem_gb, time_min = "llama8b", 1, 8, 64, 240


def test_check_allocation_outside_slurm_is_silent():
    from plural_icm.pipeline.slurm import check_allocation, slurm_job_info
    assert check_allocation(_Model(), env={}) == []
    assert slurm_job_info(env={}) == {}


def test_check_allocation_refuses_too_few_gpus_and_warns_on_memory():
    from plural_icm.pipeline.slurm import AllocationError, check_allocation
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_NODE": "8192"}
    with pytest.raises(AllocationError, match="needs 1"):
        check_allocation(_Model(), env=env)
    warnings = check_allocation(_Model(), env={**env, "SLURM_GPUS_ON_NODE": "1"})
    assert len(warnings) == 2 and "65536 MB" in warnings[1]
    # the time limit too (Slurm >= 23.02 exports the job's start and end time)
    timed = {**env, "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_START_TIME": "1000", "SLURM_JOB_END_TIME": str(1000 + 30 * 60)}
    warnings = check_allocation(_Model(), env=timed)
    assert len(warnings) == 3 and "time limit 30 min" in warnings[2] and "240 min" in warnings[2]


def test_parse_slurm_time():
    from plural_icm.pipeline.slurm import parse_slurm_time
    assert [parse_slurm_time(t) for t in ("30", "30:00", "1:00:00", "2-00:00:00", "1-02", "UNLIMITED")] == \
        [30, 30, 60, 2880, 1560, None]


def test_slurm_job_info_reads_requeue_count():
    from plural_icm.pipeline.slurm import slurm_job_info
    info = slurm_job_info(env={"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "11", "SLURM_ARRAY_TASK_ID": "1",
                               "SLURM_RESTART_COUNT": "2", "SUBMITIT_FOLDER": "/o/slurm/11_1"})
    assert info["restart_count"] == 2 and info["array_task_id"] == 1 and info["job_id"] == "12"
    assert slurm_job_info(env={"SLURM_JOB_ID": "3"})["restart_count"] == 0


@pytest.mark.parametrize("launcher", ["slurm", "slurm_gpu", "local"])
def test_launcher_presets_take_resources_from_the_model(launcher, compose_config):
    """Compose each preset for a GPU model and for the CPU default (gpus: 0)."""
    from omegaconf import OmegaConf
    for model, gpus, mem in (("llama70b", 4, 256), ("smollm2", 0, 8)):
        cfg = compose_config([f"hydra/launcher={launcher}", f"model={model}", "logger=none",
                              f"paths.root_dir={ROOT}"], hydra=True)
        lc = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        assert (lc["gpus_per_node"], lc["mem_gb"]) == (gpus, mem)
        assert lc["tasks_per_node"] == 1
        assert lc["timeout_min"] == cfg.model.time_min
        assert lc["submitit_folder"].endswith("/%j") and lc["submitit_folder"].startswith(cfg.paths.output_dir)
        if launcher != "local":
            assert lc["max_num_timeout"] > 0 and lc["signal_delay_s"] >= 120
