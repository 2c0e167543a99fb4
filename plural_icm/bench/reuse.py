"""How far back the searches reach into the ``hf`` prefix cache: the measurement behind
:data:`plural_icm.pipeline.memory.EVALUATIONS_KEPT`.

``python -m plural_icm.bench.reuse --out reuse.json [launch.py overrides...]`` runs ``launch.py``
with the prefix cache unbounded and, for every hit, records its LRU reuse distance: the bytes of
the distinct segments touched (stored or hit) since that segment was last touched, its own
included. An LRU of ``B`` bytes keeps every segment whose distance is at most ``B`` (the
inclusion property of LRU), so the largest distance is the least budget that recomputes nothing,
and the hits beyond a budget are (to first order: a recomputed segment is stored again and shifts
later distances) what that budget would recompute. Distances are reported in full evaluations of
all the job's searches together (``search.cost.full_evaluation_tokens`` per search, summed), the
unit :data:`~plural_icm.pipeline.memory.EVALUATIONS_KEPT` counts in. The JSON is rewritten every
30 s and at exit, so a long run can be read while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

KS = (1, 1.5, 2, 3, 4, 6, 8, 12, 16)


class _Fenwick:
    """Prefix sums over access times (the bytes of each segment at its last access)."""

    def __init__(self, n: int) -> None:
        self.n, self.t = n, [0] * (n + 1)

    def add(self, i: int, v: int) -> None:
        i += 1
        while i <= self.n:
            self.t[i] += v
            i += i & -i

    def below(self, i: int) -> int:
        """Sum over times < ``i``."""
        s = 0
        while i > 0:
            s += self.t[i]
            i -= i & -i
        return s


class Distances:
    """LRU reuse distances of one cache's accesses."""

    def __init__(self, capacity: int = 1 << 23) -> None:
        self.clock, self.total = 0, 0
        self.last: dict[bytes, int] = {}
        self.size: dict[bytes, int] = {}
        self.fw = _Fenwick(capacity)
        self.hits: list[tuple[int, int]] = []  # (distance bytes, segment bytes)

    def touch(self, key: bytes, nbytes: int, hit: bool) -> None:
        t_old = self.last.get(key)
        if t_old is not None:
            if hit:
                self.hits.append((self.total - self.fw.below(t_old), self.size[key]))
            self.fw.add(t_old, -self.size[key])
            self.total -= self.size[key]
        if self.clock >= self.fw.n:
            raise RuntimeError("more accesses than the distance table holds")
        self.fw.add(self.clock, nbytes)
        self.total += nbytes
        self.last[key], self.size[key] = self.clock, nbytes
        self.clock += 1


def instrument() -> dict[str, Any]:
    """Make every ``hf`` backend's prefix cache unbounded and tracked; returns the state the
    summary is built from."""
    from plural_icm.backends import hf
    from plural_icm.backends.prefix_cache import SegmentKVCache, kv_nbytes
    from plural_icm.pipeline import search_start
    from plural_icm.search.cost import full_evaluation_tokens

    state: dict[str, Any] = {"dist": Distances()}

    class Tracked(SegmentKVCache):
        def get(self, key):
            got = super().get(key)
            if got is not None:
                state["dist"].touch(key, self.entries[key][1], hit=True)
            return got

        def put(self, key, n_tokens, kv):
            super().put(key, n_tokens, kv)
            state["dist"].touch(key, kv_nbytes(kv), hit=False)

    hf.SegmentKVCache = Tracked
    sized = search_start.size_prefix_cache

    def unbounded(backend, tasks):
        from plural_icm.pipeline.memory import kv_bytes_per_position, tokens_per_claim

        line = sized(backend, tasks)
        L = tokens_per_claim(tasks, getattr(backend, "tokenizer", None))
        state.update(budget_line=line, per_position=kv_bytes_per_position(backend), L=L,
                     n_claims=[len(t.claims) for t in tasks], backend=backend,
                     evaluation=sum(full_evaluation_tokens(len(t.claims), L, t.params.cost_mode)
                                    for t in tasks))
        backend.kv_cache.max_bytes = None
        return line

    search_start.size_prefix_cache = unbounded
    return state


def summary(state: dict[str, Any]) -> dict[str, Any]:
    per_pos = state.get("per_position") or 1
    unit = state.get("evaluation") or 1.0
    hits = list(state["dist"].hits)
    out: dict[str, Any] = {k: state.get(k) for k in ("budget_line", "per_position", "L", "n_claims")}
    out["evaluation_positions"] = unit
    backend = state.get("backend")
    out["positions_computed"] = backend.stats.prompt_tokens_computed if backend is not None else None
    out["hits"] = len(hits)
    out["positions_hit"] = sum(b for _, b in hits) / per_pos
    out["max_distance_positions"] = max((d for d, _ in hits), default=0) / per_pos
    out["max_distance_evaluations"] = out["max_distance_positions"] / unit
    out["positions_recomputed_at_k_evaluations"] = {
        str(k): sum(b for d, b in hits if d > k * unit * per_pos) / per_pos for k in KS}
    return out


def write(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(summary(state), indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON summary (rewritten every 30 s)")
    args, overrides = ap.parse_known_args(argv)
    state = instrument()

    def every_30s() -> None:
        while True:
            time.sleep(30)
            write(state, args.out)

    threading.Thread(target=every_30s, daemon=True).start()
    root = Path(__file__).resolve().parents[2]
    sys.argv = [str(root / "launch.py"), *overrides]
    try:
        runpy.run_path(str(root / "launch.py"), run_name="__main__")
    finally:
        write(state, args.out)
        print(json.dumps(summary(state), indent=1))


if __name__ == "__main__":
    main()
