"""Run stage: carry out a Plan on real hosts. The only async code is in this package.

Scopes own resources (trio): one nursery per run, one per environment, one per step.
A step's timeout is its cancel scope; its listener, remote process and helpers live in
the step's nursery; cleanup (delete the binary, close the port, write the audit record)
runs in ``finally`` under a shielded, bounded scope, so it also happens on timeout,
failure and Ctrl-C.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import ipaddress
import posixpath
import random
import secrets
import shlex
import string
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from ..build import Binary, Builder, BuildError, goarch_for
from ..errors import ChaosrunError
from ..expr import EvalError
from ..lint import render_static
from ..plan import EnvPlan, Plan, PlannedStep, plan_as_json
from ..scenario import Section, StepKind, TargetSpec
from ..wire import CallbackRejected, OneTimeToken, StepSecret, receive_callback, step_config
from .audit import AuditError, AuditLog, open_audit
from .signing import load_or_create_key
from .ssh import ExecResult, HostSpec, Process, RemoteForward, SshConnection, SshError, open_bridge, open_ssh

CLEANUP_TIMEOUT = 15.0
EXIT_GRACE = 5.0  # after the result: how long the binary may take to exit
RESULT_GRACE = 2.0  # after the binary exited: how long an in-flight result may take
HASH_MISMATCH = 97  # exit status of the exec wrapper when the uploaded file changed
MAX_UPLOADS = 16  # binaries being copied at once, across all environments (memory bound)
MAX_PENDING_CONNECTIONS = 64  # unauthenticated callback connections held at once per step


class StepStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


@dataclass
class StepOutcome:
    """How one step ended in one environment."""

    id: str
    slot: str
    kind: StepKind
    module: str | None
    status: StepStatus
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    changes: list[Any] = field(default_factory=list)
    duration: float = 0.0
    attempts: int = 0
    points: float = 0.0  # awarded
    max_points: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.OK

    def as_scope(self) -> dict[str, Any]:
        """What ``steps.ID`` means in expressions."""
        return {"ok": self.ok, "status": self.status.value, "result": self.result, "duration": self.duration}


@dataclass
class EnvOutcome:
    name: str
    steps: list[StepOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status in (StepStatus.OK, StepStatus.SKIPPED) for s in self.steps)

    @property
    def points(self) -> float:
        return sum(s.points for s in self.steps)

    @property
    def max_points(self) -> float:
        return sum(s.max_points for s in self.steps)


@dataclass
class RunReport:
    run_id: str
    section: Section
    audit_path: Path | None
    seed: int
    environments: list[EnvOutcome]
    interrupted: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.error is None and all(e.ok for e in self.environments)


class Reporter(Protocol):
    """Where live progress goes (terminal, plain log, or nothing)."""

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None: ...
    def step_started(self, env: str, step: PlannedStep) -> None: ...
    def step_finished(self, env: str, outcome: StepOutcome) -> None: ...
    def env_finished(self, env: EnvOutcome) -> None: ...


class NullReporter:
    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None: ...
    def step_started(self, env: str, step: PlannedStep) -> None: ...
    def step_finished(self, env: str, outcome: StepOutcome) -> None: ...
    def env_finished(self, env: EnvOutcome) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    audit_dir: Path
    section: Section = Section.STEPS
    parallel: int = 20
    connect_timeout: float = 10.0
    hello_timeout: float = 5.0
    builder: Builder | None = None
    reporter: Reporter = field(default_factory=NullReporter)
    run_id: str | None = None
    key_path: Path | None = None  # monitor's Ed25519 key; None: signing.default_key_path()


class RunError(ChaosrunError):
    """The run as a whole cannot go on (not one step's problem)."""


class StepFailed(ChaosrunError):
    """A step attempt failed for a reason worth showing to the operator."""


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def innocuous_name() -> str:
    """A file name like mktemp's (``tmp.k3J9xQ2aZb``): nothing that says chaos."""
    alphabet = string.ascii_letters + string.digits
    return "tmp." + "".join(secrets.choice(alphabet) for _ in range(10))


def host_spec(target: TargetSpec) -> HostSpec:
    return HostSpec(
        host=target.host,
        port=target.port,
        user=target.user,
        identity=Path(target.identity) if target.identity else None,
        known_hosts=Path(target.known_hosts) if target.known_hosts else None,
        insecure=target.insecure,
    )


@dataclass(frozen=True)
class _Deployable:
    """A built module as a step deploys it: its bytes, read once per run, and their digests."""

    binary: Binary
    data: bytes
    blake2b: str  # hex BLAKE2b-512 of ``data``: what coreutils' ``b2sum`` prints

    @classmethod
    def load(cls, binary: Binary) -> _Deployable:
        data = binary.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != binary.sha256:
            raise BuildError(f"{binary.path} changed in the build cache (sha256 mismatch)")
        return cls(binary, data, hashlib.blake2b(data).hexdigest())


class _Builds:
    """Build each (module, arch) once per run, however many steps and hosts need it."""

    def __init__(self, builder: Builder, audit: AuditLog) -> None:
        self._builder = builder
        self._audit = audit
        self._done: dict[tuple[str, str], trio.Event] = {}
        self._results: dict[tuple[str, str], _Deployable | BuildError] = {}

    async def get(self, module: str, goarch: str) -> _Deployable:
        key = (module, goarch)
        if key not in self._done:
            self._done[key] = trio.Event()
            try:
                binary = await trio.to_thread.run_sync(self._builder.build, module, "linux", goarch)
                self._results[key] = await trio.to_thread.run_sync(_Deployable.load, binary)
                await self._audit.record(
                    "build",
                    module=module,
                    goarch=goarch,
                    sha256=binary.sha256,
                    size=binary.size,
                    cached=binary.cached,
                    seconds=round(binary.seconds, 3),
                )
            except BuildError as exc:
                self._results[key] = exc
                await self._audit.record("build_failed", module=module, goarch=goarch, error=str(exc))
            finally:
                self._done[key].set()
        await self._done[key].wait()
        found = self._results[key]
        if isinstance(found, BuildError):
            raise StepFailed(f"build of {module} failed: {found}")
        return found


class _Env:
    """One environment's shared state: SSH connections by host, outcomes by step."""

    def __init__(self, ctx: _Context, plan: EnvPlan, stack: AsyncExitStack) -> None:
        self.ctx = ctx
        self.plan = plan
        self.name = plan.name
        self._stack = stack
        self._locks: dict[tuple[str, int, str], trio.Lock] = {}
        self._conns: dict[tuple[str, int, str], SshConnection | SshError] = {}
        self.outcomes: dict[str, StepOutcome] = {}
        self.finished: dict[str, trio.Event] = {}

    async def connection(self, target: TargetSpec) -> SshConnection:
        key = (target.host, target.port, target.user)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            if key not in self._conns:
                spec = host_spec(target)
                await self.ctx.audit.sync()  # a deferred step_start is on disk before we connect
                try:
                    conn = await self._stack.enter_async_context(
                        open_ssh(spec, connect_timeout=self.ctx.options.connect_timeout)
                    )
                except SshError as exc:
                    self._conns[key] = exc
                    await self.ctx.audit.record("connect_failed", env=self.name, host=spec.label, error=exc.reason)
                else:
                    self._conns[key] = conn
                    await self.ctx.audit.record(
                        "connect",
                        env=self.name,
                        host=spec.label,
                        host_key=conn.host_key_fingerprint,
                        insecure=target.insecure,
                    )
        found = self._conns[key]
        if isinstance(found, SshError):
            raise StepFailed(f"ssh: {found}")
        return found

    def forget(self, target: TargetSpec) -> None:
        """Drop a broken connection, so the next step on this host connects anew."""
        self._conns.pop((target.host, target.port, target.user), None)

    async def remove_file(self, target: TargetSpec, conn: SshConnection, path: str) -> bool | str:
        """Delete ``path`` on the target; over a fresh connection if ``conn`` broke."""
        try:
            await conn.remove(path)
            return True
        except SshError:
            self.forget(target)
        try:
            async with open_ssh(host_spec(target), connect_timeout=self.ctx.options.connect_timeout) as fresh:
                await fresh.remove(path)
            return True
        except SshError as exc:
            return f"not removed: {exc.reason}"

    def scope(self, step: PlannedStep) -> dict[str, Any]:
        return {
            "vars": self.ctx.plan.scenario.vars,
            "env": {"name": self.name},
            "target": step.target.as_scope() if step.target else {},
            "steps": {sid: o.as_scope() for sid, o in self.outcomes.items()},
        }


@dataclass
class _Context:
    plan: Plan
    options: RunOptions
    audit: AuditLog
    builds: _Builds
    run_id: str
    dial_ip: str
    uploads: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(MAX_UPLOADS))


class _Listener:
    """State of one step's callback listener, shared with the step body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.authenticated = trio.Event()
        self.done = trio.Event()
        self.result: dict[str, Any] | None = None
        self.rejected = 0


async def _open_listener(bind: str, ports: tuple[int, int]) -> trio.SocketListener:
    """Bind a random free port of the range (a few tries, then any free port of it)."""
    lo, hi = ports
    tried: set[int] = set()
    for _ in range(64):
        port = random.randint(lo, hi)
        if port in tried:
            continue
        tried.add(port)
        try:
            listeners = await trio.open_tcp_listeners(port, host=bind)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise StepFailed(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
        return listeners[0]
    raise StepFailed(f"no free port in {lo}-{hi} on {bind}")


async def _serve_listener(
    env: _Env,
    step: PlannedStep,
    secret: StepSecret,
    task_status: trio.TaskStatus[_Listener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept callbacks for one step until the valid result arrives; the caller's nursery
    owns this task and cancels it when the step ends (which closes the port)."""
    ctx = env.ctx
    monitor = ctx.plan.monitor
    listener = await _open_listener(monitor.bind, monitor.ports)
    state = _Listener(listener.socket.getsockname()[1])
    token = OneTimeToken(secret.token)
    # Connections that have not authenticated yet, oldest first. When a flood fills the
    # table, the OLDEST is dropped, so the real binary (which authenticates within
    # milliseconds of connecting) is never the one refused.
    pending: dict[int, trio.CancelScope] = {}
    counter = iter(range(1 << 62))

    def check_token(presented: str) -> bool:
        accepted = token(presented)
        if accepted:
            state.authenticated.set()
        return accepted

    async def on_log(message: dict[str, Any]) -> None:
        await ctx.audit.record(
            "log",
            env=env.name,
            step=step.id,
            level=message.get("level"),
            msg=message.get("msg"),
            fields=message.get("fields"),
            module_ts=message.get("ts"),
        )

    async def handle(stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        number = next(counter)
        reason: str | None = None
        callback = None

        def check(presented: str) -> bool:
            accepted = check_token(presented)
            if accepted:
                pending.pop(number, None)  # authenticated: never evicted
            return accepted

        try:
            with trio.CancelScope() as scope:
                pending[number] = scope
                if len(pending) > MAX_PENDING_CONNECTIONS:
                    pending.pop(next(iter(pending))).cancel()
                callback = await receive_callback(
                    stream,
                    key=secret.key,
                    check_token=check,
                    run_id=ctx.run_id,
                    step_id=step.id,
                    hello_timeout=ctx.options.hello_timeout,
                    on_log=on_log,
                )
            if scope.cancelled_caught:
                reason = f"dropped: more than {MAX_PENDING_CONNECTIONS} unauthenticated connections at once"
        except CallbackRejected as exc:
            reason = exc.reason
        finally:
            pending.pop(number, None)
            with trio.move_on_after(1, shield=True):
                await stream.aclose()
        if reason is not None or callback is None:
            state.rejected += 1
            await ctx.audit.record("callback_rejected", env=env.name, step=step.id, peer=peer, reason=reason)
            return
        await ctx.audit.record("callback_accepted", env=env.name, step=step.id, peer=peer, token_id=secret.token_id)
        state.result = callback.result
        state.done.set()
        nursery.cancel_scope.cancel()  # the port closes as soon as the result is in

    async with listener, trio.open_nursery() as nursery:
        task_status.started(state)
        while True:
            stream = await listener.accept()
            nursery.start_soon(handle, stream, nursery)


def _exec_command(remote: str, sha256: str, blake2b: str | None = None) -> str:
    """Open the uploaded file, unlink it, check the bytes behind the open descriptor are
    ours, and run exactly those bytes through ``/proc/self/fd/3``.

    Replacing the file by another one (a rename over it) after upload changes nothing: we
    run the inode we opened, whose hash we checked; a changed file is refused with exit
    status 97. The binary's path is gone before it runs, and its command line reads
    ``/proc/self/fd/3``. Nothing secret is in here (the config goes to stdin).

    With ``blake2b`` (the hex BLAKE2b-512 of the same bytes), the check uses coreutils'
    ``b2sum`` where the target has it (coreutils 8.26 and later) and ``sha256sum``
    otherwise: both are cryptographic hashes of the exact bytes, but coreutils' SHA-256
    has no SHA-NI code path, and on a 2.8 MB module it costs ~18 ms of the target's CPU
    against ~8 ms for ``b2sum`` (docs/performance.md).
    """
    p = shlex.quote(remote)
    sha_check = f'h=$(sha256sum <&3) && [ "${{h%% *}}" = {sha256} ] || exit {HASH_MISMATCH}'
    if blake2b is not None:
        check = (
            "if command -v b2sum >/dev/null 2>&1; then "
            f'h=$(b2sum <&3) && [ "${{h%% *}}" = {blake2b} ] || exit {HASH_MISMATCH}; '
            f"else {sha_check}; fi"
        )
    else:
        check = sha_check
    return f"exec 3<{p} || exit {HASH_MISMATCH}; rm -f {p}; {check}; exec /proc/self/fd/3"


def _exit_reason(result: ExecResult) -> str:
    stderr = result.stderr.decode("utf-8", "replace").strip().splitlines()
    tail = stderr[-1][:300] if stderr else ""
    if result.exit_status == HASH_MISMATCH:
        return "the uploaded binary was changed on the target before it ran"
    if result.signal:
        return f"binary killed by signal {result.signal} before it reported"
    if result.exit_status == 3:
        return f"binary could not call back to the monitor: {tail or 'no reason given'}"
    if result.exit_status in (126, 127):
        return f"binary could not be executed on the target (exit {result.exit_status}): {tail}"
    return f"binary exited with status {result.exit_status} without a result" + (f": {tail}" if tail else "")


async def _module_attempt(env: _Env, step: PlannedStep, params: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """Build, listen, deploy, exec, collect, clean: one attempt at a chaos or probe step.

    Returns the module's result message. Raises StepFailed; the step's timeout is the
    caller's cancel scope.
    """
    ctx = env.ctx
    assert step.target is not None and step.module is not None
    conn = await env.connection(step.target)
    try:
        goarch = goarch_for(await conn.machine())
    except BuildError as exc:
        raise StepFailed(str(exc)) from None
    except SshError as exc:
        raise StepFailed(f"ssh: {exc}") from None
    deployable = await ctx.builds.get(step.module, goarch)
    binary, data = deployable.binary, deployable.data
    secret = StepSecret.new()
    remote = posixpath.join(step.target.tmp_dir, innocuous_name())
    label = f"{step.target.user}@{step.target.host}:{step.target.port}"
    started = time.monotonic()
    process: Process | None = None
    forward: RemoteForward | None = None
    exited = trio.Event()
    exit_box: list[ExecResult | SshError] = []
    async with trio.open_nursery() as nursery:
        state: _Listener = await nursery.start(_serve_listener, env, step, secret)
        try:
            await ctx.audit.record(
                "listen",
                env=env.name,
                step=step.id,
                address=f"{ctx.plan.monitor.bind}:{state.port}",
                token_id=secret.token_id,
            )
            try:
                async with ctx.uploads:  # bounds memory: each upload in flight buffers a binary
                    await conn.write_file(remote, data, 0o700)
            except SshError as exc:
                raise StepFailed(f"deploy to {label}:{remote} failed: {exc.reason}") from None
            await ctx.audit.record(
                "deploy", env=env.name, step=step.id, host=label, path=remote, sha256=binary.sha256, size=binary.size
            )
            if ctx.plan.monitor.callback == "tunnel":
                # The binary dials the target's own loopback; SSH carries it to us.
                try:
                    forward = await conn.forward_remote_port(ctx.plan.monitor.bind, state.port)
                except SshError as exc:
                    raise StepFailed(f"tunnel: {exc.reason}") from None
                await ctx.audit.record("tunnel", env=env.name, step=step.id, remote=f"127.0.0.1:{forward.port}")
                dial = f"127.0.0.1:{forward.port}"
            else:
                dial = f"{ctx.dial_ip}:{state.port}"
            config = step_config(
                monitor=dial,
                secret=secret,
                run_id=ctx.run_id,
                step_id=step.id,
                module=step.module,
                params=params,
                timeout=step.timeout,
            )
            try:
                process = await conn.start(_exec_command(remote, binary.sha256, deployable.blake2b), input=config)
            except SshError as exc:
                raise StepFailed(f"exec on {label} failed: {exc.reason}") from None

            async def wait_exit() -> None:
                assert process is not None
                try:
                    exit_box.append(await process.wait())
                except SshError as exc:
                    exit_box.append(exc)
                exited.set()

            nursery.start_soon(wait_exit)
            await _first(state.authenticated.wait, exited.wait, timeout=ctx.plan.monitor.callback_timeout)
            if not state.authenticated.is_set() and not exited.is_set():
                raise StepFailed(
                    f"no valid callback within {ctx.plan.monitor.callback_timeout:g}s "
                    f"({state.rejected} rejected connection(s)); "
                    f"is {ctx.plan.monitor.dial_address} reachable from the target?"
                )
            await _first(state.done.wait, exited.wait)
            if not state.done.is_set():
                with trio.move_on_after(RESULT_GRACE):
                    await state.done.wait()
            if exited.is_set():
                outcome = exit_box[0]
                if isinstance(outcome, SshError):
                    await ctx.audit.record("exec", env=env.name, step=step.id, error=outcome.reason)
                    env.forget(step.target)
                    if not state.done.is_set():
                        raise StepFailed(f"ssh: connection lost while the binary ran: {outcome.reason}")
                else:
                    exec_fields: dict[str, Any] = {
                        "env": env.name,
                        "step": step.id,
                        "exit_status": outcome.exit_status,
                        "signal": outcome.signal,
                        "stderr": outcome.stderr.decode("utf-8", "replace")[-2000:],
                    }
                    if state.authenticated.is_set():
                        # Only our own ports close before the next record (cleanup, result,
                        # step_end): it rides along with them (one fsync wait, not four).
                        ctx.audit.defer("exec", **exec_fields)
                    else:
                        await ctx.audit.record("exec", **exec_fields)
                    if not state.done.is_set():
                        raise StepFailed(_exit_reason(outcome))
            else:
                with trio.move_on_after(EXIT_GRACE):
                    await exited.wait()
            assert state.result is not None
            return state.result, time.monotonic() - started
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                if forward is not None:
                    await forward.close()
                if process is not None and not exited.is_set():
                    with suppress(SshError):
                        await process.terminate()
                removed: bool | str = "unlinked before exec"
                if not state.authenticated.is_set():  # else the exec wrapper already removed it
                    removed = await env.remove_file(step.target, conn, remote)
                # Durable with the step's next record (result or step_end, always written)
                # before the step is reported or the next one starts.
                ctx.audit.defer(
                    "cleanup", env=env.name, step=step.id, path=remote, removed=removed, port_closed=state.port
                )
            nursery.cancel_scope.cancel()


async def resolve_dial_address(address: str) -> str:
    """The IP literal the binary dials (the kit resolves no names), bracketed for IPv6.

    Raises:
        StepFailed: the name does not resolve.
    """
    try:
        ipaddress.ip_address(address.strip("[]"))
        ip = address.strip("[]")
    except ValueError:
        try:
            infos = await trio.socket.getaddrinfo(address, None, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise StepFailed(f"monitor.advertise {address!r} does not resolve: {exc}") from None
        ip = str(infos[0][4][0])
    return f"[{ip}]" if ":" in ip else ip


async def _first(*waits: Callable[[], Any], timeout: float | None = None) -> None:
    """Return when the first of ``waits`` returns (or after ``timeout``)."""
    async with trio.open_nursery() as nursery:
        if timeout is not None:
            nursery.cancel_scope.deadline = trio.current_time() + timeout

        async def one(wait: Callable[[], Any]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _judge(step: PlannedStep, message: dict[str, Any]) -> tuple[StepStatus, str]:
    if not message.get("ok"):
        return StepStatus.FAILED, f"module failed: {message.get('error') or 'no reason given'}"
    if step.expect is not None:
        try:
            verdict = step.expect.evaluate({"result": message.get("result") or {}})
        except EvalError as exc:
            return StepStatus.FAILED, f"expect: {exc}"
        if verdict is not True:
            return StepStatus.FAILED, f"expect {step.expect} is false"
    return StepStatus.OK, ""


async def _run_step(env: _Env, step: PlannedStep) -> StepOutcome:
    ctx = env.ctx
    outcome = StepOutcome(
        step.id,
        step.slot,
        step.kind,
        step.module,
        StepStatus.SKIPPED,
        max_points=step.points if step.section is Section.VERIFY else 0.0,
    )
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
                message, _ = await _module_attempt(env, step, params)
            except* StepFailed as group:
                outcome.status, outcome.reason = StepStatus.FAILED, str(_leaf(group))
            except* SshError as group:
                env.forget(step.target) if step.target else None
                outcome.status, outcome.reason = StepStatus.FAILED, f"ssh: {_leaf(group)}"
            if message is not None:
                outcome.result = message.get("result") or {}
                outcome.changes = list(message.get("changes") or [])
                # Durable with retry or step_end, the next thing this step does.
                ctx.audit.defer(
                    "result",
                    env=env.name,
                    step=step.id,
                    ok=message.get("ok"),
                    error=message.get("error"),
                    result=outcome.result,
                    changes=outcome.changes,
                )
                outcome.status, outcome.reason = _judge(step, message)
        if scope.cancelled_caught:
            outcome.status, outcome.reason = StepStatus.TIMEOUT, f"timed out after {step.timeout:g}s"
        if outcome.status is StepStatus.OK or attempt > step.retries:
            break
        await ctx.audit.record("retry", env=env.name, step=step.id, attempt=attempt, reason=outcome.reason)
    outcome.duration = round(time.monotonic() - started, 3)
    if outcome.ok and step.section is Section.VERIFY:
        outcome.points = step.points
    return outcome


async def _run_section(env: _Env, steps: tuple[PlannedStep, ...]) -> None:
    for step in steps:
        env.finished[step.slot] = trio.Event()

    async def one(step: PlannedStep) -> None:
        outcome: StepOutcome | None = None
        started = False
        try:
            for slot in step.after:
                await env.finished[slot].wait()
            started = True
            outcome = await _run_step(env, step)
        except AuditError as exc:
            outcome = StepOutcome(step.id, step.slot, step.kind, step.module, StepStatus.FAILED, f"audit log: {exc}")
        finally:
            if outcome is None:  # cancelled (Ctrl-C): say so, whether it had started or not
                status, reason = (
                    (StepStatus.FAILED, "interrupted")
                    if started
                    else (StepStatus.SKIPPED, "run interrupted before this step started")
                )
                outcome = StepOutcome(
                    step.id,
                    step.slot,
                    step.kind,
                    step.module,
                    status,
                    reason,
                    max_points=step.points if step.section is Section.VERIFY else 0.0,
                )
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
                )
            env.ctx.options.reporter.step_finished(env.name, outcome)

    async with trio.open_nursery() as nursery:
        for step in steps:
            nursery.start_soon(one, step)


async def _run_env(ctx: _Context, plan: EnvPlan, limiter: trio.CapacityLimiter, out: dict[str, EnvOutcome]) -> None:
    """Run one environment's section; its outcome lands in ``out`` even when cancelled."""
    section = plan.steps if ctx.options.section is Section.STEPS else plan.verify
    async with limiter:
        await ctx.audit.record(
            "env_start", env=plan.name, targets={r: f"{t.user}@{t.host}:{t.port}" for r, t in plan.targets.items()}
        )
        env: _Env | None = None
        try:
            async with AsyncExitStack() as stack:
                env = _Env(ctx, plan, stack)
                await _run_section(env, section)
        finally:
            done = env.outcomes if env is not None else {}
            result = EnvOutcome(
                plan.name,
                [
                    done.get(s.id)
                    or StepOutcome(
                        s.id, s.slot, s.kind, s.module, StepStatus.SKIPPED, "run interrupted before this step started"
                    )
                    for s in section
                ],
            )
            out[plan.name] = result
            with trio.CancelScope(shield=True):
                await ctx.audit.record(
                    "env_end", env=plan.name, ok=result.ok, points=result.points, max_points=result.max_points
                )
            ctx.options.reporter.env_finished(result)


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


async def run_plan(plan: Plan, options: RunOptions) -> RunReport:
    """Run a plan's ``steps`` (or its ``verify`` probes) on every environment.

    Args:
        plan: from :func:`chaosrun.plan.build_plan`.
        options: audit directory, section, parallelism, reporter.

    Returns:
        The outcome of every step in every environment; ``interrupted`` after Ctrl-C.

    Raises:
        AuditError: the audit log could not be created.
    """
    run_id = options.run_id or new_run_id()
    builder = options.builder or Builder()
    interrupted: list[bool] = []
    outcomes: dict[str, EnvOutcome] = {}
    suffix = "-verify" if options.section is Section.VERIFY else ""
    key = load_or_create_key(options.key_path)
    async with open_audit(options.audit_dir, run_id, name=run_id + suffix, key=key) as audit:
        options.reporter.run_started(plan, options.section, audit.path)
        await audit.record(
            "run_start",
            section=options.section.value,
            scenario=plan.scenario.file,
            scenario_sha256=plan.scenario.sha256,
            seed=plan.seed,
            plan=plan_as_json(plan),
            environments=len(plan.environments),
        )
        try:
            dial_ip = await resolve_dial_address(plan.monitor.dial_address)
        except StepFailed as exc:
            await audit.record("run_end", ok=False, error=str(exc))
            raise RunError(str(exc)) from None
        ctx = _Context(plan, options, audit, _Builds(builder, audit), run_id, dial_ip)
        limiter = trio.CapacityLimiter(max(1, options.parallel))
        error: str | None = None
        with trio.CancelScope() as run_scope:
            async with _interrupt_on_signals(run_scope, interrupted), open_bridge(), trio.open_nursery() as nursery:
                for env_plan in plan.environments:
                    nursery.start_soon(_run_env, ctx, env_plan, limiter, outcomes)
        envs = [outcomes.get(e.name) or EnvOutcome(e.name) for e in plan.environments]
        report = RunReport(run_id, options.section, audit.path, plan.seed, envs, bool(interrupted), error)
        with trio.CancelScope(shield=True):
            await audit.record(
                "run_end",
                ok=report.ok,
                interrupted=report.interrupted,
                environments={e.name: {"ok": e.ok, "points": e.points, "max_points": e.max_points} for e in envs},
                points=sum(e.points for e in envs),
                max_points=sum(e.max_points for e in envs),
            )
    return report
