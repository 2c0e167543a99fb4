"""Helpers of the elicitation tests: a synthetic study, a server in a subprocess, an HTTP annotator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_study(path: Path, n_questions: int = 4, personas=("north", "south"),
                    layout: str | None = None):
    """A study without searches: ``n_questions`` three-option questions per persona (``layout``:
    the study's setting; None: a study file from before the setting, one question per page)."""
    from plural_icm.elicitation.store import Option, Question, StudyStore

    qs = [Question(0, p, f"{p}/q{i}", f"q{i}", f"Question {i} for {p}?", i, [0],
                   [Option(str(j), f"Option {j} of question {i}") for j in range(3)], gold_key="1")
          for p in personas for i in range(n_questions)]
    meta = {"name": "synthetic", "model": "none", "dataset": "synthetic", "method": "confidence",
            "k_per_fold": n_questions, "folds": [0], "seed": 0, "overrides": [],
            "instruction": "Answer as most people in this group would."}
    if layout is not None:
        meta["layout"] = layout
    store = StudyStore.create(path, meta, {p: f"The group is {p}erners." for p in personas}, qs)
    return store, store.set_researcher_token()


CSRF = re.compile(r'name="csrf" value="([^"]+)"')
QUESTION_LINK = re.compile(r'href="(/a/[^"/]+/q/(\d+))"')


class Server:
    """``python -m plural_icm.elicitation serve`` on 127.0.0.1 and a free port, in a subprocess
    (its own process group, so SIGKILL takes it down as a crash would)."""

    def __init__(self, study: Path, log: Path):
        self.study, self.log = study, log
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def start(self, timeout: float = 60.0) -> str:
        seen = len(re.findall(rb"listening on", self.log.read_bytes())) if self.log.exists() else 0
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plural_icm.elicitation", "serve", "--study", str(self.study),
                 "--port", "0", "--threads", "8"], cwd=ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            m = re.findall(rb"listening on (http://127\.0\.0\.1:\d+)", self.log.read_bytes())
            if len(m) > seen and self.proc.poll() is None:  # this start's line, not an earlier one
                self.base = m[-1].decode()
                return self.base
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"server did not start in {timeout}s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no flush, as a crash or the OOM killer."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def answer_counts(study) -> dict[tuple[int, int], list[str]]:
    """Every stored answer, (invitation id, question id) -> the option keys stored (a list, so a
    duplicate would show as two); ``study``: a file or a postgresql:// URL."""
    from plural_icm.elicitation.store import StudyStore

    out: dict[tuple[int, int], list[str]] = {}
    for r in StudyStore(study).all_answers():
        out.setdefault((r["invitation_id"], r["question_id"]), []).append(r["option_key"])
    return out
