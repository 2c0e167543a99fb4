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
import time
from pathlib import Path

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from plural_icm.elicitation.export import answer_rows, summarise
from plural_icm.elicitation.store import Refused, StudyStore
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
        return render_template("welcome.html", token=token, persona=store.personas()[inv.persona_id],
                               n=len(qs), answered=len(answers), first=first,
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

    @app.get("/a/<token>/review")
    def review(token: str):
        inv = invitation(token)
        if inv.finished_at is not None:
            return redirect(url_for("thanks", token=token), 303)
        qs = persona_questions(inv)
        answers = store.answers_of(inv.id)
        texts = {q.id: {o.key: o.text for o in q.options} for q in qs}
        rows = [(i + 1, q, texts[q.id].get(answers.get(q.id))) for i, q in enumerate(qs)]
        return render_template("review.html", token=token, rows=rows, n=len(qs),
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


def serve(study: str | Path, host: str = "127.0.0.1", port: int = 8765, threads: int = 8,
          max_body: int = MAX_BODY_BYTES) -> None:
    """Serve the study until killed (localhost only unless ``host`` says otherwise)."""
    import waitress

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = make_app(study, max_body)
    server = waitress.create_server(app, host=host, port=port, threads=threads,
                                    max_request_body_size=max_body, ident="plural_icm")
    where = f"http://{host}:{server.effective_port}"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}, reachable from other machines; put it behind HTTPS",
              flush=True)
    print(f"listening on {where} (study {study}); stop with Ctrl-C", flush=True)
    server.run()
