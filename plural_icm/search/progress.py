"""The search progress bar, counting the work actually left, with a time left that holds.

Its total is the iterations the unfinished searches can still run: ``max_iters`` minus the
iteration a search resumes from (0 for a search that is complete, or completed by another job
while this one waited for its lock). When a search stops early (every claim labelled and
``patience`` iterations without an accepted change, the engine's rule), the iterations it will not
run are taken off the total.

Time left: an iteration's cost grows with the claims labelled so far (its prompts hold every
labelled claim: ~n tokens per claim for the fast engine, ~n^2 for the reference engine,
``search.cost``), so the first iterations after a few seed labels run many times faster than the
proposals of a fully labelled search, and iterations per second would promise far too little time
(1:12 shown with 12:20 left, issue #29). The bar measures work in those cost units instead: the
rate is work per second so far, the work left projects each search's labelled count forward at
its observed growth up to its claim count. The phase is named (loading the model and the first
evaluation before the first iteration; proposals; the final labels after the last).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from plural_icm.layout import SEARCH_FILES, is_complete

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it [{elapsed}{postfix}]"


def iterations_left(task: Any, searches_dir: str | Path) -> tuple[int, int]:
    """(iterations the search can still run, iterations since its last accepted change) from its
    directory: complete -> (0, 0); checkpoint at iteration i -> (max_iters - i, since); else
    (max_iters, 0)."""
    d = task.directory(searches_dir)
    if is_complete(d, SEARCH_FILES):
        return 0, 0
    ck = d / "checkpoint.json"
    if ck.is_file():
        try:
            st = json.loads(ck.read_text(encoding="utf-8"))
            return (max(0, int(task.params.max_iters) - int(st["iteration"])),
                    int(st.get("since_accept", 0)))
        except (OSError, ValueError, KeyError):
            pass  # unreadable checkpoint: the store reports it; count the full budget
    return int(task.params.max_iters), 0


def iteration_cost(n_labelled: int, engine: str = "fast") -> float:
    """Relative cost of one iteration with ``n_labelled`` claims in the context (``search.cost``:
    a fast-engine proposal is ~9 n L tokens, a reference one ~2.6 n^2 L)."""
    n = max(int(n_labelled), 1)
    # the reference and the published order recompute what follows a changed claim: ~n^2
    return float(n * n) if engine in ("reference", "published") else float(n)


def work_left(n_now: int, n_claims: int, growth: float, iterations: int, engine: str = "fast") -> float:
    """Cost of ``iterations`` more iterations of a search now holding ``n_now`` labels, its
    labelled count growing by ``growth`` per iteration up to ``n_claims``."""
    total, n = 0.0, float(n_now)
    for _ in range(int(iterations)):
        n = min(float(n_claims), n + growth)
        total += iteration_cost(round(n), engine)
    return total


def count_prompts(backend: Any, on_scored: Any) -> None:
    """Report every ``label_logprobs`` call's prompt count to ``on_scored`` (an attribute of this
    backend instance, removed by :func:`stop_counting`; the scores are untouched)."""
    stop_counting(backend)
    scorer = backend.label_logprobs

    def counted(prompts, labels):
        out = scorer(prompts, labels)
        on_scored(len(prompts))
        return out

    backend.label_logprobs = counted


def stop_counting(backend: Any) -> None:
    """Undo :func:`count_prompts` (the backend serves inference next)."""
    if "label_logprobs" in getattr(backend, "__dict__", {}):
        del backend.__dict__["label_logprobs"]


def _fmt_time(s: float) -> str:
    s = int(round(max(s, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class SearchProgress:
    """``on_iteration(task, row)`` callback that drives one tqdm bar over a job's searches.

    The bar appears when the searches start (:meth:`starting`, naming the phase until the first
    iteration) or with the first iteration; a relaunch of finished work shows none. Its total is
    computed at the first iteration, after the store took the searches' locks: what another job
    finished meanwhile is not counted. ``total`` and ``done`` (iterations) and ``eta_s`` (seconds
    left, None until two iterations ran) are kept here (a disabled tqdm counts nothing).
    """

    def __init__(self, tasks: Sequence[Any], searches_dir: str | Path, desc: str = "ICM search",
                 enabled: bool = True) -> None:
        self.tasks = list(tasks)
        self.searches_dir = searches_dir
        self.desc = desc
        self.enabled = enabled
        self.bar: Any = None
        self.total: int | None = None
        self.done = 0
        self.eta_s: float | None = None
        self._left: dict[str, int] = {}
        self._since: dict[str, int] = {}
        self._n: dict[str, int] = {}        # labelled claims now
        self._n0: dict[str, int] = {}       # labelled claims at the first iteration seen
        self._its: dict[str, int] = {}      # iterations seen
        self._work = 0.0
        self._t_first: float | None = None
        self._counted = False
        self._phase: str | None = None  # a phase between iterations (prompts are counted)
        self._phase_t0 = 0.0
        self._phase_prompts = 0

    def _engine(self, task: Any) -> str:
        return task.params.cost_mode

    def _open(self) -> None:
        if self.bar is None:
            self.bar = tqdm(total=0, desc=self.desc, unit="it", disable=not self.enabled,
                            dynamic_ncols=True, bar_format=BAR_FORMAT)

    def starting(self, phase: str = "loading the model, first evaluation") -> None:
        """Show the bar before the first iteration, naming what runs meanwhile."""
        if not self._counted:  # the store calls for the model after it took the searches' locks
            self._count()
        self._phase, self._phase_t0, self._phase_prompts = phase, time.perf_counter(), 0
        self.bar.set_postfix_str(phase)

    def scored(self, n_prompts: int) -> None:
        """``n_prompts`` were scored: between iterations (the first evaluation with its seed
        repair, the final labels) the bar counts them with their rate, so a long phase shows it
        is moving."""
        if self.bar is None or getattr(self, "_phase", None) is None:
            return
        self._phase_prompts += int(n_prompts)
        rate = self._phase_prompts / max(time.perf_counter() - self._phase_t0, 1e-9)
        speed = f"{rate:.1f} prompts/s" if rate >= 1 else f"{1 / rate:.1f} s/prompt"
        self.bar.set_postfix_str(f"{self._phase}: {self._phase_prompts} prompts scored, {speed}")

    def _count(self) -> None:
        for t in self.tasks:
            self._left[t.hash()], self._since[t.hash()] = iterations_left(t, self.searches_dir)
        self.total = sum(self._left.values())
        self._open()
        self.bar.total = self.total
        self._counted = True

    def _eta(self) -> float | None:
        if self._t_first is None or self.done < 2 or self._work <= 0:
            return None
        rate = self._work / max(time.perf_counter() - self._t_first, 1e-9)  # work per second
        left = 0.0
        for t in self.tasks:
            key = t.hash()
            its = self._its.get(key, 0)
            n = self._n.get(key, 0)
            growth = (n - self._n0.get(key, n)) / its if its else 1.0
            # at least one label per 4 iterations while unlabelled claims remain (the sampler
            # prefers them); never faster than one per iteration
            growth = min(1.0, max(growth, 0.25))
            left += work_left(n, len(t.claims), growth, self._left.get(key, 0), self._engine(t))
        return left / rate

    def __call__(self, task: Any, row: dict) -> None:
        if not self._counted:
            self._count()
        key = task.hash()
        now = time.perf_counter()
        n_lab = int(row.get("n_labelled", 0))
        if self._t_first is None:
            self._t_first = now  # the rate is of iterations only: loading and setup excluded
        else:
            self._work += iteration_cost(n_lab, self._engine(task))
        self._n0.setdefault(key, n_lab)
        self._n[key] = n_lab
        self._its[key] = self._its.get(key, 0) + 1
        self.done += 1
        self.bar.update(1)
        self._left[key] = max(0, self._left.get(key, 1) - 1)
        self._since[key] = 0 if row.get("accepted") else self._since.get(key, 0) + 1
        if (task.params.patience is not None and n_lab == len(task.claims)
                and self._since[key] >= int(task.params.patience) and self._left[key]):
            # Early stop: the engine ends this search now; drop its unused budget.
            self.total = max(self.done, self.total - self._left[key])
            self._left[key] = 0
            self.bar.total = self.total
            self.bar.refresh()
        self.eta_s = self._eta()
        self._phase = None  # iterations: the bar's own count and time left
        if not any(self._left.values()):
            phase = "final labels"
            self._phase, self._phase_t0, self._phase_prompts = phase, time.perf_counter(), 0
        else:
            phase = "left " + (_fmt_time(self.eta_s) if self.eta_s is not None else "?")
        restart = int(getattr(task, "seed", 0)) % 1000  # search_tasks: seed = 1000 x seed + restart
        who = f"{task.persona}-r{restart}" if restart else str(task.persona)
        self.bar.set_postfix_str(f"{phase}, {who} U={row['U']:.1f} "
                                 f"labelled={n_lab}/{len(task.claims)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
