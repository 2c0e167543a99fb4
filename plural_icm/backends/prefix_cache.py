"""The transformers backend's exact segment-level prefix cache, bounded in bytes.

* A prefix is named by a hash chain over its segments (``key_k = H(key_{k-1}, tokens of segment
  k)``, :func:`chain_key`), so a key names the whole prefix, not just the segment: a segment's
  key/value states are only ever reused after exactly the same tokens at exactly the same
  positions, which makes reuse exact.
* :class:`SegmentKVCache` keeps the key/value states of each segment (only that segment's
  positions, per layer) in an LRU bounded by a byte budget (``model.prefix_cache_gb``). Evicting an
  entry never changes a result: the scorer finds it missing and recomputes that segment from the
  same tokens. ``evictions``, ``recomputed_tokens`` (positions computed again after their
  eviction), ``bytes`` and ``peak_bytes`` say what the budget cost.
* :class:`PathBuffer` holds the states of the trie path the scorer is on (a DFS stack in one
  growing buffer), handed to the model as ``past_key_values``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ROOT_KEY = b""

KV = list[tuple[Any, Any]]
"""Per-layer (keys, values) tensors of shape (1, kv heads, positions, head dim)."""


def chain_key(parent: bytes, segment: tuple[int, ...]) -> bytes:
    """The key of the prefix ``parent`` + ``segment``."""
    h = hashlib.blake2b(parent, digest_size=16)
    h.update(np.asarray(segment, dtype=np.int64).tobytes())
    return h.digest()


def kv_nbytes(kv: KV) -> int:
    """Bytes held by one entry's key/value tensors."""
    return sum(k.element_size() * k.numel() + v.element_size() * v.numel() for k, v in kv)


def gb_to_bytes(gb: float | None) -> int | None:
    """``model.prefix_cache_gb`` (GiB; None: unbounded) as a byte budget."""
    if gb is None:
        return None
    if gb < 0:
        raise ValueError(f"model.prefix_cache_gb must be >= 0 (GiB) or null, not {gb}")
    return int(gb * 2**30)


class SegmentKVCache:
    """LRU of per-segment key/value states, keyed by prefix hash chain, bounded in bytes.

    ``max_bytes=None`` never evicts; ``max_tokens`` (optional) bounds the cached positions too.
    An entry larger than the whole budget is not stored (it is recomputed when needed).
    """

    def __init__(self, max_bytes: int | None, max_tokens: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_tokens = max_tokens
        self.entries: OrderedDict[bytes, tuple[int, int, KV]] = OrderedDict()
        self.tokens = 0
        self.bytes = 0
        self.peak_bytes = 0
        self.peak_tokens = 0
        self.evictions = 0
        """Entries dropped to stay within the budget (each is recomputed if asked for again)."""
        self.rejected = 0
        """Entries never stored because one alone exceeds the budget."""
        self.sized_by: str | None = None
        """Set when the budget was sized to the work (``pipeline.memory``): the first eviction
        is then expected and logged as information, not as a warning to raise the cap."""
        self.recomputed_tokens = 0
        """Positions stored again after an eviction: what the budget cost in compute."""
        self._evicted: set[bytes] = set()  # keys (16 bytes each) evicted and not stored since

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self.entries

    def get(self, key: bytes) -> KV | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        self.entries.move_to_end(key)
        return hit[2]

    def _over(self) -> bool:
        return ((self.max_bytes is not None and self.bytes > self.max_bytes)
                or (self.max_tokens is not None and self.tokens > self.max_tokens))

    def put(self, key: bytes, n_tokens: int, kv: KV) -> None:
        size = kv_nbytes(kv)
        if ((self.max_bytes is not None and size > self.max_bytes)
                or (self.max_tokens is not None and n_tokens > self.max_tokens)):
            self.rejected += 1
            return
        if key in self._evicted:
            self._evicted.discard(key)
            self.recomputed_tokens += n_tokens
        old = self.entries.pop(key, None)
        if old is not None:
            self.tokens -= old[0]
            self.bytes -= old[1]
        self.entries[key] = (n_tokens, size, kv)
        self.tokens += n_tokens
        self.bytes += size
        while self._over():
            if not self.evictions:
                self._warn_full(size / max(n_tokens, 1))
            gone, (n, b, _) = self.entries.popitem(last=False)
            self._evicted.add(gone)
            self.tokens -= n
            self.bytes -= b
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.peak_tokens = max(self.peak_tokens, self.tokens)

    def _warn_full(self, bytes_per_position: float) -> None:
        """Once, at the first eviction: the budget is full, from here on evicted segments are
        recomputed (same results, more compute). Measured in docs/benchmark.md: at n = 64 with
        SmolLM2 a 4 GiB budget made the first proposal compute 4.7x the tokens of no bound."""
        budget = "" if self.max_bytes is None else f"{self.max_bytes / 2**30:g} GiB "
        if self.sized_by:
            log.info("prefix cache at its budget (%s): %s positions; evicting the least recently "
                     "used segments from here on (recomputed when needed, results do not change)",
                     self.sized_by, f"{self.tokens:,}")
            return
        log.warning("prefix cache full: %sbudget holds %s positions of %.0f KiB each; evicting the "
                    "least recently used segments, which are recomputed when needed (results do "
                    "not change, compute grows): raise model.prefix_cache_gb if memory allows "
                    "(null: unbounded)", budget, f"{self.tokens:,}", bytes_per_position / 1024)

    def stats(self) -> dict[str, int | None]:
        return {"entries": len(self.entries), "tokens": self.tokens, "bytes": self.bytes,
                "peak_bytes": self.peak_bytes, "peak_tokens": self.peak_tokens,
                "max_bytes": self.max_bytes,
                "evictions": self.evictions, "rejected": self.rejected,
                "recomputed_tokens": self.recomputed_tokens}

    def clear(self) -> None:
        self.entries.clear()
        self._evicted.clear()
        self.tokens = 0
        self.bytes = 0


class PathBuffer:
    """Per-layer key/value states of the current trie path (batch 1), grown on demand."""

    def __init__(self) -> None:
        self.k: list[Any] = []
        self.v: list[Any] = []

    def write(self, start: int, kv: KV) -> None:
        """Write ``kv`` at positions ``start..``; later positions are stale and never read."""
        import torch
        n = kv[0][0].shape[-2]
        end = start + n
        if not self.k:
            for k, v in kv:
                cap = max(256, end * 2)
                self.k.append(k.new_zeros((1, k.shape[1], cap, k.shape[3])))
                self.v.append(v.new_zeros((1, v.shape[1], cap, v.shape[3])))
        if end > self.k[0].shape[2]:
            cap = end * 2
            for i in range(len(self.k)):
                for store in (self.k, self.v):
                    old = store[i]
                    new = old.new_zeros((1, old.shape[1], cap, old.shape[3]))
                    new[:, :, : old.shape[2]] = old
                    store[i] = new
        with torch.no_grad():
            for i, (k, v) in enumerate(kv):
                self.k[i][:, :, start:end] = k
                self.v[i][:, :, start:end] = v

    def past(self, length: int, batch: int) -> Any:
        """The first ``length`` positions as a ``DynamicCache`` expanded over ``batch`` rows."""
        from transformers import DynamicCache
        if length == 0:
            return DynamicCache()
        return DynamicCache(ddp_cache_data=[
            (k[:, :, :length].expand(batch, -1, -1, -1), v[:, :, :length].expand(batch, -1, -1, -1))
            for k, v in zip(self.k, self.v)])
