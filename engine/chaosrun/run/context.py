"""Run stage, shared state: what a run's steps share (``RunContext``) and what one
environment's steps share (``EnvState``: a connection per target host, outcomes by step)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import trio

from ..plan import EnvPlan, Plan, PlannedStep
from ..scenario import MonitorSettings, TargetSpec, Transfer
from .audit import AuditLog
from .builds import Builds
from .connection import Connection, Connector, TargetError
from .integrity import Signal
from .model import RunOptions, StepFailed, StepOutcome
from .transfer import Links

MAX_UPLOADS = 16  # binaries being copied at once, across all environments (memory bound)


@dataclass(frozen=True)
class RunContext:
    """What every step of a run shares; made once by ``run_plan``."""

    plan: Plan
    options: RunOptions
    audit: AuditLog
    builds: Builds
    connector: Connector
    run_id: str
    dial_ip: str  # the IP literal a binary dials in direct callback mode
    uploads: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(MAX_UPLOADS))
    # environment -> program label -> ("PATH sha256", step): the programs each environment's
    # binaries hashed, compared across environments at the end (integrity.program_outliers)
    programs: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    links: Links = field(default_factory=Links)  # what uploads measured of each target's link (transfer: auto)

    @property
    def monitor(self) -> MonitorSettings:
        return self.plan.scenario.monitor

    @property
    def transfer(self) -> Transfer:
        """How binaries travel: ``--transfer``, else the scenario's ``monitor.transfer``."""
        return self.options.transfer or self.monitor.transfer


def _host_key(target: TargetSpec) -> tuple[str, int, str]:
    return (target.host, target.port, target.user)


class EnvState:
    """One environment's shared state: connections by host, outcomes by step.

    Connections are entered into ``stack``, which the environment's task owns: they close
    when its section is over.
    """

    def __init__(self, ctx: RunContext, plan: EnvPlan, stack: AsyncExitStack) -> None:
        self.ctx = ctx
        self.plan = plan
        self.name = plan.name
        self._stack = stack
        self._locks: dict[tuple[str, int, str], trio.Lock] = {}
        self._conns: dict[tuple[str, int, str], Connection | TargetError] = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.finished: dict[str, trio.Event] = {}
        self.signals: list[Signal] = []
        self.down: dict[tuple[str, int, str], str] = {}  # targets that did not come back (reboot)
        self._uploaded: set[tuple[tuple[str, int, str], str]] = set()
        self.sensor_baseline: dict[str, str] | None = None  # integrity.sensor_baseline of the first result

    async def connection(self, target: TargetSpec) -> Connection:
        """The target's connection, opened by the first step that needs it.

        Raises:
            StepFailed: it could not be opened (and will not be tried again this run,
                unless a step ``forget``s it).
        """
        key = _host_key(target)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            if key not in self._conns:
                label = f"{target.user}@{target.host}:{target.port}"
                await self.ctx.audit.sync()  # a deferred step_start is on disk before we connect
                try:
                    conn = await self._stack.enter_async_context(
                        self.ctx.connector.open_connection(target, connect_timeout=self.ctx.options.connect_timeout)
                    )
                except TargetError as exc:
                    self._conns[key] = exc
                    await self.ctx.audit.record("connect_failed", env=self.name, host=label, error=exc.reason)
                else:
                    self._conns[key] = conn
                    await self.ctx.audit.record(
                        "connect",
                        env=self.name,
                        host=label,
                        connector=self.ctx.connector.name,
                        **conn.audit_fields,
                        insecure=target.insecure,
                    )
        found = self._conns[key]
        if isinstance(found, TargetError):
            raise StepFailed(f"{self.ctx.connector.name}: {found}")
        return found

    def flag(self, step: PlannedStep, signal: str, detail: str) -> None:
        """Note something an honest run would not show; the environment becomes suspect.

        The audit record rides with the step's next one (deferred): a signal is never lost,
        and costs no fsync of its own.
        """
        found = Signal(step.id, signal, detail)
        if found not in self.signals:
            self.signals.append(found)
            self.ctx.audit.defer("signal", env=self.name, **found.as_json())

    def first_upload(self, target: TargetSpec) -> bool:
        """True the first time a step of this environment uploads to ``target``'s tmp_dir."""
        key = (_host_key(target), target.tmp_dir)
        first = key not in self._uploaded
        self._uploaded.add(key)
        return first

    def down_reason(self, target: TargetSpec) -> str | None:
        """Why ``target`` is not there to be graded (it did not come back from a reboot)."""
        return self.down.get(_host_key(target))

    def forget(self, target: TargetSpec) -> None:
        """Drop a broken connection, so the next step on this host connects anew."""
        self._conns.pop(_host_key(target), None)

    async def remove_binary(self, target: TargetSpec, conn: Connection, path: str) -> str | None:
        """Delete ``path`` on the target and look that it is gone, over a fresh connection
        if ``conn`` broke.

        Returns:
            None when nothing is left at ``path``; else why it is still there (an
            append-only folder, a connection that would not come back...).
        """
        try:
            return await _remove_and_look(conn, path)
        except TargetError:
            self.forget(target)
        try:
            connect_timeout = self.ctx.options.connect_timeout
            async with self.ctx.connector.open_connection(target, connect_timeout=connect_timeout) as fresh:
                return await _remove_and_look(fresh, path)
        except TargetError as exc:
            return f"not removed: {exc.reason}"

    def scope(self, step: PlannedStep) -> dict[str, Any]:
        """The names a step's ``when`` and ``with:`` templates see."""
        return {
            "vars": self.ctx.plan.scenario.vars,
            "env": {"name": self.name, "vars": self.plan.vars},
            "target": step.target.as_scope() if step.target else {},
            "steps": {sid: o.as_scope() for sid, o in self.outcomes.items()},
        }


async def _remove_and_look(conn: Connection, path: str) -> str | None:
    try:
        await conn.remove(path)
    except TargetError as exc:
        if await conn.exists(path):
            return f"still there: {exc.reason}"
        raise
    if await conn.exists(path):  # e.g. an append-only folder where the unlink "succeeded"
        return "still there after its removal"
    return None
