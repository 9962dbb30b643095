"""Run stage: the baseline before a run's chaos, and the guard pass after grading.

Both deploy chaosrun's internal ``guard`` module (read-only) to a machine like any step:
one-time token, authenticated callback, binary gone afterwards. Neither is a step of the
scenario: they are not in the report's steps, only in the audit log (``baseline``,
``guard_pass``, ``shortcut``) and in an environment's ``shortcuts``. What is compared,
and why it is a shortcut, is ``chaosrun.shortcuts``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import trio

from ..expr import EvalError, render_static
from ..plan import PlannedStep, machine_step
from ..scenario import Section, StepKind, TargetSpec
from ..shortcuts import MODULE, Faults, compare, posture_spec
from .connection import TargetError
from .context import EnvState
from .deploy import module_attempt
from .model import EnvOutcome, StepFailed

TIMEOUT = 120.0  # seconds one posture may take (a big /etc tree, a slow nft)


def _step(role: str, target: TargetSpec, section: Section, params: Mapping[str, Any]) -> PlannedStep:
    return machine_step(
        f"guard:{role}", target, MODULE, params, kind=StepKind.PROBE, section=section, timeout=TIMEOUT, level=0
    )


async def _posture(env: EnvState, step: PlannedStep) -> tuple[dict[str, Any] | None, str]:
    """What the guard module reports on ``step``'s machine, or (None, why not)."""
    assert step.target is not None
    if (down := env.down_reason(step.target)) is not None:
        return None, f"{step.target.host} {down}"
    why = f"timed out after {step.timeout:g}s"
    message: dict[str, Any] | None = None
    with trio.move_on_after(step.timeout):
        try:
            message = await module_attempt(env, step, step.params)
        except* StepFailed as group:
            why = str(group.exceptions[0])
        except* TargetError as group:
            env.forget(step.target)
            why = str(group.exceptions[0])
    if message is None:
        return None, why
    if not message.get("ok"):
        return None, f"guard module failed: {message.get('error') or 'no reason given'}"
    posture = dict(message.get("result") or {})
    if isinstance(posture.get("listeners"), list):
        posture["listeners"] = [e for e in posture["listeners"] if not _ours(env, e)]
    return posture, ""


def _ours(env: EnvState, listener: Any) -> bool:
    """A socket of chaosrun's own: the monitor's callback listener when the monitor runs
    on the target (tests, a lab on the same machine), or the SSH tunnel's end on the
    target's loopback in ``callback: tunnel`` mode."""
    if not isinstance(listener, dict):
        return True
    if listener.get("pid") == os.getpid():
        return True
    loopback = str(listener.get("address", "")).startswith(("127.", "::1", "::ffff:127."))
    sshd = str(listener.get("comm")) == "sshd" or str(listener.get("exe", "")).endswith("/sshd")
    return env.ctx.monitor.callback == "tunnel" and loopback and sshd


async def take_baselines(env: EnvState, steps: tuple[PlannedStep, ...]) -> None:
    """Before the first chaos step: each machine's posture, for the verify that follows.

    A machine whose baseline cannot be taken is recorded so (``baseline_failed``) and the
    run goes on: its shortcuts will not be looked for.
    """
    guards = env.ctx.plan.scenario.guards
    params: dict[str, list[Mapping[str, Any]]] = {}
    for step in steps:
        if step.kind is not StepKind.CHAOS or step.target is None:
            continue
        try:
            rendered = render_static(step.params, env.scope(step))
        except EvalError:  # it reads a result not there yet: what is known of it is enough
            rendered = {k: v for k, v in step.params.items() if isinstance(v, str | list)}
        params.setdefault(step.target.role, []).append(rendered)
    for guard in guards:
        params.setdefault(guard.target, [])
    for role, role_params in params.items():
        target = env.plan.targets.get(role)
        if target is None:
            continue
        spec = posture_spec(role_params, [g for g in guards if g.target == role])
        posture, why = await _posture(env, _step(role, target, Section.STEPS, spec))
        if posture is None:
            await env.ctx.audit.record("baseline_failed", env=env.name, role=role, reason=why)
        else:
            await env.ctx.audit.record("baseline", env=env.name, role=role, spec=spec, posture=posture)


async def guard_pass(env: EnvState, outcome: EnvOutcome) -> None:
    """After grading: each machine's posture against its baseline; the shortcuts found go
    into ``outcome`` and the audit log. ``outcome.guarded`` says why not, when not."""
    baseline = env.ctx.options.baseline
    if baseline is None:
        return
    mine = {role: b for (name, role), b in baseline.postures.items() if name == env.name}
    if not mine:
        outcome.guarded = f"no baseline in run {baseline.run_id}"
        return
    guards = env.ctx.plan.scenario.guards
    failures = []
    for role, taken in sorted(mine.items()):
        target = env.plan.targets.get(role)
        if target is None:
            failures.append(f"{role}: not in the inventory")
            continue
        posture, why = await _posture(env, _step(role, target, Section.VERIFY, dict(taken.get("spec") or {})))
        if posture is None:
            failures.append(f"{role}: {why}")
            await env.ctx.audit.record("guard_failed", env=env.name, role=role, reason=why)
            continue
        found = compare(
            role,
            taken["posture"],
            posture,
            [g for g in guards if g.target == role],
            baseline.faults.get((env.name, role), Faults()),
        )
        env.ctx.audit.defer("guard_pass", env=env.name, role=role, baseline_run=baseline.run_id, posture=posture)
        for s in found:
            env.ctx.audit.defer("shortcut", env=env.name, **s.as_json())
        await env.ctx.audit.sync()
        outcome.shortcuts.extend(found)
    outcome.guarded = "; ".join(failures) or "ok"
