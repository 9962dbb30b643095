"""The PostgreSQL backend of the server's store (``--db postgresql://...``), and the work
queue that ``chaosrun worker`` processes on any number of machines share.

Everything :class:`~.store.Store` keeps is kept here in the same tables and the same SQL
(psycopg 3; placeholders ``?`` become ``%s``). What only PostgreSQL does:

- ``jobs``: an operation (run or verify) that workers carry out: its section, seed, strict.
- ``work``: one row per (operation, environment): ``queued``, then ``claimed`` by a worker
  until ``lease_until`` (renewed by its heartbeat), then ``done``, ``stopped``, ``failed``
  or ``cancelled``. A worker claims with ``SELECT ... FOR UPDATE SKIP LOCKED``: two
  workers never claim one row, and neither waits for the other. A claimed row whose lease
  ran out is claimable again: its worker is taken for dead.
- ``step_results``: every step that ended, per (operation, environment, step), written by
  the worker that ran it while it holds a share lock on its work row (so no other worker
  can have taken the environment over at that moment). It is what a takeover resumes from:
  a step with a row is not run again.
- ``workers``: who is attached, seen by their heartbeat.

The worker that finishes the last environment of an operation ends it (its report put
together from each environment's part) in the same transaction, under the operation row's
lock, so exactly one does it, with or without a server running.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import SCHEMA, Operation, Row, Store, StoreError, Tx, in_list, now, placeholders

__all__ = ["Claim", "PostgresStore", "Renewal"]

WORK_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    operation TEXT PRIMARY KEY REFERENCES operations(id),
    exam TEXT NOT NULL REFERENCES exams(id),
    section TEXT NOT NULL,
    seed BIGINT NOT NULL,
    strict INTEGER NOT NULL,
    stop INTEGER NOT NULL DEFAULT 0,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS work (
    operation TEXT NOT NULL REFERENCES jobs(operation),
    env TEXT NOT NULL,
    exam TEXT NOT NULL,
    position INTEGER NOT NULL,
    queued TIMESTAMPTZ NOT NULL DEFAULT now(),
    state TEXT NOT NULL,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    heartbeat TIMESTAMPTZ,
    claims INTEGER NOT NULL DEFAULT 0,
    audit TEXT,
    previous TEXT,
    ok INTEGER,
    error TEXT,
    report TEXT,
    PRIMARY KEY (operation, env)
);
CREATE INDEX IF NOT EXISTS work_to_claim ON work (state, queued, position);
CREATE INDEX IF NOT EXISTS work_by_worker ON work (claimed_by, state);
CREATE TABLE IF NOT EXISTS step_results (
    operation TEXT NOT NULL,
    env TEXT NOT NULL,
    step TEXT NOT NULL,
    worker TEXT NOT NULL,
    done_in TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    duration DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL,
    points DOUBLE PRECISION NOT NULL,
    result TEXT NOT NULL,
    changes TEXT NOT NULL,
    ended TEXT NOT NULL,
    PRIMARY KEY (operation, env, step)
);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    parallel INTEGER NOT NULL,
    lease DOUBLE PRECISION NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    seen TIMESTAMPTZ NOT NULL
);
"""

#: Work row states: the first two are not final.
WORK_STATES = ("queued", "claimed", "done", "stopped", "failed", "cancelled")

_SCHEMA_LOCK = 0x63686173  # pg_advisory_xact_lock key: one process creates the tables at a time


@dataclass(frozen=True)
class Claim:
    """One environment of one operation, claimed by a worker."""

    operation: str
    exam: str
    env: str
    section: str
    seed: int
    strict: bool
    claims: int  # 1: a first claim; more: a takeover (or a release taken up again)
    before: str | None  # the worker that held it before
    previous: str | None  # the audit log of the claim before (where its ended steps were run)


@dataclass(frozen=True)
class Renewal:
    """What a heartbeat learnt: the environments still ours, and the operations asked to stop."""

    mine: frozenset[tuple[str, str]]
    stopping: frozenset[str]


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def query(self, sql: str, *args: Any) -> list[Row]:
        rows: list[Row] = self._conn.execute(placeholders(sql), args).fetchall()
        return rows

    def write(self, sql: str, *args: Any) -> int:
        count: int = self._conn.execute(placeholders(sql), args).rowcount
        return count


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class PostgresStore(Store):
    """The store in PostgreSQL: one connection behind a lock (each method one transaction)."""

    dispatches = True
    _own_ops = " AND id NOT IN (SELECT operation FROM jobs)"

    def __init__(self, url: str, data: Path) -> None:
        super().__init__(data)
        self.url = url
        self._lock = threading.RLock()
        self._conn = self._connect()
        with self._transaction() as tx:
            tx.query("SELECT pg_advisory_xact_lock(?)", _SCHEMA_LOCK)
            self._conn.execute(SCHEMA + WORK_SCHEMA)

    @property
    def where(self) -> str:
        return redacted(self.url)

    def _connect(self) -> Any:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            from ..errors import UsageError

            raise UsageError("--db postgresql://... needs psycopg: pip install 'chaosrun[postgres]'") from None
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach PostgreSQL at {redacted(self.url)}: {_one_line(exc)}") from None

    @contextmanager
    def _transaction(self) -> Iterator[Tx]:
        import psycopg

        with self._lock:
            if self._conn.closed or self._conn.broken:  # the server restarted, the network blinked
                self._conn = self._connect()
            try:
                with self._conn.transaction():
                    yield _PgTx(self._conn)
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL at {redacted(self.url)}: {_one_line(exc)}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- jobs: what the server hands out

    def dispatch(
        self,
        op: Operation,
        *,
        section: str,
        seed: int,
        strict: bool,
        environments: Sequence[str],
        resumes: str | None = None,
        events: Sequence[dict[str, Any]] = (),
    ) -> list[dict[str, Any]]:
        """Create the operation with one queued work row per environment (and its first
        events), in one transaction; ``resumes``: an earlier operation of the exam whose
        ended steps count as ended here. The events as stored."""
        with self._transaction() as tx:
            self._add_operation(tx, op)
            tx.write(
                "INSERT INTO jobs (operation, exam, section, seed, strict) VALUES (?, ?, ?, ?, ?)",
                op.id,
                op.exam,
                section,
                seed,
                int(strict),
            )
            for position, env in enumerate(environments):
                tx.write(
                    "INSERT INTO work (operation, env, exam, position, state) VALUES (?, ?, ?, ?, 'queued')",
                    op.id,
                    env,
                    op.exam,
                    position,
                )
            if resumes is not None:
                tx.write(
                    "INSERT INTO step_results SELECT ?, r.env, r.step, r.worker, r.done_in, r.status, r.reason, "
                    "r.duration, r.attempts, r.points, r.result, r.changes, r.ended FROM step_results r "
                    f"WHERE r.operation = ? AND r.env IN {in_list(environments)}",
                    op.id,
                    resumes,
                    *environments,
                )
                tx.write(
                    "UPDATE work SET previous = old.audit FROM work old "
                    "WHERE work.operation = ? AND old.operation = ? AND old.env = work.env",
                    op.id,
                    resumes,
                )
            return [self._append_event(tx, op.exam, e) for e in events]

    def job_of(self, op_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM jobs WHERE operation = ?", op_id)
        return dict(rows[0]) if rows else None

    def work(self, op_id: str) -> list[dict[str, Any]]:
        """The operation's work rows, in plan order (what the tests and ``docs/scale.md`` show)."""
        rows = self._query(
            "SELECT env, state, claimed_by, claims, audit, previous, ok, error FROM work "
            "WHERE operation = ? ORDER BY position",
            op_id,
        )
        return [dict(r) for r in rows]

    def stop_job(self, op_id: str) -> bool:
        """Ask the workers to stop the operation (as Ctrl-C does); what no one started is
        cancelled. False when it is not a dispatched operation."""
        with self._transaction() as tx:
            if not tx.write("UPDATE jobs SET stop = 1 WHERE operation = ?", op_id):
                return False
            tx.write("UPDATE work SET state = 'cancelled' WHERE operation = ? AND state = 'queued'", op_id)
            self._settle(tx, op_id)
        return True

    def stopping(self, ops: Sequence[str]) -> set[str]:
        """Which of ``ops`` were asked to stop."""
        if not ops:
            return set()
        return {
            r["operation"]
            for r in self._query(f"SELECT operation FROM jobs WHERE stop = 1 AND operation IN {in_list(ops)}", *ops)
        }

    # -- workers

    def register_worker(self, name: str, host: str, pid: int, parallel: int, lease: float) -> None:
        self._write(
            "INSERT INTO workers (name, host, pid, parallel, lease, started, seen) "
            "VALUES (?, ?, ?, ?, ?, now(), now()) "
            "ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "parallel = excluded.parallel, lease = excluded.lease, started = now(), seen = now()",
            name,
            host,
            pid,
            parallel,
            lease,
        )

    def unregister_worker(self, name: str) -> None:
        self._write("DELETE FROM workers WHERE name = ?", name)

    def workers(self, *, live: bool = True) -> list[dict[str, Any]]:
        """The attached workers (``live``: seen within twice their lease, so that a heartbeat
        late by a busy machine does not count as a worker gone)."""
        where = " WHERE seen > now() - make_interval(secs => 2 * lease)" if live else ""
        return [dict(r) for r in self._query(f"SELECT * FROM workers{where} ORDER BY name")]

    def claim(self, worker: str, n: int, lease: float) -> list[Claim]:
        """Up to ``n`` environments for ``worker``: queued ones, and claimed ones whose lease
        ran out (their worker is taken for dead), oldest operation first, in plan order."""
        if n <= 0:
            return []
        with self._transaction() as tx:
            self._reap_stopping(tx)
            rows = tx.query(
                "WITH picked AS ("
                " SELECT w.operation, w.env, w.claimed_by AS before, j.section, j.seed, j.strict"
                " FROM work w JOIN jobs j ON j.operation = w.operation"
                " WHERE j.stop = 0 AND (w.state = 'queued' OR (w.state = 'claimed' AND w.lease_until < now()))"
                " ORDER BY w.queued, w.operation, w.position LIMIT ?"
                " FOR UPDATE OF w SKIP LOCKED) "
                "UPDATE work SET state = 'claimed', claimed_by = ?, lease_until = now() + make_interval(secs => ?), "
                "heartbeat = now(), claims = work.claims + 1, previous = COALESCE(work.audit, work.previous), "
                "audit = NULL "
                "FROM picked WHERE work.operation = picked.operation AND work.env = picked.env "
                "RETURNING work.operation, work.exam, work.env, work.position, work.claims, work.previous, "
                "picked.before, picked.section, picked.seed, picked.strict",
                n,
                worker,
                lease,
            )
        rows.sort(key=lambda r: (r["operation"], r["position"]))
        return [
            Claim(
                r["operation"],
                r["exam"],
                r["env"],
                r["section"],
                int(r["seed"]),
                bool(r["strict"]),
                int(r["claims"]),
                r["before"],
                r["previous"],
            )
            for r in rows
        ]

    def _reap_stopping(self, tx: Tx) -> None:
        """Claims of operations asked to stop whose worker is gone: stopped, and the
        operation ended if that was all it waited for."""
        rows = tx.query(
            "UPDATE work SET state = 'stopped' WHERE state = 'claimed' AND lease_until < now() "
            "AND operation IN (SELECT operation FROM jobs WHERE stop = 1) RETURNING operation"
        )
        for op in sorted({r["operation"] for r in rows}):
            self._settle(tx, op)

    def renew(self, worker: str, lease: float) -> Renewal:
        """The heartbeat: ``worker`` is alive, its claims last ``lease`` seconds more."""
        with self._transaction() as tx:
            tx.write("UPDATE workers SET seen = now() WHERE name = ?", worker)
            mine = tx.query(
                "UPDATE work SET lease_until = now() + make_interval(secs => ?), heartbeat = now() "
                "WHERE claimed_by = ? AND state = 'claimed' RETURNING operation, env",
                lease,
                worker,
            )
            ops = sorted({r["operation"] for r in mine})
            stopping = (
                tx.query(f"SELECT operation FROM jobs WHERE stop = 1 AND operation IN {in_list(ops)}", *ops)
                if ops
                else []
            )
        return Renewal(frozenset((r["operation"], r["env"]) for r in mine), frozenset(r["operation"] for r in stopping))

    # -- what a worker records

    def ended_steps(self, op_id: str, envs: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Per environment, the steps that ended, as :mod:`chaosrun.resume` reads them from a
        log: ``{status, reason, duration, attempts, points, result, changes, done_in}``."""
        if not envs:
            return {}
        rows = self._query(
            f"SELECT * FROM step_results WHERE operation = ? AND env IN {in_list(envs)} ORDER BY ended", op_id, *envs
        )
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["env"], {})[r["step"]] = {
                "status": r["status"],
                "reason": r["reason"],
                "duration": r["duration"],
                "attempts": r["attempts"],
                "points": r["points"],
                "result": json.loads(r["result"]),
                "changes": json.loads(r["changes"]),
                "done_in": r["done_in"],
                "worker": r["worker"],
            }
        return out

    def set_claim_audit(self, op_id: str, envs: Sequence[str], worker: str, audit: str) -> None:
        self._write(
            f"UPDATE work SET audit = ? WHERE operation = ? AND claimed_by = ? AND env IN {in_list(envs)}",
            audit,
            op_id,
            worker,
            *envs,
        )

    def _holds(self, tx: Tx, op_id: str, env: str, worker: str) -> bool:
        """Whether ``worker`` still holds the environment; a share lock on its row keeps it
        so until the transaction ends (a takeover's claim skips a locked row)."""
        rows = tx.query(
            "SELECT 1 AS held FROM work WHERE operation = ? AND env = ? AND claimed_by = ? AND state = 'claimed' "
            "FOR SHARE",
            op_id,
            env,
            worker,
        )
        return bool(rows)

    def record_step(
        self, op_id: str, exam: str, env: str, worker: str, done_in: str, step: dict[str, Any], event: dict[str, Any]
    ) -> bool:
        """A step that ended: its result row and its ``step_ended`` event, if ``worker``
        still holds the environment (False: it was taken over; nothing is written)."""
        with self._transaction() as tx:
            if not self._holds(tx, op_id, env, worker):
                return False
            inserted = tx.write(
                "INSERT INTO step_results (operation, env, step, worker, done_in, status, reason, duration, "
                "attempts, points, result, changes, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (operation, env, step) DO NOTHING",
                op_id,
                env,
                step["id"],
                worker,
                done_in,
                step["status"],
                step["reason"],
                float(step["duration"]),
                int(step["attempts"]),
                float(step["points"]),
                json.dumps(step["result"]),
                json.dumps(step["changes"]),
                now(),
            )
            if inserted:
                self._append_event(tx, exam, event)
        return True

    def emit_held(self, op_id: str, exam: str, env: str, worker: str, event: dict[str, Any]) -> bool:
        """An event of an environment ``worker`` still holds (False: taken over, not written)."""
        with self._transaction() as tx:
            if not self._holds(tx, op_id, env, worker):
                return False
            self._append_event(tx, exam, event)
        return True

    def finish(
        self,
        op_id: str,
        exam: str,
        env: str,
        worker: str,
        state: str,
        *,
        ok: bool,
        error: str | None = None,
        report: dict[str, Any] | None = None,
        events: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """The environment is over (``done``, ``stopped``, ``failed``); the operation ends
        with it when it was the last. False: ``worker`` no longer held it."""
        assert state in WORK_STATES[2:], state
        with self._transaction() as tx:
            changed = tx.write(
                "UPDATE work SET state = ?, ok = ?, error = ?, report = ?, lease_until = NULL "
                "WHERE operation = ? AND env = ? AND claimed_by = ? AND state = 'claimed'",
                state,
                int(ok),
                error,
                json.dumps(report) if report is not None else None,
                op_id,
                env,
                worker,
            )
            if not changed:
                return False
            for event in events:
                self._append_event(tx, exam, event)
            self._settle(tx, op_id)
        return True

    def release(self, op_id: str, env: str, worker: str) -> bool:
        """Give an environment back (the worker stops): claimable again at once."""
        return (
            self._write(
                "UPDATE work SET state = 'queued', claimed_by = NULL, lease_until = NULL "
                "WHERE operation = ? AND env = ? AND claimed_by = ? AND state = 'claimed'",
                op_id,
                env,
                worker,
            )
            > 0
        )

    def _settle(self, tx: Tx, op_id: str) -> None:
        """End the operation if none of its environments is queued or claimed any more."""
        ops = tx.query("SELECT kind, exam, state FROM operations WHERE id = ? FOR UPDATE", op_id)
        if not ops or ops[0]["state"] != "running":
            return
        rows = tx.query(
            "SELECT state, ok, error, audit, report, claimed_by FROM work WHERE operation = ? ORDER BY position", op_id
        )
        if any(r["state"] in WORK_STATES[:2] for r in rows):
            return
        (job,) = tx.query("SELECT section, seed FROM jobs WHERE operation = ?", op_id)
        envs = [json.loads(r["report"]) for r in rows if r["report"]]
        stopped = any(r["state"] in ("stopped", "cancelled") for r in rows)
        errors = list(dict.fromkeys(r["error"] for r in rows if r["state"] == "failed" and r["error"]))
        report = {
            "run": op_id,
            "section": job["section"],
            "ok": not stopped and not errors and all(e.get("ok") for e in envs),
            "interrupted": stopped,
            "seed": int(job["seed"]),
            "audit": None,
            "audits": sorted({f"{r['claimed_by']}:{r['audit']}" for r in rows if r["audit"]}),
            "points": sum(e.get("points") or 0 for e in envs),
            "max_points": sum(e.get("max_points") or 0 for e in envs),
            "environments": envs,
        }
        state = "failed" if errors else "stopped" if stopped else "done"
        error = "; ".join(errors) or None
        ok = bool(report["ok"])
        kind, exam = ops[0]["kind"], ops[0]["exam"]
        self._end_operation(tx, op_id, state, ok=ok, error=error, report=report if envs else None)
        ended = {"type": "operation_ended", "operation": op_id, "kind": kind, "state": state, "ok": ok, "error": error}
        self._append_event(tx, exam, ended)
