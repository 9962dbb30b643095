"""What ``chaosrun serve`` keeps: exams, their operations (run, verify, restore, watch),
every event, and the access tokens, in one SQLite database under ``--data``.

SQLite in WAL mode, one connection shared by the server's threads behind a lock: the
engine's threads append events while the HTTP side reads them. An event is committed
before it is sent to any browser, so what a client was shown survives a restart and a
reconnecting client replays from its ``Last-Event-ID``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROLES", "ExamRow", "Operation", "Store", "TokenRow", "now"]

ROLES = ("operator", "proctor")

#: Operation states; the first is the only one that is not final.
OP_STATES = ("running", "done", "failed", "interrupted", "stopped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    folder TEXT NOT NULL,
    scenario TEXT NOT NULL,
    inventory TEXT,
    environments INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    exam TEXT NOT NULL REFERENCES exams(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    started TEXT NOT NULL,
    ended TEXT,
    audit TEXT,
    ok INTEGER,
    error TEXT,
    report TEXT
);
CREATE INDEX IF NOT EXISTS operations_by_exam ON operations(exam, started);
CREATE TABLE IF NOT EXISTS events (
    exam TEXT NOT NULL,
    seq INTEGER NOT NULL,
    operation TEXT,
    type TEXT NOT NULL,
    env TEXT,
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (exam, seq)
);
CREATE INDEX IF NOT EXISTS events_by_env ON events(exam, env, seq);
"""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRow:
    name: str
    role: str
    created: str


@dataclass(frozen=True)
class ExamRow:
    id: str
    name: str
    created: str
    folder: Path
    scenario: str  # the scenario file's path
    inventory: str | None
    environments: int


@dataclass(frozen=True)
class Operation:
    id: str
    exam: str
    kind: str
    state: str
    params: dict[str, Any]
    started: str
    ended: str | None
    audit: str | None
    ok: bool | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exam": self.exam,
            "kind": self.kind,
            "state": self.state,
            "params": self.params,
            "started": self.started,
            "ended": self.ended,
            "audit": self.audit,
            "ok": self.ok,
            "error": self.error,
        }


class Store:
    """The server's database (``DATA/chaosrun.db``)."""

    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data / "chaosrun.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        self._seq: dict[str, int] = {
            row["exam"]: int(row["seq"])
            for row in self._query("SELECT exam, MAX(seq) AS seq FROM events GROUP BY exam")
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, *args: Any) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- tokens

    def create_token(self, name: str, role: str) -> str:
        """A new token for ``name`` (replacing its old one); only its SHA-256 is kept."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        token = "chr_" + secrets.token_urlsafe(32)
        self._write(
            "INSERT INTO tokens (name, role, sha256, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET "
            "role = excluded.role, sha256 = excluded.sha256, created = excluded.created",
            name,
            role,
            token_digest(token),
            now(),
        )
        return token

    def token(self, token: str) -> TokenRow | None:
        rows = self._query("SELECT name, role, created FROM tokens WHERE sha256 = ?", token_digest(token))
        return TokenRow(rows[0]["name"], rows[0]["role"], rows[0]["created"]) if rows else None

    def tokens(self) -> list[TokenRow]:
        return [TokenRow(r["name"], r["role"], r["created"]) for r in self._query("SELECT * FROM tokens ORDER BY name")]

    def revoke_token(self, name: str) -> bool:
        return self._write("DELETE FROM tokens WHERE name = ?", name) > 0

    # -- exams

    def add_exam(self, exam: ExamRow) -> None:
        self._write(
            "INSERT INTO exams (id, name, created, folder, scenario, inventory, environments) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            exam.id,
            exam.name,
            exam.created,
            str(exam.folder),
            exam.scenario,
            exam.inventory,
            exam.environments,
        )

    def exams(self) -> list[ExamRow]:
        return [_exam(r) for r in self._query("SELECT * FROM exams ORDER BY created DESC, id DESC")]

    def exam(self, exam_id: str) -> ExamRow | None:
        rows = self._query("SELECT * FROM exams WHERE id = ?", exam_id)
        return _exam(rows[0]) if rows else None

    # -- operations

    def add_operation(self, op: Operation) -> None:
        self._write(
            "INSERT INTO operations (id, exam, kind, state, params, started) VALUES (?, ?, ?, ?, ?, ?)",
            op.id,
            op.exam,
            op.kind,
            op.state,
            json.dumps(op.params),
            op.started,
        )

    def set_audit(self, op_id: str, audit: str) -> None:
        self._write("UPDATE operations SET audit = ? WHERE id = ? AND audit IS NULL", audit, op_id)

    def end_operation(
        self, op_id: str, state: str, *, ok: bool | None, error: str | None, report: dict[str, Any] | None
    ) -> None:
        self._write(
            "UPDATE operations SET state = ?, ended = ?, ok = ?, error = ?, report = ? WHERE id = ?",
            state,
            now(),
            ok,
            error,
            json.dumps(report) if report is not None else None,
            op_id,
        )

    def operations(self, exam_id: str) -> list[Operation]:
        return [_op(r) for r in self._query("SELECT * FROM operations WHERE exam = ? ORDER BY started, id", exam_id)]

    def operation(self, op_id: str) -> Operation | None:
        rows = self._query("SELECT * FROM operations WHERE id = ?", op_id)
        return _op(rows[0]) if rows else None

    def report(self, op_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT report FROM operations WHERE id = ?", op_id)
        return json.loads(rows[0]["report"]) if rows and rows[0]["report"] else None

    def interrupt_running(self) -> list[Operation]:
        """Operations a server that stopped left ``running``: now ``interrupted``."""
        running = [_op(r) for r in self._query("SELECT * FROM operations WHERE state = 'running'")]
        for op in running:
            self.end_operation(op.id, "interrupted", ok=False, error="the server stopped during it", report=None)
        return running

    # -- events

    def append_event(self, exam_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Store one event; the event with its ``seq`` (per exam, from 1) and ``at``."""
        with self._lock:
            seq = self._seq.get(exam_id, 0) + 1
            self._seq[exam_id] = seq
            stored = {**event, "seq": seq, "at": event.get("at") or now()}
            self._db.execute(
                "INSERT INTO events (exam, seq, operation, type, env, at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    exam_id,
                    seq,
                    stored.get("operation"),
                    stored["type"],
                    stored.get("env"),
                    stored["at"],
                    json.dumps(stored),
                ),
            )
        return stored

    def last_seq(self, exam_id: str) -> int:
        with self._lock:
            return self._seq.get(exam_id, 0)

    def events(self, exam_id: str, after: int = 0, *, env: str | None = None, limit: int | None = None) -> list[Any]:
        """The exam's events after ``after``, oldest first (``env``: one environment's,
        ``limit``: the newest ones only)."""
        where, args = "exam = ? AND seq > ?", [exam_id, after]
        if env is not None:
            where += " AND env = ?"
            args.append(env)
        if limit is None:
            rows = self._query(f"SELECT data FROM events WHERE {where} ORDER BY seq", *args)
        else:
            rows = self._query(f"SELECT data FROM events WHERE {where} ORDER BY seq DESC LIMIT ?", *args, limit)[::-1]
        return [json.loads(r["data"]) for r in rows]

    def iter_events(self, exam_id: str, after: int = 0, batch: int = 2000) -> Iterator[dict[str, Any]]:
        while chunk := self._query(
            "SELECT data FROM events WHERE exam = ? AND seq > ? ORDER BY seq LIMIT ?", exam_id, after, batch
        ):
            for row in chunk:
                event = json.loads(row["data"])
                after = event["seq"]
                yield event


def _exam(r: sqlite3.Row) -> ExamRow:
    return ExamRow(
        r["id"], r["name"], r["created"], Path(r["folder"]), r["scenario"], r["inventory"], r["environments"]
    )


def _op(r: sqlite3.Row) -> Operation:
    ok = None if r["ok"] is None else bool(r["ok"])
    return Operation(
        r["id"],
        r["exam"],
        r["kind"],
        r["state"],
        json.loads(r["params"]),
        r["started"],
        r["ended"],
        r["audit"],
        ok,
        r["error"],
    )
