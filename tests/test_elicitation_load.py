"""Load and crash: 50 simulated annotators submitting concurrently to the real server (waitress,
127.0.0.1 only); then the server is killed with SIGKILL during submissions and restarted: every
answer the server confirmed is stored exactly once. Prints the figures (sent, confirmed, found)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from elicitation_support import CSRF, Server, answer_counts, synthetic_study

pytest.importorskip("flask", reason="the elicitation extra is not installed: pip install -e '.[elicitation]'")
pytest.importorskip("waitress", reason="the elicitation extra is not installed: pip install -e '.[elicitation]'")
requests = pytest.importorskip("requests")

N_ANNOTATORS = 50
K = 4


class Crowd:
    """Annotators answering through HTTP; a lost connection (the server died) waits for the
    restart and sends the same request again (same form token: stored once, confirmed again)."""

    def __init__(self, server: Server, store, invitations):
        self.server, self.store, self.invitations = server, store, invitations
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, int], str] = {}        # (token, question) -> option sent
        self.confirmed: dict[tuple[str, int], str] = {}   # ... -> option the server confirmed
        self.confirmed_at_kill: dict[tuple[str, int], str] | None = None
        self.retries = 0
        self.submitted: set[str] = set()

    def _call(self, method: str, path: str, **kw):
        deadline = time.time() + 120
        while True:
            if time.time() > deadline:
                raise TimeoutError(f"no answer from the server for 120 s ({method} {path[:3]}...)")
            self.up.wait(60)
            try:
                return requests.request(method, self.server.base + path, allow_redirects=False,
                                        timeout=30, **kw)
            except requests.ConnectionError:
                with self.lock:
                    self.retries += 1
                time.sleep(0.05)

    def _form_token(self, path: str) -> str:
        while True:
            r = self._call("GET", path)
            if r.status_code == 200:
                return CSRF.search(r.text).group(1)
            time.sleep(0.05)  # pragma: no cover - a 5xx while restarting

    def annotate(self, token: str, persona: str, rng: random.Random) -> None:
        for q in self.store.questions(persona):
            option = rng.choice([o.key for o in q.options])
            csrf = self._form_token(f"/a/{token}/q/{q.id}")
            with self.lock:
                self.sent[(token, q.id)] = option
            r = self._call("POST", f"/a/{token}/q/{q.id}", data={"csrf": csrf, "option": option})
            assert r.status_code == 303, (r.status_code, r.text[-300:])
            with self.lock:
                self.confirmed[(token, q.id)] = option
        csrf = self._form_token(f"/a/{token}/review")
        r = self._call("POST", f"/a/{token}/submit", data={"csrf": csrf})
        assert r.status_code == 303, (r.status_code, r.text[-300:])
        with self.lock:
            self.submitted.add(token)

    def run(self, kill_after: int | None = None) -> None:
        with ThreadPoolExecutor(N_ANNOTATORS) as pool:
            futures = [pool.submit(self.annotate, tok, persona, random.Random(i))
                       for i, (persona, tok) in enumerate(self.invitations)]
            if kill_after is not None:
                while len(self.confirmed) < kill_after:
                    time.sleep(0.005)
                self.up.clear()
                self.server.kill()  # mid-study: requests are in flight
                with self.lock:
                    self.confirmed_at_kill = dict(self.confirmed)
                    self.sent_at_kill = dict(self.sent)
                self.found_at_kill = answer_counts(self.server.study)  # before any retry
                self.server.start()
                self.up.set()
            for f in futures:
                f.result()


def _invite(store, per_persona: int):
    return [(p, tok) for p in ("north", "south") for _, tok in store.add_invitations(p, per_persona)]


def _stored(study, store, crowd: Crowd) -> dict[tuple[str, int], list[str]]:
    by_token = {tok: store.invitation(tok).id for tok, _ in crowd.sent}
    rows = answer_counts(study)
    return {(tok, q): rows.get((by_token[tok], q), []) for tok, q in crowd.sent}


@pytest.mark.slow
def test_fifty_annotators_then_sigkill_mid_study_loses_and_duplicates_nothing(tmp_path):
    study = tmp_path / "load.db"
    load_then_sigkill(study, tmp_path)
    con = sqlite3.connect(study)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def load_then_sigkill(study, tmp_path) -> None:
    """The load and kill tiers on ``study`` (a new file, or an empty database's URL: the
    PostgreSQL tests run it too)."""
    store, _ = synthetic_study(study, n_questions=K)
    server = Server(study, tmp_path / "server.log")
    server.start()
    try:
        # 1. 50 annotators at once
        t0 = time.perf_counter()
        crowd = Crowd(server, store, _invite(store, N_ANNOTATORS // 2))
        crowd.run()
        wall = time.perf_counter() - t0
        stored = _stored(study, store, crowd)
        found = sum(len(v) for v in stored.values())
        print(f"\nconcurrent: {N_ANNOTATORS} annotators x {K} answers: sent {len(crowd.sent)}, "
              f"confirmed {len(crowd.confirmed)}, found {found}, submitted {len(crowd.submitted)}; "
              f"{wall:.1f} s ({(len(crowd.sent) + len(crowd.submitted)) / wall:.0f} writes/s)")
        assert len(crowd.sent) == len(crowd.confirmed) == found == N_ANNOTATORS * K
        assert all(stored[key] == [opt] for key, opt in crowd.confirmed.items())
        assert len(crowd.submitted) == N_ANNOTATORS

        # 2. 50 more, and SIGKILL once 60 of their 200 answers are confirmed
        crowd2 = Crowd(server, store, _invite(store, N_ANNOTATORS // 2))
        crowd2.run(kill_after=60)
        at_kill = crowd2.confirmed_at_kill
        def stored_at_kill(key):
            return crowd2.found_at_kill.get((store.invitation(key[0]).id, key[1]), [])

        found_at_kill = {key: stored_at_kill(key) for key in at_kill}
        in_flight = [k for k in crowd2.sent_at_kill if k not in at_kill]
        print(f"in flight at the kill (sent, not confirmed): {len(in_flight)}, of which already "
              f"committed {sum(bool(stored_at_kill(k)) for k in in_flight)} (their retry was "
              f"confirmed without a second row)")
        stored = _stored(study, store, crowd2)
        found = sum(len(v) for v in stored.values())
        print(f"SIGKILL after {len(at_kill)} confirmed answers: found right after the kill "
              f"{sum(v == [at_kill[k]] for k, v in found_at_kill.items())} of them; after the "
              f"restart: sent {len(crowd2.sent)}, confirmed {len(crowd2.confirmed)}, found {found} "
              f"(duplicates {sum(len(v) > 1 for v in stored.values())}), connection retries "
              f"{crowd2.retries}, submitted {len(crowd2.submitted)}")
        assert all(found_at_kill[k] == [opt] for k, opt in at_kill.items())  # none lost by the kill
        assert len(crowd2.confirmed) == len(crowd2.sent) == found == N_ANNOTATORS * K
        assert all(stored[key] == [opt] for key, opt in crowd2.confirmed.items())  # exactly once
        assert len(crowd2.submitted) == N_ANNOTATORS
        assert sum(i.finished_at is not None for i in store.invitations()) == 2 * N_ANNOTATORS
        # an oversized body through the real server too
        big = requests.post(f"{server.base}/a/{crowd2.invitations[0][1]}/submit",
                            data={"pad": "x" * 200_000}, timeout=30)
        assert big.status_code == 413
        log = (tmp_path / "server.log").read_text()
        assert all(tok not in log for _, tok in crowd.invitations + crowd2.invitations)
    finally:
        server.stop()
