"""The study in a PostgreSQL database (``--study postgresql://...``), tested against a real server:
Debian's postgresql, started by this module in a temporary directory on a free port of 127.0.0.1
with password authentication. The same pages and hostile requests as with SQLite, racing writers
with one form token, a served study stopped by SIGINT, and the URL's password never printed or
logged. Skips with its reason where PostgreSQL's programs or psycopg are missing (.ci/run
installs both)."""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from elicitation_support import CSRF, Server, answer_counts, synthetic_study

PASSWORD = "pg-s3cret-for-the-test"


def _pg_bin() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        bindir = Path(subprocess.run([found, "--bindir"], check=False, capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").is_file():
            return bindir
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))  # Debian keeps them off PATH
    return Path(dirs[-1]).parent if dirs else None


PG_BIN = _pg_bin()
_MISSING = [what for what, ok in (
    ("psycopg (pip install -e '.[elicitation]')", importlib.util.find_spec("psycopg")),
    ("flask/waitress (pip install -e '.[elicitation]')",
     importlib.util.find_spec("flask") and importlib.util.find_spec("waitress")),
    ("Debian's postgresql (apt-get install postgresql)", PG_BIN),
) if not ok]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"PostgreSQL tier needs {', '.join(_MISSING)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_server():
    """A PostgreSQL server of our own; yields the URL of its ``postgres`` database."""
    root = Path(tempfile.mkdtemp(prefix="plural_icm_pg_"))
    run_as: list[str] = []
    if os.getuid() == 0:  # PostgreSQL refuses to run as root: its system user runs it
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no postgres system user to run PostgreSQL")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    (root / "pw").write_text(PASSWORD + "\n")
    if run_as:
        os.chown(root / "pw", user.pw_uid, user.pw_gid)
    port = _free_port()
    data, log = root / "data", root / "server.log"

    def pg(*args: str) -> None:
        r = subprocess.run([*run_as, *args], check=False, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")

    pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "study", "--auth=scram-sha-256",
       f"--pwfile={root / 'pw'}", "-E", "UTF8", "--no-sync")
    pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
       f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        yield f"postgresql://study:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server, request):
    """A new, empty database on the server for one test."""
    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.node.name).lower()[:50]
    with psycopg.connect(pg_server, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return pg_server.rsplit("/", 1)[0] + "/" + name


def test_postgres_study_pages_and_hostile_requests(pg_url):
    """The same annotator path and hostile requests as the SQLite tests (test_elicitation), on
    PostgreSQL: the same statuses, nothing written by a refused request."""
    from test_elicitation import _form, _hostile, _qids

    from plural_icm.elicitation.server import make_app
    from plural_icm.elicitation.store import StudyStore
    from plural_icm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"the study database postgresql://study:\*\*\*@.* holds no study"):
        StudyStore(pg_url).open_checked()  # an empty database
    store, researcher = synthetic_study(pg_url)
    assert store.url == pg_url and PASSWORD not in store.where and "***" in store.where
    with pytest.raises(ConfigError, match="already holds a study"):
        synthetic_study(pg_url)
    (_, north), = store.add_invitations("north", 1)
    (_, south), = store.add_invitations("south", 1)
    inv = store.invitation(north)
    assert abs(inv.created_at - time.time()) < 60 and inv.created_at % 1 != 0  # 8-byte times
    study = {"db": pg_url, "store": store, "client": make_app(pg_url).test_client(), "north": north,
             "south": south, "researcher": researcher}
    got = _hostile(study)
    assert [s for _, s, _ in got] == [404, 400, 400, 403, 403, 403, 413, 404, 400, 404, 404]
    assert all(unchanged for _, _, unchanged in got)
    c, qids = study["client"], _qids(store, "north")
    for qid in qids[1:]:
        csrf, _ = _form(c, f"/a/{north}/q/{qid}")
        assert c.post(f"/a/{north}/q/{qid}", data={"csrf": csrf, "option": "2"}).status_code == 303
    csrf, _ = _form(c, f"/a/{north}/review")
    assert c.post(f"/a/{north}/submit", data={"csrf": csrf}).status_code == 303
    assert answer_counts(pg_url) == {(inv.id, qids[0]): ["1"], **{(inv.id, q): ["2"] for q in qids[1:]}}
    # nothing of the tokens is stored: only their hashes
    import psycopg

    with psycopg.connect(pg_url) as con:
        dump = repr([con.execute(f"SELECT * FROM {t}").fetchall()
                     for t in ("meta", "invitations", "answers", "nonces")])
    assert north not in dump and researcher not in dump
    assert StudyStore(pg_url).open_checked().meta()["name"] == "synthetic"


def test_postgres_one_form_token_raced_by_two_writers_confirms_one(pg_url):
    """Per question, two threads send the same form token at once with different answers: exactly
    one is written and confirmed, the other refused (403); 30 annotators x 4 questions at once."""
    from concurrent.futures import ThreadPoolExecutor

    from plural_icm.elicitation.store import Refused

    store, _ = synthetic_study(pg_url, personas=("north",))
    invitations = store.add_invitations("north", 30)
    qids = _qids_of(store)
    barrier = threading.Barrier(2)
    won: dict[tuple[str, int], list[str]] = {}
    refused: list[int] = []
    lock = threading.Lock()

    def race(token: str, qid: int, nonce: str, option: str) -> None:
        barrier.wait()  # pairs of requests leave together
        try:
            if store.save_answer(token, qid, option, nonce):
                with lock:
                    won.setdefault((token, qid), []).append(option)
        except Refused as e:
            with lock:
                refused.append(e.status)

    with ThreadPoolExecutor(max_workers=2) as pool:  # the barrier pairs the two of each race
        for _, token in invitations:
            inv_id = store.invitation(token).id
            for qid in qids:
                nonce = store.issue_nonce(inv_id)
                futures = [pool.submit(race, token, qid, nonce, opt) for opt in ("0", "2")]
                for f in futures:
                    f.result()
    n = len(invitations) * len(qids)
    assert len(refused) == n and set(refused) == {403}
    assert all(len(v) == 1 for v in won.values()) and len(won) == n
    ids = {store.invitation(t).id: t for _, t in invitations}
    stored = answer_counts(pg_url)
    assert {(ids[i], q): v for (i, q), v in stored.items()} == won  # the confirmed one, once
    print(f"{n} races of two writers with one form token: {n} confirmed, {len(refused)} refused (403)")


def _qids_of(store) -> list[int]:
    return [q.id for q in store.questions("north")]


def test_postgres_served_study_stops_on_sigint_and_never_shows_the_password(pg_url, tmp_path, capsys):
    requests = pytest.importorskip("requests")
    from plural_icm.elicitation.__main__ import main

    store, researcher = synthetic_study(pg_url, personas=("north",))
    assert main(["invite", "--study", pg_url, "--persona", "north"]) == 0
    token = re.search(r"/a/(\S+)", capsys.readouterr().out).group(1)
    qids = _qids_of(store)
    server = Server(pg_url, tmp_path / "server.log")
    base = server.start()
    try:
        http = requests.Session()
        for qid in qids:
            csrf = CSRF.search(http.get(f"{base}/a/{token}/q/{qid}").text).group(1)
            assert http.post(f"{base}/a/{token}/q/{qid}", data={"csrf": csrf, "option": "0"},
                             allow_redirects=False).status_code == 303
        csrf = CSRF.search(http.get(f"{base}/a/{token}/review").text).group(1)
        assert http.post(f"{base}/a/{token}/submit", data={"csrf": csrf},
                         allow_redirects=False).status_code == 303
        assert http.get(f"{base}/r/{researcher}").status_code == 200
        os.kill(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    redacted = pg_url.replace(PASSWORD, "***")
    assert f"({'the study database ' + redacted}); stop with Ctrl-C" in log
    assert [x for x in log.splitlines() if "confirmed answer" in x] == \
        [f"stopped (SIGINT): the study database {redacted} keeps every confirmed answer"]
    assert PASSWORD not in log and token not in log and "Traceback" not in log
    assert sorted(answer_counts(pg_url)) == [(1, q) for q in qids]
    assert main(["status", "--study", pg_url]) == 0
    out = capsys.readouterr()
    assert "north: invited 1, opened 1, started 1, finished 1" in out.out and PASSWORD not in out.out + out.err
    assert main(["status", "--study", pg_url.replace(PASSWORD, "wrong")]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "wrong" not in err and PASSWORD not in err


@pytest.mark.slow
def test_postgres_fifty_annotators_then_sigkill_loses_and_duplicates_nothing(pg_url, tmp_path):
    """The load and SIGKILL test of test_elicitation_load, on PostgreSQL."""
    from test_elicitation_load import load_then_sigkill

    load_then_sigkill(pg_url, tmp_path)
