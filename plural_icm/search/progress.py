"""The search progress bar, counting the work actually left.

Its total is the iterations the unfinished searches can still run: ``max_iters`` minus the
iteration a search resumes from (0 for a search that is complete, or completed by another job
while this one waited for its lock). When a search stops early (every claim labelled and
``patience`` iterations without an accepted change, the engine's rule), the iterations it will not
run are taken off the total, so the rate and time left follow the real work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from plural_icm.layout import SEARCH_FILES, is_complete


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


class SearchProgress:
    """``on_iteration(task, row)`` callback that drives one tqdm bar over a job's searches.

    The bar appears with the first iteration (a relaunch of finished work shows none) and its
    total is computed then, after the store took the searches' locks: what another job finished
    meanwhile is not counted. ``total`` and ``done`` are kept here (a disabled tqdm counts
    nothing).
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
        self._left: dict[str, int] = {}
        self._since: dict[str, int] = {}

    def _start(self) -> None:
        for t in self.tasks:
            self._left[t.hash()], self._since[t.hash()] = iterations_left(t, self.searches_dir)
        self.total = sum(self._left.values())
        self.bar = tqdm(total=self.total, desc=self.desc, unit="it", disable=not self.enabled,
                        dynamic_ncols=True)

    def __call__(self, task: Any, row: dict) -> None:
        if self.bar is None:
            self._start()
        key = task.hash()
        self.done += 1
        self.bar.update(1)
        self._left[key] = max(0, self._left.get(key, 1) - 1)
        self._since[key] = 0 if row.get("accepted") else self._since.get(key, 0) + 1
        if (row.get("n_labelled") == len(task.claims)
                and self._since[key] >= int(task.params.patience) and self._left[key]):
            # Early stop: the engine ends this search now; drop its unused budget.
            self.total = max(self.done, self.total - self._left[key])
            self._left[key] = 0
            self.bar.total = self.total
            self.bar.refresh()
        self.bar.set_postfix_str(f"{task.persona} U={row['U']:.1f} labelled={row['n_labelled']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
