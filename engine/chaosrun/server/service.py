"""What the server does, apart from HTTP: exams created from text or from files, their
operations run by :mod:`chaosrun.api` in threads of their own, and every event stored,
applied to the exam's room and sent to whoever follows it.

One operation per exam at a time (a second is refused: 409). The engine runs in a worker
thread (its own trio loop, as ``chaosrun run`` does); its events come back to the server's
loop through the loop's token. When the server stops, the running operations are stopped
the way Ctrl-C stops a run (steps under way end, audit logs are sealed) and waited for.

With a store that dispatches (``--db postgresql://...``), a run or a verify is not run
here: it becomes one work row per environment for ``chaosrun worker`` processes
(:mod:`.worker`), whose events land in the database. The server then follows the
database: every event it sends on, its own included, is read back from there in ``seq``
order (:meth:`Service._catch_up`), polling the exams' newest ``seq`` five times a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .. import api
from .._spans import ScenarioErrors
from ..errors import ChaosrunError
from ..plan import build_plan
from ..scenario import Section, parse_duration
from ..session import new_seed
from .pg import PostgresStore
from .room import Room
from .store import ExamRow, ExamTexts, Operation, Store, StoreError, now

__all__ = ["Busy", "Invalid", "NotFound", "Service"]

KINDS = ("run", "verify", "restore", "watch")

#: An operation's parameters: name -> (type, what it is). ``limit`` works for every kind.
PARAMS: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "run": {
        "limit": (str, "--limit PATTERN: names, globs, comma lists, @failed, @suspect"),
        "seed": (int, "--seed: the one_of picks"),
        "strict": (bool, "--strict: stop an environment at its first failed step"),
        "resume": (bool, "--resume: go on with this exam's newest interrupted run"),
        "transfer": (str, "--transfer auto|raw|gzip: how module binaries travel (with --db: each worker's own)"),
    },
    "verify": {
        "limit": (str, "--limit PATTERN"),
        "seed": (int, "--seed"),
        "strict": (bool, "--strict"),
        "transfer": (str, "--transfer auto|raw|gzip: how module binaries travel (with --db: each worker's own)"),
    },
    "restore": {"limit": (str, "--limit PATTERN")},
    "watch": {
        "limit": (str, "--limit PATTERN"),
        "interval": ((str, int, float), "--watch: seconds, or a duration such as 30s"),
        "until": ((str, int, float), "--until: seconds, or a duration such as 2h"),
        "strict": (bool, "--strict"),
        "transfer": (str, "--transfer auto|raw|gzip: how module binaries travel (with --db: each worker's own)"),
    },
}


#: ``transfer``'s values (chaosrun.scenario.Transfer).
TRANSFERS = ("auto", "raw", "gzip")


class NotFound(ChaosrunError):
    pass


class Busy(ChaosrunError):
    pass


class Invalid(ChaosrunError):
    pass


@dataclass
class _Running:
    op: Operation
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    stop_asked: bool = False

    def stop(self) -> None:
        self.stop_asked = True
        for stop in list(self.stoppers):
            stop()


class Service:
    """The exams of one server: call its methods from the server's trio loop."""

    def __init__(self, store: Store, *, files: tuple[Path, ...] = (), key_path: Path | None = None) -> None:
        self.store = store
        self.files = tuple(p.resolve() for p in files)
        self.key_path = key_path
        self.rooms: dict[str, Room] = {}
        self.running: dict[str, _Running] = {}
        self._subscribers: dict[str, set[trio.MemorySendChannel[dict[str, Any]]]] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = threading.Lock()
        self._published: dict[str, int] = {}  # exam -> the newest seq sent on (a store that dispatches)

    @property
    def dispatching(self) -> bool:
        """Runs and verifies go to ``chaosrun worker`` processes through the database."""
        return isinstance(self.store, PostgresStore)

    # -- life

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the operations' nursery until cancelled; then stop and wait for them."""
        self._token = trio.lowlevel.current_trio_token()
        for op in self.store.interrupt_running():
            ended = {"type": "operation_ended", "operation": op.id, "kind": op.kind, "state": "interrupted"}
            self.emit(op.exam, {**ended, "ok": False, "error": "the server stopped during it"})
        for exam in self.store.exams():
            room = self.rooms[exam.id] = Room()
            for event in self.store.iter_events(exam.id):
                room.apply(event)
            self._published[exam.id] = room.seq
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.dispatching:
                    nursery.start_soon(self._follow)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def _follow(self, every: float = 0.2) -> None:
        """Send on what the workers write: poll each exam's newest seq (one small table)."""
        failing = False
        while True:
            await trio.sleep(every)
            try:
                heads = self.store.event_heads()
                for exam_id, seq in heads.items():
                    if seq > self._published.get(exam_id, 0):
                        self._catch_up(exam_id)
            except StoreError as exc:
                if not failing:
                    print(f"chaosrun: {exc}; trying again", file=sys.stderr)
                failing = True
                continue
            failing = False

    def stop_all(self) -> None:
        for running in list(self.running.values()):
            running.stop()

    # -- exams

    def create_exam(
        self,
        *,
        scenario: str | None = None,
        inventory: str | None = None,
        scenario_path: str | None = None,
        inventory_path: str | None = None,
    ) -> ExamRow:
        """An exam from the scenario's and inventory's text, or from files the server may
        read (``--files``). Raises ScenarioErrors (every lint error), Invalid."""
        exam_id = "ex-" + secrets.token_hex(6)
        folder = self.store.data / "exams" / exam_id
        try:
            if scenario is not None:
                if scenario_path is not None or inventory_path is not None:
                    raise Invalid("give the scenario and inventory as text or as paths, not both")
                exam = api.exam_from_text(scenario, inventory, folder, key_path=self.key_path)
                scenario_file = str(folder / "scenario.yaml")
                inventory_file = exam.inventory.file if exam.inventory is not None else None
            elif scenario_path is not None:
                scenario_file = str(self._readable(scenario_path))
                inventory_file = str(self._readable(inventory_path)) if inventory_path is not None else None
                folder.mkdir(parents=True)
                exam = api.load_exam(scenario_file, inventory_file, audit_dir=folder / "audit", note=_quiet)
            else:
                raise Invalid("give `scenario` (the scenario's text) or `scenario_path`")
            plan = build_plan(exam.scenario, seed=0, inventory=exam.inventory)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        row = ExamRow(exam_id, exam.scenario.name, now(), folder, scenario_file, inventory_file, len(plan.environments))
        texts = ExamTexts(
            Path(scenario_file).read_text(), Path(inventory_file).read_text() if inventory_file is not None else None
        )
        self.store.add_exam(row, texts)
        self.rooms[exam_id] = Room()
        steps = api.plan_steps(plan, Section.STEPS) + api.plan_steps(plan, Section.VERIFY)
        self.emit(
            exam_id, {"type": "exam_created", "environments": [e.name for e in plan.environments], "steps": steps}
        )
        return row

    def _readable(self, path: str) -> Path:
        resolved = Path(path).resolve()
        if not self.files:
            raise Invalid("this server reads no files: give the text, or start it with --files DIR")
        if not any(resolved.is_relative_to(root) for root in self.files):
            raise Invalid(f"{path}: not under a folder this server may read ({', '.join(map(str, self.files))})")
        if not resolved.is_file():
            raise Invalid(f"{path}: no such file")
        return resolved

    def exam(self, exam_id: str) -> ExamRow:
        if (row := self.store.exam(exam_id)) is None:
            raise NotFound(f"no exam {exam_id}")
        return row

    def room(self, exam_id: str) -> Room:
        """The exam's room, with what the workers wrote until now (a store that dispatches)."""
        if self.dispatching:
            self._catch_up(exam_id)
        return self.rooms.setdefault(exam_id, Room())

    def exam_json(self, row: ExamRow) -> dict[str, Any]:
        ops = self.store.operations(row.id)
        last = ops[-1] if ops else None
        return {
            "id": row.id,
            "name": row.name,
            "created": row.created,
            "state": _state(last),
            "environments": row.environments,
            "scenario": row.scenario,
            "inventory": row.inventory,
            "operation": last.as_json() if last else None,
        }

    def load(self, row: ExamRow) -> api.Exam:
        return api.load_exam(
            row.scenario, row.inventory, audit_dir=row.folder / "audit", key_path=self.key_path, note=_quiet
        )

    # -- operations

    def start(self, exam_id: str, kind: str, params: dict[str, Any], by: str) -> Operation:
        """Start ``kind`` on the exam. Raises NotFound, Busy, Invalid (a bad parameter)."""
        row = self.exam(exam_id)
        how = _checked(kind, params)
        if self.dispatching:
            if kind in ("run", "verify"):
                return self._dispatch(row, kind, params, how, by)
            if kind == "restore":
                raise Invalid(
                    "restore with --db: the run's audit logs are on the workers' machines; "
                    "restore there (chaosrun restore --from LOG), see docs/scale.md"
                )
            self._not_busy(exam_id)
        if kind == "run" and how.pop("resume", False):
            how["resume"] = self._interrupted_run(exam_id)
        with self._lock:
            if (busy := self.running.get(exam_id)) is not None:
                raise Busy(f"{busy.op.kind} {busy.op.id} is running on exam {exam_id}; stop it or wait")
            op = Operation("op-" + secrets.token_hex(6), exam_id, kind, "running", {**params, "by": by}, now(),
                           None, None, None, None)  # fmt: skip
            self.store.add_operation(op)
            running = self.running[exam_id] = _Running(op)
        self.emit(exam_id, {"type": "operation_started", "operation": op.id, "kind": kind, "params": op.params})
        assert self._nursery is not None, "the service is not serving"
        self._nursery.start_soon(self._run, row, running, how)
        return op

    def _not_busy(self, exam_id: str) -> None:
        """Busy when an operation of the exam runs (here, or on the workers)."""
        if (busy := self.running.get(exam_id)) is not None:
            raise Busy(f"{busy.op.kind} {busy.op.id} is running on exam {exam_id}; stop it or wait")
        ops = self.store.operations(exam_id)
        if ops and ops[-1].state == "running":
            raise Busy(f"{ops[-1].kind} {ops[-1].id} is running on exam {exam_id}; stop it or wait")

    def _dispatch(self, row: ExamRow, kind: str, params: dict[str, Any], how: dict[str, Any], by: str) -> Operation:
        """A run or verify as work for the workers: one work row per environment."""
        assert isinstance(self.store, PostgresStore)
        section = Section.STEPS if kind == "run" else Section.VERIFY
        if "transfer" in how:  # the link is each worker's: `chaosrun worker --transfer`
            raise Invalid(f"{kind}: with --db each worker sends binaries as its own --transfer says")
        resumes = self._interrupted_dispatch(row.id) if how.pop("resume", False) else None
        exam = self.load(row)  # lints here: a scenario that no longer lints is refused at once
        seed = how.get("seed")
        if resumes is not None:
            job = self.store.job_of(resumes)
            assert job is not None
            if seed is not None and seed != int(job["seed"]):
                raise Invalid(f"seed {seed}: run {resumes} ran with seed {job['seed']}, which resume keeps")
            seed = int(job["seed"])
        if seed is None and how.get("limit"):
            seed = self._past_seed(row.id)
        plan = build_plan(exam.scenario, seed=seed if seed is not None else new_seed(), inventory=exam.inventory)
        names = [e.name for e in plan.environments]
        if how.get("limit"):
            from ..limit import select

            names = select(names, self._db_sets(row.id, how["limit"]), row.folder / "audit")
            chosen = set(names)
            plan = dataclasses.replace(plan, environments=tuple(e for e in plan.environments if e.name in chosen))
        with self._lock:
            self._not_busy(row.id)
            op = Operation("op-" + secrets.token_hex(6), row.id, kind, "running", {**params, "by": by}, now(),
                           None, None, None, None)  # fmt: skip
            started = {"type": "operation_started", "operation": op.id, "kind": kind, "params": op.params}
            steps = api.plan_steps(plan, section)
            run = {"type": "run_started", "operation": op.id, "section": section.value, "audit": None,
                   "environments": names, "steps": steps}  # fmt: skip
            self.store.dispatch(op, section=section.value, seed=plan.seed, strict=bool(how.get("strict")),
                                environments=names, resumes=resumes, events=[started, run])  # fmt: skip
        self._catch_up(row.id)
        return op

    def _interrupted_dispatch(self, exam_id: str) -> str:
        assert isinstance(self.store, PostgresStore)
        for op in reversed(self.store.operations(exam_id)):
            if op.kind == "run":
                if op.state in ("interrupted", "stopped") and self.store.job_of(op.id) is not None:
                    return op.id
                break
        raise Invalid(f"exam {exam_id} has no interrupted run to resume (its newest run ended)")

    def _graded(self, exam_id: str) -> dict[str, Any] | None:
        """The report of the exam's newest run or verify that ended."""
        for op in reversed(self.store.operations(exam_id)):
            if op.kind in ("run", "verify") and op.state != "running":
                return self.store.report(op.id)
        return None

    def _past_seed(self, exam_id: str) -> int | None:
        report = self._graded(exam_id)
        seed = report.get("seed") if report else None
        return seed if isinstance(seed, int) else None

    def _db_sets(self, exam_id: str, pattern: str) -> str:
        """``pattern`` with ``@failed`` and ``@suspect`` as the names the database's newest
        report gives them (the workers' audit logs are not here to read them from)."""
        items = [i.strip() for i in pattern.split(",")]
        if not any(i in ("@failed", "@suspect") for i in items):
            return pattern
        report = self._graded(exam_id) or {}
        envs = report.get("environments") or []
        sets = {
            "@failed": [e["name"] for e in envs if e.get("ok") is not True],
            "@suspect": [e["name"] for e in envs if e.get("integrity") == "suspect"],
        }
        out = [name for i in items for name in sets.get(i, [i])]
        if not any(out):
            from ..limit import LimitError

            raise LimitError(f"--limit {pattern}: selects no environment (the past run has none of them)")
        return ",".join(out)

    def _interrupted_run(self, exam_id: str) -> Path:
        for op in reversed(self.store.operations(exam_id)):
            if op.kind == "run":
                if op.state in ("interrupted", "stopped") and op.audit:
                    return Path(op.audit)
                break
        raise Invalid(f"exam {exam_id} has no interrupted run to resume (its newest run ended)")

    def stop(self, exam_id: str, op_id: str) -> Operation:
        if isinstance(self.store, PostgresStore) and self._stop_dispatched(exam_id, op_id):
            return self.store.operation(op_id) or self.exam_op(exam_id, op_id)
        running = self.running.get(exam_id)
        if running is None or running.op.id != op_id:
            if (op := self.store.operation(op_id)) is None or op.exam != exam_id:
                raise NotFound(f"no operation {op_id} on exam {exam_id}")
            return op  # over already: nothing to stop
        running.stop()
        return running.op

    def _stop_dispatched(self, exam_id: str, op_id: str) -> bool:
        """Ask the workers to stop a dispatched operation; False when it is not one (or over)."""
        assert isinstance(self.store, PostgresStore)
        op = self.store.operation(op_id)
        if op is None or op.exam != exam_id or op.state != "running" or not self.store.stop_job(op_id):
            return False
        self._catch_up(exam_id)
        return True

    def exam_op(self, exam_id: str, op_id: str) -> Operation:
        if (op := self.store.operation(op_id)) is None or op.exam != exam_id:
            raise NotFound(f"no operation {op_id} on exam {exam_id}")
        return op

    async def _run(self, row: ExamRow, running: _Running, how: dict[str, Any]) -> None:
        op = running.op
        state, ok, error, report = "failed", False, None, None
        try:
            report = await trio.to_thread.run_sync(self._blocking, row, running, how)
            interrupted = bool(report.get("interrupted"))
            ok = bool(report.get("ok", report.get("restored")))
            state = ("stopped" if running.stop_asked else "interrupted") if interrupted else "done"
        except ScenarioErrors as exc:
            error = "; ".join(str(e) for e in exc.errors)
        except ChaosrunError as exc:
            error = str(exc)
        except Exception as exc:  # the server goes on; the operation says what broke
            traceback.print_exc(file=sys.stderr)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.running.pop(op.exam, None)
            self.store.end_operation(op.id, state, ok=ok, error=error, report=report)
            self.emit(op.exam, {"type": "operation_ended", "operation": op.id, "kind": op.kind, "state": state,
                                "ok": ok, "error": error})  # fmt: skip

    def _blocking(self, row: ExamRow, running: _Running, how: dict[str, Any]) -> dict[str, Any]:
        """The operation itself, in a worker thread."""
        op = running.op
        exam = self.load(row)

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "run_started":
                self.store.set_audit(op.id, event["audit"])
            self.emit_from_thread(op.exam, {**event, "operation": op.id})

        def on_start(stop: Callable[[], None]) -> None:
            running.stoppers.append(stop)
            if running.stop_asked:
                stop()

        if op.kind == "restore":
            return api.restore_exam(exam, on_event=on_event, on_start=on_start, **how).as_json()
        if op.kind == "watch":
            return api.watch_exam(exam, on_event=on_event, on_start=on_start, **how)[1]
        section = Section.STEPS if op.kind == "run" else Section.VERIFY
        return api.run_exam(exam, section, on_event=on_event, on_start=on_start, **how)

    # -- events

    def emit(self, exam_id: str, event: dict[str, Any]) -> None:
        """Store an event and send it on (from the server's loop)."""
        stored = self.store.append_event(exam_id, event)
        if self.dispatching:
            self._catch_up(exam_id)
        else:
            self._publish(exam_id, stored)

    def emit_from_thread(self, exam_id: str, event: dict[str, Any]) -> None:
        stored = self.store.append_event(exam_id, event)
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                if self.dispatching:
                    self._token.run_sync_soon(self._catch_up, exam_id)
                else:
                    self._token.run_sync_soon(self._publish, exam_id, stored)

    def _catch_up(self, exam_id: str) -> None:
        """Send on the exam's events the database has and this server has not sent, in
        ``seq`` order (from the server's loop): the workers' and its own alike."""
        after = self._published.get(exam_id, 0)
        for event in self.store.events(exam_id, after):
            self._published[exam_id] = event["seq"]
            self._publish(exam_id, event)

    def _publish(self, exam_id: str, event: dict[str, Any]) -> None:
        self.rooms.setdefault(exam_id, Room()).apply(event)
        for channel in list(self._subscribers.get(exam_id, ())):
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # too slow to follow (or gone): it reconnects and replays from its last id
                self._subscribers[exam_id].discard(channel)
                channel.close()

    def subscribe(self, exam_id: str) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](10_000)
        self._subscribers.setdefault(exam_id, set()).add(send)
        return send, receive

    def unsubscribe(self, exam_id: str, channel: trio.MemorySendChannel[Any]) -> None:
        self._subscribers.get(exam_id, set()).discard(channel)
        channel.close()


def _quiet(line: str) -> None:
    pass


def _state(last: Operation | None) -> str:
    """An exam's state from its newest operation."""
    if last is None:
        return "created"
    if last.state == "running":
        return "busy"
    if last.state in ("interrupted", "stopped", "failed"):
        return "interrupted" if last.state != "failed" else "failed"
    return {"run": "ran", "verify": "verified", "restore": "restored", "watch": "watched"}[last.kind]


def _checked(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The operation's keyword arguments for :mod:`chaosrun.api`, or Invalid."""
    if kind not in PARAMS:
        raise NotFound(f"no operation {kind!r}: one of {', '.join(KINDS)}")
    known = PARAMS[kind]
    how: dict[str, Any] = {}
    for name, value in params.items():
        if name not in known:
            raise Invalid(f"{kind} takes no parameter {name!r} (it takes: {', '.join(known)})")
        want = known[name][0]
        if value is None:
            continue
        if not isinstance(value, want) or (isinstance(value, bool) and want in (int, (str, int, float))):
            raise Invalid(f"{kind}: {name} must be {_type_name(want)}, not {value!r}")
        how[name] = value
    if kind == "watch":
        for name, default in (("interval", 30.0), ("until", 3600.0)):
            value = how.get(name, default)
            seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
            if seconds is None or not 0 < seconds <= 7 * 86400:
                raise Invalid(f"watch: {name} must be a duration such as 30s or 2h (up to 7 days), not {value!r}")
            how[name] = seconds
    if isinstance(how.get("seed"), int) and not 0 <= how["seed"] < 2**63:
        raise Invalid(f"{kind}: seed must be from 0 to 2**63-1")
    if "limit" in how and not how["limit"].strip():
        raise Invalid(f"{kind}: limit is empty")
    if "transfer" in how and how["transfer"] not in TRANSFERS:
        raise Invalid(f"{kind}: transfer must be one of {', '.join(TRANSFERS)}, not {how['transfer']!r}")
    return how


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))
