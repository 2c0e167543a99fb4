"""Search claims without flock: two processes racing for one search, a claimant killed with -9,
a stale claim of another node, and a live holder whose heartbeat keeps its claim.

The searches run on the fake LM (no torch), in real separate processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from plural_icm.utils.claim import Claim

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# One process: run_or_load on a fixed fake-LM search. The backend factory (called only by the
# process that computes) records itself, then sleeps, so the other process really has to wait.
WORKER = r"""
import json, os, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from fake_lm import FakeLM
from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.engine import SearchParams
from plural_icm.search.store import SearchTask, run_or_load

searches, marker, sleep_s = sys.argv[3], sys.argv[4], float(sys.argv[5])
claims = [Claim(item_id=f"q{q}o{o}", persona_id="p", group_id=f"q{q}", question_id=f"q{q}",
                option_key=str(o), question=f"question {q}?",
                claim=f"option {o} of {q}" + (" [+]" if o == q % 2 else ""), gold=(o == q % 2))
          for q in range(6) for o in range(2)]
task = SearchTask(model="fake", dataset="d", fold=0, persona="p", claims=claims,
                  rule=ConsistencyRule.EXACTLY_ONE,
                  params=SearchParams(alpha=5, num_seed=4, max_iters=60, patience=1000),
                  seed=1, template="Question: {question}\nClaim: {claim}\nI think this claim is",
                  labels=(" True", " False"), model_identity={"model": "fake"})

def factory():
    with open(marker, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(sleep_s)
    return FakeLM()

[s] = run_or_load([task], searches, factory)
print(json.dumps({"computed": s.computed, "labels": s.labels}))
"""


def _start(tmp: Path, marker: Path, sleep_s: float, env_extra: dict | None = None) -> subprocess.Popen:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PLURAL_ICM_CLAIM_HEARTBEAT_S="0.2", PLURAL_ICM_CLAIM_STALE_S="2",
               **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(script), str(ROOT), str(TESTS), str(tmp / "searches"),
                             str(marker), str(sleep_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _result(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]) | {"stderr": err}


def _wait_for(pred, timeout: float, what: str):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_two_processes_racing_for_one_search_compute_it_once(tmp_path):
    marker = tmp_path / "computed_by"
    a = _start(tmp_path, marker, sleep_s=1.5)
    b = _start(tmp_path, marker, sleep_s=1.5)
    ra, rb = _result(a), _result(b)
    assert len(marker.read_text().split()) == 1, "both processes loaded a model for the same search"
    assert sorted([ra["computed"], rb["computed"]]) == [False, True]
    assert ra["labels"] == rb["labels"]
    assert not list((tmp_path / "searches").rglob(".claim")), "the claim was not released"


def test_claimant_killed_with_sigkill_is_taken_over(tmp_path):
    marker = tmp_path / "computed_by"
    a = _start(tmp_path, marker, sleep_s=600)   # takes the claim, then hangs in the factory
    _wait_for(marker.exists, 60, "the first process to take the claim")
    claim = next((tmp_path / "searches").rglob(".claim"))
    assert json.loads(claim.read_text())["pid"] == a.pid
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    assert claim.exists(), "SIGKILL cannot release the claim: the successor must take it over"
    t0 = time.monotonic()
    b = _start(tmp_path, marker, sleep_s=0)
    rb = _result(b)
    assert rb["computed"] is True
    assert "taking over" in rb["stderr"], rb["stderr"][-2000:]
    assert len(marker.read_text().split()) == 2
    assert list((tmp_path / "searches").rglob("COMPLETE.json"))
    print(f"\nsuccessor of a SIGKILLed claimant finished after {time.monotonic() - t0:.1f} s")


def test_stale_claim_of_another_node_is_taken_over_after_stale_s(tmp_path):
    path = tmp_path / ".claim"
    path.write_text(json.dumps({"host": "some-other-node", "pid": 1, "slurm_job_id": "99"}))
    t0 = time.monotonic()
    with Claim(path, heartbeat_s=0.1, stale_s=1.0, poll_s=0.05) as c:
        waited = time.monotonic() - t0
        assert c.took_over["host"] == "some-other-node"
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert 1.0 <= waited < 10, waited
    assert not path.exists()


def test_live_holder_keeps_its_claim_by_heartbeat(tmp_path):
    path = tmp_path / ".claim"
    holder = Claim(path, heartbeat_s=0.1, stale_s=0.5)
    holder.acquire()
    # A waiter that treats every claim as another node's (no pid check): only the heartbeat
    # tells it the holder is alive.
    waiter = Claim(path, heartbeat_s=0.1, stale_s=0.5, poll_s=0.05)
    waiter._holder_gone = lambda h: False
    got = threading.Event()
    t = threading.Thread(target=lambda: (waiter.acquire(), got.set()), daemon=True)
    t.start()
    assert not got.wait(2.0), "a claim with a live heartbeat was taken over"
    holder.release()
    assert got.wait(5.0), "the waiter did not get the released claim"
    assert waiter.took_over is None
    waiter.release()
