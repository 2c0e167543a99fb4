"""A study's database: SQLite in WAL mode, one file, every answer committed before it is confirmed.

What it holds (and nothing more): the study's settings, its personas and questions (text and
options as the dataset states them, the gold option for the report only), one row per invitation
(the SHA-256 of its token, a pseudonymous annotator id, when it was created/opened/started/
finished), the answers (invitation x question: one row, updated in place until submitted, so a
retry can never duplicate one), and the one-time form tokens (CSRF nonces, stored hashed; a used
nonce remembers the digest of the request it confirmed, so a retried request is answered again
without a second write and any other request bearing it is refused).

Tokens are never stored: only their hashes. Nothing identifying is stored: no IP address, no user
agent, no name. A server database by URL is not supported (see the README's elicitation section).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plural_icm.errors import ConfigError

SCHEMA_VERSION = 1

LAYOUTS = ("one-per-page", "form")
"""How the annotator's page shows the questions (the study's ``layout`` setting): one question per
page, or all of them on one short form. A study without the setting is ``one-per-page``."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS personas (id TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS questions (
    id INTEGER PRIMARY KEY, persona_id TEXT NOT NULL REFERENCES personas(id),
    group_id TEXT NOT NULL, question_id TEXT NOT NULL, text TEXT NOT NULL, position INTEGER NOT NULL,
    folds TEXT NOT NULL, gold_key TEXT, UNIQUE (persona_id, group_id), UNIQUE (persona_id, position));
CREATE TABLE IF NOT EXISTS options (
    question_id INTEGER NOT NULL REFERENCES questions(id), position INTEGER NOT NULL,
    option_key TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (question_id, option_key));
CREATE TABLE IF NOT EXISTS invitations (
    id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, persona_id TEXT NOT NULL REFERENCES personas(id),
    annotator TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, opened_at REAL, started_at REAL,
    finished_at REAL);
CREATE TABLE IF NOT EXISTS answers (
    invitation_id INTEGER NOT NULL REFERENCES invitations(id),
    question_id INTEGER NOT NULL REFERENCES questions(id), option_key TEXT NOT NULL,
    answered_at REAL NOT NULL, PRIMARY KEY (invitation_id, question_id));
CREATE TABLE IF NOT EXISTS nonces (
    nonce_hash TEXT PRIMARY KEY, invitation_id INTEGER NOT NULL REFERENCES invitations(id),
    issued_at REAL NOT NULL, used_at REAL, request_digest TEXT);
"""


def token_hash(token: str) -> str:
    """What is stored of a token (invitation, researcher, form nonce)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """An unguessable URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Option:
    key: str
    text: str


@dataclass(frozen=True)
class Question:
    id: int
    persona_id: str
    group_id: str
    question_id: str
    text: str
    position: int
    folds: list[int]
    options: list[Option]
    gold_key: str | None = None


@dataclass(frozen=True)
class Invitation:
    id: int
    persona_id: str
    annotator: str
    created_at: float
    opened_at: float | None
    started_at: float | None
    finished_at: float | None


class Refused(Exception):
    """A request the study refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class StudyStore:
    """One study's SQLite file. A connection per call (the server's threads share nothing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- connections -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (the WAL fsynced) before the page confirms it, so not even a
        # power cut loses a confirmed answer (NORMAL survives a killed process, not a power cut)
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            yield con
        finally:
            con.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the study file and empty it (a stopped server leaves one
        self-contained file to copy); answers are durable without it, this only tidies."""
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taking the write lock at once (no upgrade deadlock between threads);
        committed when the block ends, rolled back if it raises."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- creation --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, meta: dict, personas: dict[str, str],
               questions: list[Question]) -> StudyStore:
        """A new study file (refuses to overwrite one); returns its store."""
        path = Path(path)
        if path.exists():
            raise ConfigError(f"{path} already exists: a study is never overwritten; choose another "
                              f"--study path (or delete that file if the study is abandoned)")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.creating")
        tmp.unlink(missing_ok=True)
        store = cls(tmp)
        with store.read() as con:
            con.executescript(SCHEMA)
        with store.write() as con:
            rows = {"schema_version": SCHEMA_VERSION, "created_at": time.time(), **meta}
            con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
            con.executemany("INSERT INTO personas VALUES (?, ?)", sorted(personas.items()))
            for q in questions:
                cur = con.execute(
                    "INSERT INTO questions (persona_id, group_id, question_id, text, position, folds, "
                    "gold_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (q.persona_id, q.group_id, q.question_id, q.text, q.position, json.dumps(q.folds),
                     q.gold_key))
                con.executemany("INSERT INTO options VALUES (?, ?, ?, ?)",
                                [(cur.lastrowid, i, o.key, o.text) for i, o in enumerate(q.options)])
        with store.read() as con:  # fold the WAL into the file before it is renamed
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        tmp.replace(path)
        return cls(path)

    def open_checked(self) -> StudyStore:
        """This store, after checking the file is a study of a schema this code reads."""
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such study file (create one with "
                              f"`python -m plural_icm.elicitation create`)")
        try:
            version = self.meta().get("schema_version")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not a study database ({exc})") from None
        if version != SCHEMA_VERSION:
            raise ConfigError(f"{self.path}: study schema version {version}, this code reads "
                              f"{SCHEMA_VERSION}")
        return self

    def set_researcher_token(self) -> str:
        """A new researcher secret (replacing any old one); returns it, stores its hash."""
        token = new_token()
        with self.write() as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES ('researcher_token_hash', ?)",
                        (json.dumps(token_hash(token)),))
        return token

    def add_invitations(self, persona_id: str, n: int) -> list[tuple[str, str]]:
        """``n`` new invitations for a persona: ``(annotator id, token)`` pairs; only the tokens'
        hashes are stored, so the tokens must be handed out now."""
        out = []
        with self.write() as con:
            if con.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is None:
                raise ConfigError(f"persona {persona_id!r} is not in this study")
            for _ in range(n):
                token = new_token()
                annotator = "a-" + secrets.token_hex(4)  # pseudonymous, unrelated to the token
                con.execute("INSERT INTO invitations (token_hash, persona_id, annotator, created_at) "
                            "VALUES (?, ?, ?, ?)", (token_hash(token), persona_id, annotator, time.time()))
                out.append((annotator, token))
        return out

    # -- reading ---------------------------------------------------------------------------------
    def meta(self) -> dict:
        with self.read() as con:
            return {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT * FROM meta")}

    def personas(self) -> dict[str, str]:
        with self.read() as con:
            return {r["id"]: r["description"] for r in con.execute("SELECT * FROM personas ORDER BY id")}

    def questions(self, persona_id: str | None = None) -> list[Question]:
        with self.read() as con:
            return _questions(con, persona_id)

    def is_researcher(self, token: str) -> bool:
        stored = self.meta().get("researcher_token_hash")
        return stored is not None and secrets.compare_digest(stored, token_hash(token))

    def invitation(self, token: str) -> Invitation | None:
        with self.read() as con:
            return _invitation(con, token)

    def invitations(self) -> list[Invitation]:
        with self.read() as con:
            return [_inv(r) for r in con.execute("SELECT * FROM invitations ORDER BY persona_id, id")]

    def answers_of(self, invitation_id: int) -> dict[int, str]:
        with self.read() as con:
            return {r["question_id"]: r["option_key"] for r in con.execute(
                "SELECT question_id, option_key FROM answers WHERE invitation_id = ?", (invitation_id,))}

    def all_answers(self) -> list[sqlite3.Row]:
        """Every stored answer with its invitation's persona, annotator and finished time."""
        with self.read() as con:
            return con.execute(
                "SELECT a.invitation_id, a.question_id, a.option_key, a.answered_at, i.persona_id, "
                "i.annotator, i.finished_at FROM answers a JOIN invitations i ON i.id = a.invitation_id "
                "ORDER BY a.invitation_id, a.question_id").fetchall()

    # -- the annotator's actions -----------------------------------------------------------------
    def mark_opened(self, token: str) -> Invitation:
        with self.write() as con:
            inv = _require_invitation(con, token)
            if inv.opened_at is None:
                con.execute("UPDATE invitations SET opened_at = ? WHERE id = ?", (time.time(), inv.id))
            return inv

    def issue_nonce(self, invitation_id: int) -> str:
        """A one-time form token for this invitation (its hash is stored)."""
        nonce = new_token()
        with self.write() as con:
            con.execute("INSERT INTO nonces (nonce_hash, invitation_id, issued_at) VALUES (?, ?, ?)",
                        (token_hash(nonce), invitation_id, time.time()))
        return nonce

    def save_answer(self, token: str, question_db_id: int, option_key: str, nonce: str | None) -> bool:
        """Store (or change) one answer, in one transaction with the nonce's use; ``True`` when it
        was written now, ``False`` when this very request had already been confirmed (a retry).
        Raises :class:`Refused` (nothing written) for anything else."""
        return self._save(token, {question_db_id: option_key}, nonce,
                          _digest("answer", question_db_id, option_key))

    def save_answers(self, token: str, picks: dict[int, str], nonce: str | None) -> bool:
        """Store (or change) several answers (the single-form page) with one form token, all or
        none: one invalid question or option refuses the whole request, nothing written. Returns
        and raises as :meth:`save_answer`."""
        if not picks:
            raise Refused(400, "The form carries no answer.")
        return self._save(token, picks, nonce, _digest("form", sorted(picks.items())))

    def _save(self, token: str, picks: dict[int, str], nonce: str | None, digest: str) -> bool:
        with self.write() as con:
            inv = _require_invitation(con, token)
            replay = _check_nonce(con, inv.id, nonce, digest)
            if replay:
                return False
            if inv.finished_at is not None:
                raise Refused(409, "These answers were already submitted; they can no longer be changed")
            now = time.time()
            for question_db_id, option_key in picks.items():
                q = _question_of(con, inv.persona_id, question_db_id)
                keys = [o.key for o in q.options]
                if option_key not in keys:
                    raise Refused(400, f"The answer {option_key!r} is not one of the options of "
                                       f"question {q.position + 1}.")
                con.execute("INSERT INTO answers VALUES (?, ?, ?, ?) ON CONFLICT (invitation_id, "
                            "question_id) DO UPDATE SET option_key = excluded.option_key, "
                            "answered_at = excluded.answered_at", (inv.id, q.id, option_key, now))
            if inv.started_at is None:
                con.execute("UPDATE invitations SET started_at = ? WHERE id = ?", (now, inv.id))
            _use_nonce(con, nonce, digest, now)
        return True

    def submit(self, token: str, nonce: str | None) -> bool:
        """Lock the answers (all questions must be answered); idempotent like :meth:`save_answer`."""
        digest = _digest("submit")
        with self.write() as con:
            inv = _require_invitation(con, token)
            if _check_nonce(con, inv.id, nonce, digest):
                return False
            if inv.finished_at is not None:
                raise Refused(409, "These answers were already submitted")
            qs = _questions(con, inv.persona_id)
            have = {r["question_id"] for r in con.execute(
                "SELECT question_id FROM answers WHERE invitation_id = ?", (inv.id,))}
            missing = [q.position + 1 for q in qs if q.id not in have]
            if missing:
                raise Refused(400, f"Question(s) {missing} have no answer yet.")
            now = time.time()
            con.execute("UPDATE invitations SET finished_at = ? WHERE id = ?", (now, inv.id))
            _use_nonce(con, nonce, digest, now)
        return True


# -- helpers (inside a transaction) ---------------------------------------------------------------

def _inv(r: sqlite3.Row) -> Invitation:
    return Invitation(r["id"], r["persona_id"], r["annotator"], r["created_at"], r["opened_at"],
                      r["started_at"], r["finished_at"])


def _invitation(con: sqlite3.Connection, token: str) -> Invitation | None:
    r = con.execute("SELECT * FROM invitations WHERE token_hash = ?", (token_hash(token),)).fetchone()
    return _inv(r) if r else None


def _require_invitation(con: sqlite3.Connection, token: str) -> Invitation:
    inv = _invitation(con, token)
    if inv is None:
        raise Refused(404, "This invitation link is not valid. Check that it was copied whole.")
    return inv


def _questions(con: sqlite3.Connection, persona_id: str | None) -> list[Question]:
    where, args = ("WHERE persona_id = ?", (persona_id,)) if persona_id else ("", ())
    qs = con.execute(f"SELECT * FROM questions {where} ORDER BY persona_id, position", args).fetchall()
    opts: dict[int, list[Option]] = {}
    for o in con.execute("SELECT * FROM options ORDER BY question_id, position"):
        opts.setdefault(o["question_id"], []).append(Option(o["option_key"], o["text"]))
    return [Question(r["id"], r["persona_id"], r["group_id"], r["question_id"], r["text"],
                     r["position"], json.loads(r["folds"]), opts.get(r["id"], []), r["gold_key"])
            for r in qs]


def _question_of(con: sqlite3.Connection, persona_id: str, question_db_id: int) -> Question:
    """The question, only if it belongs to the invitation's persona (else 404: another persona's
    question is indistinguishable from one that does not exist)."""
    for q in _questions(con, persona_id):
        if q.id == question_db_id:
            return q
    raise Refused(404, "There is no such question for this invitation.")


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def _check_nonce(con: sqlite3.Connection, invitation_id: int, nonce: str | None, digest: str) -> bool:
    """``True`` if this nonce already confirmed this same request (a retry: answer it again, write
    nothing); raises :class:`Refused` (403) for a missing, unknown, foreign or reused nonce."""
    if not nonce:
        raise Refused(403, "The form token is missing; reload the page and try again")
    r = con.execute("SELECT * FROM nonces WHERE nonce_hash = ?", (token_hash(nonce),)).fetchone()
    if r is None or r["invitation_id"] != invitation_id:
        raise Refused(403, "The form token is not valid for this page; reload the page and try again")
    if r["used_at"] is not None:
        if r["request_digest"] == digest:
            return True
        raise Refused(403, "This form was already sent once; reload the page and try again")
    return False


def _use_nonce(con: sqlite3.Connection, nonce: str | None, digest: str, now: float) -> None:
    con.execute("UPDATE nonces SET used_at = ?, request_digest = ? WHERE nonce_hash = ?",
                (now, digest, token_hash(nonce or "")))
