"""The study's web pages (Flask, served by waitress): the annotator's form and the researcher's view.

No accounts, no cookies, no JavaScript. An invitation link ``/a/<token>`` is the annotator's only
credential; ``/r/<token>`` is the researcher's (a separate secret). Every form carries a one-time
token issued with the page (CSRF: an unknown, missing or reused one is refused with 403; the exact
same request sent again, e.g. a retry after a lost response, is answered again without a second
write). An answer is committed (SQLite, WAL, synchronous=FULL) before the page confirms it.

Nothing identifying is logged or stored: the access log names the route pattern
(``/a/<token>/q/<int:qid>``), never the path holding the token; no IP address is kept.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from plural_icm.elicitation.export import answer_rows, summarise
from plural_icm.elicitation.store import LAYOUTS, Refused, StudyStore
from plural_icm.errors import ConfigError

access_log = logging.getLogger("plural_icm.elicitation.access")

MAX_BODY_BYTES = 16 * 1024
"""Largest request body accepted (a form of one answer is well under 1 KiB): 413 beyond."""

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token in the URL never leaves in a Referer header
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def _route() -> str:
    """The request's route pattern (never its path, which holds a token)."""
    return request.url_rule.rule if request.url_rule is not None else "<unmatched>"


class _App(Flask):
    def log_exception(self, exc_info) -> None:  # Flask's own names request.path: the token
        self.logger.error("Exception on %s [%s]", _route(), request.method, exc_info=exc_info)


def make_app(study: str | Path, max_body: int = MAX_BODY_BYTES) -> Flask:
    """The WSGI app of one study file."""
    store = StudyStore(study).open_checked()
    meta = store.meta()
    layout = meta.get("layout", LAYOUTS[0])
    if layout not in LAYOUTS:
        raise ConfigError(f"{store.where}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    app = _App(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.config["MAX_FORM_MEMORY_SIZE"] = max_body

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        access_log.info("%s %s %d %.1fms", request.method, _route(), resp.status_code,
                        1000 * (time.perf_counter() - g.get("t0", time.perf_counter())))
        return resp

    @app.errorhandler(Refused)
    def _refused(e: Refused):
        return render_template("error.html", status=e.status, message=str(e)), e.status

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        messages = {413: f"The request is larger than this study accepts ({max_body} bytes).",
                    404: "There is nothing here. Check that the link was copied whole.",
                    405: "This page does not accept that kind of request."}
        return (render_template("error.html", status=e.code,
                                message=messages.get(e.code, e.description)), e.code)

    def invitation(token: str):
        inv = store.invitation(token)
        if inv is None:
            raise Refused(404, "This invitation link is not valid. Check that it was copied whole.")
        return inv

    def persona_questions(inv):
        return store.questions(inv.persona_id)  # a token reaches its own persona's questions only

    # -- the annotator ---------------------------------------------------------------------------
    @app.get("/a/<token>")
    def welcome(token: str):
        inv = store.mark_opened(token)  # 404 for a token that is not an invitation
        if inv.finished_at is not None:
            return redirect(url_for("thanks", token=token), 303)
        qs = persona_questions(inv)
        answers = store.answers_of(inv.id)
        first = next((q for q in qs if q.id not in answers), qs[0])
        start = (url_for("form", token=token) if layout == "form"
                 else url_for("question", token=token, qid=first.id))
        return render_template("welcome.html", token=token, persona=store.personas()[inv.persona_id],
                               n=len(qs), answered=len(answers), start=start,
                               instruction=meta.get("instruction"))

    @app.get("/a/<token>/q/<int:qid>")
    def question(token: str, qid: int, error: str | None = None, status: int = 200):
        inv = invitation(token)
        if inv.finished_at is not None:
            return redirect(url_for("thanks", token=token), 303)
        if inv.opened_at is None:  # a question's link opened directly
            store.mark_opened(token)
        qs = persona_questions(inv)
        pos = next((i for i, q in enumerate(qs) if q.id == qid), None)
        if pos is None:
            raise Refused(404, "There is no such question for this invitation.")
        answers = store.answers_of(inv.id)
        return render_template("question.html", token=token, q=qs[pos], index=pos + 1, n=len(qs),
                               prev=qs[pos - 1] if pos else None, chosen=answers.get(qid),
                               answered=len(answers), persona=store.personas()[inv.persona_id],
                               csrf=store.issue_nonce(inv.id), error=error,
                               back_to_review=request.args.get("from") == "review"
                               or request.form.get("go") == "review"), status

    @app.post("/a/<token>/q/<int:qid>")
    def answer(token: str, qid: int):
        inv = invitation(token)
        option = request.form.get("option")
        if option is None and inv.finished_at is None and request.form.get("csrf"):
            return question(token, qid, error="Choose one of the options, then continue.", status=400)
        store.save_answer(token, qid, option or "", request.form.get("csrf"))
        qs = persona_questions(inv)
        pos = next(i for i, q in enumerate(qs) if q.id == qid)
        if request.form.get("go") == "review" or pos + 1 == len(qs):
            return redirect(url_for("review", token=token), 303)
        return redirect(url_for("question", token=token, qid=qs[pos + 1].id), 303)

    @app.get("/a/<token>/form")
    def form(token: str, error: str | None = None, status: int = 200):
        """All the persona's questions on one page (the study's ``layout: form``)."""
        inv = invitation(token)
        if inv.finished_at is not None:
            return redirect(url_for("thanks", token=token), 303)
        if inv.opened_at is None:
            store.mark_opened(token)
        qs = persona_questions(inv)
        answers = store.answers_of(inv.id)
        return render_template("form.html", token=token, qs=qs, n=len(qs), answers=answers,
                               answered=len(answers), persona=store.personas()[inv.persona_id],
                               csrf=store.issue_nonce(inv.id), error=error), status

    @app.post("/a/<token>/form")
    def form_answers(token: str):
        inv = invitation(token)
        picks = form_picks()
        if not picks and inv.finished_at is None and request.form.get("csrf"):
            return form(token, error="Choose an answer to each question, then continue.", status=400)
        store.save_answers(token, picks, request.form.get("csrf"))
        return redirect(url_for("review", token=token), 303)

    def form_picks() -> dict[int, str]:
        """``{question id: option key}`` from the form's ``q-<id>`` fields (one value each)."""
        picks: dict[int, str] = {}
        for name in request.form:
            if not name.startswith("q-"):
                continue
            values = request.form.getlist(name)
            if not name[2:].isdigit() or len(values) != 1:
                raise Refused(400, "The form is not one this study sent (a question field is malformed).")
            picks[int(name[2:])] = values[0]
        return picks

    @app.get("/a/<token>/review")
    def review(token: str):
        inv = invitation(token)
        if inv.finished_at is not None:
            return redirect(url_for("thanks", token=token), 303)
        qs = persona_questions(inv)
        answers = store.answers_of(inv.id)
        texts = {q.id: {o.key: o.text for o in q.options} for q in qs}
        rows = [(i + 1, q, texts[q.id].get(answers.get(q.id))) for i, q in enumerate(qs)]
        if layout == "form":
            change = {q.id: url_for("form", token=token, _anchor=f"q-{q.id}") for q in qs}
        else:
            change = {q.id: url_for("question", token=token, qid=q.id, **{"from": "review"}) for q in qs}
        return render_template("review.html", token=token, rows=rows, n=len(qs), change=change,
                               answered=len(answers), persona=store.personas()[inv.persona_id],
                               csrf=store.issue_nonce(inv.id))

    @app.post("/a/<token>/submit")
    def submit(token: str):
        store.submit(token, request.form.get("csrf"))
        return redirect(url_for("thanks", token=token), 303)

    @app.get("/a/<token>/thanks")
    def thanks(token: str):
        inv = invitation(token)
        if inv.finished_at is None:
            return redirect(url_for("review", token=token), 303)
        return render_template("thanks.html", n=len(persona_questions(inv)))

    # -- the researcher --------------------------------------------------------------------------
    def researcher(token: str) -> None:
        if not store.is_researcher(token):
            abort(404)

    @app.get("/r/<token>")
    def overview(token: str):
        researcher(token)
        return render_template("researcher.html", token=token, meta=meta, personas=summarise(store))

    @app.get("/r/<token>/answers.jsonl")
    def export(token: str):
        researcher(token)
        import json

        try:
            rows = answer_rows(store, request.args.get("on_tie", "error"),
                               partial=request.args.get("partial") == "1")
        except ConfigError as e:
            return render_template("error.html", status=409, message=str(e)), 409
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(body, mimetype="application/jsonl",
                        headers={"Content-Disposition": 'attachment; filename="answers.jsonl"'})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C and ``kill``/systemd/SLURM's stop: both stop the server cleanly (:func:`serve`)."""

STOP_GRACE_S = 10.0
"""How long a stopping server waits for requests already in flight (a second signal: no longer)."""


def serve(study: str | Path, host: str = "127.0.0.1", port: int = 8765, threads: int = 8,
          max_body: int = MAX_BODY_BYTES, grace_s: float = STOP_GRACE_S) -> str:
    """Serve the study until SIGINT or SIGTERM (localhost only unless ``host`` says otherwise).

    On the signal: the listening socket is closed (no new connection), requests already received
    or being received finish and get their response (for up to ``grace_s``), idle keep-alive
    connections are closed, the worker threads end, the database's write-ahead log is folded into
    the study file, and one line says so. Returns the signal's name."""
    import waitress

    received: list[int] = []
    holder: dict = {}

    def on_signal(signum, frame) -> None:  # only records it: the loop below does the stopping
        received.append(signum)
        if "server" in holder:
            holder["server"].pull_trigger()  # wake the poll now, not at its timeout

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        app = make_app(study, max_body)
        store = StudyStore(study)
        server = holder["server"] = waitress.create_server(
            app, host=host, port=port, threads=threads, max_request_body_size=max_body,
            ident="plural_icm")
        where = f"http://{host}:{server.effective_port}"
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {host}, reachable from other machines; put it behind HTTPS",
                  flush=True)
        print(f"listening on {where} ({store.where}); stop with Ctrl-C", flush=True)
        _poll_until(server, lambda: bool(received))
        _drain(server, grace_s, lambda: len(received) > 1)
        store.checkpoint()
        name = signal.Signals(received[0]).name
        print(f"stopped ({name}): {store.where} keeps every confirmed answer", flush=True)
        return name
    finally:  # restored only now: a further Ctrl-C while closing is recorded, not a traceback
        for s, h in previous.items():
            signal.signal(s, h)


def _poll_until(server, stop, timeout_s: float = 1.0) -> None:
    """Waitress's own event loop (``server.run()``), one poll at a time so a signal can end it."""
    from waitress import wasyncore

    while not stop():
        wasyncore.loop(timeout=timeout_s, map=server._map, use_poll=server.adj.asyncore_use_poll,
                       count=1)


def _drain(server, grace_s: float, hurry) -> None:
    """Stop accepting, finish what is in flight (at most ``grace_s``, or until ``hurry()``), close."""
    from waitress import wasyncore
    from waitress.channel import HTTPChannel

    wasyncore.dispatcher.close(server)  # the listening socket only (the wake-up pipe stays open)
    deadline = time.monotonic() + grace_s
    while True:
        busy = 0
        for ch in list(server._map.values()):
            if not isinstance(ch, HTTPChannel):
                continue
            if ch.requests or ch.request is not None or ch.total_outbufs_len:
                busy += 1  # received, being received, or its response not yet sent
            else:
                ch.will_close = True  # idle keep-alive: closed, so it brings no new request
        if not busy:
            break
        if time.monotonic() > deadline or hurry():
            logging.getLogger(__name__).warning(
                "%d request(s) still in flight after %.0f s: closed without a response (none of "
                "them was confirmed; a retry of the same form is answered without a second "
                "write)", busy, grace_s)
            break
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)
    server.task_dispatcher.shutdown(timeout=grace_s)
    wasyncore.close_all(server._map)
