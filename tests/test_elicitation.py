"""The web study (plural_icm.elicitation): agreement figures, the store, the pages through Flask's
test client, and hostile requests (each refused with its status, nothing written)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time

import pytest
from elicitation_support import CSRF, answer_counts, synthetic_study
from settings_support import typed_settings

from plural_icm.elicitation.agreement import QuestionVotes, fleiss_kappa, persona_kappa

NO_EXTRA = "the elicitation extra is not installed: pip install -e '.[elicitation]'"


# -- agreement --------------------------------------------------------------------------------------

def test_fleiss_kappa_of_fleiss_worked_example():
    """The 10 items x 5 categories, 14 raters example of Fleiss (1971) as reproduced widely:
    P_bar = 0.378, P_e = 0.213, kappa = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)     # perfect agreement
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)    # maximal disagreement
    assert fleiss_kappa([[2, 0], [2, 0]]) is None                   # every vote in one category
    assert fleiss_kappa([[1, 0]]) is None                           # one rater
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[2, 0], [1, 0]])


def test_majority_and_ties():
    from collections import Counter

    q = QuestionVotes(Counter({"1": 2, "0": 1}), ["0", "1", "2"])
    assert (q.majority, q.tie, q.majority_share) == ("1", False, pytest.approx(2 / 3))
    t = QuestionVotes(Counter({"2": 1, "0": 1}), ["0", "1", "2"])
    assert (t.majority, t.tie, t.leaders) == (None, True, ["0", "2"])  # the survey's order
    u = QuestionVotes(Counter({"2": 2, "0": 1}), ["0", "1", "2"])
    assert persona_kappa([q, u]) == pytest.approx(fleiss_kappa([[1, 2, 0], [1, 0, 2]]))
    assert persona_kappa([q, t]) is None  # 3 votes against 2: kappa is not defined


# -- the store --------------------------------------------------------------------------------------

def test_store_keeps_hashes_not_tokens_and_runs_in_wal(tmp_path):
    db = tmp_path / "s.db"
    store, researcher = synthetic_study(db)
    (annotator, token), = store.add_invitations("north", 1)
    assert re.fullmatch(r"a-[0-9a-f]{8}", annotator) and len(token) >= 43
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in raw and researcher.encode() not in raw
    assert store.invitation(token).persona_id == "north" and store.is_researcher(researcher)
    assert not store.is_researcher(token) and store.invitation(researcher) is None
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = {r[1] for t in ("invitations", "answers") for r in con.execute(f"PRAGMA table_info({t})")}
    assert not cols & {"ip", "name", "email", "user_agent", "token"}  # nothing identifying
    with pytest.raises(Exception, match="never overwritten"):
        synthetic_study(db)


# -- the pages --------------------------------------------------------------------------------------

@pytest.fixture
def study(tmp_path):
    pytest.importorskip("flask", reason=NO_EXTRA)
    from plural_icm.elicitation.server import make_app

    db = tmp_path / "s.db"
    store, researcher = synthetic_study(db)
    (_, north), = store.add_invitations("north", 1)
    (_, south), = store.add_invitations("south", 1)
    app = make_app(db)
    return {"db": db, "store": store, "client": app.test_client(), "north": north, "south": south,
            "researcher": researcher}


def _form(client, url):
    r = client.get(url)
    assert r.status_code == 200, r.text
    return CSRF.search(r.text).group(1), r.text


def _qids(store, persona):
    return [q.id for q in store.questions(persona)]


def test_annotator_path_and_researcher_view(study, caplog):
    c, store, tok = study["client"], study["store"], study["north"]
    caplog.set_level(logging.INFO, logger="plural_icm.elicitation.access")
    page = c.get(f"/a/{tok}")
    assert page.status_code == 200 and "The group is northerners." in page.text
    assert 'name="viewport"' in page.text and "4 short questions" in page.text
    qids = _qids(store, "north")
    for i, qid in enumerate(qids):
        csrf, html = _form(c, f"/a/{tok}/q/{qid}")
        assert f"Question {i + 1} of 4" in html
        assert html.count('type="radio"') == 3 and html.count("<label") == 3  # real labels
        r = c.post(f"/a/{tok}/q/{qid}", data={"csrf": csrf, "option": "0"})
        assert r.status_code == 303
    # change the first answer before submitting
    csrf, html = _form(c, f"/a/{tok}/q/{qids[0]}")
    assert re.search(r'value="0" checked', html)  # the saved answer is shown
    assert c.post(f"/a/{tok}/q/{qids[0]}", data={"csrf": csrf, "option": "2"}).status_code == 303
    csrf, html = _form(c, f"/a/{tok}/review")
    assert "Option 2 of question 0" in html and "4 of 4 answered" in html
    r = c.post(f"/a/{tok}/submit", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["Location"].endswith("/thanks")
    assert "Thank you" in c.get(f"/a/{tok}/thanks").text
    assert c.get(f"/a/{tok}/q/{qids[0]}").status_code == 303  # no more changes
    assert answer_counts(study["db"]) == {(1, qids[0]): ["2"], **{(1, q): ["0"] for q in qids[1:]}}
    view = c.get(f"/r/{study['researcher']}")
    assert view.status_code == 200
    assert re.search(r"<th scope=\"row\">north</th><td class=\"num\">1</td><td class=\"num\">1</td>\s*"
                     r"<td class=\"num\">1</td><td class=\"num\">1</td>", view.text)
    export = c.get(f"/r/{study['researcher']}/answers.jsonl?partial=1")
    rows = [json.loads(x) for x in export.text.splitlines()]
    assert [(r["group_id"], r["option_key"]) for r in rows] == \
        [("north/q0", "2"), ("north/q1", "0"), ("north/q2", "0"), ("north/q3", "0")]
    assert rows[0]["source"] == "human" and rows[0]["matches_gold"] is False
    assert c.get(f"/r/{study['researcher']}/answers.jsonl").status_code == 409  # south unanswered
    # the access log names routes, never the tokens in the paths
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/a/<token>/q/<int:qid>" in logged
    assert tok not in logged and study["researcher"] not in logged


def _hostile(study):
    """(request name, status, answers stored before == after) for each hostile request."""
    c, store, tok = study["client"], study["store"], study["north"]
    north, south = _qids(store, "north"), _qids(store, "south")
    first = north[0]
    out = []

    def attempt(name, url, data, **kw):
        before = answer_counts(study["db"])
        r = c.post(url, data=data, **kw)
        out.append((name, r.status_code, answer_counts(study["db"]) == before))
        return r

    csrf, _ = _form(c, f"/a/{tok}/q/{first}")
    attempt("another persona's question id, valid token and form token", f"/a/{tok}/q/{south[0]}",
            {"csrf": csrf, "option": "0"})
    attempt("forged option", f"/a/{tok}/q/{first}", {"csrf": csrf, "option": "7"})
    attempt("option of another question's kind (text, not key)", f"/a/{tok}/q/{first}",
            {"csrf": csrf, "option": "Option 0 of question 0"})
    attempt("missing CSRF token", f"/a/{tok}/q/{first}", {"option": "0"})
    attempt("CSRF token of another invitation", f"/a/{tok}/q/{first}",
            {"csrf": _form(c, f"/a/{study['south']}/q/{south[0]}")[0], "option": "0"})
    assert c.post(f"/a/{tok}/q/{first}", data={"csrf": csrf, "option": "1"}).status_code == 303
    attempt("replayed CSRF token (other answer)", f"/a/{tok}/q/{first}", {"csrf": csrf, "option": "0"})
    attempt("oversized body (100 KB)", f"/a/{tok}/q/{first}",
            {"csrf": _form(c, f"/a/{tok}/q/{first}")[0], "option": "0", "pad": "x" * 100_000})
    attempt("unknown invitation token", f"/a/{'A' * 43}/q/{first}", {"csrf": csrf, "option": "0"})
    attempt("submit with unanswered questions", f"/a/{tok}/submit",
            {"csrf": _form(c, f"/a/{tok}/review")[0]})
    out.append(("researcher's view with an annotator's token", c.get(f"/r/{tok}").status_code, True))
    out.append(("annotator's page with the researcher's token",
                c.get(f"/a/{study['researcher']}").status_code, True))
    return out


def test_hostile_requests_are_refused_and_write_nothing(study):
    got = _hostile(study)
    for name, status, unchanged in got:
        print(f"{status}  {name}")
    assert [s for _, s, _ in got] == [404, 400, 400, 403, 403, 403, 413, 404, 400, 404, 404]
    assert all(unchanged for _, _, unchanged in got)
    # the one legitimate answer among them is the only one stored
    assert answer_counts(study["db"]) == {(1, _qids(study["store"], "north")[0]): ["1"]}


def test_a_retried_request_is_answered_again_and_stored_once(study):
    c, tok = study["client"], study["north"]
    qid = _qids(study["store"], "north")[0]
    csrf, _ = _form(c, f"/a/{tok}/q/{qid}")
    for _ in range(3):  # the response was lost; the browser (or our client) sends it again
        r = c.post(f"/a/{tok}/q/{qid}", data={"csrf": csrf, "option": "2"})
        assert r.status_code == 303
    assert answer_counts(study["db"]) == {(1, qid): ["2"]}


def test_no_choice_shows_the_question_again(study):
    c, tok = study["client"], study["north"]
    qid = _qids(study["store"], "north")[0]
    csrf, _ = _form(c, f"/a/{tok}/q/{qid}")
    r = c.post(f"/a/{tok}/q/{qid}", data={"csrf": csrf})
    assert r.status_code == 400 and "Choose one of the options" in r.text
    assert answer_counts(study["db"]) == {}


def test_export_refuses_ties_unless_asked(tmp_path):
    from plural_icm.elicitation.export import answer_rows
    from plural_icm.errors import ConfigError

    store, _ = synthetic_study(tmp_path / "s.db", n_questions=1, personas=("north",))
    invs = store.add_invitations("north", 2)
    qid = store.questions("north")[0].id
    for (_, tok), opt in zip(invs, ("0", "2")):
        store.save_answer(tok, qid, opt, store.issue_nonce(store.invitation(tok).id))
        store.submit(tok, store.issue_nonce(store.invitation(tok).id))
    with pytest.raises(ConfigError, match=r"tied answers: north/q0"):
        answer_rows(store)
    (row,) = answer_rows(store, on_tie="first")
    assert (row["option_key"], row["tie"], row["n_annotators"]) == ("0", True, 2)
    assert row["fleiss_kappa"] == pytest.approx(-1.0)  # two raters, one item, disagreeing


# -- the collaborative stage's side ---------------------------------------------------------------

def _claims():
    from plural_icm.data.records import Claim

    return [Claim(f"d/p/q0/o{j}", "p", "p/q0", "q0", str(j), "Q?", f"claim {j}", gold=j == 1,
                  meta={"options": ["A", "B"], "option_index": j}) for j in range(2)]


def test_answers_file_is_checked_against_the_options_and_kept_beside_the_summary(tmp_path):
    from plural_icm.errors import ConfigError
    from plural_icm.pipeline.collaborative import answers_for

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"group_id": "p/q0", "option_key": "9"}) + "\n")
    with pytest.raises(ConfigError, match=r"p/q0 is option_key '9', which is not one of .*\['0', '1'\]"):
        answers_for(["p/q0"], _claims(), tmp_path / "run", str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"group_id": "p/q0", "option_key": "0", "source": "human",
                                "n_annotators": 3}) + "\n")
    fixed = answers_for(["p/q0"], _claims(), tmp_path / "run", str(good))
    assert fixed == {"d/p/q0/o0": True, "d/p/q0/o1": False}  # the person's answer, not gold
    used = [json.loads(x) for x in (tmp_path / "run" / "answers_used.jsonl").read_text().splitlines()]
    assert used == [{"group_id": "p/q0", "option_key": "0", "source": "human", "n_annotators": 3}]
    assert not (tmp_path / "run" / "answers.jsonl").exists()  # never taken as a simulated run's input


def test_create_refuses_searches_that_are_not_finished(tmp_path, monkeypatch):
    from plural_icm.elicitation.study import create_study
    from plural_icm.errors import ConfigError

    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"searches of fold 0 are not finished.*--run-searches"):
        create_study(tmp_path / "s.db", ["logger=none", "progress=false"], "confidence", 2)
    assert not (tmp_path / "s.db").exists()
    with pytest.raises(ConfigError, match="--method 'sure'"):
        create_study(tmp_path / "s.db", ["logger=none"], "sure", 2)


def test_study_questions_carry_the_surveys_options(tmp_path):
    from plural_icm.elicitation.study import build_questions, option_text

    claims = _claims()
    assert [option_text(c) for c in claims] == ["A", "B"]
    (q,) = build_questions({"p": [(0, claims), (2, claims)]})  # chosen by two folds: asked once
    assert (q.group_id, q.folds, q.gold_key) == ("p/q0", [0, 2], "1")
    assert [(o.key, o.text) for o in q.options] == [("0", "A"), ("1", "B")]


def test_a_crash_is_logged_without_the_token(study, caplog):
    app = study["client"].application

    def boom(token):
        raise RuntimeError("a bug")

    app.add_url_rule("/a/<token>/boom", "boom", boom)
    caplog.set_level(logging.INFO)
    r = study["client"].get(f"/a/{study['north']}/boom")
    assert r.status_code == 500
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Exception on /a/<token>/boom [GET]" in logged and study["north"] not in logged


def test_command_line_invite_status_export(tmp_path, capsys):
    from plural_icm.elicitation.__main__ import main

    db = tmp_path / "s.db"
    store, _ = synthetic_study(db, n_questions=1, personas=("north",))
    assert main(["invite", "--study", str(db), "--persona", "north", "--annotators", "2"]) == 0
    links = re.findall(r"north\s+a-[0-9a-f]{8}\s+http://127\.0\.0\.1:8765/a/(\S+)", capsys.readouterr().out)
    assert len(links) == 2
    qid = store.questions("north")[0].id
    for tok in links:
        store.save_answer(tok, qid, "2", store.issue_nonce(store.invitation(tok).id))
        store.submit(tok, store.issue_nonce(store.invitation(tok).id))
    assert main(["status", "--study", str(db)]) == 0
    out = capsys.readouterr().out
    assert "north: invited 2, opened 0, started 2, finished 2" in out and "majority 2" in out
    assert main(["export", "--study", str(db), "--out", str(tmp_path / "a.jsonl")]) == 0
    (row,) = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert (row["group_id"], row["option_key"], row["majority_share"]) == ("north/q0", "2", 1.0)
    assert "collaborative.answers_file=" in capsys.readouterr().out
    assert main(["invite", "--study", str(db), "--persona", "west"]) == 2  # a clear error
    assert "persona 'west' is not in this study" in capsys.readouterr().err
    assert main(["status", "--study", str(tmp_path / "none.db")]) == 2
    assert "no such study file" in capsys.readouterr().err


# -- a study of each selection method asks what stage=collaborative asks ----------------------------

TINY_SEARCH = ("model.name=tiny", "logger=none", "progress=false", "icm.max_iters=8", "icm.patience=4",
               "icm.num_seed=2", "icm.checkpoint_every=2", "dataset.personas=[progressive]")


def test_active_study_asks_what_the_collaborative_stage_asks(tmp_path, tiny_model_dir, monkeypatch,
                                                              capsys):
    """``create --method active`` from real (tiny-model) searches: the questions are the ones
    ``stage=collaborative`` with ``collaborative.selection=[active]`` asks for the same searches
    (the stage itself is run and its ``asked`` read back), and not the ``confidence`` ones."""
    from plural_icm.elicitation.__main__ import main
    from plural_icm.elicitation.store import StudyStore
    from plural_icm.elicitation.study import compose
    from plural_icm.pipeline.collaborative import run_collaborative

    monkeypatch.setenv("PLURAL_ICM_OUTPUT", str(tmp_path / "out"))
    overrides = [f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}", *TINY_SEARCH]
    chosen = {}
    for method in ("active", "confidence"):  # the second reuses the searches on disk
        db = tmp_path / f"{method}.db"
        run = ["--run-searches"] if method == "active" else []
        assert main(["create", "--study", str(db), "--k", "2", "--method", method, *run,
                     "--", *overrides]) == 0
        store = StudyStore(db)
        assert store.meta()["method"] == method
        chosen[method] = [q.group_id for q in store.questions("progressive")]
    capsys.readouterr()
    assert len(chosen["active"]) == 2
    stage = run_collaborative(typed_settings(compose([*overrides, "experiment=collaborative",
                                       "collaborative.k_per_fold=2", "collaborative.selection=[active]"])))
    assert stage["progressive"]["active"]["asked"] == chosen["active"]
    asked_file = (tmp_path / "out" / "collaborative" / "tiny" / "demo" / "progressive" / "active"
                  / "fold0" / "questions.jsonl")
    assert [json.loads(x)["group_id"] for x in asked_file.read_text().splitlines()] == chosen["active"]
    # the method is honoured: the few-shot model's doubts pick other questions than ICM's here
    assert chosen["active"] != chosen["confidence"], chosen
    print(f"chosen: {chosen}; stage=collaborative (active) asked {stage['progressive']['active']['asked']}")


# -- serve stops cleanly on Ctrl-C and SIGTERM ------------------------------------------------------

@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_on_a_signal(tmp_path, signame):
    """``serve`` in a subprocess; answers through HTTP (a keep-alive session left open); one answer
    is in flight (its body half sent) when the signal arrives: it is still answered and stored,
    new connections are refused, the process exits 0 with one line naming the study file, no
    traceback, and the write-ahead log folded into the file."""
    import os
    import signal
    import socket
    from urllib.parse import urlencode, urlsplit

    pytest.importorskip("flask", reason=NO_EXTRA)
    pytest.importorskip("waitress", reason=NO_EXTRA)
    requests = pytest.importorskip("requests")
    from elicitation_support import Server

    db = tmp_path / "s.db"
    store, _ = synthetic_study(db, personas=("north",))
    (_, tok), = store.add_invitations("north", 1)
    qids = _qids(store, "north")
    server = Server(db, tmp_path / "server.log")
    base = server.start()
    try:
        http = requests.Session()  # keep-alive: an idle connection is open when the signal comes
        for qid in qids[:-1]:
            csrf = CSRF.search(http.get(f"{base}/a/{tok}/q/{qid}").text).group(1)
            r = http.post(f"{base}/a/{tok}/q/{qid}", data={"csrf": csrf, "option": "2"},
                          allow_redirects=False)
            assert r.status_code == 303
        csrf = CSRF.search(http.get(f"{base}/a/{tok}/q/{qids[-1]}").text).group(1)
        body = urlencode({"csrf": csrf, "option": "1"}).encode()
        host, port = urlsplit(base).hostname, urlsplit(base).port
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(f"POST /a/{tok}/q/{qids[-1]} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Content-Type: application/x-www-form-urlencoded\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
            time.sleep(0.3)  # the server has read the headers and part of the body
            os.kill(server.proc.pid, getattr(signal, signame))
            time.sleep(0.5)
            with pytest.raises(requests.ConnectionError):  # no new connection is accepted
                requests.get(f"{base}/healthz", timeout=5)
            s.sendall(body[10:])
            reply = s.recv(4096).decode("latin-1")
        assert reply.startswith("HTTP/1.1 303"), reply[:200]  # the in-flight answer is confirmed
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-2000:]
    stopped = [line for line in log.splitlines() if "confirmed answer" in line]
    assert stopped == [f"stopped ({signame}): the study file {db} keeps every confirmed answer"]
    assert answer_counts(db) == {(1, q): ["2"] for q in qids[:-1]} | {(1, qids[-1]): ["1"]}
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# -- the single-form layout -------------------------------------------------------------------------

@pytest.fixture
def form_study(tmp_path):
    pytest.importorskip("flask", reason=NO_EXTRA)
    from plural_icm.elicitation.server import make_app

    db = tmp_path / "s.db"
    store, researcher = synthetic_study(db, layout="form")
    (_, north), = store.add_invitations("north", 1)
    (_, south), = store.add_invitations("south", 1)
    return {"db": db, "store": store, "client": make_app(db).test_client(), "north": north,
            "south": south, "researcher": researcher}


def test_form_layout_all_questions_on_one_page_change_until_submit(form_study):
    c, store, tok = form_study["client"], form_study["store"], form_study["north"]
    qids = _qids(store, "north")
    welcome = c.get(f"/a/{tok}").text
    assert f'href="/a/{tok}/form"' in welcome  # Start leads to the form
    csrf, html = _form(c, f"/a/{tok}/form")
    assert html.count("<fieldset") == 4 and html.count('type="radio"') == 12 and html.count("<label") == 12
    assert [f"Question {i} of 4" in html for i in range(1, 5)] == [True] * 4
    assert "0 of 4 answered" in html and len(set(re.findall(r'id="([^"]+)"', html))) == \
        len(re.findall(r'id="([^"]+)"', html))  # every label's target unique
    r = c.post(f"/a/{tok}/form", data={"csrf": csrf, **{f"q-{q}": "0" for q in qids[:3]}})
    assert r.status_code == 303 and r.headers["Location"].endswith("/review")  # partial: saved
    review = c.get(f"/a/{tok}/review").text
    assert "3 of 4 answered" in review and "Not answered yet" in review
    assert f'href="/a/{tok}/form#q-{qids[0]}"' in review  # Change returns to the form, at it
    csrf, html = _form(c, f"/a/{tok}/form")
    assert re.search(rf'name="q-{qids[0]}" value="0" checked', html) and "3 of 4 answered" in html
    r = c.post(f"/a/{tok}/form", data={"csrf": csrf, f"q-{qids[0]}": "2",
                                       **{f"q-{q}": "1" for q in qids[1:]}})
    assert r.status_code == 303
    csrf, review = _form(c, f"/a/{tok}/review")
    assert "4 of 4 answered" in review
    assert c.post(f"/a/{tok}/submit", data={"csrf": csrf}).status_code == 303
    assert c.get(f"/a/{tok}/form").status_code == 303  # submitted: only the thank-you
    assert answer_counts(form_study["db"]) == {(1, qids[0]): ["2"], **{(1, q): ["1"] for q in qids[1:]}}
    assert "layout form" in c.get(f"/r/{form_study['researcher']}").text


def test_form_layout_hostile_requests_are_refused_and_write_nothing(form_study):
    c, store, tok = form_study["client"], form_study["store"], form_study["north"]
    north, south = _qids(store, "north"), _qids(store, "south")
    good = {f"q-{q}": "0" for q in north}
    got = []

    def attempt(name, data):
        before = answer_counts(form_study["db"])
        r = c.post(f"/a/{tok}/form", data=data)
        got.append((name, r.status_code, answer_counts(form_study["db"]) == before))

    csrf, _ = _form(c, f"/a/{tok}/form")
    attempt("another persona's question among valid ones", {"csrf": csrf, **good, f"q-{south[0]}": "0"})
    attempt("one forged option among valid ones", {"csrf": csrf, **good, f"q-{north[3]}": "7"})
    attempt("a malformed question field", {"csrf": csrf, **good, "q-x": "0"})
    attempt("two values for one question", {"csrf": csrf, f"q-{north[0]}": ["0", "1"]})
    attempt("no answer at all", {"csrf": csrf})
    attempt("missing CSRF token", good)
    attempt("CSRF token of another invitation",
            {"csrf": _form(c, f"/a/{form_study['south']}/form")[0], **good})
    assert c.post(f"/a/{tok}/form", data={"csrf": csrf, **good}).status_code == 303
    assert c.post(f"/a/{tok}/form", data={"csrf": csrf, **good}).status_code == 303  # a retry
    attempt("replayed CSRF token (other answers)", {"csrf": csrf, **{k: "1" for k in good}})
    attempt("oversized body (100 KB)", {"csrf": _form(c, f"/a/{tok}/form")[0], **good, "pad": "x" * 100_000})
    for name, status, unchanged in got:
        print(f"{status}  {name}")
    assert [s for _, s, _ in got] == [404, 400, 400, 400, 400, 403, 403, 403, 413]
    assert all(unchanged for _, _, unchanged in got)
    assert answer_counts(form_study["db"]) == {(1, q): ["0"] for q in north}  # the legitimate one, once
