"""``chaosrun worker --db URL``: one more monitor sharing the exams a ``chaosrun serve --db``
keeps in PostgreSQL. ``docs/scale.md`` in the project says how a fleet is laid out.

A worker claims environments of operations (:meth:`~.pg.PostgresStore.claim`, ``FOR
UPDATE SKIP LOCKED``), up to ``--parallel`` at a time, and runs them with the engine of
``chaosrun run``: the claims of one operation taken together are one run (one
:func:`chaosrun.session.run_section` in a thread of its own) with an audit log of its own
under ``--audit``, signed with this machine's key. What they do goes to the database as it
happens -- each step's start, each step that ended with its result, each environment's end
-- as the events the server's stream and proctor page show.

A heartbeat renews the worker's leases every third of ``--lease``. A worker that dies
(``kill -9``, a machine lost) stops renewing; once its leases run out another worker claims
its environments and resumes them as ``chaosrun run --resume`` resumes a run, from the
database instead of an audit log: a step with a result row ended and is not run again; the
step that was under way runs again (chaos modules are idempotent: a fault already in place
is found so). The takeover's audit log names the dead worker's log it goes on from
(``resumes``), so the logs of all machines, put side by side, chain as a resumed run's do.

A worker that finds an environment taken from it (its lease ran out while it was paused)
stops that run at once; one that is stopped (SIGINT, SIGTERM) ends its steps under way as
Ctrl-C does and gives back what it had not finished, for another worker to take up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import api
from .._spans import ScenarioErrors
from ..errors import ChaosrunError
from ..plan import Plan, PlannedStep, build_plan
from ..resume import INTERRUPTED_REASONS, Interrupted
from ..run.model import EnvOutcome, RunOptions, StepOutcome
from ..scenario import Section, Transfer
from .pg import Claim, PostgresStore
from .store import StoreError

__all__ = ["Worker", "default_name", "run_worker"]

Note = Callable[[str], None]


def default_name() -> str:
    """``HOST-PID``: unique among the workers of a fleet."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]


@dataclass
class Batch:
    """The claims of one operation run together: one run, one audit log."""

    claims: list[Claim]
    done: dict[str, dict[str, dict[str, Any]]]  # env -> step -> what ended (the database's step_results)
    run_id: str
    pending: set[str] = field(default_factory=set)  # environments not ended yet
    stop_reason: str | None = None  # "operation" (asked to stop), "shutdown", "lost" (taken over)
    stopper: Callable[[], None] | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def first(self) -> Claim:
        return self.claims[0]

    def started(self, stop: Callable[[], None]) -> None:
        with self.lock:
            self.stopper = stop
            asked = self.stop_reason is not None
        if asked:
            stop()

    def stop(self, reason: str) -> None:
        with self.lock:
            if self.stop_reason is not None:
                return
            self.stop_reason = reason
            stop = self.stopper
        if stop is not None:
            stop()


class _DbReporter:
    """A batch's progress, written to the database as the server's events."""

    def __init__(self, worker: Worker, batch: Batch) -> None:
        self.worker = worker
        self.batch = batch
        self.store = worker.store

    def _event(self, call: Callable[[api.EventReporter], None]) -> dict[str, Any] | None:
        """The event :class:`chaosrun.api.EventReporter` makes of a call (None: one of
        chaosrun's own steps, which has none)."""
        out: list[dict[str, Any]] = []
        call(api.EventReporter(out.append))
        if not out:
            return None
        return {**out[0], "operation": self.batch.first.operation, "worker": self.worker.name}

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None:
        envs = [e.name for e in plan.environments]
        self.store.set_claim_audit(self.batch.first.operation, envs, self.worker.name, str(audit_path))

    def step_started(self, env: str, step: PlannedStep) -> None:
        event = self._event(lambda r: r.step_started(env, step))
        if event is not None:
            self._held(env, event)

    def step_finished(self, env: str, outcome: StepOutcome) -> None:
        if outcome.id in self.batch.done.get(env, {}):
            return  # ended under an earlier claim: its row and event are there
        event = self._event(lambda r: r.step_finished(env, outcome))
        if event is None:
            return
        if outcome.reason in INTERRUPTED_REASONS:  # did not end: a takeover runs it again
            if self.batch.stop_reason == "operation":
                self._held(env, event)
            return
        row = {
            "id": outcome.id,
            "status": outcome.status.value,
            "reason": outcome.reason,
            "duration": outcome.duration,
            "attempts": outcome.attempts,
            "points": outcome.points,
            "result": outcome.result,
            "changes": outcome.changes,
        }
        first = self.batch.first
        if not self.store.record_step(
            first.operation, first.exam, env, self.worker.name, self.batch.run_id, row, event
        ):
            self._lost(env)

    def env_finished(self, env: EnvOutcome) -> None:
        self.batch.pending.discard(env.name)
        self.worker.wake()
        if _interrupted(env) and self.batch.stop_reason != "operation":
            return  # given back: no end to show
        event = self._event(lambda r: r.env_finished(env))
        if event is not None:
            self._held(env.name, event)

    def _held(self, env: str, event: dict[str, Any]) -> None:
        first = self.batch.first
        if not self.store.emit_held(first.operation, first.exam, env, self.worker.name, event):
            self._lost(env)

    def _lost(self, env: str) -> None:
        self.worker.note(f"{self.batch.first.operation} {env}: taken over by another worker; stopping this run")
        self.batch.stop("lost")


def _interrupted(env: EnvOutcome) -> bool:
    return any(s.reason in INTERRUPTED_REASONS for s in env.steps)


class Worker:
    """Claims and runs environments until :meth:`stop`.

    Args:
        store: the PostgreSQL store shared with ``chaosrun serve --db``.
        name: unique in the fleet (it is who holds a claim).
        audit: the audit folder: logs of exam X go to ``AUDIT/X/``; or a function of the
            exam's id giving its folder (the server's own worker: the exam's folder).
        parallel: environments run at once.
        lease: seconds a claim lasts without a heartbeat (one every third of it).
        key_path: the key that signs this worker's audit logs (None: the monitor's own).
        alone_only: claim only while no other worker is attached (the server's own worker).
        transfer: how this worker sends module binaries (``--transfer``; None: the
            scenario's ``monitor.transfer``): a property of this machine's links.
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        name: str,
        audit: Path | Callable[[str], Path],
        parallel: int = 20,
        lease: float = 30.0,
        key_path: Path | None = None,
        alone_only: bool = False,
        poll: float = 0.5,
        note: Note = api.note_on_stderr,
        transfer: Transfer | None = None,
    ) -> None:
        self.store = store
        self.transfer = transfer
        self.name = name
        self.audit = audit
        self.parallel = max(1, parallel)
        self.lease = lease
        self.key_path = key_path
        self.alone_only = alone_only
        self.poll = poll
        self.note = note
        self.batches: list[Batch] = []
        self._exams: dict[str, api.Exam] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Event()  # the runs have ended: the heartbeat stops

    # -- life

    def stop(self) -> None:
        """Stop claiming; the runs under way end their steps and give back the rest (any thread)."""
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        """Claim and run until :meth:`stop`; then wait for the runs under way."""
        if not self.alone_only:
            self.store.register_worker(self.name, socket.gethostname(), os.getpid(), self.parallel, self.lease)
            self.note(
                f"worker {self.name} attached to {self.store.where}: up to {self.parallel} environments at once, "
                f"lease {self.lease:g}s"
            )
        heartbeat = threading.Thread(target=self._heartbeat, name=f"heartbeat {self.name}", daemon=True)
        heartbeat.start()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed = self._claim()
                except StoreError as exc:
                    self.note(f"worker {self.name}: {exc}; trying again")
                    claimed = False
                    self._stopping.wait(self.poll * 4)
                if not claimed:
                    self._wake.wait(self.poll)
                self._stops()
        finally:
            for batch in self._running():
                batch.stop("shutdown")
            for batch in list(self.batches):
                if batch.thread is not None:
                    batch.thread.join()
            self._done.set()
            heartbeat.join(timeout=5)
            if not self.alone_only:
                with contextlib.suppress(StoreError):
                    self.store.unregister_worker(self.name)

    def _stops(self) -> None:
        """Stop the runs of operations asked to stop (each poll: a stop takes effect at once)."""
        running = self._running()
        try:
            stopping = self.store.stopping(sorted({b.first.operation for b in running}))
        except StoreError:
            return
        for batch in running:
            if batch.first.operation in stopping:
                batch.stop("operation")

    def _running(self) -> list[Batch]:
        with self._lock:
            self.batches = [b for b in self.batches if b.thread is None or b.thread.is_alive()]
            return list(self.batches)

    def _claim(self) -> bool:
        free = self.parallel - sum(len(b.pending) for b in self._running())
        if free <= 0:
            return False
        if self.alone_only and self.store.workers():
            return False
        claims = self.store.claim(self.name, free, self.lease)
        if not claims:
            return False
        for batch in self._batches(claims):
            batch.thread = threading.Thread(
                target=self._run_batch, args=(batch,), name=f"run {batch.run_id}", daemon=True
            )
            batch.thread.start()  # before it is listed: a batch not alive is taken for ended
            with self._lock:
                self.batches.append(batch)
        return True

    def _batches(self, claims: list[Claim]) -> list[Batch]:
        """The claims of each operation, apart by the log their ended steps are in."""
        groups: dict[tuple[str, str | None], list[Claim]] = {}
        done: dict[str, dict[str, dict[str, Any]]] = {}
        by_op: dict[str, list[Claim]] = {}
        for c in claims:
            by_op.setdefault(c.operation, []).append(c)
        for op, mine in by_op.items():
            ended = self.store.ended_steps(op, [c.env for c in mine])
            for c in mine:
                if c.claims > 1:
                    self.note(f"{op} {c.env}: taken over from {c.before or 'a worker that gave it back'}")
                done[f"{op}\0{c.env}"] = ended.get(c.env, {})
                groups.setdefault((op, c.previous if ended.get(c.env) else None), []).append(c)
        out = []
        for (op, _), group in groups.items():
            run_id = f"{op}-{_safe(self.name)}-{secrets.token_hex(3)}"
            batch = Batch(group, {c.env: done[f"{op}\0{c.env}"] for c in group}, run_id, {c.env for c in group})
            out.append(batch)
        return out

    def _heartbeat(self) -> None:
        """Renew the leases every third of one, until the runs under way have ended (also
        while stopping: until they have given back what they hold)."""
        while not self._done.wait(self.lease / 3):
            try:
                renewal = self.store.renew(self.name, self.lease)
            except StoreError as exc:
                self.note(f"worker {self.name}: heartbeat: {exc}")
                continue
            for batch in self._running():
                op = batch.first.operation
                if op in renewal.stopping:
                    batch.stop("operation")
                elif any((op, env) not in renewal.mine for env in list(batch.pending)):
                    self.note(f"{op}: a claim of this worker ran out and was taken over; stopping its run")
                    batch.stop("lost")

    # -- one batch

    def audit_dir(self, exam_id: str) -> Path:
        return self.audit(exam_id) if callable(self.audit) else self.audit / exam_id

    def _exam(self, exam_id: str) -> api.Exam:
        """The exam as the server loaded it: its files where this machine has the same
        ones, else the text the database keeps, written under the exam's audit folder."""
        with self._lock:
            if exam_id in self._exams:
                return self._exams[exam_id]
        row = self.store.exam(exam_id)
        if row is None:
            raise ChaosrunError(f"no exam {exam_id} in {self.store.where}")
        texts = self.store.exam_texts(exam_id)
        audit_dir = self.audit_dir(exam_id)
        if texts is None or (
            _same(row.scenario, texts.scenario) and (row.inventory is None or _same(row.inventory, texts.inventory))
        ):
            exam = api.load_exam(row.scenario, row.inventory, audit_dir=audit_dir, key_path=self.key_path, note=_quiet)
        else:
            exam = api.exam_from_text(
                texts.scenario, texts.inventory, audit_dir / "files", audit_dir=audit_dir, key_path=self.key_path
            )
        with self._lock:
            self._exams[exam_id] = exam
        return exam

    def _run_batch(self, batch: Batch) -> None:
        first = batch.first
        envs = [c.env for c in batch.claims]
        try:
            exam = self._exam(first.exam)
            plan, options = self._prepare(exam, batch)
            self.note(f"{first.operation}: {first.section} on {', '.join(envs)} (audit {options.audit_dir})")
            from ..reports import report_as_json
            from ..session import run_section

            report = report_as_json(run_section(plan, options, reporter=_DbReporter(self, batch)))
        except (ScenarioErrors, ChaosrunError) as exc:
            if isinstance(exc, StoreError):
                self.note(f"{first.operation}: {exc}: its leases run out and another worker takes it over")
                return
            error = "; ".join(str(e) for e in exc.errors) if isinstance(exc, ScenarioErrors) else str(exc)
            self.note(f"{first.operation}: {error}")
            for env in envs:
                self._finish(batch, env, "failed", ok=False, error=error)
            return
        except Exception as exc:  # a bug of ours: give the environments back, say what broke
            traceback.print_exc(file=sys.stderr)
            self.note(f"{first.operation}: {type(exc).__name__}: {exc}; its environments are given back")
            for env in envs:
                self._release(batch, env)
            return
        finally:
            batch.pending.clear()
            self.wake()
        graded = {e["name"]: e for e in report["environments"]}
        for env in envs:
            part = graded.get(env)
            if part is None:  # not in the inventory this machine loaded
                self._finish(batch, env, "failed", ok=False, error=f"{env}: not in the exam's inventory here")
            elif not any(s["reason"] in INTERRUPTED_REASONS for s in part["steps"]):
                self._finish(batch, env, "done", ok=bool(part["ok"]), report=part)
            elif batch.stop_reason == "operation":
                self._finish(batch, env, "stopped", ok=False, report=part)
            else:
                self._release(batch, env)

    def _prepare(self, exam: api.Exam, batch: Batch) -> tuple[Plan, RunOptions]:
        """The plan of the batch's environments (the picks made on the whole inventory, with
        the operation's seed) and its options: what ended under earlier claims as a resume."""
        first = batch.first
        plan = build_plan(exam.scenario, seed=first.seed, inventory=exam.inventory)
        envs = {c.env for c in batch.claims}
        plan = dataclasses.replace(plan, environments=tuple(e for e in plan.environments if e.name in envs))
        section = Section(first.section)
        resume = None
        if any(batch.done.values()):
            previous = Path(first.previous or first.operation)
            resume = Interrupted(
                path=previous,
                run_id=first.operation,
                resumes=previous.name.removesuffix(".jsonl"),
                seed=first.seed,
                scenario_sha256=exam.scenario.sha256,
                done=batch.done,
            )
        options = RunOptions(
            audit_dir=self.audit_dir(first.exam),
            section=section,
            parallel=len(plan.environments),
            key_path=self.key_path,
            strict=first.strict,
            run_id=batch.run_id,
            resume=resume,
            on_start=batch.started,
            transfer=self.transfer,
        )
        if section is Section.VERIFY:
            options = dataclasses.replace(options, baseline=_baseline(exam))
        return plan, options

    def _finish(self, batch: Batch, env: str, state: str, *, ok: bool, error: str | None = None,
                report: dict[str, Any] | None = None) -> None:  # fmt: skip
        first = batch.first
        events = []
        if report is not None:
            graded = {k: report.get(k) for k in ("ok", "points", "max_points", "integrity", "signals", "shortcuts",
                                                 "penalty", "zeroed")}  # fmt: skip
            events.append({"type": "env_graded", "env": env, **graded, "operation": first.operation,
                           "worker": self.name})  # fmt: skip
        try:
            if not self.store.finish(first.operation, first.exam, env, self.name, state, ok=ok, error=error,
                                     report=report, events=events):  # fmt: skip
                self.note(f"{first.operation} {env}: no longer this worker's; its end is not recorded")
        except StoreError as exc:
            self.note(f"{first.operation} {env}: {exc}")

    def _release(self, batch: Batch, env: str) -> None:
        try:
            self.store.release(batch.first.operation, env, self.name)
        except StoreError as exc:
            self.note(f"{batch.first.operation} {env}: {exc} (its lease runs out instead)")


def _same(path: str, text: str | None) -> bool:
    try:
        return Path(path).read_text() == text
    except (OSError, UnicodeDecodeError):
        return False


def _quiet(line: str) -> None:
    pass


def _baseline(exam: api.Exam) -> Any:
    """The baselines this machine took in the exam's newest run (its logs of that run's
    operation, merged): a verify's guard pass compares with them. An environment whose chaos
    another worker ran has none here (its guard pass says so)."""
    from ..restore import RestoreError, newest_run_log
    from ..run.audit import LogError
    from ..shortcuts import Baseline, load_baseline

    try:
        newest = newest_run_log(exam.audit_dir, exam.scenario.sha256)
    except RestoreError:
        return None
    op = "-".join(newest.name.split("-")[:2])  # op-XXXX: the operation's logs all start so
    postures: dict[tuple[str, str], Any] = {}
    faults: dict[tuple[str, str], Any] = {}
    for path in sorted(exam.audit_dir.glob(f"{op}-*.jsonl")):
        try:
            found = load_baseline(path)
        except (LogError, RestoreError):
            continue
        for key, posture in found.postures.items():
            postures.setdefault(key, posture)
        for key, fault in found.faults.items():
            faults.setdefault(key, fault)
    return Baseline(op, postures, faults) if postures else None


def run_worker(
    db: str,
    audit: Path,
    *,
    name: str | None,
    parallel: int,
    lease: float,
    key_path: Path | None,
    transfer: str | None = None,
) -> int:
    """``chaosrun worker``: claim and run until SIGINT or SIGTERM.

    Raises:
        UsageError: a bad option, or ``db`` is not PostgreSQL.
        StoreError: the database cannot be reached.
    """
    import signal

    from ..errors import UsageError
    from .db import open_store

    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: at least 1")
    if lease < 1:
        raise UsageError(f"--lease {lease:g}s: at least 1s (the heartbeat renews it every third of it)")
    from .._limits import check_fd_limit

    check_fd_limit(None, parallel, environments=parallel)  # an SSH connection and a listener per environment
    store = open_store(audit, db)
    if not isinstance(store, PostgresStore):
        store.close()
        raise UsageError("chaosrun worker --db wants a PostgreSQL URL (postgresql://...)")
    worker = Worker(
        store, name=name or default_name(), audit=audit, parallel=parallel, lease=lease, key_path=key_path,
        transfer=Transfer(transfer) if transfer else None,
    )  # fmt: skip

    def on_signal(signum: int, frame: Any) -> None:
        api.note_on_stderr(f"worker {worker.name}: stopping: the steps under way end, the rest is given back")
        worker.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        worker.run()
    finally:
        store.close()
    return 0
