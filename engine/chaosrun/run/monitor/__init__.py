"""Run stage, probes run from the monitor (``from: monitor``): no binary goes to the target.

The monitor reaches the target's address as any client on the network would: a connect
(``port_open``), an HTTP request (``http``), a DNS question (``dns``), an SSH login
(``ssh_login``). A candidate with root on the target can make any on-target probe say what
they like; from the monitor, a service has to really answer.

``run_monitor_probe`` returns the message shape a module's result has, so the runner
judges ``expect`` and awards points the same way for both. The step's timeout is the
caller's cancel scope; each probe also has its own ``timeout_ms``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...plan import PlannedStep
from ..context import EnvState
from ..model import StepFailed
from . import login, port, resolver, web
from .common import Answer, ProbeCall, ProbeError, host_port

__all__ = ["PROBES", "run_monitor_probe"]

#: Each probe run from the monitor: the port it talks to, and the probe itself.
PROBES: Mapping[str, tuple[Callable[[ProbeCall], int], Callable[[ProbeCall], Awaitable[Answer]]]] = {
    "port_open": (port.port_of, port.port_open),
    "http": (web.port_of, web.http),
    "dns": (resolver.port_of, resolver.dns_probe),
    "ssh_login": (login.port_of, login.ssh_login),
}


async def run_monitor_probe(env: EnvState, step: PlannedStep, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run one probe from the monitor against the step's target.

    Args:
        env: the environment (its audit log, its scenario's folder for relative paths).
        step: a probe step planned ``from: monitor``.
        params: its ``with:`` values, rendered.

    Returns:
        ``{"ok", "error", "result", "changes"}``, as a module reports it: ``ok`` is false
        only when the probe could not run at all (``error`` says why).

    Raises:
        StepFailed: the probe cannot run from the monitor (lint refuses such a step).
    """
    ctx = env.ctx
    if step.target is None or step.module is None or step.module not in PROBES:
        raise StepFailed(f"{step.module} cannot run from the monitor")
    port_of, probe = PROBES[step.module]
    call = ProbeCall(params, step.target, ctx.plan.scenario.base_dir)
    address = host_port(call.host, port_of(call))
    await ctx.audit.sync()  # the step's deferred step_start is on disk before we reach out
    ok, summary = False, "interrupted (step timeout or Ctrl-C)"
    try:
        try:
            answer = await probe(call)
        except ProbeError as exc:
            summary = f"could not run: {exc}"
            return {"ok": False, "error": str(exc), "result": {}, "changes": []}
        ok, summary = True, answer.summary
        return {"ok": True, "error": None, "result": answer.result, "changes": []}
    finally:
        # Durable with the runner's next record (result, retry or step_end).
        ctx.audit.defer(
            "monitor_probe", env=env.name, step=step.id, probe=step.module, address=address, ok=ok, summary=summary
        )
