"""CachedBackend: content keys (model, revision, labels, params, prompt), JSONL robustness."""

from __future__ import annotations

import json

import numpy as np

from plural_icm.backends.base import GenerationParams, LMBackend
from plural_icm.backends.request_cache import CachedBackend


class FakeBackend(LMBackend):
    name = "fake"

    def __init__(self, model_id: str = "m", revision: str | None = None) -> None:
        super().__init__()
        self.model_id, self.revision = model_id, revision
        self.calls = 0

    def label_logprobs(self, prompts, labels):
        self.calls += 1
        return np.array([[-(sum(map(sum, p)) % 7) - 0.1 * j - 0.123456789 for j in range(len(labels))]
                         for p in prompts])

    def generate(self, prompts, params):
        self.calls += 1
        return [f"gen{sum(map(sum, p))}" for p in prompts]


P1, P2 = ((1, 2), (3,)), ((1, 2), (4,))


def test_scores_hit_and_miss(tmp_path):
    path = tmp_path / "job" / "requests.jsonl"
    be = CachedBackend(FakeBackend(), path)
    first = be.label_logprobs([P1, P2], [" True", " False"])
    assert be.inner.calls == 1 and be.stats.request_cache_hits == 0
    again = CachedBackend(FakeBackend(), path)  # a new process reading the same job file
    assert np.array_equal(again.label_logprobs([P2, P1], [" True", " False"]), first[::-1])
    assert again.inner.calls == 0 and again.stats.request_cache_hits == 2
    assert np.array_equal(again.label_logprobs([((1, 2, 3),)], [" True", " False"]), first[:1])  # segmentation-free
    for other, labels, prompt in [(FakeBackend("other"), [" True", " False"], P1),
                                  (FakeBackend("m", revision="r2"), [" True", " False"], P1),
                                  (FakeBackend(), [" False", " True"], P1),
                                  (FakeBackend(), [" True", " False"], ((1, 2), (5,)))]:
        c = CachedBackend(other, path)
        c.label_logprobs([prompt], labels)
        assert c.inner.calls == 1 and c.stats.request_cache_hits == 0


def test_generation_cached_only_when_deterministic(tmp_path):
    path = tmp_path / "r.jsonl"
    be = CachedBackend(FakeBackend(), path)
    greedy, seeded = GenerationParams(max_new_tokens=5), GenerationParams(temperature=1.0, seed=3)
    unseeded = GenerationParams(temperature=1.0)
    for params in (greedy, seeded):
        assert be.generate([P1], params) == ["gen6"]
    calls = be.inner.calls
    assert be.generate([P1], greedy) == ["gen6"] and be.generate([P1], seeded) == ["gen6"]
    assert be.inner.calls == calls and be.stats.request_cache_hits == 2
    be.generate([P1], GenerationParams(max_new_tokens=6))  # other params: miss
    assert be.inner.calls == calls + 1
    be.generate([P1], unseeded)
    be.generate([P1], unseeded)
    assert be.inner.calls == calls + 3 and be.stats.request_cache_hits == 2


def test_truncated_last_line_is_tolerated(tmp_path):
    path = tmp_path / "r.jsonl"
    be = CachedBackend(FakeBackend(), path)
    be.label_logprobs([P1], [" True"])
    with open(path, "a") as fh:
        fh.write('{"k": "abc", "v": [1.0')  # a job killed mid-write
    be2 = CachedBackend(FakeBackend(), path)
    be2.label_logprobs([P1, P2], [" True"])
    assert be2.stats.request_cache_hits == 1 and be2.inner.calls == 1
    be3 = CachedBackend(FakeBackend(), path)
    be3.label_logprobs([P1, P2], [" True"])
    assert be3.stats.request_cache_hits == 2 and be3.inner.calls == 0
    lines = path.read_text().splitlines()
    assert sum(1 for line in lines if _ok(line)) == 2


def test_exact_float_roundtrip_and_forwarding(tmp_path):
    inner = FakeBackend()
    be = CachedBackend(inner, tmp_path / "r.jsonl")
    a = be.label_logprobs([P1], [" True"])
    b = CachedBackend(FakeBackend(), tmp_path / "r.jsonl").label_logprobs([P1], [" True"])
    assert a.tobytes() == b.tobytes()
    assert be.model_id == "m" and be.name == "fake" and be.stats is inner.stats
    assert be.cache_identity() == inner.cache_identity()


def _ok(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
