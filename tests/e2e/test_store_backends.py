"""The server's store, one contract for both backends: SQLite under ``--data`` and
PostgreSQL (``--db``, a real server: postgres_support.py). Then what only PostgreSQL does,
the work queue ``chaosrun worker`` processes share: claims that never overlap (``SKIP
LOCKED``), a lease that runs out and is taken over, a worker fenced off once it was, and
the last environment ending its operation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosrun.server.db import open_store
from chaosrun.server.pg import PostgresStore
from chaosrun.server.store import ExamRow, ExamTexts, Operation, SqliteStore, Store, now


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, str | None]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    store = open_store(tmp_path / "data", url)
    try:
        yield store, url
    finally:
        store.close()


def _exam(store: Store, exam_id: str = "ex-1", created: str | None = None) -> ExamRow:
    row = ExamRow(exam_id, "room", created or now(), store.data / exam_id, "/x/scenario.yaml", None, 3)
    store.add_exam(row, ExamTexts("version: 1\n", None))
    return row


def _op(exam: str, op_id: str = "op-1", kind: str = "run") -> Operation:
    return Operation(op_id, exam, kind, "running", {"by": "olga"}, now(), None, None, None, None)


def test_tokens_are_kept_as_digests_replaced_and_revoked(backend: tuple[Store, str | None]) -> None:
    store, _ = backend
    first = store.create_token("olga", "operator")
    assert store.token(first) is not None and store.token(first).role == "operator"  # type: ignore[union-attr]
    again = store.create_token("olga", "proctor")
    assert store.token(first) is None and store.token(again).role == "proctor"  # type: ignore[union-attr]
    store.create_token("pete", "proctor")
    assert [t.name for t in store.tokens()] == ["olga", "pete"]
    assert store.revoke_token("pete") and not store.revoke_token("pete")
    with pytest.raises(ValueError):
        store.create_token("x", "root")


def test_exams_and_operations_round_trip(backend: tuple[Store, str | None]) -> None:
    store, _ = backend
    older = _exam(store, "ex-1", "2026-01-01T00:00:00.000+00:00")
    newer = _exam(store, "ex-2", "2026-01-02T00:00:00.000+00:00")
    assert [e.id for e in store.exams()] == [newer.id, older.id]
    assert store.exam("ex-1") == older and store.exam("ex-9") is None
    assert store.exam_texts("ex-1") == ExamTexts("version: 1\n", None)
    store.add_operation(_op("ex-1", "op-1"))
    store.add_operation(_op("ex-1", "op-2", "verify"))
    store.set_audit("op-1", "/a.jsonl")
    store.set_audit("op-1", "/b.jsonl")  # the first one stays
    store.end_operation("op-1", "done", ok=True, error=None, report={"ok": True, "environments": []})
    op = store.operation("op-1")
    assert op is not None and op.state == "done" and op.ok is True and op.audit == "/a.jsonl" and op.ended
    assert store.report("op-1") == {"ok": True, "environments": []} and store.report("op-2") is None
    assert [o.id for o in store.interrupt_running()] == ["op-2"]
    interrupted = store.operation("op-2")
    assert interrupted is not None and interrupted.state == "interrupted" and interrupted.ok is False
    assert [o.id for o in store.operations("ex-1")] == ["op-1", "op-2"]


def test_events_are_numbered_per_exam_and_read_back_in_order(backend: tuple[Store, str | None]) -> None:
    store, _ = backend
    for i in range(5):
        store.append_event("ex-1", {"type": "step_started", "env": f"e{i % 2}", "operation": "op-1"})
    stored = store.append_event("ex-2", {"type": "exam_created"})
    assert stored["seq"] == 1 and stored["at"]
    assert store.last_seq("ex-1") == 5 and store.last_seq("ex-3") == 0
    assert store.event_heads() == {"ex-1": 5, "ex-2": 1}
    assert [e["seq"] for e in store.events("ex-1", 2)] == [3, 4, 5]
    assert [e["seq"] for e in store.events("ex-1", env="e1")] == [2, 4]
    assert [e["seq"] for e in store.events("ex-1", limit=2)] == [4, 5]
    assert [e["seq"] for e in store.iter_events("ex-1", batch=2)] == [1, 2, 3, 4, 5]


def test_events_appended_from_many_connections_have_no_gap(backend: tuple[Store, str | None], tmp_path: Path) -> None:
    """Two stores (two connections; for PostgreSQL as two machines would have), four
    threads each: every seq once, from 1, and a reader never sees one before the ones below it."""
    store, url = backend
    other = open_store(tmp_path / "data", url)
    seen_gaps: list[list[int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seqs = [e["seq"] for e in store.events("ex-1")]
            if seqs != list(range(1, len(seqs) + 1)):
                seen_gaps.append(seqs)

    def append(s: Store) -> None:
        for _ in range(25):
            s.append_event("ex-1", {"type": "log"})

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=append, args=(s,)) for s in (store, other) for _ in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    other.close()
    assert [e["seq"] for e in store.events("ex-1")] == list(range(1, 201))
    assert seen_gaps == []


def test_an_sqlite_database_from_before_the_sequences_table_goes_on_numbering(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path)
    store.append_event("ex-1", {"type": "a"})
    store.close()
    with sqlite3.connect(tmp_path / "chaosrun.db") as db:
        db.execute("DROP TABLE sequences")
    store = SqliteStore(tmp_path)
    assert store.append_event("ex-1", {"type": "b"})["seq"] == 2
    store.close()


# -- the work queue (PostgreSQL only)


@pytest.fixture
def queue(pg_url: str, tmp_path: Path) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two connections to one database: two workers' stores."""
    a, b = PostgresStore(pg_url, tmp_path), PostgresStore(pg_url, tmp_path)
    _exam(a)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _dispatch(store: PostgresStore, envs: list[str], op_id: str = "op-1") -> None:
    store.dispatch(_op("ex-1", op_id), section="steps", seed=7, strict=False, environments=envs,
                   events=[{"type": "operation_started", "operation": op_id}])  # fmt: skip


def _step(step: str) -> dict[str, object]:
    return {"id": step, "status": "ok", "reason": "", "duration": 0.1, "attempts": 1, "points": 0.0,
            "result": {"mode": "0000"}, "changes": [{"path": "/k"}]}  # fmt: skip


def test_two_workers_claiming_at_once_never_get_the_same_environment(
    queue: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = queue
    envs = [f"cand-{i:02}" for i in range(40)]
    _dispatch(a, envs)
    got: dict[str, list[str]] = {"a": [], "b": []}

    def claim(name: str, store: PostgresStore) -> None:
        while claims := store.claim(name, 3, 30):
            got[name] += [c.env for c in claims]

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got["a"] + got["b"]) == envs and not set(got["a"]) & set(got["b"])
    assert got["a"] and got["b"]


def test_a_lease_that_runs_out_is_taken_over_and_the_old_worker_is_fenced_off(
    queue: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = queue
    _dispatch(a, ["cand-1"])
    (first,) = a.claim("a", 5, 1.0)
    assert first.claims == 1 and first.seed == 7 and first.section == "steps" and first.before is None
    a.set_claim_audit("op-1", ["cand-1"], "a", "/audit/op-1-a.jsonl")
    assert a.record_step("op-1", "ex-1", "cand-1", "a", "op-1-a", _step("lock"), {"type": "step_ended"})
    assert b.claim("b", 5, 1.0) == []  # still a's
    time.sleep(1.2)  # a is gone: no heartbeat
    (taken,) = b.claim("b", 5, 30)
    assert taken.claims == 2 and taken.before == "a" and taken.previous == "/audit/op-1-a.jsonl"
    ended = b.ended_steps("op-1", ["cand-1"])["cand-1"]
    assert (
        set(ended) == {"lock"} and ended["lock"]["done_in"] == "op-1-a" and ended["lock"]["result"] == {"mode": "0000"}
    )
    # a comes back: it holds nothing any more, writes nothing, ends nothing
    assert a.renew("a", 30).mine == frozenset()
    assert not a.record_step("op-1", "ex-1", "cand-1", "a", "op-1-a", _step("pause"), {"type": "step_ended"})
    assert not a.emit_held("op-1", "ex-1", "cand-1", "a", {"type": "env_ended"})
    assert not a.finish("op-1", "ex-1", "cand-1", "a", "done", ok=True)
    assert set(b.ended_steps("op-1", ["cand-1"])["cand-1"]) == {"lock"}
    assert b.renew("b", 30).mine == {("op-1", "cand-1")}


def test_the_last_environment_to_end_ends_the_operation_with_the_report(
    queue: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = queue
    _dispatch(a, ["cand-1", "cand-2"])
    (one,) = a.claim("a", 1, 30)
    (two,) = b.claim("b", 1, 30)
    part = {"name": one.env, "ok": True, "points": 2, "max_points": 3, "steps": []}
    assert a.finish("op-1", "ex-1", one.env, "a", "done", ok=True, report=part, events=[{"type": "env_graded"}])
    assert a.operation("op-1").state == "running"  # type: ignore[union-attr]
    assert b.finish("op-1", "ex-1", two.env, "b", "done", ok=True, report={**part, "name": two.env, "points": 1})
    op = a.operation("op-1")
    assert op is not None and op.state == "done" and op.ok is True
    report = a.report("op-1")
    assert report is not None and report["points"] == 3 and report["max_points"] == 6 and report["seed"] == 7
    assert [e["name"] for e in report["environments"]] == ["cand-1", "cand-2"]
    kinds = [e["type"] for e in a.events("ex-1")]
    assert kinds == ["operation_started", "env_graded", "operation_ended"]
    assert a.interrupt_running() == []  # a restarted server leaves the workers' operations alone


def test_a_stop_cancels_what_no_one_started_and_a_release_gives_it_back(
    queue: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = queue
    _dispatch(a, ["cand-1", "cand-2", "cand-3"])
    (one,) = a.claim("a", 1, 30)
    assert a.release("op-1", one.env, "a")
    (again,) = b.claim("b", 1, 30)
    assert again.env == one.env and again.claims == 2
    assert a.stop_job("op-1") and not a.stop_job("op-9")
    assert [w["state"] for w in a.work("op-1")] == ["claimed", "cancelled", "cancelled"]
    assert b.renew("b", 30).stopping == {"op-1"}
    assert b.claim("b", 5, 30) == []
    assert b.finish("op-1", "ex-1", again.env, "b", "stopped", ok=False)
    op = a.operation("op-1")
    assert op is not None and op.state == "stopped" and op.ok is False
