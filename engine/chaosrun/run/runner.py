"""Run stage: carry out a Plan on real hosts. The only async code is in this package.

Scopes own resources (trio): one nursery per run, one per environment, one per step.
A step's timeout is its cancel scope; its listener, remote process and helpers live in
the step's nursery (``run.deploy``); cleanup (delete the binary, close the port, write the
audit record) runs in ``finally`` under a shielded, bounded scope, so it also happens on
timeout, failure and Ctrl-C.

This module is the orchestration: needs and when, retries and timeouts, one_of slots,
environments in parallel, the run's audit records. Targets are reached through the
connector of ``RunOptions`` (``run.connection``); SSH when none is given.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from ..build import Builder
from ..expr import EvalError, explain, render_static
from ..modules import catalogue, normalize_params
from ..plan import EnvPlan, Plan, PlannedStep, plan_as_json
from ..resume import done_outcome
from ..scenario import Origin, Section, StepKind
from .audit import AuditError, AuditLog, open_audit
from .builds import Builds
from .connection import Connector, TargetError
from .context import EnvState, RunContext
from .deploy import module_attempt
from .guards import guard_pass, take_baselines
from .integrity import program_outliers, sensor_trace, timing_outliers
from .listener import resolve_dial_address
from .model import EnvOutcome, RunError, RunOptions, RunReport, StepFailed, StepOutcome, StepStatus
from .reboot import reboot_all
from .signing import load_or_create_key

__all__ = ["RunOptions", "RunReport", "run_plan"]


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def default_connector() -> Connector:
    """SSH, imported on first use (it brings asyncssh)."""
    from .ssh import SshConnector

    return SshConnector()


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _judge(step: PlannedStep, message: dict[str, Any], scope: dict[str, Any]) -> tuple[StepStatus, str]:
    """A step's status from its module's message; ``expect`` sees ``scope`` and ``result``."""
    if not message.get("ok"):
        return StepStatus.FAILED, f"module failed: {message.get('error') or 'no reason given'}"
    if step.expect is not None:
        scope = {**scope, "result": message.get("result") or {}}
        try:
            verdict = step.expect.evaluate(scope)
        except EvalError as exc:
            return StepStatus.FAILED, f"expect: {exc}"
        if verdict is not True:
            observed = explain(step.expect.ast, scope)
            if observed and observed != f"{step.expect} = false":
                return StepStatus.FAILED, f"expect {step.expect} is false: {observed}"
            return StepStatus.FAILED, f"expect {step.expect} is false"
    return StepStatus.OK, ""


async def _run_step(env: EnvState, step: PlannedStep) -> StepOutcome:
    ctx = env.ctx
    outcome = StepOutcome.of(step, StepStatus.SKIPPED)
    # needs and when
    failed_needs = [s for s in step.after if step.explicit_needs and not env.outcomes[s].ok]
    if step.when is not None:
        try:
            verdict = step.when.evaluate(env.scope(step))
        except EvalError as exc:
            outcome.status, outcome.reason = StepStatus.FAILED, f"when: {exc}"
            return outcome
        if verdict is not True:
            outcome.reason = f"when {step.when} is false"
            return outcome
    elif failed_needs:
        outcome.reason = "needs " + ", ".join(f"{s} ({env.outcomes[s].status.value})" for s in failed_needs)
        return outcome
    if step.target is not None and (down := env.down_reason(step.target)) is not None:
        outcome.status, outcome.reason = StepStatus.FAILED, f"{step.target.host} {down}"
        return outcome
    if step.kind is StepKind.WAIT:
        await trio.sleep(step.wait or 0)
        outcome.status = StepStatus.OK
        outcome.duration = step.wait or 0
        return outcome
    try:
        params = render_static(step.params, env.scope(step))
    except EvalError as exc:
        outcome.status, outcome.reason = StepStatus.FAILED, f"with: {exc}"
        return outcome
    if (decl := catalogue().get(step.module or "")) is not None:
        try:
            params = normalize_params(decl, params)  # "30s" -> 30 where the module takes seconds
        except ValueError as exc:
            outcome.status, outcome.reason = StepStatus.FAILED, str(exc)
            return outcome
    ctx.options.reporter.step_started(env.name, step)
    # Durable before any action on the target: a new connection syncs the log first, and
    # `listen` (awaited) comes before the upload; else with step_end.
    ctx.audit.defer(
        "step_start", env=env.name, step=step.id, module=step.module, host=step.target.host if step.target else None
    )
    started = time.monotonic()
    for attempt in range(1, step.retries + 2):
        outcome.attempts = attempt
        with trio.move_on_after(step.timeout) as scope:
            message: dict[str, Any] | None = None
            try:
                if step.origin is Origin.MONITOR:  # no binary: the monitor reaches the target itself
                    from .monitor import run_monitor_probe  # its HTTP, DNS and TLS code: when used

                    message = await run_monitor_probe(env, step, params)
                else:
                    message = await module_attempt(env, step, params)
            except* StepFailed as group:
                outcome.status, outcome.reason = StepStatus.FAILED, str(_leaf(group))
            except* TargetError as group:
                if step.target is not None:
                    env.forget(step.target)
                outcome.status, outcome.reason = StepStatus.FAILED, f"{ctx.connector.name}: {_leaf(group)}"
            if message is not None:
                outcome.result = message.get("result") or {}
                outcome.changes = list(message.get("changes") or [])
                # Every sensors report leaves a trace: its digest and the step's signals.
                mine = [s for s in env.signals if s.step == step.id]
                trace = {} if step.origin is Origin.MONITOR else {"sensors": sensor_trace(message.get("sensors"), mine)}
                # Durable with retry or step_end, the next thing this step does.
                ctx.audit.defer(
                    "result",
                    env=env.name,
                    step=step.id,
                    ok=message.get("ok"),
                    error=message.get("error"),
                    result=outcome.result,
                    changes=outcome.changes,
                    **trace,
                )
                outcome.status, outcome.reason = _judge(step, message, env.scope(step))
        if scope.cancelled_caught:
            outcome.status, outcome.reason = StepStatus.TIMEOUT, f"timed out after {step.timeout:g}s"
        if outcome.status is StepStatus.OK or attempt > step.retries:
            break
        await ctx.audit.record("retry", env=env.name, step=step.id, attempt=attempt, reason=outcome.reason)
    outcome.duration = round(time.monotonic() - started, 3)
    if outcome.ok and step.section is Section.VERIFY:
        outcome.points = step.points
    return outcome


async def _run_section(env: EnvState, steps: tuple[PlannedStep, ...]) -> None:
    for step in steps:
        env.finished[step.slot] = trio.Event()

    resume = env.ctx.options.resume
    done = resume.done.get(env.name, {}) if resume is not None else {}

    async def one(step: PlannedStep) -> None:
        outcome: StepOutcome | None = None
        started = False
        done_in = None
        try:
            if step.id in done:  # ended in the run this one resumes
                done_in = done[step.id].get("done_in")
                outcome = done_outcome(step, done[step.id])
                return
            for slot in step.after:
                await env.finished[slot].wait()
            started = True
            outcome = await _run_step(env, step)
        except AuditError as exc:
            outcome = StepOutcome.of(step, StepStatus.FAILED, f"audit log: {exc}")
        finally:
            if outcome is None:  # cancelled (Ctrl-C): say so, whether it had started or not
                status, reason = (
                    (StepStatus.FAILED, "interrupted")
                    if started
                    else (StepStatus.SKIPPED, "run interrupted before this step started")
                )
                outcome = StepOutcome.of(step, status, reason)
            env.outcomes[step.id] = outcome
            if step.slot != step.id:
                env.outcomes[step.slot] = outcome
                for other in step.skipped_options:
                    env.outcomes[other] = StepOutcome(
                        other, step.slot, step.kind, None, StepStatus.SKIPPED, "not picked by one_of"
                    )
            env.finished[step.slot].set()
            with trio.CancelScope(shield=True):
                await env.ctx.audit.record(
                    "step_end",
                    env=env.name,
                    step=step.id,
                    status=outcome.status.value,
                    reason=outcome.reason,
                    duration=outcome.duration,
                    attempts=outcome.attempts,
                    points=outcome.points,
                    **({"done_in": done_in} if done_in else {}),
                )
            env.ctx.options.reporter.step_finished(env.name, outcome)

    async with trio.open_nursery() as nursery:
        for step in steps:
            nursery.start_soon(one, step)


async def _run_env(ctx: RunContext, plan: EnvPlan, limiter: trio.CapacityLimiter, out: dict[str, EnvOutcome]) -> None:
    """Run one environment's section; its outcome lands in ``out`` even when cancelled."""
    section = plan.steps if ctx.options.section is Section.STEPS else plan.verify
    async with limiter:
        await ctx.audit.record(
            "env_start", env=plan.name, targets={r: f"{t.user}@{t.host}:{t.port}" for r, t in plan.targets.items()}
        )
        env: EnvState | None = None
        guarded = EnvOutcome(plan.name)  # what the guard pass finds
        try:
            async with AsyncExitStack() as stack:
                env = EnvState(ctx, plan, stack)
                if ctx.options.reboot and section:
                    await reboot_all(env, ctx.options.boot_timeout)
                if _wants_baseline(ctx, plan, section):
                    await take_baselines(env, section)
                await _run_section(env, section)
                if ctx.options.section is Section.VERIFY and section:
                    await guard_pass(env, guarded)
        finally:
            done = env.outcomes if env is not None else {}
            result = EnvOutcome(
                plan.name,
                [
                    done.get(s.id) or StepOutcome.of(s, StepStatus.SKIPPED, "run interrupted before this step started")
                    for s in section
                ],
                signals=list(env.signals) if env is not None else [],
                shortcuts=guarded.shortcuts,
                guarded=guarded.guarded,
            )
            out[plan.name] = result
            with trio.CancelScope(shield=True):
                await ctx.audit.record(
                    "env_end",
                    env=plan.name,
                    ok=result.ok,
                    points=result.points,
                    max_points=result.max_points,
                    integrity=result.integrity,
                    **_shortcuts_json(result),
                )
            ctx.options.reporter.env_finished(result)


def _wants_baseline(ctx: RunContext, plan: EnvPlan, section: tuple[PlannedStep, ...]) -> bool:
    """A run of chaos steps takes its machines' baselines first; a restore does not, nor a
    resume for an environment the run it resumes had started (its baseline is there)."""
    options = ctx.options
    if options.section is not Section.STEPS or options.restores or not options.take_baseline:
        return False
    if options.resume is not None and options.resume.done.get(plan.name):
        return False
    return bool(ctx.plan.scenario.guards) or any(s.kind is StepKind.CHAOS for s in section)


def _shortcuts_json(env: EnvOutcome) -> dict[str, Any]:
    if not env.guarded:
        return {}
    return {"shortcuts": [s.as_json() for s in env.shortcuts], "penalty": env.penalty, "guarded": env.guarded}


async def _judge_integrity(
    audit: AuditLog,
    envs: list[EnvOutcome],
    *,
    strict: bool,
    programs: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
    from_monitor: frozenset[str] = frozenset(),
) -> None:
    """Add the signals only the whole run shows (timing outliers, a program that differs
    from most environments' one), then, with ``strict``, score every suspect environment 0,
    saying why."""
    durations = {
        e.name: {s.id: s.duration for s in e.steps if s.status is not StepStatus.SKIPPED and s.module} for e in envs
    }
    by_name = {e.name: e for e in envs}
    outliers = [*timing_outliers(durations, from_monitor=from_monitor), *program_outliers(programs or {})]
    for name, signal in outliers:
        if name in by_name and signal not in by_name[name].signals:
            by_name[name].signals.append(signal)
            await audit.record("signal", env=name, **signal.as_json())
    if strict:
        for env in envs:
            if env.signals:
                first = env.signals[0]
                more = f" and {len(env.signals) - 1} more" if len(env.signals) > 1 else ""
                env.zeroed = f"suspect (--strict): {first.signal} in {first.step}{more}"


@asynccontextmanager
async def _interrupt_on_signals(scope: trio.CancelScope, flag: list[bool]) -> AsyncIterator[None]:
    import signal

    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    flag.append(True)
                    scope.cancel()
                    return

        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            nursery.start_soon(watch)
        yield
        nursery.cancel_scope.cancel()


def _stopper(scope: trio.CancelScope, flag: list[bool]) -> Callable[[], None]:
    """A function that interrupts the run from any thread, as a signal does."""
    token = trio.lowlevel.current_trio_token()

    def interrupt() -> None:
        flag.append(True)
        scope.cancel()

    def stop() -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(interrupt)

    return stop


async def run_plan(plan: Plan, options: RunOptions) -> RunReport:
    """Run a plan's ``steps`` (or its ``verify`` probes) on every environment.

    Args:
        plan: from :func:`chaosrun.plan.build_plan`.
        options: audit directory, section, parallelism, reporter, connector.

    Returns:
        The outcome of every step in every environment; ``interrupted`` after Ctrl-C.

    Raises:
        AuditError: the audit log could not be created.
    """
    run_id = options.run_id or new_run_id()
    builder = options.builder or Builder()
    connector = options.connector or default_connector()
    interrupted: list[bool] = []
    outcomes: dict[str, EnvOutcome] = {}
    suffix = "-verify" if options.section is Section.VERIFY else ""
    key = load_or_create_key(options.key_path)
    async with open_audit(options.audit_dir, run_id, name=run_id + suffix, key=key) as audit:
        options.reporter.run_started(plan, options.section, audit.path)
        await audit.record(
            "run_start",
            section="restore" if options.restores else options.section.value,
            **({"restores": options.restores} if options.restores else {}),
            **({"resumes": options.resume.resumes} if options.resume else {}),
            scenario=plan.scenario.file,
            scenario_sha256=plan.scenario.sha256,
            seed=plan.seed,
            plan=plan_as_json(plan),
            environments=len(plan.environments),
            connector=connector.name,
        )
        try:
            dial_ip = await resolve_dial_address(plan.scenario.monitor.dial_address)
        except StepFailed as exc:
            await audit.record("run_end", ok=False, error=str(exc))
            raise RunError(str(exc)) from None
        ctx = RunContext(plan, options, audit, Builds(builder, audit), connector, run_id, dial_ip)
        limiter = trio.CapacityLimiter(max(1, options.parallel))
        with trio.CancelScope() as run_scope:
            if options.on_start is not None:
                options.on_start(_stopper(run_scope, interrupted))
            async with (
                _interrupt_on_signals(run_scope, interrupted),
                connector.open_shared(),
                trio.open_nursery() as nursery,
            ):
                for env_plan in plan.environments:
                    nursery.start_soon(_run_env, ctx, env_plan, limiter, outcomes)
        envs = [outcomes.get(e.name) or EnvOutcome(e.name) for e in plan.environments]
        report = RunReport(run_id, options.section, audit.path, plan.seed, envs, bool(interrupted))
        with trio.CancelScope(shield=True):
            from_monitor = frozenset(
                s.id for e in plan.environments for s in (*e.steps, *e.verify) if s.origin is Origin.MONITOR
            )
            await _judge_integrity(audit, envs, strict=options.strict, programs=ctx.programs, from_monitor=from_monitor)
            await audit.record(
                "run_end",
                ok=report.ok,
                interrupted=report.interrupted,
                environments={
                    e.name: {
                        "ok": e.ok,
                        "points": e.points,
                        "max_points": e.max_points,
                        "integrity": e.integrity,
                        "signals": [s.as_json() for s in e.signals],
                        **({"zeroed": e.zeroed} if e.zeroed else {}),
                        **_shortcuts_json(e),
                    }
                    for e in envs
                },
                points=sum(e.points for e in envs),
                max_points=sum(e.max_points for e in envs),
            )
    return report
