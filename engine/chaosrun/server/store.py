"""What ``chaosrun serve`` keeps: exams, their operations (run, verify, restore, watch),
every event, and the access tokens, in a database: SQLite under ``--data`` by default,
PostgreSQL with ``--db postgresql://...`` (:mod:`.pg`), where any number of ``chaosrun
worker`` processes share the exams.

:class:`Store` is the interface, and the SQL the two dialects agree on: everything here is
written once, with ``?`` placeholders, and a backend supplies only its connection and
transactions (:meth:`Store._transaction`). SQLite in WAL mode, one connection shared by the
server's threads behind a lock: the engine's threads append events while the HTTP side
reads them. An event is committed before it is sent to any browser, so what a client was
shown survives a restart and a reconnecting client replays from its ``Last-Event-ID``.

An event's ``seq`` (per exam, from 1) comes from the ``sequences`` row of its exam, bumped
in the transaction that inserts the event: the row stays locked until that commit, so
events become visible in ``seq`` order even when several processes append to one exam
(PostgreSQL), and ``sequences`` tells a reader cheaply which exams have new events.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import ChaosrunError

__all__ = [
    "ROLES",
    "StoreError",
    "ExamRow",
    "ExamTexts",
    "Operation",
    "SqliteStore",
    "Store",
    "TokenRow",
    "Tx",
    "now",
]

ROLES = ("operator", "proctor")


class StoreError(ChaosrunError):
    """The database cannot be reached or used."""


#: Operation states; the first is the only one that is not final.
OP_STATES = ("running", "done", "failed", "interrupted", "stopped")

#: The tables both backends have, in the SQL both accept.
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
CREATE TABLE IF NOT EXISTS exam_files (
    exam TEXT PRIMARY KEY REFERENCES exams(id),
    scenario TEXT NOT NULL,
    inventory TEXT
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
    seq BIGINT NOT NULL,
    operation TEXT,
    type TEXT NOT NULL,
    env TEXT,
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (exam, seq)
);
CREATE INDEX IF NOT EXISTS events_by_env ON events(exam, env, seq);
CREATE TABLE IF NOT EXISTS sequences (
    exam TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
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
class ExamTexts:
    """The text of an exam's scenario and inventory as the server loaded them: what a
    worker on another machine runs when it has not the same files."""

    scenario: str
    inventory: str | None


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


Row = Mapping[str, Any]


class Tx(Protocol):
    """One transaction of a backend: statements with ``?`` placeholders."""

    def query(self, sql: str, *args: Any) -> list[Row]: ...
    def write(self, sql: str, *args: Any) -> int: ...


class Store(abc.ABC):
    """The server's database: tokens, exams, operations, events.

    A backend implements :meth:`_transaction` (and :meth:`close`); every method here is one
    transaction of it, safe to call from any thread.
    """

    #: Operations of kind run and verify go to ``chaosrun worker`` processes (PostgreSQL).
    dispatches = False

    def __init__(self, data: Path) -> None:
        self.data = data

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Tx]:
        """A transaction: committed when the block ends, rolled back when it raises."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    def where(self) -> str:
        """Where the database is, for messages (no password)."""
        return str(self.data / "chaosrun.db")

    def _query(self, sql: str, *args: Any) -> list[Row]:
        with self._transaction() as tx:
            return tx.query(sql, *args)

    def _write(self, sql: str, *args: Any) -> int:
        with self._transaction() as tx:
            return tx.write(sql, *args)

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

    def add_exam(self, exam: ExamRow, texts: ExamTexts | None = None) -> None:
        with self._transaction() as tx:
            tx.write(
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
            if texts is not None:
                tx.write(
                    "INSERT INTO exam_files (exam, scenario, inventory) VALUES (?, ?, ?)",
                    exam.id,
                    texts.scenario,
                    texts.inventory,
                )

    def exams(self) -> list[ExamRow]:
        return [_exam(r) for r in self._query("SELECT * FROM exams ORDER BY created DESC, id DESC")]

    def exam(self, exam_id: str) -> ExamRow | None:
        rows = self._query("SELECT * FROM exams WHERE id = ?", exam_id)
        return _exam(rows[0]) if rows else None

    def exam_texts(self, exam_id: str) -> ExamTexts | None:
        rows = self._query("SELECT scenario, inventory FROM exam_files WHERE exam = ?", exam_id)
        return ExamTexts(rows[0]["scenario"], rows[0]["inventory"]) if rows else None

    # -- operations

    def add_operation(self, op: Operation) -> None:
        with self._transaction() as tx:
            self._add_operation(tx, op)

    def _add_operation(self, tx: Tx, op: Operation) -> None:
        tx.write(
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
        with self._transaction() as tx:
            self._end_operation(tx, op_id, state, ok=ok, error=error, report=report)

    def _end_operation(
        self, tx: Tx, op_id: str, state: str, *, ok: bool | None, error: str | None, report: dict[str, Any] | None
    ) -> None:
        tx.write(
            "UPDATE operations SET state = ?, ended = ?, ok = ?, error = ?, report = ? WHERE id = ?",
            state,
            now(),
            None if ok is None else int(ok),
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
        """Operations a server that stopped left ``running``: now ``interrupted`` (those
        it ran itself: a backend that dispatches leaves its workers' ones running)."""
        running = [_op(r) for r in self._query(f"SELECT * FROM operations WHERE state = 'running'{self._own_ops}")]
        for op in running:
            self.end_operation(op.id, "interrupted", ok=False, error="the server stopped during it", report=None)
        return running

    _own_ops = ""  # a condition on operations that the server ran itself (see .pg)

    # -- events

    def append_event(self, exam_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Store one event; the event with its ``seq`` (per exam, from 1) and ``at``."""
        with self._transaction() as tx:
            return self._append_event(tx, exam_id, event)

    def _append_event(self, tx: Tx, exam_id: str, event: dict[str, Any]) -> dict[str, Any]:
        (row,) = tx.query(
            "INSERT INTO sequences (exam, seq) VALUES (?, 1) "
            "ON CONFLICT (exam) DO UPDATE SET seq = sequences.seq + 1 RETURNING seq",
            exam_id,
        )
        stored = {**event, "seq": int(row["seq"]), "at": event.get("at") or now()}
        tx.write(
            "INSERT INTO events (exam, seq, operation, type, env, at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            exam_id,
            stored["seq"],
            stored.get("operation"),
            stored["type"],
            stored.get("env"),
            stored["at"],
            json.dumps(stored),
        )
        return stored

    def last_seq(self, exam_id: str) -> int:
        rows = self._query("SELECT seq FROM sequences WHERE exam = ?", exam_id)
        return int(rows[0]["seq"]) if rows else 0

    def event_heads(self) -> dict[str, int]:
        """Each exam's newest ``seq``: what a reader polls to learn which exams moved."""
        return {r["exam"]: int(r["seq"]) for r in self._query("SELECT exam, seq FROM sequences")}

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


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def query(self, sql: str, *args: Any) -> list[Row]:
        return self._db.execute(sql, args).fetchall()

    def write(self, sql: str, *args: Any) -> int:
        return self._db.execute(sql, args).rowcount


class SqliteStore(Store):
    """The database of one machine's server: ``DATA/chaosrun.db``."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        data.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(data / "chaosrun.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        with self._transaction() as tx:  # a database from before the sequences table
            tx.write(
                "INSERT INTO sequences (exam, seq) SELECT exam, MAX(seq) FROM events WHERE true GROUP BY exam "
                "ON CONFLICT (exam) DO NOTHING"
            )

    def _query(self, sql: str, *args: Any) -> list[Row]:
        with self._lock:  # a read needs no write lock (WAL: readers see the last commit)
            rows: list[Row] = self._db.execute(sql, args).fetchall()
            return rows

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _exam(r: Row) -> ExamRow:
    return ExamRow(
        r["id"], r["name"], r["created"], Path(r["folder"]), r["scenario"], r["inventory"], r["environments"]
    )


def _op(r: Row) -> Operation:
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


def placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the shared SQL has no literal ``%`` or ``?``)."""
    assert "%" not in sql, sql
    return sql.replace("?", "%s")


def values(n: int) -> str:
    """``?, ?, ...``: ``n`` placeholders."""
    return ", ".join("?" * n)


def in_list(items: Sequence[Any]) -> str:
    """``(?, ?, ...)`` for an ``IN`` of ``items`` (at least one)."""
    return f"({values(len(items))})"
