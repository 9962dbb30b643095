"""Run stage, reboot: restart an environment's targets and wait until each answers again
with a new boot id, so that ``chaosrun verify --reboot`` grades what survives a reboot.

A target that does not come back in time is a valid result, not a crash (a broken fstab
does that): its probes get 0 points with the reason. Every reboot is in the audit log.
"""

from __future__ import annotations

from contextlib import suppress

import trio

from ..scenario import TargetSpec
from .connection import TargetError
from .context import EnvState
from .model import StepFailed

REBOOT_COMMAND = "systemctl reboot || reboot"
REBOOT_SENT_TIMEOUT = 15.0  # seconds for the reboot command itself; the connection may just drop
POLL_INTERVAL = 2.0  # seconds between two attempts to reach the rebooting target


def _own_boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _label(target: TargetSpec) -> str:
    return f"{target.user}@{target.host}:{target.port}"


async def reboot_target(env: EnvState, target: TargetSpec, timeout: float) -> str | None:
    """Reboot ``target`` and wait until it answers with a new boot id.

    Returns:
        None when it came back; else why its probes get no points.
    """
    ctx = env.ctx
    label = _label(target)
    try:
        conn = await env.connection(target)
        before = (await conn.facts()).boot_id
    except (StepFailed, TargetError) as exc:
        return f"could not be reached to reboot it: {exc}"
    if before is None:
        return "has no boot id (/proc/sys/kernel/random/boot_id), so a reboot cannot be proven"
    if before == _own_boot_id():
        return "is the monitor's own machine (same boot id): chaosrun does not reboot the monitor"
    await ctx.audit.record("reboot", env=env.name, host=label, boot_id=before)
    started = trio.current_time()
    with suppress(TargetError):  # the connection usually drops under the command
        await conn.run(REBOOT_COMMAND, timeout=REBOOT_SENT_TIMEOUT)
    env.forget(target)
    deadline = started + timeout
    while (left := deadline - trio.current_time()) > 0:
        await trio.sleep(min(POLL_INTERVAL, left))
        connect_timeout = max(1.0, min(ctx.options.connect_timeout, deadline - trio.current_time()))
        now: str | None = None
        with trio.move_on_after(connect_timeout + 5), suppress(TargetError):
            async with ctx.connector.open_connection(target, connect_timeout=connect_timeout) as fresh:
                now = (await fresh.facts()).boot_id
        if now is not None and now != before:
            seconds = round(trio.current_time() - started, 1)
            await ctx.audit.record("rebooted", env=env.name, host=label, boot_id=now, seconds=seconds)
            return None
    reason = f"did not come back after reboot within {timeout:g} s"
    await ctx.audit.record("reboot_failed", env=env.name, host=label, reason=reason)
    return reason


async def reboot_all(env: EnvState, timeout: float) -> None:
    """Reboot every target of the environment at once; note the ones that stay down."""

    async def one(target: TargetSpec) -> None:
        reason = await reboot_target(env, target, timeout)
        if reason is not None:
            env.down[(target.host, target.port, target.user)] = reason

    unique = {(t.host, t.port, t.user): t for t in env.plan.targets.values()}
    async with trio.open_nursery() as nursery:
        for target in unique.values():
            nursery.start_soon(one, target)
